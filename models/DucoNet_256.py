"""DucoNet at 256 px on iHarmony4 (the official models/DucoNet_256.py recipe).

    python train.py models/DucoNet_256.py --gpus=0,1 --batch-size=64 --exp-name=DucoNet_256

The values are :data:`RECIPE` (:class:`~iharm.engine.recipe.EpochRecipe`); ``--set NAME=VALUE``
overrides one for a run (``--set num_epochs=60``).
"""
from easydict import EasyDict as edict

from iharm.engine.recipe import EpochRecipe, recipe_of, train_recipe
from iharm.model.initializer import init_duconet_weights
from iharm.model.losses import MaskWeightedMSE
from iharm.model.registry import get_model_spec

RECIPE = EpochRecipe(
    # HAdobe5k resized to <= 1024 px for training; validation without HAdobe5k, as published
    train_keys=("HFLICKR_PATH", "HDAY2NIGHT_PATH", "HCOCO_PATH", "HADOBE5K_PATH"),
    val_keys=("HFLICKR_PATH", "HDAY2NIGHT_PATH", "HCOCO_PATH"),
    crop_size=256, num_epochs=120, lr_milestones=(105, 115), base_lr=1e-3, lr_batch_reference=64,
    keep_background_prob=0.05, min_foreground_area=10.0, checkpoint_interval=10, image_dump_interval=1000)


def main(cfg):
    recipe = recipe_of(cfg, RECIPE)
    model, model_cfg = init_model(cfg, recipe)
    loss_cfg = edict(pixel_loss=MaskWeightedMSE(min_area=100), pixel_loss_weight=1.0)
    train_recipe(model, cfg, model_cfg, recipe, loss_cfg=loss_cfg)


def init_model(cfg, recipe=RECIPE):
    model_cfg = edict(crop_size=(recipe.crop_size, recipe.crop_size), spec=get_model_spec("DucoNet"))
    model = model_cfg.spec.build(control_module_start=cfg.options.control_module_start)
    init_duconet_weights(model)  # XavierGluon except the style blocks; the blur buffer becomes noise
    return model, model_cfg
