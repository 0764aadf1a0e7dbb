"""Speed and memory of generation through Python, next to the C tool `l2run` doing the same.

The Python side runs the generate loop users get (Session.steps + the text decoder); its
tok/s is defined as l2run's (positions after the first, over the time after the first), so
with the same model, prompt and flags the two numbers measure the same work and their
ratio is the cost of Python per token.

On a busy machine that ratio drowns in noise (a few % either way), so the cost of Python is
also measured where it is most of the time: on a one-layer, dim-8 model of 512 tokens
(the tokenizer's first 512 pieces), greedy, where the C work per token is a few
microseconds, Python's time per token minus l2run's is what Python adds to every token, to
set against the real model's time per token.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from storyteller import _native
from storyteller.engine import Model, Session, TextDecoder, Tokenizer


@dataclass(frozen=True)
class Run:
    """One generation: its speed, the time to its first sampled token, its output."""

    tok_s: float
    ttft_s: float  # from the call to the first sampled token (prompt evaluation included)
    positions: int
    output: bytes
    memory_kb: dict[str, int] = field(default_factory=dict)  # l2run's own report (-v 1)


def python_run(session: Session, prompt: str, temperature: float, top_p: float, seed: int) -> Run:
    """One generation filling the session's context (or ending at BOS), as `l2run -n context`."""
    decoder = TextDecoder()
    out: list[str] = []
    t_call = time.perf_counter()
    start = ttft = 0.0
    for step in session.steps(prompt, None, temperature, top_p, seed):
        out.append(decoder.feed(step.piece))
        if not start:
            start = time.perf_counter()
        if not ttft and not step.forced:
            ttft = time.perf_counter() - t_call
    end = time.perf_counter()
    out.append(decoder.flush())
    pos = session.pos
    tok_s = (pos - 1) / (end - start) if pos > 1 and end > start else 0.0
    return Run(tok_s, ttft, pos, "".join(out).encode("utf-8", "surrogateescape") + b"\n")


def l2run_candidates(explicit: str | None = None) -> list[Path]:
    """Where l2run is looked for, in order: explicit, $STORYTELLER_BIN/l2run, the build of the
    source tree this package runs from, the build under the current folder (a checkout after
    `make`), next to the Python running this (a venv's bin/: scripts/setup links it there), $PATH."""
    if explicit:
        return [Path(explicit)]
    found = [Path(os.environ["STORYTELLER_BIN"]) / "l2run"] if os.environ.get("STORYTELLER_BIN") else []
    found += [_native.SOURCE_TREE_LIB.parents[1] / "bin" / "l2run", Path.cwd() / "build" / "host" / "bin" / "l2run",
              Path(sys.executable).parent / "l2run"]
    on_path = shutil.which("l2run")
    if on_path:
        found.append(Path(on_path))
    return list(dict.fromkeys(found))


def find_l2run(explicit: str | None = None) -> Path | None:
    """The first l2run_candidates() that is an executable file."""
    for c in l2run_candidates(explicit):
        if c.is_file() and os.access(c, os.X_OK):
            return c
    return None


def l2run_run(l2run: Path, model: str, tokenizer: str, prompt: str, steps: int, temperature: float,
              top_p: float, seed: int, kv: str, kernels: str) -> Run:
    """The same generation by the C tool (memory report included: -v 1)."""
    cmd = [str(l2run), model, "-z", tokenizer, "-n", str(steps), "-t", repr(temperature), "-p", repr(top_p),
           "-s", str(seed), "-k", kv, "-e", kernels, "-i", prompt, "-v", "1"]
    p = subprocess.run(cmd, capture_output=True, check=False, timeout=600)
    err = p.stderr.decode(errors="replace")
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {err.strip()}")
    m = re.search(r"achieved tok/s: ([0-9.]+)", err)
    memory = {k: int(v) for k, v in re.findall(r"memory (\w+):\s+(\d+) kB", err)}
    return Run(float(m.group(1)) if m else 0.0, 0.0, 0, p.stdout, memory)


def memory_kb() -> dict[str, int]:
    """Rss, Pss, Private_Dirty and Anonymous of this process, in kB (/proc/self/smaps_rollup)."""
    out: dict[str, int] = {}
    try:
        text = Path("/proc/self/smaps_rollup").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("Rss", "Pss", "Private_Dirty", "Anonymous"):
            out[key] = int(value.split()[0])
    return out


TINY_VOCAB = 512


def write_tiny_model(path: Path, vocab_size: int, seq_len: int = 256, dim: int = 8) -> None:
    """A llama2.c v0 model of one layer, one head and `dim` dimensions (seeded weights)."""
    from storyteller.devtools import checkpoints as ck

    cfg = ck.Config(dim=dim, hidden_dim=dim, n_layers=1, n_heads=1, n_kv_heads=1, vocab_size=vocab_size,
                    seq_len=seq_len)
    ck.write_v0(path, cfg, ck.make_weights(cfg, seed=0))


@dataclass(frozen=True)
class Overhead:
    python_us: float  # time per token of the Python loop on the tiny model
    l2run_us: float  # the same for l2run

    @property
    def added_us(self) -> float:
        return self.python_us - self.l2run_us


def python_overhead(tokenizer: str, l2run: Path, repeat: int = 5) -> Overhead:
    """What Python adds per token (see the module docstring): best of `repeat` runs each."""
    tok = Tokenizer.open(tokenizer, TINY_VOCAB)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "tiny.bin"
        write_tiny_model(path, tok.vocab_size)
        with Model.open(path) as model, model.session(tok, kv="f32") as s:
            py = max(python_run(s, "", 0.0, 0.9, 1).tok_s for _ in range(repeat))
            c = max(l2run_run(l2run, str(path), tokenizer, "", s.context, 0.0, 0.9, 1, "f32", s.kernels).tok_s
                    for _ in range(repeat))
    return Overhead(1e6 / py, 1e6 / c)
