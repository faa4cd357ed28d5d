"""Warping of BEV feature maps from a sender's grid into the ego's grid (HEAL / CodeAlign).

Grid convention (as codealign_msgs/CodeMap): cell (r, c) has lower corner
(x_min + c * res, y_min + r * res); rows run along +y, columns along +x.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F


ArrayLike = Union[torch.Tensor, np.ndarray]


@dataclass(frozen=True)
class BevGrid:
    """Geometry of a BEV grid in its sensor frame (metres, cells)."""

    x_min: float
    y_min: float
    width: int
    height: int
    resolution: float

    @classmethod
    def from_config(cls, profile: str) -> "BevGrid":
        """Exchanged BEV grid of model profile `profile` (config/profiles.yaml)."""
        from codealign_ros.models.profile import load_profile  # profile imports this module

        return load_profile(profile).grid

    def scaled(self, factor: int) -> "BevGrid":
        """The same extent at a `factor` times coarser resolution (a pyramid level)."""
        return BevGrid(self.x_min, self.y_min, self.width // factor, self.height // factor,
                       self.resolution * factor)


def _as_tensor(x: ArrayLike) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if isinstance(x, np.ndarray) else x).to(torch.float32)


def relative_transform(ego_pose: ArrayLike, agent_pose: ArrayLike) -> torch.Tensor:
    """T_ego<-agent = inv(T_world<-ego) @ T_world<-agent for (4,4) or (B,4,4) world poses."""
    ego = _as_tensor(ego_pose).to(torch.float64)
    agent = _as_tensor(agent_pose).to(torch.float64)
    return (torch.linalg.inv(ego) @ agent).to(torch.float32)


def _field(grid: Any, name: str) -> float:
    return float(grid[name] if isinstance(grid, dict) else getattr(grid, name))


def normalized_affine(t_ego_agent: ArrayLike, grid: Any) -> torch.Tensor:
    """(N, 2, 3) theta for F.affine_grid: ego (output) normalised coords -> agent (input) ones.

    Uses T_agent<-ego restricted to the BEV plane (x, y, yaw); normalised coordinates are
    (x - x_centre) / (W * res / 2) and (y - y_centre) / (H * res / 2).
    """
    t = _as_tensor(t_ego_agent).to(torch.float64)
    if t.dim() == 2:
        t = t.unsqueeze(0)
    # BEV part of T_ego<-agent, then invert in 2D.
    yaw = torch.atan2(t[:, 1, 0], t[:, 0, 0])
    cos, sin = torch.cos(yaw), torch.sin(yaw)
    tx, ty = t[:, 0, 3], t[:, 1, 3]
    rot = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # R^T
    trans = -(rot @ torch.stack([tx, ty], -1).unsqueeze(-1)).squeeze(-1)  # -R^T t
    res = _field(grid, "resolution")
    half = torch.tensor([_field(grid, "width") * res / 2, _field(grid, "height") * res / 2],
                        dtype=torch.float64)
    centre = torch.tensor([_field(grid, "x_min"), _field(grid, "y_min")],
                          dtype=torch.float64) + half
    # p_a = R' (c + S n) + t'  =>  n_a = S^-1 R' S n + S^-1 (R' c + t' - c)
    lin = rot * half.view(1, 1, 2) / half.view(1, 2, 1)
    off = ((rot @ centre.view(1, 2, 1)).squeeze(-1) + trans - centre) / half
    return torch.cat([lin, off.unsqueeze(-1)], -1).to(torch.float32)


def warp_with_theta(features: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Bilinear, zero-padded warp of (N, C, H, W) features by (N, 2, 3) theta (ONNX-friendly)."""
    h, w = features.shape[-2], features.shape[-1]
    xs = (torch.arange(w, dtype=features.dtype, device=features.device) * 2 + 1) / w - 1
    ys = (torch.arange(h, dtype=features.dtype, device=features.device) * 2 + 1) / h - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    base = torch.stack([gx, gy, torch.ones_like(gx)], -1).reshape(1, -1, 3)  # (1, H*W, 3)
    sample = (base @ theta.to(features.dtype).transpose(1, 2)).reshape(-1, h, w, 2)
    return F.grid_sample(features, sample, mode="bilinear", padding_mode="zeros",
                         align_corners=False)


def warp_features(features: torch.Tensor, t_ego_agent: ArrayLike, grid: Any) -> torch.Tensor:
    """Warp sender features (N, C, H, W) on `grid` into the ego's grid via T_ego<-agent."""
    theta = normalized_affine(t_ego_agent, grid).to(features.device)
    return warp_with_theta(features, theta)
