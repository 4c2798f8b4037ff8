"""The BargainNet recipe at a small generator width (ngf 8) for engine tests."""
from easydict import EasyDict as edict

from iharm.engine.recipe import EpochRecipe, train_recipe
from iharm.model.bargainnet_losses import LAMBDA_TRI, BargainNetL1, DomainTripletLoss
from iharm.model.registry import get_model_spec


def main(cfg):
    model, model_cfg = init_model(cfg)
    loss_cfg = edict(pixel_loss=BargainNetL1(), pixel_loss_weight=1.0,
                     triplet_loss=DomainTripletLoss(), triplet_loss_weight=LAMBDA_TRI)
    recipe = EpochRecipe(train_keys=("HSYNTH_PATH",), val_keys=("HSYNTH_PATH",), crop_size=256, num_epochs=2,
                         lr_milestones=(), base_lr=1e-3, lr_batch_reference=None, min_foreground_area=1.0,
                         checkpoint_interval=1, image_dump_interval=100)
    train_recipe(model, cfg, model_cfg, recipe, loss_cfg=loss_cfg)


def init_model(cfg):
    model_cfg = edict(crop_size=(256, 256), spec=get_model_spec("BargainNet"))
    model = model_cfg.spec.build(ngf=8)
    model.initialize_weights(init_gain=0.02)
    return model, model_cfg
