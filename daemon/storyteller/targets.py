"""The build targets of libllama2_rvv/targets.mk (the one description the Makefile and
scripts/cross-build read too): which target this machine is, its compiler flags, and the
kernel sets a build for it offers. _ffi_build.py compiles with target_cflags(); `storyteller
--version` checks the loaded library against expected_kernels().
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
_CANDIDATES = (
    _PACKAGE_DIR / "data" / "targets.mk",  # installed copy (setup.py)
    _PACKAGE_DIR.parents[1] / "libllama2_rvv" / "targets.mk",  # source tree
)

# T-Head cores that report "v" but implement RVV 0.7.1, reachable only as XTheadVector.
_THEAD_07_CORES = ("c906", "c910", "c920")


@dataclass(frozen=True)
class Target:
    name: str
    march: str  # "" for the compiler's default
    defines: tuple[str, ...]
    kernels: tuple[str, ...]  # fastest first

    def cflags(self) -> list[str]:
        return ([f"-march={self.march}"] if self.march else []) + [f"-D{d}" for d in self.defines]


def parse(text: str) -> dict[str, Target]:
    """The targets of a targets.mk text (lines `NAME.KEY := VALUE`)."""
    facts: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        if m := re.fullmatch(r"([\w-]+)\.(march|defines|kernels) :=(.*)", line.strip()):
            facts.setdefault(m[1], {})[m[2]] = m[3].strip()
    return {name: Target(name, f.get("march", ""), tuple(f.get("defines", "").split()),
                         tuple(f.get("kernels", "").split()))
            for name, f in facts.items()}


def load() -> dict[str, Target]:
    for path in _CANDIDATES:
        if path.is_file():
            return parse(path.read_text())
    raise FileNotFoundError("targets.mk not found next to the package or in the source tree")


def target_name(machine: str, cpuinfo: str = "") -> str:
    """The target of a machine (platform.machine()) whose /proc/cpuinfo is `cpuinfo`: c906 on
    T-Head C906/C910/C920 cores (their "v" is RVV 0.7.1), rv64gcv where the ISA string has the
    V extension, rv64gc on other riscv64, x86_64, and host for anything else."""
    if machine == "x86_64":
        return "x86_64"
    if machine != "riscv64":
        return "host"
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
        return "c906"
    return "rv64gcv" if "v" in letters else "rv64gc"


def read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""

