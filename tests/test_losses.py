"""Pixel losses: the official MaskWeightedMSE values and hand-computed cases."""
from __future__ import annotations

import pytest
import torch

from iharm.model.losses import MaskWeightedMSE


@pytest.fixture(scope="module")
def vector(reference_dir):
    return torch.load(reference_dir / "duconet256_vector.pt", weights_only=True)


def test_mask_weighted_mse_matches_the_official_eval_loss(vector):
    """extras.loss_eval = official MaskWeightedMSE(min_area=100) on the official output."""
    loss = MaskWeightedMSE(min_area=100)(vector["output"], vector["extras"]["target_image"],
                                         vector["inputs"]["mask"])
    torch.testing.assert_close(loss, vector["extras"]["loss_eval"], rtol=1e-5, atol=0)


def test_mask_weighted_mse_matches_the_official_train_loss(vector):
    train = vector["extras"]["train_mode"]
    loss = MaskWeightedMSE(min_area=100)(train["output"], vector["extras"]["target_image"],
                                         vector["inputs"]["mask"])
    torch.testing.assert_close(loss, train["loss_per_sample"], rtol=1e-5, atol=0)
    torch.testing.assert_close(loss.mean(), train["loss"], rtol=1e-5, atol=0)


def test_mask_weighted_mse_by_hand():
    pred = torch.zeros(2, 3, 4, 5)
    target = torch.ones(2, 3, 4, 5)
    target[1] = 2.0
    mask = torch.zeros(2, 1, 4, 5)
    mask[0, 0, :2, :] = 1.0      # area 10
    mask[1, 0, :, :] = 0.5       # soft mask, area 10
    # sum of squared errors: sample 0: 60 * 1, sample 1: 60 * 4
    assert MaskWeightedMSE(min_area=1)(pred, target, mask).tolist() == pytest.approx([60 / 30, 240 / 30])
    # the area is clamped below at min_area
    assert MaskWeightedMSE(min_area=1000)(pred, target, mask).tolist() == pytest.approx([60 / 3000, 240 / 3000])
    assert MaskWeightedMSE().min_area == 1000


def test_losses_name_what_they_consume():
    assert MaskWeightedMSE().pred_outputs == ("images",)
    assert MaskWeightedMSE().gt_outputs == ("target_images", "masks")
    custom = MaskWeightedMSE(pred_name="out", gt_image_name="real", gt_mask_name="fg")
    assert (custom.pred_outputs, custom.gt_outputs) == (("out",), ("real", "fg"))
