#!/usr/bin/env python
"""Evaluate a model per foreground-ratio bucket (0-5 %, 5-15 %, 15-100 % of the image).

    python scripts/evaluate_model_fg_ratios.py DucoNet ./checkpoints/DucoNet256.pth --resize-strategy Fixed256
    python scripts/evaluate_model_fg_ratios.py Composite --dataset-path datasets/HSynth --gpu cpu

The foreground ratio of an image is count(mask > 0.5) / (H * W) of its mask
after resizing (``iharm.utils.metrics.foreground_ratio``). Buckets are
half-open, [a, b), the last one including 100 %, so every image is in exactly
one; ``--legacy-closed-intervals`` uses the official closed intervals [a, b],
where an image exactly on 5 % or 15 % counts in two buckets. The 0%-100% rows
hold every image. Options are those of ``evaluate_model.py`` (which this script
shares: it predicts each image once and buckets the per-image results); the
default datasets are the official ones (HAdobe5k is the resized copy here).
Works for every registered model (the official script crashed for DucoNet,
which got no Lab image) and for Composite.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

from iharm.inference.report import DatasetResult, EvaluationReport, ImageResult, accumulate
from iharm.tools.cli import add_evaluation_arguments, run_evaluation_command
from iharm.utils.files import atomic_write_text
from iharm.utils.metrics import FG_RATIO_BUCKETS, METRIC_NAMES, bucket_label, format_table, in_bucket, overall

DEFAULT_DATASETS = ("HFlickr", "HDay2Night", "HCOCO", "HAdobe5k")
ALL_IMAGES = (0.0, 1.0)


def bucket_rows(datasets: Sequence[DatasetResult], closed: bool) -> dict[str, dict[str, float | None]]:
    """Table rows ``'<dataset> <bucket>'`` and ``'Overall <bucket>'`` for every bucket, then all images."""
    rows: dict[str, dict[str, float | None]] = {}
    for bucket in (*FG_RATIO_BUCKETS, ALL_IMAGES):
        label = bucket_label(bucket)
        accumulators = {}
        for dataset in datasets:
            chosen: list[ImageResult] = [r for r in dataset.images if in_bucket(r.fg_ratio, bucket, closed)]
            accumulators[dataset.name] = accumulate(chosen)
        summaries = {f"{name} {label}": acc.summary() for name, acc in accumulators.items()}
        if len(accumulators) > 1:
            summaries[f"Overall {label}"] = overall(accumulators.values()).summary()
        for name, summary in summaries.items():
            rows[name] = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in summary.items()}
    return rows


def interval_note(closed: bool) -> str:
    if closed:
        return ("fg-ratio intervals: closed [a, b] as the official script (--legacy-closed-intervals): "
                "an image exactly on 5 % or 15 % is counted in two buckets")
    return "fg-ratio intervals: half-open [a, b), 15%-100% includes 100 %: every image is in exactly one bucket"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_evaluation_arguments(parser, DEFAULT_DATASETS)
    parser.add_argument("--legacy-closed-intervals", action="store_true",
                        help="count as the official script: closed intervals, boundary images in two buckets")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def report_results(report: EvaluationReport, logger: Any) -> None:
        rows = bucket_rows(report.datasets, args.legacy_closed_intervals)
        table = format_table(rows, variant=report.settings.variant, name_width=28)
        logger.info("Evaluation results by foreground ratio:\n%s\n%s\n%s", report.header(),
                    interval_note(args.legacy_closed_intervals), table)
        if args.results_path is not None:
            report.write(args.results_path, args.eval_prefix)
            summary = {"intervals": "closed" if args.legacy_closed_intervals else "half-open",
                       "note": interval_note(args.legacy_closed_intervals),
                       "metrics": list(METRIC_NAMES), "rows": rows, "evaluation": report.to_json()}
            path = args.results_path / f"{args.eval_prefix}fg_ratios.json"
            atomic_write_text(path, json.dumps(summary, indent=2) + "\n")
            logger.info("results: %s", args.results_path)

    return run_evaluation_command(args, DEFAULT_DATASETS, "evaluation_results", report_results)


if __name__ == "__main__":
    sys.exit(main())
