"""Harmony score of composites with BargainNet's domain code extractor (E).

One composite::

    python scripts/predict_harmony_score.py --checkpoint latest_net_E.pth --image comp.png --mask mask.png

A folder (every image gets a row in the CSV, failures included)::

    python scripts/predict_harmony_score.py --checkpoint latest_net_E.pth \\
        --images composites/ --masks masks/ --output scores.csv

Masks are found by name as ``predict_for_dir.py`` finds them (``iharm.inference.pairing``):
``<name>.<ext>`` in ``--masks`` (another folder), else ``<name>_mask.<ext>``, else the
official ``<name without its last _part>.png``.
``--checkpoint`` is our BargainNet file, an official ``latest_net_E.pth`` (or its
folder) or libcom's ``BargainNet.pth``. The score is printed to 2 decimals as
the official script does; the CSV also holds it unrounded and the inharmony
level. Every problem is reported and every good file still scored; the exit
status is 1 if any image could not be scored, 2 for a bad checkpoint or an
``--output`` that is an input or cannot be written (checked before anything loads).
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from iharm.data.errors import DataError
from iharm.errors import IharmError
from iharm.inference.harmony_score import HarmonyResult, HarmonyScorer
from iharm.inference.pairing import pair_masks
from iharm.tools.cli import add_device_arguments, device_from_args
from iharm.utils.files import atomic_write_text, check_output_file
from iharm.utils.log import warnings_as_lines

CSV_COLUMNS = ("image", "mask", "harmony_score", "harmony_score_rounded", "inharmony_level", "error")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", "--weight", required=True, type=Path,
                        help="BargainNet file, official latest_net_E.pth (or its folder), or libcom BargainNet.pth")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", type=Path, help="one composite image (needs --mask)")
    source.add_argument("--images", type=Path, help="a folder of composite images")
    parser.add_argument("--mask", type=Path, help="the foreground mask of --image")
    parser.add_argument("--masks", type=Path, help="folder of the masks of --images (default: the --images folder)")
    parser.add_argument("--output", type=Path, help="write one CSV row per image here")
    add_device_arguments(parser)
    parser.add_argument("--strict-mask-size", action="store_true",
                        help="refuse a mask whose size differs from its image's (default: stretch it to the "
                             "image, as the official script does, with a warning)")
    args = parser.parse_args(argv)
    if args.image is not None and args.mask is None:
        parser.error("--image needs --mask")
    if args.images is not None:
        if args.mask is not None:
            parser.error("--mask goes with --image; use --masks DIR with --images")
        args.masks = args.masks or args.images
        for flag, folder in (("--images", args.images), ("--masks", args.masks)):
            if not folder.is_dir():
                parser.error(f"{flag} {folder}: not a folder")
    return args


def score_one(scorer: HarmonyScorer, image: Path, mask: Path, strict_mask_size: bool) -> HarmonyResult:
    """Score one pair, printing any warning (a mask of another size, a 0/1 mask) to stderr."""
    with warnings_as_lines():
        return scorer.score_files(image, mask, strict_mask_size=strict_mask_size)


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    """The rows as CSV, written atomically (a crash leaves the old file or the whole new one)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.image is not None:
        pairs: list[tuple[Path, Path | DataError]] = [(args.image, args.mask)]
        skipped: list[str] = []
    else:
        pairs, skipped = pair_masks(args.images, args.masks)
    try:
        if args.output is not None:  # before the checkpoint loads: the scores must have a place to go
            inputs = [args.checkpoint, *(image for image, _ in pairs),
                      *(mask for _, mask in pairs if isinstance(mask, Path))]
            inputs += [args.images, args.masks] if args.images is not None else []
            check_output_file(args.output, "--output", inputs)
        scorer = HarmonyScorer.from_checkpoint(args.checkpoint, device_from_args(args))
    except (IharmError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not pairs:
        print(f"error: {args.images}: no images found", file=sys.stderr)
        return 1
    for note in skipped:
        print(f"note: {note}", file=sys.stderr)

    rows, failed = [], 0
    for image, mask in pairs:
        row = {"image": str(image), "mask": "" if isinstance(mask, DataError) else str(mask)}
        if isinstance(mask, DataError):
            result: HarmonyResult | DataError = mask
        else:
            try:
                result = score_one(scorer, image, mask, args.strict_mask_size)
            except DataError as exc:
                result = exc
        if isinstance(result, DataError):
            failed += 1
            print(f"error: {result}", file=sys.stderr)
            rows.append({**row, "error": str(result)})
            continue
        print(f"The harmony score of {image} is {result.rounded_score:.2f} "
              f"(inharmony level {result.inharmony_level:.4f})")
        rows.append({**row, "harmony_score": repr(result.harmony_score),
                     "harmony_score_rounded": f"{result.rounded_score:.2f}",
                     "inharmony_level": repr(result.inharmony_level), "error": ""})

    if args.output is not None:
        write_csv(args.output, rows)
    if len(pairs) > 1 or failed:
        print(f"{len(pairs) - failed} of {len(pairs)} images scored, {failed} failed"
              + (f", {len(skipped)} other files skipped" if skipped else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
