"""Model files: the manifest, downloads, conversion to the packed format, discovery.

models/manifest.toml names the published llama2.c models and tokenizers with their URLs
and sha256. `fetch` downloads a model and its tokenizer into the models folder (or copies
them from a mirror or a local file) and converts the model to the packed format
(`<name>.<type>.l2`).

What fetch promises: nothing is put in place under a file's name unless it is whole and
valid. A download goes to "FILE.part" (resumed with an HTTP Range request whose answer must
start where the .part ends) and must be the size the server stated; then the file must be
what it claims to be: a model that libllama2_rvv opens (which checks its size against its
header's dimensions; to the byte when the server stated no size), or a tokenizer whose
pieces run to its last byte, as many as the manifest says; and its sha256 must be the
manifest's, when the manifest has one. Only then is it renamed to FILE. A download cut
short stays FILE.part (the same command resumes it); a file that fails a check is moved to
FILE.bad. A sha256 the manifest lacks is recorded only from
a file that passed every check and came from the manifest's own URL: never from a file that
was already there, nor from a mirror. An archive (a zipped Vosk model folder) is
downloaded the same way, then unpacked into place only whole and safe (archive.py).
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import sys
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

from storyteller import __version__
from storyteller.config import data_file
from storyteller.engine import Model, TensorReport, Tokenizer
from storyteller.errors import (
    ConfigError,
    DownloadError,
    ModelNotFoundError,
    NoNetworkError,
    StorytellerError,
)

PACKED_SUFFIX = ".l2"
# which packed file of a model is picked first: the fast q8 mode (libllama2_rvv/FORMAT.md,
# "Modes"), when it was made, before the plain one
TYPE_PREFERENCE = ("fast", "q8", "balanced", "faithful", "f16", "f32")
MODES = ("fast", "balanced", "faithful")  # convert()'s types that are l2convert modes
CHUNK = 1 << 16


@dataclass(frozen=True)
class Remote:
    """A downloadable file of the manifest."""

    name: str
    url: str
    file: str
    sha256: str = ""  # "" until the first whole and valid download records it
    tokenizer: str = ""  # models: the name of their tokenizer
    pieces: int = 0  # tokenizers: how many pieces the file holds (its models' vocab_size)
    about: str = ""
    kind: str = "model"  # "model", "tokenizer" or "archive": the manifest table it is in (not a key)

    @property
    def download_name(self) -> str:
        """The name of the file downloaded: an archive's is its folder's name + ".zip"."""
        return self.file + ".zip" if self.kind == "archive" else self.file


@dataclass(frozen=True)
class Manifest:
    models: dict[str, Remote]
    tokenizers: dict[str, Remote]
    path: Path  # where it was read from (and is written back to)
    header: str = ""  # the comment lines at the top, kept when rewriting
    archives: dict[str, Remote] = field(default_factory=dict)  # zipped model folders (Vosk's)

    def get(self, name: str) -> Remote:
        found = self.models.get(name) or self.tokenizers.get(name) or self.archives.get(name)
        if found is None:
            known = ", ".join([*self.models, *self.tokenizers, *self.archives])
            raise ModelNotFoundError(f"no model or tokenizer named {name!r} in {self.path} (known: {known})")
        return found

    def tokenizer_of(self, model: Remote) -> Remote | None:
        return self.tokenizers.get(model.tokenizer)


def manifest_path(models_dir: Path) -> Path:
    """models_dir/manifest.toml if there is one, else the package's default."""
    local = models_dir / "manifest.toml"
    return local if local.is_file() else data_file("manifest.toml")


def load_manifest(models_dir: Path) -> Manifest:
    path = manifest_path(models_dir)
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read the model manifest {path}: {e}") from None
    lines = text.splitlines()
    top = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    header = "".join(line + "\n" for line in lines[:top])

    def table(kind: str) -> dict[str, Remote]:
        out = {}
        for name, t in data.get(kind, {}).items():
            try:
                out[name] = Remote(name=name, kind=kind.removesuffix("s"), **t)
            except TypeError as e:
                raise ConfigError(f"bad entry [{kind}.{name}] in {path}: {e}") from None
        return out

    return Manifest(table("models"), table("tokenizers"), path, header, table("archives"))


