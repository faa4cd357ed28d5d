"""DAIR-V2X-C writer/loader: round trip, calib chain, system-error sign, bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from codealign_ros.core.geometry import (box_corners, pose6_to_matrix, transform_points,
                                         wrap_angle, yaw_matrix)
from codealign_ros.data.dairv2x import (DairV2XDataset, DairWriter, is_dair_root,
                                        write_dair_frame)
from codealign_ros.data.types import AgentFrame, CameraFrame, CooperativeFrame, DatasetError

OFFSET = (3.5, -2.25)
STAMP_US = 1_626_155_123_840_290


def _camera(rng: np.random.Generator) -> CameraFrame:
    """48x32 smooth image (JPEG-friendly), random K and LiDAR -> camera extrinsic."""
    v, u = np.mgrid[0:32, 0:48]
    image = np.stack([u * 5, v * 7, (u + v) * 3], axis=-1) + rng.integers(0, 20, 3)
    k = np.array([[rng.uniform(30, 60), 0, 24.0], [0, rng.uniform(30, 60), 16.0], [0, 0, 1]])
    return CameraFrame(image=image.astype(np.uint8), intrinsic=k,
                       extrinsic=pose6_to_matrix(rng.uniform(-20, 20, 6)))


def _agent(name: str, pose: np.ndarray, rng: np.random.Generator) -> AgentFrame:
    points = rng.uniform(-50, 50, (300, 4)).astype(np.float32)
    return AgentFrame(name, points, pose, [_camera(rng)], is_rsu=name == "infrastructure")


def make_frame(seed: int = 0, stamp_us: int = STAMP_US) -> CooperativeFrame:
    """Vehicle with roll/pitch, infrastructure yaw-only, a few world boxes with yaws."""
    rng = np.random.default_rng(seed)
    vehicle = pose6_to_matrix([*rng.uniform(-100, 100, 3), *rng.uniform(-5, 5, 3)])
    infra = yaw_matrix(*rng.uniform(-100, 100, 3), rng.uniform(-np.pi, np.pi))
    m = 5
    boxes = np.column_stack([rng.uniform(-80, 80, (m, 2)), rng.uniform(-2, 2, m),
                             rng.uniform(4, 6, m), rng.uniform(1.5, 2.5, m),
                             rng.uniform(1.4, 2, m), [-3.1, -1.0, 0.0, 2.0, 3.13]])
    return CooperativeFrame(
        scenario="hand", timestamp="x", stamp_ns=stamp_us * 1000,
        agents={"vehicle": _agent("vehicle", vehicle, rng),
                "infrastructure": _agent("infrastructure", infra, rng)},
        boxes=boxes, box_ids=np.arange(100, 100 + m),
        box_classes=["car", "truck", "car", "van", "bus"][:m])


def assert_boxes_close(a: np.ndarray, b: np.ndarray, tol: float = 1e-4) -> None:
    np.testing.assert_allclose(a[:, :6], b[:, :6], atol=tol)
    assert np.all(np.abs(wrap_angle(a[:, 6] - b[:, 6])) < tol)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Two frames (indices 5 and 6), the first with a nonzero system error."""
    out = tmp_path / "dair"
    write_dair_frame(out, make_frame(0), 5, OFFSET)
    write_dair_frame(out, make_frame(1, STAMP_US + 100_000), 6)
    return out


