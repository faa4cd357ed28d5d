"""3D boxes -> RViz markers and detection messages.

Boxes are (N, 7) [x, y, z, l, w, h, yaw] arrays (centre, full extents in metres, yaw in
radians about +z), as in codealign_ros.core.geometry. Markers follow the ground-truth
markers of data/bag.py: DELETEALL first, then one LINE_LIST of the 12 box edges per box.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from builtin_interfaces.msg import Duration, Time
from codealign_msgs.msg import Detection3D, Detection3DArray
from geometry_msgs.msg import Point, Pose, Vector3
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from codealign_ros.core.geometry import BOX_EDGES, box_corners

try:
    import vision_msgs.msg as _vision_msgs
except ImportError:
    _vision_msgs = None

HAVE_VISION_MSGS = _vision_msgs is not None
NS_PER_S = 1_000_000_000
LINE_WIDTH = 0.1  # metres, as the ground-truth markers of data/bag.py
TEXT_HEIGHT = 1.0  # metres, height of the score labels
TEXT_OFFSET = 0.5  # metres above the box top

__all__ = ["HAVE_VISION_MSGS", "box_edge_points", "boxes_to_detections",
           "boxes_to_marker_array", "vision_detections"]


def _checked_boxes(boxes: Any) -> np.ndarray:
    """(N, 7) float64 boxes; ValueError for another shape or non-finite values."""
    b = np.asarray(boxes, dtype=np.float64)
    if b.size == 0:
        return np.zeros((0, 7))
    if b.ndim != 2 or b.shape[1] != 7:
        raise ValueError(f"boxes must be an (N, 7) [x, y, z, l, w, h, yaw] array, got shape "
                         f"{b.shape}")
    if not np.isfinite(b).all():
        raise ValueError("boxes contain NaN or infinite values")
    return b


def _checked_scores(scores: Any, count: int) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(s) != count:
        raise ValueError(f"{len(s)} scores for {count} boxes")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    return s


def _checked_labels(labels: str | Sequence[str], count: int) -> list[str]:
    if isinstance(labels, str):
        return [labels] * count
    names = [str(label) for label in labels]
    if len(names) != count:
        raise ValueError(f"{len(names)} labels for {count} boxes")
    return names


def _stamp(stamp: Time | int | None) -> Time:
    if stamp is None:
        return Time()
    if isinstance(stamp, Time):
        return stamp
    ns = int(stamp)
    if ns < 0:
        raise ValueError(f"stamp must be >= 0 ns, got {ns}")
    return Time(sec=ns // NS_PER_S, nanosec=ns % NS_PER_S)


def _color(color: Sequence[float]) -> ColorRGBA:
    values = [float(c) for c in color]
    if len(values) == 3:
        values.append(1.0)
    if len(values) != 4 or not all(0.0 <= c <= 1.0 for c in values):
        raise ValueError(f"color must be (r, g, b[, a]) in [0, 1], got {tuple(color)}")
    return ColorRGBA(r=values[0], g=values[1], b=values[2], a=values[3])


def _duration(seconds: float) -> Duration:
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"lifetime_s must be finite and >= 0, got {seconds}")
    ns = round(seconds * NS_PER_S)
    return Duration(sec=ns // NS_PER_S, nanosec=ns % NS_PER_S)


def box_edge_points(boxes: Any) -> np.ndarray:
    """(N, 24, 3) LINE_LIST points: the 12 edges of each box as corner pairs."""
    return box_corners(_checked_boxes(boxes))[:, BOX_EDGES.reshape(-1)]


def _marker(header: Header, ns: str, id_: int, type_: int, color: ColorRGBA,
            lifetime: Duration) -> Marker:
    marker = Marker(header=header, ns=ns, id=id_, type=type_, action=Marker.ADD,
                    color=color, lifetime=lifetime, frame_locked=False)
    marker.pose.orientation.w = 1.0
    return marker


def _score_label(header: Header, ns: str, id_: int, box: np.ndarray, score: float,
                 color: ColorRGBA, lifetime: Duration) -> Marker:
    marker = _marker(header, ns, id_, Marker.TEXT_VIEW_FACING, color, lifetime)
    marker.pose.position = Point(x=float(box[0]), y=float(box[1]),
                                 z=float(box[2] + box[5] / 2 + TEXT_OFFSET))
    marker.scale.z = TEXT_HEIGHT
    marker.text = f"{score:.2f}"
    return marker


def boxes_to_marker_array(boxes: Any, frame_id: str, stamp: Time | int | None, ns: str,
                          color: Sequence[float], scores: Any = None,
                          lifetime_s: float = 0.2) -> MarkerArray:
    """DELETEALL, then one LINE_LIST (id = box index, namespace `ns`) per box and, with
    `scores`, one TEXT_VIEW_FACING label per box (namespace `ns`/scores) above it.

    `stamp` is a builtin_interfaces/Time or integer nanoseconds; `color` (r, g, b[, a]).
    Raises ValueError for malformed boxes, scores, colour or lifetime.
    """
    b = _checked_boxes(boxes)
    s = None if scores is None else _checked_scores(scores, len(b))
    header = Header(frame_id=frame_id, stamp=_stamp(stamp))
    rgba, lifetime = _color(color), _duration(lifetime_s)
    markers = [Marker(header=header, ns=ns, action=Marker.DELETEALL)]
    for i, corners in enumerate(box_edge_points(b)):
        marker = _marker(header, ns, i, Marker.LINE_LIST, rgba, lifetime)
        marker.scale.x = LINE_WIDTH
        marker.points = [Point(x=x, y=y, z=z) for x, y, z in corners.tolist()]
        markers.append(marker)
    if s is not None:
        markers += [_score_label(header, f"{ns}/scores", i, box, score, rgba, lifetime)
                    for i, (box, score) in enumerate(zip(b, s.tolist()))]
    return MarkerArray(markers=markers)


def boxes_to_detections(boxes: Any, scores: Any, labels: str | Sequence[str],
                        contributing: Sequence[str], header: Header) -> Detection3DArray:
    """codealign_msgs/Detection3DArray: one Detection3D per box; `labels` is one class name
    per box (or one for all); `contributing` lists the agents fused for this frame."""
    b = _checked_boxes(boxes)
    s = _checked_scores(scores, len(b))
    names = _checked_labels(labels, len(b))
    agents = [str(agent) for agent in contributing]
    return Detection3DArray(header=header, detections=[
        Detection3D(center=Point(x=box[0], y=box[1], z=box[2]),
                    size=Vector3(x=box[3], y=box[4], z=box[5]), yaw=box[6], score=score,
                    class_name=name, contributing_agents=agents)
        for box, score, name in zip(b.tolist(), s.tolist(), names)])


def _yaw_pose(box: Sequence[float]) -> Pose:
    """Pose at the box centre, rotated by its yaw about +z."""
    pose = Pose(position=Point(x=box[0], y=box[1], z=box[2]))
    pose.orientation.z, pose.orientation.w = math.sin(box[6] / 2), math.cos(box[6] / 2)
    return pose


def vision_detections(boxes: Any, scores: Any, labels: str | Sequence[str],
                      header: Header) -> Any:
    """vision_msgs/Detection3DArray of the boxes (yaw as a quaternion about +z), or None
    when vision_msgs is not installed."""
    if not HAVE_VISION_MSGS:
        return None
    b = _checked_boxes(boxes)
    s = _checked_scores(scores, len(b))
    names = _checked_labels(labels, len(b))
    detections = []
    for i, (box, score, name) in enumerate(zip(b.tolist(), s.tolist(), names)):
        det = _vision_msgs.Detection3D(header=header, id=str(i))
        det.bbox.center = _yaw_pose(box)
        det.bbox.size = Vector3(x=box[3], y=box[4], z=box[5])
        hypothesis = _vision_msgs.ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id, hypothesis.hypothesis.score = name, score
        hypothesis.pose.pose = _yaw_pose(box)
        det.results = [hypothesis]
        detections.append(det)
    return _vision_msgs.Detection3DArray(header=header, detections=detections)
