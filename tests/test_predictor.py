"""Predictor: any input size, official padding / normalisation / clamping, flip TTA, batching.

Expectations are written out independently: the official output of the
reference vector, the official PadToDivisor geometry (top = pad // 2), the
ImageNet formula, OpenCV's Lab of the black padding.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from iharm.inference.predictor import Predictor
from iharm.model.duconet import DucoNet_model
from iharm.model.issam import SSAMImageHarmonization
from iharm.model.registry import get_model_spec

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
ATOL_255 = 1e-3  # 1e-5 in normalised units is ~1e-3 on the 0..255 scale


def to_0_255(normalised: torch.Tensor) -> torch.Tensor:
    return ((normalised * STD + MEAN) * 255).clamp(0, 255)


def nchw(array_nhwc) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(array_nhwc)).permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def vector(reference_dir):
    return torch.load(reference_dir / "duconet256_vector.pt", weights_only=True)


@pytest.fixture(scope="module")
def model(vector):
    net = DucoNet_model()
    net.load_state_dict(vector["state_dict"], strict=True)
    return net.eval()


@pytest.fixture(scope="module")
def predictor(model):
    return Predictor(model, get_model_spec("DucoNet"))


@pytest.fixture(scope="module")
def uint8_inputs(vector):
    raw = vector["inputs_uint8"]
    return nchw(raw["comp_rgb"]), vector["inputs"]["mask"], nchw(raw["comp_lab_cv2"])


@pytest.fixture(scope="module")
def batch_prediction(predictor, uint8_inputs):
    return predictor.predict_batch(*uint8_inputs)


class ModelCall:
    """Records the keyword inputs and the output of every forward of a model."""

    def __init__(self, model):
        self.inputs, self.outputs = [], []
        self._handles = [
            model.register_forward_pre_hook(lambda _m, _a, kwargs: self.inputs.append(dict(kwargs)),
                                            with_kwargs=True),
            model.register_forward_hook(lambda _m, _a, output: self.outputs.append(output["images"])),
        ]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()


def test_multiple_of_32_gives_the_official_output(batch_prediction, vector):
    assert batch_prediction.dtype == torch.float32 and batch_prediction.shape == (2, 3, 256, 256)
    torch.testing.assert_close(batch_prediction, to_0_255(vector["output"]), atol=ATOL_255, rtol=0)


def test_batched_equals_per_image(predictor, batch_prediction, vector):
    raw = vector["inputs_uint8"]
    for i in range(2):
        single = predictor.predict(raw["comp_rgb"][i].numpy(), vector["inputs"]["mask"][i, 0].numpy(),
                                   raw["comp_lab_cv2"][i].numpy())
        assert single.dtype == np.float32 and single.shape == (256, 256, 3)
        np.testing.assert_allclose(single, batch_prediction[i].permute(1, 2, 0).numpy(), atol=ATOL_255, rtol=0)


def test_any_size_is_padded_like_the_official_predictor(predictor, model, vector):
    height, width = 250, 333
    image = cv2.resize(vector["inputs_uint8"]["comp_rgb"][1].numpy(), (width, height), interpolation=cv2.INTER_LINEAR)
    mask = cv2.resize(vector["inputs"]["mask"][1, 0].numpy(), (width, height), interpolation=cv2.INTER_LINEAR)
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2Lab)
    with ModelCall(model) as call:
        prediction = predictor.predict(image, mask, lab)
    assert prediction.shape == (height, width, 3) and prediction.dtype == np.float32
    assert prediction.min() >= 0 and prediction.max() <= 255

    # PadToDivisor(32): 250 -> 256 (top 3, bottom 3), 333 -> 352 (left 9, right 10), zeros in uint8 space.
    top, left = 3, 9
    padded_rgb = np.zeros((256, 352, 3), np.uint8)
    padded_rgb[top:top + height, left:left + width] = image
    padded_mask = np.zeros((256, 352), np.float32)
    padded_mask[top:top + height, left:left + width] = mask
    seen = call.inputs[0]
    expected_image = (nchw(padded_rgb[None]).float() / 255 - MEAN) / STD
    torch.testing.assert_close(seen["image"], expected_image, atol=1e-6, rtol=0)
    assert torch.equal(seen["mask"], torch.from_numpy(padded_mask)[None, None])
    # Lab is padded with the same geometry, as the OpenCV Lab of the padded (black) RGB image.
    expected_lab = nchw(cv2.cvtColor(padded_rgb, cv2.COLOR_RGB2Lab)[None]).float() / 255
    assert torch.equal(seen["image_lab"], expected_lab)

    cropped = call.outputs[0][:, :, top:top + height, left:left + width]
    expected = to_0_255(cropped)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(prediction, expected, atol=ATOL_255, rtol=0)


def test_flip_tta_is_the_mean_of_the_two_predictions(model, vector, uint8_inputs):
    images, masks, labs = (x[:1] for x in uint8_inputs)
    flipping = Predictor(model, get_model_spec("DucoNet"), with_flip=True)
    with ModelCall(model) as call:
        prediction = flipping.predict_batch(images, masks, labs)
    seen = call.inputs[0]
    for name in ("image", "mask", "image_lab"):  # the official TTA forgot to flip Lab
        assert torch.equal(seen[name][1], seen[name][0].flip(-1)), name

    inputs = vector["inputs"]
    with torch.no_grad():
        mirrored = model(inputs["image"][:1].flip(-1), inputs["mask"][:1].flip(-1),
                         image_lab=inputs["image_lab"][:1].flip(-1))["images"]
    expected = to_0_255(0.5 * (vector["output"][:1] + mirrored.flip(-1)))
    torch.testing.assert_close(prediction, expected, atol=ATOL_255, rtol=0)


def test_runs_in_eval_mode_and_restores_the_mode(model, uint8_inputs):
    images, masks, labs = (x[:1, :, :40, :48] for x in uint8_inputs)
    running_mean = model.encoder.blocks_connected.block2.convs.block[0].block[1].running_mean.clone()
    model.train()
    try:
        Predictor(model, get_model_spec("DucoNet")).predict_batch(images, masks, labs)
        assert model.training
        # it ran in eval mode: the BatchNorm running statistics are untouched
        assert torch.equal(model.encoder.blocks_connected.block2.convs.block[0].block[1].running_mean, running_mean)
    finally:
        model.eval()


def test_missing_or_mismatched_lab_is_a_clear_error(predictor, uint8_inputs):
    images, masks, labs = uint8_inputs
    with pytest.raises(ValueError, match="needs the Lab image"):
        predictor.predict_batch(images, masks)
    with pytest.raises(ValueError, match="images_lab must be uint8"):
        predictor.predict_batch(images, masks, labs[:, :, :128])
    with pytest.raises(ValueError, match="masks must be float"):
        predictor.predict_batch(images, masks[:, 0])


def test_issam_without_lab_at_an_odd_size():
    torch.manual_seed(0)
    model = SSAMImageHarmonization().eval()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 45, 3), dtype=np.uint8)
    mask = (rng.random((37, 45)) > 0.5).astype(np.float32)
    prediction = Predictor(model, get_model_spec("iSSAM")).predict(image, mask)

    # 37 -> 64 (top 13, bottom 14), 45 -> 64 (left 9, right 10)
    padded = np.pad(image, ((13, 14), (9, 10), (0, 0)))
    padded_mask = np.pad(mask, ((13, 14), (9, 10)))
    with torch.no_grad():
        output = model((nchw(padded[None]).float() / 255 - MEAN) / STD,
                       torch.from_numpy(padded_mask)[None, None])["images"]
    expected = to_0_255(output[:, :, 13:50, 9:54])[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(prediction, expected, atol=ATOL_255, rtol=0)


class _PrecisionRecorder(torch.nn.Module):
    """Returns its input and records the TF32 switches it ran under: (cuDNN, matmul)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, image, mask, **_):
        self.seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
        return {"images": image}


@pytest.mark.parametrize("precision, tf32_during_the_call", [("float32", False), ("bf16", True)])
def test_float32_is_computed_without_tf32_and_the_setting_is_restored(precision, tf32_during_the_call):
    """cuDNN's default TF32 would make the exact 'float32' mode inexact on Ampere+ GPUs (issue 19, item 8)."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        recorder = _PrecisionRecorder()
        image = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
        predictor = Predictor(recorder, get_model_spec("iSSAM"), precision=precision)
        predictor.predict_batch(image, torch.zeros(1, 1, 32, 32))
        assert recorder.seen == [(tf32_during_the_call, tf32_during_the_call)]
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (True, True)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
