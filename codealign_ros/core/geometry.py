"""Rigid transforms and 3D boxes (ROS-free).

Pose conventions of the datasets:
- OPV2V / CARLA: [x, y, z, roll, yaw, pitch] with angles in degrees (`pose6_to_matrix`,
  the same matrix as OpenCOOD's `x_to_world`).
- Boxes: (M, 7) arrays [x, y, z, l, w, h, yaw] with (x, y, z) the box centre, full extents
  in metres and yaw in radians about +z (counter-clockwise from +x).
"""
from __future__ import annotations

import numpy as np


def pose6_to_matrix(pose: np.ndarray | list[float]) -> np.ndarray:
    """4x4 sensor/object -> world transform from OPV2V [x, y, z, roll, yaw, pitch] (degrees)."""
    x, y, z, roll, yaw, pitch = (float(v) for v in pose)
    cr, sr = np.cos(np.radians(roll)), np.sin(np.radians(roll))
    cy, sy = np.cos(np.radians(yaw)), np.sin(np.radians(yaw))
    cp, sp = np.cos(np.radians(pitch)), np.sin(np.radians(pitch))
    return np.array([
        [cp * cy, cy * sp * sr - sy * cr, -cy * sp * cr - sy * sr, x],
        [sy * cp, sy * sp * sr + cy * cr, -sy * sp * cr + cy * sr, y],
        [sp, -cp * sr, cp * cr, z],
        [0.0, 0.0, 0.0, 1.0]])


def matrix_to_pose6(matrix: np.ndarray) -> np.ndarray:
    """Inverse of `pose6_to_matrix`: [x, y, z, roll, yaw, pitch] in degrees."""
    m = np.asarray(matrix, np.float64)
    pitch = np.degrees(np.arcsin(np.clip(m[2, 0], -1.0, 1.0)))
    yaw = np.degrees(np.arctan2(m[1, 0], m[0, 0]))
    roll = np.degrees(np.arctan2(-m[2, 1], m[2, 2]))
    return np.array([m[0, 3], m[1, 3], m[2, 3], roll, yaw, pitch])


def rt_to_matrix(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """4x4 transform from a 3x3 rotation and a 3-vector translation."""
    m = np.eye(4)
    m[:3, :3] = np.asarray(rotation, np.float64).reshape(3, 3)
    m[:3, 3] = np.asarray(translation, np.float64).reshape(3)
    return m


def yaw_matrix(x: float, y: float, z: float, yaw_rad: float) -> np.ndarray:
    """4x4 transform of a pose with position (x, y, z) and heading `yaw_rad` about +z."""
    c, s = np.cos(yaw_rad), np.sin(yaw_rad)
    return rt_to_matrix([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], [x, y, z])


def quaternion_xyzw(rotation: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w), w >= 0, of a 3x3 rotation matrix."""
    m = np.asarray(rotation, np.float64)
    # Shepperd: pivot on the largest of 4w^2, 4x^2, 4y^2, 4z^2 for numerical stability.
    diag = np.array([m.trace(), m[0, 0] - m[1, 1] - m[2, 2], m[1, 1] - m[0, 0] - m[2, 2],
                     m[2, 2] - m[0, 0] - m[1, 1]])
    pivot = int(np.argmax(diag))
    s = 2.0 * np.sqrt(max(1.0 + diag[pivot], 1e-12))
    w_, x_, y_, z_ = {
        0: (s / 4, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s),
        1: ((m[2, 1] - m[1, 2]) / s, s / 4, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s),
        2: ((m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, s / 4, (m[1, 2] + m[2, 1]) / s),
        3: ((m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, s / 4),
    }[pivot]
    q = np.array([x_, y_, z_, w_])
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 transform to (N, >=3) points; extra columns (intensity) are kept."""
    pts = np.asarray(points)
    out = pts.astype(np.float64, copy=True)
    out[:, :3] = pts[:, :3] @ np.asarray(matrix)[:3, :3].T + np.asarray(matrix)[:3, 3]
    return out.astype(pts.dtype, copy=False)


def wrap_angle(angle: np.ndarray | float) -> np.ndarray | float:
    """Angle(s) wrapped into [-pi, pi)."""
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi


# Box edges as pairs of `box_corners` indices: bottom face, top face, verticals.
BOX_EDGES = np.array([(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4),
                      (0, 4), (1, 5), (2, 6), (3, 7)])


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """(M, 8, 3) corners of [x, y, z, l, w, h, yaw] boxes: bottom face first, then top,
    each counter-clockwise starting at (+l/2, +w/2)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 7)
    sx = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * 0.5
    sy = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * 0.5
    sz = np.array([-1, -1, -1, -1, 1, 1, 1, 1]) * 0.5
    lx, ly, lz = b[:, 3:4] * sx, b[:, 4:5] * sy, b[:, 5:6] * sz
    c, s = np.cos(b[:, 6:7]), np.sin(b[:, 6:7])
    return np.stack([b[:, 0:1] + c * lx - s * ly, b[:, 1:2] + s * lx + c * ly,
                     b[:, 2:3] + lz], axis=-1)


def corners_to_boxes(corners: np.ndarray) -> np.ndarray:
    """[x, y, z, l, w, h, yaw] from (M, 8, 3) corners in the `box_corners` order
    (boxes assumed upright, as in the datasets' labels)."""
    c = np.asarray(corners, np.float64).reshape(-1, 8, 3)
    centre = c.mean(axis=1)
    front = (c[:, 0] + c[:, 3]) / 2 - (c[:, 1] + c[:, 2]) / 2
    side = (c[:, 0] + c[:, 1]) / 2 - (c[:, 3] + c[:, 2]) / 2
    length, width = np.linalg.norm(front[:, :2], axis=1), np.linalg.norm(side[:, :2], axis=1)
    height = c[:, 4:, 2].mean(axis=1) - c[:, :4, 2].mean(axis=1)
    yaw = np.arctan2(front[:, 1], front[:, 0])
    return np.column_stack([centre, length, width, height, yaw])


def transform_boxes(matrix: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Boxes moved by a 4x4 transform whose rotation is about +z (yaw adds up)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 7).copy()
    m = np.asarray(matrix, np.float64)
    b[:, :3] = b[:, :3] @ m[:3, :3].T + m[:3, 3]
    b[:, 6] = wrap_angle(b[:, 6] + np.arctan2(m[1, 0], m[0, 0]))
    return b
