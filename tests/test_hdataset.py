"""The iHarmony4 data layer: list parsing, samples, Lab parity, joint augmentation, bad input."""
from __future__ import annotations

import itertools
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler

from iharm.data.color import rgb_to_lab
from iharm.data.errors import DataError
from iharm.data.hdataset import ComposeDataset, HDataset, collate_samples, read_list
from iharm.data.io import read_image, read_mask
from iharm.data.sampler import EpochBatches, SeededSampler
from iharm.data.transforms import HCompose, resize_transform
from tiny_data import make_dataset, photo, recolor, write_rgb

TRAIN_AUG = [A.RandomResizedCrop(size=(64, 64), scale=(0.5, 1.0)), A.HorizontalFlip()]


# --- the real mini iHarmony4 -------------------------------------------------------------------

def test_mini_iharmony4_subset_lists_and_derived_paths(shared_data: Path) -> None:
    dataset = HDataset(shared_data / "iharmony4_mini" / "HCOCO", "test")
    assert [e.name for e in dataset.entries] == [f"c35030_434421_{k}.jpg" for k in range(1, 5)]
    entry = dataset.entries[2]
    assert entry.mask.name == "c35030_434421.png" and entry.mask.parent.name == "masks"
    assert entry.real.name == "c35030.jpg" and entry.real.parent.name == "real_images"


def test_mini_iharmony4_root_ihd_list(shared_data: Path) -> None:
    dataset = HDataset(shared_data / "iharmony4_mini", "test", augmentator=HCompose([resize_transform("Fixed256")]))
    assert len(dataset) == 5
    adobe = dataset.entries[0]
    assert adobe.composite == shared_data / "iharmony4_mini/HAdobe5k/composite_images/a0002_1_4.jpg"
    assert adobe.real == shared_data / "iharmony4_mini/HAdobe5k/real_images/a0002.jpg"
    sample = dataset[0]  # a 4256x2832 real expert retouch, resized with its mask and Lab
    assert sample["images"].shape == sample["target_images"].shape == sample["images_lab"].shape == (3, 256, 256)
    assert sample["images"].dtype == torch.uint8 and sample["masks"].dtype == torch.float32
    assert sample["masks"].shape == (1, 256, 256)
    # the HAdobe5k composite differs from the real image only inside the mask
    comp = read_image(adobe.composite).astype(int)
    real = read_image(adobe.real).astype(int)
    mask = read_mask(adobe.mask)
    outside = np.abs(comp - real)[mask < 0.5]
    inside = np.abs(comp - real)[mask > 0.5]
    assert outside.mean() < 2.0 < inside.mean()


def test_mask_is_channel0_over_255_and_soft(shared_data: Path) -> None:
    path = shared_data / "iharmony4_mini/HCOCO/masks/c35030_434421.png"
    raw = cv2.imread(str(path))  # the official reader
    expected = raw[:, :, 0].astype(np.float32) / 255
    mask = read_mask(path)
    np.testing.assert_array_equal(mask, expected)
    assert ((mask > 0) & (mask < 1)).any(), "JPEG noise of the HCOCO mask must be kept (soft mask)"


