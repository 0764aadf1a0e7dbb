"""Text to speech (storyteller.voice.tts) with the real engines, nothing faked: every
backend found here (espeak-ng's command, pyttsx3) runs the same tests. Speaking is tested
with the sound device made absent on purpose (the clear error) and, when PulseAudio is
installed, through a private null sink whose monitor records what was played."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import package_support as ps
import pytest

from storyteller.safety import SAFE_TOPICS
from storyteller.voice import tts

S1 = "Once upon a time, there was a little dragon named Tom."
S2 = "He lived in a warm cave by the sea."
S3 = "Every night, he counted the stars until he fell asleep."
BACKENDS = tts.available_backends()


@pytest.fixture(params=["espeak-ng", "pyttsx3"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param not in BACKENDS:
        pytest.skip(f"{request.param} is not installed (scripts/install-deps installs both)")
    return str(request.param)


def no_audio_env(d: Path) -> dict[str, str]:
    """Environment in which no sound server answers and ALSA knows no device, whatever the
    machine has."""
    (d / "empty-alsa.conf").write_text("")
    return {"PULSE_SERVER": f"unix:{d}/no-pulse", "ALSA_CONFIG_PATH": str(d / "empty-alsa.conf"),
            "PIPEWIRE_REMOTE": f"{d}/no-pipewire"}


@pytest.fixture
def no_audio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = no_audio_env(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def wav_of(sentences: list[str], path: Path, backend: str) -> wave.Wave_read:
    sink = tts.open_sink(speak=False, wav=path, backend=backend)
    for s in sentences:
        sink.say(s)
    sink.close()
    return wave.open(str(path), "rb")


def seconds(w: wave.Wave_read) -> float:
    return w.getnframes() / w.getframerate()


# ----------------------------------------------------------------------------- WAV files


def test_wav_holds_the_whole_story_in_one_file(backend: str, tmp_path: Path) -> None:
    one = wav_of([S1], tmp_path / "one.wav", backend)
    three = wav_of([S1, S2, S3], tmp_path / "s.wav", backend)
    assert (three.getnchannels(), three.getsampwidth()) == (1, 2) and three.getframerate() >= 16000
    assert seconds(one) > 1.0 and seconds(three) > 1.8 * seconds(one)
    assert len(three.readframes(three.getnframes())) == 2 * three.getnframes()  # the header tells the truth


def test_sentences_are_appended_in_order(backend: str, tmp_path: Path) -> None:
    a = wav_of([S1], tmp_path / "a.wav", backend).readframes(10**9)
    b = wav_of([S2], tmp_path / "b.wav", backend).readframes(10**9)
    ab = wav_of([S1, S2], tmp_path / "ab.wav", backend).readframes(10**9)
    if backend == "espeak-ng":
        assert ab == a + b
    else:  # libespeak-ng in this process carries its state (and a few ms) from utterance to utterance
        assert abs(len(ab) - len(a) - len(b)) < 0.05 * len(ab)


def test_say_returns_at_once(backend: str, tmp_path: Path) -> None:
    sink = tts.open_sink(speak=False, wav=tmp_path / "s.wav", backend=backend)
    start = time.perf_counter()
    for _ in range(3):
        sink.say(" ".join([S1, S2, S3] * 10))  # ~30 s of speech each
    queued = time.perf_counter() - start
    synthesized_when_queued = len(sink.spoken)  # not a time: the worker's progress
    sink.close()
    assert queued < 0.1 and synthesized_when_queued < 3 and len(sink.spoken) == 3


def test_an_empty_story_is_an_empty_valid_wav(backend: str, tmp_path: Path) -> None:
    w = wav_of(["", "  \n "], tmp_path / "s.wav", backend)
    assert w.getnframes() == 0 and w.getnchannels() == 1


def test_text_is_spoken_never_an_option_a_path_or_shell(backend: str, tmp_path: Path) -> None:
    canary, evil = tmp_path / "pwned", tmp_path / "evil.wav"
    tricks = [f"-v xx -w {evil} --version",
              f"Hello; rm -rf / ; touch {canary} && touch {canary} | tee {canary}",
              f"$(touch {canary}) `touch {canary}` > {canary}\x00 after a NUL\n-q on a new line"]
    w = wav_of(tricks, tmp_path / "s.wav", backend)
    assert not canary.exists() and not evil.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.wav"]
    assert seconds(w) > 10  # every character spoken (a quiet -q or a -w elsewhere would give ~0)
    assert seconds(wav_of([tricks[0]], tmp_path / "v.wav", backend)) > 2


def test_stop_returns_promptly_and_keeps_the_file_valid(backend: str, tmp_path: Path) -> None:
    sink = tts.open_sink(speak=False, wav=tmp_path / "s.wav", backend=backend)
    sink.say(" ".join(["dragon"] * 3000) + ".")  # seconds to synthesize, 20 minutes long
    for _ in range(50):
        sink.say(S1)
    time.sleep(0.3)
    start = time.perf_counter()
    sink.stop()
    stopped = time.perf_counter() - start
    sink.say(S2)  # dropped, no error
    sink.close()
    assert stopped < 1.0 and time.perf_counter() - start < 1.0
    w = wave.open(str(tmp_path / "s.wav"), "rb")
    assert seconds(w) < 60  # cut short


def test_unwritable_wav_fails_at_open(backend: str, tmp_path: Path) -> None:
    with pytest.raises(tts.SpeechError, match="cannot write the WAV file"):
        tts.open_sink(speak=False, wav=tmp_path / "missing" / "s.wav", backend=backend)


def test_unknown_voice_fails_at_open(tmp_path: Path) -> None:
    if "espeak-ng" not in BACKENDS:
        pytest.skip("espeak-ng is not installed")
    with pytest.raises(tts.SpeechError, match="voice does not exist"):
        tts.open_sink(speak=False, wav=tmp_path / "s.wav", backend="espeak-ng", voice="nosuchvoice")


# ----------------------------------------------------------------------------- speaking


def test_speak_without_a_sound_device_is_one_clear_error(backend: str, no_audio: dict[str, str],
                                                        tmp_path: Path) -> None:
    start = time.perf_counter()
    with pytest.raises(tts.NoAudioOutputError) as e:
        tts.open_sink(speak=True, wav=tmp_path / "s.wav", backend=backend)
    assert time.perf_counter() - start < 3
    msg = str(e.value)
    assert msg.startswith("no audio output for text-to-speech") and "\n" not in msg
    assert not (tmp_path / "s.wav").exists()  # nothing created before speaking was known to work


@pytest.fixture
def null_sink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private PulseAudio server (docs: virtual-audio.md) with a null sink `spk` as the
    default output; yields its runtime folder."""
    if not (shutil.which("pulseaudio") and shutil.which("parec") and shutil.which("pactl")):
        pytest.skip("PulseAudio is not installed (apt-get install pulseaudio pulseaudio-utils)")
    env = {"XDG_RUNTIME_DIR": str(tmp_path), "HOME": str(tmp_path), "PULSE_SERVER": f"unix:{tmp_path}/native"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    server = subprocess.Popen(
        ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no", "--disable-shm=yes",
         f"--load=module-native-protocol-unix auth-anonymous=1 socket={tmp_path}/native",
         "--load=module-null-sink sink_name=spk"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if subprocess.run(["pactl", "set-default-sink", "spk"], capture_output=True).returncode == 0:
                break
            time.sleep(0.05)
        else:
            pytest.skip("the private PulseAudio server did not start")
        yield tmp_path
    finally:
        server.terminate()
        server.wait(10)


def test_speak_plays_through_the_default_output(backend: str, null_sink: Path) -> None:
    rec = subprocess.Popen(["parec", "-d", "spk.monitor", "--format=s16le", "--rate=16000", "--channels=1",
                            "--latency-msec=20"], stdout=subprocess.PIPE)
    try:
        time.sleep(0.2)
        sink = tts.open_sink(speak=True, wav=None, backend=backend)
        sink.say("Hello, little dragon.")
        sink.close()
        time.sleep(0.2)
    finally:
        rec.terminate()
        raw = rec.communicate(timeout=10)[0]
    samples = memoryview(raw).cast("h")
    loud = sum(1 for s in samples[::16] if abs(s) > 300) * 16 / 16000
    assert loud > 0.3, f"{len(samples) / 16000:.2f} s recorded, {loud:.2f} s of it loud"


def test_stop_interrupts_speech(backend: str, null_sink: Path) -> None:
    sink = tts.open_sink(speak=True, wav=None, backend=backend)
    for _ in range(5):
        sink.say(S1 + " " + S3)
    time.sleep(0.5)
    start = time.perf_counter()
    sink.stop()
    sink.close()
    assert time.perf_counter() - start < 1.0


# ----------------------------------------------------------------------------- the command


STORY_CHAINS = {".": [(" Tom", 30)], " Tom": [(" ran", 30)], " ran": [("!", 30)], "!": [("<s>", 30)]}


@pytest.fixture(scope="module")
def story_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ps.write_scripted_model(tmp_path_factory.mktemp("tts") / "story.bin", STORY_CHAINS)


def test_tell_writes_the_story_to_a_wav_file(backend: str, story_model: Path, tmp_path: Path) -> None:
    """With each engine (pyttsx3: espeak-ng's command off PATH, so "auto" falls back to it):
    the story alone on stdout, spoken into the WAV file."""
    out, bindir = tmp_path / "out.wav", tmp_path / "bin"
    bindir.mkdir()
    env = {"PATH": str(bindir)} if backend == "pyttsx3" else None
    p = ps.run_cli("tell", "a brave little dragon", "--wav", out, "--model", story_model,
                   "--tokenizer", ps.TOKENIZER, env=env)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert p.stdout.startswith("Once upon a time, there was a brave little dragon named ")
    assert p.stdout.endswith(". Tom ran! The end.\n") and p.stdout.count("\n") == 1  # nothing else
    with wave.open(str(out), "rb") as w:
        assert seconds(w) > 2


def test_tell_speak_without_a_sound_device_is_one_line(story_model: Path, tmp_path: Path) -> None:
    if not BACKENDS:
        pytest.skip("no text-to-speech engine installed")
    p = ps.run_cli("tell", "a dragon", "--speak", "--wav", tmp_path / "out.wav", "--model", story_model,
                   "--tokenizer", ps.TOKENIZER, env=no_audio_env(tmp_path))
    assert p.returncode == 1 and p.stdout == "" and "Traceback" not in p.stderr
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("storyteller: no audio output for text-to-speech")
    assert "--wav FILE writes the story to a file instead" in p.stderr
    assert not (tmp_path / "out.wav").exists()


def test_tell_wav_in_a_missing_folder_is_one_line(story_model: Path, tmp_path: Path) -> None:
    if not BACKENDS:
        pytest.skip("no text-to-speech engine installed")
    p = ps.run_cli("tell", "a dragon", "--wav", tmp_path / "no" / "out.wav", "--model", story_model,
                   "--tokenizer", ps.TOKENIZER)
    assert p.returncode == 1 and p.stdout == "" and p.stderr.count("\n") == 1
    assert p.stderr.startswith(f"storyteller: cannot write the WAV file {tmp_path / 'no' / 'out.wav'}")


def test_no_engine_at_all_is_one_line(story_model: Path, tmp_path: Path) -> None:
    """Neither espeak-ng on PATH nor pyttsx3 importable: the message says what to install."""
    (tmp_path / "pyttsx3.py").write_text("raise ImportError('not here')\n")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    env = {"PATH": str(bindir), "PYTHONPATH": f"{tmp_path}{os.pathsep}{ps.cli_env()['PYTHONPATH']}"}
    p = ps.run_cli("tell", "a dragon", "--wav", tmp_path / "out.wav", "--model", story_model,
                   "--tokenizer", ps.TOKENIZER, env=env)
    assert p.returncode == 1 and p.stderr.count("\n") == 1
    assert "text-to-speech needs espeak-ng (apt-get install espeak-ng) or pyttsx3" in p.stderr


# ----------------------------------------------------------------------------- no markup reaches espeak-ng (issue 9)

MARKUP = ["Sue loved [[S'It]].", "Tom said [[k'Il]] twice.", "<speak>Hi</speak> there.", "A cat\x01 40P ran.",
          "A \uff3b\uff3bS'It\uff3d\uff3d cat.", "Hi \U0001f52b there."]
FAKE_ESPEAK = """#!{python}
import json, sys, wave
args = sys.argv[1:]
with open({log!r}, "a") as f:
    f.write(json.dumps({{"argv": args, "stdin": sys.stdin.read()}}) + "\\n")
if "-w" in args:
    with wave.open(args[args.index("-w") + 1], "wb") as w:
        w.setnchannels(1); w.setsampwidth(2); w.setframerate(22050); w.writeframes(bytes(4410))
"""


def fake_espeak(d: Path) -> tuple[Path, Path]:
    """A folder with an `espeak-ng` that records its arguments and stdin (JSON lines in the
    returned log) and writes a short silent WAV for -w."""
    bindir, log = d / "fake-bin", d / "espeak.log"
    bindir.mkdir()
    exe = bindir / "espeak-ng"
    exe.write_text(FAKE_ESPEAK.format(python=sys.executable, log=str(log)))
    exe.chmod(0o755)
    return bindir, log


def espeak_calls(log: Path) -> list[dict[str, Any]]:
    """The recorded calls that synthesized something (not the start-up check's empty text)."""
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert all("-m" not in c["argv"] and "--ssml" not in c["argv"] for c in calls)  # SSML never on
    return [c for c in calls if c["stdin"]]


def test_espeak_never_receives_markup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir, log = fake_espeak(tmp_path)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    sink = tts.open_sink(speak=False, wav=tmp_path / "s.wav", backend="espeak-ng")
    for s in MARKUP:
        sink.say(s)
    sink.close()
    spoken = [c["stdin"] for c in espeak_calls(log)]
    assert spoken == ["Sue loved ((S'It)).", "Tom said ((k'Il)) twice.", "(speak)Hi(/speak) there.", "A cat 40P ran.",
                      "A ((S'It)) cat.", "Hi there."]


def test_phoneme_input_is_not_spoken(tmp_path: Path) -> None:
    """The issue's proof: "Sue loved [[S'It]]." was byte for byte espeak-ng's "Sue loved shit."."""
    if "espeak-ng" not in BACKENDS:
        pytest.skip("espeak-ng is not installed")
    wav_of(["Sue loved [[S'It]]."], tmp_path / "sink.wav", "espeak-ng").close()
    argv = ["espeak-ng", "-b", "1", "-s", str(tts.DEFAULT_RATE), "-w"]
    subprocess.run([*argv, str(tmp_path / "swear.wav"), "Sue loved shit."], check=True)
    subprocess.run([*argv, str(tmp_path / "plain.wav"), "Sue loved ((S'It))."], check=True)
    sink, swear, plain = ((tmp_path / f"{n}.wav").read_bytes() for n in ("sink", "swear", "plain"))
    assert sink != swear and sink == plain


def test_tell_prints_and_speaks_the_same_gated_text(tmp_path: Path) -> None:
    """The whole path, `storyteller tell --wav`: a model whose sentences hide a swear word in
    espeak-ng phonemes, "gun" behind a soft hyphen and "kill" behind a Cyrillic letter. What
    is printed is what is spoken, and neither holds any of them."""
    from test_story import SUE, TRICKS

    model = ps.write_scripted_model(tmp_path / "tricks.bin", TRICKS)
    bindir, log = fake_espeak(tmp_path)
    env = {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    told: list[str] = []
    for seed in (1, 2, 3):
        log.unlink(missing_ok=True)
        p = ps.run_cli("tell", "a brave little dragon", "--seed", str(seed), "--sentences", "6", "--wav",
                       tmp_path / "out.wav", "--model", model, "--tokenizer", ps.TOKENIZER, env=env)
        assert p.returncode == 0 and p.stderr == "", p.stderr
        sentences = [s["stdin"] for s in espeak_calls(log)]
        assert p.stdout == " ".join(sentences) + "\n"
        assert sentences[0].startswith("Once upon a time") and set(sentences[1:]) <= {SUE, "The end."}, sentences
        told += sentences
    assert SUE in told


@pytest.mark.parametrize("topic", ["[[S'It]]", "a k\u00adnife and a gu\u00adn", "a \u043anife", "a \U0001f52b"])
def test_tell_refuses_such_topics_kindly_without_repeating_them(topic: str, story_model: Path) -> None:
    p = ps.run_cli("tell", topic, "--model", story_model, "--tokenizer", ps.TOKENIZER)
    assert p.returncode == 3 and p.stderr == ""
    refusal = "I'm sorry, I can't tell a story about that. How about a story about {} instead?\n"
    assert p.stdout in {refusal.format(t) for t in SAFE_TOPICS}


def test_volume_changes_from_the_next_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """"louder" in the middle of a story: the sentences after it are spoken with the new
    amplitude (espeak-ng's -a), the ones before with the old."""
    bindir, log = fake_espeak(tmp_path)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    sink = tts.open_sink(speak=False, wav=tmp_path / "s.wav", backend="espeak-ng", volume=75)
    sink.say(S1)
    while not sink.spoken:
        time.sleep(0.01)
    sink.set_volume(150)
    sink.say(S2)
    sink.close()
    calls = espeak_calls(log)
    assert [c["argv"][c["argv"].index("-a") + 1] for c in calls] == ["75", "150"]
