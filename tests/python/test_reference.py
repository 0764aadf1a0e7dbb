"""Tests of the test infrastructure itself: checkpoint writers/reader, synthetic weights,
the float64 reference forward pass, the float32 sampler and the BPE tokenizer."""

from __future__ import annotations

import itertools
import random
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from storyteller.devtools import checkpoints as ck
from storyteller.devtools import reference as ref
from storyteller.devtools.checkpoints import GQA, STORIES260K, TINY, Config

MODELS = ck.shared_models_dir()


def shared_file(name: str) -> Path:
    path = MODELS / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path


# ----------------------------------------------------------------------------- forward pass


def test_stories260k_greedy_from_bos_matches_published_tokens() -> None:
    cfg, w = ck.read_v0(shared_file("stories260K.bin"))
    assert cfg == STORIES260K and "wcls" not in w
    assert ref.greedy(cfg, w, 1, 12) == [461, 461, 401, 401, 401, 461, 378, 455, 473, 456, 435, 299]


@pytest.mark.parametrize("cfg", [TINY, GQA], ids=["tiny", "gqa"])
def test_forward_all_agrees_with_incremental_decoding_and_is_causal(cfg: Config) -> None:
    w = ck.make_weights(cfg, seed=3, shared=False)
    toks = [1, *ref.greedy(cfg, w, 1, 15)]
    logits = ref.forward_all(cfg, w, toks)
    assert logits.shape == (16, cfg.vocab_size) and logits.dtype == np.float64
    assert np.argmax(logits[:15], axis=1).tolist() == toks[1:]
    np.testing.assert_allclose(ref.forward_all(cfg, w, toks[:5]), logits[:5], rtol=1e-12, atol=1e-12)


def test_kl_divergence() -> None:
    a = np.array([[0.0, 1.0, 2.0], [3.0, 0.0, 0.0]])
    assert np.allclose(ref.kl_divergence(a, a + 7.0), 0.0)
    p, q = np.array([0.25, 0.75]), np.array([0.5, 0.5])
    got = ref.kl_divergence(np.log(p), np.log(q))
    assert got == pytest.approx(0.25 * np.log(0.5) + 0.75 * np.log(1.5))
    assert (ref.kl_divergence(a, a[::-1]) > 0).all()


# ----------------------------------------------------------------------------- synthetic weights


def test_make_weights_shapes_dtype_and_determinism() -> None:
    w = ck.make_weights(GQA, seed=1, shared=False)
    assert {k: v.shape for k, v in w.items()} == ck.shapes(GQA, shared=False)
    assert all(v.dtype == np.float32 for v in w.values())
    assert "wcls" not in ck.make_weights(GQA, seed=1)
    assert all(np.array_equal(v, ck.make_weights(GQA, seed=1, shared=False)[k]) for k, v in w.items())
    bad = ck.with_nan(w, "wq", 5)
    assert np.isnan(bad["wq"].reshape(-1)[5]) and not np.isnan(w["wq"]).any()


@pytest.mark.parametrize("cfg", [TINY, GQA, ck.MHA, STORIES260K], ids=["tiny", "gqa", "mha", "260k"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "unshared"])
def test_synthetic_weights_behave_like_a_trained_model(cfg: Config, shared: bool) -> None:
    w = ck.make_weights(cfg, seed=0, shared=shared)
    n = min(cfg.seq_len, 32)
    toks = ref.greedy(cfg, w, 1, n)
    assert len(set(toks)) >= n // 3  # greedy decoding is not stuck on one token
    probs = np.exp(ref.log_softmax(ref.forward_all(cfg, w, [1, *toks[:-1]])))
    top1 = probs.max(axis=1)
    assert 0.15 < np.median(top1) < 0.7 and top1.max() < 0.999  # neither uniform nor one-hot
    kept = [int(np.searchsorted(np.cumsum(np.sort(p)[::-1]), 0.9)) + 1 for p in probs]
    assert 5 <= np.median(kept) <= 100  # top-p 0.9 keeps a meaningful set


# ----------------------------------------------------------------------------- writers, reader


