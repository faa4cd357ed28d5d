"""Sparse depth targets for camera encoders: the agent's own LiDAR projected into its cameras."""
from __future__ import annotations

import numpy as np

from codealign_ros.core.geometry import transform_points
from codealign_ros.data.types import AgentFrame


def lidar_depth_maps(agent: AgentFrame, size: tuple[int, int]) -> np.ndarray:
    """(Ncam, H, W) float32 depth in metres at image size `size` (W, H); 0 where no point.

    Each camera keeps the nearest point per pixel (as BEVDepth-style depth supervision).
    """
    width, height = size
    out = np.zeros((len(agent.cameras), height, width), np.float32)
    pts = np.asarray(agent.points, np.float32)[:, :3]
    for i, cam in enumerate(agent.cameras):
        h0, w0 = cam.image.shape[:2]
        p = transform_points(cam.extrinsic, pts)
        keep = p[:, 2] > 0.1
        p = p[keep]
        uvw = p @ np.asarray(cam.intrinsic, np.float64).T
        u = uvw[:, 0] / uvw[:, 2] * (width / w0)
        v = uvw[:, 1] / uvw[:, 2] * (height / h0)
        ok = (u >= 0) & (u < width) & (v >= 0) & (v < height)
        ui, vi, d = u[ok].astype(np.int64), v[ok].astype(np.int64), p[ok, 2]
        order = np.argsort(-d)  # far first, so the nearest point is written last
        out[i, vi[order], ui[order]] = d[order]
    return out
