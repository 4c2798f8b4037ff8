"""Masks, transform families and the composite statistics of HSynth, on small real photos."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from iharm.data.hsynth import appearance, masks
from iharm.data.hsynth.stats import composite_stats


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return cv2.resize(data.chelsea(), (200, 150), interpolation=cv2.INTER_AREA)


def test_target_area_is_log_uniform_in_its_interval() -> None:
    rng = np.random.default_rng(0)
    areas = np.array([masks.sample_target_area(rng) for _ in range(4000)])
    low, high = masks.TARGET_AREA
    assert areas.min() >= low and areas.max() <= high
    # Log-uniform: the median is the geometric mean of the bounds, and log(area) is flat.
    assert np.median(areas) == pytest.approx(np.sqrt(low * high), rel=0.08)
    counts, _ = np.histogram(np.log(areas), bins=4)
    assert counts.min() > 0.8 * counts.mean()


def test_clean_mask_keeps_the_largest_component_without_holes() -> None:
    mask = np.zeros((100, 100), bool)
    mask[10:60, 10:60] = True
    mask[30:35, 30:35] = False  # a hole
    mask[80:85, 80:85] = True  # a second, smaller component
    cleaned = masks.clean_mask(mask)
    assert cleaned[32, 32] and not cleaned[82, 82]
    assert cleaned[10:60, 10:60].mean() > 0.95 and cleaned.sum() < 2600


@pytest.mark.parametrize("kind", masks.MASK_KINDS)
def test_every_mask_kind_gives_a_binary_mask_of_acceptable_area(photo: np.ndarray, kind: str) -> None:
    rng = np.random.default_rng(3)
    silhouette = np.zeros((40, 30), bool)
    silhouette[5:35, 8:22] = True
    for _ in range(3):
        mask, made, params = masks.make_mask(photo, rng, kind, silhouette)
        assert mask.shape == photo.shape[:2] and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
        assert masks.ACCEPT_AREA[0] <= np.mean(mask > 0) <= masks.ACCEPT_AREA[1]
        assert made in (kind, "blob") and params["requested"] == kind


def test_area_targeted_masks_meet_their_target(photo: np.ndarray) -> None:
    rng = np.random.default_rng(5)
    for target in (0.05, 0.2, 0.4):
        blob, _ = masks.blob_mask(photo.shape[:2], rng, target)
        assert blob.mean() == pytest.approx(target, rel=0.15)
        region, _ = masks.region_mask(photo, rng, target)
        assert region.mean() >= 0.8 * target  # grown superpixel by superpixel up to the target


def test_make_mask_is_deterministic_given_the_generator(photo: np.ndarray) -> None:
    first = masks.make_mask(photo, np.random.default_rng(11), "object")
    cv2.setRNGSeed(12345)  # cv2's own RNG state must not matter
    second = masks.make_mask(photo, np.random.default_rng(11), "object")
    assert np.array_equal(first[0], second[0]) and first[2] == second[2]


@pytest.mark.parametrize("family", appearance.FAMILIES, ids=lambda f: f.name)
def test_families_change_the_image_within_range_and_reproducibly(photo: np.ndarray, family) -> None:
    image = photo.astype(np.float32) / 255.0
    foreground = np.zeros(photo.shape[:2], bool)
    foreground[40:110, 50:150] = True
    reference = cv2.resize(data.coffee(), (120, 90)).astype(np.float32) / 255.0 if family.needs_reference else None
    out, params = family.apply(image, foreground, np.random.default_rng(2), reference)
    again, params_again = family.apply(image, foreground, np.random.default_rng(2), reference)
    assert out.shape == image.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.array_equal(out, again) and params == params_again
    assert np.abs(out[foreground] - image[foreground]).mean() > 1e-3
    if family.name == "lut3d":
        assert params["sigma"] <= 0.12


def test_family_weights_and_choice() -> None:
    rng = np.random.default_rng(0)
    drawn = [appearance.choose_family(rng).name for _ in range(3000)]
    weights = {f.name: f.weight for f in appearance.FAMILIES}
    total = sum(weights.values())
    for name, weight in weights.items():
        assert drawn.count(name) / len(drawn) == pytest.approx(weight / total, abs=0.03)


def _lab_patch(lightness: float, chroma: float, hue_degrees: float) -> np.ndarray:
    a = chroma * np.cos(np.radians(hue_degrees))
    b = chroma * np.sin(np.radians(hue_degrees))
    lab = np.full((8, 8, 3), (lightness, a, b), np.float32)
    return np.clip(cv2.cvtColor(lab, cv2.COLOR_Lab2RGB), 0, 1)


def test_mean_hue_shift_measures_the_hue_angle_between_mean_colours() -> None:
    foreground = np.ones((8, 8), bool)
    before, after = _lab_patch(60, 30, 40), _lab_patch(60, 30, 62)
    assert appearance.mean_hue_shift(before, after, foreground) == pytest.approx(22.0, abs=1.0)
    # Across the +-180 degree seam the shortest angle counts.
    assert appearance.mean_hue_shift(_lab_patch(60, 30, 175), _lab_patch(60, 30, -175), foreground) == pytest.approx(10.0, abs=1.0)
    # A grey has no hue: no shift can be measured, whatever the other colour.
    assert appearance.mean_hue_shift(_lab_patch(60, 2, 0), after, foreground) == 0.0


def test_composite_stats_match_a_hand_computation() -> None:
    real = np.full((256, 256, 3), 100, np.uint8)
    composite = real.copy()
    mask = np.zeros((256, 256), np.uint8)
    mask[:, :128] = 255
    composite[:, :128] = 110  # +10 on every channel of the foreground
    stats = composite_stats(composite, real, mask)
    assert stats["fmse"] == pytest.approx(100.0, rel=1e-6)  # 10^2 inside
    assert stats["mse"] == pytest.approx(50.0)  # half the image
    assert stats["psnr"] == pytest.approx(10 * np.log10(100.0**2 / 50.0), abs=1e-4)  # the target's own max: 100
    assert composite_stats(composite, real, mask.astype(np.float32) / 255)["fmse"] == pytest.approx(100.0, rel=1e-6)
