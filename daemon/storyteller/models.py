"""Model files: the manifest, downloads, conversion to the packed format, discovery.

models/manifest.toml names the published llama2.c models and tokenizers with their URLs
and sha256 (recorded by the first complete download when not known). `fetch` downloads a
model and its tokenizer into the models folder, resumably (HTTP Range on a ".part" file),
checks the sha256, then converts the model to the packed format (`<name>.<type>.l2`).
"""

from __future__ import annotations

import hashlib
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

from storyteller import __version__
from storyteller.config import data_file
from storyteller.engine import Model, TensorReport
from storyteller.errors import ConfigError, DownloadError, ModelNotFoundError, NoNetworkError

PACKED_SUFFIX = ".l2"
TYPE_PREFERENCE = ("q8", "f16", "f32")  # which packed file of a model is picked first
CHUNK = 1 << 16


@dataclass(frozen=True)
class Remote:
    """A downloadable file of the manifest."""

    name: str
    url: str
    file: str
    sha256: str = ""  # "" until the first download records it
    tokenizer: str = ""  # models: the name of their tokenizer
    about: str = ""


@dataclass(frozen=True)
class Manifest:
    models: dict[str, Remote]
    tokenizers: dict[str, Remote]
    path: Path  # where it was read from (and is written back to)
    header: str = ""  # the comment lines at the top, kept when rewriting

    def get(self, name: str) -> Remote:
        found = self.models.get(name) or self.tokenizers.get(name)
        if found is None:
            known = ", ".join([*self.models, *self.tokenizers])
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
                out[name] = Remote(name=name, **t)
            except TypeError as e:
                raise ConfigError(f"bad entry [{kind}.{name}] in {path}: {e}") from None
        return out

    return Manifest(table("models"), table("tokenizers"), path, header)


def _toml_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def save_manifest(manifest: Manifest, path: Path) -> None:
    """Writes the manifest (atomically) to path."""
    lines = [manifest.header.rstrip("\n"), ""] if manifest.header else []
    for kind, entries in (("models", manifest.models), ("tokenizers", manifest.tokenizers)):
        for r in entries.values():
            lines.append(f"[{kind}.{r.name}]")
            for key in ("url", "file", "tokenizer", "sha256", "about"):
                value = getattr(r, key)
                if value or key == "sha256":
                    lines.append(f"{key} = {_toml_string(value)}")
            lines.append("")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    tmp.replace(path)


def record_sha256(models_dir: Path, name: str, sha256: str) -> None:
    """Stores a file's sha256 in models_dir/manifest.toml (created from the default)."""
    m = load_manifest(models_dir)
    if name in m.models:
        m.models[name] = replace(m.models[name], sha256=sha256)
    else:
        m.tokenizers[name] = replace(m.tokenizers[name], sha256=sha256)
    models_dir.mkdir(parents=True, exist_ok=True)
    save_manifest(m, models_dir / "manifest.toml")


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


