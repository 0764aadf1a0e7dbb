"""`python -m storyteller`: the same as the `storyteller` command."""

import sys

from storyteller.cli import main

sys.exit(main())
