"""The cffi builder (setup.py: cffi_modules): the one place that knows compiler flags.

API mode (the default): the module ``storyteller._llama2_rvv`` is compiled from the
libllama2_rvv sources themselves, every kernel file included; each kernel file guards
itself (kernels/x86.c picks AVX2 per function at run time, kernels/riscv_v.c compiles only
when the -march flag below enables vectors), so the flags only choose the target.

ABI mode (``STORYTELLER_ABI=1``, or ``STORYTELLER_LIB=/path/libllama2_rvv.so`` at install
time, for boards where compiling is impractical): nothing is compiled; the module is cffi's
out-of-line ABI module, which opens a prebuilt library at run time (see _native.py).

Environment, at install time:
    STORYTELLER_CFLAGS  replaces the per-platform flags (e.g. "-march=rv64gc_xtheadvector")
    STORYTELLER_ABI     1: ABI mode
    STORYTELLER_LIB     a prebuilt libllama2_rvv.so: ABI mode, and setup.py bundles the .so
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

from cffi import FFI

_HERE = Path(__file__).resolve().parent
ROOT = _HERE.parents[1]  # the source tree: setup.py, libllama2_rvv/
C_DIR = ROOT / "libllama2_rvv"

# Flags every build uses, as the Makefile does: C11, optimised, and no fused multiply-adds
# so the results are those of the C tools and tests bit for bit.
BASE_CFLAGS = ["-std=c11", "-O3", "-ffp-contract=off", "-D_DEFAULT_SOURCE"]

# T-Head cores that report "v" but implement RVV 0.7.1, reachable only as XTheadVector.
_THEAD_07_CORES = ("c906", "c910", "c920")


def platform_cflags(machine: str, cpuinfo: str = "", env: Mapping[str, str] | None = None) -> list[str]:
    """The target flags for building on `machine` (platform.machine()) whose /proc/cpuinfo
    is `cpuinfo`. $STORYTELLER_CFLAGS in `env`, when set, replaces them.

    x86_64 and others need none (kernels/x86.c selects AVX2 at run time). On riscv64 the
    vector kernels need -march: rv64gcv where the ISA string has the V extension, and
    rv64gc_xtheadvector on T-Head C906/C910/C920 cores, whose "v" is RVV 0.7.1.
    """
    env = os.environ if env is None else env
    override = env.get("STORYTELLER_CFLAGS")
    if override is not None:
        return shlex.split(override)
    if machine != "riscv64":
        return []
    isa, uarch = "", ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip().lower()
        if key == "isa" and not isa:
            isa = value
        elif key == "uarch" and not uarch:
            uarch = value
    base, *multi = isa.split("_")
    letters = base[4:] if base.startswith("rv64") else ""
    if any(core in uarch for core in _THEAD_07_CORES) or "xtheadvector" in multi:
        return ["-march=rv64gc_xtheadvector"]
    if "v" in letters:
        return ["-march=rv64gcv"]
    return []


def abi_mode(env: Mapping[str, str] | None = None) -> bool:
    """True when the install should compile nothing (STORYTELLER_ABI=1 or STORYTELLER_LIB)."""
    env = os.environ if env is None else env
    return bool(env.get("STORYTELLER_LIB")) or env.get("STORYTELLER_ABI", "").lower() in ("1", "yes", "true")


def c_sources() -> list[str]:
    """The library's sources (kernels included), relative to the current directory as
    setuptools prefers."""
    files = sorted(C_DIR.glob("src/*.c")) + sorted(C_DIR.glob("src/kernels/*.c"))
    return [os.path.relpath(f) for f in files]


def _read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def _cdef() -> str:
    sys.path.insert(0, str(_HERE.parent))  # import the package's cdef reader from the tree
    try:
        from storyteller._native import cdef_from_header
    finally:
        sys.path.pop(0)
    return cdef_from_header((C_DIR / "include" / "llama2_rvv.h").read_text())


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
        extra_compile_args=BASE_CFLAGS + platform_cflags(platform.machine(), _read_cpuinfo()),
        libraries=["m"],
    )

if __name__ == "__main__":
    ffi.compile(verbose=True)
