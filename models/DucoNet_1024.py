"""DucoNet at 1024 px on full-resolution HAdobe5k (the official models/DucoNet_1024.py recipe).

    python train.py models/DucoNet_1024.py --gpus=0 --batch-size=4 --exp-name=DucoNet_1024

Same network, initialisation, loss and schedule as the 256 recipe; only the
crop and the data (HADOBE5K1_PATH, the original HAdobe5k) differ.

The values are :data:`RECIPE` (:class:`~iharm.engine.recipe.EpochRecipe`); ``--set NAME=VALUE``
overrides one for a run (``--set num_epochs=60``).
"""
from easydict import EasyDict as edict

from iharm.engine.recipe import EpochRecipe, recipe_of, train_recipe
from iharm.model.initializer import init_duconet_weights
from iharm.model.losses import MaskWeightedMSE
from iharm.model.registry import get_model_spec

RECIPE = EpochRecipe(
    train_keys=("HADOBE5K1_PATH",), val_keys=("HADOBE5K1_PATH",),
    crop_size=1024, num_epochs=120, lr_milestones=(105, 115), base_lr=1e-3, lr_batch_reference=64,
    keep_background_prob=0.05, min_foreground_area=10.0, checkpoint_interval=10, image_dump_interval=1000)


def main(cfg):
    recipe = recipe_of(cfg, RECIPE)
    model, model_cfg = init_model(cfg, recipe)
    loss_cfg = edict(pixel_loss=MaskWeightedMSE(min_area=100), pixel_loss_weight=1.0)
    train_recipe(model, cfg, model_cfg, recipe, loss_cfg=loss_cfg)


def init_model(cfg, recipe=RECIPE):
    model_cfg = edict(crop_size=(recipe.crop_size, recipe.crop_size), spec=get_model_spec("DucoNet"))
    model = model_cfg.spec.build(control_module_start=cfg.options.control_module_start)
    init_duconet_weights(model)
    return model, model_cfg