def test_v0_write_read_roundtrip_sizes_and_short_tail(tmp_path: Path) -> None:
    hs, rope = TINY.head_size, TINY.seq_len * TINY.head_size  # both legacy tables, in floats
    shared_floats = 320 * 32 + 2 * 32 + 2 * 32 * 32 * 2 + 2 * 16 * 32 * 2 + 2 * 80 * 32 * 3 + 2 * 32 + 32
    assert hs == 8 and ck.expected_size(TINY, 0) == 28 + 4 * (shared_floats + rope)
    for shared in (True, False):
        w = ck.make_weights(TINY, seed=2, shared=shared)
        path = tmp_path / f"v0_{shared}.bin"
        ck.write_v0(path, TINY, w)
        assert path.stat().st_size == ck.expected_size(TINY, 0, shared)
        vocab = struct.unpack_from("<7i", path.read_bytes())[5]
        assert vocab == (TINY.vocab_size if shared else -TINY.vocab_size)
        cfg, back = ck.read_v0(path)
        assert cfg == TINY and back.keys() == w.keys()
        assert all(np.array_equal(back[k], w[k]) for k in w)
    w = ck.make_weights(TINY, seed=2)
    ck.write_v0(tmp_path / "short.bin", TINY, w, short_tail_bytes=160, real_rope=False)
    assert (tmp_path / "short.bin").stat().st_size == ck.expected_size(TINY, 0) - 160
    assert np.array_equal(ck.read_v0(tmp_path / "short.bin")[1]["rms_final"], w["rms_final"])
    with pytest.raises(ValueError):
        ck.write_v0(tmp_path / "bad.bin", TINY, ck.make_weights(TINY, 2, shared=False), short_tail_bytes=4)
    (tmp_path / "cut.bin").write_bytes((tmp_path / "v0_False.bin").read_bytes()[:-4])
    with pytest.raises(ValueError, match="wcls"):
        ck.read_v0(tmp_path / "cut.bin")


def test_v0_legacy_rope_tables_match_the_published_file() -> None:
    path = shared_file("stories260K.bin")
    cfg, _ = ck.read_v0(path)
    n = ck.expected_size(cfg, 0) // 4 - 7 - cfg.seq_len * cfg.head_size  # floats before RoPE
    tables = np.fromfile(path, dtype="<f4", offset=28 + 4 * n)
    cos, sin = ck.rope_tables(cfg)
    # the exporter computed the angles in float32: agreement to ~2e-6
    np.testing.assert_allclose(tables[: cos.size], cos.reshape(-1), atol=1e-5)
    np.testing.assert_allclose(tables[cos.size:], sin.reshape(-1)[: tables.size - cos.size], atol=1e-5)


def test_v1_layout(tmp_path: Path) -> None:
    w = ck.make_weights(TINY, seed=4, shared=False)
    ck.write_v1(tmp_path / "v1.bin", TINY, w)
    data = (tmp_path / "v1.bin").read_bytes()
    n_floats = sum(v.size for v in w.values())
    assert len(data) == ck.expected_size(TINY, 1, shared=False) == 256 + 4 * n_floats
    assert struct.unpack_from("<Ii7iB", data) == (0x616B3432, 1, 32, 80, 2, 4, 2, 320, 32, 0)
    assert data[37:256] == bytes(219)
    floats = np.frombuffer(data, "<f4", offset=256)
    assert np.array_equal(floats[:64], w["rms_att"].reshape(-1))
    assert np.array_equal(floats[-w["wcls"].size:], w["wcls"].reshape(-1))


def test_q8_quantization_is_flat_and_exact() -> None:
    x = np.random.default_rng(0).standard_normal(96).astype(np.float32)
    x[32:64] = 0.0  # an all-zero group
    q, s = ck.quantize_q8_flat(x, 32)
    assert q.dtype == np.int8 and s.dtype == np.float32 and q.shape == (96,) and s.shape == (3,)
    assert s[1] == 0 and not q[32:64].any()
    assert s[0] == np.float32(np.abs(x[:32]).max() / np.float32(127))
    assert np.abs(q.astype(int)).max() == 127 and q[np.argmax(np.abs(x[:32]))] in (127, -127)
    err = np.abs(ck.dequantize_q8_flat(q, s) - x).reshape(3, 32)
    assert (err <= s[:, None] * 0.5001).all()
    with pytest.raises(ValueError):
        ck.quantize_q8_flat(x, 64)


