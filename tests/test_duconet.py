"""DucoNet against the official reference (../shared/reference/duconet256_*).

Every expectation comes from the official code: the state-dict layout dump,
the weights and outputs of ``duconet256_vector.pt`` (see vectors.md), or the
official ``control_module_start`` rule. Forwards are shared through
module-scoped fixtures to keep the suite fast.
"""
from __future__ import annotations

import copy
import json

import pytest
import torch

from iharm.model.duconet import DucoNet_model
from iharm.model.losses import MaskWeightedMSE

ATOL = 1e-5
BLUR = "decoder.up_blocks.2.attention.mask_blurring.weight"


@pytest.fixture(scope="module")
def vector(reference_dir):
    return torch.load(reference_dir / "duconet256_vector.pt", weights_only=True)


@pytest.fixture(scope="module")
def official_layout(reference_dir):
    return json.loads((reference_dir / "duconet256_keys.json").read_text())


@pytest.fixture(scope="module")
def model(vector):
    net = DucoNet_model(**{k: vector["config"][k] for k in (
        "depth", "ch", "image_fusion", "attention_mid_k", "attend_from", "batchnorm_from", "w_dim",
        "control_module_start")})
    net.load_state_dict(vector["state_dict"], strict=True)
    return net.eval()


@pytest.fixture(scope="module")
def eval_run(model, vector):
    """One eval forward on the reference inputs, with the captured intermediates."""
    captured = {}

    def keep(name):
        def hook(_module, _inputs, output):
            captured[name] = [o.detach().clone() for o in output] if isinstance(output, list) \
                else output.detach().clone()
        return hook

    targets = {"encoder": model.encoder, "w_l": model.l_encoder, "w_a": model.a_encoder, "w_b": model.b_encoder,
               "conv_attention_logits": model.decoder.conv_attention, "to_rgb": model.decoder.to_rgb}
    handles = [module.register_forward_hook(keep(name)) for name, module in targets.items()]
    try:
        with torch.no_grad():
            inputs = vector["inputs"]
            output = model(inputs["image"], inputs["mask"], image_lab=inputs["image_lab"])["images"]
    finally:
        for handle in handles:
            handle.remove()
    return output, captured


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


def test_eval_output_matches_official(eval_run, vector):
    output, _ = eval_run
    torch.testing.assert_close(output, vector["output"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ["w_l", "w_a", "w_b", "conv_attention_logits", "to_rgb"])
def test_intermediates_match_official(eval_run, vector, name):
    _, captured = eval_run
    torch.testing.assert_close(captured[name], vector["extras"]["captures"][name], atol=ATOL, rtol=0)


def test_encoder_intermediate_shapes(eval_run, vector):
    _, captured = eval_run
    assert [list(f.shape) for f in captured["encoder"]] == vector["extras"]["encoder_intermediates_shapes"]


def test_decoder_with_synthetic_styles_matches_official(model, vector):
    """Strong, distinct styles exercise the control modules (and the l/a/b routing)."""
    reference = vector["extras"]["decoder_synthetic_ws"]
    image, mask = vector["inputs"]["image"], vector["inputs"]["mask"]
    with torch.no_grad():
        output = model.decoder(model.encoder(torch.cat((image, mask), 1), None), image, mask, reference["ws"])
    torch.testing.assert_close(output, reference["output"], atol=ATOL, rtol=0)


def test_perturbed_one_dimensional_parameters_match_official(model, vector):
    """Biases are zero after the official init; this variant makes every one of them count."""
    variant = vector["extras"]["variant_1d_perturbed"]
    perturbed = copy.deepcopy(model)
    state = perturbed.state_dict()
    assert len(variant["overrides"]) == sum(1 for p in perturbed.parameters() if p.dim() <= 1) == 163
    state.update(variant["overrides"])
    perturbed.load_state_dict(state, strict=True)
    inputs = vector["inputs"]
    with torch.no_grad():
        output = perturbed(inputs["image"], inputs["mask"], image_lab=inputs["image_lab"])["images"]
    torch.testing.assert_close(output, variant["output"], atol=ATOL, rtol=0)


#: The first conv's bias gradient sums over every pixel through batch-statistics BatchNorm:
#: float32 rounding alone puts both the reference and ours ~1.5e-3 (relative) from the
#: float64 value (measured), so 1e-4 between two CPUs is not attainable for it.
GRAD_RTOL = {"encoder.block0.convs.block.0.block.0.bias": 5e-4}


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).norm() / expected.norm()).item()


def test_train_mode_step_matches_official(model, vector):
    """BatchNorm batch statistics, the DucoNet loss (min_area=100), gradients and running stats."""
    reference = vector["extras"]["train_mode"]
    inputs = vector["inputs"]
    net = copy.deepcopy(model).train()
    output = net(inputs["image"], inputs["mask"], image_lab=inputs["image_lab"])["images"]
    per_sample = MaskWeightedMSE(min_area=100)(output, vector["extras"]["target_image"], inputs["mask"])
    loss = per_sample.mean()
    loss.backward()

    # Batch-statistics BatchNorm amplifies float rounding (the reference ran on another CPU;
    # eval outputs agree to ~4e-7), hence a looser bound on the train-mode output only.
    torch.testing.assert_close(output.detach(), reference["output"], atol=5e-5, rtol=0)
    torch.testing.assert_close(per_sample.detach(), reference["loss_per_sample"], rtol=1e-4, atol=0)
    torch.testing.assert_close(loss.detach(), reference["loss"], rtol=1e-4, atol=0)
    grads = dict(net.named_parameters())
    total = sum(float(p.grad.double().pow(2).sum()) for p in grads.values() if p.grad is not None) ** 0.5
    assert total == pytest.approx(reference["grad_l2_norm_total"], rel=1e-4)
    for name, expected in reference["grads"].items():
        assert _relative_error(grads[name].grad, expected) < GRAD_RTOL.get(name, 1e-4), name
    # The official StyleBlock never feeds noise: its 18 scale_noise scalars get no gradient.
    scale_noise = [p for name, p in grads.items() if name.endswith("scale_noise")]
    assert len(scale_noise) == 18 and all(p.grad is None for p in scale_noise)
    state = net.state_dict()
    for name, expected in reference["bn_running_after_one_train_forward"].items():
        torch.testing.assert_close(state[name], expected, atol=1e-6, rtol=1e-5)


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
