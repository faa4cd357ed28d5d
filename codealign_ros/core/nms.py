"""Vectorised rotated BEV NMS (numpy): the kept set of `metrics.rotated_nms`, at engine speed.

All candidate pairs (higher-ranked box i, lower-ranked box j) whose bounding circles and
axis-aligned bounds overlap are clipped at once (Sutherland-Hodgman of p_i by q_j, in the same
arithmetic as `metrics.convex_intersection_area`, with fixed-size vertex arrays); the greedy
pass clips lazily: only pairs whose first box is still alive. Pairs whose clipped polygon would need more
than `MAX_VERTICES` vertices (degenerate, numerically non-convex input) and pairs whose IoU lies
within `BORDER` of the threshold are recomputed with the reference code, so the kept set is the
reference's exactly, summation order included.
"""
from __future__ import annotations

import numpy as np

from codealign_ros.core.metrics import bev_iou_matrix, bev_polygons

__all__ = ["BORDER", "MAX_VERTICES", "pairwise_bev_iou", "rotated_nms_fast"]

MAX_VERTICES = 8  # a quadrilateral clipped by 4 half-planes has at most 8 vertices
BORDER = 1e-9  # |IoU - threshold| below this: recomputed by the reference implementation
_EPS = 1e-12


def _clip(p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip polygons p (P, 4, 2) by convex CCW quads q (P, 4, 2): vertices (P, MAX, 2),
    counts (P,), overflow (P,) bool (more vertices than MAX_VERTICES at some step)."""
    n_pairs = len(p)
    rows = np.arange(n_pairs)
    out = np.zeros((n_pairs, MAX_VERTICES, 2))
    out[:, :4] = p
    count = np.full(n_pairs, 4)
    overflow = np.zeros(n_pairs, bool)
    slot = np.arange(MAX_VERTICES)[None]
    for e in range(4):
        a, b = q[:, e], q[:, (e + 1) % 4]
        ex, ey = (b[:, 0] - a[:, 0])[:, None], (b[:, 1] - a[:, 1])[:, None]
        valid = slot < count[:, None]
        side = ex * (out[:, :, 1] - a[:, 1:2]) - ey * (out[:, :, 0] - a[:, 0:1])
        last = np.maximum(count, 1) - 1
        nxt, side_n = np.roll(out, -1, axis=1), np.roll(side, -1, axis=1)
        nxt[rows, last], side_n[rows, last] = out[:, 0], side[:, 0]
        inside = side >= 0
        cross = valid & (inside != (side_n >= 0))
        with np.errstate(divide="ignore", invalid="ignore"):
            t = side / np.where(cross, side - side_n, 1.0)
        crossing = out + (nxt - out) * t[..., None]
        cand = np.stack([out, crossing], 2).reshape(n_pairs, 2 * MAX_VERTICES, 2)
        keep = np.stack([inside & valid, cross], 2).reshape(n_pairs, 2 * MAX_VERTICES)
        pos = np.cumsum(keep, 1) - 1
        count = pos[:, -1] + 1
        overflow |= count > MAX_VERTICES
        r, c = np.nonzero(keep & (pos < MAX_VERTICES))
        out = np.zeros_like(out)
        out[r, pos[r, c]] = cand[r, c]
        count = np.minimum(count, MAX_VERTICES)
    return out, count, overflow


def _areas(poly: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Shoelace areas (clamped at 0) of the first `count` vertices of each polygon."""
    rows = np.arange(len(poly))
    valid = np.arange(poly.shape[1])[None] < count[:, None]
    nxt = np.roll(poly, -1, axis=1)
    nxt[rows, np.maximum(count, 1) - 1] = poly[:, 0]
    x, y, xn, yn = poly[..., 0], poly[..., 1], nxt[..., 0], nxt[..., 1]
    area = 0.5 * (np.where(valid, x * yn, 0.0).sum(1) - np.where(valid, y * xn, 0.0).sum(1))
    return np.where(count >= 3, np.maximum(area, 0.0), 0.0)


def _candidates(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Polygons (M, 4, 2) and the index pairs i < j that the reference would clip (bounding
    circles and axis-aligned bounds overlap), found by a sweep over x instead of an M x M
    matrix."""
    poly = bev_polygons(boxes)
    radius = 0.5 * np.hypot(boxes[:, 3], boxes[:, 4])
    lo, hi = poly.min(1), poly.max(1)
    finite = np.flatnonzero(np.isfinite(lo).all(1) & np.isfinite(hi).all(1)
                            & np.isfinite(boxes[:, :2]).all(1) & np.isfinite(radius))
    by_x = finite[np.argsort(lo[finite, 0], kind="stable")]
    lo_x = lo[by_x, 0]
    stop = np.searchsorted(lo_x, hi[by_x, 0], side="right")  # lo_x[k] <= hi_x[a] for k < stop
    start = np.arange(len(by_x)) + 1
    n = np.maximum(stop - start, 0)
    first = np.repeat(np.arange(len(by_x)), n)
    offset = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    a, b = by_x[first], by_x[np.repeat(start, n) + offset]
    lo_y, hi_y = lo[:, 1], hi[:, 1]
    y_overlap = (lo_y[a] <= hi_y[b]) & (lo_y[b] <= hi_y[a])  # cheap 1-D test first
    a, b = a[y_overlap], b[y_overlap]
    a, b = np.minimum(a, b), np.maximum(a, b)
    dx, dy = boxes[a, 0] - boxes[b, 0], boxes[a, 1] - boxes[b, 1]
    near = ((np.sqrt(dx * dx + dy * dy) <= radius[a] + radius[b])
            & np.all((lo[a] <= hi[b]) & (lo[b] <= hi[a]), axis=-1))
    return poly, a[near], b[near]


def _pair_iou(boxes: np.ndarray, poly: np.ndarray, i: np.ndarray, j: np.ndarray,
              threshold: float | None) -> np.ndarray:
    """IoU of box i against box j per pair, as `metrics.bev_iou_matrix` computes it (pairs
    near `threshold` or beyond MAX_VERTICES recomputed by that function)."""
    if len(i) == 0:
        return np.zeros(0)
    clipped, count, overflow = _clip(poly[i], poly[j])
    inter = _areas(clipped, count)
    area = boxes[:, 3] * boxes[:, 4]
    union = area[i] + area[j] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > _EPS, inter / union, 0.0)
    redo = overflow | ~np.isfinite(iou)
    if threshold is not None:
        redo |= np.abs(iou - threshold) < BORDER
    for k in np.flatnonzero(redo):
        iou[k] = bev_iou_matrix(boxes[i[k]:i[k] + 1], boxes[j[k]:j[k] + 1])[0, 0]
    return iou


def pairwise_bev_iou(boxes: np.ndarray, threshold: float | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, iou) for the pairs i < j of (M, 7) `boxes` that overlap at all (others: IoU 0).

    IoU of box i against box j as `metrics.bev_iou_matrix(boxes[i], boxes[j])` computes it;
    with `threshold`, pairs within BORDER of it are recomputed by that function."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    poly, i, j = _candidates(boxes)
    return i, j, _pair_iou(boxes, poly, i, j, threshold)


def _may_exceed(boxes: np.ndarray, poly: np.ndarray, i: np.ndarray, j: np.ndarray,
                threshold: float) -> np.ndarray:
    """False where the IoU of a pair provably stays <= threshold: the overlap is at most the
    overlap of the axis-aligned bounds and at most either box's area."""
    lo, hi = poly.min(1), poly.max(1)
    ext = np.clip(np.minimum(hi[i], hi[j]) - np.maximum(lo[i], lo[j]), 0.0, None)
    area = boxes[:, 3] * boxes[:, 4]
    bound = np.minimum(ext[:, 0] * ext[:, 1], np.minimum(area[i], area[j]))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = bound / (area[i] + area[j] - bound)
    return ~(ratio <= threshold - BORDER)


def rotated_nms_fast(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float,
                     max_boxes: int = 150, chunk: int = 48) -> np.ndarray:
    """Greedy rotated BEV NMS, same contract and kept set as `metrics.rotated_nms`: indices
    (descending score, stable) of the boxes kept; a box is suppressed when its IoU with an
    already kept box exceeds `iou_threshold`.

    Overlaps are clipped lazily, `chunk` still-alive boxes at a time, and only against boxes
    still alive: pairs whose first box an earlier kept box suppressed are never clipped."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    order = np.argsort(-np.asarray(scores, np.float64).reshape(-1), kind="stable")
    n = len(order)
    if max_boxes <= 0 or n == 0:
        return np.zeros(0, np.int64)
    thr = float(iou_threshold)
    if thr < 0:  # every pair has IoU >= 0 > threshold: only the best box survives
        return order[:1].astype(np.int64)
    ranked = boxes[order]
    poly, pi, pj = _candidates(ranked)
    pick = _may_exceed(ranked, poly, pi, pj, thr)
    pi, pj = pi[pick], pj[pick]
    by_i = np.lexsort((pj, pi))
    pi, pj = pi[by_i], pj[by_i]
    alive = np.ones(n, bool)
    keep: list[int] = []
    r0 = 0
    while r0 < n and len(keep) < max_boxes:
        alive_rows = np.flatnonzero(alive[r0:]) + r0
        if alive_rows.size == 0:
            break
        r1 = int(alive_rows[min(chunk, alive_rows.size) - 1]) + 1
        sel = (pi >= r0) & (pi < r1)
        sel[sel] = alive[pi[sel]] & alive[pj[sel]]
        si, sj = pi[sel], pj[sel]
        hit = _pair_iou(ranked, poly, si, sj, thr) > thr
        hi_, hj = si[hit], sj[hit]
        bounds = np.searchsorted(hi_, np.arange(r0, r1 + 1))
        for r in range(r0, r1):
            if not alive[r]:
                continue
            keep.append(r)
            if len(keep) >= max_boxes:
                break
            lo_b, hi_b = bounds[r - r0], bounds[r - r0 + 1]
            if hi_b > lo_b:
                alive[hj[lo_b:hi_b]] = False
        r0 = r1
    return order[np.asarray(keep, np.int64)]
