"""DucoNet against the official reference (../shared/reference/duconet256_*).

Every expectation comes from the official code: the state-dict layout dump,
the weights and outputs of ``duconet256_vector.pt`` (see vectors.md), or the
official ``control_module_start`` rule. How close counts as equal is
measured, not fixed: see ``float_bounds.py``.
"""
from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from iharm.model.duconet import DucoNet_model
from iharm.model.losses import MaskWeightedMSE
from iharm.model.unet import UNetUpBlock

from float_bounds import assert_float32_close, norm_noise

BLUR = "decoder.up_blocks.2.attention.mask_blurring.weight"
CONFIG_KEYS = ("depth", "ch", "image_fusion", "attention_mid_k", "attend_from", "batchnorm_from", "w_dim",
               "control_module_start")
CAPTURED = ("w_l", "w_a", "w_b", "conv_attention_logits", "to_rgb")


@pytest.fixture(scope="module")
def vector(reference_dir):
    return torch.load(reference_dir / "duconet256_vector.pt", weights_only=True)


@pytest.fixture(scope="module")
def official_layout(reference_dir):
    return json.loads((reference_dir / "duconet256_keys.json").read_text())


def _build(vector, state_dict=None) -> tuple[DucoNet_model, DucoNet_model]:
    """The float32 network as users get it and its float64 twin (float64 makes any exact path exact:
    the fast path's folded BatchNorm and cropping change float32 rounding only, so the twin keeps them)."""
    nets = []
    for dtype in (torch.float32, torch.float64):
        net = DucoNet_model(**{k: vector["config"][k] for k in CONFIG_KEYS})
        net.load_state_dict(vector["state_dict"] if state_dict is None else state_dict, strict=True)
        nets.append(net.to(dtype).eval())
    return nets[0], nets[1]


@pytest.fixture(scope="module")
def models(vector):
    return _build(vector)


@pytest.fixture(scope="module")
def model(models):
    return models[0]


def _inputs(vector, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: vector["inputs"][k].to(dtype) for k in ("image", "mask", "image_lab")}


def _eval_with_captures(net: DucoNet_model, inputs: dict[str, torch.Tensor]):
    """One eval forward with the official captures (Lab codes, attention logits, to_rgb)."""
    captured = {}

    def keep(name):
        def hook(_module, _inputs, output):
            captured[name] = [o.detach().clone() for o in output] if isinstance(output, list) \
                else output.detach().clone()
        return hook

    targets = {"encoder": net.encoder, "w_l": net.l_encoder, "w_a": net.a_encoder, "w_b": net.b_encoder,
               "conv_attention_logits": net.decoder.conv_attention, "to_rgb": net.decoder.to_rgb}
    handles = [module.register_forward_hook(keep(name)) for name, module in targets.items()]
    try:
        with torch.no_grad():
            output = net(inputs["image"], inputs["mask"], image_lab=inputs["image_lab"])["images"]
    finally:
        for handle in handles:
            handle.remove()
    return output, captured


def _decoder_with_synthetic_styles(net: DucoNet_model, vector, dtype: torch.dtype) -> torch.Tensor:
    ws = {k: w.to(dtype) for k, w in vector["extras"]["decoder_synthetic_ws"]["ws"].items()}
    inputs = _inputs(vector, dtype)
    image, mask = inputs["image"], inputs["mask"]
    with torch.no_grad():
        return net.decoder(net.encoder(torch.cat((image, mask), 1), None), image, mask, ws)


def assert_eval_matches_official(net32: DucoNet_model, net64: DucoNet_model, vector,
                                 inputs32: dict[str, torch.Tensor] | None = None) -> None:
    """The eval-mode checks of the vector: output, every capture, and the synthetic-style decoder."""
    inputs32 = _inputs(vector, torch.float32) if inputs32 is None else inputs32
    output, captured = _eval_with_captures(net32, inputs32)
    exact, exact_captured = _eval_with_captures(net64, {k: v.double() for k, v in inputs32.items()})
    assert_float32_close("eval output", output, vector["output"], exact)
    for name in CAPTURED:
        assert_float32_close(name, captured[name], vector["extras"]["captures"][name], exact_captured[name])
    assert_float32_close("decoder with synthetic ws", _decoder_with_synthetic_styles(net32, vector, torch.float32),
                         vector["extras"]["decoder_synthetic_ws"]["output"],
                         _decoder_with_synthetic_styles(net64, vector, torch.float64))


