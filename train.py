#!/usr/bin/env python
"""``python train.py``: the official command line of :mod:`iharm.commands.train` (installed as ``iharm-train``)."""
import sys

from iharm.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
