"""DucoNet initialisation as ``models/DucoNet_256.py`` does it (XavierGluon + skip names).

The strongest check: with the same seed, building and initialising here gives
the official initial weights bit for bit (the reference weights are the
official ``init_model`` output after ``torch.manual_seed(0)``; only the BN
running statistics were perturbed afterwards). The statistical checks say what
each part of the init is, independently of the RNG order.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from iharm.model.duconet import DucoNet_model
from iharm.model.initializer import XavierGluon, init_duconet_weights
from iharm.model.stylegan2 import EqualizedLinear, EqualizedWeight, StyleBlock

BLUR = "decoder.up_blocks.2.attention.mask_blurring.weight"


@pytest.fixture(scope="module")
def initialised():
    torch.manual_seed(0)
    model = DucoNet_model()
    init_duconet_weights(model)
    return model


def test_seeded_init_reproduces_the_official_weights(initialised, reference_dir):
    reference = torch.load(reference_dir / "duconet256_vector.pt", weights_only=True)["state_dict"]
    ours = initialised.state_dict()
    learned = [k for k in reference if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(learned) == 262 + 1  # parameters + the blur buffer
    assert [k for k in learned if not torch.equal(ours[k], reference[k])] == []


def test_blur_buffer_is_random_noise(initialised):
    kernel = initialised.state_dict()[BLUR][0, 0]
    assert abs(kernel.sum().item() - 1) > 0.1
    assert not torch.allclose(kernel, kernel.flip(0)) and not torch.allclose(kernel, kernel.t())
    assert 0.07 < kernel.std().item() < 0.22  # N(0, 1/7) over 49 values


def test_style_branches_keep_their_constructor_init(initialised):
    style_blocks = [m for m in initialised.modules() if isinstance(m, StyleBlock)]
    assert len(style_blocks) == 18
    for block in style_blocks:
        assert torch.all(block.bias == 0) and torch.all(block.scale_noise == 0)
    to_style = [m for m in initialised.modules() if isinstance(m, EqualizedLinear)]
    assert len(to_style) == 18 and all(torch.all(m.bias == 1.0) for m in to_style)
    raw = torch.cat([m.weight.detach().flatten() for m in initialised.modules() if isinstance(m, EqualizedWeight)])
    assert abs(raw.mean().item()) < 0.01
    assert raw.std().item() == pytest.approx(1.0, abs=0.01)


def test_norm_layers_and_biases_outside_the_style_branches(initialised):
    norms = [m for m in initialised.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 24
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in norms)
    layers = [m for m in initialised.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert all(m.bias is None or torch.all(m.bias == 0) for m in layers)


@pytest.mark.parametrize("name", ["encoder.blocks_connected.block3.convs.block.1.block.0.weight",
                                  "l_encoder.map2w.net.0.weight",
                                  "decoder.up_blocks.0.control_module.G_weight.0.weight"])
def test_xavier_std(initialised, name):
    weight = initialised.state_dict()[name]
    receptive = weight[0, 0].numel()
    expected = math.sqrt(1.0 / ((weight.shape[0] + weight.shape[1]) * receptive / 2))
    assert weight.std().item() == pytest.approx(expected, rel=0.05)


def test_xavier_refuses_modules_whose_weight_is_a_module():
    """Why the style branches are skipped: their weight is an EqualizedWeight module."""
    with pytest.raises(TypeError, match="skip it"):
        EqualizedLinear(4, 4).apply(XavierGluon(rnd_type="gaussian", magnitude=1.0))
