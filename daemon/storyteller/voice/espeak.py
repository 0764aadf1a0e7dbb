"""The espeak-ng command as a text-to-speech backend."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

from storyteller.voice.processes import Processes, SpeechError, Stopped, complaint, no_output

SYNTH_TIMEOUT_S = 120.0  # one sentence to a WAV file, on a slow board


class EspeakNg:
    """The espeak-ng command: `-w FILE --stdin` per sentence for WAV files; for speaking, one
    process reading a sentence per line from its stdin (no gap to start a process and open
    the device for each sentence), its stderr watched for the sound device's errors. Text
    is plain text: no -m (SSML) is ever passed; "[[" phonemes cannot be turned off, which is
    why say() removes the brackets."""

    name = "espeak-ng"
    speaks_files = False

    def __init__(self, exe: str, voice: str | None, rate: int, procs: Processes, volume: int = 100) -> None:
        self._argv = [exe, "-b", "1", "-s", str(rate), *(["-v", voice] if voice else []),
                      *(["-a", str(volume)] if volume != 100 else [])]  # espeak-ng's amplitude: 100 is its own
        self.restarts = 0  # speaking processes that died and were replaced
        self._procs = procs
        self._speaker: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._stderr: list[str] = []
        status, err = procs.run([*self._argv, "-q", "--stdin"], "", 30.0)  # the voice exists, it runs
        if status != 0:
            raise SpeechError(f"text-to-speech: espeak-ng fails ({complaint(err) or f'exit status {status}'})")

    def to_wav(self, text: str, path: Path) -> None:
        status, err = self._procs.run([*self._argv, "-w", str(path), "--stdin"], text, SYNTH_TIMEOUT_S)
        if status != 0 or not path.is_file():
            raise SpeechError(f"text-to-speech: espeak-ng failed ({complaint(err) or f'exit status {status}'})")

    def check_output(self, scratch: Path) -> None:
        _, err = self._procs.probe([*self._argv, "--stdin"], "")  # an empty utterance opens the device
        if "error" in err.lower():
            raise no_output("espeak-ng", complaint(err))

    def speak(self, text: str, wav: Path | None) -> None:
        if self._speaker is not None and self._speaker.poll() is not None and not self._procs.killed:
            self._replace_dead_speaker()
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

    def _replace_dead_speaker(self) -> None:
        """The speaking process died without stop() (killed from outside, crashed): unless it
        said the device failed, the next sentence starts a new one and the story goes on."""
        p, self._speaker = self._speaker, None
        assert p is not None
        if self._reader is not None:
            self._reader.join()
        self._procs.done(p)
        self._check()
        self.restarts += 1

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
            raise no_output("espeak-ng", complaint(err))

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
            raise Stopped
        self._check()
        if status != 0:
            raise SpeechError(f"text-to-speech: espeak-ng ended with status {status}")

