"""Anchors, the OpenCOOD box coder and the anchor target assigner (torch, vectorised).

Boxes are [x, y, z, l, w, h, yaw] (our layout; OpenCOOD stores h, w, l, so its log-size targets
appear in the reverse order -- the formulas are the same). Flattened anchor index k runs over
(row, col, anchor) of the (H, W, A, 7) anchor tensor, the order of the head's channels.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from codealign_ros.core import detect as core_detect
from codealign_ros.config.grid import BevGrid

__all__ = ["DEFAULT_DIR_OFFSET", "BoxCoder", "assign_targets", "build_targets",
           "direction_targets", "limit_period", "make_anchors", "occupancy_targets",
           "standup_iou"]

DEFAULT_DIR_OFFSET = core_detect.DEFAULT_DIR_OFFSET


def limit_period(val: Tensor, offset: float, period: float) -> Tensor:
    """OpenCOOD's limit_period: val folded into [-offset * period, (1 - offset) * period)."""
    return val - torch.floor(val / period + offset) * period


def make_anchors(grid: BevGrid, spec: Mapping[str, Any]) -> Tensor:
    """(H, W, A, 7) float32 anchors at the cell centres of `grid`; A = sizes x yaws (size-major)."""
    return torch.from_numpy(core_detect.make_anchors(grid, spec))


class BoxCoder:
    """OpenCOOD residual coder: dx/d, dy/d, dz/h_a, log(l/l_a), log(w/w_a), log(h/h_a), dyaw,
    with d = sqrt(l_a^2 + w_a^2)."""

    def encode(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        """Regression targets (..., 7) of `boxes` relative to `anchors` (broadcastable)."""
        d = torch.sqrt(anchors[..., 3] ** 2 + anchors[..., 4] ** 2)
        return torch.stack([
            (boxes[..., 0] - anchors[..., 0]) / d, (boxes[..., 1] - anchors[..., 1]) / d,
            (boxes[..., 2] - anchors[..., 2]) / anchors[..., 5],
            torch.log(boxes[..., 3] / anchors[..., 3]), torch.log(boxes[..., 4] / anchors[..., 4]),
            torch.log(boxes[..., 5] / anchors[..., 5]), boxes[..., 6] - anchors[..., 6]], -1)

    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """Boxes (..., 7) from regression outputs `deltas` and `anchors` (broadcastable)."""
        d = torch.sqrt(anchors[..., 3] ** 2 + anchors[..., 4] ** 2)
        return torch.stack([
            deltas[..., 0] * d + anchors[..., 0], deltas[..., 1] * d + anchors[..., 1],
            deltas[..., 2] * anchors[..., 5] + anchors[..., 2],
            torch.exp(deltas[..., 3]) * anchors[..., 3],
            torch.exp(deltas[..., 4]) * anchors[..., 4],
            torch.exp(deltas[..., 5]) * anchors[..., 5], deltas[..., 6] + anchors[..., 6]], -1)


def _standup(boxes: Tensor) -> Tensor:
    """(K, 4) axis-aligned BEV bounds [x1, y1, x2, y2] of rotated (K, 7) boxes."""
    c, s = torch.cos(boxes[:, 6]).abs(), torch.sin(boxes[:, 6]).abs()
    hx = 0.5 * (c * boxes[:, 3] + s * boxes[:, 4])
    hy = 0.5 * (s * boxes[:, 3] + c * boxes[:, 4])
    return torch.stack([boxes[:, 0] - hx, boxes[:, 1] - hy, boxes[:, 0] + hx, boxes[:, 1] + hy], 1)


def standup_iou(a: Tensor, b: Tensor) -> Tensor:
    """(K, M) IoU of the axis-aligned BEV bounding boxes of (K, 7) `a` and (M, 7) `b`
    (OpenCOOD's standup IoU, in metres: no +1 pixel convention)."""
    sa, sb = _standup(a), _standup(b)
    lo = torch.maximum(sa[:, None, :2], sb[None, :, :2])
    hi = torch.minimum(sa[:, None, 2:], sb[None, :, 2:])
    inter = (hi - lo).clamp(min=0).prod(-1)
    area_a = (sa[:, 2:] - sa[:, :2]).prod(-1)
    area_b = (sb[:, 2:] - sb[:, :2]).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-9)


def direction_targets(yaw: Tensor, dir_offset: float = DEFAULT_DIR_OFFSET,
                      num_bins: int = 2) -> Tensor:
    """OpenCOOD direction bin of a GT yaw: floor(((yaw - offset) mod 2pi) / (2pi / bins))."""
    rot = limit_period(yaw - dir_offset, 0.0, 2 * math.pi)
    return torch.floor(rot / (2 * math.pi / num_bins)).long().clamp(0, num_bins - 1)


