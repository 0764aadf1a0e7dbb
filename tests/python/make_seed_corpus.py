#!/usr/bin/env python3
"""Seed corpora for the libFuzzer targets in tests/c/fuzz/.

Usage: python3 tests/python/make_seed_corpus.py OUTDIR [--l2convert PATH]

Writes OUTDIR/<target>/ for each target:
  fuzz_checkpoint  tiny valid llama2.c v0 (shared, unshared, short RoPE tail), v1, v2 (Q8_0
                   groups of 8/16/32 that straddle rows) and packed f32/f16/q8 files (written
                   by the built l2convert), all under the fuzzers' 64 KB cap
  fuzz_packed      the packed files in fuzz_packed.c's layout: control byte 0 + the file
                   after its 4-byte magic (one seed with control bit 1: f32 KV cache)
  fuzz_tokenizer   vocab_size - 3 as one byte + a small tokenizer.bin (byte pieces, merges,
                   UTF-8 pieces, duplicates, empty pieces, extra pieces, a slice of the real one)
  fuzz_encode      sample texts: English, other scripts, emoji, invalid UTF-8, whitespace

The l2convert binary is build/host/bin/l2convert; it is built with `make` when missing.
"""

from __future__ import annotations

import argparse
import hashlib
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "daemon"))  # storyteller.devtools

from storyteller.devtools import checkpoints as ck  # noqa: E402

MAX_INPUT = 64 * 1024

# head_size 4 everywhere (even); hidden_dim 20 is no multiple of 8/16/32, so v2 groups
# straddle the rows of w2, and groups of 16/32 straddle rows of every matrix (dim 8).
MICRO = ck.Config(dim=8, hidden_dim=20, n_layers=2, n_heads=2, n_kv_heads=1, vocab_size=16, seq_len=8)
MICRO_MHA = ck.Config(dim=8, hidden_dim=12, n_layers=1, n_heads=2, n_kv_heads=2, vocab_size=12, seq_len=4)
MICRO_GQA3 = ck.Config(dim=12, hidden_dim=20, n_layers=1, n_heads=3, n_kv_heads=1, vocab_size=10, seq_len=3)
ONE_POS = ck.Config(dim=4, hidden_dim=6, n_layers=1, n_heads=1, n_kv_heads=1, vocab_size=4, seq_len=1)


def _save(outdir: Path, name: str, data: bytes) -> None:
    if len(data) > MAX_INPUT:
        raise SystemExit(f"seed {name} is {len(data)} bytes, above the fuzzers' {MAX_INPUT} cap")
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / name).write_bytes(data)


def l2convert_path(given: str | None) -> Path:
    path = Path(given) if given else REPO / "build" / "host" / "bin" / "l2convert"
    if not path.exists():
        subprocess.run(["make", "-s", "tools"], cwd=REPO, check=True)
    if not path.exists():
        raise SystemExit(f"{path} is missing: run make first")
    return path


