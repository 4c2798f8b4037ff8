"""Command-line plumbing shared by the commands: device and precision flags, checkpoint lookup, and the
evaluation commands' arguments and main (``evaluate_model.py``, ``evaluate_model_fg_ratios.py``).

The library below this floor takes devices, precisions and paths as values;
what a flag means, and how a bad one is reported, is decided here once.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from iharm.data import layout
from iharm.data.transforms import RESIZE_STRATEGIES
from iharm.errors import IharmError
from iharm.inference.evaluation import DEFAULT_MAX_BATCH_PIXELS, EvaluationSettings, evaluate_dataset
from iharm.inference.predictor import COMPOSITE, PRECISION_CHOICES, build_predictor
from iharm.inference.report import EvaluationReport
from iharm.model.checkpoints import CheckpointError
from iharm.model.registry import MODELS
from iharm.utils.config import ConfigError, dataset_key, load_config, require_path
from iharm.utils.device import gpu_flag_device, resolve_device
from iharm.utils.files import ensure_writable_folder, refuse_outputs_over_inputs
from iharm.utils.log import setup_logging
from iharm.utils.metrics import MetricVariant


def add_precision_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--precision fp32|bf16|fp16`` (evaluate_model.py, evaluate_model_fg_ratios.py, predict_for_dir.py)."""
    parser.add_argument("--precision", choices=list(PRECISION_CHOICES), default="fp32",
                        help="network arithmetic: fp32 (exact), bf16 (bfloat16 autocast; CPU or GPU; not exact, "
                             "see docs/performance.md for its speed and its effect on PSNR/fMSE) or fp16 "
                             "(float16 autocast, CUDA only)")


def add_device_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--device auto|cpu|cuda|cuda:N`` and the official ``--gpu N|cpu`` (one of them; default auto)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--device", default=None,
                       help="auto (default: the first GPU when CUDA is available, else the CPU), cpu, cuda or cuda:N")
    group.add_argument("--gpu", default=None, help="official flag: a GPU index (0, 1, ...) or 'cpu'")


def device_from_args(args: argparse.Namespace) -> torch.device:
    """The device of :func:`add_device_arguments`' flags; ValueError naming the flag when it is unusable."""
    if args.gpu is not None:
        return gpu_flag_device(args.gpu)
    return resolve_device(args.device, "--device")


def resolve_checkpoint(checkpoint: str, models_path: str | os.PathLike | None) -> Path:
    """Find a checkpoint as the official ``find_checkpoint`` does.

    * an existing file or folder (a BargainNet checkpoint folder) is used as is;
    * ``name.pth`` that does not exist is taken relative to ``MODELS_PATH``;
    * ``name`` without ``.pth``: the unique ``name*.pth`` anywhere under ``MODELS_PATH``;
    * ``model:ckpt``: the same rules inside the unique folder ``MODELS_PATH/model*``
      (the official code ignored that folder for a ``.pth`` name; here it is used).
    """
    given = Path(checkpoint).expanduser()
    if given.exists():
        return given
    if not models_path:
        raise CheckpointError(f"{checkpoint}: checkpoint not found (and MODELS_PATH is not set to look in)")
    models = Path(models_path)
    folder, name = models, checkpoint
    if ":" in checkpoint:
        model_name, name = checkpoint.split(":", 1)
        candidates = sorted(d for d in models.glob(f"{model_name}*") if d.is_dir())
        if len(candidates) != 1:
            found = ", ".join(d.name for d in candidates) or "none"
            raise CheckpointError(f"{checkpoint}: expected one folder {models}/{model_name}*, found {found}")
        folder = candidates[0]
    if name.endswith(".pth"):
        path = folder / name
        if not path.exists():
            raise CheckpointError(f"{checkpoint}: checkpoint not found (looked at {given} and {path})")
        return path
    matches = sorted(folder.rglob(f"{name}*.pth"))
    if len(matches) != 1:
        found = ", ".join(str(m.relative_to(folder)) for m in matches[:10]) or "none"
        raise CheckpointError(f"{checkpoint}: expected one {name}*.pth under {folder}, found {found}")
    return matches[0]


