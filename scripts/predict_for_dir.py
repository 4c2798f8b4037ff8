#!/usr/bin/env python
"""``python scripts/predict_for_dir.py``: the official command line of :mod:`iharm.commands.harmonize` (installed as ``iharm-harmonize``)."""
import sys

from iharm.commands.harmonize import main

if __name__ == "__main__":
    sys.exit(main())
