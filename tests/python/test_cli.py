"""The `storyteller` command: output, exit codes, and one-line messages (never a
traceback) for every failure a user can cause. Most tests call cli.main() in this process
(`cli` fixture); a few run `python -m storyteller` for real (ps.run_cli)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import package_support as ps
import pytest

from storyteller.devtools import checkpoints as ck

ps.use_host_library()

from storyteller import cli as storyteller_cli  # noqa: E402
from storyteller import faults  # noqa: E402

TOK = ps.TOKENIZER
STORY_CHAINS = {".": [(" Tom", 30)], " Tom": [(" ran", 30)], " ran": [("!", 30)], "!": [("<s>", 30)]}


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def model(d: Path) -> Path:
    return ps.write_random_model(d / "random.bin")


@pytest.fixture(scope="module")
def story_model(d: Path) -> Path:
    return ps.write_scripted_model(d / "story.bin", STORY_CHAINS)


class Result:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """cli(*args, cwd=None): storyteller ARGS run by cli.main() here, from `cwd` (default: a
    folder without etc/), with its exit status and output."""

    def run(*args: Any, cwd: Path | None = None) -> Result:
        monkeypatch.chdir(cwd or "/")
        monkeypatch.delenv("STORYTELLER_CONFIG", raising=False)
        capsys.readouterr()
        try:
            code = storyteller_cli.main([os.fspath(a) for a in args])
        except SystemExit as e:  # argparse
            code = int(e.code or 0)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def one_line_error(p: Result | subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The message of a failure: exit `code`, one stderr line, no traceback."""
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr and p.stderr.count("\n") == 1, p.stderr
    return p.stderr.strip()


# ----------------------------------------------------------------------------- run = l2run


@pytest.mark.parametrize("args", [
    ["-t", "0", "-i", "Once upon a time"],
    ["-s", "42", "-n", "40", "-i", "Lily"],
    ["-s", "7", "-t", "0.8", "-p", "0", "-n", "0"],
    ["-s", "5", "-t", "0", "-p", "0", "-n", "0"],  # the lower edges (l2run refuses -t -1, -n -3)
    ["-s", "5", "-p", "1", "-n", "1000", "-k", "f16"],  # -n above seq_len is capped, as run does
])
def test_run_prints_what_l2run_prints(capfdbinary: pytest.CaptureFixture[bytes], model: Path,
                                      args: list[str]) -> None:
    assert storyteller_cli.main(["run", str(model), "-z", str(TOK), *args]) == 0
    out, err = capfdbinary.readouterr()
    c = subprocess.run([str(ps.l2run_binary()), str(model), "-z", str(TOK), *args], capture_output=True,
                       check=True)
    assert out == c.stdout and len(out) > 10
    assert err.startswith(b"achieved tok/s: ")


@pytest.mark.parametrize("args", [["-t", "-1"], ["-t", "abc"], ["-t", "nan"], ["-t", "1e39"], ["-p", "2"],
                                  ["-p", "-0.1"], ["-n", "-3"], ["-n", "2147483648"], ["-s", "18446744073709551616"],
                                  ["-v", "2"], ["-k", "f8"]])
def test_run_refuses_what_l2run_refuses(cli: Callable[..., Result], model: Path, args: list[str]) -> None:
    """One rule for option values: what l2run refuses (instead of replacing it, as llama2.c's run
    does), storyteller run refuses too, with a one-line usage error and nothing generated."""
    c = subprocess.run([str(ps.l2run_binary()), str(model), "-z", str(TOK), *args], capture_output=True, text=True)
    assert c.returncode == 1 and c.stdout == "" and c.stderr.count("\n") == 1, c.stderr
    p = cli("run", model, "-z", TOK, *args)
    assert f"argument {args[0]}:" in one_line_error(p, 2) and p.stdout == ""