def test_v2_layout_with_groups_straddling_w2_rows(tmp_path: Path) -> None:
    w = ck.make_weights(TINY, seed=5)  # hidden 80: groups of 32 straddle w2's rows of 80
    ck.write_v2(tmp_path / "v2.bin", TINY, w, group_size=32)
    data = (tmp_path / "v2.bin").read_bytes()
    norms = 2 * 2 * 32 + 32
    nq = 320 * 32 + 2 * (2 * 32 * 32 + 2 * 16 * 32 + 3 * 80 * 32)
    assert len(data) == ck.expected_size(TINY, 2, group_size=32) == 256 + 4 * norms + nq + nq // 32 * 4
    assert struct.unpack_from("<Ii7iBi", data) == (0x616B3432, 2, 32, 80, 2, 4, 2, 320, 32, 1, 32)
    assert data[41:256] == bytes(215)
    # the last tensor is w3 of layer 1: its int8 values, then its float32 scales
    q, s = ck.quantize_q8_flat(w["w3"][1], 32)
    tail = data[len(data) - q.size - 4 * s.size:]
    assert tail[: q.size] == q.tobytes() and tail[q.size:] == s.astype("<f4").tobytes()
    assert ck.dequantize_like_v2(TINY, w, 32)["w2"].shape == w["w2"].shape
    with pytest.raises(ValueError):
        ck.write_v2(tmp_path / "bad.bin", TINY, w, group_size=7)
    assert ck.expected_size(GQA, 2, shared=False, group_size=16) > 0
    ck.write_v2(tmp_path / "gqa.bin", GQA, ck.make_weights(GQA, 0, shared=False), 16)
    assert (tmp_path / "gqa.bin").stat().st_size == ck.expected_size(GQA, 2, shared=False, group_size=16)


def test_tokenizer_bin_roundtrip(tmp_path: Path) -> None:
    pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n", b" ", b"ab"]
    ck.write_tokenizer_bin(tmp_path / "t.bin", pieces, [0.0, 0.0, 0.0, -1.0, -2.5])
    assert ref.load_tokenizer_bin(tmp_path / "t.bin", 5) == (pieces, [0.0, 0.0, 0.0, -1.0, -2.5], 6)


# ----------------------------------------------------------------------------- sampler


def test_xorshift_rng_matches_c() -> None:
    # Hand computation of the first value for seed 42 with Python ints:
    s = 42
    s ^= s >> 12  # 42
    s ^= (s << 25) % 2**64  # 42 | 42 << 25 = 1409286186
    s ^= s >> 27  # >> 27 is 10: 1409286176
    assert s == 1409286176
    assert ref.XorShiftRng(42).random_u32() == (s * 0x2545F4914F6CDD1D) % 2**64 >> 32 == 1456360119
    # values printed by a C program (uint64_t arithmetic) for seed 42
    rng = ref.XorShiftRng(42)
    expected = [1456360119, 3359763283, 3393612768, 4054632243, 3283045847]
    assert [rng.random_u32() for _ in range(5)] == expected
    rng = ref.XorShiftRng(42)
    f = [rng.random_f32() for _ in range(3)]
    assert all(isinstance(v, np.float32) for v in f)
    assert f == [np.float32(v) for v in (0.339085221, 0.782255828, 0.790136993)]
    assert f[0] == (1456360119 >> 8) / 16777216


def test_sample_argmax_draws_nothing_and_takes_first_maximum() -> None:
    rng = ref.XorShiftRng(7)
    logits = np.array([0.5, 2.0, -1.0, 2.0], np.float32)
    assert ref.sample(logits, 0.0, 0.9, rng) == 1 and rng.state == 7


def test_sample_draws_exactly_one_coin() -> None:
    logits = np.random.default_rng(1).standard_normal(50).astype(np.float32)
    for topp in (0.0, 0.5, 0.9, 1.0):
        rng, twin = ref.XorShiftRng(99), ref.XorShiftRng(99)
        ref.sample(logits, 0.8, topp, rng)
        twin.random_u32()
        assert rng.state == twin.state


