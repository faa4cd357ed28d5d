"""OPV2V layout: write -> load round trips, pose conventions by hand, bad input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from codealign_ros.core.geometry import pose6_to_matrix, rt_to_matrix, wrap_angle, yaw_matrix
from codealign_ros.data.opv2v import OPV2VDataset, is_opv2v_root, write_opv2v_frame
from codealign_ros.data.pcd import write_pcd
from codealign_ros.data.types import AgentFrame, CameraFrame, CooperativeFrame, DatasetError

SCENARIO = "2021_08_18_19_48_05"
S = np.diag([1.0, -1.0, 1.0, 1.0])  # ROS <-> CARLA axes
R_CV = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # OpenCV axes in LiDAR
K = np.array([[20.5, 0.0, 16.25], [0.0, 21.0, 11.75], [0.0, 0.0, 1.0]])
MOUNTS = [(0.0, [1.2, 0.0, 0.4]), (60.0, [0.5, 0.3, 0.45])]  # (yaw degrees, position) per camera
POSES = {  # agent -> (x, y, z, yaw, pitch, roll) in ROS axes, radians; dict order is not ego-first
    "cav_650": (10.0, 5.0, 1.9, 0.5, 0.02, -0.03),
    "rsu_1": (0.0, -15.0, 4.5, -1.6, -0.1, 0.0),
    "cav_641": (-20.0, 3.0, 1.95, -2.1, 0.0, 0.0),
}


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rz(yaw) @ Ry(pitch) @ Rx(roll), written out."""
    (cy, cp, cr), (sy, sp, sr) = np.cos([yaw, pitch, roll]), np.sin([yaw, pitch, roll])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    return rz @ ry @ rx


def mount_extrinsic(yaw_deg: float, position: list[float]) -> np.ndarray:
    """OpenCV LiDAR -> camera of a level camera yawed by `yaw_deg` at `position`."""
    turn = yaw_matrix(0, 0, 0, np.radians(yaw_deg))[:3, :3]
    return np.linalg.inv(rt_to_matrix(turn @ R_CV, position))


def make_frame(timestamp: str = "000068", seed: int = 0) -> CooperativeFrame:
    rng = np.random.default_rng(seed)
    agents = {}
    own_boxes = []
    for name, (x, y, z, yaw, pitch, roll) in POSES.items():
        cameras = [CameraFrame(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), K.copy(),
                               mount_extrinsic(*mount)) for mount in MOUNTS]
        points = (rng.normal(size=(400, 4)) * [30, 30, 1.5, 0.2]).astype(np.float32)
        agents[name] = AgentFrame(name, points, rt_to_matrix(rotation(yaw, pitch, roll), [x, y, z]),
                                  cameras, is_rsu=name.startswith("rsu"))
        own_boxes.append([x + 0.2, y - 0.1, 0.8, 4.5, 1.9, 1.6, yaw])
    boxes = np.array(own_boxes + [[30.0, -4.0, 0.9, 4.0, 1.8, 1.5, np.pi - 0.01],
                                  [-5.0, 12.0, 1.0, 5.2, 2.1, 2.0, -np.pi + 0.02]])
    ids = np.array([650, 77, 641, 1001, 1002])
    return CooperativeFrame(SCENARIO, timestamp, 0, agents, boxes, ids, ["car"] * 5)


def boxes_by_id(frame: CooperativeFrame) -> dict[int, np.ndarray]:
    return {int(i): b for i, b in zip(frame.box_ids, frame.boxes)}


