"""The command-line tools: l2run against llama2.c's generate loop, and l2convert.

l2run's stdout is compared byte for byte with a Python transcription of llama2.c's `run`
generate loop (reference.encode with BOS, forced prompt tokens, reference.sample with
XorShiftRng(seed), stop on BOS, decode_piece + printable_piece, final newline). The loop is
driven by the C library's own float32 logits (capi.py, fed one token per eval): sampling
on float64-reference logits could flip at near-ties. l2run evaluates the prompt in one call,
so this also checks that doing so changes nothing.

Models: synthetic llama2.c checkpoints with the real 32000-piece tokenizer.bin's vocab size
but tiny dimensions, so each run takes milliseconds.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import capi
import numpy as np
import pytest
from native import REPO_ROOT

from storyteller.devtools import checkpoints as ck
from storyteller.devtools import reference as ref

TOKENIZER = ck.shared_models_dir() / "tokenizer.bin"
# for the tests whose failure would not name the missing file (conftest.py skips the others)
needs_tokenizer = pytest.mark.skipif(not TOKENIZER.is_file(), reason=f"needs {TOKENIZER} (scripts/setup fetches it)")
CFG = ck.Config(dim=32, hidden_dim=72, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=32000,
                seq_len=64)
UNICODE_PROMPT = 'Tom said: "Héllo, wörld!" (it\'s 3:00 p.m.) — ok? 😀 ñ 日本'


@pytest.fixture(scope="module")
def bin_dir() -> Path:
    """The tools: $STORYTELLER_BIN (e.g. an ASan build) or `make -s tools` into build/host/bin."""
    env = os.environ.get("STORYTELLER_BIN")
    if env:
        return Path(env)
    subprocess.run(["make", "-s", "tools"], cwd=REPO_ROOT, check=True)
    return REPO_ROOT / "build" / "host" / "bin"


@pytest.fixture(scope="module")
def vocab() -> tuple[list[bytes], list[float]]:
    pieces, scores, _ = ref.load_tokenizer_bin(TOKENIZER, CFG.vocab_size)
    return pieces, scores


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("l2run")
    w = ck.make_weights(CFG, 2024)
    paths = {"v0": d / "v0.bin", "q8": d / "q8.bin", "bos": d / "bos.bin"}
    ck.write_v0(paths["v0"], CFG, w)
    capi.convert(paths["v0"], paths["q8"], "q8", 32)
    # an unshared classifier that favours BOS: sampled stories end early (stop on BOS)
    wb = ck.make_weights(CFG, 2024, shared=False)
    wb["wcls"][1] *= 3
    ck.write_v0(paths["bos"], CFG, wb)
    return paths


def run(bin_dir: Path, tool: str, *args: str | os.PathLike[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(bin_dir / tool), *map(str, args)], check=False, capture_output=True,
                          timeout=120)


def l2run(bin_dir: Path, model: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return run(bin_dir, "l2run", model, "-z", TOKENIZER, *args)


def generate(model: Path, vocab: tuple[list[bytes], list[float]], prompt: str | None = None,
             steps: int = 256, temperature: float = 1.0, topp: float = 0.9, seed: int = 1,
             kv_type: str = "f32", stats: dict | None = None) -> bytes:
    """llama2.c's generate loop on the library's logits: the bytes run prints to stdout.
    stats, if given, gets "positions" (forward passes run) and "bos" (stopped on BOS)."""
    pieces, scores = vocab
    with capi.Model(model) as m:
        seq_len = m.info["seq_len"]
        if steps <= 0 or steps > seq_len:
            steps = seq_len
        tokens = ref.encode((prompt or "").encode(), pieces, scores, bos=True, eos=False)
        assert len(tokens) <= steps, "a prompt longer than the steps is an error in l2run"
        rng = ref.XorShiftRng(seed)
        out = bytearray()
        with m.session(context=steps, kv_type=kv_type) as s:
            token, pos = tokens[0], 0
            while pos < steps:
                logits = s.eval_logits([token])
                if pos < len(tokens) - 1:
                    nxt = tokens[pos + 1]
                else:
                    nxt = ref.sample(logits, temperature, topp, rng)
                pos += 1
                if nxt == 1:
                    break
                out += ref.printable_piece(ref.decode_piece(pieces, token, nxt))
                token = nxt
    if stats is not None:
        stats.update(positions=pos, bos=nxt == 1)
    return bytes(out) + b"\n"


def assert_ok(p: subprocess.CompletedProcess[bytes]) -> None:
    assert p.returncode == 0, p.stderr.decode(errors="replace")


# ----------------------------------------------------------------------------- l2run output

GENERATE_CASES = {
    # id: (l2run args, generate() kwargs). Values `run` silently replaces (-t -1, -p 1.5,
    # -n -3) are refused by l2run, naming them: bad_input/test_bad_options.py.
    "greedy": (["-t", "0", "-n", "40"], {"temperature": 0.0, "steps": 40}),
    "greedy_prompt": (["-t", "0", "-i", "Once upon a time"],
                      {"temperature": 0.0, "prompt": "Once upon a time"}),
    "topp": (["-t", "1.0", "-p", "0.9", "-s", "42", "-i", "Once upon a time", "-n", "60"],
             {"temperature": 1.0, "topp": 0.9, "seed": 42, "prompt": "Once upon a time", "steps": 60}),
    "topp_default_t_p": (["-s", "1234567", "-n", "50"], {"seed": 1234567, "steps": 50}),
    "multinomial": (["-t", "0.8", "-p", "0", "-s", "7", "-i", "Lily", "-n", "64"],
                    {"temperature": 0.8, "topp": 0.0, "seed": 7, "prompt": "Lily", "steps": 64}),
    "multinomial_p1": (["-t", "1.3", "-p", "1", "-s", "99", "-n", "30"],
                       {"temperature": 1.3, "topp": 1.0, "seed": 99, "steps": 30}),
    "unicode_prompt": (["-t", "1", "-p", "0.9", "-s", "3", "-i", UNICODE_PROMPT],
                       {"seed": 3, "prompt": UNICODE_PROMPT}),
    "n0_is_seq_len": (["-t", "0.9", "-s", "5", "-n", "0"], {"temperature": 0.9, "seed": 5, "steps": 64}),
    "n_capped": (["-t", "0.9", "-s", "5", "-n", "1000"], {"temperature": 0.9, "seed": 5, "steps": 64}),
    "prompt_fills_steps": (["-t", "0", "-i", "Once upon a time", "-n", "5"],
                           {"temperature": 0.0, "prompt": "Once upon a time", "steps": 5}),
    "one_step": (["-t", "0", "-n", "1"], {"temperature": 0.0, "steps": 1}),
    "empty_prompt": (["-i", "", "-t", "0", "-n", "12"], {"temperature": 0.0, "steps": 12}),
    "negative_seed": (["-s", "-5", "-n", "30"], {"seed": 2**64 - 5, "steps": 30}),  # as llama2.c
    "kv_f16": (["-k", "f16", "-t", "1", "-s", "11", "-i", "The cat"],
               {"kv_type": "f16", "seed": 11, "prompt": "The cat"}),
    "kernels_generic": (["-e", "generic", "-t", "0.7", "-s", "13", "-n", "32"],
                        {"temperature": 0.7, "seed": 13, "steps": 32}),
}


@pytest.mark.parametrize("case_id", list(GENERATE_CASES))
def test_l2run_matches_generate_loop(bin_dir, models, vocab, case_id: str) -> None:
    args, kwargs = GENERATE_CASES[case_id]
    p = l2run(bin_dir, models["v0"], *args)
    assert_ok(p)
    expected = generate(models["v0"], vocab, **kwargs)
    assert p.stdout == expected
    assert len(expected) > 1 or case_id == "one_step"


@pytest.mark.parametrize(("seed", "prompt"), [(1, None), (4, None), (6, "Once upon a time")])
def test_stops_on_bos(bin_dir, models, vocab, seed: int, prompt: str | None) -> None:
    args = ["-s", str(seed), "-n", "64"] + (["-i", prompt] if prompt else [])
    p = l2run(bin_dir, models["bos"], *args)
    assert_ok(p)
    stats: dict = {}
    assert p.stdout == generate(models["bos"], vocab, prompt, steps=64, seed=seed, stats=stats)
    assert stats["bos"] and stats["positions"] < 64, stats


def test_prompt_fills_steps_prints_prompt_and_one_token(bin_dir, models, vocab) -> None:
    pieces, scores = vocab
    tokens = ref.encode(b"Once upon a time", pieces, scores, bos=True, eos=False)
    assert len(tokens) == 5
    p = l2run(bin_dir, models["v0"], "-t", "0", "-i", "Once upon a time", "-n", "5")
    assert_ok(p)
    assert p.stdout.startswith(b"Once upon a time") and p.stdout.endswith(b"\n")


def test_packed_q8_defaults_to_f16_kv(bin_dir, models, vocab) -> None:
    args = ["-t", "1", "-p", "0.9", "-s", "21", "-i", "One day", "-n", "48"]
    p = l2run(bin_dir, models["q8"], *args)
    assert_ok(p)
    kw = {"prompt": "One day", "seed": 21, "steps": 48}
    assert p.stdout == generate(models["q8"], vocab, kv_type="f16", **kw)
    p32 = l2run(bin_dir, models["q8"], *args, "-k", "f32")
    assert_ok(p32)
    assert p32.stdout == generate(models["q8"], vocab, kv_type="f32", **kw)


@needs_tokenizer
def test_different_seeds_differ(bin_dir, models) -> None:
    outs = {l2run(bin_dir, models["v0"], "-s", str(s), "-n", "40").stdout for s in (1, 2, 3)}
    assert len(outs) == 3


def test_tok_per_s_on_stderr(bin_dir, models) -> None:
    p = l2run(bin_dir, models["v0"], "-t", "0", "-n", "20")
    assert_ok(p)
    assert re.fullmatch(rb"achieved tok/s: \d+\.\d+\n", p.stderr), p.stderr
    assert b"tok/s" not in p.stdout


def test_verbose_reports_memory(bin_dir, models) -> None:
    p = l2run(bin_dir, models["v0"], "-t", "0", "-n", "8", "-v", "1")
    assert_ok(p)
    err = p.stderr.decode()
    assert re.search(r"^memory Rss: +\d+ kB$", err, re.MULTILINE), err
    assert re.search(r"^memory (Private_Dirty|Anonymous): +\d+ kB$", err, re.MULTILINE), err
    assert f"kernels {capi.kernel_names()[0]}, " in err
    assert "KV cache f32, context 8" in err
    assert f"vocab {CFG.vocab_size} seq {CFG.seq_len}" in err
    assert p.stdout == l2run(bin_dir, models["v0"], "-t", "0", "-n", "8").stdout


def test_kernel_list(bin_dir) -> None:
    p = run(bin_dir, "l2run", "no-such-model.bin", "-e", "list")  # lists without loading
    assert_ok(p)
    names = p.stdout.decode().split()
    assert names == capi.kernel_names() and "generic" in names


@pytest.mark.skipif(shutil.which("gdb") is None or "avx2" not in capi.kernel_names(),
                    reason="needs gdb and a CPU that runs the avx2 set")
@needs_tokenizer
def test_kernel_set_serves_sampling_too(bin_dir, models) -> None:
    """-e generic means generic throughout: the sampler's softmax too (it used the fastest set,
    whatever -e said). Under gdb, a breakpoint on the avx2 set's softmax (kernels/x86.c) is hit
    with -e avx2 and never with -e generic."""
    script = ["-batch", "-ex", "set pagination off", "-ex", "break softmax", "-ex", "run", "-ex", "bt 2"]

    def hits(kernels: str) -> str:
        p = subprocess.run(["gdb", *script, "--args", str(bin_dir / "l2run"), str(models["v0"]), "-z",
                            str(TOKENIZER), "-e", kernels, "-t", "1", "-s", "3", "-n", "8"],
                           capture_output=True, text=True, timeout=120)
        return p.stdout

    assert "Breakpoint 1, " in hits("avx2")
    out = hits("generic")
    assert "Breakpoint 1, " not in out and "exited normally" in out, out


# ----------------------------------------------------------------------------- l2run errors


def test_prompt_longer_than_steps(bin_dir, models) -> None:
    p = l2run(bin_dir, models["v0"], "-i", "Once upon a time there was a dragon", "-n", "4")
    assert p.returncode != 0
    err = p.stderr.decode()
    assert "longer than the 4 steps" in err and err.count("\n") == 1, err
    assert p.stdout == b""


def test_usage_without_arguments(bin_dir) -> None:
    p = run(bin_dir, "l2run")
    assert p.returncode == 1
    assert p.stderr.startswith(b"Usage:") and b"-t <float>" in p.stderr
    assert p.stdout == b""


@pytest.mark.parametrize(("args", "named"), [
    (["{model}", "-t"], b"option -t needs a value"),
    (["{model}", "-n", "5", "-i"], b"option -i needs a value"),
    (["{model}", "-x", "1"], b"unknown option -x"),
    (["{model}", "-tt", "1"], b"'-tt' is not an option"),
    (["{model}", "t", "1"], b"'t' is not an option"),
    (["{model}", "-k", "q8"], b"-k takes f32 or f16, not 'q8'"),
])
def test_bad_options_are_named_in_one_line(bin_dir, models, args: list[str], named: bytes) -> None:
    # (bad_input/test_bad_options.py checks every option's values, on the ASan build too)
    p = run(bin_dir, "l2run", *[a.format(model=models["v0"]) for a in args])
    assert p.returncode == 1
    assert p.stderr.startswith(b"l2run: ") and named in p.stderr and p.stderr.count(b"\n") == 1, p.stderr
    assert p.stdout == b""


@pytest.mark.parametrize(("which", "words"), [
    ("model", "cannot load model: cannot open"),
    ("tokenizer", "cannot load tokenizer: cannot open"),
])
def test_missing_files(bin_dir, models, tmp_path: Path, which: str, words: str) -> None:
    missing = tmp_path / "missing.bin"
    model = missing if which == "model" else models["v0"]
    tok = missing if which == "tokenizer" else TOKENIZER
    p = run(bin_dir, "l2run", model, "-z", tok, "-n", "4")
    assert p.returncode == 1
    err = p.stderr.decode()
    assert err.startswith("l2run: ") and words in err and str(missing) in err, err
    assert err.count("\n") == 1, err
    assert p.stdout == b""


def test_unknown_kernels_and_mode(bin_dir, models) -> None:
    p = l2run(bin_dir, models["v0"], "-e", "no-such-kernels", "-n", "4")
    assert p.returncode == 1
    assert b"no-such-kernels" in p.stderr and p.stderr.count(b"\n") == 1
    p = l2run(bin_dir, models["v0"], "-m", "chat", "-n", "4")
    assert p.returncode == 1 and b"chat" in p.stderr


# ----------------------------------------------------------------------------- l2convert

TABLE_ROW = re.compile(r"^(\w+) +(-?\d+) +(\d+)x(\d+) +(\d+) +\S+ +\S+$")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> dict:
    cfg = ck.Config(dim=32, hidden_dim=80, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=320, seq_len=32)
    w = ck.make_weights(cfg, 77, shared=False)
    d = tmp_path_factory.mktemp("l2convert")
    ck.write_v0(d / "v0.bin", cfg, w)
    return {"cfg": cfg, "w": w, "dir": d, "v0": d / "v0.bin"}


@pytest.mark.parametrize(("type_", "group", "wrote"), [
    ("q8", "48", "q8, group size 48"),
    ("q8", None, "q8, group size 32"),
    ("f16", None, "f16"),
    ("f32", None, "f32"),
])
def test_l2convert_table(bin_dir, small, tmp_path: Path, type_: str, group: str | None, wrote: str) -> None:
    out = tmp_path / "out.bin"
    args = [small["v0"], out, "--type", type_] + (["--group", group] if group else [])
    p = run(bin_dir, "l2convert", *args)
    assert_ok(p)
    lines = p.stdout.decode().splitlines()
    assert lines[0].split() == ["tensor", "layer", "shape", "bytes", "max|w|", "max", "error"]
    rows = [TABLE_ROW.match(line) for line in lines[1:-1]]
    assert all(rows), lines
    cfg = small["cfg"]
    assert len(rows) == 3 + 9 * cfg.n_layers  # unshared: wcls too
    assert [r.group(1) for r in rows[:10]] == ["token_embedding", "rms_att", "wq", "wk", "wv", "wo",
                                               "rms_ffn", "w1", "w3", "w2"]
    assert rows[-1].group(1) == "wcls" and rows[-1].group(3, 4) == (str(cfg.vocab_size), str(cfg.dim))
    assert lines[-1].startswith(f"wrote {out}: {wrote}, "), lines[-1]
    total = sum(int(r.group(5)) for r in rows)
    assert f"{total} bytes of tensors, {os.path.getsize(out)} bytes in all" in lines[-1]
    # the same file as the library writes
    lib_out = tmp_path / "lib.bin"
    capi.convert(small["v0"], lib_out, type_, int(group or 0))
    assert out.read_bytes() == lib_out.read_bytes()
    assert not Path(f"{out}.tmp").exists()


@pytest.mark.parametrize("args", [
    ["--type", "q4"],
    ["--type", "F16"],
    ["--type", "q8", "--group", "0"],
    ["--type", "q8", "--group", "-32"],
    ["--type", "q8", "--group", "65537"],
    ["--type", "q8", "--group", "32x"],
    ["--type", "f16", "--group", "32"],
    ["--type"],
    [],
    ["--type", "q8", "--bogus"],
])
def test_l2convert_bad_arguments(bin_dir, small, tmp_path: Path, args: list[str]) -> None:
    out = tmp_path / "out.bin"
    p = run(bin_dir, "l2convert", small["v0"], out, *args)
    assert p.returncode != 0
    assert p.stderr.strip() and p.stdout == b""
    assert not out.exists() and not Path(f"{out}.tmp").exists()


@pytest.mark.parametrize(("tensor", "layer", "value"), [
    ("w2", 1, float("nan")),
    ("token_embedding", -1, float("inf")),
    ("rms_ffn", 0, float("-inf")),
    ("wcls", -1, float("nan")),
])
@pytest.mark.parametrize("type_", ["q8", "f16", "f32"])
def test_l2convert_non_finite_weights(bin_dir, small, tmp_path: Path, tensor: str, layer: int,
                                      value: float, type_: str) -> None:
    cfg, w = small["cfg"], small["w"]
    index = 5 if layer < 0 else layer * w[tensor][0].size + 5
    src = tmp_path / "bad.bin"
    ck.write_v0(src, cfg, ck.with_nan(w, tensor, index, value))
    out = tmp_path / "out.bin"
    stale = b"a previous file, left alone"
    out.write_bytes(stale)
    p = run(bin_dir, "l2convert", src, out, "--type", type_)
    assert p.returncode != 0
    err = p.stderr.decode()
    assert f"{tensor} (layer {layer})" in err and "NaN or infinity" in err, err
    assert err.count("\n") == 1 and p.stdout == b""
    assert out.read_bytes() == stale
    assert not Path(f"{out}.tmp").exists()
    out.unlink()
    p = run(bin_dir, "l2convert", src, out, "--type", type_)
    assert p.returncode != 0 and not out.exists() and not Path(f"{out}.tmp").exists()


def test_l2convert_f16_overflow(bin_dir, small, tmp_path: Path) -> None:
    """A finite weight too large for f16 (here 1e5 > 65504) must be an error naming the
    tensor, not an infinity written into a file that then cannot run. (Currently fails:
    l2convert exits 0 and its table shows "max error inf"; see test_forward.py.)"""
    cfg, w = small["cfg"], small["w"]
    src = tmp_path / "big.bin"
    ck.write_v0(src, cfg, ck.with_nan(w, "w1", w["w1"][0].size + 3, 1e5))  # layer 1
    out = tmp_path / "out.bin"
    p = run(bin_dir, "l2convert", src, out, "--type", "f16")
    assert p.returncode != 0, p.stdout.decode()
    assert "w1 (layer 1)" in p.stderr.decode()
    assert not out.exists() and not Path(f"{out}.tmp").exists()
    # f32 and q8 represent it fine
    for type_ in ("f32", "q8"):
        assert_ok(run(bin_dir, "l2convert", src, out, "--type", type_))


def test_l2convert_missing_input(bin_dir, tmp_path: Path) -> None:
    p = run(bin_dir, "l2convert", tmp_path / "missing.bin", tmp_path / "out.bin", "--type", "q8")
    assert p.returncode != 0
    assert b"missing.bin" in p.stderr and p.stderr.count(b"\n") == 1
    assert not (tmp_path / "out.bin").exists()


def test_l2convert_output_runs(bin_dir, small, tmp_path: Path) -> None:
    """What l2convert writes loads and runs close to the float64 reference."""
    out = tmp_path / "q8.bin"
    assert_ok(run(bin_dir, "l2convert", small["v0"], out, "--type", "q8", "--group", "16"))
    tokens = [1, 5, 300, 7]
    logits = capi.run_logits(out, tokens, kv_type="f16")
    r = ref.forward_all(small["cfg"], small["w"], tokens)
    assert np.all(ref.kl_divergence(r, logits) < 0.5)
