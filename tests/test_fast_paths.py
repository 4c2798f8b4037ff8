"""The exact fast paths against the plain path (the official algorithm op for op).

Independent expectations: the plain path must still give the official
reference output (duconet256_vector.pt); every fast option must give the
plain path's output, loss, gradients and BatchNorm statistics to float32
rounding; cropping must give the full computation's values; the checkpoint
layout must not change. Inputs are small so that the file runs in seconds.
"""
from __future__ import annotations

import copy
from dataclasses import fields, replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from iharm.inference.predictor import Predictor
from iharm.inference.utils import load_model
from iharm.model import fast_path as fast_path_module
from iharm.model.duconet import DucoNet_model
from iharm.model.fast_path import (DEFAULT_FAST_PATH, FastPath, FastPathModule, adapt_fast_path, fast_path,
                                   fast_path_options, map_region, mask_box, runnable_on, set_fast_path)
from iharm.model.issam import SSAMImageHarmonization
from iharm.model.losses import MaskWeightedMSE
from iharm.model.registry import get_model_spec

from float_bounds import assert_float32_close

OPTIONS = [f.name for f in fields(FastPath)]
#: Parameters whose gradients are compared, one from every part the fast paths touch.
NAMED_PARAMETERS = (
    "l_encoder.lab_encoder.block0.convs.block.0.block.0.weight",
    "b_encoder.lab_encoder.blocks_connected.block3.convs.block.1.block.1.weight",
    "b_encoder.map2w.net.2.weight",
    "decoder.up_blocks.0.control_module.a_styleblock.style_block1.conv.weight.weight",
    "decoder.up_blocks.2.control_module.b_styleblock.style_block2.to_style.weight.weight",
    "decoder.up_blocks.2.control_module.G_weight.0.weight",
    "decoder.up_blocks.2.attention.learning_block.0.block.0.weight",
    "decoder.up_blocks.2.attention.mix_gate.attention_transform.0.weight",
    "decoder.to_rgb.weight",
)


@pytest.fixture(scope="module")
def vector(reference_dir):
    return torch.load(reference_dir / "duconet256_vector.pt", weights_only=True)


