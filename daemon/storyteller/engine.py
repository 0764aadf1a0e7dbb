"""Model, Tokenizer and Session: a small typed layer over the libllama2_rvv C API.

    model = Model.open("models/stories15M.q8.l2")
    tok = Tokenizer.open("models/tokenizer.bin")
    with model.session(tok, context=256, kv="f16") as s:
        for text in s.generate("Once upon a time", max_tokens=100, temperature=0.8, seed=42):
            print(text, end="", flush=True)

The only module that touches cffi objects. It knows nothing of stories: it turns a prompt
into text exactly as `l2run` does (same tokens, same bytes, for the same flags), raises a
StorytellerError subclass carrying the C library's own message when a call fails, and lets
another thread cancel() a generation. cffi releases the GIL during every C call, so other
Python threads run while a token is computed. Arguments are checked before they reach C,
where they would be cut short or wrapped: a path or text holding a NUL, text that is not
UTF-8, an integer beyond int32 raise ArgumentError naming it.

Threads (the C library's contract, llama2_rvv.h, enforced here):

- A Model and a Tokenizer may be used by any number of threads at once, and shared by any
  number of sessions.
- A Session does one thing at a time: a call (eval, reset, logits, sample, pos) or one step
  of a generation. Started from another thread while one runs, it raises SessionBusyError
  at once and changes nothing. Between calls and steps a session may pass from thread to
  thread; a new generation ends the one before it (whose iterator then stops).
- cancel() may be called from any thread at any time: the generation stops before its next
  token, and a prompt being evaluated (one long C call) stops within one layer.
- close() may be called from any thread at any time, also while a generation runs: it
  cancels that generation, waits for the C call in progress to return (within one layer),
  then frees; the generation's iterator stops, and any later use raises "... is closed".
  Model.close() and Tokenizer.close() close their sessions so first, and wait for calls in
  progress on themselves (a Model.convert() runs to its end). Freeing happens once, after
  the last call on the object has returned.
- A failed C call leaves a session where it was: the positions of a failed eval() are not
  kept (pos is unchanged) and the session goes on from there.
"""

from __future__ import annotations

import codecs
import os
import secrets
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Self

from storyteller import _native
from storyteller.errors import (
    ArgumentError,
    SessionBusyError,
    StorytellerError,
    VocabMismatchError,
    error_for_status,
)

if TYPE_CHECKING:
    import numpy as np

KV_TYPES = ("f32", "f16")  # l2_type names a KV cache can have
CONVERT_TYPES = ("f32", "f16", "q8")  # and a packed file
CONVERT_MODES = ("f32", "f16", "q8", "fast", "balanced", "faithful")  # l2_convert_mode; FORMAT.md "Modes"
METHODS = ("absmax", "gptq")  # L2_METHOD_*
_U64 = (1 << 64) - 1


def _lib() -> tuple[Any, Any]:
    return _native.load()


def _type(name: str) -> int:
    """The l2_type called `name` (l2_type_name's)."""
    return int(getattr(_lib()[1], f"L2_TYPE_{name.upper()}"))


def _name(c_name: Any) -> str:
    """A name the C library returns (l2_type_name, l2_file_kind_name)."""
    ffi, _ = _lib()
    return "?" if c_name == ffi.NULL else str(ffi.string(c_name).decode())


# ---- arguments: checked here, so that the C call never sees one cut short or wrapped


def _c_path(path: str | os.PathLike[str]) -> bytes:
    """A path as the C library takes it; one with a NUL would be cut short there."""
    data = os.fsencode(path)
    if b"\0" in data:
        raise ArgumentError(f"the path {os.fsdecode(data)!r} contains a NUL character")
    return data


def _int32(what: str, value: int) -> int:
    """value, if the C library's int32_t holds it."""
    if not -(1 << 31) <= value < 1 << 31:
        raise ArgumentError(f"{what} {value} is out of range (a 32-bit integer)")
    return value


