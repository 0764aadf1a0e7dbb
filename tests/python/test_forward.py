"""The C forward pass (l2_session_*) against reference.py's float64 forward pass.

Synthetic checkpoints (checkpoints.make_weights) in every llama2.c format and the packed
format, plus the real stories260K.bin. Measured numbers are printed (pytest -s shows them);
the assert bounds sit ~2-3x above what was measured on x86-64 (generic kernels, and avx2,
which gives the same bits).

About the f32 tolerance: the spec asks for 1e-5 relative in max-norm at every position. The
real stories260K model meets it at all 256 positions (measured 6.9e-6). The synthetic
weights are harsher: calibrated to attend peakily (QK gain 2.5), they amplify float32
rounding, so a correct float32 engine drifts from float64 as positions accumulate. Over 20
seeds per small shape, positions 0-15 stayed <= 8.1e-6, but over all 64 positions a few
seeds reached 1.2-1.34e-5 (GQA shape: 3 of 20; hidden 100: 1 of 20). At the stories15M
shape (6 layers) the engine, which sums in llama2.c's sequential order so that it gives
upstream `run`'s logits bit for bit, drifts to 4.9e-5 (positions 0-6 <= 1e-5): a numpy
emulation of llama2.c's float32 operations in their order gave 5.5e-5 there, and half-ulp
noise on the weights alone moves the float64 logits by 6-8e-6. test_f32_within_1e5_at_every_position
holds every shape to 1e-5 at all 64 positions with trained-like attention (QK gain 1.5:
6.1e-6 at the stories15M shape). With the peakier default weights the synthetic models are
held to 1e-5 for their first positions (16; 7 at the stories15M shape) and to 2e-5 (1e-4
at the stories15M shape) at every one.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import capi
import numpy as np
import pytest

from storyteller.devtools import checkpoints as ck
from storyteller.devtools import reference as ref

N_POS = 64
F32_TOL = 1e-5

TINY64 = dataclasses.replace(ck.TINY, seq_len=N_POS)          # hidden 80: not a multiple of 32
MHA64 = dataclasses.replace(ck.MHA, seq_len=N_POS)
ODD = ck.Config(dim=40, hidden_dim=100, n_layers=2, n_heads=5, n_kv_heads=5, vocab_size=300,
                seq_len=N_POS)                                 # head_size 8, 5 heads, hidden 100

# name -> (config, shared classifier, weight seed)
SHAPES: dict[str, tuple[ck.Config, bool, int]] = {
    "tiny": (TINY64, True, 11),              # 4 heads / 2 KV heads, hidden 80
    "tiny_unshared": (TINY64, False, 12),    # negative vocab_size in v0, wcls after RoPE tables
    "gqa": (ck.GQA, True, 13),               # 6 heads / 2 KV heads (groups of 3), hidden 136
    "mha": (MHA64, True, 14),                # n_kv_heads == n_heads
    "odd": (ODD, True, 15),                  # 5 heads, hidden 100 (not a multiple of 32 or 8)
    "stories15m": (ck.STORIES15M, True, 16),  # 288/768/6/6/32000/256
}
SMALL = [n for n in SHAPES if n != "stories15m"]


def rel_err(c: np.ndarray, r: np.ndarray) -> np.ndarray:
    """max|c - r| / max|r| per position (last axis)."""
    return np.max(np.abs(c - r), axis=-1) / np.max(np.abs(r), axis=-1)


@dataclass
class Case:
    name: str
    cfg: ck.Config
    w: dict[str, np.ndarray]
    tokens: list[int]
    dir: Path
    v0: Path
    ref: np.ndarray                      # float64 (N_POS, vocab)
    cache: dict[Any, Any] = field(default_factory=dict)

    def path(self, label: str) -> Path:
        return self.dir / f"{label}.bin"

    def c_logits(self, path: Path, kv_type: str = "f32") -> np.ndarray:
        """Per-token C logits of self.tokens, cached per (file, kv type)."""
        key = (str(path), kv_type)
        if key not in self.cache:
            self.cache[key] = capi.run_logits(path, self.tokens, kv_type=kv_type)
        return self.cache[key]

    def packed(self, type_: str, gs: int = 0) -> Path:
        """The v0 file converted to the packed format (once)."""
        out = self.path(f"packed_{type_}_g{gs}")
        if not out.exists():
            capi.convert(self.v0, out, type_, gs)
        return out


def _tokens(cfg: ck.Config, seed: int) -> list[int]:
    rng = np.random.default_rng(seed + 1000)
    return [1] + [int(t) for t in rng.integers(0, cfg.vocab_size, N_POS - 1)]


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory):
    built: dict[str, Case] = {}

    def get(name: str) -> Case:
        if name not in built:
            cfg, shared, seed = SHAPES[name]
            w = ck.make_weights(cfg, seed, shared)
            d = tmp_path_factory.mktemp(name)
            tokens = _tokens(cfg, seed)
            ck.write_v0(d / "v0.bin", cfg, w)
            built[name] = Case(name, cfg, w, tokens, d, d / "v0.bin",
                               ref.forward_all(cfg, w, tokens))
        return built[name]

    return get


# ----------------------------------------------------------------------------- f32


# (positions held to F32_TOL, bound at every position); see the module docstring
F32_BOUNDS = {"stories15m": (7, 1e-4)}
F32_BOUNDS_DEFAULT = (16, 2e-5)


def _check_f32(c: Case, logits: np.ndarray, what: str) -> None:
    err = rel_err(logits, c.ref)
    first, bound = F32_BOUNDS.get(c.name, F32_BOUNDS_DEFAULT)
    print(f"\n{c.name} {what}: f32 max rel err {err.max():.2e} (first {first}: {err[:first].max():.2e}), "
          f"{np.sum(err > F32_TOL)} of {err.size} positions above {F32_TOL}")
    bad = np.flatnonzero(err[:first] > F32_TOL)
    assert bad.size == 0, f"positions {bad} exceed {F32_TOL}: {err[bad]}"
    bad = np.flatnonzero(err > bound)
    assert bad.size == 0, f"positions {bad} exceed {bound}: {err[bad]}"


@pytest.mark.parametrize("name", list(SHAPES))
def test_f32_within_1e5_at_every_position(tmp_path: Path, name: str) -> None:
    """The spec's bound, 1e-5 relative (max-norm) at every one of 64 positions, on every shape
    with attention as peaky as a trained model's (QK gain 1.5; the trained stories260K is held
    to the same bound over 256 positions in test_stories260k_f32_logits)."""
    cfg, shared, seed = SHAPES[name]
    w = ck.make_weights(cfg, seed, shared, qk_gain=1.5)
    tokens = _tokens(cfg, seed)
    ck.write_v0(tmp_path / "v0.bin", cfg, w)
    with capi.Model(tmp_path / "v0.bin") as m, m.session() as s:
        err = rel_err(s.eval_each(tokens), ref.forward_all(cfg, w, tokens))
    print(f"\n{name} (QK gain 1.5): f32 max rel err {err.max():.2e}")
    assert err.max() <= F32_TOL, f"positions {np.flatnonzero(err > F32_TOL)} exceed {F32_TOL}"


@pytest.mark.parametrize("name", list(SHAPES))
def test_f32_v0_matches_float64_reference(case, name: str) -> None:
    c = case(name)
    with capi.Model(c.v0) as m:
        assert m.info["file_kind"] == capi.FILE_V0
        assert m.info["shared_classifier"] == (name != "tiny_unshared")
        with m.session() as s:
            each = s.eval_each(c.tokens)
            assert s.pos == N_POS
        c.cache[(str(c.v0), "f32")] = each
        _check_f32(c, each, "v0 one token per eval")

        # the same positions in one call: the last logits are bit for bit the same
        with m.session() as s:
            s.eval(c.tokens)
            assert s.pos == N_POS
            np.testing.assert_array_equal(s.logits(), each[-1])
        if name == "stories15m":
            return
        # and in uneven chunks: each chunk's last logits equal the per-token ones
        with m.session() as s:
            at = 0
            for n in (1, 2, 5, 17, 39):
                s.eval(c.tokens[at:at + n])
                at += n
                np.testing.assert_array_equal(s.logits(), each[at - 1])
            assert at == N_POS


@pytest.mark.parametrize("name", SMALL)
def test_f32_v1_is_bitwise_v0(case, name: str) -> None:
    c = case(name)
    v1 = c.path("v1")
    ck.write_v1(v1, c.cfg, c.w)
    with capi.Model(v1) as m:
        assert m.info["file_kind"] == capi.FILE_V1
        assert m.info["format_version"] == 1
        assert m.info["shared_classifier"] == (name != "tiny_unshared")
        with m.session() as s:
            v1_logits = s.eval_each(c.tokens)
    np.testing.assert_array_equal(v1_logits, c.c_logits(c.v0))
    _check_f32(c, v1_logits, "v1")


@pytest.mark.parametrize("name", list(SHAPES))
def test_packed_f32_is_bitwise_v0(case, name: str) -> None:
    c = case(name)
    path = c.packed("f32")
    np.testing.assert_array_equal(c.c_logits(path), c.c_logits(c.v0))


# ----------------------------------------------------------------------------- f16 and q8

# Bounds on KL(reference || engine) per position, (mean, max), ~2.5-3x above what was
# measured (x86-64, generic kernels, 64 positions; measured values in the comments).
# f16 runs use f16 weights and an f16 KV cache.
F16_KL = {
    "tiny": (6e-5, 3e-4),            # measured mean 2.1e-5, max 1.0e-4
    "tiny_unshared": (5e-5, 8e-4),   # 1.7e-5, 2.7e-4
    "gqa": (3e-4, 2e-3),             # 1.0e-4, 6.4e-4
    "mha": (6e-5, 5e-4),             # 2.2e-5, 1.8e-4
    "odd": (6e-5, 6e-4),             # 1.9e-5, 2.0e-4
    "stories15m": (4e-3, 3e-2),      # 1.3e-3, 9.9e-3 (the ill-conditioned shape, see above)
}
F32_WEIGHTS_F16_KV_KL = {
    "tiny": (1.5e-5, 1e-4),          # 5.7e-6, 3.8e-5
    "gqa": (8e-5, 5e-4),             # 2.9e-5, 1.7e-4
}

# q8 with an f16 KV cache (l2run's default for packed q8). The activations are quantized to
# int8 per group as well, so this is weights-and-activations q8.
Q8_KL = {
    ("tiny", 32): (0.05, 0.7),       # measured mean 0.020, max 0.27 (hidden 80 % 32 != 0)
    ("tiny", 64): (0.05, 0.7),       # 0.018, 0.24 (one padded group per dim-row)
    ("tiny", 48): (0.05, 0.5),       # 0.017, 0.19 (48 divides neither 32 nor 80)
    ("tiny_unshared", 32): (0.03, 0.2),  # 0.010, 0.077
    ("gqa", 32): (0.15, 2.5),        # 0.058, 0.92
    ("gqa", 64): (0.18, 2.0),        # 0.069, 0.80
    ("gqa", 48): (0.18, 2.5),        # 0.071, 0.94
    ("odd", 48): (0.05, 0.5),        # 0.019, 0.18
    # 0.73, 2.5: the synthetic stories15M shape is very sensitive to any weight rounding;
    # weights-only q8 g32 (row groups) in float64 already gives a mean KL of 0.63.
    ("stories15m", 32): (2.0, 6.0),
}


def _kl(c: Case, logits: np.ndarray, what: str) -> tuple[float, float, float]:
    kl = ref.kl_divergence(c.ref, logits)
    agree = float(np.mean(np.argmax(logits, -1) == np.argmax(c.ref, -1)))
    print(f"\n{c.name} {what}: KL mean {kl.mean():.3g} max {kl.max():.3g}, argmax agreement {agree:.3f}")
    return float(kl.mean()), float(kl.max()), agree


@pytest.mark.parametrize("name", list(SHAPES))
def test_f16_weights_f16_kv_kl(case, name: str) -> None:
    c = case(name)
    path = c.packed("f16")
    with capi.Model(path) as m:
        assert (m.info["weight_type"], m.info["group_size"]) == (capi.TYPE_F16, 0)
    mean, mx, _ = _kl(c, c.c_logits(path, "f16"), "f16 weights, f16 KV")
    bound_mean, bound_max = F16_KL[name]
    assert mean <= bound_mean and mx <= bound_max


@pytest.mark.parametrize("name", list(F32_WEIGHTS_F16_KV_KL))
def test_f32_weights_f16_kv_kl(case, name: str) -> None:
    c = case(name)
    mean, mx, _ = _kl(c, c.c_logits(c.v0, "f16"), "f32 weights, f16 KV")
    bound_mean, bound_max = F32_WEIGHTS_F16_KV_KL[name]
    assert mean <= bound_mean and mx <= bound_max


@pytest.mark.parametrize(("name", "gs"), list(Q8_KL))
def test_q8_kl(case, name: str, gs: int) -> None:
    c = case(name)
    path = c.packed("q8", gs)
    with capi.Model(path) as m:
        assert (m.info["weight_type"], m.info["group_size"]) == (capi.TYPE_Q8, gs)
        assert m.info["file_kind"] == capi.FILE_PACKED
    mean, mx, _ = _kl(c, c.c_logits(path, "f16"), f"q8 g{gs}, f16 KV")
    bound_mean, bound_max = Q8_KL[(name, gs)]
    assert mean <= bound_mean and mx <= bound_max


def test_q8_default_group_is_32(case) -> None:
    c = case("tiny")
    out = c.path("q8_default")
    capi.convert(c.v0, out, "q8", 0)
    with capi.Model(out) as m:
        assert m.info["group_size"] == 32
    assert out.read_bytes() == c.packed("q8", 32).read_bytes()


@pytest.mark.parametrize(("type_", "gs"), [("f32", 0), ("f16", 0), ("q8", 32), ("q8", 48), ("q8", 7)])
def test_convert_reports(case, type_: str, gs: int) -> None:
    """One report per tensor in file order, and max errors within the type's rounding."""
    c = case("tiny_unshared")
    cfg = c.cfg
    reports = capi.convert(c.v0, c.path(f"rep_{type_}{gs}"), type_, gs)
    assert len(reports) == 3 + 9 * cfg.n_layers
    names = [r["name"] for r in reports]
    assert names[0] == "token_embedding" and names[-2:] == ["rms_final", "wcls"]
    assert names[1:10] == ["rms_att", "wq", "wk", "wv", "wo", "rms_ffn", "w1", "w3", "w2"]
    for r in reports:
        src = c.w[r["name"]] if r["layer"] < 0 else c.w[r["name"]][r["layer"]]
        src = src.reshape(r["rows"], r["cols"])
        assert r["max_abs_value"] == pytest.approx(float(np.abs(src).max()), rel=1e-7)
        if r["name"].startswith("rms") or type_ == "f32":
            assert r["max_abs_error"] == 0.0
        elif type_ == "f16":  # half an ulp of the largest value, relative 2^-11
            assert r["max_abs_error"] <= r["max_abs_value"] * 2.0**-11
        else:  # half a quantization step of the largest group
            assert 0 < r["max_abs_error"] <= r["max_abs_value"] / 254 * (1 + 1e-5)


