"""Cooperative frames -> rosbag2 (mcap or sqlite3) with `rosbags` only (no rclpy).

Every frame becomes these messages, all stamped `frame.stamp_ns` (header and bag time):

- per agent: `topic("lidar")` sensor_msgs/PointCloud2 (x, y, z, intensity FLOAT32,
  point_step 16, in `frame("grid")`); per camera `topic("camera_image")` sensor_msgs/Image
  (rgb8) and `topic("camera_info")` sensor_msgs/CameraInfo (K, P = [K | 0], plumb_bob with
  zero distortion) in frame "<agent>/camera<i>"; `topic("pose")` geometry_msgs/PoseStamped,
  the LiDAR -> world pose in `frame("world")`.
- `topic("gt_objects")` codealign_msgs/Detection3DArray and `topic("gt_markers")`
  visualization_msgs/MarkerArray (DELETEALL, then one green LINE_LIST per box), in
  `frame("world")`.

- TF (REP 105 / REP 103, `core.tf.frame_transforms`): `topic("tf")` tf2_msgs/TFMessage with
  `frame("world")` -> `frame("grid")` of every agent (its LiDAR -> world pose) per frame, and
  `topic("tf_static")` with `frame("grid")` -> `frame("camera")` i of every camera
  (inv(cameras[i].extrinsic)), written again (the full set, as tf2's static broadcaster does)
  whenever a frame brings a new one; its connection offers the latched QoS of tf2.
"""
from __future__ import annotations

import functools
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness, QosReliability,
                                QosTime)
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore
from tqdm import tqdm

from codealign_ros.config import frame, qos_settings, topic
from codealign_ros.core.geometry import BOX_EDGES, box_corners, quaternion_xyzw
from codealign_ros.core.tf import Transform, frame_transforms
from codealign_ros.data.types import NS_PER_S, AgentFrame, CooperativeFrame

FRAME_RATE_HZ = 10.0  # OPV2V and DAIR-V2X tick rate; one agent-frame = 0.1 agent-seconds
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
MARKER_LIFETIME_NS = 200_000_000
MARKER_LINE_WIDTH = 0.1

POINTCLOUD2 = "sensor_msgs/msg/PointCloud2"
IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
DETECTION3D_ARRAY = "codealign_msgs/msg/Detection3DArray"
MARKER_ARRAY = "visualization_msgs/msg/MarkerArray"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"

Message = tuple[str, str, object]  # (topic, message type, rosbags message)


def newest_ros2_store() -> Stores:
    """The newest ROS 2 distribution rosbags ships a typestore for."""
    return [store for store in Stores if store.name.startswith("ROS2_")][-1]


def msg_dir() -> Path:
    """Directory of the codealign_msgs .msg files: the checkout's, else the ament share."""
    checkout = Path(__file__).resolve().parents[2] / "codealign_msgs" / "msg"
    if checkout.is_dir():
        return checkout
    from ament_index_python.packages import get_package_share_directory
    return Path(get_package_share_directory("codealign_msgs")) / "msg"


@functools.lru_cache(maxsize=None)
def typestore() -> Typestore:
    """The newest ROS 2 typestore plus codealign_msgs, parsed from its .msg files."""
    store = get_typestore(newest_ros2_store())
    types: dict[str, Any] = {}
    for path in sorted(msg_dir().glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"codealign_msgs/msg/{path.stem}"))
    store.register(types)
    return store


def camera_frame(agent: str, index: int) -> str:
    """Optical frame of an agent's camera i (x right, y down, z forward)."""
    return frame("camera", agent=agent, index=index)


