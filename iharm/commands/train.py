"""Train a harmonization model from a model script (``models/DucoNet_256.py`` ...).

    python train.py models/DucoNet_256.py --gpus=0,1 --batch-size=64 --exp-name=DucoNet_256
    torchrun --nproc_per_node=8 train.py models/DucoNet_256.py --batch-size=64
    python train.py models/iSSAM_256.py --device cpu --dataset-path datasets/HSynth/HSynth --max-steps 100

All flags of the official ``train.py`` are accepted with their meaning; the
others are for modern hardware, reproducibility and quick runs. Command-line
values win over ``config.yml``. Exit status: 0 done (or a step / time limit
reached), 2 bad input (data, config, checkpoint), 3 non-finite loss,
128 + N stopped by signal N with a resumable state saved (a signal that comes
while that save runs lets it finish; Ctrl-C twice aborts at once, 130, saying
what was lost).
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import math
import os
import signal
import sys
from dataclasses import asdict, fields
from pathlib import Path
from types import ModuleType

import torch

from iharm.engine.distributed import barrier, cleanup, init_distributed, launched_by_torchrun, spawn
from iharm.engine.experiment import init_experiment, remove_unused_experiment
from iharm.engine.options import DEFAULTS, TrainOptions
from iharm.engine.recipe import with_overrides
from iharm.engine.trainer import NonFiniteLossError, TrainingAborted, TrainingInterrupted
from iharm.engine.training_state import seed_everything
from iharm.errors import IharmError
from iharm.utils.config import ConfigError, load_config
from iharm.utils.log import logger, setup_logging

EXIT_BAD_INPUT = 2
EXIT_NON_FINITE = 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_path", type=Path, help="model script, e.g. models/DucoNet_256.py")
    official = parser.add_argument_group("official flags")
    official.add_argument("--exp-name", default=DEFAULTS.exp_name,
                          help="suffix of the experiment folder NNN_<exp-name>")
    official.add_argument("--workers", type=int, default=DEFAULTS.workers,
                          help="data loader processes per training process")
    official.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size,
                          help="global batch size over all processes (< 1: 16, the official default)")
    official.add_argument("--ngpus", type=int, default=DEFAULTS.ngpus,
                          help="number of GPUs when --gpus is not given (0: CPU)")
    official.add_argument("--gpus", default=DEFAULTS.gpus,
                          help="GPU indices, e.g. 0,1: one process per GPU; they count the GPUs this process sees, "
                               "so a scheduler's CUDA_VISIBLE_DEVICES is respected, never changed")
    official.add_argument("--resume-exp", default=DEFAULTS.resume_exp,
                          help="continue the experiment whose folder starts with this")
    official.add_argument("--resume-prefix", default=DEFAULTS.resume_prefix,
                          help="latest (default): the exact training state if there is one, else "
                               "last_checkpoint.pth; 'last' or NNN: that weights file only, fresh optimizer")
    official.add_argument("--start-epoch", type=int, default=DEFAULTS.start_epoch,
                          help="first epoch when resuming from weights only")
    official.add_argument("--weights", default=DEFAULTS.weights, help="initialise from this weights file")
    official.add_argument("--lr", type=float, default=DEFAULTS.lr,
                          help="the recipe's base learning rate (default: the recipe's own; 1e-3 in the DucoNet / "
                               "iSSAM recipes, which scale it by sqrt(batch/64), 1e-4 in BargainNet_256.py)")
    official.add_argument("--control_module_start", type=int, default=DEFAULTS.control_module_start,
                          help="DucoNet: first decoder stage with a Lab control module (-1: all)")
    modern = parser.add_argument_group("run options")
    modern.add_argument("--device", choices=("auto", "cpu", "cuda"), default=DEFAULTS.device)
    modern.add_argument("--amp", choices=("off", "auto", "bf16", "fp16"), default=DEFAULTS.amp,
                        help="autocast precision (fp16 only on CUDA, with a gradient scaler; auto: bf16 on CUDA "
                             "and on CPUs with native bf16, avx512_bf16 or AMX, off elsewhere)")
    modern.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    modern.add_argument("--compile", action="store_true",
                        help="torch.compile the training forward (one graph per crop size; compiles on the first "
                             "steps, see docs/performance.md)")
    modern.add_argument("--clip-grad", type=float, default=DEFAULTS.clip_grad,
                        help="clip the gradient norm to this (0: off)")
    modern.add_argument("--epochs", type=int, default=DEFAULTS.epochs, help="override the recipe's number of epochs")
    modern.add_argument("--seed", type=int, default=DEFAULTS.seed,
                        help="data order, augmentation and initialisation seed")
    modern.add_argument("--deterministic", action="store_true", help="deterministic kernels (bitwise reproducible)")
    modern.add_argument("--val-every", type=int, default=DEFAULTS.val_every,
                        help="validate every N epochs (and after the last)")
    modern.add_argument("--max-steps", type=int, default=DEFAULTS.max_steps,
                        help="stop after this many optimizer steps in total")
    modern.add_argument("--max-train-minutes", type=float, default=DEFAULTS.max_train_minutes,
                        help="stop after this much training time")
    modern.add_argument("--dataset-path", default=DEFAULTS.dataset_path,
                        help="train and validate on these iHarmony4-layout folders (comma-separated) "
                             "instead of the recipe's datasets")
    modern.add_argument("--config-path", default=None, help="config file (default: config.yml of the repository)")
    modern.add_argument("--skip-bad-samples", action="store_true",
                        help="skip unreadable or inconsistent samples, count them and list them each epoch "
                             "(default: stop with an error naming the file)")
    modern.add_argument("--state-every", type=int, default=DEFAULTS.state_every,
                        help="save the training state every N steps")
    modern.add_argument("--state-every-minutes", type=float, default=DEFAULTS.state_every_minutes,
                        help="save the training state every N minutes (and always at epoch ends and on stop)")
    modern.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across GPUs")
    modern.add_argument("--dist-timeout", type=float, default=DEFAULTS.dist_timeout,
                        help="minutes before a collective with a dead peer fails instead of hanging")
    modern.add_argument("--threads", type=int, default=DEFAULTS.threads,
                        help="torch CPU threads per process (0: automatic)")
    modern.add_argument("--nproc", type=int, default=DEFAULTS.nproc,
                        help="CPU processes to spawn (gloo), like --ngpus on GPUs")
    modern.add_argument("--set", dest="recipe_set", action="append", default=None, metavar="NAME=VALUE",
                        help="override a value of the model script's RECIPE (models/hsynth/*.py), e.g. "
                             "--set work_size=128 (repeatable; values are YAML: 128, null, [0.5, 1.0])")
    return parser.parse_args(argv)


def validate_args(args: argparse.Namespace) -> None:
    """Every user error the command line can show, before anything is created or started
    (ConfigError naming the flag): numbers out of range, CUDA asked for where there is none."""
    def require(ok: bool, flag: str, value: object, rule: str) -> None:
        if not ok:
            raise ConfigError(f"{flag} {value}: {rule}")

    require(args.lr is None or (math.isfinite(args.lr) and args.lr > 0), "--lr", args.lr,
            "must be a finite number > 0")
    require(args.batch_size >= 1 or args.batch_size == -1, "--batch-size", args.batch_size,
            "must be >= 1 (or -1, the default: 16)")
    for flag, value, minimum in (("--workers", args.workers, 0), ("--max-steps", args.max_steps, 0),
                                 ("--val-every", args.val_every, 1), ("--threads", args.threads, 0),
                                 ("--nproc", args.nproc, 1), ("--state-every", args.state_every, 0),
                                 ("--ngpus", args.ngpus, 0), ("--start-epoch", args.start_epoch, 0)):
        require(value >= minimum, flag, value, f"must be >= {minimum}")
    require(args.epochs is None or args.epochs >= 1, "--epochs", args.epochs, "must be >= 1")
    for flag, value in (("--max-train-minutes", args.max_train_minutes), ("--clip-grad", args.clip_grad),
                        ("--state-every-minutes", args.state_every_minutes)):
        require(math.isfinite(value) and value >= 0, flag, value, "must be a finite number >= 0")
    require(math.isfinite(args.dist_timeout) and args.dist_timeout > 0, "--dist-timeout", args.dist_timeout,
            "must be a finite number of minutes > 0")
    if torch.cuda.is_available():
        ids, visible = _gpu_ids(args), torch.cuda.device_count()
        require(all(i.isdigit() for i in ids) and len(set(ids)) == len(ids), "--gpus", args.gpus,
                "must be distinct GPU indices separated by commas, e.g. 0,1")
        require(all(int(i) < visible for i in ids), "--gpus" if args.gpus else "--ngpus", args.gpus or args.ngpus,
                f"this process sees {visible} GPU{'s' if visible != 1 else ''} (indices 0-{visible - 1}"
                + (f" of CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']}"
                   if "CUDA_VISIBLE_DEVICES" in os.environ else "") + ")")
    else:
        require(args.device != "cuda", "--device", args.device, "CUDA is not available on this machine")
        require(not args.gpus, "--gpus", args.gpus, "CUDA is not available on this machine; train on the CPU with "
                                                    "--device cpu (--nproc N for N processes)")
        require(args.ngpus <= 1, "--ngpus", args.ngpus, "CUDA is not available on this machine; use --nproc N "
                                                         "for N CPU processes")
    require(args.device != "cpu" or not args.gpus, "--gpus", args.gpus, "contradicts --device cpu")
    require(args.amp != "fp16" or _device_type(args) == "cuda", "--amp", args.amp,
            "fp16 autocast needs CUDA; use --amp bf16 on the CPU")


def load_model_script(path: Path) -> ModuleType:
    if not path.is_file() or path.suffix != ".py":
        raise ConfigError(f"{path}: model script not found (expected a .py file such as models/DucoNet_256.py)")
    spec = importlib.util.spec_from_file_location(f"model_script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: syntax error in the model script: {exc.msg}") from None
    except ImportError as exc:
        raise ConfigError(f"{path}: the model script cannot be imported: {exc}") from None
    if not callable(getattr(module, "main", None)):
        raise ConfigError(f"{path}: a model script must define main(cfg)")
    return module


def train_options(args: argparse.Namespace) -> TrainOptions:
    """The parsed flags as the run's typed options (a batch size < 1 is the official default, 16)."""
    values = {f.name: getattr(args, f.name) for f in fields(TrainOptions)}
    values["recipe_set"] = tuple(values["recipe_set"] or ())
    if values["batch_size"] < 1:
        values["batch_size"] = DEFAULTS.batch_size
    return TrainOptions(**values)


