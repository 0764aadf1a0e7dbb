"""The C library's thread contract (llama2_rvv.h, "Threads and lifetimes"), from C.

tests/c/test_threads.c cancels evals from another thread, races two threads evaluating one
session and checks what failed evals leave behind; this runs it on the normal build and on
the AddressSanitizer + UBSan build (`make asan`), where racing evals that wrote past the
session's memory (as they did before the busy guard) are reported. The Python layer's side
(close() during a generation, concurrent use refused, cancel during a prompt) is in
test_package_api.py.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from native import REPO_ROOT

from storyteller.devtools import checkpoints as ck

ASAN_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("threads") / "tiny.bin"
    ck.write_v0(path, ck.TINY, ck.make_weights(ck.TINY, seed=4))
    return path


@pytest.mark.parametrize("build", ["host", "asan"])
def test_thread_contract_in_c(model: Path, build: str) -> None:
    if build == "host":
        subprocess.run(["make", "-s", "ctests"], cwd=REPO_ROOT, check=True)
        env = None
    else:
        subprocess.run(["make", "-s", "asan"], cwd=REPO_ROOT, check=True)
        env = dict(os.environ, **ASAN_ENV)
    binary = REPO_ROOT / "build" / build / "bin" / "test_threads"
    proc = subprocess.run([str(binary), str(model)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and "AddressSanitizer" not in proc.stderr, proc.stdout + proc.stderr[-4000:]
    assert proc.stdout.strip().endswith("all passed"), proc.stdout