def test_python_m_storyteller(story_model: Path) -> None:
    p = ps.run_cli("run", story_model, "-z", TOK, "-i", "Hi.", "-s", "1")
    c = subprocess.run([str(ps.l2run_binary()), str(story_model), "-z", str(TOK), "-i", "Hi.", "-s", "1"],
                       capture_output=True, text=True, check=True)
    assert p.returncode == 0 and p.stdout == c.stdout == "Hi. Tom ran!\n"
    p = ps.run_cli("tell", "a", "dragon", "--model", story_model, "--tokenizer", TOK)
    assert p.returncode == 0 and p.stdout.endswith("Tom ran! The end.\n") and p.stderr == ""
    p = ps.run_cli("tell", "a zombie", "--model", story_model, "--tokenizer", TOK)
    assert p.returncode == 3 and p.stdout.startswith("I'm sorry") and p.stderr == ""
    p = ps.run_cli("tell", "a dragon", "--model", "/nonexistent/model.bin")
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr


def test_run_with_model_option_and_verbose(cli: Callable[..., Result], model: Path) -> None:
    p = cli("run", "--model", model, "--tokenizer", TOK, "-n", "8", "-s", "1", "-v", "1")
    assert p.returncode == 0, p.stderr
    assert "kernels " in p.stderr and "memory Rss:" in p.stderr and "vocab 32000" in p.stderr


def test_run_lists_kernels_as_l2run_does(cli: Callable[..., Result]) -> None:
    p = cli("run", "-e", "list")
    c = subprocess.run([str(ps.l2run_binary()), "x", "-e", "list"], capture_output=True, text=True, check=True)
    assert p.returncode == 0 and p.stdout == c.stdout and "generic" in p.stdout


def test_run_chat_mode_is_refused(cli: Callable[..., Result], model: Path) -> None:
    assert "mode 'chat' is not supported" in one_line_error(cli("run", model, "-z", TOK, "-m", "chat"))


# ----------------------------------------------------------------------------- tell


def test_tell_prints_the_story(cli: Callable[..., Result], story_model: Path) -> None:
    p = cli("tell", "a brave little dragon", "--model", story_model, "--tokenizer", TOK, "--seed", "3")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("Once upon a time, there was a brave little dragon named ")
    assert p.stdout.endswith(". Tom ran! The end.\n") and p.stderr == ""


def test_tell_topic_words_are_joined(cli: Callable[..., Result], story_model: Path) -> None:
    p = cli("tell", "my", "cat", "Tom", "--model", story_model, "--tokenizer", TOK, "--sentences", "1")
    assert p.returncode == 0 and p.stdout == "Once upon a time, there was a cat named Tom. The end.\n"


def test_refused_topic_exit_3_before_loading_any_model(cli: Callable[..., Result], d: Path) -> None:
    p = cli("tell", "a zombie with a gun", "--model", d / "missing.bin")
    assert p.returncode == 3 and p.stderr == ""
    assert p.stdout.startswith("I'm sorry, I can't tell a story about that. How about a story about ")


def test_topic_too_long(cli: Callable[..., Result], story_model: Path) -> None:
    msg = one_line_error(cli("tell", "a" * 81, "--model", story_model, "--tokenizer", TOK))
    assert msg == ('storyteller: the topic is 81 characters long; keep it under 80 '
                   '(for example "a brave little dragon")')


# ----------------------------------------------------------------------------- failures


def test_missing_model(cli: Callable[..., Result], d: Path) -> None:
    msg = one_line_error(cli("tell", "a dragon", "--model", d / "nope.bin", "--tokenizer", TOK))
    assert msg.startswith(f"storyteller: model file {d / 'nope.bin'} not found")


def test_no_model_anywhere(cli: Callable[..., Result], d: Path) -> None:
    empty = d / "empty"
    empty.mkdir()
    (empty / "etc").mkdir()
    (empty / "etc" / "storyteller.toml").write_text('[model]\nmodels_dir = "../models"\n')
    msg = one_line_error(cli("tell", "a dragon", cwd=empty))
    assert "no model in" in msg and "storyteller models fetch stories15M" in msg


