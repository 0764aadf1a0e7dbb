"""Installs the `storyteller` package (daemon/storyteller) with its cffi binding.

    pip install .                      compiles libllama2_rvv into the extension (API mode)
    STORYTELLER_LIB=/path/libllama2_rvv.so pip install .
                                       no compiler: bundles that prebuilt (e.g. cross-built)
                                       library and opens it in ABI mode
    STORYTELLER_ABI=1 pip install .    no compiler: ABI mode with the system's library

daemon/storyteller/_ffi_build.py builds the binding (and knows the compiler flags). The C
header and the default settings, word list and model manifest are copied into the package.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

ROOT = Path(__file__).resolve().parent
PREBUILT = os.environ.get("STORYTELLER_LIB", "")

# Files copied into the installed package: (source in the tree, destination in the package).
PACKAGE_FILES = [
    ("libllama2_rvv/include/llama2_rvv.h", "llama2_rvv.h"),
    ("libllama2_rvv/targets.mk", "data/targets.mk"),  # storyteller --version checks the kernels
    ("etc/storyteller.toml", "data/storyteller.toml"),
    ("etc/blocklist.txt", "data/blocklist.txt"),
    ("etc/commands.txt", "data/commands.txt"),  # the robot's grammar: spoken commands and topics
    ("etc/topics.txt", "data/topics.txt"),
    ("models/manifest.toml", "data/manifest.toml"),
]
if PREBUILT:
    PACKAGE_FILES.append((PREBUILT, "libllama2_rvv.so"))


class BuildPy(build_py):
    """build_py that also copies PACKAGE_FILES into the built package."""

    def run(self) -> None:
        super().run()
        for src, dst in PACKAGE_FILES:
            target = Path(self.build_lib) / "storyteller" / dst
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / src, target)


class PlatformDistribution(Distribution):
    """A bundled .so makes the wheel platform-specific even without a compiled extension."""

    def has_ext_modules(self) -> bool:
        return bool(PREBUILT) or super().has_ext_modules()


setup(
    name="storyteller",
    version=re.search(r'#define L2_VERSION "([^"]+)"', (ROOT / PACKAGE_FILES[0][0]).read_text())[1],  # llama2_rvv.h
    description="llama2.c TinyStories models told aloud on tiny RISC-V boards",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    package_dir={"": "daemon"},
    packages=find_packages("daemon"),
    install_requires=["cffi>=1.15", "numpy>=1.24"],
    extras_require={
        "eval": ["matplotlib"],  # storyteller eval --report's plots
        # the robot: pyaudio needs portaudio19-dev, systemd-python libsystemd-dev and pkg-config
        "voice": ["pyaudio", "pocketsphinx", "vosk", "pyttsx3", "systemd-python", "gpiod"],
        "test": ["pytest>=7", "sentencepiece", "confusable-homoglyphs==3.3.1"],  # the last: scripts/make-confusables
    },
    cffi_modules=["daemon/storyteller/_ffi_build.py:ffi"],
    cmdclass={"build_py": BuildPy},
    distclass=PlatformDistribution,
    entry_points={"console_scripts": ["storyteller = storyteller.cli:main"]},
    zip_safe=False,
)
