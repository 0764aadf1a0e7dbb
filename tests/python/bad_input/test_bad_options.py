"""l2run's option values (the library's rule, l2_check_option) and prompts longer than the context."""

from __future__ import annotations

import re

import pytest
from bad_input_support import (
    SANITIZER_MARKS,
    Files,
    Tools,
    check_failure,
)

# ----------------------------------------------------------------------------- l2run's options


@pytest.mark.parametrize(
    "args,named",
    [
        (["-t", "-1"], "-t needs a temperature of 0 or more, not '-1'"),  # was: greedy
        (["-t", "abc"], "-t needs a temperature of 0 or more, not 'abc'"),  # was: greedy
        (["-t", "nan"], "not 'nan'"),
        (["-t", "1e39"], "not '1e39'"),  # beyond float
        (["-t", "0.5x"], "not '0.5x'"),
        (["-p", "2"], "-p needs a top-p value from 0 to 1, not '2'"),  # was: 0.9
        (["-p", "-0.1"], "not '-0.1'"),
        (["-n", "-5"], "-n needs a number of steps, 0 or more"),  # was: seq_len
        (["-n", "ten"], "not 'ten'"),
        (["-n", "99999999999"], "not '99999999999'"),
        (["-s", "7up"], "-s needs a whole number, not '7up'"),
        (["-v", "2"], "-v needs 0 or 1, not '2'"),
        (["-k", "q8"], "-k takes f32 or f16, not 'q8'"),
        (["-x", "1"], "unknown option -x"),  # was: the usage text, not naming it
        (["-tt", "1"], "'-tt' is not an option"),
        (["t", "1"], "'t' is not an option"),
        (["-n", "4", "-t"], "option -t needs a value"),
    ],
)
def test_l2run_names_a_bad_option_before_loading_anything(tools: Tools, files: Files, args: list[str],
                                                          named: str) -> None:
    # the model path does not exist: the options are refused before it is opened
    proc = tools.run("l2run", files.dir / "no-such-model.bin", "-z", files.tokenizer, *args)
    why = check_failure("l2run", proc, re.escape(named))
    assert why is None, why
    assert proc.stderr.count("\n") == 1 and "Usage" not in proc.stderr, proc.stderr


def test_l2run_accepts_the_edges_of_each_range(tools: Tools, files: Files) -> None:
    model = files.write(f"{tools.build}-edges-model.bin", files.base["v0"])
    for args in (["-t", "0", "-p", "0"], ["-t", "2.5", "-p", "1", "-s", "-5"], ["-n", "0", "-v", "0"],
                 ["-t", "1e-45", "-s", "0"], ["-k", "f16", "-v", "1"]):
        proc = tools.run("l2run", model, "-z", files.tokenizer, "-i", "Once", *args)
        assert proc.returncode == 0 and not any(m in proc.stderr for m in SANITIZER_MARKS), (args, proc.stderr)


# ----------------------------------------------------------------------------- prompts


@pytest.mark.parametrize(
    "steps,prompt",
    [
        ("4", "Once upon a time there was a hen"),  # more tokens than -n steps
        ("0", "x" * 40),  # -n 0 = seq_len 32; 40 byte tokens + BOS
        ("1", "a"),  # BOS + dummy prefix + 'a' in one position
        ("33", "\xff" * 64),  # -n above seq_len is capped at 32
    ],
)
def test_prompt_longer_than_context(tools: Tools, files: Files, steps: str, prompt: str) -> None:
    model = files.write(f"{tools.build}-prompt-model.bin", files.base["v0"])
    proc = tools.run("l2run", model, "-z", files.tokenizer, "-n", steps, "-t", "0", "-i", prompt)
    why = check_failure("l2run", proc, r"prompt|context")
    assert why is None, why
