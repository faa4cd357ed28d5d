"""Vectorised rotated NMS and numpy post-processing against the reference implementations."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from codealign_ros.core import detect
from codealign_ros.core.metrics import bev_iou_matrix, rotated_nms
from codealign_ros.core.nms import pairwise_bev_iou, rotated_nms_fast
from codealign_ros.models.anchors import BoxCoder
from codealign_ros.models.head import correct_direction
from codealign_ros.config.profiles import load_profile


def random_boxes(rng: np.random.Generator, n: int, spread: float) -> np.ndarray:
    return np.column_stack([rng.uniform(-spread, spread, (n, 2)), rng.uniform(-2, 0, n),
                            rng.uniform(0.2, 5, n), rng.uniform(0.2, 3, n), np.ones(n),
                            rng.uniform(-4, 4, n)])


def anchor_like(rng: np.random.Generator, n: int, objects: int = 0) -> np.ndarray:
    """Decoded low-score candidates as a flat head gives them: anchors of a 64 x 64 grid of
    0.8 m cells (yaw 0 / 90 deg) plus noise; optionally clustered around `objects` cars."""
    xs = np.arange(64) * 0.8 - 25.2
    gx, gy = np.meshgrid(xs, xs)
    centres = np.column_stack([gx.ravel(), gy.ravel()]).repeat(2, 0)
    yaw = np.tile([0.0, math.pi / 2], 64 * 64)
    idx = rng.choice(len(centres), n, replace=False)
    xy, yaws = centres[idx] + rng.normal(0, 0.3, (n, 2)), yaw[idx] + rng.normal(0, 0.2, n)
    if objects:
        cars = rng.uniform(-20, 20, (objects, 2))
        which = rng.integers(0, objects, n)
        xy = cars[which] + rng.normal(0, 1.0, (n, 2))
    return np.column_stack([xy, -np.ones(n), 3.9 * np.exp(rng.normal(0, 0.1, n)),
                            1.6 * np.ones(n), 1.56 * np.ones(n), yaws])


@pytest.mark.parametrize("seed", range(6))
def test_fast_nms_equals_reference_on_random_boxes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for trial in range(25):
        n = int(rng.integers(0, 90))
        boxes = random_boxes(rng, n, float(rng.choice([2.0, 10.0, 40.0])))
        scores = rng.uniform(0, 1, n) if trial % 2 else np.round(rng.uniform(0, 1, n), 1)
        thr = float(rng.choice([0.0, 0.05, 0.15, 0.5, 0.99]))
        max_boxes = int(rng.choice([1, 5, 150]))
        np.testing.assert_array_equal(rotated_nms_fast(boxes, scores, thr, max_boxes),
                                      rotated_nms(boxes, scores, thr, max_boxes))


@pytest.mark.parametrize("objects", [0, 12])
def test_fast_nms_equals_reference_on_dense_candidates(objects: int) -> None:
    rng = np.random.default_rng(objects)
    boxes = anchor_like(rng, 600, objects)
    scores = rng.uniform(0.05, 0.1, len(boxes)).astype(np.float32).astype(np.float64)
    for thr in (0.05, 0.15):
        keep = rotated_nms_fast(boxes, scores, thr)
        np.testing.assert_array_equal(keep, rotated_nms(boxes, scores, thr))
        assert 0 < len(keep) <= 150


def test_fast_nms_ties_duplicates_and_degenerate_boxes() -> None:
    rng = np.random.default_rng(7)
    boxes = random_boxes(rng, 60, 6.0)
    boxes[10:30] = boxes[0]  # exact duplicates (IoU 1)
    boxes[30:40, 4] = 0.0  # zero width: no area
    boxes[40:45, 3:5] = 0.0  # points
    boxes[45] = boxes[46] + [0.5, 0, 0, 0, 0, 0, 0]
    boxes[50, 0] = np.nan  # never overlaps anything
    scores = np.full(len(boxes), 0.5)  # all tied: input order decides
    scores[::3] = 0.7
    for thr in (0.0, 0.15, 0.5, 1.0, -0.1):
        np.testing.assert_array_equal(rotated_nms_fast(boxes, scores, thr),
                                      rotated_nms(boxes, scores, thr))
    assert rotated_nms_fast(np.zeros((0, 7)), np.zeros(0), 0.5).tolist() == []
    assert rotated_nms_fast(boxes, scores, 0.5, max_boxes=0).tolist() == []


def test_threshold_exactly_on_an_iou_uses_reference_arithmetic() -> None:
    pair = np.array([[0, 0, 0, 2, 1, 1, 0], [1, 0, 0, 2, 1, 1, 0]], np.float64)  # IoU 1/3
    iou = float(bev_iou_matrix(pair[:1], pair[1:])[0, 0])
    for thr in (iou, np.nextafter(iou, 0), np.nextafter(iou, 1)):
        np.testing.assert_array_equal(rotated_nms_fast(pair, np.array([0.9, 0.8]), thr),
                                      rotated_nms(pair, np.array([0.9, 0.8]), thr))


def test_pairwise_iou_matches_matrix() -> None:
    boxes = anchor_like(np.random.default_rng(3), 200, 5)
    i, j, iou = pairwise_bev_iou(boxes)
    ref = bev_iou_matrix(boxes, boxes)
    np.testing.assert_allclose(iou, ref[i, j], atol=1e-12)
    missing = np.triu(ref, 1) > 0
    missing[i, j] = False
    assert not missing.any()  # every overlapping pair is listed


def _reference_post(cls: torch.Tensor, reg: torch.Tensor, dirs: torch.Tensor,
                    anchors: torch.Tensor, post: dict) -> tuple[np.ndarray, np.ndarray]:
    """Decode every anchor (torch coder), threshold, rank, reference NMS (the old path)."""
    a = anchors.shape[-2]
    logits = cls.permute(0, 2, 3, 1).reshape(-1)
    deltas = reg.permute(0, 2, 3, 1).reshape(-1, 7)
    d = dirs.permute(0, 2, 3, 1).reshape(-1, dirs.shape[1] // a)
    boxes = BoxCoder().decode(deltas, anchors.reshape(-1, 7))
    boxes[:, 6] = correct_direction(boxes[:, 6], d.argmax(-1))
    s = torch.sigmoid(logits)
    keep = (s > post["score"]) & torch.isfinite(boxes).all(-1)
    s, boxes = s[keep].numpy(), boxes[keep].numpy()
    top = np.argsort(-s, kind="stable")[:post["pre_nms_top_k"]]
    s, boxes = s[top], boxes[top]
    idx = rotated_nms(boxes.astype(np.float64), s.astype(np.float64), post["nms_iou"],
                      post["max_boxes"])
    return boxes[idx], s[idx]


@pytest.mark.parametrize("top_k", [50, 400])
def test_numpy_postprocess_matches_full_decode(top_k: int) -> None:
    profile = load_profile("mini")
    anchors = torch.from_numpy(detect.make_anchors(profile.grid, profile["anchors"]))
    h, w, a = anchors.shape[:3]
    gen = torch.Generator().manual_seed(top_k)
    cls = torch.randn(1, a, h, w, generator=gen) * 0.5 - 2.5  # flat, low scores
    reg = torch.randn(1, 7 * a, h, w, generator=gen) * 0.2
    reg[0, 3, 5, 5] = 200.0  # exp overflow: an infinite box, dropped
    cls[0, 0, 5, 5] = 9.0
    dirs = torch.randn(1, 2 * a, h, w, generator=gen)
    post = {"score": 0.05, "nms_iou": 0.15, "max_boxes": 150, "pre_nms_top_k": top_k}
    ref_boxes, ref_scores = _reference_post(cls, reg, dirs, anchors, post)
    (boxes, scores), = detect.postprocess(cls.numpy(), reg.numpy(), dirs.numpy(),
                                          anchors.numpy(), detect.PostConfig.from_profile(post))
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-6)
    np.testing.assert_allclose(boxes, ref_boxes, rtol=1e-5, atol=1e-5)
    assert np.isfinite(boxes).all() and len(boxes) > 0


def test_anchors_numpy_equal_torch_layout() -> None:
    profile = load_profile("mini")
    anchors = detect.make_anchors(profile.grid, profile["anchors"])
    g = profile.grid
    assert anchors.shape == (g.height, g.width, 2, 7) and anchors.dtype == np.float32
    assert anchors[0, 0, 1].tolist() == pytest.approx(
        [g.x_min + g.resolution / 2, g.y_min + g.resolution / 2, -1.0, 3.9, 1.6, 1.56,
         1.5707963])
    assert anchors[3, 7, 0, 0] == pytest.approx(g.x_min + 7.5 * g.resolution)


def test_collinear_edges_fall_back_to_the_reference() -> None:
    """Axis-aligned boxes on a lattice share edge lines exactly (the ill-conditioned case of
    the Green's-theorem overlap): IoUs and kept sets still equal the reference's."""
    rng = np.random.default_rng(11)
    n = 120
    xy = rng.integers(0, 12, (n, 2)) * 0.5
    boxes = np.column_stack([xy, np.zeros(n), rng.integers(1, 5, n) * 0.5,
                             rng.integers(1, 4, n) * 0.5, np.ones(n),
                             rng.choice([0.0, math.pi / 2, math.pi], n)])
    i, j, iou = pairwise_bev_iou(boxes)
    np.testing.assert_allclose(iou, bev_iou_matrix(boxes, boxes)[i, j], atol=1e-12)
    scores = rng.uniform(0, 1, n)
    for thr in (0.0, 0.1, 1 / 3, 0.5):
        np.testing.assert_array_equal(rotated_nms_fast(boxes, scores, thr),
                                      rotated_nms(boxes, scores, thr))