def first_coins(n: int) -> list[float]:
    rng = ref.XorShiftRng(42)
    return [float(rng.random_f32()) for _ in range(n)]  # 0.339, 0.782, 0.790


def test_sample_multinomial_walks_the_cdf_in_id_order() -> None:
    probs = np.array([0.3, 0.05, 0.6, 0.05], np.float32)  # cdf .3 .35 .95 1
    assert ref.sample(np.log(probs), 1.0, 1.0, ref.XorShiftRng(42)) == 1  # coin .339
    assert ref.sample(np.log(probs), 1.0, 0.0, ref.XorShiftRng(42)) == 1


def test_sample_topp_sorts_descending_with_ties_by_id_and_truncates() -> None:
    # sorted: id2 .4, id0 .25, id3 .25, (id1 .1 dropped: .4+.25+.25 = .9 > .85); cdf .4 .65 .9
    probs = np.array([0.25, 0.1, 0.4, 0.25], np.float32)
    logits = np.log(probs)
    assert first_coins(1)[0] * 0.9 < 0.4  # r = coin * 0.9 ~ .305: first kept
    assert ref.sample(logits, 1.0, 0.85, ref.XorShiftRng(42)) == 2
    rng = ref.XorShiftRng(42)
    rng.random_u32()  # coin .782 -> r .704: past .65, below .9 -> the tie broken by id: 3
    assert ref.sample(logits, 1.0, 0.85, rng) == 3


def test_softmax_accumulates_sequentially_in_float32() -> None:
    x = np.random.default_rng(2).standard_normal(32000).astype(np.float32) * 3
    e = np.exp((x - x.max()).astype(np.float64)).astype(np.float32)
    total = np.float32(0.0)
    for v in e:
        total = np.float32(total + v)
    assert np.array_equal(ref.softmax_f32(x), e / total)


# ----------------------------------------------------------------------------- tokenizer


Vocab = tuple[list[bytes], list[float]]
Encoder = Callable[[str], list[int]]


@pytest.fixture(scope="module")
def vocab() -> Vocab:
    pieces, scores, max_len = ref.load_tokenizer_bin(shared_file("tokenizer.bin"), 32000)
    assert max_len == max(len(p) for p in pieces) == 27
    return pieces, scores


@pytest.fixture(scope="module")
def spm_encode() -> Encoder:
    spm = pytest.importorskip("sentencepiece")
    proc = spm.SentencePieceProcessor(model_file=str(shared_file("tokenizer.model")))
    return lambda text: list(proc.encode(text))


TEXT = """once upon a time there was little girl named Lily she loved to play outside with her
big red ball one day saw cat dog bird tree sun happy sad mom said don't can't it's Tim Sue
Ben went park and the of in on were jumped ran quickly 42 2023 3.14 café naïve résumé Zürich
façade 日本語 東京 привет мир 😀 🌍 ✨ — … “quoted” ½"""
WORDS = TEXT.split()
PUNCT = ("", "", "", ".", ",", "!", "?", ";", ":", "'s", "\"", ")", "...")
SEPARATORS = (" ", " ", " ", " ", " ", "  ", "   ", "\n", "\n\n", "\t", " \n")


def english_strings(n: int, seed: int = 1234) -> list[str]:
    """Varied English-like text: punctuation, capitals, digits, accents, CJK, emoji,
    repeated spaces, tabs, newlines, leading and trailing whitespace, single characters."""
    rng = random.Random(seed)
    out = ["a", "A", " ", "  ", "\n", "x y", "Hello, world!", "I", "1", "é", "😀"]
    while len(out) < n:
        words = [rng.choice(WORDS) + rng.choice(PUNCT) for _ in range(rng.randint(1, 14))]
        words = [w.capitalize() if rng.random() < 0.2 else w.upper() if rng.random() < 0.05 else w
                 for w in words]
        text = "".join(w + rng.choice(SEPARATORS) for w in words)
        out.append(text if rng.random() < 0.3 else text.strip())
    return out


