"""Makes the test helpers (native.py, capi.py, package_support.py) and the package (with its
developer tools, storyteller.devtools) importable from any test."""

import os
import sys
import tempfile
from pathlib import Path

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
