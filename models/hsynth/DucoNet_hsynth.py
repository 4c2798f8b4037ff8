"""DucoNet on HSynth within an hour on a 2-core CPU (the paper recipe is made for 120 GPU epochs).

    python train.py models/hsynth/DucoNet_hsynth.py --device cpu --threads 2 --workers 1 \
        --batch-size 16 --lr 3e-3 --max-train-minutes 60

Trains on on-the-fly HSynth (``iharm.data.hsynth.live``): every sample is a new
composite of a training photo of ``PHOTOS_PATH``, made at 256 x 256 as the
Fixed256 evaluation resizes; the photos of the fixed HSynth-test split
(``--dataset-path``, else ``HSYNTH_PATH``) are never drawn. With LIVE_SIZE None
it trains on the fixed folder ``--dataset-path`` instead (e.g. a 256 x 256
working copy of HSynth-train, ``iharm.data.hsynth.subsets.write_working_copy``).
What differs from models/DucoNet_256.py, and
why (measured in docs/quality.md):
* the fusion gate starts at a = sigmoid(3 * GATE_LOGIT): the output begins at
  the composite (the Composite baseline), not at a random image;
* ``--lr`` is the peak learning rate as given (no sqrt(batch/64) scaling), with a
  linear warm-up and a cosine decay that ends with ``--max-train-minutes``;
* WORK_SIZE px crops instead of 256, so that an hour sees many more images.
"""
from easydict import EasyDict as edict

from iharm.engine.recipe import flip_and_crop, start_at_composite, train_for_time
from iharm.model.initializer import init_duconet_weights
from iharm.model.losses import MaskWeightedMSE
from iharm.model.registry import get_model_spec

LIVE_SIZE = 256             # on-the-fly HSynth at this size; None: the fixed --dataset-path folder
WORK_SIZE = 64              # training crops, px (evaluation is at 256)
CROP_SCALE = (0.5, 1.0)     # RandomResizedCrop area range; None: the whole image, resized
GATE_LOGIT = 0.5            # fusion gate a = sigmoid(3 * 0.5) = 0.82 at the start; None: official init only
WARMUP_MINUTES = 1.0
FINAL_LR_RATIO = 0.02       # the cosine ends at 2 % of --lr
SNAPSHOT_MINUTES = 5.0      # weights every 5 minutes of training, for the fMSE-against-time curve


def main(cfg):
    model, model_cfg = init_model(cfg)
    train(model, cfg, model_cfg)


def init_model(cfg):
    model_cfg = edict(crop_size=(WORK_SIZE, WORK_SIZE), spec=get_model_spec("DucoNet"))
    model = model_cfg.spec.build(control_module_start=cfg.get("control_module_start", -1))
    init_duconet_weights(model)  # the official init (style blocks kept), then the gate
    if GATE_LOGIT is not None:
        start_at_composite(model, GATE_LOGIT)
    return model, model_cfg


def train(model, cfg, model_cfg):
    train_for_time(
        model, cfg, model_cfg, loss_cfg=edict(pixel_loss=MaskWeightedMSE(min_area=100), pixel_loss_weight=1.0),
        train_keys=("HSYNTH_PATH",), augmentator=flip_and_crop(WORK_SIZE, CROP_SCALE),
        lr=cfg.lr, warmup_minutes=WARMUP_MINUTES, final_lr_ratio=FINAL_LR_RATIO,
        keep_background_prob=0.05, min_foreground_area=10.0, snapshot_minutes=SNAPSHOT_MINUTES, live_size=LIVE_SIZE)
