"""Learning-rate schedules stepped after every optimizer step.

The paper recipes decay the learning rate per epoch (``MultiStepLR``), which
suits 120 GPU epochs. A run bounded by wall-clock time on a shared CPU (the
HSynth recipes, ``models/hsynth/``) does not know in advance how many steps it
will get, so :class:`WarmupCosineLR` can measure its horizon in seconds of
training time instead of steps: the cosine always ends when the time budget
does, however fast the machine turned out to be. (The price: with ``unit
'seconds'`` the learning rate of a step depends on the machine's speed, so two
runs are not bitwise identical even with ``--deterministic``.)
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch.optim.lr_scheduler import LRScheduler


def warmup_cosine_factor(progress: float, warmup: float, final_ratio: float, start_ratio: float = 0.01) -> float:
    """Multiplier of the base learning rate at ``progress`` (0 at the start, 1 at the horizon).

    Linear from ``start_ratio`` to 1 over ``[0, warmup)``, then a half cosine
    from 1 down to ``final_ratio`` at ``progress == 1``, and ``final_ratio`` after.
    """
    if not 0.0 <= warmup < 1.0:
        raise ValueError(f"warm-up must be a fraction of the horizon in [0, 1), got {warmup}")
    progress = max(0.0, progress)
    if progress < warmup:
        return start_ratio + (1.0 - start_ratio) * progress / warmup
    decay = min(1.0, (progress - warmup) / (1.0 - warmup))
    return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * decay))


class WarmupCosineLR(LRScheduler):
    """Linear warm-up, then cosine decay to ``final_ratio`` x the base learning rate, stepped per optimizer step.

    ``unit='steps'``: ``horizon`` and ``warmup`` count optimizer steps.
    ``unit='seconds'``: they are seconds of training time, measured by ``clock``
    from the scheduler's creation; ``state_dict`` records the elapsed time, and
    a resumed run continues from it.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, horizon: float, warmup: float = 0.0,
                 final_ratio: float = 0.0, unit: Literal["steps", "seconds"] = "steps",
                 clock: Callable[[], float] = time.monotonic) -> None:
        if horizon <= 0:
            raise ValueError(f"horizon must be positive, got {horizon}")
        if unit not in ("steps", "seconds"):
            raise ValueError(f"unit must be 'steps' or 'seconds', got {unit!r}")
        self.horizon = float(horizon)
        self.warmup = float(warmup)
        self.final_ratio = float(final_ratio)
        self.unit = unit
        self._clock = clock
        self._start = clock()
        warmup_cosine_factor(0.0, self.warmup / self.horizon, self.final_ratio)  # validates warmup < horizon
        super().__init__(optimizer)

    def progress(self) -> float:
        """Fraction of the horizon used so far."""
        done = self.last_epoch if self.unit == "steps" else self._clock() - self._start
        return done / self.horizon

    def get_lr(self) -> list[float]:
        factor = warmup_cosine_factor(self.progress(), self.warmup / self.horizon, self.final_ratio)
        return [base_lr * factor for base_lr in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        state = {key: value for key, value in self.__dict__.items() if key not in ("optimizer", "_clock", "_start")}
        state["elapsed_seconds"] = self._clock() - self._start
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        self._start = self._clock() - float(state.pop("elapsed_seconds"))
        self.__dict__.update(state)
