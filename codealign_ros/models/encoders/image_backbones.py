"""Image backbones of the LSS camera encoders: ResNet and EfficientNet families (no torchvision).

Both downsample by 2 per stage only until `out_stride` is reached (later stages keep the
resolution), so the trunk ends at exactly `out_stride`; `output_size` gives the feature size.
"""
from __future__ import annotations

import math
from typing import Sequence

from torch import Tensor, nn

from codealign_ros.models.encoders.bev_backbone import BasicBlock

__all__ = ["B0_STAGES", "Bottleneck", "EfficientNet", "MBConv", "ResNet", "make_divisible"]


def _halvings(stride: int, what: str) -> int:
    if stride < 1 or stride & (stride - 1):
        raise ValueError(f"{what}: out_stride must be a power of two, got {stride}")
    return stride.bit_length() - 1


def _ceil_halve(size: int, times: int) -> int:
    for _ in range(times):
        size = (size - 1) // 2 + 1
    return size


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: 1x1 -> 3x3 (stride) -> 1x1 (x4), projection shortcut if needed."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out = width * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(inplace=True), nn.Conv2d(width, out, 1, bias=False), nn.BatchNorm2d(out))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out, 1, stride, bias=False),
                                          nn.BatchNorm2d(out))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.shortcut(x) + self.body(x))


class ResNet(nn.Module):
    """ResNet trunk: 7x7/2 stem + 3x3/2 max-pool, then one stage per (layers, widths) entry.

    ResNet-101 = block "bottleneck", layers [3, 4, 23(, 3)], widths [64, 128, 256(, 512)].
    """

    def __init__(self, block: str = "bottleneck", layers: Sequence[int] = (3, 4, 23),
                 widths: Sequence[int] = (64, 128, 256), stem: int = 64,
                 out_stride: int = 16) -> None:
        super().__init__()
        if block not in ("bottleneck", "basic") or len(layers) != len(widths) or not layers:
            raise ValueError(f"ResNet: block must be bottleneck|basic and layers/widths equal "
                             f"non-empty lists, got {block!r}, {list(layers)}, {list(widths)}")
        halvings = _halvings(out_stride, "ResNet")
        self.stem = nn.Sequential(nn.Conv2d(3, stem, 7, 2, 3, bias=False), nn.BatchNorm2d(stem),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        done, prev, stages = 2, stem, []
        for i, (count, width) in enumerate(zip(layers, widths)):
            stride = 2 if i > 0 and done < halvings else 1
            done += stride == 2
            blocks = []
            for j in range(int(count)):
                if block == "bottleneck":
                    blocks.append(Bottleneck(prev, int(width), stride if j == 0 else 1))
                    prev = int(width) * Bottleneck.expansion
                else:
                    blocks.append(BasicBlock(prev, int(width), stride if j == 0 else 1))
                    prev = int(width)
            stages.append(nn.Sequential(*blocks))
        if done != halvings:
            raise ValueError(f"ResNet: {len(layers)} stages cannot reach stride {out_stride}")
        self.stages = nn.Sequential(*stages)
        self.out_channels, self.stride = prev, out_stride

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the feature map of a height x width image."""
        n = self.stride.bit_length() - 1
        return _ceil_halve(height, n), _ceil_halve(width, n)

    def forward(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))


# EfficientNet-B0 stages: (expand ratio, channels, repeats, stride, kernel).
B0_STAGES = [(1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3),
             (6, 112, 3, 1, 5), (6, 192, 4, 2, 5), (6, 320, 1, 1, 3)]
B0_STEM = 32


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of `divisor`, not below 90 % of `value` (EfficientNet rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _conv_bn_act(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1,
                 act: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2,
                                         groups=groups, bias=False), nn.BatchNorm2d(out_ch)]
    return layers + [nn.SiLU(inplace=True)] if act else layers


class SqueezeExcite(nn.Module):
    """x * sigmoid(W2 silu(W1 mean(x))) with a bottleneck of `squeezed` channels."""

    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, squeezed, 1),
                                  nn.SiLU(inplace=True), nn.Conv2d(squeezed, channels, 1),
                                  nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, kxk depthwise (stride), squeeze-excitation, 1x1 project."""

    def __init__(self, in_ch: int, out_ch: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = in_ch * expand
        layers = _conv_bn_act(in_ch, mid, 1) if expand != 1 else []
        layers += _conv_bn_act(mid, mid, kernel, stride, groups=mid)
        layers.append(SqueezeExcite(mid, max(1, int(in_ch * 0.25))))
        layers += _conv_bn_act(mid, out_ch, 1, act=False)
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class EfficientNet(nn.Module):
    """EfficientNet trunk: B0 stage table with channels x `width`, repeats x `depth` (ceil)."""

    def __init__(self, width: float = 1.0, depth: float = 1.0, out_stride: int = 16) -> None:
        super().__init__()
        if width <= 0 or depth <= 0:
            raise ValueError(f"EfficientNet: width and depth must be > 0, got {width}, {depth}")
        halvings = _halvings(out_stride, "EfficientNet")
        stem = make_divisible(B0_STEM * width)
        self.stem = nn.Sequential(*_conv_bn_act(3, stem, 3, 2))
        done, prev, blocks = 1, stem, []
        for expand, channels, repeats, stride, kernel in B0_STAGES:
            out = make_divisible(channels * width)
            stride = 2 if stride == 2 and done < halvings else 1
            done += stride == 2
            for j in range(int(math.ceil(repeats * depth))):
                blocks.append(MBConv(prev, out, expand, kernel, stride if j == 0 else 1))
                prev = out
        if done != halvings:
            raise ValueError(f"EfficientNet: cannot reach stride {out_stride}")
        self.blocks = nn.Sequential(*blocks)
        self.out_channels, self.stride = prev, out_stride

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the feature map of a height x width image."""
        n = self.stride.bit_length() - 1
        return _ceil_halve(height, n), _ceil_halve(width, n)

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.stem(x))