def _utf8(text: str, what: str) -> bytes:
    """text as UTF-8 without NUL; text decoded from bytes that are not UTF-8 (lone
    surrogates, as Python gives for such command-line arguments) is refused, naming the byte."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as e:
        code = ord(text[e.start])
        bad = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}"
        raise ArgumentError(f"{what} is not valid UTF-8 ({bad} after {text[:e.start]!r})") from None
    if b"\0" in data:
        raise ArgumentError(f"{what} contains a NUL character")
    return data


def _raise(status: int, err: Any) -> None:
    ffi, _ = _lib()
    raise error_for_status(status, ffi.string(err.message).decode("utf-8", "replace"))


def version() -> str:
    """The C library's version string."""
    ffi, lib = _lib()
    return str(ffi.string(lib.l2_version()).decode())


def check_run_option(flag: str, text: str) -> float | int:
    """The value of llama2.c run's numeric option -t, -p (a float), -s, -n or -v (an int),
    checked by the C library's rule, l2_check_option, which l2run applies too; ArgumentError
    ("-t needs a temperature of 0 or more, not '-1'") when it breaks it."""
    ffi, lib = _lib()
    number, whole, err = ffi.new("double *"), ffi.new("int64_t *"), ffi.new("l2_error *")
    if (st := lib.l2_check_option(flag.encode(), _utf8(text, f"the value of -{flag}"), number, whole, err)) != 0:
        _raise(st, err)
    return float(number[0]) if flag in "tp" else int(whole[0])


def kernel_names() -> list[str]:
    """The kernel sets this build runs on this CPU, fastest (the default) first."""
    ffi, lib = _lib()
    names: list[str] = []
    while (p := lib.l2_kernels_name(len(names))) != ffi.NULL:
        names.append(ffi.string(p).decode())
    return names


# ----------------------------------------------------------------------------- model


@dataclass(frozen=True)
class ModelShape:
    """A llama2.c model's shape, as its checkpoint header gives it."""

    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    seq_len: int


@dataclass(frozen=True)
class ModelInfo(ModelShape):
    """l2_model_info: the model's shape and storage."""

    shared_classifier: int
    weight_type: int  # l2_type
    group_size: int  # q8 group size, 0 for float types
    file_kind: int  # l2_file_kind
    format_version: int
    n_tensors: int  # tensors convert() writes and reports
    file_bytes: int
    weight_bytes_per_token: int
    weight_type_name: str  # l2_type_name: "f32", "f16", "q8", "q8 (llama2.c v2)"
    file_kind_name: str  # l2_file_kind_name: "llama2.c v0", ..., "packed"
    default_kv: str  # l2_default_kv_type: f16 for packed f16/q8 models, else f32 (as l2run)


@dataclass(frozen=True)
class TensorReport:
    """One tensor written by Model.convert (l2_tensor_report)."""

    name: str
    layer: int  # -1 outside the layers
    rows: int
    cols: int
    bytes: int
    max_abs_value: float
    max_abs_error: float  # largest |stored - source|


def _busy(name: str) -> SessionBusyError:
    return SessionBusyError(f"{name} is in use by another thread (a session runs one call or generation "
                            "step at a time: give each thread its own session, Model.session())")


