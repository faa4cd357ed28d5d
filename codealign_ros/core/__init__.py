"""ROS-free core of CodeAlign."""
