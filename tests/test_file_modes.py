"""Written files get the permissions ``open()`` would give them: users, groups and other tools can read
the predictions, images and checkpoints (a temporary file from mkstemp is 0600 until told otherwise)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from iharm.data.io import write_image
from iharm.model.checkpoints import save_atomic
from iharm.utils.files import atomic_open


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _writers(folder: Path):
    image = np.zeros((4, 5, 3), np.uint8)
    return {
        "raw": (folder / "raw.bin", _raw),
        "png": (folder / "image.png", lambda p: write_image(p, image)),
        "jpg": (folder / "image.jpg", lambda p: write_image(p, image)),
        "checkpoint": (folder / "weights.pth", lambda p: save_atomic({"w": torch.zeros(2)}, p)),
    }


def _raw(path: Path) -> None:
    with atomic_open(path) as handle:
        handle.write(b"data")


@pytest.fixture
def umask():
    previous = os.umask(0o022)
    os.umask(previous)

    def set_umask(value: int) -> None:
        os.umask(value)

    yield set_umask
    os.umask(previous)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_new_files_get_0666_less_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    for name, (path, write) in _writers(tmp_path).items():
        write(path)
        assert _mode(path) == expected, name


def test_a_replaced_file_keeps_its_own_mode(tmp_path, umask):
    umask(0o022)
    for name, (path, write) in _writers(tmp_path).items():
        path.write_bytes(b"old")
        path.chmod(0o640)
        write(path)
        assert path.read_bytes() != b"old" and _mode(path) == 0o640, name