def test_state_dict_layout_matches_official_in_order(official_layout):
    layout = [(name, tuple(shape), str(dtype).removeprefix("torch."))
              for name, shape, dtype in official_layout["state_dict"]]
    ours = [(name, tuple(t.shape), str(t.dtype).removeprefix("torch."))
            for name, t in DucoNet_model().state_dict().items()]
    assert len(ours) == official_layout["num_state_dict_entries"] == 335
    assert ours == layout


def test_parameter_count_and_buffers_match_official(official_layout):
    net = DucoNet_model()
    assert sum(p.numel() for p in net.parameters()) == official_layout["total_params"] == 7_630_487
    assert [name for name, _ in net.named_buffers()] == official_layout["buffers"]


def test_official_weights_load_strictly(model, vector):
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in vector["state_dict"].items())


def test_eval_outputs_and_captures_match_official(models, vector):
    """Output, Lab codes, attention logits, to_rgb, and the control modules under strong distinct styles."""
    assert_eval_matches_official(*models, vector)


def test_encoder_intermediate_shapes(model, vector):
    _, captured = _eval_with_captures(model, _inputs(vector, torch.float32))
    assert [list(f.shape) for f in captured["encoder"]] == vector["extras"]["encoder_intermediates_shapes"]


def test_perturbed_one_dimensional_parameters_match_official(vector):
    """Biases are zero after the official init; this variant makes every one of them count."""
    variant = vector["extras"]["variant_1d_perturbed"]
    state = dict(vector["state_dict"])
    assert len(variant["overrides"]) == sum(1 for p in DucoNet_model().parameters() if p.dim() <= 1) == 163
    state.update(variant["overrides"])
    net32, net64 = _build(vector, state)
    output, _ = _eval_with_captures(net32, _inputs(vector, torch.float32))
    exact, _ = _eval_with_captures(net64, _inputs(vector, torch.float64))
    assert_float32_close("perturbed variant output", output, variant["output"], exact)


# --- the same comparison must catch real mistakes ---------------------------------------------------------

def _wrong_batchnorm_eps(vector, monkeypatch):
    nets = _build(vector)
    for net in nets:
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eps = 1e-3
    return nets, None


def _dropped_skip_connection(vector, monkeypatch):
    forward = UNetUpBlock.forward
    monkeypatch.setattr(UNetUpBlock, "forward", lambda self, x, encoder_out, mask, ws=None:
                        forward(self, x, torch.zeros_like(encoder_out), mask, ws))
    return _build(vector), None


def _wrong_lab_scale(vector, monkeypatch):
    inputs = _inputs(vector, torch.float32)
    inputs["image_lab"] = inputs["image_lab"] * torch.tensor([100 / 255, 1, 1]).view(1, 3, 1, 1)  # L in 0..100
    return _build(vector), inputs


def _transposed_style_weight(vector, monkeypatch):
    state = {k: v.transpose(0, 1).contiguous() if k.endswith("style_block2.conv.weight.weight") else v
             for k, v in vector["state_dict"].items()}
    return _build(vector, state), None


@pytest.mark.parametrize("mistake", [_wrong_batchnorm_eps, _dropped_skip_connection, _wrong_lab_scale,
                                     _transposed_style_weight], ids=lambda f: f.__name__.strip("_"))
def test_the_exactness_check_catches_a_broken_implementation(vector, monkeypatch, mistake):
    """Each mistake is small in code and changes the numbers well beyond float32 rounding:
    the very check that the correct network passes must fail."""
    (net32, net64), inputs = mistake(vector, monkeypatch)
    with pytest.raises(AssertionError, match="float32 rounding"):
        assert_eval_matches_official(net32, net64, vector, inputs)


