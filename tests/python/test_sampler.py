"""The C sampler (l2_sampler_*) against reference.py's float32 transcription of llama2.c's."""

from __future__ import annotations

import numpy as np
import pytest
from native import error_message, lib, lib_with_test_hooks

from storyteller.devtools import reference

L2_OK, L2_ERR_ARG = 0, 4
SIZES = [1, 2, 3, 5, 17, 100, 511, 512, 4096, 32000]
SEEDS = [0, 1, 42, 1234567890123, 2**63 + 5, 2**64 - 1]


class CSampler:
    def __init__(self, vocab: int, temperature: float, topp: float, seed: int) -> None:
        self.ffi, self.c = lib_with_test_hooks()  # random_u32
        out, err = self.ffi.new("l2_sampler **"), self.ffi.new("l2_error *")
        st = self.c.l2_sampler_new(vocab, temperature, topp, seed, out, err)
        assert st == L2_OK, error_message(self.ffi, err)
        self.handle, self.vocab = out[0], vocab

    def sample(self, logits: np.ndarray) -> tuple[int, np.ndarray]:
        """The sampled id and the logits buffer as the C code left it."""
        buf = np.array(logits, dtype=np.float32, copy=True)
        assert buf.size == self.vocab
        tok, err = self.ffi.new("int32_t *"), self.ffi.new("l2_error *")
        assert self.c.l2_sampler_sample(self.handle, self.ffi.from_buffer("float[]", buf), tok, err) == L2_OK
        return tok[0], buf

    def random_u32(self) -> int:
        return self.c.l2_sampler_random_u32(self.handle)

    def close(self) -> None:
        self.c.l2_sampler_free(self.handle)


def expected(logits: np.ndarray, temperature: float, topp: float, rng: reference.XorShiftRng) -> int:
    """reference.sample, plus the one case llama2.c leaves undefined: top-p where no id
    reaches the cutoff (vocab 1, or a near-flat distribution with a tiny topp); upstream
    then reads before its buffer, the library returns the most likely id."""
    if temperature != 0 and 0 < topp < 1:
        probs = reference.softmax_f32(np.asarray(logits, np.float32) / np.float32(temperature))
        n = probs.size
        if n == 1 or not np.any(probs >= (np.float32(1) - np.float32(topp)) / np.float32(n - 1)):
            rng.random_f32()  # the coin is still drawn
            return int(np.argmax(probs))
    return reference.sample(logits, temperature, topp, rng)


def random_logits(gen: np.random.Generator, n: int, kind: str) -> np.ndarray:
    """Logits of several shapes: spread out, peaked, with many ties, all equal."""
    if kind == "normal":
        x = gen.normal(0.0, 3.0, n)
    elif kind == "peaked":
        x = gen.normal(0.0, 1.0, n)
        x[gen.integers(n)] += 12.0
    elif kind == "ties":
        x = np.round(gen.normal(0.0, 1.5, n))  # a handful of distinct values
    else:  # "flat"
        x = np.full(n, 0.25)
    return x.astype(np.float32)


def run_draws(n: int, temperature: float, topp: float, seed: int, draws: int) -> None:
    gen = np.random.default_rng(seed ^ n)
    s = CSampler(n, temperature, topp, seed)
    rng = reference.XorShiftRng(seed)
    try:
        for d in range(draws):
            logits = random_logits(gen, n, ["normal", "peaked", "ties", "flat"][d % 4])
            want = expected(logits, temperature, topp, rng)
            got, _ = s.sample(logits)
            assert got == want, (n, temperature, topp, seed, d)
        # the RNG streams are still in step: the same number of coins was drawn
        assert s.random_u32() == rng.random_u32()
    finally:
        s.close()


def draws_for(n: int) -> int:
    return 40 if n >= 4096 else 200


# ----------------------------------------------------------------------------- RNG


@pytest.mark.parametrize("seed", SEEDS)
def test_rng_sequence(seed):
    s = CSampler(8, 1.0, 0.9, seed)
    rng = reference.XorShiftRng(seed)
    try:
        assert [s.random_u32() for _ in range(2000)] == [rng.random_u32() for _ in range(2000)]
    finally:
        s.close()


def test_rng_known_values():
    """Pinned values for seed 42, computed by hand from the xorshift* definition."""
    def step(state: int) -> tuple[int, int]:
        m = (1 << 64) - 1
        state ^= state >> 12
        state ^= (state << 25) & m
        state ^= state >> 27
        return state, ((state * 0x2545F4914F6CDD1D) & m) >> 32

    s = CSampler(8, 1.0, 0.9, 42)
    try:
        state = 42
        for _ in range(5):
            state, value = step(state)
            assert s.random_u32() == value
    finally:
        s.close()


def test_seed_zero_is_used_as_given():
    """Seed 0 is not replaced by the time at this level (the CLI does that); xorshift's
    zero state stays zero."""
    s = CSampler(8, 1.0, 0.9, 0)
    try:
        assert [s.random_u32() for _ in range(4)] == [0, 0, 0, 0]
    finally:
        s.close()


# ----------------------------------------------------------------------------- strategies


@pytest.mark.parametrize("n", SIZES)
def test_greedy(n):
    run_draws(n, 0.0, 0.9, seed=7, draws=draws_for(n))


def test_greedy_first_maximum_and_no_coin():
    s = CSampler(6, 0.0, 0.9, 5)
    try:
        logits = np.array([1, 3, 3, -2, 3, 0], np.float32)
        got, after = s.sample(logits)
        assert got == 1
        assert np.array_equal(after, logits)  # greedy leaves the logits alone
        assert s.random_u32() == reference.XorShiftRng(5).random_u32()
    finally:
        s.close()


