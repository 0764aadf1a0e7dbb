"""`storyteller eval`: how far each storage mode's output is from the float32 model, and what
each costs (bytes a token reads, host speed, projected Milk-V Duo speed).

The reference is the float32 checkpoint run by this library with an f32 KV cache (its KL
from a float64 forward pass is ~1e-11 nats, tests/python/test_fidelity.py). It generates
the token streams every variant is teacher-forced on: a greedy stream and seeded top-p
streams from BOS, greedy continuations of prompts (with a tokenizer) and any text files
given. Per variant:

  mean_kl, max_kl      KL(reference || variant) of the next-token distributions, in nats,
                       over every teacher-forced position
  top1                 share of positions whose argmax agrees with the reference's
  top1_decisive        the same over positions whose reference top-2 logit gap is >= 0.05
                       (ties and near-ties excluded: there either choice is right)
  greedy_first_divergence
                       free-running greedy generation from BOS (and each prompt): the first
                       generated index that differs from the reference's (None: none within
                       the length; the smallest over the streams)
  sampled_identical_share
                       share of N seeded top-p runs (temperature 1, top-p 0.9, seeds 1..N)
                       whose tokens are all identical to the reference's
  decode_tok_s         host greedy decode speed (this machine, one thread)
  projected_duo_tok_s  the stories15M shape stored the same way, on the Duo: see project_duo
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from storyteller import engine
from storyteller.errors import ArgumentError

BOS = 1
PROMPTS = ("Once upon a time", "Lily and Tom went to the park", "The little dog was sad because")
DECISIVE_GAP = 0.05  # nats between the reference's best and second-best logit
ROOT = Path(__file__).resolve().parents[2]
DUO_BENCH = ROOT / "build" / "bench-c906.json"  # scripts/bench-riscv --builds c906 --json ...


# ----------------------------------------------------------------------------- modes


@dataclass(frozen=True)
class Mode:
    """A storage mode of l2convert --mode (l2_convert_mode), and what a token computes in it
    (for the Duo projection): the inputs kept in two int8 parts, the matrices kept f16 in
    every layer (`f16`) and in the first layers (`f16_layers[i]`: layer i's), the matrices
    stored 10-bit (`q10`)."""

    name: str
    type: str
    group: int = 0
    two_part: tuple[str, ...] = ()
    f16: tuple[str, ...] = ()
    f16_layers: tuple[tuple[str, ...], ...] = ()
    q10: tuple[str, ...] = ()
    kl_bound: float = 0.0  # mean KL on stories260K with run()'s defaults: measured, plus ~20%


# kl_bound: measured with run()'s defaults (q8 4.9e-2, fast 1.3e-2, balanced 9.8e-3, faithful
# 1.4e-3, f16 4.7e-5, f32 0): tests/python/test_fidelity.py fails when a mode drifts past it
MODES: dict[str, Mode] = {m.name: m for m in (
    Mode("f32", "f32", kl_bound=1e-12),
    Mode("f16", "f16", kl_bound=6e-5),
    Mode("q8", "q8", 32, kl_bound=0.059),
    Mode("fast", "q8", 32, two_part=("qkv", "wo", "w2"), f16_layers=(("qkv",),), kl_bound=0.016),
    Mode("balanced", "q8", 32, two_part=("qkv", "wo", "w13", "w2"), f16_layers=(("qkv",),),
         kl_bound=0.012),
    Mode("faithful", "q8", 32, two_part=("qkv", "wo", "w13", "w2"), q10=("qkv", "wo", "w13", "w2"),
         kl_bound=1.7e-3),
)}


# ----------------------------------------------------------------------------- projection

STORIES15M = {"dim": 288, "hidden_dim": 768, "n_layers": 6, "n_heads": 6, "n_kv_heads": 6, "vocab_size": 32000}
CLOCK_HZ, DRAM_BPS = 1e9, 1.2e9  # the Duo's C906 and its DRAM streaming rate (docs target-duo.md)


SITES = ("qkv", "wo", "w13", "w2", "cls")  # the input vectors of q8 matrices (FORMAT.md)


@dataclass(frozen=True)
class Work:
    """What one token of a model stored in a mode multiplies and reads, per kind of kernel."""

    macs: dict[str, int]      # "q8", "two_part", "q10", "f16": multiply-adds by each kernel
    quantized: dict[str, int]  # "q8", "two_part": input elements quantized
    weight_bytes: int


def _site_shape(c: dict[str, int], site: str) -> tuple[list[tuple[int, int]], int]:
    """The (rows, cols) of a site's matrices in one layer (the classifier: once), and how
    many times a token runs them (n_layers, or 1)."""
    d, h, kv = c["dim"], c["hidden_dim"], c["dim"] * c["n_kv_heads"] // c["n_heads"]
    shapes = {"qkv": [(d, d), (kv, d), (kv, d)], "wo": [(d, d)], "w13": [(h, d), (h, d)],
              "w2": [(d, h)], "cls": [(c["vocab_size"], d)]}[site]
    return shapes, 1 if site == "cls" else c["n_layers"]


def _matrix_bytes(mode: str, rows: int, cols: int, gs: int) -> int:
    """Bytes of a matrix as FORMAT.md stores it (q8: whole blocks of 32 rows, then the tail;
    q10: the same and a 2-bit plane)."""
    if mode == "f32":
        return 4 * rows * cols
    if mode == "f16":
        return 2 * rows * cols
    tail, groups = rows % 32, -(-cols // gs)
    q8 = (rows - tail) * groups * (gs + 4) + tail * cols + 4 * -(-tail * cols // gs)
    return q8 + ((rows - tail) * groups * gs // 4 + -(-tail * cols // 4) if mode == "q10" else 0)


def token_work(c: dict[str, int], weight_type: str, group: int = 32, two_part: Sequence[str] = (),
               f16: Sequence[str] = (), f16_layers: Sequence[Sequence[str]] = (),
               q10: Sequence[str] = ()) -> Work:
    """Per token: the MACs of each kernel, the elements quantized, the weight bytes read."""
    macs = {"q8": 0, "two_part": 0, "q10": 0, "f16": 0, "f32": 0}
    quantized = {"q8": 0, "two_part": 0}
    nbytes = 4 * c["dim"] * (2 * c["n_layers"] + 1)  # norm weights
    for site in SITES:
        shapes, runs = _site_shape(c, site)
        if weight_type != "q8":
            n_f16, kind = runs, weight_type
        else:
            n_f16 = runs if site in f16 else sum(site in layer for layer in f16_layers[:runs])
            kind = "two_part" if site in two_part else "q8"
            quantized[kind] += (runs - n_f16) * shapes[0][1]
            if site in q10:
                kind = "q10"
        for rows, cols in shapes:
            macs["f16" if weight_type == "q8" else weight_type] += n_f16 * rows * cols
            nbytes += n_f16 * _matrix_bytes("f16" if weight_type == "q8" else weight_type, rows, cols, group)
            if weight_type == "q8":
                macs[kind] += (runs - n_f16) * rows * cols
                nbytes += (runs - n_f16) * _matrix_bytes("q10" if kind == "q10" else "q8", rows, cols, group)
    return Work(macs, quantized, nbytes)


def _per_token(row: dict[str, Any], fn: str) -> float:
    lo, hi = row["raw_n1"]["fn"].get(fn, [0, 0, 0]), row["raw_n2"]["fn"].get(fn, [0, 0, 0])
    return (hi[2] - lo[2]) / (row["n2"] - row["n1"])


def kernel_costs(bench: dict[str, Any]) -> dict[str, float] | None:
    """Measured C906 cycles per MAC of each matrix kernel and per element quantized, and the
    cycles of everything else, from the c906 rows of scripts/bench-riscv's JSON: q8 and f16,
    a mode with two-part inputs to q8 matrices and one with q10 matrices (their MACs from
    MODES). None when a row is missing."""
    rows = {r["type"]: r for r in bench["rows"] if r["build"] == "c906"}

    def work(name: str) -> Work:
        m = MODES[name]
        return token_work(STORIES15M, m.type, m.group, m.two_part, m.f16, m.f16_layers, m.q10)

    two = next((n for n in rows if n in MODES and work(n).macs["two_part"]), None)
    q10 = next((n for n in rows if n in MODES and work(n).macs["q10"]), None)
    if "q8" not in rows or "f16" not in rows or two is None or q10 is None:
        return None
    c = STORIES15M
    q8, f16 = token_work(c, "q8"), token_work(c, "f16")
    tw = work(two)
    return {
        "q8": _per_token(rows["q8"], "matvec_q8") / q8.macs["q8"],
        "f16": _per_token(rows["f16"], "matvec_f16") / f16.macs["f16"],
        "two_part": _per_token(rows[two], "matvec_q8_two_part") / tw.macs["two_part"],
        "q10": _per_token(rows[q10], "matvec_q10") / work(q10).macs["q10"],
        "quantize_q8": _per_token(rows["q8"], "quantize_q8") / q8.quantized["q8"],
        "quantize_two_part": _per_token(rows[two], "quantize_q8_two_part") / tw.quantized["two_part"],
        "other": (rows["q8"]["per_token"]["est_total_cycles"] - _per_token(rows["q8"], "matvec_q8")
                  - _per_token(rows["q8"], "quantize_q8")),
    }


def project_duo(weight_type: str, bench: dict[str, Any] | None, group: int = 32,
                two_part: Sequence[str] = (), f16: Sequence[str] = (),
                f16_layers: Sequence[Sequence[str]] = (), q10: Sequence[str] = ()) -> float | None:
    """Projected Duo tok/s of the stories15M shape stored as `weight_type`, from measured
    C906 costs (kernel_costs: scripts/bench-riscv on the c906 build, estimated cycles of
    QEMU's execution log):

        cycles = other + sum over kernels of (cycles per MAC * MACs)
                 + cycles per element * elements quantized (single and two-part)
        tok/s  = 1 / max(cycles / 1e9, bytes / 1.2e9)

    with MACs, elements and bytes from token_work. None without measurements, or for f32
    (no measured f32 kernel; stories15M in f32 does not fit the Duo's 64 MB anyway)."""
    costs = kernel_costs(bench) if bench is not None else None
    if costs is None or weight_type == "f32":
        return None
    w = token_work(STORIES15M, weight_type, group, two_part, f16, f16_layers, q10)
    cycles = (costs["other"] + sum(costs[k] * w.macs[k] for k in ("q8", "two_part", "q10", "f16"))
              + costs["quantize_q8"] * w.quantized["q8"]
              + costs["quantize_two_part"] * w.quantized["two_part"])
    return 1.0 / max(cycles / CLOCK_HZ, w.weight_bytes / DRAM_BPS)


def load_bench(path: Path | None) -> dict[str, Any] | None:
    p = path or DUO_BENCH
    return json.loads(p.read_text()) if p.is_file() else None


# ----------------------------------------------------------------------------- running


def params_per_token(info: engine.ModelInfo) -> int:
    """Parameters one token reads: the matrices, one embedding row, the norm weights."""
    c = {f: getattr(info, f) for f in STORIES15M}
    return sum(token_work(c, "f32").macs.values()) + info.dim + info.dim * (2 * info.n_layers + 1)


def generate(model: engine.Model, prefix: Sequence[int], n: int, temperature: float, seed: int,
             kv: str, top_p: float = 0.9) -> tuple[list[int], float]:
    """Up to n tokens after `prefix` (stopping at BOS, as l2run does) and the seconds the
    decode loop took."""
    context = min(model.info.seq_len, len(prefix) + n)
    out: list[int] = []
    with model.session(context=context, kv=kv) as s:
        s.eval(list(prefix))
        sampler = engine.Sampler(model.vocab_size, temperature, top_p, seed)
        t0 = time.perf_counter()
        while len(out) < n and len(prefix) + len(out) < context:
            tok = s.sample(sampler)
            if tok == BOS:
                break
            out.append(tok)
            if len(prefix) + len(out) < context:
                s.eval([tok])
        return out, time.perf_counter() - t0


def forced_logits(model: engine.Model, stream: Sequence[int], kv: str) -> np.ndarray:
    """(len(stream), vocab) float64 logits, each position fed the stream's token."""
    rows = []
    with model.session(context=len(stream), kv=kv) as s:
        for t in stream:
            s.eval([t])
            rows.append(s.logits())
    return np.asarray(rows, dtype=np.float64)


def kl_divergence(p_logits: np.ndarray, q_logits: np.ndarray) -> np.ndarray:
    """KL(softmax(p) || softmax(q)) per row, float64."""
    lp = p_logits - p_logits.max(axis=-1, keepdims=True)
    lp -= np.log(np.exp(lp).sum(axis=-1, keepdims=True))
    lq = q_logits - q_logits.max(axis=-1, keepdims=True)
    lq -= np.log(np.exp(lq).sum(axis=-1, keepdims=True))
    return np.sum(np.exp(lp) * (lp - lq), axis=-1)


@dataclass
class Streams:
    """What the reference produced: teacher-forcing streams, its greedy and sampled runs."""

    forced: list[list[int]]
    greedy: list[tuple[list[int], list[int]]]  # (prefix, generated)
    sampled: list[list[int]]  # generated from BOS with seeds 1..N
    logits: list[np.ndarray] = field(default_factory=list)


@dataclass
class Result:
    name: str
    type: str
    file: str
    bytes_per_param: float
    bytes_per_token: int
    mean_kl: float
    max_kl: float
    top1: float
    top1_decisive: float
    greedy_first_divergence: int | None
    sampled_identical_share: float
    decode_tok_s: float
    projected_duo_tok_s: float | None
    positions: int


def reference_streams(ref: engine.Model, prompts: list[list[int]], texts: list[list[int]],
                      length: int, streams: int, runs: int) -> Streams:
    greedy = [(p, generate(ref, p, length, 0.0, 1, "f32")[0]) for p in [[BOS], *prompts]]
    sampled = [generate(ref, [BOS], length, 1.0, seed, "f32")[0] for seed in range(1, runs + 1)]
    forced = [p + g for p, g in greedy] + [[BOS] + s for s in sampled[:streams]]
    forced += [t[:ref.info.seq_len] for t in texts]
    st = Streams(forced, greedy, sampled)
    st.logits = [forced_logits(ref, f, "f32") for f in st.forced]
    return st


def evaluate(name: str, mode_type: str, path: Path, st: Streams, bench: dict[str, Any] | None,
             length: int, mode: Mode | None) -> Result:
    with engine.Model.open(path) as m:
        kv = m.info.default_kv
        kls, agree, decisive = [], [], []
        for stream, ref in zip(st.forced, st.logits, strict=True):
            got = forced_logits(m, stream, kv)
            kls.append(kl_divergence(ref, got))
            top2 = np.sort(ref, axis=-1)[:, -2:]
            hit = ref.argmax(axis=-1) == got.argmax(axis=-1)
            agree.append(hit)
            decisive.append(hit[top2[:, 1] - top2[:, 0] >= DECISIVE_GAP])
        firsts, seconds, decoded = [], 0.0, 0
        for prefix, want in st.greedy:
            got_tokens, dt = generate(m, prefix, length, 0.0, 1, kv)
            seconds, decoded = seconds + dt, decoded + len(got_tokens)
            diff = [i for i, (a, b) in enumerate(zip(want, got_tokens, strict=False)) if a != b]
            if diff or len(want) != len(got_tokens):
                firsts.append(diff[0] if diff else min(len(want), len(got_tokens)))
        same = sum(generate(m, [BOS], length, 1.0, seed, kv)[0] == want
                   for seed, want in enumerate(st.sampled, start=1))
        kl = np.concatenate(kls)
        info = m.info
        return Result(
            name=name, type=mode_type, file=str(path),
            bytes_per_param=info.weight_bytes_per_token / params_per_token(info),
            bytes_per_token=info.weight_bytes_per_token,
            mean_kl=float(kl.mean()), max_kl=float(kl.max()),
            top1=float(np.concatenate(agree).mean()),
            top1_decisive=float(np.concatenate(decisive).mean()),
            greedy_first_divergence=min(firsts) if firsts else None,
            sampled_identical_share=same / len(st.sampled) if st.sampled else 1.0,
            decode_tok_s=decoded / seconds if seconds > 0 else 0.0,
            projected_duo_tok_s=(project_duo(mode.type, bench, mode.group or 32, mode.two_part, mode.f16,
                                             mode.f16_layers, mode.q10) if mode else None),
            positions=int(kl.size))


# ----------------------------------------------------------------------------- reports


def markdown(results: list[Result]) -> str:
    def num(v: float | None, fmt: str) -> str:
        return "—" if v is None else format(v, fmt)

    lines = ["| mode | bytes/param | mean KL (nats) | max KL | top-1 | top-1 decisive | greedy first "
             "divergence | sampled runs identical | host tok/s | projected Duo tok/s (stories15M shape) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        div = "none" if r.greedy_first_divergence is None else str(r.greedy_first_divergence)
        lines.append(f"| {r.name} | {r.bytes_per_param:.2f} | {r.mean_kl:.1e} | {r.max_kl:.1e} | "
                     f"{r.top1:.1%} | {r.top1_decisive:.1%} | {div} | {r.sampled_identical_share:.0%} | "
                     f"{r.decode_tok_s:.0f} | {num(r.projected_duo_tok_s, '.0f')} |")
    return "\n".join(lines) + "\n"


def frontier_plot(results: list[Result], path: Path, title: str) -> None:
    """Mean KL against weight bytes read per token, each point labelled with its projected Duo
    tok/s. A variant with no divergence (f32, the reference itself) has no place on the log
    axis: it is named in the legend line instead."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    exact = [r.name for r in results if r.mean_kl <= 0]
    for r in results:
        if r.mean_kl <= 0:
            continue
        x = r.bytes_per_token / 1e3
        ax.scatter(x, r.mean_kl)
        duo = "" if r.projected_duo_tok_s is None else f", {r.projected_duo_tok_s:.0f} tok/s on the Duo"
        ax.annotate(f"{r.name} ({r.bytes_per_param:.2f} B/param{duo})", (x, r.mean_kl),
                    textcoords="offset points", xytext=(7, 0), va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("weight kB read per token")
    ax.set_ylabel("mean KL from float32 (nats)")
    note = f" ({', '.join(exact)}: KL 0, off the axis)" if exact else ""
    first, _, rest = title.partition("\n")
    ax.set_title(first + note + ("\n" + rest if rest else ""), fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo, hi * 1.6)  # room for the labels
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- entry point


def run(reference: Path, variants: Sequence[str], tokenizer: Path | None = None,
        texts: Sequence[Path] = (), length: int = 200, streams: int = 4, runs: int = 10,
        bench_path: Path | None = None, work: Path | None = None) -> dict[str, Any]:
    """Evaluates each variant (a mode name from MODES, converted from `reference`, or a model
    file) against `reference`; the JSON-able result."""
    bench = load_bench(bench_path)
    with tempfile.TemporaryDirectory() as tmp, engine.Model.open(reference) as ref:
        if ref.info.weight_type != 0:
            raise ArgumentError(f"{reference} holds {ref.info.weight_type_name} weights: the "
                                       "reference must be a float32 checkpoint")
        prompts: list[list[int]] = []
        encoded: list[list[int]] = []
        if tokenizer is not None:
            with engine.Tokenizer.open(tokenizer, ref.vocab_size) as tok:
                prompts = [tok.encode(p, bos=True) for p in PROMPTS]
                encoded = [tok.encode(t.read_text(encoding="utf-8"), bos=True) for t in texts]
        elif texts:
            raise ArgumentError("text files need --tokenizer (to turn them into tokens)")
        st = reference_streams(ref, prompts, encoded, length, streams, runs)
        out_dir = work or Path(tmp)
        results = []
        for v in variants or list(MODES):
            if v in MODES:
                mode = MODES[v]
                path = out_dir / f"{reference.stem}.{v}.l2"
                if not path.exists():
                    ref.convert(path, mode=v)
                results.append(evaluate(v, mode.type, path, st, bench, length, mode))
            else:
                with engine.Model.open(v) as m:
                    t = m.info.weight_type_name
                    # a packed file: projected as its type with the two-part inputs its header
                    # names (f16 and q10 matrices inside a q8 file are not looked for: the
                    # bindings do not list tensor types)
                    bits = m.storage()["two_part_sites"]
                    mode = (Mode(t, t, m.info.group_size, tuple(s for i, s in enumerate(SITES) if bits >> i & 1))
                            if m.info.file_kind_name == "packed" else None)
                results.append(evaluate(Path(v).name, t, Path(v), st, bench, length, mode))
    return {
        "reference": str(reference),
        "positions": int(sum(len(f) for f in st.forced)),
        "streams": {"greedy": len(st.greedy), "sampled": len(st.sampled), "forced": len(st.forced),
                    "length": length},
        "duo_bench": str(bench_path or DUO_BENCH) if bench else None,
        "variants": [asdict(r) for r in results],
    }


def write_report(data: dict[str, Any], out: Path) -> None:
    """out/fidelity.md (the table) and out/frontier.png (the plot)."""
    out.mkdir(parents=True, exist_ok=True)
    results = [Result(**r) for r in data["variants"]]
    (out / "fidelity.md").write_text(
        f"Reference {data['reference']}; {data['positions']} teacher-forced positions "
        f"({data['streams']['forced']} streams); {data['streams']['sampled']} seeded top-p runs of "
        f"{data['streams']['length']} tokens.\n\n" + markdown(results))
    frontier_plot(results, out / "frontier.png",
                  f"{Path(data['reference']).name}: distance from float32 vs bytes read\n"
                  "labels: bytes/param here, projected Duo tok/s of the stories15M shape stored so")