class _Builder:
    """Builds the rosbags messages of one frame from the typestore's classes."""

    def __init__(self, store: Typestore) -> None:
        self.t = store.types

    def header(self, stamp_ns: int, frame_id: str) -> Any:
        stamp = self.t["builtin_interfaces/msg/Time"](sec=stamp_ns // NS_PER_S,
                                                      nanosec=stamp_ns % NS_PER_S)
        return self.t["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)

    def point(self, xyz: Iterable[float]) -> Any:
        x, y, z = (float(v) for v in xyz)
        return self.t["geometry_msgs/msg/Point"](x=x, y=y, z=z)

    def vector(self, xyz: Iterable[float]) -> Any:
        x, y, z = (float(v) for v in xyz)
        return self.t["geometry_msgs/msg/Vector3"](x=x, y=y, z=z)

    def pose(self, matrix: np.ndarray) -> Any:
        x, y, z, w = quaternion_xyzw(matrix[:3, :3])
        orientation = self.t["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w)
        return self.t["geometry_msgs/msg/Pose"](position=self.point(matrix[:3, 3]),
                                                orientation=orientation)

    def transforms(self, transforms: Iterable[Transform]) -> Any:
        """tf2_msgs/TFMessage of `transforms` (each stamped with its own time)."""
        stamped = self.t["geometry_msgs/msg/TransformStamped"]
        out = []
        for t in transforms:
            pose = self.pose(t.matrix)
            p, q = pose.position, pose.orientation
            out.append(stamped(header=self.header(t.stamp_ns, t.parent), child_frame_id=t.child,
                               transform=self.t["geometry_msgs/msg/Transform"](
                                   translation=self.vector((p.x, p.y, p.z)), rotation=q)))
        return self.t[TF_MESSAGE](transforms=out)

    def pointcloud(self, points: np.ndarray, header: Any) -> Any:
        xyzi = np.ascontiguousarray(points, dtype="<f4")
        if xyzi.ndim != 2 or xyzi.shape[1] != 4:
            raise ValueError(f"expected (N, 4) points, got shape {xyzi.shape}")
        field = self.t["sensor_msgs/msg/PointField"]
        return self.t[POINTCLOUD2](
            header=header, height=1, width=len(xyzi),
            fields=[field(name=name, offset=4 * i, datatype=field.FLOAT32, count=1)
                    for i, name in enumerate(("x", "y", "z", "intensity"))],
            is_bigendian=False, point_step=16, row_step=16 * len(xyzi),
            data=xyzi.reshape(-1).view(np.uint8), is_dense=bool(np.isfinite(xyzi[:, :3]).all()))

    def image(self, rgb: np.ndarray, header: Any) -> Any:
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected a uint8 (H, W, 3) image, got {rgb.dtype} {rgb.shape}")
        height, width = rgb.shape[:2]
        return self.t[IMAGE](header=header, height=height, width=width, encoding="rgb8",
                             is_bigendian=0, step=3 * width,
                             data=np.ascontiguousarray(rgb).reshape(-1))

    def camera_info(self, intrinsic: np.ndarray, height: int, width: int, header: Any) -> Any:
        k = np.asarray(intrinsic, np.float64).reshape(3, 3)
        roi = self.t["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        return self.t[CAMERA_INFO](
            header=header, height=height, width=width, distortion_model="plumb_bob",
            d=np.zeros(5), k=k.reshape(-1), r=np.eye(3).reshape(-1),
            p=np.hstack([k, np.zeros((3, 1))]).reshape(-1), binning_x=0, binning_y=0, roi=roi)

    def detections(self, frame_: CooperativeFrame, header: Any) -> Any:
        det = self.t["codealign_msgs/msg/Detection3D"]
        boxes = np.asarray(frame_.boxes, np.float64).reshape(-1, 7)
        return self.t[DETECTION3D_ARRAY](header=header, detections=[
            det(center=self.point(box[:3]), size=self.vector(box[3:6]), yaw=float(box[6]),
                score=1.0, class_name=name, contributing_agents=[])
            for box, name in zip(boxes, frame_.box_classes)])

    def marker(self, header: Any, action: int, type_: int = 0, id_: int = 0,
               points: list[Any] | None = None) -> Any:
        marker = self.t["visualization_msgs/msg/Marker"]
        return marker(
            header=header, ns="gt", id=id_, type=type_, action=action,
            pose=self.pose(np.eye(4)), scale=self.vector((MARKER_LINE_WIDTH, 0.0, 0.0)),
            color=self.t["std_msgs/msg/ColorRGBA"](r=0.0, g=1.0, b=0.0, a=1.0),
            lifetime=self.t["builtin_interfaces/msg/Duration"](sec=0, nanosec=MARKER_LIFETIME_NS),
            frame_locked=False, points=points or [], colors=[], texture_resource="",
            texture=self.t["sensor_msgs/msg/CompressedImage"](
                header=self.header(0, ""), format="", data=np.zeros(0, np.uint8)),
            uv_coordinates=[], text="", mesh_resource="",
            mesh_file=self.t["visualization_msgs/msg/MeshFile"](
                filename="", data=np.zeros(0, np.uint8)),
            mesh_use_embedded_materials=False)

    def markers(self, frame_: CooperativeFrame, header: Any) -> Any:
        marker = self.t["visualization_msgs/msg/Marker"]
        edges = box_corners(frame_.boxes)[:, BOX_EDGES.reshape(-1)]  # (M, 24, 3)
        boxes = [self.marker(header, marker.ADD, marker.LINE_LIST, int(box_id),
                             [self.point(p) for p in corners])
                 for box_id, corners in zip(frame_.box_ids, edges)]
        return self.t[MARKER_ARRAY](markers=[self.marker(header, marker.DELETEALL), *boxes])


def agent_messages(build: _Builder, agent: AgentFrame, stamp_ns: int) -> Iterator[Message]:
    """Messages of one agent: LiDAR, cameras (image + info), pose."""
    name = agent.agent_id
    yield (topic("lidar", agent=name), POINTCLOUD2,
           build.pointcloud(agent.points, build.header(stamp_ns, frame("grid", agent=name))))
    for i, camera in enumerate(agent.cameras):
        header = build.header(stamp_ns, camera_frame(name, i))
        height, width = camera.image.shape[:2]
        yield topic("camera_image", agent=name, index=i), IMAGE, build.image(camera.image, header)
        yield (topic("camera_info", agent=name, index=i), CAMERA_INFO,
               build.camera_info(camera.intrinsic, height, width, header))
    pose = build.t[POSE_STAMPED](header=build.header(stamp_ns, frame("world")),
                                 pose=build.pose(np.asarray(agent.lidar_pose, np.float64)))
    yield topic("pose", agent=name), POSE_STAMPED, pose


def transforms_of(frame_: CooperativeFrame) -> list[Transform]:
    """TF of one frame: world -> grid per agent, grid -> camera i (static)."""
    return frame_transforms(
        frame_.stamp_ns, {a: ag.lidar_pose for a, ag in frame_.agents.items()},
        {a: [c.extrinsic for c in ag.cameras] for a, ag in frame_.agents.items()},
        frame("world"), lambda a: frame("grid", agent=a), camera_frame)


def frame_messages(frame_: CooperativeFrame, store: Typestore | None = None,
                   static: dict[str, Transform] | None = None) -> Iterator[Message]:
    """All messages of one frame, in bag order: TF, agents (ego first), ground truth.

    `static` collects the static transforms written so far (child -> transform); /tf_static is
    written (with all of them) only when this frame adds one. None: a fresh collection.
    """
    build = _Builder(store or typestore())
    static = {} if static is None else static
    transforms = transforms_of(frame_)
    fresh = [t for t in transforms if t.static and t.child not in static]
    static.update({t.child: t for t in fresh})
    if fresh:
        yield topic("tf_static"), TF_MESSAGE, build.transforms(static.values())
    yield topic("tf"), TF_MESSAGE, build.transforms(t for t in transforms if not t.static)
    for agent in frame_.agents.values():
        yield from agent_messages(build, agent, frame_.stamp_ns)
    header = build.header(frame_.stamp_ns, frame("world"))
    yield topic("gt_objects"), DETECTION3D_ARRAY, build.detections(frame_, header)
    yield topic("gt_markers"), MARKER_ARRAY, build.markers(frame_, header)


def bag_qos(key: str) -> Qos:
    """The rosbags Qos of topics.yaml `qos.<key>` (offered by a bag connection)."""
    q, never = qos_settings(key), QosTime(0, 0)
    return Qos(history=QosHistory[q["history"].upper()], depth=int(q["depth"]),
               reliability=QosReliability[q["reliability"].upper()],
               durability=QosDurability[q["durability"].upper()], deadline=never,
               lifespan=never, liveliness=QosLiveliness.AUTOMATIC,
               liveliness_lease_duration=never, avoid_ros_namespace_conventions=False)


def offered_qos(name: str) -> tuple[Qos, ...]:
    """QoS a bag connection of topic `name` offers: tf2's for /tf and /tf_static, else none
    (the player's defaults by type)."""
    keys = {topic("tf"): "tf", topic("tf_static"): "tf_static"}
    return (bag_qos(keys[name]),) if name in keys else ()


@dataclass
class BagStats:
    """What `write_bag` wrote."""

    frames: int = 0
    messages: int = 0
    bytes: int = 0  # on disk, all files of the bag directory
    agent_frames: int = 0
    duration_s: float = 0.0  # bag time from the first to the last frame
    wall_s: float = 0.0  # time spent writing

    @property
    def agent_seconds(self) -> float:
        """Sensor time covered, summed over agents (agent-frames at FRAME_RATE_HZ)."""
        return self.agent_frames / FRAME_RATE_HZ

    @property
    def frames_per_s(self) -> float:
        """Write throughput."""
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def bytes_per_agent_second(self) -> float:
        """Bag size per agent-second of sensor data."""
        return self.bytes / self.agent_seconds if self.agent_frames else 0.0


def write_bag(frames: Iterable[CooperativeFrame], out: Path, storage: str = "mcap",
              progress: bool = True, total: int | None = None) -> BagStats:
    """Write frames into a new rosbag2 directory `out` (must not exist).

    On an error the partly written bag is removed. `total` sizes the progress bar.
    """
    if storage not in STORAGES:
        raise ValueError(f"unknown storage {storage!r}; choose from {', '.join(STORAGES)}")
    out, store, stats = Path(out), typestore(), BagStats()
    connections: dict[str, Any] = {}
    first_ns = last_ns = None
    static: dict[str, Transform] = {}
    started = time.monotonic()
    writer = Writer(out, version=Writer.VERSION_LATEST, storage_plugin=STORAGES[storage])
    try:
        with writer:
            for frame_ in tqdm(frames, total=total, unit="frame", disable=not progress):
                for name, msgtype, msg in frame_messages(frame_, store, static):
                    conn = connections.get(name)
                    if conn is None:
                        conn = connections[name] = writer.add_connection(
                            name, msgtype, typestore=store,
                            offered_qos_profiles=offered_qos(name))
                    writer.write(conn, frame_.stamp_ns, store.serialize_cdr(msg, msgtype))
                    stats.messages += 1
                stats.frames += 1
                stats.agent_frames += len(frame_.agents)
                first_ns = frame_.stamp_ns if first_ns is None else min(first_ns, frame_.stamp_ns)
                last_ns = frame_.stamp_ns if last_ns is None else max(last_ns, frame_.stamp_ns)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # ours: Writer refuses an existing path
        raise
    stats.wall_s = time.monotonic() - started
    stats.bytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    stats.duration_s = (last_ns - first_ns) / NS_PER_S if first_ns is not None else 0.0
    return stats
