"""m1: PointPillars (pillar feature net + scatter + BEV backbone), and the LiDAR encoder base.

LiDAR encoders take the collated voxels of a batch: voxels (V, P, 4) float32, coords (V, 4)
int (b, z, y, x) and num_points (V,) int (see encoders/inputs.py). The batch size is
max(b) + 1; `collate` gives every agent at least one (possibly empty) voxel.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codealign_ros.models.encoders import Encoder
from codealign_ros.models.encoders.bev_backbone import BevBackbone, bev_canvas, scatter_sum
from codealign_ros.config.profiles import Profile

__all__ = ["LidarEncoder", "PointNet", "PointPillars", "VfeLayer", "bev_stride"]


def bev_stride(profile: Profile, nx: int, ny: int) -> int:
    """Stride from an (nx, ny) BEV map to the exchanged grid; ValueError if not a power of 2."""
    grid = profile.grid
    stride = nx // grid.width
    if stride < 1 or nx != stride * grid.width or ny != stride * grid.height \
            or stride & (stride - 1):
        raise ValueError(f"profile {profile.name}: BEV map {nx}x{ny} does not reduce to the "
                         f"{grid.width}x{grid.height} grid by a power-of-two stride")
    return stride


class LidarEncoder(Encoder):
    """Base of the voxel-based LiDAR encoders (voxel settings from profile[voxel_key])."""

    sensor = "lidar"
    input_names = ["voxels", "coords", "num_points"]
    voxel_key: ClassVar[str] = "pillar"

    def __init__(self, profile: Profile) -> None:
        super().__init__(profile)
        spec = profile[self.voxel_key]
        self.voxel_size = tuple(float(v) for v in spec["voxel_size"])
        self.nx, self.ny, self.nz = profile.voxel_grid(self.voxel_key)
        self.max_points = int(spec["max_points"])
        r = profile.lidar_range
        self.register_buffer("voxel_scale", torch.tensor(self.voxel_size), persistent=False)
        self.register_buffer("voxel_offset", torch.tensor(
            [r[i] + self.voxel_size[i] / 2 for i in range(3)]), persistent=False)

    def example_inputs(self, batch: int = 1) -> dict[str, Tensor]:
        from codealign_ros.models.encoders import inputs

        rng = np.random.default_rng(0)
        items = [inputs.lidar_inputs(inputs.synthetic_points(self.profile, 400, rng),
                                     self.profile, self.voxel_key) for _ in range(batch)]
        return inputs.collate(items)

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        axes = {name: {0: "voxels"} for name in self.input_names}
        return {**axes, self.output_name: {0: "batch"}}

    def point_mask(self, voxels: Tensor, num_points: Tensor) -> Tensor:
        """(V, P) 1.0 for the real points of each voxel, 0.0 for the padding."""
        slots = torch.arange(voxels.shape[1], device=voxels.device)
        return (slots[None, :] < num_points.long()[:, None]).to(voxels.dtype)

    def voxel_centres(self, coords: Tensor) -> Tensor:
        """(V, 3) x, y, z centres of the voxels at (b, z, y, x) coords."""
        return coords[:, [3, 2, 1]].to(self.voxel_scale.dtype) * self.voxel_scale \
            + self.voxel_offset

    @staticmethod
    def cluster_offsets(voxels: Tensor, mask: Tensor, num_points: Tensor) -> Tensor:
        """(V, P, 3) offsets of every point to the mean of its voxel's points."""
        xyz = voxels[..., :3]
        count = num_points.to(voxels.dtype).clamp(min=1.0)[:, None]
        mean = (xyz * mask[..., None]).sum(dim=1) / count
        return xyz - mean[:, None, :]

    @staticmethod
    def batch_size(coords: Tensor) -> Tensor:
        """0-d int64 number of agents: max batch index + 1."""
        if not torch.jit.is_tracing() and coords.shape[0] == 0:
            raise ValueError("LiDAR encoder: no voxels (collate gives every agent at least one)")
        return coords[:, 0].long().max() + 1


