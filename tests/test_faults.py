"""The fault matrix: every way data, disks, processes and strangers' files can go wrong.

Cases tested elsewhere are named in the README's reliability section; this file
holds the rest: odd and hostile image files, crashing and failing checkpoint
writes, hostile or broken checkpoints, dying distributed workers.
"""
from __future__ import annotations

import errno
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from iharm.data.errors import DataError
from iharm.data.io import MAX_IMAGE_PIXELS, read_image, read_mask
from iharm.model.checkpoints import CheckpointError, load_state_dict_file, load_weights, save_atomic
from tiny_data import make_dataset, photo

REPO = Path(__file__).resolve().parents[1]


# --- image files ------------------------------------------------------------------------------------

def test_grayscale_16bit_and_rgba_images(tmp_path: Path) -> None:
    rgb = photo("coffee", (64, 48))
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    np.testing.assert_array_equal(read_image(tmp_path / "gray.png"), np.repeat(gray[..., None], 3, axis=2))
    deep = rgb.astype(np.uint16) * 257  # 16-bit with the 8-bit values in the top byte
    cv2.imwrite(str(tmp_path / "deep.png"), cv2.cvtColor(deep, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(read_image(tmp_path / "deep.png"), rgb)
    opaque = np.dstack([cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), np.full((48, 64), 255, np.uint8)])
    cv2.imwrite(str(tmp_path / "opaque.png"), opaque)
    np.testing.assert_array_equal(read_image(tmp_path / "opaque.png"), rgb)
    opaque[5, 5, 3] = 0
    cv2.imwrite(str(tmp_path / "transparent.png"), opaque)
    with pytest.raises(DataError, match=r"transparent\.png: has transparent pixels"):
        read_image(tmp_path / "transparent.png")


def test_16bit_and_rgba_masks(tmp_path: Path) -> None:
    mask = np.zeros((20, 30), np.uint16)
    mask[5:10, 5:20] = 65535
    mask[0, 0] = 32768
    cv2.imwrite(str(tmp_path / "m16.png"), mask)
    got = read_mask(tmp_path / "m16.png")
    assert got.dtype == np.float32 and got[7, 7] == 1.0 and got[0, 0] == pytest.approx(32768 / 65535)
    rgba = np.dstack([(mask >> 8).astype(np.uint8)] * 3 + [np.full((20, 30), 255, np.uint8)])
    cv2.imwrite(str(tmp_path / "m4.png"), rgba)
    assert read_mask(tmp_path / "m4.png")[7, 7] == 1.0


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height, with a tiny (wrong) IDAT: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(100_000, 100_000))
    with pytest.raises(DataError, match=rf"bomb\.png: header claims 100000x100000 pixels, above the limit of {MAX_IMAGE_PIXELS}"):
        read_image(path)
    with pytest.raises(DataError, match="above the limit"):
        read_mask(path)
    ok, jpeg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    data = bytearray(jpeg.tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 65000, 65000)  # SOF0 height, width
    (tmp_path / "bomb.jpg").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"bomb\.jpg: header claims 65000x65000"):
        read_image(tmp_path / "bomb.jpg")


