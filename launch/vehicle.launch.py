"""One connected agent: sensors -> encoder -> code maps (graph `vehicle` of config/launch.yaml).

    ros2 launch codealign_ros vehicle.launch.py modality:=m1 agent:=cav_1

Arguments, defaults and nodes live in config/launch.yaml; `codealign launch vehicle` runs the
same graph without ros2 launch.
"""
from codealign_ros.launch import launch_description


def generate_launch_description():
    """The launch description of graph `vehicle`."""
    return launch_description("vehicle")
