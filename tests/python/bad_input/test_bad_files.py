"""Files that are whole but wrong for what they ask: the builds themselves, files truncated at
every header offset and at sampled ones, and sizes a file asks for that it cannot back."""

from __future__ import annotations

import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from bad_input_support import (
    CFG,
    FIXED_HEADER,
    SANITIZER_MARKS,
    TIMEOUT,
    Files,
    Tools,
    assert_bad_model,
    check_failure,
    l2run_args,
    put,
    run_bad_model,
)

from storyteller.devtools import checkpoints as ck

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
HEADER_FIELDS = {"v0": 28, "v1": 37, "v2": 41, "packed": 96}
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
