"""BargainNet on HSynth within an hour on a 2-core CPU (the paper recipe is 200 epochs at batch 1).

    python train.py models/hsynth/BargainNet_hsynth.py --device cpu --threads 2 --workers 1 \
        --batch-size 4 --lr 5e-4 --max-train-minutes 60

Trains on on-the-fly HSynth at 256 x 256 (``live_size``; see models/hsynth/iSSAM_hsynth.py). G has eight
stride-2 levels, so the working resolution stays 256. What differs from models/BargainNet_256.py:
* ``--lr`` is the peak of a linear warm-up and a cosine decay that ends with ``--max-train-minutes``
  (the paper: constant 1e-4 for 200 epochs);
* batch > 1 (``--batch-size``; the paper ran batch 1);
* G at width ``ngf`` (``load_model`` reads the width from the checkpoint; 64 is the paper model, 16 the
  width of the official test vector, 2.5x faster per step here, so that an hour sees more than one epoch);
* ``fg_loss_weight`` > 0 adds a foreground-normalised MSE to the official loss (L1 over the whole image +
  0.01 x the two triplet losses): G regenerates the whole image, and the foreground, where harmonization
  happens, is on average a fifth of it.

The values are :data:`RECIPE`; ``--set NAME=VALUE`` overrides one for a run.
"""
from dataclasses import dataclass

from easydict import EasyDict as edict

from iharm.engine.recipe import TimeRecipe, recipe_of, train_for_time
from iharm.model.bargainnet_losses import LAMBDA_TRI, BargainNetL1, DomainTripletLoss
from iharm.model.losses import MaskWeightedMSE
from iharm.model.registry import get_model_spec


@dataclass(frozen=True)
class BargainNetRecipe(TimeRecipe):
    """A :class:`TimeRecipe` plus G's width and the weight of the foreground MSE (0: the official loss only)."""

    ngf: int = 16
    fg_loss_weight: float = 1.0


#: G needs multiples of 256: whole images at 256, no crop; no fusion gate (G regenerates the image).
RECIPE = BargainNetRecipe(live_size=256, work_size=256, crop_scale=None, gate_logit=None, peak_lr=5e-4,
                          warmup_minutes=1.0, final_lr_ratio=0.02, snapshot_minutes=5.0, ngf=16, fg_loss_weight=1.0)


def main(cfg):
    recipe = recipe_of(cfg, RECIPE)
    model, model_cfg = init_model(cfg, recipe)
    loss_cfg = edict(pixel_loss=BargainNetL1(), pixel_loss_weight=1.0,
                     triplet_loss=DomainTripletLoss(distance="euclidean"), triplet_loss_weight=LAMBDA_TRI)
    if recipe.fg_loss_weight:
        loss_cfg.update(foreground_loss=MaskWeightedMSE(min_area=100), foreground_loss_weight=recipe.fg_loss_weight)
    train_for_time(model, cfg, model_cfg, recipe, loss_cfg=loss_cfg, keep_background_prob=0.05,
                   min_foreground_area=1.0)


def init_model(cfg, recipe=RECIPE):
    model_cfg = edict(crop_size=(recipe.work_size, recipe.work_size), spec=get_model_spec("BargainNet"))
    model = model_cfg.spec.build(ngf=recipe.ngf)
    model.initialize_weights(init_gain=0.02)  # the official init_net(normal, 0.02)
    return model, model_cfg
