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
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]

from iharm.data import layout
from iharm.data.color import rgb_to_lab
from iharm.data.hdataset import HDataset
from iharm.data.hsynth.builder import META_NAME, read_meta
from iharm.data.hsynth.imageops import write_png
from iharm.data.hsynth.subsets import family_of, write_working_copy
from iharm.data.io import encode_image, read_image, read_mask, write_encoded, write_image
from iharm.data.transforms import HCompose, resize_transform
from iharm.engine.training_state import STATE_FILE, load_training_state, trained_seconds
from iharm.inference.predictor import COMPOSITE, build_predictor
from iharm.model.registry import get_model_spec
from iharm.tools.quality import (grouped_summaries, line_plot, markdown_table, mask_to_uint8,
                                 read_per_image_csv, result_grid, with_ratio, write_small_jpeg)
from iharm.utils.machine import cpu_model_and_flags, kernel_flags, native_bf16
from iharm.utils.metrics import FG_RATIO_BUCKETS, METRIC_NAMES, bucket_label, in_bucket

PYTHON = sys.executable
STAGES = ("data", "ablate", "train", "evaluate", "report", "ship")
MODELS = ("DucoNet", "iSSAM", "BargainNet")
#: How HSynth is built (the README's dataset): seed, composites per photo, share of photos in test.
HSYNTH_BUILD = {"seed": 0, "per_photo": 4, "test_fraction": 0.2}
WORK_COPY_SIZE = 256
EVAL_STRATEGY = "Fixed256"
#: A final model is shipped when its HSynth-test fMSE is at most this times the Composite row's.
SHIP_MAX_FMSE_RATIO = 0.8
RATIO = "fMSE / Composite"
COLUMNS = ("N", *METRIC_NAMES, RATIO)
LOAD_SAMPLE_SECONDS = 15.0


@dataclass(frozen=True)
class Run:
    """One training run: a recipe (``models/hsynth/*.py``), optionally with values of its RECIPE overridden
    (``train.py --set``)."""

    name: str
    model: str
    recipe: str
    batch_size: int
    lr: float
    held_out: bool = False
    overrides: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def live(self) -> bool:
        """Trained on on-the-fly HSynth (the recipes' live_size), not on a fixed working copy."""
        return self.overrides.get("live_size", True) is not None

    @property
    def composite_output(self) -> bool:
        """BargainNet regenerates the whole image; it is scored composited with the mask (``--composite-output``)."""
        return self.model == "BargainNet"


FINAL_RUNS = (
    Run("iSSAM", "iSSAM", "models/hsynth/iSSAM_hsynth.py", batch_size=16, lr=3e-3),
    Run("DucoNet", "DucoNet", "models/hsynth/DucoNet_hsynth.py", batch_size=16, lr=3e-3),
    Run("BargainNet", "BargainNet", "models/hsynth/BargainNet_hsynth.py", batch_size=4, lr=5e-4),
)
#: Held out: the working copy without one family (on-the-fly HSynth draws every family).
HELD_OUT_RUN = Run("iSSAM-held-out", "iSSAM", "models/hsynth/iSSAM_hsynth.py", batch_size=16, lr=3e-3, held_out=True,
                   overrides={"live_size": None})
_PAPER_LR = 1e-3 * (8 / 64) ** 0.5
#: The ablations were measured on the fixed 256 px working copy of HSynth-train.
_SHORT = {"snapshot_minutes": 4.0, "live_size": None}
ABLATIONS = (
    Run("abl-paper", "iSSAM", "models/hsynth/iSSAM_hsynth.py", 8, _PAPER_LR,
        overrides={**_SHORT, "work_size": 128, "gate_logit": None, "warmup_minutes": 0.0, "final_lr_ratio": 1.0},
        description="paper recipe at 128 px: official init, batch 8, constant lr 1e-3 x sqrt(8/64)"),
    Run("abl-gate", "iSSAM", "models/hsynth/iSSAM_hsynth.py", 8, _PAPER_LR,
        overrides={**_SHORT, "work_size": 128, "warmup_minutes": 0.0, "final_lr_ratio": 1.0},
        description="+ fusion gate starts near the composite (logit 0.5)"),
    Run("abl-gate-cosine", "iSSAM", "models/hsynth/iSSAM_hsynth.py", 16, 3e-3,
        overrides={**_SHORT, "work_size": 128},
        description="+ batch 16, lr 3e-3, 1 min warm-up, cosine to the end of the budget"),
    Run("abl-64px", "iSSAM", "models/hsynth/iSSAM_hsynth.py", 16, 3e-3, overrides=_SHORT,
        description="+ 64 px crops instead of 128 (the final recipe)"),
)


# --- small helpers -------------------------------------------------------------------------------------------

def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


def run_command(command: Sequence[str], **kwargs: Any) -> None:
    log("$ " + " ".join(str(c) for c in command))
    subprocess.run([str(c) for c in command], check=True, cwd=REPO, **kwargs)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def relative(path: Path) -> str:
    """``path`` relative to the repository when inside it (for the report's commands)."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


class LoadSampler:
    """Samples the 1-minute load average every LOAD_SAMPLE_SECONDS in a thread (a context manager)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(LOAD_SAMPLE_SECONDS):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float | None]:
        if not self.samples:
            return {"load_mean": None, "load_max": None}
        return {"load_mean": float(np.mean(self.samples)), "load_max": float(np.max(self.samples))}


# --- layout of the output folder -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Paths:
    """Everything the benchmark writes, under ``out`` (git-ignored) and ``docs``."""

    out: Path
    hsynth: Path
    photos: Path
    shared_data: Path
    docs: Path
    ship_dir: Path

    @property
    def config(self) -> Path:
        return self.out / "config.yml"

    def work_copy(self, held_out_family: str | None) -> Path:
        suffix = f"Without{held_out_family.title().replace('_', '')}" if held_out_family else ""
        return self.out / "data" / f"HSynthW{WORK_COPY_SIZE}{suffix}"

    @property
    def shared_gt(self) -> Path:
        return self.out / "data" / "shared_gt"

    def eval_dir(self, *parts: str) -> Path:
        return self.out.joinpath("eval", *parts)


