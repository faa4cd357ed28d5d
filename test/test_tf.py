"""TF (issue 13, point 1): the ROS-free buffer, the tf2_msgs interface, the broadcasters.

The buffer is checked against hand-computed transforms. The TFMessage type hash of the
workspace (the fallback interfaces/tf2_msgs here, a full install's elsewhere) must equal the
RIHS01 hash rosbags computes for the upstream definition, both as installed (the rosidl type
description) and as the RMW reports it for a live publisher. The broadcasters and the vehicle
node's pose relay run as real rclpy nodes over DDS.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from codealign_ros.core.geometry import yaw_matrix
from codealign_ros.core.tf import TfBuffer, TfError, Transform, frame_transforms, interpolate

MS = 1_000_000


def _buffer(max_gap_ns: int | None = 150 * MS) -> TfBuffer:
    """map -> a/lidar sampled at 0 and 100 ms, map -> b/lidar static, a/lidar -> a/camera0."""
    buf = TfBuffer(max_gap_ns)
    buf.add(Transform("map", "a/lidar", 0, yaw_matrix(0.0, 0.0, 0.0, 0.0)))
    buf.add(Transform("map", "a/lidar", 100 * MS, yaw_matrix(10.0, 0.0, 0.0, np.pi / 2)))
    buf.add(Transform("map", "b/lidar", 0, yaw_matrix(0.0, 5.0, 0.0, np.pi), static=True))
    buf.add(Transform("a/lidar", "a/camera0", 0, yaw_matrix(1.0, 0.0, 1.5, 0.0), static=True))
    return buf


def test_lookup_composes_the_chain_and_inverts() -> None:
    buf = _buffer()
    at = 100 * MS
    cam_in_map = yaw_matrix(10.0, 0.0, 0.0, np.pi / 2) @ yaw_matrix(1.0, 0.0, 1.5, 0.0)
    np.testing.assert_allclose(buf.lookup("map", "a/camera0", at), cam_in_map, atol=1e-9)
    np.testing.assert_allclose(buf.lookup("a/camera0", "map", at), np.linalg.inv(cam_in_map),
                               atol=1e-9)
    # across two agents: b's origin seen from a's camera
    b_in_cam = np.linalg.inv(cam_in_map) @ yaw_matrix(0.0, 5.0, 0.0, np.pi)
    np.testing.assert_allclose(buf.lookup("a/camera0", "b/lidar", at), b_in_cam, atol=1e-9)
    assert buf.frames == {"map", "a/lidar", "a/camera0", "b/lidar"}


def test_lookup_interpolates_between_samples() -> None:
    mid = _buffer().lookup("map", "a/lidar", 50 * MS)
    np.testing.assert_allclose(mid, yaw_matrix(5.0, 0.0, 0.0, np.pi / 4), atol=1e-9)
    np.testing.assert_allclose(interpolate(np.eye(4), yaw_matrix(2, 0, 0, 0.2), 0.25),
                               yaw_matrix(0.5, 0, 0, 0.05), atol=1e-9)


@pytest.mark.parametrize("target, source, stamp, reason", [
    ("map", "a/lidar", 101 * MS, "extrapolation"),
    ("map", "a/lidar", -1, "extrapolation"),
    ("map", "nowhere", 0, "unknown_frame"),
])
def test_lookup_failures_name_the_reason(target: str, source: str, stamp: int,
                                         reason: str) -> None:
    with pytest.raises(TfError) as err:
        _buffer().lookup(target, source, stamp)
    assert err.value.reason == reason
    assert _buffer().can_transform(target, source, stamp)[0] is False


def test_gap_longer_than_allowed_fails() -> None:
    buf = _buffer(max_gap_ns=50 * MS)
    with pytest.raises(TfError) as err:
        buf.lookup("map", "a/lidar", 40 * MS)
    assert err.value.reason == "gap"
    assert buf.can_transform("map", "a/lidar", 100 * MS) == (True, "")  # exact sample


def test_disconnected_trees_and_reparenting() -> None:
    buf = _buffer()
    buf.add(Transform("odom", "c/lidar", 0, np.eye(4), static=True))
    with pytest.raises(TfError) as err:
        buf.lookup("map", "c/lidar", 0)
    assert err.value.reason == "not_connected"
    with pytest.raises(TfError) as err:
        buf.add(Transform("odom", "a/lidar", 0, np.eye(4)))
    assert err.value.reason == "reparented"


def test_frame_transforms_follow_rep105() -> None:
    pose, ext = yaw_matrix(3.0, 4.0, 1.0, 0.3), yaw_matrix(0.5, 0.0, 1.0, 0.0)
    out = frame_transforms(7, {"a": pose}, {"a": [ext]}, "map", lambda a: f"{a}/lidar",
                           lambda a, i: f"{a}/camera{i}")
    assert [(t.parent, t.child, t.static) for t in out] == [
        ("map", "a/lidar", False), ("a/lidar", "a/camera0", True)]
    np.testing.assert_allclose(out[1].matrix, np.linalg.inv(ext))


# -- the tf2_msgs interface ------------------------------------------------------------------
def test_tfmessage_type_hash_matches_upstream() -> None:
    """The installed TFMessage (ours where the environment lacked tf2_msgs) has the RIHS01 hash
    of the upstream definition as rosbags' typestore computes it."""
    from ament_index_python.packages import get_package_share_directory
    from rosbags.typesys import Stores, get_typestore

    upstream = get_typestore(Stores.ROS2_KILTED).hash_rihs01("tf2_msgs/msg/TFMessage")
    described = json.loads((Path(get_package_share_directory("tf2_msgs"))
                            / "msg" / "TFMessage.json").read_text())
    installed = {h["type_name"]: h["hash_string"] for h in described["type_hashes"]}
    assert installed["tf2_msgs/msg/TFMessage"] == upstream
    assert upstream.startswith("RIHS01_")


