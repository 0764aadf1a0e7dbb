"""The board kit's robot (scripts/bundle TARGET -> robot/): what can be proven off the board.

- The kit's robot runs: the host kit (same packaging, this machine's library) unpacked in a
  temp folder tells a story through robot/bin/storyteller, with no checkout on PYTHONPATH,
  and robot/install --check passes on a machine that has python3, cffi and numpy.
- The link recipe of the board's library (scripts/cross-build: no C library, libgcc only)
  works: the host objects linked that way, opened by Python through STORYTELLER_LIB, tell the
  same seeded story as the normal library.
- The c906 library itself is RISC-V, double-float, asks for no C library and no symbol
  version, and every C function it needs is one musl's libc exports (the Duo images are
  musl). That it loads into the board's python3 only a board can show (no RISC-V Python here).
- The shell scripts parse (sh -n) and the init script is the one in etc/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import package_support as ps
import pytest
from kit_support import unpack

from storyteller import targets
from storyteller.devtools import checkpoints as ck

REPO = Path(__file__).resolve().parents[2]
MUSL_LIBC = Path("/usr/lib/x86_64-linux-musl/libc.so")
CFG = ck.Config(dim=32, hidden_dim=72, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=32000, seq_len=64)


def bundle(target: str, models: Path) -> tuple[Path, str]:
    """scripts/bundle TARGET with the models of `models`; the archive's path and stdout."""
    p = subprocess.run(["bash", str(REPO / "scripts" / "bundle"), target], cwd=REPO, capture_output=True,
                       text=True, env={**os.environ, "BUNDLE_MODELS": str(models)}, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return REPO / "build" / f"bundle-{target}.tar.gz", p.stdout


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A packed q8 model of the real vocabulary and its tokenizer, as a models folder."""
    d = tmp_path_factory.mktemp("kit-models")
    ck.write_v0(d / "tiny.bin", CFG, ck.make_weights(CFG, 7))
    subprocess.run([str(REPO / "build" / "host" / "bin" / "l2convert"), str(d / "tiny.bin"), str(d / "tiny.q8.l2"),
                    "--type", "q8"], check=True, capture_output=True)
    (d / "tiny.bin").unlink()
    shutil.copy(ps.TOKENIZER, d / "tokenizer.bin")
    return d


@pytest.fixture(scope="module")
def host_kit(models: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    subprocess.run(["make", "-s", "all"], cwd=REPO, check=True)
    archive, out = bundle("host", models)
    dest = tmp_path_factory.mktemp("kit")
    unpack(archive, dest)
    return dest / "l2run-host", out


def kit_env() -> dict[str, str]:
    """No checkout on the path and no library named: the kit must carry its own. The kit runs
    the `python3` on PATH, as on the board: this one (with cffi and numpy), not the system's."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "STORYTELLER_LIB", "STORYTELLER_CONFIG")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def test_kit_robot_tells_a_story(host_kit: tuple[Path, str]) -> None:
    kit, _ = host_kit
    site = kit / "robot" / "site" / "storyteller"
    assert (site / "libllama2_rvv.so").is_file() and (site / "_llama2_rvv.py").is_file()  # cffi ABI mode
    assert not (kit / "robot" / "site" / "bin").exists()  # pip's launcher names this machine's python
    p = subprocess.run([str(kit / "robot" / "bin" / "storyteller"), "tell", "a brave little dragon",
                        "--model", str(kit / "tiny.q8.l2"), "--tokenizer", str(kit / "tokenizer.bin"),
                        "--sentences", "3"], capture_output=True, text=True, cwd="/", env=kit_env(), timeout=120)
    assert p.returncode == 0, p.stderr
    assert "dragon" in p.stdout
    where = subprocess.run([str(kit / "robot" / "bin" / "storyteller"), "--version"], capture_output=True,
                           text=True, cwd="/", env=kit_env(), timeout=60)
    assert where.returncode == 0, where.stderr


def test_kit_install_check_passes_where_python_has_cffi_and_numpy(host_kit: tuple[Path, str]) -> None:
    kit, _ = host_kit
    p = subprocess.run(["sh", str(kit / "robot" / "install"), "--check"], capture_output=True, text=True,
                       env=kit_env(), timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "cffi, numpy: OK" in p.stdout


def test_kit_install_check_names_the_buildroot_option(host_kit: tuple[Path, str], tmp_path: Path) -> None:
    """A python3 without cffi: the check stops, naming BR2_PACKAGE_PYTHON_CFFI."""
    kit, _ = host_kit
    fake = tmp_path / "bin"
    fake.mkdir()
    # a python3 that cannot import cffi: the real one with cffi hidden by a failing module
    (tmp_path / "nocffi").mkdir()
    (tmp_path / "nocffi" / "cffi.py").write_text("raise ImportError('not in this image')\n")
    (fake / "python3").write_text(f"#!/bin/sh\nPYTHONPATH={tmp_path / 'nocffi'} exec {sys.executable} \"$@\"\n")
    (fake / "python3").chmod(0o755)
    env = kit_env()
    env["PATH"] = f"{fake}{os.pathsep}{env['PATH']}"
    p = subprocess.run(["sh", str(kit / "robot" / "install"), "--check"], capture_output=True, text=True,
                       env=env, timeout=120)
    assert p.returncode == 1
    assert "BR2_PACKAGE_PYTHON_CFFI" in p.stdout and "BR2_PACKAGE_PYTHON_NUMPY" not in p.stdout


def test_kit_scripts_parse_and_carry_the_init_script(host_kit: tuple[Path, str]) -> None:
    kit, out = host_kit
    init = Path("etc") / "init.d" / "S99storyteller"
    for script in (kit / "robot" / "install", kit / "robot" / "bin" / "storyteller", kit / init):
        subprocess.run(["sh", "-n", str(script)], check=True)
        assert os.access(script, os.X_OK), script
    assert (kit / init).read_bytes() == (REPO / init).read_bytes()
    readme = (kit / "README-board.txt").read_text()
    assert "BR2_PACKAGE_PYTHON_CFFI" in readme and "robot/install" in readme
    assert "for the robot" in out and "MB private (python3" in out  # its memory, measured


def test_libc_neutral_link_tells_the_same_story(tmp_path: Path, models: Path) -> None:
    """cross-build's recipe for the board's .so (-nostdlib, -z undefs, libgcc), on the host objects."""
    subprocess.run(["make", "-s", "lib"], cwd=REPO, check=True)
    objs = sorted(str(p) for p in (REPO / "build" / "host" / "obj" / "libllama2_rvv").rglob("*.o"))
    neutral = tmp_path / "libllama2_rvv.so"
    subprocess.run(["cc", "-shared", "-nostdlib", "-Wl,-soname,libllama2_rvv.so", "-Wl,-z,undefs", "-o",
                    str(neutral), *objs, "-lgcc"], check=True)
    assert "NEEDED" not in subprocess.run(["readelf", "-d", str(neutral)], capture_output=True, text=True,
                                          check=True).stdout
    args = ("tell", "a brave little dragon", "--model", models / "tiny.q8.l2", "--tokenizer",
            models / "tokenizer.bin", "--sentences", "4", "--seed", "5")
    normal = ps.run_cli(*args)
    other = ps.run_cli(*args, env={"STORYTELLER_LIB": str(neutral)})
    assert normal.returncode == 0 and other.returncode == 0, normal.stderr + other.stderr
    assert other.stdout == normal.stdout and normal.stdout.strip()


def test_c906_library_needs_only_what_musl_has() -> None:
    proc = subprocess.run(["bash", str(REPO / "scripts" / "cross-build"), "c906"], cwd=REPO,
                          capture_output=True, text=True, errors="replace")
    if proc.returncode == 77:
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, proc.stderr[-3000:]
    lib = REPO / "build" / "c906" / "lib" / "libllama2_rvv.so"
    header = subprocess.run(["readelf", "-hdV", str(lib)], capture_output=True, text=True, check=True).stdout
    assert "RISC-V" in header and "double-float ABI" in header
    data = lib.read_bytes()
    for kernels in targets.load()["c906"].kernels:  # the sets the c906 target promises are in it
        assert kernels.encode() + b"\0" in data, kernels
    assert "NEEDED" not in header and "GLIBC" not in header and "Version needs" not in header
    syms = subprocess.run(["readelf", "--dyn-syms", "-W", str(lib)], capture_output=True, text=True, check=True).stdout
    undefined = {f[7] for f in (line.split() for line in syms.splitlines()) if len(f) >= 8 and f[6] == "UND"}
    assert {"malloc", "mmap", "expf"} <= undefined
    if not MUSL_LIBC.is_file():
        pytest.skip(f"no {MUSL_LIBC} to compare with (apt-get install musl)")
    musl = subprocess.run(["nm", "-D", "--defined-only", str(MUSL_LIBC)], capture_output=True, text=True,
                          check=True).stdout
    exported = {line.split()[-1] for line in musl.splitlines() if line.strip()}
    assert undefined - exported == set()


@pytest.mark.skipif(shutil.which("musl-gcc") is None, reason="needs musl-gcc (apt-get install musl-tools)")
def test_libc_neutral_library_runs_in_a_musl_process(tmp_path: Path, models: Path) -> None:
    """The board's situation on this machine: the library's objects, compiled against glibc's
    headers and linked against no C library, loaded by musl's dynamic linker into a program
    built with musl (l2run, as the Duo images' python3 is). Greedy output equals the host
    build's. Sampled output is not compared: it drifts from glibc's after a few tokens (the
    rotary encoding's sincosf differs in the last bit for some angles between musl and glibc,
    as scripts/try-musl-c906 shows on the C906; greedy picks survive that, a draw over 32000
    close probabilities does not)."""
    subprocess.run(["make", "-s", "lib", "tools"], cwd=REPO, check=True)
    objs = sorted(str(p) for p in (REPO / "build" / "host" / "obj" / "libllama2_rvv").rglob("*.o"))
    subprocess.run(["cc", "-shared", "-nostdlib", "-Wl,-soname,libllama2_rvv.so", "-Wl,-z,undefs", "-o",
                    str(tmp_path / "libllama2_rvv.so"), *objs, "-lgcc"], check=True)
    subprocess.run(["musl-gcc", "-std=c11", "-O2", "-Ilibllama2_rvv/include", "-Ilibllama2_rvv/src",
                    "-D_DEFAULT_SOURCE", "libllama2_rvv/tools/l2run.c", f"-L{tmp_path}", "-lllama2_rvv", "-lm",
                    "-o", str(tmp_path / "l2run")], cwd=REPO, check=True)
    assert "ld-musl" in subprocess.run(["readelf", "-l", str(tmp_path / "l2run")], capture_output=True,
                                       text=True, check=True).stdout
    args = [str(models / "tiny.q8.l2"), "-z", str(models / "tokenizer.bin"), "-n", "48", "-t", "0", "-i", "Once"]
    musl = subprocess.run([str(tmp_path / "l2run"), *args], capture_output=True, timeout=120,
                          env={**os.environ, "LD_LIBRARY_PATH": str(tmp_path)})
    host = subprocess.run([str(REPO / "build" / "host" / "bin" / "l2run"), *args], capture_output=True, timeout=120)
    assert musl.returncode == 0 and host.returncode == 0, musl.stderr + host.stderr
    assert musl.stdout == host.stdout and len(musl.stdout) > 40
