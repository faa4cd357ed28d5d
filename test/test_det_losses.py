"""Tests of anchors, the box coder, target assignment and the detection losses."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from codealign_ros.models.anchors import (BoxCoder, assign_targets, build_targets,
                                          direction_targets, make_anchors, occupancy_targets,
                                          standup_iou)
from codealign_ros.models.det_losses import (add_sin_difference, detection_loss, direction_loss,
                                             focal_loss, occupancy_loss, regression_loss,
                                             sigmoid_focal, smooth_l1)
from codealign_ros.models.head import correct_direction
from codealign_ros.config.profiles import load_profile

PROFILE = load_profile("mini")
GRID = PROFILE.grid
SPEC = PROFILE["anchors"]
ANCHORS = make_anchors(GRID, SPEC)



def test_anchor_layout() -> None:
    h, w = GRID.height, GRID.width
    assert ANCHORS.shape == (h, w, 2, 7)
    r, c = 5, 9
    a = ANCHORS[r, c]
    assert a[0, 0] == pytest.approx(GRID.x_min + (c + 0.5) * GRID.resolution)
    assert a[0, 1] == pytest.approx(GRID.y_min + (r + 0.5) * GRID.resolution)
    assert a[:, 2].tolist() == pytest.approx([SPEC["z"]] * 2)
    assert a[:, 3:6].flatten().tolist() == pytest.approx(list(SPEC["sizes"][0]) * 2)
    assert a[:, 6].tolist() == pytest.approx(SPEC["yaws"])
    with pytest.raises(ValueError):
        make_anchors(GRID, {"sizes": [[3.9, 1.6]], "yaws": [0.0], "z": -1.0})


boxes_st = st.tuples(st.floats(-30, 30), st.floats(-30, 30), st.floats(-3, 1),
                     st.floats(0.3, 12), st.floats(0.3, 5), st.floats(0.5, 4),
                     st.floats(-math.pi, math.pi))


@settings(max_examples=40, deadline=None)
@given(box=boxes_st, anchor=boxes_st)
def test_coder_roundtrip(box: tuple[float, ...], anchor: tuple[float, ...]) -> None:
    coder = BoxCoder()
    b = torch.tensor([box], dtype=torch.float64)
    a = torch.tensor([anchor], dtype=torch.float64)
    delta = coder.encode(b, a)
    torch.testing.assert_close(coder.decode(delta, a), b, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(coder.encode(coder.decode(delta, a), a), delta)


def test_coder_formulas() -> None:
    a = torch.tensor([[1.0, 2.0, -1.0, 3.0, 4.0, 2.0, 0.5]])
    b = torch.tensor([[6.0, -3.0, 0.0, 6.0, 2.0, 1.0, 1.0]])
    d = BoxCoder().encode(b, a)[0]
    assert d.tolist() == pytest.approx([1.0, -1.0, 0.5, math.log(2), math.log(0.5),
                                        math.log(0.5), 0.5])


def test_standup_iou_rotated_90() -> None:
    a = torch.tensor([[0.0, 0.0, 0.0, 4.0, 2.0, 1.0, 0.0]])
    b = torch.tensor([[0.0, 0.0, 0.0, 4.0, 2.0, 1.0, math.pi / 2]])
    assert standup_iou(a, b)[0, 0] == pytest.approx(4.0 / 12.0)
    assert standup_iou(a, a)[0, 0] == pytest.approx(1.0)


def test_gt_on_anchor_is_positive_with_zero_target() -> None:
    r, c, k = 20, 33, 1
    gt = ANCHORS[r, c, k][None].clone()
    gt[0, 6] = 1.5707963 + math.pi  # same footprint, opposite heading
    labels, reg, dirs = assign_targets(ANCHORS, gt, SPEC["pos_iou"], SPEC["neg_iou"], grid=GRID)
    idx = (r * GRID.width + c) * 2 + k
    assert labels[idx] == 1
    torch.testing.assert_close(reg[idx, :6], torch.zeros(6), atol=1e-6, rtol=0)
    assert reg[idx, 6] == pytest.approx(math.pi, abs=1e-5)
    assert dirs[idx] == direction_targets(gt[:, 6])[0] == 1
    grid_labels = labels.reshape(GRID.height, GRID.width, 2)
    assert (grid_labels[:10] == 0).all() and (grid_labels[:, 45:] == 0).all()  # far: negative
    assert grid_labels[r + 1, c, k] == grid_labels[r - 1, c, k] == 1  # IoU 3.1 / 4.7 > 0.6
    assert (labels[reg.abs().sum(1) > 0] == 1).all()
    # Half a cell along the length: IoU 0.81 (2 anchors), 0.53 (ignored), <= 0.4 (negative).
    gt[0, 1] += 0.4
    labels, _, _ = assign_targets(ANCHORS, gt, SPEC["pos_iou"], SPEC["neg_iou"], grid=GRID)
    grid_labels = labels.reshape(GRID.height, GRID.width, 2)
    assert grid_labels[r - 1:r + 3, c, k].tolist() == [-1, 1, 1, -1]
    assert int((labels == 1).sum()) == 2 and int((labels == -1).sum()) == 2


def test_small_gt_claims_best_anchor_and_outside_gt_dropped() -> None:
    tiny = torch.tensor([[0.4, 0.4, -1.0, 0.5, 0.5, 1.5, 0.0]])  # IoU far below pos_iou
    labels, _, _ = assign_targets(ANCHORS, tiny, 0.6, 0.45, grid=GRID)
    assert int((labels == 1).sum()) == 1
    outside = np.array([[30.0, 0.0, -1.0, 3.9, 1.6, 1.56, 0.0]])
    labels, reg, _ = assign_targets(ANCHORS, outside, 0.6, 0.45, grid=GRID)
    assert (labels == 0).all() and (reg == 0).all()
    labels, _, _ = assign_targets(ANCHORS, np.zeros((0, 7)), 0.6, 0.45, grid=GRID)
    assert (labels == 0).all()
    with pytest.raises(ValueError):
        assign_targets(ANCHORS, np.zeros((2, 6)), 0.6, 0.45)
    with pytest.raises(ValueError):
        assign_targets(ANCHORS, np.array([[0, 0, 0, -1.0, 1, 1, 0]]), 0.6, 0.45)


def test_occupancy_targets_downsample() -> None:
    t = build_targets(ANCHORS, [ANCHORS[21, 34, 0][None]], 0.6, 0.45, (1, 2, 4), grid=GRID)
    occ = t["occupancy"]
    assert [tuple(o.shape) for o in occ] == [(1, 1, 64, 64), (1, 1, 32, 32), (1, 1, 16, 16)]
    assert occ[0][0, 0, 21, 34] == 1 and occ[1][0, 0, 10, 17] == 1 and occ[2][0, 0, 5, 8] == 1
    assert occ[2].sum() <= occ[1].sum() <= occ[0].sum()
    assert torch.equal(occupancy_targets(t["labels"], (64, 64, 2), (1,))[0], occ[0])


def test_focal_matches_hand_computation() -> None:
    x = torch.tensor([2.0, -1.0, 0.5, -3.0])
    t = torch.tensor([1.0, 0.0, 1.0, 0.0])
    expect = []
    for xi, ti in zip(x.tolist(), t.tolist()):
        p = 1 / (1 + math.exp(-xi))
        expect.append(-0.25 * (1 - p) ** 2 * math.log(p) if ti else
                      -0.75 * p ** 2 * math.log(1 - p))
    assert sigmoid_focal(x, t).tolist() == pytest.approx(expect, rel=1e-5)
    labels = torch.tensor([[1, 0, 1, -1]])  # the ignored anchor contributes nothing
    assert focal_loss(x[None], labels).item() == pytest.approx(sum(expect[:3]) / 2, rel=1e-5)


def test_smooth_l1_sigma3() -> None:
    d = torch.tensor([0.05, -0.05, 1.0])
    assert smooth_l1(d).tolist() == pytest.approx([0.5 * 0.0025 * 9, 0.5 * 0.0025 * 9,
                                                   1 - 0.5 / 9])


def test_sin_difference_ignores_pi_but_direction_does_not() -> None:
    yaw = torch.tensor([0.3, -2.0, 1.4])
    target = torch.zeros(1, 3, 7)
    target[0, :, 6] = yaw
    pred = target.clone()
    pred[0, :, 6] = yaw + math.pi
    labels = torch.ones(1, 3, dtype=torch.long)
    p, t = add_sin_difference(pred, target)
    torch.testing.assert_close(p, t, atol=1e-6, rtol=0)
    assert regression_loss(pred, target, labels).item() == pytest.approx(0.0, abs=1e-6)
    pred[0, :, 0] += 1.0
    assert regression_loss(pred, target, labels).item() > 0.5
    bins = direction_targets(yaw)
    flipped = direction_targets(yaw + math.pi)
    assert torch.all(bins != flipped)
    logits = torch.nn.functional.one_hot(bins, 2).float()[None] * 10
    assert direction_loss(logits, bins[None], labels).item() < 1e-3
    assert direction_loss(logits, flipped[None], labels).item() > 5.0
    # The bin restores the heading that the sin-difference regression leaves ambiguous.
    restored = correct_direction(yaw + math.pi, bins)
    torch.testing.assert_close(restored, yaw, atol=1e-5, rtol=0)


def test_occupancy_loss_masks_unseen_cells() -> None:
    logit = torch.zeros(1, 1, 8, 8, requires_grad=True)
    target = torch.zeros(1, 1, 8, 8)
    shift = torch.tensor([[[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]])  # 2 columns out of view
    loss = occupancy_loss([logit], [target], shift, torch.zeros(1, dtype=torch.long), [1.0])
    per_cell = sigmoid_focal(torch.zeros(()), torch.zeros(())).item()
    assert loss.item() == pytest.approx(per_cell * 8 * 6, rel=1e-5)
    loss.backward()
    assert (logit.grad[0, 0, :, :2] == 0).all() and (logit.grad[0, 0, :, 2:] != 0).all()


def test_detection_loss_prefers_correct_predictions() -> None:
    h, w = GRID.height, GRID.width
    gt = [np.array([[4.0, -2.0, -1.0, 4.0, 1.7, 1.5, 0.4]])]
    t = build_targets(ANCHORS, gt, 0.6, 0.45, (1, 2, 4), grid=GRID)
    good = {"cls": torch.where(t["labels"] == 1, 6.0, -6.0).reshape(1, h, w, 2).permute(0, 3, 1, 2),
            "reg": t["reg"].reshape(1, h, w, 14).permute(0, 3, 1, 2),
            "dir": (torch.nn.functional.one_hot(t["dir"], 2).float() * 6).reshape(1, h, w, 4)
            .permute(0, 3, 1, 2)}
    bad = {"cls": torch.zeros(1, 2, h, w), "reg": torch.zeros(1, 14, h, w),
           "dir": torch.zeros(1, 4, h, w)}
    g_total, g_parts = detection_loss(good, t)
    b_total, b_parts = detection_loss(bad, t)
    assert set(g_parts) == {"cls", "reg", "dir"}  # no occupancy outputs -> no occupancy term
    assert g_parts["reg"].item() == pytest.approx(0.0, abs=1e-6)
    assert all(g_parts[k] < b_parts[k] for k in g_parts) and g_total < b_total
    with pytest.raises(ValueError):
        detection_loss({**bad, "cls": torch.zeros(1, 2, h // 2, w)}, t)
