"""TF publishing: tf2_ros broadcasters when importable, else our equivalents (same topics, QoS).

`TfBroadcaster` publishes tf2_msgs/TFMessage on topics.yaml `tf` (tf2's QoS: reliable, depth
100); `StaticTfBroadcaster` keeps every static transform by child frame and republishes the
whole set on `tf_static` (transient local, depth 1), as tf2_ros.StaticTransformBroadcaster does,
so a late subscriber still receives all of them. Both take `send_transform(list)`.
`PoseTfRelay` turns an agent's pose topic into `map -> <agent>/lidar` (vehicle_node publish_tf).
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
from geometry_msgs.msg import PoseStamped, Quaternion, Transform, TransformStamped, Vector3
from rclpy.node import Node
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

from codealign_ros.config import frame, topic
from codealign_ros.core.geometry import quaternion_xyzw
from codealign_ros.ros.qos import qos_profile


def tf2_ros_available() -> bool:
    """True when the ROS 2 tf2_ros package is importable."""
    try:
        import tf2_ros  # noqa: F401
    except ImportError:
        return False
    return True


def transform_stamped(parent: str, child: str, matrix: np.ndarray, stamp: Any) -> TransformStamped:
    """TransformStamped parent <- child (the child's pose in the parent) of a 4x4 matrix."""
    m = np.asarray(matrix, np.float64)
    x, y, z, w = (float(v) for v in quaternion_xyzw(m[:3, :3]))
    tx, ty, tz = (float(v) for v in m[:3, 3])
    return TransformStamped(header=Header(stamp=stamp, frame_id=parent), child_frame_id=child,
                            transform=Transform(translation=Vector3(x=tx, y=ty, z=tz),
                                                rotation=Quaternion(x=x, y=y, z=z, w=w)))


class TfBroadcaster:
    """Dynamic transforms on /tf."""

    def __init__(self, node: Node) -> None:
        self._tf2 = None
        if tf2_ros_available():
            import tf2_ros

            self._tf2 = tf2_ros.TransformBroadcaster(node, qos=qos_profile("tf"))
        else:
            self._pub = node.create_publisher(TFMessage, topic("tf"), qos_profile("tf"))

    def send_transform(self, transforms: Sequence[TransformStamped]) -> None:
        """Publish `transforms` in one TFMessage."""
        if self._tf2 is not None:
            self._tf2.sendTransform(list(transforms))
        else:
            self._pub.publish(TFMessage(transforms=list(transforms)))


class StaticTfBroadcaster:
    """Static transforms on /tf_static (latched; the full set every time)."""

    def __init__(self, node: Node) -> None:
        self._tf2 = None
        self._all: dict[str, TransformStamped] = {}
        if tf2_ros_available():
            import tf2_ros

            self._tf2 = tf2_ros.StaticTransformBroadcaster(node, qos=qos_profile("tf_static"))
        else:
            self._pub = node.create_publisher(TFMessage, topic("tf_static"),
                                              qos_profile("tf_static"))

    def send_transform(self, transforms: Iterable[TransformStamped]) -> None:
        """Add (or replace, by child frame) `transforms` and publish the whole set."""
        transforms = list(transforms)
        if self._tf2 is not None:
            self._tf2.sendTransform(transforms)
            return
        self._all.update({t.child_frame_id: t for t in transforms})
        self._pub.publish(TFMessage(transforms=list(self._all.values())))


class PoseTfRelay:
    """Broadcasts `frame("world") -> frame("grid")` of `agent` from its pose topic, plus the
    static grid -> camera i transforms of `extrinsics` (4x4 LiDAR -> camera each)."""

    def __init__(self, node: Node, agent: str, extrinsics: Sequence[np.ndarray] = ()) -> None:
        self.world, self.grid = frame("world"), frame("grid", agent=agent)
        self.broadcaster = TfBroadcaster(node)
        self.sent = 0
        if len(extrinsics):
            stamp = node.get_clock().now().to_msg()
            StaticTfBroadcaster(node).send_transform(
                transform_stamped(self.grid, frame("camera", agent=agent, index=i),
                                  np.linalg.inv(np.asarray(ext, np.float64)), stamp)
                for i, ext in enumerate(extrinsics))
        node.create_subscription(PoseStamped, topic("pose", agent=agent), self._on_pose,
                                 qos_profile("pose"))

    def _on_pose(self, msg: PoseStamped) -> None:
        p, q = msg.pose.position, msg.pose.orientation
        if not np.isfinite([p.x, p.y, p.z, q.x, q.y, q.z, q.w]).all():
            return  # the vehicle pipeline counts it (nan_pose); TF must not carry it
        self.broadcaster.send_transform([TransformStamped(
            header=Header(stamp=msg.header.stamp, frame_id=self.world), child_frame_id=self.grid,
            transform=Transform(translation=Vector3(x=p.x, y=p.y, z=p.z), rotation=q))])
        self.sent += 1
