"""Storyteller: llama2.c stories on tiny RISC-V boards, told aloud."""

from storyteller._native import header_path, version_from_header

__version__ = version_from_header(header_path().read_text())  # the C library's L2_VERSION
