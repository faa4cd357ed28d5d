"""`codealign demo`: the whole node graph on a generated mini-V2X scene, with a summary.

scene        generate (cached) the demo scenario and its rosbag2; read ground truth back
recorder     rclpy node that records what the graph publishes into an MCAP rosbag2
recording    ROS-free: the recording's writer and reader (records for the summary)
summary      ROS-free: AP ego-only vs fused, CodeMap bytes, latency, drops from the records
bev_picture  Pillow bird's-eye view of one frame (points, GT, detections, agents, code maps)
animation    the layers of one frame from the recording; the animated BEV (GIF)
viz_configs  RViz config and Foxglove layout for a set of agents
runner       orchestration: scene -> launch graph + recorder -> summary + pictures
"""