def checkpoint_seeds(tmp: Path, l2convert: Path) -> dict[str, bytes]:
    seeds: dict[str, bytes] = {}

    def add(name: str, writer, *args, **kwargs) -> Path:
        p = tmp / name
        writer(p, *args, **kwargs)
        seeds[name] = p.read_bytes()
        return p

    for i, cfg in enumerate((MICRO, MICRO_MHA, MICRO_GQA3, ONE_POS)):
        w = ck.make_weights(cfg, seed=10 + i)
        wu = ck.make_weights(cfg, seed=20 + i, shared=False)
        add(f"v0_shared_{i}.bin", ck.write_v0, cfg, w)
        add(f"v0_unshared_{i}.bin", ck.write_v0, cfg, wu)
        add(f"v1_shared_{i}.bin", ck.write_v1, cfg, w)
        add(f"v1_unshared_{i}.bin", ck.write_v1, cfg, wu)
    w = ck.make_weights(MICRO, seed=1)
    wu = ck.make_weights(MICRO, seed=2, shared=False)
    rope = 2 * MICRO.seq_len * (MICRO.head_size // 2) * 4
    add("v0_short_tail.bin", ck.write_v0, MICRO, w, short_tail_bytes=rope // 2)
    add("v0_no_rope_tail.bin", ck.write_v0, MICRO, w, short_tail_bytes=rope, real_rope=False)
    for gs in (8, 16, 32):
        add(f"v2_shared_g{gs}.bin", ck.write_v2, MICRO, w, gs)
    add("v2_unshared_g8.bin", ck.write_v2, MICRO, wu, 8)
    add("v2_gqa3_g4.bin", ck.write_v2, MICRO_GQA3, ck.make_weights(MICRO_GQA3, seed=3), 4)
    add("v2_onepos_g2.bin", ck.write_v2, ONE_POS, ck.make_weights(ONE_POS, seed=4), 2)

    # packed files from the v0/v1/v2 sources, every output type
    jobs = [
        ("v0_shared_0.bin", "f32", None),
        ("v0_unshared_0.bin", "f32", None),
        ("v1_shared_0.bin", "f16", None),
        ("v0_unshared_1.bin", "f16", None),
        ("v0_shared_2.bin", "q8", None),
        ("v0_unshared_0.bin", "q8", 8),
        ("v2_shared_g8.bin", "q8", 5),
        ("v2_shared_g16.bin", "f32", None),
        ("v0_shared_3.bin", "q8", 3),
        ("v0_shared_3.bin", "f16", None),
        # version 2's fields: GPTQ, an f16 lookup table beside a q8 wcls, two-part inputs,
        # f16 layers in a q8 file (l2convert --mode)
        ("v0_shared_2.bin", "balanced", None),
        ("v0_unshared_1.bin", "faithful", None),
    ]
    for src, typ, group in jobs:
        name = f"packed_{typ}{'_g' + str(group) if group else ''}_{src}"
        out = tmp / name
        cmd = [str(l2convert), str(tmp / src), str(out),
               "--mode" if typ in ("balanced", "faithful") else "--type", typ]
        if group:
            cmd += ["--group", str(group)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        seeds[name] = out.read_bytes()
    return seeds


# ----------------------------------------------------------------------------- tokenizers


def tokenizer_seed(vocab: int, data: bytes) -> bytes:
    assert 3 <= vocab <= 258
    return bytes([vocab - 3]) + data


SPECIALS = [b"<unk>", b"<s>", b"</s>"]


def tokenizer_seeds() -> dict[str, bytes]:
    seeds: dict[str, bytes] = {}
    byte_pieces = [b"<0x%02X>" % b for b in range(256)]
    merges = [
        b" ",
        b"a",
        b"b",
        b"ab",
        b" a",
        b"on",
        b"ce",
        b"On",
        b"Once",
        b" up",
        b"on ",
        b"t",
        b"i",
        b"m",
        b"e",
        b"ti",
        b"me",
        b"time",
        b" time",
        b"  ",
        b"\xc3\xa9",
        b"h\xc3\xa9",
        b"\xe6\x97\xa5",
        b"\xf0\x9f\x99\x82",
        b"<",
        b"s",
        b">",
        b"<s",
    ]
    p = SPECIALS + byte_pieces[:64] + merges
    seeds["bytes64_merges"] = tokenizer_seed(
        len(p), ck.tokenizer_bytes(p, [0.0] * 67 + [-float(i) for i in range(len(merges))])
    )
    p = SPECIALS + merges
    seeds["merges_only"] = tokenizer_seed(
        len(p), ck.tokenizer_bytes(p, [0.0] * 3 + [float(i % 5) for i in range(len(merges))])
    )
    p = SPECIALS + byte_pieces[:255]
    seeds["bytes255"] = tokenizer_seed(258, ck.tokenizer_bytes(p, [0.0] * 258))
    seeds["specials_only"] = tokenizer_seed(3, ck.tokenizer_bytes(SPECIALS, [0.0] * 3))
    p = SPECIALS + [b"", b"a", b"a", b"", b"aa", b"aaa", b"a" * 100, b" a", b" aa"]
    seeds["dups_empty_long"] = tokenizer_seed(
        len(p), ck.tokenizer_bytes(p, [0.0, 0.0, 0.0, 1.0, 2.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 1e30])
    )
    p = SPECIALS + merges
    seeds["extra_pieces_trailer"] = tokenizer_seed(
        10, ck.tokenizer_bytes(p, [1.0] * len(p), max_token_length=-1) + b"\x01\x02\x03"
    )
    seeds["nan_inf_scores"] = tokenizer_seed(
        8,
        ck.tokenizer_bytes(
            SPECIALS + [b"a", b"b", b"ab", b"ba", b" "],
            [0.0, 0.0, 0.0, float("nan"), float("inf"), -float("inf"), float("nan"), -1e10],
        ),
    )
    real = ck.shared_models_dir() / "tokenizer.bin"
    if real.exists():
        data = real.read_bytes()
        pos, pieces, scores = 4, [], []
        while pos < len(data) and len(pieces) < 800:
            score, n = struct.unpack_from("<fi", data, pos)
            pieces.append(data[pos + 8 : pos + 8 + n])
            scores.append(score)
            pos += 8 + n
        seeds["real_first_258"] = tokenizer_seed(258, ck.tokenizer_bytes(pieces[:258], scores[:258]))
        sel = list(range(3)) + list(range(259, 259 + 255))
        seeds["real_merges_258"] = tokenizer_seed(
            258, ck.tokenizer_bytes([pieces[i] for i in sel], [scores[i] for i in sel])
        )
        sel = list(range(3)) + list(range(3 + 32, 3 + 128)) + list(range(259, 259 + 159))
        seeds["real_ascii_bytes_merges"] = tokenizer_seed(
            258, ck.tokenizer_bytes([pieces[i] for i in sel], [scores[i] for i in sel])
        )
    return seeds


TEXTS = [
    b"",
    b"a",
    b" ",
    b"   leading spaces",
    b"trailing spaces   ",
    b"Once upon a time",
    b"Once upon a time, there was a little girl named Lily. She loved to play outside in the park.",
    b'Tom and Sue went to the zoo.\nThey saw a big lion!\n\n"Look," said Tom.',
    "héllo wörld – naïve café".encode(),
    "日本語のテキスト、中文文本".encode(),
    "Привет, мир! Γειά σου Κόσμε".encode(),
    "emoji 🙂🙃👍🏽 🇫🇷".encode(),
    b"\xff\xfe\xfd invalid \x80\x81 utf8 \xc3 \xe2\x82 \xf0\x9f\x99",
    b"\x01\x02\x03\t\x0b\x0c\x7f",
    b"<s> </s> <unk> <0x41> literal pieces",
    b"a" * 300,
    b"ab" * 200,
    b"1234567890 3.14159 -42",
    b"\xf4\x8f\xbf\xbf \xf5\x80\x80\x80 \xc0\xaf \xed\xa0\x80",
    b"x\x80\x80\x80\x80\x80\x80y",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--l2convert", default=None, help="l2convert binary (default build/host/bin/l2convert)")
    args = ap.parse_args()
    out: Path = args.outdir
    l2c = l2convert_path(args.l2convert)

    with tempfile.TemporaryDirectory(prefix="l2seeds-") as td:
        cps = checkpoint_seeds(Path(td), l2c)
    for name, data in cps.items():
        _save(out / "fuzz_checkpoint", name, data)
        if data[:4] == b"L2RV":
            _save(out / "fuzz_packed", name, b"\x00" + data[4:])
    first_packed = next(d for d in cps.values() if d[:4] == b"L2RV")
    _save(out / "fuzz_packed", "f32_kv", b"\x02" + first_packed[4:])

    for name, data in tokenizer_seeds().items():
        _save(out / "fuzz_tokenizer", name, data)
    for i, text in enumerate(TEXTS):
        _save(out / "fuzz_encode", f"text_{i:02d}_{hashlib.sha1(text).hexdigest()[:8]}", text)

    for target in ("fuzz_checkpoint", "fuzz_packed", "fuzz_tokenizer", "fuzz_encode"):
        files = list((out / target).iterdir())
        print(f"{target}: {len(files)} seeds, {sum(f.stat().st_size for f in files)} bytes")


if __name__ == "__main__":
    main()
