"""Model files (storyteller.models): the manifest, resumable downloads with sha256 checks
(from a local HTTP server on 127.0.0.1, never the network), conversion, discovery."""

from __future__ import annotations

import hashlib
import http.server
import io
import shutil
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import checkpoints as ck
import package_support as ps
import pytest

ps.use_host_library()

from storyteller import models  # noqa: E402
from storyteller.config import data_file  # noqa: E402
from storyteller.engine import Model  # noqa: E402
from storyteller.errors import DownloadError, ModelNotFoundError, NoNetworkError  # noqa: E402


class Server(http.server.ThreadingHTTPServer):
    """Serves `files` (name -> bytes) with Range support; `cut_after` bytes into a
    response it drops the connection (a network failure mid-download)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.files: dict[str, bytes] = {}
        self.cut_after: int | None = None
        self.ranges: list[str | None] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        data = self.server.files.get(self.path.lstrip("/"))
        if data is None:
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        self.server.ranges.append(rng)
        start = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
        if start >= len(data) and rng:
            self.send_response(416)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if self.server.cut_after is not None:
            self.wfile.write(body[:self.server.cut_after])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    t = threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield s
    s.shutdown()
    s.server_close()


def manifest_for(models_dir: Path, url: str, model_sha: str = "", tok_sha: str = "") -> None:
    models_dir.mkdir(parents=True, exist_ok=True)
    (models_dir / "manifest.toml").write_text(
        "# test manifest\n# second line\n\n"
        f'[models.stories15M]\nurl = "{url}/stories15M.bin"\nfile = "stories15M.bin"\ntokenizer = "tokenizer"\n'
        f'sha256 = "{model_sha}"\nabout = "test"\n\n'
        f'[tokenizers.tokenizer]\nurl = "{url}/tokenizer.bin"\nfile = "tokenizer.bin"\nsha256 = "{tok_sha}"\n')


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    p = ps.write_random_model(tmp_path_factory.mktemp("models") / "m.bin", ck.TINY)
    return p.read_bytes()


# ----------------------------------------------------------------------------- manifest


def test_shipped_manifest() -> None:
    m = models.load_manifest(Path("/nonexistent"))
    assert m.path == data_file("manifest.toml")
    assert list(m.models) == ["stories15M", "stories42M", "stories110M", "stories260K"]
    for r in m.models.values():
        assert r.url == f"https://huggingface.co/karpathy/tinyllamas/resolve/main/{r.url.split('/main/')[1]}"
        assert r.url.endswith("/" + r.file) and r.tokenizer in m.tokenizers
    assert m.tokenizer_of(m.models["stories260K"]).file == "tok512.bin"  # type: ignore[union-attr]
    assert m.tokenizers["tokenizer"].url.startswith("https://raw.githubusercontent.com/karpathy/llama2.c/")
    shared_tok = ck.shared_models_dir() / "tokenizer.bin"
    if shared_tok.exists():
        assert m.tokenizers["tokenizer"].sha256 == models.sha256_of(shared_tok)


def test_recording_a_sha256_keeps_the_manifest(tmp_path: Path) -> None:
    manifest_for(tmp_path, "http://x")
    models.record_sha256(tmp_path, "stories15M", "ab" * 32)
    text = (tmp_path / "manifest.toml").read_text()
    assert text.startswith("# test manifest\n# second line\n")
    data = tomllib.loads(text)
    assert data["models"]["stories15M"] == {"url": "http://x/stories15M.bin", "file": "stories15M.bin",
                                            "tokenizer": "tokenizer", "sha256": "ab" * 32, "about": "test"}
    assert data["tokenizers"]["tokenizer"]["sha256"] == ""


def test_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="no model or tokenizer named 'stories1B'.*stories15M"):
        models.fetch("stories1B", tmp_path)


# ----------------------------------------------------------------------------- download


def test_fetch_downloads_checks_records_and_converts(tmp_path: Path, server: Server, model_bytes: bytes) -> None:
    tok = ps.TOKENIZER.read_bytes()
    server.files = {"stories15M.bin": model_bytes, "tokenizer.bin": tok}
    d = tmp_path / "models"
    manifest_for(d, server.url, tok_sha=hashlib.sha256(tok).hexdigest())
    out = models.fetch("stories15M", d, "q8", progress=lambda name: models.Progress(name, io.StringIO()))
    assert out == d / "stories15M.q8.l2"
    with Model.open(out) as m:
        assert m.info.file_kind_name == "packed" and m.info.weight_type_name == "q8"
    assert (d / "stories15M.bin").read_bytes() == model_bytes and (d / "tokenizer.bin").read_bytes() == tok
    recorded = models.load_manifest(d).models["stories15M"].sha256
    assert recorded == hashlib.sha256(model_bytes).hexdigest()  # unknown before: recorded now
    assert not list(d.glob("*.part"))
    # again: nothing downloaded, the checks pass
    n = len(server.ranges)
    assert models.fetch("stories15M", d, "q8", progress=None) == out and len(server.ranges) == n


def test_an_interrupted_download_resumes(tmp_path: Path, server: Server, model_bytes: bytes) -> None:
    server.files = {"stories15M.bin": model_bytes}
    d = tmp_path / "models"
    manifest_for(d, server.url, model_sha=hashlib.sha256(model_bytes).hexdigest())
    remote = models.load_manifest(d).models["stories15M"]
    server.cut_after = 10_000
    with pytest.raises(DownloadError, match="stopped at .* run the same command again to resume"):
        models.fetch_file(d, remote)
    assert (d / "stories15M.bin.part").stat().st_size == 10_000
    server.cut_after = None
    assert models.fetch_file(d, remote) == d / "stories15M.bin"
    assert server.ranges[-1] == "bytes=10000-"
    assert (d / "stories15M.bin").read_bytes() == model_bytes


def test_a_complete_part_file_is_finished_without_data(tmp_path: Path, server: Server, model_bytes: bytes) -> None:
    server.files = {"stories15M.bin": model_bytes}
    d = tmp_path / "models"
    manifest_for(d, server.url)
    (d / "stories15M.bin.part").write_bytes(model_bytes)
    models.fetch_file(d, models.load_manifest(d).models["stories15M"])
    assert (d / "stories15M.bin").read_bytes() == model_bytes


def test_a_wrong_checksum_is_refused(tmp_path: Path, server: Server, model_bytes: bytes) -> None:
    server.files = {"stories15M.bin": model_bytes}
    d = tmp_path / "models"
    manifest_for(d, server.url, model_sha="0" * 64)
    with pytest.raises(DownloadError, match="has sha256 .* not 0000.*moved to stories15M.bin.bad"):
        models.fetch_file(d, models.load_manifest(d).models["stories15M"])
    assert not (d / "stories15M.bin").exists() and (d / "stories15M.bin.bad").exists()


def test_http_errors(tmp_path: Path, server: Server) -> None:
    d = tmp_path / "models"
    manifest_for(d, server.url)
    with pytest.raises(DownloadError, match="HTTP 404"):
        models.fetch_file(d, models.load_manifest(d).models["stories15M"])


def test_without_network_one_line_says_what_to_put_where(tmp_path: Path) -> None:
    d = tmp_path / "models"
    manifest_for(d, "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(NoNetworkError) as e:
        models.fetch("stories15M", d, progress=None)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("cannot download stories15M.bin: no network")
    assert "Put stories15M.bin (from http://127.0.0.1:9/stories15M.bin) and tokenizer.bin" in msg
    assert f"storyteller models convert {d}/stories15M.bin {d}/stories15M.q8.l2 --type q8" in msg


def test_file_urls_work(tmp_path: Path, model_bytes: bytes) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "stories15M.bin").write_bytes(model_bytes)
    d = tmp_path / "models"
    manifest_for(d, src.as_uri())
    assert models.fetch_file(d, models.load_manifest(d).models["stories15M"]).read_bytes() == model_bytes


def test_progress_bar_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    p = models.Progress("x.bin", out)
    p.update(0, 2_000_000)
    p.update(2_000_000, 2_000_000, final=True)
    assert "x.bin [" in out.getvalue() and "100.0%" in out.getvalue() and out.getvalue().endswith("\n")


# ----------------------------------------------------------------------------- discovery


def test_find_models_prefers_manifest_order_and_packed(tmp_path: Path, model_bytes: bytes) -> None:
    d = tmp_path
    assert models.find_models(d / "missing") == []
    with pytest.raises(ModelNotFoundError, match="no model in .*storyteller models fetch"):
        models.default_model(d)
    for name in ("stories260K.bin", "stories15M.bin", "stories15M.f16.l2", "stories15M.q8.l2", "zzz.bin",
                 "tokenizer.bin", "tok512.bin", "notes.txt"):
        (d / name).write_bytes(b"x")
    assert [p.name for p in models.find_models(d)] == [
        "stories15M.q8.l2", "stories15M.f16.l2", "stories15M.bin", "stories260K.bin", "zzz.bin"]
    assert models.default_model(d).name == "stories15M.q8.l2"


def test_default_tokenizer(tmp_path: Path) -> None:
    models_dir, other = tmp_path / "models", tmp_path / "other"
    models_dir.mkdir()
    other.mkdir()
    (models_dir / "tok512.bin").write_bytes(b"x")
    (models_dir / "tokenizer.bin").write_bytes(b"x")
    assert models.default_tokenizer(other / "stories260K.q8.l2", models_dir) == models_dir / "tok512.bin"
    assert models.default_tokenizer(other / "stories15M.bin", models_dir) == models_dir / "tokenizer.bin"
    (other / "tokenizer.bin").write_bytes(b"x")
    assert models.default_tokenizer(other / "mine.bin", models_dir) == other / "tokenizer.bin"


def test_convert_and_list(tmp_path: Path, model_bytes: bytes) -> None:
    (tmp_path / "stories15M.bin").write_bytes(model_bytes)
    for t in ("f32", "f16", "q8"):
        reports = models.convert(tmp_path / "stories15M.bin", tmp_path / f"stories15M.{t}.l2", t)
        assert len(reports) == 3 + 9 * ck.TINY.n_layers - 1  # shared classifier: no wcls
    rows = {r.name: r for r in models.list_models(tmp_path)}
    assert rows["stories15M"].present and rows["stories15M"].packed == [
        "stories15M.q8.l2", "stories15M.f16.l2", "stories15M.f32.l2"]
    assert not rows["stories42M"].present and rows["tokenizer"].packed == []
    shutil.rmtree(tmp_path)
