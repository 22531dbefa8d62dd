"""``python -m discore_voice``: the same command line as the ``discore-voice`` script."""

from __future__ import annotations

import sys

from ._cli.main import main

if __name__ == "__main__":
    sys.exit(main())
