"""NaN and infinite weights in every format: the forward pass reports them, never prints garbage."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from bad_input_support import (
    CFG,
    Files,
    Tools,
    packed_entry,
    put,
    run_bad_model,
)

from storyteller.devtools import checkpoints as ck

# ----------------------------------------------------------------------------- NaN / inf


def _nan_v0(fmt_writer, name: str, value: float, index: int = 0, shared: bool = True):
    def make(d: Path) -> bytes:
        w = ck.make_weights(CFG, seed=9, shared=shared)
        p = d / f"nan-{name}-{value}.bin"
        fmt_writer(p, CFG, ck.with_nan(w, name, index, value))
        return p.read_bytes()

    return make


def _patch_f32(fmt: str, offset_of: Callable[[bytes], int], value: float, pack: str = "<f"):
    def make(files: Files) -> bytes:
        d = files.base[fmt]
        return put(d, offset_of(d), pack, value)

    return make


def _v2_scale_offset(d: bytes) -> int:
    # the first scales array: after the norms and the embedding's int8 values
    norms = 4 * (2 * CFG.n_layers + 1) * CFG.dim
    return 256 + norms + CFG.vocab_size * CFG.dim + 4 * 1  # scale of the embedding's group 1 (BOS row)


def _packed_data(name: str, layer: int, elem: int, size: int = 4, scales: bool = False):
    def off(d: bytes) -> int:
        e = packed_entry(d, name, layer)
        return (e["soff"] if scales else e["off"]) + elem * size

    return off


NAN_CASES = {
    "v0-wq-nan": lambda files: _nan_v0(ck.write_v0, "wq", float("nan"))(files.dir),
    "v0-unshared-wcls-inf": lambda files: _nan_v0(ck.write_v0, "wcls", float("inf"), 5, shared=False)(
        files.dir
    ),
    "v1-w1-inf": lambda files: _nan_v0(ck.write_v1, "w1", float("inf"), 3)(files.dir),
    "v1-rms_final-nan": lambda files: _nan_v0(ck.write_v1, "rms_final", float("nan"))(files.dir),
    "v1-embedding-bos-row-nan": lambda files: _nan_v0(ck.write_v1, "token_embedding", float("nan"), CFG.dim)(
        files.dir
    ),
    "v2-scale-nan": _patch_f32("v2", _v2_scale_offset, float("nan")),
    "v2-rms_att-inf": _patch_f32("v2", lambda d: 256, float("-inf")),
    "packed_f32-embedding-nan": _patch_f32(
        "packed_f32", _packed_data("token_embedding", -1, CFG.dim + 1), float("nan")
    ),
    "packed_f32-rms_ffn-inf": _patch_f32("packed_f32", _packed_data("rms_ffn", 0, 0), float("inf")),
    "packed_f16-wq-nan": _patch_f32("packed_f16", _packed_data("wq", 0, 0, 2), 0x7E00, "<H"),
    "packed_f16-w2-inf": _patch_f32("packed_f16", _packed_data("w2", 1, 7, 2), 0x7C00, "<H"),
    "packed_q8-scale-nan": _patch_f32("packed_q8", _packed_data("wq", 0, 0, scales=True), float("nan")),
    "packed_q8-rms_att-nan": _patch_f32("packed_q8", _packed_data("rms_att", 0, 0), float("nan")),
    "packed_q8-rms_final-inf": _patch_f32("packed_q8", _packed_data("rms_final", -1, 3), float("inf")),
}


@pytest.mark.parametrize("case", list(NAN_CASES))
def test_nan_weights(tools: Tools, files: Files, case: str) -> None:
    data = NAN_CASES[case](files)
    path = files.write(f"{tools.build}-nan-{case}.bin", data)
    why = run_bad_model(tools, files, "l2run", path, r"non-finite")
    assert why is None, f"l2run: {why}"
    why = run_bad_model(tools, files, "l2convert", path, r"NaN|infinit|non-finite")
    assert why is None, f"l2convert: {why}"
