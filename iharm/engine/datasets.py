"""Datasets of a training recipe: from config keys or a ``--dataset-path`` override, or synthesised live."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from iharm.data.hdataset import ComposeDataset, HDataset
from iharm.data.hsynth.live import LiveHSynth
from iharm.utils.config import require_path


def recipe_dataset(cfg: Mapping[str, Any], keys: Sequence[str], split: str, **kwargs: Any) -> ComposeDataset:
    """``ComposeDataset`` of ``HDataset(cfg[key], split)`` for each key.

    ``cfg.options.dataset_path`` (``train.py --dataset-path DIR[,DIR...]``) replaces the
    recipe's datasets, e.g. to train on an HSynth folder. Missing paths are
    errors that name the config key. ``kwargs`` go to ``ComposeDataset``
    (augmentator, keep_background_prob, lab, ...); ``skip_bad_samples`` also
    reaches the sub-datasets so that missing files are counted, not fatal.
    """
    override = cfg.options.dataset_path
    paths = [p for p in override.split(",") if p] if override else [require_path(cfg, key) for key in keys]
    skip = kwargs.get("skip_bad_samples", False)
    return ComposeDataset([HDataset(path, split, skip_bad_samples=skip) for path in paths], **kwargs)


def live_hsynth_dataset(cfg: Mapping[str, Any], size: int, **kwargs: Any) -> LiveHSynth:
    """HSynth-train drawn afresh per sample from the photos of ``PHOTOS_PATH``.

    The photos of the fixed HSynth-test split are left out: that split is read
    from ``--dataset-path`` when given, else from ``HSYNTH_PATH``. ``kwargs`` go
    to :class:`~iharm.data.hsynth.live.LiveHSynth` (augmentator, per_photo, ...).
    """
    override = cfg.options.dataset_path
    test_dataset = override if override else require_path(cfg, "HSYNTH_PATH")
    return LiveHSynth(require_path(cfg, "PHOTOS_PATH"), test_dataset, size=size, seed=cfg.options.seed,
                      **kwargs)
