"""m2: SECOND with dense 3D convolutions (mean VFE -> dense voxel grid -> 3D middle -> BEV).

The sparse convolutions of the original are replaced by dense 3x3x3 convolutions (exportable
to ONNX); the dense 3D pipeline here is shared with VoxelNet (voxelnet.py), which differs only
in its voxel feature encoder.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codealign_ros.models.encoders.bev_backbone import BevBackbone, bev_canvas, scatter_sum
from codealign_ros.models.encoders.pointpillars import LidarEncoder, bev_stride
from codealign_ros.config.profiles import Profile

__all__ = ["DenseMiddle3d", "PlaneConv3d", "Second", "Voxel3dEncoder"]


def _halve(n: int) -> int:
    """Size after a 3-wide, padding-1, stride-2 convolution."""
    return (n - 1) // 2 + 1


class PlaneConv3d(nn.Module):
    """3x3x3 convolution (padding 1, no bias) computed as three 2D convolutions over z planes.

    Same result as nn.Conv3d with weight (out, in, 3, 3, 3) and stride (sz, sxy, sxy), on
    tensors laid out as (B * nz, C, ny, nx) ("z planes in the batch"): kernel plane dz
    convolves the input planes it meets and the three results are summed. PyTorch's CPU
    Conv3d has no fast kernel, its 2D one does, and the graph exports as plain ONNX Conv.
    Channels-last in, channels-last out (the faster layout on CPU).
    """

    def __init__(self, in_ch: int, out_ch: int, nz: int, stride: tuple[int, int] = (1, 1)
                 ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_ch, in_ch, 3, 3, 3))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)  # nn.Conv3d's default
        self.nz, (self.sz, self.sxy) = nz, stride
        self.out_nz = _halve(nz) if self.sz == 2 else nz

    def forward(self, x: Tensor) -> Tensor:
        """(B * nz, in, ny, nx) -> (B * out_nz, out, ny', nx')."""
        planes = _nhwc(x)
        h, w, c = planes.shape[1], planes.shape[2], planes.shape[3]
        planes = planes.reshape(-1, self.nz, h, w, c)
        zero = torch.zeros_like(planes[:, :1])
        padded = torch.cat([zero, planes, zero], dim=1)  # z padding 1
        last = self.sz * (self.out_nz - 1) + 1
        out = None
        for dz in range(3):  # kernel plane dz sees input planes z' * sz + dz - 1
            taken = _nchw(padded[:, dz: dz + last: self.sz].reshape(-1, h, w, c))
            y = F.conv2d(taken, self.weight[:, :, dz], stride=self.sxy, padding=1)
            out = y if out is None else out + y
        return out


def _nhwc(x: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, H, W, C) (a view for channels-last tensors)."""
    return x.permute(0, 2, 3, 1)


def _nchw(x: Tensor) -> Tensor:
    """(N, H, W, C) -> (N, C, H, W) channels-last view."""
    return x.permute(0, 3, 1, 2)


class DenseMiddle3d(nn.Module):
    """One 3x3x3 conv + BN + ReLU stage per entry of `channels`, flattened to BEV at the end.

    Stages stride 2 along z while more than one z cell is left, starting at stage 0 when
    `stride_first` (VoxelNet) or at stage 1 (SECOND keeps the first at full resolution); the
    first `xy_halvings` striding stages also halve x and y. Input (B * nz, in, ny, nx) (z planes
    in the batch, see PlaneConv3d) -> (B, out_nz * channels[-1], ny', nx').
    """

    def __init__(self, in_ch: int, channels: list[int], nz: int, xy_halvings: int,
                 stride_first: bool) -> None:
        super().__init__()
        stages, prev, self.xy_halvings, self.nz = [], in_ch, 0, nz
        for i, ch in enumerate(channels):
            striding = stride_first or i > 0
            sz = 2 if striding and nz > 1 else 1
            sxy = 2 if striding and self.xy_halvings < xy_halvings else 1
            self.xy_halvings += sxy == 2
            conv = PlaneConv3d(prev, ch, nz, (sz, sxy))
            nz = conv.out_nz
            stages += [conv, nn.BatchNorm2d(ch), nn.ReLU(inplace=True)]
            prev = ch
        self.stages = nn.Sequential(*stages)
        self.out_nz = nz
        self.out_channels = prev * nz

    def forward(self, x: Tensor) -> Tensor:
        y = _nhwc(self.stages(x))  # (B * out_nz, h, w, C)
        h, w = y.shape[1], y.shape[2]
        y = y.reshape(-1, self.out_nz, h, w, y.shape[3]).permute(0, 2, 3, 1, 4)
        return _nchw(y.reshape(-1, h, w, self.out_channels))  # channels ordered (z, C)


class Voxel3dEncoder(LidarEncoder):
    """Voxel features -> dense grid (B * nz, C, ny, nx) -> DenseMiddle3d -> BevBackbone."""

    voxel_key = "voxel3d"

    def __init__(self, profile: Profile, vfe_channels: int, stride_first: bool) -> None:
        super().__init__(profile)
        stride = bev_stride(profile, self.nx, self.ny)
        middle = [int(c) for c in profile["voxel3d"]["middle"]]
        self.middle = DenseMiddle3d(vfe_channels, middle, self.nz, stride.bit_length() - 1,
                                    stride_first)
        self.backbone = BevBackbone(self.middle.out_channels, profile.channels,
                                    int(profile["bev_backbone"]["blocks"]),
                                    stride >> self.middle.xy_halvings)

    def voxel_features(self, voxels: Tensor, coords: Tensor, num_points: Tensor) -> Tensor:
        """(V, vfe_channels) feature of every voxel."""
        raise NotImplementedError

    def dense_grid(self, feats: Tensor, coords: Tensor) -> Tensor:
        """Scatter (V, C) voxel features to a dense (B * nz, C, ny, nx) grid of z planes."""
        coords = coords.long()
        cells = self.ny * self.nx
        index = (coords[:, 0] * self.nz + coords[:, 1]) * cells + coords[:, 2] * self.nx \
            + coords[:, 3]
        canvas = scatter_sum(feats, index, self.batch_size(coords) * self.nz, cells,
                             unique=True)
        return bev_canvas(canvas, self.ny, self.nx)

    def forward(self, voxels: Tensor, coords: Tensor, num_points: Tensor) -> Tensor:
        feats = self.voxel_features(voxels, coords, num_points)
        feats = feats * (num_points > 0).to(feats.dtype)[:, None]
        return self.backbone(self.middle(self.dense_grid(feats, coords))).contiguous()


class Second(Voxel3dEncoder):
    """m2: SECOND; voxel feature = mean of its points' (x, y, z, intensity)."""

    kind = "second"

    def __init__(self, profile: Profile) -> None:
        super().__init__(profile, 4, stride_first=False)

    def voxel_features(self, voxels: Tensor, coords: Tensor, num_points: Tensor) -> Tensor:
        mask = self.point_mask(voxels, num_points)
        count = num_points.to(voxels.dtype).clamp(min=1.0)[:, None]
        return (voxels * mask[..., None]).sum(dim=1) / count

