"""Every kernel of every kernel set this CPU runs, against the generic kernels.

The checks are the C program tests/c/test_kernels.c (it also runs under QEMU for the
RISC-V sets, see test_cross.py); this runs the host build of it and checks that it covered
every set the library offers on this CPU.
"""

from __future__ import annotations

import re
import subprocess

from capi import kernel_names
from native import REPO_ROOT

TEST = REPO_ROOT / "build" / "host" / "bin" / "test_kernels"


def test_every_kernel_set_matches_generic() -> None:
    subprocess.run(["make", "-s"], cwd=REPO_ROOT, check=True)
    proc = subprocess.run([str(TEST)], capture_output=True, text=True, timeout=600)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = re.fullmatch(r"(\d+) passed, (\d+) failed", lines[-1])
    assert summary, lines[-1]
    assert int(summary.group(2)) == 0, proc.stdout
    tested = {line.split()[0] for line in lines[:-1]}
    assert tested == set(kernel_names())
    assert int(summary.group(1)) == len(lines) - 1
