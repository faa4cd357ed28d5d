"""Bag replay, one vehicle per agent, fusion on the ego, optional RViz (graph `demo`).

    ros2 launch codealign_ros demo.launch.py bag:=data/mini-v2x-test-bag rviz:=true

Arguments, defaults and nodes live in config/launch.yaml; `codealign launch demo` runs the
same graph without ros2 launch.
"""
from codealign_ros.launch import launch_description


def generate_launch_description():
    """The launch description of graph `demo`."""
    return launch_description("demo")
