"""Warping of BEV feature maps from a sender's grid into the ego's grid (HEAL / CodeAlign).

Grid convention (as codealign_msgs/CodeMap): cell (r, c) has lower corner
(x_min + c * res, y_min + r * res); rows run along +y, columns along +x.
"""
from __future__ import annotations

from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F

from codealign_ros.core import grid as np_grid
from codealign_ros.config.grid import BevGrid


ArrayLike = Union[torch.Tensor, np.ndarray]


def _as_tensor(x: ArrayLike) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if isinstance(x, np.ndarray) else x).to(torch.float32)


def relative_transform(ego_pose: ArrayLike, agent_pose: ArrayLike) -> torch.Tensor:
    """T_ego<-agent = inv(T_world<-ego) @ T_world<-agent for (4,4) or (B,4,4) world poses."""
    return torch.from_numpy(np_grid.relative_transform(_as_numpy(ego_pose),
                                                       _as_numpy(agent_pose)))


def _as_numpy(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def normalized_affine(t_ego_agent: ArrayLike, grid: Any) -> torch.Tensor:
    """(N, 2, 3) float32 theta for F.affine_grid (see `core.grid.normalized_affine`)."""
    return torch.from_numpy(np_grid.normalized_affine(_as_numpy(t_ego_agent), grid))


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
