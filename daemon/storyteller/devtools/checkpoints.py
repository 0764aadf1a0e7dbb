"""Synthetic llama2.c checkpoints: shapes, seeded weights, v0/v1/v2 writers, a v0 reader.

Formats are those of docs llama2c-compat.md (all little-endian). Weight dicts map names to
float32 arrays with these shapes (L = n_layers):

    token_embedding (vocab, dim)    rms_att (L, dim)         rms_ffn (L, dim)
    wq (L, dim, dim)                wk (L, kv_dim, dim)      wv (L, kv_dim, dim)
    wo (L, dim, dim)                w1 (L, hidden, dim)      w2 (L, dim, hidden)
    w3 (L, hidden, dim)             rms_final (dim,)         wcls (vocab, dim), unshared only
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from storyteller.engine import ModelShape

MAGIC = 0x616B3432  # "ak42"
HEADER_BYTES = 256  # v1/v2 header, zero padded


@dataclass(frozen=True)
class Config(ModelShape):
    """A shape to write (the engine's ModelShape), with the sizes derived from it."""

    @property
    def head_size(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_size


# Small shapes run in milliseconds. TINY already shares each KV head between 2 query heads;
# its hidden_dim is deliberately not a multiple of 32, so Q8_0 groups of 32 straddle the rows
# of w2. vocab_size 320 = 3 specials + 256 byte pieces + 61, so a byte-level tokenizer fits.
TINY = Config(dim=32, hidden_dim=80, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=320, seq_len=32)
# 6 query heads sharing 2 KV heads (group of 3: not a power of two).
GQA = Config(dim=48, hidden_dim=136, n_layers=3, n_heads=6, n_kv_heads=2, vocab_size=384, seq_len=64)
# Plain multi-head attention (n_kv_heads == n_heads).
MHA = Config(dim=32, hidden_dim=96, n_layers=2, n_heads=4, n_kv_heads=4, vocab_size=320, seq_len=32)
STORIES260K = Config(64, 172, 5, 8, 4, 512, 512)
STORIES15M = Config(288, 768, 6, 6, 6, 32000, 256)

LAYER_ORDER = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")


def shapes(cfg: Config, shared: bool = True) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, in v0 file order (wcls last, only when unshared)."""
    L, d, h, kv, v = cfg.n_layers, cfg.dim, cfg.hidden_dim, cfg.kv_dim, cfg.vocab_size
    s: dict[str, tuple[int, ...]] = {
        "token_embedding": (v, d), "rms_att": (L, d),
        "wq": (L, d, d), "wk": (L, kv, d), "wv": (L, kv, d), "wo": (L, d, d),
        "rms_ffn": (L, d), "w1": (L, h, d), "w2": (L, d, h), "w3": (L, h, d),
        "rms_final": (d,),
    }
    if not shared:
        s["wcls"] = (v, d)
    return s


# Synthetic weights that behave numerically like a trained model (calibrated against
# stories260K and checked in test_reference.py):
# - every matrix is N(0, gain^2 / in_features), so each block's output has RMS ~1;
# - wq and wk have gain 2.5: attention scores have std ~6, so heads attend to a few
#   positions (trained models are peaky too; with gain 1 attention is nearly uniform, the
#   context barely matters and greedy decoding falls into one-token loops);
# - the embedding (and an unshared wcls) has gain 0.3: rows of norm ~0.3, small next to the
#   block outputs, as in trained LLaMAs. A large embedding dominates the residual stream and
#   a shared classifier then scores the input token highest: greedy repeats it forever;
# - rms_att, rms_ffn are 1 + N(0, 0.1^2); rms_final is the same times logit_std / 0.3, which
#   makes the logits' std ~0.9 * sqrt(2 ln vocab) (3.0 for vocab 320, 4.1 for 32000).
#   Softmaxes are then neither one-hot nor uniform: top-1 probabilities ~0.1-0.95 (median
#   ~0.3), entropy ~2.5-3 nats for small vocabularies and ~4 for 32000, temperature-1 top-p
#   0.9 sets of a few to ~60 tokens (~150 for 32000). Greedy decoding varies for most seeds,
#   but like a real small model it can fall into short loops; the top-1/top-2 logit gap
#   can be ~1e-3 at some positions, so compare quantized engines by KL, not argmax.
EMB_GAIN = 0.3
QK_GAIN = 2.5


def logit_std(vocab_size: int) -> float:
    return 0.9 * float(np.sqrt(2.0 * np.log(vocab_size)))


def make_weights(cfg: Config, seed: int, shared: bool = True, qk_gain: float = QK_GAIN) -> dict[str, np.ndarray]:
    """Seeded float32 weights (see above); "wcls" is present only when not shared."""
    rng = np.random.default_rng(seed)
    gains = {"token_embedding": EMB_GAIN, "wcls": EMB_GAIN, "wq": qk_gain, "wk": qk_gain}
    w: dict[str, np.ndarray] = {}
    for name, shape in shapes(cfg, shared).items():
        x = rng.standard_normal(shape, dtype=np.float32)
        if name.startswith("rms"):
            x = 1 + np.float32(0.1) * x
            if name == "rms_final":
                x *= np.float32(logit_std(cfg.vocab_size) / EMB_GAIN)
        else:
            x *= np.float32(gains.get(name, 1.0) / np.sqrt(shape[-1]))
        w[name] = x
    return w


def with_nan(w: dict[str, np.ndarray], name: str, index: int = 0,
             value: float = float("nan")) -> dict[str, np.ndarray]:
    """A copy of w with one element (flat index) of tensor `name` set to NaN (or value)."""
    out = {k: a.copy() for k, a in w.items()}
    out[name].reshape(-1)[index] = value
    return out


def shared_models_dir() -> Path:
    """The tests' real files (tokenizer.bin, tokenizer.model, stories260K.bin): $LLAMA2_SHARED_MODELS,
    else ../shared/models next to the repository root (searched upwards from this file so that
    git worktrees placed deeper also find it), else, in a clone without ../shared, the per-user
    models folder where scripts/setup fetched tokenizer.bin (its sha256 is pinned by the manifest:
    the same file). Tests whose file is in none of them skip, naming it (tests/python/conftest.py).
    """
    env = os.environ.get("LLAMA2_SHARED_MODELS")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent / "shared" / "models"
        if cand.is_dir():
            return cand
    from storyteller.models import user_models_dir  # here only: models imports the C binding

    return user_models_dir()


# ----------------------------------------------------------------------------- writers


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype="<f4")


def rope_tables(cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """The legacy (seq_len, head_size/2) cos and sin tables that v0 files carry."""
    hs = cfg.head_size
    freq = 1.0 / 10000.0 ** (np.arange(0, hs, 2, dtype=np.float64) / hs)
    ang = np.outer(np.arange(cfg.seq_len), freq)
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def _header7(cfg: Config, vocab_size: int) -> bytes:
    return struct.pack("<7i", cfg.dim, cfg.hidden_dim, cfg.n_layers, cfg.n_heads,
                       cfg.n_kv_heads, vocab_size, cfg.seq_len)


def write_v0(path: str | os.PathLike[str], cfg: Config, w: dict[str, np.ndarray],
             short_tail_bytes: int = 0, real_rope: bool = True) -> None:
    """Legacy `run` format; negative vocab_size when w has an unshared "wcls".

    The two unused RoPE tables hold the real cos/sin values (or zeros); short_tail_bytes
    cuts that many bytes off the end of the file (shared classifier only, as in the wild).
    """
    shared = "wcls" not in w
    rope_bytes = 2 * cfg.seq_len * (cfg.head_size // 2) * 4
    if short_tail_bytes and (not shared or not 0 <= short_tail_bytes <= rope_bytes):
        raise ValueError("short_tail_bytes must be within the RoPE tables of a shared file")
    if real_rope:
        cos, sin = rope_tables(cfg)
    else:
        cos = sin = np.zeros((cfg.seq_len, cfg.head_size // 2), np.float32)
    with open(path, "wb") as f:
        f.write(_header7(cfg, cfg.vocab_size if shared else -cfg.vocab_size))
        for name in shapes(cfg, True):
            _f32(w[name]).tofile(f)
        _f32(cos).tofile(f)
        _f32(sin).tofile(f)
        if not shared:
            _f32(w["wcls"]).tofile(f)
        if short_tail_bytes:
            f.truncate(f.tell() - short_tail_bytes)


def _header_v(cfg: Config, version: int, shared: bool, group_size: int | None = None) -> bytes:
    h = struct.pack("<Ii", MAGIC, version) + _header7(cfg, cfg.vocab_size) + struct.pack("<B", shared)
    if group_size is not None:
        h += struct.pack("<i", group_size)
    return h + bytes(HEADER_BYTES - len(h))


def write_v1(path: str | os.PathLike[str], cfg: Config, w: dict[str, np.ndarray]) -> None:
    """export.py "version 1": float32, norms first, then the matrices."""
    shared = "wcls" not in w
    with open(path, "wb") as f:
        f.write(_header_v(cfg, 1, shared))
        for name in ("rms_att", "rms_ffn", "rms_final", "token_embedding", *LAYER_ORDER):
            _f32(w[name]).tofile(f)
        if not shared:
            _f32(w["wcls"]).tofile(f)


def quantize_q8_flat(x: np.ndarray, gs: int) -> tuple[np.ndarray, np.ndarray]:
    """Q8_0 over groups of gs consecutive values in flat order -> (int8 q, float32 scales).

    Computed in float32 like the upstream exporter: scale = max|w| / 127, q = round(w / scale)
    (half to even). An all-zero group gets scale 0 and q 0 (upstream would divide by zero).
    """
    flat = np.asarray(x, dtype=np.float32).reshape(-1)
    if flat.size % gs:
        raise ValueError(f"tensor of {flat.size} values is not a multiple of group_size {gs}")
    g = flat.reshape(-1, gs)
    scale = (np.abs(g).max(axis=1) / np.float32(127.0)).astype(np.float32)
    safe = np.where(scale == 0, np.float32(1.0), scale)
    q = np.clip(np.round(g / safe[:, None]), -127, 127).astype(np.int8)
    return q.reshape(-1), scale


def dequantize_q8_flat(q: np.ndarray, scales: np.ndarray, shape: tuple[int, ...] | None = None) -> np.ndarray:
    gs = q.size // scales.size
    out = (q.reshape(-1, gs).astype(np.float32) * scales[:, None].astype(np.float32)).reshape(-1)
    return out.reshape(shape) if shape is not None else out


def write_v2(path: str | os.PathLike[str], cfg: Config, w: dict[str, np.ndarray], group_size: int) -> None:
    """runq's Q8_0 format. Groups are flat and may straddle rows (hidden_dim need not be a
    multiple of group_size); each quantized tensor's size must be (ValueError otherwise)."""
    shared = "wcls" not in w
    tensors = [w["token_embedding"]] + [w[n][l] for n in LAYER_ORDER for l in range(cfg.n_layers)]
    if not shared:
        tensors.append(w["wcls"])
    quantized = [quantize_q8_flat(t, group_size) for t in tensors]  # validate before writing
    with open(path, "wb") as f:
        f.write(_header_v(cfg, 2, shared, group_size))
        for name in ("rms_att", "rms_ffn", "rms_final"):
            _f32(w[name]).tofile(f)
        for q, s in quantized:
            q.tofile(f)
            _f32(s).tofile(f)


def dequantize_like_v2(cfg: Config, w: dict[str, np.ndarray], group_size: int) -> dict[str, np.ndarray]:
    """The float32 weights a v2 file written from w represents (norms stay exact)."""

    def qdq(t: np.ndarray) -> np.ndarray:
        return dequantize_q8_flat(*quantize_q8_flat(t, group_size), t.shape)

    out = dict(w)
    for name in ("token_embedding", "wcls"):
        if name in w:
            out[name] = qdq(w[name])
    for name in LAYER_ORDER:  # one quantized tensor per layer
        out[name] = np.stack([qdq(w[name][layer]) for layer in range(cfg.n_layers)])
    return out


def expected_size(cfg: Config, version: int, shared: bool = True, group_size: int = 0) -> int:
    """File size in bytes that write_v0/v1/v2 produce (v0 without short tail)."""
    n = sum(int(np.prod(s)) for s in shapes(cfg, shared).values())
    if version == 0:
        return 28 + 4 * (n + cfg.seq_len * cfg.head_size)
    if version == 1:
        return HEADER_BYTES + 4 * n
    norms = (2 * cfg.n_layers + 1) * cfg.dim
    nq = n - norms
    return HEADER_BYTES + 4 * norms + nq + 4 * (nq // group_size)


def tokenizer_bytes(pieces: list[bytes], scores: list[float], *, max_token_length: int | None = None,
                    lengths: dict[int, int] | None = None) -> bytes:
    """llama2.c tokenizer.bin: int32 max_token_length (default: the longest piece's), then per
    piece f32 score, i32 length, bytes. lengths overrides the stored length of some pieces (their
    bytes unchanged), for corrupt files."""
    mtl = max((len(p) for p in pieces), default=0) if max_token_length is None else max_token_length
    lengths = lengths or {}
    return struct.pack("<i", mtl) + b"".join(struct.pack("<fi", s, lengths.get(i, len(p))) + p
                                             for i, (p, s) in enumerate(zip(pieces, scores, strict=True)))


def write_tokenizer_bin(path: str | os.PathLike[str], pieces: list[bytes], scores: list[float],
                        max_token_length: int | None = None) -> None:
    Path(path).write_bytes(tokenizer_bytes(pieces, scores, max_token_length=max_token_length))


def write_id_tokenizer(path: str | os.PathLike[str], vocab_size: int) -> None:
    """A tokenizer for models whose own is not available (stories260K's tok512.bin): llama2.c's
    three specials and 256 byte pieces, then " #ID" for every other id, so that decoded text
    names each token: equal outputs mean equal token ids. A prompt encodes to byte pieces."""
    pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n", *(b"<0x%02X>" % b for b in range(256))]
    pieces += [b" #%d" % i for i in range(len(pieces), vocab_size)]
    write_tokenizer_bin(path, pieces, [0.0] * len(pieces))


# ----------------------------------------------------------------------------- reader


def read_v0(path: str | os.PathLike[str]) -> tuple[Config, dict[str, np.ndarray]]:
    """Read a legacy checkpoint; a shared-classifier file may end short inside the RoPE tables."""
    raw = np.fromfile(path, dtype="<i4", count=7)
    if raw.size != 7:
        raise ValueError("file too short for a v0 header")
    dim, hidden, layers, heads, kv_heads, vocab, seq = (int(v) for v in raw)
    shared = vocab > 0
    cfg = Config(dim, hidden, layers, heads, kv_heads, abs(vocab), seq)
    data = np.fromfile(path, dtype="<f4", offset=28)
    w: dict[str, np.ndarray] = {}
    off = 0
    for name, shape in shapes(cfg, True).items():
        n = int(np.prod(shape))
        if off + n > data.size:
            raise ValueError(f"file ends inside {name}")
        w[name] = data[off:off + n].reshape(shape).astype(np.float32)
        off += n
    off += cfg.seq_len * cfg.head_size  # the two unused RoPE tables
    if not shared:
        n = cfg.vocab_size * cfg.dim
        if off + n > data.size:
            raise ValueError("file ends inside wcls")
        w["wcls"] = data[off:off + n].reshape(cfg.vocab_size, cfg.dim).astype(np.float32)
    return cfg, w