@pytest.mark.parametrize("damage", ["zero_bytes", "truncated_png", "corrupted_png", "truncated_jpeg"])
def test_broken_files(tmp_path: Path, damage: str) -> None:
    ok, png = cv2.imencode(".png", photo("chelsea", (64, 48)))
    ok, jpeg = cv2.imencode(".jpg", photo("chelsea", (64, 48)))
    png, jpeg = png.tobytes(), jpeg.tobytes()
    content = {"zero_bytes": b"", "truncated_png": png[:len(png) // 2],
               "corrupted_png": png[:40] + bytes(200) + png[240:], "truncated_jpeg": jpeg[:len(jpeg) // 3]}[damage]
    path = tmp_path / f"{damage}.img"
    path.write_bytes(content)
    with pytest.raises(DataError, match=rf"{damage}\.img: (empty file|truncated|not a decodable image)"):
        read_image(path)


# --- checkpoint writes that crash or fail --------------------------------------------------------------

_WRITER = """
import sys, torch
from iharm.model.checkpoints import save_atomic
path = sys.argv[1]
big = {"w": torch.randn(4_000_000)}
i = 0
while True:
    big["step"] = torch.tensor(i)
    save_atomic(big, path)
    print(i, flush=True)
    i += 1
"""


def test_sigkill_during_checkpoint_writes_leaves_a_loadable_file(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pth"
    for delay in (0.35, 0.6, 0.9):
        process = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline().strip() == "0"  # one complete file exists
        time.sleep(delay)  # then kill it somewhere inside a later write
        process.send_signal(signal.SIGKILL)
        process.wait()
        state = torch.load(path, weights_only=True)
        assert state["w"].shape == (4_000_000,) and int(state["step"]) >= 0
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "ckpt.pth"]
    assert all(name.startswith(".ckpt.pth.") for name in leftovers)  # only orphaned temp files, never the target


def test_full_disk_reports_and_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ckpt.pth"
    save_atomic({"w": torch.ones(3)}, path)

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space left"):
        save_atomic({"w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]  # the temporary file was removed


def _image_writers(rgb: np.ndarray):
    """Every image writer of the library, as (name, write(path))."""
    from iharm.data.hsynth.imageops import write_jpeg, write_png
    from iharm.data.io import write_image
    from iharm.engine.visualize import save_strip
    from iharm.tools.quality import write_small_jpeg
    return [("write_image", lambda path: write_image(path, rgb)), ("write_jpeg", lambda path: write_jpeg(path, rgb)),
            ("write_png", lambda path: write_png(path.with_suffix(".png"), rgb[..., 0])),
            ("save_strip", lambda path: save_strip(path, rgb)), ("write_small_jpeg", lambda path: write_small_jpeg(path, rgb))]


def test_every_image_writer_keeps_the_previous_file_on_a_full_disk(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Image writers go through one atomic writer: a failed write leaves the old file and no temporary file."""
    rgb = photo("coffee", (40, 30))
    for name, write in _image_writers(rgb):
        folder = tmp_path / name
        folder.mkdir()
        path = folder / "out.jpg"
        target = path.with_suffix(".png") if name == "write_png" else path
        target.write_bytes(b"previous")

        def no_space(fd: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "fsync", no_space)
        with pytest.raises(OSError, match="No space left"):
            write(path)
        monkeypatch.undo()
        assert target.read_bytes() == b"previous", name
        assert [p.name for p in folder.iterdir()] == [target.name], name
        write(path)  # and the same call without the fault writes a decodable image
        assert cv2.imread(str(target)) is not None, name


def test_an_image_that_cannot_be_encoded_names_the_file(tmp_path: Path) -> None:
    from iharm.data.io import write_image
    with pytest.raises(DataError, match=r"out\.xyz: cannot encode a uint8 \(30, 40, 3\) image as '\.xyz'"):
        write_image(tmp_path / "out.xyz", photo("coffee", (40, 30)))
    assert list(tmp_path.iterdir()) == []


# --- checkpoints from strangers ----------------------------------------------------------------------

class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"weight": _Exploit()}, handle)
    for name in ("evil.pth", "evil2.pth"):
        with pytest.raises(CheckpointError, match=rf"{name}: refused for safety: the file holds code or Python "
                                                  r"objects, not only tensors") as caught:
            load_state_dict_file(tmp_path / name)
        # never the advice to load it the unsafe way
        assert "weights_only=False" not in str(caught.value) and "re-run" not in str(caught.value).lower()
        if name == "evil.pth":
            torch.save({"weight": _Exploit()}, tmp_path / "evil2.pth")
        else:  # torch's own format names what it refused
            assert "system" in str(caught.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(tmp_path: Path, value: float) -> None:
    path = tmp_path / "bad.pth"
    torch.save({"layer.weight": torch.tensor([1.0, value]), "layer.bias": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match=r"bad\.pth: refused: non-finite \(NaN or Inf\) values in layer\.weight"):
        load_state_dict_file(path)


def test_wrong_and_misshaped_checkpoints_name_the_keys(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    state = model.state_dict()
    state["0.weight"] = torch.zeros(4, 3, 5, 5)
    del state["1.bias"]
    state["2.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as info:
        load_weights(model, state, "other.pth")
    message = str(info.value)
    assert "missing (1): 1.bias" in message and "unexpected (1): 2.weight" in message
    assert "0.weight: checkpoint (4, 3, 5, 5) vs model (4, 3, 3, 3)" in message


def test_truncated_checkpoint_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "half.pth"
    torch.save({"w": torch.randn(1000)}, path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match=r"half\.pth: not a readable PyTorch checkpoint"):
        load_state_dict_file(path)


# --- distributed workers that die ---------------------------------------------------------------------

def test_a_dead_ddp_worker_ends_the_run_with_an_error(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path, size=(48, 40), splits={"train": 8, "test": 2})
    (tmp_path / "config.yml").write_text(f"EXPS_PATH: {tmp_path / 'exps'}\n")
    kill_rank1 = ("import os, runpy, sys\n"
                  "if os.environ.get('RANK') == '1': os.environ['IHARM_TEST_KILL_AT'] = '3'\n"
                  "sys.argv = sys.argv[1:]\n"
                  "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    (tmp_path / "launch.py").write_text(kill_rank1)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(tmp_path / "launch.py"), str(REPO / "train.py"), str(REPO / "tests/model_scripts/models/tiny_issam.py"),
         "--device", "cpu", "--dataset-path", str(dataset), "--config-path", str(tmp_path / "config.yml"),
         "--workers", "0", "--batch-size", "4", "--epochs", "50", "--threads", "1", "--dist-timeout", "1"],
        capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert result.returncode != 0
    assert time.monotonic() - started < 200
    assert "SIGKILL" in result.stderr or "Signal 9" in result.stderr or "exitcode" in result.stderr


def test_old_checkpoints_without_batchnorm_counters_load() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    load_weights(model, state, "old.pth")  # PyTorch < 0.4.1 files lack the counter
    assert int(model[1].num_batches_tracked) == 0
