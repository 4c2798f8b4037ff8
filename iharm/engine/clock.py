"""The training clock: seconds of training so far, the same number on every rank.

Time limits (``--max-train-minutes``), time snapshots, time-based state saves
and the learning rate of the time-bounded recipes (``WarmupCosineLR`` in
seconds) all read it. One process reads its own monotonic clock. With several,
each rank's clock runs at its own pace and starts at its own moment, so a
learning rate computed from it would differ between ranks: the replicas would
apply different steps and drift apart (DDP never re-syncs parameters), and a
time-based save, being collective, could hang. So there the clock is rank 0's
reading, shared at every step through the step's flag all-reduce
(:meth:`TrainingClock.reading` in, :meth:`TrainingClock.agree` out), and it
stands still between two steps.
"""
from __future__ import annotations

import time


class TrainingClock:
    """Training seconds, counted from ``start`` on and continuing a resumed run's ``before`` seconds."""

    def __init__(self, distributed: bool = False, is_main: bool = True) -> None:
        self._distributed = distributed
        self._is_main = is_main
        self._before = 0.0
        self._origin: float | None = None  # monotonic time of "0 seconds"; None until started
        self._agreed = 0.0

    def resume(self, seconds: float) -> None:
        """Continue a run that had trained ``seconds`` (before :meth:`start`)."""
        self._before = self._agreed = float(seconds)

    def start(self) -> None:
        self._origin = time.monotonic() - self._before

    def local(self) -> float:
        """This process's own reading (standing at the resumed seconds until started)."""
        return self._before if self._origin is None else time.monotonic() - self._origin

    def reading(self) -> float:
        """What this rank puts into the step's MAX all-reduce: rank 0 its reading, the others 0."""
        return self.local() if self._is_main else 0.0

    def agree(self, seconds: float) -> None:
        """Rank 0's reading, as the all-reduce returned it."""
        self._agreed = float(seconds)

    def __call__(self) -> float:
        return self._agreed if self._distributed else self.local()
