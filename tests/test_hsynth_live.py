"""On-the-fly HSynth: fresh composites per sample, never a test photo, a function of the seed only."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from iharm.data.errors import DataError
from iharm.data.hdataset import collate_samples, sample_seed
from iharm.data.hsynth import masks
from iharm.data.hsynth.builder import FMSE_RANGE, BuildConfig, build_dataset
from iharm.data.hsynth.live import LiveHSynth, hsynth_test_photos
from iharm.data.hsynth.photos import MANIFEST_NAME, read_manifest, write_manifest
from iharm.data.sampler import SeededSampler
from iharm.engine.trainer import _worker_init
from iharm.utils.threads import thread_count
from test_hsynth_builder import write_photo_folder

SIZE = 64
#: The stereo pair is one near-duplicate group: with both in test, no test group is split.
TEST_PHOTOS = frozenset({"scikit-motorcycle-left", "scikit-motorcycle-right", "scikit-rocket"})


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(photo folder, HSynth built from it with a known test split)."""
    root = tmp_path_factory.mktemp("live")
    write_photo_folder(root / "photos")
    build_dataset(root / "photos", root / "data", BuildConfig(per_photo=2, workers=1, test_photos=TEST_PHOTOS))
    return root / "photos", root / "data" / "HSynth"


def _fmse(composite: np.ndarray, real: np.ndarray, mask: np.ndarray) -> float:
    """Foreground MSE written out: squared error summed over the channels of the foreground pixels, divided
    by 3 x the foreground area (iSSAM's definition, hard mask)."""
    foreground = mask > 0.5
    diff = (composite.astype(np.float64) - real.astype(np.float64))[foreground]
    return float((diff ** 2).sum() / (3 * foreground.sum()))


def test_no_test_photo_is_ever_drawn(pool) -> None:
    photos, hsynth = pool
    assert hsynth_test_photos(hsynth) == TEST_PHOTOS  # read back from the build's test list
    dataset = LiveHSynth(photos, hsynth, size=SIZE, lab="none")
    assert dataset.excluded == len(TEST_PHOTOS)
    drawn = {dataset.get_sample(i, seed=i)["name"].split("_")[0] for i in range(len(dataset))}
    assert drawn == {"scikit-astronaut", "scikit-chelsea", "scikit-coffee", "scikit-retina", "scikit-hubble"}


def test_a_photo_in_a_test_photos_group_is_left_out_too(pool, tmp_path: Path) -> None:
    photos, hsynth = pool
    shutil.copytree(photos, tmp_path / "photos")
    rows = list(read_manifest(tmp_path / "photos" / MANIFEST_NAME).values())
    for row in rows:  # a newly fetched photo that is a near-duplicate of the test photo rocket
        if row["name"] == "scikit-coffee.jpg":
            row["group"] = "scikit-rocket"
    write_manifest(tmp_path / "photos" / MANIFEST_NAME, rows)
    dataset = LiveHSynth(tmp_path / "photos", hsynth, size=SIZE, lab="none")
    assert "scikit-coffee" not in {photo.name for photo in dataset.photos}
    assert dataset.excluded == len(TEST_PHOTOS) + 1


def test_every_sample_is_a_new_valid_composite(pool) -> None:
    photos, hsynth = pool
    dataset = LiveHSynth(photos, hsynth, size=SIZE, lab="none")
    chelsea = [i for i, photo in enumerate(dataset.photos) if photo.name == "scikit-chelsea"][0]
    composites, mask_set = [], []
    for epoch in range(6):
        sample = dataset.get_sample(chelsea, seed=sample_seed(0, epoch, chelsea))
        image, real, mask = sample["image"], sample["target_image"], sample["mask"]
        assert image.shape == real.shape == (SIZE, SIZE, 3) and mask.shape == (SIZE, SIZE)
        assert set(np.unique(mask)) <= {0.0, 1.0}
        assert masks.ACCEPT_AREA[0] <= mask.mean() <= masks.ACCEPT_AREA[1]
        background = mask < 0.5
        assert np.array_equal(image[background], real[background]), "the background must stay the real photo"
        assert FMSE_RANGE[0] - 1 <= _fmse(image, real, mask) <= FMSE_RANGE[1] + 1
        composites.append(image)
        mask_set.append(mask)
    # six epochs, six different composites of the same photo
    assert len({c.tobytes() for c in composites}) == 6
    assert len({m.tobytes() for m in mask_set}) >= 2