class _Owned:
    """Owns a C object through a cffi gc handle: close() (idempotent, from any thread) or the
    GC releases it; used after close(), it raises instead of crashing.

    Every C call on the object runs inside `with self._use() as handle:`, which counts it;
    close() refuses new calls, waits until the calls in progress have returned, then frees.
    An exclusive object (a Session) takes one call at a time: a second, from another
    thread, raises SessionBusyError."""

    _handle: Any
    _name: str  # what it is, for the error
    _exclusive = False

    def _own(self, handle: Any, name: str) -> None:
        self._handle = handle
        self._name = name
        self._state = threading.Condition(threading.Lock())  # guards the fields below and _handle
        self._users = 0  # C calls in progress
        self._closing = False

    @property
    def handle(self) -> Any:
        """The C handle (for tests and tools: calls made with it are not counted)."""
        if self._handle is None:
            raise StorytellerError(f"{self._name} is closed")
        return self._handle

    def _enter(self) -> Any:
        with self._state:
            if self._handle is None or self._closing:
                raise StorytellerError(f"{self._name} is closed")
            if self._exclusive and self._users:
                raise _busy(self._name)
            self._users += 1
            return self._handle

    def _leave(self) -> None:
        with self._state:
            self._users -= 1
            if self._closing and not self._users:
                self._state.notify_all()

    @contextmanager
    def _use(self) -> Iterator[Any]:
        """The C handle, which stays valid until the block ends."""
        handle = self._enter()
        try:
            yield handle
        finally:
            self._leave()

    def _close(self, before_free: Callable[[], None] | None = None) -> None:
        """Refuses new calls, runs before_free, waits for the calls in progress, frees. A
        concurrent close() waits until the first one has freed."""
        with self._state:
            if self._closing:
                while self._handle is not None:
                    self._state.wait()
                return
            self._closing = True
        try:
            if before_free is not None:
                before_free()
        finally:
            with self._state:
                while self._users:
                    self._state.wait()
            # no call starts any more; one that was in progress may have added a dependent
            # (a session being created): run before_free again for it
            if before_free is not None:
                before_free()
            ffi, _ = _lib()
            with self._state:
                ffi.release(self._handle)
                self._handle = None
                self._state.notify_all()

    def close(self) -> None:
        self._close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Model(_Owned):
    """A model file, mapped read-only and shared by its sessions. Use Model.open()."""

    def __init__(self, handle: Any, path: str, info: ModelInfo) -> None:
        self._own(handle, f"the model {path}")
        self.path = path
        self.info = info
        self._sessions: weakref.WeakSet[Session] = weakref.WeakSet()

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Model:
        """Opens a llama2.c v0/v1/v2 checkpoint or a packed file (the format is detected)."""
        ffi, lib = _lib()
        p = os.fspath(path)
        out, err = ffi.new("l2_model **"), ffi.new("l2_error *")
        if (st := lib.l2_model_open(_c_path(p), out, err)) != 0:
            _raise(st, err)
        handle = ffi.gc(out[0], lib.l2_model_free)
        raw = ffi.new("l2_model_info *")
        lib.l2_model_info_get(handle, raw)
        values: dict[str, int | str] = {"weight_type_name": _name(lib.l2_type_name(raw.weight_type)),
                                        "file_kind_name": _name(lib.l2_file_kind_name(raw.file_kind)),
                                        "default_kv": _name(lib.l2_type_name(lib.l2_default_kv_type(handle)))}
        values.update({f.name: int(getattr(raw, f.name)) for f in fields(ModelInfo) if f.name not in values})
        info = ModelInfo(**values)  # type: ignore[arg-type]
        return cls(handle, p, info)

    @property
    def vocab_size(self) -> int:
        return self.info.vocab_size

    def run_positions(self, steps: int) -> int:
        """llama2.c's -n rule (l2_run_positions): steps, or seq_len when steps is 0 or more."""
        _, lib = _lib()
        with self._use() as handle:
            return int(lib.l2_run_positions(handle, _int32("steps", steps)))

    def session(self, tokenizer: Tokenizer | None = None, *, context: int = 0, kv: str | None = None,
                kernels: str | None = None) -> Session:
        """A new session (KV cache and activations) of `context` positions (0: seq_len).

        kv: "f32" or "f16" (None: l2run's default, ModelInfo.default_kv); kernels: a name from
        kernel_names() (None: the fastest). Without a tokenizer the session only evaluates
        token ids; generate() needs one whose vocabulary is the model's.
        """
        if tokenizer is not None and tokenizer.vocab_size != self.vocab_size:
            raise VocabMismatchError(
                f"the tokenizer {tokenizer.path} has {tokenizer.vocab_size} pieces but the model "
                f"{self.path} has a vocabulary of {self.vocab_size}: use the model's own tokenizer")
        # the model and tokenizer stay open until the session is registered with both, so
        # their close() finds it and closes it first
        with self._use() as model_handle, tokenizer._use() if tokenizer is not None else nullcontext():
            s = Session(self, model_handle, tokenizer, context, kv, kernels)
            for owner in (self, tokenizer):
                if owner is not None:
                    with owner._state:
                        owner._sessions.add(s)
        return s

    def convert(self, path: str | os.PathLike[str], type: str = "q8", group_size: int = 0, *,
                mode: str | None = None, method: str | None = None,
                calib: Sequence[int] | None = None) -> list[TensorReport]:
        """Writes the model as a packed file of `type` ("f32", "f16", "q8"; group_size 0 picks
        the q8 default), or of a named `mode` (CONVERT_MODES: "fast" and "faithful" are q8
        with the levers FORMAT.md's "Modes" lists). method: "absmax" or "gptq" (calibrated on
        `calib` token ids, or on tokens the model samples itself). Written to "<path>.tmp",
        renamed into place when complete. Refuses (ArgumentError) a path whose file, or whose
        ".tmp", is the model's own file: the model is read from it while the new file is
        written."""
        if mode is None and type not in CONVERT_TYPES:
            raise ArgumentError(f"unsupported type {type!r}: use one of {', '.join(CONVERT_TYPES)}")
        if method is not None and method not in METHODS:
            raise ArgumentError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
        target = _c_path(path)
        for written in (target, target + b".tmp"):
            if os.path.exists(written) and os.path.samefile(written, self.path):
                raise ArgumentError(f"{os.fsdecode(written)} is the model's own file: writing it would destroy "
                                    "the model while it is read; write to another file")
        ffi, lib = _lib()
        cap = 3 + 9 * self.info.n_layers  # an f16 lookup table beside the classifier: one more
        reports = ffi.new("l2_tensor_report[]", cap)
        n, err = ffi.new("int32_t *"), ffi.new("l2_error *")
        params = ffi.new("l2_convert_params *")
        if mode is not None:
            if (st := lib.l2_convert_mode(_utf8(mode, "the mode"), params, err)) != 0:
                _raise(st, err)
        else:
            params.type, params.group_size = _type(type), _int32("group_size", group_size)
        if method is not None:
            params.method = METHODS.index(method)
        ids = ffi.new("int32_t[]", [_int32("token id", t) for t in calib]) if calib else ffi.NULL
        if calib:
            params.calib, params.n_calib = ids, len(calib)
        with self._use() as handle:
            st = lib.l2_convert_with(handle, target, params, reports, cap, n, err)
        if st != 0:
            _raise(st, err)
        return [TensorReport(ffi.string(r.name).decode(), int(r.layer), int(r.rows), int(r.cols),
                             int(r.bytes), float(r.max_abs_value), float(r.max_abs_error))
                for r in reports[0:n[0]]]

    def storage(self) -> dict[str, Any]:
        """How a packed file was made (l2_storage_info): method ("absmax", "gptq"),
        calib_tokens, two_part_sites, embedding_type, weight_error, output_error."""
        ffi, lib = _lib()
        raw = ffi.new("l2_storage_info *")
        with self._use() as handle:
            lib.l2_model_storage_get(handle, raw)
        return {"method": METHODS[raw.method], "calib_tokens": int(raw.calib_tokens),
                "two_part_sites": int(raw.two_part_sites),
                "embedding_type": _name(lib.l2_type_name(raw.embedding_type)),
                "weight_error": float(raw.weight_error), "output_error": float(raw.output_error)}

    def close(self) -> None:
        """Closes its sessions (each cancels its generation and waits for its C call), waits
        for a convert() in progress, then frees the model. Idempotent; any thread."""
        self._close(lambda: _close_sessions(self))