# --- stage: data ---------------------------------------------------------------------------------------------

def stage_data(paths: Paths, held_out_family: str) -> None:
    if not (paths.hsynth / META_NAME).is_file():
        if not any(paths.photos.glob("*.jpg")):
            run_command([PYTHON, "scripts/fetch_photos.py", "--out", paths.photos])
        run_command([PYTHON, "scripts/make_synthetic_dataset.py", "--photos", paths.photos,
                     "--out", paths.hsynth.parent, "--name", paths.hsynth.name,
                     "--seed", HSYNTH_BUILD["seed"], "--per-photo", HSYNTH_BUILD["per_photo"],
                     "--test-fraction", HSYNTH_BUILD["test_fraction"], "--workers", 2])
    for family in (None, held_out_family):
        count = write_working_copy(paths.hsynth, paths.work_copy(family), WORK_COPY_SIZE,
                                   exclude_families=(family,) if family else ())
        log(f"working copy {paths.work_copy(family)}: {count} training composites")
    write_shared_gt_layout(paths.shared_data, paths.shared_gt)
    paths.config.write_text(f"EXPS_PATH: {paths.out / 'exps'}\nMODELS_PATH: {paths.out / 'exps'}\n"
                            f"PHOTOS_PATH: {paths.photos}\nHSYNTH_PATH: {paths.hsynth}\n")


#: Real triplets of ``--shared-data`` that are not in the iHarmony4 layout: (folder, name, composite, mask, real).
SHARED_TRIPLETS = (
    ("INR2k", "inr", "triplets/inr_2k/demo_2k_composite.jpg", "triplets/inr_2k/demo_2k_mask.jpg",
     "triplets/inr_2k/demo_2k_real.jpg"),
    *(("RainNet256", f"rainnet{i}", f"triplets/rainnet_256/{i}.png", f"triplets/rainnet_256/{i}-mask.png",
       f"triplets/rainnet_256/{i}-gt.png") for i in (1, 2, 3)),
)
#: Folders of ``--shared-data`` already in the iHarmony4 layout.
SHARED_IHARMONY4 = ("iharmony4_mini/HAdobe5k", "iharmony4_mini/HCOCO")
#: Real composites without ground truth: (name, composite, mask).
SHARED_NO_GT = (
    *((f"harmonizer_{n}", f"composites_no_gt/composite_{n}_1.jpg", f"composites_no_gt/mask_{n}_1.jpg")
      for n in ("a0196", "f636", "f855")),
    *((f"bargainnet_{i}", f"composites_no_gt/bargainnet_example_{i}.png",
       f"composites_no_gt/bargainnet_example_{i}_mask.png") for i in (1, 2)),
)


def write_shared_gt_layout(shared_data: Path, dest: Path) -> None:
    """The shared triplets in the iHarmony4 layout, so that ``evaluate_model.py`` scores them.

    JPEG files are copied byte for byte; PNG composites and ground truths
    (RainNet, some RGBA) are decoded as the loader decodes them and stored as
    JPEG quality 100 with 4:4:4 chroma (every row, Composite included, then
    sees the same pixels); masks are stored as decoded, as PNG.
    """
    written: set[str] = set()
    for folder, name, composite, mask, real in SHARED_TRIPLETS:
        if not all((shared_data / f).is_file() for f in (composite, mask, real)):
            log(f"{shared_data / composite} (or its mask or real image) not found: left out")
            continue
        written.add(folder)
        subset = dest / folder
        composite_name = layout.composite_name(name, 1, 1)
        for kind, source, target in (("composite_images", composite, composite_name),
                                     ("real_images", real, layout.real_name(composite_name))):
            path = subset / kind / target
            if path.exists():
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            if source.endswith(".jpg"):
                shutil.copyfile(shared_data / source, path)
            else:
                write_encoded(path, encode_image(path, read_image(shared_data / source),
                                                 [cv2.IMWRITE_JPEG_QUALITY, 100, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                                                  cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]))
        mask_path = subset / "masks" / layout.mask_name(composite_name)
        if not mask_path.exists():
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            write_png(mask_path, mask_to_uint8(read_mask(shared_data / mask)))
    for folder in written:
        names = sorted(p.name for p in (dest / folder / "composite_images").iterdir())
        layout.list_path(dest / folder, "test").write_text("".join(f"{n}\n" for n in names))


def no_gt_inputs(shared_data: Path) -> list[tuple[str, str, str]]:
    """The entries of SHARED_NO_GT whose files exist."""
    return [entry for entry in SHARED_NO_GT if all((shared_data / f).is_file() for f in entry[1:])]


def shared_gt_folders(paths: Paths) -> list[Path]:
    folders = [paths.shared_data / f for f in SHARED_IHARMONY4] + \
              [paths.shared_gt / f for f in dict.fromkeys(t[0] for t in SHARED_TRIPLETS)]
    return [f for f in folders if f.is_dir()]


# --- stages: ablate and train ----------------------------------------------------------------------------------

def recipe_flags(run: Run) -> list[str]:
    """``train.py --set NAME=VALUE`` for each value of the recipe's RECIPE that ``run`` overrides."""
    return [flag for name, value in run.overrides.items()
            for flag in ("--set", f"{name}={json.dumps(list(value) if isinstance(value, tuple) else value)}")]


def experiment_dir(paths: Paths, run: Run) -> Path | None:
    """The experiment folder of ``run`` whose training finished (it holds ``run.json``), if any."""
    done = sorted(paths.out.glob(f"exps/**/[0-9][0-9][0-9]_{run.name}/run.json"))
    return done[-1].parent if done else None


def unfinished_experiment(paths: Paths, run: Run) -> Path | None:
    """The newest experiment folder of ``run`` that saved a training state but did not finish (no ``run.json``)."""
    folders = sorted(paths.out.glob(f"exps/**/[0-9][0-9][0-9]_{run.name}"))
    if folders and not (folders[-1] / "run.json").exists() and (folders[-1] / "checkpoints" / STATE_FILE).is_file():
        return folders[-1]
    return None