def packed_tensors(path: Path) -> dict[tuple[str, int], tuple[int, int, int, bytes, bytes]]:
    """(name, layer) -> (type, rows, cols, values bytes, scales bytes) of a packed file,
    parsed as FORMAT.md describes it."""
    data = path.read_bytes()
    magic, version, _, n = struct.unpack_from("<4I", data, 0)
    assert (magic, version) == (0x5652324C, 2)
    out = {}
    for i in range(n):
        e = 128 + 64 * i
        name = data[e:e + 16].rstrip(b"\0").decode()
        layer, type_, rows, cols, off, nbytes, soff, sbytes = struct.unpack_from("<iIIIQQQQ", data, e + 16)
        out[(name, layer)] = (type_, rows, cols, data[off:off + nbytes], data[soff:soff + sbytes])
    return out


def _absmax_q8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """llama2.c's rounding of groups along the last axis: (int8 values, f32 scales)."""
    scale = (np.abs(x).max(axis=-1) / np.float32(127)).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1))
    q = np.where(scale[..., None] > 0, np.clip(np.rint(x / safe[..., None]), -127, 127), 0).astype(np.int8)
    return q, scale


def q8_pack(a: np.ndarray, gs: int) -> tuple[bytes, bytes]:
    """FORMAT.md's q8 layout (version 2) of a (rows, cols) float32 matrix: values, scales.
    Whole blocks of 32 rows, then the rows%32 tail rows row-major in flat groups of gs."""
    rows, cols = a.shape
    tail = rows % 32
    flat = a[rows - tail:].reshape(-1)
    padded = np.zeros(-(-flat.size // gs) * gs, np.float32)
    padded[:flat.size] = flat
    tq, ts = _absmax_q8(padded.reshape(-1, gs))
    tail_values, tail_scales = tq.reshape(-1)[:flat.size].tobytes(), ts.astype("<f4").tobytes()
    rows -= tail
    prows, groups = rows, -(-cols // gs)
    x = np.zeros((prows, groups * gs), np.float32)
    x[:rows, :cols] = a[:rows]
    q, scale = _absmax_q8(x.reshape(prows, groups, gs))  # scale: (prows, groups)
    # blocks of 32 rows; per block, per group, per column, the block's 32 rows
    values = q.reshape(prows // 32, 32, groups, gs).transpose(0, 2, 3, 1)
    scales = scale.reshape(prows // 32, 32, groups).transpose(0, 2, 1)
    return values.tobytes() + tail_values, scales.astype("<f4").tobytes() + tail_scales


@pytest.mark.parametrize("gs", [32, 48, 7, 1])
def test_q8_layout_matches_format(case, gs: int) -> None:
    """The converter's q8 bytes are FORMAT.md's layout of llama2.c's quantization, exactly."""
    c = case("tiny_unshared")
    tensors = packed_tensors(c.packed("q8", gs))
    assert len(tensors) == 3 + 9 * c.cfg.n_layers
    for (name, layer), (type_, rows, cols, values, scales) in tensors.items():
        src = c.w[name] if layer < 0 else c.w[name][layer]
        if name.startswith("rms"):
            assert (type_, rows, cols) == (capi.TYPE_F32, 1, c.cfg.dim)
            assert values == src.astype("<f4").tobytes() and scales == b""
            continue
        assert (type_, rows, cols) == (capi.TYPE_Q8, *src.shape)
        ev, es = q8_pack(src, gs)
        assert scales == es, f"{name} {layer} scales"
        assert values == ev, f"{name} {layer} values"


@pytest.mark.parametrize("name", ["tiny", "gqa", "odd"])
def test_q8_group_1_is_float_accurate(case, name: str) -> None:
    """With one scale per value (weights and activations), q8 is exact up to float32
    rounding: any error in the blocked layout or the kernels' indexing would show."""
    c = case(name)
    logits = c.c_logits(c.packed("q8", 1))
    err = rel_err(logits, c.ref)
    print(f"\n{name} q8 g1: max rel err {err.max():.2e}")  # measured 5e-6 .. 1e-5
    assert err.max() <= 3e-5


def _f16_sweep() -> np.ndarray:
    """Values exercising every f16 rounding case: normals, subnormals, ties, the edges."""
    rng = np.random.default_rng(5)
    special = np.array([0.0, -0.0, 65504.0, -65504.0, 65519.99, 65504.0 + 15.9, 2.0**-24, 2.0**-25,
                        3 * 2.0**-26, 2.0**-26, 2.0**-14, 2.0**-14 - 2.0**-25, 2.0**-14 * (1 - 2.0**-12),
                        1 + 2.0**-11, 1 + 3 * 2.0**-11, 1 + 2.0**-11 + 2.0**-20, 2.0**-25 * 1.0000001,
                        1e-30, -1e-30, 6e-8, -6e-8, 1.0, -1.0], dtype=np.float32)
    mags = 2.0 ** rng.uniform(-28, 15.9, 12000)
    ties = (rng.integers(1, 2048, 2000) * 2 + 1) * 2.0 ** rng.integers(-25, 4, 2000)  # half-ulp ties
    vals = np.concatenate([special, mags, ties / 2048.0 * 2.0 ** -10]).astype(np.float32)
    vals = vals[np.abs(vals) < 65520]
    signs = np.where(rng.random(vals.size) < 0.5, -1, 1).astype(np.float32)
    return vals * signs


def test_f16_conversion_is_ieee(tmp_path: Path) -> None:
    """f32 -> f16 (the converter) is IEEE round to nearest even, and f16 -> f32 (the f16
    loader path, re-exported to f32) exact, subnormals included."""
    vals = _f16_sweep()
    cfg = ck.Config(dim=32, hidden_dim=64, n_layers=1, n_heads=4, n_kv_heads=4,
                    vocab_size=-(-vals.size // 32), seq_len=8)
    w = ck.make_weights(cfg, 1)
    emb = w["token_embedding"].reshape(-1)
    emb[:vals.size] = vals
    ck.write_v0(tmp_path / "v0.bin", cfg, w)
    capi.convert(tmp_path / "v0.bin", tmp_path / "f16.bin", "f16")
    capi.convert(tmp_path / "f16.bin", tmp_path / "f32.bin", "f32")
    half = np.frombuffer(packed_tensors(tmp_path / "f16.bin")[("token_embedding", -1)][3], "<u2")
    expected = emb.astype(np.float16)
    bad = np.flatnonzero(half != expected.view(np.uint16))
    want = expected.view(np.uint16)
    assert bad.size == 0, f"f32->f16 differs for {emb[bad][:10]}: got {half[bad][:10]}, want {want[bad][:10]}"
    back = np.frombuffer(packed_tensors(tmp_path / "f32.bin")[("token_embedding", -1)][3], "<f4")
    np.testing.assert_array_equal(back, expected.astype(np.float32))


@pytest.mark.parametrize("type_", ["f32", "f16"])
def test_reconvert_is_lossless(case, type_: str) -> None:
    """Converting a packed f32/f16 file to its own type rewrites the same bytes."""
    c = case("tiny_unshared")
    src = c.packed(type_)
    again = c.path(f"again_{type_}")
    capi.convert(src, again, type_)
    assert again.read_bytes() == src.read_bytes()


@pytest.mark.parametrize("value", [65520.0, 1e5, -3e38])
def test_convert_f16_overflow_fails(tmp_path: Path, value: float) -> None:
    """A finite weight beyond f16's range must not become infinity in the file: that model
    could only fail at run time ("non-finite logit ... corrupt weights?"). The converter
    refuses NaN and infinity in its input; it must refuse making them too, naming the tensor.
    (Currently fails: convert.c writes inf and reports success.)"""
    cfg = ck.TINY
    w = ck.with_nan(ck.make_weights(cfg, 3), "wq", cfg.dim * cfg.dim + 5, value)  # layer 1
    ck.write_v0(tmp_path / "v0.bin", cfg, w)
    out = tmp_path / "f16.bin"
    with pytest.raises(capi.L2Error) as e:
        capi.convert(tmp_path / "v0.bin", out, "f16")
    assert "wq (layer 1)" in e.value.message
    assert not out.exists() and not Path(f"{out}.tmp").exists()


# ----------------------------------------------------------------------------- v2 (runq)

# (shape, group size): hidden_dim % gs != 0 makes the flat groups straddle the rows of w2
V2_CASES = [
    ("tiny", 32),            # hidden 80: straddles
    ("tiny_unshared", 16),   # hidden 80 = 5 * 16: aligned, unshared wcls quantized too
    ("gqa", 16),             # GQA, hidden 136: straddles
    ("gqa", 8),              # GQA, aligned
    ("odd", 40),             # hidden 100: straddles
]


@pytest.mark.parametrize(("name", "gs"), V2_CASES)
def test_v2_matches_float64_of_dequantized(case, name: str, gs: int) -> None:
    c = case(name)
    v2 = c.path(f"v2_g{gs}")
    ck.write_v2(v2, c.cfg, c.w, gs)
    assert os.path.getsize(v2) == ck.expected_size(c.cfg, 2, name != "tiny_unshared", gs)
    deq = ck.dequantize_like_v2(c.cfg, c.w, gs)
    r = ref.forward_all(c.cfg, deq, c.tokens)
    with capi.Model(v2) as m:
        info = m.info
        assert (info["file_kind"], info["weight_type"], info["group_size"]) == (
            capi.FILE_V2, capi.TYPE_Q8_FLAT, gs)
        with m.session() as s:
            logits = s.eval_each(c.tokens)
    _check_f32(dataclasses.replace(c, ref=r), logits, f"v2 g{gs} (vs the dequantized weights)")


@pytest.mark.parametrize(("name", "gs"), [("tiny", 32), ("gqa", 16), ("tiny_unshared", 16)])
def test_v2_to_q8(case, name: str, gs: int) -> None:
    """v2 -> packed q8 (row groups of the same size), against the dequantized v2 weights."""
    c = case(name)
    v2 = c.path(f"v2q_g{gs}")
    ck.write_v2(v2, c.cfg, c.w, gs)
    out = c.path(f"v2q_g{gs}_q8")
    capi.convert(v2, out, "q8", gs)
    r = ref.forward_all(c.cfg, ck.dequantize_like_v2(c.cfg, c.w, gs), c.tokens)
    logits = capi.run_logits(out, c.tokens, kv_type="f16")
    kl = ref.kl_divergence(r, logits)
    print(f"\n{name} v2 g{gs} -> q8 g{gs}: KL mean {kl.mean():.3g} max {kl.max():.3g}")
    # measured (mean, max): tiny 0.009/0.21, gqa 0.018/0.11, tiny_unshared 0.004/0.030
    bound_mean, bound_max = {"tiny": (0.025, 0.6), "gqa": (0.05, 0.3), "tiny_unshared": (0.012, 0.09)}[name]
    assert kl.mean() <= bound_mean and kl.max() <= bound_max


# ----------------------------------------------------------------------------- stories260K


@pytest.fixture(scope="module")
def stories260k(tmp_path_factory: pytest.TempPathFactory):
    path = ck.shared_models_dir() / "stories260K.bin"
    cfg, w = ck.read_v0(path)
    assert cfg == ck.STORIES260K
    greedy = ref.greedy(cfg, w, 1, 256)
    tokens = [1] + greedy[:-1]  # the inputs that produced greedy
    return {"path": path, "cfg": cfg, "w": w, "greedy": greedy, "tokens": tokens,
            "ref": ref.forward_all(cfg, w, tokens), "dir": tmp_path_factory.mktemp("s260k")}


def _c_greedy(path: Path, n: int, context: int = 0) -> list[int]:
    out, tok = [], 1
    with capi.Model(path) as m, m.session(context=context) as s:
        for _ in range(n):
            tok = int(np.argmax(s.eval_logits([tok])))
            out.append(tok)
    return out


def test_stories260k_greedy_v0(stories260k) -> None:
    assert stories260k["greedy"][:12] == [461, 461, 401, 401, 401, 461, 378, 455, 473, 456, 435, 299]
    with capi.Model(stories260k["path"]) as m:  # the file ends 160 bytes short: tolerated
        info = m.info
    assert (info["file_kind"], info["shared_classifier"], info["file_bytes"]) == (capi.FILE_V0, 1, 1056540)
    assert info["weight_bytes_per_token"] == expected_bytes_per_token(ck.STORIES260K, capi.TYPE_F32, 0)
    assert _c_greedy(stories260k["path"], 256) == stories260k["greedy"]


def test_stories260k_f32_logits(stories260k) -> None:
    """The spec's 1e-5 at every one of 256 positions, on real weights (teacher-forced)."""
    logits = capi.run_logits(stories260k["path"], stories260k["tokens"])
    err = rel_err(logits, stories260k["ref"])
    print(f"\nstories260K f32, 256 positions: max rel err {err.max():.2e}")  # measured 6.9e-6
    assert err.max() <= F32_TOL


def test_stories260k_greedy_packed_f32(stories260k) -> None:
    out = stories260k["dir"] / "f32.bin"
    capi.convert(stories260k["path"], out, "f32")
    assert _c_greedy(out, 256, context=256) == stories260k["greedy"]  # seq_len is 512


@pytest.mark.parametrize(("type_", "gs", "min_agree", "max_mean_kl"), [
    ("f16", 0, 0.98, 1.2e-4),   # measured: agreement 0.996, KL mean 4.2e-5
    ("q8", 32, 0.80, 0.1),      # measured: agreement 0.883-0.887, KL mean 0.043-0.044
])
def test_stories260k_teacher_forced(stories260k, type_: str, gs: int, min_agree: float,
                                    max_mean_kl: float) -> None:
    """Fed the reference's greedy tokens: fraction of positions whose argmax matches."""
    out = stories260k["dir"] / f"{type_}{gs}.bin"
    capi.convert(stories260k["path"], out, type_, gs)
    logits = capi.run_logits(out, stories260k["tokens"], kv_type="f16")
    r = stories260k["ref"]
    agree = float(np.mean(np.argmax(logits, -1) == np.argmax(r, -1)))
    kl = ref.kl_divergence(r, logits)
    label = f"{type_} g{gs}" if gs else type_
    print(f"\nstories260K {label} (f16 KV), teacher-forced 256 positions: argmax agreement "
          f"{agree:.3f}, KL mean {kl.mean():.3g} max {kl.max():.3g}")
    assert agree >= min_agree
    assert kl.mean() <= max_mean_kl


# ----------------------------------------------------------------------------- session semantics


@pytest.fixture(scope="module")
def tiny(case) -> Case:
    return case("tiny")


def test_context_limit(tiny: Case) -> None:
    with capi.Model(tiny.v0) as m, m.session(context=8) as s:
        assert s.context == 8
        s.eval(tiny.tokens[:5])
        with pytest.raises(capi.L2Error) as e:  # 4 more do not fit
            s.eval(tiny.tokens[5:9])
        assert e.value.status == capi.ERR_RANGE
        assert "context of 8" in e.value.message and "position 5" in e.value.message
        assert s.pos == 5
        s.eval(tiny.tokens[5:8])
        assert s.pos == 8
        np.testing.assert_array_equal(s.logits(), tiny.c_logits(tiny.v0)[7])
        with pytest.raises(capi.L2Error) as e:
            s.eval([5])
        assert e.value.status == capi.ERR_RANGE and "context" in e.value.message
        assert s.pos == 8


@pytest.mark.parametrize("name", ["tiny", "gqa"])
@pytest.mark.parametrize(("label", "kv"), [("v0", "f32"), ("v0", "f16"), ("q8", "f16")])
def test_context_below_seq_len(case, name: str, label: str, kv: str) -> None:
    """The KV cache is laid out by the session's context, not the model's seq_len: a
    40-position session computes the same logits as a full one."""
    c = case(name)
    path = c.v0 if label == "v0" else c.packed("q8", 32)
    full = c.c_logits(path, kv)
    with capi.Model(path) as m, m.session(context=40, kv_type=kv) as s:
        assert s.context == 40 < c.cfg.seq_len
        np.testing.assert_array_equal(s.eval_each(c.tokens[:40]), full[:40])


def test_raw_api_edges(tiny: Case) -> None:
    """NULL params mean the defaults; NULL tokens or more tokens than the context are
    refused before any token is read."""
    ffi, lib = capi.lib()
    with capi.Model(tiny.v0) as m:
        out, err = ffi.new("l2_session **"), ffi.new("l2_error *")
        assert lib.l2_session_new(m.handle, ffi.NULL, out, err) == capi.OK
        s = out[0]
        try:
            assert lib.l2_session_context(s) == TINY64.seq_len
            assert ffi.string(lib.l2_session_kernels(s)).decode() == capi.kernel_names()[0]
            assert lib.l2_session_eval(s, ffi.NULL, 1, err) == capi.ERR_ARG
            one = ffi.new("int32_t[]", [1])
            assert lib.l2_session_eval(s, one, TINY64.seq_len + 1, err) == capi.ERR_RANGE
            assert lib.l2_session_eval(s, one, 2**31 - 1, err) == capi.ERR_RANGE
            assert lib.l2_session_eval(s, one, -1, err) == capi.ERR_ARG
            assert lib.l2_session_pos(s) == 0
            assert lib.l2_session_eval(s, one, 1, err) == capi.OK
            logits = np.frombuffer(ffi.buffer(lib.l2_session_logits(s), 4 * TINY64.vocab_size), np.float32)
            np.testing.assert_array_equal(logits, tiny.c_logits(tiny.v0)[0])
        finally:
            lib.l2_session_free(s)
    assert ffi.string(lib.l2_version()).decode()


def test_reset_reproduces_logits(tiny: Case) -> None:
    expected = tiny.c_logits(tiny.v0)
    with capi.Model(tiny.v0) as m, m.session() as s:
        s.eval(tiny.tokens[:20])
        # unrelated tokens, then reset: the stale cache must not leak into the rerun
        s.reset()
        assert s.pos == 0
        s.eval(list(reversed(tiny.tokens[:30])))
        s.reset()
        assert s.pos == 0
        np.testing.assert_array_equal(s.eval_each(tiny.tokens), expected)


def test_sessions_are_independent(tiny: Case) -> None:
    expected = tiny.c_logits(tiny.v0)
    with capi.Model(tiny.v0) as m, m.session() as a, m.session(kv_type="f16") as b:
        for i, t in enumerate(tiny.tokens[:16]):
            b.eval([(t * 7 + 3) % tiny.cfg.vocab_size])
            np.testing.assert_array_equal(a.eval_logits([t]), expected[i])


@pytest.mark.parametrize("bad", [-1, TINY64.vocab_size, 2**31 - 1, -(2**31)])
def test_bad_token_id(tiny: Case, bad: int) -> None:
    with capi.Model(tiny.v0) as m, m.session() as s:
        s.eval([1])
        with pytest.raises(capi.L2Error) as e:
            s.eval([5, bad, 6])
        assert e.value.status == capi.ERR_ARG
        assert str(bad) in e.value.message
        assert s.pos == 1  # nothing was evaluated
        np.testing.assert_array_equal(s.eval_logits([tiny.tokens[1]]), tiny.c_logits(tiny.v0)[1])


def test_eval_nothing(tiny: Case) -> None:
    with capi.Model(tiny.v0) as m, m.session() as s:
        with pytest.raises(capi.L2Error) as e:
            s.eval([])
        assert e.value.status == capi.ERR_ARG and e.value.message


@pytest.mark.parametrize("kv", [capi.TYPE_Q8, capi.TYPE_Q8_FLAT, -2, 99])
def test_bad_kv_type(tiny: Case, kv: int) -> None:
    with capi.Model(tiny.v0) as m:
        with pytest.raises(capi.L2Error) as e:
            m.session(kv_type=kv)
        assert e.value.status == capi.ERR_ARG and "KV" in e.value.message


def test_auto_kv_type_is_l2runs_default(case) -> None:
    """L2_TYPE_AUTO (-1): f32 for llama2.c's own files and packed f32, f16 for packed f16 and q8."""
    c = case("tiny")
    ffi, lib = capi.lib()
    for path, want in ((c.v0, "f32"), (c.packed("f32", 0), "f32"), (c.packed("f16", 0), "f16"),
                       (c.packed("q8", 32), "f16")):
        with capi.Model(path) as m, m.session(kv_type=lib.L2_TYPE_AUTO) as s:
            assert ffi.string(lib.l2_type_name(lib.l2_session_kv_type(s.handle))).decode() == want, path
            assert lib.l2_default_kv_type(m.handle) == lib.l2_session_kv_type(s.handle)


@pytest.mark.parametrize("context", [-1, TINY64.seq_len + 1, 2**31 - 1])
def test_bad_context(tiny: Case, context: int) -> None:
    with capi.Model(tiny.v0) as m:
        with pytest.raises(capi.L2Error) as e:
            m.session(context=context)
        assert e.value.status == capi.ERR_ARG
        assert str(TINY64.seq_len) in e.value.message


def test_context_defaults(tiny: Case) -> None:
    with capi.Model(tiny.v0) as m:
        with m.session(context=0) as s:
            assert s.context == TINY64.seq_len and s.pos == 0
        with m.session(context=1) as s:
            s.eval([1])
            with pytest.raises(capi.L2Error):
                s.eval([1])


def test_kernels(tiny: Case) -> None:
    names = capi.kernel_names()
    assert names and "generic" in names
    assert len(set(names)) == len(names)
    ffi, c = capi.lib()
    assert c.l2_kernels_name(len(names)) == ffi.NULL
    assert c.l2_kernels_name(-1) == ffi.NULL
    expected = tiny.c_logits(tiny.v0)
    with capi.Model(tiny.v0) as m:
        for kernels in (None, ""):
            with m.session(kernels=kernels) as s:
                assert s.kernels == names[0]
        for name in names:
            with m.session(kernels=name) as s:
                assert s.kernels == name
                if name == "generic":
                    np.testing.assert_array_equal(s.eval_each(tiny.tokens), expected)
        for bad in ("no-such-kernels", "GENERIC", "generic "):
            with pytest.raises(capi.L2Error) as e:
                m.session(kernels=bad)
            assert e.value.status == capi.ERR_ARG and bad in e.value.message


@pytest.mark.parametrize("name", ["tiny_unshared", "gqa", "odd"])
def test_kernel_sets_match_generic_bitwise(case, name: str) -> None:
    """Every kernel set promises the generic kernels' results exactly, not merely close
    (kernels/x86.c, kernels/riscv_v.c): every weight type, both KV cache types."""
    c = case(name)
    v2 = c.path("kernels_v2")
    ck.write_v2(v2, c.cfg, c.w, 8)
    files = {"v0": c.v0, "f16": c.packed("f16"), "q8g32": c.packed("q8", 32),
             "q8g48": c.packed("q8", 48), "q8g7": c.packed("q8", 7), "v2": v2}
    others = [k for k in capi.kernel_names() if k != "generic"]
    print(f"\nkernel sets compared with generic: {others or 'none on this CPU'}")
    for label, path in files.items():
        for kv in ("f32", "f16"):
            generic = capi.run_logits(path, c.tokens, kv_type=kv, kernels="generic")
            for k in others:
                logits = capi.run_logits(path, c.tokens, kv_type=kv, kernels=k)
                np.testing.assert_array_equal(logits, generic, err_msg=f"{k} {label} KV {kv}")


def test_non_finite_logits(tiny: Case) -> None:
    """An infinite weight poisons the forward pass: ERR_NUMERIC, not garbage logits."""
    path = tiny.path("inf")
    ck.write_v0(path, tiny.cfg, ck.with_nan(tiny.w, "rms_final", 3, float("inf")))
    with capi.Model(path) as m, m.session() as s:
        with pytest.raises(capi.L2Error) as e:
            s.eval([1])
        assert e.value.status == capi.ERR_NUMERIC and "non-finite" in e.value.message


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(capi.L2Error) as e:
        capi.Model(tmp_path / "nope.bin")
    assert e.value.status == capi.ERR_IO and "nope.bin" in e.value.message


# ----------------------------------------------------------------------------- model info


def _matrix_bytes(type_: int, rows: int, cols: int, gs: int) -> int:
    if type_ == capi.TYPE_F32:
        return 4 * rows * cols
    if type_ == capi.TYPE_F16:
        return 2 * rows * cols
    if type_ == capi.TYPE_Q8_FLAT:
        return rows * cols + 4 * (rows * cols // gs)
    tail = rows % 32  # version 2: the rows after the last whole block, unpadded (FORMAT.md)
    groups = -(-cols // gs)
    return (rows - tail) * groups * (gs + 4) + tail * cols + 4 * -(-tail * cols // gs)


def expected_bytes_per_token(cfg: ck.Config, type_: int, gs: int) -> int:
    """Weights one token reads: the layers' matrices, the classifier, one embedding row and
    the norms (f32)."""
    d, h, kv, v, L = cfg.dim, cfg.hidden_dim, cfg.kv_dim, cfg.vocab_size, cfg.n_layers
    layer = sum(_matrix_bytes(type_, r, c_, gs) for r, c_ in
                [(d, d), (kv, d), (kv, d), (d, d), (h, d), (d, h), (h, d)])
    emb = _matrix_bytes(type_, v, d, gs)
    return L * layer + emb + emb // v + 4 * d * (2 * L + 1)


@pytest.mark.parametrize(("label", "kind", "type_", "gs"), [
    ("v0", capi.FILE_V0, capi.TYPE_F32, 0),
    ("v1", capi.FILE_V1, capi.TYPE_F32, 0),
    ("v2", capi.FILE_V2, capi.TYPE_Q8_FLAT, 16),
    ("f32", capi.FILE_PACKED, capi.TYPE_F32, 0),
    ("f16", capi.FILE_PACKED, capi.TYPE_F16, 0),
    ("q8", capi.FILE_PACKED, capi.TYPE_Q8, 48),
])
@pytest.mark.parametrize("name", ["tiny", "tiny_unshared", "gqa"])
def test_model_info(case, name: str, label: str, kind: int, type_: int, gs: int) -> None:
    c = case(name)
    shared = name != "tiny_unshared"
    if label == "v0":
        path = c.v0
    elif label == "v1":
        path = c.path("info_v1")
        ck.write_v1(path, c.cfg, c.w)
    elif label == "v2":
        path = c.path("info_v2")
        ck.write_v2(path, c.cfg, c.w, gs)
    else:
        path = c.packed(label, gs)
    with capi.Model(path) as m:
        info = m.info
    cfg = c.cfg
    assert [info[k] for k in ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads",
                              "vocab_size", "seq_len")] == list(dataclasses.astuple(cfg))
    assert info["file_kind"] == kind
    assert info["weight_type"] == type_
    assert info["group_size"] == gs
    assert info["shared_classifier"] == int(shared)
    assert info["format_version"] == {capi.FILE_V0: 0, capi.FILE_V1: 1, capi.FILE_V2: 2,
                                      capi.FILE_PACKED: 2}[kind]
    assert info["file_bytes"] == os.path.getsize(path)
    wbpt = info["weight_bytes_per_token"]
    # the classifier is read whole even when shared: an unshared file reads no more
    assert wbpt == expected_bytes_per_token(cfg, type_, gs)
    assert wbpt <= info["file_bytes"] + (_matrix_bytes(type_, cfg.vocab_size, cfg.dim, gs) if shared else 0)