# ----------------------------------------------------------------------------- tokenizer


class Tokenizer(_Owned):
    """A llama2.c tokenizer.bin. Use Tokenizer.open()."""

    def __init__(self, handle: Any, path: str, vocab_size: int, pieces_in_file: int) -> None:
        self._own(handle, f"the tokenizer {path}")
        self.path = path
        self.vocab_size = vocab_size
        self.pieces_in_file = pieces_in_file
        self._sessions: weakref.WeakSet[Session] = weakref.WeakSet()

    @classmethod
    def open(cls, path: str | os.PathLike[str], vocab_size: int | None = None) -> Tokenizer:
        """Opens a tokenizer of `vocab_size` pieces (None: every piece the file holds; a
        model then accepts it only when that is its vocabulary size)."""
        ffi, lib = _lib()
        p = os.fspath(path)
        out, err = ffi.new("l2_tokenizer **"), ffi.new("l2_error *")
        if vocab_size is None:  # count the pieces: open with the minimum, then with all
            if (st := lib.l2_tokenizer_open(_c_path(p), 3, out, err)) != 0:
                _raise(st, err)
            vocab_size = int(lib.l2_tokenizer_pieces_in_file(out[0]))
            lib.l2_tokenizer_free(out[0])
        if (st := lib.l2_tokenizer_open(_c_path(p), _int32("vocab_size", vocab_size), out, err)) != 0:
            _raise(st, err)
        handle = ffi.gc(out[0], lib.l2_tokenizer_free)
        return cls(handle, p, int(lib.l2_tokenizer_vocab_size(handle)),
                   int(lib.l2_tokenizer_pieces_in_file(handle)))

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        """llama2.c's encode: optional BOS, the dummy-prefix space, BPE merges, optional EOS."""
        data = _utf8(text, "the text")
        ffi, lib = _lib()
        cap = len(data) + 3
        tokens, n, err = ffi.new("int32_t[]", cap), ffi.new("int32_t *"), ffi.new("l2_error *")
        with self._use() as handle:
            st = lib.l2_tokenizer_encode(handle, data, int(bos), int(eos), tokens, cap, n, err)
        if st != 0:
            _raise(st, err)
        return list(tokens[0:n[0]])

    def decode(self, prev: int, token: int) -> bytes:
        """The bytes of `token` following `prev` (a "<0xHH>" piece is that byte; after BOS a
        leading space is dropped). Raw: llama2.c's print rule is TextDecoder's job."""
        ffi, lib = _lib()
        piece, n, err = ffi.new("const char **"), ffi.new("size_t *"), ffi.new("l2_error *")
        prev, token = _int32("token id", prev), _int32("token id", token)
        with self._use() as handle:  # the piece lives in the tokenizer: copied before close()
            if (st := lib.l2_tokenizer_decode(handle, prev, token, piece, n, err)) != 0:
                _raise(st, err)
            return bytes(ffi.buffer(piece[0], n[0]))

    def close(self) -> None:
        """Closes the sessions using it (each cancels its generation and waits for its C
        call), waits for calls in progress, then frees the tokenizer. Idempotent; any thread."""
        self._close(lambda: _close_sessions(self))


