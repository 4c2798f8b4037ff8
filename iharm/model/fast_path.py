"""Exact fast paths: the official computation, arranged to do less work.

Every network in :mod:`iharm.model` runs one of two ways:

* the **plain** path executes the algorithm op for op as the official code
  does (one branch, one encoder, one sample-kernel at a time); it is the
  baseline of ``scripts/benchmark.py`` and stays selectable with
  ``set_fast_path(model, False)`` or ``with fast_path(model, False): ...``;
* the **fast** path (the default) computes the same function with the same
  parameters and gives the same numbers up to float32 rounding (max abs
  difference far below 1e-4, checked in ``tests/test_fast_paths.py``).

:class:`FastPath` names each rearrangement, so the benchmark can measure them
one by one. None of them changes a parameter or a buffer: official state dicts
load with ``strict=True`` either way, and derived tensors (folded or packed
weights) live in a per-module cache outside the state dict.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from typing import ClassVar, NamedTuple, TypeVar

import torch
from torch import nn


T = TypeVar("T")


@dataclass(frozen=True)
class FastPath:
    """Which exact rearrangements a model uses (all on by default).

    ``fold_batchnorm``
        Eval mode: Conv2d followed by BatchNorm2d (running statistics) runs as
        one convolution with folded weights and bias, cached until a parameter
        or buffer changes.
    ``fuse_activation``
        Eval mode on the CPU (float32, oneDNN): a convolution and the ReLU
        after it run as one oneDNN call (conv with a ReLU post-op), saving a
        pass over the output.
    ``pack_styles``
        DucoNet control modules: the l/a/b style branches read the same input,
        so their first modulated convolutions run as one convolution with 3x
        the output channels and their second ones as one grouped convolution,
        instead of six separate calls.
    ``crop_to_mask``
        Work whose result the official blend multiplies by the mask (the
        control modules; in eval mode also the learning block of the
        spatial-separated attention) runs only on the mask's bounding box
        grown by the receptive-field halo; outside the box the mask is exactly
        0 and the official output there is exactly the other blend operand.
    ``share_intermediates``
        Values the official code computes several times from the same input
        are computed once per forward: the mask resized to each decoder stage
        (the attention and the control module of a stage both resize it) and
        the global pools of the attention's three channel gates. Bit-identical.
    ``lean_memory``
        Inference (no autograd): blends and gates write into tensors that are
        no longer needed instead of allocating new full-resolution ones.
    ``channels_last``
        Inference on the CPU: the whole network runs in channels_last (NHWC)
        memory format, which oneDNN's convolutions prefer. The model's inputs
        are converted on entry (the parameters are put in that format by
        :func:`~iharm.model.registry.create_model` on the CPU) and the outputs
        come back contiguous, so the official call ``model(image, mask, ...)``
        with ordinary tensors in and out gets it. Only the memory layout changes.
    """

    fold_batchnorm: bool = True
    fuse_activation: bool = True
    share_intermediates: bool = True
    pack_styles: bool = True
    crop_to_mask: bool = True
    lean_memory: bool = True
    channels_last: bool = True

    @classmethod
    def plain(cls) -> FastPath:
        """Every rearrangement off: the official algorithm as it runs officially."""
        return cls(**{f.name: False for f in fields(cls)})

    @classmethod
    def only(cls, *names: str) -> FastPath:
        """Just the named rearrangements (for measuring them one at a time)."""
        unknown = set(names) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown fast-path options {sorted(unknown)}; known: {[f.name for f in fields(cls)]}")
        return replace(cls.plain(), **{name: True for name in names})


#: The default configuration: exact rearrangements that pay on CPU.
DEFAULT_FAST_PATH = FastPath()


def runnable_on(config: FastPath, device: torch.device, compiled: bool = False) -> FastPath:
    """``config`` without the options that do not belong on ``device`` or under ``torch.compile``.

    ``crop_to_mask`` reads the mask's bounding box on the host: on CUDA that is
    a device sync in every control module and attention block (unmeasured on a
    GPU, so off there), and under ``torch.compile`` a data-dependent shape that
    would break the graph and recompile for every new box (off when compiled;
    every mask of one image size then shares one graph). ``fuse_activation``
    calls oneDNN's fused convolution directly, which Inductor emits on its own
    (off when compiled). Every other choice, the plain path included, stays.
    """
    if device.type == "cuda" or compiled:
        config = replace(config, crop_to_mask=False)
    if compiled:
        config = replace(config, fuse_activation=False)
    return config


def adapt_fast_path(model: nn.Module, device: str | torch.device, compiled: bool = False) -> nn.Module:
    """Every module of ``model`` on its :func:`runnable_on` configuration for ``device`` (in place)."""
    device = torch.device(device)
    for module in model.modules():
        if isinstance(module, FastPathModule):
            module.fast_path = runnable_on(module.fast_path, device, compiled)
    return model


class FastPathModule(nn.Module):
    """A module with an exact fast implementation, selected by its ``fast_path`` attribute.

    ``fast_path_options`` names the :class:`FastPath` fields the module reads.
    """

    fast_path: FastPath = DEFAULT_FAST_PATH
    fast_path_options: ClassVar[tuple[str, ...]] = ()


def channels_last_inputs(module: FastPathModule, *tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """A top-level forward's 4-D inputs in channels_last when ``module``'s ``channels_last`` option applies
    (CPU inference); otherwise, and for other tensors, as given."""
    if not module.fast_path.channels_last or torch.is_grad_enabled():
        return tensors
    return tuple(t.contiguous(memory_format=torch.channels_last)
                 if t is not None and t.dim() == 4 and t.device.type == "cpu" else t for t in tensors)


def contiguous_outputs(outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A top-level forward's outputs in the official layout, contiguous NCHW (a copy only after channels_last)."""
    return {key: value.contiguous() for key, value in outputs.items()}


