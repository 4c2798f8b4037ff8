"""The one place where models are named.

Every script (train, evaluate, predict, benchmark) finds a model here by name:
its constructor and default arguments (exactly those of the official
``iharm/mconfigs`` entries, so official checkpoints load), the forward
arguments it takes from a batch, and the input normalisation it was trained
with. Constructors are imported lazily so that importing the registry is cheap.
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from iharm.data.normalization import IMAGENET, SYMMETRIC, Normalization
from iharm.model.checkpoints import load_state_dict_file, load_weights
from iharm.model.fast_path import FastPathModule, adapt_fast_path


@dataclass(frozen=True)
class ModelSpec:
    """How to build and call one registered model.

    ``inputs`` maps forward keyword arguments to batch keys for evaluation and
    inference (``{'image': 'images', 'mask': 'masks', 'image_lab': 'images_lab'}``);
    ``train_inputs`` adds what training needs on top (BargainNet's real image).
    """

    name: str
    factory: str | Callable[..., nn.Module]
    kwargs: Mapping[str, Any]
    inputs: Mapping[str, str]
    normalization: Normalization
    size_divisor: int
    train_inputs: Mapping[str, str] = field(default_factory=dict)

    @property
    def needs_lab(self) -> bool:
        return "image_lab" in self.inputs

    @property
    def constructor(self) -> type[nn.Module]:
        """The model class: ``factory`` itself, or the ``module:attr`` it names (imported on first use)."""
        if not isinstance(self.factory, str):
            return self.factory
        module_name, attr = self.factory.split(":")
        return getattr(importlib.import_module(module_name), attr)

    def prepare_batch(self, batch: Mapping[str, Any], device: torch.device | str,
                      memory_format: torch.memory_format = torch.contiguous_format) -> dict[str, torch.Tensor]:
        """uint8 images / Lab and float masks of a collated batch -> the model's input space, on ``device``.

        RGB images (``images``, ``target_images``) get this model's normalisation
        (bit-identical to ToTensor + Normalize); the Lab image is divided by 255
        (ToTensor, no mean/std) as in the official pipeline; masks pass as they are.
        """
        def move(x: torch.Tensor) -> torch.Tensor:
            return x.to(device, non_blocking=True).contiguous(memory_format=memory_format)

        out: dict[str, torch.Tensor] = {"masks": move(batch["masks"].float())}
        for key in ("images", "target_images"):
            if key in batch:
                out[key] = self.normalization.normalize(move(batch[key]))
        if "images_lab" in batch and self.needs_lab:
            out["images_lab"] = move(batch["images_lab"]).float().div(255)
        return out

    def forward_kwargs(self, batch: Mapping[str, torch.Tensor], training: bool = False) -> dict[str, torch.Tensor]:
        """Forward keyword arguments taken from a prepared batch (``train_inputs`` too when training)."""
        names = {**self.inputs, **self.train_inputs} if training else self.inputs
        return {arg: batch[key] for arg, key in names.items()}

    def to_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """The network's output (this model's normalised space) as float RGB on 0..255, as the official
        predictor makes it: ``(x * std + mean) * 255``, clamped, not rounded. Validation, evaluation and
        prediction all go through here."""
        return self.normalization.denormalize(images.float()).clamp(0, 255)

    def build(self, **overrides: Any) -> nn.Module:
        """Construct the network with the registered arguments (``overrides`` win)."""
        return self.constructor(**{**self.kwargs, **overrides})


_RGB_MASK = MappingProxyType({"image": "images", "mask": "masks"})
_RGB_MASK_LAB = MappingProxyType({"image": "images", "mask": "masks", "image_lab": "images_lab"})

_REGISTRY: dict[str, ModelSpec] = {
    # DucoNet (ACM MM 2023): iSSAM U-Net + L/a/b encoders + StyleGAN2 Lab control modules
    "DucoNet": ModelSpec(
        name="DucoNet",
        factory="iharm.model.duconet:DucoNet_model",
        kwargs=MappingProxyType(dict(depth=4, ch=32, image_fusion=True, attention_mid_k=0.5, attend_from=2,
                                     batchnorm_from=2, w_dim=256, control_module_start=-1)),
        inputs=_RGB_MASK_LAB,
        normalization=IMAGENET,
        size_divisor=32,
    ),
    # improved S2AM (Sofiiuk et al., WACV 2021): U-Net with spatial-separated attention
    "iSSAM": ModelSpec(
        name="iSSAM",
        factory="iharm.model.issam:SSAMImageHarmonization",
        kwargs=MappingProxyType(dict(depth=4, ch=32, image_fusion=True, attention_mid_k=0.5, attend_from=2,
                                     batchnorm_from=2)),
        inputs=_RGB_MASK,
        normalization=IMAGENET,
        size_divisor=32,
    ),
    # BargainNet (ICME 2021): attention U-Net generator + partial-conv domain code extractor
    "BargainNet": ModelSpec(
        name="BargainNet",
        factory="iharm.model.bargainnet:BargainNet",
        kwargs=MappingProxyType(dict(ngf=64, style_dim=16)),
        inputs=_RGB_MASK,
        train_inputs=MappingProxyType({"real_image": "target_images"}),
        normalization=SYMMETRIC,
        size_divisor=256,
    ),
}
#: Every registered model by name (a read-only view: :func:`register_model` adds to it).
MODELS: Mapping[str, ModelSpec] = MappingProxyType(_REGISTRY)


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a model, found by name from then on by every tool (training, evaluation, prediction, the API,
    the web page, the export); ValueError if the name is taken. Returns ``spec``."""
    if spec.name in _REGISTRY:
        raise ValueError(f"a model named '{spec.name}' is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def get_model_spec(name: str) -> ModelSpec:
    """The spec registered under ``name``; the error lists the known names."""
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model '{name}'; registered models: {', '.join(MODELS)}") from None


def create_model(name: str, checkpoint: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu") -> nn.Module:
    """The registered model ``name`` on ``device`` in eval mode: with ``checkpoint``, its weights
    loaded strictly; without, freshly initialised (the constructor's init). On the CPU, a model with
    the ``channels_last`` fast path gets its parameters in that layout, so that calling it the official
    way, ``model(image, mask, ...)`` with ordinary tensors, runs the whole fast path.

    Unlike the official loader (full pickle, silent non-strict merge), files
    are read with ``weights_only=True`` and loaded strictly: a file of another
    model or configuration fails with the list of missing, unexpected and
    mis-shaped keys. Raises ``KeyError`` for an unknown name and
    :class:`~iharm.model.checkpoints.CheckpointError` for an unreadable,
    unsafe or mismatching file.

    Extension point: a model class whose weights are not one bare state dict
    (BargainNet's official G + E pair) provides a ``from_checkpoint(path)``
    classmethod returning the loaded model; ``create_model`` delegates to it.
    """
    spec = get_model_spec(name)
    from_checkpoint = getattr(spec.constructor, "from_checkpoint", None) if checkpoint is not None else None
    if from_checkpoint is not None:
        model = from_checkpoint(checkpoint)
    else:
        model = spec.build()
        if checkpoint is not None:
            load_weights(model, load_state_dict_file(checkpoint), str(checkpoint))
    return place_model(model, device).eval()


def place_model(model: nn.Module, device: str | torch.device) -> nn.Module:
    """``model`` on ``device``, in place, in the parameter layout its fast path runs in: channels_last on the
    CPU for a model with the ``channels_last`` option on (the official call ``model(image, mask, ...)``
    then runs NHWC end to end), the default layout otherwise; with the fast-path options that suit
    ``device`` (:func:`~iharm.model.fast_path.runnable_on`: no host-synced mask crop on CUDA)."""
    device = torch.device(device)
    adapt_fast_path(model, device)
    nhwc = device.type == "cpu" and isinstance(model, FastPathModule) and \
        "channels_last" in model.fast_path_options and model.fast_path.channels_last
    return model.to(device, memory_format=torch.channels_last if nhwc else torch.contiguous_format)
