"""The Python API (storyteller.engine) on synthetic models: the binding against the header,
typed errors, l2run-identical generation, text assembly, cancel() and the GIL."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import package_support as ps
import pytest

from storyteller.devtools import checkpoints as ck

ps.use_host_library()

from storyteller import _ffi_build, _native, errors, faults  # noqa: E402
from storyteller.engine import Model, TextDecoder, Tokenizer, printable_piece  # noqa: E402
from storyteller.sentences import split_stream  # noqa: E402

UNICODE_PROMPT = 'Tom said: "Héllo, wörld!" — ok? 😀 ñ 日本'


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api")


@pytest.fixture(scope="module")
def v0(d: Path) -> Path:
    return ps.write_random_model(d / "v0.bin")


@pytest.fixture(scope="module")
def q8(d: Path, v0: Path) -> Path:
    with Model.open(v0) as m:
        m.convert(d / "q8.l2", "q8")
    return d / "q8.l2"


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.open(ps.TOKENIZER)


# ----------------------------------------------------------------------------- binding


def test_cdef_is_the_header_section_and_every_function_is_bound() -> None:
    header = _native.header_path().read_text()
    cdef = _native.cdef_from_header(header)
    assert "l2_session_eval" in cdef and "/*" not in cdef and "#" not in cdef
    declared = set(re.findall(r"\b(l2_\w+)\s*\(", cdef))
    assert {"l2_model_open", "l2_convert", "l2_tokenizer_decode", "l2_sampler_sample", "l2_version"} <= declared
    ffi, lib = _native.load()
    for name in declared:
        assert callable(getattr(lib, name)), name
    # the binding's structs are the header's
    assert ffi.sizeof("l2_error") == 256
    assert ffi.offsetof("l2_model_info", "file_bytes") > ffi.offsetof("l2_model_info", "format_version")


def test_built_binding_uses_the_header_cdef() -> None:
    ffi = _ffi_build.ffi
    assert ffi._assigned_source[0] == "storyteller._llama2_rvv"
    cdef = _native.cdef_from_header((_ffi_build.C_DIR / "include" / "llama2_rvv.h").read_text())
    assert ffi._cdefsources == [cdef]  # the builder declares exactly the header's section


def test_cdef_without_markers_is_an_error() -> None:
    with pytest.raises(ValueError, match="CDEF"):
        _native.cdef_from_header("int f(void);")


def test_abi_mode_choice() -> None:
    assert not _ffi_build.abi_mode({})
    assert not _ffi_build.abi_mode({"STORYTELLER_ABI": "0"})
    assert _ffi_build.abi_mode({"STORYTELLER_ABI": "1"})
    assert _ffi_build.abi_mode({"STORYTELLER_LIB": "/x/libllama2_rvv.so"})


def test_build_compiles_every_library_source_with_the_makefile_float_flags() -> None:
    sources = _ffi_build.c_sources()
    assert any(s.endswith("kernels/generic.c") for s in sources)
    assert any(s.endswith("kernels/x86.c") for s in sources) and any(s.endswith("riscv_v.c") for s in sources)
    assert len(sources) == len(list((_ffi_build.C_DIR / "src").rglob("*.c")))
    assert "-ffp-contract=off" in _ffi_build.BASE_CFLAGS and "-std=c11" in _ffi_build.BASE_CFLAGS


def test_binding_reports_abi_mode_on_the_host_library() -> None:
    b = _native.binding()
    assert b.mode == "abi" and b.origin == ps.host_library()


# ----------------------------------------------------------------------------- errors


def test_status_codes_map_to_typed_exceptions() -> None:
    expected = {1: errors.ModelFileError, 2: errors.FormatError, 3: errors.OutOfMemoryError,
                4: errors.ArgumentError, 5: errors.ContextFullError, 6: errors.NumericError}
    for status, cls in expected.items():
        e = errors.error_for_status(status, "the message")
        assert type(e) is cls and e.status == status and str(e) == "the message"
        assert isinstance(e, errors.StorytellerError)
    assert isinstance(errors.error_for_status(4, "x"), ValueError)
    assert isinstance(errors.error_for_status(3, "x"), MemoryError)
    odd = errors.error_for_status(99, "")
    assert type(odd) is errors.LibraryError and "99" in str(odd)


def test_missing_model_raises_model_file_error_with_the_library_message(d: Path) -> None:
    with pytest.raises(errors.ModelFileError) as e:
        Model.open(d / "nope.bin")
    assert "nope.bin" in str(e.value) and e.value.status == 1


def test_corrupt_model_raises_format_error(d: Path) -> None:
    bad = d / "corrupt.bin"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(errors.FormatError):
        Model.open(bad)


def test_vocab_mismatch(d: Path, tok: Tokenizer) -> None:
    small = ps.write_random_model(d / "small.bin", ck.TINY)
    with Model.open(small) as m, pytest.raises(errors.VocabMismatchError, match="32000 pieces.*320"):
        m.session(tok)
    with Model.open(small) as m, Tokenizer.open(ps.TOKENIZER, m.vocab_size) as first:
        assert first.vocab_size == 320 and first.pieces_in_file == 32000
        m.session(first).close()  # an explicit vocab size is the caller's choice


def test_bad_session_arguments(v0: Path, tok: Tokenizer) -> None:
    with Model.open(v0) as m:
        with pytest.raises(errors.ArgumentError):
            m.session(tok, kv="f64")
        with pytest.raises(errors.ArgumentError, match="context"):
            m.session(tok, context=10_000)
        with pytest.raises(errors.ArgumentError, match="kernel"):
            m.session(tok, kernels="no-such-kernels")
        with m.session(tok) as s:
            with pytest.raises(errors.ArgumentError):
                s.generate("x", temperature=-1)
            with pytest.raises(errors.ArgumentError):
                s.generate("x", top_p=1.5)
            with pytest.raises(errors.ArgumentError, match="NUL"):
                s.generate("a\0b")
            with pytest.raises(errors.ArgumentError):
                s.eval([40000])
        with m.session() as s, pytest.raises(errors.ArgumentError, match="tokenizer"):
            s.generate("x")


def test_a_path_with_a_nul_is_refused_not_cut_short(d: Path, v0: Path) -> None:
    # the C library would open the path up to the NUL: "v0.bin\0y" would be "v0.bin"
    for open_ in (Model.open, Tokenizer.open):
        with pytest.raises(errors.ArgumentError, match="contains a NUL character"):
            open_(str(v0 if open_ is Model.open else ps.TOKENIZER) + "\0y")
    with Model.open(v0) as m, pytest.raises(errors.ArgumentError, match="NUL"):
        m.convert(str(d / "out.l2") + "\0.bin")
    assert not (d / "out.l2").exists()


def test_ints_too_large_for_int32_are_argument_errors(d: Path, v0: Path, tok: Tokenizer) -> None:
    big = 1 << 40
    with Model.open(v0) as m:
        with pytest.raises(errors.ArgumentError, match=f"context {big} is out of range"):
            m.session(tok, context=big)
        with pytest.raises(errors.ArgumentError, match=f"group_size {big} is out of range"):
            m.convert(d / "big.l2", "q8", big)
        with m.session(tok) as s, pytest.raises(errors.ArgumentError, match=f"token id {-big} is out of range"):
            s.eval([1, -big])
    with pytest.raises(errors.ArgumentError, match=f"vocab_size {big} is out of range"):
        Tokenizer.open(ps.TOKENIZER, big)
    with pytest.raises(errors.ArgumentError, match=f"token id {big} is out of range"):
        tok.decode(1, big)


def test_text_that_is_not_utf8_is_an_argument_error(v0: Path, tok: Tokenizer) -> None:
    # what Python makes of the bytes "Tom\xff" in a command line (surrogateescape)
    text = b"Tom\xff".decode("utf-8", "surrogateescape")
    with pytest.raises(errors.ArgumentError, match=r"the text is not valid UTF-8 \(byte 0xff after 'Tom'\)"):
        tok.encode(text)
    with Model.open(v0) as m, m.session(tok) as s, pytest.raises(errors.ArgumentError, match="0xff"):
        s.generate(text)


def test_convert_refuses_to_write_over_the_model(d: Path) -> None:
    # the file itself (by any name), or the "<path>.tmp" the library writes first
    for src, targets in (("self.bin", ("self.bin", "./self.bin")), ("in.tmp", ("in",))):
        path = ps.write_random_model(d / src, ck.TINY)
        before = path.read_bytes()
        with Model.open(path) as m:
            for target in targets:
                with pytest.raises(errors.ArgumentError, match="is the model's own file"):
                    m.convert(d / target, "q8")
        assert path.read_bytes() == before and not (d / "in").exists()


def test_a_model_file_cut_while_mapped_ends_the_process_with_one_line(d: Path, v0: Path) -> None:
    # Python alone dies of SIGBUS without a word; with faults' handler, the thread
    # that faults (here not the main one, which holds the GIL meanwhile) writes one line, exit 1
    victim = d / "victim.bin"
    victim.write_bytes(v0.read_bytes())
    script = ("import os, sys, threading, time\nfrom storyteller import faults\nfrom storyteller.engine import Model\n"
              "assert faults.install_sigbus_handler()\nm = Model.open(sys.argv[1])\nos.truncate(sys.argv[1], 0)\n"
              "s = m.session()\nthreading.Thread(target=s.eval, args=([1, 2, 3],)).start()\n"
              "end = time.monotonic() + 60\nwhile time.monotonic() < end:\n    pass\nprint('survived')\n")
    p = subprocess.run([sys.executable, "-c", script, str(victim)], capture_output=True, text=True,
                       env=ps.cli_env(), timeout=120, check=False)
    assert (p.returncode, p.stdout, p.stderr) == (1, "", faults.MESSAGE + "\n")


def test_prompt_longer_than_the_context(v0: Path, tok: Tokenizer) -> None:
    with Model.open(v0) as m, m.session(tok, context=4) as s:
        with pytest.raises(errors.ContextFullError, match="longer than the 4 steps of context"):
            s.generate("Once upon a time there was")
        s.eval([1, 2, 3, 4])
        with pytest.raises(errors.ContextFullError):
            s.eval([5])


def test_closed_objects_refuse_use(v0: Path) -> None:
    m = Model.open(v0)
    t = Tokenizer.open(ps.TOKENIZER)
    s = m.session(t)
    m.close()
    m.close()  # idempotent
    with pytest.raises(errors.StorytellerError, match="closed"):
        s.eval([1])
    with pytest.raises(errors.StorytellerError, match="closed"):
        m.session(t)
    t.close()
    with pytest.raises(errors.StorytellerError, match="closed"):
        t.encode("x")


# ----------------------------------------------------------------------------- generation = l2run


def l2run(model: Path, *args: str) -> bytes:
    p = subprocess.run([str(ps.l2run_binary()), str(model), "-z", str(ps.TOKENIZER), *args],
                       capture_output=True, check=True, timeout=60)
    return p.stdout


CASES = {
    "greedy_prompt": (["-t", "0", "-i", "Once upon a time"], {"temperature": 0.0, "prompt": "Once upon a time"}),
    "topp": (["-t", "1.0", "-p", "0.9", "-s", "42", "-i", "Lily", "-n", "60"],
             {"seed": 42, "prompt": "Lily", "context": 60}),
    "multinomial": (["-t", "0.8", "-p", "0", "-s", "7", "-n", "40"],
                    {"temperature": 0.8, "top_p": 0.0, "seed": 7, "context": 40}),
    "unicode": (["-s", "3", "-i", UNICODE_PROMPT], {"seed": 3, "prompt": UNICODE_PROMPT}),
    "negative_seed": (["-s", "-5", "-t", "0.9"], {"seed": -5, "temperature": 0.9}),
    "prompt_fills_context": (["-t", "0", "-i", "Once upon a time", "-n", "5"],
                             {"temperature": 0.0, "prompt": "Once upon a time", "context": 5}),
    "kv_f16": (["-k", "f16", "-s", "11", "-i", "The cat"], {"kv": "f16", "seed": 11, "prompt": "The cat"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_generate_gives_the_bytes_l2run_prints(v0: Path, tok: Tokenizer, case: str) -> None:
    args, kw = CASES[case]
    kw = dict(kw)
    with Model.open(v0) as m, m.session(tok, context=kw.pop("context", 0), kv=kw.pop("kv", None)) as s:
        text = "".join(s.generate(kw.pop("prompt", ""), None, kw.pop("temperature", 1.0), kw.pop("top_p", 0.9),
                                  kw.pop("seed", None)))
    assert text.encode("utf-8", "surrogateescape") + b"\n" == l2run(v0, *args)


def test_packed_q8_default_kv_is_l2runs(q8: Path, tok: Tokenizer) -> None:
    with Model.open(q8) as m, m.session(tok) as s:
        assert s.kv == "f16" and m.info.file_kind_name == "packed" and m.info.weight_type_name == "q8"
        text = "".join(s.generate("Once upon a time", temperature=0.9, seed=21))
    assert text.encode("utf-8", "surrogateescape") + b"\n" == l2run(q8, "-t", "0.9", "-s", "21", "-i",
                                                                      "Once upon a time")


def test_steps_are_the_prompt_then_samples(v0: Path, tok: Tokenizer) -> None:
    with Model.open(v0) as m, m.session(tok) as s:
        prompt = tok.encode("Once upon a time")
        steps = list(s.steps("Once upon a time", max_tokens=10, seed=9))
        assert [st.token for st in steps if st.forced] == prompt[1:]
        assert sum(not st.forced for st in steps) == 10
        assert s.pos == len(prompt) + 9  # the last sample is not evaluated
        quiet = list(s.steps("Once upon a time", max_tokens=10, seed=9, echo=False))
        assert quiet == [st for st in steps if not st.forced]
        assert list(s.steps("Once upon a time", max_tokens=0, seed=9)) == [st for st in steps if st.forced]


def test_same_seed_same_text_and_sessions_restart(v0: Path, tok: Tokenizer) -> None:
    with Model.open(v0) as m, m.session(tok) as s:
        a = "".join(s.generate("One day", 30, 1.0, 0.9, 1234))
        b = "".join(s.generate("One day", 30, 1.0, 0.9, 1234))
        c = "".join(s.generate("One day", 30, 1.0, 0.9, 4321))
    assert a == b != c


def test_a_new_generation_ends_the_previous_one(v0: Path, tok: Tokenizer) -> None:
    with Model.open(v0) as m, m.session(tok) as s:
        first = s.generate("One day", 30, seed=1)
        next(first)
        second = list(s.generate("One day", 30, seed=1))
        assert list(first) == [] and second


def test_bos_ends_generation(d: Path, tok: Tokenizer) -> None:
    model = ps.write_scripted_model(d / "bos.bin", {".": [(" Tom", 30)], " Tom": [("<s>", 30)]})
    with Model.open(model) as m, m.session(tok) as s:
        assert "".join(s.generate("Hi.", seed=1)) == "Hi. Tom"
        assert s.pos == len(tok.encode("Hi.")) + 1


def test_eos_ends_generation_only_when_asked(d: Path, tok: Tokenizer) -> None:
    model = ps.write_scripted_model(d / "eos.bin", {".": [(" Tom", 30)], " Tom": [("</s>", 30)],
                                                    "</s>": [(" Tom", 30)]})
    with Model.open(model) as m, m.session(tok) as s:
        assert "".join(s.generate("Hi.", seed=1, stop_on_eos=True)) == "Hi. Tom"
        assert "".join(s.generate("Hi.", max_tokens=4, seed=1)).startswith("Hi. Tom")


# ----------------------------------------------------------------------------- text pieces


def test_printable_piece_is_llama2cs_rule() -> None:
    assert printable_piece(b" Tom") == b" Tom"
    assert printable_piece(b"\n") == b"\n" and printable_piece(b"\t") == b"\t"
    assert printable_piece(b"\x07") == b"" and printable_piece(b"\xe2") == b""
    assert printable_piece(b"\xe2", keep_bytes=True) == b"\xe2"
    assert printable_piece(b"\x07", keep_bytes=True) == b""
    assert printable_piece(b"ab\0cd") == b"ab" and printable_piece(b"\0x") == b""
    assert printable_piece(b"") == b""


def test_text_decoder_assembles_characters_across_byte_pieces() -> None:
    dec = TextDecoder(keep_bytes=True, errors="replace")
    assert [dec.feed(p) for p in (b" caf", b"\xc3", b"\xa9", b"!")] == [" caf", "", "é", "!"]
    assert [dec.feed(p) for p in (b"\xf0", b"\x9f", b"\x98", b"\x80")] == ["", "", "", "😀"]
    assert dec.feed(b"\xe2") == "" and dec.flush() == "\ufffd"  # cut short at the end


def test_text_decoder_default_drops_byte_pieces_like_run() -> None:
    dec = TextDecoder()
    assert "".join(dec.feed(p) for p in (b" caf", b"\xc3", b"\xa9", b"!")) == " caf!"
    bad = TextDecoder()
    text = bad.feed(b"ab\xff\xfe")  # a multi-byte piece that is not UTF-8 survives, byte for byte
    assert (text + bad.flush()).encode("utf-8", "surrogateescape") == b"ab\xff\xfe"


def test_generated_pieces_are_yielded_as_soon_as_complete(d: Path, tok: Tokenizer) -> None:
    # "é" as two byte tokens (<0xC3>, <0xA9>) after " Ren"
    model = ps.write_scripted_model(d / "bytes.bin", {".": [(" Ren", 30)], " Ren": [("<0xC3>", 30)],
                                                      "<0xC3>": [("<0xA9>", 30)], "<0xA9>": [("<s>", 30)]})
    with Model.open(model) as m, m.session(tok) as s:
        assert list(s.generate("Hi.", seed=1, echo=False, keep_byte_pieces=True)) == [" Ren", "é"]
        assert list(s.generate("Hi.", seed=1, echo=False)) == [" Ren"]  # run drops the bytes


def test_sentences_of_a_generation(d: Path, tok: Tokenizer) -> None:
    """The engine knows no stories: sentences.split_stream cuts its text."""
    model = ps.write_scripted_model(d / "sent.bin", {".": [(" Tom", 30)], " Tom": [(" ran", 30)],
                                                     " ran": [(".", 30)]}, seq_len=32)
    with Model.open(model) as m, m.session(tok) as s:
        sentences = list(split_stream(s.generate("Hi.", seed=1, keep_byte_pieces=True)))
    assert sentences[0].text == "Hi." and all(x.text == "Tom ran." for x in sentences[1:])
    assert len(sentences) > 3  # the context ends inside a sentence: that one is not returned


# ----------------------------------------------------------------------------- threads


def test_cancel_from_another_thread_stops_before_the_next_token(v0: Path, tok: Tokenizer) -> None:
    with Model.open(v0) as m, m.session(tok) as s:
        got = []
        gen = s.generate("", seed=5)
        got.append(next(gen))
        t = threading.Thread(target=s.cancel)
        t.start()
        t.join()
        assert list(gen) == [] and s.cancelled
        assert "".join(s.generate("", max_tokens=5, seed=5)) and not s.cancelled  # a new generation runs


@pytest.fixture(scope="module")
def big(d: Path) -> Path:
    """stories15M's shape (about 15M parameters, 58 MB)."""
    return ps.write_random_model(d / "s15m.bin", ck.STORIES15M, seed=15)


