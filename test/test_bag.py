"""Frames written by write_bag read back intact with rosbags (mcap and sqlite3)."""
from __future__ import annotations

import argparse
import importlib
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml
from rosbags.highlevel import AnyReader

from codealign_ros.config import frame, topic
from codealign_ros.core.codemap import GridPose
from codealign_ros.core.geometry import box_corners, pose6_to_matrix
from codealign_ros.data.bag import BagStats, msg_dir, quaternion_xyzw, typestore, write_bag
from codealign_ros.data.convert import add_convert_parser, iter_dataset_frames
from codealign_ros.data.types import AgentFrame, CameraFrame, CooperativeFrame, DatasetError

STAMP0 = 1_700_000_000_123_456_789
AGENTS = ("cav_641", "rsu_1")
K = np.array([[20.0, 0.0, 8.0], [0.0, 20.0, 6.0], [0.0, 0.0, 1.0]])


def make_frames(count: int = 3, points: int = 50, seed: int = 0) -> list[CooperativeFrame]:
    """Small frames: 2 agents x (points, one 16x12 camera), 3 boxes."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(count):
        agents = {
            name: AgentFrame(
                agent_id=name, points=rng.normal(size=(points, 4)).astype(np.float32),
                lidar_pose=pose6_to_matrix([10.0 * i, j, 1.8, 2.0, 30.0 + 40 * j, -3.0]),
                cameras=[CameraFrame(image=rng.integers(0, 256, (12, 16, 3), dtype=np.uint8),
                                     intrinsic=K, extrinsic=np.eye(4))],
                is_rsu=name.startswith("rsu"))
            for j, name in enumerate(AGENTS)}
        boxes = np.column_stack([rng.normal(size=(3, 3)) * 10, [4.5, 2.0, 1.6] * np.ones((3, 3)),
                                 rng.uniform(-np.pi, np.pi, 3)])
        frames.append(CooperativeFrame(
            scenario="s", timestamp=f"{i:06d}", stamp_ns=STAMP0 + i * 100_000_000,
            agents=agents, boxes=boxes, box_ids=np.array([7, 11, 42]),
            box_classes=["car", "truck", "car"]))
    return frames


@pytest.fixture(scope="module")
def frames() -> list[CooperativeFrame]:
    return make_frames()


@pytest.fixture(scope="module", params=["mcap", "sqlite3"])
def bag(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
        frames: list[CooperativeFrame]) -> tuple[Path, BagStats, dict[str, list]]:
    """A written bag, its stats and its messages: topic -> [(type, bag stamp, raw, msg)]."""
    out = tmp_path_factory.mktemp(request.param) / "bag"
    stats = write_bag(frames, out, storage=request.param, progress=False)
    messages: dict[str, list] = defaultdict(list)
    with AnyReader([out]) as reader:
        for conn, stamp, raw in reader.messages():
            messages[conn.topic].append(
                (conn.msgtype, stamp, bytes(raw), reader.deserialize(raw, conn.msgtype)))
    return out, stats, messages


def sensor_topics(agent: str) -> dict[str, str]:
    return {topic("lidar", agent=agent): "sensor_msgs/msg/PointCloud2",
            topic("camera_image", agent=agent, index=0): "sensor_msgs/msg/Image",
            topic("camera_info", agent=agent, index=0): "sensor_msgs/msg/CameraInfo",
            topic("pose", agent=agent): "geometry_msgs/msg/PoseStamped"}


def test_topics_types_counts_and_stamps(bag, frames) -> None:
    _, stats, messages = bag
    expected = {topic("gt_objects"): "codealign_msgs/msg/Detection3DArray",
                topic("gt_markers"): "visualization_msgs/msg/MarkerArray",
                topic("tf"): "tf2_msgs/msg/TFMessage"}
    for agent in AGENTS:
        expected.update(sensor_topics(agent))
    tf_static = {topic("tf_static"): "tf2_msgs/msg/TFMessage"}
    assert {name: msgs[0][0] for name, msgs in messages.items()} == {**expected, **tf_static}
    stamps = [f.stamp_ns for f in frames]
    for name, msgs in messages.items():
        if name in (topic("tf"), topic("tf_static")):
            continue  # test_tf_of_every_frame
        assert [stamp for _, stamp, _, _ in msgs] == stamps
        headers = [m.markers[-1].header if hasattr(m, "markers") else m.header
                   for *_, m in msgs]
        assert [h.stamp.sec * 10**9 + h.stamp.nanosec for h in headers] == stamps
    assert (stats.frames, stats.messages, stats.agent_frames) == (3, 3 * len(expected) + 1, 6)
    assert stats.duration_s == pytest.approx(0.2)
    assert stats.agent_seconds == pytest.approx(0.6)
    assert stats.bytes > 3 * 2 * 50 * 16 and stats.bytes_per_agent_second > 0


def test_tf_of_every_frame(bag, frames) -> None:
    """map -> <agent>/lidar per frame = the LiDAR pose; <agent>/lidar -> <agent>/camera<i>
    once, static, latched = inv(extrinsic); both resolve through core.tf.TfBuffer."""
    from codealign_ros.core.tf import TfBuffer, Transform
    from codealign_ros.data.bag import camera_frame

    path, _, messages = bag
    buffer = TfBuffer(max_gap_ns=100_000_000)
    for name in (topic("tf_static"), topic("tf")):
        for _, _, _, msg in messages[name]:
            for t in msg.transforms:
                tr, q = t.transform.translation, t.transform.rotation
                matrix = GridPose((tr.x, tr.y, tr.z), (q.x, q.y, q.z, q.w)).to_matrix()
                buffer.add(Transform(t.header.frame_id, t.child_frame_id,
                                     t.header.stamp.sec * 10**9 + t.header.stamp.nanosec,
                                     matrix, static=name == topic("tf_static")))
    assert len(messages[topic("tf_static")]) == 1 and len(messages[topic("tf")]) == len(frames)
    for fr in frames:
        for agent, src in fr.agents.items():
            grid = frame("grid", agent=agent)
            np.testing.assert_allclose(buffer.lookup(frame("world"), grid, fr.stamp_ns),
                                       src.lidar_pose, atol=1e-6)
            for i, cam in enumerate(src.cameras):
                np.testing.assert_allclose(
                    buffer.lookup(frame("world"), camera_frame(agent, i), fr.stamp_ns),
                    src.lidar_pose @ np.linalg.inv(cam.extrinsic), atol=1e-6)
    with AnyReader([path]) as reader:
        qos = {c.topic: c.ext.offered_qos_profiles for c in reader.connections}
    assert qos[topic("tf_static")][0].durability.name == "TRANSIENT_LOCAL"
    assert qos[topic("tf_static")][0].depth == 1


def test_sensor_messages_equal_the_frames(bag, frames) -> None:
    _, _, messages = bag
    for agent in AGENTS:
        lidar, image, info, pose = (messages[name] for name in sensor_topics(agent))
        for i, fr in enumerate(frames):
            src = fr.agents[agent]
            cloud = lidar[i][3]
            assert cloud.header.frame_id == frame("grid", agent=agent)
            assert (cloud.point_step, cloud.width, cloud.height) == (16, 50, 1)
            assert [f.name for f in cloud.fields] == ["x", "y", "z", "intensity"]
            decoded = np.frombuffer(cloud.data.tobytes(), dtype="<f4").reshape(-1, 4)
            np.testing.assert_array_equal(decoded, src.points)
            img = image[i][3]
            assert (img.encoding, img.height, img.width, img.step) == ("rgb8", 12, 16, 48)
            assert img.header.frame_id == f"{agent}/camera0"
            assert img.data.tobytes() == src.cameras[0].image.tobytes()
            cam = info[i][3]
            assert (cam.height, cam.width, cam.distortion_model) == (12, 16, "plumb_bob")
            np.testing.assert_array_equal(cam.k.reshape(3, 3), K)
            np.testing.assert_array_equal(cam.p.reshape(3, 4)[:, :3], K)
            assert not cam.d.any() and not cam.p.reshape(3, 4)[:, 3].any()
            msg = pose[i][3]
            assert msg.header.frame_id == frame("world")
            p, q = msg.pose.position, msg.pose.orientation
            matrix = GridPose((p.x, p.y, p.z), (q.x, q.y, q.z, q.w)).to_matrix()
            np.testing.assert_allclose(matrix, src.lidar_pose, atol=1e-12)


def test_ground_truth_messages(bag, frames) -> None:
    _, _, messages = bag
    for fr, (*_, objects), (*_, markers) in zip(frames, messages[topic("gt_objects")],
                                                messages[topic("gt_markers")]):
        assert objects.header.frame_id == frame("world")
        got = np.array([[d.center.x, d.center.y, d.center.z, d.size.x, d.size.y, d.size.z,
                         d.yaw] for d in objects.detections])
        np.testing.assert_allclose(got, fr.boxes, rtol=1e-6)
        assert [d.class_name for d in objects.detections] == fr.box_classes
        assert all(d.score == 1.0 and not d.contributing_agents for d in objects.detections)
        first, *boxes = markers.markers
        assert first.action == first.DELETEALL
        assert [m.id for m in boxes] == [7, 11, 42]
        for m, corners in zip(boxes, box_corners(fr.boxes)):
            assert (m.type, m.ns, m.header.frame_id) == (m.LINE_LIST, "gt", frame("world"))
            assert (m.color.g, m.color.r, m.lifetime.nanosec) == (1.0, 0.0, 200_000_000)
            points = np.array([[p.x, p.y, p.z] for p in m.points])
            assert len(points) == 24
            # every edge joins two corners; each corner ends 3 edges
            hits = np.isclose(points[:, None], corners[None]).all(axis=2)
            assert (hits.sum(axis=1) == 1).all() and (hits.sum(axis=0) == 3).all()


def test_metadata_is_standard_rosbag2(bag) -> None:
    out, stats, _ = bag
    info = yaml.safe_load((out / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    for key in ("version", "storage_identifier", "relative_file_paths", "duration",
                "starting_time", "message_count", "topics_with_message_count"):
        assert key in info
    assert info["message_count"] == stats.messages
    assert info["starting_time"]["nanoseconds_since_epoch"] == STAMP0
    assert all((out / name).is_file() for name in info["relative_file_paths"])


def test_rclpy_reads_the_bag_bytes(bag, frames) -> None:
    """The CDR written by rosbags deserialises with the rclpy classes of this environment."""
    from rclpy.serialization import deserialize_message

    _, _, messages = bag
    for msgs in messages.values():
        msgtype, _, raw, _ = msgs[0]
        package, _, name = msgtype.partition("/msg/")
        msg = deserialize_message(raw, getattr(importlib.import_module(f"{package}.msg"), name))
        if name == "PointCloud2":
            decoded = np.frombuffer(bytes(msg.data), dtype="<f4").reshape(-1, 4)
            assert any(np.array_equal(decoded, a.points) for a in frames[0].agents.values())
        if name == "Detection3DArray":
            assert [d.class_name for d in msg.detections] == frames[0].box_classes
            assert msg.detections[2].center.x == pytest.approx(frames[0].boxes[2, 0])


def test_codealign_types_hash_like_the_installed_package() -> None:
    """Bag type hashes equal the ones rosidl generated, so ROS tools accept the bag."""
    from ament_index_python.packages import get_package_share_directory

    share = Path(get_package_share_directory("codealign_msgs")) / "msg"
    for path in sorted(msg_dir().glob("*.msg")):
        described = json.loads((share / f"{path.stem}.json").read_text())
        expected = described["type_hashes"][0]["hash_string"]
        assert typestore().hash_rihs01(f"codealign_msgs/msg/{path.stem}") == expected


def test_quaternion_round_trips_through_grid_pose() -> None:
    rng = np.random.default_rng(1)
    angles = [(0, 0, 0), (0, 180, 0), (180, 0, 0), (0, 0, 180), *rng.uniform(-180, 180, (50, 3))]
    for roll, yaw, pitch in angles:
        matrix = pose6_to_matrix([0, 0, 0, roll, yaw, pitch])
        q = quaternion_xyzw(matrix[:3, :3])
        assert q[3] >= 0 and np.linalg.norm(q) == pytest.approx(1.0)
        np.testing.assert_allclose(GridPose(orientation=tuple(q)).to_matrix(), matrix,
                                   atol=1e-12)


def test_write_refuses_existing_output_and_removes_partial_bags(tmp_path: Path) -> None:
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(Exception, match="exists"):
        write_bag(make_frames(1), existing, progress=False)
    bad = make_frames(2)
    bad[1].agents["rsu_1"].points = np.zeros((5, 3), np.float32)
    with pytest.raises(ValueError, match="N, 4"):
        write_bag(bad, tmp_path / "partial", progress=False)
    assert not (tmp_path / "partial").exists()
    with pytest.raises(ValueError, match="storage"):
        write_bag([], tmp_path / "x", storage="rosbag1", progress=False)


def convert(*argv: str) -> int:
    """Run `convert argv` through the sub-command's own parser."""
    parser = argparse.ArgumentParser()
    add_convert_parser(parser.add_subparsers())
    args = parser.parse_args(["convert", "--no-progress", *argv])
    return args.func(args)


