"""Stages ``ablate`` and ``train``: one ``train.py`` process per run, recorded in its ``run.json``."""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path

import torch

from iharm.data import layout
from iharm.engine.training_state import STATE_FILE, load_training_state, trained_seconds
from iharm.tools.quality_benchmark.cards import starting_card
from iharm.tools.quality_benchmark.common import (FINAL_RUNS, PYTHON, REPO, LoadSampler, Paths, Run, experiment_dir,
                                                  log, relative, run_command, unfinished_experiment, write_json)
from iharm.utils.machine import cpu_model_and_flags, kernel_flags, native_bf16


def recipe_flags(run: Run) -> list[str]:
    """``train.py --set NAME=VALUE`` for each value of the recipe's RECIPE that ``run`` overrides."""
    return [flag for name, value in run.overrides.items()
            for flag in ("--set", f"{name}={json.dumps(list(value) if isinstance(value, tuple) else value)}")]


def train_run(paths: Paths, run: Run, minutes: float, args: argparse.Namespace, held_out_family: str) -> Path:
    """Train ``run`` for ``minutes`` unless it already finished; returns its experiment folder."""
    existing = experiment_dir(paths, run)
    if existing is not None:
        log(f"{run.name}: finished before ({existing}), reused")
        return existing
    final = run in FINAL_RUNS
    if final and args.work_size:  # the final runs' training crops, when not the recipe's
        run = replace(run, overrides={**run.overrides, "work_size": args.work_size})
    if final and args.lr:  # the final runs' peak learning rate, when not the run's own (e.g. lower to continue)
        run = replace(run, lr=args.lr)
    # A live run reads the photo pool (its config's PHOTOS_PATH) and keeps HSynth-test's photos out.
    data = paths.hsynth if run.live else paths.work_copy(held_out_family if run.held_out else None)
    batch_size = args.batch_size or run.batch_size
    command = [PYTHON, "train.py", REPO / run.recipe, *recipe_flags(run), "--device", "cpu", "--threads", args.threads,
               "--workers", args.workers, "--config-path", paths.config, "--dataset-path", data,
               "--batch-size", batch_size, "--lr", f"{run.lr:g}", "--max-train-minutes", f"{minutes:g}",
               "--seed", args.seed, "--exp-name", run.name, "--amp", "auto", "--channels-last"]
    if args.max_steps:
        command += ["--max-steps", args.max_steps]
    # Training continues run after run: a final run starts from the best weights kept so far.
    start = starting_card(paths, run.model) if final and not args.fresh else None
    interrupted = unfinished_experiment(paths, run)
    spent = interrupted is not None and \
        trained_seconds(load_training_state(interrupted / "checkpoints" / STATE_FILE)) >= 60 * minutes
    if spent:  # stopped after its budget ran out (e.g. Ctrl-C while saving): recorded as it stands
        log(f"{run.name}: the interrupted {interrupted} has trained its {minutes:g} minutes; recorded, not resumed")
    elif interrupted is not None:  # killed or crashed: resumed exactly, its training time counted
        log(f"{run.name}: resuming the interrupted {interrupted}")
        command += ["--resume-exp", interrupted.name]
    elif start is not None:
        command += ["--weights", paths.ship_dir / start[0].parent / start[1]["weights"]]
    started = time.time()
    with LoadSampler() as load:
        if not spent:
            run_command(command)
    wall = time.time() - started
    (exp,) = sorted(paths.out.glob(f"exps/**/[0-9][0-9][0-9]_{run.name}"))[-1:]
    state = load_training_state(exp / "checkpoints" / STATE_FILE)
    images = int(state["global_step"]) * batch_size
    record = {"run": asdict(run), "minutes": minutes, "seed": args.seed, "batch_size": batch_size,
              "command": " ".join(relative(c) if isinstance(c, Path) else str(c) for c in command),
              "steps": int(state["global_step"]), "images": images, "wall_seconds": wall,
              "resumed": interrupted is not None, "trained_minutes": trained_seconds(state) / 60,
              "images_per_second": images / (60 * minutes) if not args.max_steps else images / wall,
              "epochs": images / max(1, len(layout.find_list(data, "train").read_text().split())),
              "cpu_count": os.cpu_count(), "threads": args.threads, "workers": args.workers, **load.summary(),
              "cpu_model": cpu_model_and_flags()[0], "cpu_flags": kernel_flags(),
              "precision": "bf16 autocast" if native_bf16() else "fp32",
              "recipe": run.recipe, "overrides": dict(run.overrides),
              "continued_from": None if start is None else {
                  "card": str(start[0]), "weights": start[1]["weights"], "minutes": start[1]["total_minutes"],
                  "images": start[1]["total_images"]},
              "torch": torch.__version__, "finished": datetime.now().isoformat(timespec="seconds")}
    write_json(exp / "run.json", record)
    return exp
