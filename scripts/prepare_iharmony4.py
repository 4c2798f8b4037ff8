#!/usr/bin/env python
"""Prepare a downloaded iHarmony4 (or any root of iHarmony4-layout subsets).

    python scripts/prepare_iharmony4.py datasets/iHarmony4                    # IHD_train.txt, IHD_test.txt
    python scripts/prepare_iharmony4.py datasets/iHarmony4 --resize-hadobe5k  # + HAdobe5k_resized1024

The root lists (``<Sub>/composite_images/<file>`` a line, for BargainNet) are
made from the subsets' own ``<Sub>_train.txt`` / ``<Sub>_test.txt``; resized
copies (``*_resized<N>``) are left out unless named with --subsets.
--resize-hadobe5k writes ``HAdobe5k_resized<max-side>`` as saic-vul's resize
notebook did (see iharm/data/prepare.py: LANCZOS4, longest side exactly
1024, JPEG quality 90, PNG masks resized alike, small files copied unchanged).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from iharm.data.errors import DataError
from iharm.data.prepare import resize_subset, write_root_lists


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, metavar="ROOT", help="folder holding the subsets")
    parser.add_argument("--subsets", default=None, help="comma-separated subsets for the root lists (default: all)")
    parser.add_argument("--resize-hadobe5k", action="store_true", help="also write HAdobe5k_resized<max-side>")
    parser.add_argument("--max-side", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        if args.resize_hadobe5k:
            target = args.root / f"HAdobe5k_resized{args.max_side}"
            counts = resize_subset(args.root / "HAdobe5k", target, args.max_side, args.workers,
                                   progress=lambda it, total: tqdm(it, total=total, desc="HAdobe5k", unit="file"))
            print(f"{target}: {counts['resized']} files resized, {counts['copied']} copied unchanged, "
                  f"{counts['lists']} lists copied")
        subsets = args.subsets.split(",") if args.subsets else None
        for split, count in write_root_lists(args.root, subsets).items():
            print(f"{args.root / f'IHD_{split}.txt'}: {count} entries")
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
