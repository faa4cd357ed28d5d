"""Boxes -> MarkerArray / Detection3DArray: marker geometry checked against box_corners."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.serialization import deserialize_message, serialize_message
from std_msgs.msg import Header
from visualization_msgs.msg import Marker, MarkerArray

from codealign_msgs.msg import Detection3DArray
from codealign_ros.core.geometry import box_corners
from codealign_ros.ros.markers import (HAVE_VISION_MSGS, boxes_to_detections,
                                       boxes_to_marker_array, vision_detections)

BOXES = np.array([[1.0, 2.0, 3.0, 4.0, 2.0, 1.0, 0.0],
                  [-10.0, 5.0, -1.0, 4.5, 1.8, 1.6, np.pi / 2],
                  [30.0, -7.5, 0.5, 12.0, 2.5, 3.5, -2.3]])
GREEN = (0.0, 1.0, 0.0, 0.8)


def _points(marker: Marker) -> np.ndarray:
    return np.array([[p.x, p.y, p.z] for p in marker.points])


def _boxes(array: MarkerArray) -> list[Marker]:
    return [m for m in array.markers if m.type == Marker.LINE_LIST]


def test_delete_all_first_then_one_line_list_per_box() -> None:
    array = boxes_to_marker_array(BOXES, "map", 1_500_000_123, "fused", GREEN)
    first, *rest = array.markers
    assert first.action == Marker.DELETEALL
    assert [m.type for m in rest] == [Marker.LINE_LIST] * len(BOXES)
    assert [m.id for m in rest] == [0, 1, 2]
    for m in array.markers:
        assert m.header.frame_id == "map" and m.ns == "fused"
        assert (m.header.stamp.sec, m.header.stamp.nanosec) == (1, 500_000_123)
    for m in rest:
        assert m.action == Marker.ADD and len(m.points) == 24
        assert (m.lifetime.sec, m.lifetime.nanosec) == (0, 200_000_000)
        assert m.pose.orientation.w == 1.0 and m.scale.x > 0
        assert (m.color.r, m.color.g, m.color.b) == (0.0, 1.0, 0.0)
        assert m.color.a == pytest.approx(0.8)


def test_line_list_segments_are_the_box_edges() -> None:
    for marker, corners, box in zip(_boxes(boxes_to_marker_array(BOXES, "map", 0, "b", GREEN)),
                                    box_corners(BOXES), BOXES):
        segments = _points(marker).reshape(12, 2, 3)
        # Every endpoint is a corner, all 8 corners are used, each corner by 3 edges.
        hits = [np.flatnonzero(np.linalg.norm(corners - p, axis=1) < 1e-6)
                for p in segments.reshape(-1, 3)]
        assert all(len(h) == 1 for h in hits)
        assert np.bincount(np.concatenate(hits), minlength=8).tolist() == [3] * 8
        # Edge lengths: 4 x length, 4 x width, 4 x height; no edge repeated.
        lengths = np.sort(np.linalg.norm(segments[:, 0] - segments[:, 1], axis=1))
        np.testing.assert_allclose(lengths, np.sort(np.repeat(box[3:6], 4)), atol=1e-6)
        edges = {frozenset((int(a[0]), int(b[0]))) for a, b in zip(hits[0::2], hits[1::2])}
        assert len(edges) == 12
        np.testing.assert_allclose(_points(marker).mean(axis=0), box[:3], atol=1e-6)


def test_axis_aligned_box_spans_its_extents() -> None:
    (marker,) = _boxes(boxes_to_marker_array(BOXES[:1], "map", 0, "b", GREEN))
    pts = _points(marker)
    np.testing.assert_allclose(pts.min(axis=0), [-1.0, 1.0, 2.5])
    np.testing.assert_allclose(pts.max(axis=0), [3.0, 3.0, 3.5])


def test_yaw_quarter_turn_swaps_length_and_width() -> None:
    (marker,) = _boxes(boxes_to_marker_array(BOXES[1:2], "map", 0, "b", GREEN))
    pts = _points(marker)
    np.testing.assert_allclose(pts.max(axis=0) - pts.min(axis=0), [1.8, 4.5, 1.6], atol=1e-9)


def test_score_labels_above_each_box() -> None:
    scores = [0.91, 0.456, 0.2]
    array = boxes_to_marker_array(BOXES, "cav_1/lidar", Time(sec=5), "det", GREEN,
                                  scores=scores, lifetime_s=0.5)
    labels = [m for m in array.markers if m.type == Marker.TEXT_VIEW_FACING]
    assert [m.text for m in labels] == ["0.91", "0.46", "0.20"]
    assert {m.ns for m in labels} == {"det/scores"} and [m.id for m in labels] == [0, 1, 2]
    for m, box in zip(labels, BOXES):
        assert (m.pose.position.x, m.pose.position.y) == (box[0], box[1])
        assert m.pose.position.z > box[2] + box[5] / 2
        assert m.lifetime.nanosec == 500_000_000 and m.scale.z > 0


def test_no_boxes_gives_only_delete_all() -> None:
    array = boxes_to_marker_array(np.zeros((0, 7)), "map", 0, "b", GREEN, scores=[])
    assert [m.action for m in array.markers] == [Marker.DELETEALL]


def test_marker_array_survives_serialization() -> None:
    array = boxes_to_marker_array(BOXES, "map", 42, "b", (1.0, 0.0, 0.0), scores=[1, 0.5, 0])
    back = deserialize_message(serialize_message(array), MarkerArray)
    assert len(back.markers) == 1 + 2 * len(BOXES)
    np.testing.assert_allclose(_points(back.markers[3]), _points(array.markers[3]))


@pytest.mark.parametrize("boxes, match", [
    (np.zeros((2, 6)), "shape"), (np.zeros(7), "shape"),
    (np.array([[0, 0, 0, 1, 1, 1, np.nan]]), "NaN"),
    (np.array([[np.inf, 0, 0, 1, 1, 1, 0]]), "NaN")])
def test_bad_boxes_raise_value_error(boxes: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        boxes_to_marker_array(boxes, "map", 0, "b", GREEN)


@pytest.mark.parametrize("kwargs, match", [
    ({"scores": [0.5]}, "1 scores for 3 boxes"), ({"color": (2.0, 0, 0)}, "color"),
    ({"color": (1.0, 0.0)}, "color"), ({"lifetime_s": -1.0}, "lifetime"),
    ({"stamp": -5}, "stamp")])
def test_bad_arguments_raise_value_error(kwargs: dict, match: str) -> None:
    args = {"stamp": 0, "color": GREEN, **kwargs}
    with pytest.raises(ValueError, match=match):
        boxes_to_marker_array(BOXES, "map", ns="b", **args)


def test_detections_carry_boxes_scores_labels_and_agents() -> None:
    header = Header(frame_id="map", stamp=Time(sec=3, nanosec=7))
    msg = boxes_to_detections(BOXES, [0.9, 0.8, 0.7], ["car", "van", "truck"],
                              ["cav_1", "rsu_1"], header)
    assert isinstance(msg, Detection3DArray) and msg.header == header
    assert len(msg.detections) == len(BOXES)
    for det, box, score, name in zip(msg.detections, BOXES, [0.9, 0.8, 0.7],
                                     ["car", "van", "truck"]):
        np.testing.assert_allclose([det.center.x, det.center.y, det.center.z], box[:3])
        np.testing.assert_allclose([det.size.x, det.size.y, det.size.z], box[3:6])
        assert det.yaw == pytest.approx(box[6], abs=1e-6)
        assert det.score == pytest.approx(score) and det.class_name == name
        assert list(det.contributing_agents) == ["cav_1", "rsu_1"]
    back = deserialize_message(serialize_message(msg), Detection3DArray)
    assert [d.class_name for d in back.detections] == ["car", "van", "truck"]


def test_detections_broadcast_one_label_and_check_lengths() -> None:
    msg = boxes_to_detections(BOXES, [1, 1, 1], "car", [], Header(frame_id="map"))
    assert {d.class_name for d in msg.detections} == {"car"}
    for scores, labels in itertools.product(([1, 1], [1, 1, 1]), (["car"], "car")):
        if len(scores) == 3 and labels == "car":
            continue
        with pytest.raises(ValueError, match="for 3 boxes"):
            boxes_to_detections(BOXES, scores, labels, [], Header())


@pytest.mark.skipif(HAVE_VISION_MSGS, reason="vision_msgs installed")
def test_vision_detections_none_without_vision_msgs() -> None:
    assert vision_detections(BOXES, [1, 1, 1], "car", Header()) is None


@pytest.mark.skipif(not HAVE_VISION_MSGS, reason="vision_msgs not installed")
def test_vision_detections_pose_size_and_hypothesis() -> None:
    msg = vision_detections(BOXES, [0.9, 0.8, 0.7], "car", Header(frame_id="map"))
    assert len(msg.detections) == len(BOXES)
    for det, box in zip(msg.detections, BOXES):
        c = det.bbox.center
        np.testing.assert_allclose([c.position.x, c.position.y, c.position.z], box[:3])
        yaw = 2 * np.arctan2(c.orientation.z, c.orientation.w)
        assert np.cos(yaw - box[6]) == pytest.approx(1.0)
        np.testing.assert_allclose([det.bbox.size.x, det.bbox.size.y, det.bbox.size.z],
                                   box[3:6])
        assert det.results[0].hypothesis.class_id == "car"
