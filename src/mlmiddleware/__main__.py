"""``python -m mlmiddleware``: the same command line as the ``mlmiddleware`` script."""

from __future__ import annotations

import sys

from mlmiddleware.launcher.cli import main

if __name__ == "__main__":
    sys.exit(main())
