"""The launch_ros adapter: a graph as a `launch.LaunchDescription` (imports `launch` /
`launch_ros` only when called, i.e. on a full ROS 2 install)."""
from __future__ import annotations

from typing import Any

from codealign_ros.launch.executables import NodeSpec, split_available
from codealign_ros.launch.graph import default_text, graph_arguments, load_graph


def launch_description(graph: str) -> Any:
    """A launch.LaunchDescription of `graph`: its arguments declared, its nodes built from
    `load_graph` at launch time (needs `launch` and `launch_ros`, i.e. a full ROS 2 install)."""
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
    from launch.substitutions import LaunchConfiguration

    args = graph_arguments(graph)

    def nodes(context: Any, *_: Any, **__: Any) -> list[Any]:
        overrides = {arg: LaunchConfiguration(arg).perform(context) for arg in args}
        run, skipped = split_available(load_graph(graph, overrides))
        notes = [LogInfo(msg=f"{graph}: skipping {s.name}: {s.executable} is not installed")
                 for s in skipped]
        return notes + [_launch_node(spec) for spec in run]

    declared = [DeclareLaunchArgument(arg, default_value=default_text(spec),
                                      description=spec.description)
                for arg, spec in args.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=nodes)])


def _launch_node(spec: NodeSpec) -> Any:
    from launch_ros.actions import Node

    return Node(package=spec.package, executable=spec.executable, name=spec.name,
                parameters=[p for p in (spec.params_file, spec.parameters) if p],
                arguments=list(spec.arguments), remappings=list(spec.remappings),
                output="screen", **({"prefix": " ".join(spec.prefix())} if spec.prefix() else {}))
