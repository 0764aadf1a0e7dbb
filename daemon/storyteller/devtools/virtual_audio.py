"""A sound path without a sound card (../shared/docs/virtual-audio.md): a private PulseAudio
server with a pipe microphone (written in real time: queued speech, else silence) and a null
speaker whose monitor is recorded. For the robot's tests and scripts/bench-robot."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from storyteller.voice.audio import read_wav

RATE = 16000
SPEECH_RMS = 300  # int16 RMS of a 20 ms block above which the null sink's monitor carries sound


class Pulse:
    """A PulseAudio server of our own: mic (pipe source, 16 kHz mono) and spk (null sink)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="storyteller-pulse-"))
        self.env = {"XDG_RUNTIME_DIR": str(self.dir), "PULSE_SERVER": f"unix:{self.dir}/pulse/native"}
        self.fifo = self.dir / "mic.fifo"
        self._feed: threading.Thread | None = None
        self._queue: list[bytes] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), env={**os.environ, **self.env}, capture_output=True, text=True, timeout=20)

    def start(self) -> None:
        p = self.run("pulseaudio", "-D", "--exit-idle-time=-1", "-n", "--load=module-native-protocol-unix",
                     "--load=module-null-sink sink_name=spk",
                     f"--load=module-pipe-source source_name=mic file={self.fifo} format=s16le rate={RATE} channels=1")
        if p.returncode != 0:
            raise RuntimeError(f"pulseaudio did not start: {p.stderr.strip()}")
        for cmd in (("pactl", "set-default-source", "mic"), ("pactl", "set-default-sink", "spk")):
            if (p := self.run(*cmd)).returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)}: {p.stderr.strip()}")
        self._stop.clear()
        self._feed = threading.Thread(target=self._feeder, daemon=True)
        self._feed.start()

    def _feeder(self) -> None:
        """Writes the microphone in real time: queued speech, else silence (a pipe source
        with nothing written delivers nothing at all)."""
        fd = os.open(self.fifo, os.O_RDWR)
        block = 2 * RATE // 50  # 20 ms
        next_t = time.monotonic()
        try:
            while not self._stop.is_set():
                with self._lock:
                    data = self._queue.pop(0) if self._queue else bytes(block)
                os.write(fd, data)
                next_t += len(data) / (2 * RATE)
                time.sleep(max(0.0, next_t - time.monotonic()))
        except OSError:
            pass
        finally:
            os.close(fd)

    def say(self, wav: Path) -> float:
        """Queues a WAV file into the microphone; returns when its last sample will have been written."""
        data = read_wav(wav, RATE)
        block = 2 * RATE // 50
        with self._lock:
            ahead = sum(len(b) for b in self._queue)
            self._queue += [data[i:i + block] for i in range(0, len(data), block)]
        return time.monotonic() + (ahead + len(data)) / (2 * RATE)

    def add_sink(self, name: str) -> None:
        """One more null speaker (its monitor: NAME.monitor)."""
        if (p := self.run("pactl", "load-module", "module-null-sink", f"sink_name={name}")).returncode != 0:
            raise RuntimeError(f"pactl load-module module-null-sink: {p.stderr.strip()}")

    def kill(self) -> None:
        self._stop.set()
        if self._feed is not None:
            self._feed.join()
        self.run("pulseaudio", "-k")
        for _ in range(100):
            if not (self.dir / "pulse" / "pid").exists():
                break
            time.sleep(0.05)

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class Recorder:
    """parec of a speaker's monitor (spk's by default): 20 ms blocks, each with the time it arrived."""

    def __init__(self, pulse: Pulse, sink: str = "spk") -> None:
        self.blocks: list[tuple[float, float]] = []  # (arrival, RMS)
        self.proc = subprocess.Popen(["parec", "-d", f"{sink}.monitor", "--format=s16le", f"--rate={RATE}",
                                      "--channels=1", "--latency-msec=10"], stdout=subprocess.PIPE,
                                     env={**os.environ, **pulse.env})
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        block = 2 * RATE // 50
        while data := self.proc.stdout.read(block):
            x = np.frombuffer(data[:len(data) // 2 * 2], np.int16).astype(np.float64)
            self.blocks.append((time.monotonic(), float(np.sqrt(np.mean(x * x))) if x.size else 0.0))

    def sound(self, since: float = 0.0) -> list[float]:
        """Arrival times of the blocks with sound in them."""
        return [t for t, rms in self.blocks if rms > SPEECH_RMS and t >= since]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait()