def fast_path_options(model: nn.Module) -> tuple[str, ...]:
    """The :class:`FastPath` options that change how ``model`` runs (in field order)."""
    used = {name for module in model.modules() if isinstance(module, FastPathModule)
            for name in module.fast_path_options}
    return tuple(f.name for f in fields(FastPath) if f.name in used)


def _resolve(config: FastPath | bool) -> FastPath:
    if isinstance(config, FastPath):
        return config
    return DEFAULT_FAST_PATH if config else FastPath.plain()


def set_fast_path(model: nn.Module, config: FastPath | bool = True) -> nn.Module:
    """Select the fast (``True`` or a :class:`FastPath`) or the plain (``False``) path everywhere in ``model``."""
    resolved = _resolve(config)
    for module in model.modules():
        if isinstance(module, FastPathModule):
            module.fast_path = resolved
    return model


@contextmanager
def fast_path(model: nn.Module, config: FastPath | bool) -> Iterator[nn.Module]:
    """Run ``model`` with ``config`` inside the block, restoring every module's previous choice on exit."""
    saved = [(module, module.fast_path) for module in model.modules() if isinstance(module, FastPathModule)]
    set_fast_path(model, config)
    try:
        yield model
    finally:
        for module, previous in saved:
            module.fast_path = previous


def derived(module: nn.Module, key: str, sources: Sequence[torch.Tensor], make: Callable[[], T]) -> T:
    """``make()``, tensors computed from ``sources`` (parameters, buffers), cached on ``module``.

    With autograd on, the result is always recomputed, so gradients flow to the
    sources. Without it (inference), the cached tensor is reused while every
    source is the same storage at the same version: ``load_state_dict``,
    optimizer steps and ``.to()`` all change one or the other. Inference
    tensors (a model built under ``torch.inference_mode``) have no version
    counter, so nothing derived from them is cached; nor is anything while
    ``torch.compile`` traces.
    """
    if torch.is_grad_enabled() or torch.compiler.is_compiling() or any(t.is_inference() for t in sources):
        return make()  # (a compiled graph computes it in the graph: no Python cache to guard on)
    stamp = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in sources)
    cache: dict[str, tuple[tuple, T]] = module.__dict__.setdefault("_derived_tensors", {})
    entry = cache.get(key)
    if entry is None or entry[0] != stamp:
        entry = (stamp, make())
        cache[key] = entry
    return entry[1]


