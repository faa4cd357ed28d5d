"""Vectorised rotated BEV NMS (numpy): the kept set of `metrics.rotated_nms`, at engine speed.

All candidate pairs (higher-ranked box i, lower-ranked box j) whose bounding circles and
axis-aligned bounds overlap get their overlap area at once from Green's theorem: the parts of
each box's edges inside the other (Cyrus-Beck clipping, fixed (P, 4, 4) arrays, no vertex
lists); the greedy pass computes lazily: only pairs whose boxes are both still alive. Pairs with
an edge within `COLLINEAR` of the other box's edge line (ill-conditioned or degenerate) and pairs
whose IoU lies within `BORDER` of the threshold are recomputed with the reference code, so the
kept set is the reference's exactly.
"""
from __future__ import annotations

import numpy as np

from codealign_ros.core.metrics import bev_iou_matrix, bev_polygons

__all__ = ["BORDER", "COLLINEAR", "pairwise_bev_iou", "rotated_nms_fast"]

BORDER = 1e-7  # |IoU - threshold| below this: recomputed by the reference implementation
COLLINEAR = 1e-6  # metres: an edge this close to the other box's edge line is recomputed
_EPS = 1e-12


def _inside_segments(px: np.ndarray, py: np.ndarray, qx: np.ndarray, qy: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Green's-theorem share of p's edges inside q: sum over the 4 edges of each quad p (x and
    y, (4, P) each: pairs last, so every operation runs over contiguous rows) of cross(A, B) / 2
    for the part [A, B] of the edge inside the convex CCW quad q (Cyrus-Beck against q's 4
    half-planes), and a flag (P,) where an edge of p lies within COLLINEAR metres of a line of q
    at both ends (ill-conditioned: recomputed)."""
    dx, dy = np.roll(px, -1, 0) - px, np.roll(py, -1, 0) - py
    ex, ey = np.roll(qx, -1, 0) - qx, np.roll(qy, -1, 0) - qy
    # (4 edges of p, 4 half-planes of q, P): side at the start of the edge and its change
    sa = ex[None] * (py[:, None] - qy[None]) - ey[None] * (px[:, None] - qx[None])
    sd = ex[None] * dy[:, None] - ey[None] * dx[:, None]
    sb = sa + sd
    tol = COLLINEAR * np.sqrt(ex * ex + ey * ey)[None]
    flat = ((np.abs(sa) < tol) & (np.abs(sb) < tol)).any((0, 1))
    out_a, out_b = sa < 0, sb < 0
    sd[sd == 0] = 1.0
    t = -sa / sd  # where the side changes sign along the edge (used only where it does)
    t_lo = np.maximum((t * (out_a & ~out_b)).max(1), 0.0)  # entering: t > 0 there
    leave = out_b & ~out_a
    t_hi = np.where(leave, t, 1.0).min(1)
    t_hi[(out_a & out_b).any(1)] = 0.0  # both ends outside one half-plane: nothing inside
    ax, ay = px + dx * t_lo, py + dy * t_lo
    bx, by = px + dx * t_hi, py + dy * t_hi
    return 0.5 * ((ax * by - ay * bx) * (t_hi > t_lo)).sum(0), flat


def _intersection(p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Areas (P,) of the intersections of convex CCW quads p and q (P, 4, 2), and the pairs
    (P,) bool that must be recomputed (an edge of one nearly on a line of the other)."""
    centre = p.mean(1, keepdims=True)  # local coordinates: cross products stay well scaled
    p, q = (p - centre).transpose(2, 1, 0).copy(), (q - centre).transpose(2, 1, 0).copy()
    from_p, flat_p = _inside_segments(p[0], p[1], q[0], q[1])
    from_q, flat_q = _inside_segments(q[0], q[1], p[0], p[1])
    return np.maximum(from_p + from_q, 0.0), flat_p | flat_q


def _bounds(poly: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounds (M, 2) low and high of quads (M, 4, 2) (pairwise over the corners:
    a reduction over an axis of 4 costs numpy several times more)."""
    c = [poly[:, k] for k in range(4)]
    return (np.minimum(np.minimum(c[0], c[1]), np.minimum(c[2], c[3])),
            np.maximum(np.maximum(c[0], c[1]), np.maximum(c[2], c[3])))


def _ranges(start: np.ndarray, stop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner, position) of every position in the half-open ranges [start[k], stop[k])."""
    n = np.maximum(stop - start, 0)
    owner = np.repeat(np.arange(len(n)), n)
    return owner, np.repeat(start, n) + np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)


def _candidates(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Polygons (M, 4, 2) and the index pairs i < j that the reference would clip (bounding
    circles and axis-aligned bounds overlap), found by an x sweep inside horizontal strips as
    tall as the tallest box (a box can only meet boxes of its own and the neighbouring strips)
    instead of an M x M matrix."""
    poly = bev_polygons(boxes)
    radius = 0.5 * np.hypot(boxes[:, 3], boxes[:, 4])
    lo, hi = _bounds(poly)
    finite = np.flatnonzero(np.isfinite(lo).all(1) & np.isfinite(hi).all(1)
                            & np.isfinite(boxes[:, :2]).all(1) & np.isfinite(radius))
    if finite.size < 2:
        return poly, np.zeros(0, np.int64), np.zeros(0, np.int64)
    flo, fhi = lo[finite], hi[finite]
    ext = fhi - flo
    tall = max(float(ext[:, 1].max()), 1e-6) * (1 + 1e-9)  # strip height, > every box height
    wide = float(ext[:, 0].max())
    strip = np.floor((flo[:, 1] - flo[:, 1].min()) / tall)
    x0 = flo[:, 0] - flo[:, 0].min()
    span = float(fhi[:, 0].max() - flo[:, 0].min()) + 2 * wide + 1.0  # strips never mix in key
    key = strip * span + x0
    order = np.argsort(key, kind="stable")
    idx = finite[order]  # sorted position -> box index; every test below on sorted arrays
    key_s, strip_s, x0_s = key[order], strip[order], x0[order]
    hx_s = x0_s + ext[order, 0]
    lx, ly, hx, hy = lo[idx, 0], lo[idx, 1], hi[idx, 0], hi[idx, 1]
    cx, cy, rad = boxes[idx, 0], boxes[idx, 1], radius[idx]
    here = np.arange(len(order))
    up = (strip_s + 1) * span
    same = _ranges(here + 1, np.searchsorted(key_s, strip_s * span + hx_s, side="right"))
    above = _ranges(np.searchsorted(key_s, up + x0_s - wide, side="left"),
                    np.searchsorted(key_s, up + hx_s, side="right"))
    a, b = np.concatenate([same[0], above[0]]), np.concatenate([same[1], above[1]])
    ok = (ly[a] <= hy[b]) & (ly[b] <= hy[a]) & (lx[a] <= hx[b]) & (lx[b] <= hx[a])
    a, b = a[ok], b[ok]
    dx, dy = cx[a] - cx[b], cy[a] - cy[b]
    near = np.sqrt(dx * dx + dy * dy) <= rad[a] + rad[b]
    a, b = idx[a[near]], idx[b[near]]
    return poly, np.minimum(a, b), np.maximum(a, b)


def _pair_iou(boxes: np.ndarray, poly: np.ndarray, i: np.ndarray, j: np.ndarray,
              threshold: float | None) -> np.ndarray:
    """IoU of box i against box j per pair, as `metrics.bev_iou_matrix` computes it (pairs
    near `threshold` or with nearly collinear edges recomputed by that function)."""
    if len(i) == 0:
        return np.zeros(0)
    inter, redo = _intersection(poly[i], poly[j])
    area = boxes[:, 3] * boxes[:, 4]
    union = area[i] + area[j] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > _EPS, inter / union, 0.0)
    redo |= ~np.isfinite(iou)
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
    lo, hi = _bounds(poly)
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
        c0, c1 = np.searchsorted(pi, (r0, r1))  # pairs sorted by first box
        si, sj = pi[c0:c1], pj[c0:c1]
        both = alive[si] & alive[sj]
        si, sj = si[both], sj[both]
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
