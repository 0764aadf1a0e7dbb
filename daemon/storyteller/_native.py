"""Loads the libllama2_rvv C library: the one place that does.

The C header is the single source of truth for the API: the cdef is the part of
llama2_rvv.h between its CDEF markers (setup.py builds the binding from it, and a test
checks that the built binding and the header agree).

Where the library comes from, first match wins:

1. ``$STORYTELLER_LIB`` names a ``libllama2_rvv.so``: opened in cffi's ABI mode (e.g. a
   sanitizer build, or a cross-compiled library on a board).
2. The extension ``storyteller._llama2_rvv`` built by setup.py. Normally it is the compiled
   API-mode module (``lib`` holds the functions). Installed in ABI mode
   (``STORYTELLER_ABI=1`` or ``STORYTELLER_LIB=...`` at install time) it is cffi's
   out-of-line ABI module, and the library it opens is the ``libllama2_rvv.so`` copied next
   to the package at install time, else the system's (``ld.so`` search path).
3. Running from the source tree (``daemon/`` on ``sys.path``): ``build/host/lib/
   libllama2_rvv.so`` made by ``make``.
"""

from __future__ import annotations

import ctypes.util
import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from storyteller.errors import LibraryNotFoundError

_PACKAGE_DIR = Path(__file__).resolve().parent
_SOURCE_ROOT = _PACKAGE_DIR.parents[1]  # the repository, when running from the source tree
_HEADER_CANDIDATES = (
    _PACKAGE_DIR / "llama2_rvv.h",  # installed copy
    _SOURCE_ROOT / "libllama2_rvv" / "include" / "llama2_rvv.h",  # source tree
)
BUNDLED_LIB = _PACKAGE_DIR / "libllama2_rvv.so"  # copied here by an ABI-mode install
SOURCE_TREE_LIB = _SOURCE_ROOT / "build" / "host" / "lib" / "libllama2_rvv.so"


def header_path() -> Path:
    for path in _HEADER_CANDIDATES:
        if path.is_file():
            return path
    raise FileNotFoundError("llama2_rvv.h not found next to the package or in the source tree")


def version_from_header(text: str) -> str:
    """The library's version, L2_VERSION in llama2_rvv.h: the package's and setup.py's too."""
    match = re.search(r'#define L2_VERSION "([^"]+)"', text)
    if match is None:
        raise ValueError("llama2_rvv.h does not define L2_VERSION")
    return match.group(1)


def cdef_from_header(text: str) -> str:
    """The declarations between the CDEF markers, with comments removed."""
    match = re.search(r"/\* CDEF-BEGIN \*/(.*?)/\* CDEF-END \*/", text, re.S)
    if match is None:
        raise ValueError("llama2_rvv.h has no CDEF-BEGIN/CDEF-END markers")
    body = re.sub(r"/\*.*?\*/", "", match.group(1), flags=re.S)
    return "\n".join(line.rstrip() for line in body.splitlines() if line.strip())


@dataclass(frozen=True)
class Binding:
    """The loaded library: cffi's `ffi` and `lib`, how it was loaded and from where."""

    ffi: Any
    lib: Any
    mode: str  # "api" (compiled extension) or "abi" (a .so opened at run time)
    origin: str  # the extension module's or the .so's path


@cache
def load_abi(lib_path: str) -> tuple[Any, Any]:
    """Opens a prebuilt libllama2_rvv.so in cffi's ABI mode (cdef parsed from the header)."""
    from cffi import FFI

    ffi = FFI()
    ffi.cdef(cdef_from_header(header_path().read_text()))
    return ffi, ffi.dlopen(lib_path)


def _not_found(detail: str) -> LibraryNotFoundError:
    return LibraryNotFoundError(
        f"cannot load libllama2_rvv ({detail}): install the package with `pip install .`, or build "
        "it with `make` and set STORYTELLER_LIB=build/host/lib/libllama2_rvv.so")


@cache
def binding() -> Binding:
    """The library, found as the module docstring says (loaded once per process)."""
    env = os.environ.get("STORYTELLER_LIB")
    if env:
        try:
            ffi, lib = load_abi(env)
        except OSError as e:
            raise _not_found(f"STORYTELLER_LIB={env}: {e}") from None
        return Binding(ffi, lib, "abi", env)
    try:
        from storyteller import _llama2_rvv  # type: ignore[attr-defined]  # built by setup.py
    except ImportError:
        _llama2_rvv = None
    if _llama2_rvv is not None:
        if hasattr(_llama2_rvv, "lib"):
            return Binding(_llama2_rvv.ffi, _llama2_rvv.lib, "api", str(_llama2_rvv.__file__))
        path = str(BUNDLED_LIB) if BUNDLED_LIB.is_file() else ctypes.util.find_library("llama2_rvv")
        if not path:
            raise _not_found(f"installed in ABI mode, but there is no {BUNDLED_LIB} and no "
                             "libllama2_rvv.so on the library path")
        try:
            return Binding(_llama2_rvv.ffi, _llama2_rvv.ffi.dlopen(path), "abi", path)
        except OSError as e:
            raise _not_found(f"{path}: {e}") from None
    if SOURCE_TREE_LIB.is_file():
        ffi, lib = load_abi(str(SOURCE_TREE_LIB))
        return Binding(ffi, lib, "abi", str(SOURCE_TREE_LIB))
    raise _not_found("no compiled extension and no STORYTELLER_LIB")


def load() -> tuple[Any, Any]:
    """(ffi, lib) of the library (see binding())."""
    b = binding()
    return b.ffi, b.lib
