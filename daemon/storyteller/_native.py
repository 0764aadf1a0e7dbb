"""Loads the libllama2_rvv C library: the compiled cffi module, or a prebuilt .so (ABI mode).

The C header is the single source of truth for the API: the cdef is the part of
llama2_rvv.h between its CDEF markers.
"""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path
from typing import Any

from cffi import FFI

_PACKAGE_DIR = Path(__file__).resolve().parent
_HEADER_CANDIDATES = (
    _PACKAGE_DIR / "llama2_rvv.h",  # installed copy
    _PACKAGE_DIR.parents[1] / "libllama2_rvv" / "include" / "llama2_rvv.h",  # source tree
)


def header_path() -> Path:
    for path in _HEADER_CANDIDATES:
        if path.is_file():
            return path
    raise FileNotFoundError("llama2_rvv.h not found next to the package or in the source tree")


def cdef_from_header(text: str) -> str:
    """The declarations between the CDEF markers, with comments removed."""
    match = re.search(r"/\* CDEF-BEGIN \*/(.*?)/\* CDEF-END \*/", text, re.S)
    if match is None:
        raise ValueError("llama2_rvv.h has no CDEF-BEGIN/CDEF-END markers")
    body = re.sub(r"/\*.*?\*/", "", match.group(1), flags=re.S)
    return "\n".join(line.rstrip() for line in body.splitlines() if line.strip())


@cache
def load_abi(lib_path: str) -> tuple[FFI, Any]:
    """Opens a prebuilt libllama2_rvv.so in cffi's ABI mode."""
    ffi = FFI()
    ffi.cdef(cdef_from_header(header_path().read_text()))
    return ffi, ffi.dlopen(lib_path)


def load() -> tuple[FFI, Any]:
    """The library: $STORYTELLER_LIB (a .so path) if set, else the compiled extension."""
    lib_path = os.environ.get("STORYTELLER_LIB")
    if lib_path:
        return load_abi(lib_path)
    from storyteller import _llama2_rvv  # type: ignore[attr-defined]  # built by setup.py

    return _llama2_rvv.ffi, _llama2_rvv.lib
