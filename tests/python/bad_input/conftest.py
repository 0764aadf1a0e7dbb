"""The two fixtures every bad-input test takes: the tools of both builds, made once per session, and
the valid files the cases corrupt (bad_input_support.py has the rest)."""

from __future__ import annotations

import pytest
from bad_input_support import (
    CFG,
    V2_GROUP,
    Files,
    Tools,
    _build,
    _layout_llama2c,
    _layout_packed,
    _tokenizer_pieces,
)

from storyteller.devtools import checkpoints as ck


@pytest.fixture(scope="session", params=["host", "asan"])
def tools(request, tmp_path_factory) -> Tools:
    return _build(request.param, tmp_path_factory.mktemp(f"tools-{request.param}"))


@pytest.fixture(scope="session")
def files(tmp_path_factory) -> Files:
    d = tmp_path_factory.mktemp("bad-input")
    host = _build("host", d / "host-tools")  # l2convert writes the packed files
    w = ck.make_weights(CFG, seed=7)
    wu = ck.make_weights(CFG, seed=8, shared=False)
    base: dict[str, bytes] = {}
    layout: dict[str, list[int]] = {}
    for name, writer, weights, args in (
        ("v0", ck.write_v0, w, ()),
        ("v0_unshared", ck.write_v0, wu, ()),
        ("v1", ck.write_v1, w, ()),
        ("v1_unshared", ck.write_v1, wu, ()),
        ("v2", ck.write_v2, w, (V2_GROUP,)),
        ("v2_unshared", ck.write_v2, wu, (V2_GROUP,)),
    ):
        p = d / f"{name}.bin"
        writer(p, CFG, weights, *args)
        base[name] = p.read_bytes()
        layout[name] = _layout_llama2c(name[:2], not name.endswith("unshared"))
    for name, src, typ, group in (
        ("packed_f32", "v0", "f32", None),
        ("packed_f16", "v1", "f16", None),
        ("packed_q8", "v0", "q8", None),
        ("packed_q8_g24", "v2", "q8", 24),
        ("packed_f32_unshared", "v0_unshared", "f32", None),
        ("packed_q8_unshared", "v0_unshared", "q8", None),
    ):
        out = d / f"{name}.bin"
        cmd = [d / f"{src}.bin", out, "--type", typ] + (["--group", str(group)] if group else [])
        proc = host.run("l2convert", *cmd)
        assert proc.returncode == 0, proc.stderr
        base[name] = out.read_bytes()
        layout[name] = _layout_packed(base[name])
    pieces, scores = _tokenizer_pieces(CFG.vocab_size)
    tok = d / "tok.bin"
    tok.write_bytes(ck.tokenizer_bytes(pieces, scores))
    return Files(d, tok, base, layout)
