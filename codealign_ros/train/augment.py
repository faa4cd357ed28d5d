"""Data augmentation consistent across the agents of a cooperative sample (off by default).

One transform A = s * Rz(theta) * F (F: mirror y with probability 1/2) of the ego frame is
applied to the whole sample: every agent's cloud (in its own LiDAR frame, so the cloud keeps
its sensor origin), every agent's pose relative to the ego (T -> A T A^-1, still rigid) and
the ground truth (centres by A, sizes by s, yaw mirrored then rotated). The relative geometry
the fusion warps with therefore stays consistent with the clouds. Samples with a camera agent
are left as they are (images cannot follow a mirror or a scale).
"""
from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass

import numpy as np

from codealign_ros.config import lookup
from codealign_ros.core.geometry import wrap_angle
from codealign_ros.config.profiles import Profile
from codealign_ros.train.samples import AUG_TAG, Sample

__all__ = ["Augment"]


@dataclass(frozen=True)
class Augment:
    """Global flip / rotation / scaling of a sample; `apply` draws from `rng`."""

    flip: bool = True
    max_rotation: float = math.pi / 4  # radians, uniform in [-r, r]
    scale: tuple[float, float] = (0.95, 1.05)

    def matrix(self, rng: random.Random) -> tuple[np.ndarray, bool, float, float]:
        """(3x3 linear map, mirrored, theta, scale)."""
        mirror = self.flip and rng.random() < 0.5
        theta = rng.uniform(-self.max_rotation, self.max_rotation)
        s = rng.uniform(*self.scale)
        c, n = math.cos(theta), math.sin(theta)
        rot = np.array([[c, -n, 0.0], [n, c, 0.0], [0.0, 0.0, 1.0]])
        return s * rot @ np.diag([1.0, -1.0 if mirror else 1.0, 1.0]), mirror, theta, s

    def apply(self, sample: Sample, profile: Profile, rng: random.Random) -> Sample:
        """The augmented sample (a new object; `sample` is not changed)."""
        if any(lookup("modalities", "modalities", m, "sensor") == "camera"
               for m in sample.modalities):
            return sample
        lin, mirror, theta, s = self.matrix(rng)
        a4 = np.eye(4)
        a4[:3, :3] = lin
        a4_inv = np.linalg.inv(a4)
        ego_pose = sample.ego.lidar_pose
        to_ego = np.linalg.inv(ego_pose)
        agents = []
        for agent in sample.agents:
            rel = a4 @ (to_ego @ agent.lidar_pose) @ a4_inv
            pts = np.array(agent.points, np.float32, copy=True)
            pts[:, :3] = pts[:, :3] @ lin.T.astype(np.float32)
            agents.append(dataclasses.replace(agent, points=pts, lidar_pose=ego_pose @ rel))
        boxes = np.asarray(sample.gt_boxes, np.float64).reshape(-1, 7).copy()
        boxes[:, :3] = boxes[:, :3] @ lin.T
        boxes[:, 3:6] *= s
        boxes[:, 6] = wrap_angle((-boxes[:, 6] if mirror else boxes[:, 6]) + theta)
        r = profile.lidar_range
        inside = ((boxes[:, 0] >= r[0]) & (boxes[:, 0] < r[3]) & (boxes[:, 1] >= r[1])
                  & (boxes[:, 1] < r[4]))
        frame_key, ego_id = sample.key.rsplit("/", 1)
        return Sample(f"{frame_key}{AUG_TAG}/{ego_id}", agents, list(sample.modalities),
                      boxes[inside].astype(np.float32), sample.stamp_ns)
