"""One build description: libllama2_rvv/targets.mk, read by the Makefile, scripts/cross-build
and pip install (_ffi_build.py through storyteller.targets). Each reader gets the same flags;
a target that promises the vector kernels refuses to build without them; `storyteller
--version` checks the loaded library's kernel sets against its target's."""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
from pathlib import Path

import package_support as ps
import pytest
from native import REPO_ROOT

ps.use_host_library()

from storyteller import _ffi_build, cli, targets  # noqa: E402
from storyteller.engine import kernel_names  # noqa: E402

TARGETS = targets.load()
# -ffreestanding: clang's own stdint.h, so the probe needs no RISC-V C library headers
RISCV_PROBE = '#include "kernels.h"\n#ifdef L2_RISCV_V_KERNELS\nint vector_kernels;\n#endif\n'


@pytest.mark.parametrize(("machine", "cpuinfo", "env", "flags"), [
    ("x86_64", "", {}, []),
    ("aarch64", "", {}, []),
    ("riscv64", "isa\t\t: rv64imafdc_zicsr_zifencei\n", {}, ["-march=rv64gc"]),
    ("riscv64", "processor\t: 0\nisa\t\t: rv64imafdcv_zicsr_zifencei_zba\nuarch\t: spacemit,x60\n", {},
     ["-march=rv64gcv_zvfhmin", "-DL2_REQUIRE_RISCV_V"]),
    ("riscv64", "isa\t\t: rv64imafdcvsu\nuarch\t\t: thead,c906\n", {},
     ["-march=rv64gc_xtheadvector", "-DL2_REQUIRE_RISCV_V"]),
    ("riscv64", "isa\t\t: rv64imafdc_xtheadvector\n", {}, ["-march=rv64gc_xtheadvector", "-DL2_REQUIRE_RISCV_V"]),
    ("riscv64", "isa\t\t: rv64imafdcv\n", {"STORYTELLER_CFLAGS": "-march=rv64gc -O2"}, ["-march=rv64gc", "-O2"]),
    ("x86_64", "", {"STORYTELLER_CFLAGS": ""}, []),
])
def test_pip_install_flags(machine: str, cpuinfo: str, env: dict[str, str], flags: list[str]) -> None:
    assert _ffi_build.platform_cflags(machine, cpuinfo, env) == flags


def test_every_target_is_complete() -> None:
    assert set(TARGETS) == {"host", "x86_64", "rv64gc", "rv64gcv", "c906"}
    for t in TARGETS.values():
        assert t.kernels and t.kernels[-1] == "generic", t


@pytest.mark.parametrize("name", ["rv64gc", "rv64gcv", "x86_64"])
def test_makefile_compiles_with_the_targets_flags(name: str, tmp_path: Path) -> None:
    """make TARGET=NAME puts exactly the description's flags on every compile line."""
    obj = tmp_path / "obj/libllama2_rvv/src/model.o"
    out = subprocess.run(["make", "-n", f"TARGET={name}", f"BUILD={tmp_path}", str(obj)], cwd=REPO_ROOT,
                         capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if " -c " in x)
    assert re.findall(r"-march=\S+|-DL2_\w+", line) == TARGETS[name].cflags()


def test_makefile_refuses_an_unknown_target() -> None:
    p = subprocess.run(["make", "-n", "TARGET=rv32"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert p.returncode != 0 and "unknown TARGET 'rv32'" in p.stderr


def test_cross_build_takes_its_flags_from_the_description() -> None:
    text = (REPO_ROOT / "scripts/cross-build").read_text()
    assert "-march=" not in text.replace("-march=$(", "")  # no flag of its own
    assert 'TARGET="$target"' in text


@pytest.mark.skipif(shutil.which("clang-19") is None, reason="clang-19 (the RISC-V cross compiler) not installed")
@pytest.mark.parametrize(("name", "vector"), [("rv64gc", False), ("rv64gcv", True)])
def test_riscv_target_flags_give_the_kernels_it_promises(name: str, vector: bool, tmp_path: Path) -> None:
    """With its flags a target compiles kernels.h with (or without) the vector kernels, as its
    kernels line says."""
    src = tmp_path / "probe.c"
    src.write_text(RISCV_PROBE)
    p = subprocess.run(["clang-19", "--target=riscv64-linux-gnu", "-ffreestanding", *TARGETS[name].cflags(),
                        f"-I{REPO_ROOT}/libllama2_rvv/src", "-E", str(src)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert ("int vector_kernels;" in p.stdout) == vector == ("rvv" in TARGETS[name].kernels)


@pytest.mark.skipif(shutil.which("clang-19") is None, reason="clang-19 (the RISC-V cross compiler) not installed")
def test_rvv_target_without_zvfhmin_stops_the_build(tmp_path: Path) -> None:
    """The old pip flag, -march=rv64gcv, silently built the scalar library: now an #error."""
    src = tmp_path / "probe.c"
    src.write_text(RISCV_PROBE)
    p = subprocess.run(["clang-19", "--target=riscv64-linux-gnu", "-ffreestanding", "-march=rv64gcv",
                        "-DL2_REQUIRE_RISCV_V", f"-I{REPO_ROOT}/libllama2_rvv/src", "-E", str(src)],
                       capture_output=True, text=True)
    assert p.returncode != 0 and "needs the RISC-V vector kernels" in p.stderr


def test_version_checks_the_kernel_sets() -> None:
    report = cli.version_report()
    target = TARGETS[targets.target_name(platform.machine(), targets.read_cpuinfo())]
    offered = " ".join(kernel_names())
    assert f"kernels: {offered} (target {target.name}: {' '.join(target.kernels)};" in report
    expected = all(k in offered.split() for k in target.kernels)
    assert report.endswith("as expected)") == expected, report
