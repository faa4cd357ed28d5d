"""Config files are complete and every QoS profile builds."""
import pytest

from codealign_ros.config import ConfigError, frame, load_config, lookup, topic
from codealign_ros.config.profiles import load_profile
from codealign_ros.ros.qos import qos_profile


def test_topics_fill_agent_and_camera_index() -> None:
    assert topic("lidar", agent="cav_7") == "/cav_7/lidar/points"
    assert topic("camera_image", agent="cav_7", index=2) == "/cav_7/camera2/image_raw"
    assert frame("grid", agent="rsu_-1") == "rsu_-1/lidar"


@pytest.mark.parametrize("key", sorted(load_config("topics")["qos"]))
def test_every_qos_profile_builds(key: str) -> None:
    profile = qos_profile(key)
    assert profile.depth == lookup("topics", "qos", key, "depth")


def test_missing_key_names_the_path() -> None:
    with pytest.raises(ConfigError, match="topics.yaml has no key topics.nope"):
        topic("nope")


def test_code_map_profiles_match_paper_payload() -> None:
    bits = lookup("codemap", "codebook_bits")
    opv2v, dair = load_profile("opv2v").grid, load_profile("dairv2x").grid
    assert opv2v.height * opv2v.width * bits // 8 == 32768
    assert opv2v.resolution * opv2v.width == pytest.approx(204.8)
    assert (opv2v.x_min, opv2v.y_min) == (-102.4, -102.4)
    assert dair.height * dair.width * bits // 8 == 16384


def test_profiles_derive_consistent_grids() -> None:
    from codealign_ros.config.profiles import load_profile, profile_names

    assert {"mini", "opv2v", "dairv2x"} <= set(profile_names())
    mini = load_profile("mini")
    assert (mini.grid.width, mini.grid.height, mini.grid.resolution) == (64, 64, 0.8)
    assert mini.voxel_grid("pillar") == (128, 128, 1)
    assert load_profile("opv2v").voxel_grid("pillar") == (512, 512, 1)
    with pytest.raises(ConfigError, match="unknown profile"):
        load_profile("nope")


def test_sensor_topics_are_the_cloud_or_every_camera_then_the_pose() -> None:
    from codealign_ros.config import sensor_topics

    assert sensor_topics("cav_1", 0) == [("lidar", "/cav_1/lidar/points"),
                                         ("pose", "/cav_1/pose")]
    cams = sensor_topics("rsu_1", 4)
    assert [k for k, _ in cams] == ["camera_image"] * 4 + ["camera_info"] * 4 + ["pose"]
    assert cams[3][1] == "/rsu_1/camera3/image_raw" and cams[4][1] == "/rsu_1/camera0/camera_info"