def check_recipe_overrides(script: ModuleType, args: argparse.Namespace) -> None:
    """``--set`` names values of the script's ``RECIPE`` (ConfigError before any work otherwise)."""
    if not args.recipe_set:
        return
    recipe = getattr(script, "RECIPE", None)
    if recipe is None:
        raise ConfigError(f"--set {args.recipe_set[0]}: {args.model_path} declares no RECIPE to override "
                          "(the time-bounded recipes of models/hsynth/ do)")
    with_overrides(recipe, args.recipe_set)


def _device_type(args: argparse.Namespace) -> str:
    if args.device == "auto":
        return "cuda" if torch.cuda.is_available() and (args.gpus or args.ngpus > 0) else "cpu"
    return args.device


def _gpu_ids(args: argparse.Namespace) -> list[str]:
    """``--gpus`` (or ``--ngpus``) as torch device indices. They index the GPUs this process sees, so a
    ``CUDA_VISIBLE_DEVICES`` that a scheduler set is respected (``--gpus=0,1`` under ``4,5`` is GPUs 4 and 5);
    the variable itself is never changed."""
    return [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else [str(i) for i in range(args.ngpus)]


def _cuda_index(args: argparse.Namespace, local_rank: int) -> int:
    """The CUDA device of the process with ``local_rank``: its entry of ``--gpus``; under torchrun without
    ``--gpus``, the local rank."""
    ids = _gpu_ids(args) if args.gpus else []
    return int(ids[local_rank]) if ids else local_rank


def run_worker(args: argparse.Namespace) -> int:
    """One training process: configuration, experiment folder, model script."""
    device_type = _device_type(args)
    cfg = None
    try:
        info = init_distributed(device_type, args.dist_timeout,
                                cuda_index=_cuda_index(args, int(os.environ.get("LOCAL_RANK", 0))))
        if args.threads:
            torch.set_num_threads(args.threads)
        elif device_type == "cpu" and info.world_size > 1:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size))))
        # Each rank its own streams (dropout, noise); DDP gives every rank rank 0's initial weights.
        seed_everything(args.seed, info.rank)
        if args.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            # CUDA has no deterministic backward for bilinear upsampling (iSSAM, DucoNet) and adaptive
            # max pooling (the attention blocks): there those ops warn instead of stopping the run.
            torch.use_deterministic_algorithms(True, warn_only=device_type == "cuda")
            torch.backends.cudnn.benchmark = False
        else:
            torch.backends.cudnn.benchmark = True
        options = train_options(args)
        cfg = load_config(args.config_path, overrides=asdict(options))
        script = load_model_script(args.model_path)
        cfg = init_experiment(cfg, args.model_path, info.is_main)
        setup_logging(Path(cfg.LOGS_PATH) / f"train_{Path(cfg.EXP_PATH).name}.log", info.is_main)
        cfg.dist = info
        cfg.options = options  # after init_experiment, which writes cfg's plain values to config.yml
        logger.info("experiment %s on %s (%d process%s), command: %s", cfg.EXP_PATH, info.device,
                    info.world_size, "es" if info.world_size > 1 else "", " ".join(sys.argv))
        script.main(cfg)
        # No rank tears the group down while a peer is still inside it: without this barrier, rank 1
        # of a 2-rank gloo run sometimes died with SIGABRT at exit (1 in 8 runs).
        barrier()
        return 0
    except TrainingInterrupted as exc:
        logger.warning(str(exc))
        return 128 + exc.signum
    except TrainingAborted as exc:
        logger.error(str(exc))
        return 128 + signal.SIGINT
    except NonFiniteLossError as exc:
        logger.error(str(exc))
        return EXIT_NON_FINITE
    except IharmError as exc:
        logger.error(str(exc))
        if cfg is not None and "EXP_PATH" in cfg and not args.resume_exp and info.is_main:
            logging.shutdown()  # the log file lives in the folder
            if remove_unused_experiment(Path(cfg.EXP_PATH)):
                print(f"removed the new experiment folder {cfg.EXP_PATH}: the run stopped before its first "
                      "checkpoint", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        cleanup()


def _spawned(args: argparse.Namespace) -> None:
    code = run_worker(args)
    if code:
        sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        validate_args(args)
        script = load_model_script(args.model_path)  # a broken script is found before any process starts
        check_recipe_overrides(script, args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if launched_by_torchrun():
        return run_worker(args)
    device_type = _device_type(args)
    world = len(_gpu_ids(args)) if device_type == "cuda" else args.nproc
    if world <= 1:
        return run_worker(args)
    if device_type == "cuda" and not args.gpus:  # --ngpus N: the first N visible GPUs
        args.gpus = ",".join(_gpu_ids(args))
    try:
        spawn(world, _spawned, args)
    except torch.multiprocessing.ProcessExitedException as exc:
        return exc.exit_code if exc.exit_code and exc.exit_code > 0 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
