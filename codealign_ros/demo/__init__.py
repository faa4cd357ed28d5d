"""`codealign demo`: the whole node graph on a generated mini-V2X scene, with a summary.

scene        generate (cached) the demo scenario and its rosbag2; read ground truth back
recorder     rclpy node that writes what the graph publishes as JSON lines
summary      ROS-free: AP ego-only vs fused, CodeMap bytes, latency, drops from a record
bev_picture  Pillow bird's-eye view of one frame (points, GT, detections, agents)
runner       orchestration: scene -> launch graph + recorder -> summary + picture
"""
