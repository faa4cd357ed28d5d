"""CodeAlign (CVPR 2026) V2X cooperative perception on ROS 2.

`codealign_ros.core` is ROS-free (codec, geometry, models); `codealign_ros.ros`
holds the thin rclpy adapters.
"""

__version__ = "0.1.0"
