"""The generated mini V2X world: determinism, sensor geometry, occlusion, ground-truth motion."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from codealign_ros.core.geometry import box_corners, transform_points, yaw_matrix
from codealign_ros.data.sensors import GROUND, Scene, cast_rays, lidar_scan
from codealign_ros.data.types import CooperativeFrame, agent_name
from codealign_ros.data.world import World, WorldConfig
from codealign_ros.data.world_presets import default_world, load_world

# The sparse `open` world: the frame-layout checks below count its boxes (no parked rows).
SMALL = dict(agents=3, rsu=True, beams=32, azimuth_steps=360, image_size=(64, 48),
             background_vehicles=12, world="open")


def _frames(seed: int, n: int = 3, **overrides: object) -> tuple[World, list[CooperativeFrame]]:
    world = World(WorldConfig(seed=seed, **{**SMALL, **overrides}), 1)
    return world, list(world.frames(n, "scenario"))


@pytest.fixture(scope="module")
def small() -> tuple[World, list[CooperativeFrame]]:
    return _frames(5)


def _surface_distance(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N, K) unsigned distance of world points to the surfaces of upright boxes."""
    rel = points[:, None, :] - boxes[None, :, :3]
    c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    local = np.stack([c * rel[..., 0] + s * rel[..., 1], c * rel[..., 1] - s * rel[..., 0],
                      rel[..., 2]], axis=-1)
    q = np.abs(local) - boxes[None, :, 3:6] / 2
    return np.where((q <= 0).all(-1), -q.max(-1), np.linalg.norm(np.maximum(q, 0), axis=-1))


def _overlapping_pairs(boxes: np.ndarray) -> np.ndarray:
    """(M, M) whether box footprints overlap (separating axis test), diagonal False."""
    corners = box_corners(boxes)[:, :4, :2]
    c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    axes = np.concatenate([np.stack([c, s], 1), np.stack([-s, c], 1)])
    proj = np.einsum("mci,ai->mac", corners, axes)
    lo, hi = proj.min(-1), proj.max(-1)
    apart = (hi[:, None] < lo[None] + 1e-6) | (hi[None] < lo[:, None] + 1e-6)
    overlap = ~apart.any(-1)
    np.fill_diagonal(overlap, False)
    return overlap


def test_same_config_same_world_other_seed_differs(small: tuple[World, list]) -> None:
    _, again = _frames(5, n=2)
    for a, b in zip(small[1], again):
        assert a.timestamp == b.timestamp and a.stamp_ns == b.stamp_ns
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.box_ids, b.box_ids)
        for name, agent in a.agents.items():
            np.testing.assert_array_equal(agent.points, b.agents[name].points)
            np.testing.assert_array_equal(agent.cameras[2].image, b.agents[name].cameras[2].image)
    _, other = _frames(6, n=1)
    assert other[0].boxes.shape != small[1][0].boxes.shape or not np.allclose(
        other[0].boxes, small[1][0].boxes)
    assert other[0].ego_id != small[1][0].ego_id or other[0].timestamp != small[1][0].timestamp


def test_frame_layout_follows_the_types(small: tuple[World, list]) -> None:
    world, frames = small
    names = [agent_name(i) for i in world.cav_ids] + ["rsu_1"]
    assert world.cav_ids == sorted(world.cav_ids)  # OPV2V readers take the smallest id as ego
    ticks = [int(f.timestamp) for f in frames]
    assert ticks[0] % 2 == 0 and np.all(np.diff(ticks) == 2)
    assert frames[0].stamp_ns == ticks[0] * 50_000_000 + 1_600_001_000 * 10**9
    for frame in frames:
        assert list(frame.agents) == names and frame.ego_id == names[0]
        assert set(frame.box_classes) <= {"car", "van", "truck"}
        assert len(set(frame.box_ids.tolist())) == len(frame.boxes) == 3 + 12
        for agent in frame.agents.values():
            assert agent.points.dtype == np.float32 and agent.points.shape[1] == 4
            assert 0 <= agent.points[:, 3].min() and agent.points[:, 3].max() <= 1
            assert np.linalg.norm(agent.points[:, :3], axis=1).max() < 100.1
            assert len(agent.cameras) == 4 and agent.is_rsu == (agent.agent_id == "rsu_1")
            for cam in agent.cameras:
                assert cam.image.shape == (48, 64, 3) and cam.image.dtype == np.uint8
                assert cam.depth.shape == (48, 64) and cam.depth.dtype == np.float32
                assert cam.intrinsic[0, 0] == pytest.approx(32 / np.tan(np.radians(50)))
    # cameras look front, right, left, back (OpenCV axes: +z forward, +x right)
    ext = [cam.extrinsic for cam in frames[0].agents[names[0]].cameras]
    ahead = [transform_points(e, np.array([d], float))[0] for e, d in
             zip(ext, [(10, 0, 0), (0, -10, 0), (0, 10, 0), (-10, 0, 0)])]
    for cam_xyz in ahead:
        assert cam_xyz[2] > 8.5 and abs(cam_xyz[0]) < 1.5
    assert transform_points(ext[0], np.array([[10.0, -3.0, 0.0]]))[0, 0] > 0  # right is +x


