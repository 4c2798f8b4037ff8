"""The epoch's throughput line against hand-computed figures."""
from __future__ import annotations

from iharm.engine.throughput import EpochThroughput


def test_the_line_splits_the_epoch_and_leaves_validation_out():
    record = EpochThroughput(started=100.0)
    record.batch_arrived(2.0)  # the first batch: 2 s of waiting
    record.stepped(8, model_seconds=4.0, after_seconds=0.5)
    record.batch_arrived(0.5)
    record.stepped(8, model_seconds=4.0, after_seconds=0.5)
    record.validation = 3.0
    line = record.line(epoch=1, now=115.0)
    # 15 s since the start, 3 of them validation: 16 images in 12 s; the steps alone took 8 s
    assert line == ("Epoch 1 throughput: 16 images in 12.0 s = 1.33 images/s over the epoch; model steps alone "
                    "2.00 images/s (67%); waiting for data 2.5 s (first batch 2.0 s), logging and saves in steps "
                    "1.0 s, set-up and epoch end 0.5 s; validation 3.0 s (not counted)")