def test_dataset_errors_propagate(tmp_path: Path) -> None:
    skipped: list[str] = []
    with pytest.raises(DatasetError, match="not a directory"):
        iter_dataset_frames("opv2v", tmp_path / "missing", skip_bad=True,
                            on_skip=lambda label, err: skipped.append(label))
    with pytest.raises(ValueError, match="unknown dataset"):
        iter_dataset_frames("kitti", tmp_path)
    assert skipped == []
    assert convert("--dataset", "opv2v", "--root", str(tmp_path / "missing"),
                   "--out", str(tmp_path / "bag")) == 2
    assert not (tmp_path / "bag").exists()


def test_convert_opv2v_skips_bad_frames_only_when_asked(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    from codealign_ros.data import opv2v
    frames = make_frames()
    for fr in frames:
        opv2v.write_opv2v_frame(tmp_path / "opv2v", "train", fr)  # the default split
    bad = tmp_path / "opv2v" / "train" / "s" / "-1" / "000001.yaml"
    bad.write_text("lidar_pose: [1, 2\n")
    with pytest.raises(DatasetError, match="000001.yaml"):
        list(iter_dataset_frames("opv2v", tmp_path / "opv2v"))
    skipped: list[str] = []
    loaded = iter_dataset_frames("opv2v", tmp_path / "opv2v", "s", skip_bad=True,
                                 on_skip=lambda label, err: skipped.append(label))
    assert [fr.timestamp for fr in loaded] == ["000000", "000002"] and skipped == ["s/000001"]

    root, out = str(tmp_path / "opv2v"), tmp_path / "bag"
    assert convert("--dataset", "opv2v", "--root", root, "--out", str(out)) == 2
    assert convert("--dataset", "opv2v", "--root", root, "--out", str(out),
                   "--scenario", "nope", "--skip-bad") == 2
    assert convert("--dataset", "opv2v", "--root", root, "--out", str(out), "--skip-bad") == 0
    assert "frames:    2 (1 skipped)" in capsys.readouterr().out
    with AnyReader([out]) as reader:
        assert reader.topics[topic("gt_objects")].msgcount == 2
        assert reader.topics[topic("lidar", agent="rsu_1")].msgcount == 2


def test_convert_dairv2x(tmp_path: Path) -> None:
    from codealign_ros.data import dairv2x
    from codealign_ros.data.synth import as_dair

    with dairv2x.DairWriter(tmp_path / "dair") as writer:
        for index, fr in enumerate(make_frames(2)):
            writer.add(as_dair(fr), index)
    args = ["--dataset", "dairv2x", "--root", str(tmp_path / "dair"), "--storage", "sqlite3"]
    assert convert(*args, "--out", str(tmp_path / "bag"), "--scenario", "s") == 2
    assert convert(*args, "--out", str(tmp_path / "bag")) == 0
    with AnyReader([tmp_path / "bag"]) as reader:
        assert reader.topics[topic("lidar", agent="vehicle")].msgcount == 2
        assert reader.topics[topic("pose", agent="infrastructure")].msgcount == 2


def test_synth_and_convert_default_to_the_same_split() -> None:
    from codealign_ros.cli import build_parser

    synth = build_parser().parse_args(["synth", "--out", "x"])
    conv = build_parser().parse_args(["convert", "--dataset", "opv2v", "--root", "x",
                                      "--out", "y"])
    assert synth.split == conv.split == "train"
