"""BargainNet G and E against the official layout (key JSONs) and the official numbers (bargainnet_vector.pt).

The vector's G has ngf=16 (its weights would be 219 MB at 64); the full-size
layout is checked on the meta device, which builds the same modules without
allocating their weights.
"""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from iharm.model.bargainnet import BargainNet, StyleEncoder, UnetGenerator, load_style_encoder
from iharm.model.checkpoints import CheckpointError
from iharm.model.partialconv import PartialConv2d
from iharm.model.registry import get_model_spec

from float_bounds import assert_float32_close

@pytest.fixture(scope="module")
def vector(reference_dir):
    return torch.load(reference_dir / "bargainnet_vector.pt", weights_only=True)


def _layout(module: nn.Module) -> list[list]:
    return [[name, list(t.shape), str(t.dtype).removeprefix("torch.")] for name, t in module.state_dict().items()]


def _vector_model(vector, overrides: bool = False, dtype: torch.dtype = torch.float32) -> BargainNet:
    model = BargainNet(ngf=16)
    g_state, e_state = dict(vector["state_dict_G"]), dict(vector["state_dict_E"])
    if overrides:
        g_state.update(vector["variant_1d_perturbed"]["overrides_G"])
        e_state.update(vector["variant_1d_perturbed"]["overrides_E"])
    model.netG.load_state_dict(g_state, strict=True)
    model.netE.load_state_dict(e_state, strict=True)
    return model.to(dtype).eval()


def _check_against(vector, expected: dict[str, torch.Tensor], forward, overrides: bool = False) -> None:
    """``forward(model, inputs)`` on the vector's model in float32 and float64; each ``expected`` output
    must match within the measured float32 rounding (float_bounds.py)."""
    runs = []
    for dtype in (torch.float32, torch.float64):
        inputs = {k: v.to(dtype) for k, v in vector["inputs"].items() if k in ("comp", "mask", "real")}
        with torch.no_grad():
            runs.append(forward(_vector_model(vector, overrides, dtype), inputs))
    for key, reference in expected.items():
        assert_float32_close(key, runs[0][key], reference, runs[1][key])


# --- layout ------------------------------------------------------------------------------------------

def test_full_size_generator_layout_matches_official(reference_dir):
    expected = json.loads((reference_dir / "bargainnet_G_keys.json").read_text())
    with torch.device("meta"):
        generator = UnetGenerator()  # the official defaults: 20 -> 3, 8 levels, ngf=64
    assert _layout(generator) == expected["state_dict"]
    assert sum(p.numel() for p in generator.parameters()) == expected["total_params"] == 54_776_324


def test_encoder_layout_matches_official(reference_dir):
    expected = json.loads((reference_dir / "bargainnet_E_keys.json").read_text())
    encoder = StyleEncoder()
    assert _layout(encoder) == expected["state_dict"]
    assert sum(p.numel() for p in encoder.parameters()) == expected["total_params"] == 3_919_376


def test_reduced_width_layout_matches_vector(vector):
    model = BargainNet(ngf=16)
    for ours, official in ((model.netG, vector["state_dict_G"]), (model.netE, vector["state_dict_E"])):
        assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == \
               [(k, tuple(v.shape)) for k, v in official.items()]
    assert set(model.state_dict()) == {f"netG.{k}" for k in vector["state_dict_G"]} | \
                                      {f"netE.{k}" for k in vector["state_dict_E"]}


def test_partial_conv_rescales_by_window_coverage():
    # All-ones input and weights: the raw sum over a window equals its mask count,
    # so the rescaled output is k*k = 9 wherever the window touches the region, 0 elsewhere.
    conv = PartialConv2d(1, 1, kernel_size=3, stride=1, padding=0, bias=True)
    nn.init.ones_(conv.weight)
    nn.init.constant_(conv.bias, 0.5)
    assert list(conv.state_dict()) == ["weight", "bias"]  # the ones kernel is not stored
    mask = torch.zeros(1, 1, 5, 7)
    mask[..., :, :2] = 1  # region = two left columns; output column j sees columns j..j+2
    out, new_mask = conv(torch.ones(1, 1, 5, 7), mask)
    assert new_mask[0, 0].tolist() == [[1, 1, 0, 0, 0]] * 3
    torch.testing.assert_close(out[0, 0], torch.tensor([[9.5, 9.5, 0, 0, 0]] * 3), atol=1e-5, rtol=0)


# --- numerics against the official code --------------------------------------------------------------

def test_eval_forward_matches_official_codes_and_output(vector):
    codes = vector["codes"]
    expected = {"images": vector["output"], "bg_code": codes["bg"], "real_fg_code": codes["real_fg"],
                "harm_fg_code": codes["harm_fg"], "comp_fg_code": codes["comp_fg"]}
    _check_against(vector, expected, lambda model, x: model(x["comp"], x["mask"], real_image=x["real"]))