def test_long_calls_release_the_gil(big: Path, tok: Tokenizer) -> None:
    counter = [0]
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            counter[0] += 1

    with Model.open(big) as m, m.session(tok, kv="f32") as s:
        tokens = tok.encode("Once upon a time " * 50)[:200]  # ~0.3 s of f32 eval with AVX2
        t = threading.Thread(target=spin)
        t.start()
        try:
            time.sleep(0.05)
            c0, t0 = counter[0], time.perf_counter()
            time.sleep(0.1)
            rate = (counter[0] - c0) / (time.perf_counter() - t0)  # the spinner alone
            c0, t0 = counter[0], time.perf_counter()
            s.eval(tokens)  # one long C call
            elapsed = time.perf_counter() - t0
            during = counter[0] - c0
        finally:
            stop.set()
            t.join()
    assert elapsed > 0.1, "the eval was too short to tell"
    # With the GIL held the spinner would be stuck for the whole call: at most one switch
    # interval (5 ms) of counting before it, under 5 % of a 0.1 s call. Released, it counts at
    # its own rate, less what other processes take on a loaded machine: 10 % is the line.
    assert during > 0.1 * rate * elapsed, (during, rate, elapsed)



# ----------------------------------------------------------------------------- threads: the contract

PROMPT_200 = "Once upon a time, there was a little dragon. " * 18  # about 200 tokens


