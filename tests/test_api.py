"""The one-call API (iharm.Harmonizer, iharm.harmony_score) on real files: the same pixels as the
command-line tools, every input form, and a clear error for every bad input before the network runs."""
from __future__ import annotations

import doctest
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import iharm
from iharm import api
from iharm.data.io import read_image, read_mask
from test_evaluate import load_script
from test_predict_for_dir import checkpoint  # noqa: F401 (the seeded iSSAM weights fixture)

predict_for_dir = load_script("predict_for_dir")
IMAGE, MASK = "composites_no_gt/bargainnet_example_1.png", "composites_no_gt/bargainnet_example_1_mask.png"


@pytest.fixture(scope="module")
def harmonizer(checkpoint: Path) -> api.Harmonizer:
    return iharm.Harmonizer("iSSAM", checkpoint, device="cpu")


def test_the_api_gives_the_pixels_predict_for_dir_writes(shared_data: Path, checkpoint: Path,
                                                         harmonizer: api.Harmonizer, tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    assert predict_for_dir.main(["iSSAM", str(checkpoint), "--gpu", "cpu", "--image", str(shared_data / IMAGE),
                                 "--mask", str(shared_data / MASK), "--output", str(out)]) == 0
    expected = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    result = harmonizer(shared_data / IMAGE, shared_data / MASK)
    assert result.dtype == np.uint8 and result.shape == expected.shape
    assert np.array_equal(result, expected)
    # the background (mask <= 100/255 after the official threshold) is the input, bit for bit
    image, mask = read_image(shared_data / IMAGE), read_mask(shared_data / MASK)
    background = mask <= np.float32(100 / 255)
    assert np.array_equal(result[background], image[background])
    assert not np.array_equal(result[~background], image[~background])


def test_every_input_form_gives_the_same_result(shared_data: Path, harmonizer: api.Harmonizer) -> None:
    image, mask = read_image(shared_data / IMAGE), read_mask(shared_data / MASK)
    expected = harmonizer(str(shared_data / IMAGE), str(shared_data / MASK))
    mask_u8 = np.rint(mask * 255).astype(np.uint8)
    forms = [(image, mask), (Image.fromarray(image), Image.fromarray(mask_u8)), (image, mask_u8),
             (image, mask > 100 / 255), (image, mask_u8[..., None])]
    for form_image, form_mask in forms:
        assert np.array_equal(harmonizer(form_image, form_mask), expected)
    # batch and iterator forms, images of different sizes
    small = cv2.resize(image, (200, 120), interpolation=cv2.INTER_AREA)
    small_mask = cv2.resize(mask, (200, 120), interpolation=cv2.INTER_NEAREST)
    batch = harmonizer.batch([image, small], [mask, small_mask])
    streamed = list(harmonizer.harmonize_many([(image, mask), (small, small_mask)]))
    assert np.array_equal(batch[0], expected) and batch[1].shape == (120, 200, 3)
    assert all(np.array_equal(a, b) for a, b in zip(batch, streamed))


@pytest.mark.parametrize("image, mask, message", [
    (np.zeros((40, 50, 3), np.float32), np.ones((40, 50), bool), "dtype float32; expected uint8"),
    (np.zeros((40, 50, 4), np.uint8), np.ones((40, 50), bool), r"shape \(40, 50, 4\); expected HxWx3"),
    (np.zeros((40, 50), np.uint8), np.ones((40, 50), bool), r"expected HxWx3 RGB \(3 channels\)"),
    (np.zeros((40, 50, 3), np.uint8), np.ones((40, 60), bool), "mask: 60x40 does not match the image 50x40"),
    (np.zeros((40, 50, 3), np.uint8), np.ones((40, 50, 3), np.uint8), r"mask: shape \(40, 50, 3\); expected HxW"),
    (np.zeros((40, 50, 3), np.uint8), np.full((40, 50), 2.0), r"float values must lie in \[0, 1\]"),
    (np.zeros((40, 50, 3), np.uint8), np.ones((40, 50), np.int64), "dtype int64"),
    (np.zeros((40, 50, 3), np.uint8), np.zeros((40, 50), bool), "mask is empty: nothing to harmonize"),
    (np.zeros((40, 50, 3), np.uint8), np.ones((40, 50), bool), "mask covers the whole image"),
    ([[1, 2, 3]], np.ones((1, 1), bool), "expected a path, a PIL image or a numpy array, got list"),
])
def test_bad_input_is_refused_with_a_message_that_names_it(harmonizer: api.Harmonizer, image, mask,
                                                          message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args, **kwargs):
        raise AssertionError("the network ran on bad input")

    monkeypatch.setattr(harmonizer.predictor, "predict", never)
    with pytest.raises(ValueError, match=message):
        harmonizer(image, mask)


def test_bad_settings_are_refused_before_anything_loads(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="Nope"):
        api.Harmonizer("Nope", checkpoint)
    with pytest.raises(ValueError, match="precision 'fp64'"):
        api.Harmonizer("iSSAM", checkpoint, precision="fp64")
    with pytest.raises(ValueError, match="mask_threshold 1.5"):
        api.Harmonizer("iSSAM", checkpoint, mask_threshold=1.5)
    with pytest.raises(ValueError, match="device 'gpu7'"):
        api.Harmonizer("iSSAM", checkpoint, device="gpu7")
    with pytest.raises(ValueError, match="harmony_score needs BargainNet weights"):
        api.Harmonizer("iSSAM", checkpoint, device="cpu").harmony_score(np.zeros((8, 8, 3), np.uint8),
                                                                       np.eye(8, dtype=bool))
    if not (api.SHIPPED_DIR / "BargainNet_hsynth.pth").exists():
        with pytest.raises(ValueError, match="no checkpoint given and none shipped for BargainNet"):
            api.harmony_score(np.zeros((8, 8, 3), np.uint8), np.eye(8, dtype=bool))


def test_harmony_score_matches_the_official_repository_example(shared_data: Path, reference_dir: Path,
                                                              checkpoint: Path, tmp_path: Path) -> None:
    """BargainNet's example 1 with the official E: the official script printed 0.98 (d = 0.430395)."""
    vector = torch.load(reference_dir / "bargainnet_vector.pt", weights_only=True)
    encoder = tmp_path / "latest_net_E.pth"
    torch.save(vector["state_dict_E"], encoder)
    result = iharm.harmony_score(shared_data / IMAGE, shared_data / MASK, checkpoint=encoder, device="cpu")
    assert result.inharmony_level == pytest.approx(0.430395, abs=1e-5)
    assert result.rounded_score == vector["harmony_score"]["repo_example_1"]["score"] == 0.98
    # the same through a Harmonizer that scores with those weights, with the mask as an array
    mask = np.rint(read_mask(shared_data / MASK) * 255).astype(np.uint8)
    harmonizer = api.Harmonizer("iSSAM", checkpoint, device="cpu", score_checkpoint=encoder)
    again = harmonizer.harmony_score(read_image(shared_data / IMAGE), mask)
    assert again.inharmony_level == pytest.approx(result.inharmony_level, abs=1e-6)


def test_the_docstring_example_runs() -> None:
    if not (api.SHIPPED_DIR / "DucoNet_hsynth.pth").is_file():
        pytest.skip(f"the example uses the shipped DucoNet weights, and {api.SHIPPED_DIR} holds none")
    failures, tried = doctest.testmod(api, optionflags=doctest.NORMALIZE_WHITESPACE)[:2]
    assert tried >= 8 and failures == 0
