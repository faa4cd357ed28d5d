"""Visibility statistics of a cooperative dataset: how many ground-truth boxes the ego's own
LiDAR sees, and how many the union of all agents sees (does cooperation have anything to add?).

A box counts as *seen* by an agent when at least `min_points` of the agent's LiDAR points,
moved into the world frame with its `lidar_pose`, lie inside the box grown by `margin` metres
(length, width, top; surface returns carry range noise) and above its bottom plus `clearance`
metres (so ground returns at the box's footprint do not count). Boxes are those of the frame in
the ego's range: centre inside the profile's x/y `lidar_range` in the ego LiDAR frame, minus the
ego's own box (centre within `ego_box_radius`, config/groups.yaml), as training uses them. The
union takes the agents within `comm_range` of the ego (config/groups.yaml), as fusion does.
Works on any `CooperativeFrame`, so on OPV2V and DAIR-V2X roots, real or generated.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from codealign_ros.config import lookup
from codealign_ros.core.geometry import transform_boxes, transform_points
from codealign_ros.data.sensors import concat_ranges
from codealign_ros.data.types import CooperativeFrame

MARGIN_M = 0.1
CLEARANCE_M = 0.2
MIN_POINTS = 5


def points_in_boxes(points: np.ndarray, boxes: np.ndarray, margin: float = MARGIN_M,
                    clearance: float = CLEARANCE_M) -> np.ndarray:
    """(M,) number of points (N, >=3) inside each box (M, 7) [x, y, z, l, w, h, yaw], all in
    one frame (box grown by `margin` except at the bottom, which is raised by `clearance`).

    Vectorised: points are sorted by x once; each box tests only the points whose x lies
    within its bounding radius (a contiguous run of the sorted points)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    pts = np.asarray(points, np.float64)
    if not len(boxes) or not len(pts):
        return np.zeros(len(boxes), np.int64)
    pts = pts.reshape(len(pts), -1)[:, :3]
    pts = pts[np.argsort(pts[:, 0], kind="stable")]
    radius = 0.5 * np.hypot(boxes[:, 3], boxes[:, 4]) + margin
    lo = np.searchsorted(pts[:, 0], boxes[:, 0] - radius)
    counts = np.searchsorted(pts[:, 0], boxes[:, 0] + radius, side="right") - lo
    index, box = concat_ranges(lo, counts), np.repeat(np.arange(len(boxes)), counts)
    b = boxes[box]
    rel = pts[index] - b[:, :3]
    c, s = np.cos(b[:, 6]), np.sin(b[:, 6])
    along, across = c * rel[:, 0] + s * rel[:, 1], c * rel[:, 1] - s * rel[:, 0]
    inside = ((np.abs(along) <= b[:, 3] / 2 + margin) & (np.abs(across) <= b[:, 4] / 2 + margin)
              & (rel[:, 2] >= clearance - b[:, 5] / 2) & (rel[:, 2] <= b[:, 5] / 2 + margin))
    return np.bincount(box[inside], minlength=len(boxes))


@dataclass
class FrameVisibility:
    """Per in-range box of one frame: points from the ego and from the union of agents."""

    ego_points: np.ndarray  # (M,) int
    union_points: np.ndarray  # (M,) int
    agents: int  # agents in the union (ego included)


def range_of_profile(profile: str) -> tuple[float, float, float, float]:
    """x_min, y_min, x_max, y_max of a profile's `lidar_range` (config/profiles.yaml)."""
    r = lookup("profiles", "profiles", profile, "lidar_range")
    return float(r[0]), float(r[1]), float(r[3]), float(r[4])


def frame_visibility(frame: CooperativeFrame, xy_range: tuple[float, float, float, float],
                     margin: float = MARGIN_M, clearance: float = CLEARANCE_M,
                     comm_range: float | None = None, ego_radius: float | None = None
                     ) -> FrameVisibility:
    """Points of the ego and of all agents within `comm_range` inside each in-range GT box."""
    comm_range = float(lookup("groups", "data", "comm_range")) if comm_range is None else comm_range
    ego_radius = (float(lookup("groups", "data", "ego_box_radius")) if ego_radius is None
                  else ego_radius)
    ego = frame.agents[frame.ego_id]
    world = np.asarray(frame.boxes, np.float64).reshape(-1, 7)
    local = transform_boxes(np.linalg.inv(ego.lidar_pose), world)
    x0, y0, x1, y1 = xy_range
    keep = ((local[:, 0] >= x0) & (local[:, 0] < x1) & (local[:, 1] >= y0) & (local[:, 1] < y1)
            & (np.hypot(local[:, 0], local[:, 1]) > ego_radius))
    boxes = world[keep]
    ego_points = points_in_boxes(transform_points(ego.lidar_pose, ego.points[:, :3]), boxes,
                                 margin, clearance)
    union, agents = ego_points.copy(), 1
    for name, agent in frame.agents.items():
        if name == frame.ego_id or np.hypot(*(agent.lidar_pose[:2, 3]
                                              - ego.lidar_pose[:2, 3])) > comm_range:
            continue
        union += points_in_boxes(transform_points(agent.lidar_pose, agent.points[:, :3]), boxes,
                                 margin, clearance)
        agents += 1
    return FrameVisibility(ego_points, union, agents)


