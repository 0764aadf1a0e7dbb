"""The robot as a systemd service: the unit verifies, the daemon says READY=1 and pings
WATCHDOG=1 on the NOTIFY_SOCKET the test listens on (as systemd would), and a hung
microphone read stops the pings (systemd then restarts it). The BusyBox init script parses."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import package_support as ps
import pytest
from robot_support import Daemon, write_15m_q8

from storyteller import notify, service

ETC = Path(__file__).resolve().parents[2] / "etc"


def test_unit_verifies(tmp_path: Path) -> None:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    unit = (ETC / "storyteller.service").read_text()
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "Restart=on-failure" in unit
    assert "SupplementaryGroups=gpio" in unit and "Group=audio" in unit
    # verify checks that ExecStart's program exists: the one the unit names is not installed here
    (tmp_path / "storyteller.service").write_text(unit.replace("/usr/local/bin/storyteller", "/bin/true"))
    p = subprocess.run([exe, "verify", str(tmp_path / "storyteller.service")], capture_output=True, text=True)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    (tmp_path / "broken.service").write_text(unit.replace("Type=notify", "Type=notifyy"))
    p = subprocess.run([exe, "verify", str(tmp_path / "broken.service")], capture_output=True, text=True)
    assert "Failed to parse service type" in p.stderr  # the check can fail


def test_init_script_parses() -> None:
    script = ETC / "init.d" / "S99storyteller"
    assert os.access(script, os.X_OK)
    subprocess.run(["sh", "-n", str(script)], check=True)
    # what the unit sets for memory, the init script sets too
    unit_env = [line.removeprefix("Environment=") for line in (ETC / "storyteller.service").read_text().splitlines()
                if line.startswith("Environment=MALLOC")]
    assert unit_env and all(f"{e} exec " in script.read_text() for e in unit_env)
    p = subprocess.run(["sh", str(script), "bogus"], capture_output=True, text=True)
    assert p.returncode == 1 and p.stdout.startswith("Usage:")


class NotifySocket:
    """A datagram socket where systemd would listen; messages() so far."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.received: list[tuple[float, str]] = []

    def collect(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                self.received.append((time.monotonic(), self.sock.recv(4096).decode()))
            except TimeoutError:
                pass

    def pings(self, since: float = 0.0) -> list[float]:
        return [t for t, m in self.received if "WATCHDOG=1" in m.split("\n") and t >= since]


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    s = NotifySocket(tmp_path / "notify")
    yield s
    s.sock.close()


def test_notify_without_systemd_python(notify_socket: NotifySocket) -> None:
    """The fallback: the datagram straight to $NOTIFY_SOCKET (and nothing without one)."""
    assert notify._send(str(notify_socket.path), "READY=1\nSTATUS=test")
    notify_socket.collect(0.2)
    assert [m for _, m in notify_socket.received] == ["READY=1\nSTATUS=test"]
    assert not notify.notify("READY=1", env={})
    assert notify.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert notify.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None


def wav_header(rate: int) -> bytes:
    """A mono 16-bit WAV header claiming a long stream (what a FIFO microphone sends first)."""
    n = 0x7FFF0000
    return (b"RIFF" + struct.pack("<I", n + 36) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, 2 * rate, 2, 16)
            + b"data" + struct.pack("<I", n))


def test_ready_watchdog_and_a_hang_stops_the_pings(tmp_path: Path, notify_socket: NotifySocket) -> None:
    model = write_15m_q8(tmp_path)
    mic = tmp_path / "mic.wav"
    os.mkfifo(mic)
    fd = os.open(mic, os.O_RDWR)  # never blocks; the daemon reads what is written here
    os.write(fd, wav_header(16000))
    d = Daemon("--input", f"wav:{mic}", "--output", f"wav:{tmp_path}/story.wav", "--socket", tmp_path / "ctl.sock",
               "--model", model, "--tokenizer", ps.TOKENIZER,
               env={"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "1000000"})
    try:
        silence = bytes(2 * 16000 // 10)
        end = time.monotonic() + 3.0
        while time.monotonic() < end:  # the microphone delivers: pings every 0.5 s
            os.write(fd, silence)
            notify_socket.collect(0.1)
        messages = [m for _, m in notify_socket.received]
        assert any(m.startswith("READY=1\n") for m in messages), messages
        pings = notify_socket.pings()
        assert len(pings) >= 3, messages
        hang = time.monotonic()  # the microphone read now blocks forever
        notify_socket.collect(4.0)
        late = notify_socket.pings(since=hang + 2.5)
        assert late == [], (notify_socket.pings(since=hang), d.log())
        assert d.proc.poll() is None  # hung, not dead: only the watchdog can tell
    finally:
        os.close(fd)
        d.close()


def test_events_carry_their_priority_into_the_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only on the stream systemd names in $JOURNAL_STREAM: "<3>" errors, "<4>" warnings, "<6>" the rest."""
    path = tmp_path / "stderr"
    with path.open("w") as out:
        service.Log(out)("state", "idle")  # not the journal: plain lines (a terminal, a log file, the tests)
        st = os.fstat(out.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        log = service.Log(out)
        log("error", "speech: no audio output")
        log("input-gone")
        log("state", "listening")
    lines = path.read_text().splitlines()
    assert [line.split(" ", 1)[0][:3] for line in lines[1:]] == ["<3>", "<4>", "<6>"]
    assert not lines[0].startswith("<") and lines[1].endswith(" error speech: no audio output")