def test_a_sample_depends_only_on_its_seed(pool) -> None:
    photos, hsynth = pool
    first = LiveHSynth(photos, hsynth, size=SIZE, lab="none")
    second = LiveHSynth(photos, hsynth, size=SIZE, lab="none")
    # the second dataset fills its caches in another order first
    for index in reversed(range(len(second))):
        second.get_sample(index, seed=123 + index)
    for index in range(len(first)):
        seed = sample_seed(0, 3, index)
        a, b = first.get_sample(index, seed), second.get_sample(index, seed)
        assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["mask"], b["mask"])


def test_a_resumed_epoch_draws_what_the_uninterrupted_one_drew_whatever_the_workers(pool) -> None:
    photos, hsynth = pool
    dataset = LiveHSynth(photos, hsynth, size=SIZE, lab="original")

    def batches(workers: int, skip: int) -> list[torch.Tensor]:
        sampler = SeededSampler(len(dataset), seed=5)
        sampler.set_epoch(2)
        sampler.skip(skip)
        loader = DataLoader(dataset, batch_size=2, sampler=sampler, num_workers=workers, collate_fn=collate_samples,
                            worker_init_fn=_worker_init if workers else None)
        # one OpenCV thread while workers fork, as the trainer does (a running pool hangs the forked child)
        with thread_count(1, opencv=True):
            return [torch.cat([b["images"].flatten(), b["masks"].flatten(), b["images_lab"].flatten()])
                    for b in loader]

    straight = batches(0, 0)
    resumed = batches(2, 4)  # the interrupted run had done two batches of 2
    assert len(resumed) == len(straight) - 2
    assert all(torch.equal(a, b) for a, b in zip(straight[2:], resumed))


def test_a_folder_that_is_not_the_datasets_photo_pool_is_refused(pool, tmp_path: Path) -> None:
    _, hsynth = pool
    write_photo_folder(tmp_path / "other")
    for path in (tmp_path / "other").glob("scikit-motorcycle*"):
        path.unlink()
    (tmp_path / "other" / "scikit-rocket.jpg").unlink()
    with pytest.raises(DataError, match="holds none of the 3 test photos"):
        LiveHSynth(tmp_path / "other", hsynth, size=SIZE)


def test_a_dataset_without_a_test_list_is_refused(pool, tmp_path: Path) -> None:
    photos, _ = pool
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"needs exactly one \*test.txt list"):
        LiveHSynth(photos, tmp_path / "empty", size=SIZE)


def test_a_mask_that_cannot_be_made_at_the_small_size_is_redrawn(pool, monkeypatch: pytest.MonkeyPatch) -> None:
    """make_mask gives up (RuntimeError) when even a blob misses the area bounds, which happens on the
    small copies: the bank slot or the draw is left empty and the sample draws another mask."""
    photos, hsynth = pool
    dataset = LiveHSynth(photos, hsynth, size=SIZE, lab="none")
    real_make_mask, calls = masks.make_mask, []

    def failing_first(image, rng, kind, silhouette=None):
        calls.append(kind)
        if len(calls) == 1:
            raise RuntimeError("no acceptable mask")
        return real_make_mask(image, rng, kind, silhouette)

    monkeypatch.setattr(masks, "make_mask", failing_first)
    sample = dataset.get_sample(0, seed=7)
    assert len(calls) >= 2 and masks.ACCEPT_AREA[0] <= sample["mask"].mean() <= masks.ACCEPT_AREA[1]
