"""`storyteller`: tell a story, run a model like l2run, benchmark, manage model files.

    storyteller tell "a brave little dragon"      a story, printed as it is told
    storyteller run model.bin -n 256 -i "Once"    l2run's flags, defaults and output
    storyteller bench                             tok/s, time to first token, memory
    storyteller models list | fetch NAME [--from URL|PATH] | convert IN OUT --type q8 | info FILE
    storyteller eval --reference F32.bin          each storage mode's distance from float32
    storyteller daemon                            the robot: hears a request, speaks the story
    storyteller say a dragon | stop | status      ask the running robot
    storyteller listen --wav REQ.wav --speak-wav STORY.wav   one spoken request, file to file

Settings come from the first of --config FILE, $STORYTELLER_CONFIG, ./etc/storyteller.toml,
/etc/storyteller/storyteller.toml (every key optional); options given here override them.
Models are looked for in the settings' models_dir, then $STORYTELLER_MODELS (folders
separated by ':') or else ~/.local/share/storyteller/models and /var/lib/storyteller/models:
`storyteller models list` shows them and where each model is.

Failures are one line on stderr, never a traceback. Option values and text arguments are
checked as the command line is read, before anything is done or printed. Exit status: 0 done,
1 failed, 2 bad usage (an option value out of range, text that is not UTF-8), 3 topic refused
(the refusal is printed), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Protocol

from storyteller import __version__, bench, config, faults, models, targets
from storyteller.engine import (
    CONVERT_MODES,
    METHODS,
    Model,
    Session,
    Tokenizer,
    check_run_option,
    kernel_names,
    printable_piece,
)
from storyteller.engine import version as library_version
from storyteller.errors import ModelNotFoundError, StorytellerError, TopicRefusedError
from storyteller.safety import Blocklist
from storyteller.story import StoryOptions, Storyteller, accept_topic

EXIT_OK, EXIT_FAIL, EXIT_REFUSED = 0, 1, 3


# ----------------------------------------------------------------------------- helpers


def _settings(args: argparse.Namespace) -> config.Settings:
    return config.load(config.find_config(args.config))


def _paths(args: argparse.Namespace, settings: config.Settings, model: str | None = None,
           tokenizer: str | None = None) -> tuple[Path, Path]:
    """The model and tokenizer files: options, then settings, then the model folders."""
    models_dir = [f.path for f in models.search_dirs(settings.model.models_dir)]
    mpath = Path(model or args.model or "") if (model or args.model) else settings.model.path
    if mpath is None:
        mpath = models.default_model(models_dir)
    if not mpath.is_file():
        raise ModelNotFoundError(f"model file {mpath} not found (pass --model FILE, or run "
                                 "`storyteller models fetch stories15M`)")
    tpath = Path(tokenizer or args.tokenizer) if (tokenizer or args.tokenizer) else settings.model.tokenizer
    if tpath is None:
        tpath = models.default_tokenizer(mpath, models_dir)
    if not tpath.is_file():
        raise ModelNotFoundError(f"tokenizer file {tpath} not found (pass --tokenizer FILE)")
    return mpath, tpath


def _open(mpath: Path, tpath: Path, settings: config.Settings, context: int, kv: str | None,
          kernels: str | None) -> Session:
    """A session on the model with its tokenizer (whose vocabulary must be the model's)."""
    model = Model.open(mpath)
    tok = Tokenizer.open(tpath)
    kv = kv or (None if settings.model.kv == "auto" else settings.model.kv)
    return model.session(tok, context=context, kv=kv, kernels=kernels or settings.model.kernels or None)


def _write(out: IO[bytes], data: bytes) -> None:
    out.write(data)
    out.flush()


# ----------------------------------------------------------------------------- tell


def cmd_tell(args: argparse.Namespace) -> int:
    """Prints, and gives the speaker, exactly the sentences Storyteller.tell() yields: text
    through storyteller.safety's gate, the same on the screen and aloud."""
    settings = _settings(args)
    options = StoryOptions.from_settings(settings.story, settings.generation, max_sentences=args.sentences,
                                         temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    topic = " ".join(args.topic)
    blocklist = Blocklist.load(settings.safety.blocklist)
    accept_topic(topic, blocklist, options.max_topic_chars)  # refused before a model is loaded
    speaker = _speaker(args) if args.speak or args.wav else None
    mpath, tpath = _paths(args, settings)
    session = _open(mpath, tpath, settings, args.context or settings.model.context, args.kv, None)
    teller = Storyteller(session, blocklist, options)
    out = sys.stdout.buffer
    try:
        for sentence in teller.tell(topic):
            _write(out, (sentence.prefix + sentence.text).encode())
            if speaker is not None:
                speaker.say(sentence.text)
        _write(out, b"\n")
    except BaseException:
        if speaker is not None:
            speaker.stop()  # an error or Ctrl-C silences the story at once
        raise
    if speaker is not None:
        speaker.close()
    return EXIT_OK


class Speaker(Protocol):
    """What `tell --speak/--wav` needs from the voice package: storyteller.voice.tts.open_sink(
    speak=bool, wav=path or None) returning this."""

    def say(self, text: str) -> None: ...

    def close(self) -> None: ...

    def stop(self) -> None: ...


def _speaker(args: argparse.Namespace) -> Speaker:
    """The text-to-speech sink of the voice package, opened before the model: no engine, no
    sound device or an unwritable WAV file fail at once, in one line."""
    from storyteller.voice import tts

    try:
        sink: Speaker = tts.open_sink(speak=args.speak, wav=args.wav)
    except tts.NoAudioOutputError as e:
        raise StorytellerError(f"{e}; --wav FILE writes the story to a file instead") from None
    return sink


# ----------------------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    """l2run: same flags, defaults, option checks, stdout bytes and stderr tok/s."""
    if args.e == "list":
        print("\n".join(kernel_names()))
        return EXIT_OK
    if args.m != "generate":
        raise StorytellerError(f"mode '{args.m}' is not supported (TinyStories models only continue "
                               "text: use -m generate)")
    settings = _settings(args)
    mpath, tpath = _paths(args, settings, args.checkpoint, args.z)
    seed = args.s or int(time.time()) & 0xFFFFFFFF
    with Model.open(mpath) as model:
        steps = model.run_positions(args.n)
        kv = args.k or (None if settings.model.kv == "auto" else settings.model.kv)
        tok = Tokenizer.open(tpath)
        session = model.session(tok, context=steps, kv=kv, kernels=args.e or settings.model.kernels or None)
        out = sys.stdout.buffer
        start = 0.0
        for step in session.steps(args.i or "", None, args.t, args.p, seed):
            _write(out, printable_piece(step.piece))
            if not start:
                start = time.perf_counter()
        _write(out, b"\n")
        pos = session.pos
        if pos > 1:
            print(f"achieved tok/s: {(pos - 1) / (time.perf_counter() - start):f}", file=sys.stderr)
        if args.v:
            info = model.info
            print(f"model {mpath}: dim {info.dim} hidden {info.hidden_dim} layers {info.n_layers} heads "
                  f"{info.n_heads}/{info.n_kv_heads} vocab {info.vocab_size} seq {info.seq_len}, weights "
                  f"{info.weight_type_name}, {info.weight_bytes_per_token} bytes read per token\n"
                  f"kernels {session.kernels}, KV cache {session.kv}, context {steps}", file=sys.stderr)
            for key, kb in bench.memory_kb().items():
                print(f"memory {key}: {kb} kB", file=sys.stderr)
    return EXIT_OK


# ----------------------------------------------------------------------------- bench


def cmd_bench(args: argparse.Namespace) -> int:
    settings = _settings(args)
    g = settings.generation
    temperature = args.temperature if args.temperature is not None else g.temperature
    top_p = args.top_p if args.top_p is not None else g.top_p
    mpath, tpath = _paths(args, settings)
    session = _open(mpath, tpath, settings, args.steps, args.kv, None)
    l2run = bench.find_l2run(args.l2run)
    print(f"model {mpath} ({session.model.info.weight_type_name}), {session.context} positions, "
          f"KV {session.kv}, kernels {session.kernels}, binding {_binding_mode()}")
    py: list[bench.Run] = []
    c: list[bench.Run] = []
    for _ in range(args.repeat):  # interleaved, best of each: both see the same machine state
        py.append(bench.python_run(session, args.prompt, temperature, top_p, args.seed))
        if l2run is not None:
            c.append(bench.l2run_run(l2run, str(mpath), str(tpath), args.prompt, session.context, temperature,
                                     top_p, args.seed, session.kv, session.kernels))
    best = max(py, key=lambda r: r.tok_s)
    mem = bench.memory_kb()  # now: the overhead measurement below loads numpy
    print(f"python: {best.tok_s:.1f} tok/s, time to first token {1000 * best.ttft_s:.1f} ms "
          f"({best.positions} positions, best of {len(py)})")
    if c and l2run is not None:
        cbest = max(c, key=lambda r: r.tok_s)
        overhead = 100.0 * (cbest.tok_s / best.tok_s - 1.0) if best.tok_s else float("nan")
        same = "same output" if cbest.output == best.output else "OUTPUT DIFFERS"
        print(f"l2run:  {cbest.tok_s:.1f} tok/s ({same}); python overhead per token: {overhead:+.1f}% of "
              "l2run's time per token")
        o = bench.python_overhead(str(tpath), l2run, args.repeat)
        share = 100 * o.added_us * cbest.tok_s / 1e6
        print(f"python adds {o.added_us:.1f} us per token ({o.python_us:.1f} vs {o.l2run_us:.1f} us on a 1-layer "
              f"dim-8 vocab-512 model, greedy): {share:.2f}% of this model's l2run time per token")
    else:
        tried = ", ".join(str(c) for c in bench.l2run_candidates(args.l2run))
        print(f"l2run:  not found (looked at {tried} and $PATH; `make` in the source checkout builds "
              "build/host/bin/l2run, or pass --l2run PATH): no C-only figure")
    print("memory: " + ", ".join(f"{k} {v / 1024:.1f} MB" for k, v in mem.items()))
    if c and c[-1].memory_kb:
        print("l2run memory: " + ", ".join(f"{k} {v / 1024:.1f} MB" for k, v in c[-1].memory_kb.items()))
    return EXIT_OK


def _binding_mode() -> str:
    from storyteller import _native

    return _native.binding().mode


# ----------------------------------------------------------------------------- models


def _folders(args: argparse.Namespace) -> list[models.Folder]:
    """--models-dir DIR alone, else the search path (models.search_dirs)."""
    if args.models_dir:
        return [models.Folder(Path(args.models_dir), "--models-dir")]
    return models.search_dirs(_settings(args).model.models_dir)


def _models_dir(args: argparse.Namespace) -> Path:
    """Where fetch writes: the first model folder."""
    return _folders(args)[0].path


def cmd_models_list(args: argparse.Namespace) -> int:
    folders = _folders(args)
    d = [f.path for f in folders]
    print("model folders, searched in this order (fetch writes into the first):")
    for f in folders:
        print(f"  {f.path}/  ({f.why}{'' if f.path.is_dir() else '; does not exist yet'})")
    print(f"manifest: {models.manifest_path(d[0])}")
    for row in models.list_models(d):
        files = ([row.file] if row.present else []) + row.packed
        state = f"in {row.folder}/: {', '.join(files)}" if row.folder else "absent"
        print(f"  {row.name:<12} {row.file:<18} {state}" + (f"  ({row.about})" if row.about else ""))
    found = models.find_models(d)
    print(f"default model: {found[0] if found else 'none (storyteller models fetch stories15M)'}")
    return EXIT_OK


def cmd_models_fetch(args: argparse.Namespace) -> int:
    path = models.fetch(args.name, _models_dir(args), args.type, source=args.source)
    print(path)
    return EXIT_OK


def _calib(path: str | None) -> list[int] | None:
    """A --calib file: int32 little-endian token ids, as l2convert reads them."""
    if path is None:
        return None
    data = Path(path).read_bytes()
    if not data or len(data) % 4:
        raise StorytellerError(f"{path} is not a file of int32 token ids")
    return [int.from_bytes(data[i:i + 4], "little", signed=True) for i in range(0, len(data), 4)]


def _storage_line(m: Model) -> str:
    """How a packed q8 file was made (FORMAT.md, "Modes")."""
    s = m.storage()
    parts = [s["method"]] + (["f16 lookup table"] if s["embedding_type"] == "f16" else [])
    if s["two_part_sites"]:
        parts.append(f"two-part inputs 0x{s['two_part_sites']:x}")
    line = f"  {', '.join(parts)}; q8 weight error {s['weight_error']:.2e}"
    if s["method"] == "gptq":
        line += f", output error {s['output_error']:.2e} on {s['calib_tokens']} calibration tokens"
    return line


def cmd_models_convert(args: argparse.Namespace) -> int:
    reports = models.convert(Path(args.input), Path(args.output), args.type or "q8", args.group,
                             mode=args.mode, method=args.method, calib=_calib(args.calib))
    worst = max(reports, key=lambda r: r.max_abs_error / r.max_abs_value if r.max_abs_value else 0.0)
    total = sum(r.bytes for r in reports)
    print(f"{args.output}: {len(reports)} tensors, {total / 1e6:.1f} MB of weights; largest relative error "
          f"{worst.max_abs_error / worst.max_abs_value if worst.max_abs_value else 0.0:.2e} ({worst.name}"
          f"{'' if worst.layer < 0 else f' layer {worst.layer}'})")
    with Model.open(args.output) as m:
        if m.info.group_size:
            print(_storage_line(m))
    return EXIT_OK


def cmd_models_info(args: argparse.Namespace) -> int:
    with Model.open(args.file) as m:
        i = m.info
        version = f" version {i.format_version}" if i.format_version else ""
        print(f"{args.file}: {i.file_kind_name}{version}")
        print(f"  dim {i.dim}, hidden {i.hidden_dim}, {i.n_layers} layers, {i.n_heads} heads "
              f"({i.n_kv_heads} KV), vocab {i.vocab_size}, seq_len {i.seq_len}")
        print(f"  weights {i.weight_type_name}" + (f" (group {i.group_size})" if i.group_size else "") +
              f", classifier {'shared' if i.shared_classifier else 'separate'}")
        print(f"  {i.file_bytes / 1e6:.1f} MB file, {i.weight_bytes_per_token / 1e6:.1f} MB read per token")
        if i.group_size and i.file_kind_name == "packed" and i.format_version >= 2:
            print(_storage_line(m))
    return EXIT_OK


def cmd_eval(args: argparse.Namespace) -> int:
    from storyteller import evaluate  # numpy and matplotlib: only this command needs them

    data = evaluate.run(Path(args.reference), args.variant or [], Path(args.tokenizer) if args.tokenizer else None,
                        [Path(t) for t in args.text], args.length, args.streams, args.runs,
                        Path(args.duo_bench) if args.duo_bench else None)
    print(evaluate.markdown([evaluate.Result(**r) for r in data["variants"]]), end="")
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1) + "\n")
    if args.report:
        evaluate.write_report(data, Path(args.report))
    return EXIT_OK


