"""BargainNet losses: hand-computed triplets, the official numbers, and the trainer's calling convention."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from iharm.model.bargainnet import BargainNet
from iharm.model.bargainnet_losses import LAMBDA_TRI, BargainNetL1, DomainTripletLoss
from iharm.model.registry import get_model_spec


@pytest.fixture(scope="module")
def vector(reference_dir):
    return torch.load(reference_dir / "bargainnet_vector.pt", weights_only=True)


def _codes(*entries: tuple[int, float]) -> torch.Tensor:
    """One (1, 16, 1, 1) code, zero except the given (index, value) entries."""
    code = torch.zeros(1, 16, 1, 1)
    for index, value in entries:
        code[0, index] = value
    return code


# anchor 0; positive differs by 3 and 4 in two entries (distance 5); negative by 1 in a third (distance 1).
ANCHOR, POSITIVE, NEGATIVE = _codes(), _codes((0, 3.0), (1, 4.0)), _codes((2, 1.0))


def test_euclidean_triplet_on_hand_made_codes():
    loss = DomainTripletLoss(distance="euclidean")
    # max(5 - 1 + 0.1, 0)
    assert loss.triplet(ANCHOR, POSITIVE, NEGATIVE).item() == pytest.approx(4.1, abs=1e-5)
    # Swapped: max(1 - 5 + 0.1, 0) = 0
    assert loss.triplet(ANCHOR, NEGATIVE, POSITIVE).item() == pytest.approx(0.0, abs=1e-6)


def test_elementwise_triplet_on_hand_made_codes():
    loss = DomainTripletLoss(distance="elementwise")
    # Per entry max(|a-p| - |a-n| + 0.1, 0): entry 0: 3.1, entry 1: 4.1, entry 2: max(-0.9, 0) = 0,
    # the 13 untouched entries 0.1 each; mean over 16 = 8.5 / 16.
    assert loss.triplet(ANCHOR, POSITIVE, NEGATIVE).item() == pytest.approx(8.5 / 16, abs=1e-5)


def test_elementwise_matches_torch_triplet_on_official_4d_codes(vector):
    # What nn.TripletMarginLoss does today with the official (B, 16, 1, 1) codes, and
    # its proper Euclidean form on flattened codes.
    codes = vector["codes"]
    args = codes["real_fg"], codes["harm_fg"], codes["comp_fg"]
    official = nn.TripletMarginLoss(margin=0.1, p=2)
    ours_elementwise = DomainTripletLoss(distance="elementwise").triplet(*args)
    ours_euclidean = DomainTripletLoss().triplet(*args)
    assert ours_elementwise.shape == ours_euclidean.shape == (2,)
    torch.testing.assert_close(ours_elementwise.mean(), official(*args), atol=1e-6, rtol=0)
    torch.testing.assert_close(ours_euclidean.mean(), official(*(c.flatten(1) for c in args)), atol=1e-6, rtol=0)


def test_official_losses_reproduced(vector):
    codes, losses = vector["codes"], vector["losses"]
    l1 = BargainNetL1()(vector["output"], vector["inputs"]["real"])
    assert l1.shape == (2,)
    torch.testing.assert_close(l1.mean(), losses["L1"], atol=1e-6, rtol=0)
    triplet = DomainTripletLoss(distance="elementwise")
    torch.testing.assert_close(triplet.triplet(codes["real_fg"], codes["harm_fg"], codes["comp_fg"]).mean(),
                               losses["triplet_ff2"], atol=1e-6, rtol=0)
    torch.testing.assert_close(triplet.triplet(codes["harm_fg"], codes["bg"], codes["comp_fg"]).mean(),
                               losses["triplet_f2b"], atol=1e-6, rtol=0)
    per_sample = triplet(codes["real_fg"], codes["harm_fg"], codes["comp_fg"], codes["bg"])
    assert per_sample.shape == (2,)
    torch.testing.assert_close(LAMBDA_TRI * per_sample.mean(), losses["tri_total"], atol=1e-7, rtol=0)
    torch.testing.assert_close(l1.mean() + LAMBDA_TRI * per_sample.mean(), losses["total"], atol=1e-6, rtol=0)


def test_losses_plug_into_the_trainer_convention(vector):
    """loss(*[output[k] for k in pred_outputs], *[batch[k] for k in gt_outputs]) on the model's real outputs."""
    model = BargainNet(ngf=16)
    model.netG.load_state_dict(vector["state_dict_G"])
    model.netE.load_state_dict(vector["state_dict_E"])
    model.eval()
    inputs = vector["inputs"]
    spec = get_model_spec("BargainNet")
    batch = {"images": inputs["comp"], "masks": inputs["mask"], "target_images": inputs["real"]}
    kwargs = {arg: batch[key] for arg, key in {**spec.inputs, **spec.train_inputs}.items()}
    with torch.no_grad():
        output = model(**kwargs)
    total = 0.0
    for loss, weight in ((BargainNetL1(), 1.0), (DomainTripletLoss(distance="elementwise"), LAMBDA_TRI)):
        value = loss(*[output[k] for k in loss.pred_outputs], *[batch[k] for k in loss.gt_outputs])
        total = total + weight * value.mean()
    torch.testing.assert_close(total, vector["losses"]["total"], atol=1e-5, rtol=0)


def test_lambdas_and_bad_distance():
    weighted = DomainTripletLoss(lambda_ff2=2.0, lambda_f2b=0.0)
    # T(real_fg=ANCHOR, harm_fg=POSITIVE, comp_fg=NEGATIVE) = 4.1, doubled; the f2b term is switched off.
    assert weighted(ANCHOR, POSITIVE, NEGATIVE, ANCHOR).item() == pytest.approx(8.2, abs=1e-5)
    with pytest.raises(ValueError, match="'euclidean' or 'elementwise'"):
        DomainTripletLoss(distance="cosine")
