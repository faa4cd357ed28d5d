"""ROS-aware adapters: message conversions, QoS, nodes."""
