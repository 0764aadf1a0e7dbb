"""A mapped model file that changes under the process: one line and exit 1, not a silent death.

libllama2_rvv maps model and tokenizer files and reads them in place. When such a file is
truncated or overwritten in place while it is mapped (`cp` over it, a download writing into
it), reading a page that is no longer in the file raises SIGBUS, which kills a process
without a word (status 135 in a shell). install_sigbus_handler() replaces that with one line
on stderr saying what happened and what to do (replace model files by renaming a new file
over them: a process holding the old one keeps reading it), and exit status 1. The
`storyteller` command installs it first thing.

How: a Python signal handler cannot do this. Python only notes the signal and runs its
handler later, between bytecodes, while the faulting read in C would be retried, and fault,
forever. The handler here is a C function pointer made by ctypes that calls into Python at
once: it writes the prepared line with os.write() and leaves with os._exit(). That is not
async-signal-safe in general; it is sound here because the fault comes from a weight or
piece read inside the library (not from the allocator or a lock), and the process ends
there without running anything else.
"""

from __future__ import annotations

import ctypes
import os
import signal
from typing import Any

MESSAGE = ("storyteller: bus error (SIGBUS) reading a mapped file: a model or tokenizer file was "
           "truncated or overwritten while in use; replace model files by renaming a new file over "
           "them (mv), then start again")

_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_int)
_installed: list[Any] = []  # the ctypes callback: it must outlive the handler


def install_sigbus_handler(message: str = MESSAGE, status: int = 1) -> bool:
    """On SIGBUS, writes `message` (one line) to stderr and exits with `status`, in whatever
    thread faulted. Returns False where it cannot be installed (no C library signal())."""
    line = (message.rstrip("\n") + "\n").encode("utf-8", "replace")

    def on_sigbus(signum: int) -> None:
        try:
            os.write(2, line)
        finally:
            os._exit(status)

    handler = _HANDLER(on_sigbus)
    try:
        libc = ctypes.CDLL(None)
        set_handler = libc.signal
    except (OSError, AttributeError):
        return False
    set_handler.restype = ctypes.c_void_p
    set_handler.argtypes = (ctypes.c_int, _HANDLER)
    if set_handler(signal.SIGBUS, handler) == ctypes.c_void_p(-1).value:  # SIG_ERR
        return False
    _installed[:] = [handler]
    return True
