"""Stage ``evaluate``: ``scripts/evaluate_model.py`` on HSynth-test and the real files, and predictions on
the real composites without ground truth."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from iharm.data.color import rgb_to_lab
from iharm.data.io import read_image, read_mask, write_image
from iharm.data.transforms import HCompose, resize_transform
from iharm.inference.predictor import COMPOSITE, build_predictor
from iharm.model.registry import get_model_spec
from iharm.tools.quality_benchmark.common import (ABLATIONS, EVAL_STRATEGY, FINAL_RUNS, PYTHON, Paths, Run,
                                                  experiment_dir, log, read_json, run_command)
from iharm.tools.quality_benchmark.cards import final_source
from iharm.tools.quality_benchmark.data import no_gt_inputs, shared_gt_folders


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


def predict_no_gt(paths: Paths, name: str, model: str, checkpoint: Path, composite_output: bool) -> Path:
    """Predictions of one model on the real composites without ground truth, at the evaluation size, in the
    evaluation folder ``no_gt/<name>``."""
    out = paths.eval_dir("no_gt", name)
    predictor = build_predictor(model, checkpoint, "cpu")
    for stem, composite, mask in no_gt_inputs(paths.shared_data):
        target = out / f"{stem}.png"
        if target.exists():
            continue
        image, mask_array, _ = load_no_gt_pair(paths.shared_data, composite, mask)
        image, mask_array, lab = fixed_size_inputs(image, mask_array)
        prediction = predictor.predict(image, mask_array, lab if get_model_spec(model).needs_lab else None)
        if composite_output:
            prediction = prediction * mask_array[..., None] + image * (1 - mask_array[..., None])
        write_image(target, np.round(prediction).clip(0, 255).astype(np.uint8))
    return out


def evaluate_final(paths: Paths, run: Run, name: str, weights: Path) -> None:
    """The final weights of ``run``'s model, as ``name``: HSynth-test with images, the real files with ground
    truth, the real composites without."""
    evaluate(run.model, weights, [paths.hsynth], paths.eval_dir("hsynth", name, "final"),
             composite_output=run.composite_output, save_images=True)
    gt_folders = shared_gt_folders(paths)
    if gt_folders:
        evaluate(run.model, weights, gt_folders, paths.eval_dir("shared", name),
                 composite_output=run.composite_output, save_images=True)
    if no_gt_inputs(paths.shared_data):
        predict_no_gt(paths, name, run.model, weights, run.composite_output)


def stage_evaluate(paths: Paths, runs: Sequence[Run], curve_every: float) -> None:
    """Composite, then every finished run of ``runs`` (its snapshots and final weights), then the shipped
    weights of each model that has no finished final run here, so that the report shows every model kept."""
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
        *snapshots, (_, weights) = checkpoints_of(exp, curve_every if final or run in ABLATIONS else 0)
        for _, snapshot in snapshots:
            evaluate(run.model, snapshot, [paths.hsynth], paths.eval_dir("hsynth", run.name, snapshot.stem),
                     composite_output=run.composite_output)
        if final:
            evaluate_final(paths, run, run.name, weights)
        else:
            evaluate(run.model, weights, [paths.hsynth], paths.eval_dir("hsynth", run.name, "final"),
                     composite_output=run.composite_output)
    for run in FINAL_RUNS:
        source = final_source(paths, run)
        if source is not None and source[0] != run.name:  # not this run's weights: the shipped ones
            log(f"{run.model}: no finished run here: evaluating the shipped {source[1].name}")
            evaluate_final(paths, run, *source)
