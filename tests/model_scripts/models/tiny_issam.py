"""A tiny iSSAM recipe for engine tests (32 px crops, a few channels) with fault hooks.

Environment variables (read only by this test script):
  IHARM_TEST_CH          width of the U-Net (default 4; 32 is the registered iSSAM)
  IHARM_TEST_NO_BN       1: no BatchNorm (no batch statistics, for the DDP equivalence test)
  IHARM_TEST_NAN_AT      make the loss of this training step (1-based call count) NaN
  IHARM_TEST_KILL_AT     SIGKILL this process during the loss of this training step
  IHARM_TEST_LOSS_LOG    append "<rank> <loss>" for every training step to this file
  IHARM_TEST_DUMP_DIR    after training, save this rank's weights as rank<r>.pth there
  IHARM_TEST_STEP_SLEEP  sleep this many seconds in every training step (signals arriving mid-step)
  IHARM_TEST_LIVE_SIZE   train on on-the-fly HSynth at this size (PHOTOS_PATH; --dataset-path: its test split)
  IHARM_TEST_NOISE       1: add torch.randn noise to the prediction in every training loss (the global RNG
                         shapes training, as dropout would: a resume must restore each rank's own stream)
"""
import os
import signal
import time

import torch
from easydict import EasyDict as edict

from iharm.engine.recipe import EpochRecipe, train_recipe
from iharm.model.initializer import init_issam_weights
from iharm.model.losses import MaskWeightedMSE
from iharm.model.registry import get_model_spec


class InstrumentedLoss(MaskWeightedMSE):
    """MaskWeightedMSE that can log itself, turn NaN or kill the process at a given training step."""

    def __init__(self, rank: int) -> None:
        super().__init__(min_area=100)
        self.rank = rank
        self.calls = 0

    def forward(self, pred, label, mask):
        if not torch.is_grad_enabled():
            return super().forward(pred, label, mask)
        if os.environ.get("IHARM_TEST_NOISE") == "1":
            pred = pred + 0.05 * torch.randn_like(pred)
        value = super().forward(pred, label, mask)
        self.calls += 1
        if self.calls == int(os.environ.get("IHARM_TEST_KILL_AT", 0)):
            os.kill(os.getpid(), signal.SIGKILL)
        if self.calls == int(os.environ.get("IHARM_TEST_NAN_AT", 0)):
            value = value * float("nan")
        time.sleep(float(os.environ.get("IHARM_TEST_STEP_SLEEP", 0)))
        if os.environ.get("IHARM_TEST_LOSS_LOG"):
            with open(os.environ["IHARM_TEST_LOSS_LOG"], "a") as handle:
                handle.write(f"{self.rank} {value.mean().item():.10e}\n")
        return value


def main(cfg):
    model, model_cfg = init_model(cfg)
    # an EpochRecipe built here, not a module RECIPE: this script is the "declares no RECIPE" case of --set
    recipe = EpochRecipe(train_keys=("HSYNTH_PATH",), val_keys=("HSYNTH_PATH",), crop_size=32, num_epochs=2,
                         lr_milestones=(3,), base_lr=1e-3, lr_batch_reference=None, checkpoint_interval=1,
                         image_dump_interval=2, live_size=int(os.environ.get("IHARM_TEST_LIVE_SIZE", 0)) or None)
    trainer = train_recipe(model, cfg, model_cfg, recipe,
                           loss_cfg=edict(pixel_loss=InstrumentedLoss(cfg.dist.rank), pixel_loss_weight=1.0))
    if os.environ.get("IHARM_TEST_DUMP_DIR"):
        module = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
        torch.save(module.state_dict(), os.path.join(os.environ["IHARM_TEST_DUMP_DIR"], f"rank{cfg.dist.rank}.pth"))


def init_model(cfg):
    model_cfg = edict(crop_size=(32, 32), spec=get_model_spec("iSSAM"))
    norm = None if os.environ.get("IHARM_TEST_NO_BN") == "1" else torch.nn.BatchNorm2d
    model = model_cfg.spec.build(ch=int(os.environ.get("IHARM_TEST_CH", 4)), norm_layer=norm)
    init_issam_weights(model)
    return model, model_cfg
