"""Sound in: int16 mono chunks at the recognizer's rate, from a microphone (PortAudio through
pyaudio) or from a WAV file, behind one interface:

    with open_source("default", rate=16000) as mic:   # "wav:FILE", a device name or index
        chunk = mic.read()                             # b"" at the end of a file

A microphone that goes away (unplugged, the sound server gone) raises MicrophoneGoneError
from read(); the caller decides when to open it again.
"""

from __future__ import annotations

import wave
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from storyteller.errors import StorytellerError

if TYPE_CHECKING:
    import numpy as np

CHUNK_S = 0.03  # 30 ms per read: short enough for a quick "stop", long enough to be cheap


class AudioInputError(StorytellerError):
    """No such input device, or it cannot be opened."""


class MicrophoneGoneError(AudioInputError):
    """The input stopped delivering sound (device removed, server gone)."""


class Source(Protocol):
    rate: int

    def read(self) -> bytes: ...

    def close(self) -> None: ...

    def __enter__(self) -> Source: ...

    def __exit__(self, *exc: object) -> None: ...


class _Closing:
    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """int16 mono from rate_in to rate_out by linear interpolation (speech for a recognizer
    needs no better; espeak-ng writes 22050 Hz, recognizers want 16000)."""
    import numpy as np  # only WAV files need it (7.7 MB private in a process: not for the microphone)

    if rate_in == rate_out or samples.size == 0:
        return samples
    n_out = int(round(samples.size * rate_out / rate_in))
    t = np.arange(n_out) * (rate_in / rate_out)
    return np.interp(t, np.arange(samples.size), samples.astype(np.float32)).astype(np.int16)


def read_wav(path: Path, rate: int) -> bytes:
    """A whole WAV file as int16 mono at `rate` (channels mixed down)."""
    import numpy as np

    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2:
                raise AudioInputError(f"{path}: only 16-bit WAV files are read (got {8 * w.getsampwidth()}-bit)")
            channels, rate_in = w.getnchannels(), w.getframerate()
            data = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    except (OSError, wave.Error, EOFError) as e:
        raise AudioInputError(f"cannot read the WAV file {path}: {e}") from None
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return resample(data, rate_in, rate).tobytes()


class WavSource(_Closing):
    """A WAV file, as a microphone would deliver it (chunk by chunk), then b"". A file that
    is not a regular file (a FIFO: sound arriving as it is made) is read as it comes, and
    must then be mono 16-bit at `rate`."""

    def __init__(self, path: Path, rate: int) -> None:
        self.rate = rate
        self._chunk = 2 * int(rate * CHUNK_S)
        self._at = 0
        self._stream: wave.Wave_read | None = None
        if path.is_file() or not path.exists():
            self._data = read_wav(path, rate)
            return
        self._data = b""
        try:
            self._stream = wave.open(str(path), "rb")
        except (OSError, wave.Error, EOFError) as e:
            raise AudioInputError(f"cannot read the WAV stream {path}: {e}") from None
        got = (self._stream.getnchannels(), self._stream.getsampwidth(), self._stream.getframerate())
        if got != (1, 2, rate):
            raise AudioInputError(f"{path}: a WAV stream must be mono 16-bit {rate} Hz (got {got})")

    def read(self) -> bytes:
        if self._stream is not None:
            try:
                return self._stream.readframes(self._chunk // 2)
            except (OSError, wave.Error, EOFError) as e:
                raise MicrophoneGoneError(f"the WAV stream stopped: {e}") from None
        chunk = self._data[self._at:self._at + self._chunk]
        self._at += len(chunk)
        return chunk

    def close(self) -> None:
        self._at = len(self._data)
        if self._stream is not None:
            self._stream.close()


class Microphone(_Closing):
    """A PortAudio input: mono int16 at `rate`, never raising on an overflow (a late read
    loses samples rather than the story)."""

    def __init__(self, device: str, rate: int) -> None:
        try:
            import pyaudio  # type: ignore[import-untyped, import-not-found, unused-ignore]
        except ImportError:
            raise AudioInputError("the microphone needs pyaudio (pip install pyaudio)") from None
        self.rate = rate
        self._frames = int(rate * CHUNK_S)
        self._pa = pyaudio.PyAudio()
        try:
            index = self._device_index(device)
            self._stream = self._pa.open(format=pyaudio.paInt16, channels=1, rate=rate, input=True,
                                         frames_per_buffer=self._frames, input_device_index=index)
        except (OSError, ValueError) as e:
            self._pa.terminate()
            raise AudioInputError(f"cannot open the audio input {device!r}: {e}") from None
        except BaseException:
            self._pa.terminate()
            raise

    def _device_index(self, device: str) -> int | None:
        if device == "default":
            return None
        if device.isdigit():
            return int(device)
        names = []
        for i in range(self._pa.get_device_count()):
            info = self._pa.get_device_info_by_index(i)
            if int(info.get("maxInputChannels", 0)) > 0:
                names.append(str(info["name"]))
                if device in str(info["name"]):
                    return i
        raise AudioInputError(f"no audio input named {device!r} (inputs: {', '.join(names) or 'none'})")

    def read(self) -> bytes:
        try:
            data: bytes = self._stream.read(self._frames, exception_on_overflow=False)
        except OSError as e:
            raise MicrophoneGoneError(f"the audio input stopped: {e}") from None
        return data

    def close(self) -> None:
        try:
            self._stream.close()
        except OSError:
            pass
        self._pa.terminate()


def open_source(spec: str, rate: int) -> WavSource | Microphone:
    """"default" (PortAudio's default input), "wav:FILE", or a device name (a part of it) or index."""
    if spec.startswith("wav:"):
        return WavSource(Path(spec[4:]), rate)
    return Microphone(spec, rate)
