"""DucoNet on HSynth within an hour on a 2-core CPU (the paper recipe is made for 120 GPU epochs).

    python train.py models/hsynth/DucoNet_hsynth.py --device cpu --threads 2 --workers 1 \
        --batch-size 16 --lr 3e-3 --max-train-minutes 60 --amp auto --channels-last

Trains on on-the-fly HSynth (``iharm.data.hsynth.live``): every sample is a new
composite of a training photo of ``PHOTOS_PATH``, made at 256 x 256 as the
Fixed256 evaluation resizes; the photos of the fixed HSynth-test split
(``--dataset-path``, else ``HSYNTH_PATH``) are never drawn. With ``live_size`` None
(``--set live_size=null``) it trains on the fixed folder ``--dataset-path`` instead (e.g. a 256 x 256
working copy of HSynth-train, ``iharm.data.hsynth.subsets.write_working_copy``).
What differs from models/DucoNet_256.py, and
why (measured in docs/quality.md):
* the fusion gate starts at a = sigmoid(3 * gate_logit): the output begins at
  the composite (the Composite baseline), not at a random image;
* ``--lr`` is the peak learning rate as given (no sqrt(batch/64) scaling), with a
  linear warm-up and a cosine decay that ends with ``--max-train-minutes``;
* ``work_size`` px crops instead of 256, so that an hour sees many more images.

The values are :data:`RECIPE` (:class:`~iharm.engine.recipe.TimeRecipe`); ``--set NAME=VALUE``
overrides one for a run (``--set work_size=128``).
"""
from easydict import EasyDict as edict

from iharm.engine.recipe import TimeRecipe, recipe_of, train_for_time
from iharm.model.initializer import init_duconet_weights, start_at_composite
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
    model_cfg = edict(crop_size=(recipe.work_size, recipe.work_size), spec=get_model_spec("DucoNet"))
    model = model_cfg.spec.build(control_module_start=cfg.options.control_module_start)
    init_duconet_weights(model)  # the official init (style blocks kept), then the gate
    if recipe.gate_logit is not None:
        start_at_composite(model, recipe.gate_logit)
    return model, model_cfg