@pytest.mark.parametrize("topp", [1.0, 0.0])
@pytest.mark.parametrize("temperature", [1.0, 0.5, 1.7])
@pytest.mark.parametrize("n", SIZES)
def test_multinomial(n, temperature, topp):
    run_draws(n, temperature, topp, seed=1000 + n, draws=draws_for(n))


@pytest.mark.parametrize("topp", [0.9, 0.5, 0.1, 0.999])
@pytest.mark.parametrize("temperature", [1.0, 0.6, 2.0])
@pytest.mark.parametrize("n", SIZES)
def test_topp(n, temperature, topp):
    run_draws(n, temperature, topp, seed=2**40 + n, draws=draws_for(n))


def test_topp_ties_ordered_by_id():
    """Equal probabilities: candidates in ascending id order, independent of qsort."""
    n = 64
    logits = np.zeros(n, np.float32)
    for seed in range(200):
        s = CSampler(n, 1.0, 0.5, seed)
        rng = reference.XorShiftRng(seed)
        try:
            got, _ = s.sample(logits)
            # 32 of 64 equal ids make the nucleus: ids 0..32 (the sum must exceed 0.5)
            assert got == reference.sample(logits, 1.0, 0.5, rng)
            assert 0 <= got <= 32
        finally:
            s.close()


def test_topp_without_candidates_returns_most_likely():
    """Flat logits and a tiny topp: no id reaches the cutoff; the coin is still drawn."""
    n = 1000
    s = CSampler(n, 1.0, 1e-4, 9)
    try:
        got, _ = s.sample(np.zeros(n, np.float32))
        assert got == 0
        rng = reference.XorShiftRng(9)
        rng.random_u32()
        assert s.random_u32() == rng.random_u32()
    finally:
        s.close()


def seed_for_first_u32(value: int) -> int:
    """A seed whose first random_u32 is `value` (< 2**32): the xorshift step is a bijection,
    so choose the state after it and run the step backwards."""
    m = (1 << 64) - 1
    state = (value << 32 | 12345) * pow(0x2545F4914F6CDD1D, -1, 1 << 64) & m

    def undo_right(x: int, k: int) -> int:  # inverse of x ^= x >> k
        y = x
        for _ in range(64 // k + 1):
            y = x ^ (y >> k)
        return y

    def undo_left(x: int, k: int) -> int:  # inverse of x ^= x << k
        y = x
        for _ in range(64 // k + 1):
            y = x ^ ((y << k) & m)
        return y

    seed = undo_right(undo_left(undo_right(state, 27), 25), 12)
    assert reference.XorShiftRng(seed).random_u32() == value
    return seed


@pytest.mark.parametrize("topp", [1.0, 0.9])
def test_zero_probability_never_drawn(topp):
    """coin == 0.0 exactly (random_u32 < 256) and ids with probability 0 come first:
    `coin < cdf` must skip them."""
    seed = seed_for_first_u32(17)
    logits = np.array([-1000, -1000, 0, 0, -1000], np.float32)
    s = CSampler(5, 1.0, topp, seed)
    try:
        got, _ = s.sample(logits)
        assert got == 2
        assert got == reference.sample(logits, 1.0, topp, reference.XorShiftRng(seed))
    finally:
        s.close()


def test_logits_become_probabilities():
    """As in llama2.c, the sampler leaves softmax(logits / temperature) in the buffer."""
    gen = np.random.default_rng(3)
    s = CSampler(32000, 0.8, 0.9, 11)
    try:
        logits = random_logits(gen, 32000, "normal")
        _, after = s.sample(logits)
        want = reference.softmax_f32(logits / np.float32(0.8))
        # equal up to the C library's expf, which may be one ulp off the rounded exp
        np.testing.assert_allclose(after, want, rtol=3e-7, atol=0)
        assert np.mean(after == want) > 0.99
    finally:
        s.close()


@pytest.mark.parametrize(("temperature", "topp", "message"), [
    (-1.0, 0.9, "temperature must be 0 or more (got -1)"), (float("nan"), 0.9, "temperature"),
    (float("inf"), 0.9, "temperature"), (1.0, 1.5, "top-p must be from 0 to 1 (got 1.5)"),
    (1.0, -0.25, "top-p"), (1.0, float("nan"), "top-p")])
def test_new_refuses_what_run_refuses(temperature, topp, message):
    """One rule (l2_check_option's ranges): values llama2.c's run would clamp are refused."""
    ffi, c = lib()
    out, err = ffi.new("l2_sampler **"), ffi.new("l2_error *")
    assert c.l2_sampler_new(8, temperature, topp, 1, out, err) == L2_ERR_ARG and out[0] == ffi.NULL
    assert message in error_message(ffi, err)


def test_new_rejects_bad_vocab():
    ffi, c = lib()
    for vocab in (0, -1, -(2**31)):
        out, err = ffi.new("l2_sampler **"), ffi.new("l2_error *")
        assert c.l2_sampler_new(vocab, 1.0, 0.9, 1, out, err) == L2_ERR_ARG
        assert out[0] == ffi.NULL
        assert error_message(ffi, err)
    err = ffi.new("l2_error *")
    assert c.l2_sampler_new(8, 1.0, 0.9, 1, ffi.NULL, err) == L2_ERR_ARG
    c.l2_sampler_free(ffi.NULL)  # free(NULL)-safe
