"""DAIR-V2X-C cooperative layout: writer and loader (ROS-free).

Layout (ids "%06d"; REFERENCE.md section 4)::

    cooperative/data_info.json, cooperative/label_world/<vehicle id>.json
    vehicle-side/{velodyne,image,label/lidar}/<id>.*, vehicle-side/data_info.json
    vehicle-side/calib/{lidar_to_novatel,novatel_to_world,lidar_to_camera,
                        camera_intrinsic}/<id>.json
    infrastructure-side/{velodyne,image,label/virtuallidar}/<id>.*, .../data_info.json
    infrastructure-side/calib/{virtuallidar_to_world,virtuallidar_to_camera,
                               camera_intrinsic}/<id>.json

The infrastructure world calibration carries a "system error": readers ADD the frame's
`system_error_offset` (delta_x, delta_y) to the virtuallidar_to_world translation
(OpenCOOD / HEAL convention), so the writer stores the true translation minus the offset.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from codealign_ros.core.geometry import (box_corners, corners_to_boxes, rt_to_matrix,
                                         transform_boxes, wrap_angle)
from codealign_ros.data.pcd import read_pcd, write_pcd
from codealign_ros.data.types import AgentFrame, CameraFrame, CooperativeFrame, DatasetError

COOP_INFO = "cooperative/data_info.json"
LABEL_WORLD = "cooperative/label_world"
# Fixed LiDAR -> NovAtel (GNSS/INS) mount used to split a vehicle's LiDAR -> world pose.
LIDAR_TO_NOVATEL = rt_to_matrix(np.eye(3), [0.0, 0.0, 1.0])
JPEG_QUALITY = 95
NS_PER_US = 1_000
FALLBACK_PERIOD_NS = 100_000_000  # 10 Hz: stamp = int(id) * 100 ms without timestamps
LAYOUT_HINT = ("expected a DAIR-V2X-C cooperative root: cooperative/data_info.json, "
               "vehicle-side/ and infrastructure-side/")


def _calib_path(name: str, fid: str) -> str:
    """Calib file of frame `fid`, relative to its side folder."""
    return f"calib/{name}/{fid}.json"


@dataclass(frozen=True)
class _Side:
    """One agent's folder and the name of its LiDAR frame in calib/label paths."""

    agent: str
    folder: str
    lidar: str
    world_calibs: tuple[str, ...]  # calib files whose product (left to right) is LiDAR -> world

    def paths(self, fid: str) -> dict[str, str]:
        """data_info path fields of frame `fid`, relative to the side folder."""
        calibs = (*self.world_calibs, f"{self.lidar}_to_camera", "camera_intrinsic")
        return {"image_path": f"image/{fid}.jpg", "pointcloud_path": f"velodyne/{fid}.pcd",
                **{f"calib_{name}_path": _calib_path(name, fid) for name in calibs},
                "label_lidar_std_path": f"label/{self.lidar}/{fid}.json"}


VEHICLE = _Side("vehicle", "vehicle-side", "lidar", ("novatel_to_world", "lidar_to_novatel"))
INFRA = _Side("infrastructure", "infrastructure-side", "virtuallidar", ("virtuallidar_to_world",))
SIDES = (VEHICLE, INFRA)
# Key nesting of each calib file: lidar_to_novatel wraps its rotation/translation in "transform".
_CALIB_PREFIX = {"lidar_to_novatel": ("transform",)}


def is_dair_root(path: Path) -> bool:
    """Whether `path` looks like a DAIR-V2X-C cooperative root."""
    return (Path(path) / COOP_INFO).is_file()


# ---------------------------------------------------------------- json helpers

def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise DatasetError(path, "missing file")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(path, f"invalid JSON: {exc}") from exc


