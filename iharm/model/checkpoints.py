"""Safe checkpoint reading and crash-proof writing.

Reading: ``torch.load(weights_only=True)`` only, so a file from a stranger can
never run code; DataParallel ``module.`` prefixes are stripped; NaN / Inf
weights are refused; loading into a model reports every missing, unexpected and
mis-shaped key at once (the official loaders ignored them silently).

Writing: :func:`save_atomic` writes to a temporary file in the same folder,
fsyncs it, renames it over the target and fsyncs the folder, so a crash, a
SIGKILL or a full disk leaves either the old file or the new one, never a
broken one.
"""
from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from iharm.errors import IharmError
from iharm.utils.files import atomic_open


class CheckpointError(IharmError, RuntimeError):
    """A checkpoint cannot be used; the message names the file and the keys."""


def load_checkpoint_file(path: str | os.PathLike) -> Any:
    """``torch.load(path, map_location='cpu', weights_only=True)`` with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message goes on to advise weights_only=False, the unsafe thing: only the
        # name of what was refused is kept.
        found = re.search(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL) ([\w.]+)", str(exc))
        detail = f" (it asks for {found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path}: refused for safety: the file holds code or Python objects, not only tensors{detail}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({exc})") from None


def clean_state_dict(state: Mapping[str, Any], source: str) -> dict[str, torch.Tensor]:
    """Strip DataParallel / DDP ``module.`` prefixes and refuse non-finite weights."""
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise CheckpointError(f"{source}: expected a state dict (name -> tensor), got {type(state).__name__}")
    cleaned: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = key[len("module."):] if key.startswith("module.") else key
        if not torch.is_tensor(value):
            raise CheckpointError(f"{source}: entry '{key}' is a {type(value).__name__}, not a tensor")
        cleaned[name] = value
    bad = [k for k, v in cleaned.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{source}: refused: non-finite (NaN or Inf) values in {', '.join(bad[:10])}"
                              + (f" and {len(bad) - 10} more" if len(bad) > 10 else ""))
    return cleaned


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a bare state dict (the official weights format) safely."""
    return clean_state_dict(load_checkpoint_file(path), str(path))


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Strict ``load_state_dict`` that lists every missing, unexpected and mis-shaped key."""
    expected = model.state_dict()
    in_file = len(state)
    # Checkpoints saved by PyTorch < 0.4.1 have no BatchNorm counters (the rest of the
    # BatchNorm is there); torch tolerates that, and the counter affects neither eval
    # nor the momentum update.
    counters = {k: torch.zeros_like(v) for k, v in expected.items() if k.endswith(".num_batches_tracked")
                and k not in state and k.replace(".num_batches_tracked", ".running_mean") in state}
    state = {**counters, **state}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                 for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or misshaped:
        lines = [f"{source} does not match {type(model).__name__} "
                 f"({len(expected)} entries expected, {in_file} in the file):"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if items:
                shown = items[:12] + ([f"... and {len(items) - 12} more"] if len(items) > 12 else [])
                lines.append(f"  {title} ({len(items)}): " + "; ".join(shown))
        lines.append("Is this a checkpoint of another model or configuration?")
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(state, strict=True)


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` that never leaves a partly written file at ``path``."""
    with atomic_open(path) as handle:
        torch.save(obj, handle)
