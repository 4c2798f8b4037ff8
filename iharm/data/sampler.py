"""Resumable, shardable sampling with per-sample augmentation seeds."""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import BatchSampler, Sampler

from iharm.data.hdataset import sample_seed


class SeededSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, seed)`` pairs: this rank's share of a (shuffled) epoch.

    * The order of epoch ``e`` depends only on ``(seed, e)``; each rank takes
      every ``num_replicas``-th index (as ``DistributedSampler`` does), so the
      ranks' batches together hold the same samples as one process's batch of
      the global size.
    * The seed that comes with an index makes its augmentation reproducible,
      independent of worker count and rank.
    * ``skip(n)`` resumes in the middle of an epoch: the next iteration starts
      after this rank's first ``n`` samples.
    * ``drop_last=False`` with several ranks gives uneven shares (no padding
      duplicates), so validation metrics count every image exactly once.
    """

    def __init__(self, length: int, shuffle: bool = True, seed: int = 0, num_replicas: int = 1,
                 rank: int = 0, drop_last: bool = False) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside [0, {num_replicas})")
        self.length = length
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._skip = 0

    def skip(self, count: int) -> None:
        self._skip = count

    def _indices(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.length, generator=generator).tolist()
        else:
            order = list(range(self.length))
        if self.drop_last:
            order = order[:self.length - self.length % self.num_replicas]
        return order[self.rank::self.num_replicas]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self._indices()[self._skip:]:
            yield index, sample_seed(self.seed, self.epoch, index)

    def __len__(self) -> int:
        return max(0, len(self._indices()) - self._skip)


class EpochBatches(Sampler[list[tuple[int, int]]]):
    """The batches of ``sampler``'s epochs one after another, from epoch ``epoch`` (after ``skip_batches`` of
    its batches) on, without end: one DataLoader iterator then runs across epoch boundaries, so its workers
    prefetch the next epoch's first batches while the last ones of this epoch train, instead of starting
    again from an empty queue at every epoch (a stall of one batch's loading per epoch).

    Every epoch's batches are exactly those of ``BatchSampler(sampler, batch_size, drop_last=True)`` for
    that epoch; batches never mix two epochs. :meth:`batches_per_epoch` says how many there are.
    """

    def __init__(self, sampler: SeededSampler, batch_size: int, epoch: int = 0, skip_batches: int = 0) -> None:
        self.sampler = sampler
        self.batch_size = batch_size
        self.epoch = epoch
        self.skip_batches = skip_batches

    def batches_per_epoch(self) -> int:
        return len(self.sampler._indices()) // self.batch_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, skip = self.epoch, self.skip_batches
        while True:
            self.sampler.set_epoch(epoch)
            self.sampler.skip(skip * self.batch_size)
            yield from BatchSampler(self.sampler, self.batch_size, drop_last=True)
            epoch, skip = epoch + 1, 0
