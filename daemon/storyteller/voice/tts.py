"""Text to speech: sentences spoken through the default audio output and/or written to one
WAV file, while the story is still being written.

    sink = open_sink(speak=True, wav="story.wav")
    sink.say("Once upon a time, there was a dragon.")   # queued: returns at once
    sink.close()                                        # waits until everything is spoken and written
    sink.stop()                                         # or: drop the queue, cut the speech off now
    sink.set_volume(150)                                # louder from the next sentence on

say() passes every text through storyteller.safety.clean() before any engine sees it, so
no espeak-ng markup gets through: no "[[...]]" (espeak-ng's command always reads it as
phonemes: "[[S'It]]" is a swear word), no SSML (never turned on: no -m, and "<", ">" are
gone too), no control characters ("\\x01" starts an espeak-ng command), no emoji (read out by
name).

A worker thread takes the sentences in order as they arrive. For a WAV file each sentence is
synthesized to a scratch WAV and its frames appended to the one output file (one header, the
same format checked sentence by sentence). Nothing here knows about models or stories.

Backends (storyteller.voice.backends), in the order `backend="auto"` tries them:

- "espeak-ng": the espeak-ng command, always with an argument list and the text on stdin
  (`--stdin`, one process per sentence), so no text can become an option, a path or shell
  syntax. Every step is a child process that stop() can kill at once; one that dies on its
  own costs only its sentence (Sink.restarts counts them); espeak-ng's complaints (stderr)
  tell when there is no sound device.
- "pyttsx3": the same espeak-ng voice through its library, used when the command is not
  installed. It comes second because on Linux (pyttsx3 2.99, seen here) it prints "Audio
  saved to FILE" on stdout, where the story is printed; plays through
  `os.system("aplay ...")` and ignores its failure (no way to tell there is no sound card);
  cannot be interrupted; may return from runAndWait() before the file is written, or write
  it empty; and crashes the process on a very long text. So only its synthesis to a file is
  used, with each of those worked around (see pyttsx3_backend.py), and the file is played with
  aplay, paplay or pw-play as a child process it can check and kill.

Speaking first asks the audio output to play nothing (PROBE_S at most): with no sound card
and no sound server, open_sink raises NoAudioOutputError at once instead of going silent.
"""

from __future__ import annotations

import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from types import TracebackType

from storyteller.safety import clean
from storyteller.voice.backends import DEFAULT_RATE, Backend, available_backends, open_backend
from storyteller.voice.processes import NoAudioOutputError, Processes, SpeechError, Stopped, one_line
from storyteller.voice.wavfile import WavFile

__all__ = ["DEFAULT_RATE", "NoAudioOutputError", "Sink", "SpeechError", "available_backends", "open_sink"]

STOP_WAIT_S = 0.5  # how long stop() waits for the worker to wind down (it always does, soon)


class Sink:
    """Where a story's sentences go to be heard: say() queues, a worker speaks and writes in
    order, close() waits for the end, stop() cuts it short. Returned by open_sink()."""

    def __init__(self, backend: Backend, procs: Processes, speak: bool, wav: WavFile | None,
                 scratch: Path) -> None:
        self.backend = backend.name
        self._engine, self._procs, self._speak, self._wav, self._scratch = backend, procs, speak, wav, scratch
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._stopped = threading.Event()
        self._closed = False
        self._error: SpeechError | None = None
        self._error_told = False
        self.spoken: list[float] = []  # time.monotonic() when each sentence was in the file or began to play
        self.on_spoken: Callable[[int], None] = lambda n: None  # called (worker thread) with len(spoken)
        self._thread = threading.Thread(target=self._work, name="storyteller-tts", daemon=True)
        self._thread.start()

    @property
    def restarts(self) -> int:
        """Speaking processes that died on their own and were replaced (the story went on)."""
        return int(getattr(self._engine, "restarts", 0))

    def set_volume(self, volume: int) -> None:
        """Percent of the engine's own loudness (0-200), from the next sentence on."""
        self._engine.set_volume(volume)

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
                self.spoken.append(time.monotonic())
                self.on_spoken(len(self.spoken))
                if self._speak:
                    self._engine.speak(text, path)
                path.unlink(missing_ok=True)
            if self._speak and not self._stopped.is_set():
                self._engine.finish()
        except Stopped:
            pass
        except Exception as e:
            if not self._stopped.is_set():
                self._error = e if isinstance(e, SpeechError) else SpeechError(f"text-to-speech failed: {one_line(e)}")
        finally:
            self._procs.kill()  # whatever is left (nothing, unless it failed or was stopped)
            if self._wav is not None:
                try:
                    self._wav.close()
                except SpeechError as e:
                    self._error = self._error or e
            shutil.rmtree(self._scratch, ignore_errors=True)


def open_sink(speak: bool, wav: str | os.PathLike[str] | None, *, backend: str = "auto",
              voice: str | None = None, rate: int = DEFAULT_RATE, volume: int = 100,
              device: str | None = None) -> Sink:
    """A sink that speaks through the default audio output, or the one named `device`
    (storyteller.voice.player says how a name is found), (`speak`) and/or writes one WAV
    file (`wav`). `backend`: "auto" (espeak-ng's command, else pyttsx3), "espeak-ng" or
    "pyttsx3"; `voice`: an espeak-ng voice name (default: the engine's); `rate`: words per
    minute; `volume`: percent of the engine's own loudness (0-200). Raises SpeechError
    (NoAudioOutputError: nothing to speak with) before any
    sentence, and creates the WAV file only once speaking is known to work."""
    if not speak and wav is None:
        raise ValueError("open_sink needs speak=True or a WAV file")
    procs = Processes()
    engine = open_backend(backend, voice, rate, procs, volume, device)
    scratch = Path(tempfile.mkdtemp(prefix="storyteller-tts-"))
    try:
        if speak:
            engine.check_output(scratch)
        out = WavFile(Path(wav)) if wav is not None else None
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return Sink(engine, procs, speak, out, scratch)
