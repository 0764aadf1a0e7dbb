"""The Milk-V Duo build, run: scripts/cross-build c906 (GCC >= 15, -march=rv64gc_xtheadvector)
under QEMU 5.2, the last QEMU that implements the C906's vector extension (RVV draft 0.7.1),
at the C906's VLEN of 128 (docs/c906-emulator.md says what it checks and what it cannot).

- test_kernels: every kernel bitwise equal to the portable C, the cases it runs for RVV 1.0.
- l2run: byte-equal to the host build's output on 48 streams: stories260K (real weights, with
  an id tokenizer: equal text means equal token ids) and a seeded stories15M-shaped model, each
  as f32, f16 and q8 weights x KV f32/f16 x greedy/seeded top-p x with/without a prompt.
- every c906 binary holds only instructions a C906 has: rv64gc and XTheadVector, no vlenb, no
  compare over its own source (which QEMU 5.2 accepts and the C906 rejects).
- the emulator enforces the 0.7.1 rules docs/c906-emulator.md says it does (emulator_rules.c).
- the board kit's self-check passes under the emulator.

Skipped, with the reason, where GCC >= 15 (scripts/install-gcc-riscv, as root) or QEMU 5.2
(scripts/install-qemu-0.7.1) is not installed; CI installs both.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from kit_support import unpack

from storyteller.devtools import checkpoints as ck

REPO = Path(__file__).resolve().parents[2]
TOOLCHAINS = REPO / "build" / "toolchains"
QEMU_071 = TOOLCHAINS / "qemu-0.7.1" / "qemu-riscv64-static"
CPU_071 = "rv64,x-v=true,vlen=128,elen=64,vext_spec=v0.7.1"
TIMEOUT = 600  # seconds for one program under QEMU
BINARIES = ("l2run", "l2convert", "test_kernels")
STORIES260K_CFG_VOCAB = 512

# Functions that may hold what a C906 lacks, because a C906 never runs them:
# - libgcc's DWARF unwinder reads vlenb only to evaluate call-frame information that describes
#   vector registers by vlenb; test_no_cfi_uses_vlenb shows these binaries have none.
# - glibc's RVV 1.0 string functions (`__memset_vector`...) are chosen at start-up only when
#   the kernel's riscv_hwprobe reports RVV 1.0 (RISCV_HWPROBE_IMA_V): a C906 kernel has either
#   no hwprobe (the Duo's 5.10) or does not report its 0.7.1 unit as V (mainline), and QEMU 5.2
#   has no hwprobe, so the emulator runs the same generic functions the board does.
UNREACHED_ON_C906 = re.compile(r"_Unwind_\w+|uw_\w+|execute_stack_op|__\w+_vector")
# CSRs a C906 program may touch: FP flags and rounding, the 0.7.1 vector state, counters.
ALLOWED_CSRS = {"fflags", "frm", "fcsr", "th.vstart", "th.vxsat", "th.vxrm", "th.vl", "th.vtype",
                "cycle", "time", "instret"}


def run_071(exe: Path, *args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(QEMU_071), "-cpu", CPU_071, str(exe), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, errors="replace", timeout=TIMEOUT)


def tool(name: str) -> str:
    """The cross binutils tool next to the c906 compiler (the sid root's, which sees only its
    current directory: call it from the file's directory), else from PATH."""
    local = TOOLCHAINS / "bin" / f"riscv64-linux-gnu-{name}"
    return str(local) if local.exists() else f"riscv64-linux-gnu-{name}"


@pytest.fixture(scope="session")
def c906_bins(tmp_path_factory) -> Path:
    """The c906 build's binaries, copied out of build/ (a concurrent clean cannot pull them)."""
    proc = subprocess.run(["bash", str(REPO / "scripts" / "cross-build"), "c906"], cwd=REPO,
                          capture_output=True, text=True, errors="replace")
    if proc.returncode == 77:
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    dest = tmp_path_factory.mktemp("c906")
    for name in BINARIES:
        shutil.copy2(REPO / "build" / "c906" / "bin" / name, dest / name)
        head = (dest / name).read_bytes()[:64]
        assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 243, name
        headers = subprocess.run([tool("readelf"), "-lW", name], cwd=dest, capture_output=True,
                                 text=True, check=True).stdout
        assert "INTERP" not in headers, f"{name} is not static"  # Buildroot/musl boards
    return dest


@pytest.fixture(scope="session")
def emulator() -> Path:
    if not QEMU_071.exists():
        pytest.skip(f"no QEMU 5.2 at {QEMU_071.relative_to(REPO)} (scripts/install-qemu-0.7.1)")
    return QEMU_071


@pytest.fixture(scope="session")
def host_bins() -> Path:
    proc = subprocess.run(["make", "-s", "tools"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return REPO / "build" / "host" / "bin"


# ----------------------------------------------------------------------------- kernels


def test_kernels_under_0_7_1(c906_bins, emulator):
    proc = run_071(c906_bins / "test_kernels")
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    assert proc.stdout.rstrip().endswith(" 0 failed"), proc.stdout[-2000:]
    rvv = [ln for ln in proc.stdout.splitlines() if ln.startswith("rvv ")]
    assert len(rvv) >= 14 and all(" ok " in ln for ln in rvv), proc.stdout  # the vector set ran


# ----------------------------------------------------------------------------- the emulator

# What QEMU 5.2 does on each probe of tests/c906/emulator_rules.c (docs/c906-emulator.md).
EMULATOR_RULES = {
    "vlenb": "illegal instruction",                       # 0.7.1 has no vlenb
    "vl after vsetvli zero,zero": "4",                    # VLMAX, as 0.7.1 (1.0 would keep 3)
    "widening op over its source": "illegal instruction",  # 0.7.1's overlap rule
    "compare over its source": "0",                       # accepted; the C906 traps (see above)
    "tail after vl=2 of 4": "0",                          # 0.7.1 zeroes the tail
    "mask bit of element 1 (e32 m1)": "32",               # MLEN = SEW / LMUL bits per element
    "vsetivli": "illegal instruction",                    # a 1.0 instruction
}


def test_emulator_enforces_0_7_1(c906_bins, emulator):
    exe = REPO / "build" / "emulator_rules"
    subprocess.run([tool("gcc-15"), "-march=rv64gc_xtheadvector", "-mabi=lp64d", "-O1", "-Wall",
                    "-Wextra", "-Werror", "-static", "-o", str(exe.relative_to(REPO)),
                    "tests/c906/emulator_rules.c"], cwd=REPO, check=True)
    proc = run_071(exe)
    got = dict(ln.split(": ", 1) for ln in proc.stdout.splitlines())
    assert got == EMULATOR_RULES, proc.stdout + proc.stderr


# ----------------------------------------------------------------------------- instructions


def disassembly(exe: Path) -> dict[str, list[str]]:
    """function name -> its instructions, as `mnemonic operands` (CSRs by name)."""
    dis = subprocess.run([tool("objdump"), "-d", "-M", "no-aliases", "--no-show-raw-insn",
                          exe.name], cwd=exe.parent, capture_output=True, text=True,
                         check=True).stdout
    funcs: dict[str, list[str]] = {}
    current: list[str] = []
    for line in dis.splitlines():
        head = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
        if head:
            current = funcs.setdefault(head.group(1), [])
        elif re.match(r"^\s+[0-9a-f]+:\t", line):
            current.append(line.split("\t", 1)[1].strip())
    return funcs


COMPARE = re.compile(r"th\.vm(s|f)(eq|ne|ltu?|leu?|gtu?|ge|ord)\.")


def register_group(reg: str, lmul: int) -> range:
    n = int(reg[1:])
    return range(n, n + lmul)


def c906_violations(funcs: dict[str, list[str]]) -> list[str]:
    """What a C906 cannot run, in functions it may run: undecodable words (outside rv64gc and
    XTheadVector), T-Head scalar extensions, CSRs other than ALLOWED_CSRS (vlenb above all),
    and compares whose destination mask lies in a source group (the C906 raises an illegal
    instruction there although QEMU 5.2 does not: XUANTIE-RV/openc906 issue 12). LMUL is taken
    from the last th.vsetvli before the compare in address order (8 when none is seen)."""
    bad = []
    for name, insns in funcs.items():
        if UNREACHED_ON_C906.fullmatch(name):
            continue
        lmul = 8
        for insn in insns:
            mnemonic, _, operands = insn.partition("\t")
            ops = [o.strip() for o in operands.split(",")]
            if mnemonic == "th.vsetvli":
                lmul = int(ops[3][1:]) if len(ops) > 3 and ops[3][:1] == "m" else 8
            if mnemonic.startswith(".") or "unknown" in operands and mnemonic != "fence":
                bad.append(f"{name}: {insn} (not rv64gc + XTheadVector)")
            elif mnemonic.startswith("th.") and not mnemonic.startswith("th.v"):
                bad.append(f"{name}: {insn} (T-Head scalar extension)")
            elif mnemonic.startswith("csrr") and ops[1] not in ALLOWED_CSRS:
                bad.append(f"{name}: {insn} (CSR)")
            elif COMPARE.match(mnemonic) and any(
                    int(ops[0][1:]) in register_group(src, lmul)
                    for src in ops[1:3] if re.fullmatch(r"v\d+", src)):
                bad.append(f"{name}: {insn} (mask destination in a source group at m{lmul})")
    return bad


def test_c906_binaries_hold_only_c906_instructions(c906_bins):
    for exe in BINARIES:
        funcs = disassembly(c906_bins / exe)
        if not any(i.startswith("th.v") for i in funcs.get("matvec_q8", [])):
            pytest.skip(f"{tool('objdump')} does not decode XTheadVector (binutils >= 2.42 does)")
        assert c906_violations(funcs) == [], exe
        reads = [f for f, insns in funcs.items() if any("vlenb" in i for i in insns)]
        assert all(UNREACHED_ON_C906.fullmatch(f) for f in reads), reads


def test_instruction_check_can_fail():
    """The check above on made-up functions: each kind of fault is found; the exemptions hold."""
    funcs = {"matvec_q8": ["th.vle.v\tv0,(a1)", "csrrs\tt0,th.vlenb,zero"],
             "main": ["csrrs\ta0,vlenb,zero", "csrrs\ta0,frm,zero", "fence\tw,unknown"],
             "k": [".insn\t4, 0x0c3676d7", "th.addsl\ta0,a1,a2,1", "csrrs\ta0,0x15,zero"],
             "cmp": ["th.vsetvli\tzero,a0,e32,m1,d1", "th.vmsgt.vx\tv8,v8,a3",
                     "th.vmsgt.vx\tv16,v8,a3", "th.vsetvli\tzero,a0,e32,m4,d1",
                     "th.vmfeq.vf\tv9,v8,fa5", "th.vmfeq.vf\tv1,v8,fa5"],
             "uw_update_context_1": ["csrrs\ta0,vlenb,zero"],
             "__memset_vector": [".insn\t4, 0x0c3676d7"]}
    found = c906_violations(funcs)
    assert [f.split(":")[0] for f in found] == ["matvec_q8", "main", "k", "k", "k", "cmp",
                                                "cmp"], found
    assert "v8,v8" in found[5] and "v9,v8" in found[6], found


def test_no_cfi_uses_vlenb(c906_bins):
    """No call-frame information uses a DWARF expression (how vlenb-scaled vector register
    saves are described), so the unwinder's vlenb reads are never reached."""
    for exe in BINARIES:
        frames = subprocess.run([tool("readelf"), "--debug-dump=frames", exe], cwd=c906_bins,
                                capture_output=True, text=True, check=True).stdout
        assert "DW_CFA_def_cfa" in frames, exe  # the dump is there to look at
        assert not re.search(r"DW_CFA_(val_)?expression|vlenb", frames), exe


# ----------------------------------------------------------------------------- counting

SELFTEST_071_EXPECTED = {"total_insns": 5024, "scalar_insns": 2006, "vector_insns": 3018,
                         "vset_insns": 5, "vector_mem_insns": 1002, "vector_mem_cycles": 4020,
                         "vector_alu_insns": 1007, "vector_alu_cycles": 4072,
                         "vector_red_insns": 1004, "vector_red_cycles": 5150,
                         "vector_cycles": 13247, "scalar_cycles": 2006,
                         "est_total_cycles": 15253, "unlogged_execs": 0}


def test_tb_log_mix_selftest_0_7_1(c906_bins, emulator, tmp_path):
    """scripts/qemu-plugin/tb_log_mix.c replaying QEMU 5.2's log of a known 0.7.1 mix
    (selftest-0.7.1.S: 0.7.1's vtype layout, loads and funct6 values) gives its counts."""
    proc = subprocess.run(["bash", str(REPO / "scripts" / "qemu-plugin" / "build")], cwd=REPO,
                          capture_output=True, text=True)
    tb_log_mix = REPO / "build" / "qemu-plugin" / "tb_log_mix"
    if not tb_log_mix.exists():
        pytest.fail(f"scripts/qemu-plugin/build did not make tb_log_mix:\n{proc.stderr}")
    exe = REPO / "build" / "selftest-0.7.1"
    subprocess.run([tool("gcc-15"), "-march=rv64gc_xtheadvector", "-nostdlib", "-static", "-o",
                    str(exe.relative_to(REPO)), "scripts/qemu-plugin/selftest-0.7.1.S"],
                   cwd=REPO, check=True)
    log, out = tmp_path / "log", tmp_path / "mix.txt"
    os.mkfifo(log)
    with subprocess.Popen([str(emulator), "-cpu", CPU_071, "-d", "in_asm,exec,nochain", "-D",
                           str(log), str(exe)]) as qemu, open(log, "rb") as src:
        subprocess.run([str(tb_log_mix), "spec=v0.7.1", f"out={out}"], stdin=src, check=True,
                       timeout=60)
        assert qemu.wait(timeout=60) == 0
    got = {k: int(v) for k, v in (ln.split() for ln in out.read_text().splitlines())}
    assert got == SELFTEST_071_EXPECTED


# ----------------------------------------------------------------------------- l2run streams

STREAM_RUNS = {"greedy": ("-t", "0"), "topp": ("-t", "0.8", "-p", "0.9", "-s", "42")}
MODES = ("fast", "balanced", "faithful")  # l2convert --mode
PROMPTS = {"noprompt": (), "prompt": ("-i", "Once upon a time")}
STEPS = {"s260k": "48", "s15m": "10"}  # the stories15M shape is slow under emulation


@pytest.fixture(scope="session")
def stream_models(host_bins, tmp_path_factory) -> dict[str, tuple[dict[str, Path], Path]]:
    """model -> ({weight type: file}, tokenizer)."""
    shared = ck.shared_models_dir()
    if not (shared / "stories260K.bin").exists() or not (shared / "tokenizer.bin").exists():
        pytest.skip(f"stories260K.bin or tokenizer.bin missing in {shared}")
    d = tmp_path_factory.mktemp("c906-models")
    s15m = d / "s15m.bin"
    ck.write_v0(s15m, ck.STORIES15M, ck.make_weights(ck.STORIES15M, seed=15))
    tok512 = d / "tok512.bin"
    ck.write_id_tokenizer(tok512, STORIES260K_CFG_VOCAB)
    out = {}
    for name, f32, tok in (("s260k", shared / "stories260K.bin", tok512),
                           ("s15m", s15m, shared / "tokenizer.bin")):
        files = {"f32": f32}
        for typ in ("f16", "q8"):
            files[typ] = d / f"{name}-{typ}.l2"
            subprocess.run([str(host_bins / "l2convert"), str(f32), str(files[typ]), "--type",
                            typ], check=True, capture_output=True, timeout=TIMEOUT)
        if name == "s260k":  # the modes' kernels: two-part inputs, f16 and q10 matrices (FORMAT.md)
            for mode in MODES:
                files[mode] = d / f"{name}-{mode}.l2"
                subprocess.run([str(host_bins / "l2convert"), str(f32), str(files[mode]), "--mode",
                                mode], check=True, capture_output=True, timeout=TIMEOUT)
        out[name] = (files, tok)
    return out


def stream_cases() -> list[tuple[str, ...]]:
    return [(m, typ, kv, run, prompt) for m in STEPS for typ in ("f32", "f16", "q8")
            for kv in ("f32", "f16") for run in STREAM_RUNS for prompt in PROMPTS] + \
        [("s260k", mode, "f16", run, prompt) for mode in MODES for run in STREAM_RUNS for prompt in PROMPTS]


def stream_args(case: tuple[str, ...], models) -> list[str]:
    m, typ, kv, run, prompt = case
    files, tok = models[m]
    return [str(files[typ]), "-z", str(tok), "-k", kv, "-n", STEPS[m], *STREAM_RUNS[run],
            *PROMPTS[prompt]]


@pytest.fixture(scope="session")
def stream_results(c906_bins, emulator, host_bins, stream_models):
    """case -> (host run, emulated c906 run); the emulated ones in parallel, slowest first."""
    cases = stream_cases()

    def host(case):
        return subprocess.run([str(host_bins / "l2run"), *stream_args(case, stream_models)],
                              capture_output=True, text=True, errors="replace", timeout=TIMEOUT)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        order = sorted(cases, key=lambda c: (c[0] != "s15m", c[1] != "f16"))
        futures = {c: pool.submit(run_071, c906_bins / "l2run", *stream_args(c, stream_models))
                   for c in order}
        hosts = {c: host(c) for c in cases}
        return {c: (hosts[c], futures[c].result()) for c in cases}


@pytest.mark.parametrize("case", stream_cases(), ids=lambda c: "-".join(c))
def test_l2run_c906_equals_host(stream_results, case):
    want, got = stream_results[case]
    assert want.returncode == 0, want.stderr
    assert len(want.stdout) > 20, want.stdout  # enough text to compare
    assert got.returncode == 0, got.stderr[-3000:]
    assert got.stdout == want.stdout, f"host: {want.stdout!r}\nc906: {got.stdout!r}"


# ----------------------------------------------------------------------------- board kit


def test_board_kit_selfcheck_under_0_7_1(c906_bins, emulator, host_bins, stream_models, tmp_path):
    """scripts/bundle c906 packs `selfcheck`, which runs test_kernels and 16-token golden
    streams recorded on the host; under the emulator it must say PASS in one line. A golden
    file changed by one byte must make it say FAIL."""
    files, tok = stream_models["s260k"]
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy2(files["q8"], models / "stories260K.q8.l2")
    shutil.copy2(tok, models / "tok512.bin")
    env = {**os.environ, "BUNDLE_MODELS": str(models)}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "bundle"), "c906"], cwd=REPO, env=env,
                          capture_output=True, text=True, errors="replace")
    assert proc.returncode == 0, proc.stderr[-3000:]
    unpack(REPO / "build" / "bundle-c906.tar.gz", tmp_path)
    kit = next(tmp_path.glob("l2run-c906"))
    runner = {**os.environ, "RUNNER": f"{QEMU_071} -cpu {CPU_071}"}

    def selfcheck() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", "./selfcheck"], cwd=kit, env=runner, capture_output=True,
                              text=True, timeout=TIMEOUT)

    ok = selfcheck()
    assert ok.returncode == 0 and ok.stdout.startswith("selfcheck: PASS"), ok.stdout + ok.stderr
    assert len(ok.stdout.strip().splitlines()) == 1, ok.stdout
    golden = sorted((kit / "golden").glob("*.out"))
    assert len(golden) >= 2, golden
    golden[0].write_bytes(golden[0].read_bytes() + b"!")
    bad = selfcheck()
    assert bad.returncode == 1 and bad.stdout.startswith("selfcheck: FAIL"), bad.stdout