def _spin_until(executor: object, done: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        executor.spin_once(timeout_sec=0.05)


@pytest.mark.dds
def test_broadcasters_and_pose_relay_over_dds(ros_domain: int) -> None:
    """/tf_static latched with the full set (a late subscriber gets both cameras), the RMW
    reports the upstream TFMessage hash, and the pose relay broadcasts map -> agent/lidar."""
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rosbags.typesys import Stores, get_typestore
    from tf2_msgs.msg import TFMessage

    from codealign_ros.config import topic
    from codealign_ros.ros.qos import qos_profile
    from codealign_ros.ros.tf import PoseTfRelay, TfBroadcaster

    context = Context()
    rclpy.init(context=context)
    try:
        sender = Node("tf_sender", context=context)
        receiver = Node("tf_receiver", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(sender)
        executor.add_node(receiver)
        extrinsics = [yaw_matrix(0.0, 0.0, 1.5, 0.0), yaw_matrix(0.0, 0.0, 1.5, np.pi)]
        relay = PoseTfRelay(sender, "cav_1", extrinsics)  # sends /tf_static now
        TfBroadcaster(sender)  # a second /tf publisher in the same node is fine
        pose_pub = sender.create_publisher(PoseStamped, topic("pose", agent="cav_1"),
                                           qos_profile("pose"))
        static: list[TFMessage] = []
        dynamic: list[TFMessage] = []
        time.sleep(0.5)  # the static set was sent before anyone listened: latched
        receiver.create_subscription(TFMessage, topic("tf_static"), static.append,
                                     qos_profile("tf_static"))
        receiver.create_subscription(TFMessage, topic("tf"), dynamic.append, qos_profile("tf"))
        _spin_until(executor, lambda: bool(static), 30.0, "the latched /tf_static")
        assert sorted(t.child_frame_id for t in static[-1].transforms) == [
            "cav_1/camera0", "cav_1/camera1"]
        assert {t.header.frame_id for t in static[-1].transforms} == {"cav_1/lidar"}
        info = receiver.get_publishers_info_by_topic(topic("tf_static"))
        upstream = get_typestore(Stores.ROS2_KILTED).hash_rihs01("tf2_msgs/msg/TFMessage")
        assert info and str(info[0].topic_type_hash) == upstream
        msg = PoseStamped()
        msg.header.frame_id, msg.header.stamp.sec = "map", 42
        msg.pose.position.x, msg.pose.orientation.w = 7.5, 1.0
        _spin_until(executor, lambda: pose_pub.get_subscription_count() > 0, 30.0,
                    "the relay's pose subscription")
        deadline = time.monotonic() + 30.0
        while not dynamic and time.monotonic() < deadline:
            pose_pub.publish(msg)
            for _ in range(10):
                executor.spin_once(timeout_sec=0.05)
        assert dynamic, "no /tf from the pose relay"
        t = dynamic[-1].transforms[0]
        assert (t.header.frame_id, t.child_frame_id, t.header.stamp.sec) == \
            ("map", "cav_1/lidar", 42)
        assert t.transform.translation.x == 7.5 and relay.sent >= 1
    finally:
        rclpy.shutdown(context=context)
