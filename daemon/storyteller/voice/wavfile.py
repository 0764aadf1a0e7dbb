"""One WAV file made of the sentences' WAV files, in order."""

from __future__ import annotations

import wave
from pathlib import Path
from typing import IO

from storyteller.voice.processes import SpeechError

EMPTY_WAV_FORMAT = (1, 2, 22050)  # a WAV with no sentence: espeak-ng's format (mono, 16-bit, 22.05 kHz)


def frames(path: Path) -> int:
    try:
        with wave.open(str(path), "rb") as r:
            return r.getnframes()
    except (OSError, wave.Error, EOFError):
        return 0



class WavFile:
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