def train_run(paths: Paths, run: Run, minutes: float, args: argparse.Namespace, held_out_family: str) -> Path:
    """Train ``run`` for ``minutes`` unless it already finished; returns its experiment folder."""
    existing = experiment_dir(paths, run)
    if existing is not None:
        log(f"{run.name}: finished before ({existing}), reused")
        return existing
    final = run in FINAL_RUNS
    if final and args.work_size:  # the final runs' training crops, when not the recipe's
        run = replace(run, overrides={**run.overrides, "work_size": args.work_size})
    # A live run reads the photo pool (its config's PHOTOS_PATH) and keeps HSynth-test's photos out.
    data = paths.hsynth if run.live else paths.work_copy(held_out_family if run.held_out else None)
    batch_size = args.batch_size or run.batch_size
    command = [PYTHON, "train.py", REPO / run.recipe, *recipe_flags(run), "--device", "cpu", "--threads", args.threads,
               "--workers", args.workers, "--config-path", paths.config, "--dataset-path", data,
               "--batch-size", batch_size, "--lr", f"{run.lr:g}", "--max-train-minutes", f"{minutes:g}",
               "--seed", args.seed, "--exp-name", run.name, "--amp", "auto"]
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


# --- stage: evaluate -------------------------------------------------------------------------------------------

def checkpoints_of(exp: Path, curve_every: float) -> list[tuple[float | None, Path]]:
    """``(minutes, weights)`` of the time snapshots at multiples of ``curve_every`` minutes (0: none) in
    order, then ``(None, last_checkpoint.pth)``.

    A snapshot at the end of the budget (written by the step that reached it) is the final weights.
    """
    minutes = read_json(exp / "run.json")["minutes"]
    snapshots = sorted((float(p.stem[1:-3]), p) for p in (exp / "checkpoints").glob("t*min.pth"))
    return [*((m, p) for m, p in snapshots if m < minutes and curve_every and m % curve_every == 0),
            (None, exp / "checkpoints" / "last_checkpoint.pth")]


def evaluate(model: str, checkpoint: Path | None, datasets: Sequence[Path], results: Path,
             composite_output: bool = False, save_images: bool = False) -> Path:
    """``scripts/evaluate_model.py`` at Fixed256 on the test split of ``datasets`` (skipped when done)."""
    summary = results / "summary.json"
    if summary.is_file():
        return results
    command = [PYTHON, "scripts/evaluate_model.py", model, *([checkpoint] if checkpoint else []),
               "--dataset-path", ",".join(str(d) for d in datasets), "--resize-strategy", EVAL_STRATEGY,
               "--gpu", "cpu", "--workers", "1", "--results-path", results]
    if composite_output:
        command.append("--composite-output")
    if save_images:
        command += ["--save-images", results / "images"]
    run_command(command)
    return results


