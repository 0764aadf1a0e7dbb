"""The robot end to end on files (the fast variant): espeak-ng's spoken request → the WAV
source → PocketSphinx → a story on the topic from a stories15M-shaped model → speech into a
WAV file; the control socket; the faults that need no sound server (model missing, GPIO
unavailable). test_robot_audio.py runs the real PortAudio path."""

from __future__ import annotations

import os
import stat
import wave
from collections.abc import Iterator
from pathlib import Path

import package_support as ps
import pytest
from robot_support import Daemon, cli, dragon_story_begins, request_wav, write_15m_q8

pytestmark = pytest.mark.skipif(
    __import__("importlib").util.find_spec("pocketsphinx") is None,
    reason="pocketsphinx is not installed (scripts/install-deps)")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_15m_q8(tmp_path_factory.mktemp("m15"))


@pytest.fixture(scope="module")
def long_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """seq_len 1024: a story generates for a few seconds, long enough to be stopped."""
    return write_15m_q8(tmp_path_factory.mktemp("m15long"), seq_len=1024)


@pytest.fixture
def daemon(tmp_path: Path, model: Path) -> Iterator[Daemon]:
    req = request_wav(tmp_path, "tell me a story about a dragon")
    d = Daemon("--input", f"wav:{req}", "--output", f"wav:{tmp_path}/story.wav", "--socket", tmp_path / "ctl.sock",
               "--model", model, "--tokenizer", ps.TOKENIZER)
    yield d
    d.close()


def frames(path: Path) -> int:
    with wave.open(str(path)) as w:
        return w.getnframes()


def test_listen_file_to_file(tmp_path: Path, model: Path) -> None:
    req = request_wav(tmp_path, "tell me a story about a dragon")
    p = cli("listen", "--wav", req, "--speak-wav", tmp_path / "story.wav", "--model", model,
            "--tokenizer", ps.TOKENIZER)
    assert p.returncode == 0, p.stderr
    heard, story = p.stdout.splitlines()[:2]
    assert heard == "heard: tell me a story about a dragon"
    assert story.startswith("Once upon a time, there was a dragon named ") and story.rstrip().endswith("The end.")
    assert frames(tmp_path / "story.wav") > 22050  # more than a second of speech


def test_listen_without_a_request(tmp_path: Path, model: Path) -> None:
    req = request_wav(tmp_path, "quieter")
    p = cli("listen", "--wav", req, "--speak-wav", tmp_path / "story.wav", "--model", model,
            "--tokenizer", ps.TOKENIZER)
    assert p.returncode == 1 and p.stdout == "heard: quieter\nno story was asked for\n"
    assert not (tmp_path / "story.wav").exists()


def test_spoken_request_to_spoken_story(daemon: Daemon, tmp_path: Path) -> None:
    """The topic reaches the prompt; the first sentence is spoken (written) before the
    generation ends; the request's end to the first sentence is measured."""
    heard, first = dragon_story_begins(daemon)
    daemon.wait("told")
    # recognised -> first sentence in the file; opening a WAV sink (espeak-ng's checks) is on
    # this path, and a loaded machine stretches it: scripts/bench-robot measures the latency
    assert first - heard < 2.0, daemon.log()
    assert frames(tmp_path / "story.wav") > 22050
    sock = tmp_path / "ctl.sock"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o660
    daemon.wait("event", "told")
    assert daemon.events("state")[-1][1] == "idle"
    assert cli("status", "--socket", sock).stdout == "idle: ready\n"


def test_say_and_stop_over_the_socket(tmp_path: Path, long_model: Path) -> None:
    d = Daemon("--input", "wav:/nonexistent.wav", "--output", f"wav:{tmp_path}/story.wav",
               "--socket", tmp_path / "ctl.sock", "--model", long_model, "--tokenizer", ps.TOKENIZER)
    try:
        d.wait("ready")
        assert cli("say", "a", "brave", "cat", "--socket", tmp_path / "ctl.sock").stdout == "ok\n"
        _, prompt = d.wait("prompt")
        assert "brave cat" in prompt
        d.wait("spoken", "1")
        assert d.events("generation-end") == []  # still generating: stop it
        assert cli("stop", "--socket", tmp_path / "ctl.sock").stdout == "ok\n"
        asked, _ = d.wait("control", "stop")
        stopped, _ = d.wait("stopped")
        assert stopped - asked <= 0.3, d.log()
        d.wait("event", "told")
        assert d.events("state")[-1][1] == "idle"
        assert d.events("generation-end") == []  # cancelled, not finished
        size = frames(tmp_path / "story.wav")
        assert size > 0 and frames(tmp_path / "story.wav") == size
        from storyteller.service import request

        assert request(tmp_path / "ctl.sock", "; rm -rf /") == "error: say TOPIC | stop | status"
        # refused topics are answered kindly, never told
        cli("say", "a", "gun", "--socket", tmp_path / "ctl.sock")
        _, refusal = d.wait("refused")
        assert refusal.startswith("I'm sorry, I can't tell a story about that.")
    finally:
        d.close()


