"""The text-to-speech backends behind one small interface, and the choice among them:
backend="auto" takes the espeak-ng command (storyteller.voice.espeak), else pyttsx3
(storyteller.voice.pyttsx3_backend)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Protocol

from storyteller.voice.espeak import EspeakNg
from storyteller.voice.processes import Processes, SpeechError
from storyteller.voice.pyttsx3_backend import Pyttsx3

DEFAULT_RATE = 160  # words per minute: a calm bedtime pace (espeak-ng's own default is 175)


class Backend(Protocol):
    name: str
    speaks_files: bool  # speak() plays the sentence's WAV file (else it takes the text)

    def to_wav(self, text: str, path: Path) -> None:
        """Synthesizes `text` into the WAV file `path`."""

    def check_output(self, scratch: Path) -> None:
        """Raises NoAudioOutputError when nothing can be played."""

    def speak(self, text: str, wav: Path | None) -> None:
        """Speaks one sentence, or starts to (finish() waits for the end)."""

    def set_volume(self, volume: int) -> None:
        """Percent of the engine's own loudness, from the next sentence on."""

    def finish(self) -> None:
        """Waits until everything given to speak() has been spoken."""



def available_backends() -> list[str]:
    """The backends that can start here, in the order backend="auto" tries them."""
    found = ["espeak-ng"] if shutil.which("espeak-ng") else []
    try:
        Pyttsx3(None, DEFAULT_RATE, Processes())
        found.append("pyttsx3")
    except SpeechError:
        pass
    return found


def open_backend(name: str, voice: str | None, rate: int, procs: Processes, volume: int = 100,
                 device: str | None = None) -> Backend:
    exe = shutil.which("espeak-ng")
    if name == "espeak-ng" or (name == "auto" and exe):
        if exe is None:
            raise SpeechError("text-to-speech needs espeak-ng (apt-get install espeak-ng)")
        return EspeakNg(exe, voice, rate, procs, volume, device)
    if name in ("pyttsx3", "auto"):
        try:
            return Pyttsx3(voice, rate, procs, volume, device)
        except SpeechError as e:
            if name == "auto":
                raise SpeechError("text-to-speech needs espeak-ng (apt-get install espeak-ng) or pyttsx3 "
                                  f"with libespeak-ng (pip install pyttsx3): {e}") from None
            raise
    raise ValueError(f"unknown text-to-speech backend {name!r} (auto, espeak-ng, pyttsx3)")