def add_evaluation_arguments(parser: argparse.ArgumentParser, default_datasets: Sequence[str]) -> None:
    """The options of the official ``evaluate_model.py``, plus ours."""
    names = ", ".join([*MODELS, COMPOSITE])
    parser.add_argument("model_type", help=f"registered model name ({names}); {COMPOSITE} evaluates the input "
                                           "composite itself and takes no checkpoint")
    parser.add_argument("checkpoint", nargs="?", default=None,
                        help="weights file (or BargainNet folder): an existing path, a path relative to MODELS_PATH, "
                             "a name searched as <name>*.pth under MODELS_PATH, or <model folder prefix>:<name>")
    official = parser.add_argument_group("official options")
    official.add_argument("--datasets", default=None,
                          help=f"comma-separated dataset names from the config (default: {','.join(default_datasets)})")
    official.add_argument("--resize-strategy", default="Fixed256", choices=RESIZE_STRATEGIES)
    official.add_argument("--use-flip", action="store_true", help="flip test-time augmentation")
    add_device_arguments(official)
    official.add_argument("--config-path", default=None, help="config file (default: the repository's config.yml)")
    official.add_argument("--eval-prefix", default="", help="prefix of the log and result file names")
    ours = parser.add_argument_group("options of this implementation")
    ours.add_argument("--dataset-path", default=None,
                      help="comma-separated iHarmony4-layout folders (HSynth included) instead of --datasets")
    ours.add_argument("--batch-size", type=int, default=8, help="images per forward (equal sizes only)")
    ours.add_argument("--workers", type=int, default=2, help="data loader processes (reading and resizing)")
    ours.add_argument("--max-batch-pixels", type=int, default=DEFAULT_MAX_BATCH_PIXELS,
                      help="at most this many pixels in one forward (large images go one at a time)")
    add_precision_argument(ours)
    ours.add_argument("--psnr-peak", choices=("gt_max", "255"), default="gt_max",
                      help="PSNR peak: the target's own maximum (official) or 255")
    ours.add_argument("--fmse-mask", choices=("soft", "binary"), default="soft",
                      help="fMSE weights: the soft resized mask (official) or mask > 0.5")
    ours.add_argument("--composite-output", action="store_true",
                      help="score out * mask + composite * (1 - mask) instead of the raw output")
    ours.add_argument("--results-path", type=Path, default=None,
                      help="write the per-image CSV and the JSON summary (and the log) here")
    ours.add_argument("--save-images", type=Path, default=None,
                      help="save every prediction (rounded, PNG) as DIR/<dataset>/<name>.png")


def dataset_paths(args: argparse.Namespace, cfg: Any, default_datasets: Sequence[str]) -> list[tuple[str, Path]]:
    """(name, folder) of every dataset to evaluate: ``--dataset-path`` folders, else config entries."""
    if args.dataset_path:
        if args.datasets:
            raise ConfigError("give either --datasets (names from the config) or --dataset-path (folders), not both")
        paths = [Path(p).expanduser() for p in args.dataset_path.split(",") if p]
        missing = [str(p) for p in paths if not p.is_dir()]
        if missing:
            raise ConfigError(f"--dataset-path: not a folder: {', '.join(missing)}")
        names = [p.resolve().name for p in paths]
        return [(name if names.count(name) == 1 else str(p), p) for name, p in zip(names, paths)]
    names = [n for n in (args.datasets or ",".join(default_datasets)).split(",") if n]
    return [(name, require_path(cfg, dataset_key(name))) for name in names]