def test_model_missing_still_obeys_stop(tmp_path: Path) -> None:
    d = Daemon("--input", "wav:/nonexistent.wav", "--output", f"wav:{tmp_path}/story.wav",
               "--socket", tmp_path / "ctl.sock", "--model", tmp_path / "none.l2", "--tokenizer", ps.TOKENIZER)
    try:
        _, error = d.wait("error")
        assert error.startswith("model: model file") and "none.l2 not found" in error
        assert cli("status", "--socket", tmp_path / "ctl.sock").stdout.startswith("idle: no model: model file")
        assert cli("say", "a", "cat", "--socket", tmp_path / "ctl.sock").stdout == "ok\n"
        d.wait("error", "no story")
        assert cli("stop", "--socket", tmp_path / "ctl.sock").stdout == "ok\n"
        d.wait("stopped")
        assert d.proc.poll() is None
    finally:
        assert d.close() == 0


def test_gpio_unavailable_warns_once(tmp_path: Path, model: Path) -> None:
    d = Daemon("--input", "wav:/nonexistent.wav", "--output", f"wav:{tmp_path}/story.wav",
               "--socket", tmp_path / "ctl.sock", "--model", model, "--tokenizer", ps.TOKENIZER,
               "--gpio-chip", "gpiochip-absent", "--gpio-line", "3")
    try:
        d.wait("ready")
        assert [w for _, w in d.events("warning")] == ["no button: no GPIO here: neither /dev/gpiochip-absent "
                                                       "nor /sys/class/gpio"] or os.path.isdir("/sys/class/gpio")
        assert cli("say", "a", "cat", "--socket", tmp_path / "ctl.sock").stdout == "ok\n"
        d.wait("told")
        assert len(d.events("warning")) == 1
    finally:
        d.close()


def test_socket_never_replaces_a_file(tmp_path: Path, model: Path) -> None:
    (tmp_path / "ctl.sock").write_text("not a socket")
    d = Daemon("--input", "wav:/nonexistent.wav", "--output", f"wav:{tmp_path}/story.wav",
               "--socket", tmp_path / "ctl.sock", "--model", model, "--tokenizer", ps.TOKENIZER)
    assert d.proc.wait(60) == 1
    d.close()
    assert (tmp_path / "ctl.sock").read_text() == "not a socket"
    assert "cannot listen on" in d.log()


def private_kb(pid: int) -> tuple[int, int]:
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    fields = {line.split(":")[0]: int(line.split()[1]) for line in text.splitlines()[1:]}
    return fields["Rss"], fields["Private_Dirty"]


def test_short_soak_memory_and_fds_stay_flat(tmp_path: Path, model: Path) -> None:
    """25 stories one after another (scripts/bench-robot --soak 200 runs the long one): after
    the first 5, RSS and private memory stay within 1 MB and no file descriptor is left open."""
    sock = tmp_path / "ctl.sock"
    d = Daemon("--input", "wav:/nonexistent.wav", "--output", f"wav:{tmp_path}/story.wav", "--socket", sock,
               "--model", model, "--tokenizer", ps.TOKENIZER)
    from storyteller.service import request

    try:
        d.wait("ready")
        marks = []
        for i in range(25):
            n = len(d.lines)
            assert request(sock, "say a dragon") == "ok"
            d.wait("told", after=n)
            if i + 1 in (5, 25):
                marks.append((*private_kb(d.proc.pid), len(os.listdir(f"/proc/{d.proc.pid}/fd"))))
        (rss5, pd5, fd5), (rss25, pd25, fd25) = marks
        assert abs(rss25 - rss5) < 1024 and abs(pd25 - pd5) < 1024, marks
        assert fd25 == fd5, marks
    finally:
        d.close()


def test_settings_voice_section_and_flags_over_it(tmp_path: Path, model: Path) -> None:
    """[voice] of the settings file chooses the devices; a flag replaces its value."""
    conf = tmp_path / "s.toml"
    conf.write_text(f'[voice]\ninput = "wav:/nonexistent.wav"\noutput = "wav:{tmp_path}/from-settings.wav"\n'
                    f'[model]\npath = "{model}"\ntokenizer = "{ps.TOKENIZER}"\n')
    for flags, wav in (((), "from-settings.wav"), (("--output", f"wav:{tmp_path}/from-flag.wav"), "from-flag.wav")):
        d = Daemon("--config", conf, "--socket", tmp_path / "ctl.sock", *flags)
        try:
            d.wait("ready")
            cli("say", "a", "cat", "--socket", tmp_path / "ctl.sock")
            d.wait("told")
            assert frames(tmp_path / wav) > 0
        finally:
            d.close()


