"""The ego's fusion of its own and received code maps (graph `receiver` of config/launch.yaml).

    ros2 launch codealign_ros receiver.launch.py agent:=cav_1 max_age:=0.5

Arguments, defaults and nodes live in config/launch.yaml; `codealign launch receiver` runs the
same graph without ros2 launch.
"""
from codealign_ros.launch import launch_description


def generate_launch_description():
    """The launch description of graph `receiver`."""
    return launch_description("receiver")
