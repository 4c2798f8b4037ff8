"""ONNX export: the graphs compute the official forward call (reference vectors, onnxruntime),
at any batch size and at other image sizes; a wrong graph is refused before anything is
written; the command refuses bad arguments with one line and never replaces a file."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from iharm.commands import export as export_command
from iharm.inference.onnx_export import ExportCheckError, example_inputs, export_onnx, run_onnx
from iharm.model import stylegan2
from iharm.model.bargainnet import BargainNet
from iharm.model.registry import get_model_spec

#: The issue's bound for the exported graph against PyTorch at 256.
BOUND = 1e-4


@pytest.fixture(scope="module")
def duconet_vector(reference_dir):
    return torch.load(reference_dir / "duconet256_vector.pt", weights_only=True)


@pytest.fixture(scope="module")
def duconet(duconet_vector):
    model = get_model_spec("DucoNet").build()
    model.load_state_dict(duconet_vector["state_dict"], strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def duconet_onnx(duconet, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "duconet.onnx"
    results = export_onnx("DucoNet", duconet, out, 256, check_shapes=((2, 256, 256),))
    return out, results


def test_modulated_conv_on_activations_is_the_kernel_form():
    """conv(x * s, W) * demod == the per-sample modulated kernels, in float64 (an independent identity)."""
    torch.manual_seed(0)
    x, weight, styles = torch.randn(3, 5, 9, 7).double(), torch.randn(4, 5, 3, 3).double(), torch.randn(3, 5).double()
    for demodulate in (True, False):
        kernels = stylegan2.modulate(weight, styles, demodulate, 1e-8)
        expected = stylegan2.per_sample_conv(x, kernels, padding=1)
        got = stylegan2.modulated_conv_on_activations(x, weight, styles, demodulate, 1e-8, padding=1)
        assert torch.allclose(got, expected, atol=1e-12, rtol=0)


def test_duconet_graph_reproduces_the_official_output(duconet_onnx, duconet_vector):
    out, results = duconet_onnx
    assert [r.path for r in results] == [out]
    assert results[0].differences["2x256x256"] <= BOUND
    inputs = {k: duconet_vector["inputs"][k] for k in ("image", "mask", "image_lab")}
    (produced,) = run_onnx(out, inputs)
    assert produced.shape == (2, 3, 256, 256)
    assert np.abs(produced - duconet_vector["output"].numpy()).max() <= BOUND


def test_duconet_graph_has_dynamic_batch_height_and_width(duconet_onnx, duconet):
    out, _ = duconet_onnx
    for batch, height, width in ((1, 320, 192), (3, 128, 256)):
        inputs = example_inputs("DucoNet", batch, height, width, seed=3)
        (produced,) = run_onnx(out, inputs)
        with torch.no_grad():
            expected = duconet(inputs["image"], inputs["mask"], image_lab=inputs["image_lab"])["images"]
        assert produced.shape == (batch, 3, height, width)
        assert np.abs(produced - expected.numpy()).max() <= BOUND


def test_duconet_graph_carries_its_contract(duconet_onnx):
    out, _ = duconet_onnx
    proto = onnx.load(out)
    assert [i.name for i in proto.graph.input] == ["image", "mask", "image_lab"]
    assert [o.name for o in proto.graph.output] == ["output"]
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["iharm"])
    assert meta["normalization"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert meta["size_divisor"] == 32 and set(meta["inputs"]) == {"image", "mask", "image_lab"}


def test_a_wrong_graph_is_refused_and_nothing_written(duconet, tmp_path, monkeypatch):
    """Drop the demodulation in the exported form only: the check must catch it."""
    correct = stylegan2.modulated_conv_on_activations
    monkeypatch.setattr(stylegan2, "modulated_conv_on_activations",
                        lambda x, w, s, demodulate, eps, padding: correct(x, w, s, False, eps, padding))
    out = tmp_path / "broken.onnx"
    with pytest.raises(ExportCheckError, match="broken.onnx: onnxruntime differs from PyTorch"):
        export_onnx("DucoNet", duconet, out, 256, check_shapes=((1, 256, 256),))
    assert list(tmp_path.iterdir()) == []


def test_issam_graph_matches_pytorch_at_any_batch(tmp_path):
    torch.manual_seed(0)
    model = get_model_spec("iSSAM").build().eval()
    results = export_onnx("iSSAM", model, tmp_path / "issam.onnx", 256,
                          check_shapes=((2, 256, 256), (1, 192, 352)))
    assert max(results[0].differences.values()) <= BOUND


def test_bargainnet_exports_generator_and_extractor(reference_dir, tmp_path):
    vector = torch.load(reference_dir / "bargainnet_vector.pt", weights_only=True)
    model = BargainNet(ngf=16)
    model.netG.load_state_dict(vector["state_dict_G"], strict=True)
    model.netE.load_state_dict(vector["state_dict_E"], strict=True)
    model.eval()
    results = export_onnx("BargainNet", model, tmp_path / "bargainnet.onnx", 256, check_shapes=((2, 256, 256),))
    assert [r.path.name for r in results] == ["bargainnet.onnx", "bargainnet_E.onnx"]
    assert all(r.differences["2x256x256"] <= BOUND for r in results)
    comp, mask = vector["inputs"]["comp"], vector["inputs"]["mask"]
    (code,) = run_onnx(tmp_path / "bargainnet_E.onnx", {"image": comp, "region": 1 - mask})
    output, bg_code = run_onnx(tmp_path / "bargainnet.onnx", {"image": comp, "mask": mask})
    with torch.no_grad():
        expected = model(comp, mask)
    assert np.abs(code - expected["bg_code"].numpy()).max() <= BOUND
    assert np.abs(bg_code - expected["bg_code"].numpy()).max() <= BOUND
    assert np.abs(output - expected["images"].numpy()).max() <= BOUND


@pytest.fixture
def issam_checkpoint(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "issam.pth"
    torch.save(get_model_spec("iSSAM").build().state_dict(), path)
    return path


def test_command_writes_a_checked_graph(issam_checkpoint, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    assert export_command.main(["iSSAM", str(issam_checkpoint), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "2x256x256" in printed and "1x256x288" in printed
    assert [i.name for i in onnx.load(out).graph.input] == ["image", "mask"]


@pytest.mark.parametrize("args, message", [
    (["--size", "250"], "--size 250: iSSAM needs a positive multiple of 32"),
    (["--out", "model.pth"], "name a .onnx file"),
])
def test_command_refuses_bad_arguments(issam_checkpoint, tmp_path, args, message, capsys):
    argv = ["iSSAM", str(issam_checkpoint), "--out", str(tmp_path / "model.onnx"), *args]
    with pytest.raises(SystemExit) as exit_info:
        export_command.main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_command_never_replaces_a_file(issam_checkpoint, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"kept")
    assert export_command.main(["iSSAM", str(issam_checkpoint), "--out", str(out)]) == 2
    assert "exists; an export never replaces a file" in capsys.readouterr().err
    assert out.read_bytes() == b"kept"
    missing = tmp_path / "missing.pth"
    assert export_command.main(["iSSAM", str(missing), "--out", str(tmp_path / "other.onnx")]) == 2
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "other.onnx").exists()


def test_export_refuses_a_size_off_the_divisor(tmp_path):
    with pytest.raises(ValueError, match="needs a positive multiple of 256"):
        export_onnx("BargainNet", BargainNet(ngf=16), tmp_path / "b.onnx", 300)
    assert list(tmp_path.iterdir()) == []


def test_an_unchecked_export_is_refused(tmp_path):
    with pytest.raises(ValueError, match="always checked"):
        export_onnx("iSSAM", get_model_spec("iSSAM").build(), tmp_path / "i.onnx", 256, check_shapes=())
    assert list(tmp_path.iterdir()) == []
