"""The robot as its tests run it: `storyteller daemon` in a child process whose event log
(stderr: "SECONDS EVENT DETAIL" lines) is read as it comes, a stories15M-shaped model with
random weights (q8, 17 MB: the Duo's model's shape and speed, no sentence ever ends so a story
is its templated opening, ~250 generated tokens and "The end."), and espeak-ng requests."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import package_support as ps
import pytest

from storyteller.devtools import checkpoints as ck

STORIES15M = ck.STORIES15M


def write_15m_q8(d: Path, seq_len: int = 256) -> Path:
    ps.use_host_library()
    from storyteller.engine import Model

    f32, q8 = d / "m15.bin", d / "m15.q8.l2"
    ps.write_random_model(f32, dataclasses.replace(STORIES15M, seq_len=seq_len), seed=15)
    with Model.open(f32) as m:
        m.convert(q8, "q8")
    f32.unlink()
    return q8


def request_wav(d: Path, text: str) -> Path:
    """espeak-ng's American voice saying `text` (PocketSphinx's model is American English)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/install-deps)")
    path = d / (re.sub(r"\W+", "-", text) + ".wav")
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), text], check=True)
    return path


class Daemon:
    """`storyteller daemon ARGS`; lines() so far, wait(event) for the next matching line."""

    def __init__(self, *args: str | os.PathLike[str], env: dict[str, str] | None = None) -> None:
        self.lines: list[tuple[float, str, str]] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen([sys.executable, "-m", "storyteller", "daemon", *map(str, args)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=ps.cli_env(env), cwd="/")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            t, _, rest = line.strip().partition(" ")
            event, _, detail = rest.partition(" ")
            try:
                entry = (float(t), event, detail)
            except ValueError:
                entry = (-1.0, "output", line.rstrip("\n"))
            with self._cond:
                self.lines.append(entry)
                self._cond.notify_all()
        with self._cond:
            self.lines.append((-1.0, "exit", ""))
            self._cond.notify_all()

    def wait(self, event: str, detail: str = "", timeout: float = 30.0, after: int = 0) -> tuple[float, str]:
        """The first line from index `after` on with this event whose detail contains `detail`."""
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                for t, e, d in self.lines[after:]:
                    if e == event and detail in d:
                        return t, d
                    if e == "exit":
                        raise AssertionError(f"the daemon ended waiting for {event} {detail}:\n{self.log()}")
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {event} {detail} within {timeout} s:\n{self.log()}")
                self._cond.wait(left)

    def events(self, event: str) -> list[tuple[float, str]]:
        with self._cond:
            return [(t, d) for t, e, d in self.lines if e == event]

    def log(self) -> str:
        with self._cond:
            return "\n".join(f"{t:9.3f} {e} {d}" for t, e, d in self.lines)

    def close(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        return self.proc.returncode


def dragon_story_begins(d: Daemon) -> tuple[float, float]:
    """A spoken "tell me a story about a dragon" was heard, its topic reached the prompt, and
    the first sentence went to the speaker before generation ended: (heard, spoken) times."""
    heard, text = d.wait("heard")
    assert text == "tell me a story about a dragon"
    _, prompt = d.wait("prompt")
    assert prompt.startswith("Once upon a time, there was a dragon named ")
    spoken, _ = d.wait("spoken", "1")
    ended, _ = d.wait("generation-end")
    assert spoken < ended, d.log()  # the first sentence went out before the model finished
    return heard, spoken


def cli(*args: str | os.PathLike[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return ps.run_cli(*args, env=env, timeout=60)
