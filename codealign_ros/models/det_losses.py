"""Detection losses of HEAL's PointPillarPyramidLoss: sigmoid focal classification, smooth-L1
box regression with the sin-difference yaw trick, direction cross-entropy and the pyramid
occupancy loss. Every term is normalised by the positives of its sample (agent) and averaged
over the batch (agents), as OpenCOOD does."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from codealign_ros.models.head import flatten_outputs
from codealign_ros.models.warp import warp_with_theta

__all__ = ["add_sin_difference", "detection_loss", "direction_loss", "focal_loss",
           "occupancy_loss", "regression_loss", "sigmoid_focal", "smooth_l1"]

ALPHA, GAMMA = 0.25, 2.0
SIGMA, REG_WEIGHT, DIR_WEIGHT, CLS_WEIGHT = 3.0, 2.0, 0.2, 1.0
VALID_MIN = 0.99  # warped coverage above which an ego cell counts as seen by an agent


def sigmoid_focal(logits: Tensor, targets: Tensor, alpha: float = ALPHA,
                  gamma: float = GAMMA) -> Tensor:
    """Element-wise sigmoid focal loss (unreduced, unweighted)."""
    p = torch.sigmoid(logits)
    alpha_w = targets * alpha + (1 - targets) * (1 - alpha)
    pt = targets * (1 - p) + (1 - targets) * p
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return alpha_w * pt.pow(gamma) * bce


def _per_sample_norm(mask: Tensor) -> Tensor:
    """Weights 1/#positives (>= 1) per sample row of a (B, K) mask, as float (B, 1)."""
    return mask.flatten(1).sum(1, keepdim=True).clamp(min=1.0)


def focal_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Focal classification loss of (B, K) logits vs labels 1/0/-1 (ignored), per-sample
    normalised by the positives, summed and divided by B."""
    pos, care = (labels == 1).float(), (labels >= 0).float()
    loss = sigmoid_focal(logits, pos) * care / _per_sample_norm(pos)
    return loss.sum() / logits.shape[0]


def smooth_l1(diff: Tensor, sigma: float = SIGMA) -> Tensor:
    """OpenCOOD's smooth-L1 with beta = 1 / sigma^2."""
    beta, n = 1.0 / sigma**2, diff.abs()
    return torch.where(n < beta, 0.5 * n**2 / beta, n - 0.5 * beta)


def add_sin_difference(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Replace the yaw channel by sin(a)cos(b) / cos(a)sin(b): their difference is sin(a - b)."""
    a, b = pred[..., 6:7], target[..., 6:7]
    return (torch.cat([pred[..., :6], torch.sin(a) * torch.cos(b)], -1),
            torch.cat([target[..., :6], torch.cos(a) * torch.sin(b)], -1))


def regression_loss(pred: Tensor, target: Tensor, labels: Tensor) -> Tensor:
    """Smooth-L1 (sigma 3) on positives with sin-difference yaw, per-sample normalised, / B."""
    pos = (labels == 1).float()
    p, t = add_sin_difference(pred, target)
    loss = smooth_l1(p - t).sum(-1) * pos / _per_sample_norm(pos)
    return loss.sum() / pred.shape[0]


def direction_loss(logits: Tensor, target: Tensor, labels: Tensor) -> Tensor:
    """Direction-bin cross-entropy (B, K, bins) on positives, per-sample normalised, / B."""
    pos = (labels == 1).float()
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                         reduction="none").reshape(pos.shape)
    return (ce * pos / _per_sample_norm(pos)).sum() / logits.shape[0]


def occupancy_loss(occupancy: Sequence[Tensor], targets: Sequence[Tensor], theta: Tensor,
                   sample: Tensor, weights: Sequence[float]) -> Tensor:
    """Pyramid occupancy loss: each agent's logits (agent frame) are warped into its ego frame
    and supervised by the ego occupancy target where the agent sees (focal, per-agent
    normalised by positives, weighted per level, / number of agents)."""
    if not len(occupancy) == len(targets) == len(weights):
        raise ValueError("one occupancy target and weight per pyramid level expected")
    total = occupancy[0].new_zeros(())
    for logit, target, w in zip(occupancy, targets, weights):
        warped = warp_with_theta(torch.cat([logit, torch.ones_like(logit)], 1), theta)
        valid = (warped[:, 1:] > VALID_MIN).float()
        tgt = target[sample] * valid
        loss = sigmoid_focal(warped[:, :1], tgt) * valid / _per_sample_norm(tgt)[:, :, None, None]
        total = total + float(w) * loss.sum() / logit.shape[0]
    return total


def detection_loss(outputs: Mapping[str, Any], targets: Mapping[str, Any],
                   occupancy_weights: Sequence[float] = (0.4, 0.2, 0.1)
                   ) -> tuple[Tensor, dict[str, Tensor]]:
    """(total, {"cls", "reg", "dir", "occ"}) from backend outputs (cls, reg, dir, occupancy,
    theta, sample) and `anchors.build_targets` targets (labels, reg, dir, occupancy)."""
    labels = targets["labels"]
    num_anchors = outputs["cls"].shape[1]
    logits, deltas, dirs = flatten_outputs(outputs["cls"], outputs["reg"], outputs["dir"],
                                           num_anchors)
    if logits.shape != labels.shape:
        raise ValueError(f"predictions {tuple(logits.shape)} vs targets {tuple(labels.shape)}")
    parts = {"cls": CLS_WEIGHT * focal_loss(logits, labels),
             "reg": REG_WEIGHT * regression_loss(deltas, targets["reg"], labels),
             "dir": DIR_WEIGHT * direction_loss(dirs, targets["dir"], labels)}
    if outputs.get("occupancy"):
        parts["occ"] = occupancy_loss(outputs["occupancy"], targets["occupancy"],
                                      outputs["theta"], outputs["sample"], occupancy_weights)
    total = sum(parts.values(), logits.new_zeros(()))
    return total, parts