def test_odd_real_files(shared_data: Path) -> None:
    gt = read_image(shared_data / "triplets/rainnet_256/1-gt.png")  # RGBA ground truth
    assert gt.shape == (256, 256, 3)
    bgra = cv2.imread(str(shared_data / "triplets/rainnet_256/1-gt.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(gt, bgra[:, :, 2::-1])
    mask = read_mask(shared_data / "composites_no_gt/mask_a0196_1.jpg")  # 3-channel JPEG mask
    assert mask.shape == (3072, 2048) and mask.dtype == np.float32 and 0 <= mask.min() < mask.max() <= 1
    gray_mask = read_mask(shared_data / "triplets/inr_2k/demo_2k_mask.jpg")  # 1-channel JPEG mask
    assert gray_mask.shape == (2048, 2048)


# --- Lab exactly as the official pipeline ----------------------------------------------------------

def test_lab_matches_reference_vector(reference_dir: Path) -> None:
    vector = torch.load(reference_dir / "duconet256_vector.pt", weights_only=True)
    rgb = vector["inputs_uint8"]["comp_rgb"].numpy()
    expected = vector["inputs_uint8"]["comp_lab_cv2"].numpy()
    for sample in range(rgb.shape[0]):
        np.testing.assert_array_equal(rgb_to_lab(rgb[sample]), expected[sample])
    # and as the model receives it: ToTensor (/255), no mean/std
    lab_tensor = torch.from_numpy(expected).permute(0, 3, 1, 2).float().div(255)
    assert torch.equal(lab_tensor, vector["inputs"]["image_lab"])


def test_dataset_lab_through_the_loader(reference_dir: Path, tmp_path: Path) -> None:
    vector = torch.load(reference_dir / "duconet256_vector.pt", weights_only=True)
    comp = vector["inputs_uint8"]["comp_rgb"].numpy()
    real = vector["inputs_uint8"]["real_rgb"].numpy()
    mask = (vector["inputs"]["mask"][:, 0].numpy() * 255).astype(np.uint8)
    folder = tmp_path / "Vec"
    for i in range(2):  # lossless PNG under .jpg names: cv2 decodes by content
        for sub, name, image in (("composite_images", f"v{i}_1_1.jpg", comp[i]), ("real_images", f"v{i}.jpg", real[i])):
            (folder / sub).mkdir(parents=True, exist_ok=True)
            ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            (folder / sub / name).write_bytes(buf.tobytes())
        (folder / "masks").mkdir(exist_ok=True)
        cv2.imwrite(str(folder / "masks" / f"v{i}_1.png"), mask[i])
    (folder / "Vec_test.txt").write_text("v0_1_1.jpg\nv1_1_1.jpg\n")
    dataset = HDataset(folder, "test")
    for i in range(2):
        sample = dataset[i]
        assert torch.equal(sample["images"], torch.from_numpy(comp[i]).permute(2, 0, 1))
        assert torch.equal(sample["images_lab"], vector["inputs_uint8"]["comp_lab_cv2"][i].permute(2, 0, 1))
        assert torch.equal(sample["masks"], vector["inputs"]["mask"][i])


def test_lab_is_computed_before_resizing_or_not_at_all(tmp_path: Path) -> None:
    """The official order: Lab of the original image, resized with it (not the Lab of the resized RGB)."""
    folder = make_dataset(tmp_path, size=(120, 90), splits={"test": 1})
    aug = HCompose([resize_transform("Fixed256")])
    sample = HDataset(folder, "test", augmentator=aug)[0]
    image = sample["images"].permute(1, 2, 0).numpy()
    diff = (sample["images_lab"].permute(1, 2, 0).int() - torch.from_numpy(rgb_to_lab(image)).int()).abs()
    assert 0 < diff.float().mean() < 3
    assert "images_lab" not in HDataset(folder, "test", lab="none")[0]


# --- joint augmentation and resize strategies ---------------------------------------------------

def test_joint_augmentation_keeps_composite_real_mask_and_lab_aligned(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path, size=(128, 96), splits={"train": 4})
    dataset = HDataset(folder, "train", augmentator=HCompose(TRAIN_AUG), keep_background_prob=0.05)
    for index in range(4):
        for seed in range(5):
            sample = dataset[(index, seed)]
            comp, real = sample["images"].numpy(), sample["target_images"].numpy()
            mask = sample["masks"][0].numpy()
            background = mask == 0
            # composite == real outside the mask: any misalignment would break this
            assert background.sum() > 100
            np.testing.assert_array_equal(comp[:, background], real[:, background])
            assert (comp[:, mask > 0.99] != real[:, mask > 0.99]).any()
            # the Lab image went through the same crop and flip as the composite
            lab = sample["images_lab"].permute(1, 2, 0).numpy().astype(int)
            recomputed = rgb_to_lab(np.ascontiguousarray(comp.transpose(1, 2, 0))).astype(int)
            mirrored = recomputed[:, ::-1]
            assert np.abs(lab - recomputed).mean() < 3 < np.abs(lab - mirrored).mean()


def test_masks_are_interpolated_bilinearly_as_float(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path, size=(97, 61), splits={"test": 1})
    mask = read_mask(folder / "masks" / "p0_1.png")
    sample = HDataset(folder, "test", augmentator=HCompose([resize_transform("Fixed256")]))[0]
    expected = cv2.resize(mask, (256, 256), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(sample["masks"][0].numpy(), expected, atol=1e-6)
    assert len(np.unique(expected)) > 2


@pytest.mark.parametrize(("strategy", "size", "expected"), [
    ("None", (333, 250), (333, 250)),
    ("Fixed256", (333, 250), (256, 256)),
    ("Fixed512", (333, 250), (512, 512)),
    ("Fixed1024", (333, 250), (1024, 1024)),
    ("LimitLongest1024", (333, 250), (333, 250)),
    ("LimitLongest1024", (2832, 4256), (681, 1024)),
    ("LimitLongest1024", (4256, 2832), (1024, 681)),
])
def test_resize_strategies(strategy: str, size: tuple[int, int], expected: tuple[int, int]) -> None:
    image = np.zeros((size[1], size[0], 3), np.uint8)
    out = HCompose([resize_transform(strategy)])(image=image, target_image=image, mask=np.zeros(size[::-1], np.float32))
    assert out["image"].shape[:2] == expected[::-1] and out["mask"].shape == expected[::-1]


def test_unknown_resize_strategy_and_pixel_transforms_are_refused() -> None:
    with pytest.raises(ValueError, match="Fixed300"):
        resize_transform("Fixed300")
    with pytest.raises(ValueError, match="pixel-level"):
        HCompose([A.ColorJitter()])


def test_keep_background_prob_redraws_crops_without_foreground(tmp_path: Path) -> None:
    folder = tmp_path / "Corner"
    real = photo("coffee", (128, 128))
    mask = np.zeros((128, 128), np.uint8)
    mask[:12, :12] = 255  # a small corner object that most crops lose
    write_rgb(folder / "real_images" / "c0.jpg", real)
    (folder / "masks").mkdir()
    cv2.imwrite(str(folder / "masks" / "c0_1.png"), mask)
    write_rgb(folder / "composite_images" / "c0_1_1.jpg", recolor(real, mask))
    (folder / "Corner_train.txt").write_text("c0_1_1.jpg\n")
    aug = HCompose([A.RandomResizedCrop(size=(32, 32), scale=(0.3, 0.4))])
    strict = HDataset(folder, "train", augmentator=aug, keep_background_prob=0.0)
    assert all(strict[(0, seed)]["masks"].sum() > 10 for seed in range(20))
    loose = HDataset(folder, "train", augmentator=aug, keep_background_prob=1.0)
    assert any(loose[(0, seed)]["masks"].sum() <= 10 for seed in range(20))


def test_augmentation_is_a_function_of_the_sample_seed(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path, splits={"train": 2})
    dataset = HDataset(folder, "train", augmentator=HCompose(TRAIN_AUG), keep_background_prob=0.05)
    first, again, other = dataset[(1, 7)], dataset[(1, 7)], dataset[(1, 8)]
    assert torch.equal(first["images"], again["images"]) and torch.equal(first["masks"], again["masks"])
    assert not torch.equal(first["images"], other["images"])


def test_compose_dataset_concatenates_subsets(tmp_path: Path) -> None:
    a = HDataset(make_dataset(tmp_path / "a", name="A", splits={"train": 3}), "train")
    b = HDataset(make_dataset(tmp_path / "b", name="B", splits={"train": 2}), "train")
    both = ComposeDataset([a, b], augmentator=HCompose([resize_transform("Fixed256")]))
    assert len(both) == 5
    assert both[4]["images"].shape == (3, 256, 256)
    assert torch.equal(both[3]["masks"], HDataset(b.dataset_path, "train", augmentator=both.augmentator)[0]["masks"])


def test_seeded_sampler_shards_resumes_and_reproduces() -> None:
    full = list(SeededSampler(10, shuffle=True, seed=3))
    assert sorted(i for i, _ in full) == list(range(10))
    ranks = [list(SeededSampler(10, shuffle=True, seed=3, num_replicas=2, rank=r, drop_last=True)) for r in (0, 1)]
    assert [p for pair in zip(*ranks) for p in pair] == full  # interleaved shards == one process's order
    sampler = SeededSampler(10, shuffle=True, seed=3)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch1 != full
    sampler.skip(4)
    assert list(sampler) == epoch1[4:] and len(sampler) == 6
    uneven = [list(SeededSampler(5, shuffle=False, num_replicas=2, rank=r)) for r in (0, 1)]
    assert sorted(i for shard in uneven for i, _ in shard) == list(range(5))


def test_epoch_batches_run_across_epochs_exactly_as_one_batch_sampler_per_epoch() -> None:
    """EpochBatches (the trainer's one loader iterator for a whole run) gives, epoch after epoch, exactly the
    batches of BatchSampler(drop_last=True) for each epoch, never mixing two; and it starts mid-epoch."""
    def per_epoch(epoch: int) -> list[list[tuple[int, int]]]:
        sampler = SeededSampler(10, shuffle=True, seed=3, num_replicas=2, rank=1, drop_last=True)
        sampler.set_epoch(epoch)
        return list(BatchSampler(sampler, 2, drop_last=True))  # 5 samples a rank: 2 batches, 1 dropped

    batches = EpochBatches(SeededSampler(10, shuffle=True, seed=3, num_replicas=2, rank=1, drop_last=True), 2)
    assert batches.batches_per_epoch() == 2
    assert list(itertools.islice(batches, 6)) == per_epoch(0) + per_epoch(1) + per_epoch(2)
    resumed = EpochBatches(batches.sampler, 2, epoch=4, skip_batches=1)
    assert list(itertools.islice(resumed, 3)) == per_epoch(4)[1:] + per_epoch(5)


# --- bad input: every case names the file -------------------------------------------------------

@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    return make_dataset(tmp_path, splits={"train": 3})


def _rewrite_list(folder: Path, text: str) -> None:
    (folder / f"{folder.name}_train.txt").write_bytes(text.encode())


def test_missing_list_file(tmp_path: Path) -> None:
    (tmp_path / "Empty").mkdir()
    with pytest.raises(DataError, match=r"Empty: needs exactly one \*train.txt list \(found: none\)"):
        HDataset(tmp_path / "Empty", "train")


def test_missing_listed_file_is_named_with_its_line(tiny: Path) -> None:
    (tiny / "real_images" / "p1.jpg").unlink()
    with pytest.raises(DataError, match=r"1 listed files are missing:\n.*p1\.jpg: file not found \(listed at .*Tiny_train\.txt:2\)"):
        HDataset(tiny, "train")
    dataset = HDataset(tiny, "train", skip_bad_samples=True)
    assert len(dataset) == 2 and len(dataset.problems) == 1 and "p1.jpg" in dataset.problems[0]


@pytest.mark.parametrize("damage", ["empty", "garbage", "truncated"])
def test_unreadable_files_are_named(tiny: Path, damage: str) -> None:
    path = tiny / "composite_images" / "p0_1_1.jpg"
    ok, buffer = cv2.imencode(".jpg", photo("astronaut", (96, 72)))
    content = buffer.tobytes()
    path.write_bytes({"empty": b"", "garbage": b"not an image at all" * 10, "truncated": content[:len(content) // 2]}[damage])
    dataset = HDataset(tiny, "train")
    message = {"empty": "empty file", "garbage": "not a decodable image", "truncated": "truncated JPEG"}[damage]
    with pytest.raises(DataError, match=rf"p0_1_1\.jpg: {message}.*listed at .*Tiny_train\.txt:1"):
        dataset[0]
    skipping = HDataset(tiny, "train", skip_bad_samples=True)
    batch = collate_samples([skipping[0], skipping[1]])
    assert batch["images"].shape[0] == 1 and len(batch["skipped"]) == 1 and "p0_1_1.jpg" in batch["skipped"][0]


def test_size_mismatches_are_named(tiny: Path) -> None:
    write_rgb(tiny / "real_images" / "p0.jpg", photo("astronaut", (50, 40)))
    with pytest.raises(DataError, match=r"p0_1_1\.jpg: size 96x72 differs from the real image .*p0\.jpg \(50x40\)"):
        HDataset(tiny, "train")[0]
    cv2.imwrite(str(tiny / "masks" / "p1_1.png"), np.full((10, 10), 255, np.uint8))
    with pytest.raises(DataError, match=r"p1_1\.png: mask size 10x10 differs from the composite"):
        HDataset(tiny, "train")[1]


@pytest.mark.parametrize(("value", "message"), [(0, "mask is empty"), (255, "mask covers the whole image")])
def test_empty_and_full_masks_are_refused(tiny: Path, value: int, message: str) -> None:
    cv2.imwrite(str(tiny / "masks" / "p2_1.png"), np.full((72, 96), value, np.uint8))
    with pytest.raises(DataError, match=rf"p2_1\.png: {message}"):
        HDataset(tiny, "train")[2]


@pytest.mark.parametrize(("line", "message"), [
    ("../outside_1_1.jpg", "points outside the dataset root"),
    ("/etc/passwd_1_1.jpg", "points outside the dataset root"),
    ("HCOCO/../../x_1_1.jpg", "points outside the dataset root"),
    ("nounderscore.jpg", "composite names must read"),
    ("Sub/elsewhere/p0_1_1.jpg", "neither a file name nor"),
])
def test_bad_list_entries(tiny: Path, line: str, message: str) -> None:
    _rewrite_list(tiny, f"p0_1_1.jpg\n{line}\n")
    with pytest.raises(DataError, match=rf"Tiny_train\.txt:2: .*{message}"):
        HDataset(tiny, "train")


def test_duplicates_are_refused_blank_lines_and_crlf_tolerated(tiny: Path) -> None:
    _rewrite_list(tiny, "p0_1_1.jpg\r\n\r\n  \r\np1_1_1.jpg\r\np2_1_1.jpg")
    assert [e.line for e in read_list(tiny, "train")] == [1, 4, 5]
    _rewrite_list(tiny, "p0_1_1.jpg\np1_1_1.jpg\np0_1_1.jpg\n")
    with pytest.raises(DataError, match=r"Tiny_train\.txt:3: duplicate entry 'p0_1_1\.jpg' \(first at line 1\)"):
        HDataset(tiny, "train")


def test_errors_survive_dataloader_workers(tiny: Path) -> None:
    (tiny / "composite_images" / "p0_1_1.jpg").write_bytes(b"broken")
    loader = torch.utils.data.DataLoader(HDataset(tiny, "train"), batch_size=3, num_workers=1,
                                         collate_fn=collate_samples)
    with pytest.raises(DataError, match=r"p0_1_1\.jpg: not a decodable image"):
        next(iter(loader))


def test_a_list_of_blank_lines_is_an_error_not_zero_images(tmp_path):
    from tiny_data import make_dataset
    folder = make_dataset(tmp_path, "Tiny", size=(32, 24), splits={"test": 1})
    (folder / "Tiny_test.txt").write_text("\n  \n\r\n")
    with pytest.raises(DataError, match=r"Tiny_test\.txt.*lists no images"):
        read_list(folder, "test")
