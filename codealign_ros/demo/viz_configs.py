"""RViz and Foxglove presets for a set of agents, from config/topics.yaml and config/viz.yaml.

Both show, in the fixed frame `frames.world` (map) through TF: every agent's LiDAR cloud in its
own flat colour, its pose, the fused and the ground-truth box markers, TF, and each agent's
code-map image (codemap_monitor publish_images). The shipped config/codealign.rviz and
config/codealign.foxglove.json are this module's output for `viz.yaml` demo_agents
(`python -m codealign_ros.demo.viz_configs --out-dir config`); the demo writes both for its
own agents into its --out directory.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

from codealign_ros.config import frame, lookup, qos_settings, topic

RVIZ_NAME = "codealign.rviz"
FOXGLOVE_NAME = "codealign.foxglove.json"


def agent_color(index: int) -> tuple[int, int, int]:
    """RGB of the agent at `index` (bag order)."""
    colors = lookup("viz", "agent_colors")
    r, g, b = colors[index % len(colors)]
    return int(r), int(g), int(b)


def _rviz_qos(key: str) -> dict[str, Any]:
    q = qos_settings(key)
    return {"Depth": int(q["depth"]),
            "Durability Policy": q["durability"].replace("_", " ").title(),
            "History Policy": q["history"].replace("_", " ").title(),
            "Reliability Policy": q["reliability"].replace("_", " ").title()}


def _display(cls: str, name: str, name_topic: str | None = None, qos: str = "output",
             **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"Class": f"rviz_default_plugins/{cls}", "Enabled": True, "Name": name,
                         "Value": True}
    if name_topic is not None:
        d["Topic"] = {**_rviz_qos(qos), "Value": name_topic}
    d.update(extra)
    return d


def rviz_config(agents: Sequence[str]) -> dict[str, Any]:
    """The .rviz document (a dict, YAML-dumped by `write_configs`)."""
    displays = [
        _display("Grid", "Grid", **{"Cell Size": 10, "Plane Cell Count": 21,
                                    "Reference Frame": "<Fixed Frame>"}),
        _display("TF", "TF", **{"Show Names": True, "Show Axes": True, "Show Arrows": False,
                                "Marker Scale": 3}),
        _display("MarkerArray", "Fused detections", topic("markers")),
        _display("MarkerArray", "Ground truth", topic("gt_markers")),
    ]
    for i, agent in enumerate(agents):
        rgb = "; ".join(str(c) for c in agent_color(i))
        displays += [
            _display("PointCloud2", f"{agent} LiDAR", topic("lidar", agent=agent), "sensor",
                     **{"Color Transformer": "FlatColor", "Color": rgb, "Style": "Points",
                        "Size (Pixels)": 2, "Decay Time": 0, "Use Fixed Frame": True}),
            _display("Pose", f"{agent} pose", topic("pose", agent=agent), "pose",
                     **{"Shape": "Arrow", "Color": rgb, "Shaft Length": 3, "Head Length": 1.2,
                        "Shaft Radius": 0.3, "Head Radius": 0.7}),
            _display("Image", f"{agent} code map", topic("codemap_image", agent=agent)),
        ]
    return {
        "Panels": [{"Class": "rviz_common/Displays", "Name": "Displays"},
                   {"Class": "rviz_common/Views", "Name": "Views"}],
        "Visualization Manager": {
            "Class": "", "Displays": displays, "Enabled": True, "Name": "root",
            "Global Options": {"Background Color": "48; 48; 48", "Fixed Frame": frame("world"),
                               "Frame Rate": 30},
            "Tools": [{"Class": f"rviz_default_plugins/{t}"}
                      for t in ("Interact", "MoveCamera", "Select", "FocusCamera", "Measure")],
            "Transformation": {"Current": {"Class": "rviz_default_plugins/TF"}},
            "Value": True,
            "Views": {"Current": {"Class": "rviz_default_plugins/Orbit", "Name": "Current View",
                                  "Distance": float(lookup("viz", "view_distance_m")),
                                  "Pitch": 0.8, "Yaw": 3.9, "Target Frame": "<Fixed Frame>",
                                  "Value": "Orbit (rviz)",
                                  "Focal Point": {"X": 0, "Y": 0, "Z": 0}},
                      "Saved": None}},
        "Window Geometry": {"Height": 900, "Width": 1400, "X": 60, "Y": 60}}


def _hex(rgb: Sequence[int]) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in rgb)


def foxglove_layout(agents: Sequence[str]) -> dict[str, Any]:
    """A Foxglove layout (import it in Foxglove: Layouts -> Import) for the MCAP recording."""
    topics: dict[str, Any] = {topic("markers"): {"visible": True},
                              topic("gt_markers"): {"visible": True}}
    for i, agent in enumerate(agents):
        topics[topic("lidar", agent=agent)] = {"visible": True, "colorMode": "flat",
                                               "flatColor": _hex(agent_color(i)),
                                               "pointSize": 2, "decayTime": 0}
        topics[topic("pose", agent=agent)] = {"visible": True, "type": "arrow",
                                              "color": _hex(agent_color(i)),
                                              "arrowScale": [3, 0.6, 0.6]}
    config: dict[str, Any] = {
        "3D!scene": {"followTf": frame("world"), "followMode": "follow-none",
                     "scene": {"transforms": {"showLabel": True}}, "transforms": {},
                     "topics": topics,
                     "layers": {"grid": {"layerId": "foxglove.Grid", "visible": True,
                                         "frameId": frame("world"), "size": 200,
                                         "divisions": 20}},
                     "cameraState": {"distance": float(lookup("viz", "view_distance_m")),
                                     "perspective": True, "phi": 45, "thetaOffset": 0,
                                     "target": [0, 0, 0], "targetOffset": [0, 0, 0],
                                     "targetOrientation": [0, 0, 0, 1]}}}
    images = []
    for agent in agents:
        key = f"Image!codemap_{agent}"
        config[key] = {"imageMode": {"imageTopic": topic("codemap_image", agent=agent)},
                       "foxglovePanelTitle": f"{agent} code map"}
        images.append(key)
    column: Any = images[-1] if images else "3D!scene"
    for key in reversed(images[:-1]):
        column = {"first": key, "second": column, "direction": "column"}
    layout = {"first": "3D!scene", "second": column, "direction": "row",
              "splitPercentage": 72} if images else "3D!scene"
    return {"configById": config, "globalVariables": {}, "userNodes": {},
            "playbackConfig": {"speed": 1.0}, "layout": layout}


def write_configs(out_dir: Path | str, agents: Sequence[str]) -> tuple[Path, Path]:
    """Write RVIZ_NAME and FOXGLOVE_NAME for `agents` into `out_dir`; their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rviz, fox = out / RVIZ_NAME, out / FOXGLOVE_NAME
    header = (f"# Generated by codealign_ros.demo.viz_configs for agents {', '.join(agents)}"
              f"; regenerate, do not edit.\n")
    rviz.write_text(header + yaml.safe_dump(rviz_config(agents), sort_keys=False))
    fox.write_text(json.dumps(foxglove_layout(agents), indent=2) + "\n")
    return rviz, fox


def main(argv: list[str] | None = None) -> int:
    """`python -m codealign_ros.demo.viz_configs [--agents a,b] [--out-dir DIR]`."""
    parser = argparse.ArgumentParser(
        prog="python -m codealign_ros.demo.viz_configs",
        description="Write the RViz config and the Foxglove layout for a set of agents "
                    "(clouds coloured per agent, poses, fused + ground-truth boxes, TF, "
                    "code-map images).")
    parser.add_argument("--agents", default=",".join(lookup("viz", "demo_agents")),
                        help="comma-separated agent ids, ego first (default: the demo's)")
    parser.add_argument("--out-dir", type=Path, default=Path("config"),
                        help="where to write codealign.rviz and codealign.foxglove.json")
    args = parser.parse_args(argv)
    for path in write_configs(args.out_dir, [a for a in args.agents.split(",") if a]):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