def assert_same_boxes(got: dict[int, np.ndarray], want: dict[int, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for vid, box in want.items():
        np.testing.assert_allclose(got[vid][:6], box[:6], atol=1e-4)
        assert abs(wrap_angle(got[vid][6] - box[6])) < 1e-4


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, list[CooperativeFrame]]:
    frames = [make_frame("000068", 0), make_frame("000070", 1)]
    for frame in frames:
        write_opv2v_frame(tmp_path, "train", frame)
    return tmp_path, frames


def test_round_trip(written: tuple[Path, list[CooperativeFrame]]) -> None:
    root, frames = written
    ds = OPV2VDataset(root, "train")
    assert ds.scenarios() == [SCENARIO] and is_opv2v_root(root)
    assert ds.agents(SCENARIO) == ["cav_641", "cav_650", "rsu_1"]
    assert ds.timestamps(SCENARIO) == [f.timestamp for f in frames]
    for frame in frames:
        got = ds.load(SCENARIO, frame.timestamp)
        assert list(got.agents) == ds.agents(SCENARIO) and got.ego_id == "cav_641"
        for name, agent in got.agents.items():
            want = frame.agents[name]
            assert agent.agent_id == name and agent.is_rsu == want.is_rsu
            np.testing.assert_allclose(agent.points, want.points, atol=1e-3)
            np.testing.assert_allclose(agent.lidar_pose, want.lidar_pose, atol=1e-6)
            assert len(agent.cameras) == len(want.cameras)
            for cam, want_cam in zip(agent.cameras, want.cameras):
                np.testing.assert_array_equal(cam.image, want_cam.image)
                np.testing.assert_array_equal(cam.intrinsic, want_cam.intrinsic)
                np.testing.assert_allclose(cam.extrinsic, want_cam.extrinsic, atol=1e-6)
                assert cam.depth is None
        assert_same_boxes(boxes_by_id(got), boxes_by_id(frame))
        assert got.box_classes == ["car"] * len(frame.box_ids)
    assert not ds.load(SCENARIO, frames[0].timestamp, cameras=False).agents["cav_641"].cameras


def test_stamps_are_10hz_after_a_stable_whole_second_base(written: tuple[Path, list]) -> None:
    root, frames = written
    first, second = (OPV2VDataset(root, "train").load(SCENARIO, f.timestamp, False) for f in frames)
    assert second.stamp_ns - first.stamp_ns == 100_000_000
    assert (first.stamp_ns - int(first.timestamp) * 50_000_000) % 1_000_000_000 == 0
    write_opv2v_frame(root, "test", frames[0])
    other = make_frame()
    other.scenario = "2021_08_20_21_10_24"
    write_opv2v_frame(root, "test", other)
    again = OPV2VDataset(root, "test")
    assert again.load(SCENARIO, first.timestamp, False).stamp_ns == first.stamp_ns
    assert again.load(other.scenario, "000068", False).stamp_ns != first.stamp_ns


def test_yaml_keys_own_box_and_camera_cords(written: tuple[Path, list]) -> None:
    root, frames = written
    frame = frames[0]
    for name, cav, own in [("cav_641", "641", 641), ("cav_650", "650", 650), ("rsu_1", "-1", 77)]:
        params = yaml.safe_load((root / "train" / SCENARIO / cav / "000068.yaml").read_text())
        assert set(params) == {"lidar_pose", "true_ego_pos", "ego_speed", "vehicles", "camera0",
                               "camera1"}
        assert own not in params["vehicles"] and len(params["vehicles"]) == len(frame.box_ids) - 1
        drop = 0.0 if name.startswith("rsu") else 1.9
        np.testing.assert_allclose(np.subtract(params["lidar_pose"], params["true_ego_pos"]),
                                   [0, 0, drop, 0, 0, 0], atol=1e-12)
        for vid, box in boxes_by_id(frame).items():
            if vid != own:
                obj = params["vehicles"][vid]
                centre = np.add(obj["location"], obj["center"])
                np.testing.assert_allclose(centre, S[:3, :3] @ box[:3])
                assert obj["location"][2] == pytest.approx(box[2] - box[5] / 2)
                np.testing.assert_allclose(np.multiply(obj["extent"], 2), box[3:6])
                assert np.radians(obj["angle"][1]) == pytest.approx(-box[6])
        lidar = frame.agents[name].lidar_pose
        for i, (yaw_deg, position) in enumerate(MOUNTS):
            cam = params[f"camera{i}"]
            mount = yaw_matrix(*position, np.radians(yaw_deg))  # camera x fwd, y left, z up
            np.testing.assert_allclose(pose6_to_matrix(cam["cords"]), S @ lidar @ mount @ S,
                                       atol=1e-9)
            np.testing.assert_allclose(cam["extrinsic"], np.linalg.inv(S @ mount @ S), atol=1e-9)
            assert cam["intrinsic"] == K.tolist()
    level = yaml.safe_load((root / "train" / SCENARIO / "641" / "000068.yaml").read_text())
    for i, (yaw_deg, _) in enumerate(MOUNTS):  # level vehicle, level camera: yaw only, mirrored
        roll, yaw, pitch = level[f"camera{i}"]["cords"][3:]
        assert (roll, pitch) == pytest.approx((0.0, 0.0), abs=1e-9)
        expected = -(POSES["cav_641"][3] + np.radians(yaw_deg))
        assert wrap_angle(np.radians(yaw) - expected) == pytest.approx(0, abs=1e-9)


def test_pose6_conventions_by_hand() -> None:
    apply = lambda pose, p: (pose6_to_matrix(pose) @ [*p, 1.0])[:3]  # noqa: E731
    np.testing.assert_allclose(apply([1, 2, 3, 0, 90, 0], [1, 0, 0]), [1, 3, 3], atol=1e-12)
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    np.testing.assert_allclose(apply([0, 0, 0, 0, 0, 30], [1, 0, 0]), [c, 0, s], atol=1e-12)
    np.testing.assert_allclose(apply([0, 0, 0, 0, 0, 30], [0, 0, 1]), [-s, 0, c], atol=1e-12)
    np.testing.assert_allclose(apply([0, 0, 0, 30, 0, 0], [0, 1, 0]), [0, c, -s], atol=1e-12)
    np.testing.assert_allclose(apply([0, 0, 0, 30, 0, 0], [0, 0, 1]), [0, s, c], atol=1e-12)


HAND_YAML = """\
camera0:
  cords: [10.0, 20.0, 2.5, 0.0, 90.0, 0.0]
  extrinsic: [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
  intrinsic: [[335.6, 0.0, 400.0], [0.0, 335.6, 300.0], [0.0, 0.0, 1.0]]
camera1:
  cords: [10.0, 20.0, 2.5, 0.0, 135.0, 0.0]
  extrinsic: [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
  intrinsic: [[335.6, 0.0, 400.0], [0.0, 335.6, 300.0], [0.0, 0.0, 1.0]]
ego_speed: 18.9
lidar_pose: [10.0, 20.0, 1.9, 0.0, 90.0, 0.0]
true_ego_pos: [10.0, 20.0, 0.0, 0.0, 90.0, 0.0]
vehicles:
  1234:
    angle: [0.0, 30.0, 0.0]
    center: [0.1, 0.0, 0.7]
    extent: [2.4, 1.05, 0.75]
    location: [110.0, 52.0, 3e-2]
    speed: 20.1
"""


def write_hand_frame(root: Path, yaml_text: str = HAND_YAML) -> Path:
    folder = root / "validate" / "scene" / "7"
    folder.mkdir(parents=True)
    (folder / "000100.yaml").write_text(yaml_text)
    write_pcd(folder / "000100.pcd", np.array([[5.0, 2.0, -1.0, 0.25]]))
    for i in range(2):
        Image.new("RGB", (8, 6), (i, 2, 3)).save(folder / f"000100_camera{i}.png")
    return folder


@pytest.mark.parametrize("right_handed", [True, False])
def test_hand_written_opv2v_yaml(tmp_path: Path, right_handed: bool) -> None:
    write_hand_frame(tmp_path)
    frame = OPV2VDataset(tmp_path, "validate", right_handed=right_handed).load("scene", "000100")
    flip = -1.0 if right_handed else 1.0
    assert list(frame.agents) == ["cav_7"] and frame.box_ids.tolist() == [1234]
    np.testing.assert_allclose(frame.boxes[0], [110.1, 52.0 * flip, 0.73, 4.8, 2.1, 1.5,
                                                flip * np.radians(30)], atol=1e-12)
    agent = frame.agents["cav_7"]
    np.testing.assert_allclose(agent.points, [[5.0, 2.0 * flip, -1.0, 0.25]])
    ahead = agent.lidar_pose @ [5.0, 0.0, 0.0, 1.0]  # 5 m along the LiDAR's x: CARLA yaw 90 = +y
    np.testing.assert_allclose(ahead[:3], [10.0, 25.0 * flip, 1.9], atol=1e-12)
    assert agent.cameras[0].image[0, 0].tolist() == [0, 2, 3]
    assert agent.cameras[0].intrinsic[0, 0] == 335.6
    # camera0 sits 0.6 m above the LiDAR looking along its x; camera1 is yawed 45 deg to the right
    ue4 = np.array([[0.0, 0, 1], [1, 0, 0], [0, -1, 0]])
    right = np.array([[np.sqrt(0.5), np.sqrt(0.5), 0], [-np.sqrt(0.5), np.sqrt(0.5), 0], [0, 0, 1]])
    for cam, turn in zip(agent.cameras, [np.eye(3), right]):
        cam_to_lidar = np.linalg.inv(cam.extrinsic)
        rot = turn @ R_CV if right_handed else right.T @ ue4 if turn is right else ue4
        np.testing.assert_allclose(cam_to_lidar, rt_to_matrix(rot, [0, 0, 0.6]), atol=1e-12)
        assert np.linalg.det(cam_to_lidar[:3, :3]) == pytest.approx(1.0 if right_handed else -1.0)


def test_union_of_vehicles_keeps_the_first_agents_box(tmp_path: Path) -> None:
    folder = write_hand_frame(tmp_path)
    for cav, shift in [("9", 1.0), ("-1", 2.0)]:  # both also see 1234, placed differently
        other = folder.parent / cav
        other.mkdir()
        for src in folder.iterdir():
            (other / src.name).write_bytes(src.read_bytes())
        params = yaml.safe_load(HAND_YAML)
        params["vehicles"][1234]["location"][0] += shift
        params["vehicles"][40 + int(cav)] = dict(params["vehicles"][1234])
        (other / "000100.yaml").write_text(yaml.safe_dump(params))
    ds = OPV2VDataset(tmp_path, "validate", right_handed=False)
    assert ds.agents("scene") == ["cav_7", "cav_9", "rsu_1"]
    frame = ds.load("scene", "000100")
    assert [a.is_rsu for a in frame.agents.values()] == [False, False, True]
    assert frame.box_ids.tolist() == [39, 49, 1234]
    np.testing.assert_allclose(frame.boxes[:, 0], [112.1, 111.1, 110.1])


def test_writer_rejects_unknown_agents_and_unrepresentable_cameras(tmp_path: Path) -> None:
    frame = make_frame()
    with pytest.raises(ValueError, match="cav_650 camera0"):  # ROS-handed cameras in CARLA axes
        write_opv2v_frame(tmp_path, "train", frame, right_handed=False)
    frame.agents["vehicle"] = frame.agents.pop("cav_650")
    with pytest.raises(ValueError, match="'vehicle'"):
        write_opv2v_frame(tmp_path, "train", frame)


def damage(path: Path, content: bytes | None) -> None:
    """Replace (or, with None, delete) one file of the frame."""
    if content is None:
        path.unlink()
    else:
        path.write_bytes(content)


def truncated(path: Path) -> bytes:
    return path.read_bytes()[: len(path.read_bytes()) * 2 // 3]


BAD_INPUT = {
    "missing pcd": ("650/000068.pcd", lambda p: None, "cannot read PCD"),
    "truncated pcd": ("650/000068.pcd", truncated, "PCD ascii data"),
    "missing agent yaml": ("-1/000068.yaml", lambda p: None, "cannot read yaml"),
    "corrupt yaml": ("641/000068.yaml", lambda p: b"lidar_pose: [1, 2\nvehicles: {",
                     "corrupt yaml"),
    "yaml without lidar_pose": ("641/000068.yaml", lambda p: b"vehicles: {}\n", "no 'lidar_pose'"),
    "yaml not a mapping": ("641/000068.yaml", lambda p: b"- 1\n- 2\n", "not a mapping"),
    "short lidar_pose": ("641/000068.yaml", lambda p: b"lidar_pose: [1, 2]\nvehicles: {}\n",
                         "lidar_pose is not a 6"),
    "vehicle without extent": ("641/000068.yaml",
                               lambda p: p.read_bytes().replace(b"extent", b"extnt"),
                               "lacks location/center/angle/extent"),
    "missing png": ("650/000068_camera1.png", lambda p: None, "cannot read camera image"),
    "unreadable png": ("650/000068_camera0.png", lambda p: b"\x89PNG not really",
                       "cannot read camera"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_names_the_file(written: tuple[Path, list], case: str) -> None:
    root, _ = written
    name, content, problem = BAD_INPUT[case]
    path = root / "train" / SCENARIO / name
    damage(path, content(path))
    with pytest.raises(DatasetError, match=problem) as err:
        OPV2VDataset(root, "train").load(SCENARIO, "000068")
    assert err.value.path == path and str(path) in str(err.value)


def test_unknown_layouts(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="expected a 'train' directory"):
        OPV2VDataset(tmp_path, "train")
    (tmp_path / "train" / "scenario_without_cavs" / "lidar").mkdir(parents=True)
    (tmp_path / "train" / "notes.txt").write_text("not a scenario")
    with pytest.raises(DatasetError, match="no OPV2V scenarios") as err:
        OPV2VDataset(tmp_path, "train")
    assert err.value.path == tmp_path / "train"
    assert not is_opv2v_root(tmp_path) and not is_opv2v_root(tmp_path / "missing")
    write_opv2v_frame(tmp_path, "test", make_frame())
    assert is_opv2v_root(tmp_path)
    with pytest.raises(DatasetError, match="no such OPV2V scenario"):
        OPV2VDataset(tmp_path, "test").agents("nope")