@pytest.fixture(scope="module")
def official(vector):
    """The official weights with BatchNorm statistics and affines made non-trivial (folding must matter)."""
    net = DucoNet_model()
    net.load_state_dict(vector["state_dict"], strict=True)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                size = module.num_features
                module.running_mean.copy_(0.1 * torch.randn(size, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(size, generator=generator))
                module.weight.copy_(1 + 0.1 * torch.randn(size, generator=generator))
                module.bias.copy_(0.1 * torch.randn(size, generator=generator))
    return net.eval()


@pytest.fixture(scope="module")
def small_inputs():
    """Two 64x56 samples: a box mask touching the top-left border and a soft mask (union box)."""
    generator = torch.Generator().manual_seed(1)
    image = torch.randn(2, 3, 64, 56, generator=generator)
    lab = torch.rand(2, 3, 64, 56, generator=generator)
    target = torch.randn(2, 3, 64, 56, generator=generator)
    mask = torch.zeros(2, 1, 64, 56)
    mask[0, :, :20, :17] = 1.0
    mask[1, :, 34:47, 28:45] = 0.5
    return image, mask, lab, target


def _training_step(model, config, inputs, dtype=torch.float32):
    """Loss, named gradients and BatchNorm statistics after one train forward and backward."""
    image, mask, lab, target = (t.to(dtype) for t in inputs)
    net = set_fast_path(copy.deepcopy(model), config).to(dtype).train()
    loss = MaskWeightedMSE(min_area=100)(net(image, mask, lab)["images"], target, mask).mean()
    loss.backward()
    parameters = dict(net.named_parameters())
    state = net.state_dict()
    statistics = {k: v for k, v in state.items() if "running" in k}
    assert all(v.item() == 1 for k, v in state.items() if "num_batches" in k)
    return loss.detach(), {n: parameters[n].grad for n in NAMED_PARAMETERS}, statistics


@pytest.fixture(scope="module")
def plain_eval(official, small_inputs):
    """The plain path's output in float32 (the reference) and in float64 (its exact value)."""
    image, mask, lab, _ = small_inputs
    outputs = []
    for dtype in (torch.float32, torch.float64):
        with torch.inference_mode():
            net = set_fast_path(copy.deepcopy(official), False).to(dtype)
            outputs.append(net(image.to(dtype), mask.to(dtype), lab.to(dtype))["images"])
    return tuple(outputs)


@pytest.fixture(scope="module")
def plain_training(official, small_inputs):
    return _training_step(official, False, small_inputs), _training_step(official, False, small_inputs, torch.float64)


def assert_matches_plain_path(name, output, model, *inputs, per_image=False):
    """``output`` against the plain path of ``model`` on ``inputs`` (one image at a time with ``per_image``),
    within that path's float32 rounding measured against its float64 run."""
    plain = set_fast_path(copy.deepcopy(model), False)

    def run(net, tensors):
        if not per_image:
            return net(*tensors)["images"]
        return torch.cat([net(*(t[i:i + 1] for t in tensors))["images"] for i in range(tensors[0].shape[0])])

    with torch.inference_mode():
        reference = run(plain, inputs)
        exact = run(plain.double(), [t.double() for t in inputs])
    assert_float32_close(name, output, reference, exact, rounding_of=reference)


def assert_like_plain(name, output, plain_eval):
    """A fast variant's float32 output against the plain path's, within the plain path's measured rounding."""
    reference, exact = plain_eval
    assert_float32_close(name, output, reference, exact, rounding_of=reference)


def _variants():
    return [pytest.param(FastPath.only(option), id=option) for option in OPTIONS] + [
        pytest.param(DEFAULT_FAST_PATH, id="default")]


def test_plain_path_gives_the_official_output(official, vector):
    net = set_fast_path(DucoNet_model(), False)
    net.load_state_dict(vector["state_dict"], strict=True)
    inputs = vector["inputs"]
    with torch.no_grad():
        output = net.eval()(inputs["image"], inputs["mask"], image_lab=inputs["image_lab"])["images"]
    exact = set_fast_path(copy.deepcopy(net), False).double()
    with torch.no_grad():
        exact = exact(*(inputs[k].double() for k in ("image", "mask", "image_lab")))["images"]
    assert_float32_close("plain path output", output, vector["output"], exact)


@pytest.mark.parametrize("config", _variants())
def test_eval_output_equals_the_plain_path(official, small_inputs, plain_eval, config):
    image, mask, lab, _ = small_inputs
    net = set_fast_path(copy.deepcopy(official), config)
    with torch.inference_mode():
        output = net(image, mask, lab)["images"]
    assert_like_plain(str(config), output, plain_eval)


@pytest.mark.parametrize("config", _variants())
def test_training_step_equals_the_plain_path(official, small_inputs, plain_training, config):
    """Loss, gradients of named parameters, and BatchNorm running statistics after one train forward."""
    (plain_loss, plain_grads, plain_statistics), (exact_loss, exact_grads, exact_statistics) = plain_training
    loss, grads, statistics = _training_step(official, config, small_inputs)
    assert_float32_close("loss", loss, plain_loss, exact_loss, rounding_of=plain_loss)
    for name in NAMED_PARAMETERS:
        assert_float32_close(name, grads[name], plain_grads[name], exact_grads[name], rounding_of=plain_grads[name],
                             elementwise=False)
    for name, expected in plain_statistics.items():
        assert_float32_close(name, statistics[name], expected, exact_statistics[name], rounding_of=expected)


@pytest.mark.parametrize("mask_kind", ["empty", "everywhere", "single pixel at the corner"])
def test_extreme_masks(official, small_inputs, mask_kind):
    image, _, lab, _ = small_inputs
    mask = torch.zeros(2, 1, 64, 56)
    if mask_kind == "everywhere":
        mask += 1.0
    elif mask_kind.startswith("single"):
        mask[:, :, -1, -1] = 1.0
    with torch.inference_mode():
        output = official(image, mask, lab)["images"]
    assert_matches_plain_path(mask_kind, output, official, image, mask, lab)


def test_empty_mask_in_training_still_gives_style_parameters_a_zero_gradient(official, small_inputs):
    """As officially: an all-zero mask multiplies the control modules by 0, their gradient is 0, not None
    (Adam would otherwise skip those parameters for the step)."""
    image, _, lab, target = small_inputs
    mask = torch.zeros(2, 1, 64, 56)
    net = copy.deepcopy(official).train()
    MaskWeightedMSE(min_area=100)(net(image, mask, lab)["images"], target, mask).mean().backward()
    grad = dict(net.named_parameters())["decoder.up_blocks.1.control_module.l_styleblock.style_block1.bias"].grad
    assert grad is not None and torch.count_nonzero(grad) == 0


def test_inputs_are_not_modified(official, small_inputs):
    """The lean in-place writes touch only the network's own intermediate tensors."""
    image, mask, lab, _ = small_inputs
    copies = [t.clone() for t in (image, mask, lab)]
    with torch.inference_mode():
        official(image, mask, lab)
    assert all(torch.equal(a, b) for a, b in zip((image, mask, lab), copies))


def test_channels_last_and_batching_are_exact(official, small_inputs):
    image, mask, lab, _ = small_inputs
    net = copy.deepcopy(official).to(memory_format=torch.channels_last)
    cl = [t.contiguous(memory_format=torch.channels_last) for t in (image, mask, lab)]
    with torch.inference_mode():
        output = net(*cl)["images"]
    assert_matches_plain_path("channels_last batch", output, official, image, mask, lab, per_image=True)


def test_state_dict_layout_and_strict_loading_unchanged(official, vector):
    net = copy.deepcopy(official)
    with torch.inference_mode():  # fills the derived-tensor caches
        net(vector["inputs"]["image"][:1, :, :64, :64], vector["inputs"]["mask"][:1, :, :64, :64],
            vector["inputs"]["image_lab"][:1, :, :64, :64])
    assert list(net.state_dict()) == list(vector["state_dict"])
    fresh = DucoNet_model()
    fresh.load_state_dict(net.state_dict(), strict=True)
    net.load_state_dict(vector["state_dict"], strict=True)


def test_cached_weights_follow_loaded_weights(official, vector, small_inputs):
    """Folded and packed weights are cached in inference; loading new weights must invalidate them."""
    image, mask, lab, _ = small_inputs
    net = copy.deepcopy(official)
    fresh = DucoNet_model().eval()
    fresh.load_state_dict(vector["state_dict"], strict=True)
    with torch.inference_mode():
        net(image, mask, lab)
    net.load_state_dict(vector["state_dict"], strict=True)
    with torch.inference_mode():
        output = net(image, mask, lab)["images"]
    assert_matches_plain_path("after reloading", output, fresh, image, mask, lab)


def test_issam_fast_path_equals_plain(official, small_inputs):
    image, mask, _, _ = small_inputs
    issam = SSAMImageHarmonization()
    issam.load_state_dict({k: v for k, v in official.state_dict().items() if k in issam.state_dict()})
    with torch.inference_mode():
        output = issam.eval()(image, mask)["images"]
    assert_matches_plain_path("iSSAM", output, issam, image, mask)
    assert fast_path_options(issam) == ("fold_batchnorm", "fuse_activation", "share_intermediates", "crop_to_mask",
                                        "lean_memory", "channels_last")


def test_the_official_call_of_a_loaded_model_is_the_fast_path(official, small_inputs, tmp_path):
    """load_model then model(image, mask, image_lab) with ordinary tensors, as the official code is called:
    the parameters come in channels_last on the CPU, the inputs are converted inside, the output comes back
    contiguous and equals the plain path within its float32 rounding (issue 14, item 1)."""
    image, mask, lab, _ = small_inputs
    path = tmp_path / "duconet.pth"
    torch.save(official.state_dict(), path)
    loaded = load_model("DucoNet", path)
    kernels = [p for p in loaded.parameters() if p.dim() == 4 and p.shape[-1] > 1 and p.shape[1] > 1]
    assert kernels and all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
                           for p in kernels)
    seen = []
    hook = loaded.decoder.to_rgb.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        output = loaded(image, mask, image_lab=lab)["images"]
    hook.remove()
    assert seen[0].is_contiguous(memory_format=torch.channels_last), "the network ran NHWC"
    assert output.is_contiguous() and image.is_contiguous()
    assert_matches_plain_path("load_model call", output, official, image, mask, lab)


