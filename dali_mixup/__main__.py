"""``python -m dali_mixup``: the command line (see dali_mixup/apps/cli.py)."""

import sys

from .apps.cli import main

if __name__ == "__main__":
    sys.exit(main())
