"""A small ROS-free TF buffer: a tree of timed transforms and lookups between its frames.

Semantics follow tf2: every child frame has one parent; a transform parent <- child is the
child frame's pose in the parent frame (`T_parent_child`, a 4x4 matrix). Static transforms hold
at every time; dynamic ones are sampled and interpolated (translation linear, rotation slerp)
between the two samples around the asked time. A lookup fails with `TfError` (reason
`unknown_frame`, `not_connected`, `extrapolation`, `gap` or `reparented`) where tf2 would fail,
plus `gap` when the two samples around the time are further apart than `max_gap_ns`.

Which transforms the project publishes (REP 105 / REP 103): `map -> <agent>/lidar` per frame
from each agent's pose, `<agent>/lidar -> <agent>/camera<i>` static (`frame_transforms`).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from codealign_ros.core.codemap import GridPose
from codealign_ros.core.geometry import quaternion_xyzw
from codealign_ros.errors import CodeAlignError


class TfError(CodeAlignError, LookupError):
    """A transform could not be resolved; `reason` is machine-readable."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(text)
        self.reason = reason


@dataclass(frozen=True)
class Transform:
    """T_parent_child at `stamp_ns` (static: at every time)."""

    parent: str
    child: str
    stamp_ns: int
    matrix: np.ndarray
    static: bool = False


def interpolate(a: np.ndarray, b: np.ndarray, ratio: float) -> np.ndarray:
    """Rigid transform `ratio` of the way from `a` to `b` (0 -> a, 1 -> b; slerp rotation)."""
    qa, qb = quaternion_xyzw(a[:3, :3]), quaternion_xyzw(b[:3, :3])
    dot = float(np.dot(qa, qb))
    if dot < 0.0:
        qb, dot = -qb, -dot
    if dot > 0.9995:  # nearly equal: normalised lerp
        q = qa + ratio * (qb - qa)
    else:
        theta = np.arccos(np.clip(dot, -1.0, 1.0))
        q = (np.sin((1 - ratio) * theta) * qa + np.sin(ratio * theta) * qb) / np.sin(theta)
    t = (1 - ratio) * a[:3, 3] + ratio * b[:3, 3]
    return GridPose(tuple(t), tuple(q / np.linalg.norm(q))).to_matrix()


@dataclass
class _Edge:
    parent: str
    static: np.ndarray | None = None
    stamps: list[int] = field(default_factory=list)
    matrices: list[np.ndarray] = field(default_factory=list)


class TfBuffer:
    """Transforms of a frame tree; `lookup(target, source, stamp_ns)` -> T_target_source."""

    def __init__(self, max_gap_ns: int | None = None) -> None:
        self.max_gap_ns = max_gap_ns
        self._edges: dict[str, _Edge] = {}

    def add(self, transform: Transform) -> None:
        """Insert one transform (TfError "reparented" when the child has another parent)."""
        edge = self._edges.setdefault(transform.child, _Edge(transform.parent))
        if edge.parent != transform.parent:
            raise TfError("reparented", f"{transform.child} has parent {edge.parent}, not "
                                        f"{transform.parent}")
        matrix = np.asarray(transform.matrix, np.float64).reshape(4, 4)
        if transform.static:
            edge.static = matrix
            return
        i = bisect.bisect_left(edge.stamps, transform.stamp_ns)
        if i < len(edge.stamps) and edge.stamps[i] == transform.stamp_ns:
            edge.matrices[i] = matrix
        else:
            edge.stamps.insert(i, transform.stamp_ns)
            edge.matrices.insert(i, matrix)

    def add_all(self, transforms: Iterable[Transform]) -> None:
        """Insert several transforms."""
        for t in transforms:
            self.add(t)

    @property
    def frames(self) -> set[str]:
        """Every frame named as a parent or a child."""
        return set(self._edges) | {e.parent for e in self._edges.values()}

    def _chain(self, frame: str) -> list[str]:
        """frame, its parent, ..., the root."""
        chain = [frame]
        while chain[-1] in self._edges:
            chain.append(self._edges[chain[-1]].parent)
            if len(chain) > len(self._edges) + 1:
                raise TfError("loop", f"the tree above {frame} has a loop")
        return chain

    def _edge_at(self, child: str, stamp_ns: int) -> np.ndarray:
        """T_parent_child at `stamp_ns`."""
        edge = self._edges[child]
        if edge.static is not None:
            return edge.static
        stamps = edge.stamps
        i = bisect.bisect_left(stamps, stamp_ns)
        if i < len(stamps) and stamps[i] == stamp_ns:
            return edge.matrices[i]
        if i == 0 or i == len(stamps):
            span = f"[{stamps[0]}, {stamps[-1]}]" if stamps else "no samples"
            raise TfError("extrapolation", f"{edge.parent} -> {child} at {stamp_ns} ns is "
                                           f"outside its samples {span}")
        t0, t1 = stamps[i - 1], stamps[i]
        if self.max_gap_ns is not None and t1 - t0 > self.max_gap_ns:
            raise TfError("gap", f"{edge.parent} -> {child}: no sample between {t0} and {t1} "
                                 f"ns (gap {(t1 - t0) / 1e6:.1f} ms > "
                                 f"{self.max_gap_ns / 1e6:.1f} ms)")
        return interpolate(edge.matrices[i - 1], edge.matrices[i],
                           (stamp_ns - t0) / (t1 - t0))

    def lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        """T_target_source at `stamp_ns`: maps points in `source` into `target`."""
        for name in (target, source):
            if name not in self.frames:
                raise TfError("unknown_frame", f"frame {name!r} is not in the tree")
        up_source, up_target = self._chain(source), self._chain(target)
        common = next((f for f in up_source if f in up_target), None)
        if common is None:
            raise TfError("not_connected", f"{source} and {target} are not connected "
                                           f"(roots {up_source[-1]}, {up_target[-1]})")
        root_source = self._to_ancestor(up_source, common, stamp_ns)
        root_target = self._to_ancestor(up_target, common, stamp_ns)
        return np.linalg.inv(root_target) @ root_source

    def _to_ancestor(self, chain: Sequence[str], ancestor: str, stamp_ns: int) -> np.ndarray:
        """T_ancestor_frame for chain = [frame, ..., ancestor, ...]."""
        m = np.eye(4)
        for child in chain[:chain.index(ancestor)]:
            m = self._edge_at(child, stamp_ns) @ m
        return m

    def can_transform(self, target: str, source: str, stamp_ns: int) -> tuple[bool, str]:
        """(True, "") when `lookup` succeeds, else (False, the reason and text)."""
        try:
            self.lookup(target, source, stamp_ns)
        except TfError as err:
            return False, f"{err.reason}: {err}"
        return True, ""


def frame_transforms(stamp_ns: int, agents: dict[str, np.ndarray],
                     cameras: dict[str, Sequence[np.ndarray]], world: str,
                     grid_frame: Callable[[str], str],
                     camera_frame: Callable[[str, int], str]) -> list[Transform]:
    """The project's TF of one frame: world -> grid per agent (its LiDAR -> world pose) and,
    static, grid -> camera i (the inverse of the LiDAR -> camera extrinsic)."""
    out = [Transform(world, grid_frame(a), stamp_ns, np.asarray(pose, np.float64))
           for a, pose in agents.items()]
    for agent, extrinsics in cameras.items():
        out += [Transform(grid_frame(agent), camera_frame(agent, i), stamp_ns,
                          np.linalg.inv(np.asarray(ext, np.float64)), static=True)
                for i, ext in enumerate(extrinsics)]
    return out
