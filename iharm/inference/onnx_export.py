"""ONNX export of the registered models, and its check against PyTorch.

Each model becomes one graph that computes exactly the official forward call,
so that a C++, C# or JavaScript program can run it with onnxruntime:

* **DucoNet**: ``image`` (B,3,H,W), ``mask`` (B,1,H,W), ``image_lab`` (B,3,H,W)
  -> ``output`` (B,3,H,W);
* **iSSAM**: ``image``, ``mask`` -> ``output``;
* **BargainNet**: ``image``, ``mask`` -> ``output``, ``bg_code`` (B,16,1,1),
  plus a second graph, ``<name>_E.onnx``, the domain code extractor alone
  (``image``, ``region``) -> ``code``, for the harmony score.

All tensors are float32. ``image`` is the RGB composite in [0, 1] normalised
with the model's mean and std (ImageNet for DucoNet and iSSAM, 0.5 / 0.5 for
BargainNet), ``mask`` the foreground in [0, 1], ``image_lab`` OpenCV's 8-bit
Lab of the uint8 composite (``cv::cvtColor(rgb, COLOR_RGB2Lab)``) divided by
255, without mean or std. ``output`` is in ``image``'s normalised space:
``rgb = clip((output * std + mean) * 255, 0, 255)``. Batch, height and width
are dynamic; H and W must be multiples of the model's size divisor (32; 256
for BargainNet). The file's metadata (key ``iharm``) holds this contract as
JSON.

The graph is traced from the plain path (the fast path's mask-box crop has a
data-dependent shape) with the modulated convolutions in their batch-free
form (:func:`iharm.model.stylegan2.modulated_conv_on_activations`).
"""
from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from iharm.data.color import rgb_to_lab
from iharm.model.fast_path import fast_path
from iharm.model.registry import ModelSpec, get_model_spec
from iharm.utils.files import atomic_open

#: The opset the graphs are written with (onnxruntime >= 1.18 runs it).
OPSET = 17


@dataclass(frozen=True)
class Graph:
    """One exported network: the module to trace, its input and output names, and its file suffix."""

    module: nn.Module
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    suffix: str = ""


