"""Settings the trainer takes only on CUDA, checked on the CPU by naming a CUDA device."""
from __future__ import annotations

import torch

from iharm.engine.trainer import SimpleHTrainer
from iharm.model.blocks import ConvBlock


def test_adam_is_fused_on_cuda_only():
    """One fused kernel for all parameters on a GPU (issue 19, item 11); the CPU keeps PyTorch's default,
    whose numbers every CPU test and shipped run were measured with."""
    model = torch.nn.Linear(2, 2)
    for name in ("adam", "adamw"):
        on_gpu = SimpleHTrainer._make_optimizer(model, name, {"lr": 1e-3}, torch.device("cuda", 0))
        on_cpu = SimpleHTrainer._make_optimizer(model, name, {"lr": 1e-3}, torch.device("cpu"))
        assert on_gpu.defaults["fused"] is True and not on_cpu.defaults["fused"]


def test_sync_batchnorm_from_sync_bn_is_folded_like_batchnorm():
    """``--sync-bn`` turns BatchNorm2d into SyncBatchNorm, which is not a BatchNorm2d: the fast path must
    still see a BatchNorm (issue 19, item 6), and its folded convolution must equal conv -> BN."""
    torch.manual_seed(0)
    block = ConvBlock(3, 4, kernel_size=3, stride=1, padding=1)
    norm = block.block[1]
    norm.running_mean.uniform_(-1, 1)
    norm.running_var.uniform_(0.5, 2)
    torch.nn.init.normal_(norm.weight)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = block.block.eval()(x)
        synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(block).eval()
        assert isinstance(synced.block[1], torch.nn.SyncBatchNorm) and synced.folds_batchnorm
        torch.testing.assert_close(synced(x), expected, atol=1e-5, rtol=1e-5)
