"""Storyteller: llama2.c stories on tiny RISC-V boards, told aloud."""

__version__ = "0.1.0"
