"""The robot through real sound devices: a private PulseAudio server (../shared/docs/
virtual-audio.md) with a pipe microphone and a null speaker. espeak-ng's spoken request is
written into the microphone in real time, PortAudio (pyaudio, through ALSA's pulse plugin)
delivers it to PocketSphinx, the story is spoken by espeak-ng into the null sink and recorded
from its monitor. Faults: the sound server goes away under the microphone, the speaking
espeak-ng process is killed."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import package_support as ps
import pytest
from robot_support import Daemon, cli, request_wav, write_15m_q8

from storyteller.service import request
from storyteller.voice.audio import read_wav

RATE = 16000
SPEECH_RMS = 300  # int16 RMS of a 20 ms block above which the null sink's monitor carries sound

pytestmark = pytest.mark.skipif(
    shutil.which("pulseaudio") is None or shutil.which("parec") is None
    or importlib.util.find_spec("pyaudio") is None or importlib.util.find_spec("pocketsphinx") is None,
    reason="needs pulseaudio, pulseaudio-utils, pyaudio and pocketsphinx (scripts/install-deps)")


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
        assert p.returncode == 0, p.stderr
        for cmd in (("pactl", "set-default-source", "mic"), ("pactl", "set-default-sink", "spk")):
            assert self.run(*cmd).returncode == 0
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
    """parec of the speaker's monitor: 20 ms blocks, each with the time it arrived."""

    def __init__(self, pulse: Pulse) -> None:
        self.blocks: list[tuple[float, float]] = []  # (arrival, RMS)
        self.proc = subprocess.Popen(["parec", "-d", "spk.monitor", "--format=s16le", f"--rate={RATE}",
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


@pytest.fixture
def pulse() -> Iterator[Pulse]:
    if os.geteuid() != 0 and not os.environ.get("XDG_RUNTIME_DIR"):
        pytest.skip("PulseAudio needs a runtime folder")
    p = Pulse()
    p.start()
    yield p
    p.close()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_15m_q8(tmp_path_factory.mktemp("m15"))


def daemon(pulse: Pulse, tmp_path: Path, model: Path, output: str = "default") -> Daemon:
    d = Daemon("--input", "default", "--output", output, "--socket", tmp_path / "ctl.sock",
               "--model", model, "--tokenizer", ps.TOKENIZER, env=pulse.env)
    d.wait("input-open")
    return d


def test_spoken_request_through_portaudio_to_the_speaker(pulse: Pulse, tmp_path: Path, model: Path) -> None:
    rec = Recorder(pulse)
    d = daemon(pulse, tmp_path, model)
    try:
        said = pulse.say(request_wav(tmp_path, "tell me a story about a dragon"))
        _, heard = d.wait("heard")
        assert heard == "tell me a story about a dragon"
        _, prompt = d.wait("prompt")
        assert prompt.startswith("Once upon a time, there was a dragon named ")
        spoken, _ = d.wait("spoken", "1")
        ended, _ = d.wait("generation-end")
        assert spoken < ended, d.log()  # the first sentence went to the speaker before the model finished
        while not rec.sound(since=said):
            time.sleep(0.02)
            assert time.monotonic() < said + 10, "no sound reached the speaker"
        first_sound = rec.sound(since=said)[0]
        time.sleep(0.8)  # mid-sentence (the opening takes ~3 s to say)
        assert len(rec.sound(since=first_sound)) > 20  # speech: sound in most 20 ms blocks
        asked = time.monotonic()  # the request itself, as a button or a spoken "stop" makes it
        assert request(tmp_path / "ctl.sock", "stop") == "ok"
        time.sleep(1.0)
        after = rec.sound(since=asked)
        silent_after = (after[-1] if after else asked) - asked
        assert silent_after <= 0.3, f"sound for {silent_after:.3f} s after stop"
        assert d.events("told") == []  # cut short, not finished
        print(f"request end -> first sound {first_sound - said:.3f} s; stop -> silence {silent_after:.3f} s")
    finally:
        d.close()
        rec.close()


def test_microphone_gone_mid_story(pulse: Pulse, tmp_path: Path, model: Path) -> None:
    """The sound server goes away while a story is told (into a file): the story goes on,
    the listener looks for the microphone again and hears the next request once it is back."""
    d = daemon(pulse, tmp_path, model, output=f"wav:{tmp_path}/story.wav")
    try:
        pulse.say(request_wav(tmp_path, "tell me a story about a cat"))
        d.wait("prompt")
        pulse.kill()
        d.wait("input-gone", timeout=10)
        d.wait("told")
        pulse.start()
        n = len(d.lines)
        d.wait("input-open", after=n, timeout=15)
        pulse.say(request_wav(tmp_path, "tell me a story about the moon"))
        _, heard = d.wait("heard", "moon", timeout=15)
        d.wait("told", after=n)
    finally:
        d.close()


def test_speech_process_killed_mid_story(pulse: Pulse, tmp_path: Path, model: Path) -> None:
    """The espeak-ng that speaks is killed mid-sentence: a new one says the rest."""
    rec = Recorder(pulse)
    d = daemon(pulse, tmp_path, model)
    try:
        cli("say", "a", "dragon", "--socket", tmp_path / "ctl.sock")
        d.wait("spoken", "1")
        while not rec.sound():
            time.sleep(0.02)
        children = subprocess.run(["pgrep", "-P", str(d.proc.pid), "espeak-ng"], capture_output=True, text=True)
        pids = [int(p) for p in children.stdout.split()]
        assert pids, d.log()
        killed = time.monotonic()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        _, told = d.wait("told", timeout=20)
        assert told.endswith("speech restarts=1"), d.log()
        assert rec.sound(since=killed + 0.3), "nothing was said after the kill"
    finally:
        d.close()
        rec.close()
