"""Residual adapter between a frozen encoder and its group's codebook (CodeAlign, sec. 3.2.1)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ResidualBlock", "Adapter"]


class ResidualBlock(nn.Module):
    """ResNet basic block at constant width: relu(x + BN(conv3x3(relu(BN(conv3x3(x))))))."""

    def __init__(self, channels: int, zero_init_residual: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        if zero_init_residual:
            nn.init.zeros_(self.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(x + self.bn2(self.conv2(y)))


class Adapter(nn.Module):
    """``blocks`` residual 3x3 blocks, (B, C, H, W) -> (B, C, H, W); the paper uses 4 at C = 64.

    ``zero_init_residual=True`` zeroes every block's last BN scale so that the adapter starts as
    relu(x) (identity on the non-negative output of a ReLU-terminated encoder) -- useful when the
    backend stays frozen. Then only the BN scales get gradients on the first step.
    """

    def __init__(self, channels: int, blocks: int = 4, zero_init_residual: bool = False) -> None:
        super().__init__()
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        if not isinstance(blocks, int) or blocks < 1:
            raise ValueError(f"blocks must be a positive int, got {blocks!r}")
        self.channels = channels
        self.blocks = nn.Sequential(*(ResidualBlock(channels, zero_init_residual)
                                      for _ in range(blocks)))

    def forward(self, x: Tensor) -> Tensor:
        if not torch.jit.is_tracing() and (x.dim() != 4 or x.shape[1] != self.channels):
            raise ValueError(f"Adapter expects (B, {self.channels}, H, W), got {tuple(x.shape)}")
        return self.blocks(x)
