"""Text to speech: sentences spoken through the default audio output and/or written to one
WAV file, while the story is still being written.

    sink = open_sink(speak=True, wav="story.wav")
    sink.say("Once upon a time, there was a dragon.")   # queued: returns at once
    sink.close()                                        # waits until everything is spoken and written
    sink.stop()                                         # or: drop the queue, cut the speech off now

say() passes every text through storyteller.safety.clean() before any engine sees it, so
no espeak-ng markup gets through: no "[[...]]" (espeak-ng's command always reads it as
phonemes: "[[S'It]]" is a swear word), no SSML (never turned on: no -m, and "<", ">" are
gone too), no control characters ("\\x01" starts an espeak-ng command), no emoji (read out by
name).

A worker thread takes the sentences in order as they arrive. For a WAV file each sentence is
synthesized to a scratch WAV and its frames appended to the one output file (one header, the
same format checked sentence by sentence). Nothing here knows about models or stories.

Backends, in the order `backend="auto"` tries them:

- "espeak-ng": the espeak-ng command, always with an argument list and the text on stdin
  (`--stdin`, or one line per sentence to a long-lived process when speaking), so no text
  can become an option, a path or shell syntax. Every step is a child process that stop()
  can kill at once, and espeak-ng's complaints (stderr) tell when there is no sound device.
- "pyttsx3": the same espeak-ng voice through its library, used when the command is not
  installed. It comes second because on Linux (pyttsx3 2.99, seen here) it prints "Audio
  saved to FILE" on stdout, where the story is printed; plays through
  `os.system("aplay ...")` and ignores its failure (no way to tell there is no sound card);
  cannot be interrupted; may return from runAndWait() before the file is written, or write
  it empty; and crashes the process on a very long text. So only its synthesis to a file is
  used, with each of those worked around (see _Pyttsx3), and this module plays the file with
  aplay, paplay or pw-play as a child process it can check and kill.

Speaking first asks the audio output to play nothing (PROBE_S at most): with no sound card
and no sound server, open_sink raises NoAudioOutputError at once instead of going silent.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import wave
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol, TextIO, cast

from storyteller.errors import StorytellerError
from storyteller.safety import clean

DEFAULT_RATE = 160  # words per minute: a calm bedtime pace (espeak-ng's own default is 175)
PROBE_S = 0.5  # the empty-utterance probe: a missing device fails within ~50 ms, a working one drains
SYNTH_TIMEOUT_S = 120.0  # one sentence to a WAV file, on a slow board
PLAY_TIMEOUT_S = 600.0  # one sentence's WAV file played (pyttsx3)
STOP_WAIT_S = 0.5  # how long stop() waits for the worker to wind down (it always does, soon)
PLAYERS = (("aplay", "-q"), ("paplay",), ("pw-play",))  # for pyttsx3's files, first found on PATH
PYTTSX3_PIECE_CHARS = 400  # pyttsx3 crashes on very long utterances: longer text is synthesized in pieces
EMPTY_WAV_FORMAT = (1, 2, 22050)  # a WAV with no sentence: espeak-ng's format (mono, 16-bit, 22.05 kHz)


class SpeechError(StorytellerError):
    """Text to speech failed: no engine, an engine error, a WAV file that cannot be written."""


class NoAudioOutputError(SpeechError):
    """Speaking needs a sound card or a sound server, and none answered."""


class _Stopped(Exception):
    """Raised in the worker when stop() has killed what it was running."""


# ----------------------------------------------------------------------------- child processes


class _Processes:
    """The child processes of one sink, so stop() can kill them from another thread; once
    killed, nothing new starts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()
        self.killed = False

    def start(self, argv: Sequence[str], stdin: int) -> subprocess.Popen[bytes]:
        with self._lock:
            if self.killed:
                raise _Stopped
            try:
                p = subprocess.Popen(list(argv), stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            except OSError as e:
                raise SpeechError(f"text-to-speech cannot run {argv[0]}: {e.strerror or e}") from None
            self._running.add(p)
            return p

    def done(self, p: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._running.discard(p)

    def run(self, argv: Sequence[str], text: str | None, timeout: float) -> tuple[int, str]:
        """argv (never a shell) with `text` on its stdin: its exit status and stderr."""
        p = self.start(argv, subprocess.DEVNULL if text is None else subprocess.PIPE)
        try:
            _, err = p.communicate(None if text is None else text.encode("utf-8"), timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            raise SpeechError(f"text-to-speech: {argv[0]} did not finish within {timeout:.0f} s") from None
        finally:
            self.done(p)
        if self.killed:
            raise _Stopped
        return p.returncode, err.decode("utf-8", "replace")

    def probe(self, argv: Sequence[str], text: str | None) -> tuple[int | None, str]:
        """Runs argv for PROBE_S at most: its exit status (None: still running, then killed)
        and what it wrote on stderr meanwhile."""
        p = self.start(argv, subprocess.DEVNULL if text is None else subprocess.PIPE)
        try:
            _, err = p.communicate(None if text is None else text.encode("utf-8"), timeout=PROBE_S)
            status: int | None = p.returncode
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
            status = None
        finally:
            self.done(p)
        return status, (err or b"").decode("utf-8", "replace")

    def kill(self) -> None:
        with self._lock:
            self.killed = True
            for p in self._running:
                if p.poll() is None:
                    p.kill()


def _complaint(stderr: str) -> str:
    """The line of a program's stderr that says what went wrong ("error: ..." first)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.lower().startswith("error"):
            return line
    for line in reversed(lines):
        if "error" in line.lower():
            return line
    return lines[-1] if lines else ""


def _no_output(program: str, complaint: str) -> NoAudioOutputError:
    return NoAudioOutputError("no audio output for text-to-speech: no sound card or sound server answered "
                              f"({program}: {complaint or 'failed'})")


# ----------------------------------------------------------------------------- backends


class _Backend(Protocol):
    name: str
    speaks_files: bool  # speak() plays the sentence's WAV file (else it takes the text)

    def to_wav(self, text: str, path: Path) -> None:
        """Synthesizes `text` into the WAV file `path`."""

    def check_output(self, scratch: Path) -> None:
        """Raises NoAudioOutputError when nothing can be played."""

    def speak(self, text: str, wav: Path | None) -> None:
        """Speaks one sentence, or starts to (finish() waits for the end)."""

    def finish(self) -> None:
        """Waits until everything given to speak() has been spoken."""


class _EspeakNg:
    """The espeak-ng command: `-w FILE --stdin` per sentence for WAV files; for speaking, one
    process reading a sentence per line from its stdin (no gap to start a process and open
    the device for each sentence), its stderr watched for the sound device's errors. Text
    is plain text: no -m (SSML) is ever passed; "[[" phonemes cannot be turned off, which is
    why say() removes the brackets."""

    name = "espeak-ng"
    speaks_files = False

    def __init__(self, exe: str, voice: str | None, rate: int, procs: _Processes) -> None:
        self._argv = [exe, "-b", "1", "-s", str(rate), *(["-v", voice] if voice else [])]
        self._procs = procs
        self._speaker: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._stderr: list[str] = []
        status, err = procs.run([*self._argv, "-q", "--stdin"], "", 30.0)  # the voice exists, it runs
        if status != 0:
            raise SpeechError(f"text-to-speech: espeak-ng fails ({_complaint(err) or f'exit status {status}'})")

    def to_wav(self, text: str, path: Path) -> None:
        status, err = self._procs.run([*self._argv, "-w", str(path), "--stdin"], text, SYNTH_TIMEOUT_S)
        if status != 0 or not path.is_file():
            raise SpeechError(f"text-to-speech: espeak-ng failed ({_complaint(err) or f'exit status {status}'})")

    def check_output(self, scratch: Path) -> None:
        _, err = self._procs.probe([*self._argv, "--stdin"], "")  # an empty utterance opens the device
        if "error" in err.lower():
            raise _no_output("espeak-ng", _complaint(err))

    def speak(self, text: str, wav: Path | None) -> None:
        if self._speaker is None:
            self._speaker = self._procs.start(self._argv, subprocess.PIPE)
            self._reader = threading.Thread(target=self._watch, args=(self._speaker,), daemon=True,
                                            name="storyteller-tts-stderr")
            self._reader.start()
        assert self._speaker.stdin is not None
        try:
            self._speaker.stdin.write(text.encode("utf-8") + b"\n")
            self._speaker.stdin.flush()
        except (BrokenPipeError, ValueError):  # it died or was killed (stop): finish() says which
            self.finish()
            raise SpeechError("text-to-speech: espeak-ng stopped reading") from None
        self._check()

    def _watch(self, p: subprocess.Popen[bytes]) -> None:
        """Keeps the speaker's stderr; on an error line (no device) ends it: finish() reports."""
        assert p.stderr is not None
        for raw in p.stderr:
            line = raw.decode("utf-8", "replace").strip()
            self._stderr.append(line)
            if "error" in line.lower() and p.poll() is None:
                p.kill()

    def _check(self) -> None:
        err = "\n".join(self._stderr)
        if "error" in err.lower():
            raise _no_output("espeak-ng", _complaint(err))

    def finish(self) -> None:
        p, self._speaker = self._speaker, None
        if p is None:
            return
        assert p.stdin is not None
        try:
            p.stdin.close()
        except BrokenPipeError:
            pass
        status = p.wait()
        if self._reader is not None:
            self._reader.join()
        self._procs.done(p)
        if self._procs.killed:
            raise _Stopped
        self._check()
        if status != 0:
            raise SpeechError(f"text-to-speech: espeak-ng ended with status {status}")


# pyttsx3's engine is one per process (libespeak-ng is initialized once) and not thread-safe.
_PYTTSX3_LOCK = threading.Lock()
_pyttsx3_engine: Any = None
_pyttsx3_done = threading.Event()  # set by the engine's "finished-utterance" notification
_quiet = 0  # > 0 while pyttsx3 synthesizes (under _PYTTSX3_LOCK)


class _StdoutQuietForEspeak:
    """sys.stdout, except that while pyttsx3 synthesizes, what threads Python did not start
    print is dropped: pyttsx3's espeak driver prints "Audio saved to FILE" on stdout, where
    the story is being printed, from libespeak-ng's own thread."""

    def __init__(self, target: TextIO) -> None:
        self.target = target

    def write(self, s: str) -> int:
        if _quiet and isinstance(threading.current_thread(), threading._DummyThread):
            return len(s)
        return self.target.write(s)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


@contextmanager
def _espeak_thread_quiet() -> Iterator[None]:
    """Under _PYTTSX3_LOCK: libespeak-ng's thread prints nothing on stdout meanwhile."""
    global _quiet
    if not isinstance(sys.stdout, _StdoutQuietForEspeak):
        sys.stdout = cast(TextIO, _StdoutQuietForEspeak(sys.stdout))
    _quiet += 1
    try:
        yield
    finally:
        _quiet -= 1
        if not _quiet and isinstance(sys.stdout, _StdoutQuietForEspeak):
            sys.stdout = sys.stdout.target


def _frames(path: Path) -> int:
    try:
        with wave.open(str(path), "rb") as r:
            return r.getnframes()
    except (OSError, wave.Error, EOFError):
        return 0


class _Pyttsx3:
    """pyttsx3 (libespeak-ng in this process) for synthesis to files; a player command for
    speaking them. Worked around (pyttsx3 2.99 on Linux): runAndWait() may return before the
    file is written (the "finished-utterance" notification is awaited instead), a file
    sometimes comes out empty (synthesized once more), a very long utterance crashes the
    process (text goes in pieces of PYTTSX3_PIECE_CHARS, joined)."""

    name = "pyttsx3"
    speaks_files = True

    def __init__(self, voice: str | None, rate: int, procs: _Processes) -> None:
        global _pyttsx3_engine
        with _PYTTSX3_LOCK:
            if _pyttsx3_engine is None:
                try:
                    import pyttsx3  # type: ignore[import-untyped, import-not-found, unused-ignore]

                    engine = pyttsx3.init()
                except Exception as e:  # ImportError, or the driver's RuntimeError/OSError without libespeak-ng
                    raise SpeechError(f"text-to-speech: pyttsx3 cannot start ({_one_line(e)})") from None
                engine.connect("finished-utterance", lambda **_: _pyttsx3_done.set())
                _pyttsx3_engine = engine
        self._engine = _pyttsx3_engine
        self._voice, self._rate, self._procs = voice, rate, procs
        self._player = next(([shutil.which(p[0]) or p[0], *p[1:]] for p in PLAYERS if shutil.which(p[0])), None)

    def to_wav(self, text: str, path: Path) -> None:
        pieces = textwrap.wrap(text, PYTTSX3_PIECE_CHARS, break_on_hyphens=False) or [text]
        if len(pieces) == 1:
            self._synthesize(pieces[0], path)
            return
        parts = [path.with_name(f"{path.stem}.{i}.wav") for i in range(len(pieces))]
        for piece, part in zip(pieces, parts, strict=True):
            self._synthesize(piece, part)
        whole = _WavFile(path)
        try:
            for part in parts:
                whole.append(part)
                part.unlink()
        finally:
            whole.close()

    def _synthesize(self, text: str, path: Path) -> None:
        for _ in range(2):
            if self._procs.killed:
                raise _Stopped
            with _PYTTSX3_LOCK, _espeak_thread_quiet():
                _pyttsx3_done.clear()
                try:
                    self._engine.setProperty("rate", self._rate)
                    if self._voice:
                        self._engine.setProperty("voice", self._voice)
                    self._engine.save_to_file(text, str(path))
                    self._engine.runAndWait()
                except Exception as e:
                    raise SpeechError(f"text-to-speech: pyttsx3 failed ({_one_line(e)})") from None
                if not _pyttsx3_done.wait(SYNTH_TIMEOUT_S):
                    raise SpeechError(f"text-to-speech: pyttsx3 did not finish within {SYNTH_TIMEOUT_S:.0f} s")
            if _frames(path) > 0:
                return
        raise SpeechError("text-to-speech: pyttsx3 wrote no audio")

    def check_output(self, scratch: Path) -> None:
        if self._player is None:
            raise NoAudioOutputError("no audio output for text-to-speech: pyttsx3 needs aplay, paplay or pw-play "
                                     "to play its sound (apt-get install alsa-utils)")
        silence = scratch / "probe.wav"
        with wave.open(str(silence), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(22050)
            w.writeframes(b"\0\0" * 220)
        status, err = self._procs.probe([*self._player, str(silence)], None)
        if status not in (0, None) or "error" in err.lower():
            raise _no_output(Path(self._player[0]).name, _complaint(err) or f"exit status {status}")

    def speak(self, text: str, wav: Path | None) -> None:
        assert wav is not None and self._player is not None
        status, err = self._procs.run([*self._player, str(wav)], None, PLAY_TIMEOUT_S)
        if status != 0:
            raise _no_output(Path(self._player[0]).name, _complaint(err) or f"exit status {status}")

    def finish(self) -> None:
        pass  # speak() plays each sentence to its end


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def available_backends() -> list[str]:
    """The backends that can start here, in the order backend="auto" tries them."""
    found = ["espeak-ng"] if shutil.which("espeak-ng") else []
    try:
        _Pyttsx3(None, DEFAULT_RATE, _Processes())
        found.append("pyttsx3")
    except SpeechError:
        pass
    return found


def _open_backend(name: str, voice: str | None, rate: int, procs: _Processes) -> _Backend:
    exe = shutil.which("espeak-ng")
    if name == "espeak-ng" or (name == "auto" and exe):
        if exe is None:
            raise SpeechError("text-to-speech needs espeak-ng (apt-get install espeak-ng)")
        return _EspeakNg(exe, voice, rate, procs)
    if name in ("pyttsx3", "auto"):
        try:
            return _Pyttsx3(voice, rate, procs)
        except SpeechError as e:
            if name == "auto":
                raise SpeechError("text-to-speech needs espeak-ng (apt-get install espeak-ng) or pyttsx3 "
                                  f"with libespeak-ng (pip install pyttsx3): {e}") from None
            raise
    raise ValueError(f"unknown text-to-speech backend {name!r} (auto, espeak-ng, pyttsx3)")


# ----------------------------------------------------------------------------- one WAV file


class _WavFile:
    """One WAV file made of the sentences' WAV files in order: one header, frames appended,
    every sentence in the first one's format."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._file: IO[bytes] = open(path, "wb")  # closed by close()
        except OSError as e:
            raise SpeechError(f"cannot write the WAV file {path}: {e.strerror or e}") from None
        self._wav: wave.Wave_write | None = None
        self._format: tuple[int, int, int] = EMPTY_WAV_FORMAT

    def _start(self, fmt: tuple[int, int, int]) -> wave.Wave_write:
        w = wave.open(self._file, "wb")
        w.setnchannels(fmt[0])
        w.setsampwidth(fmt[1])
        w.setframerate(fmt[2])
        self._format = fmt
        return w

    def append(self, sentence: Path) -> None:
        try:
            with wave.open(str(sentence), "rb") as r:
                fmt = (r.getnchannels(), r.getsampwidth(), r.getframerate())
                frames = r.readframes(r.getnframes())
        except (wave.Error, EOFError) as e:
            raise SpeechError(f"text-to-speech wrote an unreadable WAV file ({e})") from None
        if self._wav is None:
            self._wav = self._start(fmt)
        elif fmt != self._format:
            raise SpeechError(f"text-to-speech changed format in the middle of {self.path}: {fmt[2]} Hz, "
                              f"{fmt[0]} channel(s), {8 * fmt[1]}-bit after {self._format[2]} Hz, "
                              f"{self._format[0]} channel(s), {8 * self._format[1]}-bit")
        try:
            self._wav.writeframes(frames)
        except OSError as e:
            raise SpeechError(f"cannot write the WAV file {self.path}: {e.strerror or e}") from None

    def close(self) -> None:
        """Completes the header (an empty but valid file when no sentence came)."""
        try:
            if self._wav is None:
                self._wav = self._start(EMPTY_WAV_FORMAT)
            self._wav.close()
        except OSError as e:
            raise SpeechError(f"cannot write the WAV file {self.path}: {e.strerror or e}") from None
        finally:
            self._file.close()


# ----------------------------------------------------------------------------- the sink


class Sink:
    """Where a story's sentences go to be heard: say() queues, a worker speaks and writes in
    order, close() waits for the end, stop() cuts it short. Returned by open_sink()."""

    def __init__(self, backend: _Backend, procs: _Processes, speak: bool, wav: _WavFile | None,
                 scratch: Path) -> None:
        self.backend = backend.name
        self._engine, self._procs, self._speak, self._wav, self._scratch = backend, procs, speak, wav, scratch
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._stopped = threading.Event()
        self._closed = False
        self._error: SpeechError | None = None
        self._error_told = False
        self._thread = threading.Thread(target=self._work, name="storyteller-tts", daemon=True)
        self._thread.start()

    def say(self, text: str) -> None:
        """Queues one sentence, as storyteller.safety.clean() makes it (returns at once).
        Raises the worker's error if it failed; after stop() the text is dropped."""
        if self._error is not None:
            self._error_told = True
            raise self._error
        if self._stopped.is_set():
            return
        if self._closed:
            raise SpeechError("text-to-speech: say() after close()")
        text = clean(text)
        if text:
            self._queue.put(text)

    def close(self) -> None:
        """Waits until everything queued has been spoken and written, completes the WAV file
        and ends the engine. Raises the worker's error if say() has not. Ctrl-C stops."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
        try:
            self._thread.join()
        except KeyboardInterrupt:
            self.stop()
            raise
        if self._error is not None and not self._error_told:
            self._error_told = True
            raise self._error

    def stop(self) -> None:
        """Drops the queue and interrupts the speech now: the running child processes are
        killed; the WAV file keeps the sentences already written."""
        self._stopped.set()
        self._closed = True
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._procs.kill()
        self._queue.put(None)
        self._thread.join(STOP_WAIT_S)

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
            return
        self.stop()
        with suppress(SpeechError):  # the exception in flight says more
            self.close()

    def _work(self) -> None:
        """The worker: each sentence to a scratch WAV (appended to the output) and/or spoken."""
        n = 0
        try:
            while (text := self._queue.get()) is not None and not self._stopped.is_set():
                n += 1
                path = self._scratch / f"{n}.wav"
                if self._wav is not None or (self._speak and self._engine.speaks_files):
                    self._engine.to_wav(text, path)
                    if self._wav is not None:
                        self._wav.append(path)
                if self._speak:
                    self._engine.speak(text, path)
                path.unlink(missing_ok=True)
            if self._speak and not self._stopped.is_set():
                self._engine.finish()
        except _Stopped:
            pass
        except Exception as e:
            if not self._stopped.is_set():
                self._error = e if isinstance(e, SpeechError) else SpeechError(f"text-to-speech failed: {_one_line(e)}")
        finally:
            self._procs.kill()  # whatever is left (nothing, unless it failed or was stopped)
            if self._wav is not None:
                try:
                    self._wav.close()
                except SpeechError as e:
                    self._error = self._error or e
            shutil.rmtree(self._scratch, ignore_errors=True)


def open_sink(speak: bool, wav: str | os.PathLike[str] | None, *, backend: str = "auto",
              voice: str | None = None, rate: int = DEFAULT_RATE) -> Sink:
    """A sink that speaks through the default audio output (`speak`) and/or writes one WAV
    file (`wav`). `backend`: "auto" (espeak-ng's command, else pyttsx3), "espeak-ng" or
    "pyttsx3"; `voice`: an espeak-ng voice name (default: the engine's); `rate`: words per
    minute. Raises SpeechError (NoAudioOutputError: nothing to speak with) before any
    sentence, and creates the WAV file only once speaking is known to work."""
    if not speak and wav is None:
        raise ValueError("open_sink needs speak=True or a WAV file")
    procs = _Processes()
    engine = _open_backend(backend, voice, rate, procs)
    scratch = Path(tempfile.mkdtemp(prefix="storyteller-tts-"))
    try:
        if speak:
            engine.check_output(scratch)
        out = _WavFile(Path(wav)) if wav is not None else None
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return Sink(engine, procs, speak, out, scratch)
