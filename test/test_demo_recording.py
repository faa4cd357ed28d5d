"""The demo's MCAP recording (issue 13, points 2 and 5), over one short run of the demo graph.

Every frame_id of every recorded message with a header (clouds, poses, markers, detections,
code maps, code-map images, ground truth) must resolve to `map` through the recorded TF at the
message's stamp, with no gap between TF samples longer than one frame period. The recording
must decode with the `mcap` + `mcap_ros2` readers (Foxglove's path) as well as with rosbags,
carry every output topic, and give the summary, the picture and the animated BEV.
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from codealign_ros.config import frame, topic
from codealign_ros.core.codemap import GridPose
from codealign_ros.core.tf import TfBuffer, Transform
from codealign_ros.data.bag import FRAME_RATE_HZ
from codealign_ros.demo.recording import EVENTS_TOPIC, bag_topics, iter_messages, load_recording

REPO = Path(__file__).resolve().parents[1]
FRAMES = 6
RATE = 0.05  # the demo's replay speed on 2 busy cores
PERIOD_NS = int(1e9 / FRAME_RATE_HZ)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """One 6-frame demo run in its own ROS domain (as conftest's `ros_domain` picks one)."""
    from codealign_ros.demo.runner import DemoOptions, run_demo

    out = tmp_path_factory.mktemp("demo_recording")
    domain = 1 + int(hashlib.sha256(f"{os.getpid()}:recording".encode()).hexdigest(), 16) % 100
    opts = DemoOptions(frames=FRAMES, rate=RATE, model_dir=str(REPO / "models/mini"),
                       data_dir=REPO / "data/demo", out_dir=out, domain_id=domain,
                       seconds=150.0, record_clouds="ego")
    summary = run_demo(opts)
    return summary, Path(summary["recording"])


def _stamp(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _headers(msg: Any) -> Iterator[Any]:
    """Every header of a message: its own, or each marker's."""
    if hasattr(msg, "markers"):
        yield from (m.header for m in msg.markers)
    elif hasattr(msg, "header"):
        yield msg.header


def _tf_buffer(recording: Path) -> tuple[TfBuffer, dict[str, list[int]]]:
    buffer, stamps = TfBuffer(max_gap_ns=PERIOD_NS), collections.defaultdict(list)
    for name, _, msg in iter_messages(recording, {topic("tf"), topic("tf_static")}):
        for t in msg.transforms:
            tr, q = t.transform.translation, t.transform.rotation
            static = name == topic("tf_static")
            buffer.add(Transform(t.header.frame_id, t.child_frame_id, _stamp(t.header),
                                 GridPose((tr.x, tr.y, tr.z), (q.x, q.y, q.z, q.w)).to_matrix(),
                                 static=static))
            if not static:
                stamps[t.child_frame_id].append(_stamp(t.header))
    return buffer, stamps


@pytest.mark.dds
def test_every_frame_id_resolves_to_map(demo: tuple[dict[str, Any], Path]) -> None:
    summary, recording = demo
    buffer, tf_stamps = _tf_buffer(recording)
    agents = list(summary["agents"])
    for agent in agents:  # a TF sample every frame period, no gap
        stamps = sorted(set(tf_stamps[frame("grid", agent=agent)]))
        assert len(stamps) >= FRAMES, (agent, stamps)
        assert max(np.diff(stamps)) <= PERIOD_NS, (agent, np.diff(stamps))
    skip = {topic("tf"), topic("tf_static"), EVENTS_TOPIC, topic("diagnostics")}
    checked: collections.Counter = collections.Counter()
    failures = []
    for name, _, msg in iter_messages(recording):
        if name in skip or name.endswith("/diagnostics"):
            continue
        for header in _headers(msg):
            if not header.frame_id:  # Float64 timings etc. carry no header
                continue
            ok, why = buffer.can_transform(frame("world"), header.frame_id, _stamp(header))
            checked[name] += 1
            if not ok:
                failures.append(f"{name} [{header.frame_id} @ {_stamp(header)}]: {why}")
    assert not failures, "\n".join(failures[:20])
    for wanted in (topic("detections"), topic("markers"), topic("codemap"), topic("gt_markers"),
                   *(topic("codemap_image", agent=a) for a in agents),
                   topic("lidar", agent=summary["ego"])):
        assert checked[wanted] > 0, (wanted, checked)
    for a in agents:  # `--record-clouds ego`: the other agents' clouds stay in the bag
        assert (checked[topic("lidar", agent=a)] > 0) == (a == summary["ego"]), (a, checked)
    frames_of = {frame("grid", agent=a) for a in agents}
    assert frames_of <= buffer.frames and frame("world") in buffer.frames


@pytest.mark.dds
def test_recording_decodes_with_mcap_readers(demo: tuple[dict[str, Any], Path]) -> None:
    """Foxglove's path: mcap + mcap_ros2 decode every message from the embedded schemas."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    summary, recording = demo
    assert (recording / "metadata.yaml").is_file()  # a rosbag2 directory: ros2 bag play
    counts: collections.Counter = collections.Counter()
    images = []
    (path,) = recording.glob("*.mcap")
    with path.open("rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        for schema, channel, _, decoded in reader.iter_decoded_messages():
            counts[channel.topic] += 1
            assert schema.encoding == "ros2msg" and channel.message_encoding == "cdr"
            if channel.topic.startswith(topic("codemap_image", agent="")):
                images.append(decoded)
    for wanted in (topic("detections"), topic("markers"), topic("codemap"), topic("diagnostics"),
                   topic("tf"), topic("tf_static"), topic("gt_objects"), EVENTS_TOPIC,
                   *(topic("codemap_image", agent=a) for a in summary["agents"])):
        assert counts[wanted] > 0, (wanted, counts)
    img = images[0]
    assert img.encoding == "rgb8" and len(img.data) == img.height * img.width * 3


@pytest.mark.dds
def test_summary_and_pictures_come_from_the_recording(demo: tuple[dict[str, Any], Path]
                                                      ) -> None:
    from PIL import Image

    summary, recording = demo
    records = load_recording(recording)
    kinds = collections.Counter(r["kind"] for r in records)
    assert kinds["roles"] == kinds["ready"] == kinds["end"] == 1
    assert kinds["detections"] >= summary["frames"]["fused"] > 0
    assert kinds["codemap"] == summary["codemap_bytes"]["maps"] > 0
    maps = [r for r in records if r["kind"] == "codemap"]
    assert all(r["indices"].shape == (r["height"], r["width"]) for r in maps)
    picture, animation = Image.open(summary["picture"]), Image.open(summary["animation"])
    assert picture.format == "PNG" and animation.format == "GIF"
    assert animation.n_frames == summary["frames"]["fused"]  # every fused evaluated frame
    assert (Path(summary["recording"]).parent / "codealign.rviz").is_file()


def test_writer_and_reader_round_trip(tmp_path: Path) -> None:
    """Without DDS: events, detections (e2e from the ego pose's arrival) and a code map written
    by RecordingWriter come back as the summary's records; a foreign directory is kept."""
    from codealign_ros.core.codemap import CodeMap, Encoding
    from codealign_ros.core.codemap_samples import realistic_code_map
    from codealign_ros.data.bag import typestore
    from codealign_ros.demo.recording import RecordingWriter

    store, path = typestore(), tmp_path / "recording"
    t = store.types
    header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=3, nanosec=0),
                                      frame_id="cav_1/lidar")
    det = t["codealign_msgs/msg/Detection3D"](
        center=t["geometry_msgs/msg/Point"](x=1.0, y=2.0, z=0.5),
        size=t["geometry_msgs/msg/Vector3"](x=4.0, y=2.0, z=1.5), yaw=0.1, score=0.9,
        class_name="car", contributing_agents=["cav_1", "rsu_1"])
    dets = t["codealign_msgs/msg/Detection3DArray"](header=header, detections=[det])
    pose = t["geometry_msgs/msg/PoseStamped"](header=header, pose=t["geometry_msgs/msg/Pose"](
        position=t["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
        orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)))
    indices = realistic_code_map(8, 8, 4, seed=2)
    code_map = CodeMap(indices=indices, bits=4, agent_id="rsu_1", modality="m2",
                       code_space="g2", codebook_hash="0123456789abcdef", stamp_ns=3 * 10**9,
                       frame_id="rsu_1/lidar", resolution=0.8, origin=(0.0, 0.0, 0.0),
                       pose=GridPose())
    writer = RecordingWriter(path)
    writer.event("roles", ego="cav_1", agents=["cav_1", "rsu_1"],
                 detections={"fused": topic("detections")},
                 diagnostics={"main": topic("diagnostics")}, processing=[], latency="")
    for name, typ, msg, t_ns in (
            (topic("pose", agent="cav_1"), "geometry_msgs/msg/PoseStamped", pose, 10**9),
            (topic("detections"), "codealign_msgs/msg/Detection3DArray", dets, 10**9 + 250e6)):
        writer.write(name, typ, store.serialize_cdr(msg, typ), int(t_ns))
    from rclpy.serialization import serialize_message  # no DDS: the message's own CDR

    from codealign_ros.ros.codemap_msg import codemap_to_msg

    raw = serialize_message(codemap_to_msg(code_map, Encoding.ZLIB))
    writer.write(topic("codemap"), "codealign_msgs/msg/CodeMap", raw, 2 * 10**9)
    writer.close()
    records = load_recording(path)
    by_kind = {r["kind"]: r for r in records}
    assert by_kind["detections"]["e2e_ms"] == 250.0
    assert by_kind["detections"]["agents"] == ["cav_1", "rsu_1"]
    assert by_kind["detections"]["boxes"] == [[1.0, 2.0, 0.5, 4.0, 2.0, 1.5, 0.1]]
    np.testing.assert_array_equal(by_kind["codemap"]["indices"], indices)
    assert by_kind["codemap"]["raw_bytes"] == 32
    # the recorder's e2e events (the publishers' clocks) take precedence over arrival times
    writer = RecordingWriter(path)
    writer.event("roles", ego="cav_1", agents=["cav_1"], detections={"fused": topic("detections")},
                 diagnostics={}, processing=[], latency="")
    for name, typ, msg, t_ns in (
            (topic("pose", agent="cav_1"), "geometry_msgs/msg/PoseStamped", pose, 10**9),
            (topic("detections"), "codealign_msgs/msg/Detection3DArray", dets, 10**9 + 2e6)):
        writer.write(name, typ, store.serialize_cdr(msg, typ), int(t_ns))
    writer.event("e2e", source="fused", stamp=3 * 10**9, ms=61.5)
    writer.close()
    dets_records = [r for r in load_recording(path) if r["kind"] == "detections"]
    assert [r["e2e_ms"] for r in dets_records] == [61.5]
    assert not any(r["kind"] == "e2e" for r in load_recording(path))
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        RecordingWriter(other)
    assert (other / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("msgtype", sorted({
    *(t for _, t, _ in bag_topics(["cav_1"])),
    "codealign_msgs/msg/CodeMap", "codealign_msgs/msg/Detection3DArray",
    "visualization_msgs/msg/MarkerArray", "diagnostic_msgs/msg/DiagnosticArray",
    "sensor_msgs/msg/Image", "std_msgs/msg/Float64", "std_msgs/msg/String"}))
def test_recorded_schemas_are_the_installed_types(msgtype: str) -> None:
    """The schemas the recording embeds (rosbags' typestore + our .msg files) hash like the
    installed interfaces the nodes serialize with, so every reader decodes what was sent."""
    from ament_index_python.packages import get_package_share_directory

    from codealign_ros.data.bag import typestore

    package, _, name = msgtype.split("/")
    described = json.loads((Path(get_package_share_directory(package)) / "msg"
                             / f"{name}.json").read_text())
    installed = {h["type_name"]: h["hash_string"] for h in described["type_hashes"]}
    assert typestore().hash_rihs01(msgtype) == installed[msgtype]