def test_round_trip(root: Path) -> None:
    dataset = DairV2XDataset(root)
    assert is_dair_root(root) and len(dataset) == 2
    assert dataset.frame_ids() == ["000010", "000012"]
    for seed, vid in enumerate(dataset.frame_ids()):
        want, got = make_frame(seed, STAMP_US + seed * 100_000), dataset.load(vid)
        assert (got.scenario, got.timestamp, got.stamp_ns) == ("dair", vid, want.stamp_ns)
        assert list(got.agents) == ["vehicle", "infrastructure"] and got.ego_id == "vehicle"
        for name, agent in got.agents.items():
            ref = want.agents[name]
            assert agent.is_rsu == (name == "infrastructure")
            assert agent.points.dtype == np.float32
            np.testing.assert_array_equal(agent.points, ref.points)
            np.testing.assert_allclose(agent.lidar_pose, ref.lidar_pose, atol=1e-6)
            (cam,), ref_cam = agent.cameras, ref.cameras[0]
            np.testing.assert_allclose(cam.intrinsic, ref_cam.intrinsic, atol=1e-9)
            np.testing.assert_allclose(cam.extrinsic, ref_cam.extrinsic, atol=1e-9)
            assert cam.image.shape == (32, 48, 3) and cam.image.dtype == np.uint8
            assert np.abs(cam.image.astype(float) - ref_cam.image).mean() < 3
        assert_boxes_close(got.boxes, want.boxes)
        assert got.box_classes == want.box_classes
        np.testing.assert_array_equal(got.box_ids, np.arange(len(want.boxes)))
    assert dataset.load(1).timestamp == "000012"
    assert all(not a.cameras for a in dataset.load(0, cameras=False).agents.values())


def test_data_info_paths_and_side_labels(root: Path) -> None:
    entry = json.loads((root / "cooperative/data_info.json").read_text())[0]
    assert entry["vehicle_pointcloud_path"] == "vehicle-side/velodyne/000010.pcd"
    assert entry["infrastructure_image_path"] == "infrastructure-side/image/000011.jpg"
    assert entry["system_error_offset"] == {"delta_x": OFFSET[0], "delta_y": OFFSET[1]}
    frame = make_frame(0)
    for side, agent in (("vehicle-side", "vehicle"), ("infrastructure-side", "infrastructure")):
        info = json.loads((root / side / "data_info.json").read_text())
        assert len(info) == 2 and info[0]["pointcloud_timestamp"] == str(STAMP_US)
        for key, rel in info[0].items():
            if key.endswith("_path"):
                assert (root / side / rel).is_file(), key
        label = json.loads((root / side / info[0]["label_lidar_std_path"]).read_text())
        local = np.array([[o["3d_location"][k] for k in "xyz"] for o in label])
        world = transform_points(frame.agents[agent].lidar_pose, local)
        np.testing.assert_allclose(world, frame.boxes[:, :3], atol=1e-6)


def test_rewriting_a_frame_replaces_its_entries(root: Path) -> None:
    with DairWriter(root) as writer:
        writer.add(make_frame(2), 5)
    dataset = DairV2XDataset(root)
    assert dataset.frame_ids() == ["000010", "000012"]
    np.testing.assert_array_equal(dataset.load("000010").agents["vehicle"].points,
                                  make_frame(2).agents["vehicle"].points)


def test_infrastructure_offset_sign(root: Path) -> None:
    """The file holds translation - offset; the loader adds the offset back."""
    true_pose = make_frame(0).agents["infrastructure"].lidar_pose
    stored = json.loads((root / "infrastructure-side/calib/virtuallidar_to_world/000011.json")
                        .read_text())["translation"]
    np.testing.assert_allclose(np.ravel(stored), true_pose[:3, 3] - [*OFFSET, 0.0], atol=1e-12)
    info_path = root / "cooperative/data_info.json"
    info = json.loads(info_path.read_text())
    info[0]["system_error_offset"] = {"delta_x": OFFSET[0] + 1.0, "delta_y": OFFSET[1] - 2.0}
    info_path.write_text(json.dumps(info))
    pose = DairV2XDataset(root).load(0).agents["infrastructure"].lidar_pose
    np.testing.assert_allclose(pose[:3, 3] - true_pose[:3, 3], [1.0, -2.0, 0.0], atol=1e-9)


