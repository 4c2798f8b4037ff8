"""Splitting photos into train and test: seeded by group, or fixed by a list of test photos."""
from __future__ import annotations

from pathlib import Path

import pytest

from iharm.data.hsynth.builder import Photo, split_photos


def _photos() -> list[Photo]:
    return [Photo(name, Path(f"{name}.jpg"), group=group) for name, group in
            (("a", "a"), ("b", "b"), ("c1", "c"), ("c2", "c"), ("d", "d"), ("e", "e"))]


def test_seeded_split_keeps_groups_together() -> None:
    for seed in range(10):
        split = split_photos(_photos(), 0.34, seed)
        assert split["c1"] == split["c2"]
        assert set(split.values()) == {"train", "test"}
    assert split_photos(_photos(), 0.34, 3) == split_photos(_photos(), 0.34, 3)


def test_given_test_photos_fix_the_split() -> None:
    split = split_photos(_photos(), 0.5, 0, test_photos=frozenset({"b", "c1", "c2", "not-in-this-pool"}))
    assert split == {"a": "train", "b": "test", "c1": "test", "c2": "test", "d": "train", "e": "train"}
    with pytest.raises(ValueError, match="splits the near-duplicate group 'c'"):
        split_photos(_photos(), 0.5, 0, test_photos=frozenset({"c1"}))
    with pytest.raises(ValueError, match="leaves one split empty"):
        split_photos(_photos(), 0.5, 0, test_photos=frozenset({"zzz"}))


def test_test_photos_may_be_file_names_as_a_shipped_model_lists_them() -> None:
    """checkpoints/hsynth/test_photos.txt holds meta.tsv's source_photo, the file names: `make demo` passes it
    to the builder (it refused it, every photo unmatched, when only dataset names counted)."""
    photos = [Photo("x-1", Path("pool/x_1.jpg"), group="x"), Photo("y", Path("pool/y.png"), group="y"),
              Photo("z", Path("pool/z.jpg"), group="z")]
    split = split_photos(photos, 0.5, 0, test_photos=frozenset({"x_1.jpg", "z"}))
    assert split == {"x-1": "test", "y": "train", "z": "test"}
    assert split_photos(photos, 0.5, 0, test_photos=frozenset({"y.jpg", "z.jpg"}))["y"] == "train"  # y is y.png
