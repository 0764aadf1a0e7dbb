"""pyttsx3 as a text-to-speech backend: the espeak-ng voice through its library, used when
the espeak-ng command is not installed.

On Linux (pyttsx3 2.99, seen here) it prints "Audio saved to FILE" on stdout, where the story
is printed; plays through `os.system("aplay ...")` and ignores its failure (no way to tell
there is no sound card); cannot be interrupted; may return from runAndWait() before the file
is written, or write it empty; and crashes the process on a very long text. So only its
synthesis to a file is used, with each of those worked around, and the file is played with
aplay, paplay or pw-play (storyteller.voice.player) as a child process that can be checked
and killed.
"""

from __future__ import annotations

import functools
import sys
import textwrap
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storyteller.voice.player import Player
from storyteller.voice.processes import Processes, SpeechError, Stopped, one_line
from storyteller.voice.wavfile import WavFile, frames

SYNTH_TIMEOUT_S = 120.0  # one sentence to a WAV file, on a slow board
PYTTSX3_PIECE_CHARS = 400  # pyttsx3 crashes on very long utterances: longer text is synthesized in pieces


@dataclass
class _SharedEngine:
    """pyttsx3's engine: one per process (libespeak-ng is initialized once), not thread-safe."""

    engine: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: threading.Event = field(default_factory=threading.Event)  # its "finished-utterance"


@functools.cache
def _shared_engine() -> _SharedEngine:
    try:
        import pyttsx3  # type: ignore[import-untyped, import-not-found, unused-ignore]

        engine = pyttsx3.init()
    except Exception as e:  # ImportError, or the driver's RuntimeError/OSError without libespeak-ng
        raise SpeechError(f"text-to-speech: pyttsx3 cannot start ({one_line(e)})") from None
    _silence_driver(engine)
    shared = _SharedEngine(engine)
    engine.connect("finished-utterance", lambda **_: shared.done.set())
    return shared


def _silence_driver(engine: Any) -> None:
    """The espeak driver's "Audio saved to FILE" comes from print() in its own module: that
    module's print (and only it) is made a no-op, so the story on stdout stays clean."""
    module = getattr(type(getattr(getattr(engine, "proxy", None), "_driver", None)), "__module__", None)
    driver = sys.modules.get(module or "")
    if driver is not None:
        driver.print = lambda *_args, **_kw: None  # type: ignore[attr-defined]


class Pyttsx3:
    """pyttsx3 (libespeak-ng in this process) for synthesis to files; a player command for
    speaking them. Worked around (pyttsx3 2.99 on Linux): runAndWait() may return before the
    file is written (the "finished-utterance" notification is awaited instead), a file
    sometimes comes out empty (synthesized once more), a very long utterance crashes the
    process (text goes in pieces of PYTTSX3_PIECE_CHARS, joined)."""

    name = "pyttsx3"
    speaks_files = True

    def __init__(self, voice: str | None, rate: int, procs: Processes, volume: int = 100,
                 device: str | None = None) -> None:
        self._shared = _shared_engine()
        self._volume = 1.0
        self.set_volume(volume)
        self._voice, self._rate, self._procs = voice, rate, procs
        self._device = device
        self._player: Player | None = None  # made by check_output(): only speaking needs one

    def set_volume(self, volume: int) -> None:
        self._volume = min(1.0, volume / 100)  # pyttsx3's volume is 0..1: it cannot go louder than its own

    def to_wav(self, text: str, path: Path) -> None:
        pieces = textwrap.wrap(text, PYTTSX3_PIECE_CHARS, break_on_hyphens=False) or [text]
        if len(pieces) == 1:
            self._synthesize(pieces[0], path)
            return
        parts = [path.with_name(f"{path.stem}.{i}.wav") for i in range(len(pieces))]
        for piece, part in zip(pieces, parts, strict=True):
            self._synthesize(piece, part)
        whole = WavFile(path)
        try:
            for part in parts:
                whole.append(part)
                part.unlink()
        finally:
            whole.close()

    def _synthesize(self, text: str, path: Path) -> None:
        for _ in range(2):
            if self._procs.killed:
                raise Stopped
            shared = self._shared
            with shared.lock:
                shared.done.clear()
                try:
                    shared.engine.setProperty("rate", self._rate)
                    shared.engine.setProperty("volume", self._volume)
                    if self._voice:
                        shared.engine.setProperty("voice", self._voice)
                    shared.engine.save_to_file(text, str(path))
                    shared.engine.runAndWait()
                except Exception as e:
                    raise SpeechError(f"text-to-speech: pyttsx3 failed ({one_line(e)})") from None
                if not shared.done.wait(SYNTH_TIMEOUT_S):
                    raise SpeechError(f"text-to-speech: pyttsx3 did not finish within {SYNTH_TIMEOUT_S:.0f} s")
            if frames(path) > 0:
                return
        raise SpeechError("text-to-speech: pyttsx3 wrote no audio")

    def check_output(self, scratch: Path) -> None:
        self._player = Player(self._procs, self._device)
        self._player.check(scratch)

    def speak(self, text: str, wav: Path | None) -> None:
        assert wav is not None and self._player is not None
        self._player.play(wav)

    def finish(self) -> None:
        pass  # speak() plays each sentence to its end

