"""Makes the test helpers (checkpoints.py, reference.py) importable from any test."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# The Python package (daemon/storyteller) for the cffi loader used by native.py.
_DAEMON = Path(__file__).resolve().parents[2] / "daemon"
if str(_DAEMON) not in sys.path:
    sys.path.insert(0, str(_DAEMON))
