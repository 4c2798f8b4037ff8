"""A tiny iSSAM (4 channels, 32 px crops) trained through ``train_for_time``, the time-bounded recipe
of models/hsynth/*.py, for engine tests. Snapshots every IHARM_TEST_SNAPSHOT_MINUTES (default 0.005)."""
import os

import albumentations as A
from easydict import EasyDict as edict

from iharm.data.transforms import HCompose
from iharm.engine.recipe import start_at_composite, train_for_time
from iharm.model.initializer import init_issam_weights
from iharm.model.losses import MaskWeightedMSE
from iharm.model.registry import get_model_spec


def main(cfg):
    model, model_cfg = init_model(cfg)
    train_for_time(model, cfg, model_cfg, loss_cfg=edict(pixel_loss=MaskWeightedMSE(min_area=10)),
                   train_keys=("HSYNTH_PATH",), augmentator=HCompose([A.RandomResizedCrop(size=(32, 32))]),
                   lr=cfg.lr, warmup_minutes=0.002, final_lr_ratio=0.1,
                   snapshot_minutes=float(os.environ.get("IHARM_TEST_SNAPSHOT_MINUTES", 0.005)))


def init_model(cfg):
    model_cfg = edict(crop_size=(32, 32), spec=get_model_spec("iSSAM"))
    model = model_cfg.spec.build(ch=4)
    init_issam_weights(model)
    start_at_composite(model, 2.0)
    return model, model_cfg
