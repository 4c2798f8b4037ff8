"""Foreground appearance changes for HSynth, one function per transform family.

iHarmony4 made its composites by changing only the foreground of a real photo:
colour transfer from another object (HCOCO, HFlickr), another expert's retouch
(HAdobe5k), another time of day (Hday2night). The families below imitate those
changes on RGB float images in [0, 1]:

============== ===============================================================
reinhard       Lab mean/std transfer from a region of a reference photo
histmatch      per-channel histogram matching to a reference region
retouch        exposure, white balance, gamma and saturation (a random subset)
curves         smooth monotone per-channel tone curves
lut3d          a smooth random 3D colour LUT (kept natural: sigma <= 0.12)
illumination   another light: colour temperature, intensity, light hardness
gain_field     a smooth spatial gain field (uneven light across the object)
============== ===============================================================

Every family is a function ``(image, foreground, rng, reference) -> (changed
image, params)``: ``image`` is HxWx3 float32 in [0, 1], ``foreground`` a
boolean HxW mask (statistics are taken over it), ``reference`` an RGB float
image or None, and ``params`` a JSON-serialisable record of what was drawn.
The changed image covers the whole frame; the builder keeps its foreground.

Strengths were calibrated on the 285-photo pool (fMSE at 256 px, see the
builder's report); the ranges aim at iHarmony4's composite statistics.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import cv2
import numpy as np
from scipy.interpolate import PchipInterpolator
from scipy.ndimage import gaussian_filter, map_coordinates

Params = dict[str, Any]
FamilyFn = Callable[[np.ndarray, np.ndarray, np.random.Generator, "np.ndarray | None"], tuple[np.ndarray, Params]]


def _r(value: float) -> float:
    """Round a drawn parameter for the meta table (the exact value is re-drawn from the seed)."""
    return round(float(value), 4)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """sRGB transfer function inverse, elementwise on [0, 1]."""
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """sRGB transfer function on linear values, clipped to [0, 1]."""
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(x, 1 / 2.4) - 0.055).astype(np.float32)


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """A strength drawn log-uniformly in [low, high].

    Log-uniform strengths give many mild changes and a tail of strong ones, the
    shape of iHarmony4's composite errors (its mean fMSE is 1387 while its mean
    PSNR, 31.6 dB, needs most composites to be close to their real image).
    """
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _signed(rng: np.random.Generator, low: float, high: float) -> float:
    """A log-uniform magnitude in [low, high] with a random sign: never near zero."""
    return _log_uniform(rng, low, high) * float(rng.choice((-1.0, 1.0)))


def reference_region(reference: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    """Pixels (Nx3) of a random crop (30-100 % of the area) of ``reference``.

    Colour transfer in iHarmony4 took its statistics from another *object*;
    a crop gives statistics of a part of a scene rather than of a whole photo.
    """
    height, width = reference.shape[:2]
    area = rng.uniform(0.3, 1.0)
    aspect = float(np.exp(rng.uniform(-0.4, 0.4)))
    crop_w = int(np.clip(round(width * np.sqrt(area) * aspect), 8, width))
    crop_h = int(np.clip(round(height * np.sqrt(area) / aspect), 8, height))
    x0 = int(rng.integers(0, width - crop_w + 1))
    y0 = int(rng.integers(0, height - crop_h + 1))
    crop = reference[y0:y0 + crop_h, x0:x0 + crop_w].reshape(-1, 3)
    return crop, {"crop": [_r(x0 / width), _r(y0 / height), _r(crop_w / width), _r(crop_h / height)]}


def _lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb.reshape(-1, 1, 3).astype(np.float32), cv2.COLOR_RGB2Lab).reshape(rgb.shape)


def _rgb(lab: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(lab.reshape(-1, 1, 3).astype(np.float32), cv2.COLOR_Lab2RGB).reshape(lab.shape)


def reinhard(image: np.ndarray, foreground: np.ndarray, rng: np.random.Generator,
             reference: np.ndarray | None) -> tuple[np.ndarray, Params]:
    """Reinhard et al. (2001) colour transfer in Lab, blended by ``alpha`` with the original."""
    if reference is None:
        raise ValueError("reinhard needs a reference image")
    target, params = reference_region(reference, rng)
    alpha = _log_uniform(rng, 0.2, 1.0)
    lab = _lab(image)
    source = lab[foreground]
    ref = _lab(target)
    mu_s, sd_s = source.mean(0), source.std(0) + 1e-3
    mu_r, sd_r = ref.mean(0), ref.std(0) + 1e-3
    # A near-flat region would multiply noise by a large factor: bound the contrast change.
    ratio = np.clip(sd_r / sd_s, 0.5, 2.0)
    moved = (lab - mu_s) * ratio + mu_r
    out = _rgb(lab + alpha * (moved - lab))
    params.update(alpha=_r(alpha))
    return np.clip(out, 0.0, 1.0), params


def histmatch(image: np.ndarray, foreground: np.ndarray, rng: np.random.Generator,
              reference: np.ndarray | None) -> tuple[np.ndarray, Params]:
    """Per-channel RGB histogram matching of the foreground to a reference region, blended by ``alpha``."""
    if reference is None:
        raise ValueError("histmatch needs a reference image")
    target, params = reference_region(reference, rng)
    alpha = _log_uniform(rng, 0.2, 0.9)
    levels = np.linspace(0.0, 1.0, 101)
    out = np.empty_like(image)
    for c in range(3):
        # Quantile mapping: value -> its quantile in the foreground -> that quantile of the reference.
        source_q = np.quantile(image[..., c][foreground], levels)
        target_q = np.quantile(target[:, c], levels)
        source_q = np.maximum.accumulate(source_q + levels * 1e-6)  # strictly increasing for interp
        out[..., c] = np.interp(image[..., c], source_q, target_q)
    params.update(alpha=_r(alpha))
    return np.clip(image + alpha * (out - image), 0.0, 1.0), params


def retouch(image: np.ndarray, foreground: np.ndarray, rng: np.random.Generator,
            reference: np.ndarray | None = None) -> tuple[np.ndarray, Params]:
    """A random subset (at least one) of exposure, white balance, gamma and saturation edits."""
    ops = [op for op in ("exposure", "white_balance", "gamma", "saturation") if rng.random() < 0.5]
    if not ops:
        ops = [str(rng.choice(("exposure", "white_balance", "gamma", "saturation")))]
    params: Params = {}
    linear = srgb_to_linear(image)
    if "exposure" in ops:
        params["ev"] = _r(_signed(rng, 0.1, 1.0))
        linear = linear * np.float32(2.0 ** params["ev"])
    if "white_balance" in ops:
        # Temperature moves red against blue, tint moves green against magenta (log2 gains).
        temperature, tint = _signed(rng, 0.05, 0.45), rng.uniform(-0.1, 0.1)
        gains = 2.0 ** np.array([temperature, tint, -temperature], np.float32)
        params.update(temperature=_r(temperature), tint=_r(tint))
        linear = linear * gains
    out = linear_to_srgb(linear)
    if "gamma" in ops:
        params["gamma"] = _r(2.0 ** _signed(rng, 0.08, 0.7))
        out = out ** np.float32(params["gamma"])
    if "saturation" in ops:
        params["saturation"] = _r(2.0 ** _signed(rng, 0.15, 0.9))
        grey = out @ np.array([0.299, 0.587, 0.114], np.float32)
        out = grey[..., None] + (out - grey[..., None]) * np.float32(params["saturation"])
    params["ops"] = ops
    return np.clip(out, 0.0, 1.0), params


def _monotone_curve(knots_y: np.ndarray) -> np.ndarray:
    """A 256-entry monotone curve through evenly spaced knots (PCHIP keeps it monotone)."""
    knots_x = np.linspace(0.0, 1.0, len(knots_y))
    return PchipInterpolator(knots_x, knots_y)(np.linspace(0.0, 1.0, 256)).astype(np.float32)


def _apply_curves(image: np.ndarray, curves: np.ndarray) -> np.ndarray:
    index = np.clip(image * 255.0, 0, 255)
    low = np.floor(index).astype(np.int32)
    high = np.minimum(low + 1, 255)
    frac = index - low
    out = np.empty_like(image)
    for c in range(3):
        out[..., c] = curves[c][low[..., c]] * (1 - frac[..., c]) + curves[c][high[..., c]] * frac[..., c]
    return out


def curves(image: np.ndarray, foreground: np.ndarray, rng: np.random.Generator,
           reference: np.ndarray | None = None) -> tuple[np.ndarray, Params]:
    """Smooth monotone tone curves: a shared luminance curve plus a per-channel one.

    Interior knots at 1/4, 1/2, 3/4 move by N(0, sigma); end points move a
    little (black and white points), so that curves change contrast and colour.
    """
    sigma = _log_uniform(rng, 0.04, 0.24)
    identity = np.linspace(0.0, 1.0, 5)
    shared = rng.normal(0.0, sigma, 5) * np.array([0.3, 1, 1, 1, 0.3])
    per_channel = rng.normal(0.0, sigma * 0.6, (3, 5)) * np.array([0.3, 1, 1, 1, 0.3])
    knots = np.clip(identity + shared + per_channel, 0.0, 1.0)
    knots = np.maximum.accumulate(knots, axis=1)  # monotone: never invert tones
    table = np.stack([_monotone_curve(k) for k in knots])
    return np.clip(_apply_curves(image, table), 0.0, 1.0), {"sigma": _r(sigma), "knots": np.round(knots, 4).tolist()}


def lut3d(image: np.ndarray, foreground: np.ndarray, rng: np.random.Generator,
          reference: np.ndarray | None = None) -> tuple[np.ndarray, Params]:
    """A smooth random 3D LUT: identity on a 9^3 grid plus smoothed N(0, sigma) offsets.

    sigma <= 0.12: stronger LUTs make colours no camera or photographer would.
    """
    sigma = _log_uniform(rng, 0.05, 0.12)
    size = 9
    grid = np.stack(np.meshgrid(*[np.linspace(0.0, 1.0, size)] * 3, indexing="ij"), -1)
    offsets = rng.normal(0.0, 1.0, (size, size, size, 3))
    # Smoothing over the grid keeps neighbouring colours together (no posterised jumps);
    # the rescale gives the smoothed offsets a standard deviation of sigma again.
    offsets = np.stack([gaussian_filter(offsets[..., c], 1.5, mode="nearest") for c in range(3)], -1)
    offsets *= sigma / (offsets.std() + 1e-8)
    table = np.clip(grid + offsets, 0.0, 1.0).astype(np.float32)
    coords = (image.reshape(-1, 3) * (size - 1)).T
    out = np.stack([map_coordinates(table[..., c], coords, order=1, mode="nearest") for c in range(3)], -1)
    return np.clip(out.reshape(image.shape), 0.0, 1.0), {"sigma": _r(sigma), "grid": size}


def _blackbody_rgb(kelvin: float) -> np.ndarray:
    """Linear RGB of a blackbody at ``kelvin``, normalised to green = 1 (Helland's fit, 1000-40000 K)."""
    t = kelvin / 100.0
    red = 255.0 if t <= 66 else 329.698727446 * (t - 60) ** -0.1332047592
    green = 99.4708025861 * np.log(t) - 161.1195681661 if t <= 66 else 288.1221695283 * (t - 60) ** -0.0755148492
    blue = 255.0 if t >= 66 else (0.0 if t <= 19 else 138.5177312231 * np.log(t - 10) - 305.0447927307)
    rgb = srgb_to_linear(np.clip(np.array([red, green, blue], np.float32), 0, 255) / 255.0)
    return rgb / rgb[1]


def illumination(image: np.ndarray, foreground: np.ndarray, rng: np.random.Generator,
                 reference: np.ndarray | None = None) -> tuple[np.ndarray, Params]:
    """The foreground lit by another light: a colour temperature change (von Kries gains
    from blackbody colours), an intensity change and a harder or softer light (a power
    on linear values around the foreground's mean), as between times of day."""
    scene_k = rng.uniform(4500, 7000)
    new_k = float(np.clip(scene_k * 2.0 ** _signed(rng, 0.15, 1.0), 2000, 15000))
    gains = _blackbody_rgb(new_k) / _blackbody_rgb(scene_k)
    ev = rng.uniform(-0.9, 0.45)
    hardness = 2.0 ** rng.uniform(-0.4, 0.4)
    linear = srgb_to_linear(image)
    pivot = float(linear[foreground].mean()) + 1e-4
    linear = pivot * (np.maximum(linear, 0.0) / pivot) ** hardness
    linear = linear * gains.astype(np.float32) * np.float32(2.0 ** ev)
    params = {"from_kelvin": round(scene_k), "to_kelvin": round(new_k), "ev": _r(ev), "hardness": _r(hardness)}
    return linear_to_srgb(linear), params


def gain_field(image: np.ndarray, foreground: np.ndarray, rng: np.random.Generator,
               reference: np.ndarray | None = None) -> tuple[np.ndarray, Params]:
    """A smooth multiplicative field over the frame: light falling off across the object,
    with a little colour in it. Log2 gains from a 3x3 random grid, bicubically upsampled."""
    amplitude = _log_uniform(rng, 0.2, 1.2)
    colour = rng.uniform(0.05, 0.2)
    offset = _signed(rng, 0.1, 0.7)
    height, width = image.shape[:2]
    coarse = rng.normal(0.0, 1.0, (3, 3, 1)) * amplitude + rng.normal(0.0, 1.0, (3, 3, 3)) * colour + offset
    field = cv2.resize(coarse.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    linear = srgb_to_linear(image) * np.exp2(field)
    params = {"amplitude": _r(amplitude), "colour": _r(colour), "offset": _r(offset)}
    return linear_to_srgb(linear), params


@dataclass(frozen=True)
class Family:
    """A transform family: its function, its share of the composites, and whether it needs a reference."""

    name: str
    apply: FamilyFn
    weight: float
    needs_reference: bool = False


FAMILIES: tuple[Family, ...] = (
    Family("reinhard", reinhard, 0.2, needs_reference=True),
    Family("histmatch", histmatch, 0.15, needs_reference=True),
    Family("retouch", retouch, 0.15),
    Family("curves", curves, 0.15),
    Family("lut3d", lut3d, 0.08),
    Family("illumination", illumination, 0.15),
    Family("gain_field", gain_field, 0.1),
)


def choose_family(rng: np.random.Generator, families: tuple[Family, ...] = FAMILIES) -> Family:
    """A family drawn with probability proportional to its weight."""
    weights = np.array([family.weight for family in families])
    return families[int(rng.choice(len(families), p=weights / weights.sum()))]


def mean_hue_shift(before: np.ndarray, after: np.ndarray, foreground: np.ndarray,
                   min_chroma: float = 12.0) -> float:
    """Degrees between the hue angles of the foreground's mean Lab colour before and after.

    0 when either mean colour is nearly grey (chroma < ``min_chroma``): its hue
    is then not defined and no hue can look wrong.
    """
    means = []
    for rgb in (before, after):
        lab = _lab(rgb[foreground].astype(np.float32))
        means.append(lab.mean(0))
    (_, a0, b0), (_, a1, b1) = means
    if np.hypot(a0, b0) < min_chroma or np.hypot(a1, b1) < min_chroma:
        return 0.0
    delta = np.degrees(np.arctan2(b1, a1) - np.arctan2(b0, a0))
    return float(abs((delta + 180.0) % 360.0 - 180.0))
