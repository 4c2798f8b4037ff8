"""BargainNet (ICME 2021) at 256 px on iHarmony4, the official training recipe in this engine.

    python train.py models/BargainNet_256.py --gpus=0 --batch-size=1 --exp-name=BargainNet_256

L1 reconstruction + 0.01 x (T(real fg, harmonized fg, composite fg) + T(harmonized fg, background, composite fg)),
T a triplet margin loss (margin 0.1) on the Euclidean distance of the 16-d domain codes; one Adam
(lr 1e-4, betas 0.9/0.999) over G and E, which equals the official two Adams stepped together;
200 epochs at a constant learning rate (the official StepLR, stepped per epoch every 6,574,200
epochs, never decays). The official code ran batch 1 only; any batch size works here.

The values are :data:`RECIPE` (:class:`~iharm.engine.recipe.EpochRecipe`); ``--set NAME=VALUE``
overrides one for a run (``--set num_epochs=60``).
"""
from easydict import EasyDict as edict

from iharm.engine.recipe import EpochRecipe, recipe_of, train_recipe
from iharm.model.bargainnet_losses import LAMBDA_TRI, BargainNetL1, DomainTripletLoss
from iharm.model.registry import get_model_spec

RECIPE = EpochRecipe(
    train_keys=("IHD_PATH",), val_keys=("HFLICKR_PATH", "HDAY2NIGHT_PATH", "HCOCO_PATH"),
    crop_size=256, num_epochs=200, lr_milestones=(), base_lr=1e-4, lr_batch_reference=None,
    keep_background_prob=0.05, min_foreground_area=1.0, checkpoint_interval=1, image_dump_interval=1000)


def main(cfg):
    recipe = recipe_of(cfg, RECIPE)
    model, model_cfg = init_model(cfg, recipe)
    loss_cfg = edict(pixel_loss=BargainNetL1(), pixel_loss_weight=1.0,
                     triplet_loss=DomainTripletLoss(distance="euclidean"),
                     triplet_loss_weight=LAMBDA_TRI)
    train_recipe(model, cfg, model_cfg, recipe, loss_cfg=loss_cfg)


def init_model(cfg, recipe=RECIPE):
    model_cfg = edict(crop_size=(recipe.crop_size, recipe.crop_size), spec=get_model_spec("BargainNet"))
    model = model_cfg.spec.build()
    model.initialize_weights(init_gain=0.02)  # init_net(normal, 0.02) on G and E; the code scale stays 0.1
    return model, model_cfg
