"""PyTorch modules of CodeAlign (ROS-free)."""