def test_bedtime_one_short_story_then_good_night(tmp_path: Path, model: Path) -> None:
    from datetime import datetime

    from storyteller.service import GOOD_NIGHT, in_quiet_hours

    assert in_quiet_hours("19:30-07:00", datetime(2026, 1, 1, 23, 0))
    assert in_quiet_hours("19:30-07:00", datetime(2026, 1, 1, 6, 59))
    assert not in_quiet_hours("19:30-07:00", datetime(2026, 1, 1, 7, 0))
    assert in_quiet_hours("13:00-14:00", datetime(2026, 1, 1, 13, 30)) and not in_quiet_hours("", datetime.now())
    conf = tmp_path / "s.toml"
    conf.write_text('[voice]\nquiet_hours = "00:00-23:59"\nbedtime_sentences = 1\n')
    d = Daemon("--config", conf, "--input", "wav:/nonexistent.wav", "--output", f"wav:{tmp_path}/story.wav",
               "--socket", tmp_path / "ctl.sock", "--model", model, "--tokenizer", ps.TOKENIZER)
    try:
        d.wait("ready")
        cli("say", "a", "cat", "--socket", tmp_path / "ctl.sock")
        d.wait("told")
        first = [s for _, s in d.events("sentence")]
        assert first[0].startswith("Once upon a time") and first[1:] == ["The end.", GOOD_NIGHT], first
        n = len(d.lines)
        cli("say", "a", "dog", "--socket", tmp_path / "ctl.sock")
        d.wait("told", after=n)
        assert [s for _, s in d.events("sentence")][len(first):] == [GOOD_NIGHT]
    finally:
        d.close()


def test_spoken_stop_and_requests_while_telling(tmp_path: Path, long_model: Path) -> None:
    """One recording: a request, another request, "stop". The second comes while the first
    story is told and is ignored (the robot would otherwise obey its own voice); the spoken
    "stop" silences the story."""
    import wave as wav_module

    parts = [request_wav(tmp_path, t) for t in ("tell me a story about a dragon", "tell me a story about a cat",
                                               "stop")]
    joined = tmp_path / "requests.wav"
    with wav_module.open(str(joined), "wb") as out:
        for i, part in enumerate(parts):
            with wav_module.open(str(part)) as w:
                if i == 0:
                    out.setparams(w.getparams())
                out.writeframes(w.readframes(w.getnframes()) + bytes(2 * w.getframerate()))  # 1 s pause
    d = Daemon("--input", f"wav:{joined}", "--output", f"wav:{tmp_path}/story.wav", "--socket", tmp_path / "ctl.sock",
               "--model", long_model, "--tokenizer", ps.TOKENIZER)
    try:
        d.wait("cancelled")
        assert [h for _, h in d.events("heard")] == ["tell me a story about a dragon", "tell me a story about a cat",
                                                     "stop"]
        assert len(d.events("ignored")) == 1 and [s for _, s in d.events("story")] == ["topic='dragon'"]
        assert d.events("generation-end") == []
    finally:
        d.close()


def test_button_press_tells_and_press_while_telling_stops(tmp_path: Path, long_model: Path) -> None:
    """The robot in this process with a simulated GPIO line (no gpio-sim here): a press
    starts a story, a press while it is told stops it."""
    import threading
    import time

    from test_voice_input import HeldLine

    from storyteller import config
    from storyteller.service import Log, Options, Robot, Teller

    ps.use_host_library()
    line, log_path = HeldLine(), tmp_path / "events.log"

    def events() -> list[str]:
        return [ln.split(" ", 2)[1] for ln in log_path.read_text().splitlines()]

    def wait(event: str, count: int = 1) -> None:
        end = time.monotonic() + 30
        while events().count(event) < count:
            assert time.monotonic() < end, log_path.read_text()
            time.sleep(0.02)

    def press() -> None:
        line.level = True
        time.sleep(0.15)
        line.level = False
        time.sleep(0.15)  # released long enough to count (debounce)

    options = Options(input="wav:/nonexistent.wav", output=f"wav:{tmp_path}/story.wav", socket=tmp_path / "ctl.sock",
                      gpio_chip="simulated", gpio_line=5)
    with open(log_path, "w") as log:
        robot = Robot(options, lambda: Teller(config.Settings(), long_model, ps.TOKENIZER), Log(log),
                      open_line=lambda chip, offset: line)
        runner = threading.Thread(target=robot.run, daemon=True)
        runner.start()
        try:
            wait("ready")
            press()
            wait("spoken")
            assert "generation-end" not in events()
            press()
            wait("cancelled")
            assert log_path.read_text().count(" event button") == 2 and "generation-end" not in events()
        finally:
            robot.quit()
            runner.join(10)
    assert not runner.is_alive() and line.closed
