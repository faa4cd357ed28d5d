"""HEAL-style pyramid fusion of the BEV features of several agents (ResNeXt stages, occupancy
weights softmax-normalised across the agents of a sample).

Layout: the agents of all samples are stacked along dim 0 (N agents), each in its own frame;
``theta`` (N, 2, 3) maps ego normalised coordinates to the agent's (``warp.normalized_affine``,
identity for the ego) and ``sample`` (N,) names the sample (ego) each agent belongs to.
The per-sample softmax is a one-hot matmul over ``sample`` (no padding, no Python loop over
agents); with ``sample=None`` every agent belongs to one sample (batch 1) and the sum is a plain
reduction over dim 0 -- the form exported to ONNX with a dynamic number of agents.

A cell whose input feature is all zero carries nothing and is fused as if the agent did not
cover it (at every level: the mask max-pooled to the level's stride), so an all-zero or absent
peer leaves the ego's result exactly as it is alone.
"""
from __future__ import annotations

from collections.abc import Sequence

import math

import torch
from torch import Tensor, nn

from codealign_ros.models.warp import warp_with_theta

__all__ = ["Bottleneck", "PyramidFusion", "sample_one_hot"]

_EPS = 1e-6


class Bottleneck(nn.Module):
    """ResNeXt bottleneck: 1x1 -> grouped 3x3 (stride) -> 1x1, with a projected shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1, cardinality: int = 32) -> None:
        super().__init__()
        if cout % cardinality:
            raise ValueError(f"channels {cout} not divisible by cardinality {cardinality}")
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, stride, 1, groups=cardinality, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


def _stage(cin: int, cout: int, blocks: int, stride: int, cardinality: int) -> nn.Sequential:
    layers = [Bottleneck(cin, cout, stride, cardinality)]
    layers += [Bottleneck(cout, cout, 1, cardinality) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def _upsample(cin: int, cout: int, factor: int) -> nn.Sequential:
    conv: nn.Module = (nn.Conv2d(cin, cout, 1, bias=False) if factor == 1 else
                       nn.ConvTranspose2d(cin, cout, factor, factor, bias=False))
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def sample_one_hot(sample: Tensor, batch: int) -> Tensor:
    """(batch, N) float matrix with 1 where agent n belongs to sample b."""
    ids = torch.arange(batch, device=sample.device, dtype=sample.dtype)
    return (ids[:, None] == sample[None, :]).to(torch.float32)


class PyramidFusion(nn.Module):
    """Multi-scale occupancy-weighted fusion (HEAL's pyramid fusion).

    forward(x (N, C, H, W), theta (N, 2, 3), sample (N,) | None, batch) ->
    (fused (batch, out, H, W), occupancy logits per level [(N, 1, h_l, w_l)] in agent frames).
    The upsampled levels are concatenated and reduced to `out` by a `shrink_kernel` conv
    (3 as HEAL; 1 makes that conv, the largest cost at small scales, 9x cheaper).
    """

    def __init__(self, in_channels: int, layers: Sequence[int], strides: Sequence[int],
                 channels: Sequence[int], upsample: int, out: int, cardinality: int,
                 shrink_kernel: int = 3, occupancy_prior: float = 0.01) -> None:
        super().__init__()
        if shrink_kernel not in (1, 3):
            raise ValueError(f"shrink_kernel must be 1 or 3, got {shrink_kernel}")
        if not len(layers) == len(strides) == len(channels) >= 1:
            raise ValueError("fusion layers, strides and channels must have one entry per level")
        if min(layers) < 1 or min(strides) < 1:
            raise ValueError(f"fusion layers {layers} and strides {strides} must be >= 1")
        cins = [in_channels, *channels[:-1]]
        self.stages = nn.ModuleList(_stage(ci, co, n, s, cardinality)
                                    for ci, co, n, s in zip(cins, channels, layers, strides))
        self.occ_heads = nn.ModuleList(nn.Conv2d(c, 1, 1) for c in channels)
        for occ in self.occ_heads:  # focal-loss prior, as the class head
            nn.init.constant_(occ.bias, -math.log((1 - occupancy_prior) / occupancy_prior))
        self.level_strides: list[int] = []
        total = 1
        for s in strides:
            total *= int(s)
            self.level_strides.append(total)
        self.ups = nn.ModuleList(_upsample(c, upsample, f)
                                 for c, f in zip(channels, self.level_strides))
        self.shrink = nn.Sequential(
            nn.Conv2d(upsample * len(channels), out, shrink_kernel, 1, shrink_kernel // 2,
                      bias=False),
            nn.BatchNorm2d(out), nn.ReLU(inplace=True))
        self.in_channels, self.out_channels = in_channels, out

    def _check(self, x: Tensor, theta: Tensor, sample: Tensor | None, batch: int) -> None:
        if torch.jit.is_tracing():  # shapes are symbolic while exporting
            return
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"features must be (N, {self.in_channels}, H, W), "
                             f"got {tuple(x.shape)}")
        if tuple(theta.shape) != (x.shape[0], 2, 3):
            raise ValueError(f"theta must be ({x.shape[0]}, 2, 3), got {tuple(theta.shape)}")
        total = self.level_strides[-1]
        if x.shape[-2] % total or x.shape[-1] % total:
            raise ValueError(f"BEV size {tuple(x.shape[-2:])} not divisible by the pyramid "
                             f"stride {total}")
        if sample is None:
            if batch != 1:
                raise ValueError("sample=None means one sample: batch must be 1")
            return
        if tuple(sample.shape) != (x.shape[0],):
            raise ValueError(f"sample must be ({x.shape[0]},), got {tuple(sample.shape)}")
        if sample.numel() and (
                int(sample.min()) < 0 or int(sample.max()) >= batch):
            raise ValueError(f"sample indices must lie in [0, {batch})")

    @staticmethod
    def _fuse(feat: Tensor, logit: Tensor, theta: Tensor, one_hot: Tensor | None,
              info: Tensor) -> Tensor:
        """Warp to the ego frames and sum with weights valid*exp(score) / per-sample total;
        `info` (N, 1, h, w) is 1 where the agent's input had a feature."""
        n, c, h, w = feat.shape
        score = torch.sigmoid(logit)
        warped = warp_with_theta(torch.cat([feat, score, info], 1), theta)
        wf, ws, valid = warped[:, :c], warped[:, c:c + 1], warped[:, c + 1:]
        weight = valid * torch.exp(ws)  # softmax numerator; 0 where the agent sees nothing
        num = wf * weight
        if one_hot is None:
            return num.sum(0, keepdim=True) / (weight.sum(0, keepdim=True) + _EPS)
        b = one_hot.shape[0]
        num = (one_hot @ num.reshape(n, -1)).reshape(b, c, h, w)
        den = (one_hot @ weight.reshape(n, -1)).reshape(b, 1, h, w)
        return num / (den + _EPS)

    def fuse_levels(self, x: Tensor, theta: Tensor, sample: Tensor | None = None,
                    batch: int = 1) -> tuple[list[Tensor], list[Tensor]]:
        """Fused features per level [(batch, C_l, h_l, w_l)] and occupancy logits per level."""
        self._check(x, theta, sample, batch)
        one_hot = None if sample is None else sample_one_hot(sample, batch)
        fused, occupancy = [], []
        info = (x != 0).any(1, keepdim=True).to(x.dtype)
        for stage, head, stride in zip(self.stages, self.occ_heads, self.level_strides):
            x = stage(x)
            logit = head(x)
            occupancy.append(logit)
            level_info = info if stride == 1 else nn.functional.max_pool2d(info, stride)
            fused.append(self._fuse(x, logit, theta, one_hot, level_info))
        return fused, occupancy

    def forward(self, x: Tensor, theta: Tensor, sample: Tensor | None = None,
                batch: int = 1) -> tuple[Tensor, list[Tensor]]:
        fused, occupancy = self.fuse_levels(x, theta, sample, batch)
        up = torch.cat([f(level) for f, level in zip(self.ups, fused)], 1)
        return self.shrink(up), occupancy