class _Forward(nn.Module):
    """The registered forward call as positional tensors in, tensors out (what ONNX export traces)."""

    def __init__(self, model: nn.Module, spec: ModelSpec, outputs: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.arguments = tuple(spec.inputs)
        self.outputs = tuple("images" if name == "output" else name for name in outputs)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        result = self.model(**dict(zip(self.arguments, inputs)))
        return tuple(result[name] for name in self.outputs)


def model_graphs(model_name: str, model: nn.Module) -> list[Graph]:
    """The graphs that export ``model`` (a registered ``model_name``), in eval mode."""
    spec = get_model_spec(model_name)
    inputs = tuple(spec.inputs)
    if model_name == "BargainNet":
        outputs = ("output", "bg_code")
        return [Graph(_Forward(model, spec, outputs).eval(), inputs, outputs),
                Graph(model.netE.eval(), ("image", "region"), ("code",), suffix="_E")]
    return [Graph(_Forward(model, spec, ("output",)).eval(), inputs, ("output",))]


def contract(model_name: str, graph: Graph) -> dict[str, object]:
    """What the graph expects and returns, as stored in the file's metadata."""
    spec = get_model_spec(model_name)
    norm = {"mean": list(spec.normalization.mean), "std": list(spec.normalization.std)}
    described = {
        "image": f"float32 (B,3,H,W): RGB / 255, then (x - mean) / std with {norm}",
        "mask": "float32 (B,1,H,W): the foreground in [0, 1]",
        "region": "float32 (B,1,H,W): the region whose code E computes (1 - mask: the background)",
        "image_lab": "float32 (B,3,H,W): OpenCV 8-bit Lab of the uint8 RGB composite (COLOR_RGB2Lab) / 255",
        "output": "float32 (B,3,H,W) in image's normalised space: RGB = clip((output * std + mean) * 255, 0, 255)",
        "bg_code": "float32 (B,16,1,1): E's code of the background (1 - mask)",
        "code": "float32 (B,16,1,1): E's code of the region",
    }
    return {
        "model": model_name + graph.suffix,
        "normalization": norm,
        "size_divisor": spec.size_divisor,
        "inputs": {name: described[name] for name in graph.inputs},
        "outputs": {name: described[name] for name in graph.outputs},
    }


def example_inputs(model_name: str, batch: int, height: int, width: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A deterministic composite (smooth colours plus texture, a rectangle mask per sample, a
    colour shift inside it) in the model's input space: tracing and checking inputs."""
    spec = get_model_spec(model_name)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    images, masks, labs = [], [], []
    for s in range(batch):
        rgb = np.stack([128 + 100 * np.sin(x / 23 + s) * np.cos(y / 57),
                        128 + 90 * np.cos(y / 31 - s),
                        110 + 80 * np.sin((x + y) / 40 + 2 * s)], axis=-1)
        rgb = rgb + rng.normal(0, 6, rgb.shape)
        mask = np.zeros((height, width), np.float32)
        top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
        mask[top:top + height // 3, left:left + width // 3] = 1
        rgb = np.where(mask[..., None] > 0, rgb * (1.15, 0.85, 0.95) + (10, -5, 20), rgb)
        rgb = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
        images.append(torch.from_numpy(rgb).permute(2, 0, 1))
        labs.append(torch.from_numpy(rgb_to_lab(rgb)).permute(2, 0, 1))
        masks.append(torch.from_numpy(mask)[None])
    batch_ = {"images": torch.stack(images), "masks": torch.stack(masks), "images_lab": torch.stack(labs)}
    prepared = spec.prepare_batch(batch_, "cpu")
    inputs = {"image": prepared["images"], "mask": prepared["masks"], "region": 1 - prepared["masks"]}
    if "images_lab" in prepared:
        inputs["image_lab"] = prepared["images_lab"]
    return inputs


def _graph_bytes(model_name: str, graph: Graph, inputs: Mapping[str, torch.Tensor], opset: int) -> bytes:
    import onnx

    dynamic = {name: {0: "batch", 2: "height", 3: "width"} for name in graph.inputs}
    dynamic.update({name: {0: "batch"} if name.endswith("code") else {0: "batch", 2: "height", 3: "width"}
                    for name in graph.outputs})
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about every shape check it freezes; the checks only raise on bad shapes.
        warnings.simplefilter("ignore")
        torch.onnx.export(graph.module, tuple(inputs[name] for name in graph.inputs), buffer, dynamo=False,
                          input_names=list(graph.inputs), output_names=list(graph.outputs),
                          dynamic_axes=dynamic, opset_version=opset)
    proto = onnx.load_from_string(buffer.getvalue())
    entry = proto.metadata_props.add()
    entry.key, entry.value = "iharm", json.dumps(contract(model_name, graph))
    return proto.SerializeToString()


def onnx_session(graph: bytes | str | os.PathLike, threads: int | None = None):
    """An onnxruntime CPU session of an exported graph (its bytes or its file); ``threads``: intra-op
    threads (None: onnxruntime's default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    source = graph if isinstance(graph, bytes) else str(graph)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def onnx_feed(session, inputs: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The session's inputs, by name, from ``inputs`` (extra names are ignored)."""
    return {arg.name: inputs[arg.name].numpy() for arg in session.get_inputs()}


def run_onnx(graph: bytes | str | os.PathLike, inputs: Mapping[str, torch.Tensor]) -> list[np.ndarray]:
    """Run an exported graph with onnxruntime on the CPU; ``inputs`` by name (extra names are ignored)."""
    session = onnx_session(graph)
    return session.run(None, onnx_feed(session, inputs))


def max_difference(graph: Graph, graph_bytes: bytes, inputs: Mapping[str, torch.Tensor]) -> float:
    """Largest absolute difference between onnxruntime and PyTorch (the model as it runs, fast
    path included) over every output of ``graph``."""
    with torch.no_grad():
        expected = graph.module(*(inputs[name] for name in graph.inputs))
    expected = expected if isinstance(expected, tuple) else (expected,)
    produced = run_onnx(graph_bytes, inputs)
    return max(float(np.abs(out - ref.numpy()).max()) for out, ref in zip(produced, expected))


def graph_path(out: str | os.PathLike, graph: Graph) -> Path:
    """Where ``graph`` is written when the user asks for ``out`` (``model.onnx``, ``model_E.onnx``)."""
    out = Path(out)
    return out.with_name(out.stem + graph.suffix + out.suffix)


@dataclass(frozen=True)
class ExportResult:
    """One written graph and the largest onnxruntime-PyTorch difference per checked input shape."""

    path: Path
    differences: dict[str, float]


class ExportCheckError(ValueError):
    """The exported graph does not compute what the PyTorch model computes (nothing was written)."""


def check_trace_size(model_name: str, size: int) -> None:
    """ValueError naming ``--size`` unless ``size`` is a positive multiple of the model's size divisor."""
    divisor = get_model_spec(model_name).size_divisor
    if size <= 0 or size % divisor:
        raise ValueError(f"--size {size}: {model_name} needs a positive multiple of {divisor}")


def export_onnx(model_name: str, model: nn.Module, out: str | os.PathLike, size: int,
                check_shapes: tuple[tuple[int, int, int], ...] | None = None, tolerance: float = 1e-4,
                opset: int = OPSET) -> list[ExportResult]:
    """Export ``model`` to ``out`` (and its companion graphs beside it), traced at ``size`` x ``size``.

    Each graph is checked with onnxruntime against PyTorch on
    :func:`example_inputs` of every (batch, height, width) in
    ``check_shapes`` before anything is written (default: a batch of 2 at
    the traced size and one image a divisor wider, which exercises the
    dynamic batch and width): a difference above ``tolerance`` raises
    :class:`ExportCheckError`. Files are written atomically and an existing
    file is never replaced (:class:`FileExistsError`).
    """
    check_trace_size(model_name, size)
    if check_shapes is None:
        divisor = get_model_spec(model_name).size_divisor
        check_shapes = ((2, size, size), (1, size, size + divisor))
    if not check_shapes:
        raise ValueError("check_shapes: give at least one (batch, height, width); an export is always checked")
    graphs = model_graphs(model_name, model.eval())
    for graph in graphs:
        if graph_path(out, graph).exists():
            raise FileExistsError(f"{graph_path(out, graph)}: exists; an export never replaces a file")
    results = []
    trace_inputs = example_inputs(model_name, 1, size, size)
    with fast_path(model, False):
        exported = [_graph_bytes(model_name, graph, trace_inputs, opset) for graph in graphs]
    checks = {f"{b}x{h}x{w}": example_inputs(model_name, b, h, w, seed=1) for b, h, w in check_shapes}
    for graph, data in zip(graphs, exported):
        differences = {shape: max_difference(graph, data, inputs) for shape, inputs in checks.items()}
        for shape, difference in differences.items():
            if not difference <= tolerance:
                raise ExportCheckError(f"{graph_path(out, graph)}: onnxruntime differs from PyTorch by "
                                       f"{difference:.3g} at {shape} (allowed {tolerance:g}); nothing written")
        results.append(ExportResult(graph_path(out, graph), differences))
    for graph, data, result in zip(graphs, exported, results):
        with atomic_open(result.path) as handle:
            handle.write(data)
    return results
