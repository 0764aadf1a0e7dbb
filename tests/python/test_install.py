"""`pip install .` into fresh virtual environments, then the installed `storyteller`:
API mode (the library compiled into the extension) and ABI mode (a prebuilt .so bundled,
here the host build standing in for a cross-compiled one).

Offline and fast: the venvs see the system's site-packages (cffi, numpy, setuptools), and
when the tests run inside a venv (scripts/setup's .venv) that venv's too, and pip runs with
--no-index --no-build-isolation, so nothing is downloaded. (A user's plain
`pip install .` uses build isolation instead: pyproject.toml names setuptools and cffi.)
The sources are copied first, so the build leaves nothing in the working tree. Slow (the
compile): ~20 s of CPU.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import package_support as ps
import pytest
from native import REPO_ROOT

pytestmark = pytest.mark.slow

SOURCES = ["setup.py", "pyproject.toml", "README.md", "daemon", "libllama2_rvv", "etc", "models/manifest.toml"]


def copy_sources(dst: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.so", "*.pyc")
    for name in SOURCES:
        src = REPO_ROOT / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=ignore)
        else:
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst / name)
    return dst


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("STORYTELLER_LIB", "STORYTELLER_ABI", "STORYTELLER_CFLAGS", "PYTHONPATH",
                        "STORYTELLER_CONFIG")}
    env.update(extra)
    return env


def see_outer_venv(venv: Path) -> None:
    """--system-site-packages shows the base Python's packages only: when this Python is a venv
    (with cffi and numpy in it, not in the system's, as under Debian's PEP 668 Python), a .pth
    file adds its site-packages after the new venv's own."""
    if sys.prefix == sys.base_prefix:
        return
    outer = [p for p in site.getsitepackages() if Path(p).is_dir()]
    inner = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    (inner / "outer-venv.pth").write_text("".join(p + "\n" for p in outer))


def install(tmp: Path, **env: str) -> Path:
    """A fresh venv with the package installed; returns its bin/ folder."""
    src = copy_sources(tmp / "src")
    venv = tmp / "venv"
    # no pip inside (ensurepip takes longer than the build): this pip installs into the venv
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True)
    see_outer_venv(venv)
    p = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                        "--no-index", "--no-build-isolation", "--disable-pip-version-check", "-q", str(src)],
                       capture_output=True, text=True, env=clean_env(**env), cwd=tmp, timeout=600, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    return venv / "bin"


def run(bin_dir: Path, *args: str | os.PathLike[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(bin_dir / args[0]), *map(str, args[1:])], capture_output=True, cwd=cwd,
                          env=clean_env(), timeout=120, check=False)


def binding(bin_dir: Path, cwd: Path) -> tuple[str, str]:
    p = run(bin_dir, "python", "-c", "from storyteller import _native as n; b = n.binding(); print(b.mode, b.origin)",
            cwd=cwd)
    assert p.returncode == 0, p.stderr
    mode, origin = p.stdout.decode().split()
    return mode, origin


def check_installed(bin_dir: Path, tmp: Path) -> None:
    """The installed command tells a story and prints what l2run prints."""
    story = ps.write_scripted_model(tmp / "story.bin", {".": [(" Tom", 30)], " Tom": [(" ran", 30)],
                                                        " ran": [("!", 30)], "!": [("<s>", 30)]})
    p = run(bin_dir, "storyteller", "tell", "a brave little dragon", "--model", story, "--tokenizer", ps.TOKENIZER,
            cwd=tmp)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode().startswith("Once upon a time, there was a brave little dragon named ")
    assert p.stdout.decode().endswith(" Tom ran! The end.\n")
    p = run(bin_dir, "storyteller", "tell", "a zombie", "--model", story, "--tokenizer", ps.TOKENIZER, cwd=tmp)
    assert p.returncode == 3  # the packaged word list is found
    model = ps.write_random_model(tmp / "random.bin")
    args = ["-z", str(ps.TOKENIZER), "-s", "77", "-t", "0.9", "-i", "Once upon a time"]
    p = run(bin_dir, "storyteller", "run", model, *args, cwd=tmp)
    c = subprocess.run([str(ps.l2run_binary()), str(model), *args], capture_output=True, check=True)
    assert p.returncode == 0 and p.stdout == c.stdout
    p = run(bin_dir, "storyteller", "models", "list", "--models-dir", tmp / "models", cwd=tmp)
    assert p.returncode == 0 and b"stories260K" in p.stdout  # the packaged manifest
    p = run(bin_dir, "storyteller", "--version", cwd=tmp)  # the packaged targets.mk: kernels checked
    assert p.returncode == 0 and b"\nkernels: " in p.stdout and b"(target " in p.stdout, p.stdout


def test_pip_install_compiles_the_library_into_the_extension(tmp_path: Path) -> None:
    egg_info = REPO_ROOT / "daemon" / "storyteller.egg-info"  # a user's own `pip install .` leaves one
    had_egg_info = egg_info.exists()
    bin_dir = install(tmp_path)
    mode, origin = binding(bin_dir, tmp_path)
    assert mode == "api" and "site-packages/storyteller/_llama2_rvv" in origin
    package = Path(origin).parent
    assert (package / "llama2_rvv.h").read_text() == (REPO_ROOT / "libllama2_rvv/include/llama2_rvv.h").read_text()
    assert {p.name for p in (package / "data").iterdir()} >= {"blocklist.txt", "manifest.toml", "storyteller.toml",
                                                              "targets.mk", "commands.txt", "topics.txt"}
    check_installed(bin_dir, tmp_path)
    assert egg_info.exists() == had_egg_info  # the build ran in the copy


def test_pip_install_with_a_prebuilt_library_uses_abi_mode(tmp_path: Path) -> None:
    bin_dir = install(tmp_path, STORYTELLER_LIB=ps.host_library())
    mode, origin = binding(bin_dir, tmp_path)
    package = Path(origin).parent
    assert mode == "abi" and origin.endswith("site-packages/storyteller/libllama2_rvv.so")
    assert (package / "_llama2_rvv.py").exists() and not list(package.glob("_llama2_rvv*.so"))  # nothing compiled
    check_installed(bin_dir, tmp_path)