def _as_boxes(gt_boxes: Any) -> Tensor:
    gt = torch.as_tensor(np.asarray(gt_boxes) if not isinstance(gt_boxes, Tensor) else gt_boxes)
    if gt.numel() == 0:
        return torch.zeros(0, 7)
    if gt.dim() != 2 or gt.shape[1] != 7:
        raise ValueError(f"gt boxes must be (M, 7) [x, y, z, l, w, h, yaw], got {tuple(gt.shape)}")
    gt = gt.to(torch.float32)
    if not torch.isfinite(gt).all() or (gt[:, 3:6] <= 0).any():
        raise ValueError("gt boxes must be finite with positive l, w, h")
    return gt


def _inside(gt: Tensor, grid: BevGrid | None, anchors: Tensor) -> Tensor:
    if grid is not None:
        x0, y0 = grid.x_min, grid.y_min
        x1 = x0 + grid.width * grid.resolution
        y1 = y0 + grid.height * grid.resolution
    else:  # hull of the anchor centres
        x0, y0 = float(anchors[:, 0].min()), float(anchors[:, 1].min())
        x1, y1 = float(anchors[:, 0].max()), float(anchors[:, 1].max())
    return (gt[:, 0] >= x0) & (gt[:, 0] < x1) & (gt[:, 1] >= y0) & (gt[:, 1] < y1)


@torch.no_grad()
def assign_targets(anchors: Tensor, gt_boxes: Any, pos_iou: float, neg_iou: float,
                   coder: BoxCoder | None = None, grid: BevGrid | None = None,
                   dir_offset: float = DEFAULT_DIR_OFFSET,
                   num_dir_bins: int = 2) -> tuple[Tensor, Tensor, Tensor]:
    """OpenCOOD's target assigner on standup BEV IoU.

    Returns labels (K,) long (1 positive, 0 negative, -1 ignore), regression targets (K, 7)
    (zero off the positives) and direction bins (K,) long. An anchor is positive when its best
    IoU with a GT box exceeds `pos_iou`, negative when all IoUs are below `neg_iou`; every GT box
    also claims its best anchor (if that overlaps at all). GT boxes centred outside the grid
    (`grid`, else the anchor centres' hull) are dropped."""
    if not 0.0 <= neg_iou <= pos_iou <= 1.0:
        raise ValueError(f"need 0 <= neg_iou <= pos_iou <= 1, got {neg_iou}, {pos_iou}")
    coder = coder or BoxCoder()
    flat = anchors.reshape(-1, 7).to(torch.float32)
    k = flat.shape[0]
    gt = _as_boxes(gt_boxes).to(flat.device)
    gt = gt[_inside(gt, grid, flat)]
    labels = torch.zeros(k, dtype=torch.long, device=flat.device)
    reg = torch.zeros(k, 7, device=flat.device)
    dirs = torch.zeros(k, dtype=torch.long, device=flat.device)
    if len(gt) == 0:
        return labels, reg, dirs
    iou = standup_iou(flat, gt)  # (K, M)
    best_iou, best_gt = iou.max(1)
    labels[best_iou >= neg_iou] = -1
    pos = best_iou > pos_iou
    gt_best_iou, gt_best_anchor = iou.max(0)
    forced = gt_best_anchor[gt_best_iou > 0]
    best_gt[forced] = torch.arange(len(gt), device=flat.device)[gt_best_iou > 0]
    pos[forced] = True
    labels[pos] = 1
    matched = gt[best_gt[pos]]
    reg[pos] = coder.encode(matched, flat[pos])
    dirs[pos] = direction_targets(matched[:, 6], dir_offset, num_dir_bins)
    return labels, reg, dirs


def occupancy_targets(labels: Tensor, shape: tuple[int, int, int],
                      level_strides: Sequence[int]) -> list[Tensor]:
    """Per pyramid level (B, 1, H/s, W/s) float maps: 1 where any anchor of the covered cells is
    positive (HEAL's pyramid occupancy target, max-pooled to the level's resolution)."""
    h, w, a = shape
    occ = (labels.reshape(-1, h, w, a) == 1).any(-1).to(torch.float32)[:, None]
    return [occ if s == 1 else F.max_pool2d(occ, s, s) for s in level_strides]


@torch.no_grad()
def build_targets(anchors: Tensor, gt_boxes: Sequence[Any], pos_iou: float, neg_iou: float,
                  level_strides: Sequence[int], coder: BoxCoder | None = None,
                  grid: BevGrid | None = None,
                  dir_offset: float = DEFAULT_DIR_OFFSET) -> dict[str, Any]:
    """Batched targets for `detection_loss`: labels (B, K), reg (B, K, 7), dir (B, K),
    occupancy [(B, 1, h_l, w_l)] from per-sample GT lists in the ego frames."""
    if anchors.dim() != 4:
        raise ValueError(f"anchors must be (H, W, A, 7), got {tuple(anchors.shape)}")
    parts = [assign_targets(anchors, g, pos_iou, neg_iou, coder, grid, dir_offset)
             for g in gt_boxes]
    if not parts:
        raise ValueError("gt_boxes must hold one (M, 7) array per sample")
    labels, reg, dirs = (torch.stack(p) for p in zip(*parts))
    h, w, a = anchors.shape[:3]
    return {"labels": labels, "reg": reg, "dir": dirs,
            "occupancy": occupancy_targets(labels, (h, w, a), level_strides)}
