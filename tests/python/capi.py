"""A small typed helper over the C library (cffi, native.lib()) for the tests of the C API
itself (the package's storyteller.engine adds threads, text and typed errors on top).

    with capi.Model(path) as m:              # l2_model_open; m.info is a dict of l2_model_info
        with m.session(context=0, kv_type="f32", kernels=None) as s:
            s.eval([1, 42])                  # l2_session_eval
            logits = s.logits()              # a float32 numpy copy of l2_session_logits
        reports = m.convert(out, "q8", 32)   # l2_convert: list of per-tensor report dicts

Every failing call raises L2Error, which carries the C status and the C error message.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any, Self

import numpy as np
from native import error_message, lib

# The enum values, from the library (llama2_rvv.h), never copied.
_ffi, _c = lib()
OK, ERR_IO, ERR_FORMAT, ERR_NOMEM, ERR_ARG, ERR_RANGE, ERR_NUMERIC = (
    _c.L2_OK, _c.L2_ERR_IO, _c.L2_ERR_FORMAT, _c.L2_ERR_NOMEM, _c.L2_ERR_ARG, _c.L2_ERR_RANGE, _c.L2_ERR_NUMERIC)
STATUS_NAMES: dict[int, str] = {v: k.removeprefix("L2_") for v, k in _ffi.typeof("l2_status").elements.items()}
TYPE_F32, TYPE_F16, TYPE_Q8, TYPE_Q8_FLAT = _c.L2_TYPE_F32, _c.L2_TYPE_F16, _c.L2_TYPE_Q8, _c.L2_TYPE_Q8_FLAT
TYPES = {"f32": TYPE_F32, "f16": TYPE_F16, "q8": TYPE_Q8, "q8_flat": TYPE_Q8_FLAT}
FILE_V0, FILE_V1, FILE_V2, FILE_PACKED = _c.L2_FILE_V0, _c.L2_FILE_V1, _c.L2_FILE_V2, _c.L2_FILE_PACKED

INFO_FIELDS = tuple(name for name, _ in _ffi.typeof("l2_model_info").fields)
REPORT_FIELDS = ("layer", "rows", "cols", "bytes", "max_abs_value", "max_abs_error")


class L2Error(Exception):
    """A C call returned a status other than L2_OK."""

    def __init__(self, status: int, message: str, call: str) -> None:
        name = STATUS_NAMES.get(status, str(status))
        super().__init__(f"{call}: {name}: {message}")
        self.status = status
        self.message = message
        self.call = call


def _type_id(t: int | str) -> int:
    return TYPES[t] if isinstance(t, str) else int(t)


def _check(status: int, ffi: Any, err: Any, call: str) -> None:
    if status != OK:
        raise L2Error(status, error_message(ffi, err), call)


def kernel_names() -> list[str]:
    """l2_kernels_name(0), (1), ... up to the first NULL."""
    ffi, c = lib()
    names, i = [], 0
    while (p := c.l2_kernels_name(i)) != ffi.NULL:
        names.append(ffi.string(p).decode())
        i += 1
    return names


class _Owned:
    """Owns a C object through a cffi gc handle; close() (idempotent) or the GC frees it."""

    ffi: Any
    handle: Any

    def close(self) -> None:
        if self.handle is not None:
            self.ffi.release(self.handle)
            self.handle = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Model(_Owned):
    """An open model (l2_model_open); close() or use as a context manager."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.ffi, self.c = lib()
        self.path = os.fspath(path)
        out, err = self.ffi.new("l2_model **"), self.ffi.new("l2_error *")
        _check(self.c.l2_model_open(self.path.encode(), out, err), self.ffi, err, "l2_model_open")
        assert out[0] != self.ffi.NULL
        self.handle = self.ffi.gc(out[0], self.c.l2_model_free)
        raw = self.ffi.new("l2_model_info *")
        self.c.l2_model_info_get(self.handle, raw)
        self.info: dict[str, int] = {f: int(getattr(raw, f)) for f in INFO_FIELDS}

    def session(self, context: int = 0, kv_type: int | str = TYPE_F32,
                kernels: str | None = None) -> Session:
        return Session(self, context, kv_type, kernels)

    def convert(self, path: str | os.PathLike[str], wtype: int | str,
                group_size: int = 0) -> list[dict[str, Any]]:
        """l2_convert into a packed file; the per-tensor reports as dicts (name, layer, ...)."""
        ffi = self.ffi
        cap = self.info["n_tensors"]
        reports = ffi.new("l2_tensor_report[]", cap)
        n, err = ffi.new("int32_t *"), ffi.new("l2_error *")
        st = self.c.l2_convert(self.handle, os.fspath(path).encode(), _type_id(wtype), group_size,
                               reports, cap, n, err)
        _check(st, ffi, err, "l2_convert")
        out = []
        for r in reports[0:n[0]]:
            d: dict[str, Any] = {"name": ffi.string(r.name).decode()}
            d.update({f: getattr(r, f) for f in REPORT_FIELDS})
            out.append(d)
        return out