def _close_sessions(owner: Model | Tokenizer) -> None:
    with owner._state:
        sessions = list(owner._sessions)
    for s in sessions:
        s.close()


# ----------------------------------------------------------------------------- text


def printable_piece(piece: bytes, keep_bytes: bool = False) -> bytes:
    """llama2.c's print rule: nothing after a NUL, and a one-byte piece that is neither
    printable ASCII nor whitespace is dropped. keep_bytes keeps one-byte pieces >= 0x80 (the
    "<0xHH>" tokens that spell a character the vocabulary lacks), which `run` drops. The rule is
    the C library's, l2_printable_len, which l2run applies."""
    if keep_bytes and len(piece) == 1 and piece[0] >= 0x80:
        return piece
    return piece[:_lib()[1].l2_printable_len(piece, len(piece))]


class TextDecoder:
    """Pieces (bytes) -> text, applying printable_piece and assembling UTF-8 characters
    split across pieces. Bytes that are not UTF-8 become lone surrogates
    (errors="surrogateescape"), so `text.encode("utf-8", "surrogateescape")` gives back
    exactly the bytes `run` prints; pass errors="replace" for text meant for people."""

    def __init__(self, keep_bytes: bool = False, errors: str = "surrogateescape") -> None:
        self.keep_bytes = keep_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors)

    def feed(self, piece: bytes) -> str:
        """The text completed by this piece ("" while a character is incomplete)."""
        return self._decoder.decode(printable_piece(piece, self.keep_bytes))

    def flush(self) -> str:
        """Whatever an incomplete character at the end leaves."""
        return self._decoder.decode(b"", final=True)