# llama2.c's encode and sentencepiece agree on all of these, and on 3000 random strings
# mixing ASCII, Latin-1/Latin Extended and arbitrary code points, on every code point below
# U+3000 alone and in context, and on every piece of the vocabulary as text. The one class
# that differs is text containing U+2581 "▁" (sentencepiece's whitespace meta symbol): see
# test_u2581_is_the_one_difference_from_sentencepiece. Invalid UTF-8 and NUL cannot be given
# to sentencepiece at all.
def test_encode_matches_sentencepiece(vocab: Vocab, spm_encode: Encoder) -> None:
    pieces, scores = vocab
    texts = english_strings(400)
    assert not any("\u2581" in t for t in texts)
    mismatches = [t for t in texts
                  if ref.encode(t.encode(), pieces, scores, True, False) != [1, *spm_encode(t)]]
    assert mismatches == []


def test_u2581_is_the_one_difference_from_sentencepiece(vocab: Vocab, spm_encode: Encoder) -> None:
    # sentencepiece escapes spaces as U+2581 before encoding, so a literal U+2581 in the input
    # is a space to it. tokenizer.bin stores spaces as b" " and has no piece for U+2581, so
    # llama2.c falls back to its three UTF-8 bytes e2 96 81 -> tokens 229 153 132.
    pieces, scores = vocab
    text = "a\u2581b"
    assert spm_encode(text) == spm_encode("a b")
    assert ref.encode(text.encode(), pieces, scores, True, False) == [1, 263, 229, 153, 132, 29890]
    assert ref.encode(b"a b", pieces, scores, True, False) == [1, *spm_encode("a b")]


def test_encode_flags_and_invalid_utf8(vocab: Vocab) -> None:
    pieces, scores = vocab

    def enc(text: bytes) -> list[int]:
        return ref.encode(text, pieces, scores, False, False)

    assert ref.encode(b"", pieces, scores, True, False) == [1]
    assert ref.encode(b"", pieces, scores, False, True) == [2]
    assert ref.encode(b"a", pieces, scores, True, True) == [1, 263, 2]  # " a" merged
    sp, e_acute, globe = 29871, pieces.index("é".encode()), pieces.index("🌍".encode())
    assert enc(b"\xff") == [sp, 0xFF + 3]  # a byte that is never UTF-8
    assert enc(b"\x80a") == [sp, 0x80 + 3, pieces.index(b"a")]  # lone continuation byte
    assert enc(b"\xe4\xbd") == [sp, 0xE4 + 3, 0xBD + 3]  # truncated sequence: no such piece
    assert enc(b"a\xc3") == [pieces.index(b" a"), 0xC3 + 3]
    assert enc("é".encode()) == [pieces.index(" é".encode())]  # code point, then merged
    assert enc("aé".encode())[-1] == e_acute
    assert enc(b"\xc3\xa9\xa9") == [sp, 0xC3 + 3, 0xA9 + 3, 0xA9 + 3]  # 3 bytes: not a piece
    assert enc("🌍".encode() + b"\x80") == [sp, globe, 0x80 + 3]  # at most 4 bytes per code point
    with pytest.raises(ValueError):
        enc(b"a\0b")


def test_decode_piece_roundtrips_encode(vocab: Vocab) -> None:
    pieces, scores = vocab
    for text in [t.encode() for t in english_strings(60, seed=7)] + [b"\xff\xfe x", b"  lead", b"\x80\x80"]:
        toks = ref.encode(text, pieces, scores, True, False)
        out = b"".join(ref.decode_piece(pieces, prev, tok) for prev, tok in itertools.pairwise(toks))
        assert out == text
    assert ref.decode_piece(pieces, 5, pieces.index(b" a")) == b" a"
    assert ref.decode_piece(pieces, 1, pieces.index(b" a")) == b"a"
    assert ref.decode_piece(pieces, 1, 13) == b"\n"  # <0x0A>
    toy = [b"<0xaB>", b"<0xABC>", b"<0x4>"]
    assert [ref.decode_piece(toy, 0, i) for i in range(3)] == [b"\xab", b"<0xABC>", b"<0x4>"]


def test_printable_piece() -> None:
    assert ref.printable_piece(b"\x07") == b"" and ref.printable_piece(b"\xe4") == b""
    assert ref.printable_piece(b"\n") == b"\n" and ref.printable_piece(b"ab\0c") == b"ab"
    assert ref.printable_piece(b"") == b"" and ref.printable_piece("é".encode()) == "é".encode()