class VfeLayer(nn.Module):
    """Point-wise Linear + BN + ReLU, max-pooled per voxel; `concat` appends the max to points."""

    def __init__(self, in_ch: int, out_ch: int, concat: bool) -> None:
        super().__init__()
        if concat and out_ch % 2:
            raise ValueError(f"VfeLayer: concatenating layers need even channels, got {out_ch}")
        self.units = out_ch // 2 if concat else out_ch
        self.concat = concat
        self.linear = nn.Linear(in_ch, self.units, bias=False)
        self.bn = nn.BatchNorm1d(self.units)

    def folded(self) -> tuple[Tensor, Tensor]:
        """(weight, bias) of the Linear with the eval-mode BatchNorm folded in."""
        bn = self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        return self.linear.weight * scale[:, None], bn.bias - bn.running_mean * scale

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """(V, P, in) points -> ((V, P, out) point features, (V, units) voxel max).

        In eval mode the BatchNorm is folded into the Linear (one MatMul + Add in ONNX)."""
        v, p = x.shape[0], x.shape[1]
        if self.training or self.bn.running_var is None:
            h = self.bn(self.linear(x).reshape(-1, self.units)).relu().reshape(v, p, self.units)
        else:
            h = F.linear(x, *self.folded()).relu()
        h = h * mask[..., None]
        agg = h.max(dim=1).values
        if self.concat:
            h = torch.cat([h, agg[:, None, :].expand(-1, p, -1)], dim=-1) * mask[..., None]
        return h, agg


class PointNet(nn.Module):
    """Stacked VFE layers (concatenating) and a last max-pooled layer: (V, P, in) -> (V, out)."""

    def __init__(self, in_ch: int, channels: list[int]) -> None:
        super().__init__()
        if not channels:
            raise ValueError("PointNet needs at least one layer")
        dims = [in_ch, *channels]
        self.layers = nn.ModuleList(VfeLayer(dims[i], dims[i + 1], i < len(channels) - 1)
                                    for i in range(len(channels)))
        self.out_channels = channels[-1]

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        agg = x.new_zeros(0)
        for layer in self.layers:
            x, agg = layer(x, mask)
        return agg


class PointPillars(LidarEncoder):
    """m1: PFN over augmented points (x, y, z, i, offsets to mean and pillar centre) + scatter."""

    kind = "pointpillars"
    voxel_key = "pillar"

    def __init__(self, profile: Profile) -> None:
        super().__init__(profile)
        filters = [int(f) for f in profile["pillar"]["filters"]]
        self.pfn = PointNet(10, filters)
        self.backbone = BevBackbone(filters[-1], profile.channels,
                                    int(profile["bev_backbone"]["blocks"]),
                                    bev_stride(profile, self.nx, self.ny))

    def pseudo_image(self, voxels: Tensor, coords: Tensor, num_points: Tensor) -> Tensor:
        """(B, filters, ny, nx) pillar features scattered to their cells."""
        mask = self.point_mask(voxels, num_points)
        centre = self.voxel_centres(coords)
        points = torch.cat([voxels, self.cluster_offsets(voxels, mask, num_points),
                            voxels[..., :3] - centre[:, None, :]], dim=-1) * mask[..., None]
        feats = self.pfn(points, mask) * (num_points > 0).to(voxels.dtype)[:, None]
        coords = coords.long()
        cells = self.ny * self.nx
        index = coords[:, 0] * cells + coords[:, 2] * self.nx + coords[:, 3]
        canvas = scatter_sum(feats, index, self.batch_size(coords), cells, unique=True)
        return bev_canvas(canvas, self.ny, self.nx)

    def forward(self, voxels: Tensor, coords: Tensor, num_points: Tensor) -> Tensor:
        return self.backbone(self.pseudo_image(voxels, coords, num_points)).contiguous()
