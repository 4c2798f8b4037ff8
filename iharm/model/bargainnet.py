"""BargainNet (Cong et al., ICME 2021): a U-Net generator guided by a background domain code.

Two networks, named and laid out exactly as in the official ``bcmi/BargainNet``
code so that ``latest_net_G.pth`` / ``latest_net_E.pth`` load with ``strict=True``:

* :class:`StyleEncoder` (E, the *domain code extractor*): five 3x3 stride-2
  partial convolutions see only one region of an image (foreground or
  background), a global average pool and a 1x1 conv give a 16-d code.
* :class:`UnetGenerator` (G): an 8-level pix2pix U-Net on
  ``cat(composite, mask, background code broadcast to HxW)`` (20 channels), with
  attention gates on the three outer skip levels and dropout at depths 4-6.

:class:`BargainNet` holds both (``netG``, ``netE``: our checkpoints are one state
dict with ``netG.*`` and ``netE.*`` keys) and runs the official call sequence.
What differs from the official code, on purpose: any batch size and any size
that is a multiple of 256 (the official code hard-codes one 256x256 image), no
CUDA assumption, strict checkpoint loading, deterministic eval mode (the
official test's batch-statistics mode is :meth:`BargainNet.legacy_test_forward`),
and the background code taken from the composite when no ground truth is given.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from iharm.model.checkpoints import CheckpointError, load_state_dict_file, load_weights
from iharm.model.partialconv import PartialConv2d

#: Composite RGB + mask channels in front of the code channels of G's input.
IMAGE_MASK_CHANNELS = 4


class UnetSkipConnectionBlock(nn.Module):
    """One U-Net level, built recursively around ``submodule`` (the next level down).

    ``self.model`` is a ``Sequential`` whose indices fix the checkpoint keys:
    outermost ``[Conv, sub, ReLU, ConvT(+bias), Tanh]``; middle
    ``[LReLU, Conv, BN, sub, ReLU, ConvT, BN(, Dropout)]``; innermost
    ``[LReLU, Conv, ReLU, ConvT, BN]``. A non-outermost level returns
    ``cat(skip, up(sub(down(skip))))``, gated by ``sigmoid(conv1x1(.))`` when it
    has attention.
    """

    def __init__(self, outer_nc: int, inner_nc: int, input_nc: int | None = None,
                 submodule: UnetSkipConnectionBlock | None = None, outermost: bool = False,
                 innermost: bool = False, norm_layer: type[nn.Module] = nn.BatchNorm2d,
                 use_dropout: bool = False, use_attention: bool = False) -> None:
        super().__init__()
        self.outermost = outermost
        input_nc = outer_nc if input_nc is None else input_nc
        # pix2pix rule: a conv followed by an affine norm needs no bias of its own.
        use_bias = norm_layer is nn.InstanceNorm2d
        # Registered before ``model`` so that the state dict order matches the official one.
        self.attention = (nn.Sequential(nn.Conv2d(outer_nc + input_nc, outer_nc + input_nc, kernel_size=1),
                                        nn.Sigmoid()) if use_attention else None)
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
        if outermost:
            layers = [downconv, submodule, nn.ReLU(),
                      nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1), nn.Tanh()]
        elif innermost:
            layers = [nn.LeakyReLU(0.2), downconv, nn.ReLU(),
                      nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias),
                      norm_layer(outer_nc)]
        else:
            layers = [nn.LeakyReLU(0.2), downconv, norm_layer(inner_nc), submodule, nn.ReLU(),
                      nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias),
                      norm_layer(outer_nc)]
            if use_dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        # QUIRK kept for checkpoint fidelity: the official block's first op is an
        # in-place LeakyReLU on x, and x is also the skip it concatenates, so the
        # skip that the weights were trained with is LeakyReLU(x), not x.
        skip = self.model[0](x)
        out = torch.cat([skip, self.model[1:](skip)], dim=1)
        if self.attention is not None:
            out = self.attention(out) * out
        return out


class UnetGenerator(nn.Module):
    """BargainNet's G: ``G(cat(composite, mask, code map)) -> image in [-1, 1]`` (tanh).

    The code channels (input channels 4 and up) are scaled by the learnable scalar
    ``weight`` (initially 0.1, clamped to at least 0.001) before the U-Net. The
    output is a full image, not composited with the mask. H and W must be
    multiples of ``2 ** num_downs`` (256): every level halves the size and the
    decoder must give back exactly the skip's size.
    """

    def __init__(self, input_nc: int = 20, output_nc: int = 3, num_downs: int = 8, ngf: int = 64,
                 norm_layer: type[nn.Module] = nn.BatchNorm2d, use_dropout: bool = True,
                 use_attention: bool = True) -> None:
        super().__init__()
        if num_downs < 5:
            raise ValueError(f"num_downs must be at least 5 (the outer four levels have fixed widths), got {num_downs}")
        self.input_nc = input_nc
        self.size_divisor = 2 ** num_downs
        self.weight = nn.Parameter(torch.tensor([0.1]))
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True, norm_layer=norm_layer)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, norm_layer=norm_layer,
                                            use_dropout=use_dropout)
        for mult in (4, 2, 1):
            block = UnetSkipConnectionBlock(ngf * mult, ngf * mult * 2, submodule=block, norm_layer=norm_layer,
                                            use_attention=use_attention)
        self.model = UnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True,
                                             norm_layer=norm_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.input_nc:
            raise ValueError(f"UnetGenerator expects (B, {self.input_nc}, H, W), got {tuple(x.shape)}")
        height, width = x.shape[2:]
        if height % self.size_divisor or width % self.size_divisor:
            raise ValueError(f"UnetGenerator: H and W must be multiples of {self.size_divisor} "
                             f"({self.size_divisor.bit_length() - 1} stride-2 levels), got {height}x{width}; "
                             "pad or resize the input")
        scale = torch.clamp(self.weight, min=0.001)
        x = torch.cat([x[:, :IMAGE_MASK_CHANNELS], x[:, IMAGE_MASK_CHANNELS:] * scale], dim=1)
        return self.model(x)


class StyleEncoder(nn.Module):
    """BargainNet's E, the domain code extractor: ``E(image, region_mask) -> (B, style_dim, 1, 1)``.

    The image is in [-1, 1]; the region mask (B, 1, H, W) is 1 (or soft) on the
    region whose domain code is wanted. The final average pool runs over the
    whole last feature map, zeros outside the region included, as the official
    code does; the code is not normalised. H and W must be at least 63.
    """

    def __init__(self, style_dim: int = 16, norm_layer: type[nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        ndf = 64
        self.conv1f = PartialConv2d(3, ndf, kernel_size=3, stride=2, padding=0, bias=True)
        self.conv2f = PartialConv2d(ndf, ndf * 2, kernel_size=3, stride=2, padding=0, bias=False)
        self.norm2f = norm_layer(ndf * 2)
        self.conv3f = PartialConv2d(ndf * 2, ndf * 4, kernel_size=3, stride=2, padding=0, bias=False)
        self.norm3f = norm_layer(ndf * 4)
        self.conv4f = PartialConv2d(ndf * 4, ndf * 8, kernel_size=3, stride=2, padding=0, bias=False)
        self.norm4f = norm_layer(ndf * 8)
        self.conv5f = PartialConv2d(ndf * 8, ndf * 8, kernel_size=3, stride=2, padding=0, bias=False)
        self.avg_pooling = nn.AdaptiveAvgPool2d(1)
        self.convs = nn.Conv2d(ndf * 8, style_dim, kernel_size=1)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"StyleEncoder expects an RGB image (B, 3, H, W), got {tuple(image.shape)}")
        x, mask = self.conv1f(image, mask)
        x = F.relu(x)
        for conv, norm in ((self.conv2f, self.norm2f), (self.conv3f, self.norm3f), (self.conv4f, self.norm4f)):
            x, mask = conv(x, mask)
            x = F.relu(norm(x))
        x, _ = self.conv5f(x, mask)
        return self.convs(self.avg_pooling(x))


class BargainNet(nn.Module):
    """G and E together, with the official call sequence.

    ``forward(image, mask, real_image=None)`` takes the composite in [-1, 1]
    (SYMMETRIC normalisation), the foreground mask (B, 1, H, W) and, in
    training, the ground truth, and returns

    * ``'images'``: G's output in [-1, 1], the whole image regenerated (never
      composited with the mask: the paper's metrics are on this output);
    * ``'bg_code'``: the background code that guided G, from ``real_image`` when
      given (training, as the official code), else from the composite;
    * with ``real_image`` also ``'real_fg_code'``, ``'harm_fg_code'`` and
      ``'comp_fg_code'``: E on the foreground of the ground truth, of the output
      and of the composite, for the triplet losses.

    E runs once per code, in the official order, so in train mode its BatchNorm
    running statistics see the same four updates per step as the official code.
    """

    def __init__(self, ngf: int = 64, style_dim: int = 16, use_dropout: bool = True) -> None:
        super().__init__()
        self.netG = UnetGenerator(input_nc=IMAGE_MASK_CHANNELS + style_dim, output_nc=3, num_downs=8, ngf=ngf,
                                  use_dropout=use_dropout, use_attention=True)
        self.netE = StyleEncoder(style_dim)
        self.size_divisor = self.netG.size_divisor

    def forward(self, image: torch.Tensor, mask: torch.Tensor,
                real_image: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        _check_inputs(image, mask, real_image)
        code_source = image if real_image is None else real_image
        bg_code = self.netE(code_source, 1 - mask)
        if real_image is None:
            return {"images": self.generate(image, mask, bg_code), "bg_code": bg_code}
        real_fg_code = self.netE(real_image, mask)
        harmonized = self.generate(image, mask, bg_code)
        return {
            "images": harmonized,
            "bg_code": bg_code,
            "real_fg_code": real_fg_code,
            "harm_fg_code": self.netE(harmonized, mask),
            "comp_fg_code": self.netE(image, mask),
        }

    def generate(self, image: torch.Tensor, mask: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """G on ``cat(image, mask, code broadcast to the image size)``; ``code`` is (B, style_dim, 1, 1).

        Also the entry point for the README's background harmonization: pass
        ``1 - mask`` and the foreground code.
        """
        code_map = code.expand(-1, -1, *image.shape[2:])
        return self.netG(torch.cat([image, mask, code_map], dim=1))

    @torch.no_grad()
    def legacy_test_forward(self, image: torch.Tensor, mask: torch.Tensor, real_image: torch.Tensor | None = None,
                            dropout: bool = True) -> dict[str, torch.Tensor]:
        """The official ``test.py`` behaviour, for reproducing the paper's numbers only.

        The README's test command omits ``--eval``, so the official test runs G and
        E in train mode on one image at a time: BatchNorm normalises with that
        image's own statistics and Dropout(0.5) stays active (a random output).
        This runs each sample alone in that mode (``dropout=False`` gives its
        deterministic part) without touching the running statistics, and
        returns what :meth:`forward` returns. Use ``eval()`` + :meth:`forward`
        for anything else.
        """
        _check_inputs(image, mask, real_image)
        with _official_test_mode(self, dropout):
            outputs = [self(image[i:i + 1], mask[i:i + 1], None if real_image is None else real_image[i:i + 1])
                       for i in range(image.shape[0])]
        return {key: torch.cat([out[key] for out in outputs]) for key in outputs[0]}

    def initialize_weights(self, init_gain: float = 0.02) -> None:
        """The official ``init_net(net, 'normal', 0.02)`` on G and E, for training from scratch.

        Conv, ConvTranspose and partial-conv weights ~ N(0, gain), their biases 0;
        BatchNorm weights ~ N(1, gain), biases 0; G's code scale ``weight`` keeps 0.1.
        """
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(module.weight, 0.0, init_gain)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, init_gain)
                nn.init.zeros_(module.bias)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike) -> BargainNet:
        """Load weights, strictly, into a new model in eval mode; G's width comes from the file.

        ``path`` is one of
        * our own file: one state dict with ``netG.*`` and ``netE.*`` keys;
        * an official folder holding ``latest_net_G.pth`` and ``latest_net_E.pth``
          (or exactly one ``*_net_G.pth`` and one ``*_net_E.pth``);
        * an official ``<epoch>_net_G.pth`` with its ``<epoch>_net_E.pth`` beside it.

        Files are read with ``weights_only=True``; a missing, unexpected or
        mis-shaped key raises :class:`CheckpointError` listing them all.
        """
        g_state, e_state, g_source, e_source = _read_weights(Path(path))
        first_conv = g_state.get("model.model.0.weight")
        if first_conv is None or first_conv.dim() != 4 or first_conv.shape[1] <= IMAGE_MASK_CHANNELS:
            raise CheckpointError(f"{g_source}: no valid 'model.model.0.weight' (ngf, 4 + style_dim, 4, 4): "
                                  "not a BargainNet generator state dict")
        model = cls(ngf=first_conv.shape[0], style_dim=first_conv.shape[1] - IMAGE_MASK_CHANNELS)
        load_weights(model.netG, g_state, g_source)
        load_weights(model.netE, e_state, e_source)
        return model.eval()


def load_style_encoder(path: str | os.PathLike) -> StyleEncoder:
    """E alone, in eval mode, e.g. for the harmony score; the code size comes from the file.

    Accepts a bare E state dict (official ``latest_net_E.pth``, libcom
    ``BargainNet.pth``), our combined BargainNet file (its ``netE.*`` part) or
    an official checkpoint folder.
    """
    path = Path(path)
    if path.is_dir():
        e_file = _find_official_file(path, "E")
        state, source = load_state_dict_file(e_file), str(e_file)
    else:
        state, source = load_state_dict_file(path), str(path)
        if any(key.startswith(("netG.", "netE.")) for key in state):
            state = _split_combined(state, source)[1]
            source = f"{source} (netE.*)"
        elif "model.model.0.weight" in state:
            raise CheckpointError(f"{source}: this is a BargainNet generator (G) checkpoint; the domain code "
                                  "extractor is the E file (e.g. latest_net_E.pth beside it)")
    codes = state.get("convs.weight")
    if codes is None or codes.dim() != 4:
        raise CheckpointError(f"{source}: no valid 'convs.weight': not a BargainNet domain code extractor (E) "
                              f"state dict (first keys: {', '.join(list(state)[:5])})")
    encoder = StyleEncoder(style_dim=codes.shape[0])
    load_weights(encoder, state, source)
    return encoder.eval()


def _check_inputs(image: torch.Tensor, mask: torch.Tensor, real_image: torch.Tensor | None) -> None:
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"BargainNet: image must be (B, 3, H, W), got {tuple(image.shape)}")
    if mask.shape != (image.shape[0], 1, *image.shape[2:]):
        raise ValueError(f"BargainNet: mask must be (B, 1, H, W) = {(image.shape[0], 1, *image.shape[2:])}, "
                         f"got {tuple(mask.shape)}")
    if real_image is not None and real_image.shape != image.shape:
        raise ValueError(f"BargainNet: real_image {tuple(real_image.shape)} must have the composite's shape "
                         f"{tuple(image.shape)}")


@contextmanager
def _official_test_mode(model: nn.Module, dropout: bool) -> Iterator[None]:
    """BatchNorm on batch statistics (running stats left untouched), Dropout on or off; restored on exit."""
    saved = [(module, module.training, getattr(module, "track_running_stats", None)) for module in model.modules()]
    try:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                # Train mode without tracking: batch statistics, and no running-stat update.
                module.train()
                module.track_running_stats = False
            elif isinstance(module, nn.Dropout):
                module.train(dropout)
        yield
    finally:
        for module, training, tracking in saved:
            module.training = training
            if tracking is not None:
                module.track_running_stats = tracking


def _split_combined(state: Mapping[str, torch.Tensor], source: str) -> tuple[dict, dict]:
    """Our combined file -> (G state, E state); any key outside ``netG.`` / ``netE.`` is an error."""
    parts: dict[str, dict[str, torch.Tensor]] = {"netG.": {}, "netE.": {}}
    stray = []
    for key, value in state.items():
        prefix = key[:5]
        if prefix in parts:
            parts[prefix][key[5:]] = value
        else:
            stray.append(key)
    if stray:
        raise CheckpointError(f"{source}: a BargainNet file holds only netG.* and netE.* keys; unexpected: "
                              + ", ".join(stray[:12]) + (f" and {len(stray) - 12} more" if len(stray) > 12 else ""))
    return parts["netG."], parts["netE."]


def _find_official_file(folder: Path, net: str) -> Path:
    """``latest_net_<net>.pth`` in ``folder``, else its only ``*_net_<net>.pth``."""
    latest = folder / f"latest_net_{net}.pth"
    if latest.is_file():
        return latest
    candidates = sorted(folder.glob(f"*_net_{net}.pth"))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise CheckpointError(f"{folder}: no latest_net_{net}.pth or *_net_{net}.pth in this folder")
    raise CheckpointError(f"{folder}: no latest_net_{net}.pth and several *_net_{net}.pth "
                          f"({', '.join(c.name for c in candidates)}); pass the G file of the epoch you want")


def _read_weights(path: Path) -> tuple[dict, dict, str, str]:
    """(G state, E state, G source, E source) from any of the layouts of :meth:`BargainNet.from_checkpoint`."""
    if path.is_dir():
        g_file, e_file = _find_official_file(path, "G"), _find_official_file(path, "E")
        return load_state_dict_file(g_file), load_state_dict_file(e_file), str(g_file), str(e_file)
    state = load_state_dict_file(path)
    if any(key.startswith(("netG.", "netE.")) for key in state):
        g_state, e_state = _split_combined(state, str(path))
        return g_state, e_state, f"{path} (netG.*)", f"{path} (netE.*)"
    if "model.model.0.weight" not in state:
        raise CheckpointError(f"{path}: neither a BargainNet file (netG.* / netE.* keys) nor an official generator "
                              f"(G) state dict (first keys: {', '.join(list(state)[:5])}); "
                              "an E file alone cannot harmonize, pass the G file or the folder")
    stem, sep, tail = path.name.rpartition("net_G")
    if not sep:
        raise CheckpointError(f"{path}: an official generator state dict, but its name has no 'net_G' to find "
                              "the E file beside it; pass the folder or name it <epoch>_net_G.pth")
    e_file = path.with_name(f"{stem}net_E{tail}")
    if not e_file.is_file():
        raise CheckpointError(f"{path}: the domain code extractor {e_file.name} is not beside it ({e_file})")
    return state, load_state_dict_file(e_file), str(path), str(e_file)