class Session(_Owned):
    """KV cache + activations over a Model (which it keeps alive)."""

    def __init__(self, model: Model, context: int = 0, kv_type: int | str = TYPE_F32,
                 kernels: str | None = None) -> None:
        self.model, self.ffi, self.c = model, model.ffi, model.c
        ffi = self.ffi
        params = ffi.new("l2_session_params *")
        params.context = context
        params.kv_type = _type_id(kv_type)
        self._kernels_buf = ffi.new("char[]", kernels.encode()) if kernels is not None else ffi.NULL
        params.kernels = self._kernels_buf
        out, err = ffi.new("l2_session **"), ffi.new("l2_error *")
        _check(self.c.l2_session_new(model.handle, params, out, err), ffi, err, "l2_session_new")
        assert out[0] != ffi.NULL
        self.handle = ffi.gc(out[0], self.c.l2_session_free)
        self.vocab_size = model.info["vocab_size"]

    def eval(self, tokens: Sequence[int] | np.ndarray) -> None:
        """l2_session_eval on all of tokens in one call."""
        arr = np.ascontiguousarray(tokens, dtype=np.int32)
        err = self.ffi.new("l2_error *")
        ptr = self.ffi.from_buffer("int32_t[]", arr) if arr.size else self.ffi.NULL
        _check(self.c.l2_session_eval(self.handle, ptr, int(arr.size), err), self.ffi, err,
               "l2_session_eval")

    def logits(self) -> np.ndarray:
        """A float32 copy of the last evaluated position's logits."""
        p = self.c.l2_session_logits(self.handle)
        buf = self.ffi.buffer(p, 4 * self.vocab_size)
        return np.frombuffer(buf, dtype=np.float32).copy()

    def eval_logits(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        self.eval(tokens)
        return self.logits()

    def eval_each(self, tokens: Iterable[int]) -> np.ndarray:
        """One eval per token: the (n, vocab) logits of every position."""
        return np.stack([self.eval_logits([t]) for t in tokens])

    @property
    def pos(self) -> int:
        return int(self.c.l2_session_pos(self.handle))

    @property
    def context(self) -> int:
        return int(self.c.l2_session_context(self.handle))

    @property
    def kernels(self) -> str:
        return self.ffi.string(self.c.l2_session_kernels(self.handle)).decode()

    def reset(self) -> None:
        self.c.l2_session_reset(self.handle)



def run_logits(path: str | os.PathLike[str], tokens: Sequence[int], kv_type: int | str = TYPE_F32,
               kernels: str | None = None) -> np.ndarray:
    """Opens path and returns the (n, vocab) logits of tokens fed one per eval."""
    with Model(path) as m, m.session(kv_type=kv_type, kernels=kernels) as s:
        return s.eval_each(tokens)


def convert(src: str | os.PathLike[str], dst: str | os.PathLike[str], wtype: int | str,
            group_size: int = 0) -> list[dict[str, Any]]:
    """Opens src and converts it to the packed file dst (wtype: "f32", "f16", "q8" or an id)."""
    with Model(src) as m:
        return m.convert(dst, wtype, group_size)
