"""load_model: official-format weight files, strict loading with named keys, unsafe files refused."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from iharm.inference.utils import load_model
from iharm.model import registry
from iharm.model.checkpoints import CheckpointError
from iharm.model.duconet import DucoNet_model
from iharm.model.issam import SSAMImageHarmonization


@pytest.fixture(scope="module")
def vector(reference_dir):
    return torch.load(reference_dir / "duconet256_vector.pt", weights_only=True)


@pytest.fixture()
def official_file(vector, tmp_path):
    """The official weights exactly as the official trainer writes them: torch.save(state_dict)."""
    path = tmp_path / "DucoNet256.pth"
    torch.save(vector["state_dict"], path)
    return path


def test_official_file_loads_and_reproduces_the_output(official_file, vector):
    model = load_model("DucoNet", official_file)
    assert isinstance(model, DucoNet_model) and not model.training
    inputs = vector["inputs"]
    with torch.no_grad():
        output = model(inputs["image"][:1], inputs["mask"][:1], image_lab=inputs["image_lab"][:1])["images"]
    torch.testing.assert_close(output, vector["output"][:1], atol=1e-5, rtol=0)


def test_dataparallel_prefixes_are_stripped(vector, tmp_path):
    path = tmp_path / "dp.pth"
    torch.save({f"module.{k}": v for k, v in vector["state_dict"].items()}, path)
    state = load_model("DucoNet", path).state_dict()
    assert all(torch.equal(state[k], v) for k, v in vector["state_dict"].items())


def test_issam_file_loads_as_issam_but_not_as_duconet(vector, tmp_path):
    path = tmp_path / "issam256.pth"
    backbone = {k: v for k, v in vector["state_dict"].items()
                if k.startswith(("encoder.", "decoder.")) and ".control_module." not in k}
    torch.save(backbone, path)
    assert isinstance(load_model("iSSAM", path), SSAMImageHarmonization)
    with pytest.raises(CheckpointError, match=r"missing \(222\)") as error:
        load_model("DucoNet", path)
    message = str(error.value)
    assert "decoder.up_blocks.0.control_module.l_styleblock.style_block1.scale_noise" in message
    assert "unexpected" not in message


def test_duconet_file_as_issam_names_the_unexpected_keys(official_file):
    with pytest.raises(CheckpointError, match=r"unexpected \(222\)") as error:
        load_model("iSSAM", official_file)
    assert "decoder.up_blocks.0.control_module." in str(error.value) and "missing" not in str(error.value)


def test_misshaped_tensor_is_named(vector, tmp_path):
    state = dict(vector["state_dict"])
    state["decoder.to_rgb.weight"] = torch.zeros(3, 64, 1, 1)
    path = tmp_path / "wide_head.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"mis-shaped \(1\): decoder\.to_rgb\.weight: checkpoint "
                                              r"\(3, 64, 1, 1\) vs model \(3, 32, 1, 1\)"):
        load_model("DucoNet", path)


class NotAStateDict:
    """Any pickled object: weights_only loading must refuse it instead of running its code."""


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": NotAStateDict()}, path)
    with pytest.raises(CheckpointError, match=r"evil\.pth: refused for safety: the file holds code or Python "
                                              r"objects, not only tensors \(it asks for .*NotAStateDict\)"):
        load_model("DucoNet", path)


def test_unknown_model_name_lists_the_known_ones(official_file):
    with pytest.raises(KeyError, match="registered models: DucoNet"):
        load_model("DucoNet2", official_file)


def test_models_with_their_own_checkpoint_format_are_delegated(monkeypatch, tmp_path):
    """The extension point (BargainNet's official G + E pair): a ``from_checkpoint`` classmethod."""
    class PairModel(torch.nn.Module):
        loaded_from = None

        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 2)

        @classmethod
        def from_checkpoint(cls, path):
            model = cls()
            model.loaded_from = path
            return model

    spec = SimpleNamespace(constructor=PairModel, build=lambda: pytest.fail("must not build and load a state dict"))
    monkeypatch.setattr(registry, "get_model_spec", lambda name: spec)
    model = load_model("Pair", tmp_path / "checkpoints")
    assert isinstance(model, PairModel) and model.loaded_from == tmp_path / "checkpoints" and not model.training
