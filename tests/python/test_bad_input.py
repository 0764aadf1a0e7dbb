"""Bad input through the command-line tools, on the normal build and the ASan/UBSan build.

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
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from storyteller.devtools import checkpoints as ck

REPO = Path(__file__).resolve().parents[2]
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


@pytest.fixture(scope="session", params=["host", "asan"])
def tools(request, tmp_path_factory) -> Tools:
    return _build(request.param, tmp_path_factory.mktemp(f"tools-{request.param}"))


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


def tokenizer_bytes(pieces: list[bytes], scores: list[float], lengths: dict[int, int] | None = None) -> bytes:
    """tokenizer.bin; lengths overrides the stored length of some pieces (bytes unchanged)."""
    lengths = lengths or {}
    out = [struct.pack("<i", max(map(len, pieces)))]
    for i, (p, s) in enumerate(zip(pieces, scores, strict=True)):
        out.append(struct.pack("<fi", s, lengths.get(i, len(p))) + p)
    return b"".join(out)


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


def _layout_packed(data: bytes) -> list[int]:
    out = [PACKED_HEADER + i * PACKED_ENTRY for i in range(struct.unpack_from("<I", data, 12)[0])]
    for e in packed_entries(data):
        out += [e["off"], e["off"] + e["bytes"]]
        if e["sbytes"]:
            out += [e["soff"], e["soff"] + e["sbytes"]]
    return out


@pytest.fixture(scope="session")
def files(tmp_path_factory) -> Files:
    d = tmp_path_factory.mktemp("bad-input")
    host = _build("host", d / "host-tools")  # l2convert writes the packed files
    w = ck.make_weights(CFG, seed=7)
    wu = ck.make_weights(CFG, seed=8, shared=False)
    base: dict[str, bytes] = {}
    layout: dict[str, list[int]] = {}
    for name, writer, weights, args in (
        ("v0", ck.write_v0, w, ()),
        ("v0_unshared", ck.write_v0, wu, ()),
        ("v1", ck.write_v1, w, ()),
        ("v1_unshared", ck.write_v1, wu, ()),
        ("v2", ck.write_v2, w, (V2_GROUP,)),
        ("v2_unshared", ck.write_v2, wu, (V2_GROUP,)),
    ):
        p = d / f"{name}.bin"
        writer(p, CFG, weights, *args)
        base[name] = p.read_bytes()
        layout[name] = _layout_llama2c(name[:2], not name.endswith("unshared"))
    for name, src, typ, group in (
        ("packed_f32", "v0", "f32", None),
        ("packed_f16", "v1", "f16", None),
        ("packed_q8", "v0", "q8", None),
        ("packed_q8_g24", "v2", "q8", 24),
        ("packed_f32_unshared", "v0_unshared", "f32", None),
        ("packed_q8_unshared", "v0_unshared", "q8", None),
    ):
        out = d / f"{name}.bin"
        cmd = [d / f"{src}.bin", out, "--type", typ] + (["--group", str(group)] if group else [])
        proc = host.run("l2convert", *cmd)
        assert proc.returncode == 0, proc.stderr
        base[name] = out.read_bytes()
        layout[name] = _layout_packed(base[name])
    pieces, scores = _tokenizer_pieces(CFG.vocab_size)
    tok = d / "tok.bin"
    tok.write_bytes(tokenizer_bytes(pieces, scores))
    return Files(d, tok, base, layout)


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


# ----------------------------------------------------------------------------- sanity


def test_make_asan_succeeds(tools: Tools) -> None:
    """`make asan` itself succeeds (the fixture goes on with -k if only some target failed)."""
    if tools.build != "asan":
        pytest.skip("the ASan build only")
    assert tools.make_rc == 0, f"`make asan` failed (exit {tools.make_rc}):\n{tools.make_log}"


@pytest.mark.parametrize(
    "name",
    [
        "v0",
        "v0_unshared",
        "v1",
        "v1_unshared",
        "v2",
        "v2_unshared",
        "packed_f32",
        "packed_f16",
        "packed_q8",
        "packed_q8_g24",
        "packed_f32_unshared",
        "packed_q8_unshared",
    ],
)
def test_valid_files_run(tools: Tools, files: Files, name: str) -> None:
    """The unmodified files work, so each failure below is the corruption's doing."""
    path = files.write(f"{tools.build}-ok-{name}.bin", files.base[name])
    proc = tools.run("l2run", *l2run_args(files, path))
    assert proc.returncode == 0 and not any(m in proc.stderr for m in SANITIZER_MARKS), proc.stderr
    assert proc.stdout.startswith("Once upon")
    out = files.dir / f"{tools.build}-ok-{name}.out"
    proc = tools.run("l2convert", path, out, "--type", "f16")
    assert proc.returncode == 0 and not any(m in proc.stderr for m in SANITIZER_MARKS), proc.stderr


# ----------------------------------------------------------------------------- truncation


# Bytes of each fixed header that hold fields (the rest is zero padding: cutting anywhere in
# it takes the same path, so the slower ASan build cuts at every 8th padding offset only).
HEADER_FIELDS = {"v0": 28, "v1": 37, "v2": 41, "packed": 72}
HEADER_FILE = {"v0": "v0", "v1": "v1", "v2": "v2", "packed": "packed_q8"}


def header_offsets(kind: str, build: str) -> list[int]:
    if build == "host":
        return list(range(FIXED_HEADER[kind]))
    return sorted(set(range(HEADER_FIELDS[kind])) | set(range(HEADER_FIELDS[kind], FIXED_HEADER[kind], 8)))


