"""OPV2V on disk: `{split}/{scenario}/{cav_id}/{timestamp}.yaml|.pcd|_camera{i}.png`.

OPV2V stores CARLA coordinates as they are (OpenCOOD / HEAL read them so):
- poses are [x, y, z, roll, yaw, pitch] in degrees (`pose6_to_matrix`);
- a `vehicles` entry's box centre is `location + center`, `extent` holds half sizes and
  `angle` is [roll, yaw, pitch] in degrees;
- camera `cords` is the camera pose in the world with UE4 axes (x forward, y right, z up);
  HEAL's OpenCV-axes camera -> LiDAR is inv(lidar_pose) @ pose6_to_matrix(cords) @ UE4_TO_OPENCV;
- cav ids >= 0 are vehicles (the smallest is ego), negative ids are road-side units;
- the dataset has no wall clock: `opv2v_stamp_ns` maps a frame key (which advances by 2
  per 10 Hz frame) to 0.05 s steps after a per-scenario base time.

CARLA's axes are left-handed (y to the right), so HEAL's camera -> LiDAR has determinant -1
and no quaternion / TF can carry it. With `right_handed=True` (the default) the reader and
writer mirror y at the boundary, as the CARLA ROS bridge does: points and positions get
y -> -y, yaws change sign, poses become S @ pose @ S with S = diag(1, -1, 1, 1), and
camera extrinsics are proper rotations in ROS (REP 103) axes. `right_handed=False` keeps
HEAL's numbers exactly (and can only write frames whose extrinsics are mirrored likewise).
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from codealign_ros.core.geometry import matrix_to_pose6, pose6_to_matrix, wrap_angle
from codealign_ros.data.pcd import read_pcd_cached, write_pcd
from codealign_ros.data.types import (AgentFrame, CameraFrame, CooperativeFrame, DatasetError,
                                      agent_name)

SPLITS = ("train", "validate", "test")
# OpenCV camera axes -> UE4 camera axes (HEAL: cam_to_lidar_opencv = cam_to_lidar_ue4 @ this).
UE4_TO_OPENCV = np.array([[0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0],
                          [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
LIDAR_HEIGHT = 1.9  # metres of a vehicle's LiDAR above its ground point (true_ego_pos)
OWN_BOX_RADIUS = 0.5  # an agent's own box: centre within this x/y distance of its LiDAR
NS_PER_KEY = 50_000_000  # frame keys advance by 2 per 0.1 s
_BASE_S, _SPREAD_S = 1_500_000_000, 100_000_000
_CAMERA_KEY = re.compile(r"camera(\d+)$")
_AGENT_NAME = re.compile(r"(cav|rsu)_(\d+)$")


_SafeLoader = yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader


class _Loader(_SafeLoader):  # type: ignore[misc, valid-type]
    """Safe loader that also reads exponent floats without a dot (`1e-05`), as OpenCOOD does."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))
_Dumper = yaml.CSafeDumper if hasattr(yaml, "CSafeDumper") else yaml.SafeDumper


def cav_id_of(name: str) -> int:
    """OPV2V cav id of an agent name: "cav_641" -> 641, "rsu_1" -> -1 (inverse of agent_name)."""
    match = _AGENT_NAME.match(name)
    if not match:
        raise ValueError(f"agent name {name!r} is neither cav_<id> nor rsu_<n>")
    return int(match[2]) if match[1] == "cav" else -int(match[2])


def opv2v_stamp_ns(scenario: str, timestamp: str) -> int:
    """Capture time of a frame: key * 0.05 s after a base in whole seconds (2017-2020) taken
    from a SHA-256 of the scenario name, so it is stable across runs and machines."""
    digest = int(hashlib.sha256(scenario.encode()).hexdigest()[:12], 16)
    return (_BASE_S + digest % _SPREAD_S) * 1_000_000_000 + int(timestamp) * NS_PER_KEY


def _floats(values: Any) -> list[Any]:
    """Plain (nested) Python floats for yaml."""
    return np.asarray(values, np.float64).tolist()