def test_vehicle_calib_chain_by_hand(root: Path) -> None:
    """lidar -> novatel: +90 deg about z then +(0.5, 0, 1.8); novatel -> world: 180 deg
    about z then +(100, 200, 10). LiDAR point (1, 2, 3) -> (-1.5, 1, 4.8) -> (101.5, 199, 14.8)."""
    calib = root / "vehicle-side/calib"
    (calib / "lidar_to_novatel/000010.json").write_text(json.dumps({"transform": {
        "rotation": [[0, -1, 0], [1, 0, 0], [0, 0, 1]], "translation": [[0.5], [0], [1.8]]}}))
    (calib / "novatel_to_world/000010.json").write_text(json.dumps({
        "rotation": [[-1, 0, 0], [0, -1, 0], [0, 0, 1]], "translation": [[100], [200], [10]]}))
    pose = DairV2XDataset(root).load("000010", cameras=False).agents["vehicle"].lidar_pose
    world = transform_points(pose, np.array([[1.0, 2.0, 3.0]]))
    np.testing.assert_allclose(world[0], [101.5, 199.0, 14.8], atol=1e-12)


def test_dair_toolkit_corner_order(root: Path) -> None:
    """Real DAIR labels list corners clockwise from (+l/2, +w/2); same boxes come back."""
    path = root / "cooperative/label_world/000010.json"
    objects = json.loads(path.read_text())
    boxes = make_frame(0).boxes
    for obj, corners in zip(objects, box_corners(boxes)[:, [0, 3, 2, 1, 4, 7, 6, 5]]):
        obj["world_8_points"] = corners.tolist()
    path.write_text(json.dumps(objects))
    assert_boxes_close(DairV2XDataset(root).load(0, cameras=False).boxes, boxes)


def test_stamp_falls_back_to_frame_id(root: Path) -> None:
    (root / "vehicle-side/data_info.json").unlink()
    assert DairV2XDataset(root).load("000012").stamp_ns == 12 * 100_000_000


def _drop_rotation(path: Path) -> None:
    data = json.loads(path.read_text())
    del data["rotation"]
    path.write_text(json.dumps(data))


def _short_corners(path: Path) -> None:
    objects = json.loads(path.read_text())
    objects[1]["world_8_points"] = objects[1]["world_8_points"][:7]
    path.write_text(json.dumps(objects))


@pytest.mark.parametrize("rel, damage, problem", [
    ("vehicle-side/velodyne/000010.pcd", Path.unlink, "missing"),
    ("infrastructure-side/image/000011.jpg", Path.unlink, "missing"),
    ("vehicle-side/calib/novatel_to_world/000010.json",
     lambda p: p.write_text("{not json"), "invalid JSON"),
    ("infrastructure-side/calib/virtuallidar_to_world/000011.json", _drop_rotation, "rotation"),
    ("cooperative/label_world/000010.json", _short_corners, r"world_8_points has shape \(7, 3\)"),
    ("vehicle-side/calib/camera_intrinsic/000010.json",
     lambda p: p.write_text(json.dumps({"cam_K": [1, 2, 3]})), "cam_K"),
])
def test_bad_input_names_the_file(root: Path, rel: str, damage, problem: str) -> None:
    damage(root / rel)
    with pytest.raises(DatasetError, match=problem) as err:
        DairV2XDataset(root).load("000010")
    assert Path(err.value.path) == root / rel
    DairV2XDataset(root).load("000012")  # the other frame is untouched


def test_unknown_layout(tmp_path: Path) -> None:
    (tmp_path / "training").mkdir()
    assert not is_dair_root(tmp_path)
    with pytest.raises(DatasetError, match="cooperative/data_info.json"):
        DairV2XDataset(tmp_path)


def test_corrupt_cooperative_info(root: Path) -> None:
    (root / "cooperative/data_info.json").write_text(json.dumps([{"vehicle_image_path": "x"}]))
    with pytest.raises(DatasetError, match="vehicle_pointcloud_path"):
        DairV2XDataset(root)


def test_writer_rejects_other_agents(tmp_path: Path) -> None:
    frame = make_frame(0)
    frame.agents = dict(reversed(frame.agents.items()))
    with pytest.raises(ValueError, match="vehicle"):
        write_dair_frame(tmp_path, frame, 0)
