"""iSSAM (``improved_ssam``): DucoNet's RGB backbone without the Lab parts.

The official DucoNet layout (../shared/reference/duconet256_keys.json) fixes
iSSAM's: the ``encoder.*`` / ``decoder.*`` entries without the control modules.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from iharm.model.duconet import DucoNet_model
from iharm.model.initializer import init_issam_weights
from iharm.model.issam import SSAMImageHarmonization
from iharm.model.registry import get_model_spec

from float_bounds import assert_float32_close


@pytest.fixture(scope="module")
def official_layout(reference_dir):
    return json.loads((reference_dir / "duconet256_keys.json").read_text())["state_dict"]


def _backbone_entries(layout):
    return [(name, tuple(shape)) for name, shape, _ in layout
            if name.startswith(("encoder.", "decoder.")) and ".control_module." not in name]


def test_state_dict_is_the_duconet_backbone(official_layout):
    model = get_model_spec("iSSAM").build()
    assert isinstance(model, SSAMImageHarmonization)
    expected = _backbone_entries(official_layout)
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == expected
    # encoder 4 + 4 + 14 + 14, up-blocks 3 x 16, attention 12 + 12 + 1, head 4
    assert len(expected) == 113
    # 1,174,080 encoder + 1,022,585 decoder without the control modules (duconet_spec.md 1.10)
    assert sum(p.numel() for p in model.parameters()) == 1_174_080 + 738_176 + 184_768 + 88_184 + 132


def test_equals_duconet_where_the_control_modules_are_inert(reference_dir):
    """With an empty mask every control module returns its input, so DucoNet reduces to its
    backbone: iSSAM loaded with DucoNet's backbone weights must give the same output."""
    vector = torch.load(reference_dir / "duconet256_vector.pt", weights_only=True)
    duconet = DucoNet_model()
    duconet.load_state_dict(vector["state_dict"])
    issam = SSAMImageHarmonization()
    issam.load_state_dict({k: v for k, v in vector["state_dict"].items() if k in issam.state_dict()})
    image = vector["inputs"]["image"][:1, :, :96, :128]
    lab = vector["inputs"]["image_lab"][:1, :, :96, :128]
    mask = torch.zeros(1, 1, 96, 128)
    with torch.no_grad():
        expected = duconet.eval()(image, mask, image_lab=lab)["images"]
        output = issam.eval()(image, mask)["images"]
        exact = issam.double()(image.double(), mask.double())["images"]
    assert_float32_close("iSSAM against DucoNet's backbone", output, expected, exact)


def test_init_as_improved_ssam():
    """XavierGluon(gaussian, magnitude 1) on the whole model, the blur buffer included."""
    torch.manual_seed(0)  # unseeded, the order of the tests drew a kernel that summed to 0.995 (CI)
    model = SSAMImageHarmonization()
    blur = model.decoder.up_blocks[2].attention.mask_blurring.weight[0, 0].clone()
    init_issam_weights(model)
    kernel = model.decoder.up_blocks[2].attention.mask_blurring.weight[0, 0]
    # the Gaussian blur (non-negative, symmetric) is replaced by Xavier noise: std sqrt(1 / 49) for 7 x 7
    assert blur.min() >= 0 and torch.allclose(blur, blur.flip(0))
    assert kernel.std().item() == pytest.approx(1 / 7, rel=0.3) and not torch.allclose(kernel, kernel.flip(0))
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 12 and all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in norms)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert all(m.bias is None or torch.all(m.bias == 0) for m in layers)
    weight = model.decoder.up_blocks[0].convs.block[0].block[0].weight  # 256 -> 128, 3x3
    assert weight.std().item() == pytest.approx(math.sqrt(1 / ((256 + 128) * 9 / 2)), rel=0.05)