def test_plain_path_is_selectable_and_restorable():
    net = DucoNet_model()
    modules = [m for m in net.modules() if isinstance(m, FastPathModule)]
    assert modules and all(m.fast_path == DEFAULT_FAST_PATH for m in modules)
    with fast_path(net, False):
        assert all(m.fast_path == FastPath.plain() for m in modules)
        assert not any(getattr(modules[0].fast_path, name) for name in OPTIONS)
    assert all(m.fast_path == DEFAULT_FAST_PATH for m in modules)
    set_fast_path(net, FastPath.only("crop_to_mask"))
    assert all(m.fast_path == FastPath.only("crop_to_mask") for m in modules)
    with pytest.raises(ValueError, match="unknown fast-path options"):
        FastPath.only("warp_speed")


def test_mask_box_and_banded_regions_match_the_full_computation(monkeypatch):
    """Two zero-padded 3x3 convolutions on the box (halo 2), whole or in bands of rows,
    equal the full-image convolutions there, also where the box touches the border."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 40, 30, generator=generator)
    weights = [torch.randn(4, 4, 3, 3, generator=generator) for _ in range(2)]

    def convs(t):
        w = [weight.to(t.dtype) for weight in weights]
        return F.conv2d(F.relu(F.conv2d(t, w[0], padding=1)), w[1], padding=1)

    mask = torch.zeros(1, 1, 40, 30)
    mask[..., 0:17, 21:30] = 0.3
    box = mask_box(mask, halo=2)
    rows, cols = box.region
    assert (rows, cols) == (slice(0, 17), slice(21, 30))
    assert box.outer == (slice(0, 19), slice(19, 30))
    expected, exact = convs(x)[..., rows, cols], convs(x.double())[..., rows, cols]
    assert_float32_close("box", map_region(convs, x, box, 2, banded=False), expected, exact, rounding_of=expected)
    monkeypatch.setattr(fast_path_module, "BAND_PIXELS", 4 * 11)  # bands of 4 rows
    assert_float32_close("bands", map_region(convs, x, box, 2, banded=True), expected, exact, rounding_of=expected)
    assert mask_box(torch.zeros(2, 1, 8, 8), halo=2) is None


def test_predictor_defaults_are_exact_and_bf16_is_an_option(official, vector):
    raw = vector["inputs_uint8"]
    images = torch.as_tensor(raw["comp_rgb"][:1]).permute(0, 3, 1, 2)[..., :64, :96].contiguous()
    labs = torch.as_tensor(raw["comp_lab_cv2"][:1]).permute(0, 3, 1, 2)[..., :64, :96].contiguous()
    masks = vector["inputs"]["mask"][:1, :, :64, :96]
    spec = get_model_spec("DucoNet")
    default = Predictor(copy.deepcopy(official), spec)
    assert default.memory_format == torch.channels_last
    plain = Predictor(set_fast_path(copy.deepcopy(official), False), spec, channels_last=False)
    expected = plain.predict_batch(images, masks, labs)
    torch.testing.assert_close(default.predict_batch(images, masks, labs), expected, atol=1e-3, rtol=0)
    bf16 = Predictor(copy.deepcopy(official), spec, precision="bf16").predict_batch(images, masks, labs)
    assert bf16.dtype == torch.float32 and (bf16 - expected).abs().mean() < 2.0
    with pytest.raises(ValueError, match="fp16"):
        Predictor(copy.deepcopy(official), spec, precision="fp16")


def test_options_that_need_the_mask_box_on_the_host_are_off_on_cuda_and_when_compiled():
    """crop_to_mask syncs with the device and makes a data-dependent shape; fuse_activation is Inductor's
    own job: off where they do not belong, every other choice kept (issue 14, item 3)."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert runnable_on(DEFAULT_FAST_PATH, cpu) == DEFAULT_FAST_PATH
    assert runnable_on(DEFAULT_FAST_PATH, cuda) == replace(DEFAULT_FAST_PATH, crop_to_mask=False)
    assert runnable_on(DEFAULT_FAST_PATH, cpu, compiled=True) == replace(DEFAULT_FAST_PATH, crop_to_mask=False,
                                                                         fuse_activation=False)
    assert runnable_on(FastPath.plain(), cuda, compiled=True) == FastPath.plain()
    net = adapt_fast_path(DucoNet_model(), cuda)  # (the model stays where it is: only the options change)
    assert {m.fast_path for m in net.modules() if isinstance(m, FastPathModule)} == {runnable_on(DEFAULT_FAST_PATH,
                                                                                                 cuda)}


