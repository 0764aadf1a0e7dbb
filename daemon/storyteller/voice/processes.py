"""The child processes of a text-to-speech sink (espeak-ng, a player), so stop() can kill
them from another thread, and how their failures read."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Sequence

from storyteller.errors import StorytellerError

PROBE_S = 0.5  # the empty-utterance probe: a missing device fails within ~50 ms, a working one drains


class SpeechError(StorytellerError):
    """Text to speech failed: no engine, an engine error, a WAV file that cannot be written."""


class NoAudioOutputError(SpeechError):
    """Speaking needs a sound card or a sound server, and none answered."""


class Stopped(Exception):
    """Raised in the worker when stop() has killed what it was running."""



class Processes:
    """The child processes of one sink, so stop() can kill them from another thread; once
    killed, nothing new starts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()
        self.killed = False

    def start(self, argv: Sequence[str], stdin: int) -> subprocess.Popen[bytes]:
        with self._lock:
            if self.killed:
                raise Stopped
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
            raise Stopped
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


def complaint(stderr: str) -> str:
    """The line of a program's stderr that says what went wrong ("error: ..." first)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.lower().startswith("error"):
            return line
    for line in reversed(lines):
        if "error" in line.lower():
            return line
    return lines[-1] if lines else ""


def no_output(program: str, complaint: str) -> NoAudioOutputError:
    return NoAudioOutputError("no audio output for text-to-speech: no sound card or sound server answered "
                              f"({program}: {complaint or 'failed'})")



def one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__

