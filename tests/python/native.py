"""The C library under test, loaded with cffi in ABI mode.

lib() builds it first (`make -s lib` at the repo root, once per session) unless
$STORYTELLER_LIB names a prebuilt .so (e.g. the AddressSanitizer build) to test instead.
"""

from __future__ import annotations

import os
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

from storyteller._native import cdef_from_header, header_path, load_abi

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = REPO_ROOT.parent / "shared"  # test data: models/tokenizer.bin, tokenizer.model, ...


# Functions the library exports for tests only, declared in its internal headers, not in
# llama2_rvv.h (libllama2_rvv/src/sampler.h).
TEST_HOOKS = "uint32_t l2_sampler_random_u32(l2_sampler *sampler);"


def library_path() -> str:
    path = os.environ.get("STORYTELLER_LIB")
    if not path:
        subprocess.run(["make", "-s", "lib"], cwd=REPO_ROOT, check=True)
        path = str(REPO_ROOT / "build" / "host" / "lib" / "libllama2_rvv.so")
    return path


@cache
def lib() -> tuple[Any, Any]:
    """(ffi, lib) for libllama2_rvv.so."""
    return load_abi(library_path())


@cache
def lib_with_test_hooks() -> tuple[Any, Any]:
    """(ffi, lib) for libllama2_rvv.so with TEST_HOOKS declared too (a separate ffi: its objects
    do not mix with lib()'s)."""
    from cffi import FFI

    ffi = FFI()
    ffi.cdef(cdef_from_header(header_path().read_text()) + "\n" + TEST_HOOKS)
    return ffi, ffi.dlopen(library_path())


def error_message(ffi: Any, err: Any) -> str:
    """The text of an l2_error."""
    return ffi.string(err.message).decode("utf-8", "replace")