def test_compiled_predictor_is_one_graph_exact_and_reused_for_every_mask(official, small_inputs):
    """Predictor(compile=True): no graph break (fullgraph), the plain path's output within its float32
    rounding, and a new mask of the same size runs the same graph without recompiling."""
    import torch._dynamo

    image, mask, lab, _ = small_inputs
    spec = get_model_spec("DucoNet")
    to_uint8 = (lambda t: (t.clamp(0, 1) * 255).round().to(torch.uint8))
    images, labs = to_uint8(image * 0.25 + 0.5), to_uint8(lab)
    plain = Predictor(set_fast_path(copy.deepcopy(official), False), spec, channels_last=False)
    compiled = Predictor(copy.deepcopy(official), spec, compile=True)
    torch._dynamo.reset()
    try:
        first = compiled.predict_batch(images, mask, labs)
        moved = mask.roll(shifts=(9, 5), dims=(-2, -1)) * 0.7
        with torch._dynamo.config.patch(error_on_recompile=True):
            second = compiled.predict_batch(images, moved, labs)
    finally:
        torch._dynamo.reset()
    torch.testing.assert_close(first, plain.predict_batch(images, mask, labs), atol=1e-3, rtol=0)
    torch.testing.assert_close(second, plain.predict_batch(images, moved, labs), atol=1e-3, rtol=0)
    assert not torch.equal(first, second)
