"""iSSAM on HSynth within an hour on a 2-core CPU (the paper recipe is made for 120 GPU epochs).

    python train.py models/hsynth/iSSAM_hsynth.py --device cpu --threads 2 --workers 1 \
        --batch-size 16 --lr 3e-3 --max-train-minutes 60 --amp auto --channels-last

The recipe of models/hsynth/DucoNet_hsynth.py (on-the-fly HSynth, the fusion gate
starting at the composite, warm-up and cosine over the time budget, ``work_size`` crops;
its docstring says why), for iSSAM and its official initialisation. The values are
:data:`RECIPE`; ``--set NAME=VALUE`` overrides one for a run.
"""
from easydict import EasyDict as edict

from iharm.engine.recipe import TimeRecipe, recipe_of, train_for_time
from iharm.model.initializer import init_issam_weights, start_at_composite
from iharm.model.losses import MaskWeightedMSE
from iharm.model.registry import get_model_spec

RECIPE = TimeRecipe(live_size=256, work_size=64, crop_scale=(0.5, 1.0), gate_logit=0.5, peak_lr=3e-3,
                    warmup_minutes=1.0, final_lr_ratio=0.02, snapshot_minutes=5.0)


def main(cfg):
    recipe = recipe_of(cfg, RECIPE)
    model, model_cfg = init_model(cfg, recipe)
    train_for_time(model, cfg, model_cfg, recipe,
                   loss_cfg=edict(pixel_loss=MaskWeightedMSE(min_area=100), pixel_loss_weight=1.0),
                   keep_background_prob=0.05, min_foreground_area=10.0)


def init_model(cfg, recipe=RECIPE):
    model_cfg = edict(crop_size=(recipe.work_size, recipe.work_size), spec=get_model_spec("iSSAM"))
    model = model_cfg.spec.build()
    init_issam_weights(model)  # the official XavierGluon, then the gate
    if recipe.gate_logit is not None:
        start_at_composite(model, recipe.gate_logit)
    return model, model_cfg
