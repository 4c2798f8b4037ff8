"""The training recipes, parameterised so that model scripts state them.

A model script declares its recipe's values as data: an :class:`EpochRecipe`
(the official ``models/*.py``: crop, datasets, epochs, milestones, learning
rate, as in their papers) or a :class:`TimeRecipe` (``models/hsynth/``: a run
bounded by wall-clock time, an hour on a 2-core CPU), named ``RECIPE``, which
``train.py --set NAME=VALUE`` overrides for one run. :func:`train_recipe` and
:func:`train_for_time` only assemble datasets, optimizer, scheduler and
trainer from those values; the network, its initialisation and the loss stay
code in the script.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from functools import partial
from typing import Any, TypeVar

import albumentations as A
import torch
import yaml
from easydict import EasyDict
from torch import nn

from iharm.data.hdataset import BaseHDataset
from iharm.data.transforms import HCompose, flip_and_crop
from iharm.engine.datasets import live_hsynth_dataset, recipe_dataset
from iharm.engine.schedules import WarmupCosineLR
from iharm.engine.trainer import SimpleHTrainer
from iharm.utils.config import ConfigError

#: Epoch count of a time-bounded run: never reached, the time limit stops it.
UNBOUNDED_EPOCHS = 1_000_000

R = TypeVar("R")


@dataclass(frozen=True)
class EpochRecipe:
    """The values of an epoch-based recipe (the official ``models/*.py``).

    ``train_keys`` / ``val_keys``: config.yml dataset keys; ``crop_size``: the
    RandomResizedCrop side (scale 0.5-1, validation resized to it);
    ``num_epochs`` and ``lr_milestones`` (MultiStepLR, gamma 0.1, per epoch);
    ``base_lr``: the learning rate when ``--lr`` is not given, multiplied by
    sqrt(batch / ``lr_batch_reference``) as the official DucoNet code does
    (None: used as it is); ``checkpoint_interval`` / ``image_dump_interval``:
    epochs between checkpoints, steps between image dumps (0: never);
    ``live_size``: train on on-the-fly HSynth at this size instead of
    ``train_keys`` (None: the datasets).
    """

    train_keys: tuple[str, ...]
    val_keys: tuple[str, ...]
    crop_size: int = 256
    num_epochs: int = 120
    lr_milestones: tuple[int, ...] = (105, 115)
    base_lr: float = 1e-3
    lr_batch_reference: int | None = 64
    keep_background_prob: float = 0.05
    min_foreground_area: float = 10.0
    checkpoint_interval: int = 10
    image_dump_interval: int = 1000
    live_size: int | None = None

    def learning_rate(self, cfg: Mapping[str, Any]) -> float:
        """``--lr`` (else ``base_lr``), scaled for the batch size when the recipe says so."""
        lr = base_lr(cfg, self.base_lr)
        return lr if self.lr_batch_reference is None else lr * (cfg.batch_size / self.lr_batch_reference) ** 0.5


@dataclass(frozen=True)
class TimeRecipe:
    """The values of a time-bounded CPU recipe (``models/hsynth/*.py``).

    ``live_size``: on-the-fly HSynth at this size (None: the fixed ``--dataset-path`` folder);
    ``work_size``: training crops, px (evaluation is at 256); ``crop_scale``: the
    RandomResizedCrop area range (None: the whole image, resized); ``gate_logit``:
    the fusion gate starts at sigmoid(3 x this) (None: the official init only);
    ``peak_lr``: the peak learning rate when ``--lr`` is not given; the cosine
    ends at ``final_lr_ratio`` of it after a ``warmup_minutes`` warm-up;
    ``snapshot_minutes``: weights every so many minutes, for the fMSE-against-time curve.
    """

    live_size: int | None = 256
    work_size: int = 64
    crop_scale: tuple[float, float] | None = (0.5, 1.0)
    gate_logit: float | None = 0.5
    peak_lr: float = 3e-3
    warmup_minutes: float = 1.0
    final_lr_ratio: float = 0.02
    snapshot_minutes: float = 5.0


def with_overrides(recipe: R, assignments: Sequence[str]) -> R:
    """``recipe`` with ``NAME=VALUE`` assignments (``train.py --set``) applied; values are YAML
    (``128``, ``null``, ``[0.5, 1.0]``). ConfigError naming the assignment for an unknown name or a value
    of the wrong kind, before any work."""
    known = {f.name: getattr(recipe, f.name) for f in fields(recipe)}
    annotations = {f.name: str(f.type) for f in fields(recipe)}
    changes: dict[str, Any] = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        if not sep or name not in known:
            raise ConfigError(f"--set {assignment}: expected NAME=VALUE with NAME one of {', '.join(known)}")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"--set {assignment}: {text!r} is not a value") from None
        default = known[name]
        if isinstance(value, list):
            value = tuple(value)
        nullable = "None" in annotations[name]
        if isinstance(default, tuple):
            elements = (str,) if "tuple[str" in annotations[name] else (int, float)
            kind_ok = (value is None and nullable) or (isinstance(value, tuple) and all(
                isinstance(v, elements) and not isinstance(v, bool) for v in value))
        else:
            kind_ok = (value is None and nullable) or (value is not None and (
                default is None or type(value) is type(default) or (isinstance(default, float) and type(value) is int)))
        if not kind_ok or isinstance(value, bool) != isinstance(default, bool):
            raise ConfigError(f"--set {assignment}: {name} takes a value like {default!r}, "
                              f"got {type(value).__name__}")
        changes[name] = float(value) if isinstance(default, float) and type(value) is int else value
    return replace(recipe, **changes)


def recipe_of(cfg: Mapping[str, Any], recipe: R) -> R:
    """The script's declared ``recipe`` with this run's ``--set`` overrides."""
    return with_overrides(recipe, cfg.options.recipe_set)


def base_lr(cfg: Mapping[str, Any], default: float) -> float:
    """``--lr`` when given, else the recipe's own base learning rate ``default``: ``--lr`` always
    replaces the number a recipe starts from (each recipe says what it then derives from it)."""
    lr = cfg.options.lr
    return default if lr is None else float(lr)


def train_recipe(model: nn.Module, cfg: EasyDict, model_cfg: EasyDict, recipe: EpochRecipe, *,
                 loss_cfg: Mapping[str, Any], betas: tuple[float, float] = (0.9, 0.999)) -> SimpleHTrainer:
    """Train ``recipe``: RandomResizedCrop(crop, scale 0.5-1) + HorizontalFlip, validation at
    Resize(crop), Adam(lr, betas, eps 1e-8), MultiStepLR(milestones, gamma 0.1) stepped per epoch.

    With ``recipe.live_size`` the training set is on-the-fly HSynth (see :func:`train_for_time`)."""
    cfg.val_batch_size = cfg.batch_size
    crop = (recipe.crop_size, recipe.crop_size)
    train_augmentator = HCompose([A.RandomResizedCrop(size=crop, scale=(0.5, 1.0)), A.HorizontalFlip()])
    trainset = _training_set(cfg, model_cfg, recipe.train_keys, recipe.live_size, augmentator=train_augmentator,
                             keep_background_prob=recipe.keep_background_prob,
                             min_foreground_area=recipe.min_foreground_area)
    valset = recipe_dataset(cfg, recipe.val_keys, "test", augmentator=HCompose([A.Resize(*crop)]),
                            keep_background_prob=-1.0, lab=_lab_mode(model_cfg),
                            skip_bad_samples=cfg.options.skip_bad_samples)
    trainer = SimpleHTrainer(
        model, cfg, model_cfg, loss_cfg, trainset, valset,
        optimizer="adam", optimizer_params={"lr": recipe.learning_rate(cfg), "betas": betas, "eps": 1e-8},
        lr_scheduler=partial(torch.optim.lr_scheduler.MultiStepLR, milestones=list(recipe.lr_milestones), gamma=0.1),
        checkpoint_interval=recipe.checkpoint_interval, image_dump_interval=recipe.image_dump_interval)
    trainer.run(recipe.num_epochs)
    return trainer


def train_for_time(model: nn.Module, cfg: EasyDict, model_cfg: EasyDict, recipe: TimeRecipe, *,
                   loss_cfg: Mapping[str, Any], train_keys: Sequence[str] = ("HSYNTH_PATH",),
                   betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 0.0,
                   keep_background_prob: float = 0.05, min_foreground_area: float = 10.0,
                   image_dump_interval: int = 1000) -> SimpleHTrainer:
    """Train ``recipe`` for ``--max-train-minutes`` of wall-clock time: Adam(W), warm-up + cosine to the end.

    The learning rate (``--lr``, else ``recipe.peak_lr``) rises linearly from 1 %
    over ``recipe.warmup_minutes`` and falls along a cosine to
    ``recipe.final_lr_ratio`` of it exactly when the time budget ends
    (:class:`~iharm.engine.schedules.WarmupCosineLR` in seconds, stepped per
    optimizer step). Crops are :func:`flip_and_crop` of ``recipe.work_size``
    and ``recipe.crop_scale``. There is no validation: weights are written
    every ``recipe.snapshot_minutes`` (``tMMMmin.pth``) and at the end
    (``last_checkpoint.pth``), to be evaluated afterwards, so evaluation never
    takes training time.

    With ``recipe.live_size`` the training set is on-the-fly HSynth
    (:func:`~iharm.engine.datasets.live_hsynth_dataset`: photos held at
    ``live_size`` px, a new composite per sample) instead of ``train_keys``.
    """
    minutes = cfg.options.max_train_minutes
    if minutes <= 0:
        raise ConfigError("this recipe trains for a time budget: give --max-train-minutes")
    lr, live_size = base_lr(cfg, recipe.peak_lr), recipe.live_size
    augmentator = flip_and_crop(recipe.work_size, recipe.crop_scale)
    trainset = _training_set(cfg, model_cfg, train_keys, live_size, augmentator=augmentator,
                             keep_background_prob=keep_background_prob, min_foreground_area=min_foreground_area)
    trainer = SimpleHTrainer(
        model, cfg, model_cfg, loss_cfg, trainset, None,
        optimizer="adamw" if weight_decay else "adam",
        optimizer_params={"lr": lr, "betas": betas, "eps": 1e-8, "weight_decay": weight_decay},
        lr_scheduler=partial(WarmupCosineLR, horizon=60 * minutes, warmup=60 * recipe.warmup_minutes,
                             final_ratio=recipe.final_lr_ratio, unit="seconds"),
        scheduler_interval="step", checkpoint_interval=0, image_dump_interval=image_dump_interval,
        snapshot_minutes=recipe.snapshot_minutes)
    trainer.run(UNBOUNDED_EPOCHS)
    return trainer


def _lab_mode(model_cfg: EasyDict) -> str:
    return "original" if model_cfg.spec.needs_lab else "none"


def _training_set(cfg: EasyDict, model_cfg: EasyDict, train_keys: Sequence[str], live_size: int | None,
                  **kwargs: Any) -> BaseHDataset:
    """The recipe's training datasets, or on-the-fly HSynth at ``live_size`` px."""
    kwargs.update(lab=_lab_mode(model_cfg), skip_bad_samples=cfg.options.skip_bad_samples)
    if live_size:
        return live_hsynth_dataset(cfg, live_size, **kwargs)
    return recipe_dataset(cfg, train_keys, "train", **kwargs)
