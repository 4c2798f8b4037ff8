#!/usr/bin/env python
"""Show that the models learn to harmonize real photos: train on HSynth on a CPU, score, report.

    python scripts/benchmark_quality.py                      # everything: about 5 hours on 2 CPU cores
    python scripts/benchmark_quality.py --stages report      # rewrite docs/quality.md from finished runs

Stages, in order (``--stages`` picks some; each one reuses the results that
already exist, so an interrupted benchmark continues where it stopped):

``data``      fetch the photo pool (``scripts/fetch_photos.py``) and build HSynth
              (``scripts/make_synthetic_dataset.py``, seed 0, split by photo) unless
              ``--hsynth`` already holds it; write 256 x 256 working copies of
              HSynth-train, with every transform family and without ``--held-out-family``.
``ablate``    short runs (``--ablation-minutes``) of recipe variants: what makes a model learn
              within the hour.
``train``     the final runs, ``--minutes`` each: iSSAM, DucoNet and BargainNet on HSynth-train, and
              iSSAM on HSynth-train without the held-out family (``models/hsynth/*.py``).
``evaluate``  ``scripts/evaluate_model.py`` at Fixed256 on HSynth-test: Composite, every run's final
              weights and its time snapshots; the final models and Composite on the real files with
              ground truth in ``--shared-data``; the final models' predictions on its real composites
              without ground truth.
``report``    ``--docs``/quality.md and ``--docs``/images/quality_*.jpg (tables, curve, grids).
``ship``      final weights that beat Composite clearly (fMSE <= SHIP_MAX_FMSE_RATIO x and a higher
              PSNR) go to ``--ship-dir`` with their metrics, command and data seed.

Every run is a ``train.py`` process (``--threads`` torch threads, ``--workers``
loader processes) bounded by wall-clock time; the load average is sampled
while it runs and reported beside its images/s, because on a shared machine
other processes take their share of the cores.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from iharm.tools.quality_benchmark.common import (ABLATIONS, FINAL_RUNS, HELD_OUT_RUN, REPO, STAGES, Paths,
                                                  read_json)
from iharm.tools.quality_benchmark.data import stage_data
from iharm.tools.quality_benchmark.evaluation import stage_evaluate
from iharm.tools.quality_benchmark.report import stage_report
from iharm.tools.quality_benchmark.ship import stage_ship
from iharm.tools.quality_benchmark.training import train_run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {', '.join(STAGES)}")
    parser.add_argument("--out", type=Path, default=REPO / "experiments/quality", help="runs and evaluations")
    parser.add_argument("--hsynth", type=Path, default=REPO / "datasets/HSynth", help="the HSynth folder")
    parser.add_argument("--photos", type=Path, default=REPO / "photos", help="photo pool (built if missing)")
    parser.add_argument("--shared-data", type=Path, default=REPO.parent / "shared/data",
                        help="real sample files (left out when missing)")
    parser.add_argument("--docs", type=Path, default=REPO / "docs", help="where quality.md and images/ go")
    parser.add_argument("--ship-dir", type=Path, default=REPO / "checkpoints/hsynth")
    parser.add_argument("--minutes", type=float, default=60.0, help="training time of each final run")
    parser.add_argument("--held-out-minutes", type=float, default=60.0,
                        help="training time of the held-out-family run")
    parser.add_argument("--ablation-minutes", type=float, default=8.0, help="training time of each ablation")
    parser.add_argument("--curve-every", type=float, default=10.0,
                        help="evaluate the time snapshots at multiples of this many minutes (0: final weights only)")
    parser.add_argument("--held-out-family", default="illumination", help="transform family left out of training")
    parser.add_argument("--models", default=",".join(r.model for r in FINAL_RUNS),
                        help="final runs to do (the held-out run needs iSSAM)")
    parser.add_argument("--no-held-out", action="store_true", help="skip the held-out-family run")
    parser.add_argument("--fresh", action="store_true",
                        help="final runs start from the recipe's initialisation, not from the best kept weights "
                             "(shipped or candidate)")
    parser.add_argument("--work-size", type=int, default=0,
                        help="training crop size (px) of the final runs (0: each recipe's work_size)")
    parser.add_argument("--lr", type=float, default=0.0,
                        help="peak learning rate of the final runs (0: each run's own); a run that continues "
                             "trained weights may want a lower one")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--batch-size", type=int, default=0, help="every run's batch size (0: each run's own)")
    parser.add_argument("--max-steps", type=int, default=0, help="also stop every run after this many steps "
                                                                 "(smoke tests)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise SystemExit(f"unknown stages: {', '.join(sorted(unknown))} (choose from {', '.join(STAGES)})")
    paths = Paths(out=args.out.resolve(), hsynth=args.hsynth.resolve(), photos=args.photos.resolve(),
                  shared_data=args.shared_data.resolve(), docs=args.docs.resolve(), ship_dir=args.ship_dir.resolve())
    wanted = set(args.models.split(","))
    finals = [run for run in FINAL_RUNS if run.model in wanted]
    runs = [*finals, *([] if args.no_held_out else [HELD_OUT_RUN])]
    if "data" in stages:
        stage_data(paths, args.held_out_family)
    if "ablate" in stages:
        for run in ABLATIONS:
            train_run(paths, run, args.ablation_minutes, args, args.held_out_family)
    if "train" in stages:
        for run in runs:
            train_run(paths, run, args.held_out_minutes if run.held_out else args.minutes, args,
                      args.held_out_family)
    if "evaluate" in stages:
        stage_evaluate(paths, [*runs, *ABLATIONS], args.curve_every)
    results = None
    if "report" in stages:
        results = stage_report(paths, args.held_out_family, args)
    if "ship" in stages:
        stage_ship(paths, results if results is not None else read_json(paths.out / "results.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
