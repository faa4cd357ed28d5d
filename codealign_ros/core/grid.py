"""Pose -> warp-matrix maths on a BEV grid (numpy; torch-free for deploy nodes).

The grid itself is `codealign_ros.config.grid.BevGrid` (re-exported here).

Grid convention (as codealign_msgs/CodeMap): cell (r, c) has lower corner
(x_min + c * res, y_min + r * res); rows run along +y, columns along +x.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from codealign_ros.config.grid import BevGrid

__all__ = ["BevGrid", "normalized_affine", "relative_transform"]


def relative_transform(ego_pose: np.ndarray, agent_pose: np.ndarray) -> np.ndarray:
    """T_ego<-agent = inv(T_world<-ego) @ T_world<-agent for (4,4) or (B,4,4) world poses
    (float64 maths, float32 result)."""
    ego = np.asarray(ego_pose, np.float32).astype(np.float64)
    agent = np.asarray(agent_pose, np.float32).astype(np.float64)
    return (np.linalg.inv(ego) @ agent).astype(np.float32)


def _field(grid: Any, name: str) -> float:
    return float(grid[name] if isinstance(grid, dict) else getattr(grid, name))


def normalized_affine(t_ego_agent: np.ndarray, grid: Any) -> np.ndarray:
    """(N, 2, 3) float32 theta for affine_grid: ego (output) normalised coords -> agent
    (input) ones.

    Uses T_agent<-ego restricted to the BEV plane (x, y, yaw); normalised coordinates are
    (x - x_centre) / (W * res / 2) and (y - y_centre) / (H * res / 2).
    """
    t = np.asarray(t_ego_agent, np.float32).astype(np.float64)
    if t.ndim == 2:
        t = t[None]
    # BEV part of T_ego<-agent, then invert in 2D.
    yaw = np.arctan2(t[:, 1, 0], t[:, 0, 0])
    cos, sin = np.cos(yaw), np.sin(yaw)
    tx, ty = t[:, 0, 3], t[:, 1, 3]
    rot = np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], -2)  # R^T
    trans = -(rot @ np.stack([tx, ty], -1)[..., None])[..., 0]  # -R^T t
    res = _field(grid, "resolution")
    half = np.array([_field(grid, "width") * res / 2, _field(grid, "height") * res / 2])
    centre = np.array([_field(grid, "x_min"), _field(grid, "y_min")]) + half
    # p_a = R' (c + S n) + t'  =>  n_a = S^-1 R' S n + S^-1 (R' c + t' - c)
    lin = rot * half.reshape(1, 1, 2) / half.reshape(1, 2, 1)
    off = ((rot @ centre.reshape(1, 2, 1))[..., 0] + trans - centre) / half
    return np.concatenate([lin, off[..., None]], -1).astype(np.float32)
