"""RViz / Foxglove presets (issue 13, point 3): generated from config, shipped files current."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from codealign_ros.config import frame, lookup, topic
from codealign_ros.demo.viz_configs import (FOXGLOVE_NAME, RVIZ_NAME, foxglove_layout,
                                            rviz_config, write_configs)

REPO = Path(__file__).resolve().parents[1]
AGENTS = lookup("viz", "demo_agents")


def test_shipped_configs_are_the_generated_ones(tmp_path: Path) -> None:
    rviz, fox = write_configs(tmp_path, AGENTS)
    assert (REPO / "config" / RVIZ_NAME).read_text() == rviz.read_text(), \
        "regenerate: python -m codealign_ros.demo.viz_configs"
    assert (REPO / "config" / FOXGLOVE_NAME).read_text() == fox.read_text()
    yaml.safe_load(rviz.read_text())
    json.loads(fox.read_text())


def test_rviz_shows_every_agent_in_map() -> None:
    cfg = rviz_config(["a", "b", "c"])
    manager = cfg["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == frame("world")
    by_topic = {d["Topic"]["Value"]: d for d in manager["Displays"] if "Topic" in d}
    clouds = [by_topic[topic("lidar", agent=a)] for a in "abc"]
    assert all(c["Color Transformer"] == "FlatColor" for c in clouds)
    assert len({c["Color"] for c in clouds}) == 3  # one colour per agent
    assert by_topic[topic("lidar", agent="a")]["Topic"]["Reliability Policy"] == "Best Effort"
    for name in (topic("markers"), topic("gt_markers"),
                 *(topic(k, agent=a) for a in "abc" for k in ("pose", "codemap_image"))):
        assert name in by_topic, name
    assert by_topic[topic("codemap_image", agent="b")]["Class"].endswith("/Image")
    assert any(d["Class"].endswith("/TF") for d in manager["Displays"])


def test_foxglove_layout_shows_the_same() -> None:
    layout = foxglove_layout(["a", "b"])
    scene = layout["configById"]["3D!scene"]
    assert scene["followTf"] == frame("world")
    clouds = [scene["topics"][topic("lidar", agent=a)] for a in "ab"]
    assert len({c["flatColor"] for c in clouds}) == 2
    assert {topic("markers"), topic("gt_markers")} <= set(scene["topics"])
    image_topics = {c["imageMode"]["imageTopic"] for k, c in layout["configById"].items()
                    if k.startswith("Image!")}
    assert image_topics == {topic("codemap_image", agent=a) for a in "ab"}
    panels = json.dumps(layout["layout"])
    assert all(k in panels for k in layout["configById"])  # every panel is placed
