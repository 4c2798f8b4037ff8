"""Reading images and masks with errors that name the file, and writing images atomically.

The official code calls ``cv2.imread`` and lets a missing or broken file surface
as ``NoneType has no attribute ...`` deep inside the pipeline. Here every read
goes through :func:`read_image` / :func:`read_mask`, which

* decode exactly as ``cv2.imread`` does (same decoder, EXIF orientation applied),
  so pixels match the official pipeline bit for bit;
* refuse empty, truncated and corrupt files, and decompression bombs (a header
  that claims more than :data:`MAX_IMAGE_PIXELS` pixels) before decoding;
* accept the odd formats real users have: grayscale, RGBA (opaque alpha is
  dropped, as ``cv2.imread`` does), 16-bit, 1- or 3-channel and JPEG-stored masks.
"""
from __future__ import annotations

import os
import struct
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

from iharm.data.errors import DataError
from iharm.utils.files import atomic_open

#: Largest image, in pixels, that any reader accepts. A JPEG or PNG header can
#: claim up to 4 billion pixels in a few bytes; decoding that would exhaust
#: memory. 150 MP is six times the largest iHarmony4 photo (HAdobe5k, ~24 MP).
#: Override with the environment variable ``IHARM_MAX_IMAGE_PIXELS``.
MAX_IMAGE_PIXELS = int(os.environ.get("IHARM_MAX_IMAGE_PIXELS", 150_000_000))

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except IsADirectoryError:
        raise DataError(path, "is a directory, expected an image file") from None
    except OSError as exc:
        raise DataError(path, f"cannot be read ({exc.strerror or exc})") from None
    if not data:
        raise DataError(path, "empty file (0 bytes)")
    return data


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header without decoding; None if unknown."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if data[:2] == b"\xff\xd8":
        pos = 2
        while pos + 9 < len(data):
            if data[pos] != 0xFF:
                pos += 1
                continue
            marker = data[pos + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                pos += 2 if marker != 0xFF else 1
                continue
            (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
            # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC) carry the frame size.
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
                return width, height
            pos += 2 + length
    return None


def _check_complete(path: Path, data: bytes) -> None:
    """Refuse truncated JPEG / PNG files, which cv2 would decode as grey-filled images."""
    if data[:2] == b"\xff\xd8":
        # The end-of-image marker cannot occur inside entropy-coded data
        # (0xFF is byte-stuffed there), so its absence from the tail means truncation.
        if b"\xff\xd9" not in data[-4096:]:
            raise DataError(path, "truncated JPEG (no end-of-image marker)")
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        if b"IEND" not in data[-64:]:
            raise DataError(path, "truncated PNG (no IEND chunk)")


def _checked_bytes(path: Path) -> bytes:
    """The file's bytes, after refusing empty, oversized and truncated files."""
    data = _read_bytes(path)
    size = header_size(data)
    if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise DataError(
            path,
            f"header claims {size[0]}x{size[1]} pixels, above the limit of "
            f"{MAX_IMAGE_PIXELS} (IHARM_MAX_IMAGE_PIXELS); refusing to decode",
        )
    _check_complete(path, data)
    return data


def _decode(path: Path, data: bytes, flags: int) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None or image.size == 0:
        raise DataError(path, "not a decodable image (corrupt or unsupported format)")
    return image


def _png_has_alpha(data: bytes) -> bool:
    # IHDR colour type 4 (grey + alpha) or 6 (RGB + alpha).
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 25 and data[25] in (4, 6)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    raise TypeError(f"unsupported image dtype {image.dtype}")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as uint8 RGB, HxWx3, exactly as ``cv2.imread`` + BGR2RGB.

    Grayscale becomes three equal channels, 16-bit is reduced to 8 bits (the top
    byte, as cv2 does) and an alpha channel is dropped, but only when it is fully
    opaque: a transparent composite has no well-defined pixels there.
    """
    path = Path(path)
    data = _checked_bytes(path)
    if _png_has_alpha(data):
        raw = _decode(path, data, cv2.IMREAD_UNCHANGED)
        if raw.ndim == 3 and raw.shape[2] == 4:
            if _to_uint8(raw[:, :, 3]).min() < 255:
                raise DataError(path, "has transparent pixels (alpha < 255); flatten it onto a background first")
            return cv2.cvtColor(_to_uint8(raw), cv2.COLOR_BGRA2RGB)
    # IMREAD_COLOR reproduces cv2.imread exactly (EXIF rotation, gray->BGR, 16->8 bit).
    return cv2.cvtColor(_decode(path, data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a foreground mask as float32 HxW in [0, 1] (soft values kept).

    The official loader takes channel 0 of ``cv2.imread(mask)`` and divides by 255;
    that is what happens for 3-channel masks (JPEG-stored masks included). A
    1-channel mask is used as is, an RGBA mask uses its first colour channel,
    a 16-bit mask is divided by 65535. A mask whose greatest value is 1 (a
    common 0/1 label export) is binary, not a nearly empty soft mask: it is
    read as 0/1, with a :class:`BinaryMaskNote` warning naming the file.
    Every tool and the dataset loader read masks here, so the rule is one.
    """
    path = Path(path)
    # ANYDEPTH|ANYCOLOR keeps 16-bit and 1-channel masks and, unlike UNCHANGED,
    # applies EXIF rotation as the composite's reader does.
    raw = _decode(path, _checked_bytes(path), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if raw.ndim == 3:
        raw = raw[:, :, 0]
    if raw.dtype in (np.uint8, np.uint16):
        full = np.iinfo(raw.dtype).max
        if raw.max() == 1:  # a 0/1 label export, not a 1/255 soft mask
            warnings.warn(f"{path}: mask holds only 0 and 1; read as a binary mask (1 = foreground)",
                          BinaryMaskNote, stacklevel=2)
            full = 1
        return raw.astype(np.float32) / full
    if np.issubdtype(raw.dtype, np.floating):
        return np.clip(raw.astype(np.float32), 0.0, 1.0)
    raise DataError(path, f"unsupported mask pixel type {raw.dtype}")


class BinaryMaskNote(UserWarning):
    """A 0/1 mask was read as binary (the note every tool shows for such a file)."""


def mask_problem(foreground: np.ndarray, background: np.ndarray | None = None) -> str | None:
    """Why a mask cannot be harmonized or scored, or None: no foreground pixel, or no background
    pixel (``background`` defaults to ``~foreground``). One rule for every tool and the loader."""
    if not foreground.any():
        return "mask is empty: nothing to harmonize"
    if not (~foreground if background is None else background).any():
        return "mask covers the whole image: no background to harmonize against"
    return None


def encode_image(path: str | os.PathLike, image: np.ndarray, params: Sequence[int] = (), rgb: bool = True) -> bytes:
    """``image`` encoded as the extension of ``path`` (or a bare ``".jpg"``) says, in memory; DataError
    naming ``path`` if it cannot be.

    ``rgb``: a 3-channel image is RGB (converted to OpenCV's BGR); False: it is
    already BGR, or has one channel. Encoding first gives a reason where
    ``cv2.imwrite`` would return False (and write nothing) without one.
    """
    path = Path(path)
    suffix = path.suffix or path.name  # a bare ".jpg" is a suffix, not a hidden file
    try:
        ok, encoded = cv2.imencode(suffix, cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if rgb else image, list(params))
    except cv2.error:
        ok = False
    if not ok:
        raise DataError(path, f"cannot encode a {image.dtype} {image.shape} image as '{suffix}' "
                              f"(use one of {', '.join(IMAGE_EXTENSIONS)})")
    return encoded.tobytes()


def write_encoded(path: str | os.PathLike, data: bytes) -> None:
    """Write an encoded image atomically (temporary file, fsync, rename; the folder is created): an
    interrupted run never leaves a half-written image that a resumed run would take for a finished one."""
    with atomic_open(path) as handle:
        handle.write(data)


def jpeg_within(rgb: np.ndarray, max_bytes: int, qualities: Iterable[int] = range(95, 35, -5)) -> bytes | None:
    """The JPEG of ``rgb`` at the first of ``qualities`` whose file fits in ``max_bytes`` (None if none does)."""
    for quality in qualities:
        data = encode_image(".jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if len(data) <= max_bytes:
            return data
    return None


def write_image(path: str | os.PathLike, rgb: np.ndarray, jpeg_quality: int = 95) -> None:
    """Write a uint8 HxWx3 RGB image, encoded by the file extension, atomically (:func:`write_encoded`)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"write_image: expected a uint8 HxWx3 RGB array, got {rgb.dtype} {rgb.shape}")
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if Path(path).suffix.lower() in (".jpg", ".jpeg") else []
    write_encoded(path, encode_image(path, rgb, params))