@dataclass
class VisibilityStats:
    """Accumulated visibility of a split (see the module doc for the definitions)."""

    min_points: int = MIN_POINTS
    frames: int = 0
    boxes: list[int] = field(default_factory=list)  # in-range boxes per frame
    ego_seen: int = 0
    union_seen: int = 0
    agents: int = 0

    def add(self, vis: FrameVisibility) -> None:
        """Count one frame."""
        self.frames += 1
        self.boxes.append(len(vis.ego_points))
        self.ego_seen += int((vis.ego_points >= self.min_points).sum())
        self.union_seen += int((vis.union_points >= self.min_points).sum())
        self.agents += vis.agents

    def summary(self) -> dict[str, float | int]:
        """Plain numbers: frames, boxes (total, per frame mean/min/max), % seen by the ego
        and by the union, agents per frame."""
        total = int(sum(self.boxes))
        pct = (lambda n: round(100.0 * n / total, 1) if total else float("nan"))
        return {"frames": self.frames, "boxes": total,
                "boxes_per_frame": round(total / self.frames, 2) if self.frames else 0.0,
                "boxes_per_frame_min": min(self.boxes, default=0),
                "boxes_per_frame_max": max(self.boxes, default=0),
                "ego_seen_pct": pct(self.ego_seen), "union_seen_pct": pct(self.union_seen),
                "only_union_pct": pct(self.union_seen - self.ego_seen),
                "agents_per_frame": round(self.agents / self.frames, 2) if self.frames else 0.0,
                "min_points": self.min_points}


def visibility_stats(frames: Iterable[CooperativeFrame],
                     xy_range: tuple[float, float, float, float], min_points: int = MIN_POINTS,
                     margin: float = MARGIN_M, clearance: float = CLEARANCE_M
                     ) -> VisibilityStats:
    """Visibility statistics over frames."""
    stats = VisibilityStats(min_points)
    for frame in frames:
        stats.add(frame_visibility(frame, xy_range, margin, clearance))
    return stats


def dataset_frames(root: Path, split: str) -> tuple[str, int, Iterator[CooperativeFrame]]:
    """Layout name, frame count and the frames (LiDAR only) of an OPV2V split or DAIR root."""
    from codealign_ros.data.dairv2x import DairV2XDataset
    from codealign_ros.data.opv2v import OPV2VDataset, is_opv2v_root

    if is_opv2v_root(root):
        data = OPV2VDataset(root, split)
        keys = [(sc, ts) for sc in data.scenarios() for ts in data.timestamps(sc)]
        return "opv2v", len(keys), (data.load(sc, ts, cameras=False) for sc, ts in keys)
    dair = DairV2XDataset(root)  # DatasetError naming the root when it is neither layout
    return "dairv2x", len(dair), (dair.load(i, cameras=False) for i in range(len(dair)))


def add_stats_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the `dataset-stats` sub-command."""
    p = subparsers.add_parser(
        "dataset-stats", help="visibility statistics of a dataset (ego vs union of agents)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, required=True, help="OPV2V or DAIR-V2X-C root")
    p.add_argument("--split", nargs="+", default=["test"],
                   help="OPV2V split(s) (ignored for DAIR-V2X, which has one set of frames)")
    p.add_argument("--profile", default="mini", help="profile whose lidar_range is the range")
    p.add_argument("--min-points", type=int, default=MIN_POINTS,
                   help="points a box needs to count as seen")
    p.add_argument("--margin", type=float, default=MARGIN_M, help="box growth (m)")
    p.add_argument("--clearance", type=float, default=CLEARANCE_M,
                   help="points this far above a box's bottom only (m)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_stats)


def run_stats(args: argparse.Namespace) -> int:
    """Print the statistics of each split."""
    from tqdm import tqdm

    from codealign_ros.data.types import DatasetError

    if args.min_points < 1 or args.margin < 0:
        raise SystemExit("dataset-stats: --min-points >= 1 and --margin >= 0 are required")
    try:
        xy_range = range_of_profile(args.profile)
    except KeyError as err:
        raise SystemExit(f"dataset-stats: unknown profile {args.profile!r} ({err})") from None
    out: dict[str, dict[str, float | int]] = {}
    for split in args.split:
        try:
            layout, count, frames = dataset_frames(args.root, split)
        except (DatasetError, ValueError) as err:
            raise SystemExit(f"dataset-stats: {err}") from None
        bar = tqdm(frames, total=count, unit="frame", disable=args.no_progress or args.json,
                   desc=f"stats {split}")
        stats = visibility_stats(bar, xy_range, args.min_points, args.margin, args.clearance)
        out[split if layout == "opv2v" else "dairv2x"] = stats.summary()
        if layout != "opv2v":
            break
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    lo, hi = xy_range[:2], xy_range[2:]
    print(f"in range: x {lo[0]}..{hi[0]} m, y {lo[1]}..{hi[1]} m around the ego ({args.profile});"
          f" seen: >= {args.min_points} LiDAR points in the box")
    for split, s in out.items():
        print(f"{split}: {s['frames']} frames, {s['boxes_per_frame']} boxes/frame "
              f"({s['boxes_per_frame_min']}..{s['boxes_per_frame_max']}), seen by the ego "
              f"{s['ego_seen_pct']} %, by the union of {s['agents_per_frame']} agents "
              f"{s['union_seen_pct']} %")
    return 0
