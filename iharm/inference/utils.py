"""Loading a trained model by its registered name (the official ``load_model`` API).

Unlike the official loader (full pickle, silent non-strict merge), files are
read with ``weights_only=True`` and loaded strictly: a file of another model
or configuration fails with the list of missing, unexpected and mis-shaped
keys.

Extension point: a model class whose weights are not one bare state dict
(BargainNet's official G + E pair) provides a ``from_checkpoint(path)``
classmethod returning the loaded model; ``load_model`` then delegates to it.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from iharm.engine.checkpoints import load_state_dict_file, load_weights
from iharm.model.registry import get_model_spec


def load_model(model_type: str, checkpoint_path: str | os.PathLike, device: str | torch.device = "cpu",
               verbose: bool = False) -> nn.Module:
    """Build the registered model ``model_type`` ('DucoNet', 'iSSAM', ...), load its weights strictly
    and return it on ``device`` in eval mode.

    Raises ``KeyError`` for an unknown name and
    :class:`~iharm.engine.checkpoints.CheckpointError` for an unreadable,
    unsafe or mismatching file.
    """
    spec = get_model_spec(model_type)
    constructor = spec.constructor
    from_checkpoint = getattr(constructor, "from_checkpoint", None)
    if from_checkpoint is not None:
        model = from_checkpoint(checkpoint_path)
    else:
        model = spec.build()
        load_weights(model, load_state_dict_file(checkpoint_path), str(checkpoint_path))
    if verbose:
        print(f"Loaded {model_type} weights from {checkpoint_path}")
    return model.to(device).eval()
