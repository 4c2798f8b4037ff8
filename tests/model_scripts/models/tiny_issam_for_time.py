"""A tiny iSSAM (4 channels, 32 px crops) trained through ``train_for_time``, the time-bounded recipe
of models/hsynth/*.py, for engine tests. Snapshots every IHARM_TEST_SNAPSHOT_MINUTES (default 0.005).

IHARM_TEST_CLOCK_SKEW=R:F makes the monotonic clock of rank R run F times as fast (ranks whose clocks
disagree); IHARM_TEST_DUMP_DIR: after training, save this rank's weights as rank<r>.pth there.
"""
import os
import time

import torch

from easydict import EasyDict as edict

from iharm.engine.recipe import TimeRecipe, recipe_of, train_for_time
from iharm.model.initializer import init_issam_weights, start_at_composite
from iharm.model.losses import MaskWeightedMSE
from iharm.model.registry import get_model_spec

RECIPE = TimeRecipe(live_size=None, work_size=32, crop_scale=(0.08, 1.0), gate_logit=2.0, peak_lr=1e-3,
                    warmup_minutes=0.002, final_lr_ratio=0.1,
                    snapshot_minutes=float(os.environ.get("IHARM_TEST_SNAPSHOT_MINUTES", 0.005)))


def main(cfg):
    if os.environ.get("IHARM_TEST_CLOCK_SKEW"):
        rank, factor = os.environ["IHARM_TEST_CLOCK_SKEW"].split(":")
        if int(rank) == cfg.dist.rank:
            real = time.monotonic
            time.monotonic = lambda: float(factor) * real()
    recipe = recipe_of(cfg, RECIPE)
    model_cfg = edict(crop_size=(32, 32), spec=get_model_spec("iSSAM"))
    model = model_cfg.spec.build(ch=4)
    init_issam_weights(model)
    start_at_composite(model, recipe.gate_logit)
    trainer = train_for_time(model, cfg, model_cfg, recipe, loss_cfg=edict(pixel_loss=MaskWeightedMSE(min_area=10)))
    if os.environ.get("IHARM_TEST_DUMP_DIR"):
        module = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
        torch.save(module.state_dict(), os.path.join(os.environ["IHARM_TEST_DUMP_DIR"], f"rank{cfg.dist.rank}.pth"))
