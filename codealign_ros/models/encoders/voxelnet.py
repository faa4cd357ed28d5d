"""m3: VoxelNet (stacked VFE layers + FCN max-pool -> dense 3D middle layers -> BEV)."""
from __future__ import annotations

import torch
from torch import Tensor

from codealign_ros.models.encoders.pointpillars import PointNet
from codealign_ros.models.encoders.second import Voxel3dEncoder
from codealign_ros.config.profiles import Profile

__all__ = ["VoxelNet"]


class VoxelNet(Voxel3dEncoder):
    """m3: VFE layers of profile voxel3d.vfe over (x, y, z, i, offsets to the voxel mean),
    then a point-wise FCN of the last width max-pooled per voxel (Zhou & Tuzel, 2018)."""

    kind = "voxelnet"

    def __init__(self, profile: Profile) -> None:
        vfe = [int(c) for c in profile["voxel3d"]["vfe"]]
        super().__init__(profile, vfe[-1], stride_first=True)
        self.vfe = PointNet(7, [*vfe, vfe[-1]])

    def voxel_features(self, voxels: Tensor, coords: Tensor, num_points: Tensor) -> Tensor:
        mask = self.point_mask(voxels, num_points)
        points = torch.cat([voxels, self.cluster_offsets(voxels, mask, num_points)], dim=-1)
        return self.vfe(points * mask[..., None], mask)
