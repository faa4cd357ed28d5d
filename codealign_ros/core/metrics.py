"""Rotated BEV IoU, rotated NMS and the HEAL / OpenCOOD average-precision evaluation (numpy only).

Boxes are (M, 7) arrays [x, y, z, l, w, h, yaw] (see `geometry`); all overlaps are in BEV (x/y).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from codealign_ros.core.geometry import box_corners

_EPS = 1e-12


def bev_polygons(boxes: np.ndarray) -> np.ndarray:
    """(M, 4, 2) counter-clockwise BEV footprints (bottom corners, x/y) of (M, 7) boxes."""
    return box_corners(boxes)[:, :4, :2]


def polygon_area(poly: np.ndarray) -> float:
    """Area of a simple polygon (N, 2) by the shoelace formula (positive for CCW)."""
    p = np.asarray(poly, np.float64).reshape(-1, 2)
    if len(p) < 3:
        return 0.0
    x, y = p[:, 0], p[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def convex_intersection_area(p: np.ndarray, q: np.ndarray) -> float:
    """Area of the intersection of two convex CCW polygons (Sutherland-Hodgman: clip p by q)."""
    out = np.asarray(p, np.float64).reshape(-1, 2)
    q = np.asarray(q, np.float64).reshape(-1, 2)
    for a, b in zip(q, np.roll(q, -1, axis=0)):
        if len(out) == 0:
            return 0.0
        edge = b - a
        # Signed distance (times |edge|) of each vertex to the clip line; >= 0 is inside (left).
        side = edge[0] * (out[:, 1] - a[1]) - edge[1] * (out[:, 0] - a[0])
        nxt, side_n = np.roll(out, -1, axis=0), np.roll(side, -1)
        pts: list[np.ndarray] = []
        for cur, nx, sc, sn in zip(out, nxt, side, side_n):
            if sc >= 0:
                pts.append(cur)
            if (sc >= 0) != (sn >= 0):  # edge crosses the clip line
                pts.append(cur + (nx - cur) * (sc / (sc - sn)))
        out = np.array(pts).reshape(-1, 2)
    return max(polygon_area(out), 0.0)


def bev_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(M, K) rotated BEV IoU of boxes `a` (M, 7) against `b` (K, 7).

    Pairs whose bounding circles or axis-aligned bounding boxes are disjoint are skipped
    (IoU 0) without any polygon clipping."""
    a = np.asarray(a, np.float64).reshape(-1, 7)
    b = np.asarray(b, np.float64).reshape(-1, 7)
    iou = np.zeros((len(a), len(b)))
    if len(a) == 0 or len(b) == 0:
        return iou
    pa, pb = bev_polygons(a), bev_polygons(b)
    ra, rb = 0.5 * np.hypot(a[:, 3], a[:, 4]), 0.5 * np.hypot(b[:, 3], b[:, 4])
    dist = np.linalg.norm(a[:, None, :2] - b[None, :, :2], axis=-1)
    lo_a, hi_a, lo_b, hi_b = pa.min(1), pa.max(1), pb.min(1), pb.max(1)
    aabb = np.all((lo_a[:, None] <= hi_b[None]) & (lo_b[None] <= hi_a[:, None]), axis=-1)
    cand = (dist <= (ra[:, None] + rb[None, :])) & aabb
    area_a, area_b = a[:, 3] * a[:, 4], b[:, 3] * b[:, 4]
    for i, j in zip(*np.nonzero(cand)):
        inter = convex_intersection_area(pa[i], pb[j])
        union = area_a[i] + area_b[j] - inter
        iou[i, j] = inter / union if union > _EPS else 0.0
    return iou


def rotated_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float,
                max_boxes: int = 150) -> np.ndarray:
    """Greedy rotated BEV NMS: indices (descending score) of kept boxes; a box is suppressed
    when its IoU with an already kept box exceeds `iou_threshold`."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    order = np.argsort(-np.asarray(scores, np.float64).reshape(-1), kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < max_boxes:
        i, order = int(order[0]), order[1:]
        keep.append(i)
        if order.size:
            order = order[bev_iou_matrix(boxes[i:i + 1], boxes[order])[0] <= iou_threshold]
    return np.array(keep, dtype=np.int64)


def voc_ap(rec: Sequence[float], prec: Sequence[float]) -> float:
    """VOC 2010 all-point AP, exactly as OpenCOOD's `voc_ap`."""
    mrec = np.concatenate([[0.0], np.asarray(rec, np.float64), [1.0]])
    mpre = np.concatenate([[0.0], np.asarray(prec, np.float64), [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # monotone non-increasing from the right
    idx = np.nonzero(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mpre[idx]))


class APAccumulator:
    """BEV average precision over frames at several IoU thresholds (HEAL / OpenCOOD protocol)."""

    def __init__(self, iou_thresholds: Sequence[float] = (0.3, 0.5, 0.7)) -> None:
        self.iou_thresholds = tuple(float(t) for t in iou_thresholds)
        self._scores: dict[float, list[float]] = {t: [] for t in self.iou_thresholds}
        self._tp: dict[float, list[int]] = {t: [] for t in self.iou_thresholds}
        self.num_gt = 0

    def add_frame(self, det_boxes: np.ndarray | None, det_scores: np.ndarray | None,
                  gt_boxes: np.ndarray) -> None:
        """Greedy per-frame matching: detections by descending score each take the remaining
        GT box of highest IoU; TP if IoU >= threshold (that GT is removed), else FP."""
        gt = np.asarray(gt_boxes, np.float64).reshape(-1, 7)
        self.num_gt += len(gt)
        if det_boxes is None or det_scores is None or len(det_scores) == 0:
            return
        det = np.asarray(det_boxes, np.float64).reshape(-1, 7)
        scores = np.asarray(det_scores, np.float64).reshape(-1)
        order = np.argsort(-scores, kind="stable")
        ious = bev_iou_matrix(det[order], gt)
        for t in self.iou_thresholds:
            free = np.ones(len(gt), bool)
            for row, k in enumerate(order):
                cand = np.where(free, ious[row], -1.0)
                j = int(np.argmax(cand)) if len(gt) else -1
                hit = j >= 0 and free[j] and cand[j] >= t
                if hit:
                    free[j] = False
                self._scores[t].append(float(scores[k]))
                self._tp[t].append(int(hit))

    def ap(self) -> dict[float, float]:
        """AP per threshold over all frames. No GT at all -> 0.0 (recall undefined);
        no detections -> 0.0."""
        out: dict[float, float] = {}
        for t in self.iou_thresholds:
            if self.num_gt == 0 or not self._scores[t]:
                out[t] = 0.0
                continue
            order = np.argsort(-np.asarray(self._scores[t]), kind="stable")
            tp = np.asarray(self._tp[t], np.float64)[order]
            ctp, cfp = np.cumsum(tp), np.cumsum(1.0 - tp)
            out[t] = voc_ap(ctp / self.num_gt, ctp / (ctp + cfp))
        return out
