"""The iSSAM-family training recipe, parameterised so that model scripts state it.

Model scripts (``models/*.py``) call :func:`train_recipe` with every choice of
their paper written out (crop, datasets, loss, schedule); this function only
assembles datasets, optimizer, scheduler and trainer from them.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import albumentations as A
import torch
from easydict import EasyDict
from torch import nn

from iharm.data.transforms import HCompose
from iharm.engine.datasets import recipe_dataset
from iharm.engine.trainer import SimpleHTrainer


def train_recipe(model: nn.Module, cfg: EasyDict, model_cfg: EasyDict, *, loss_cfg: Mapping[str, Any],
                 train_keys: Sequence[str], val_keys: Sequence[str], crop_size: tuple[int, int],
                 num_epochs: int, lr_milestones: Sequence[int], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 keep_background_prob: float = 0.05, min_foreground_area: float = 10.0,
                 checkpoint_interval: int = 10, image_dump_interval: int = 1000,
                 train_augmentator: HCompose | None = None) -> SimpleHTrainer:
    """Train with RandomResizedCrop(crop, scale 0.5-1) + HorizontalFlip, validation at Resize(crop),
    Adam(lr, betas, eps 1e-8), MultiStepLR(milestones, gamma 0.1) stepped per epoch."""
    cfg.val_batch_size = cfg.batch_size
    lab = "original" if model_cfg.spec.needs_lab else "none"
    skip = bool(cfg.get("skip_bad_samples"))
    train_augmentator = train_augmentator or HCompose([A.RandomResizedCrop(size=crop_size, scale=(0.5, 1.0)),
                                                       A.HorizontalFlip()])
    trainset = recipe_dataset(cfg, train_keys, "train", augmentator=train_augmentator,
                              keep_background_prob=keep_background_prob, min_foreground_area=min_foreground_area,
                              lab=lab, skip_bad_samples=skip)
    valset = recipe_dataset(cfg, val_keys, "test", augmentator=HCompose([A.Resize(*crop_size)]),
                            keep_background_prob=-1.0, lab=lab, skip_bad_samples=skip)
    trainer = SimpleHTrainer(
        model, cfg, model_cfg, loss_cfg, trainset, valset,
        optimizer="adam", optimizer_params={"lr": lr, "betas": betas, "eps": 1e-8},
        lr_scheduler=partial(torch.optim.lr_scheduler.MultiStepLR, milestones=list(lr_milestones), gamma=0.1),
        checkpoint_interval=checkpoint_interval, image_dump_interval=image_dump_interval)
    trainer.run(num_epochs)
    return trainer