def test_lidar_returns_lie_on_surfaces(small: tuple[World, list]) -> None:
    world, frames = small
    for frame in frames[:2]:
        boxes = np.concatenate([frame.boxes, world.static_boxes])
        on_box = 0
        for agent in frame.agents.values():
            pts = transform_points(agent.lidar_pose, agent.points[:, :3].astype(np.float64))
            ground = np.abs(pts[:, 2]) < 0.05
            near = _surface_distance(pts, boxes).min(axis=1) < 0.05
            assert np.all(ground | near), pts[~(ground | near)][:5]
            on_box += np.count_nonzero(near & (pts[:, 2] > 0.1))
        assert on_box > 500


def test_wall_occludes_car() -> None:
    wall = [10.0, 0.0, 2.0, 0.3, 12.0, 4.0, 0.0]
    car = [20.0, 0.5, 0.75, 4.5, 1.9, 1.5, 0.3]
    pose = yaw_matrix(0.0, 0.0, 1.9, 0.0)
    hits = []
    for boxes in ([wall, car], [car]):
        scene = Scene(np.array(boxes), np.ones((len(boxes), 3)), np.full(len(boxes), 0.5))
        _, hit = lidar_scan(scene, pose, 64, 1024, 100.0, np.random.default_rng(0))
        hits.append(hit)
    assert np.count_nonzero(hits[0] == 0) > 100 and np.count_nonzero(hits[0] == 1) == 0
    assert np.count_nonzero(hits[1] == 0) > 100


def test_shared_origin_culling_matches_brute_force(small: tuple[World, list]) -> None:
    world, frames = small
    boxes = np.concatenate([frames[0].boxes, world.static_boxes])
    rng = np.random.default_rng(1)
    dirs = rng.normal(size=(20000, 3)) * [1, 1, 0.3]
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    origin = frames[0].agents["rsu_1"].lidar_pose[:3, 3]
    fast = cast_rays(origin, dirs, boxes, 80.0)
    slow = cast_rays(np.tile(origin, (len(dirs), 1)), dirs, boxes, 80.0)
    np.testing.assert_array_equal(fast[1], slow[1])
    np.testing.assert_allclose(fast[0], slow[0])
    assert np.count_nonzero(fast[1] >= 0) > 1000 and np.count_nonzero(fast[1] == GROUND) > 1000


def test_camera_depth_matches_lidar() -> None:
    """LiDAR points projected into each agent's front camera meet the rendered depth there.

    Inverse depth (linear in the image on a plane) is interpolated between the 4 nearest
    pixel centres, so grazing ground far away compares exactly; edges may differ."""
    size = (160, 120)
    _, frames = _frames(5, n=1, image_size=size)
    for agent in frames[0].agents.values():
        cam = agent.cameras[0]
        xyz = transform_points(cam.extrinsic, agent.points[:, :3].astype(np.float64))
        xyz = xyz[xyz[:, 2] > 1.0]
        uv = xyz[:, :2] / xyz[:, 2:] * np.diag(cam.intrinsic)[:2] + cam.intrinsic[:2, 2] - 0.5
        inside = (uv >= 0).all(1) & (uv < np.array(size) - 1).all(1)
        (col, row), frac, z = np.floor(uv[inside]).astype(int).T, uv[inside] % 1, xyz[inside, 2]
        inv = np.where(cam.depth > 0, 1 / np.maximum(cam.depth, 1e-9), 0.0)
        weights = np.stack([1 - frac, frac], axis=1)  # (N, 2 offsets, u/v)
        est = sum(weights[:, du, 0] * weights[:, dv, 1] * inv[row + dv, col + du]
                  for du in (0, 1) for dv in (0, 1))
        error = np.abs(1 / np.maximum(est, 1e-9) - z)
        assert len(z) > 500
        assert np.mean(error < 0.5) > 0.9 and np.median(error) < 0.05