def _made(path: Path) -> Path:
    """`path` with its parent folder created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _write_json(path: Path, data: Any) -> None:
    _made(path).write_text(json.dumps(data))


def _get(data: Any, path: Path, *keys: str) -> Any:
    """data[k0][k1]...; DatasetError naming the file and the missing key."""
    for depth, key in enumerate(keys):
        if not isinstance(data, dict) or key not in data:
            raise DatasetError(path, f"missing key {'.'.join(keys[: depth + 1])!r}")
        data = data[key]
    return data


def _array(value: Any, shapes: tuple[tuple[int, ...], ...], path: Path, what: str) -> np.ndarray:
    """float64 array of one of `shapes`; DatasetError otherwise."""
    try:
        arr = np.asarray(value, np.float64)
    except (TypeError, ValueError) as exc:
        raise DatasetError(path, f"{what} is not a numeric array: {exc}") from exc
    if arr.shape not in shapes:
        expected = " or ".join(str(s) for s in shapes)
        raise DatasetError(path, f"{what} has shape {arr.shape}, expected {expected}")
    return arr


def _rt_json(matrix: np.ndarray) -> dict[str, list]:
    return {"rotation": matrix[:3, :3].tolist(), "translation": matrix[:3, 3:4].tolist()}


def _rt_matrix(data: Any, path: Path, *prefix: str) -> np.ndarray:
    rotation = _array(_get(data, path, *prefix, "rotation"), ((3, 3),), path, "rotation")
    translation = _array(_get(data, path, *prefix, "translation"), ((3, 1), (3,)), path,
                         "translation")
    return rt_to_matrix(rotation, translation)


def _stem(path: str) -> str:
    return Path(path).stem


# ---------------------------------------------------------------- labels

def _label_entries(boxes: np.ndarray, classes: list[str]) -> list[dict[str, Any]]:
    """Side-label style objects of (M, 7) boxes."""
    return [{"type": cls.capitalize(),
             "3d_dimensions": {"h": float(b[5]), "w": float(b[4]), "l": float(b[3])},
             "3d_location": {"x": float(b[0]), "y": float(b[1]), "z": float(b[2])},
             "rotation": float(b[6])} for b, cls in zip(np.asarray(boxes).reshape(-1, 7), classes)]


def _world_label(boxes: np.ndarray, classes: list[str]) -> list[dict[str, Any]]:
    corners = box_corners(boxes)
    return [{**entry, "type": entry["type"].lower(), "world_8_points": c.tolist()}
            for entry, c in zip(_label_entries(boxes, classes), corners)]


def _boxes_from_corners(corners: np.ndarray) -> np.ndarray:
    """Boxes of (M, 8, 3) corners, length along the longer side.

    The DAIR toolkit lists corners clockwise ((+l,+w), (+l,-w), ...), `box_corners`
    counter-clockwise; `corners_to_boxes` reads the former as (w, l, yaw + 90 deg), which
    the swap undoes, so both orders give the same box for l >= w.
    """
    boxes = corners_to_boxes(corners)
    swap = boxes[:, 4] > boxes[:, 3]
    boxes[swap, 3:5] = boxes[swap][:, [4, 3]]
    boxes[swap, 6] = wrap_angle(boxes[swap, 6] - np.pi / 2)
    return boxes


# ---------------------------------------------------------------- writer

class DairWriter:
    """Writes CooperativeFrames into a DAIR-V2X-C root.

    Per-frame files are written by `add`; the three data_info.json files (merged with the
    ones already in `root`, entries of re-written ids replaced) by `close` or on leaving a
    `with` block.
    """

    _INFO_KEYS = {COOP_INFO: "vehicle_pointcloud_path",
                  f"{VEHICLE.folder}/data_info.json": "pointcloud_path",
                  f"{INFRA.folder}/data_info.json": "pointcloud_path"}

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._infos = {rel: self._existing(rel, key) for rel, key in self._INFO_KEYS.items()}

    def _existing(self, rel: str, key: str) -> dict[str, dict]:
        path = self.root / rel
        if not path.is_file():
            return {}
        entries = _read_json(path)
        if not isinstance(entries, list):
            raise DatasetError(path, "expected a list of entries")
        return {_stem(str(_get(e, path, key))): e for e in entries}

    def __enter__(self) -> DairWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()

    def add(self, frame: CooperativeFrame, frame_index: int,
            system_error_offset: tuple[float, float] = (0.0, 0.0)) -> str:
        """Write one frame (vehicle id 2*frame_index, infrastructure id 2*frame_index+1);
        returns the vehicle id."""
        if list(frame.agents) != [VEHICLE.agent, INFRA.agent]:
            raise ValueError(f"DAIR-V2X frames need agents ['vehicle', 'infrastructure'] in "
                             f"that order, got {list(frame.agents)}")
        dx, dy = (float(v) for v in system_error_offset)
        ids = {VEHICLE: f"{2 * frame_index:06d}", INFRA: f"{2 * frame_index + 1:06d}"}
        stored_infra = np.array(frame.agents[INFRA.agent].lidar_pose, np.float64)
        stored_infra[:2, 3] -= (dx, dy)
        vehicle_pose = frame.agents[VEHICLE.agent].lidar_pose
        world_calibs = {
            "lidar_to_novatel": {"transform": _rt_json(LIDAR_TO_NOVATEL)},
            "novatel_to_world": _rt_json(vehicle_pose @ np.linalg.inv(LIDAR_TO_NOVATEL)),
            "virtuallidar_to_world": _rt_json(stored_infra)}
        coop: dict[str, Any] = {}
        for side in SIDES:
            rel = self._write_side(side, frame, ids[side], world_calibs)
            coop[f"{side.agent}_image_path"] = f"{side.folder}/{rel['image_path']}"
            coop[f"{side.agent}_pointcloud_path"] = f"{side.folder}/{rel['pointcloud_path']}"
        vid = ids[VEHICLE]
        label_rel = f"{LABEL_WORLD}/{vid}.json"
        _write_json(self.root / label_rel, _world_label(frame.boxes, frame.box_classes))
        coop.update(cooperative_label_path=label_rel,
                    system_error_offset={"delta_x": dx, "delta_y": dy})
        self._infos[COOP_INFO][vid] = coop
        return vid

    def _write_side(self, side: _Side, frame: CooperativeFrame, fid: str,
                    world_calibs: dict[str, Any]) -> dict[str, str]:
        agent = frame.agents[side.agent]
        if not agent.cameras:
            raise ValueError(f"agent {side.agent} has no camera; DAIR-V2X needs one per agent")
        camera, folder, rel = agent.cameras[0], self.root / side.folder, side.paths(fid)
        write_pcd(_made(folder / rel["pointcloud_path"]), agent.points, binary=True)
        Image.fromarray(np.asarray(camera.image, np.uint8)).save(
            _made(folder / rel["image_path"]), quality=JPEG_QUALITY, subsampling=0)
        files = {name: world_calibs[name] for name in side.world_calibs}
        files[f"{side.lidar}_to_camera"] = _rt_json(np.asarray(camera.extrinsic, np.float64))
        files["camera_intrinsic"] = {"cam_K": np.asarray(camera.intrinsic, np.float64)
                                     .reshape(9).tolist(), "cam_D": [0.0] * 5}
        for name, data in files.items():
            _write_json(folder / _calib_path(name, fid), data)
        local = transform_boxes(np.linalg.inv(agent.lidar_pose), frame.boxes)
        _write_json(folder / rel["label_lidar_std_path"], _label_entries(local, frame.box_classes))
        stamp_us = str(frame.stamp_ns // NS_PER_US)
        self._infos[f"{side.folder}/data_info.json"][fid] = {
            **rel, "image_timestamp": stamp_us, "pointcloud_timestamp": stamp_us,
            "frame_id": fid, "batch_id": frame.scenario}
        return rel

    def close(self) -> None:
        """Write the data_info.json files."""
        for rel, entries in self._infos.items():
            _write_json(self.root / rel, list(entries.values()))


def write_dair_frame(root: Path, frame: CooperativeFrame, frame_index: int,
                     system_error_offset: tuple[float, float] = (0.0, 0.0)) -> str:
    """Write one frame and update the data_info files (prefer `DairWriter` for many frames)."""
    with DairWriter(root) as writer:
        return writer.add(frame, frame_index, system_error_offset)


# ---------------------------------------------------------------- loader

class DairV2XDataset:
    """Cooperative frames of a DAIR-V2X-C root, in cooperative/data_info.json order."""

    _REQUIRED = ("vehicle_pointcloud_path", "infrastructure_pointcloud_path",
                 "vehicle_image_path", "infrastructure_image_path", "cooperative_label_path")

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        info = self.root / COOP_INFO
        if not info.is_file():
            raise DatasetError(self.root, f"no {COOP_INFO}; {LAYOUT_HINT}")
        entries = _read_json(info)
        if not isinstance(entries, list):
            raise DatasetError(info, "expected a list of frame entries")
        for entry in entries:
            for key in self._REQUIRED:
                _get(entry, info, key)
        self._info_path = info
        self._entries: list[dict[str, Any]] = entries
        self._ids = [_stem(e["vehicle_pointcloud_path"]) for e in entries]
        self._by_id = {vid: i for i, vid in enumerate(self._ids)}
        self._stamps_us: dict[str, str] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def frame_ids(self) -> list[str]:
        """Vehicle frame ids in file order."""
        return list(self._ids)

    def load(self, index_or_vehicle_id: int | str, cameras: bool = True) -> CooperativeFrame:
        """Frame by position or vehicle id; agents "vehicle" (ego) and "infrastructure"."""
        if isinstance(index_or_vehicle_id, str):
            if index_or_vehicle_id not in self._by_id:
                raise KeyError(f"no DAIR frame with vehicle id {index_or_vehicle_id!r}")
            entry = self._entries[self._by_id[index_or_vehicle_id]]
        else:
            entry = self._entries[index_or_vehicle_id]
        offset = [float(_array(_get(entry, self._info_path, "system_error_offset", key), ((),),
                               self._info_path, f"system_error_offset.{key}"))
                  for key in ("delta_x", "delta_y")]
        agents = {}
        for side in SIDES:
            fid = _stem(entry[f"{side.agent}_pointcloud_path"])
            pose = self._lidar_pose(side, fid)
            if side is INFRA:
                pose[:2, 3] += offset
            agents[side.agent] = AgentFrame(
                side.agent, self._points(self.root / entry[f"{side.agent}_pointcloud_path"]),
                pose, [self._camera(side, fid, self.root / entry[f"{side.agent}_image_path"])]
                if cameras else [], is_rsu=side is INFRA)
        vid = _stem(entry["vehicle_pointcloud_path"])
        boxes, classes = self._labels(self.root / entry["cooperative_label_path"])
        return CooperativeFrame(scenario="dair", timestamp=vid, stamp_ns=self._stamp_ns(vid),
                                agents=agents, boxes=boxes, box_ids=np.arange(len(boxes)),
                                box_classes=classes)

    def _calib(self, side: _Side, name: str, fid: str) -> np.ndarray:
        path = self.root / side.folder / _calib_path(name, fid)
        return _rt_matrix(_read_json(path), path, *_CALIB_PREFIX.get(name, ()))

    def _lidar_pose(self, side: _Side, fid: str) -> np.ndarray:
        pose = np.eye(4)
        for name in side.world_calibs:
            pose = pose @ self._calib(side, name, fid)
        return pose

    def _camera(self, side: _Side, fid: str, image_path: Path) -> CameraFrame:
        path = self.root / side.folder / _calib_path("camera_intrinsic", fid)
        k = _array(_get(_read_json(path), path, "cam_K"), ((9,), (3, 3)), path, "cam_K")
        return CameraFrame(image=self._image(image_path), intrinsic=k.reshape(3, 3),
                           extrinsic=self._calib(side, f"{side.lidar}_to_camera", fid))

    @staticmethod
    def _points(path: Path) -> np.ndarray:
        if not path.is_file():
            raise DatasetError(path, "missing point cloud")
        return read_pcd(path)  # DatasetError naming the file when malformed

    @staticmethod
    def _image(path: Path) -> np.ndarray:
        if not path.is_file():
            raise DatasetError(path, "missing image")
        try:
            with Image.open(path) as image:
                return np.asarray(image.convert("RGB"), np.uint8)
        except OSError as exc:
            raise DatasetError(path, f"unreadable image: {exc}") from exc

    @staticmethod
    def _labels(path: Path) -> tuple[np.ndarray, list[str]]:
        objects = _read_json(path)
        if not isinstance(objects, list):
            raise DatasetError(path, "expected a list of objects")
        corners = [_array(_get(o, path, "world_8_points"), ((8, 3),), path,
                          f"object {i} world_8_points") for i, o in enumerate(objects)]
        classes = [str(_get(o, path, "type")).lower() for o in objects]
        boxes = _boxes_from_corners(np.stack(corners)) if corners else np.zeros((0, 7))
        return boxes, classes

    def _stamp_ns(self, vid: str) -> int:
        """Vehicle pointcloud_timestamp (microseconds) in ns, else int(id) * 100 ms."""
        if self._stamps_us is None:
            path = self.root / VEHICLE.folder / "data_info.json"
            entries = _read_json(path) if path.is_file() else []
            if not isinstance(entries, list):
                raise DatasetError(path, "expected a list of entries")
            self._stamps_us = {_stem(str(_get(e, path, "pointcloud_path"))):
                               e["pointcloud_timestamp"] for e in entries
                               if "pointcloud_timestamp" in e}
        stamp = self._stamps_us.get(vid)
        if stamp is None:
            return int(vid) * FALLBACK_PERIOD_NS
        try:
            return int(stamp) * NS_PER_US
        except (TypeError, ValueError) as exc:
            path = self.root / VEHICLE.folder / "data_info.json"
            raise DatasetError(path, f"pointcloud_timestamp {stamp!r} of {vid} is not an "
                                     "integer") from exc