def sampled_offsets(files: Files, name: str, build: str) -> list[int]:
    """Cuts after the header: one byte into and one byte short of every tensor, evenly
    spaced offsets and the last bytes (the ASan build takes an even subset of 40)."""
    data = files.base[name]
    kind = "packed" if name.startswith("packed") else name[:2]
    size = len(data)
    offs = set()
    for b in files.layout[name]:
        offs.update((b - 1, b + 1))
    offs.update(range(FIXED_HEADER[kind], size, max(1, size // 16)))
    offs.update((size - 1, size - 2, size - 4, size - 64))
    limit = size
    if name == "v0":
        # a shared-classifier v0 file may end anywhere in its second unused RoPE table (as
        # some published files do): cutting there is accepted, so only earlier cuts must fail
        limit = files.layout["v0"][-2]
    offs = sorted(o for o in offs if FIXED_HEADER[kind] <= o < limit)
    if build == "asan" and len(offs) > 40:
        offs = [offs[round(i * (len(offs) - 1) / 39)] for i in range(40)]
    return offs


def assert_truncations(tools: Tools, files: Files, name: str, offsets: list[int]) -> None:
    data = files.base[name]

    def one(i_off: tuple[int, int]) -> str | None:
        i, off = i_off
        path = files.write(f"{tools.build}-trunc-{name}-{off}.bin", data[:off])
        tool = ("l2run", "l2convert")[i % 2]  # the loader is shared: both tools, alternately
        why = run_bad_model(tools, files, tool, path)
        path.unlink()
        return f"cut at {off} ({tool}): {why}" if why else None

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        problems = [p for p in pool.map(one, enumerate(offsets)) if p]
    assert not problems, f"{len(problems)} of {len(offsets)} truncations of {name}:\n" + "\n".join(
        problems[:8]
    )


@pytest.mark.parametrize("kind", ["v0", "v1", "v2", "packed"])
def test_truncated_header(tools: Tools, files: Files, kind: str) -> None:
    assert_truncations(tools, files, HEADER_FILE[kind], header_offsets(kind, tools.build))


@pytest.mark.parametrize(
    "name",
    ["v0", "v0_unshared", "v1", "v1_unshared", "v2", "v2_unshared", "packed_f32", "packed_q8", "packed_f16"],
)
def test_truncated(tools: Tools, files: Files, name: str) -> None:
    assert_truncations(tools, files, name, sampled_offsets(files, name, tools.build))


def test_v0_short_rope_tail_is_accepted(tools: Tools, files: Files) -> None:
    """The tolerated case that the truncation test leaves out: a shared v0 file short inside
    its RoPE tables loads and runs."""
    data = files.base["v0"]
    path = files.write(f"{tools.build}-v0-short-tail.bin", data[: len(data) - 5])
    proc = tools.run("l2run", *l2run_args(files, path))
    assert proc.returncode == 0 and not any(m in proc.stderr for m in SANITIZER_MARKS), proc.stderr


# ----------------------------------------------------------------------------- sizes a file asks for

# Many layers and KV heads on a small file (4.6 MB of weights): a position of the f32 KV
# cache costs 32 KB (8 * n_layers * kv_dim bytes), of the RoPE tables 32 bytes.
WIDE = ck.Config(dim=64, hidden_dim=8, n_layers=64, n_heads=8, n_kv_heads=8, vocab_size=CFG.vocab_size,
                 seq_len=4096)


@pytest.fixture(scope="session")
def wide_v0(files: Files) -> Path:
    path = files.dir / "wide-v0.bin"
    ck.write_v0(path, WIDE, ck.make_weights(WIDE, seed=3), real_rope=False)
    return path


def test_v0_seq_len_is_capped_by_the_rope_tables_it_holds(tools: Tools, files: Files, wide_v0: Path) -> None:
    # seq_len 2^20 on a file without its RoPE tables asked for a 64 GB session (l2run -n 0):
    # out of memory on the normal build, an abort on the ASan build
    data = wide_v0.read_bytes()
    rope = 4 * WIDE.seq_len * WIDE.head_size
    body = put(data, 24, "<i", 1 << 20)[: len(data) - rope]
    assert_bad_model(tools, files, "wide-huge-seq-len", body, expect=r"seq_len 1048576 needs")
    path = files.write(f"{tools.build}-wide-huge-seq-len.bin", body)
    proc = tools.run("l2run", *l2run_args(files, path, "-n", "0"))
    why = check_failure("l2run", proc, r"seq_len 1048576 needs")
    assert why is None, why
    # the first table whole and the second cut short is tolerated (stories260K.bin is so)
    path = files.write(f"{tools.build}-wide-half-rope.bin", data[: len(data) - rope // 2])
    proc = tools.run("l2run", path, "-z", files.tokenizer, "-n", "4", "-t", "0", "-i", "a")
    assert proc.returncode == 0 and not any(m in proc.stderr for m in SANITIZER_MARKS), proc.stderr
    path = files.write(f"{tools.build}-wide-short-rope.bin", data[: len(data) - rope // 2 - 4])
    why = run_bad_model(tools, files, "l2run", path, r"RoPE tables")
    assert why is None, why


def test_a_session_that_cannot_be_allocated_is_an_error(tools: Tools, files: Files, wide_v0: Path) -> None:
    # a 4096-position session of WIDE needs 128 MB; with at most 64 MB to be had, l2run says
    # so (the ASan build used to abort instead); the normal build gets a 64 MB address space
    env, limit = dict(tools.env), None
    if tools.build == "asan":
        env["ASAN_OPTIONS"] = env["ASAN_OPTIONS"] + ":max_allocation_size_mb=64"
    else:
        import resource

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (64 << 20, 64 << 20))

    proc = subprocess.run([tools.bin_dir / "l2run", wide_v0, "-z", files.tokenizer, "-n", "0", "-i", "a"],
                          capture_output=True, text=True, env=env, preexec_fn=limit, timeout=TIMEOUT)
    # the ASan runtime notes the allocation it refused on a line of its own
    proc.stderr = re.sub(r"^==\d+==WARNING: AddressSanitizer failed to allocate 0x[0-9a-f]+ bytes\n", "",
                         proc.stderr)
    why = check_failure("l2run", proc, r"out of memory for a 4096-position session")
    assert why is None, why


# ----------------------------------------------------------------------------- headers

# (case id, format, mutation, expected stderr regex or None)
Mutation = Callable[[bytes], bytes]
HEADER_CASES: list[tuple[str, str, Mutation, str | None]] = []


def _case(cid: str, fmt: str, fn: Mutation, expect: str | None = None) -> None:
    HEADER_CASES.append((cid, fmt, fn, expect))


# magic and version
_case("v1-magic-off-by-one", "v1", lambda d: put(d, 0, "<I", ck.MAGIC + 1))
_case("v2-magic-bytes-swapped", "v2", lambda d: b"ak42" + d[4:])
_case("packed-magic-lowercase", "packed_f32", lambda d: b"l2rv" + d[4:])
for _v in (0, 3, -1, INT32_MAX):
    _case(f"v1-version-{_v}", "v1", lambda d, v=_v: put(d, 4, "<i", v), r"version")
for _v in (0, 2, 0xFFFFFFFF):
    _case(f"packed-version-{_v}", "packed_f32", lambda d, v=_v: put(d, 4, "<I", v), r"version")
_case("v1-shared-flag-2", "v1", lambda d: put(d, 36, "<B", 2), r"shared_classifier")
_case("v1-shared-flag-flipped", "v1", lambda d: put(d, 36, "<B", 0))
_case("v1-unshared-flag-flipped", "v1_unshared", lambda d: put(d, 36, "<B", 1))
_case("v0-text-file", "v0", lambda d: b"Once upon a time there was a checkpoint.\n" * 4)
_case("v0-zeros", "v0", lambda d: bytes(len(d)))
_case("v0-ones", "v0", lambda d: b"\xff" * len(d))
_case("v0-appended", "v0_unshared", lambda d: d + b"\0" * 4, r"fewer")
_case("v1-appended", "v1", lambda d: d + b"\0", r"fewer")
_case("v2-appended", "v2", lambda d: d + b"\0" * 64, r"fewer")
_case("tiny-3-bytes", "v0", lambda d: d[:3])

# every config field zero / negative / huge, in every format
for _fmt in ("v0", "v1", "v2", "packed_q8"):
    _kind = "packed" if _fmt.startswith("packed") else _fmt
    for _i, _f in enumerate(FIELDS):
        _vals = [0, -1, INT32_MAX, LIMITS[_f] + 1]
        if _kind == "v0" and _f == "vocab_size":
            _vals.append(INT32_MIN)  # v0 negates a negative vocab_size: INT32_MIN has no positive
        if _f != "seq_len":  # a large seq_len within the limit is valid and costs no file bytes
            _vals.append(65537)
        for _v in _vals:
            named = _v == 0 or _v > LIMITS[_f] or (_v < 0 and not (_kind == "v0" and _f == "vocab_size"))
            _case(
                f"{_fmt}-{_f}={_v}",
                _fmt,
                lambda d, o=CONFIG_AT[_kind] + 4 * _i, v=_v: put(d, o, "<i", v),
                _f if named else None,
            )
    _o = CONFIG_AT[_kind]
    for _h in (3, 32):  # dim 32: 3 does not divide it, 32 gives an odd head size (1)
        _case(
            f"{_fmt}-n_heads={_h}",
            _fmt,
            lambda d, o=_o + 12, v=_h: put(d, o, "<i", v),
            r"heads" if _h != 32 else None,
        )
    for _kv in (3, 8):  # n_heads 4: 3 does not divide it, 8 exceeds it
        _case(f"{_fmt}-n_kv_heads={_kv}", _fmt, lambda d, o=_o + 16, v=_kv: put(d, o, "<i", v), r"n_kv_heads")
    _case(f"{_fmt}-vocab=2", _fmt, lambda d, o=_o + 20: put(d, o, "<i", 2), r"vocab_size")
    _case(f"{_fmt}-dim-doubled", _fmt, lambda d, o=_o: put(d, o, "<i", 64))
    _case(f"{_fmt}-layers+1", _fmt, lambda d, o=_o + 8: put(d, o, "<i", CFG.n_layers + 1))

# v2 group size (int32 at 37, unaligned)
for _g in (0, -1, -32, INT32_MIN, INT32_MAX, 65537, 1 << 20):
    _case(f"v2-group={_g}", "v2", lambda d, g=_g: put(d, 37, "<i", g), r"group")
for _g in (7, 3, 48):  # not a whole number of groups in some tensor
    _case(f"v2-group={_g}-not-dividing", "v2", lambda d, g=_g: put(d, 37, "<i", g), r"group")
for _g in (1, 16, 64, 512):  # divides every tensor: the scales no longer fit the file
    _case(f"v2-group={_g}-size-mismatch", "v2", lambda d, g=_g: put(d, 37, "<i", g))

# packed header fields
for _g in (0, 0xFFFFFFFF, 65537, 1 << 31):
    _case(f"packed-q8-group={_g}", "packed_q8", lambda d, g=_g: put(d, 48, "<I", g), r"group")
for _g in (1, 16, 31, 64, 65536):
    _case(f"packed-q8-group={_g}-wrong", "packed_q8", lambda d, g=_g: put(d, 48, "<I", g))
for _b in (0, 16, 64, 0xFFFFFFFF):
    _case(f"packed-q8-block-rows={_b}", "packed_q8", lambda d, b=_b: put(d, 52, "<I", b), r"block rows")
for _t in (3, 4, 0xFFFFFFFF):
    _case(f"packed-weight-type={_t}", "packed_f32", lambda d, t=_t: put(d, 44, "<I", t), r"type")
_case("packed-weight-type-q8-as-f32", "packed_q8", lambda d: put(d, 44, "<I", 0))
_case("packed-weight-type-f32-as-f16", "packed_f32", lambda d: put(d, 44, "<I", 1))
for _fl in (2, 3, 0x80000000):
    _case(f"packed-flags={_fl}", "packed_f32", lambda d, f=_fl: put(d, 56, "<I", f), r"flags")
_case("packed-shared-flag-cleared", "packed_f32", lambda d: put(d, 56, "<I", 0))
_case("packed-unshared-flag-set", "packed_f32_unshared", lambda d: put(d, 56, "<I", 1))


def _n_tensors(d: bytes) -> int:
    return struct.unpack_from("<I", d, 12)[0]


for _k, _fn in (
    ("+1", lambda d: _n_tensors(d) + 1),
    ("-1", lambda d: _n_tensors(d) - 1),
    ("=0", lambda d: 0),
    ("=max", lambda d: 0xFFFFFFFF),
):
    _case(f"packed-n_tensors{_k}", "packed_q8", lambda d, f=_fn: put(d, 12, "<I", f(d)), r"tensors")
for _h in (0, 127, 128, 1000, 0xFFFFFFFF):
    _case(f"packed-header_bytes={_h}", "packed_q8", lambda d, h=_h: put(d, 8, "<I", h), r"header")
_case("packed-header_bytes-past-file", "packed_q8", lambda d: put(d, 8, "<I", len(d) + 64), r"header")
for _k, _fn in (
    ("+1", lambda d: len(d) + 1),
    ("-1", lambda d: len(d) - 1),
    ("+64", lambda d: len(d) + 64),
    ("=0", lambda d: 0),
    ("=max", lambda d: 2**64 - 1),
):
    _case(f"packed-file_bytes{_k}", "packed_q8", lambda d, f=_fn: put(d, 64, "<Q", f(d)), r"bytes")
_case("packed-appended", "packed_q8", lambda d: d + bytes(64), r"bytes")
_case("packed-header-only", "packed_q8", lambda d: d[:PACKED_HEADER])


def _entry(d: bytes, name: str, layer: int) -> dict:
    return next(e for e in packed_entries(d) if e["name"] == name and e["layer"] == layer)


def _set_entry(field: str, name: str, layer: int, value: Callable[[dict, bytes], int]) -> Mutation:
    at, fmt = {
        "layer": (16, "<i"),
        "type": (20, "<I"),
        "rows": (24, "<I"),
        "cols": (28, "<I"),
        "off": (32, "<Q"),
        "bytes": (40, "<Q"),
        "soff": (48, "<Q"),
        "sbytes": (56, "<Q"),
    }[field]

    def fn(d: bytes) -> bytes:
        e = _entry(d, name, layer)
        return put(
            d,
            e["at"] + at,
            fmt,
            value(e, d) % (1 << (8 * struct.calcsize(fmt))) if fmt[-1] in "IQ" else value(e, d),
        )

    return fn


def _align(n: int) -> int:
    return (n + 63) // 64 * 64


# packed tensor table: offsets, alignment, shapes, names, duplicates
for _fmt, _tensors in (
    ("packed_q8", (("token_embedding", -1), ("w2", 1), ("rms_att", 1))),
    ("packed_f32", (("wq", 0), ("rms_final", -1))),
):
    for _name, _layer in _tensors:
        _p = f"{_fmt}-{_name}{_layer if _layer >= 0 else ''}"
        off_vals = {
            "beyond-end": lambda e, d: len(d),
            "past-end-by-one-block": lambda e, d: _align(len(d) - e["bytes"] + 1),
            "into-header": lambda e, d: 0,
            "table-start": lambda e, d: PACKED_HEADER,
            "wraps": lambda e, d: 2**64 - 64,
            "misaligned+1": lambda e, d: e["off"] + 1,
            "misaligned+4": lambda e, d: e["off"] + 4,
            "misaligned+32": lambda e, d: e["off"] + 32,
        }
        for _k, _fn in off_vals.items():
            _case(f"{_p}-offset-{_k}", _fmt, _set_entry("off", _name, _layer, _fn), r"outside|misaligned")
        shape_vals = {
            "rows+1": ("rows", lambda e, d: e["rows"] + 1),
            "rows-1": ("rows", lambda e, d: e["rows"] - 1),
            "rows=0": ("rows", lambda e, d: 0),
            "cols+1": ("cols", lambda e, d: e["cols"] + 1),
            "cols=huge": ("cols", lambda e, d: 0xFFFFFFFF),
            "swap": ("rows", lambda e, d: e["cols"]),
            "type+1": ("type", lambda e, d: e["type"] + 1),
            "type=99": ("type", lambda e, d: 99),
            "bytes+1": ("bytes", lambda e, d: e["bytes"] + 1),
            "bytes=0": ("bytes", lambda e, d: 0),
            "bytes=huge": ("bytes", lambda e, d: 2**64 - 1),
            "layer=-2": ("layer", lambda e, d: -2),
            "layer=n": ("layer", lambda e, d: CFG.n_layers),
            "layer=max": ("layer", lambda e, d: INT32_MAX),
        }
        for _k, (_field, _fn) in shape_vals.items():
            if _k == "swap" and _name not in ("token_embedding", "w2"):
                continue  # square or a vector: swapping changes nothing
            if _k.startswith("layer") and _layer < 0:
                _fn = {
                    "layer=-2": lambda e, d: 0,
                    "layer=n": lambda e, d: 1,
                    "layer=max": lambda e, d: INT32_MIN,
                }[_k]
            _case(f"{_p}-{_k}", _fmt, _set_entry(_field, _name, _layer, _fn), r"tensor|type|shape")
    if _fmt == "packed_q8":
        for _name, _layer in (("wk", 1), ("token_embedding", -1)):
            for _k, _fn in (
                ("beyond-end", lambda e, d: len(d)),
                ("zero", lambda e, d: 0),
                ("misaligned", lambda e, d: e["soff"] + 4),
                ("wraps", lambda e, d: 2**64 - 64),
            ):
                _case(
                    f"{_fmt}-{_name}-scales-{_k}",
                    _fmt,
                    _set_entry("soff", _name, _layer, _fn),
                    r"outside|misaligned",
                )
            for _k, _fn in (
                ("+4", lambda e, d: e["sbytes"] + 4),
                ("zero", lambda e, d: 0),
                ("huge", lambda e, d: 2**64 - 4),
            ):
                _case(f"{_fmt}-{_name}-scale-bytes-{_k}", _fmt, _set_entry("sbytes", _name, _layer, _fn))


def _dup(src_i: int, dst_i: int) -> Mutation:
    def fn(d: bytes) -> bytes:
        b = bytearray(d)
        dst = dst_i % _n_tensors(d)  # -1: the last entry
        s, t = PACKED_HEADER + src_i * PACKED_ENTRY, PACKED_HEADER + dst * PACKED_ENTRY
        b[t : t + PACKED_ENTRY] = d[s : s + PACKED_ENTRY]
        return bytes(b)

    return fn


def _rename(index: int, name: bytes, layer: int | None = None) -> Mutation:
    def fn(d: bytes) -> bytes:
        b = bytearray(d)
        e = PACKED_HEADER + index * PACKED_ENTRY
        b[e : e + 16] = name.ljust(16, b"\0")[:16]
        if layer is not None:
            struct.pack_into("<i", b, e + 16, layer)
        return bytes(b)

    return fn


for _fmt in ("packed_q8", "packed_f32", "packed_q8_unshared"):
    _case(f"{_fmt}-duplicate-first-two", _fmt, _dup(0, 1), r"twice|tensor")
    _case(f"{_fmt}-duplicate-layer-entry", _fmt, _dup(2, 11), r"twice|tensor")
    _case(f"{_fmt}-duplicate-last", _fmt, _dup(3, -1), r"twice|tensor")
    _case(f"{_fmt}-unknown-name", _fmt, _rename(3, b"bogus"), r"unexpected")
    _case(f"{_fmt}-empty-name", _fmt, _rename(0, b""), r"unexpected")
    _case(f"{_fmt}-name-no-nul", _fmt, _rename(0, b"token_embeddingX"), r"unexpected")
    _case(f"{_fmt}-name-prefix", _fmt, _rename(0, b"token_embed"), r"unexpected")
_case("packed_q8-wcls-in-shared", "packed_q8", _rename(0, b"wcls", -1), r"unexpected")
_case("packed_q8_unshared-two-wcls", "packed_q8_unshared", _rename(0, b"wcls", -1), r"twice|tensor")


@pytest.mark.parametrize("cid,fmt,fn,expect", HEADER_CASES, ids=[c[0] for c in HEADER_CASES])
def test_bad_header(tools: Tools, files: Files, cid: str, fmt: str, fn: Mutation, expect: str | None) -> None:
    data = fn(files.base[fmt])
    assert data != files.base[fmt], "the mutation changed nothing"
    # the loader is shared: alternate the tool to keep the suite fast, both see every kind
    tool = ("l2run", "l2convert")[sum(map(ord, cid)) % 2]
    assert_bad_model(tools, files, cid, data, (tool,), expect)


# ----------------------------------------------------------------------------- tokenizers


def _tok_cases() -> dict[str, Callable[[], bytes]]:
    pieces, scores = _tokenizer_pieces(CFG.vocab_size)
    full = tokenizer_bytes(pieces, scores)
    # offset of piece i's score field
    starts, at = [], 4
    for p in pieces:
        starts.append(at)
        at += 8 + len(p)
    return {
        "fewer-pieces": lambda: tokenizer_bytes(pieces[:100], scores[:100]),
        "one-piece-short": lambda: tokenizer_bytes(pieces[:-1], scores[:-1]),
        "cut-inside-last-piece": lambda: full[:-1],
        "cut-inside-piece-200": lambda: full[: starts[200] + 9],
        "cut-inside-length": lambda: full[: starts[50] + 6],
        "header-only": lambda: full[:4],
        "three-bytes": lambda: full[:3],
        "empty": lambda: b"",
        "negative-length-first": lambda: tokenizer_bytes(pieces, scores, {0: -1}),
        "negative-length-last": lambda: tokenizer_bytes(pieces, scores, {CFG.vocab_size - 1: -5}),
        "int-min-length": lambda: tokenizer_bytes(pieces, scores, {7: INT32_MIN}),
        "huge-length": lambda: tokenizer_bytes(pieces, scores, {3: INT32_MAX}),
        "absurd-length": lambda: tokenizer_bytes(pieces, scores, {10: 65537}),
        "length-past-end": lambda: tokenizer_bytes(pieces, scores, {CFG.vocab_size - 1: 1000}),
        "length-past-end-mid": lambda: tokenizer_bytes(pieces, scores, {100: 60000}),
    }


TOK_CASES = list(_tok_cases())


@pytest.mark.parametrize("case", TOK_CASES)
def test_bad_tokenizer(tools: Tools, files: Files, case: str) -> None:
    tok = files.dir / f"{tools.build}-tok-{case}.bin"
    tok.write_bytes(_tok_cases()[case]())
    model = files.write(f"{tools.build}-tokcase-model.bin", files.base["v0"])
    proc = tools.run("l2run", model, "-z", tok, "-n", "8", "-t", "0", "-i", "Once upon")
    why = check_failure("l2run", proc, r"tokenizer")
    assert why is None, why


def test_tokenizer_missing_or_directory(tools: Tools, files: Files) -> None:
    model = files.write(f"{tools.build}-tokcase-model.bin", files.base["v0"])
    for tok in (files.dir / "no-such-tokenizer.bin", files.dir):
        proc = tools.run("l2run", model, "-z", tok, "-n", "8", "-i", "x")
        why = check_failure("l2run", proc, r"tokenizer")
        assert why is None, f"{tok}: {why}"


def test_model_missing_or_directory(tools: Tools, files: Files) -> None:
    for model in (files.dir / "no-such-model.bin", files.dir):
        for tool in ("l2run", "l2convert"):
            why = run_bad_model(tools, files, tool, model)
            assert why is None, f"{tool} {model}: {why}"


def test_fifo_model_or_tokenizer_is_refused_not_waited_on(tools: Tools, files: Files) -> None:
    # opening a FIFO for reading waits for a writer: the tools hung there forever
    fifo = files.dir / f"{tools.build}-fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    model = files.write(f"{tools.build}-fifocase-model.bin", files.base["v0"])
    for tool, args in (
        ("l2run", l2run_args(files, fifo)),
        ("l2run", [model, "-z", fifo, "-n", "8", "-i", "x"]),
        ("l2convert", [fifo, files.dir / f"{tools.build}-fifo.out", "--type", "q8"]),
    ):
        why = check_failure(tool, tools.run(tool, *args), r"not a regular file \(a FIFO\)")
        assert why is None, f"{tool} {args}: {why}"


# ----------------------------------------------------------------------------- l2convert's output


def test_l2convert_refuses_to_overwrite_its_input(tools: Tools, files: Files) -> None:
    # the same file by its name, another spelling of it, a hard link, a symlink to it
    src = files.write(f"{tools.build}-self.bin", files.base["v0"])
    hard, soft = files.dir / f"{tools.build}-self-hard.bin", files.dir / f"{tools.build}-self-soft.bin"
    for p in (hard, soft):
        p.unlink(missing_ok=True)
    os.link(src, hard)
    soft.symlink_to(src)
    for out in (src, Path(str(src).replace("/self", "/./self")), hard, soft):
        proc = tools.run("l2convert", src, out, "--type", "q8")
        why = check_failure("l2convert", proc, r"is the model's own file")
        assert why is None, f"{out}: {why}"
        assert src.read_bytes() == files.base["v0"] and not Path(f"{out}.tmp").exists()


def test_l2convert_never_writes_through_an_existing_tmp(tools: Tools, files: Files) -> None:
    # OUT.tmp already there: a symlink (to a file or nowhere) or a regular file; each is left
    # as it was, the file a symlink points to is not written, and OUT is not created
    victim = files.write(f"{tools.build}-victim.bin", b"precious")
    for kind in ("symlink", "dangling", "file"):
        model = files.write(f"{tools.build}-tmpcase.bin", files.base["v0"])
        out = files.dir / f"{tools.build}-tmpcase-{kind}.out"
        tmp = Path(f"{out}.tmp")
        tmp.unlink(missing_ok=True)
        if kind == "symlink":
            tmp.symlink_to(victim)
        elif kind == "dangling":
            tmp.symlink_to(files.dir / "nowhere" / "x")
        else:
            tmp.write_bytes(b"someone else's")
        proc = tools.run("l2convert", model, out, "--type", "q8")
        why = check_failure("l2convert", proc, re.escape(str(tmp)) + r".*exists")
        assert why is None, f"{kind}: {why}"
        assert victim.read_bytes() == b"precious" and not out.exists()
        assert tmp.is_symlink() if kind != "file" else tmp.read_bytes() == b"someone else's"
        tmp.unlink()
        # with the stale file gone, the same conversion succeeds
        proc = tools.run("l2convert", model, out, "--type", "q8")
        assert proc.returncode == 0 and not tmp.exists(), proc.stderr


SYNC_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
static void note(const char *what) {
    const char *log = getenv("SYNC_LOG");
    FILE *f = log ? fopen(log, "a") : NULL;
    if (f) { fprintf(f, "%s\n", what); fclose(f); }
}
int fsync(int fd) {
    struct stat st;
    note(fstat(fd, &st) == 0 && S_ISDIR(st.st_mode) ? "fsync dir" : "fsync file");
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return real(fd);
}
int rename(const char *a, const char *b) {
    note("rename");
    int (*real)(const char *, const char *) = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    return real(a, b);
}
"""


def test_l2convert_syncs_the_file_before_the_rename_and_the_directory_after(tools: Tools, files: Files) -> None:
    shim_c, shim = files.dir / "syncshim.c", files.dir / "syncshim.so"
    if not shim.exists():
        shim_c.write_text(SYNC_SHIM)
        subprocess.run(["cc", "-shared", "-fPIC", "-o", shim, shim_c, "-ldl"], check=True)
    log = files.dir / f"{tools.build}-sync.log"
    log.unlink(missing_ok=True)
    model = files.write(f"{tools.build}-synccase.bin", files.base["v0"])
    env = dict(tools.env, LD_PRELOAD=str(shim), SYNC_LOG=str(log))
    proc = subprocess.run([tools.bin_dir / "l2convert", model, files.dir / f"{tools.build}-sync.out", "--type",
                           "q8"], capture_output=True, text=True, env=env, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert log.read_text().split("\n")[:3] == ["fsync file", "rename", "fsync dir"], log.read_text()


# ----------------------------------------------------------------------------- l2run's options


@pytest.mark.parametrize(
    "args,named",
    [
        (["-t", "-1"], "-t needs a temperature of 0 or more, not '-1'"),  # was: greedy
        (["-t", "abc"], "-t needs a temperature of 0 or more, not 'abc'"),  # was: greedy
        (["-t", "nan"], "not 'nan'"),
        (["-t", "1e39"], "not '1e39'"),  # beyond float
        (["-t", "0.5x"], "not '0.5x'"),
        (["-p", "2"], "-p needs a top-p value from 0 to 1, not '2'"),  # was: 0.9
        (["-p", "-0.1"], "not '-0.1'"),
        (["-n", "-5"], "-n needs a number of steps, 0 or more"),  # was: seq_len
        (["-n", "ten"], "not 'ten'"),
        (["-n", "99999999999"], "not '99999999999'"),
        (["-s", "7up"], "-s needs a whole number, not '7up'"),
        (["-v", "2"], "-v needs 0 or 1, not '2'"),
        (["-k", "q8"], "-k takes f32 or f16, not 'q8'"),
        (["-x", "1"], "unknown option -x"),  # was: the usage text, not naming it
        (["-tt", "1"], "'-tt' is not an option"),
        (["t", "1"], "'t' is not an option"),
        (["-n", "4", "-t"], "option -t needs a value"),
    ],
)
def test_l2run_names_a_bad_option_before_loading_anything(tools: Tools, files: Files, args: list[str],
                                                          named: str) -> None:
    # the model path does not exist: the options are refused before it is opened
    proc = tools.run("l2run", files.dir / "no-such-model.bin", "-z", files.tokenizer, *args)
    why = check_failure("l2run", proc, re.escape(named))
    assert why is None, why
    assert proc.stderr.count("\n") == 1 and "Usage" not in proc.stderr, proc.stderr


def test_l2run_accepts_the_edges_of_each_range(tools: Tools, files: Files) -> None:
    model = files.write(f"{tools.build}-edges-model.bin", files.base["v0"])
    for args in (["-t", "0", "-p", "0"], ["-t", "2.5", "-p", "1", "-s", "-5"], ["-n", "0", "-v", "0"],
                 ["-t", "1e-45", "-s", "0"], ["-k", "f16", "-v", "1"]):
        proc = tools.run("l2run", model, "-z", files.tokenizer, "-i", "Once", *args)
        assert proc.returncode == 0 and not any(m in proc.stderr for m in SANITIZER_MARKS), (args, proc.stderr)


# ----------------------------------------------------------------------------- a file cut while mapped


def _fill(fd: int) -> None:
    """Writes into the pipe fd until it holds not one byte more."""
    os.set_blocking(fd, False)
    for chunk in (b"x" * 65536, b"x"):
        try:
            while True:
                os.write(fd, chunk)
        except BlockingIOError:
            pass
    os.set_blocking(fd, True)


@pytest.mark.parametrize("which", ["model", "tokenizer"])
def test_a_file_cut_while_mapped_is_reported_in_one_line(tools: Tools, files: Files, which: str) -> None:
    # l2run writes its tokens into a full pipe, so it waits at its first one with the files
    # mapped; the file is cut, the pipe drained, and the next read of the file faults (SIGBUS:
    # status 135 and no word, before)
    model = files.write(f"{tools.build}-cut-model.bin", files.base["v0"])
    tok = files.dir / f"{tools.build}-cut-tok.bin"
    tok.write_bytes(files.tokenizer.read_bytes())
    victim = model if which == "model" else tok
    r, w = os.pipe()
    _fill(w)
    proc = subprocess.Popen([tools.bin_dir / "l2run", model, "-z", tok, "-n", "32", "-t", "0", "-i", "Once upon"],
                            stdout=w, stderr=subprocess.PIPE, env=tools.env)
    os.close(w)
    try:
        maps = Path(f"/proc/{proc.pid}/maps")
        while proc.poll() is None and str(victim) not in maps.read_text():
            time.sleep(0.005)  # waiting for the mapping, not timing anything
        os.truncate(victim, 0)
        with os.fdopen(r, "rb") as out:
            out.read()
        err = proc.stderr.read().decode(errors="replace")
        rc = proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    why = check_failure("l2run", subprocess.CompletedProcess(proc.args, rc, "", err),
                        r"^l2run: bus error \(SIGBUS\) reading a mapped file: .*renaming a new file over them")
    assert why is None, why
    assert err.count("\n") == 1, err


# ----------------------------------------------------------------------------- prompts


@pytest.mark.parametrize(
    "steps,prompt",
    [
        ("4", "Once upon a time there was a hen"),  # more tokens than -n steps
        ("0", "x" * 40),  # -n 0 = seq_len 32; 40 byte tokens + BOS
        ("1", "a"),  # BOS + dummy prefix + 'a' in one position
        ("33", "\xff" * 64),  # -n above seq_len is capped at 32
    ],
)
def test_prompt_longer_than_context(tools: Tools, files: Files, steps: str, prompt: str) -> None:
    model = files.write(f"{tools.build}-prompt-model.bin", files.base["v0"])
    proc = tools.run("l2run", model, "-z", files.tokenizer, "-n", steps, "-t", "0", "-i", prompt)
    why = check_failure("l2run", proc, r"prompt|context")
    assert why is None, why


# ----------------------------------------------------------------------------- NaN / inf


def _nan_v0(fmt_writer, name: str, value: float, index: int = 0, shared: bool = True):
    def make(d: Path) -> bytes:
        w = ck.make_weights(CFG, seed=9, shared=shared)
        p = d / f"nan-{name}-{value}.bin"
        fmt_writer(p, CFG, ck.with_nan(w, name, index, value))
        return p.read_bytes()

    return make


def _patch_f32(fmt: str, offset_of: Callable[[bytes], int], value: float, pack: str = "<f"):
    def make(files: Files) -> bytes:
        d = files.base[fmt]
        return put(d, offset_of(d), pack, value)

    return make


def _v2_scale_offset(d: bytes) -> int:
    # the first scales array: after the norms and the embedding's int8 values
    norms = 4 * (2 * CFG.n_layers + 1) * CFG.dim
    return 256 + norms + CFG.vocab_size * CFG.dim + 4 * 1  # scale of the embedding's group 1 (BOS row)


def _packed_data(name: str, layer: int, elem: int, size: int = 4, scales: bool = False):
    def off(d: bytes) -> int:
        e = _entry(d, name, layer)
        return (e["soff"] if scales else e["off"]) + elem * size

    return off


NAN_CASES = {
    "v0-wq-nan": lambda files: _nan_v0(ck.write_v0, "wq", float("nan"))(files.dir),
    "v0-unshared-wcls-inf": lambda files: _nan_v0(ck.write_v0, "wcls", float("inf"), 5, shared=False)(
        files.dir
    ),
    "v1-w1-inf": lambda files: _nan_v0(ck.write_v1, "w1", float("inf"), 3)(files.dir),
    "v1-rms_final-nan": lambda files: _nan_v0(ck.write_v1, "rms_final", float("nan"))(files.dir),
    "v1-embedding-bos-row-nan": lambda files: _nan_v0(ck.write_v1, "token_embedding", float("nan"), CFG.dim)(
        files.dir
    ),
    "v2-scale-nan": _patch_f32("v2", _v2_scale_offset, float("nan")),
    "v2-rms_att-inf": _patch_f32("v2", lambda d: 256, float("-inf")),
    "packed_f32-embedding-nan": _patch_f32(
        "packed_f32", _packed_data("token_embedding", -1, CFG.dim + 1), float("nan")
    ),
    "packed_f32-rms_ffn-inf": _patch_f32("packed_f32", _packed_data("rms_ffn", 0, 0), float("inf")),
    "packed_f16-wq-nan": _patch_f32("packed_f16", _packed_data("wq", 0, 0, 2), 0x7E00, "<H"),
    "packed_f16-w2-inf": _patch_f32("packed_f16", _packed_data("w2", 1, 7, 2), 0x7C00, "<H"),
    "packed_q8-scale-nan": _patch_f32("packed_q8", _packed_data("wq", 0, 0, scales=True), float("nan")),
    "packed_q8-rms_att-nan": _patch_f32("packed_q8", _packed_data("rms_att", 0, 0), float("nan")),
    "packed_q8-rms_final-inf": _patch_f32("packed_q8", _packed_data("rms_final", -1, 3), float("inf")),
}


@pytest.mark.parametrize("case", list(NAN_CASES))
def test_nan_weights(tools: Tools, files: Files, case: str) -> None:
    data = NAN_CASES[case](files)
    path = files.write(f"{tools.build}-nan-{case}.bin", data)
    why = run_bad_model(tools, files, "l2run", path, r"non-finite")
    assert why is None, f"l2run: {why}"
    why = run_bad_model(tools, files, "l2convert", path, r"NaN|infinit|non-finite")
    assert why is None, f"l2convert: {why}"


# ----------------------------------------------------------------------------- fuzz regressions


def _regression_inputs() -> list:
    found = []
    if REGRESSIONS.is_dir():
        for d in sorted(p for p in REGRESSIONS.iterdir() if p.is_dir()):
            for f in sorted(d.iterdir()):
                if f.is_file() and f.name != ".gitkeep":
                    found.append(pytest.param(d.name, f, id=f"{d.name}/{f.name}"))
    return found or [pytest.param(None, None, id="none-saved")]


def packed_from_fuzz_input(data: bytes) -> bytes:
    """The file fuzz_packed.c builds from its input (see its comment)."""
    if not data:
        return b""
    f = bytearray(b"L2RV" + data[1:])
    if not data[0] & 1 and len(f) >= 72:
        struct.pack_into("<Q", f, 64, len(f))
    return bytes(f)


@pytest.fixture(scope="session")
def fuzz_bins() -> Path:
    # the Makefile's fuzz rule knows neither the headers nor that fuzz_packed.c includes
    # fuzz_checkpoint.c: drop binaries older than any of them
    deps = [*(REPO / "libllama2_rvv").rglob("*.h"), FUZZ_DIR / "fuzz_checkpoint.c"]
    newest = max(p.stat().st_mtime for p in deps)
    for b in (REPO / "build" / "fuzz").glob("fuzz_*"):
        if b.is_file() and b.stat().st_mtime < newest:
            b.unlink()
    proc = subprocess.run(["make", "-s", "fuzz"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return REPO / "build" / "fuzz"


@pytest.mark.parametrize("target,path", _regression_inputs())
def test_fuzz_regression(tools: Tools, files: Files, request, target: str | None, path: Path | None) -> None:
    """Saved crash inputs must neither crash the fuzz target nor the tools."""
    if target is None:
        pytest.skip("no fuzz regression inputs saved")
    data = path.read_bytes()
    if target in ("fuzz_checkpoint", "fuzz_packed"):
        model = data if target == "fuzz_checkpoint" else packed_from_fuzz_input(data)
        mpath = files.write(f"{tools.build}-regr-{target}-{path.name}.bin", model)
        big_tok = files.dir / "big-tok.bin"
        if not big_tok.exists():
            pieces = [b"<unk>", b"<s>", b"</s>"] + [b"<0x%02X>" % b for b in range(256)]
            pieces += [b"p%d" % i for i in range((1 << 16) - len(pieces))]
            big_tok.write_bytes(tokenizer_bytes(pieces, [0.0] * len(pieces)))
        for args in (
            [mpath, "-z", big_tok, "-n", "4", "-t", "0", "-i", "a"],
            [mpath, files.dir / f"regr-{path.name}.out", "--type", "q8"],
        ):
            tool = "l2run" if len(args) > 4 else "l2convert"
            proc = tools.run(tool, *args)
            assert not any(m in proc.stderr for m in SANITIZER_MARKS), proc.stderr[-4000:]
            assert proc.returncode in (0, 1), f"{tool} exit {proc.returncode}: {proc.stderr[-2000:]}"
            if proc.returncode == 1:
                assert proc.stderr.startswith(f"{tool}:"), proc.stderr[-2000:]
    if tools.build == "asan":  # the fuzz binaries are sanitized builds already: once is enough
        bins = request.getfixturevalue("fuzz_bins")
        proc = subprocess.run(
            [str(bins / target), "-runs=1", str(path)],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=TIMEOUT,
            cwd=REPO,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
