"""BargainNet on HSynth within an hour on a 2-core CPU (the paper recipe is 200 epochs at batch 1).

    python train.py models/hsynth/BargainNet_hsynth.py --device cpu --threads 2 --workers 1 \
        --batch-size 4 --lr 5e-4 --max-train-minutes 60

Trains on on-the-fly HSynth at 256 x 256 (LIVE_SIZE; see models/hsynth/iSSAM_hsynth.py). G has eight
stride-2 levels, so the working resolution stays 256. What differs from models/BargainNet_256.py:
* ``--lr`` is the peak of a linear warm-up and a cosine decay that ends with ``--max-train-minutes``
  (the paper: constant 1e-4 for 200 epochs);
* batch > 1 (``--batch-size``; the paper ran batch 1);
* G at width NGF (``load_model`` reads the width from the checkpoint);
* FG_LOSS_WEIGHT > 0 adds a foreground-normalised MSE to the official loss (L1 over the whole image +
  0.01 x the two triplet losses): G regenerates the whole image, and the foreground, where harmonization
  happens, is on average a fifth of it.
"""
from easydict import EasyDict as edict

from iharm.engine.recipe import flip_and_crop, train_for_time
from iharm.model.bargainnet_losses import LAMBDA_TRI, BargainNetL1, DomainTripletLoss
from iharm.model.losses import MaskWeightedMSE
from iharm.model.registry import get_model_spec

LIVE_SIZE = 256             # on-the-fly HSynth at this size; None: the fixed --dataset-path folder
WORK_SIZE = 256             # G needs multiples of 256
CROP_SCALE = None           # RandomResizedCrop area range; None: the whole image
NGF = 16                    # G's width (64: the paper model; 16: the width of the official test vector, 2.5x
                            # faster per step here, so that an hour sees more than one epoch)
FG_LOSS_WEIGHT = 1.0        # weight of MaskWeightedMSE on the [-1, 1] images; 0: the official loss only
WARMUP_MINUTES = 1.0
FINAL_LR_RATIO = 0.02
SNAPSHOT_MINUTES = 5.0


def main(cfg):
    model, model_cfg = init_model(cfg)
    train(model, cfg, model_cfg)


def init_model(cfg):
    model_cfg = edict(crop_size=(WORK_SIZE, WORK_SIZE), spec=get_model_spec("BargainNet"))
    model = model_cfg.spec.build(ngf=NGF)
    model.initialize_weights(init_gain=0.02)  # the official init_net(normal, 0.02)
    return model, model_cfg


def train(model, cfg, model_cfg):
    loss_cfg = edict(pixel_loss=BargainNetL1(), pixel_loss_weight=1.0,
                     triplet_loss=DomainTripletLoss(distance="euclidean"), triplet_loss_weight=LAMBDA_TRI)
    if FG_LOSS_WEIGHT:
        loss_cfg.update(foreground_loss=MaskWeightedMSE(min_area=100), foreground_loss_weight=FG_LOSS_WEIGHT)
    train_for_time(
        model, cfg, model_cfg, loss_cfg=loss_cfg, train_keys=("HSYNTH_PATH",),
        augmentator=flip_and_crop(WORK_SIZE, CROP_SCALE),
        lr=cfg.lr, warmup_minutes=WARMUP_MINUTES, final_lr_ratio=FINAL_LR_RATIO,
        keep_background_prob=0.05, min_foreground_area=1.0, snapshot_minutes=SNAPSHOT_MINUTES, live_size=LIVE_SIZE)