def test_missing_tokenizer(cli: Callable[..., Result], model: Path, d: Path) -> None:
    msg = one_line_error(cli("run", model, "-z", d / "nope-tok.bin"))
    assert msg.startswith("storyteller: tokenizer file") and "not found" in msg


def test_vocab_mismatch(cli: Callable[..., Result], d: Path) -> None:
    small = ps.write_random_model(d / "small.bin", ck.TINY)
    msg = one_line_error(cli("tell", "a dragon", "--model", small, "--tokenizer", TOK))
    assert "has 32000 pieces but the model" in msg and "vocabulary of 320" in msg


def test_corrupt_model(cli: Callable[..., Result], d: Path) -> None:
    bad = d / "corrupt.bin"
    bad.write_bytes(b"\xff" * 64)
    msg = one_line_error(cli("run", bad, "-z", TOK))
    assert msg.startswith("storyteller: ") and "corrupt.bin" in msg


def test_truncated_model(cli: Callable[..., Result], d: Path, model: Path) -> None:
    cut = d / "cut.bin"
    cut.write_bytes(model.read_bytes()[:5000])
    assert "cut.bin" in one_line_error(cli("run", cut, "-z", TOK))


def test_unsupported_format(cli: Callable[..., Result], d: Path) -> None:
    v9 = d / "v9.bin"
    v9.write_bytes(struct.pack("<Ii", ck.MAGIC, 9) + bytes(300))
    msg = one_line_error(cli("models", "info", v9))
    assert "v9.bin" in msg


def test_corrupt_tokenizer(cli: Callable[..., Result], model: Path, d: Path) -> None:
    bad = d / "bad-tok.bin"
    bad.write_bytes(b"\x01\x00")
    assert "bad-tok.bin" in one_line_error(cli("run", model, "-z", bad))


def test_bad_settings_file(cli: Callable[..., Result], d: Path, model: Path) -> None:
    conf = d / "bad.toml"
    conf.write_text("[generation]\ntemprature = 1\n")
    msg = one_line_error(cli("run", model, "-z", TOK, "--config", conf))
    assert "unknown setting [generation] temprature" in msg
    assert "not found" in one_line_error(cli("run", model, "--config", d / "none.toml"))


def test_usage_errors_exit_2(cli: Callable[..., Result]) -> None:
    for args in ([], ["dance"], ["run", "-n", "lots"], ["models", "convert", "a", "b", "--type", "q4"]):
        p = cli(*args)
        assert p.returncode == 2 and "Traceback" not in p.stderr and p.stderr.strip().count("\n") <= 1, args


@pytest.mark.parametrize(("args", "message"), [
    (["tell", "a cat", "--temperature", "-1"], "argument --temperature: must be 0 or more (got -1)"),
    (["tell", "a cat", "--temperature", "nan"], "argument --temperature: must be 0 or more (got nan)"),
    (["tell", "a cat", "--top-p", "1.5"], "argument --top-p: must be between 0 and 1 (got 1.5)"),
    (["tell", "a cat", "--sentences", "0"], "argument --sentences: must be 1 or more (got 0)"),
    (["tell", "a cat", "--context", "99999999999"], "argument --context: must be between 0 (the model's seq_len) "
                                                    "and 2147483647 (got 99999999999)"),
    (["bench", "--repeat", "0"], "argument --repeat: must be 1 or more (got 0)"),
    (["bench", "--steps", "-1"], "argument --steps: must be between 0"),
    (["models", "convert", "IN", "OUT", "--type", "q8", "--group", "4294967296"], "argument --group: must be between"),
])
def test_bad_option_values_are_refused_before_anything_is_done(cli: Callable[..., Result], story_model: Path,
                                                               d: Path, args: list[str], message: str) -> None:
    args = [str(d / "out.l2") if a == "OUT" else str(story_model) if a == "IN" else a for a in args]
    files = ["--model", story_model, "--tokenizer", TOK] if args[0] in ("tell", "bench") else []
    p = cli(*args, *files)
    assert message in one_line_error(p, 2) and p.stdout == ""  # no opening told first
    assert not (d / "out.l2").exists()


