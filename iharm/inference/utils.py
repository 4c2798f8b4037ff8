"""The official loading call, ``iharm.inference.utils.load_model``: :func:`iharm.model.registry.create_model`
with a required checkpoint."""
from __future__ import annotations

import os

import torch
from torch import nn

from iharm.model.registry import create_model


def load_model(model_type: str, checkpoint_path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """The registered model ``model_type`` with the weights of ``checkpoint_path``, on ``device``, in eval
    mode (see :func:`~iharm.model.registry.create_model`)."""
    return create_model(model_type, checkpoint_path, device)
