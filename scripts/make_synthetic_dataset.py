#!/usr/bin/env python
"""Build HSynth: iHarmony4-layout composites made from real photos (see iharm/data/hsynth/builder.py).

    python scripts/make_synthetic_dataset.py --photos ./photos --out ./datasets --name HSynth \\
        --seed 0 --per-photo 4 --test-fraction 0.2 --workers 2

writes ``<out>/<name>/{composite_images,masks,real_images}``, ``<name>_train.txt``,
``<name>_test.txt`` and ``meta.tsv``, and prints the composite-vs-real statistics
(iSSAM metrics at 256 px) overall, per split, per transform family and per mask kind.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

from iharm.data.errors import DataError
from iharm.data.hsynth.builder import BuildConfig, build_dataset, summarize
from iharm.data.hsynth.preview import contact_sheet


def _print_table(title: str, table: dict[str, dict[str, float]]) -> None:
    print(f"{title:<14s} {'N':>6s} {'MSE':>8s} {'fMSE':>9s} {'PSNR':>7s}")
    for key, row in table.items():
        print(f"{key:<14s} {row['n']:>6d} {row['mse']:>8.2f} {row['fmse']:>9.2f} {row['psnr']:>7.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=Path("photos"), help="folder of photos (default ./photos)")
    parser.add_argument("--out", type=Path, default=Path("datasets"), help="dataset root (default ./datasets)")
    parser.add_argument("--name", default="HSynth", help="subset name: <out>/<name>/, <name>_train.txt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-photo", type=int, default=4, help="composites per photo (over ceil(K/2) masks)")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="share of photos (by group) in test")
    parser.add_argument("--workers", type=int, default=2, help="processes (the result does not depend on it)")
    parser.add_argument("--size", type=int, default=None, help="shrink photos to this longest side first")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing <out>/<name>")
    parser.add_argument("--test-photos", type=Path, default=None,
                        help="file naming the test photos (file or dataset names), one per line (e.g. "
                             "checkpoints/hsynth/test_photos.txt: the photos a shipped model never saw); "
                             "default: a seeded split")
    parser.add_argument("--contact-sheet", type=Path, default=None, help="also write a JPEG contact sheet here")
    args = parser.parse_args(argv)
    try:
        test_photos = None
        if args.test_photos is not None:
            if not args.test_photos.is_file():
                raise DataError(args.test_photos, "--test-photos: file not found")
            test_photos = frozenset(line.strip() for line in args.test_photos.read_text().splitlines() if line.strip())
        config = BuildConfig(args.name, args.seed, args.per_photo, args.test_fraction, args.workers, args.size,
                             test_photos)
    except ValueError as exc:
        parser.error(str(exc))

    start = time.perf_counter()
    try:
        summary = build_dataset(args.photos, args.out, config, args.overwrite,
                                progress=lambda it, total: tqdm(it, total=total, desc="photos", unit="photo"))
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    counts = {split: sum(1 for row in summary.rows if row["split"] == split) for split in ("train", "test")}
    print(f"{args.out / args.name}: {len(summary.rows)} composites (train {counts['train']}, test {counts['test']}) "
          f"from {sum(summary.photos.values())} photos (train {summary.photos['train']}, "
          f"test {summary.photos['test']}) in {elapsed:.1f} s with {args.workers} worker(s)")
    for name in summary.dropped:
        print(f"  dropped {name}: no draw passed the checks")
    print("composite vs real, iSSAM metrics at 256x256 (means over composites):")
    _print_table("overall", summarize(summary.rows))
    _print_table("split", summarize(summary.rows, "split"))
    _print_table("family", summarize(summary.rows, "family"))
    _print_table("mask kind", summarize(summary.rows, "mask_kind"))
    if args.contact_sheet is not None:
        print(f"contact sheet: {contact_sheet(args.out / args.name, summary.rows, args.contact_sheet)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