# ----------------------------------------------------------------------------- sampling


class Sampler:
    """llama2.c's sampler: xorshift RNG, temperature (0: argmax), top-p (0 or 1: off)."""

    def __init__(self, vocab_size: int, temperature: float = 1.0, top_p: float = 0.9,
                 seed: int | None = None) -> None:
        """temperature and top_p within l2_check_option's ranges (the C library refuses others:
        ArgumentError); seed None or 0 draws a random one."""
        if not seed:
            seed = secrets.randbits(63) | 1
        self.seed = seed & _U64  # a negative seed wraps as l2run's (unsigned long long) cast
        ffi, lib = _lib()
        out, err = ffi.new("l2_sampler **"), ffi.new("l2_error *")
        if (st := lib.l2_sampler_new(vocab_size, temperature, top_p, self.seed, out, err)) != 0:
            _raise(st, err)
        self.handle = ffi.gc(out[0], lib.l2_sampler_free)


@dataclass(frozen=True)
class Step:
    """One position of a generation: the token chosen and its piece (raw decode bytes)."""

    token: int
    piece: bytes
    forced: bool  # True for prompt tokens echoed, False for sampled ones


# ----------------------------------------------------------------------------- session


class Session(_Owned):
    """The KV cache and activations of one generation at a time. Use Model.session().

    One call or generation step at a time: started from another thread while one runs, a
    call raises SessionBusyError (the module docstring has the whole contract). cancel()
    and close() may be called from any thread at any time.
    """

    _exclusive = True

    def __init__(self, model: Model, model_handle: Any, tokenizer: Tokenizer | None, context: int,
                 kv: str | None, kernels: str | None) -> None:
        if kv is not None and kv not in KV_TYPES:
            raise ArgumentError(f"KV cache type must be f32 or f16 (got {kv!r})")
        ffi, lib = _lib()
        params = ffi.new("l2_session_params *")
        params.context = _int32("context", context)
        params.kv_type = _type(kv or "auto")
        kernels_c = ffi.new("char[]", _utf8(kernels, "the kernel set name")) if kernels else ffi.NULL
        params.kernels = kernels_c
        out, err = ffi.new("l2_session **"), ffi.new("l2_error *")
        if (st := lib.l2_session_new(model_handle, params, out, err)) != 0:
            _raise(st, err)
        self._own(ffi.gc(out[0], lib.l2_session_free), "the session")
        self.model = model
        self.tokenizer = tokenizer
        self.kv = _name(lib.l2_type_name(lib.l2_session_kv_type(self._handle)))
        self.context = int(lib.l2_session_context(self._handle))
        self.kernels = ffi.string(lib.l2_session_kernels(self._handle)).decode()
        self._cancelled = False  # cancel() was called since the last generation start or reset
        self._generation = 0  # bumped by every generation start and by close() (under _state)

    @property
    def pos(self) -> int:
        """Positions evaluated so far."""
        _, lib = _lib()
        with self._use() as s:
            return int(lib.l2_session_pos(s))

    def reset(self) -> None:
        """Forgets every position (the next eval starts at 0) and a cancel()."""
        with self._use() as s:
            self._reset(s)

    def _reset(self, s: Any) -> None:
        # with cancel()'s lock: a cancel lands wholly before the reset (which clears it) or after
        _, lib = _lib()
        with self._state:
            self._cancelled = False
            lib.l2_session_reset(s)

    def eval(self, tokens: Sequence[int]) -> None:
        """Runs the forward pass on `tokens` at the next positions, in one C call. After
        cancel() (also during the call) it raises EvalCancelledError until reset(); on any
        error the session stays at the position it had."""
        ffi, lib = _lib()
        ids = [_int32("token id", t) for t in tokens]
        buf, err = ffi.new("int32_t[]", ids), ffi.new("l2_error *")
        with self._use() as s:
            st = lib.l2_session_eval(s, buf, len(buf), err)
        if st != 0:
            _raise(st, err)

    def logits(self) -> np.ndarray:
        """A float32 copy of the logits of the last evaluated position."""
        import numpy as np  # here: the generation path does not need numpy's memory

        ffi, lib = _lib()
        with self._use() as s:
            p = lib.l2_session_logits(s)
            return np.frombuffer(ffi.buffer(p, 4 * self.model.vocab_size), dtype=np.float32).copy()

    def sample(self, sampler: Sampler) -> int:
        """A token drawn from the last logits (which the sampler overwrites), with the
        session's kernels."""
        ffi, lib = _lib()
        token, err = ffi.new("int32_t *"), ffi.new("l2_error *")
        with self._use() as s:
            st = lib.l2_session_sample(s, sampler.handle, token, err)
        if st != 0:
            _raise(st, err)
        return int(token[0])

    def cancel(self) -> None:
        """Stops the generation in progress before its next token, and a prompt evaluation
        (or eval()) in progress within one layer of the forward pass. Any thread, any time;
        a new generation (or reset()) starts afresh."""
        _, lib = _lib()
        with self._state:
            self._cancelled = True
            if self._handle is not None:
                lib.l2_session_cancel(self._handle)

    @property
    def cancelled(self) -> bool:
        """True when the last generation was stopped by cancel()."""
        return self._cancelled

    def steps(self, prompt: str = "", max_tokens: int | None = None, temperature: float = 1.0,
              top_p: float = 0.9, seed: int | None = None, *, echo: bool = True,
              stop_on_eos: bool = False) -> Iterator[Step]:
        """The generate loop of llama2.c's `run`, token by token: the C library's
        l2_generate_begin and l2_generate_step, which l2run runs too.

        The session is reset and the prompt (encoded with BOS) is evaluated here, in one call,
        before this returns; the iterator then yields the prompt's tokens (echo) and up to
        max_tokens sampled ones (None: until the context is full; a context of C positions
        holds C - len(prompt tokens) + 1 samples, the last one not evaluated). It ends early
        at a sampled BOS (and EOS with stop_on_eos), or when cancel() is called (also while
        the prompt is evaluated: the iterator then yields nothing), or close(), or when a new
        generation starts. seed None or 0 draws a random one. Raises ContextFullError when the
        prompt does not fit, SessionBusyError when another thread is using the session.
        """
        if (tok := self.tokenizer) is None:
            raise ArgumentError("this session has no tokenizer: pass one to Model.session()")
        prompt_tokens = tok.encode(prompt, bos=True)
        if max_tokens is not None and max_tokens < 0:
            raise ArgumentError(f"max_tokens must be 0 or more (got {max_tokens})")
        sampler = Sampler(self.model.vocab_size, temperature, top_p, seed)
        ffi, lib = _lib()
        buf, err = ffi.new("int32_t[]", prompt_tokens), ffi.new("l2_error *")
        g = ffi.new("l2_generation *")
        g.prompt, g.n_prompt, g.max_pos = buf, len(prompt_tokens), self.context
        g.max_sampled = -1 if max_tokens is None else _int32("max_tokens", max_tokens)
        g.stop_on_eos = int(stop_on_eos)
        with self._use() as s:
            with self._state:
                self._generation += 1
                generation = self._generation
            self._reset(s)
            st = lib.l2_generate_begin(s, g, err)
        if st == lib.L2_ERR_CANCELLED:
            return iter(())
        if st != 0:
            _raise(st, err)
        return _steps(self, generation, g, buf, tok.handle, sampler, echo)

    def generate(self, prompt: str = "", max_tokens: int | None = None, temperature: float = 1.0,
                 top_p: float = 0.9, seed: int | None = None, *, echo: bool = True,
                 stop_on_eos: bool = False, keep_byte_pieces: bool = False) -> Iterator[str]:
        """Text pieces as soon as each is complete UTF-8 (see steps() for the arguments).

        With the defaults the pieces joined are the bytes `l2run` prints for the same model,
        prompt and flags (`"".join(pieces).encode("utf-8", "surrogateescape")`, without its
        final newline; `l2run -n N` is a session of context N). keep_byte_pieces keeps the
        characters spelled with byte tokens, which llama2.c's print rule drops (and replaces
        bytes that are not UTF-8 with U+FFFD).
        """
        steps = self.steps(prompt, max_tokens, temperature, top_p, seed, echo=echo,
                           stop_on_eos=stop_on_eos)
        errors = "replace" if keep_byte_pieces else "surrogateescape"
        return _texts(steps, TextDecoder(keep_byte_pieces, errors))

    def close(self) -> None:
        """Ends the generation in progress (cancelling its C call, which returns within one
        layer), waits for the call to return, then frees the session. Idempotent; any thread."""
        self.cancel()
        with self._state:
            self._generation += 1
        self._close()


