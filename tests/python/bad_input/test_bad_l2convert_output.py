"""l2convert's output: never over its input, never through an existing OUT.tmp, synced before
and after the rename."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from bad_input_support import (
    TIMEOUT,
    Files,
    Tools,
    check_failure,
)

# ----------------------------------------------------------------------------- l2convert's output


def test_l2convert_refuses_to_overwrite_its_input(tools: Tools, files: Files) -> None:
    # the same file by its name, another spelling of it, a hard link, a symlink to it
    src = files.write(f"{tools.build}-self.bin", files.base["v0"])
    hard, soft = files.dir / f"{tools.build}-self-hard.bin", files.dir / f"{tools.build}-self-soft.bin"
    for p in (hard, soft):
        p.unlink(missing_ok=True)
    os.link(src, hard)
    soft.symlink_to(src)
    for out in (src, Path(str(src).replace("/self", "/./self")), hard, soft):
        proc = tools.run("l2convert", src, out, "--type", "q8")
        why = check_failure("l2convert", proc, r"is the model's own file")
        assert why is None, f"{out}: {why}"
        assert src.read_bytes() == files.base["v0"] and not Path(f"{out}.tmp").exists()


def test_l2convert_never_writes_through_an_existing_tmp(tools: Tools, files: Files) -> None:
    # OUT.tmp already there: a symlink (to a file or nowhere) or a regular file; each is left
    # as it was, the file a symlink points to is not written, and OUT is not created
    victim = files.write(f"{tools.build}-victim.bin", b"precious")
    for kind in ("symlink", "dangling", "file"):
        model = files.write(f"{tools.build}-tmpcase.bin", files.base["v0"])
        out = files.dir / f"{tools.build}-tmpcase-{kind}.out"
        tmp = Path(f"{out}.tmp")
        tmp.unlink(missing_ok=True)
        if kind == "symlink":
            tmp.symlink_to(victim)
        elif kind == "dangling":
            tmp.symlink_to(files.dir / "nowhere" / "x")
        else:
            tmp.write_bytes(b"someone else's")
        proc = tools.run("l2convert", model, out, "--type", "q8")
        why = check_failure("l2convert", proc, re.escape(str(tmp)) + r".*exists")
        assert why is None, f"{kind}: {why}"
        assert victim.read_bytes() == b"precious" and not out.exists()
        assert tmp.is_symlink() if kind != "file" else tmp.read_bytes() == b"someone else's"
        tmp.unlink()
        # with the stale file gone, the same conversion succeeds
        proc = tools.run("l2convert", model, out, "--type", "q8")
        assert proc.returncode == 0 and not tmp.exists(), proc.stderr


SYNC_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
static void note(const char *what) {
    const char *log = getenv("SYNC_LOG");
    FILE *f = log ? fopen(log, "a") : NULL;
    if (f) { fprintf(f, "%s\n", what); fclose(f); }
}
int fsync(int fd) {
    struct stat st;
    note(fstat(fd, &st) == 0 && S_ISDIR(st.st_mode) ? "fsync dir" : "fsync file");
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return real(fd);
}
int rename(const char *a, const char *b) {
    note("rename");
    int (*real)(const char *, const char *) = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    return real(a, b);
}
"""


def test_l2convert_syncs_the_file_before_the_rename_and_the_directory_after(tools: Tools, files: Files) -> None:
    shim_c, shim = files.dir / "syncshim.c", files.dir / "syncshim.so"
    if not shim.exists():
        shim_c.write_text(SYNC_SHIM)
        subprocess.run(["cc", "-shared", "-fPIC", "-o", shim, shim_c, "-ldl"], check=True)
    log = files.dir / f"{tools.build}-sync.log"
    log.unlink(missing_ok=True)
    model = files.write(f"{tools.build}-synccase.bin", files.base["v0"])
    env = dict(tools.env, LD_PRELOAD=str(shim), SYNC_LOG=str(log))
    proc = subprocess.run([tools.bin_dir / "l2convert", model, files.dir / f"{tools.build}-sync.out", "--type",
                           "q8"], capture_output=True, text=True, env=env, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert log.read_text().split("\n")[:3] == ["fsync file", "rename", "fsync dir"], log.read_text()