def download(url: str, dest: Path, progress: Progress | None = None, timeout: float = 30.0) -> None:
    """Downloads url to dest, resuming dest + ".part" when a previous download stopped.

    Raises DownloadError, NoNetworkError when the host cannot be reached."""
    import http.client  # here: the other commands start faster without the HTTP stack
    import urllib.error
    import urllib.request

    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"storyteller/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing left to send: the .part is complete
            part.replace(dest)
            return
        raise DownloadError(f"cannot download {dest.name}: HTTP {e.code} {e.reason} from {url}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise NoNetworkError(f"cannot download {dest.name}: no network ({reason})") from None
    with resp:
        status = getattr(resp, "status", None) or 200
        if offset and status != 206:
            offset = 0  # the server ignored the range: start again
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        done = offset
        try:
            with open(part, "ab" if offset else "wb") as f:
                while block := resp.read(CHUNK):
                    f.write(block)
                    done += len(block)
                    if progress:
                        progress.update(done, total)
        except (OSError, http.client.HTTPException) as e:  # timeouts, resets, IncompleteRead
            raise DownloadError(f"the download of {dest.name} stopped at {_mb(done)} ({e}); run the same "
                                "command again to resume") from None
    if progress:
        progress.update(done, total, final=True)
    if total is not None and done != total:
        raise DownloadError(f"the download of {dest.name} stopped at {_mb(done)} of {_mb(total)}; run the "
                            "same command again to resume")
    part.replace(dest)


def fetch_file(models_dir: Path, remote: Remote, progress: Progress | None = None) -> Path:
    """Downloads one manifest file (unless present) and checks or records its sha256."""
    dest = models_dir / remote.file
    if not dest.exists():
        models_dir.mkdir(parents=True, exist_ok=True)
        download(remote.url, dest, progress)
    digest = sha256_of(dest)
    if remote.sha256 and digest != remote.sha256:
        bad = dest.with_name(dest.name + ".bad")
        dest.replace(bad)
        raise DownloadError(f"{dest.name} has sha256 {digest}, not {remote.sha256} as the manifest says: "
                            f"moved to {bad.name}; run the command again to download it afresh")
    if not remote.sha256:
        record_sha256(models_dir, remote.name, digest)
    return dest


def packed_name(model_file: str, type: str) -> str:
    """stories15M.bin -> stories15M.q8.l2"""
    return f"{Path(model_file).stem}.{type}{PACKED_SUFFIX}"


def convert(src: Path, dst: Path, type: str = "q8", group_size: int = 0) -> list[TensorReport]:
    """Converts any model file the library opens to the packed format."""
    with Model.open(src) as m:
        return m.convert(dst, type, group_size)


def fetch(name: str, models_dir: Path, type: str = "q8",
          progress: Callable[[str], Progress] | None = Progress) -> Path:
    """Downloads a model (and its tokenizer), then converts it to `type`; returns the packed
    file (or the tokenizer, when `name` is one)."""
    manifest = load_manifest(models_dir)
    remote = manifest.get(name)
    needed = [remote]
    tok = manifest.tokenizer_of(remote) if name in manifest.models else None
    if tok is not None:
        needed.append(tok)
    for r in needed:
        try:
            fetch_file(models_dir, r, progress(r.file) if progress else None)
        except NoNetworkError as e:
            raise NoNetworkError(_offline_help(str(e), models_dir, remote, tok, type)) from None
    if tok is None:
        return models_dir / remote.file
    out = models_dir / packed_name(remote.file, type)
    if not out.exists():
        convert(models_dir / remote.file, out, type)
    return out


def _offline_help(error: str, models_dir: Path, model: Remote, tok: Remote | None, type: str) -> str:
    files = [model] + ([tok] if tok else [])
    where = " and ".join(f"{r.file} (from {r.url})" for r in files)
    if tok is None:
        return f"{error}. Put {where} in {models_dir}/"
    src, dst = models_dir / model.file, models_dir / packed_name(model.file, type)
    return (f"{error}. Put {where} in {models_dir}/, then run "
            f"`storyteller models convert {src} {dst} --type {type}`")


# ----------------------------------------------------------------------------- discovery


def _is_model_file(path: Path, tokenizer_files: set[str]) -> bool:
    if not path.is_file() or path.name in tokenizer_files or path.name.startswith("tok"):
        return False
    return path.suffix in (PACKED_SUFFIX, ".bin")


def find_models(models_dir: Path) -> list[Path]:
    """The model files in models_dir, best first: manifest models in manifest order (each
    packed q8, f16, f32, then its original), then any other model files by name."""
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


def default_model(models_dir: Path) -> Path:
    """The first model of find_models(), or ModelNotFoundError saying how to get one."""
    models = find_models(models_dir)
    if not models:
        raise ModelNotFoundError(f"no model in {models_dir}/: run `storyteller models fetch stories15M` "
                                 "or pass --model FILE")
    return models[0]


def default_tokenizer(model: Path, models_dir: Path) -> Path:
    """The tokenizer for a model file: the manifest's (model named <name>.*), in the model's
    folder or models_dir; else tokenizer.bin next to the model, else in models_dir."""
    manifest = load_manifest(models_dir)
    stem = model.name.split(".")[0]
    candidates: list[Path] = []
    remote = manifest.models.get(stem)
    tok = manifest.tokenizer_of(remote) if remote else None
    if tok is not None:
        candidates += [model.parent / tok.file, models_dir / tok.file]
    candidates += [model.parent / "tokenizer.bin", models_dir / "tokenizer.bin"]
    return next((p for p in candidates if p.is_file()), candidates[0])


@dataclass(frozen=True)
class Listed:
    """A row of `storyteller models list`."""

    name: str
    file: str
    present: bool
    packed: list[str]  # packed files of it in the folder
    sha256: str
    about: str


def list_models(models_dir: Path) -> list[Listed]:
    manifest = load_manifest(models_dir)
    rows = []
    for r in [*manifest.models.values(), *manifest.tokenizers.values()]:
        names = [packed_name(r.file, t) for t in TYPE_PREFERENCE] if r.name in manifest.models else []
        packed = [n for n in names if (models_dir / n).is_file()]
        rows.append(Listed(r.name, r.file, (models_dir / r.file).is_file(), packed, r.sha256, r.about))
    return rows
