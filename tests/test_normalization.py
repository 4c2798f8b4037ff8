"""Input normalisation against torchvision's ToTensor + Normalize, and its per-device constants."""
from __future__ import annotations

import numpy as np
import torch
from torchvision import transforms

from iharm.data.normalization import IMAGENET, SYMMETRIC


def _image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(20, 24, 3), dtype=np.uint8)


def test_normalize_is_bit_identical_to_torchvision():
    image = _image()
    for normalization in (IMAGENET, SYMMETRIC):
        expected = transforms.Compose([transforms.ToTensor(),
                                       transforms.Normalize(normalization.mean, normalization.std)])(image)
        got = normalization.normalize(torch.from_numpy(image).permute(2, 0, 1))
        assert got.dtype == torch.float32 and torch.equal(got, expected)
        batch = normalization.normalize(torch.from_numpy(image).permute(2, 0, 1)[None])
        assert torch.equal(batch[0], expected)


def test_denormalize_returns_the_0_255_values():
    image = torch.from_numpy(_image()).permute(2, 0, 1)[None]
    back = IMAGENET.denormalize(IMAGENET.normalize(image))
    assert (back - image.float()).abs().max() < 1e-4


def test_constants_made_under_inference_mode_serve_a_training_graph():
    """The mean / std tensors are made once per device and dtype; one first made under inference mode
    (a prediction) must still take part in autograd (the next training step)."""
    with torch.inference_mode():
        SYMMETRIC.denormalize(torch.zeros(1, 3, 2, 2, dtype=torch.float64))
    x = torch.ones(1, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    SYMMETRIC.denormalize(x).sum().backward()  # raises for an inference tensor saved for backward
    assert torch.equal(x.grad, torch.full_like(x, 0.5 * 255))
    assert SYMMETRIC._stats(x)[1] is SYMMETRIC._stats(x)[1]
