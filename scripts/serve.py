#!/usr/bin/env python
"""``python scripts/serve.py``: the official command line of :mod:`iharm.commands.serve` (installed as ``iharm-serve``)."""
import sys

from iharm.commands.serve import main

if __name__ == "__main__":
    sys.exit(main())
