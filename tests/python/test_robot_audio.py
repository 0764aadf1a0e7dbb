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
import time
from collections.abc import Iterator
from pathlib import Path

import package_support as ps
import pytest
from robot_support import Daemon, cli, dragon_story_begins, request_wav, write_15m_q8

from storyteller.devtools.virtual_audio import Pulse, Recorder
from storyteller.service import request
from storyteller.voice import tts

pytestmark = pytest.mark.skipif(
    shutil.which("pulseaudio") is None or shutil.which("parec") is None
    or importlib.util.find_spec("pyaudio") is None or importlib.util.find_spec("pocketsphinx") is None,
    reason="needs pulseaudio, pulseaudio-utils, pyaudio and pocketsphinx (scripts/install-deps)")


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
        dragon_story_begins(d)
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


def test_a_named_output_gets_the_story_and_the_default_none(pulse: Pulse, tmp_path: Path, model: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """--output NAME: the story is heard on that sink of the sound server, not on the default
    one; a name that is no output is one line at start-up, naming it."""
    pulse.add_sink("nursery")
    default, named = Recorder(pulse), Recorder(pulse, "nursery")
    d = daemon(pulse, tmp_path, model, output="nursery")
    try:
        asked = time.monotonic()
        cli("say", "a", "dragon", "--socket", tmp_path / "ctl.sock")
        d.wait("spoken", "1")
        while len(named.sound(since=asked)) < 20:
            time.sleep(0.02)
            assert time.monotonic() < asked + 15, "no speech reached the named output"
        assert request(tmp_path / "ctl.sock", "stop") == "ok"
        assert default.sound(since=asked) == []
    finally:
        d.close()
        default.close()
        named.close()
    for key, value in pulse.env.items():  # this process as the daemon: the same sound server
        monkeypatch.setenv(key, value)
    with pytest.raises(tts.NoAudioOutputError, match="audio output 'attic' does not play"):
        tts.open_sink(speak=True, wav=None, device="attic")
    with pytest.raises(tts.NoAudioOutputError, match="is not a device name"):
        tts.open_sink(speak=True, wav=None, device="--help")
