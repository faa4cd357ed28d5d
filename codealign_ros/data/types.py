"""In-memory form of one cooperative frame, shared by the generator, loaders and converter."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from codealign_ros.errors import CodeAlignError

NS_PER_S = 1_000_000_000


def agent_name(cav_id: int) -> str:
    """ROS-safe agent name of an OPV2V cav id: 641 -> "cav_641", RSU -1 -> "rsu_1"."""
    return f"cav_{cav_id}" if cav_id >= 0 else f"rsu_{-cav_id}"


@dataclass
class CameraFrame:
    """One pinhole camera image with calibration.

    intrinsic: 3x3 K (pixels); extrinsic: 4x4 LiDAR -> camera with the camera frame in
    OpenCV axes (x right, y down, z forward), as HEAL recomputes it from OPV2V's `cords`
    (the yaml's own `extrinsic` is in UE4 axes); depth: (H, W) float32 metres along the
    optical axis, 0 where nothing was hit, or None when the dataset has no depth.
    """

    image: np.ndarray  # (H, W, 3) uint8 RGB
    intrinsic: np.ndarray
    extrinsic: np.ndarray
    depth: np.ndarray | None = None


@dataclass
class AgentFrame:
    """What one agent (vehicle or road-side unit) sensed at one frame.

    All frames are right-handed (x forward, y left, z up; REP 103). OPV2V/CARLA files are
    left-handed; `codealign_ros.data.opv2v` mirrors y at the file boundary.
    """

    agent_id: str  # ROS-safe name, e.g. "cav_641", "rsu_1", "vehicle", "infrastructure"
    points: np.ndarray  # (N, 4) float32 x, y, z, intensity in the LiDAR frame
    lidar_pose: np.ndarray  # 4x4 LiDAR -> world
    cameras: list[CameraFrame] = field(default_factory=list)
    is_rsu: bool = False


@dataclass
class CooperativeFrame:
    """All agents of one scenario at one 10 Hz tick, with world ground truth.

    boxes: (M, 7) world [x, y, z, l, w, h, yaw] (centre, full extents, radians);
    box_ids: (M,) int object ids; box_classes: M class names ("car", "truck", ...).
    agents: ordered ego first.
    """

    scenario: str
    timestamp: str  # the dataset's frame key, e.g. "000068"
    stamp_ns: int  # capture time
    agents: dict[str, AgentFrame]
    boxes: np.ndarray
    box_ids: np.ndarray
    box_classes: list[str]

    @property
    def ego_id(self) -> str:
        """Id of the ego agent (the first)."""
        return next(iter(self.agents))


class DatasetError(CodeAlignError, ValueError):
    """A dataset file is missing or malformed; the message names the file."""

    reason: str = "dataset"

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
