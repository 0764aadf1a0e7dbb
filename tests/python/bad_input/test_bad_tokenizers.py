"""Short or corrupt tokenizers, missing files, directories and FIFOs as model or tokenizer."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from bad_input_support import (
    CFG,
    INT32_MAX,
    INT32_MIN,
    Files,
    Tools,
    _tokenizer_pieces,
    check_failure,
    l2run_args,
    run_bad_model,
)

from storyteller.devtools import checkpoints as ck

# ----------------------------------------------------------------------------- tokenizers


def _tok_cases() -> dict[str, Callable[[], bytes]]:
    pieces, scores = _tokenizer_pieces(CFG.vocab_size)
    full = ck.tokenizer_bytes(pieces, scores)
    # offset of piece i's score field
    starts, at = [], 4
    for p in pieces:
        starts.append(at)
        at += 8 + len(p)
    return {
        "fewer-pieces": lambda: ck.tokenizer_bytes(pieces[:100], scores[:100]),
        "one-piece-short": lambda: ck.tokenizer_bytes(pieces[:-1], scores[:-1]),
        "cut-inside-last-piece": lambda: full[:-1],
        "cut-inside-piece-200": lambda: full[: starts[200] + 9],
        "cut-inside-length": lambda: full[: starts[50] + 6],
        "header-only": lambda: full[:4],
        "three-bytes": lambda: full[:3],
        "empty": lambda: b"",
        "negative-length-first": lambda: ck.tokenizer_bytes(pieces, scores, lengths={0: -1}),
        "negative-length-last": lambda: ck.tokenizer_bytes(pieces, scores, lengths={CFG.vocab_size - 1: -5}),
        "int-min-length": lambda: ck.tokenizer_bytes(pieces, scores, lengths={7: INT32_MIN}),
        "huge-length": lambda: ck.tokenizer_bytes(pieces, scores, lengths={3: INT32_MAX}),
        "absurd-length": lambda: ck.tokenizer_bytes(pieces, scores, lengths={10: 65537}),
        "length-past-end": lambda: ck.tokenizer_bytes(pieces, scores, lengths={CFG.vocab_size - 1: 1000}),
        "length-past-end-mid": lambda: ck.tokenizer_bytes(pieces, scores, lengths={100: 60000}),
    }


TOK_CASES = list(_tok_cases())


@pytest.mark.parametrize("case", TOK_CASES)
def test_bad_tokenizer(tools: Tools, files: Files, case: str) -> None:
    tok = files.dir / f"{tools.build}-tok-{case}.bin"
    tok.write_bytes(_tok_cases()[case]())
    model = files.write(f"{tools.build}-tokcase-model.bin", files.base["v0"])
    proc = tools.run("l2run", model, "-z", tok, "-n", "8", "-t", "0", "-i", "Once upon")
    why = check_failure("l2run", proc, r"tokenizer")
    assert why is None, why


def test_tokenizer_missing_or_directory(tools: Tools, files: Files) -> None:
    model = files.write(f"{tools.build}-tokcase-model.bin", files.base["v0"])
    for tok in (files.dir / "no-such-tokenizer.bin", files.dir):
        proc = tools.run("l2run", model, "-z", tok, "-n", "8", "-i", "x")
        why = check_failure("l2run", proc, r"tokenizer")
        assert why is None, f"{tok}: {why}"


def test_model_missing_or_directory(tools: Tools, files: Files) -> None:
    for model in (files.dir / "no-such-model.bin", files.dir):
        for tool in ("l2run", "l2convert"):
            why = run_bad_model(tools, files, tool, model)
            assert why is None, f"{tool} {model}: {why}"


def test_fifo_model_or_tokenizer_is_refused_not_waited_on(tools: Tools, files: Files) -> None:
    # opening a FIFO for reading waits for a writer: the tools hung there forever
    fifo = files.dir / f"{tools.build}-fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    model = files.write(f"{tools.build}-fifocase-model.bin", files.base["v0"])
    for tool, args in (
        ("l2run", l2run_args(files, fifo)),
        ("l2run", [model, "-z", fifo, "-n", "8", "-i", "x"]),
        ("l2convert", [fifo, files.dir / f"{tools.build}-fifo.out", "--type", "q8"]),
    ):
        why = check_failure(tool, tools.run(tool, *args), r"not a regular file \(a FIFO\)")
        assert why is None, f"{tool} {args}: {why}"
