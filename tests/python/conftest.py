"""Makes the test helpers (native.py, capi.py, package_support.py) and the package (with its
developer tools, storyteller.devtools) importable from any test."""

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# The reference's matrices are small: multithreaded OpenBLAS only adds overhead, and on a
# loaded machine it makes them several times slower. Must be set before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# Model discovery must not find the user's or the system's models (~/.local/share/storyteller,
# /var/lib/storyteller): every test names its own folders. This folder is never created.
os.environ["STORYTELLER_MODELS"] = os.path.join(tempfile.gettempdir(), "storyteller-tests-no-models")

sys.path.insert(0, str(Path(__file__).resolve().parent))

# The Python package (daemon/storyteller) for the cffi loader used by native.py.
_DAEMON = Path(__file__).resolve().parents[2] / "daemon"
if str(_DAEMON) not in sys.path:
    sys.path.insert(0, str(_DAEMON))


# A clone without ../shared (a stranger's checkout): the tests that read its real files skip,
# saying which file to put where, and everything else runs. A test counts as needing a file
# when it failed and its report names that missing file (the path is in every error that
# opening it raises, in Python or from l2run), so a present file never hides a failure.
def _missing_shared_files() -> list[Path]:
    from storyteller.devtools.checkpoints import shared_models_dir

    folder = shared_models_dir()
    return [folder / f for f in ("tokenizer.bin", "tokenizer.model", "stories260K.bin") if not (folder / f).is_file()]


_MISSING = _missing_shared_files()
_HOW = {"tokenizer.bin": "scripts/setup or `storyteller models fetch stories15M` fetches it",
        "tokenizer.model": "it ships with karpathy/llama2.c",
        "stories260K.bin": "`storyteller models fetch stories260K` fetches it"}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line at the end (make test runs -q, which hides the header): what was missing, where."""
    if _MISSING:
        terminalreporter.write_line(
            f"missing test data: {', '.join(p.name for p in _MISSING)} (looked for in {_MISSING[0].parent}/, "
            "../shared/models/, $LLAMA2_SHARED_MODELS): the tests that need them skipped, the others ran")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if not (_MISSING and report.failed and call.excinfo is not None):
        return
    named = [p for p in _MISSING if str(p) in report.longreprtext]
    if named:
        why = "; ".join(f"{p.name} ({_HOW[p.name]})" for p in named)
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0,
                           f"Skipped: needs {why} in {named[0].parent}/ (or ../shared/models/, $LLAMA2_SHARED_MODELS)")