def test_settings_values_are_checked_before_the_story(cli: Callable[..., Result], d: Path, story_model: Path) -> None:
    conf = d / "hot.toml"
    conf.write_text("[generation]\ntemperature = -1\n")
    p = cli("tell", "a cat", "--model", story_model, "--tokenizer", TOK, "--config", conf)
    assert one_line_error(p) == "storyteller: temperature must be 0 or more (got -1.0)" and p.stdout == ""


def test_text_that_is_not_utf8_is_a_usage_error(cli: Callable[..., Result], story_model: Path) -> None:
    bad = b"a cat named Tom\xff".decode("utf-8", "surrogateescape")  # as Python decodes such an argv
    p = cli("tell", bad, "--model", story_model, "--tokenizer", TOK)
    assert one_line_error(p, 2) == ("storyteller tell: argument topic: the text is not valid UTF-8 (byte 0xff "
                                    "at character 16) (see --help)") and p.stdout == ""
    p = cli("run", story_model, "-z", TOK, "-i", bad)
    assert "argument -i: the text is not valid UTF-8 (byte 0xff at character 16)" in one_line_error(p, 2)
    p = ps.run_cli("tell", bad, "--model", story_model, "--tokenizer", TOK)  # the real argv bytes
    assert "not valid UTF-8 (byte 0xff at character 16)" in one_line_error(p, 2)
    p = cli("tell", b"a shit \xff".decode("utf-8", "surrogateescape"), "--model", story_model, "--tokenizer", TOK)
    assert "shit" not in p.stderr + p.stdout  # the error never repeats the text: it is not gated


def test_convert_refuses_to_overwrite_its_input(cli: Callable[..., Result], d: Path, model: Path) -> None:
    copy = d / "self.bin"
    copy.write_bytes(model.read_bytes())
    msg = one_line_error(cli("models", "convert", copy, copy, "--type", "q8"))
    assert msg == f"storyteller: {copy} is the model's own file: writing it would destroy the model while it is " \
                  "read; write to another file"
    assert copy.read_bytes() == model.read_bytes()


def test_a_model_file_truncated_while_in_use_is_one_line_not_a_silent_death(d: Path, model: Path) -> None:
    victim = d / "victim.bin"
    victim.write_bytes(model.read_bytes())
    # `storyteller run`, with the file cut to nothing right after it is opened (as `cp` over it would)
    script = ("import os, sys\nfrom storyteller import cli\nopen_ = cli.Model.open\n"
              "def cut(path):\n    m = open_(path)\n    os.truncate(path, 0)\n    return m\n"
              "cli.Model.open = cut\nsys.exit(cli.main(sys.argv[1:]))\n")
    p = subprocess.run([sys.executable, "-c", script, "run", str(victim), "-z", str(TOK), "-n", "8"],
                       capture_output=True, text=True, env=ps.cli_env(), timeout=120, check=False)
    assert one_line_error(p) == faults.MESSAGE  # not -7 (SIGBUS) without a word


# ----------------------------------------------------------------------------- settings


def test_settings_file_supplies_defaults(cli: Callable[..., Result], d: Path, story_model: Path) -> None:
    home = d / "home"
    (home / "etc").mkdir(parents=True)
    (home / "etc" / "storyteller.toml").write_text(
        f'[model]\npath = "{story_model}"\ntokenizer = "{TOK}"\n[story]\nmax_sentences = 2\nclosing = ""\n')
    p = cli("tell", "space", "--seed", "1", cwd=home)
    assert p.returncode == 0, p.stderr
    assert p.stdout.endswith("went on a big adventure in space. Tom ran!\n")
    p = cli("tell", "space", "--seed", "1", "--sentences", "1", cwd=home)
    assert p.stdout.endswith("in space.\n")


# ----------------------------------------------------------------------------- models, bench


