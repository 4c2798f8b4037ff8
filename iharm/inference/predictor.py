"""Harmonize images of any size with any registered model.

The official predictor pads the RGB image and the mask to a multiple of 32
(zeros in uint8 space, ``top = pad // 2``, the rest at the bottom; the same for
left / right), normalises, runs the network, de-normalises, crops the padding
away and clamps to [0, 255] without rounding, which is what the official
metrics see. Two of its paths crash for DucoNet and are fixed here:

* the Lab image was not padded, so any H or W not a multiple of 32 failed;
  here it is padded with the same geometry, with the Lab value of the black
  RGB padding (L=0, a=b=128 in OpenCV 8-bit Lab), so the network sees the Lab
  image of exactly the padded RGB image it is given;
* flip test-time augmentation flipped image and mask but not Lab; here all
  three are flipped. The result is the mean (in the normalised output space,
  as officially) of the prediction and the un-flipped prediction of the
  flipped input.

Which inputs a model takes, how its RGB input is normalised and its size
divisor come from its :class:`~iharm.model.registry.ModelSpec`, so the same
predictor serves DucoNet, iSSAM and BargainNet.

Speed (docs/performance.md): the networks run their exact fast path unless
the model was switched to the plain one (``iharm.model.fast_path``); on the
CPU the predictor also keeps the model and its inputs in channels_last, which
changes only the memory layout. ``precision='bf16'`` runs the network under
bfloat16 autocast: faster where the hardware has bf16 arithmetic, not exact.

:func:`build_predictor` makes one from a registered name and weights (or, for
``Composite``, the identity :class:`CompositePredictor` that gives the
unharmonized row of every table), for the evaluation commands, the benchmark
and the API alike.
"""
from __future__ import annotations

import os
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from iharm.inference.utils import load_model
from iharm.model.fast_path import adapt_fast_path
from iharm.model.registry import ModelSpec, get_model_spec
from iharm.utils.device import full_float32

#: OpenCV 8-bit Lab of black RGB (0, 0, 0): the Lab value of the padded border.
LAB_OF_BLACK = (0, 128, 128)

