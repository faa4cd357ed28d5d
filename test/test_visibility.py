"""Visibility statistics (`codealign dataset-stats`): hand-built scenes of known visibility,
the point-in-box count against brute force, and the command on generated OPV2V / DAIR data."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from codealign_ros.cli import main
from codealign_ros.core.geometry import transform_points, yaw_matrix
from codealign_ros.data.synth import SynthConfig, generate
from codealign_ros.data.types import AgentFrame, CooperativeFrame
from codealign_ros.data.visibility import (frame_visibility, points_in_boxes, range_of_profile,
                                           visibility_stats)
from codealign_ros.cli import build_parser

MINI = range_of_profile("mini")


def _in_box(box: np.ndarray, local: list[tuple[float, float, float]]) -> np.ndarray:
    """World points at box-frame offsets (fractions of the half sizes) of a world box."""
    x, y, z, length, width, height, yaw = box
    frac = np.asarray(local, np.float64) * [length / 2, width / 2, height / 2]
    return transform_points(yaw_matrix(x, y, z, yaw), frac)


def _agent(name: str, pose: np.ndarray, world_points: list[np.ndarray]) -> AgentFrame:
    pts = np.concatenate(world_points) if world_points else np.zeros((0, 3))
    local = transform_points(np.linalg.inv(pose), pts)
    return AgentFrame(name, np.column_stack([local, np.full(len(local), 0.5)]).astype(np.float32),
                      pose)


def _hand_built() -> CooperativeFrame:
    """Ego at (100, 50) heading 90 deg; boxes (world):
    0 ego's own box (many ego points, excluded), 1 seen by the ego (7 points),
    2 ego 2 + peer 3 points (union only), 3 ego 4 points only (seen by none),
    4 out of the mini range (ego x 30 m ahead) with 50 points, 5 ground returns and
    points beyond the margin only (seen by none); a far agent (beyond comm range) sees box 3."""
    ego_pose = yaw_matrix(100.0, 50.0, 1.9, np.pi / 2)
    peer_pose = yaw_matrix(120.0, 60.0, 1.9, 0.3)
    far_pose = yaw_matrix(300.0, 50.0, 1.9, 0.0)

    def world_box(dx: float, dy: float, yaw: float) -> np.ndarray:  # dx ahead, dy left of ego
        return np.array([100.0 - dy, 50.0 + dx, 0.8, 4.5, 1.9, 1.6, yaw])

    boxes = np.stack([world_box(0, 0, np.pi / 2), world_box(10, 3, 0.4), world_box(-12, -8, 2.0),
                      world_box(20, 15, -1.0), world_box(30, 0, 0.0), world_box(5, -20, 1.2)])
    inner = [(0.1 * i, -0.2, 0.3) for i in range(-5, 5)]
    ground = [(0.5, 0.5, -0.99), (-0.5, 0.2, -0.9)]  # 0.008 / 0.08 m above the bottom
    outside = [(1.2, 0.0, 0.0), (0.0, 1.3, 0.0), (0.0, 0.0, 1.3)]  # > 0.1 m beyond the faces
    ego_pts = [_in_box(boxes[0], inner), _in_box(boxes[1], inner[:7]), _in_box(boxes[2], inner[:2]),
               _in_box(boxes[3], inner[:4]), _in_box(boxes[4], inner * 5),
               _in_box(boxes[5], ground + outside)]
    peer_pts = [_in_box(boxes[2], inner[5:8]), _in_box(boxes[5], ground * 3)]
    agents = {"cav_101": _agent("cav_101", ego_pose, ego_pts),
              "cav_102": _agent("cav_102", peer_pose, peer_pts),
              "cav_103": _agent("cav_103", far_pose, [_in_box(boxes[3], inner)])}
    return CooperativeFrame("hand", "000000", 0, agents, boxes, np.arange(6), ["car"] * 6)


def test_hand_built_scene_has_the_known_visibility() -> None:
    vis = frame_visibility(_hand_built(), MINI)
    np.testing.assert_array_equal(vis.ego_points, [7, 2, 4, 0])
    np.testing.assert_array_equal(vis.union_points, [7, 5, 4, 0])
    assert vis.agents == 2  # the far agent is beyond comm_range
    s = visibility_stats([_hand_built()] * 2, MINI).summary()
    assert s["frames"] == 2 and s["boxes"] == 8 and s["boxes_per_frame"] == 4
    assert s["ego_seen_pct"] == 25.0 and s["union_seen_pct"] == 50.0
    assert s["only_union_pct"] == 25.0
    strict = visibility_stats([_hand_built()], MINI, min_points=8).summary()
    assert strict["ego_seen_pct"] == 0.0 and strict["union_seen_pct"] == 0.0


def test_points_in_boxes_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    boxes = np.column_stack([rng.uniform(-20, 20, (40, 2)), rng.uniform(0.5, 1.5, 40),
                             rng.uniform(3, 10, 40), rng.uniform(1.5, 2.6, 40),
                             rng.uniform(1.4, 3.4, 40), rng.uniform(-np.pi, np.pi, 40)])
    pts = np.column_stack([rng.uniform(-25, 25, (20000, 2)), rng.uniform(-0.5, 3.5, 20000)])
    counts = points_in_boxes(pts, boxes, margin=0.1, clearance=0.2)
    for b, n in zip(boxes, counts):
        rel = pts - b[:3]
        c, s = np.cos(b[6]), np.sin(b[6])
        along, across = c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1]
        inside = ((np.abs(along) <= b[3] / 2 + 0.1) & (np.abs(across) <= b[4] / 2 + 0.1)
                  & (rel[:, 2] >= 0.2 - b[5] / 2) & (rel[:, 2] <= b[5] / 2 + 0.1))
        assert n == inside.sum()
    assert counts.sum() > 100
    assert points_in_boxes(np.zeros((0, 3)), boxes).sum() == 0
    assert len(points_in_boxes(pts, np.zeros((0, 7)))) == 0


SMALL = ["--scenes", "1", "--frames", "2", "--agents", "3", "--beams", "32",
         "--image-size", "16x12", "--seed", "5", "--no-progress"]


@pytest.mark.parametrize("fmt", ["opv2v", "dairv2x"])
def test_dataset_stats_of_written_data_match_the_generated_frames(
        tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["synth", "--out", str(tmp_path), "--format", fmt,
                                      "--split", "test", "--rsu", "--world", "occluded", *SMALL])
    expected = visibility_stats(generate(SynthConfig.from_args(args)), MINI).summary()
    assert args.func(args) == 0
    capsys.readouterr()
    assert main(["dataset-stats", "--root", str(tmp_path), "--split", "test", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    (split,) = got
    assert split == ("test" if fmt == "opv2v" else "dairv2x")
    assert got[split] == expected
    assert expected["frames"] == 2 and expected["boxes_per_frame"] >= 5
    assert expected["union_seen_pct"] >= expected["ego_seen_pct"]
    assert main(["dataset-stats", "--root", str(tmp_path), "--split", "test"]) == 0
    assert "seen by the ego" in capsys.readouterr().out


def test_dataset_stats_rejects_a_bad_root(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="dataset-stats"):
        main(["dataset-stats", "--root", str(tmp_path)])