def test_models_convert_info_list(cli: Callable[..., Result], d: Path, model: Path) -> None:
    out = d / "m.q8.l2"
    p = cli("models", "convert", model, out, "--type", "q8")
    assert p.returncode == 0 and "largest relative error" in p.stdout and out.exists()
    p = cli("models", "info", out)
    assert p.returncode == 0 and "packed" in p.stdout and "q8 (group 32)" in p.stdout and "vocab 32000" in p.stdout
    p = cli("models", "list", "--models-dir", d)
    assert p.returncode == 0 and "stories15M" in p.stdout and "tokenizer.bin" in p.stdout



def test_models_are_found_from_any_folder(cli: Callable[..., Result], d: Path, story_model: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """No settings file here (cwd /): the model comes from $STORYTELLER_MODELS's folders, and
    `models list` says where it is."""
    empty, shelf = d / "no-models", d / "shelf"
    shelf.mkdir()
    (shelf / "stories15M.bin").symlink_to(story_model)
    (shelf / "tokenizer.bin").symlink_to(TOK)
    monkeypatch.setenv("STORYTELLER_MODELS", f"{empty}:{shelf}")
    p = cli("tell", "space", "--seed", "1", "--sentences", "2")
    assert p.returncode == 0 and p.stdout.startswith("Once upon a time"), p.stderr
    p = cli("models", "list")
    assert p.returncode == 0
    assert f"  {empty}/  ($STORYTELLER_MODELS; does not exist yet)" in p.stdout
    assert f"in {shelf}/: stories15M.bin" in p.stdout and f"default model: {shelf}/stories15M.bin" in p.stdout


def test_models_fetch_without_network(cli: Callable[..., Result], d: Path) -> None:
    models_dir = d / "offline"
    models_dir.mkdir()
    (models_dir / "manifest.toml").write_text(
        '[models.stories15M]\nurl = "http://127.0.0.1:9/stories15M.bin"\nfile = "stories15M.bin"\n'
        'tokenizer = "tokenizer"\nsha256 = ""\n\n[tokenizers.tokenizer]\nurl = "http://127.0.0.1:9/tokenizer.bin"\n'
        'file = "tokenizer.bin"\nsha256 = ""\n')
    msg = one_line_error(cli("models", "fetch", "stories15M", "--models-dir", models_dir))
    assert msg.startswith("storyteller: cannot download stories15M.bin: no network")
    assert "Put stories15M.bin" in msg and "storyteller models convert" in msg


def test_bench_reports_speed_ttft_memory_and_l2run(cli: Callable[..., Result], story_model: Path) -> None:
    p = cli("bench", "--model", story_model, "--tokenizer", TOK, "--steps", "64", "--repeat", "1",
                   "--temperature", "0", "--l2run", ps.l2run_binary())
    assert p.returncode == 0, p.stderr
    assert "tok/s, time to first token" in p.stdout and "memory: Rss" in p.stdout
    assert "l2run:" in p.stdout and "(same output)" in p.stdout and "python overhead per token" in p.stdout



def test_bench_finds_the_checkouts_l2run(d: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed package (no source tree of its own) run in a built checkout finds its l2run."""
    from storyteller import _native, bench

    checkout = d / "checkout"
    tool = checkout / "build" / "host" / "bin" / "l2run"
    tool.parent.mkdir(parents=True)
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setattr(_native, "SOURCE_TREE_LIB", d / "site-packages" / "build" / "host" / "lib" / "x.so")
    monkeypatch.delenv("STORYTELLER_BIN", raising=False)
    monkeypatch.setenv("PATH", str(d / "nothing-here"))
    monkeypatch.chdir(checkout)
    assert bench.find_l2run() == tool
    monkeypatch.chdir(d)
    assert bench.find_l2run() in (None, Path(sys.executable).parent / "l2run")


def test_version(cli: Callable[..., Result]) -> None:
    p = cli("--version")
    assert p.returncode == 0 and p.stdout.startswith("storyteller ")