def test_inference_takes_background_code_from_composite(vector):
    model = _vector_model(vector)
    with torch.no_grad():
        assert set(model(vector["inputs"]["comp"], vector["inputs"]["mask"])) == {"images", "bg_code"}
    # Same background pixels as the real image here, so the same output as the official forward.
    _check_against(vector, {"bg_code": vector["codes"]["bg_comp"], "images": vector["output"]},
                   lambda model, x: model(x["comp"], x["mask"]))


def test_perturbed_biases_variant(vector):
    variant = vector["variant_1d_perturbed"]
    _check_against(vector, {k: variant[k] for k in ("bg_code", "comp_fg_code")} | {"images": variant["output"]},
                   lambda model, x: model(x["comp"], x["mask"], real_image=x["real"]), overrides=True)


def test_legacy_test_mode_matches_official_test_without_dropout(vector):
    official = vector["official_test_mode_no_dropout"]
    _check_against(vector, {"images": official["output"], "bg_code": official["bg_code"]},
                   lambda model, x: model.legacy_test_forward(x["comp"], x["mask"], real_image=x["real"],
                                                              dropout=False))
    model = _vector_model(vector)
    inputs = vector["inputs"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.legacy_test_forward(inputs["comp"], inputs["mask"], real_image=inputs["real"], dropout=False)
    # Nothing is left behind: running statistics untouched, every module back in eval mode.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m.training for m in model.modules())
    assert all(m.track_running_stats for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_legacy_test_mode_dropout_is_active(vector):
    model = _vector_model(vector)
    inputs = vector["inputs"]
    args = (inputs["comp"][:1], inputs["mask"][:1])
    torch.manual_seed(0)
    with_dropout = model.legacy_test_forward(*args)["images"]
    without = model.legacy_test_forward(*args, dropout=False)["images"]
    assert (with_dropout - without).abs().max() > 1e-4


# --- any batch, any multiple of 256 ------------------------------------------------------------------

def test_batch_of_three_non_square_matches_per_sample(vector):
    model = _vector_model(vector)
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(3, 3, 256, 512, generator=generator) * 2 - 1
    mask = torch.zeros(3, 1, 256, 512)
    mask[0, :, 40:200, 60:300] = 1
    mask[1, :, 100:250, 300:500] = 1
    mask[2] = (torch.rand(1, 256, 512, generator=generator) > 0.7).float()
    exact_model = _vector_model(vector, dtype=torch.float64)
    with torch.no_grad():
        batched = model(image, mask)
        single = [model(image[i:i + 1], mask[i:i + 1]) for i in range(3)]
        exact = exact_model(image.double(), mask.double())
    assert batched["images"].shape == (3, 3, 256, 512) and batched["bg_code"].shape == (3, 16, 1, 1)
    for key, value in batched.items():
        assert torch.isfinite(value).all(), key
        per_sample = torch.cat([s[key] for s in single])
        assert_float32_close(key, value, per_sample, exact[key], rounding_of=per_sample)


def test_size_not_multiple_of_256_is_refused(vector):
    model = _vector_model(vector)
    with pytest.raises(ValueError, match="multiples of 256.*320x256"):
        model(torch.zeros(1, 3, 320, 256), torch.zeros(1, 1, 320, 256))
    with pytest.raises(ValueError, match="mask must be"):
        model(torch.zeros(1, 3, 256, 256), torch.zeros(1, 3, 256, 256))


def test_training_forward_updates_encoder_statistics_four_times(vector):
    model = _vector_model(vector).train()
    inputs = vector["inputs"]
    out = model(inputs["comp"][:1], inputs["mask"][:1], real_image=inputs["real"][:1])
    assert set(out) == {"images", "bg_code", "real_fg_code", "harm_fg_code", "comp_fg_code"}
    # One running-statistics update per E call, as in the official forward.
    assert int(model.netE.norm2f.num_batches_tracked) == 4
    assert int(model.netG.model.model[1].model[2].num_batches_tracked) == 1
    out["images"].mean().backward()
    assert model.netE.conv1f.weight.grad is not None and model.netG.weight.grad is not None


def test_initialize_weights_follows_official_init():
    torch.manual_seed(0)
    model = BargainNet(ngf=16)
    model.initialize_weights()
    assert model.netG.weight.item() == pytest.approx(0.1)
    conv = model.netE.conv4f.weight
    assert abs(conv.std().item() - 0.02) < 0.001 and abs(conv.mean().item()) < 0.001
    assert torch.all(model.netE.conv1f.bias == 0) and torch.all(model.netG.model.model[3].bias == 0)
    assert abs(model.netE.norm4f.weight.mean().item() - 1) < 0.005


def test_registry_builds_the_wrapper():
    spec = get_model_spec("BargainNet")
    model = spec.build(ngf=16)
    assert isinstance(model, BargainNet) and model.size_divisor == spec.size_divisor == 256
    assert spec.inputs == {"image": "images", "mask": "masks"} and dict(spec.train_inputs) == {
        "real_image": "target_images"}


# --- loading -------------------------------------------------------------------------------------------

def _holds_vector_weights(model: BargainNet, vector) -> None:
    assert not model.training
    for ours, official in ((model.netG, vector["state_dict_G"]), (model.netE, vector["state_dict_E"])):
        assert all(torch.equal(ours.state_dict()[k], v) for k, v in official.items())


def test_load_our_combined_file(vector, tmp_path):
    path = tmp_path / "bargainnet.pth"
    torch.save(_vector_model(vector).state_dict(), path)
    model = BargainNet.from_checkpoint(path)
    assert model.netG.model.model[0].out_channels == 16  # ngf inferred from the file
    _holds_vector_weights(model, vector)
    inputs = vector["inputs"]
    with torch.no_grad():  # returned in eval mode: the official eval-mode output
        output = model(inputs["comp"], inputs["mask"])["images"]
        exact = _vector_model(vector, dtype=torch.float64)(inputs["comp"].double(), inputs["mask"].double())
    assert_float32_close("loaded model output", output, vector["output"], exact["images"])


def test_load_official_folder_and_g_file(vector, tmp_path):
    torch.save(vector["state_dict_G"], tmp_path / "latest_net_G.pth")
    torch.save(vector["state_dict_E"], tmp_path / "latest_net_E.pth")
    _holds_vector_weights(BargainNet.from_checkpoint(tmp_path), vector)
    _holds_vector_weights(BargainNet.from_checkpoint(tmp_path / "latest_net_G.pth"), vector)
    epochs = tmp_path / "epochs"
    epochs.mkdir()
    torch.save(vector["state_dict_G"], epochs / "12_net_G.pth")
    torch.save(vector["state_dict_E"], epochs / "12_net_E.pth")
    _holds_vector_weights(BargainNet.from_checkpoint(epochs), vector)


def test_loading_errors_name_the_problem(vector, tmp_path):
    torch.save(vector["state_dict_G"], tmp_path / "3_net_G.pth")
    with pytest.raises(CheckpointError, match="3_net_E.pth is not beside it"):
        BargainNet.from_checkpoint(tmp_path / "3_net_G.pth")
    torch.save(vector["state_dict_G"], tmp_path / "4_net_G.pth")
    with pytest.raises(CheckpointError, match="several .*3_net_G.pth, 4_net_G.pth"):
        BargainNet.from_checkpoint(tmp_path)

    no_scale = {k: v for k, v in vector["state_dict_G"].items() if k != "weight"}
    state = {**{f"netG.{k}": v for k, v in no_scale.items()},
             **{f"netE.{k}": v for k, v in vector["state_dict_E"].items()}}
    torch.save(state, tmp_path / "no_scale.pth")
    with pytest.raises(CheckpointError, match=r"missing \(1\): weight"):
        BargainNet.from_checkpoint(tmp_path / "no_scale.pth")
    torch.save({**state, "extra": torch.zeros(1)}, tmp_path / "stray.pth")
    with pytest.raises(CheckpointError, match="unexpected: extra"):
        BargainNet.from_checkpoint(tmp_path / "stray.pth")
    torch.save(vector["state_dict_E"], tmp_path / "only_E.pth")
    with pytest.raises(CheckpointError, match="an E file alone cannot harmonize"):
        BargainNet.from_checkpoint(tmp_path / "only_E.pth")


def test_load_style_encoder_from_every_layout(vector, tmp_path):
    torch.save(vector["state_dict_E"], tmp_path / "latest_net_E.pth")
    torch.save(vector["state_dict_G"], tmp_path / "latest_net_G.pth")
    torch.save(_vector_model(vector).state_dict(), tmp_path / "combined.pth")
    reference = StyleEncoder()
    reference.load_state_dict(vector["state_dict_E"])
    for source in (tmp_path / "latest_net_E.pth", tmp_path / "combined.pth", tmp_path):
        encoder = load_style_encoder(source)
        assert not encoder.training
        assert all(torch.equal(a, b) for a, b in zip(encoder.state_dict().values(),
                                                      reference.state_dict().values()))
    with pytest.raises(CheckpointError, match="generator \\(G\\) checkpoint"):
        load_style_encoder(tmp_path / "latest_net_G.pth")


@pytest.mark.parametrize("precision", [torch.float16, torch.bfloat16])
def test_partial_conv_under_low_precision_autocast_has_no_nan(precision):
    """In fp16, count + 1e-8 rounds to 0 outside the region: the window ratio is computed in float32."""
    conv = PartialConv2d(3, 8, kernel_size=3, stride=2, padding=0, bias=False)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 32, 32, generator=generator)
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 4:14, 6:20] = 1
    with torch.no_grad():
        expected, expected_mask = conv(x, mask)
        with torch.autocast("cpu", dtype=precision):
            out, new_mask = conv(x, mask)
    assert torch.isfinite(out).all() and torch.equal(new_mask.float(), expected_mask)
    assert (out.float() - expected).abs().max() < 0.05 * expected.abs().max()
