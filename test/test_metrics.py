"""Tests for codealign_ros.core.metrics (hand-computed expectations)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from codealign_ros.core.metrics import (APAccumulator, bev_iou_matrix, bev_polygons,
                                        convex_intersection_area, polygon_area, rotated_nms)


def box(x: float = 0.0, y: float = 0.0, l: float = 1.0, w: float = 1.0,
        yaw: float = 0.0) -> np.ndarray:
    return np.array([x, y, 0.0, l, w, 1.5, yaw])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(bev_iou_matrix(a[None], b[None])[0, 0])


def test_polygons_and_area() -> None:
    p = bev_polygons(box(l=4, w=2)[None])
    assert p.shape == (1, 4, 2)
    assert polygon_area(p[0]) == pytest.approx(8.0)  # CCW -> positive
    q = bev_polygons(box(x=1, l=4, w=2)[None])[0]
    assert convex_intersection_area(p[0], q) == pytest.approx(3 * 2)


def test_iou_identical_and_shift() -> None:
    assert iou(box(yaw=0.3), box(yaw=0.3)) == pytest.approx(1.0)
    # overlap 0.5 x 1 = 0.5, union 2 - 0.5 = 1.5 -> 1/3
    assert iou(box(), box(x=0.5)) == pytest.approx(1 / 3)


def test_iou_45_degrees() -> None:
    # unit square vs its 45-degree rotation: regular-octagon intersection, area 2(sqrt2 - 1)
    inter = 2 * (math.sqrt(2) - 1)
    assert iou(box(), box(yaw=math.pi / 4)) == pytest.approx(inter / (2 - inter))


def test_iou_disjoint_symmetric_swap() -> None:
    assert iou(box(), box(x=3)) == 0.0
    a = np.array([box(l=4, w=2, yaw=0.2), box(x=1, y=0.5, l=3, w=1.5, yaw=1.0)])
    b = np.array([box(x=0.7, l=2, w=2, yaw=-0.4), box(x=20), box(y=1, l=5, w=1, yaw=2.0)])
    m = bev_iou_matrix(a, b)
    assert m.shape == (2, 3)
    np.testing.assert_allclose(m, bev_iou_matrix(b, a).T, atol=1e-12)
    assert m[:, 1].tolist() == [0.0, 0.0]
    # l/w swapped + 90-degree yaw is the same footprint
    assert iou(box(l=4, w=2), box(l=2, w=4, yaw=math.pi / 2)) == pytest.approx(1.0)
    assert bev_iou_matrix(np.zeros((0, 7)), b).shape == (0, 3)


def _inside(poly: np.ndarray, pts: np.ndarray) -> np.ndarray:
    e = np.roll(poly, -1, axis=0) - poly  # (4, 2) CCW edges
    d = pts[:, None, :] - poly[None]
    return np.all(e[None, :, 0] * d[..., 1] - e[None, :, 1] * d[..., 0] >= 0, axis=1)


def test_iou_monte_carlo() -> None:
    rng = np.random.default_rng(0)
    n = 200_000
    for _ in range(8):
        a = np.array([*rng.uniform(-1, 1, 2), 0, *rng.uniform(0.5, 4, 3), rng.uniform(-3, 3)])
        b = np.array([*rng.uniform(-1, 1, 2), 0, *rng.uniform(0.5, 4, 3), rng.uniform(-3, 3)])
        pa, pb = bev_polygons(np.array([a, b]))
        lo, hi = np.minimum(pa.min(0), pb.min(0)), np.maximum(pa.max(0), pb.max(0))
        pts = rng.uniform(lo, hi, (n, 2))
        ia, ib = _inside(pa, pts), _inside(pb, pts)
        est = (ia & ib).sum() / max((ia | ib).sum(), 1)
        assert iou(a, b) == pytest.approx(est, abs=0.01)


def test_nms() -> None:
    boxes = np.array([box(l=4, w=2), box(x=0.1, l=4, w=2), box(x=10, l=4, w=2)])
    keep = rotated_nms(boxes, np.array([0.5, 0.9, 0.7]), 0.5)
    assert keep.tolist() == [1, 2]  # the 0.9 box beats its near-duplicate
    # unit squares shifted by 0.5 -> IoU 1/3: suppressed at 0.3, kept at 0.4
    pair = np.array([box(), box(x=0.5)])
    assert rotated_nms(pair, np.array([0.8, 0.9]), 0.3).tolist() == [1]
    assert rotated_nms(pair, np.array([0.8, 0.9]), 0.4).tolist() == [1, 0]
    many = np.array([box(x=3 * i) for i in range(10)])
    assert len(rotated_nms(many, np.arange(10.0), 0.5, max_boxes=4)) == 4
    assert rotated_nms(np.zeros((0, 7)), np.zeros(0), 0.5).tolist() == []


def test_ap_perfect() -> None:
    acc = APAccumulator()
    gt = np.array([box(l=4, w=2), box(x=10, l=4, w=2)])
    acc.add_frame(gt, np.array([0.9, 0.8]), gt)
    acc.add_frame(gt[:1], np.array([0.7]), gt[:1])
    assert acc.num_gt == 3
    assert acc.ap() == {0.3: pytest.approx(1.0), 0.5: pytest.approx(1.0), 0.7: pytest.approx(1.0)}


def test_ap_hand_computed() -> None:
    # Frame 1: GT A (0,0), B (10,0); d1 0.9 on A (TP), d2 0.6 also on A -> A already taken,
    #   remaining B has IoU 0 -> FP.  Frame 2: GT C (0,0); d3 0.8 far away (FP), d4 0.7 on C (TP).
    # Global order 0.9 TP, 0.8 FP, 0.7 TP, 0.6 FP; 3 GT.
    # rec = 1/3, 1/3, 2/3, 2/3; prec = 1, 1/2, 2/3, 1/2
    # mrec = 0, 1/3, 1/3, 2/3, 2/3, 1; mpre = 0, 1, .5, 2/3, .5, 0 -> monotone 1, 1, 2/3, 2/3, .5, 0
    # AP = 1/3 * 1 + 1/3 * 2/3 + 1/3 * 0 = 5/9
    acc = APAccumulator(iou_thresholds=(0.5,))
    a, b = box(l=4, w=2), box(x=10, l=4, w=2)
    acc.add_frame(np.array([a, a]), np.array([0.6, 0.9]), np.array([a, b]))
    acc.add_frame(np.array([box(x=50), a]), np.array([0.8, 0.7]), np.array([a]))
    assert acc.ap()[0.5] == pytest.approx(5 / 9)


def test_ap_threshold_dependence() -> None:
    # 4x2 boxes shifted by 1 in x: IoU = 3*2 / (8 + 8 - 6) = 0.6 -> TP at 0.5, FP at 0.7
    acc = APAccumulator(iou_thresholds=(0.5, 0.7))
    acc.add_frame(np.array([box(x=1, l=4, w=2)]), np.array([0.9]), np.array([box(l=4, w=2)]))
    ap = acc.ap()
    assert ap[0.5] == pytest.approx(1.0)  # rec 1, prec 1
    assert ap[0.7] == 0.0  # rec 0 -> no area


def test_ap_empty() -> None:
    acc = APAccumulator()
    acc.add_frame(np.array([box()]), np.array([0.9]), np.zeros((0, 7)))  # no GT at all
    assert set(acc.ap().values()) == {0.0}
    acc = APAccumulator()
    acc.add_frame(np.zeros((0, 7)), np.zeros(0), np.array([box()]))  # no detections
    acc.add_frame(None, None, np.array([box()]))
    assert acc.num_gt == 2 and set(acc.ap().values()) == {0.0}
