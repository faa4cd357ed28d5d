"""Training and evaluation of CodeAlign (ROS-free): samples, stages, checkpoints, evaluation."""
