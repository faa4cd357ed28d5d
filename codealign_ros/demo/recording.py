"""The demo recording: a standard MCAP rosbag2 of what the demo graph published (ROS-free).

`demo_recorder` writes it with `RecordingWriter` (rosbags, like `codealign convert`): every
message it receives, as the publisher's serialized CDR, logged at its wall-clock arrival time
(as `ros2 bag record` does), plus its own events (ready, done, timeout, end and the `roles`
of the topics) as JSON std_msgs/String on EVENTS_TOPIC. `ros2 bag play`, Foxglove and the
`mcap` readers open it. `load_recording` turns it back into the summary's records (one dict
per message, `kind` and `t` = arrival seconds; see codealign_ros.demo.summary).

Topics: the fused (and ego-only) detections and markers, code maps, code-map images,
/diagnostics, the vehicles' processing times, the fusion latency and, from the bag (subscribed
once the graph is up: `bag_topics`), /tf, /tf_static, ground truth, every agent's pose and
the LiDAR clouds of the recorder's `record_clouds` agents (none / the ego / all; the demo
records none by default: about 1 MB per cloud at 10 Hz, and they are all in the scene bag).
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from codealign_ros.config import topic
from codealign_ros.core.codemap import CodeMapError, Encoding, decompress, packed_size, \
    unpack_indices

EVENTS_TOPIC = "/demo/events"
STRING = "std_msgs/msg/String"


def bag_topics(agents: list[str],
               clouds: list[str] | None = None) -> list[tuple[str, str, str]]:
    """(topic, message type, QoS key) the recorder subscribes from the bag once all nodes
    are up (LiDAR clouds of the `clouds` agents only; None: every agent's); the bag player's
    start waits for these subscriptions too."""
    out = [(topic("tf"), "tf2_msgs/msg/TFMessage", "tf"),
           (topic("tf_static"), "tf2_msgs/msg/TFMessage", "tf_static"),
           (topic("gt_objects"), "codealign_msgs/msg/Detection3DArray", "output"),
           (topic("gt_markers"), "visualization_msgs/msg/MarkerArray", "output")]
    for a in agents:
        out.append((topic("pose", agent=a), "geometry_msgs/msg/PoseStamped", "pose"))
        if clouds is None or a in clouds:
            out.append((topic("lidar", agent=a), "sensor_msgs/msg/PointCloud2", "sensor"))
    return out


def type_name(cls: type) -> str:
    """"pkg/msg/Name" of a generated rclpy message class."""
    return f"{cls.__module__.split('.')[0]}/msg/{cls.__name__}"


class RecordingWriter:
    """An MCAP rosbag2 written message by message (already serialized CDR). An existing
    recording at `path` is replaced; another non-empty directory raises FileExistsError."""

    def __init__(self, path: Path | str) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        from codealign_ros.data.bag import offered_qos, typestore

        self.path, self.store, self._qos = Path(path), typestore(), offered_qos
        if self.path.exists():  # an earlier recording is replaced; anything else is kept
            if not (self.path / "metadata.yaml").is_file() and any(self.path.iterdir()):
                raise FileExistsError(f"{self.path} exists and is not a rosbag2 recording")
            shutil.rmtree(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = Writer(self.path, version=Writer.VERSION_LATEST,
                             storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        self.connections: dict[str, Any] = {}
        self.messages = 0

    def write(self, name: str, msgtype: str, data: bytes, t_ns: int | None = None) -> None:
        """One serialized message on topic `name` (arrival time `t_ns`, default now)."""
        if self.writer is None:
            return
        conn = self.connections.get(name)
        if conn is None:
            conn = self.connections[name] = self.writer.add_connection(
                name, msgtype, typestore=self.store, offered_qos_profiles=self._qos(name))
        self.writer.write(conn, time.time_ns() if t_ns is None else t_ns, bytes(data))
        self.messages += 1

    def event(self, kind: str, **fields: Any) -> None:
        """A recorder event as JSON on EVENTS_TOPIC."""
        text = json.dumps({"kind": kind, **fields})
        msg = self.store.types[STRING](data=text)
        self.write(EVENTS_TOPIC, STRING, self.store.serialize_cdr(msg, STRING))

    def close(self) -> None:
        """Finish the file (summary, metadata.yaml); later writes are ignored."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


# -- reading -------------------------------------------------------------------------------
def detection_arrays(msg: Any) -> tuple[list[list[float]], list[float], list[str]]:
    """(boxes [[x, y, z, l, w, h, yaw]], scores, contributing agents) of a Detection3DArray."""
    boxes = [[round(v, 4) for v in (d.center.x, d.center.y, d.center.z, d.size.x, d.size.y,
                                    d.size.z, d.yaw)] for d in msg.detections]
    scores = [round(float(d.score), 4) for d in msg.detections]
    agents = list(msg.detections[0].contributing_agents) if msg.detections else []
    return boxes, scores, agents


def _stamp(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def codemap_record(msg: Any, indices: bool = False) -> dict[str, Any]:
    """Sizes of one received code map: coded (on the wire) and raw (decoded packed stream);
    with `indices`, also the decoded (H, W) index map."""
    rec: dict[str, Any] = {"agent": msg.agent_id, "modality": msg.modality,
                           "space": msg.code_space, "stamp": _stamp(msg.header),
                           "bits": int(msg.bits), "height": int(msg.height),
                           "width": int(msg.width), "coded_bytes": len(msg.data)}
    try:
        encoding = Encoding(int(msg.encoding))
        rec["encoding"] = encoding.name.lower()
        expected = packed_size(int(msg.height), int(msg.width), int(msg.bits))
        packed = decompress(bytes(msg.data), encoding, expected)
        rec["raw_bytes"] = len(packed)
        if indices:
            rec["indices"] = unpack_indices(packed, rec["bits"], rec["height"], rec["width"])
    except (CodeMapError, ValueError) as exc:
        rec["error"] = str(exc)
    return rec


def _reader(path: Path) -> Any:
    from rosbags.highlevel import AnyReader

    from codealign_ros.data.bag import typestore

    return AnyReader([Path(path)], default_typestore=typestore())


def iter_messages(path: Path | str, topics: set[str] | None = None
                  ) -> Iterator[tuple[str, int, Any]]:
    """(topic, arrival ns, deserialized message) of a recording, in arrival order."""
    with _reader(Path(path)) as reader:
        conns = [c for c in reader.connections if topics is None or c.topic in topics]
        for conn, t_ns, raw in reader.messages(connections=conns):
            yield conn.topic, t_ns, reader.deserialize(raw, conn.msgtype)


def _roles(path: Path) -> dict[str, Any]:
    for _, _, msg in iter_messages(path, {EVENTS_TOPIC}):
        event = json.loads(msg.data)
        if event["kind"] == "roles":
            return event
    raise ValueError(f"{path}: no roles event on {EVENTS_TOPIC}")


def load_recording(path: Path | str, indices: bool = True) -> list[dict[str, Any]]:
    """The records of a recording (the summary's input): events; gt; pose (the ego's);
    codemap (with decoded `indices`); detections (source, e2e_ms = the recorder's `e2e`
    event: ego pose publish -> detections publish; in recordings without those events, ego
    pose arrival -> detections arrival); diagnostics (source); processing; latency."""
    path = Path(path)
    roles = _roles(path)
    dets = {t: s for s, t in roles["detections"].items()}
    diags = {t: s for s, t in roles["diagnostics"].items()}
    processing, latency = set(roles["processing"]), roles.get("latency") or ""
    ego_pose, codemap, gt = topic("pose", agent=roles["ego"]), topic("codemap"), \
        topic("gt_objects")
    pose_t: dict[int, float] = {}
    published: dict[tuple[str, int], float] = {}  # (source, stamp) -> e2e ms (`e2e` events)
    out: list[dict[str, Any]] = []
    wanted = {EVENTS_TOPIC, ego_pose, codemap, gt, latency, *dets, *diags, *processing}
    for name, t_ns, msg in iter_messages(path, wanted):
        t = t_ns / 1e9
        if name == EVENTS_TOPIC:
            event = json.loads(msg.data)
            if event["kind"] == "e2e":
                published.setdefault((event["source"], event["stamp"]), event["ms"])
                continue
            out.append({**event, "t": t})
        elif name == ego_pose:
            pose_t.setdefault(_stamp(msg.header), t)
            out.append({"kind": "pose", "t": t, "stamp": _stamp(msg.header)})
        elif name == gt:
            boxes, _, _ = detection_arrays(msg)
            out.append({"kind": "gt", "t": t, "stamp": _stamp(msg.header),
                        "frame_id": msg.header.frame_id, "boxes": boxes})
        elif name == codemap:
            out.append({"kind": "codemap", "t": t, **codemap_record(msg, indices)})
        elif name in dets:
            stamp, (boxes, scores, agents) = _stamp(msg.header), detection_arrays(msg)
            start = pose_t.get(stamp)
            out.append({"kind": "detections", "t": t, "source": dets[name], "stamp": stamp,
                        "frame_id": msg.header.frame_id, "boxes": boxes, "scores": scores,
                        "agents": agents,
                        "e2e_ms": None if start is None else round((t - start) * 1e3, 2)})
        elif name in diags:
            for status in msg.status:
                out.append({"kind": "diagnostics", "t": t, "source": diags[name],
                            "name": status.name, "hardware_id": status.hardware_id,
                            "level": int(status.level), "message": status.message,
                            "values": {kv.key: kv.value for kv in status.values}})
        elif name in processing:
            out.append({"kind": "processing", "t": t, "topic": name, "ms": float(msg.data)})
        elif name == latency:
            out.append({"kind": "latency", "t": t, "ms": float(msg.data)})
    if published:  # the publishers' clocks, not the recorder's arrival times
        for rec in out:
            if rec["kind"] == "detections":
                rec["e2e_ms"] = published.get((rec["source"], rec["stamp"]))
    return out


def read_clouds(path: Path | str, agent: str) -> dict[int, np.ndarray]:
    """header stamp -> (N, 4) x, y, z, intensity of `agent`'s recorded LiDAR clouds."""
    out: dict[int, np.ndarray] = {}
    for _, _, msg in iter_messages(path, {topic("lidar", agent=agent)}):
        if msg.point_step == 16 and [f.name for f in msg.fields][:4] == \
                ["x", "y", "z", "intensity"]:
            out.setdefault(_stamp(msg.header), np.frombuffer(bytes(msg.data), "<f4")
                           .reshape(-1, 4))
    return out
