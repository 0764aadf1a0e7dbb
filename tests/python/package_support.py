"""Helpers for the tests of the Python package (test_package_*, test_story*, test_safety,
test_cli, test_install).

- use_host_library(): points the package at the host libllama2_rvv.so (`make -s lib`, or
  $STORYTELLER_LIB), so `storyteller` imported from daemon/ runs in ABI mode on it.
- write_scripted_model(): a llama2.c v0 model whose next token depends only on the current
  one, with chosen logits: story tests get text they can predict (a "." followed by
  " Tom ran." or " The gun fell." at known odds), from the real engine and tokenizer.
- run_cli(): `python -m storyteller ...` in a subprocess, with the host library.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from native import REPO_ROOT, lib

from storyteller.devtools import checkpoints as ck

TOKENIZER = ck.shared_models_dir() / "tokenizer.bin"
L2RUN = REPO_ROOT / "build" / "host" / "bin" / "l2run"
# Tiny dimensions, the real 32000-piece vocabulary: milliseconds per story.
CFG = ck.Config(dim=32, hidden_dim=72, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=32000, seq_len=64)


def host_library() -> str:
    """The path of the library under test (built once per session)."""
    lib()
    return os.environ.get("STORYTELLER_LIB") or str(REPO_ROOT / "build" / "host" / "lib" / "libllama2_rvv.so")


def use_host_library() -> str:
    path = host_library()
    os.environ["STORYTELLER_LIB"] = path
    return path


def l2run_binary() -> Path:
    """build/host/bin/l2run (or $STORYTELLER_BIN/l2run), built when missing."""
    env = os.environ.get("STORYTELLER_BIN")
    if env:
        return Path(env) / "l2run"
    subprocess.run(["make", "-s", "tools"], cwd=REPO_ROOT, check=True)
    return L2RUN


def write_random_model(path: Path, cfg: ck.Config = CFG, seed: int = 2024) -> Path:
    ck.write_v0(path, cfg, ck.make_weights(cfg, seed))
    return path


def piece_ids(texts: Sequence[str]) -> dict[str, int]:
    """Token ids of whole pieces of tokenizer.bin (e.g. " Tom", ".")."""
    from storyteller.devtools import reference as ref

    pieces, _, _ = ref.load_tokenizer_bin(TOKENIZER, 32000)
    index = {p: i for i, p in reversed(list(enumerate(pieces)))}
    return {t: index[t.encode()] for t in texts}


def write_scripted_model(path: Path, chains: Mapping[str, Sequence[tuple[str, float]]],
                         fallback: str = ".", seq_len: int = 256) -> Path:
    """A v0 model (32000-piece vocabulary) in which the token after a piece of `chains` is one
    of its successors, with the given logits (others get 0, so a logit of 25 or more makes the
    choice certain at any temperature up to ~1). Pieces are tokenizer.bin pieces (" Tom", "."),
    or "<s>" (BOS) and "</s>" (EOS); any other token is followed by `fallback`.

    How: the layers are all zero, so the last hidden state is the current token's embedding,
    a unit vector of its own slot; the classifier maps each slot to its successors' logits.
    """
    names = set(chains) | {s for succ in chains.values() for s, _ in succ} | {fallback}
    ids = piece_ids([n for n in names if n not in ("<s>", "</s>")])
    ids.update({"<s>": 1, "</s>": 2})
    keys = list(chains)
    dim = 8 * ((len(keys) + 1 + 7) // 8)
    cfg = ck.Config(dim=dim, hidden_dim=8, n_layers=1, n_heads=1, n_kv_heads=1, vocab_size=32000,
                    seq_len=seq_len)
    w = {name: np.zeros(shape, np.float32) for name, shape in ck.shapes(cfg, shared=False).items()}
    w["rms_att"][:] = 1.0
    w["rms_ffn"][:] = 1.0
    w["rms_final"][:] = 1.0
    w["token_embedding"][:, 0] = 1.0  # slot 0: tokens without a chain
    w["wcls"][ids[fallback], 0] = 30.0 / np.sqrt(dim)
    for slot, key in enumerate(keys, start=1):
        w["token_embedding"][ids[key]] = 0.0
        w["token_embedding"][ids[key], slot] = 1.0
        for succ, logit in chains[key]:
            # rmsnorm scales a unit vector by sqrt(dim): divide it out
            w["wcls"][ids[succ], slot] = logit / np.sqrt(dim)
    ck.write_v0(path, cfg, w)
    return path


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["STORYTELLER_LIB"] = host_library()
    env["PYTHONPATH"] = str(REPO_ROOT / "daemon") + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("STORYTELLER_CONFIG", None)
    env.update(extra or {})
    return env


def run_cli(*args: str | os.PathLike[str], cwd: Path | None = None,
            env: Mapping[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m storyteller ARGS` (text mode; cwd defaults to a folder without etc/)."""
    return subprocess.run([sys.executable, "-m", "storyteller", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd or Path("/"), env=cli_env(env), timeout=timeout, check=False)