#: ``precision`` names -> autocast dtype (None: plain float32).
PRECISIONS: dict[str, torch.dtype | None] = {"float32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _padding(size: int, divisor: int) -> tuple[int, int]:
    """(before, after) padding that makes ``size`` a multiple of ``divisor``; ``before = pad // 2``."""
    pad = (divisor - size % divisor) % divisor
    return pad // 2, pad - pad // 2


class Predictor:
    """Runs ``model`` on uint8 composites of any size and returns float predictions on 0..255.

    ``predict_batch`` (tensors, NCHW) is used by evaluation; ``predict`` (one
    HWC numpy image) by the API and the commands. Training validation needs the
    raw output for its loss too, so it runs the network itself and converts the
    output with the same :meth:`~iharm.model.registry.ModelSpec.to_pixels`.
    The model is switched to eval mode for each call and restored afterwards,
    and runs under ``torch.inference_mode``.

    ``channels_last`` (default: on the CPU only, where it was measured to pay)
    moves the model's parameters to that memory format, in place like the
    move to ``device``. ``precision`` is one of :data:`PRECISIONS`: 'float32'
    (exact: also on GPUs, where TF32 is switched off for the call), 'bf16'
    (bfloat16 autocast) or 'fp16' (float16 autocast, CUDA only).

    ``compile`` runs the network under ``torch.compile`` (one graph per padded
    input size, without a graph break, compiled on its first call; every mask
    of that size reuses it). The model then runs the fast-path options a graph can hold
    (:func:`~iharm.model.fast_path.runnable_on`): the same function, without
    the mask-box crop.
    """

    def __init__(self, model: nn.Module, spec: ModelSpec, device: str | torch.device = "cpu",
                 with_flip: bool = False, precision: str = "float32", channels_last: bool | None = None,
                 compile: bool = False) -> None:
        self.device = torch.device(device)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError("precision='fp16' needs a CUDA device; use 'bf16' on the CPU")
        self.precision = precision
        channels_last = self.device.type == "cpu" if channels_last is None else channels_last
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=self.memory_format)
        if compile:
            adapt_fast_path(self.model, self.device, compiled=True)
        self.network = torch.compile(self.model, dynamic=False, fullgraph=True) if compile else self.model
        self.spec = spec
        self.with_flip = with_flip

    @property
    def size_divisor(self) -> int:
        return self.spec.size_divisor

    def predict(self, image: np.ndarray, mask: np.ndarray, image_lab: np.ndarray | None = None) -> np.ndarray:
        """One image: uint8 HxWx3 RGB composite, float HxW mask in [0, 1], uint8 HxWx3 OpenCV Lab
        (for models that need it) -> float32 HxWx3 prediction in [0, 255] (not rounded)."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"predict: image must be a uint8 HxWx3 RGB array, got {image.dtype} {image.shape}")
        if mask.shape != image.shape[:2]:
            raise ValueError(f"predict: mask must be HxW {image.shape[:2]}, got {mask.shape}")

        def to_batch(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None]

        masks = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
        labs = None if image_lab is None else to_batch(image_lab)
        prediction = self.predict_batch(to_batch(image), masks, labs)
        return prediction[0].permute(1, 2, 0).cpu().numpy()

    def predict_batch(self, images: torch.Tensor, masks: torch.Tensor,
                      images_lab: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 N3HW RGB composites, float N1HW masks in [0, 1], uint8 N3HW OpenCV Lab (for models
        that need it) -> float32 N3HW predictions in [0, 255] on the predictor's device."""
        self._check(images, masks, images_lab)
        training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                return self._predict(images, masks, images_lab)
        finally:
            self.model.train(training)

    def _check(self, images: torch.Tensor, masks: torch.Tensor, images_lab: torch.Tensor | None) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"predict_batch: images must be uint8 N3HW, got {images.dtype} {tuple(images.shape)}")
        n, _, h, w = images.shape
        if tuple(masks.shape) != (n, 1, h, w) or not masks.is_floating_point():
            raise ValueError(f"predict_batch: masks must be float {(n, 1, h, w)}, got {masks.dtype} "
                             f"{tuple(masks.shape)}")
        if self.spec.needs_lab:
            if images_lab is None:
                raise ValueError(f"{self.spec.name} needs the Lab image (OpenCV 8-bit Lab of the RGB composite, "
                                 "iharm.data.color.rgb_to_lab)")
            if images_lab.dtype != torch.uint8 or images_lab.shape != images.shape:
                raise ValueError(f"predict_batch: images_lab must be uint8 {tuple(images.shape)}, got "
                                 f"{images_lab.dtype} {tuple(images_lab.shape)}")

    def _predict(self, images: torch.Tensor, masks: torch.Tensor, images_lab: torch.Tensor | None) -> torch.Tensor:
        n, _, h, w = images.shape
        top, bottom = _padding(h, self.size_divisor)
        left, right = _padding(w, self.size_divisor)
        pads = (left, right, top, bottom)

        padded = {"images": F.pad(images.to(self.device), pads), "masks": F.pad(masks.to(self.device), pads)}
        if self.spec.needs_lab:
            lab = images_lab.to(self.device)
            padded["images_lab"] = torch.cat([F.pad(lab[:, c:c + 1], pads, value=value)
                                              for c, value in enumerate(LAB_OF_BLACK)], dim=1)
        batch = self.spec.prepare_batch(padded, self.device, self.memory_format)
        if self.with_flip:
            batch = {key: torch.cat((x, x.flip(-1))) for key, x in batch.items()}

        autocast_dtype = PRECISIONS[self.precision]
        exact = full_float32() if autocast_dtype is None else nullcontext()  # no TF32 in 'float32'
        with exact, torch.autocast(self.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            output = self.network(**self.spec.forward_kwargs(batch))["images"].float()
        if self.with_flip:
            output = 0.5 * (output[:n] + output[n:].flip(-1))
        output = output[:, :, top:top + h, left:left + w]
        return self.spec.to_pixels(output)


#: The pseudo-model whose prediction is the input composite: the "composite" row of every table.
COMPOSITE = "Composite"


class CompositePredictor:
    """The identity "model": the prediction is the composite itself, as float on 0..255.

    Evaluating it gives the input-composite row of the paper tables from the
    same data path and metrics as the models.
    """

    spec = None
    with_flip = False

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)

    def predict_batch(self, images: torch.Tensor, masks: torch.Tensor,
                      images_lab: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 N3HW composites -> the same as float32 N3HW on the device."""
        return images.to(self.device).float()


AnyPredictor = Predictor | CompositePredictor


#: ``--precision`` of the command-line tools -> :class:`~iharm.inference.predictor.Predictor` ``precision``.
PRECISION_CHOICES = {"fp32": "float32", "bf16": "bf16", "fp16": "fp16"}


def build_predictor(model_type: str, checkpoint: str | os.PathLike | None, device: str | torch.device,
                    with_flip: bool = False, precision: str = "float32") -> AnyPredictor:
    """A Predictor for a registered model loaded strictly from ``checkpoint``, or the Composite identity.

    ``precision``: a :data:`~iharm.inference.predictor.PRECISIONS` name, or a ``--precision`` choice."""
    if model_type == COMPOSITE:
        if checkpoint is not None:
            raise ValueError(f"{COMPOSITE} is the unharmonized input and takes no checkpoint (got {checkpoint})")
        return CompositePredictor(device)
    if checkpoint is None:
        raise ValueError(f"{model_type} needs a checkpoint")
    spec = get_model_spec(model_type)
    return Predictor(load_model(model_type, checkpoint, device), spec, device, with_flip=with_flip,
                     precision=PRECISION_CHOICES.get(precision, precision))


def needs_lab(predictor: AnyPredictor) -> bool:
    return predictor.spec is not None and predictor.spec.needs_lab
