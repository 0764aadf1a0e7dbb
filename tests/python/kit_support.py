"""Unpacking a board kit made by scripts/bundle, for the tests that try one."""

from __future__ import annotations

import tarfile
from pathlib import Path


def unpack(archive: Path, dest: Path) -> None:
    """Extraction filters came in Python 3.11.4 (Debian 12 has 3.11.2): used where they exist;
    the archive is the one scripts/bundle just made."""
    with tarfile.open(archive) as t:
        t.extractall(dest, **({"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}))
