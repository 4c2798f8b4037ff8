#!/usr/bin/env python
"""``python scripts/evaluate_model.py``: the official command line of :mod:`iharm.commands.evaluate` (installed as ``iharm-evaluate``)."""
import sys

from iharm.commands.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
