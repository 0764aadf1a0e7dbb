"""Bad input through the command-line tools, on the normal build and the ASan/UBSan build: the
builds, the valid files and the helpers the tests in this folder share (test_bad_*.py, one
subject each; conftest.py holds their two fixtures).

Every malformed checkpoint, tokenizer or prompt must give exactly exit status 1 and an
error message on stderr that starts with the tool's name ("l2run:" / "l2convert:"): never a
crash, a hang, a sanitizer report or a leak. The ASan build (`make asan`, build/asan/bin) runs
with ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 and UBSAN_OPTIONS=halt_on_error=1:
print_stacktrace=1. The cffi binding cannot load an ASan library, so everything goes through
l2run and l2convert, which link the library statically. Both builds are made once per
session and the tools copied out of build/, so a concurrent `make clean` cannot pull them
away mid-run.

Cases: truncation at every offset of each format's fixed header (on the ASan build, whose
runs cost ~35 ms each, at every offset of the header fields and every 8th of its zero
padding) and at sampled offsets (either side of every tensor boundary, evenly spaced, the
last bytes; 40 of them on the ASan build), wrong magic / version, every config
field zero / negative / huge, heads that do not divide, bad q8 group sizes, corrupt packed
tensor tables, short or corrupt tokenizers, prompts longer than the context, NaN/inf
weights; plus the crash inputs saved by scripts/fuzz in tests/c/fuzz/regressions/.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from storyteller.devtools import checkpoints as ck

REPO = Path(__file__).resolve().parents[3]
FUZZ_DIR = REPO / "tests" / "c" / "fuzz"
REGRESSIONS = FUZZ_DIR / "regressions"

ASAN_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
}
SANITIZER_MARKS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error",
    "SUMMARY: UndefinedBehaviorSanitizer",
    "SUMMARY: AddressSanitizer",
)
TIMEOUT = 60

CFG = ck.TINY  # dim 32, hidden 80, 2 layers, 4/2 heads, vocab 320, seq 32
V2_GROUP = 32  # groups straddle the rows of w2 (hidden 80)
FIELDS = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len")
LIMITS = {
    "dim": 1 << 16,
    "hidden_dim": 1 << 18,
    "n_layers": 1 << 10,
    "n_heads": 1 << 16,
    "n_kv_heads": 1 << 16,
    "vocab_size": 1 << 21,
    "seq_len": 1 << 20,
}
CONFIG_AT = {"v0": 0, "v1": 8, "v2": 8, "packed": 16}  # offset of the 7 config ints
FIXED_HEADER = {"v0": 28, "v1": 256, "v2": 256, "packed": 128}
PACKED_HEADER, PACKED_ENTRY = 128, 64
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


# ----------------------------------------------------------------------------- builds


@dataclass
class Tools:
    build: str
    bin_dir: Path
    env: dict[str, str]
    make_rc: int = 0
    make_log: str = ""

    def run(self, tool: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin_dir / tool), *map(str, args)],
            capture_output=True,
            text=True,
            errors="replace",
            env=self.env,
            timeout=TIMEOUT,
        )


def _newest_source(tool: str) -> float:
    """The newest C source or header `tool` is built from (documents next to them are no
    reason to rebuild, nor is the other tool's source)."""
    return max(p.stat().st_mtime for p in (REPO / "libllama2_rvv").rglob("*")
               if p.suffix in (".c", ".h") and p.is_file() and (p.parent.name != "tools" or p.stem == tool))


def _build(build: str, dest: Path) -> Tools:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASAN_", "UBSAN_", "LSAN_"))}
    if build == "host":
        cmd, out = ["make", "-s", "tools"], REPO / "build" / "host" / "bin"
    else:
        # -k: should another target of `make asan` fail (test_make_asan_succeeds reports
        # it), the tools, which link the static library, still get built
        cmd, out = ["make", "-s", "-k", "asan"], REPO / "build" / "asan" / "bin"
        env.update(ASAN_ENV)
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, errors="replace")
    dest.mkdir(parents=True, exist_ok=True)
    for tool in ("l2run", "l2convert"):
        src = out / tool
        if not src.exists() or src.stat().st_mtime < _newest_source(tool):
            pytest.fail(f"{' '.join(cmd)} did not build {src}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        shutil.copy2(src, dest / tool)
    return Tools(build, dest, env, proc.returncode, proc.stdout[-4000:] + proc.stderr[-4000:])


# ----------------------------------------------------------------------------- files


def _tokenizer_pieces(vocab: int) -> tuple[list[bytes], list[float]]:
    pieces = [b"<unk>", b"<s>", b"</s>"] + [b"<0x%02X>" % b for b in range(256)]
    extra = [
        b" ",
        b"e",
        b"t",
        b"h",
        b"th",
        b"he",
        b" t",
        b" the",
        b"a",
        b"n",
        b"in",
        b"on",
        b"O",
        b"c",
        b"On",
        b"ce",
        b"Once",
        b" u",
        b"p",
        b"up",
        b" up",
        b"o",
        b"on ",
    ]
    i = 0
    while len(pieces) + len(extra) < vocab:
        extra.append(b"w%d" % i)
        i += 1
    pieces += extra[: vocab - len(pieces)]
    return pieces, [0.0] * 259 + [-float(i) for i in range(len(pieces) - 259)]


@dataclass
class Files:
    dir: Path
    tokenizer: Path
    base: dict[str, bytes]  # format name -> file bytes
    layout: dict[str, list[int]]  # format name -> tensor boundary offsets

    def write(self, name: str, data: bytes) -> Path:
        p = self.dir / name
        p.write_bytes(data)
        return p


def _layout_llama2c(kind: str, shared: bool) -> list[int]:
    """Offsets where each tensor of a v0/v1/v2 file of CFG starts (and the end)."""
    s = ck.shapes(CFG, shared)
    n = {k: int(np.prod(v)) for k, v in s.items()}
    L = CFG.n_layers
    if kind == "v0":
        order = [
            "token_embedding",
            "rms_att",
            "wq",
            "wk",
            "wv",
            "wo",
            "rms_ffn",
            "w1",
            "w2",
            "w3",
            "rms_final",
        ]
        sizes = [4 * n[k] for k in order] + [4 * CFG.seq_len * CFG.head_size // 2] * 2
        start = 28
    elif kind == "v1":
        order = ["rms_att", "rms_ffn", "rms_final", "token_embedding", *ck.LAYER_ORDER]
        sizes = [4 * n[k] for k in order]
        start = 256
    else:
        sizes = [4 * n[k] for k in ("rms_att", "rms_ffn", "rms_final")]
        mats = [n["token_embedding"]] + [n[k] // L for k in ck.LAYER_ORDER for _ in range(L)]
        for m in mats:
            sizes += [m, 4 * m // V2_GROUP]
        start = 256
        if not shared:
            sizes += [n["wcls"], 4 * n["wcls"] // V2_GROUP]
    if not shared and kind != "v2":
        sizes.append(4 * n["wcls"])
    out, at = [], start
    for size in sizes:
        out.append(at)
        at += size
    out.append(at)
    return out


def packed_entries(data: bytes) -> list[dict]:
    n = struct.unpack_from("<I", data, 12)[0]
    out = []
    for i in range(n):
        e = PACKED_HEADER + i * PACKED_ENTRY
        layer, typ, rows, cols = struct.unpack_from("<iIII", data, e + 16)
        off, nbytes, soff, sbytes = struct.unpack_from("<QQQQ", data, e + 32)
        out.append(
            dict(
                index=i,
                at=e,
                name=data[e : e + 16].rstrip(b"\0").decode(),
                layer=layer,
                type=typ,
                rows=rows,
                cols=cols,
                off=off,
                bytes=nbytes,
                soff=soff,
                sbytes=sbytes,
            )
        )
    return out


def packed_entry(d: bytes, name: str, layer: int) -> dict:
    return next(e for e in packed_entries(d) if e["name"] == name and e["layer"] == layer)


def _layout_packed(data: bytes) -> list[int]:
    out = [PACKED_HEADER + i * PACKED_ENTRY for i in range(struct.unpack_from("<I", data, 12)[0])]
    for e in packed_entries(data):
        out += [e["off"], e["off"] + e["bytes"]]
        if e["sbytes"]:
            out += [e["soff"], e["soff"] + e["sbytes"]]
    return out


# ----------------------------------------------------------------------------- running


def l2run_args(files: Files, model: Path, *extra: str) -> list[str | Path]:
    return [model, "-z", files.tokenizer, "-t", "0", "-s", "1", "-n", "8", "-i", "Once upon", *extra]


def check_failure(tool: str, proc: subprocess.CompletedProcess[str], expect: str | None = None) -> str | None:
    """None when proc failed cleanly (status 1, "tool:" message, no sanitizer report), else why not."""
    err = proc.stderr
    for mark in SANITIZER_MARKS:
        if mark in err:
            return f"sanitizer report ({mark}):\n{err[-4000:]}"
    if proc.returncode != 1:
        return f"exit status {proc.returncode} (want 1); stderr:\n{err[-2000:]}"
    if not err.startswith(f"{tool}:"):
        return f"stderr does not start with '{tool}:':\n{err[-2000:]}"
    if len(err.strip()) <= len(tool) + 1:
        return "empty error message"
    if expect and not re.search(expect, err, re.IGNORECASE):
        return f"stderr does not match {expect!r}:\n{err[-2000:]}"
    return None


def run_bad_model(tools: Tools, files: Files, tool: str, path: Path, expect: str | None = None) -> str | None:
    """Runs l2run or l2convert on a malformed model; None when it failed cleanly."""
    if tool == "l2run":
        return check_failure(tool, tools.run(tool, *l2run_args(files, path)), expect)
    out = path.with_name(path.name + ".out")
    why = check_failure(tool, tools.run(tool, path, out, "--type", "q8"), expect)
    if why is None and (out.exists() or Path(f"{out}.tmp").exists()):
        why = "l2convert left an output file behind"
    return why


def assert_bad_model(
    tools: Tools,
    files: Files,
    name: str,
    data: bytes,
    tools_to_run=("l2run", "l2convert"),
    expect: str | None = None,
) -> None:
    path = files.write(f"{tools.build}-{name}.bin", data)
    problems = [f"{t}: {why}" for t in tools_to_run if (why := run_bad_model(tools, files, t, path, expect))]
    assert not problems, f"{name}:\n" + "\n".join(problems)


def put(data: bytes, offset: int, fmt: str, value) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)
