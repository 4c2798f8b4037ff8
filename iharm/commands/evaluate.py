"""Evaluate a harmonization model on iHarmony4-layout test sets (the paper tables).

    python scripts/evaluate_model.py DucoNet ./checkpoints/DucoNet256.pth --resize-strategy Fixed256
    python scripts/evaluate_model.py DucoNet DucoNet1024.pth --resize-strategy Fixed1024 --datasets HAdobe5k1
    python scripts/evaluate_model.py Composite --dataset-path datasets/HSynth --gpu cpu

Prints the official table (N, MSE, fMSE, PSNR, fPSNR, SSIM, AvgTime per
dataset; an image-weighted Overall row for several datasets) with the metric
variant and output mode stated, and logs it to ``--results-path`` or
``EXPS_PATH/evaluation_logs/``. ``--results-path`` also gets the per-image CSV
and a JSON summary. See :mod:`iharm.inference.evaluation` for the protocol.
Exit status: 0 on success, 2 for bad arguments, data or checkpoints.
"""
from __future__ import annotations

import argparse
import sys

from typing import Any

from iharm.inference.evaluation import DEFAULT_DATASETS
from iharm.inference.report import EvaluationReport
from iharm.tools.cli import add_evaluation_arguments, run_evaluation_command


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_evaluation_arguments(parser, DEFAULT_DATASETS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def report_results(report: EvaluationReport, logger: Any) -> None:
        logger.info("Evaluation results:\n%s", report.table())
        if args.results_path is not None:
            csv_path, json_path = report.write(args.results_path, args.eval_prefix)
            logger.info("per-image results: %s; summary: %s", csv_path, json_path)

    return run_evaluation_command(args, DEFAULT_DATASETS, "evaluation_logs", report_results)


if __name__ == "__main__":
    sys.exit(main())
