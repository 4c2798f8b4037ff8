"""The options of a training run: each with its one default, typed.

``train.py`` takes its flags' defaults from :data:`DEFAULTS` and hands the
parsed values to the run as a :class:`TrainOptions` (``cfg.options``); the
trainer, the recipes and the experiment folder read them from there, so no
layer carries a default of its own. The official model scripts' ``main(cfg)``
still finds them as ``cfg.<name>`` too (``cfg.lr``, ``cfg.batch_size``).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainOptions:
    """One training run's options (the flags of ``train.py``, see docs/training.md)."""

    exp_name: str = ""
    workers: int = 4
    batch_size: int = 16
    ngpus: int = 1
    gpus: str = ""
    resume_exp: str | None = None
    resume_prefix: str = "latest"
    start_epoch: int = 0
    weights: str | None = None
    lr: float | None = None
    control_module_start: int = -1
    device: str = "auto"
    amp: str = "off"
    channels_last: bool = False
    compile: bool = False
    clip_grad: float = 0.0
    epochs: int | None = None
    seed: int = 0
    deterministic: bool = False
    val_every: int = 1
    max_steps: int = 0
    max_train_minutes: float = 0.0
    dataset_path: str | None = None
    skip_bad_samples: bool = False
    state_every: int = 0
    state_every_minutes: float = 10.0
    sync_bn: bool = False
    dist_timeout: float = 10.0
    threads: int = 0
    nproc: int = 1
    recipe_set: tuple[str, ...] = ()


#: The defaults, for the command line.
DEFAULTS = TrainOptions()
