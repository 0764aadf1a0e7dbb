"""Reference implementations the engine is tested against (docs llama2c-compat.md):
a float64 forward pass, llama2.c's sampler reproduced in float32, and its BPE tokenizer."""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Sequence

import numpy as np

from storyteller.devtools.checkpoints import Config

# ----------------------------------------------------------------------------- forward pass


def _rmsnorm(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return np.asarray(x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + 1e-5) * weight)


def _as64(w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, dtype=np.float64) for k, v in w.items()}


def _forward(cfg: Config, w: dict[str, np.ndarray], tokens: Sequence[int],
             cache: list[list[np.ndarray]]) -> np.ndarray:
    """Logits (n, vocab) for `tokens` at the positions following those already in `cache`
    (per layer [keys (T, kv_dim), values (T, kv_dim)], extended in place). w is float64."""
    n, hs, nh, nkv = len(tokens), cfg.head_size, cfg.n_heads, cfg.n_kv_heads
    start = cache[0][0].shape[0] if cache else 0
    if not cache:
        cache.extend([np.zeros((0, cfg.kv_dim)), np.zeros((0, cfg.kv_dim))] for _ in range(cfg.n_layers))
    pos = np.arange(start, start + n)
    ang = pos[:, None] * 10000.0 ** (-np.arange(0, hs, 2) / hs)  # (n, hs/2): pair i of each head
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]

    def rope(t: np.ndarray) -> np.ndarray:  # rotate pairs (2i, 2i+1) within each head
        t = t.reshape(n, -1, hs // 2, 2)
        a, b = t[..., 0], t[..., 1]
        return np.stack([a * cos - b * sin, a * sin + b * cos], axis=-1).reshape(n, -1)

    causal = pos[:, None] >= np.arange(start + n)[None, :]  # (n, T)
    kv_head = np.arange(nh) // (nh // nkv)
    x = w["token_embedding"][np.asarray(tokens)]
    for layer in range(cfg.n_layers):
        xb = _rmsnorm(x, w["rms_att"][layer])
        q = rope(xb @ w["wq"][layer].T).reshape(n, nh, hs).transpose(1, 0, 2)  # (nh, n, hs)
        kc, vc = cache[layer]  # append this block's keys and values to the cache
        kc = cache[layer][0] = np.concatenate([kc, rope(xb @ w["wk"][layer].T)])
        vc = cache[layer][1] = np.concatenate([vc, xb @ w["wv"][layer].T])
        k = kc.reshape(-1, nkv, hs).transpose(1, 0, 2)[kv_head]  # (nh, T, hs): head h's KV head
        v = vc.reshape(-1, nkv, hs).transpose(1, 0, 2)[kv_head]
        s = np.where(causal, q @ k.transpose(0, 2, 1) / np.sqrt(hs), -np.inf)
        p = np.exp(s - s.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
        x = x + (p @ v).transpose(1, 0, 2).reshape(n, cfg.dim) @ w["wo"][layer].T
        xb = _rmsnorm(x, w["rms_ffn"][layer])
        a = xb @ w["w1"][layer].T
        silu = a * 0.5 * (1.0 + np.tanh(0.5 * a))  # == a / (1 + exp(-a)), without overflow
        x = x + (silu * (xb @ w["w3"][layer].T)) @ w["w2"][layer].T
    return np.asarray(_rmsnorm(x, w["rms_final"]) @ w.get("wcls", w["token_embedding"]).T)


def forward_all(cfg: Config, w: dict[str, np.ndarray], tokens: Sequence[int]) -> np.ndarray:
    """float64 logits (n, vocab) of `tokens` fed at positions 0..n-1."""
    return _forward(cfg, _as64(w), tokens, [])


def greedy(cfg: Config, w: dict[str, np.ndarray], first_token: int, n: int) -> list[int]:
    """Feed first_token at position 0, then each argmax back: the n argmaxes (pos 0..n-1)."""
    w64, tok = _as64(w), first_token
    cache: list[list[np.ndarray]] = []
    out: list[int] = []
    for _ in range(n):
        tok = int(np.argmax(_forward(cfg, w64, [tok], cache)[0]))
        out.append(tok)
    return out


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return np.asarray(z - np.log(np.exp(z).sum(axis=-1, keepdims=True)))


def kl_divergence(p_logits: np.ndarray, q_logits: np.ndarray) -> np.ndarray:
    """KL(softmax(p) || softmax(q)) along the last axis, float64 (per position for (n, vocab))."""
    lp, lq = log_softmax(p_logits), log_softmax(q_logits)
    return np.asarray(np.sum(np.exp(lp) * (lp - lq), axis=-1))


# ----------------------------------------------------------------------------- sampler
# Bit-exact with llama2.c in float32, up to expf: exp is computed in float64 and rounded,
# i.e. correctly rounded, which the C library's expf may miss by one ulp in rare cases.

_M64 = (1 << 64) - 1


class XorShiftRng:
    """llama2.c's xorshift* generator on a uint64 state."""

    def __init__(self, seed: int) -> None:
        self.state = seed & _M64

    def random_u32(self) -> int:
        s = self.state
        s ^= s >> 12
        s ^= (s << 25) & _M64
        s ^= s >> 27
        self.state = s
        return ((s * 0x2545F4914F6CDD1D) & _M64) >> 32

    def random_f32(self) -> np.float32:
        return np.float32((self.random_u32() >> 8) / 16777216.0)


def softmax_f32(x: np.ndarray) -> np.ndarray:
    """llama2.c softmax: subtract max, expf, sequential float32 sum, divide."""
    x = np.asarray(x, dtype=np.float32)
    e = np.exp((x - x.max()).astype(np.float64)).astype(np.float32)
    total = np.cumsum(e, dtype=np.float32)[-1]  # cumsum accumulates in order, unlike sum
    return np.asarray((e / total).astype(np.float32))


def sample(logits: np.ndarray, temperature: float, topp: float, rng: XorShiftRng) -> int:
    """llama2.c's sampler; draws exactly one random_f32 when temperature != 0, none otherwise."""
    logits = np.asarray(logits, dtype=np.float32)
    if temperature == 0.0:
        return int(np.argmax(logits))
    probs = softmax_f32(logits / np.float32(temperature))
    coin = rng.random_f32()
    n = probs.size
    if topp <= 0 or topp >= 1:
        hit = np.flatnonzero(coin < np.cumsum(probs, dtype=np.float32))
        return int(hit[0]) if hit.size else n - 1
    topp32 = np.float32(topp)
    cutoff = (np.float32(1.0) - topp32) / np.float32(n - 1)
    ids = np.flatnonzero(probs >= cutoff)
    ids = ids[np.argsort(-probs[ids], kind="stable")]  # descending, ties by ascending id
    cdf = np.cumsum(probs[ids], dtype=np.float32)
    over = np.flatnonzero(cdf > topp32)
    last = int(over[0]) if over.size else ids.size - 1
    r = np.float32(coin * cdf[last])
    hit = np.flatnonzero(r < cdf[: last + 1])
    return int(ids[hit[0]]) if hit.size else int(ids[last])


# ----------------------------------------------------------------------------- tokenizer


def load_tokenizer_bin(path: str | os.PathLike[str], vocab_size: int) -> tuple[list[bytes], list[float], int]:
    """(pieces, scores, max_token_length) from a llama2.c tokenizer.bin."""
    with open(path, "rb") as f:
        data = f.read()
    (max_token_length,) = struct.unpack_from("<i", data, 0)
    off, pieces, scores = 4, list[bytes](), list[float]()
    for _ in range(vocab_size):
        score, length = struct.unpack_from("<fi", data, off)
        pieces.append(data[off + 8:off + 8 + length])
        scores.append(score)
        off += 8 + length
    return pieces, scores, max_token_length


_lookup_cache: dict[int, tuple[list[bytes], dict[bytes, int]]] = {}


def _piece_ids(pieces: Sequence[bytes]) -> dict[bytes, int]:
    """bytes -> id (the lowest id for duplicates), cached per vocabulary (rechecked, cheaply)."""
    hit = _lookup_cache.get(id(pieces))
    if hit is None or hit[0] != list(pieces):
        ids: dict[bytes, int] = {}
        for i, p in enumerate(pieces):
            ids.setdefault(p, i)
        hit = _lookup_cache[id(pieces)] = (list(pieces), ids)
    return hit[1]


_NO_SCORE = float(np.float32(-1e10))  # llama2.c's initial best score


def encode(text: bytes, pieces: Sequence[bytes], scores: Sequence[float], bos: bool, eos: bool) -> list[int]:
    """llama2.c's encode, for any bytes (a C string: NUL is rejected)."""
    if b"\0" in text:
        raise ValueError("text is a C string: it cannot contain NUL")
    lookup = _piece_ids(pieces)
    tokens = [1] if bos else []
    if text:
        if b" " not in lookup:
            raise ValueError('the vocabulary has no " " piece for the dummy prefix')
        tokens.append(lookup[b" "])
    buf = b""
    for i, c in enumerate(text):
        if c & 0xC0 != 0x80:
            buf = b""
        buf += bytes([c])
        if i + 1 < len(text) and text[i + 1] & 0xC0 == 0x80 and len(buf) < 4:
            continue
        tokens.extend([lookup[buf]] if buf in lookup else [b + 3 for b in buf])
        buf = b""
    while True:
        best, best_id, best_i = _NO_SCORE, -1, -1
        for i in range(len(tokens) - 1):
            merged = lookup.get(pieces[tokens[i]] + pieces[tokens[i + 1]])
            if merged is not None and scores[merged] > best:
                best, best_id, best_i = scores[merged], merged, i
        if best_i < 0:
            break
        tokens[best_i:best_i + 2] = [best_id]
    if eos:
        tokens.append(2)
    return tokens


_BYTE_PIECE = re.compile(rb"<0x([0-9A-Fa-f]{2})>")


def decode_piece(pieces: Sequence[bytes], prev: int, tok: int) -> bytes:
    """llama2.c's decode: drop the leading space after BOS; <0xHH> is the byte 0xHH.

    (llama2.c parses with sscanf("<0x%02hhX>"), which also accepts malformed variants;
    only the exact form occurs in real vocabularies.)"""
    piece = pieces[tok]
    if prev == 1 and piece.startswith(b" "):
        piece = piece[1:]
    m = _BYTE_PIECE.fullmatch(piece)
    return bytes([int(m.group(1), 16)]) if m else piece


def printable_piece(piece: bytes) -> bytes:
    """What llama2.c's safe_printf prints: nothing for an empty piece or a lone byte that is
    neither printable nor whitespace (C locale); else the piece up to any NUL (a C string)."""
    if len(piece) == 1 and not (0x20 <= piece[0] <= 0x7E or 0x09 <= piece[0] <= 0x0D):
        return b""
    return piece.split(b"\0", 1)[0]
