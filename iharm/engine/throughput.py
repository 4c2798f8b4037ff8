"""Where an epoch's wall-clock time goes: waiting for batches, model steps, saves, the epoch's end.

The trainer prints one line per epoch from this record, so that a stall shows
as the gap between the training images/s over the whole epoch and the rate of
the model's steps alone (forward, backward, optimizer step and the step's
metrics). Validation is timed but not counted: it trains nothing.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class EpochThroughput:
    """Seconds spent in each part of one epoch, from its start (``started``, monotonic) on."""

    started: float = field(default_factory=time.monotonic)
    images: int = 0
    waiting: float = 0.0  # for the loader's next batch
    first_batch: float | None = None  # of which the epoch's first batch
    model: float = 0.0  # the model's steps
    after_steps: float = 0.0  # per-step logging, snapshots and state saves
    validation: float = 0.0

    def batch_arrived(self, seconds_waited: float) -> None:
        self.waiting += seconds_waited
        if self.first_batch is None:
            self.first_batch = seconds_waited

    def stepped(self, images: int, model_seconds: float, after_seconds: float) -> None:
        self.images += images
        self.model += model_seconds
        self.after_steps += after_seconds

    def seconds(self, now: float | None = None) -> float:
        """Training seconds of the epoch up to ``now`` (default: this moment): validation not counted."""
        return (time.monotonic() if now is None else now) - self.started - self.validation

    def images_per_second(self, now: float | None = None) -> float:
        """Images trained per second over the epoch so far."""
        total = self.seconds(now)
        return self.images / total if total > 0 else float("nan")

    def line(self, epoch: int, now: float | None = None) -> str:
        """The epoch's log line (every number counted up to ``now``, default: this moment)."""
        total, overall = self.seconds(now), self.images_per_second(now)
        alone = self.images / self.model if self.model > 0 else float("nan")
        rest = total - self.waiting - self.model - self.after_steps
        return (f"Epoch {epoch} throughput: {self.images} images in {total:.1f} s = {overall:.2f} images/s over the "
                f"epoch; model steps alone {alone:.2f} images/s ({100 * overall / alone:.0f}%); waiting for data "
                f"{self.waiting:.1f} s (first batch {self.first_batch or 0.0:.1f} s), logging and saves in steps "
                f"{self.after_steps:.1f} s, set-up and epoch end {rest:.1f} s; validation {self.validation:.1f} s "
                "(not counted)")
