"""Anchor post-processing in numpy (no torch): anchors, box decoding, direction fix, top-k, NMS.

The same maths as `models.anchors` / `models.head` (OpenCOOD's residual coder and direction
bins), for deploy pipelines that load only ONNX files. Only the `pre_nms_top_k` highest-scoring
anchors above the score threshold are decoded; the vectorised `core.nms.rotated_nms_fast`
then keeps at most `max_boxes` of them.

Head outputs per sample: cls (A, H, W), reg (7A, H, W), dir (bins*A, H, W); flattened anchor
index k runs over (row, col, anchor) like the (H, W, A, 7) anchor array.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from codealign_ros.core.nms import rotated_nms_fast

__all__ = ["DEFAULT_DIR_OFFSET", "DEFAULT_PRE_NMS_TOP_K", "PostConfig", "correct_direction",
           "decode_boxes", "limit_period", "make_anchors", "postprocess", "select_top"]

DEFAULT_DIR_OFFSET = 0.7853  # HEAL / OpenCOOD dir_args.dir_offset (about pi / 4)
DEFAULT_PRE_NMS_TOP_K = 1000


@dataclass(frozen=True)
class PostConfig:
    """Post-processing settings (profiles.yaml `post`, anchors `dir_offset`)."""

    score: float
    nms_iou: float
    max_boxes: int
    pre_nms_top_k: int = DEFAULT_PRE_NMS_TOP_K
    dir_offset: float = DEFAULT_DIR_OFFSET

    @classmethod
    def from_profile(cls, post: Mapping[str, Any], anchors: Mapping[str, Any] | None = None
                     ) -> "PostConfig":
        """From a profile's `post` (and `anchors`) section."""
        return cls(float(post["score"]), float(post["nms_iou"]), int(post["max_boxes"]),
                   int(post.get("pre_nms_top_k", DEFAULT_PRE_NMS_TOP_K)),
                   float((anchors or {}).get("dir_offset", DEFAULT_DIR_OFFSET)))


def limit_period(val: np.ndarray, offset: float, period: float) -> np.ndarray:
    """OpenCOOD's limit_period: val folded into [-offset * period, (1 - offset) * period)."""
    return val - np.floor(val / period + offset) * period


def make_anchors(grid: Any, spec: Mapping[str, Any]) -> np.ndarray:
    """(H, W, A, 7) float32 anchors at the cell centres of `grid` (x_min, y_min, width, height,
    resolution); A = sizes x yaws (size-major), as `models.anchors.make_anchors`."""
    sizes = [tuple(float(v) for v in s) for s in spec["sizes"]]
    yaws = [float(y) for y in spec["yaws"]]
    if not sizes or not yaws or any(len(s) != 3 or min(s) <= 0 for s in sizes):
        raise ValueError(f"anchors need sizes [[l, w, h], ...] > 0 and yaws, got {sizes}, {yaws}")
    xs = grid.x_min + (np.arange(grid.width, dtype=np.float64) + 0.5) * grid.resolution
    ys = grid.y_min + (np.arange(grid.height, dtype=np.float64) + 0.5) * grid.resolution
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    shape = np.array([[*s, y] for s in sizes for y in yaws], np.float64)  # (A, 4)
    a = len(shape)
    out = np.empty((grid.height, grid.width, a, 7), np.float64)
    out[..., 0], out[..., 1] = gx[:, :, None], gy[:, :, None]
    out[..., 2] = float(spec["z"])
    out[..., 3:] = shape[None, None]
    return out.astype(np.float32)


