"""Executable ROS 2 nodes (thin adapters over codealign_ros.core)."""
