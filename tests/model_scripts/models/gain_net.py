"""How to add a model: this one file (the network, its registry entry, its training recipe).

GainNet is the smallest harmonizer that learns: a per-channel gain and
offset for the foreground, predicted from the mean colours of the foreground
and of the background. Importing this file registers it, so that every tool
finds it by name (``create_model("GainNet", ...)``, ``evaluate_model.py GainNet ...``,
``Harmonizer("GainNet", ...)``); ``train.py`` imports it to train it::

    python train.py tests/model_scripts/models/gain_net.py --dataset-path DATA --device cpu --epochs 20

``tests/test_add_a_model.py`` trains and evaluates it end to end.
"""
import torch
from easydict import EasyDict as edict
from torch import nn

from iharm.data.normalization import IMAGENET
from iharm.engine.recipe import EpochRecipe, train_recipe
from iharm.model.losses import MaskWeightedMSE
from iharm.model.registry import MODELS, ModelSpec, get_model_spec, register_model


class GainNet(nn.Module):
    """``forward(image, mask) -> {'images': ...}`` in the normalised space of ``image``; starts as the identity."""

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, hidden), nn.ReLU(), nn.Linear(hidden, 6))
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        foreground = (image * mask).sum((2, 3)) / mask.sum((2, 3)).clamp_min(1)
        background = (image * (1 - mask)).sum((2, 3)) / (1 - mask).sum((2, 3)).clamp_min(1)
        gain, offset = self.net(torch.cat([foreground, background], dim=1)).chunk(2, dim=1)
        adjusted = image * (1 + gain[..., None, None]) + offset[..., None, None]
        return {"images": image * (1 - mask) + mask * adjusted}


if "GainNet" not in MODELS:  # the registry entry
    register_model(ModelSpec(name="GainNet", factory=GainNet, kwargs={"hidden": 16},
                             inputs={"image": "images", "mask": "masks"}, normalization=IMAGENET, size_divisor=1))


def main(cfg):
    model_cfg = edict(crop_size=(32, 32), spec=get_model_spec("GainNet"))
    recipe = EpochRecipe(train_keys=("HSYNTH_PATH",), val_keys=("HSYNTH_PATH",), crop_size=32, num_epochs=20,
                         lr_milestones=(), base_lr=1e-2, lr_batch_reference=None, checkpoint_interval=0,
                         image_dump_interval=0)
    train_recipe(model_cfg.spec.build(), cfg, model_cfg, recipe,
                 loss_cfg=edict(pixel_loss=MaskWeightedMSE(min_area=10), pixel_loss_weight=1.0))