def _take(session: Session, generation: int) -> Any:
    """Takes the session for one step of `generation`: its handle, or None when the generation
    is over (cancelled, closed, or another one started). session._leave() gives it back."""
    with session._state:
        if (session._handle is None or session._closing or session._cancelled
                or generation != session._generation):
            return None
        if session._users:
            raise _busy(session._name)
        session._users = 1
        return session._handle


def _steps(session: Session, generation: int, g: Any, prompt: Any, t: Any, sampler: Sampler,
           echo: bool) -> Iterator[Step]:
    """The steps of a generation that l2_generate_begin started (Session.steps)."""
    # Where the time goes: l2_generate_step (eval, sample, decode) in C without the GIL. Each
    # step has the session to itself (_take/_leave: close() waits for it); `prompt` keeps
    # g.prompt's buffer alive. The tokenizer handle t stays valid: closing the tokenizer closes
    # the session first.
    ffi, lib = _lib()
    step_c, smp, buffer, cancelled = lib.l2_generate_step, sampler.handle, ffi.buffer, lib.L2_ERR_CANCELLED
    err = ffi.new("l2_error *")
    while True:
        if (s := _take(session, generation)) is None:
            return
        try:
            if (st := step_c(s, g, smp, t, err)) != 0:
                if st == cancelled:
                    return
                _raise(st, err)
            if g.done or session._cancelled:
                return
            data = buffer(g.piece, g.piece_len)[:] if g.piece != ffi.NULL else b""
        finally:
            session._leave()
        if echo or not g.forced:
            yield Step(g.token, data, bool(g.forced))


def _texts(steps: Iterator[Step], decoder: TextDecoder) -> Iterator[str]:
    for step in steps:
        if text := decoder.feed(step.piece):
            yield text
    if text := decoder.flush():
        yield text