# ----------------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  # one line, exit 2
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


# Option values are checked as the command line is read, before anything is done or printed:
# a bad one is a usage error (exit 2) naming it and what it must be.

INT32_MAX = (1 << 31) - 1


def _number(kind: type[int] | type[float], low: float, high: float, want: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") \
                from None
        if not low <= value <= high:  # NaN too
            raise argparse.ArgumentTypeError(f"must be {want} (got {text})")
        return value

    return parse


FLT_MAX = 3.4028234663852886e38  # the sampler's temperature is a C float
TEMPERATURE = _number(float, 0.0, FLT_MAX, "0 or more")
TOP_P = _number(float, 0.0, 1.0, "between 0 and 1")
COUNT = _number(int, 1, math.inf, "1 or more")
POSITIONS = _number(int, 0, INT32_MAX, f"between 0 (the model's seq_len) and {INT32_MAX}")
GROUP = _number(int, 0, INT32_MAX, f"between 0 (the default) and {INT32_MAX}")


def _run_option(flag: str) -> Callable[[str], float | int]:
    """run's -t, -p, -s, -n, -v: l2run's rule, which is the C library's (l2_check_option)."""

    def parse(text: str) -> float | int:
        try:
            return check_run_option(flag, text)
        except StorytellerError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return parse


def _text(value: str) -> str:
    """A text argument: UTF-8 (Python turns bytes that are not into lone surrogates). The error
    names the bad byte and where it is, never the text: a topic is shown only through the
    safety gate."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        byte = value[e.start].encode("utf-8", "surrogateescape")[0]
        raise argparse.ArgumentTypeError(
            f"the text is not valid UTF-8 (byte 0x{byte:02x} at character {e.start + 1})") from None
    return value


class _Version(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(version_report())
        parser.exit(0)


def version_report() -> str:
    """The versions, and the library's kernel sets checked against the ones this machine's
    target offers (libllama2_rvv/targets.mk): a build that lost its vector kernels says so."""
    target = targets.load()[targets.target_name(platform.machine(), targets.read_cpuinfo())]
    offered = kernel_names()
    missing = [k for k in target.kernels if k not in offered]
    check = (f"missing {' '.join(missing)}: this library was not built for this CPU (reinstall with "
             "`pip install .` on it, or build with scripts/cross-build)" if missing else "as expected")
    return (f"storyteller {__version__}, libllama2_rvv {library_version()}\n"
            f"kernels: {' '.join(offered)} (target {target.name}: {' '.join(target.kernels)}; {check})")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--config", metavar="FILE", help="settings file (default: etc/storyteller.toml)")
    files = _Parser(add_help=False)
    files.add_argument("--model", metavar="FILE", help="model file (default: the first found, see "
                       "`storyteller models list`)")
    files.add_argument("--tokenizer", metavar="FILE", help="tokenizer.bin (default: the model's)")
    sampling = _Parser(add_help=False)
    sampling.add_argument("--temperature", type=TEMPERATURE, help="default 0.8 (settings [generation])")
    sampling.add_argument("--top-p", type=TOP_P, help="default 0.9")
    sampling.add_argument("--kv", choices=("f32", "f16"), help="KV cache (default: f16 for packed models)")

    p = _Parser(prog="storyteller", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action=_Version, nargs=0, help="versions, and the kernel sets against what "
                   "this machine's build should offer")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    tell = sub.add_parser("tell", parents=[common, files, sampling], help="tell a story about a topic")
    tell.add_argument("topic", nargs="+", type=_text, help='e.g. "a brave little dragon", "my cat Tom", "space"')
    tell.add_argument("--seed", type=int, help="same seed, same story (default: a new one)")
    tell.add_argument("--sentences", type=COUNT, help="sentence budget (default 15)")
    tell.add_argument("--context", type=POSITIONS, help="positions (default: the model's seq_len)")
    tell.add_argument("--speak", action="store_true", help="speak it aloud (text-to-speech)")
    tell.add_argument("--wav", metavar="FILE", help="write it spoken to a WAV file")
    tell.set_defaults(func=cmd_tell)

    run = sub.add_parser("run", parents=[common, files], help="generate like l2run (same flags and output)",
                         description="llama2.c's run / l2run: the same flags, defaults and output.")
    run.add_argument("checkpoint", nargs="?", help="model file (or --model; default: the first found)")
    # The values l2run accepts (it refuses what llama2.c's run would silently replace).
    run.add_argument("-t", type=_run_option("t"), default=1.0, metavar="FLOAT", help="temperature, default 1.0")
    run.add_argument("-p", type=_run_option("p"), default=0.9, metavar="FLOAT", help="top-p, default 0.9")
    run.add_argument("-s", type=_run_option("s"), default=0, metavar="INT", help="seed, default time")
    run.add_argument("-n", type=_run_option("n"), default=256, metavar="INT", help="steps, default 256; 0 = seq_len")
    run.add_argument("-i", type=_text, metavar="STRING", help="prompt")
    run.add_argument("-z", metavar="FILE", help="tokenizer")
    run.add_argument("-m", default="generate", metavar="MODE", help="generate (chat is not supported)")
    run.add_argument("-y", type=_text, metavar="STRING", help="system prompt (chat mode only: ignored)")
    run.add_argument("-k", choices=("f32", "f16"), help="KV cache type (default f16 for packed f16/q8)")
    run.add_argument("-e", metavar="NAME", help="kernel set ('list' prints them)")
    run.add_argument("-v", type=_run_option("v"), default=0, metavar="INT", help="1: report model, kernels, memory")
    run.set_defaults(func=cmd_run)

    b = sub.add_parser("bench", parents=[common, files, sampling], help="tok/s, time to first token, memory")
    b.add_argument("--steps", type=POSITIONS, default=0, help="positions (default: the model's seq_len)")
    b.add_argument("--prompt", type=_text, default="Once upon a time")
    b.add_argument("--seed", type=int, default=42)
    b.add_argument("--repeat", type=COUNT, default=3, help="runs of each, the best counts (default 3)")
    b.add_argument("--l2run", metavar="PATH", help="the l2run to compare with (default: build/host/bin)")
    b.set_defaults(func=cmd_bench)

    m = sub.add_parser("models", help="list, fetch, convert or inspect model files")
    msub = m.add_subparsers(dest="models_command", required=True, parser_class=_Parser)
    dirs = _Parser(add_help=False)
    dirs.add_argument("--models-dir", metavar="DIR", help="this folder only (default: the search path; "
                      "fetch writes into its first folder)")
    ml = msub.add_parser("list", parents=[common, dirs], help="the manifest's models and what is here")
    ml.set_defaults(func=cmd_models_list)
    mf = msub.add_parser("fetch", parents=[common, dirs], help="download a model and convert it")
    mf.add_argument("name", help="stories260K, stories15M, stories42M, stories110M, tokenizer, tok512, "
                    "vosk-small-en (Vosk's English speech model, a zipped folder)")
    mf.add_argument("--type", choices=("q8", "f16", "f32", *models.MODES), default="q8",
                    help="packed type or mode (default q8; fast, balanced and faithful run the float model "
                    "over calibration text: fetch on a PC for a small board)")
    mf.add_argument("--from", dest="source", metavar="URL|PATH", help="get it from a mirror (a folder, or a URL "
                    "ending in /) or from the file itself, instead of the manifest's URL")
    mf.set_defaults(func=cmd_models_fetch)
    mc = msub.add_parser("convert", parents=[common], help="any model file -> the packed format")
    mc.add_argument("input")
    mc.add_argument("output")
    how = mc.add_mutually_exclusive_group(required=True)
    how.add_argument("--type", choices=("q8", "f16", "f32"))
    how.add_argument("--mode", choices=CONVERT_MODES, help="a named mode: fast, balanced and faithful are q8 "
                     "closer to float32 (libllama2_rvv/FORMAT.md, \"Modes\"; `storyteller eval` measures them)")
    mc.add_argument("--group", type=GROUP, default=0, help="q8 group size (default 32)")
    mc.add_argument("--method", choices=METHODS, help="q8 rounding: absmax (default) or gptq (calibrated)")
    mc.add_argument("--calib", metavar="FILE", help="gptq's calibration tokens (int32 ids; default: 8192 the "
                    "model samples)")
    mc.set_defaults(func=cmd_models_convert)
    mi = msub.add_parser("info", parents=[common], help="a model file's shape and storage")
    mi.add_argument("file")
    mi.set_defaults(func=cmd_models_info)

    e = sub.add_parser("eval", parents=[common], help="each storage mode's distance from float32 and its cost",
                       description="Teacher-forced KL, top-1, greedy and sampled agreement of each variant "
                       "against the float32 reference (daemon/storyteller/evaluate.py explains each number).")
    e.add_argument("--reference", required=True, metavar="F32_CHECKPOINT", help="the float32 model")
    e.add_argument("--tokenizer", metavar="FILE", help="its tokenizer (for prompts and --text files)")
    e.add_argument("--variant", action="append", metavar="FILE_OR_MODE",
                   help="a model file or a mode name (repeatable; default: every mode)")
    e.add_argument("--text", action="append", default=[], metavar="FILE", help="also teacher-force this text")
    e.add_argument("--length", type=COUNT, default=200, help="tokens per generated stream (default 200)")
    e.add_argument("--streams", type=POSITIONS, default=4, help="sampled streams teacher-forced (default 4)")
    e.add_argument("--runs", type=POSITIONS, default=10, help="seeded top-p runs compared (default 10)")
    e.add_argument("--duo-bench", metavar="FILE", help="scripts/bench-riscv --json of the c906 build "
                   "(default build/bench-c906.json) for the projected Duo speed")
    e.add_argument("--json", metavar="OUT", help="write the results as JSON")
    e.add_argument("--report", metavar="DIR", help="write DIR/fidelity.md and DIR/frontier.png")
    e.set_defaults(func=cmd_eval)

    from storyteller import service  # the robot's commands: daemon, listen, say, stop, status

    service.add_commands(sub, common, files)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    faults.install_sigbus_handler()  # a model file changed while mapped: one line, exit 1
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except TopicRefusedError as e:
        print(e.refusal, flush=True)
        return EXIT_REFUSED
    except StorytellerError as e:
        print(f"storyteller: {e}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): no message, no flush error at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
