#!/usr/bin/env python
"""``python scripts/predict_harmony_score.py``: the official command line of :mod:`iharm.commands.score` (installed as ``iharm-score``)."""
import sys

from iharm.commands.score import main

if __name__ == "__main__":
    sys.exit(main())
