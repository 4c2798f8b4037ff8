"""Harmonize your own composites, at their original size.

A folder (as the official script)::

    python scripts/predict_for_dir.py DucoNet ./checkpoints/DucoNet256.pth \\
        --images my_composites/ --masks my_masks/ --results-path harmonized/ [--gpu cpu]

One image::

    python scripts/predict_for_dir.py DucoNet DucoNet256.pth --image comp.jpg --mask mask.png --output out.png

``--precision bf16`` runs the network in bfloat16 autocast (whether it is faster
depends on the hardware; not exact: docs/performance.md).

The model runs at a working resolution (``--resize 256`` as officially, or 512,
1024, ``none``; ``--resize-mode fixed`` squeezes to S x S as officially,
``longest`` keeps the aspect ratio with the longest side S) and its colour
correction is carried to the full-resolution image (``--method``, see
``iharm/inference/full_resolution.py``; ``resize`` is the official blurry
upsampling). With ``--keep-background`` (default) every pixel where the mask
is 0 is the input pixel, bit for bit; outputs are PNG by default so that this
survives writing (``--output-format same`` keeps each input's format).

Masks are found in ``--masks`` (default: the ``--images`` folder), for an image
``<stem>.<ext>``, by the first of these rules that matches:

1. ``<stem>.<any image ext>`` (only when the masks are in another folder);
2. ``<stem>_mask.<any image ext>``;
3. ``<stem without its last _part>.png``, the official rule (``c1_2_3.jpg`` -> ``c1_2.png``).

Masks are binarised at ``--mask-threshold`` (default 100/255 as officially:
JPEG-stored masks carry noise around 0 and 255); ``--mask-threshold soft``
keeps soft masks (alpha mattes), which are then also the blending weights.
``--invert-mask`` harmonizes the background to the foreground instead.

Every problem (unreadable image, missing mask, a mask of another size, an
empty mask) is reported and every good file is still processed; existing
outputs are skipped (``--overwrite`` redoes them); outputs are written
atomically. Before anything is loaded, an output that would replace an input
(an image, a mask, their folders, the checkpoint; through symbolic links and
``..`` too) and an output folder that cannot be written are refused. Exit
status: 0 if every image was harmonized (or already was), 1 if any failed, 2
for bad arguments, outputs or checkpoints.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from iharm.api import OFFICIAL_MASK_THRESHOLD, Harmonizer
from iharm.data.errors import DataError
from iharm.data.io import read_image, read_mask, write_image
from iharm.errors import IharmError
from iharm.inference.full_resolution import UPSAMPLING_METHODS, WorkingResolution
from iharm.inference.pairing import pair_masks
from iharm.model.registry import MODELS
from iharm.tools.cli import add_device_arguments, add_precision_argument, device_from_args, resolve_checkpoint
from iharm.utils.config import ConfigError, load_config
from iharm.utils.files import check_output_file, ensure_writable_folder, refuse_outputs_over_inputs
from iharm.utils.log import warnings_as_lines


@dataclass
class Job:
    """One image to harmonize: its mask (or why there is none) and where the result goes."""

    image: Path
    mask: Path | None
    output: Path
    problem: str | None = None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("model_type", choices=list(MODELS), help="registered model name")
    parser.add_argument("checkpoint", help="weights file: a path, a path relative to MODELS_PATH, a name, or model:name")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, help="folder of composites")
    source.add_argument("--image", type=Path, help="one composite (with --mask)")
    parser.add_argument("--masks", type=Path, help="folder of masks (default: the --images folder)")
    parser.add_argument("--mask", type=Path, help="the mask of --image")
    parser.add_argument("--results-path", type=Path, default=None,
                        help="output folder (default: EXPS_PATH/predictions from the config)")
    parser.add_argument("--output", type=Path, default=None, help="output file of --image")
    parser.add_argument("--resize", default="256",
                        help="working resolution: a side in pixels (256 official), or 'none' / -1 for the original size")
    parser.add_argument("--resize-mode", choices=("fixed", "longest"), default="fixed",
                        help="fixed: S x S (official); longest: longest side S, aspect kept, never enlarged")
    parser.add_argument("--method", choices=UPSAMPLING_METHODS, default="affine",
                        help="how the low-resolution correction reaches the full-resolution image")
    parser.add_argument("--keep-background", action=argparse.BooleanOptionalAction, default=True,
                        help="pixels with mask 0 stay the input pixels")
    parser.add_argument("--mask-threshold", default=str(OFFICIAL_MASK_THRESHOLD),
                        help="binarise masks at this value in [0, 1) (default 100/255, official), or 'soft'")
    parser.add_argument("--invert-mask", action="store_true",
                        help="use 1 - mask: harmonize the background to the foreground")
    parser.add_argument("--output-format", choices=("png", "same"), default="png",
                        help="png: <stem>.png, lossless (default); same: the input's file name and format")
    parser.add_argument("--jpeg-quality", type=int, default=95, help="quality of JPEG outputs (official: 85)")
    parser.add_argument("--overwrite", action="store_true", help="redo images whose output already exists")
    parser.add_argument("--original-size", action="store_true",
                        help="official flag, accepted for compatibility: outputs always have the original size")
    add_device_arguments(parser)
    add_precision_argument(parser)
    parser.add_argument("--config-path", default=None, help="config file (MODELS_PATH, EXPS_PATH)")
    args = parser.parse_args(argv)
    if args.image is not None:
        if args.mask is None:
            parser.error("--image needs --mask")
        if args.masks is not None:
            parser.error("--masks goes with --images; use --mask with --image")
    else:
        if args.mask is not None or args.output is not None:
            parser.error("--mask and --output go with --image; use --masks and --results-path with --images")
        args.masks = args.masks or args.images
        for flag, folder in (("--images", args.images), ("--masks", args.masks)):
            if not folder.is_dir():
                parser.error(f"{flag} {folder}: not a folder")
    try:
        args.resolution = WorkingResolution(_working_size(args.resize), args.resize_mode)
        args.threshold = _threshold(args.mask_threshold)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def _working_size(text: str) -> int | None:
    if text.lower() == "none" or text == "-1":
        return None
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"--resize {text}: expected a positive number of pixels, 'none' or -1")
    return int(text)


def _threshold(text: str) -> float | None:
    if text.lower() == "soft":
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--mask-threshold {text}: expected a number in [0, 1) or 'soft'") from None
    if not 0.0 <= value < 1.0:
        raise ValueError(f"--mask-threshold {text}: expected a number in [0, 1) or 'soft'")
    return value


def folder_jobs(images_dir: Path, masks_dir: Path, results: Path,
                output_format: str) -> tuple[list[Job], list[str]]:
    """A job for every composite in ``images_dir`` (sorted, masks found by
    :mod:`iharm.inference.pairing`) and notes on the files that are not images."""
    pairs, notes = pair_masks(images_dir, masks_dir)
    jobs: list[Job] = []
    outputs: dict[Path, Path] = {}
    for image, mask in pairs:
        output = results / (f"{image.stem}.png" if output_format == "png" else image.name)
        job = Job(image, mask if isinstance(mask, Path) else None, output,
                  None if isinstance(mask, Path) else str(mask))
        if job.problem is None and output in outputs:
            job.problem = f"{image}: its output {output} is also the output of {outputs[output]}; rename one of them"
        outputs.setdefault(output, image)
        jobs.append(job)
    return jobs, notes


def run_job(job: Job, harmonizer: Harmonizer, args: argparse.Namespace) -> None:
    """Read, check, harmonize and write one image; a DataError says what is wrong with which file."""
    image = read_image(job.image)
    mask = read_mask(job.mask)
    if mask.shape != image.shape[:2]:
        raise DataError(job.mask, f"mask is {mask.shape[1]}x{mask.shape[0]} but its image {job.image} is "
                                  f"{image.shape[1]}x{image.shape[0]}; masks must have the image's size")
    try:
        rgb, values = harmonizer.prepare(image, mask)
    except ValueError as exc:
        raise DataError(job.mask, f"{exc} (after thresholding{' and inversion' if args.invert_mask else ''})") from None
    write_image(job.output, harmonizer.harmonize_prepared(rgb, values), args.jpeg_quality)


def check_outputs(jobs: list[Job], results: Path | None, args: argparse.Namespace, checkpoint: Path) -> None:
    """Before any work: no output may be an input (image, mask, their folders, the checkpoint; through
    symlinks and ``..``), and every output folder must be writable. OutputPathError names the flag."""
    inputs = [checkpoint, *(job.image for job in jobs), *(job.mask for job in jobs if job.mask is not None)]
    if args.image is not None:
        check_output_file(jobs[0].output, "--output" if args.output is not None else "--results-path", inputs)
        return
    refuse_outputs_over_inputs({"--results-path": [results]}, [args.images, args.masks])
    refuse_outputs_over_inputs({"--results-path": [job.output for job in jobs]}, inputs)
    ensure_writable_folder(results, "--results-path")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config_path)
        checkpoint = resolve_checkpoint(args.checkpoint, cfg.get("MODELS_PATH"))
        results = args.results_path
        if results is None and args.output is None:
            if not cfg.get("EXPS_PATH"):
                raise ConfigError("no --results-path and no EXPS_PATH in the config")
            results = Path(cfg.EXPS_PATH) / "predictions"
        if args.image is not None:
            output = args.output or results / (f"{args.image.stem}.png" if args.output_format == "png"
                                               else args.image.name)
            jobs, notes = [Job(args.image, args.mask, output)], []
        else:
            jobs, notes = folder_jobs(args.images, args.masks, results, args.output_format)
        check_outputs(jobs, results, args, Path(checkpoint))
    except (IharmError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if not jobs:
        print(f"error: {args.images}: no images found", file=sys.stderr)
        return 1
    try:
        harmonizer = Harmonizer(args.model_type, checkpoint, device=device_from_args(args), precision=args.precision,
                                resize=args.resolution.size, resize_mode=args.resolution.mode, method=args.method,
                                keep_background=args.keep_background, mask_threshold=args.threshold,
                                invert_mask=args.invert_mask)
    except (IharmError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    failures: list[str] = []
    written = skipped = 0
    for job in tqdm(jobs, desc="harmonizing", unit="image", disable=None):
        if job.problem is None and job.output.exists() and not args.overwrite:
            skipped += 1
            continue
        try:
            if job.problem is not None:
                raise DataError(job.problem)
            with warnings_as_lines(lambda line: tqdm.write(line, file=sys.stderr)):
                run_job(job, harmonizer, args)
            written += 1
        except (DataError, ValueError, RuntimeError, OSError) as exc:
            message = str(exc) if isinstance(exc, DataError) else f"{job.image}: {type(exc).__name__}: {exc}"
            failures.append(message)
            tqdm.write(f"error: {message}", file=sys.stderr)
    print(f"{written} harmonized, {skipped} skipped (output exists; --overwrite to redo), {len(failures)} failed"
          + (f"; outputs in {results}" if results is not None else ""), file=sys.stderr)
    if failures:
        print("problems:\n  " + "\n  ".join(failures), file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
