"""The cffi builder (setup.py: cffi_modules): the one place that knows compiler flags.

API mode (the default): the module ``storyteller._llama2_rvv`` is compiled from the
libllama2_rvv sources themselves, every kernel file included; each kernel file guards
itself (kernels/x86.c picks AVX2 per function at run time, kernels/riscv_v.c compiles only
when the -march flag below enables vectors), so the flags only choose the target.

ABI mode (``STORYTELLER_ABI=1``, or ``STORYTELLER_LIB=/path/libllama2_rvv.so`` at install
time, for boards where compiling is impractical): nothing is compiled; the module is cffi's
out-of-line ABI module, which opens a prebuilt library at run time (see _native.py).

Environment, at install time:
    STORYTELLER_CFLAGS  replaces the target's flags (libllama2_rvv/targets.mk), e.g.
                        "-march=rv64gc_xtheadvector -DL2_REQUIRE_RISCV_V"
    STORYTELLER_ABI     1: ABI mode
    STORYTELLER_LIB     a prebuilt libllama2_rvv.so: ABI mode, and setup.py bundles the .so
"""

from __future__ import annotations

import importlib
import os
import platform
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cffi import FFI

_HERE = Path(__file__).resolve().parent
ROOT = _HERE.parents[1]  # the source tree: setup.py, libllama2_rvv/
C_DIR = ROOT / "libllama2_rvv"

# Flags every build uses, as the Makefile does: C11, optimised, and no fused multiply-adds
# so the results are those of the C tools and tests bit for bit.
BASE_CFLAGS = ["-std=c11", "-O3", "-ffp-contract=off", "-D_DEFAULT_SOURCE"]


def platform_cflags(machine: str, cpuinfo: str = "", env: Mapping[str, str] | None = None) -> list[str]:
    """The target flags for building on `machine` (platform.machine()) whose /proc/cpuinfo
    is `cpuinfo`: those libllama2_rvv/targets.mk gives the machine's target (targets.py picks
    it: rv64gcv_zvfhmin on RVV 1.0, rv64gc_xtheadvector on T-Head C906/C910/C920, none on
    x86_64, whose kernels/x86.c selects AVX2 at run time). $STORYTELLER_CFLAGS in `env`, when
    set, replaces them."""
    env = os.environ if env is None else env
    override = env.get("STORYTELLER_CFLAGS")
    if override is not None:
        return shlex.split(override)
    return [str(f) for f in _targets().load()[_targets().target_name(machine, cpuinfo)].cflags()]


def abi_mode(env: Mapping[str, str] | None = None) -> bool:
    """True when the install should compile nothing (STORYTELLER_ABI=1 or STORYTELLER_LIB)."""
    env = os.environ if env is None else env
    return bool(env.get("STORYTELLER_LIB")) or env.get("STORYTELLER_ABI", "").lower() in ("1", "yes", "true")


def c_sources() -> list[str]:
    """The library's sources (kernels included), relative to the current directory as
    setuptools prefers."""
    files = sorted(C_DIR.glob("src/*.c")) + sorted(C_DIR.glob("src/kernels/*.c"))
    return [os.path.relpath(f) for f in files]


def _from_tree(module: str) -> Any:
    """A module of the package, imported from the source tree (setup.py runs before install)."""
    sys.path.insert(0, str(_HERE.parent))
    try:
        return importlib.import_module(f"storyteller.{module}")
    finally:
        sys.path.pop(0)


def _targets() -> Any:
    return _from_tree("targets")


def _cdef() -> str:
    native = _from_tree("_native")
    return str(native.cdef_from_header((C_DIR / "include" / "llama2_rvv.h").read_text()))


ffi = FFI()
ffi.cdef(_cdef())
if abi_mode():
    ffi.set_source("storyteller._llama2_rvv", None)
else:
    ffi.set_source(
        "storyteller._llama2_rvv",
        '#include "llama2_rvv.h"',
        sources=c_sources(),
        include_dirs=[os.path.relpath(C_DIR / "include"), os.path.relpath(C_DIR / "src")],
        extra_compile_args=BASE_CFLAGS + platform_cflags(platform.machine(), _targets().read_cpuinfo()),
        libraries=["m"],
    )

if __name__ == "__main__":
    ffi.compile(verbose=True)
