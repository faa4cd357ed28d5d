"""Anchor detection head (1x1 convs: class, box residuals, direction bins) and post-processing."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from codealign_ros.core.detect import PostConfig
from codealign_ros.core.detect import postprocess as np_postprocess
from codealign_ros.models.anchors import DEFAULT_DIR_OFFSET, BoxCoder, limit_period

__all__ = ["AnchorHead", "correct_direction", "flatten_outputs", "postprocess"]



class AnchorHead(nn.Module):
    """cls (B, A, H, W), reg (B, 7A, H, W), dir (B, 2A, H, W) from fused features; channel
    a*7+k / a*2+bin, matching the (H, W, A) anchor order."""

    def __init__(self, in_ch: int, num_anchors: int, num_dir_bins: int = 2,
                 prior: float = 0.01) -> None:
        super().__init__()
        if num_anchors < 1 or in_ch < 1:
            raise ValueError(f"need in_ch >= 1 and num_anchors >= 1, got {in_ch}, {num_anchors}")
        self.num_anchors, self.num_dir_bins = num_anchors, num_dir_bins
        self.cls = nn.Conv2d(in_ch, num_anchors, 1)
        self.reg = nn.Conv2d(in_ch, 7 * num_anchors, 1)
        self.dir = nn.Conv2d(in_ch, num_dir_bins * num_anchors, 1)
        nn.init.constant_(self.cls.bias, -math.log((1 - prior) / prior))  # focal-loss prior

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.cls(x), self.reg(x), self.dir(x)


def flatten_outputs(cls: Tensor, reg: Tensor, dir_logits: Tensor,
                    num_anchors: int) -> tuple[Tensor, Tensor, Tensor]:
    """(B, K) class logits, (B, K, 7) residuals, (B, K, bins) direction logits, K = H*W*A."""
    b, a = cls.shape[0], num_anchors
    if cls.shape[1] != a or reg.shape[1] != 7 * a or dir_logits.shape[1] % a:
        raise ValueError(f"head channels {cls.shape[1]}/{reg.shape[1]}/{dir_logits.shape[1]} "
                         f"do not match {a} anchors")
    bins = dir_logits.shape[1] // a
    return (cls.permute(0, 2, 3, 1).reshape(b, -1), reg.permute(0, 2, 3, 1).reshape(b, -1, 7),
            dir_logits.permute(0, 2, 3, 1).reshape(b, -1, bins))


def correct_direction(yaw: Tensor, dir_bins: Tensor, dir_offset: float = DEFAULT_DIR_OFFSET,
                      num_bins: int = 2) -> Tensor:
    """OpenCOOD: fold the decoded yaw into one bin's period, add the predicted bin, wrap to
    [-pi, pi)."""
    period = 2 * math.pi / num_bins
    rot = limit_period(yaw - dir_offset, 0.0, period) + dir_offset + period * dir_bins.to(yaw)
    return limit_period(rot, 0.5, 2 * math.pi)


@torch.no_grad()
def postprocess(cls: Tensor, reg: Tensor, dir_logits: Tensor, anchors: Tensor,
                post: Mapping[str, Any], coder: BoxCoder | None = None,
                dir_offset: float = DEFAULT_DIR_OFFSET,
                pre_nms_top_k: int | None = None) -> list[tuple[Tensor, Tensor]]:
    """Per sample (boxes (K, 7), scores (K,)) float32 CPU tensors, descending score: sigmoid
    score > post["score"], the post["pre_nms_top_k"] best decoded, direction-corrected,
    rotated BEV NMS at post["nms_iou"], at most post["max_boxes"]. Non-finite decoded boxes
    are dropped. The numpy implementation of `core.detect` (the deploy path's) does the work;
    `coder` must be the OpenCOOD coder it implements."""
    if coder is not None and type(coder) is not BoxCoder:
        raise ValueError("postprocess decodes with the OpenCOOD BoxCoder only")
    cfg = PostConfig.from_profile(post, {"dir_offset": dir_offset})
    if pre_nms_top_k is not None:
        cfg = replace(cfg, pre_nms_top_k=int(pre_nms_top_k))
    flatten_outputs(cls, reg, dir_logits, anchors.shape[-2])  # channel check
    arrays = [t.detach().float().cpu().numpy() for t in (cls, reg, dir_logits)]
    out = np_postprocess(*arrays, anchors.detach().float().cpu().numpy(), cfg)
    return [(torch.from_numpy(b), torch.from_numpy(s)) for b, s in out]
