"""AgentFrame -> encoder input arrays (per agent) and batch collation into tensors.

LiDAR encoders: voxels (V, P, 4) float32, coords (V, 3) int32 (z, y, x), num_points (V,)
int32 per agent; collated: coords (V, 4) int32 (b, z, y, x). Camera encoders: images
(Ncam, 3, H, W) float32 ImageNet-normalised at profile camera.image_size, intrinsics
(Ncam, 3, 3) scaled to that size, cam_to_lidar (Ncam, 4, 4); collated with a batch axis.
"""
from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Sequence

import numpy as np

from codealign_ros import config
from codealign_ros.data.types import AgentFrame, CameraFrame
from codealign_ros.config.modalities import ENCODERS, encoder_kind, modality_spec
from codealign_ros.config.profiles import Profile
from codealign_ros.models.voxelize import voxelize

if TYPE_CHECKING:  # torch only for `collate` (training); deploy nodes use collate_arrays
    from torch import Tensor

__all__ = ["CAMERA_INPUTS", "IMAGENET_MEAN", "IMAGENET_STD", "LIDAR_INPUTS", "camera_depths",
           "camera_inputs", "collate", "collate_arrays", "encoder_inputs", "lidar_inputs",
           "resize_weights", "synthetic_points", "synthetic_rig"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LIDAR_INPUTS = ("voxels", "coords", "num_points")
CAMERA_INPUTS = ("images", "intrinsics", "cam_to_lidar")


def _resolve(name: str) -> tuple[str, str | None, int | None]:
    """(sensor, voxel_key, expected cameras) of a modality, encoder kind or "camera"."""
    if name == "camera":
        return "camera", None, None
    if name in ENCODERS:
        entry = encoder_kind(name)
        return entry.sensor, entry.voxel_key, None
    if name == "lidar":
        raise ValueError("encoder_inputs: 'lidar' is ambiguous (pillar or voxel3d voxels); "
                         "pass the encoder kind or the modality")
    table = config.lookup("modalities", "modalities")
    if name not in table:
        raise ValueError(f"encoder_inputs: {name!r} is no modality {sorted(table)}, encoder "
                         f"{sorted(ENCODERS)} or 'camera'")
    spec = modality_spec(name)
    entry = encoder_kind(spec["encoder"])
    cams = spec.get("cameras")
    return entry.sensor, entry.voxel_key, None if cams is None else int(cams)


def encoder_inputs(name: str, agent: AgentFrame, profile: Profile,
                   cameras: int | None = None) -> dict[str, np.ndarray]:
    """Inputs of one agent for modality / encoder kind / "camera" `name` (ValueError naming it).

    `cameras` overrides the expected camera count (else the modality's `cameras`, else any).
    """
    sensor, voxel_key, expected = _resolve(name)
    if sensor == "lidar":
        return lidar_inputs(agent.points, profile, voxel_key or "pillar", agent.agent_id)
    return camera_inputs(agent.cameras, profile, agent.agent_id,
                         cameras if cameras is not None else expected)


def lidar_inputs(points: np.ndarray, profile: Profile, voxel_key: str,
                 agent_id: str = "agent") -> dict[str, np.ndarray]:
    """Voxelised `points` with profile[voxel_key] settings."""
    spec = profile[voxel_key]
    try:
        vox = voxelize(points, profile.lidar_range, spec["voxel_size"], int(spec["max_points"]),
                       int(spec["max_voxels"]))
    except ValueError as exc:
        raise ValueError(f"agent {agent_id}: {exc}") from exc
    return {"voxels": vox.features, "coords": vox.coords, "num_points": vox.num_points}


def _check_camera(cam: CameraFrame, where: str) -> None:
    image = np.asarray(cam.image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 \
            or min(image.shape[:2]) < 1:
        raise ValueError(f"{where}: image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    k, ext = np.asarray(cam.intrinsic, np.float64), np.asarray(cam.extrinsic, np.float64)
    if k.shape != (3, 3) or ext.shape != (4, 4) or not (np.isfinite(k).all()
                                                       and np.isfinite(ext).all()):
        raise ValueError(f"{where}: intrinsic must be finite 3x3 and extrinsic finite 4x4")
    if k[0, 0] <= 0 or k[1, 1] <= 0 or abs(np.linalg.det(ext[:3, :3]) - 1.0) > 1e-3:
        raise ValueError(f"{where}: intrinsic needs fx, fy > 0 and extrinsic a rotation")


@lru_cache(maxsize=16)
def resize_weights(size_in: int, size_out: int) -> np.ndarray:
    """(out, in) float32 antialiased bilinear resampling matrix: torch's
    interpolate(mode="bilinear", align_corners=False, antialias=True) and PIL's BILINEAR
    (triangle filter widened by the downscale factor, weights normalised per output pixel)."""
    scale = size_in / size_out
    support = max(scale, 1.0)
    centre = (np.arange(size_out) + 0.5) * scale
    lo = np.maximum((centre - support + 0.5).astype(np.int64), 0)
    hi = np.minimum((centre + support + 0.5).astype(np.int64), size_in)
    src = np.arange(size_in)
    w = np.clip(1.0 - np.abs((src[None] - centre[:, None] + 0.5) / support), 0.0, None)
    w *= (src[None] >= lo[:, None]) & (src[None] < hi[:, None])
    return (w / w.sum(1, keepdims=True)).astype(np.float32)


def _resize_normalise(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, size H, size W) float32 ImageNet-normalised (two matrix
    products per image, no per-pixel Python)."""
    width, height = size
    x = np.ascontiguousarray(image).astype(np.float32) * np.float32(1 / 255.0)
    if x.shape[:2] != (height, width):
        rows, cols = resize_weights(x.shape[0], height), resize_weights(x.shape[1], width)
        x = (rows @ x.reshape(x.shape[0], -1)).reshape(height, x.shape[1], 3)
        x = cols[None] @ x  # (H', W, 3) -> (H', W', 3): BLAS, batched over rows
    mean = np.asarray(IMAGENET_MEAN, np.float32)
    std = np.asarray(IMAGENET_STD, np.float32)
    return np.ascontiguousarray(((x - mean) / std).transpose(2, 0, 1))


def camera_inputs(cameras: Sequence[CameraFrame], profile: Profile, agent_id: str = "agent",
                  count: int | None = None) -> dict[str, np.ndarray]:
    """Resized, normalised images with scaled intrinsics and camera -> LiDAR transforms."""
    if not cameras or (count is not None and len(cameras) != count):
        want = count if count is not None else "at least 1"
        raise ValueError(f"agent {agent_id}: has {len(cameras)} cameras, expected {want}")
    size = tuple(int(v) for v in profile["camera"]["image_size"])
    images, ks, poses = [], [], []
    for i, cam in enumerate(cameras):
        _check_camera(cam, f"agent {agent_id} camera {i}")
        h, w = cam.image.shape[:2]
        scale = np.diag([size[0] / w, size[1] / h, 1.0])
        images.append(_resize_normalise(cam.image, size))
        ks.append(scale @ np.asarray(cam.intrinsic, np.float64))
        poses.append(np.linalg.inv(np.asarray(cam.extrinsic, np.float64)))
    return {"images": np.stack(images), "intrinsics": np.stack(ks).astype(np.float32),
            "cam_to_lidar": np.stack(poses).astype(np.float32)}


def camera_depths(agent: AgentFrame, profile: Profile) -> np.ndarray:
    """(Ncam, H, W) float32 depth maps at camera.image_size (nearest); ValueError if missing."""
    width, height = (int(v) for v in profile["camera"]["image_size"])
    out = []
    for i, cam in enumerate(agent.cameras):
        if cam.depth is None:
            raise ValueError(f"agent {agent.agent_id} camera {i}: no depth map")
        import torch
        import torch.nn.functional as F

        d = torch.from_numpy(np.asarray(cam.depth, np.float32))[None, None]
        out.append(F.interpolate(d, size=(height, width), mode="nearest")[0, 0].numpy())
    return np.stack(out) if out else np.zeros((0, height, width), np.float32)


def _collate_lidar(items: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    voxels, coords, counts = [], [], []
    points = {np.asarray(d["voxels"]).shape[1:] for d in items}
    if len(points) != 1 or next(iter(points))[-1:] != (4,):
        raise ValueError(f"collate: voxels must share one (P, 4) shape, got {sorted(points)}")
    for b, d in enumerate(items):
        vox, crd, num = (np.asarray(d[k]) for k in LIDAR_INPUTS)
        if crd.shape != (len(vox), 3) or num.shape != (len(vox),):
            raise ValueError(f"collate: item {b} has coords {crd.shape} / num_points "
                             f"{num.shape} for {len(vox)} voxels")
        if len(vox) == 0:  # one empty voxel so that every agent is in the batch
            vox, crd, num = np.zeros((1, *vox.shape[1:]), np.float32), np.zeros((1, 3)), [0]
        voxels.append(np.asarray(vox, np.float32))
        coords.append(np.column_stack([np.full(len(crd), b), crd]).astype(np.int32))
        counts.append(np.asarray(num, np.int32))
    return {"voxels": np.concatenate(voxels), "coords": np.concatenate(coords),
            "num_points": np.concatenate(counts)}


def _collate_camera(items: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    out = {}
    for key, dtype in zip(CAMERA_INPUTS, (np.float32, np.float32, np.float32)):
        shapes = {np.asarray(d[key]).shape for d in items}
        if len(shapes) != 1:
            raise ValueError(f"collate: {key} shapes differ across agents: {sorted(shapes)}")
        out[key] = np.stack([np.asarray(d[key], dtype) for d in items])
    return out


def collate(items: Sequence[dict[str, np.ndarray]]) -> dict[str, Tensor]:
    """Batch per-agent inputs (all LiDAR or all camera) into encoder input tensors."""
    import torch

    return {k: torch.from_numpy(v) for k, v in collate_arrays(items).items()}


def collate_arrays(items: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Batch per-agent inputs (all LiDAR or all camera) into encoder input arrays."""
    if not items:
        raise ValueError("collate: no items")
    keys = {frozenset(d) for d in items}
    if keys == {frozenset(LIDAR_INPUTS)}:
        return _collate_lidar(items)
    if keys == {frozenset(CAMERA_INPUTS)}:
        return _collate_camera(items)
    raise ValueError(f"collate: items must all have {LIDAR_INPUTS} or {CAMERA_INPUTS}, got "
                     f"{sorted(sorted(k) for k in keys)}")


def synthetic_points(profile: Profile, count: int, rng: np.random.Generator) -> np.ndarray:
    """(count, 4) float32 random points inside the profile's LiDAR range."""
    r = np.asarray(profile.lidar_range)
    xyz = rng.uniform(r[:3], r[3:], size=(count, 3))
    return np.column_stack([xyz, rng.uniform(0, 1, count)]).astype(np.float32)


def synthetic_rig(count: int, image_size: Sequence[int], hfov_deg: float = 90.0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(count, 3, 3) K and (count, 4, 4) camera (OpenCV axes) -> LiDAR of a ring of cameras."""
    width, height = (float(v) for v in image_size)
    f = 0.5 * width / np.tan(np.radians(hfov_deg) / 2)
    k = np.array([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])
    poses = []
    for yaw in np.arange(count) * 2 * np.pi / count:
        forward, left = np.array([np.cos(yaw), np.sin(yaw), 0.0]), np.array([-np.sin(yaw),
                                                                            np.cos(yaw), 0.0])
        pose = np.eye(4)
        pose[:3, :3] = np.column_stack([-left, [0.0, 0.0, -1.0], forward])  # x right, y down
        pose[:3, 3] = 0.5 * forward + [0.0, 0.0, -0.2]
        poses.append(pose)
    return np.repeat(k[None], count, axis=0), np.stack(poses)