def check_evaluation_outputs(args: argparse.Namespace, default_datasets: Sequence[str]) -> None:
    """Before any work: ``--eval-prefix`` names files (no folders), and ``--results-path`` and
    ``--save-images`` are writable folders that are none of the inputs (dataset folders, checkpoint),
    so that scores are never computed only to be lost. Errors name the flag."""
    prefix = args.eval_prefix
    if prefix and (Path(prefix).name != prefix or prefix in (".", "..")):
        raise ConfigError(f"--eval-prefix {prefix}: must be a file-name prefix, without folders")
    cfg = load_config(args.config_path)
    inputs: list[Path] = [folder for _, path in dataset_paths(args, cfg, default_datasets)
                          for folder in (path, *(path / sub for sub in layout.SUBFOLDERS))]
    if args.checkpoint is not None and args.model_type != COMPOSITE:
        inputs.append(resolve_checkpoint(args.checkpoint, cfg.get("MODELS_PATH")))
    for flag, folder in (("--results-path", args.results_path), ("--save-images", args.save_images)):
        if folder is not None:
            refuse_outputs_over_inputs({flag: [folder]}, inputs)
            ensure_writable_folder(folder, flag)


def evaluate_from_args(args: argparse.Namespace, default_datasets: Sequence[str],
                       log: Any = None) -> EvaluationReport:
    """Resolve the device, checkpoint and datasets of parsed arguments, then evaluate every dataset.

    ``log`` (a logger) gets a line per dataset as it finishes.
    """
    cfg = load_config(args.config_path)
    device = device_from_args(args)
    checkpoint = args.checkpoint
    if checkpoint is not None and args.model_type != COMPOSITE:
        checkpoint = resolve_checkpoint(checkpoint, cfg.get("MODELS_PATH"))
    settings = EvaluationSettings(
        resize_strategy=args.resize_strategy, batch_size=args.batch_size, workers=args.workers,
        variant=MetricVariant(psnr_peak=args.psnr_peak, fmse_mask=args.fmse_mask),
        composite_output=args.composite_output, max_batch_pixels=args.max_batch_pixels,
        save_images=args.save_images)
    datasets = dataset_paths(args, cfg, default_datasets)
    precision = getattr(args, "precision", "fp32")
    predictor = build_predictor(args.model_type, checkpoint, device, with_flip=args.use_flip, precision=precision)
    flip = bool(args.use_flip) and args.model_type != COMPOSITE
    report = EvaluationReport(model=args.model_type, checkpoint=None if checkpoint is None else str(checkpoint),
                              device=str(device), flip=flip, settings=settings, datasets=[],
                              started=datetime.now().isoformat(timespec="seconds"),
                              precision=precision if args.model_type != COMPOSITE else "fp32")
    for name, path in datasets:
        result = evaluate_dataset(predictor, path, name, settings)
        report.datasets.append(result)
        if log is not None:
            log.info("%s: %d images in %.1f s (%.2f images/s)", name, len(result.images), result.wall_seconds,
                     result.images_per_second)
    return report


def log_file_path(args: argparse.Namespace, kind: str) -> Path | None:
    """Where the run's log goes: ``--results-path`` if given, else ``EXPS_PATH/<kind>/`` as officially."""
    stem = Path(args.checkpoint).stem if args.checkpoint else args.model_type
    name = f"{args.eval_prefix}{stem}_{datetime.now():%Y-%m-%d_%H-%M-%S}.log"
    if args.results_path is not None:
        return args.results_path / name
    try:
        exps = load_config(args.config_path).get("EXPS_PATH")
    except ConfigError:
        return None
    return Path(exps) / kind / name if exps else None


def run_evaluation_command(args: argparse.Namespace, default_datasets: Sequence[str], log_kind: str,
                           report_results: Callable[[EvaluationReport, Any], None]) -> int:
    """The evaluation commands' main: check the outputs, set up the log (:func:`log_file_path`), evaluate,
    then ``report_results(report, logger)``; the exit status (2 for bad arguments, data or checkpoints, each
    named in one line)."""
    try:
        check_evaluation_outputs(args, default_datasets)
    except (IharmError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logger = setup_logging(log_file_path(args, log_kind))
    try:
        report = evaluate_from_args(args, default_datasets, log=logger)
    except (IharmError, KeyError, ValueError) as exc:
        logger.error("%s", exc.args[0] if isinstance(exc, KeyError) else exc)
        return 2
    report_results(report, logger)
    return 0