def _toml_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def save_manifest(manifest: Manifest, path: Path) -> None:
    """Writes the manifest (atomically) to path."""
    lines = [manifest.header.rstrip("\n"), ""] if manifest.header else []
    for kind, entries in (("models", manifest.models), ("tokenizers", manifest.tokenizers),
                          ("archives", manifest.archives)):
        for r in entries.values():
            lines.append(f"[{kind}.{r.name}]")
            for key in ("url", "file", "tokenizer", "pieces", "sha256", "about"):
                value = getattr(r, key)
                if isinstance(value, int):
                    if value:
                        lines.append(f"{key} = {value}")
                elif value or key == "sha256":
                    lines.append(f"{key} = {_toml_string(value)}")
            lines.append("")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    tmp.replace(path)


def record_sha256(models_dir: Path, name: str, sha256: str) -> None:
    """Stores a file's sha256 in models_dir/manifest.toml (created from the default)."""
    m = load_manifest(models_dir)
    table = next(t for t in (m.models, m.tokenizers, m.archives) if name in t)
    table[name] = replace(table[name], sha256=sha256)
    models_dir.mkdir(parents=True, exist_ok=True)
    save_manifest(m, models_dir / "manifest.toml")


# ----------------------------------------------------------------------------- checking files

LLAMA2C_MAGIC = 0x616B3432  # "ak42": llama2.c v1 and v2 (../shared/docs/llama2c-compat.md)
PACKED_MAGIC = 0x5652324C  # "L2RV": the packed format (libllama2_rvv/FORMAT.md)
HEADER_BYTES = 256  # a model file's first bytes that give its size (llama2.c v1/v2 header)
# The C loader's bounds on a header's dimensions (libllama2_rvv/src/loader.c): past them the
# bytes are no model's header, and the size they would give means nothing.
DIM_LIMITS = (1 << 16, 1 << 18, 1 << 10, 1 << 16, 1 << 16, 1 << 21, 1 << 20)  # dim .. seq_len
MAX_PIECE = 1 << 16  # bytes in one tokenizer piece (the C reader's bound)