def fixed_size_inputs(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Composite, mask and Lab image at the evaluation size, resized as the evaluation does
    (Lab computed at the original resolution, then resized with the image)."""
    sample = HCompose([resize_transform(EVAL_STRATEGY)]).apply_to_sample(
        {"image": image, "target_image": image, "mask": mask, "image_lab": rgb_to_lab(image)})
    return sample["image"], sample["mask"], sample["image_lab"]


def load_no_gt_pair(shared_data: Path, composite: str, mask: str) -> tuple[np.ndarray, np.ndarray, str | None]:
    """A real composite and its mask; a mask of another size is resized to the image (and said so)."""
    image, mask_array = read_image(shared_data / composite), read_mask(shared_data / mask)
    note = None
    if mask_array.shape != image.shape[:2]:
        note = (f"{Path(mask).name} is {mask_array.shape[1]}x{mask_array.shape[0]}, the image "
                f"{image.shape[1]}x{image.shape[0]}: the mask was resized to the image (it then covers the object)")
        mask_array = cv2.resize(mask_array, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    return image, mask_array, note


def predict_no_gt(paths: Paths, model: str, checkpoint: Path, composite_output: bool) -> Path:
    """Predictions of one model on the real composites without ground truth, at the evaluation size."""
    out = paths.eval_dir("no_gt", model)
    predictor = build_predictor(model, checkpoint, "cpu")
    for name, composite, mask in no_gt_inputs(paths.shared_data):
        target = out / f"{name}.png"
        if target.exists():
            continue
        image, mask_array, _ = load_no_gt_pair(paths.shared_data, composite, mask)
        image, mask_array, lab = fixed_size_inputs(image, mask_array)
        prediction = predictor.predict(image, mask_array, lab if get_model_spec(model).needs_lab else None)
        if composite_output:
            prediction = prediction * mask_array[..., None] + image * (1 - mask_array[..., None])
        write_image(target, np.round(prediction).clip(0, 255).astype(np.uint8))
    return out


def stage_evaluate(paths: Paths, runs: Sequence[Run], curve_every: float) -> None:
    evaluate(COMPOSITE, None, [paths.hsynth], paths.eval_dir("hsynth", COMPOSITE), save_images=False)
    gt_folders = shared_gt_folders(paths)
    if gt_folders:
        evaluate(COMPOSITE, None, gt_folders, paths.eval_dir("shared", COMPOSITE))
    for run in runs:
        exp = experiment_dir(paths, run)
        if exp is None:
            log(f"{run.name}: no finished training, not evaluated")
            continue
        final = run in FINAL_RUNS
        for minutes, weights in checkpoints_of(exp, curve_every if final or run in ABLATIONS else 0):
            stem = "final" if minutes is None else weights.stem
            evaluate(run.model, weights, [paths.hsynth], paths.eval_dir("hsynth", run.name, stem),
                     composite_output=run.composite_output, save_images=final and minutes is None)
        if final:
            weights = exp / "checkpoints" / "last_checkpoint.pth"
            if gt_folders:
                evaluate(run.model, weights, gt_folders, paths.eval_dir("shared", run.name),
                         composite_output=run.composite_output, save_images=True)
            if no_gt_inputs(paths.shared_data):
                predict_no_gt(paths, run.model, weights, run.composite_output)


# --- stage: report ---------------------------------------------------------------------------------------------

def hsynth_results(paths: Paths, name: str, stem: str = "final") -> list:
    folder = paths.eval_dir("hsynth", name) if name == COMPOSITE else paths.eval_dir("hsynth", name, stem)
    csv_path = folder / "per_image.csv"
    return read_per_image_csv(csv_path) if csv_path.is_file() else []


def table_rows(by_model: Mapping[str, list], group_of: Any, order: Sequence[str] | None,
               composite: list) -> dict[str, dict[str, float]]:
    """Rows ``'<group>: <model>'`` with the fMSE ratio to the Composite row of the same group."""
    composite_groups = grouped_summaries(composite, group_of, order)
    rows: dict[str, dict[str, float]] = {}
    for group, composite_summary in composite_groups.items():
        for model, results in by_model.items():
            summary = grouped_summaries(results, group_of, [group])[group]
            rows[f"{group}: {model}"] = with_ratio(summary, composite_summary)
    return rows


def curve_points(paths: Paths, run: Run, record: Mapping[str, Any]) -> list[tuple[float, float]]:
    """(training minutes, HSynth-test fMSE) of every evaluated snapshot and of the final weights."""
    points = []
    exp = experiment_dir(paths, run)
    for minutes, weights in checkpoints_of(exp, 1.0):
        stem = "final" if minutes is None else weights.stem
        results = hsynth_results(paths, run.name, stem)
        if results:
            x = record["minutes"] if minutes is None else minutes
            points.append((x, grouped_summaries(results, lambda r: "all")["all"]["fMSE"]))
    return points


def run_line(record: Mapping[str, Any]) -> dict[str, Any]:
    """The columns of a run in the report: budget, steps, images seen, speed, the CPU and its load."""
    return {"minutes": f"{record['minutes']:g}", "steps": str(record["steps"]),
            "images": f"{record['images']:,}", "epochs": f"{record['epochs']:.1f}",
            "images/s": f"{record['images_per_second']:.2f}",
            "CPU, threads, precision": (f"{record['cpu_model']}, {record['threads']}, {record['precision']}"
                                        if record.get("cpu_model") else f"-, {record['threads']}, -"),
            "load avg (mean / max)": (f"{record['load_mean']:.1f} / {record['load_max']:.1f}"
                                      if record.get("load_mean") is not None else "-")}


def grid_rows(result_dirs: Mapping[str, Path], datasets: Sequence[Path], names: Mapping[str, Sequence[str]],
              with_real: bool) -> tuple[list[list[np.ndarray]], list[float], list[str]]:
    """Tiles (composite, mask, one per model, real) of the chosen test images, at the evaluated size, with the
    aspect ratio of the original image (for display)."""
    rows, aspects, labels = [], [], []
    for dataset in datasets:
        loader = HDataset(dataset, "test", augmentator=HCompose([resize_transform(EVAL_STRATEGY)]), lab="none")
        for index, entry in enumerate(loader.entries):
            if entry.name not in names.get(dataset.name, ()):
                continue
            original = loader.get_sample(index)
            sample = loader.augment_sample(original, np.random.default_rng(0))
            tiles = [sample["image"], mask_to_uint8(sample["mask"])]
            for folder in result_dirs.values():
                tiles.append(read_image(folder / "images" / dataset.name / f"{Path(entry.name).stem}.png"))
            if with_real:
                tiles.append(sample["target_image"])
            rows.append(tiles)
            aspects.append(original["image"].shape[1] / original["image"].shape[0])
            labels.append(f"{dataset.name}/{entry.name}")
    return rows, aspects, labels


def pick_hsynth_examples(paths: Paths, families: Mapping[str, str], count_per_family: int = 1) -> list[str]:
    """A deterministic set of HSynth-test composites: the first ones by name of every transform family."""
    test = layout.find_list(paths.hsynth, "test").read_text().split()
    chosen: dict[str, list[str]] = {}
    for name in sorted(test):
        family = families[name]
        if len(chosen.setdefault(family, [])) < count_per_family:
            chosen[family].append(name)
    return [name for family in sorted(chosen) for name in chosen[family]]


def stage_report(paths: Paths, held_out_family: str, args: argparse.Namespace) -> dict[str, Any]:
    """Write docs/quality.md, the figures, and ``<out>/results.json`` (every number of the report)."""
    families = family_of(paths.hsynth / META_NAME)
    meta = read_meta(paths.hsynth / META_NAME)
    composite = hsynth_results(paths, COMPOSITE)
    if not composite:
        raise SystemExit("no Composite evaluation yet: run the evaluate stage first")
    records = {run.name: read_json(exp / "run.json") for run in (*FINAL_RUNS, HELD_OUT_RUN, *ABLATIONS)
               if (exp := experiment_dir(paths, run)) is not None}
    finals = {run.model: hsynth_results(paths, run.name) for run in FINAL_RUNS if hsynth_results(paths, run.name)}
    everything = {COMPOSITE: composite, **finals}
    whole = table_rows(everything, lambda r: "HSynth-test", None, composite)
    main_rows = {key.split(": ", 1)[1]: row for key, row in whole.items()}

    bucket_order = [bucket_label(b) for b in FG_RATIO_BUCKETS]

    def bucket_of(result: Any) -> str | None:
        return next((bucket_label(b) for b in FG_RATIO_BUCKETS if in_bucket(result.fg_ratio, b, closed=False)), None)

    family_order = sorted(set(families.values()))
    buckets = table_rows(everything, bucket_of, bucket_order, composite)
    per_family = table_rows(everything, lambda r: families[r.name], family_order, composite)

    held_out_rows: dict[str, dict[str, float]] = {}
    held_out = hsynth_results(paths, HELD_OUT_RUN.name)
    if held_out and "iSSAM" in finals:
        def held_out_group(result: Any) -> str:
            return f"{held_out_family} (held out)" if families[result.name] == held_out_family else "other families"
        held_out_rows = table_rows({"iSSAM, all families": finals["iSSAM"],
                                    f"iSSAM, without {held_out_family}": held_out},
                                   held_out_group, [f"{held_out_family} (held out)", "other families"], composite)

    curves = {run.model: curve_points(paths, run, records[run.name]) for run in FINAL_RUNS if run.name in records}
    composite_fmse = main_rows[COMPOSITE]["fMSE"]
    ablation_rows: dict[str, dict[str, Any]] = {}
    for run in ABLATIONS:
        results = hsynth_results(paths, run.name)
        if run.name in records and results:
            row = with_ratio(grouped_summaries(results, lambda r: "all")["all"], main_rows[COMPOSITE])
            ablation_rows[f"{run.name}: {run.description}"] = {**run_line(records[run.name]),
                                                               "batch": str(run.batch_size), "lr": f"{run.lr:.2g}", **row}
            curves_short = curve_points(paths, run, records[run.name])
            ablation_rows[f"{run.name}: {run.description}"]["ratio at snapshots"] = ", ".join(
                f"{m:g} min {v / composite_fmse:.3f}" for m, v in curves_short)

    shared_rows: dict[str, dict[str, float]] = {}
    shared_all: dict[str, dict[str, float]] = {}
    shared_dirs = {COMPOSITE: paths.eval_dir("shared", COMPOSITE),
                   **{run.model: paths.eval_dir("shared", run.name) for run in FINAL_RUNS}}
    shared_results = {name: read_per_image_csv(folder / "per_image.csv")
                      for name, folder in shared_dirs.items() if (folder / "per_image.csv").is_file()}
    if COMPOSITE in shared_results:
        datasets = list(dict.fromkeys(r.dataset for r in shared_results[COMPOSITE]))
        shared_rows = table_rows(shared_results, lambda r: r.dataset, datasets, shared_results[COMPOSITE])
        shared_all = {key.split(": ", 1)[1]: row for key, row in
                      table_rows(shared_results, lambda r: "all", None, shared_results[COMPOSITE]).items()}

    figures = write_figures(paths, families, curves, composite_fmse, held_out_family)
    results = {"composite": main_rows[COMPOSITE], "models": {k: v for k, v in main_rows.items() if k != COMPOSITE},
               "buckets": buckets, "families": per_family, "held_out": held_out_rows, "curves": curves,
               "ablations": ablation_rows, "shared": shared_rows, "shared_all": shared_all, "runs": records,
               "figures": figures}
    write_json(paths.out / "results.json", results)
    write_markdown(paths, results, meta, held_out_family, args)
    return results


def write_figures(paths: Paths, families: Mapping[str, str], curves: Mapping[str, list],
                  composite_fmse: float, held_out_family: str) -> dict[str, str]:
    """The curve and the result grids, as JPEGs under ``docs/images``; returns {figure: relative path}."""
    images = paths.docs / "images"
    written: dict[str, str] = {}
    if curves:
        plot = line_plot(curves, "training minutes (2 CPU threads)", "HSynth-test fMSE",
                         reference=("Composite", composite_fmse))
        write_small_jpeg(images / "quality_curve.jpg", plot)
        written["curve"] = "images/quality_curve.jpg"
    order = [m for m in MODELS if any(r.model == m for r in FINAL_RUNS)]
    hsynth_dirs = {m: paths.eval_dir("hsynth", run.name, "final") for m in order
                   for run in FINAL_RUNS if run.model == m and (paths.eval_dir("hsynth", run.name, "final")
                                                                / "images").is_dir()}
    if hsynth_dirs:
        names = {paths.hsynth.name: pick_hsynth_examples(paths, families)}
        rows, aspects, _ = grid_rows(hsynth_dirs, [paths.hsynth], names, with_real=True)
        grid = result_grid(rows, ["composite", "mask", *hsynth_dirs, "real"], tile=128, aspects=aspects)
        write_small_jpeg(images / "quality_hsynth_grid.jpg", grid)
        written["hsynth_grid"] = "images/quality_hsynth_grid.jpg"
    shared_dirs = {m: paths.eval_dir("shared", run.name) for m in order for run in FINAL_RUNS
                   if run.model == m and (paths.eval_dir("shared", run.name) / "images").is_dir()}
    folders = shared_gt_folders(paths)
    if shared_dirs and folders:
        names = {f.name: layout.find_list(f, "test").read_text().split() for f in folders}
        rows, aspects, _ = grid_rows(shared_dirs, folders, names, with_real=True)
        grid = result_grid(rows, ["composite", "mask", *shared_dirs, "real"], tile=128, aspects=aspects)
        write_small_jpeg(images / "quality_shared_grid.jpg", grid)
        written["shared_grid"] = "images/quality_shared_grid.jpg"
    no_gt_models = [m for m in order if paths.eval_dir("no_gt", m).is_dir()]
    if no_gt_models:
        rows, aspects = [], []
        for name, composite, mask in no_gt_inputs(paths.shared_data):
            image, mask_array, _ = load_no_gt_pair(paths.shared_data, composite, mask)
            small, small_mask, _ = fixed_size_inputs(image, mask_array)
            rows.append([small, mask_to_uint8(small_mask),
                         *(read_image(paths.eval_dir("no_gt", m) / f"{name}.png") for m in no_gt_models)])
            aspects.append(image.shape[1] / image.shape[0])
        grid = result_grid(rows, ["composite", "mask", *no_gt_models], tile=160, aspects=aspects)
        write_small_jpeg(images / "quality_no_gt_grid.jpg", grid)
        written["no_gt_grid"] = "images/quality_no_gt_grid.jpg"
    return written


def targets(results: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """The issue's targets, each with the measured value and whether it is met."""
    composite = results["composite"]
    rows = {}
    for model, limit in (("iSSAM", 0.6), ("DucoNet", 0.6), ("BargainNet", None)):
        row = results["models"].get(model)
        if row is None:
            rows[model] = {"target": "-", "measured": "not run", "met": "no"}
            continue
        ratio, psnr_gain = row[RATIO], row["PSNR"] - composite["PSNR"]
        if limit is None:
            met = ratio < 1 and psnr_gain > 0
            target = "beats Composite (lower fMSE, higher PSNR)"
        else:
            met = ratio <= limit and psnr_gain > 0
            target = f"fMSE <= {limit} x Composite and a higher PSNR"
        rows[model] = {"target": target, "measured": f"fMSE {ratio:.3f} x Composite, PSNR {psnr_gain:+.2f} dB",
                       "met": "yes" if met else "no"}
    return rows


def write_markdown(paths: Paths, results: Mapping[str, Any], meta: list[dict[str, str]], held_out_family: str,
                   args: argparse.Namespace) -> None:
    split_counts = {split: sum(1 for row in meta if row["split"] == split) for split in ("train", "test")}
    photo_counts = {split: len({row["source_photo"] for row in meta if row["split"] == split})
                    for split in ("train", "test")}
    records = results["runs"]
    run_columns = ("minutes", "steps", "images", "epochs", "images/s", "CPU, threads, precision",
                   "load avg (mean / max)")
    lines = [
        "# Quality: the models learn to harmonize real photos on a CPU",
        "",
        "Written by `python scripts/benchmark_quality.py` (every number below comes from its runs; "
        f"results: `{relative(paths.out / 'results.json')}`). Reproduce it with that one command.",
        "",
        "## Setup",
        "",
        f"* Data: HSynth (`{relative(paths.hsynth)}`), built by `scripts/make_synthetic_dataset.py --seed "
        f"{HSYNTH_BUILD['seed']} --per-photo {HSYNTH_BUILD['per_photo']} --test-fraction "
        f"{HSYNTH_BUILD['test_fraction']}` from the offline photo pool (`scripts/fetch_photos.py`): "
        f"{split_counts['train']} training composites from {photo_counts['train']} photos, "
        f"{split_counts['test']} test composites from {photo_counts['test']} other photos (split by photo).",
        "* Training: the `models/hsynth/*.py` recipes, `train.py --device cpu --threads "
        f"{'/'.join(sorted({str(r['threads']) for r in records.values()})) or args.threads} --workers "
        f"{'/'.join(sorted({str(r['workers']) for r in records.values()})) or args.workers} --amp auto`, "
        "bounded by wall-clock time, one run at a time. The final runs train on on-the-fly HSynth (a new "
        "composite for every sample, drawn from the training photos at 256 x 256; `iharm.data.hsynth.live`); "
        f"the held-out-family run and the ablations on a {WORK_COPY_SIZE} x {WORK_COPY_SIZE} working copy of "
        "HSynth-train. An epoch is as many samples as HSynth-train has composites. The load average below "
        "is that of the machine's 2 cores during the run: about 2 means the run had them to itself.",
        f"* Evaluation: `scripts/evaluate_model.py MODEL CKPT --dataset-path {relative(paths.hsynth)} "
        f"--resize-strategy {EVAL_STRATEGY} --gpu cpu` (iSSAM metric definitions: per-image means, fMSE with "
        "the soft mask, PSNR peak = the target's maximum). BargainNet regenerates the whole image and is scored "
        "composited with the mask (`--composite-output`); DucoNet and iSSAM are scored on their raw output.",
        "",
        "## HSynth-test",
        "",
        markdown_table({k: v for k, v in {"Composite": results["composite"], **results["models"]}.items()},
                       COLUMNS, "model"),
        "",
        "### Targets",
        "",
        markdown_table(targets(results), ("target", "measured", "met"), "model"),
        "",
        "### Runs",
        "",
        markdown_table({name: run_line(record) for name, record in records.items()
                        if name in {r.name for r in (*FINAL_RUNS, HELD_OUT_RUN)}}, run_columns, "run"),
        "",
        "Commands:",
        "",
        "```bash",
        *(records[r.name]["command"].replace(PYTHON, "python") for r in (*FINAL_RUNS, HELD_OUT_RUN)
          if r.name in records),
        "```",
        "",
        "## Test fMSE against training time",
        "",
        markdown_table({model: {f"{m:g} min": v for m, v in points} for model, points in results["curves"].items()},
                       sorted({f"{m:g} min" for points in results["curves"].values() for m, _ in points},
                              key=lambda s: float(s.split()[0])), "model (fMSE)"),
        "",
        f"Composite fMSE: {results['composite']['fMSE']:.1f}. "
        + (f"![fMSE against training time]({results['figures']['curve']})" if "curve" in results["figures"] else ""),
        "",
        "## Per foreground-ratio bucket",
        "",
        "Buckets are half-open ([a, b), the last one including 100 %), as `scripts/evaluate_model_fg_ratios.py` (`iharm.utils.metrics.FG_RATIO_BUCKETS`).",
        "",
        markdown_table(results["buckets"], COLUMNS, "bucket: model"),
        "",
        "## Per transform family",
        "",
        markdown_table(results["families"], COLUMNS, "family: model"),
        "",
        f"## Held-out family: {held_out_family}",
        "",
        f"iSSAM trained with the same recipe and time on HSynth-train without the `{held_out_family}` composites, "
        "against the iSSAM trained on all of HSynth-train, on the test composites of that family and on the others.",
        "",
        markdown_table(results["held_out"], COLUMNS, "test images: model") if results["held_out"] else "(not run)",
        "",
        "## Real files with ground truth (`../shared/data`)",
        "",
        "`iharmony4_mini` (HAdobe5k: an expert retouch; HCOCO: 4 colour transfers of one photo), "
        "`triplets/inr_2k` and `triplets/rainnet_256` (stored in the iHarmony4 layout for the evaluation: JPEGs "
        "copied, PNGs as JPEG quality 100 4:4:4), scored at Fixed256 like HSynth-test. Too few images for a "
        "benchmark: they show whether what was learnt on HSynth carries over to real composites.",
        "",
        markdown_table(results["shared"], COLUMNS, "dataset: model") if results["shared"] else "(not run)",
        "",
    ]
    figures = results["figures"]
    if "shared_grid" in figures:
        lines += ["composite | mask | models | real, at the evaluated 256 x 256 (shown at the image's aspect ratio):",
                  "", f"![real files with ground truth]({figures['shared_grid']})", ""]
    if "hsynth_grid" in figures:
        lines += ["HSynth-test, the first composite of every transform family (by name):", "",
                  f"![HSynth-test examples]({figures['hsynth_grid']})", ""]
    if "no_gt_grid" in figures:
        notes = [note for _, composite, mask in no_gt_inputs(paths.shared_data)
                 if (note := load_no_gt_pair(paths.shared_data, composite, mask)[2])]
        lines += ["## Real composites without ground truth (`../shared/data/composites_no_gt`)", "",
                  "composite | mask | models, predicted at 256 x 256 as evaluated. " + " ".join(notes), "",
                  f"![real composites]({figures['no_gt_grid']})", ""]
    if results["ablations"]:
        lines += ["## What makes a model learn within the hour (ablations, iSSAM)", "",
                  "Each run: HSynth-train, the batch and minutes shown; evaluated on HSynth-test like the final "
                  "runs.", "",
                  markdown_table(results["ablations"], ("batch", "lr", *run_columns, "fMSE", RATIO, "PSNR",
                                                        "ratio at snapshots"), "variant"), ""]
    (paths.docs / "quality.md").write_text("\n".join(lines))
    log(f"wrote {paths.docs / 'quality.md'}")


# --- stage: ship -----------------------------------------------------------------------------------------------

CANDIDATES = Path("candidates")
#: What a run's history entry keeps of its run record.
HISTORY_KEYS = ("command", "recipe", "overrides", "minutes", "steps", "images", "images_per_second", "seed",
                "batch_size", "cpu_model", "cpu_flags", "precision", "threads", "workers", "load_mean", "load_max",
                "resumed", "torch", "finished")


def shipped_card(paths: Paths, model: str) -> dict[str, Any] | None:
    """The model card (``<model>_hsynth.json``) of the weights shipped for ``model``, or None."""
    path = paths.ship_dir / f"{model}_hsynth.json"
    return read_json(path) if path.is_file() else None


def candidate_cards(paths: Paths, model: str = "*") -> list[Path]:
    """The model cards of the candidates kept for ``model`` (``*``: every model), in name order."""
    return sorted((paths.ship_dir / CANDIDATES).glob(f"{model}_hsynth_run*.json"))


def starting_card(paths: Paths, model: str) -> tuple[Path, dict[str, Any]] | None:
    """``(card path relative to ship_dir, card)`` of the best weights kept for ``model``: the shipped ones or a
    candidate (``ship_dir/candidates``: better than the shipped, short of the ship rule), the lowest HSynth-test
    fMSE of them; None when nothing is kept. A final run continues from them."""
    cards = [paths.ship_dir / f"{model}_hsynth.json", *candidate_cards(paths, model)]
    kept = [(card.relative_to(paths.ship_dir), read_json(card)) for card in cards if card.is_file()]
    return min(kept, key=lambda item: item[1]["hsynth_test"]["model"]["fMSE"], default=None)


def ship_refusals(row: Mapping[str, float], composite: Mapping[str, float], shared: Mapping[str, Mapping[str, float]],
                  model: str, previous: Mapping[str, Any] | None) -> list[str]:
    """Why a final model may not be shipped (empty: it may). The ship rule: fMSE <= SHIP_MAX_FMSE_RATIO x the
    Composite row and a higher PSNR on HSynth-test, a lower fMSE than Composite on the real files with ground
    truth, and a lower HSynth-test fMSE than the weights shipped before."""
    reasons = []
    if row[RATIO] > SHIP_MAX_FMSE_RATIO:
        reasons.append(f"HSynth-test fMSE {row[RATIO]:.3f} x Composite > {SHIP_MAX_FMSE_RATIO}")
    if row["PSNR"] <= composite["PSNR"]:
        reasons.append(f"HSynth-test PSNR {row['PSNR']:.2f} <= Composite {composite['PSNR']:.2f}")
    if model not in shared or COMPOSITE not in shared:
        reasons.append("not evaluated on the real files with ground truth")
    elif shared[model]["fMSE"] >= shared[COMPOSITE]["fMSE"]:
        reasons.append(f"real files fMSE {shared[model]['fMSE']:.1f} >= Composite {shared[COMPOSITE]['fMSE']:.1f}")
    if previous is not None and row["fMSE"] >= previous["hsynth_test"]["model"]["fMSE"]:
        reasons.append(f"HSynth-test fMSE {row['fMSE']:.1f} does not beat the shipped "
                       f"{previous['hsynth_test']['model']['fMSE']:.1f}")
    return reasons


def stage_ship(paths: Paths, results: Mapping[str, Any]) -> None:
    """Ship each final model that meets the ship rule (:func:`ship_refusals`) to ``ship_dir``: its weights
    (only the weights: no optimizer state) and a model card that adds this run to the runs it continued.

    A model refused only for its scores, that beats Composite on HSynth-test and the weights it started
    from, is kept as a candidate in ``ship_dir/candidates`` (a new ``_run<N>`` file each time, nothing
    replaced) so that the next run continues from it."""
    composite, shared = results["composite"], results.get("shared_all", {})
    for run in FINAL_RUNS:
        row = results["models"].get(run.model)
        if row is None or run.name not in results["runs"]:
            continue
        exp = experiment_dir(paths, run)
        weights = None if exp is None else exp / "checkpoints" / "last_checkpoint.pth"
        if weights is None or not weights.is_file():
            log(f"{run.model}: not shipped: its training left no last_checkpoint.pth")
            continue
        if weights.stat().st_size > 60e6:
            log(f"{run.model}: not shipped: {weights.stat().st_size / 1e6:.0f} MB is too big for the repository")
            continue
        record = results["runs"][run.name]
        started = record.get("continued_from")
        before = read_json(paths.ship_dir / started["card"]) if started and started.get("card") else \
            shipped_card(paths, run.model) if started else None
        history = [*(before["history"] if before is not None else []),
                   {**{key: record.get(key) for key in HISTORY_KEYS}, "hsynth_test_fmse": row["fMSE"]}]
        card = {"model": run.model,
                "trained_on": "HSynth-train: composites drawn on the fly from the photos of the offline pool that "
                              "are not in HSynth-test (split by photo)",
                "hsynth_build": HSYNTH_BUILD, "total_minutes": sum(h["minutes"] for h in history),
                "total_images": sum(h["images"] for h in history), "history": history,
                "hsynth_test": {"resize": EVAL_STRATEGY, "model": row, "composite": composite},
                "real_files": {"model": shared.get(run.model), "composite": shared.get(COMPOSITE)}}
        reasons = ship_refusals(row, composite, shared, run.model, shipped_card(paths, run.model))
        if not reasons:
            target = paths.ship_dir / f"{run.model}_hsynth.pth"
        elif row["fMSE"] < composite["fMSE"] and (before is None or row["fMSE"] < before["hsynth_test"]["model"]["fMSE"]):
            target = paths.ship_dir / CANDIDATES / f"{run.model}_hsynth_run{len(history)}.pth"
            card["not_shipped_because"] = reasons
            if target.exists() or target.with_suffix(".json").exists():
                log(f"{run.model}: not shipped ({'; '.join(reasons)}), and not kept: {relative(target)} exists")
                continue
        else:
            log(f"{run.model}: not shipped: {'; '.join(reasons)}")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.with_name(f".{target.name}.new")
        shutil.copyfile(weights, staged)
        digest = hashlib.sha256(staged.read_bytes()).hexdigest()
        staged.replace(target)
        write_json(target.with_suffix(".json"), {**card, "weights": target.name, "sha256": digest})
        if reasons:
            log(f"{run.model}: not shipped ({'; '.join(reasons)}); kept as the candidate {relative(target)}")
        else:
            log(f"{run.model}: shipped {relative(target)} (fMSE {row[RATIO]:.3f} x Composite)")
    cards = {model: card for model in MODELS if (card := shipped_card(paths, model)) is not None}
    if cards:
        write_ship_readme(paths.ship_dir / "README.md", list(cards.values()), SHIPPED_INTRO)
        test_photos = sorted({row["source_photo"] for row in read_meta(paths.hsynth / META_NAME)
                              if row["split"] == "test"})
        (paths.ship_dir / "test_photos.txt").write_text("\n".join(test_photos) + "\n")
    candidates = [read_json(path) for path in candidate_cards(paths)]
    if candidates:
        write_ship_readme(paths.ship_dir / CANDIDATES / "README.md", candidates, CANDIDATES_INTRO)


SHIPPED_INTRO = (
    "# HSynth checkpoints\n\n"
    "Weights trained by `scripts/benchmark_quality.py` on HSynth-train (real photos that install offline, "
    f"synthetic composites drawn anew for every sample, data seed {HSYNTH_BUILD['seed']}, split by photo), on "
    "CPUs, over one or more runs: each run starts from the best weights kept before it (shipped or candidate), "
    "and replaces the shipped ones only when it beats them on HSynth-test. They are the registered "
    "architectures: `load_model(NAME, path)` and `scripts/predict_for_dir.py NAME path` use them as they are. "
    "They are far less trained than the paper checkpoints (120 GPU epochs on iHarmony4); see docs/quality.md. "
    "`test_photos.txt` names the photos of HSynth-test, which they never saw.")
CANDIDATES_INTRO = (
    "# Candidate weights: trained, measured, not shipped\n\n"
    "Weights that beat the input composites and the weights their run started from, but not the ship rule of "
    f"`scripts/benchmark_quality.py` (HSynth-test fMSE <= {SHIP_MAX_FMSE_RATIO} x Composite, a higher PSNR, "
    "better than Composite on the real files with ground truth, better than the shipped weights). They are kept "
    "so that the next final run of `scripts/benchmark_quality.py` continues from them instead of starting over; "
    "they are defaults of nothing (`Harmonizer()` and `make demo` use `checkpoints/hsynth/<model>_hsynth.pth` "
    "only). Each is the registered architecture: `load_model(NAME, path)` loads it.")


def write_ship_readme(path: Path, cards: Sequence[Mapping[str, Any]], intro: str) -> None:
    """A README of model cards (``intro``, then each JSON card as tables of scores and runs)."""
    lines = [intro, ""]
    for card in cards:
        test, real = card["hsynth_test"], card["real_files"]
        model = card["model"]
        lines += [f"## {card['weights']}", "",
                  f"{card['total_minutes']:g} minutes of training in {len(card['history'])} run(s), "
                  f"{card['total_images']:,} training images seen; sha256 `{card.get('sha256', '-')}`.", ""]
        if card.get("not_shipped_because"):
            lines += [f"Not shipped: {'; '.join(card['not_shipped_because'])}.", ""]
        lines += [markdown_table({"Composite": test["composite"], model: test["model"]}, COLUMNS,
                                 f"HSynth-test, {test['resize']}"), ""]
        if real["model"] is not None:
            lines += [markdown_table({"Composite": real["composite"], model: real["model"]}, COLUMNS,
                                     "real files with ground truth (../shared/data)"), ""]
        lines += ["| run | finished | recipe | minutes | images | images/s | CPU | precision | threads | load avg | "
                  "HSynth-test fMSE |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for number, run in enumerate(card["history"], start=1):
            load = "-" if run.get("load_mean") is None else f"{run['load_mean']:.2f} / {run['load_max']:.2f}"
            recipe = f"{run.get('recipe') or '-'} {run.get('overrides') or ''}".strip()
            lines.append(f"| {number} | {run['finished']} | {recipe} | {run['minutes']:g} | {run['images']:,} | "
                         f"{run['images_per_second']:.2f} | {run['cpu_model']} | {run['precision']} | "
                         f"{run['threads']} | {load} | {run['hsynth_test_fmse']:.1f} |")
        weights = path.parent / card["weights"]
        lines += ["", "Last run's command:", "", "```bash",
                  card["history"][-1]["command"].replace(PYTHON, "python"), "```", "", "Use it:", "", "```bash",
                  f"python scripts/predict_for_dir.py {model} {relative(weights)} "
                  "--images my_composites/ --masks my_masks/ --results-path harmonized/ --gpu cpu", "```", ""]
    path.write_text("\n".join(lines))


# --- command line ----------------------------------------------------------------------------------------------

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
