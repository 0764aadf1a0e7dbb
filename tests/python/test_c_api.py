"""What the C API owns and promises (llama2_rvv.h): the names of its enums, its version, the
tensor count, the option rule, and the error contract (every call that takes an l2_error
empties it on entry and fills it exactly when it fails)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import capi
import pytest
from native import REPO_ROOT, error_message, lib

from storyteller.devtools import checkpoints as ck

HEADER = (REPO_ROOT / "libllama2_rvv" / "include" / "llama2_rvv.h").read_text()
TOKENIZER = ck.shared_models_dir() / "tokenizer.bin"


def text(ffi: Any, p: Any) -> str | None:
    return None if p == ffi.NULL else ffi.string(p).decode()


def test_enum_names() -> None:
    ffi, c = lib()
    assert [text(ffi, c.l2_type_name(t)) for t in range(-1, 5)] == [
        "auto", "f32", "f16", "q8", "q8 (llama2.c v2)", "q10"]
    assert [text(ffi, c.l2_file_kind_name(k)) for k in range(4)] == [
        "llama2.c v0", "llama2.c v1", "llama2.c v2 (Q8_0)", "packed"]
    assert c.l2_type_name(5) == ffi.NULL and c.l2_type_name(-2) == ffi.NULL and c.l2_file_kind_name(4) == ffi.NULL


def test_version_is_defined_once() -> None:
    ffi, c = lib()
    from storyteller import __version__

    define = re.search(r'#define L2_VERSION "([^"]+)"', HEADER)
    assert define and text(ffi, c.l2_version()) == define[1] == __version__


def test_test_hooks_are_not_public() -> None:
    assert "l2_sampler_random_u32" not in HEADER


@pytest.mark.parametrize("shared", [True, False])
def test_n_tensors_is_what_convert_writes(tmp_path: Path, shared: bool) -> None:
    path = tmp_path / "m.bin"
    ck.write_v0(path, ck.TINY, ck.make_weights(ck.TINY, seed=1, shared=shared))
    with capi.Model(path) as m:
        n = m.info["n_tensors"]
        assert len(m.convert(tmp_path / "m.l2", "f16")) == n == 2 + 9 * ck.TINY.n_layers + (0 if shared else 1)


@pytest.mark.parametrize(("flag", "value", "want"), [
    ("t", "0", 0.0), ("t", "1.5", 1.5), ("p", "1", 1.0), ("s", "-3", -3), ("n", "0", 0), ("v", "1", 1)])
def test_option_rule_accepts(flag: str, value: str, want: float) -> None:
    ffi, c = lib()
    number, whole, err = ffi.new("double *"), ffi.new("int64_t *"), ffi.new("l2_error *")
    assert c.l2_check_option(flag.encode(), value.encode(), number, whole, err) == capi.OK
    assert (number[0] if flag in "tp" else whole[0]) == want and error_message(ffi, err) == ""


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("t", "-1", "-t needs a temperature of 0 or more, not '-1'"), ("t", "nan", "-t needs"), ("t", "1e39", "-t"),
    ("p", "2", "-p needs a top-p value from 0 to 1, not '2'"), ("n", "-5", "-n needs a number of steps, 0 or more"),
    ("n", "2147483648", "-n"), ("s", "7up", "-s needs a whole number, not '7up'"), ("v", "2", "-v needs 0 or 1"),
    ("x", "1", "-x is not a numeric option")])
def test_option_rule_refuses(flag: str, value: str, message: str) -> None:
    ffi, c = lib()
    number, whole, err = ffi.new("double *"), ffi.new("int64_t *"), ffi.new("l2_error *")
    assert c.l2_check_option(flag.encode(), value.encode(), number, whole, err) == capi.ERR_ARG
    assert error_message(ffi, err).startswith(message)


def stale(ffi: Any) -> Any:
    err = ffi.new("l2_error *")
    err.message = b"stale message from an earlier call"
    return err


def test_every_call_empties_the_error_on_success(tmp_path: Path) -> None:
    ffi, c = lib()
    path = tmp_path / "m.bin"
    ck.write_v0(path, ck.TINY, ck.make_weights(ck.TINY, seed=2))
    calls: dict[str, int] = {}

    def call(name: str, *args: Any) -> None:
        err = stale(ffi)
        calls[name] = getattr(c, name)(*args, err)
        assert calls[name] == capi.OK and error_message(ffi, err) == "", name

    model, tok, sess, smp = ffi.new("l2_model **"), ffi.new("l2_tokenizer **"), ffi.new("l2_session **"), \
        ffi.new("l2_sampler **")
    call("l2_model_open", str(path).encode(), model)
    call("l2_tokenizer_open", str(TOKENIZER).encode(), ck.TINY.vocab_size, tok)
    params = ffi.new("l2_session_params *", {"context": 0, "kv_type": -1})
    call("l2_session_new", model[0], params, sess)
    call("l2_sampler_new", ck.TINY.vocab_size, 1.0, 0.9, 7, smp)
    ids, n = ffi.new("int32_t[16]"), ffi.new("int32_t *")
    call("l2_tokenizer_encode", tok[0], b"Hi", 1, 0, ids, 16, n)
    piece, length = ffi.new("const char **"), ffi.new("size_t *")
    call("l2_tokenizer_decode", tok[0], 1, ids[1], piece, length)
    call("l2_session_eval", sess[0], ids, n[0])
    token = ffi.new("int32_t *")
    call("l2_session_sample", sess[0], smp[0], token)
    logits = ffi.new("float[]", [0.5] * ck.TINY.vocab_size)
    call("l2_sampler_sample", smp[0], logits, token)
    c.l2_session_reset(sess[0])
    g = ffi.new("l2_generation *", {"prompt": ids, "n_prompt": n[0], "max_pos": 0, "max_sampled": -1})
    call("l2_generate_begin", sess[0], g)
    call("l2_generate_step", sess[0], g, smp[0], tok[0])
    number, whole = ffi.new("double *"), ffi.new("int64_t *")
    call("l2_check_option", b"t", b"1", number, whole)
    reports, count = ffi.new("l2_tensor_report[32]"), ffi.new("int32_t *")
    call("l2_convert", model[0], str(tmp_path / "m.l2").encode(), c.L2_TYPE_F16, 0, reports, 32, count)
    params_q8 = ffi.new("l2_convert_params *")
    call("l2_convert_mode", b"q8", params_q8)
    call("l2_convert_with", model[0], str(tmp_path / "m8.l2").encode(), params_q8, reports, 32, count)
    c.l2_session_free(sess[0])
    c.l2_sampler_free(smp[0])
    c.l2_tokenizer_free(tok[0])
    c.l2_model_free(model[0])
    declared = set(re.findall(r"l2_status (l2_\w+)\(", HEADER))
    assert declared == set(calls), "every call that returns an l2_status is checked here"


def test_failed_calls_say_why(tmp_path: Path) -> None:
    """A failure fills the message, and out-parameters are NULL or 0."""
    ffi, c = lib()
    err = stale(ffi)
    model = ffi.new("l2_model **")
    assert c.l2_model_open(str(tmp_path / "nope.bin").encode(), model, err) == capi.ERR_IO
    assert model[0] == ffi.NULL and "nope.bin" in error_message(ffi, err)
    tok = ffi.new("l2_tokenizer **")
    assert c.l2_tokenizer_open(str(TOKENIZER).encode(), 320, tok, ffi.NULL) == capi.OK
    piece, length = ffi.new("const char **"), ffi.new("size_t *")
    err = stale(ffi)
    assert c.l2_tokenizer_decode(tok[0], 1, 320, piece, length, err) == capi.ERR_ARG
    assert piece[0] == ffi.NULL and length[0] == 0 and "320" in error_message(ffi, err)
    c.l2_tokenizer_free(tok[0])


def test_run_positions_is_llama2c_n_rule(tmp_path: Path) -> None:
    path = tmp_path / "m.bin"
    ck.write_v0(path, ck.TINY, ck.make_weights(ck.TINY, seed=3))
    with capi.Model(path) as m:
        _, c = lib()
        seq = ck.TINY.seq_len
        got = [c.l2_run_positions(m.handle, n) for n in (0, 1, 7, seq, seq + 1, 2**31 - 1)]
        assert got == [seq, 1, 7, seq, seq, seq]


def test_printable_len_is_runs_print_rule() -> None:
    """run.c's safe_printf: a single byte prints only when isprint or isspace (C locale); a
    piece prints up to its first NUL; an empty piece or one starting with NUL prints nothing."""
    ffi, c = lib()
    for b in range(256):
        want = 1 if 0x20 <= b < 0x7F or b in b"\t\n\v\f\r" else 0
        assert c.l2_printable_len(bytes([b]), 1) == want, b
    for piece, want in ((b"", 0), (b"\0abc", 0), (b"ab\0cd", 2), (b" Tom", 4), (b"\xe6\x97\xa5", 3)):
        assert c.l2_printable_len(piece, len(piece)) == want, piece


def _convert_with(m: capi.Model, path: Path, **fields: Any) -> tuple[int, str, list[dict[str, Any]]]:
    """l2_convert_with on q8 params with `fields` set (f16_layer_sites: a list of masks)."""
    ffi = m.ffi
    p = ffi.new("l2_convert_params *")
    p.type = m.c.L2_TYPE_Q8
    keep = []
    for k, v in fields.items():
        if k == "f16_layer_sites":
            keep.append(ffi.new("uint32_t[]", v) if v is not None else ffi.NULL)
            p.f16_layer_sites = keep[-1]
        else:
            setattr(p, k, v)
    cap = m.info["n_tensors"] + 1
    reports, n, err = ffi.new("l2_tensor_report[]", cap), ffi.new("int32_t *"), ffi.new("l2_error *")
    st = m.c.l2_convert_with(m.handle, str(path).encode(), p, reports, cap, n, err)
    return st, error_message(ffi, err), [{"name": ffi.string(r.name).decode(), "layer": r.layer,
                                     "bytes": r.bytes, "rows": r.rows, "cols": r.cols} for r in reports[0:n[0]]]


def test_f16_layer_sites_make_those_matrices_f16(tmp_path: Path) -> None:
    """f16_layer_sites[i] keeps layer i's matrices of those sites f16 (fast mode: layer 0's
    attention); the other layers stay int8."""
    path = tmp_path / "m.bin"
    ck.write_v0(path, ck.TINY, ck.make_weights(ck.TINY, seed=2))
    with capi.Model(path) as m:
        st, msg, reports = _convert_with(m, tmp_path / "m.l2", f16_layer_sites=[1], n_f16_layer_sites=1)
        assert st == 0, msg
        for r in reports:
            if r["name"] in ("wq", "wk", "wv", "wo", "w1", "w2", "w3"):
                f16 = r["name"] in ("wq", "wk", "wv") and r["layer"] == 0
                assert (r["bytes"] == 2 * r["rows"] * r["cols"]) == f16, r
    with capi.Model(tmp_path / "m.l2") as m:
        assert m.info["weight_type"] == m.c.L2_TYPE_Q8


@pytest.mark.parametrize(("fields", "message"), [
    ({"f16_layer_sites": [1], "n_f16_layer_sites": 99}, "invalid conversion parameters"),
    ({"f16_layer_sites": None, "n_f16_layer_sites": 1}, "invalid conversion parameters"),
    ({"f16_layer_sites": [1 << 4], "n_f16_layer_sites": 1}, "only layer matrices"),
    ({"two_part_sites": 1, "group_size": 8192}, "at most 4096"),
])
def test_convert_with_refuses(tmp_path: Path, fields: dict[str, Any], message: str) -> None:
    path = tmp_path / "m.bin"
    ck.write_v0(path, ck.TINY, ck.make_weights(ck.TINY, seed=3))
    with capi.Model(path) as m:
        st, msg, _ = _convert_with(m, tmp_path / "m.l2", **fields)
    assert st == m.c.L2_ERR_ARG and message in msg
    assert not (tmp_path / "m.l2").exists()