def model_file_bytes(header: bytes) -> int | None:
    """The exact size of the model file whose first bytes (HEADER_BYTES, or the whole file
    when shorter) are `header`: for the llama2.c formats the size its dimensions give (v0
    with both RoPE tables whole), for the packed format the size its header states. None when
    these bytes are not a model's header."""
    if len(header) < 28:
        return None
    magic = int.from_bytes(header[:4], "little")
    if magic == PACKED_MAGIC:
        return int.from_bytes(header[64:72], "little") if len(header) >= 72 else None
    version, group, start = 0, 0, 28
    if magic == LLAMA2C_MAGIC:
        if len(header) < HEADER_BYTES:
            return None
        version, *dims = struct.unpack_from("<8i", header, 4)
        shared = header[36]
        if version not in (1, 2) or shared > 1:
            return None
        if version == 2 and (group := struct.unpack_from("<i", header, 37)[0]) <= 0:
            return None
        start = HEADER_BYTES
    else:  # v0: no magic; a negative vocab_size means a separate classifier
        dims = list(struct.unpack_from("<7i", header))
        shared = dims[5] > 0
        dims[5] = abs(dims[5])
    if any(not 0 < v <= limit for v, limit in zip(dims, DIM_LIMITS, strict=True)):
        return None
    dim, hidden, layers, heads, kv_heads, vocab, seq = dims
    if dim % heads or heads % kv_heads:
        return None
    head_size = dim // heads
    kv_dim = kv_heads * head_size
    matrices = [vocab * dim] + layers * [dim * dim, kv_dim * dim, kv_dim * dim, dim * dim, hidden * dim,
                                         dim * hidden, hidden * dim]
    if not shared:
        matrices.append(vocab * dim)
    norms = 4 * (2 * layers * dim + dim)  # rms_att, rms_ffn, rms_final: f32
    if version == 2:  # int8 values, then one f32 scale per group, tensor by tensor
        if any(n % group for n in matrices):
            return None
        return start + norms + sum(n + 4 * (n // group) for n in matrices)
    rope = 4 * seq * head_size if version == 0 else 0  # v0's two unused RoPE tables
    return start + norms + 4 * sum(matrices) + rope


@dataclass(frozen=True)
class Pieces:
    """What walking a tokenizer.bin found (int32 max_token_length, then per piece: f32 score,
    int32 length, the bytes)."""

    count: int  # whole pieces from the start
    problem: str = ""  # "" when they end exactly at the file's last byte
    cut: bool = False  # the problem is that the file ends inside a piece


def tokenizer_pieces(data: bytes) -> Pieces:
    """Walks the pieces of a tokenizer file's bytes, as far as they are well formed."""
    if len(data) < 4:
        return Pieces(0, f"it is {len(data)} bytes, shorter than a tokenizer's header", cut=True)
    pos, count = 4, 0
    while pos < len(data):
        if len(data) - pos < 8:
            return Pieces(count, f"it ends inside piece {count} ({len(data):,} bytes)", cut=True)
        length = int.from_bytes(data[pos + 4:pos + 8], "little", signed=True)
        if not 0 <= length <= MAX_PIECE:
            return Pieces(count, f"piece {count} at byte {pos:,} has an impossible length ({length})")
        if len(data) - pos - 8 < length:
            return Pieces(count, f"it ends inside piece {count} ({len(data):,} bytes)", cut=True)
        pos += 8 + length
        count += 1
    return Pieces(count)


@dataclass(frozen=True)
class Check:
    """The verdict on a model or tokenizer file."""

    problem: str = ""  # "" when the file is whole and valid
    short: bool = False  # the problem is only that it stops early (the start of the right file)


def _library_message(e: StorytellerError, path: Path) -> str:
    return str(e).replace(f"{path}: ", "").replace(str(path), path.name)


def check_model(path: Path, exact: bool = True) -> Check:
    """Is `path` a whole model? libllama2_rvv must open it (which checks its header and that
    its size is the one its dimensions give, tolerating llama2.c v0 files a few bytes short
    in their unused RoPE tables, as published files can be). exact: no tolerance, the size
    must be model_file_bytes() to the byte (for a download whose size the server did not
    state, where a file cut short must not pass)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        expected = model_file_bytes(f.read(HEADER_BYTES))
    if exact and expected is not None and size < expected:
        return Check(f"it is {size:,} bytes but its header describes a model of {expected:,}", short=True)
    try:
        Model.open(path).close()
    except StorytellerError as e:
        return Check(_library_message(e, path))
    if exact and expected is not None and size != expected:
        return Check(f"it is {size:,} bytes but its header describes a model of {expected:,}")
    return Check()


def check_tokenizer(path: Path, pieces: int = 0, exact: bool = True) -> Check:
    """Is `path` a whole tokenizer.bin? Its pieces must be well formed and end exactly at its
    last byte, there must be `pieces` of them (0: any number, at least 3), and
    libllama2_rvv must open it with them all. exact: a file that ends inside a piece, or
    with fewer pieces than `pieces`, is reported `short` (a download cut early)."""
    found = tokenizer_pieces(path.read_bytes())
    if found.problem:
        return Check(found.problem, short=exact and found.cut)
    if found.count < max(pieces, 3):
        want = f"the {pieces} its models need" if pieces else "at least 3"
        return Check(f"it holds {found.count} pieces, not {want}", short=exact and found.count > 0)
    if pieces and found.count != pieces:
        return Check(f"it holds {found.count} pieces, not the {pieces} its models need")
    try:
        Tokenizer.open(path, found.count).close()
    except StorytellerError as e:
        return Check(_library_message(e, path))
    return Check()


def check_file(remote: Remote, path: Path, exact: bool = True) -> Check:
    """check_model or check_tokenizer, for what the manifest says `remote` is."""
    if remote.kind == "tokenizer":
        return check_tokenizer(path, remote.pieces, exact)
    return check_model(path, exact)


def _looks_like_a_web_page(path: Path, content_type: str) -> bool:
    with open(path, "rb") as f:
        start = f.read(512).lstrip().lower()
    return content_type.lower().startswith(("text/html", "application/xhtml")) or start.startswith(
        (b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body"))


# ----------------------------------------------------------------------------- download


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


class Progress:
    """A progress bar on a terminal (stderr); a start and an end line elsewhere."""

    def __init__(self, name: str, stream: IO[str] | None = None) -> None:
        self.name = name
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.start = self.last = time.monotonic()
        self.first = -1

    def update(self, done: int, total: int | None, final: bool = False) -> None:
        now = time.monotonic()
        if self.first < 0:
            self.first = done
            if not self.tty:
                self.stream.write(f"downloading {self.name} ({_mb(total) if total else 'size unknown'})\n")
        if not self.tty:
            if final:
                self.stream.write(f"downloaded {self.name}: {_mb(done)}\n")
            return
        if not final and now - self.last < 0.1:
            return
        self.last = now
        rate = (done - self.first) / max(now - self.start, 1e-6)
        if total:
            frac = min(done / total, 1.0)
            bar = "#" * int(30 * frac)
            line = f"\r{self.name} [{bar:<30}] {100 * frac:5.1f}% {_mb(done)}/{_mb(total)} {_mb(rate)}/s"
        else:
            line = f"\r{self.name} {_mb(done)} {_mb(rate)}/s"
        self.stream.write(line + ("\n" if final else ""))
        self.stream.flush()


def _mb(n: float | None) -> str:
    return f"{(n or 0) / 1e6:.1f} MB"


@dataclass(frozen=True)
class Download:
    """What download() left in its ".part" file: everything the server had to send."""

    part: Path
    size: int
    declared: int | None  # the file's size as the server stated it; None: it did not say
    content_type: str = ""


class _Restart(Exception):
    """The server's answer does not continue the .part file: start again from byte 0."""


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)")


def _size_header(value: str | None) -> int | None:
    value = (value or "").strip()
    return int(value) if value.isdigit() else None


def download(url: str, part: Path, progress: Progress | None = None, timeout: float = 30.0) -> Download:
    """Downloads url into `part`, continuing it when it holds the start of the file.

    A resumed download asks for the rest (HTTP Range) and appends only an answer whose
    Content-Range starts where `part` ends; an answer that starts at byte 0 (or ignores the
    range) is written from the start instead; anything else, or a Range the server refuses
    with another size than `part`'s, restarts the download once from byte 0. The bytes
    received must be the size the server stated (Content-Length, Content-Range); `part` is
    kept when fewer arrived (the same call resumes it). The caller checks the file before
    using it: its size is unknown when `declared` is None.

    Raises DownloadError (saying what happened and whether running again resumes), and
    NoNetworkError when the host cannot be reached."""
    try:
        return _download(url, part, progress, timeout)
    except _Restart:
        part.unlink(missing_ok=True)
        try:
            return _download(url, part, progress, timeout)
        except _Restart as e:
            part.unlink(missing_ok=True)
            raise DownloadError(f"cannot download {_file_name(part)} from {url}: {e}") from None


def _file_name(part: Path) -> str:
    return part.name.removesuffix(".part")


def _download(url: str, part: Path, progress: Progress | None, timeout: float) -> Download:
    import http.client  # here: the other commands start faster without the HTTP stack
    import urllib.error
    import urllib.request

    name = _file_name(part)
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"storyteller/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing left to send, if the file is the .part's size
            m = _UNSATISFIED_RANGE.fullmatch((e.headers.get("Content-Range") or "").strip())
            total = int(m.group(1)) if m else None
            if total is not None and total != offset:
                raise _Restart(f"the server's file is {total:,} bytes, the partial download {offset:,}") from None
            return Download(part, offset, total)
        raise DownloadError(f"cannot download {name}: HTTP {e.code} {e.reason} from {url}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        if url.startswith("file:"):
            raise DownloadError(f"cannot read {name} from {url}: {reason}") from None
        raise NoNetworkError(f"cannot download {name}: no network ({reason})") from None
    with resp:
        status = getattr(resp, "status", None) or 200  # file: URLs have none
        length = _size_header(resp.headers.get("Content-Length"))
        content_type = resp.headers.get("Content-Type") or ""
        if status == 206:
            rng = _CONTENT_RANGE.fullmatch((resp.headers.get("Content-Range") or "").strip())
            if rng is None:
                raise _Restart(f"a partial answer (HTTP 206) to a request for bytes {offset:,}- came "
                               f"without a valid Content-Range ({resp.headers.get('Content-Range')!r})")
            start, end = int(rng.group(1)), int(rng.group(2))
            total = None if rng.group(3) == "*" else int(rng.group(3))
            if start not in (0, offset) or end < start or (total is not None and end >= total) \
                    or (length is not None and length != end - start + 1):
                raise _Restart(f"a request for bytes {offset:,}- was answered with bytes {rng.group(0)[6:]}"
                               + (f" and Content-Length {length}" if length is not None else ""))
            offset, declared = start, total
            expected_end: int | None = end + 1
        elif status == 200:  # the whole file: a server that ignores Range starts again too
            offset, declared = 0, length
            expected_end = length
        else:
            raise DownloadError(f"cannot download {name}: unexpected HTTP {status} from {url}")
        done = offset
        try:
            with open(part, "ab" if offset else "wb") as f:
                while block := resp.read(CHUNK):
                    f.write(block)
                    done += len(block)
                    if progress:
                        progress.update(done, declared)
        except (OSError, http.client.HTTPException) as e:  # timeouts, resets, IncompleteRead
            raise DownloadError(f"the download of {name} stopped at {_mb(done)} ({e}); run the same "
                                "command again to resume") from None
    if progress:
        progress.update(done, declared, final=True)
    if expected_end is not None and done < expected_end:
        raise DownloadError(f"the download of {name} stopped at {done:,} of {expected_end:,} bytes; run the "
                            "same command again to resume")
    if expected_end is not None and done > expected_end:
        part.unlink()
        raise DownloadError(f"the server sent {done:,} bytes of {name} where it said {expected_end:,}: the "
                            "download was removed; run the same command again to start afresh")
    return Download(part, done, declared, content_type)


def _set_aside(path: Path) -> Path:
    bad = path.with_name(_file_name(path) + ".bad")
    path.replace(bad)
    return bad


def fetch_file(models_dir: Path, remote: Remote, progress: Progress | None = None,
               url: str | None = None) -> Path:
    """Makes models_dir/remote.file present, whole and valid, and returns its path.

    A file already there is checked (its sha256 when the manifest has one, else check_file)
    but its sha256 is never recorded. Otherwise it is downloaded from `url` (default: the
    manifest's) into "FILE.part", resumably (download()), and checked there: the size the
    server stated; check_file(), exact to the byte when the server stated no size; the
    manifest's sha256 when it has one. Only a file that passes is renamed to FILE. A
    download that stopped early stays FILE.part (the same call resumes it); a file that
    fails a check is moved to FILE.bad. A sha256 the manifest lacks is recorded (in
    models_dir/manifest.toml) from a file that passed, downloaded from the manifest's URL.

    Raises DownloadError (NoNetworkError when the host cannot be reached), with one line
    saying what was wrong and what was kept."""
    dest = models_dir / remote.file
    if dest.exists():
        _check_present(models_dir, dest, remote)
        return dest
    models_dir.mkdir(parents=True, exist_ok=True)
    url = url or remote.url
    got = download(url, dest.with_name(dest.name + ".part"), progress)
    where = f"{remote.file} from {url}"
    verdict = check_file(remote, got.part, exact=got.declared is None)
    if verdict.short:
        raise DownloadError(f"the download of {where} ended early: {verdict.problem} (the server did not say "
                            "the size); nothing was installed; run the same command again to resume")
    if verdict.problem:
        page = _looks_like_a_web_page(got.part, got.content_type)
        bad = _set_aside(got.part)
        raise DownloadError(f"{where} is not a valid {remote.kind}: {verdict.problem}"
                            + ("; it is a web page (a login or error page?), not the file: check the URL"
                               if page else "")
                            + f"; nothing was installed (kept as {bad.name})")
    digest = sha256_of(got.part)
    if remote.sha256 and digest != remote.sha256:
        bad = _set_aside(got.part)
        raise DownloadError(_sha_mismatch(where, digest, remote, models_dir, bad))
    got.part.replace(dest)
    if not remote.sha256 and url == remote.url:
        record_sha256(models_dir, remote.name, digest)
    return dest


def _check_present(models_dir: Path, dest: Path, remote: Remote) -> None:
    """A file already in place: the manifest's sha256 when it has one, else check_file (with
    the tolerance of the library, as nothing says what size it should be)."""
    if remote.sha256:
        digest = sha256_of(dest)
        if digest != remote.sha256:
            raise DownloadError(_sha_mismatch(str(dest), digest, remote, models_dir, _set_aside(dest)))
        return
    verdict = check_file(remote, dest, exact=False)
    if verdict.problem:
        page = _looks_like_a_web_page(dest, "")
        bad = _set_aside(dest)
        raise DownloadError(f"{dest} is not a valid {remote.kind}: {verdict.problem}"
                            + ("; it is a web page, not the file" if page else "")
                            + f": moved to {bad.name}; run the command again to download it afresh")


def _sha_mismatch(where: str, digest: str, remote: Remote, models_dir: Path, bad: Path) -> str:
    return (f"{where} has sha256 {digest}, not {remote.sha256} as {manifest_path(models_dir)} says: "
            f"moved to {bad.name}; run the command again to download it afresh (if the manifest's sha256 "
            "was recorded from a bad download by an older storyteller, delete it there)")


def fetch_archive(models_dir: Path, remote: Remote, progress: Progress | None = None,
                  url: str | None = None) -> Path:
    """Makes models_dir/remote.file a Vosk model folder, unpacked from the zip at `url`
    (default: the manifest's), and returns it.

    The zip is downloaded like a file (fetch_file: "FOLDER.zip.part", resumed, the size the
    server stated, the manifest's sha256 when it has one), then unpacked by archive.unpack
    (checked member by member, into a temporary folder renamed into place only when it holds
    a Vosk model). A zip that fails is moved to FOLDER.zip.bad and nothing is installed; a
    zip whose end is missing when the server stated no size stays .part, to be resumed. The
    zip is deleted once unpacked; its sha256 is recorded as fetch_file records a file's. A
    folder already there must hold a Vosk model."""
    import zipfile  # here: for this command only

    from storyteller import archive

    dest = models_dir / remote.file
    if dest.exists():
        problem = archive.vosk_model_problem(dest) if dest.is_dir() else "it is not a folder"
        if problem:
            raise DownloadError(f"{dest} is in the way: {problem}; move it away and run the command again")
        return dest
    models_dir.mkdir(parents=True, exist_ok=True)
    url = url or remote.url
    got = download(url, models_dir / (remote.download_name + ".part"), progress)
    where = f"{remote.download_name} from {url}"
    page = _looks_like_a_web_page(got.part, got.content_type)
    if got.declared is None and not page and not zipfile.is_zipfile(got.part):
        raise DownloadError(f"the download of {where} ended early: {got.size:,} bytes without a zip's end (the "
                            "server did not say the size); nothing was installed; run the same command again "
                            "to resume")
    digest = sha256_of(got.part)
    if remote.sha256 and digest != remote.sha256:
        raise DownloadError(_sha_mismatch(where, digest, remote, models_dir, _set_aside(got.part)))
    try:
        archive.unpack(got.part, dest)
    except OSError as e:  # this machine's fault (a full disk), not the zip's: it stays for another try
        raise DownloadError(f"cannot unpack {where} into {models_dir}: {e.strerror or e}; nothing was "
                            f"installed; run the same command again (the zip is kept as {got.part.name})") from None
    except archive.ArchiveError as e:
        bad = _set_aside(got.part)
        raise DownloadError(f"{where} was not installed: {e}"
                            + ("; it is a web page (a login or error page?), not the zip: check the URL"
                               if page else "")
                            + f" (kept as {bad.name})") from None
    got.part.unlink()
    if not remote.sha256 and url == remote.url:
        record_sha256(models_dir, remote.name, digest)
    return dest


def packed_name(model_file: str, type: str) -> str:
    """stories15M.bin -> stories15M.q8.l2"""
    return f"{Path(model_file).stem}.{type}{PACKED_SUFFIX}"


def convert(src: Path, dst: Path, type: str = "q8", group_size: int = 0, *, mode: str | None = None,
            method: str | None = None, calib: Sequence[int] | None = None) -> list[TensorReport]:
    """Converts any model file the library opens to the packed format (Model.convert's
    arguments: a type, or a named mode; the q8 method and calibration tokens). A `type` of
    MODES is that mode."""
    if type in MODES and mode is None:
        mode = type
    with Model.open(src) as m:
        return m.convert(dst, type, group_size, mode=mode, method=method, calib=calib)


def fetch(name: str, models_dir: Path, type: str = "q8",
          progress: Callable[[str], Progress] | None = Progress, source: str | None = None) -> Path:
    """Gets a model and its tokenizer (fetch_file() each), then converts the model to `type`;
    returns the packed file (or the tokenizer, when `name` is one).

    source: where to get the files instead of the manifest's URLs (source_url()). They are
    checked like downloads, against the manifest's sha256 when it has one, but a sha256 is
    never recorded from them: a mirror's file is not the original's word."""
    manifest = load_manifest(models_dir)
    remote = manifest.get(name)
    if name in manifest.archives:
        url = source_url(source, remote, named=True) if source else None
        try:
            return fetch_archive(models_dir, remote, progress(remote.download_name) if progress else None, url)
        except NoNetworkError as e:
            raise NoNetworkError(f"{e}. Download {remote.url} elsewhere, then run `storyteller models fetch "
                                 f"{name} --from FILE.zip`") from None
    needed = [remote]
    tok = manifest.tokenizer_of(remote) if name in manifest.models else None
    if tok is not None:
        needed.append(tok)
    for r in needed:
        url = source_url(source, r, named=r is remote) if source else None
        if r is tok and not r.pieces:  # a manifest without the count: the model's vocabulary
            with Model.open(models_dir / remote.file) as m:
                r = replace(r, pieces=m.vocab_size)
        try:
            fetch_file(models_dir, r, progress(r.file) if progress else None, url)
        except NoNetworkError as e:
            raise NoNetworkError(_offline_help(str(e), models_dir, remote, tok, type)) from None
    if tok is None:
        return models_dir / remote.file
    out = models_dir / packed_name(remote.file, type)
    if not out.exists():
        convert(models_dir / remote.file, out, type)
    return out


def source_url(source: str, remote: Remote, named: bool) -> str | None:
    """The URL of remote's file at `source`: a folder (a local one, or a URL ending in "/")
    holds every file under its manifest name; a URL or a local file is the file of the
    entry fetched by name (`named`) only, its tokenizer then comes from the manifest (None)."""
    if "://" in source:
        if source.endswith("/"):
            return source + remote.download_name
        return source if named else None
    path = Path(source).expanduser()
    if path.is_dir():
        return (path / remote.download_name).resolve().as_uri()
    if not named:
        return None
    if not path.is_file():
        raise DownloadError(f"{source}: no such file or folder")
    return path.resolve().as_uri()


def _offline_help(error: str, models_dir: Path, model: Remote, tok: Remote | None, type: str) -> str:
    files = [model] + ([tok] if tok else [])
    where = " and ".join(f"{r.file} (from {r.url})" for r in files)
    mirror = f" (or copy them in with `storyteller models fetch {model.name} --from FILE_OR_FOLDER`)"
    if tok is None:
        return f"{error}. Put {where} in {models_dir}/{mirror}"
    src, dst = models_dir / model.file, models_dir / packed_name(model.file, type)
    return (f"{error}. Put {where} in {models_dir}/, then run "
            f"`storyteller models convert {src} {dst} --{'mode' if type in MODES else 'type'} {type}`{mirror}")


# ----------------------------------------------------------------------------- discovery

SYSTEM_MODELS = Path("/var/lib/storyteller/models")  # the service's folder (its settings name it)


def user_models_dir(env: Mapping[str, str] | None = None) -> Path:
    """The per-user folder: $XDG_DATA_HOME/storyteller/models, ~/.local/share/storyteller/models
    when that is unset (or not absolute, as the XDG spec says)."""
    env = os.environ if env is None else env
    base = env.get("XDG_DATA_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".local", "share")
    return Path(base) / "storyteller" / "models"


@dataclass(frozen=True)
class Folder:
    """A folder models are looked for in, and why it is searched."""

    path: Path
    why: str


def search_dirs(configured: Path | None = None, env: Mapping[str, str] | None = None) -> list[Folder]:
    """Where models are looked for, in order: `configured` (settings [model] models_dir), then
    the folders of $STORYTELLER_MODELS (separated by ':') when it is set, else the per-user
    folder (user_models_dir()) and the system one (SYSTEM_MODELS). `fetch` writes into the first."""
    env = os.environ if env is None else env
    dirs = [Folder(configured, "settings [model] models_dir")] if configured is not None else []
    listed = env.get("STORYTELLER_MODELS")
    if listed is not None:
        dirs += [Folder(Path(p).expanduser(), "$STORYTELLER_MODELS") for p in listed.split(os.pathsep) if p]
    else:
        dirs += [Folder(user_models_dir(env), "per-user"), Folder(SYSTEM_MODELS, "system, for the service")]
    if not dirs:  # STORYTELLER_MODELS="" and no setting: the per-user folder still receives fetches
        dirs.append(Folder(user_models_dir(env), "per-user"))
    unique: list[Folder] = []
    for d in dirs:
        if all(d.path != u.path for u in unique):
            unique.append(d)
    # a folder this user may not even look into holds nothing for it: the service's user started
    # with root's HOME (BusyBox start-stop-daemon -c keeps it) met /root/.local/share/... and crashed
    return [d for d in unique if _reachable(d.path)] or unique


def _reachable(path: Path) -> bool:
    try:
        path.exists()  # raises PermissionError, where a missing folder is just False
    except PermissionError:
        return False
    return True


Dirs = Path | Sequence[Path]


def _dirs(dirs: Dirs) -> list[Path]:
    return [dirs] if isinstance(dirs, Path) else list(dirs)


def _is_model_file(path: Path, tokenizer_files: set[str]) -> bool:
    if not path.is_file() or path.name in tokenizer_files or path.name.startswith("tok"):
        return False
    return path.suffix in (PACKED_SUFFIX, ".bin")


def _find_in(models_dir: Path) -> list[Path]:
    if not models_dir.is_dir():
        return []
    manifest = load_manifest(models_dir)
    tokenizer_files = {t.file for t in manifest.tokenizers.values()}
    found: list[Path] = []
    for m in manifest.models.values():
        for t in TYPE_PREFERENCE:
            found.append(models_dir / packed_name(m.file, t))
        found.append(models_dir / m.file)
    found = [p for p in found if p.is_file()]
    others = sorted(p for p in models_dir.iterdir() if _is_model_file(p, tokenizer_files) and p not in found)
    return found + others


def find_models(dirs: Dirs) -> list[Path]:
    """The model files in the folders (one or a search path), folder by folder, best first in
    each: manifest models in manifest order (each packed q8, f16, f32, then its original),
    then any other model files by name."""
    return [p for d in _dirs(dirs) for p in _find_in(d)]


def default_model(dirs: Dirs) -> Path:
    """The first model of find_models(), or ModelNotFoundError saying how to get one."""
    folders = _dirs(dirs)
    found = find_models(folders)
    if not found:
        where = ", ".join(f"{d}/" for d in folders)
        raise ModelNotFoundError(f"no model in {where}: run `storyteller models fetch stories15M` (it writes "
                                 f"to {folders[0]}/) or pass --model FILE")
    return found[0]


def default_tokenizer(model: Path, dirs: Dirs) -> Path:
    """The tokenizer for a model file: the manifest's (model named <name>.*), in the model's
    folder or a models folder; else tokenizer.bin next to the model, else in a models folder."""
    folders = _dirs(dirs)
    manifest = load_manifest(folders[0])
    stem = model.name.split(".")[0]
    candidates: list[Path] = []
    remote = manifest.models.get(stem)
    tok = manifest.tokenizer_of(remote) if remote else None
    if tok is not None:
        candidates += [model.parent / tok.file, *(d / tok.file for d in folders)]
    candidates += [model.parent / "tokenizer.bin", *(d / "tokenizer.bin" for d in folders)]
    return next((p for p in candidates if p.is_file()), candidates[0])


@dataclass(frozen=True)
class Listed:
    """A row of `storyteller models list`."""

    name: str
    file: str
    present: bool
    packed: list[str]  # packed files of it in that folder
    sha256: str
    about: str
    folder: Path | None = None  # the first folder holding the file or a packed one; None: none does


def list_models(dirs: Dirs) -> list[Listed]:
    folders = _dirs(dirs)
    manifest = load_manifest(folders[0])
    rows = []
    for r in [*manifest.models.values(), *manifest.tokenizers.values(), *manifest.archives.values()]:
        names = [packed_name(r.file, t) for t in TYPE_PREFERENCE] if r.name in manifest.models else []
        for d in folders:
            packed = [n for n in names if (d / n).is_file()]
            present = (d / r.file).is_dir() if r.kind == "archive" else (d / r.file).is_file()
            if packed or present:
                rows.append(Listed(r.name, r.file, present, packed, r.sha256, r.about, d))
                break
        else:
            rows.append(Listed(r.name, r.file, False, [], r.sha256, r.about))
    return rows


def find_archive(name: str, dirs: Dirs) -> Path | None:
    """The folder of the manifest's archive `name` in the first models folder holding it."""
    folders = _dirs(dirs)
    remote = load_manifest(folders[0]).archives.get(name)
    if remote is None:
        return None
    return next((d / remote.file for d in folders if (d / remote.file).is_dir()), None)
