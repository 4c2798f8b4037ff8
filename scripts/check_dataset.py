#!/usr/bin/env python
"""Check datasets in the iHarmony4 layout and report every problem in one run.

    python scripts/check_dataset.py datasets/iHarmony4 datasets/HSynth

Each PATH is a subset folder (with composite_images/, masks/, real_images/ and
<Name>_train.txt / <Name>_test.txt) or a root holding subsets (and optionally
IHD_train.txt / IHD_test.txt). Exit status: 0 when no error was found (warnings
and notes do not count unless --strict), 1 otherwise.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from iharm.data.checks import SEVERITIES, check_paths, format_summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    parser.add_argument("--strict", action="store_true", help="fail on warnings too")
    args = parser.parse_args(argv)
    report = check_paths(args.paths)
    for severity in SEVERITIES:
        for problem in report.problems:
            if problem.severity == severity:
                print(problem)
    print(format_summary(report))
    failed = report.count("error") or (args.strict and report.count("warning"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
