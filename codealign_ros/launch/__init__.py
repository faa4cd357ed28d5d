"""Launch graphs (config/launch.yaml) for `codealign launch` and `ros2 launch`.

arguments.py: argument specs and typing; agents.py: agents arguments (also from a bag);
executables.py: node processes and where their code is; graph.py: the graph language;
ros_adapter.py: the launch_ros adapter of launch/*.launch.py.
"""
from codealign_ros.launch.agents import AUTO, bag_agents, format_agents, parse_agents
from codealign_ros.launch.arguments import ArgSpec, LaunchGraphError, param_text
from codealign_ros.launch.executables import NodeSpec, executables, locate, split_available
from codealign_ros.launch.graph import (graph_arguments, graph_description, graph_names,
                                        load_graph, resolve_arguments)
from codealign_ros.launch.ros_adapter import launch_description

__all__ = ["AUTO", "ArgSpec", "LaunchGraphError", "NodeSpec", "bag_agents", "executables",
           "format_agents", "graph_arguments", "graph_description", "graph_names",
           "launch_description", "load_graph", "locate", "param_text", "parse_agents",
           "resolve_arguments", "split_available"]