def _wait_busy(s, thread: threading.Thread) -> bool:
    """Waits until `thread` is inside a C call on session s (the session's count of calls in
    progress); False if the thread ended first. A condition, not a time."""
    while thread.is_alive():
        if s._users:
            return True
        time.sleep(0.001)
    return False


CLOSE_SCRIPT = """
import sys, threading
from storyteller import errors
from storyteller.engine import Model, Tokenizer
model, tok, which, prompt = sys.argv[1:5]
m, t = Model.open(model), Tokenizer.open(tok)
s = m.session(t, kv="f32")
started, result = threading.Event(), []
def generate():
    started.set()
    try:
        result.append("".join(s.generate(prompt, max_tokens=20, seed=1)))
    except errors.StorytellerError as e:
        result.append(str(e))
th = threading.Thread(target=generate)
th.start()
started.wait()
while th.is_alive() and not s._users:  # into the prompt's evaluation (one C call of ~2 s)
    pass
{"session": s, "model": m, "tokenizer": t}[which].close()
th.join()
print("generation:", result)
for use in (lambda: s.eval([1]), lambda: t.encode("x"), lambda: m.session(None)):
    try:
        use()
        print("usable")
    except errors.StorytellerError as e:
        print(e)
"""


@pytest.mark.parametrize("which", ["session", "model", "tokenizer"])
def test_close_from_another_thread_during_a_generation_cancels_waits_then_frees(big: Path, which: str) -> None:
    # before: segmentation fault (status -11) every time; now close() cancels the prompt's
    # evaluation, waits for the C call to return, frees; the generation ends without text
    p = subprocess.run([sys.executable, "-c", CLOSE_SCRIPT, str(big), str(ps.TOKENIZER), which, PROMPT_200],
                       capture_output=True, text=True, env=ps.cli_env(), timeout=300, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.splitlines()
    assert lines[0] in ("generation: ['']", "generation: ['the session is closed']"), p.stdout
    assert lines[1] == "the session is closed"
    assert lines[2] == ("the tokenizer " + str(ps.TOKENIZER) + " is closed" if which == "tokenizer" else "usable")
    assert lines[3] == (f"the model {big} is closed" if which == "model" else "usable")


def test_a_session_used_by_two_threads_refuses_the_second(big: Path, tok: Tokenizer) -> None:
    with Model.open(big) as m, m.session(tok, kv="f32") as s:
        ids = tok.encode(PROMPT_200)
        caught: list[BaseException] = []

        def long_eval() -> None:
            try:
                s.eval(ids)
            except errors.StorytellerError as e:
                caught.append(e)

        t = threading.Thread(target=long_eval)
        t.start()
        try:
            assert _wait_busy(s, t), "the eval ended before it could be watched"
            for use in (lambda: s.generate("Once"), lambda: s.eval([1]), lambda: s.reset(),
                        lambda: s.logits(), lambda: s.pos):
                with pytest.raises(errors.SessionBusyError, match="in use by another thread"):
                    use()
        finally:
            s.cancel()
            t.join()
        # the refused calls changed nothing; the cancelled eval left no position behind
        assert len(caught) == 1 and isinstance(caught[0], errors.EvalCancelledError), caught
        assert s.pos == 0
        with pytest.raises(errors.EvalCancelledError):
            s.eval([1])
        s.reset()
        s.eval([1, 2])
        assert s.pos == 2


def test_cancel_interrupts_the_prompt_evaluation(big: Path, tok: Tokenizer) -> None:
    # the prompt is one C call (about 2 s here): cancel() used to wait for all of it
    with Model.open(big) as m, m.session(tok, kv="f32") as s:
        out: list[list[str]] = []
        t = threading.Thread(target=lambda: out.append(list(s.generate(PROMPT_200, max_tokens=5, seed=1))))
        t.start()
        assert _wait_busy(s, t), "the prompt's evaluation ended before it could be watched"
        s.cancel()
        t.join()
        assert out == [[]] and s.cancelled
        assert s.pos == 0  # stopped inside the prompt: none of its positions kept
        assert len("".join(s.generate("Once upon a time", max_tokens=3, seed=1))) > 0 and not s.cancelled


def test_interleaved_generations_on_one_session_end_the_older(v0: Path, tok: Tokenizer) -> None:
    # handing a session between threads is fine; a new generation ends the one before it
    with Model.open(v0) as m, m.session(tok) as s:
        first = s.generate("One day", 30, seed=1)
        next(first)
        box: list[str] = []
        t = threading.Thread(target=lambda: box.append("".join(s.generate("One day", 30, seed=1))))
        t.start()
        t.join()
        assert box[0] and list(first) == []


CONVERT_SCRIPT = """
import sys, threading
from storyteller.engine import Model
m = Model.open(sys.argv[1])
done = []
th = threading.Thread(target=lambda: done.append(len(m.convert(sys.argv[2], "q8"))))
th.start()
while th.is_alive() and not m._users:
    pass
m.close()  # waits for the conversion, then frees
th.join()
print(done, Model.open(sys.argv[2]).info.weight_type_name)
"""


def test_model_close_waits_for_a_convert_in_progress(big: Path, d: Path) -> None:
    out = d / "closed-while-converting.l2"
    p = subprocess.run([sys.executable, "-c", CONVERT_SCRIPT, str(big), str(out)], capture_output=True, text=True,
                       env=ps.cli_env(), timeout=300, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout == f"[{2 + 9 * ck.STORIES15M.n_layers}] q8\n"


def test_a_failed_eval_leaves_the_position(d: Path, tok: Tokenizer) -> None:
    w = ck.make_weights(ps.CFG, 7)
    path = d / "nan.bin"
    ck.write_v0(path, ps.CFG, ck.with_nan(w, "rms_final", 0, float("nan")))
    with Model.open(path) as m, m.session(tok) as s:
        with pytest.raises(errors.NumericError):
            s.eval([1, 2, 3])
        assert s.pos == 0
        with pytest.raises(errors.ArgumentError):
            s.eval([1, 32000])
        assert s.pos == 0