class MaskBox(NamedTuple):
    """Where a mask is non-zero: ``region`` (rows, cols) in image coordinates, ``outer`` the region
    grown by a halo and clipped to the image, ``inner`` the region in ``outer``'s coordinates."""

    region: tuple[slice, slice]
    outer: tuple[slice, slice]
    inner: tuple[slice, slice]


def mask_box(mask: torch.Tensor, halo: int) -> MaskBox | None:
    """The bounding box of ``mask != 0`` over the whole batch, with ``halo`` pixels of context; None if empty.

    A stack of ``halo`` 3x3 zero-padded convolutions run on ``x[..., outer]``
    gives exactly the full-image result on ``region``: inside the image each
    output there sees only pixels of ``outer``, and where ``outer`` is clipped
    by the image border the crop's zero padding is the original zero padding.
    """
    support = mask.detach().ne(0).flatten(0, -3).any(dim=0)
    rows = torch.nonzero(support.any(dim=1)).flatten()
    if rows.numel() == 0:
        return None
    cols = torch.nonzero(support.any(dim=0)).flatten()
    height, width = support.shape
    top, bottom, left, right = rows[0].item(), rows[-1].item() + 1, cols[0].item(), cols[-1].item() + 1
    outer_top, outer_left = max(top - halo, 0), max(left - halo, 0)
    return MaskBox(
        region=(slice(top, bottom), slice(left, right)),
        outer=(slice(outer_top, min(bottom + halo, height)), slice(outer_left, min(right + halo, width))),
        inner=(slice(top - outer_top, bottom - outer_top), slice(left - outer_left, right - outer_left)),
    )


#: Pixels per band of :func:`map_region` / :func:`row_bands` in lean inference: bounds the
#: temporaries of mask-local work (a 96-channel float32 band is 48 MiB) at any image size.
BAND_PIXELS = 1 << 17


def row_bands(start: int, stop: int, width: int) -> Iterator[slice]:
    """Consecutive row slices covering ``[start, stop)``, each of at most :data:`BAND_PIXELS` pixels."""
    rows = max(1, BAND_PIXELS // width)
    for top in range(start, stop, rows):
        yield slice(top, min(top + rows, stop))


def map_region(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, box: MaskBox, halo: int,
               banded: bool) -> torch.Tensor:
    """``fn(x[..., outer])[..., inner]``: ``fn`` of x on ``box.region``, where ``fn`` is pointwise
    ops and at most ``halo`` zero-padded 3x3 convolutions (stride 1) in sequence.

    ``banded`` computes it band of rows by band of rows (each band with its
    own halo, see :func:`mask_box`), so that ``fn``'s temporaries stay small
    at any image size; the result is the same.
    """
    (rows, cols), (_, outer_cols), (_, inner_cols) = box
    if not banded:
        return fn(x[..., box.outer[0], outer_cols])[..., box.inner[0], inner_cols]
    height = x.shape[-2]
    result = None
    for band in row_bands(rows.start, rows.stop, outer_cols.stop - outer_cols.start):
        top, bottom = max(band.start - halo, 0), min(band.stop + halo, height)
        part = fn(x[..., top:bottom, outer_cols])[..., band.start - top:band.stop - top, inner_cols]
        if result is None:
            result = part.new_empty((*part.shape[:-2], rows.stop - rows.start, part.shape[-1]))
        result[..., band.start - rows.start:band.stop - rows.start, :] = part
    return result
