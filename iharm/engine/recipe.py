"""The training recipes, parameterised so that model scripts state them.

Model scripts (``models/*.py``) call :func:`train_recipe` with every choice of
their paper written out (crop, datasets, loss, schedule); this function only
assembles datasets, optimizer, scheduler and trainer from them.
:func:`train_for_time` is the recipe of a run bounded by wall-clock time
(``models/hsynth/``: an hour on a 2-core CPU), and :func:`start_at_composite`
the initialisation that makes an image-fusion network begin at the identity.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import albumentations as A
import torch
from easydict import EasyDict
from torch import nn

from iharm.data.hdataset import BaseHDataset
from iharm.data.transforms import HCompose
from iharm.engine.datasets import live_hsynth_dataset, recipe_dataset
from iharm.engine.schedules import WarmupCosineLR
from iharm.engine.trainer import SimpleHTrainer
from iharm.utils.config import ConfigError

#: Epoch count of a time-bounded run: never reached, the time limit stops it.
UNBOUNDED_EPOCHS = 1_000_000


def train_recipe(model: nn.Module, cfg: EasyDict, model_cfg: EasyDict, *, loss_cfg: Mapping[str, Any],
                 train_keys: Sequence[str], val_keys: Sequence[str], crop_size: tuple[int, int],
                 num_epochs: int, lr_milestones: Sequence[int], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 keep_background_prob: float = 0.05, min_foreground_area: float = 10.0,
                 checkpoint_interval: int = 10, image_dump_interval: int = 1000,
                 train_augmentator: HCompose | None = None, live_size: int | None = None) -> SimpleHTrainer:
    """Train with RandomResizedCrop(crop, scale 0.5-1) + HorizontalFlip, validation at Resize(crop),
    Adam(lr, betas, eps 1e-8), MultiStepLR(milestones, gamma 0.1) stepped per epoch.

    With ``live_size`` the training set is on-the-fly HSynth (see :func:`train_for_time`)."""
    cfg.val_batch_size = cfg.batch_size
    train_augmentator = train_augmentator or HCompose([A.RandomResizedCrop(size=crop_size, scale=(0.5, 1.0)),
                                                       A.HorizontalFlip()])
    trainset = _training_set(cfg, model_cfg, train_keys, live_size, augmentator=train_augmentator,
                             keep_background_prob=keep_background_prob, min_foreground_area=min_foreground_area)
    valset = recipe_dataset(cfg, val_keys, "test", augmentator=HCompose([A.Resize(*crop_size)]),
                            keep_background_prob=-1.0, lab=_lab_mode(model_cfg),
                            skip_bad_samples=bool(cfg.get("skip_bad_samples")))
    trainer = SimpleHTrainer(
        model, cfg, model_cfg, loss_cfg, trainset, valset,
        optimizer="adam", optimizer_params={"lr": lr, "betas": betas, "eps": 1e-8},
        lr_scheduler=partial(torch.optim.lr_scheduler.MultiStepLR, milestones=list(lr_milestones), gamma=0.1),
        checkpoint_interval=checkpoint_interval, image_dump_interval=image_dump_interval)
    trainer.run(num_epochs)
    return trainer


def train_for_time(model: nn.Module, cfg: EasyDict, model_cfg: EasyDict, *, loss_cfg: Mapping[str, Any],
                   train_keys: Sequence[str], augmentator: HCompose, lr: float, warmup_minutes: float,
                   final_lr_ratio: float, betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 0.0,
                   keep_background_prob: float = 0.05, min_foreground_area: float = 10.0,
                   snapshot_minutes: float = 5.0, image_dump_interval: int = 1000,
                   live_size: int | None = None) -> SimpleHTrainer:
    """Train for ``--max-train-minutes`` of wall-clock time: Adam(W), warm-up + cosine to the end of that time.

    The learning rate rises linearly from 1 % to ``lr`` over ``warmup_minutes``
    and falls along a cosine to ``final_lr_ratio * lr`` exactly when the time
    budget ends (:class:`~iharm.engine.schedules.WarmupCosineLR` in seconds,
    stepped per optimizer step). There is no validation: weights are written
    every ``snapshot_minutes`` (``tMMMmin.pth``) and at the end
    (``last_checkpoint.pth``), to be evaluated afterwards, so evaluation never
    takes training time.

    With ``live_size`` the training set is on-the-fly HSynth
    (:func:`~iharm.engine.datasets.live_hsynth_dataset`: photos held at
    ``live_size`` px, a new composite per sample) instead of ``train_keys``.
    """
    minutes = float(cfg.get("max_train_minutes") or 0)
    if minutes <= 0:
        raise ConfigError("this recipe trains for a time budget: give --max-train-minutes")
    trainset = _training_set(cfg, model_cfg, train_keys, live_size, augmentator=augmentator,
                             keep_background_prob=keep_background_prob, min_foreground_area=min_foreground_area)
    trainer = SimpleHTrainer(
        model, cfg, model_cfg, loss_cfg, trainset, None,
        optimizer="adamw" if weight_decay else "adam",
        optimizer_params={"lr": lr, "betas": betas, "eps": 1e-8, "weight_decay": weight_decay},
        lr_scheduler=partial(WarmupCosineLR, horizon=60 * minutes, warmup=60 * warmup_minutes,
                             final_ratio=final_lr_ratio, unit="seconds"),
        scheduler_interval="step", checkpoint_interval=0, image_dump_interval=image_dump_interval,
        snapshot_minutes=snapshot_minutes)
    trainer.run(UNBOUNDED_EPOCHS)
    return trainer


def _lab_mode(model_cfg: EasyDict) -> str:
    return "original" if model_cfg.spec.needs_lab else "none"


def _training_set(cfg: EasyDict, model_cfg: EasyDict, train_keys: Sequence[str], live_size: int | None,
                  **kwargs: Any) -> BaseHDataset:
    """The recipe's training datasets, or on-the-fly HSynth at ``live_size`` px."""
    kwargs.update(lab=_lab_mode(model_cfg), skip_bad_samples=bool(cfg.get("skip_bad_samples")))
    if live_size:
        return live_hsynth_dataset(cfg, live_size, **kwargs)
    return recipe_dataset(cfg, train_keys, "train", **kwargs)


def flip_and_crop(size: int, crop_scale: tuple[float, float] | None) -> HCompose:
    """``RandomResizedCrop(size, scale=crop_scale)`` (``crop_scale`` None: the whole image resized to
    ``size`` x ``size``), then a random horizontal flip: the augmentation of the time-bounded recipes."""
    crop = A.RandomResizedCrop(size=(size, size), scale=crop_scale) if crop_scale else A.Resize(size, size)
    return HCompose([crop, A.HorizontalFlip()])


@torch.no_grad()
def start_at_composite(model: nn.Module, gate_logit: float) -> None:
    """Make an image-fusion network (iSSAM, DucoNet) start near ``output = composite``.

    The fusion head returns ``a * image + (1 - a) * to_rgb(features)`` with
    ``a = sigmoid(3 * conv_attention(features))``. Zero weights and bias
    ``gate_logit`` in ``conv_attention`` give ``a = sigmoid(3 * gate_logit)``
    everywhere (0.998 for 2.0), so training begins at the Composite baseline
    instead of far below it, and the gradient still reaches the gate's weights.
    """
    gate = getattr(getattr(model, "decoder", None), "conv_attention", None)
    if not isinstance(gate, nn.Conv2d):
        raise ValueError(f"{type(model).__name__} has no image-fusion gate (decoder.conv_attention)")
    gate.weight.zero_()
    gate.bias.fill_(gate_logit)