def test_boxes_move_like_vehicles(small: tuple[World, list]) -> None:
    world, frames = small
    assert not _overlapping_pairs(np.concatenate([frames[0].boxes, world.static_boxes])).any()
    for a, b in zip(frames, frames[1:]):
        np.testing.assert_array_equal(a.box_ids, b.box_ids)
        speed = np.linalg.norm(b.boxes[:, :2] - a.boxes[:, :2], axis=1) / 0.1
        assert np.all((speed > 4.5) & (speed < 14.5)), speed
        np.testing.assert_allclose(a.boxes[:, 2], a.boxes[:, 5] / 2)
    for frame in frames:
        ego_xy = frame.agents[frame.ego_id].lidar_pose[:2, 3]
        for box, box_id in zip(frame.boxes, frame.box_ids):
            if agent_name(int(box_id)) in frame.agents:
                pose = frame.agents[agent_name(int(box_id))].lidar_pose
                np.testing.assert_allclose(pose[:2, 3], box[:2], atol=1e-9)
                assert np.arctan2(pose[1, 0], pose[0, 0]) == pytest.approx(box[6])
                assert pose[2, 3] == pytest.approx(1.9)
                assert np.linalg.norm(box[:2] - ego_xy) < 60
        assert 5.0 <= frame.agents["rsu_1"].lidar_pose[2, 3] <= 6.0


@pytest.mark.parametrize("agents", [1, 8])
def test_agent_count_is_validated(agents: int) -> None:
    with pytest.raises(ValueError, match="agents must be 2..7 connected vehicles, got"):
        WorldConfig(seed=0, agents=agents)


def _digest(world: World, n: int) -> str:
    """Digest of what a world generates (boxes, ids, keys, points, first camera)."""
    h = hashlib.sha256()
    for f in world.frames(n, "golden"):
        h.update(np.round(f.boxes, 4).tobytes() + f.box_ids.tobytes() + f.timestamp.encode())
        for a in f.agents.values():
            h.update(np.round(a.points.astype(np.float64), 3).tobytes())
            h.update(a.cameras[0].image.tobytes())
    return h.hexdigest()


# What the `open` world generated before presets existed (the default until issue 9).
OPEN_DIGEST = "8678e5391f916081f862dc9453e9818c9419292f39fccf1de8da2327be03a4ff"
GOLDEN = dict(agents=3, rsu=True, beams=32, azimuth_steps=180, image_size=(16, 12))


def test_open_world_is_unchanged() -> None:
    assert _digest(World(WorldConfig(seed=11, world="open", **GOLDEN), 2), 2) == OPEN_DIGEST


def test_default_world_is_the_occluded_benchmark() -> None:
    assert default_world() == "occluded"
    assert (_digest(World(WorldConfig(seed=11, **GOLDEN), 1), 1)
            == _digest(World(WorldConfig(seed=11, world="occluded", **GOLDEN), 1), 1))


def test_occluded_world_parks_vehicles_clear_of_everything() -> None:
    world, frames = _frames(7, n=3, world="occluded", background_vehicles=None)
    preset = load_world("occluded")
    moving = len(world._loop)
    parked = frames[0].boxes[moving:]
    assert len(world.roads) == 4 and moving == 3 + preset.background_vehicles
    assert len(parked) > 40 and len(frames[0].box_classes) == len(frames[0].boxes)
    assert {"car", "van", "truck"} <= set(frames[0].box_classes[moving:])
    assert len(set(frames[0].box_ids.tolist())) == len(frames[0].boxes)
    assert not _overlapping_pairs(np.concatenate([frames[0].boxes, world.static_boxes])).any()
    for later in frames[1:]:  # parked vehicles stand still, the others keep moving
        np.testing.assert_array_equal(later.boxes[moving:], parked)
        assert not _overlapping_pairs(later.boxes).any()
    assert _digest(world, 1) == _digest(World(world.config, 1), 1)
    assert _digest(world, 1) != _digest(World(WorldConfig(seed=7, **{**SMALL, "world": "open"}),
                                              1), 1)


def test_unknown_world_is_rejected() -> None:
    with pytest.raises(KeyError, match="no world 'nowhere'"):
        WorldConfig(seed=0, world="nowhere")
