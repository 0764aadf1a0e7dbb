"""A model or tokenizer file cut while l2run has it mapped: one line, exit 1."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from bad_input_support import (
    TIMEOUT,
    Files,
    Tools,
    check_failure,
)

# ----------------------------------------------------------------------------- a file cut while mapped


def _fill(fd: int) -> None:
    """Writes into the pipe fd until it holds not one byte more."""
    os.set_blocking(fd, False)
    for chunk in (b"x" * 65536, b"x"):
        try:
            while True:
                os.write(fd, chunk)
        except BlockingIOError:
            pass
    os.set_blocking(fd, True)


@pytest.mark.parametrize("which", ["model", "tokenizer"])
def test_a_file_cut_while_mapped_is_reported_in_one_line(tools: Tools, files: Files, which: str) -> None:
    # l2run writes its tokens into a full pipe, so it waits at its first one with the files
    # mapped; the file is cut, the pipe drained, and the next read of the file faults (SIGBUS:
    # status 135 and no word, before)
    model = files.write(f"{tools.build}-cut-model.bin", files.base["v0"])
    tok = files.dir / f"{tools.build}-cut-tok.bin"
    tok.write_bytes(files.tokenizer.read_bytes())
    victim = model if which == "model" else tok
    r, w = os.pipe()
    _fill(w)
    proc = subprocess.Popen([tools.bin_dir / "l2run", model, "-z", tok, "-n", "32", "-t", "0", "-i", "Once upon"],
                            stdout=w, stderr=subprocess.PIPE, env=tools.env)
    os.close(w)
    try:
        maps = Path(f"/proc/{proc.pid}/maps")
        while proc.poll() is None and str(victim) not in maps.read_text():
            time.sleep(0.005)  # waiting for the mapping, not timing anything
        os.truncate(victim, 0)
        with os.fdopen(r, "rb") as out:
            out.read()
        err = proc.stderr.read().decode(errors="replace")
        rc = proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    why = check_failure("l2run", subprocess.CompletedProcess(proc.args, rc, "", err),
                        r"^l2run: bus error \(SIGBUS\) reading a mapped file: .*renaming a new file over them")
    assert why is None, why
    assert err.count("\n") == 1, err
