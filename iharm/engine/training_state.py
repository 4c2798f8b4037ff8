"""The resumable training state: everything an exact resume needs, in one file.

Weights files (``last_checkpoint.pth``, ``NNN.pth``) stay bare state dicts in
the official format. Next to them, ``training_state.pth`` holds the model, the
optimizer, the scheduler, the AMP scaler, the position (epoch, step in the
epoch, global step), the data seed and the RNG states of torch (CPU and the
process's CUDA device), numpy and Python, of every rank (``rng_per_rank``;
``rng`` is rank 0's), as plain tensors and numbers, so that it loads with
``weights_only=True`` and a resumed run continues exactly where the saved one
was, on every rank.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iharm.model.checkpoints import CheckpointError, load_checkpoint_file, save_atomic

STATE_FILE = "training_state.pth"
FORMAT = "iharm-training-state-v1"


@dataclass
class Position:
    """Where training stands: ``step`` batches of ``epoch`` are done."""

    epoch: int = 0
    step: int = 0
    global_step: int = 0


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed torch, numpy and Python. Rank ``r > 0`` of a distributed run gets its own well-mixed seed
    (dropout masks, noise), derived from ``(seed, r)``; rank 0 uses ``seed`` itself."""
    if rank:
        seed = int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def capture_rng(device: torch.device = torch.device("cpu")) -> dict[str, Any]:
    """This process's RNG states; on CUDA, of its own ``device`` only (a resume may see fewer GPUs)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": [torch.cuda.get_rng_state(device)] if device.type == "cuda" else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }


def restore_rng(state: dict[str, Any], device: torch.device = torch.device("cpu")) -> None:
    """Set the RNG states :func:`capture_rng` took (the CUDA one on ``device``, when both are CUDA)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"][0], device)
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))


def rank_rng(state: dict[str, Any], rank: int, world_size: int) -> dict[str, Any] | None:
    """The RNG states ``state`` holds for ``rank`` of a run with ``world_size`` processes, or None when it
    was saved by another number of processes (states written before ``rng_per_rank``: one process)."""
    per_rank = state.get("rng_per_rank") or [state["rng"]]
    return per_rank[rank] if len(per_rank) == world_size else None


def save_training_state(path: Path, *, model_state: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                        scheduler: Any, scaler: torch.amp.GradScaler | None, position: Position,
                        seed: int, rng_per_rank: list[dict[str, Any]], train_seconds: float = 0.0) -> None:
    """Write the state atomically (a crash leaves the previous state file intact). ``train_seconds`` is the
    training time so far, which a resumed run goes on counting (``--max-train-minutes``, time snapshots).
    ``rng_per_rank``: every rank's :func:`capture_rng`, in rank order."""
    save_atomic({
        "format": FORMAT,
        "model": model_state,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": position.epoch,
        "step": position.step,
        "global_step": position.global_step,
        "seed": seed,
        "train_seconds": float(train_seconds),
        "rng": rng_per_rank[0],
        "rng_per_rank": rng_per_rank,
    }, path)


def trained_seconds(state: dict[str, Any]) -> float:
    """The training time a state records: ``train_seconds``, or for states written before it existed the
    time-based scheduler's own clock, else zero."""
    seconds = state.get("train_seconds")
    if seconds is None:
        seconds = (state.get("scheduler") or {}).get("elapsed_seconds", 0.0)
    return float(seconds)


def load_training_state(path: Path) -> dict[str, Any]:
    state = load_checkpoint_file(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an iharm training-state file (expected format {FORMAT})")
    return state
