#!/usr/bin/env python
"""``python scripts/export_onnx.py``: the command line of :mod:`iharm.commands.export` (installed as ``iharm-export``)."""
import sys

from iharm.commands.export import main

if __name__ == "__main__":
    sys.exit(main())
