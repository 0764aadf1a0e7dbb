"""RISC-V builds under QEMU user mode: the C tests, and l2run's output against the host's.

scripts/cross-build makes the rv64gc (scalar) and rv64gcv (RVV 1.0) builds once per session;
the binaries are copied out of build/ so a concurrent `make clean` cannot pull them away.
RVV runs use `-cpu rv64,v=true,vlen=128` and `vlen=256`, with `rvv_ta_all_1s` and
`rvv_ma_all_1s` when this QEMU has them (tail / masked-off elements then become all ones
instead of being left alone, which exposes kernels that read tails they did not write).

End to end: a seeded synthetic model of vocabulary 32000 (so ../shared/models/tokenizer.bin
applies), converted to q8 and f16 by the host l2convert; `l2run -t 0 -n 48` (greedy) and
`-t 0.9 -s 5 -n 48` (sampled, q8 only) must print exactly the host build's stdout on every
target. The QEMU runs go in parallel, one per core (f16 under RVV emulation is the slowest).

Skipped when the cross tools (scripts/install-deps --cross) or the tokenizer are missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from storyteller import targets as build_targets
from storyteller.devtools import checkpoints as ck

REPO = Path(__file__).resolve().parents[2]
C_TESTS = sorted(p.stem for p in (REPO / "tests" / "c").glob("test_*.c"))
TIMEOUT = 300  # seconds for one program under QEMU
QEMU = "qemu-riscv64"
CROSS_TOOLS = ("clang-19", "riscv64-linux-gnu-gcc", "riscv64-linux-gnu-ar", QEMU)

E2E_CFG = ck.Config(dim=64, hidden_dim=172, n_layers=2, n_heads=4, n_kv_heads=2,
                    vocab_size=32000, seq_len=64)
RUNS: dict[str, tuple[str, ...]] = {"greedy": ("-t", "0", "-n", "48"),
                                    "sampled": ("-t", "0.9", "-s", "5", "-n", "48")}
Proc = subprocess.CompletedProcess[str]


@dataclass(frozen=True)
class Target:
    name: str   # as shown in test ids
    build: str  # scripts/cross-build target
    cpu: str    # qemu -cpu


@cache
def qemu_tail_options() -> str:
    """',rvv_ta_all_1s=true,rvv_ma_all_1s=true' if this QEMU knows them, else ''."""
    opts = ",rvv_ta_all_1s=true,rvv_ma_all_1s=true"
    proc = subprocess.run([QEMU, "-cpu", "rv64,v=true,vext_spec=v1.0" + opts, "/nonexistent"],
                          capture_output=True, text=True)
    return "" if "not found" in proc.stderr and "Property" in proc.stderr else opts


def targets() -> list[Target]:
    vec = "rv64,v=true,vext_spec=v1.0,vlen={}" + qemu_tail_options()
    return [Target("rv64gc", "rv64gc", "rv64"),
            Target("rv64gcv-vlen128", "rv64gcv", vec.format(128)),
            Target("rv64gcv-vlen256", "rv64gcv", vec.format(256))]


TARGET_NAMES = ("rv64gc", "rv64gcv-vlen128", "rv64gcv-vlen256")


@pytest.fixture(scope="session")
def cross_bins(tmp_path_factory) -> dict[str, Path]:
    """Build name ("rv64gc", "rv64gcv", "host") -> a directory with its binaries."""
    missing = [t for t in CROSS_TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"cross tools missing: {', '.join(missing)} (scripts/install-deps --cross)")
    out: dict[str, Path] = {}
    for build in ("rv64gc", "rv64gcv", "host"):
        proc = subprocess.run(["bash", str(REPO / "scripts" / "cross-build"), build],
                              cwd=REPO, capture_output=True, text=True, errors="replace")
        if proc.returncode != 0:
            pytest.fail(f"scripts/cross-build {build} failed ({proc.returncode}):\n"
                        f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        dest = tmp_path_factory.mktemp(f"bin-{build}")
        for name in ("l2run", "l2convert", *C_TESTS):
            src = REPO / "build" / build / "bin" / name
            if not src.exists():
                pytest.fail(f"scripts/cross-build {build} did not make {src}")
            shutil.copy2(src, dest / name)
        out[build] = dest
    return out


def target(name: str) -> Target:
    return next(t for t in targets() if t.name == name)


def qemu(t: Target, exe: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([QEMU, "-cpu", t.cpu, str(exe), *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, errors="replace", timeout=TIMEOUT)


# ----------------------------------------------------------------------------- C tests


@pytest.fixture(scope="session")
def c_test_args(tmp_path_factory) -> dict[str, tuple[Path, ...]]:
    """The arguments a C test needs: test_threads takes a model (as test_threads.py gives it)."""
    model = tmp_path_factory.mktemp("c-test-args") / "tiny.bin"
    ck.write_v0(model, ck.TINY, ck.make_weights(ck.TINY, seed=4))
    return {"test_threads": (model,)}


@pytest.fixture(scope="session")
def c_test_results(cross_bins, c_test_args) -> dict[tuple[str, str], subprocess.CompletedProcess[str]]:
    """(test, target) -> its run under QEMU; all at once, one per core."""
    cases = [(test, tname) for test in C_TESTS for tname in TARGET_NAMES]

    def one(case: tuple[str, str]) -> subprocess.CompletedProcess[str]:
        t = target(case[1])
        return qemu(t, cross_bins[t.build] / case[0], *c_test_args.get(case[0], ()))

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return dict(zip(cases, pool.map(one, cases), strict=True))


@pytest.mark.parametrize("tname", TARGET_NAMES)
@pytest.mark.parametrize("test", C_TESTS or [pytest.param("none", marks=pytest.mark.skip(
    reason="no tests/c/test_*.c yet"))])
def test_c_test_under_qemu(c_test_results, test, tname):
    t = target(tname)
    proc = c_test_results[test, tname]
    assert proc.returncode == 0, (f"{test} on {t.name} (-cpu {t.cpu}) exited {proc.returncode}:\n"
                                  f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


@pytest.mark.parametrize("tname", TARGET_NAMES)
def test_build_offers_its_targets_kernels(cross_bins, tname):
    """Each build lists exactly the kernel sets libllama2_rvv/targets.mk promises (rvv and
    generic on rv64gcv, generic alone on rv64gc)."""
    t = target(tname)
    listed = qemu(t, cross_bins[t.build] / "l2run", "x", "-e", "list")
    assert listed.returncode == 0 and listed.stdout.split() == list(build_targets.load()[t.build].kernels), listed


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="session")
def e2e_models(cross_bins, tmp_path_factory) -> dict[str, Path]:
    """{"q8": path, "f16": path, "fast": path, ...} packed by the host l2convert (the modes:
    two-part inputs, f16 and q10 matrices in q8 files, FORMAT.md); skips without tokenizer.bin."""
    tok = ck.shared_models_dir() / "tokenizer.bin"
    if not tok.exists():
        pytest.skip(f"{tok} not found")
    d = tmp_path_factory.mktemp("e2e")
    src = d / "model.bin"
    ck.write_v0(src, E2E_CFG, ck.make_weights(E2E_CFG, seed=7))
    out = {}
    for typ in ("q8", "f16", "fast", "balanced", "faithful"):
        dst = d / f"model-{typ}.l2"
        subprocess.run([str(cross_bins["host"] / "l2convert"), str(src), str(dst),
                        "--type" if typ in ("q8", "f16") else "--mode", typ],
                       check=True, capture_output=True, timeout=TIMEOUT)
        out[typ] = dst
    return out


def e2e_cases() -> list[tuple[str, str, str]]:
    """(target, model type, run): greedy for each type, one sampled run (q8), every target."""
    return [(t, typ, run) for t in TARGET_NAMES for typ, run in
            (("q8", "greedy"), ("f16", "greedy"), ("q8", "sampled"), ("fast", "greedy"),
             ("balanced", "greedy"), ("faithful", "greedy"))]


@pytest.fixture(scope="session")
def e2e_results(cross_bins, e2e_models) -> dict[tuple[str, str, str], tuple[str, Proc]]:
    """case -> (host stdout, QEMU run). All runs at once, one per core: QEMU is slow."""
    tok = ck.shared_models_dir() / "tokenizer.bin"

    def host(typ: str, run: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(cross_bins["host"] / "l2run"), str(e2e_models[typ]), "-z",
                               str(tok), *RUNS[run]], capture_output=True, text=True,
                              errors="replace", timeout=TIMEOUT)

    def emulated(case: tuple[str, str, str]) -> subprocess.CompletedProcess[str]:
        tname, typ, run = case
        t = target(tname)
        return qemu(t, cross_bins[t.build] / "l2run", e2e_models[typ], "-z", tok, *RUNS[run],
                    "-v", "1")

    cases = e2e_cases()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        # the slowest (vector f16) first, so the pool's tail is short
        order = sorted(cases, key=lambda c: (c[1] != "f16", c[0] == "rv64gc"))
        futures = {c: pool.submit(emulated, c) for c in order}
        hosts = {(typ, run): host(typ, run) for _, typ, run in cases}
        results = {c: f.result() for c, f in futures.items()}
    for proc in hosts.values():
        assert proc.returncode == 0, proc.stderr
        assert len(proc.stdout.strip()) > 20, f"host output too short to compare: {proc.stdout!r}"
    return {c: (hosts[c[1], c[2]].stdout, results[c]) for c in cases}


@pytest.mark.parametrize("case", e2e_cases(), ids=lambda c: "-".join(c))
def test_l2run_matches_host(e2e_results, case):
    tname, typ, run = case
    t = target(tname)
    want, proc = e2e_results[case]
    assert proc.returncode == 0, proc.stderr[-3000:]
    kernels = next((ln for ln in proc.stderr.splitlines() if ln.startswith("kernels ")), "?")
    assert proc.stdout == want, (f"{t.name} (-cpu {t.cpu}, {kernels}) differs from the host on "
                                 f"{typ} {' '.join(RUNS[run])}:\n host: {want!r}\n qemu: "
                                 f"{proc.stdout!r}")


# ----------------------------------------------------------------------------- QEMU plugin

SELFTEST_EXPECTED = {"total_insns": 5027, "scalar_insns": 2006, "vector_insns": 3021,
                     "vset_insns": 6, "vector_mem_insns": 1004, "vector_mem_cycles": 4016,
                     "vector_alu_insns": 1007, "vector_alu_cycles": 4072,
                     "vector_red_insns": 1004, "vector_red_cycles": 5150,
                     "vector_cycles": 13244, "scalar_cycles": 2006, "est_total_cycles": 15250}


def test_insn_mix_plugin_selftest(tmp_path):
    """scripts/qemu-plugin/insn_mix.c on a known mix (selftest.S), when it has been built
    (scripts/qemu-plugin/build fetches QEMU's source package, so tests do not run it)."""
    plugin = REPO / "build" / "qemu-plugin" / "libinsn_mix.so"
    if not plugin.exists():
        pytest.skip("build/qemu-plugin/libinsn_mix.so not built (scripts/qemu-plugin/build)")
    if shutil.which("clang-19") is None or shutil.which(QEMU) is None:
        pytest.skip("clang-19 or qemu-riscv64 missing")
    exe, out = tmp_path / "selftest", tmp_path / "mix.txt"
    subprocess.run(["clang-19", "--target=riscv64-linux-gnu", "-march=rv64gcv", "-nostdlib",
                    "-static", "-o", str(exe),
                    str(REPO / "scripts" / "qemu-plugin" / "selftest.S")], check=True)
    subprocess.run([QEMU, "-cpu", "rv64,v=true,vlen=128,vext_spec=v1.0", "-plugin",
                    f"{plugin},out={out}", str(exe)], check=True, timeout=60)
    got = {k: int(v) for k, v in (ln.split() for ln in out.read_text().splitlines())}
    assert got == SELFTEST_EXPECTED


def test_log_replay_counts_what_the_plugin_counts(cross_bins, tmp_path):
    """tb_log_mix (used for the c906 build under QEMU 5.2, which has no plugins) replays QEMU's
    execution log; on an RVV 1.0 run under QEMU 7.2 it must count exactly what the plugin
    counts in the same run (instructions, vector categories and estimated cycles)."""
    plugin = REPO / "build" / "qemu-plugin" / "libinsn_mix.so"
    tb_log_mix = REPO / "build" / "qemu-plugin" / "tb_log_mix"
    if not plugin.exists() or not tb_log_mix.exists():
        pytest.skip("build/qemu-plugin not built (scripts/qemu-plugin/build)")
    model, tok = tmp_path / "model.bin", tmp_path / "tok.bin"
    ck.write_v0(model, ck.GQA, ck.make_weights(ck.GQA, seed=3))
    ck.write_id_tokenizer(tok, ck.GQA.vocab_size)
    log, by_plugin, by_log = tmp_path / "log", tmp_path / "plugin.txt", tmp_path / "log.txt"
    os.mkfifo(log)
    with subprocess.Popen([QEMU, "-cpu", target("rv64gcv-vlen128").cpu, "-plugin",
                           f"{plugin},out={by_plugin}", "-d", "in_asm,exec,nochain", "-D",
                           str(log), str(cross_bins["rv64gcv"] / "l2run"), str(model), "-z",
                           str(tok), "-n", "24", "-t", "0.9", "-s", "3"],
                          stdout=subprocess.DEVNULL) as qemu, open(log, "rb") as src:
        subprocess.run([str(tb_log_mix), "spec=v1.0", f"out={by_log}"], stdin=src, check=True,
                       timeout=TIMEOUT)
        assert qemu.wait(timeout=TIMEOUT) == 0
    counts = [dict(ln.split() for ln in f.read_text().splitlines()) for f in (by_plugin, by_log)]
    assert counts[1].pop("unlogged_execs") == "0"
    assert counts[0] == counts[1]
    assert int(counts[0]["vector_insns"]) > 10_000  # the vector kernels ran


def test_environment_note():
    """Not a check: the QEMU used, for the log (pytest -rA shows it)."""
    if shutil.which(QEMU) is None:
        pytest.skip("no qemu-riscv64")
    ver = subprocess.run([QEMU, "--version"], capture_output=True, text=True).stdout.splitlines()
    print(ver[0] if ver else "?", "| vector cpu:", targets()[1].cpu, "| env:", os.environ.get("CI"))


# ----------------------------------------------------------------------------- board kit


def test_bundle_packs_what_a_board_needs(cross_bins):
    """scripts/bundle rv64gc: static binaries (test_kernels and selfcheck too), the board
    README, a size. (The c906 kit's self-check runs in test_c906.py.)"""
    proc = subprocess.run(["bash", str(REPO / "scripts" / "bundle"), "rv64gc"], cwd=REPO,
                          capture_output=True, text=True, errors="replace")
    assert proc.returncode == 0, proc.stderr[-3000:]
    archive = REPO / "build" / "bundle-rv64gc.tar.gz"
    with tarfile.open(archive) as tar:
        names = {Path(m.name).name: m for m in tar.getmembers()}
        readme = tar.extractfile(names["README-board.txt"]).read().decode()  # type: ignore[union-attr]
    for exe in ("l2run", "l2convert", "test_kernels", "selfcheck"):
        assert exe in names and names[exe].mode & 0o111, exe
    assert "./selfcheck" in readme and "./l2run" in readme, readme
    assert f"{archive.stat().st_size} bytes" in proc.stdout, proc.stdout
    assert "free memory the board needs" in proc.stdout, proc.stdout