def _mirror(right_handed: bool) -> np.ndarray:
    """S: the 4x4 y flip between CARLA and ROS axes (identity when not converting)."""
    return np.diag([1.0, -1.0 if right_handed else 1.0, 1.0, 1.0])


def _mirror_points(points: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """Copy of (N, >=3) points with y mirrored by `mirror`."""
    out = np.array(points, np.float32)
    out[:, 1] *= mirror[1, 1]
    return out


def _mirror_boxes(boxes: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """Copy of [x, y, z, l, w, h, yaw] boxes with y and yaw mirrored by `mirror`."""
    out = np.array(boxes, np.float64).reshape(-1, 7)
    out[:, [1, 6]] *= mirror[1, 1]
    out[:, 6] = wrap_angle(out[:, 6])
    return out


def _own_box(boxes: np.ndarray, lidar_pose: np.ndarray) -> int | None:
    """Index of the box nearest (x/y, within OWN_BOX_RADIUS) to a LiDAR position, if any."""
    if not len(boxes):
        return None
    dist = np.linalg.norm(boxes[:, :2] - lidar_pose[:2, 3], axis=1)
    best = int(np.argmin(dist))
    return best if dist[best] <= OWN_BOX_RADIUS else None


def _vehicles_yaml(boxes: np.ndarray, ids: np.ndarray, skip: int | None) -> dict[int, Any]:
    """OPV2V `vehicles` entries (CARLA bottom-centre location) of all boxes but `skip`."""
    return {int(ids[i]): {"location": [float(x), float(y), float(z - h / 2)],
                          "center": [0.0, 0.0, float(h / 2)],
                          "angle": [0.0, float(np.degrees(yaw)), 0.0],
                          "extent": [float(length / 2), float(width / 2), float(h / 2)],
                          "speed": 0.0}
            for i, (x, y, z, length, width, h, yaw) in enumerate(boxes) if i != skip}


def _camera_yaml(camera: CameraFrame, lidar_pose: np.ndarray, mirror: np.ndarray,
                 where: str) -> dict[str, Any]:
    """OPV2V `camera{i}` entry: world pose and LiDAR -> camera, both in UE4 axes."""
    ue4_to_lidar = mirror @ np.linalg.inv(camera.extrinsic) @ np.linalg.inv(UE4_TO_OPENCV)
    pose = lidar_pose @ ue4_to_lidar
    cords = matrix_to_pose6(pose)
    if not np.allclose(pose6_to_matrix(cords), pose, atol=1e-6):
        raise ValueError(f"{where}: camera pose has no OPV2V cords (a mirrored extrinsic for "
                         f"these axes, or pitch of +-90 degrees)")
    return {"cords": _floats(cords), "intrinsic": _floats(camera.intrinsic),
            "extrinsic": _floats(np.linalg.inv(ue4_to_lidar))}


def write_opv2v_frame(root: Path, split: str, frame: CooperativeFrame,
                      right_handed: bool = True) -> None:
    """Write one frame in the OPV2V layout (ascii x y z intensity pcd, png cameras, yaml);
    depth and stamp_ns are not stored (OPV2V has neither). right_handed: the frame is in
    ROS axes and is mirrored into CARLA's (see the module docstring)."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {SPLITS}")
    if not frame.timestamp.isdigit():
        raise ValueError(f"OPV2V timestamps are digit strings, got {frame.timestamp!r}")
    mirror = _mirror(right_handed)
    boxes = _mirror_boxes(frame.boxes, mirror)
    for name, agent in frame.agents.items():
        cav = cav_id_of(name)
        folder = Path(root) / split / frame.scenario / str(cav)
        folder.mkdir(parents=True, exist_ok=True)
        stem = folder / frame.timestamp
        lidar_pose = mirror @ np.asarray(agent.lidar_pose, np.float64) @ mirror
        pose6 = matrix_to_pose6(lidar_pose)
        ground = pose6 - [0.0, 0.0, LIDAR_HEIGHT if cav >= 0 else 0.0, 0.0, 0.0, 0.0]
        params: dict[str, Any] = {"lidar_pose": _floats(pose6), "true_ego_pos": _floats(ground),
                                  "ego_speed": 0.0}
        for i, camera in enumerate(agent.cameras):
            params[f"camera{i}"] = _camera_yaml(camera, lidar_pose, mirror, f"{name} camera{i}")
            Image.fromarray(np.asarray(camera.image, np.uint8)).save(f"{stem}_camera{i}.png")
        params["vehicles"] = _vehicles_yaml(boxes, frame.box_ids, _own_box(boxes, lidar_pose))
        write_pcd(f"{stem}.pcd", _mirror_points(agent.points, mirror), binary=False)
        with open(f"{stem}.yaml", "w", encoding="utf-8") as f:
            yaml.dump(params, f, Dumper=_Dumper, default_flow_style=None, sort_keys=False)


def _read_yaml(path: Path) -> dict[str, Any]:
    """Parsed OPV2V frame yaml; DatasetError if missing, corrupt or without the pose keys."""
    try:
        with open(path, encoding="utf-8") as f:
            params = yaml.load(f, Loader=_Loader)  # noqa: S506 (a safe loader)
    except OSError as err:
        raise DatasetError(path, f"cannot read yaml ({err.strerror or err})") from None
    except yaml.YAMLError as err:
        raise DatasetError(path, f"corrupt yaml: {err}") from None
    if not isinstance(params, dict):
        raise DatasetError(path, "yaml is not a mapping of OPV2V keys")
    for key in ("lidar_pose", "vehicles"):
        if key not in params:
            raise DatasetError(path, f"yaml has no {key!r}")
    return params


def _array(path: Path, value: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    """`value` as a float64 array of `shape`; DatasetError naming `what` otherwise."""
    try:
        out = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        out = np.zeros(0)
    if out.shape != shape:
        raise DatasetError(path, f"{what} is not a {'x'.join(map(str, shape))} list of numbers")
    return out


def _read_camera(path: Path, params: dict[str, Any], index: int, lidar_pose: np.ndarray,
                 mirror: np.ndarray) -> CameraFrame:
    """Camera `index` of an agent (CARLA `lidar_pose`): png, K and OpenCV LiDAR -> camera."""
    png = path.with_name(f"{path.stem}_camera{index}.png")
    entry = params[f"camera{index}"]
    if not isinstance(entry, dict):
        raise DatasetError(path, f"camera{index} is not a mapping")
    cords = _array(path, entry.get("cords"), (6,), f"camera{index}.cords")
    intrinsic = _array(path, entry.get("intrinsic"), (3, 3), f"camera{index}.intrinsic")
    try:
        with Image.open(png) as img:
            image = np.asarray(img.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as err:  # missing, not an image, broken png
        raise DatasetError(png, f"cannot read camera image ({err})") from None
    camera_to_lidar = mirror @ np.linalg.inv(lidar_pose) @ pose6_to_matrix(cords) @ UE4_TO_OPENCV
    return CameraFrame(image=image, intrinsic=intrinsic, extrinsic=np.linalg.inv(camera_to_lidar))


def _read_vehicles(path: Path, vehicles: Any) -> dict[int, np.ndarray]:
    """`vehicles` of a yaml as id -> [x, y, z, l, w, h, yaw] boxes in CARLA axes."""
    if vehicles is None:
        return {}
    if not isinstance(vehicles, dict):
        raise DatasetError(path, "vehicles is not a mapping of id -> object")
    out = {}
    for vid, obj in vehicles.items():
        if not isinstance(obj, dict) or not {"location", "center", "angle", "extent"} <= obj.keys():
            raise DatasetError(path, f"vehicle {vid} lacks location/center/angle/extent")
        centre = (_array(path, obj["location"], (3,), f"vehicle {vid} location")
                  + _array(path, obj["center"], (3,), f"vehicle {vid} center"))
        extent = 2 * _array(path, obj["extent"], (3,), f"vehicle {vid} extent")
        yaw = np.radians(_array(path, obj["angle"], (3,), f"vehicle {vid} angle")[1])
        try:
            out[int(vid)] = np.array([*centre, *extent, yaw])
        except ValueError:
            raise DatasetError(path, f"vehicle id {vid!r} is not an integer") from None
    return out


def _cav_ids(scenario: Path) -> list[int]:
    """Integer-named agent directories of a scenario: ego first, vehicles, then RSUs."""
    if not scenario.is_dir():
        return []
    ids = [int(p.name) for p in scenario.iterdir()
           if p.is_dir() and re.fullmatch(r"-?\d+", p.name)]
    return sorted(ids, key=lambda cav: (cav < 0, abs(cav)))


class OPV2VDataset:
    """Reader of one split of an OPV2V root (`root/split/scenario/cav_id/timestamp.*`);
    right_handed: mirror CARLA's axes into ROS's (see the module docstring)."""

    def __init__(self, root: Path, split: str, right_handed: bool = True) -> None:
        if split not in SPLITS:
            raise ValueError(f"split {split!r} is not one of {SPLITS}")
        self.root, self.split, self.split_dir = Path(root), split, Path(root) / split
        self._mirror = _mirror(right_handed)
        if not self.split_dir.is_dir():
            raise DatasetError(self.root, f"not an OPV2V root: expected a '{split}' directory "
                                          f"holding <scenario>/<cav_id>/<timestamp>.yaml|.pcd")
        self._cavs = {s.name: ids for s in sorted(self.split_dir.iterdir()) if (ids := _cav_ids(s))}
        if not self._cavs:
            raise DatasetError(self.split_dir, "no OPV2V scenarios: expected <scenario>/<cav_id>/ "
                                               "directories with integer cav ids")

    def scenarios(self) -> list[str]:
        """Scenario names, sorted."""
        return list(self._cavs)

    def _ids(self, scenario: str) -> list[int]:
        if scenario not in self._cavs:
            raise DatasetError(self.split_dir / scenario, "no such OPV2V scenario")
        return self._cavs[scenario]

    def agents(self, scenario: str) -> list[str]:
        """Agent names ego first (smallest non-negative cav id), vehicles ascending, then RSUs."""
        return [agent_name(cav) for cav in self._ids(scenario)]

    def timestamps(self, scenario: str) -> list[str]:
        """Frame keys of the ego's yaml files, sorted."""
        ego = self.split_dir / scenario / str(self._ids(scenario)[0])
        return sorted(p.stem for p in ego.glob("*.yaml") if p.stem.isdigit())

    def load(self, scenario: str, timestamp: str, cameras: bool = True) -> CooperativeFrame:
        """One cooperative frame; ground truth is the union of the agents' `vehicles` by id
        (the first agent listing an id wins), all of class "car"."""
        mirror = self._mirror
        agents: dict[str, AgentFrame] = {}
        boxes: dict[int, np.ndarray] = {}
        for cav in self._ids(scenario):
            path = self.split_dir / scenario / str(cav) / f"{timestamp}.yaml"
            params = _read_yaml(path)
            pose = pose6_to_matrix(_array(path, params["lidar_pose"], (6,), "lidar_pose"))
            indices = sorted(int(m[1]) for key in params if (m := _CAMERA_KEY.match(str(key))))
            cams = [_read_camera(path, params, i, pose, mirror) for i in indices] if cameras else []
            points = _mirror_points(read_pcd_cached(path.with_suffix(".pcd"), rgb_intensity=True),
                                    mirror)
            name = agent_name(cav)
            agents[name] = AgentFrame(name, points, mirror @ pose @ mirror, cams, is_rsu=cav < 0)
            for vid, box in _read_vehicles(path, params["vehicles"]).items():
                boxes.setdefault(vid, box)
        ids = sorted(boxes)
        return CooperativeFrame(
            scenario=scenario, timestamp=timestamp, stamp_ns=opv2v_stamp_ns(scenario, timestamp),
            agents=agents, boxes=_mirror_boxes(np.array([boxes[i] for i in ids]), mirror),
            box_ids=np.array(ids, np.int64), box_classes=["car"] * len(ids))


def is_opv2v_root(path: Path) -> bool:
    """Whether `path` holds at least one OPV2V split with a scenario of cav directories."""
    for split in SPLITS:
        try:
            if (Path(path) / split).is_dir() and OPV2VDataset(Path(path), split).scenarios():
                return True
        except (DatasetError, OSError):
            continue
    return False
