"""The crash inputs scripts/fuzz saved in tests/c/fuzz/regressions/, replayed through the tools."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest
from bad_input_support import (
    FUZZ_DIR,
    REGRESSIONS,
    REPO,
    SANITIZER_MARKS,
    TIMEOUT,
    Files,
    Tools,
)

from storyteller.devtools import checkpoints as ck

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
            big_tok.write_bytes(ck.tokenizer_bytes(pieces, [0.0] * len(pieces)))
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