def decode_boxes(deltas: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Boxes (K, 7) float32 from residuals (K, 7) and anchors (K, 7) (OpenCOOD coder)."""
    d = np.sqrt(anchors[:, 3] ** 2 + anchors[:, 4] ** 2)
    with np.errstate(over="ignore"):
        return np.stack([
            deltas[:, 0] * d + anchors[:, 0], deltas[:, 1] * d + anchors[:, 1],
            deltas[:, 2] * anchors[:, 5] + anchors[:, 2],
            np.exp(deltas[:, 3]) * anchors[:, 3], np.exp(deltas[:, 4]) * anchors[:, 4],
            np.exp(deltas[:, 5]) * anchors[:, 5], deltas[:, 6] + anchors[:, 6]], -1)


def correct_direction(yaw: np.ndarray, dir_bins: np.ndarray,
                      dir_offset: float = DEFAULT_DIR_OFFSET, num_bins: int = 2) -> np.ndarray:
    """Fold the decoded yaw into one bin's period, add the predicted bin, wrap to [-pi, pi)."""
    period = np.float32(2 * math.pi / num_bins)
    rot = (limit_period(yaw - np.float32(dir_offset), 0.0, period) + np.float32(dir_offset)
           + period * dir_bins.astype(yaw.dtype))
    return limit_period(rot, 0.5, np.float32(2 * math.pi))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x.astype(np.float32)))).astype(np.float32)


def select_top(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of `scores` > threshold, by descending score (stable: lower index first)."""
    cand = np.flatnonzero(scores > threshold)
    return cand[np.argsort(-scores[cand], kind="stable")]


def _gather(cls: np.ndarray, reg: np.ndarray, dirs: np.ndarray, k: np.ndarray,
            num_anchors: int) -> tuple[np.ndarray, np.ndarray]:
    """Residuals (K, 7) and direction logits (K, bins) of flat anchor indices `k`."""
    _, h, w = cls.shape
    row, col, a = k // (w * num_anchors), (k // num_anchors) % w, k % num_anchors
    deltas = reg.reshape(num_anchors, 7, h, w)[a, :, row, col]
    bins = dirs.shape[0] // num_anchors
    return deltas.astype(np.float32), dirs.reshape(num_anchors, bins, h, w)[a, :, row, col]


def postprocess_one(cls: np.ndarray, reg: np.ndarray, dirs: np.ndarray, anchors: np.ndarray,
                    post: PostConfig) -> tuple[np.ndarray, np.ndarray]:
    """(boxes (K, 7), scores (K,)) float32 of one sample, descending score."""
    num_anchors = anchors.shape[-2]
    if cls.shape[0] != num_anchors or reg.shape[0] != 7 * num_anchors \
            or dirs.shape[0] % num_anchors or cls.shape[1:] != anchors.shape[:2]:
        raise ValueError(f"head outputs {cls.shape}/{reg.shape}/{dirs.shape} do not match "
                         f"anchors {anchors.shape}")
    scores = _sigmoid(np.ascontiguousarray(cls.transpose(1, 2, 0)).reshape(-1))
    order = select_top(scores, post.score)
    flat = anchors.reshape(-1, 7)
    boxes, kept, start, top_k = [], [], 0, max(int(post.pre_nms_top_k), 0)
    while start < len(order) and sum(len(k) for k in kept) < top_k:  # decode only the top
        need = top_k - sum(len(k) for k in kept)
        k = order[start:start + need]
        start += len(k)
        deltas, dir_logits = _gather(cls, reg, dirs, k, num_anchors)
        bx = decode_boxes(deltas, flat[k])
        bx[:, 6] = correct_direction(bx[:, 6], dir_logits.argmax(-1), post.dir_offset,
                                     dir_logits.shape[-1])
        finite = np.isfinite(bx).all(-1)
        boxes.append(bx[finite])
        kept.append(k[finite])
    if not kept:
        return np.zeros((0, 7), np.float32), np.zeros(0, np.float32)
    bx, k = np.concatenate(boxes).astype(np.float32), np.concatenate(kept)
    s = scores[k]
    idx = rotated_nms_fast(bx.astype(np.float64), s.astype(np.float64), post.nms_iou,
                           post.max_boxes)
    return bx[idx], s[idx]


def postprocess(cls: np.ndarray, reg: np.ndarray, dirs: np.ndarray, anchors: np.ndarray,
                post: PostConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per sample of (B, ...) head outputs: (boxes (K, 7), scores (K,)) float32, descending
    score; sigmoid score > post.score, the post.pre_nms_top_k best decoded (non-finite boxes
    dropped), direction-corrected, rotated BEV NMS at post.nms_iou, <= post.max_boxes."""
    cls, reg, dirs = (np.asarray(x) for x in (cls, reg, dirs))
    return [postprocess_one(c, r, d, anchors, post) for c, r, d in zip(cls, reg, dirs)]
