"""Malformed headers: wrong magic or version, every config field zero, negative or huge, heads
that do not divide, bad q8 groups, corrupt packed tensor tables."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from bad_input_support import (
    CFG,
    CONFIG_AT,
    FIELDS,
    INT32_MAX,
    INT32_MIN,
    LIMITS,
    PACKED_ENTRY,
    PACKED_HEADER,
    Files,
    Tools,
    assert_bad_model,
    packed_entry,
    put,
)

from storyteller.devtools import checkpoints as ck

# ----------------------------------------------------------------------------- headers

# (case id, format, mutation, expected stderr regex or None)
Mutation = Callable[[bytes], bytes]
HEADER_CASES: list[tuple[str, str, Mutation, str | None]] = []


def _case(cid: str, fmt: str, fn: Mutation, expect: str | None = None) -> None:
    HEADER_CASES.append((cid, fmt, fn, expect))


# magic and version
_case("v1-magic-off-by-one", "v1", lambda d: put(d, 0, "<I", ck.MAGIC + 1))
_case("v2-magic-bytes-swapped", "v2", lambda d: b"ak42" + d[4:])
_case("packed-magic-lowercase", "packed_f32", lambda d: b"l2rv" + d[4:])
for _v in (0, 3, -1, INT32_MAX):
    _case(f"v1-version-{_v}", "v1", lambda d, v=_v: put(d, 4, "<i", v), r"version")
for _v in (0, 3, 0xFFFFFFFF):
    _case(f"packed-version-{_v}", "packed_f32", lambda d, v=_v: put(d, 4, "<I", v), r"version")
# version 2's fields (FORMAT.md): how the file was made
_case("packed-two-part-unknown-site", "packed_q8", lambda d: put(d, 60, "<I", 1 << 5), r"two-part")
_case("packed-two-part-in-f32", "packed_f32", lambda d: put(d, 60, "<I", 1), r"two-part")
_case("packed-method-2", "packed_q8", lambda d: put(d, 72, "<I", 2), r"method")
_case("packed-gptq-in-f32", "packed_f32", lambda d: put(d, 72, "<I", 1), r"method")
_case("packed-calib-without-gptq", "packed_q8", lambda d: put(d, 76, "<I", 5), r"calibration")
_case("packed-calib-beyond-int32", "packed_q8", lambda d: put(put(d, 72, "<I", 1), 76, "<I", 1 << 31),
      r"calibration")
_case("packed-error-nan", "packed_q8", lambda d: put(d, 80, "<d", float("nan")), r"error statistic")
_case("packed-error-negative", "packed_q8", lambda d: put(d, 88, "<d", -1.0), r"error statistic")
_case("packed-error-infinite", "packed_q8", lambda d: put(d, 80, "<d", float("inf")), r"error statistic")
_case("packed-reserved-byte", "packed_q8", lambda d: put(d, 100, "<B", 1), r"reserved")
_case("v1-shared-flag-2", "v1", lambda d: put(d, 36, "<B", 2), r"shared_classifier")
_case("v1-shared-flag-flipped", "v1", lambda d: put(d, 36, "<B", 0))
_case("v1-unshared-flag-flipped", "v1_unshared", lambda d: put(d, 36, "<B", 1))
_case("v0-text-file", "v0", lambda d: b"Once upon a time there was a checkpoint.\n" * 4)
_case("v0-zeros", "v0", lambda d: bytes(len(d)))
_case("v0-ones", "v0", lambda d: b"\xff" * len(d))
_case("v0-appended", "v0_unshared", lambda d: d + b"\0" * 4, r"fewer")
_case("v1-appended", "v1", lambda d: d + b"\0", r"fewer")
_case("v2-appended", "v2", lambda d: d + b"\0" * 64, r"fewer")
_case("tiny-3-bytes", "v0", lambda d: d[:3])

# every config field zero / negative / huge, in every format
for _fmt in ("v0", "v1", "v2", "packed_q8"):
    _kind = "packed" if _fmt.startswith("packed") else _fmt
    for _i, _f in enumerate(FIELDS):
        _vals = [0, -1, INT32_MAX, LIMITS[_f] + 1]
        if _kind == "v0" and _f == "vocab_size":
            _vals.append(INT32_MIN)  # v0 negates a negative vocab_size: INT32_MIN has no positive
        if _f != "seq_len":  # a large seq_len within the limit is valid and costs no file bytes
            _vals.append(65537)
        for _v in _vals:
            named = _v == 0 or _v > LIMITS[_f] or (_v < 0 and not (_kind == "v0" and _f == "vocab_size"))
            _case(
                f"{_fmt}-{_f}={_v}",
                _fmt,
                lambda d, o=CONFIG_AT[_kind] + 4 * _i, v=_v: put(d, o, "<i", v),
                _f if named else None,
            )
    _o = CONFIG_AT[_kind]
    for _h in (3, 32):  # dim 32: 3 does not divide it, 32 gives an odd head size (1)
        _case(
            f"{_fmt}-n_heads={_h}",
            _fmt,
            lambda d, o=_o + 12, v=_h: put(d, o, "<i", v),
            r"heads" if _h != 32 else None,
        )
    for _kv in (3, 8):  # n_heads 4: 3 does not divide it, 8 exceeds it
        _case(f"{_fmt}-n_kv_heads={_kv}", _fmt, lambda d, o=_o + 16, v=_kv: put(d, o, "<i", v), r"n_kv_heads")
    _case(f"{_fmt}-vocab=2", _fmt, lambda d, o=_o + 20: put(d, o, "<i", 2), r"vocab_size")
    _case(f"{_fmt}-dim-doubled", _fmt, lambda d, o=_o: put(d, o, "<i", 64))
    _case(f"{_fmt}-layers+1", _fmt, lambda d, o=_o + 8: put(d, o, "<i", CFG.n_layers + 1))

# v2 group size (int32 at 37, unaligned)
for _g in (0, -1, -32, INT32_MIN, INT32_MAX, 65537, 1 << 20):
    _case(f"v2-group={_g}", "v2", lambda d, g=_g: put(d, 37, "<i", g), r"group")
for _g in (7, 3, 48):  # not a whole number of groups in some tensor
    _case(f"v2-group={_g}-not-dividing", "v2", lambda d, g=_g: put(d, 37, "<i", g), r"group")
for _g in (1, 16, 64, 512):  # divides every tensor: the scales no longer fit the file
    _case(f"v2-group={_g}-size-mismatch", "v2", lambda d, g=_g: put(d, 37, "<i", g))

# packed header fields
for _g in (0, 0xFFFFFFFF, 65537, 1 << 31):
    _case(f"packed-q8-group={_g}", "packed_q8", lambda d, g=_g: put(d, 48, "<I", g), r"group")
for _g in (1, 16, 31, 64, 65536):
    _case(f"packed-q8-group={_g}-wrong", "packed_q8", lambda d, g=_g: put(d, 48, "<I", g))
for _b in (0, 16, 64, 0xFFFFFFFF):
    _case(f"packed-q8-block-rows={_b}", "packed_q8", lambda d, b=_b: put(d, 52, "<I", b), r"block rows")
for _t in (3, 4, 0xFFFFFFFF):
    _case(f"packed-weight-type={_t}", "packed_f32", lambda d, t=_t: put(d, 44, "<I", t), r"type")
_case("packed-weight-type-q8-as-f32", "packed_q8", lambda d: put(d, 44, "<I", 0))
_case("packed-weight-type-f32-as-f16", "packed_f32", lambda d: put(d, 44, "<I", 1))
for _fl in (2, 3, 0x80000000):
    _case(f"packed-flags={_fl}", "packed_f32", lambda d, f=_fl: put(d, 56, "<I", f), r"flags")
_case("packed-shared-flag-cleared", "packed_f32", lambda d: put(d, 56, "<I", 0))
_case("packed-unshared-flag-set", "packed_f32_unshared", lambda d: put(d, 56, "<I", 1))


def _n_tensors(d: bytes) -> int:
    return struct.unpack_from("<I", d, 12)[0]


for _k, _fn in (
    ("+1", lambda d: _n_tensors(d) + 1),
    ("-1", lambda d: _n_tensors(d) - 1),
    ("=0", lambda d: 0),
    ("=max", lambda d: 0xFFFFFFFF),
):
    _case(f"packed-n_tensors{_k}", "packed_q8", lambda d, f=_fn: put(d, 12, "<I", f(d)), r"tensors")
for _h in (0, 127, 128, 1000, 0xFFFFFFFF):
    _case(f"packed-header_bytes={_h}", "packed_q8", lambda d, h=_h: put(d, 8, "<I", h), r"header")
_case("packed-header_bytes-past-file", "packed_q8", lambda d: put(d, 8, "<I", len(d) + 64), r"header")
for _k, _fn in (
    ("+1", lambda d: len(d) + 1),
    ("-1", lambda d: len(d) - 1),
    ("+64", lambda d: len(d) + 64),
    ("=0", lambda d: 0),
    ("=max", lambda d: 2**64 - 1),
):
    _case(f"packed-file_bytes{_k}", "packed_q8", lambda d, f=_fn: put(d, 64, "<Q", f(d)), r"bytes")
_case("packed-appended", "packed_q8", lambda d: d + bytes(64), r"bytes")
_case("packed-header-only", "packed_q8", lambda d: d[:PACKED_HEADER])


def _set_entry(field: str, name: str, layer: int, value: Callable[[dict, bytes], int]) -> Mutation:
    at, fmt = {
        "layer": (16, "<i"),
        "type": (20, "<I"),
        "rows": (24, "<I"),
        "cols": (28, "<I"),
        "off": (32, "<Q"),
        "bytes": (40, "<Q"),
        "soff": (48, "<Q"),
        "sbytes": (56, "<Q"),
    }[field]

    def fn(d: bytes) -> bytes:
        e = packed_entry(d, name, layer)
        return put(
            d,
            e["at"] + at,
            fmt,
            value(e, d) % (1 << (8 * struct.calcsize(fmt))) if fmt[-1] in "IQ" else value(e, d),
        )

    return fn


def _align(n: int) -> int:
    return (n + 63) // 64 * 64


# packed tensor table: offsets, alignment, shapes, names, duplicates
for _fmt, _tensors in (
    ("packed_q8", (("token_embedding", -1), ("w2", 1), ("rms_att", 1))),
    ("packed_f32", (("wq", 0), ("rms_final", -1))),
):
    for _name, _layer in _tensors:
        _p = f"{_fmt}-{_name}{_layer if _layer >= 0 else ''}"
        off_vals = {
            "beyond-end": lambda e, d: len(d),
            "past-end-by-one-block": lambda e, d: _align(len(d) - e["bytes"] + 1),
            "into-header": lambda e, d: 0,
            "table-start": lambda e, d: PACKED_HEADER,
            "wraps": lambda e, d: 2**64 - 64,
            "misaligned+1": lambda e, d: e["off"] + 1,
            "misaligned+4": lambda e, d: e["off"] + 4,
            "misaligned+32": lambda e, d: e["off"] + 32,
        }
        for _k, _fn in off_vals.items():
            _case(f"{_p}-offset-{_k}", _fmt, _set_entry("off", _name, _layer, _fn), r"outside|misaligned")
        shape_vals = {
            "rows+1": ("rows", lambda e, d: e["rows"] + 1),
            "rows-1": ("rows", lambda e, d: e["rows"] - 1),
            "rows=0": ("rows", lambda e, d: 0),
            "cols+1": ("cols", lambda e, d: e["cols"] + 1),
            "cols=huge": ("cols", lambda e, d: 0xFFFFFFFF),
            "swap": ("rows", lambda e, d: e["cols"]),
            "type+1": ("type", lambda e, d: e["type"] + 1),
            "type=99": ("type", lambda e, d: 99),
            "bytes+1": ("bytes", lambda e, d: e["bytes"] + 1),
            "bytes=0": ("bytes", lambda e, d: 0),
            "bytes=huge": ("bytes", lambda e, d: 2**64 - 1),
            "layer=-2": ("layer", lambda e, d: -2),
            "layer=n": ("layer", lambda e, d: CFG.n_layers),
            "layer=max": ("layer", lambda e, d: INT32_MAX),
        }
        for _k, (_field, _fn) in shape_vals.items():
            if _k == "swap" and _name not in ("token_embedding", "w2"):
                continue  # square or a vector: swapping changes nothing
            if _k.startswith("layer") and _layer < 0:
                _fn = {
                    "layer=-2": lambda e, d: 0,
                    "layer=n": lambda e, d: 1,
                    "layer=max": lambda e, d: INT32_MIN,
                }[_k]
            _case(f"{_p}-{_k}", _fmt, _set_entry(_field, _name, _layer, _fn), r"tensor|type|shape")
    if _fmt == "packed_q8":
        for _name, _layer in (("wk", 1), ("token_embedding", -1)):
            for _k, _fn in (
                ("beyond-end", lambda e, d: len(d)),
                ("zero", lambda e, d: 0),
                ("misaligned", lambda e, d: e["soff"] + 4),
                ("wraps", lambda e, d: 2**64 - 64),
            ):
                _case(
                    f"{_fmt}-{_name}-scales-{_k}",
                    _fmt,
                    _set_entry("soff", _name, _layer, _fn),
                    r"outside|misaligned",
                )
            for _k, _fn in (
                ("+4", lambda e, d: e["sbytes"] + 4),
                ("zero", lambda e, d: 0),
                ("huge", lambda e, d: 2**64 - 4),
            ):
                _case(f"{_fmt}-{_name}-scale-bytes-{_k}", _fmt, _set_entry("sbytes", _name, _layer, _fn))


def _dup(src_i: int, dst_i: int) -> Mutation:
    def fn(d: bytes) -> bytes:
        b = bytearray(d)
        dst = dst_i % _n_tensors(d)  # -1: the last entry
        s, t = PACKED_HEADER + src_i * PACKED_ENTRY, PACKED_HEADER + dst * PACKED_ENTRY
        b[t : t + PACKED_ENTRY] = d[s : s + PACKED_ENTRY]
        return bytes(b)

    return fn


def _rename(index: int, name: bytes, layer: int | None = None) -> Mutation:
    def fn(d: bytes) -> bytes:
        b = bytearray(d)
        e = PACKED_HEADER + index * PACKED_ENTRY
        b[e : e + 16] = name.ljust(16, b"\0")[:16]
        if layer is not None:
            struct.pack_into("<i", b, e + 16, layer)
        return bytes(b)

    return fn


for _fmt in ("packed_q8", "packed_f32", "packed_q8_unshared"):
    _case(f"{_fmt}-duplicate-first-two", _fmt, _dup(0, 1), r"twice|tensor")
    _case(f"{_fmt}-duplicate-layer-entry", _fmt, _dup(2, 11), r"twice|tensor")
    _case(f"{_fmt}-duplicate-last", _fmt, _dup(3, -1), r"twice|tensor")
    _case(f"{_fmt}-unknown-name", _fmt, _rename(3, b"bogus"), r"unexpected")
    _case(f"{_fmt}-empty-name", _fmt, _rename(0, b""), r"unexpected")
    _case(f"{_fmt}-name-no-nul", _fmt, _rename(0, b"token_embeddingX"), r"unexpected")
    _case(f"{_fmt}-name-prefix", _fmt, _rename(0, b"token_embed"), r"unexpected")
_case("packed_q8-wcls-in-shared", "packed_q8", _rename(0, b"wcls", -1), r"unexpected")
_case("packed_q8_unshared-two-wcls", "packed_q8_unshared", _rename(0, b"wcls", -1), r"twice|tensor")


@pytest.mark.parametrize("cid,fmt,fn,expect", HEADER_CASES, ids=[c[0] for c in HEADER_CASES])
def test_bad_header(tools: Tools, files: Files, cid: str, fmt: str, fn: Mutation, expect: str | None) -> None:
    data = fn(files.base[fmt])
    assert data != files.base[fmt], "the mutation changed nothing"
    # the loader is shared: alternate the tool to keep the suite fast, both see every kind
    tool = ("l2run", "l2convert")[sum(map(ord, cid)) % 2]
    assert_bad_model(tools, files, cid, data, (tool,), expect)
