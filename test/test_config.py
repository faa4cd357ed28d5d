"""Config files are complete and every QoS profile builds."""
import pytest

from codealign_ros.config import ConfigError, frame, load_config, lookup, topic
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
    opv2v = lookup("codemap", "profiles", "opv2v")
    assert opv2v["height"] * opv2v["width"] * bits // 8 == 32768
    assert opv2v["resolution"] * opv2v["width"] == pytest.approx(204.8)