def test_train_mode_step_matches_official(models, vector):
    """BatchNorm batch statistics, the DucoNet loss (min_area=100), gradients and running stats."""
    reference = vector["extras"]["train_mode"]
    runs = {}
    for net, dtype in zip(models, (torch.float32, torch.float64)):
        inputs = _inputs(vector, dtype)
        net = copy.deepcopy(net).train()
        output = net(inputs["image"], inputs["mask"], image_lab=inputs["image_lab"])["images"]
        per_sample = MaskWeightedMSE(min_area=100)(output, vector["extras"]["target_image"].to(dtype), inputs["mask"])
        loss = per_sample.mean()
        loss.backward()
        grads = dict(net.named_parameters())
        runs[dtype] = {
            "output": output.detach(), "loss_per_sample": per_sample.detach(), "loss": loss.detach(),
            "all_grads": torch.cat([p.grad.flatten().to(dtype) for p in grads.values() if p.grad is not None]),
            "grads": {name: grads[name].grad for name in reference["grads"]},
            "state": net.state_dict()}
        # The official StyleBlock never feeds noise: its 18 scale_noise scalars get no gradient.
        scale_noise = [p for name, p in grads.items() if name.endswith("scale_noise")]
        assert len(scale_noise) == 18 and all(p.grad is None for p in scale_noise)
    ours, exact = runs[torch.float32], runs[torch.float64]
    for key in ("output", "loss_per_sample", "loss"):
        assert_float32_close(f"train-mode {key}", ours[key], reference[key], exact[key])
    norms = {key: run["all_grads"].double().norm() for key, run in (("ours", ours), ("exact", exact))}
    assert_float32_close("total gradient norm", norms["ours"],
                         torch.tensor(reference["grad_l2_norm_total"], dtype=torch.float64), norms["exact"],
                         noise=norm_noise(ours["all_grads"], exact["all_grads"]))
    for name, expected in reference["grads"].items():
        assert_float32_close(f"gradient of {name}", ours["grads"][name], expected, exact["grads"][name],
                             elementwise=False)
    for name, expected in reference["bn_running_after_one_train_forward"].items():
        assert_float32_close(name, ours["state"][name], expected, exact["state"][name])


def test_blur_buffer_is_the_loaded_random_kernel(model, vector):
    """The official kernel is Xavier noise, not a Gaussian: it must come from the file."""
    kernel = vector["state_dict"][BLUR]
    assert not vector["extras"]["mask_blur_is_gaussian_after_init"]
    assert torch.equal(model.state_dict()[BLUR], kernel)
    assert abs(kernel.sum().item() - 1) > 0.1
    fresh = DucoNet_model().state_dict()[BLUR]
    assert fresh.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert not torch.allclose(fresh, kernel)


def test_forward_without_lab_is_a_clear_error(model):
    image, mask = torch.zeros(1, 3, 32, 32), torch.zeros(1, 1, 32, 32)
    with pytest.raises(ValueError, match="image_lab"):
        model(image, mask)
    with pytest.raises(ValueError, match="image_lab must be"):
        model(image, mask, image_lab=torch.zeros(1, 3, 64, 64))


CONTROL_STAGES = {-1: {0, 1, 2}, 0: {0, 1, 2}, 1: {1, 2}, 2: {2}, 3: set(), 4: set()}


@pytest.mark.parametrize("start", sorted(CONTROL_STAGES))
def test_control_module_start_selects_stages(official_layout, start):
    """Official rule: -1 -> every stage, else stages d >= start; the other keys are unchanged."""
    expected_stages = CONTROL_STAGES[start]
    expected_keys = [name for name, _, _ in official_layout["state_dict"]
                     if ".control_module." not in name
                     or int(name.split("up_blocks.")[1].split(".")[0]) in expected_stages]
    net = DucoNet_model(control_module_start=start)
    assert {d for d, block in enumerate(net.decoder.up_blocks) if block.use_control_module} == expected_stages
    assert list(net.state_dict()) == expected_keys
