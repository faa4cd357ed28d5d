"""Launch graphs of config/launch.yaml as lists of `NodeSpec` (ROS-free).

One description serves `ros2 launch codealign_ros <graph>.launch.py` (`launch_description`,
which imports `launch` / `launch_ros` only when called) and `codealign launch <graph>`
(codealign_ros.nodes.launcher). The YAML format is documented at the top of launch.yaml.
"""
from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from codealign_ros.config import ConfigError, config_dir, frame, load_config, lookup, topic

CONFIG = "launch"
AUTO = "auto"
MAX_INCLUDE_DEPTH = 8
_SUBST = re.compile(r"\$\{([^}]*)\}")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*$")
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}
_KINDS = {bool: "bool", int: "int", float: "float", str: "str"}


class LaunchGraphError(ValueError):
    """Unknown graph or argument, a bad argument value, or an inconsistent launch.yaml."""


@dataclass(frozen=True)
class ArgSpec:
    """One argument of a graph: its type ("str", "int", "float", "bool", "agents")."""

    name: str
    default: Any
    kind: str
    description: str = ""
    choices: tuple[str, ...] = ()
    from_bag: str | None = None


@dataclass(frozen=True)
class NodeSpec:
    """One node process: ROS node `name` running `executable` of `package`.

    `module` is the Python module behind the executable (None: not a Python node);
    `arguments` go on the command line before `--ros-args`.
    """

    name: str
    executable: str
    package: str
    module: str | None
    parameters: dict[str, Any] = field(default_factory=dict)
    arguments: list[str] = field(default_factory=list)
    remappings: list[tuple[str, str]] = field(default_factory=list)
    optional: bool = False

    def ros_argv(self) -> list[str]:
        """`--ros-args -r __node:=name -p k:=v ... -r from:=to ...`."""
        argv = ["--ros-args", "-r", f"__node:={self.name}"]
        for key, value in self.parameters.items():
            argv += ["-p", f"{key}:={param_text(value)}"]
        for source, target in self.remappings:
            argv += ["-r", f"{source}:={target}"]
        return argv

    def command(self, python: str = sys.executable, program: str | None = None) -> list[str]:
        """argv of the process: `python -u -m module ...` or `program|executable ...`."""
        head = [python, "-u", "-m", self.module] if self.module else [program or self.executable]
        return [*head, *self.arguments, *self.ros_argv()]


def param_text(value: Any) -> str:
    """A parameter value as `-p name:=<text>` needs it (YAML; strings quoted when they would
    otherwise read as another type)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        try:
            plain = isinstance(yaml.safe_load(value), str) and "\n" not in value
        except yaml.YAMLError:
            plain = False
        return value if plain else "'" + value.replace("'", "''") + "'"
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    return str(value)


def _graphs() -> dict[str, Any]:
    graphs = load_config(CONFIG).get("graphs") or {}
    if not isinstance(graphs, dict):
        raise LaunchGraphError("launch.yaml: `graphs` must be a mapping")
    return graphs


def graph_names() -> list[str]:
    """Names of the graphs in launch.yaml."""
    return list(_graphs())


def _graph(name: str) -> dict[str, Any]:
    graphs = _graphs()
    if name not in graphs:
        raise LaunchGraphError(f"unknown launch graph {name!r}; graphs: {', '.join(graphs)}")
    return graphs[name]


def graph_description(name: str) -> str:
    """One-line description of a graph."""
    return str(_graph(name).get("description", ""))


def _arg_spec(graph: str, name: str, raw: Any) -> ArgSpec:
    if not isinstance(raw, dict) or "default" not in raw:
        raise LaunchGraphError(f"launch.yaml: graph {graph} argument {name} needs a default")
    default = raw["default"]
    kind = raw.get("type") or _KINDS.get(type(default))
    if kind not in ("agents", *_KINDS.values()):
        raise LaunchGraphError(f"launch.yaml: graph {graph} argument {name}: unsupported type "
                               f"of default {default!r}")
    choices: tuple[str, ...] = ()
    if raw.get("choices_from"):
        try:
            choices = tuple(str(c) for c in lookup(*raw["choices_from"]))
        except ConfigError as err:
            raise LaunchGraphError(f"launch.yaml: graph {graph} argument {name}: {err}") from None
    return ArgSpec(name, default, kind, str(raw.get("description", "")), choices,
                   raw.get("from_bag"))


def graph_arguments(name: str) -> dict[str, ArgSpec]:
    """The arguments a graph declares, in declaration order."""
    raw = _graph(name).get("arguments") or {}
    return {arg: _arg_spec(name, arg, spec) for arg, spec in raw.items()}


def _executables() -> dict[str, dict[str, Any]]:
    return load_config(CONFIG).get("executables") or {}


def _bad_value(spec: ArgSpec, value: Any, expected: str) -> LaunchGraphError:
    return LaunchGraphError(f"argument {spec.name}:={value!r}: expected {expected}")


def _to_bool(spec: ArgSpec, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise _bad_value(spec, value, "true or false")


def _to_number(spec: ArgSpec, value: Any) -> int | float:
    if isinstance(value, bool):
        raise _bad_value(spec, value, f"a number ({spec.kind})")
    try:
        number = int(str(value), 10) if spec.kind == "int" else float(value)
    except ValueError:
        raise _bad_value(spec, value, f"a number ({spec.kind})") from None
    if not math.isfinite(number):
        raise _bad_value(spec, value, "a finite number")
    return number


def _convert(spec: ArgSpec, value: Any, values: Mapping[str, Any]) -> Any:
    """An argument value converted to the argument's type and checked."""
    if spec.kind == "bool":
        return _to_bool(spec, value)
    if spec.kind in ("int", "float"):
        return _to_number(spec, value)
    if spec.kind == "agents":
        return format_agents(parse_agents(str(value), values.get(spec.from_bag or ""), spec))
    text = str(value)
    if spec.choices and text not in spec.choices:
        raise _bad_value(spec, value, f"one of {', '.join(spec.choices)}")
    return text


def bag_agents(bag: str | Path) -> list[str]:
    """Agents of a rosbag2 written by `codealign convert`, in bag order (the ego first):
    those with a pose topic."""
    from rosbags.rosbag2 import Reader
    from rosbags.rosbag2.errors import ReaderError

    pattern = re.escape(topic("pose", agent="\0")).replace("\0", "([^/]+)")
    try:
        with Reader(Path(bag)) as reader:
            names = [c.topic for c in reader.connections]
    except (ReaderError, OSError) as err:
        raise LaunchGraphError(f"agents:=auto needs a readable bag, {bag}: {err}") from None
    agents = [m[1] for m in (re.fullmatch(pattern, n) for n in names) if m]
    if not agents:
        raise LaunchGraphError(f"{bag}: no {topic('pose', agent='<agent>')} topics to take "
                               f"agents from; give agents:=a:m1,b:m4")
    return list(dict.fromkeys(agents))


def _is_rsu(agent: str) -> bool:
    from codealign_ros.data.dairv2x import INFRA
    from codealign_ros.data.opv2v import cav_id_of

    try:
        return cav_id_of(agent) < 0
    except ValueError:
        return agent == INFRA.agent


def parse_agents(text: str, bag: Any = None, spec: ArgSpec | None = None
                 ) -> list[tuple[str, str]]:
    """[(agent, modality)] from "a[:m],b[:m],..." or "auto" (agents of `bag`); missing
    modalities follow the `assignment` of modalities.yaml (ego first)."""
    from codealign_ros.data.assignment import assign_modalities

    label = spec.name if spec else "agents"
    if text.strip() == AUTO:
        if bag is None:
            raise LaunchGraphError(f"argument {label}:=auto needs a bag argument")
        entries = [(agent, "") for agent in bag_agents(bag)]
    else:
        entries = [tuple(e.strip().split(":", 1)) if ":" in e else (e.strip(), "")
                   for e in text.split(",") if e.strip()]
    if not entries:
        raise LaunchGraphError(f"argument {label}:={text!r}: expected agent[:modality],...")
    names = [agent for agent, _ in entries]
    bad = [a for a in names if not _NAME.match(a)]
    if bad or len(set(names)) != len(names):
        raise LaunchGraphError(f"argument {label}:={text!r}: agent ids must be unique ROS "
                               f"names (letters, digits, _), got {names}")
    known = lookup("modalities", "modalities")
    unknown = sorted({m for _, m in entries if m and m not in known})
    if unknown:
        raise LaunchGraphError(f"argument {label}:={text!r}: unknown modalities {unknown}; "
                               f"known: {', '.join(known)}")
    default = assign_modalities(names, {a for a in names if _is_rsu(a)})
    return [(agent, modality or default[agent]) for agent, modality in entries]


def format_agents(agents: list[tuple[str, str]]) -> str:
    """Inverse of `parse_agents`: "a:m1,b:m4"."""
    return ",".join(f"{agent}:{modality}" for agent, modality in agents)


def resolve_arguments(name: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Typed values of every argument of graph `name` (defaults, then `overrides`).

    Raises LaunchGraphError for unknown arguments (listing the valid ones) or bad values.
    """
    specs, overrides = graph_arguments(name), dict(overrides or {})
    unknown = sorted(set(overrides) - set(specs))
    if unknown:
        raise LaunchGraphError(
            f"unknown argument(s) {', '.join(unknown)} for graph {name!r}; valid: "
            f"{', '.join(specs) or '(none)'}")
    values: dict[str, Any] = {}
    for spec in sorted(specs.values(), key=lambda s: s.kind == "agents"):  # bag first
        value = overrides[spec.name] if spec.name in overrides else _substitute(spec.default, {})
        values[spec.name] = _convert(spec, value, values)
    return {arg: values[arg] for arg in specs}


def _lookup(token: str, scope: Mapping[str, Any]) -> Any:
    kind, _, key = token.partition(":")
    if token == "config_dir":
        return str(config_dir())
    if key and kind in ("topic", "frame"):
        fields = {k: v for k, v in scope.items() if isinstance(v, (str, int))}
        try:
            return (topic if kind == "topic" else frame)(key, **fields)
        except (ConfigError, KeyError, IndexError) as err:
            raise LaunchGraphError(f"substitution ${{{token}}}: {err}") from None
    if token in scope:
        return scope[token]
    raise LaunchGraphError(f"unknown substitution ${{{token}}}; known: "
                           f"{', '.join(sorted(scope))}, config_dir, topic:<key>, frame:<key>")


def _text(value: Any) -> str:
    return param_text(value) if isinstance(value, bool) else str(value)


def _substitute(value: Any, scope: Mapping[str, Any]) -> Any:
    """Resolve ${...} in strings (recursively in lists); `${x}` alone keeps x's type."""
    if isinstance(value, list):
        return [_substitute(v, scope) for v in value]
    if not isinstance(value, str):
        return value
    whole = _SUBST.fullmatch(value)
    if whole:
        return _lookup(whole[1], scope)
    return _SUBST.sub(lambda m: _text(_lookup(m[1], scope)), value)


def _scope(name: str, values: Mapping[str, Any]) -> dict[str, Any]:
    scope = dict(values)
    lists = [arg for arg, spec in graph_arguments(name).items() if spec.kind == "agents"]
    if len(lists) > 1:
        raise LaunchGraphError(f"launch.yaml: graph {name} has several agents arguments")
    if lists:
        scope["ego"] = parse_agents(values[lists[0]])[0][0]
    return scope


def _each(graph: str, entry: Mapping[str, Any], scope: Mapping[str, Any]
          ) -> list[dict[str, Any]]:
    """Per-copy variables of a node/include entry: one dict per agent with `foreach`."""
    arg = entry.get("foreach")
    if arg is None:
        return [{}]
    if graph_arguments(graph).get(arg, ArgSpec(arg, None, "")).kind != "agents":
        raise LaunchGraphError(f"launch.yaml: graph {graph}: foreach {arg!r} is not an "
                               f"agents argument")
    return [{"agent": agent, "modality": modality, "index": i}
            for i, (agent, modality) in enumerate(parse_agents(scope[arg]))]


def _node(entry: Mapping[str, Any], scope: Mapping[str, Any]) -> NodeSpec:
    exe = entry.get("executable")
    info = _executables().get(exe)
    if info is None:
        raise LaunchGraphError(f"launch.yaml: unknown executable {exe!r}; known: "
                               f"{', '.join(_executables())}")
    name = str(_substitute(entry.get("name", exe), scope))
    if not _NAME.match(name):
        raise LaunchGraphError(f"node name {name!r} is not a valid ROS node name")
    params = {str(k): _substitute(v, scope) for k, v in (entry.get("parameters") or {}).items()}
    if any(v is None for v in params.values()):
        raise LaunchGraphError(f"launch.yaml: node {name} has a parameter without a value")
    remaps = [(str(_substitute(a, scope)), str(_substitute(b, scope)))
              for a, b in (entry.get("remappings") or {}).items()]
    return NodeSpec(name=name, executable=str(exe), package=str(info["package"]),
                    module=info.get("module"), parameters=params,
                    arguments=[_text(_substitute(a, scope)) for a in entry.get("arguments", [])],
                    remappings=[(a, b) for a, b in remaps if a != b],
                    optional=bool(entry.get("optional", False)))


def _include(parent: str, entry: Mapping[str, Any], scope: Mapping[str, Any],
             depth: int) -> list[NodeSpec]:
    child = entry.get("graph")
    child_args = graph_arguments(child)
    given = entry.get("with") or {}
    extra = sorted(set(given) - set(child_args))
    if extra:
        raise LaunchGraphError(f"launch.yaml: graph {parent} passes unknown argument(s) "
                               f"{extra} to {child}")
    out = []
    for each in _each(parent, entry, scope):
        local = {**scope, **each}
        overrides = {arg: each[arg] if arg in each else
                     _substitute(given[arg], local) if arg in given else scope[arg]
                     for arg in child_args if arg in each or arg in given or arg in scope}
        out += _expand(child, resolve_arguments(child, overrides), depth + 1)
    return out


def _expand(name: str, values: Mapping[str, Any], depth: int) -> list[NodeSpec]:
    if depth > MAX_INCLUDE_DEPTH:
        raise LaunchGraphError(f"launch.yaml: includes nested deeper than {MAX_INCLUDE_DEPTH} "
                               f"(a cycle?) at graph {name}")
    graph, scope = _graph(name), _scope(name, values)
    specs = [spec for entry in graph.get("include") or []
             for spec in _include(name, entry, scope, depth)]
    for entry in graph.get("nodes") or []:
        for each in _each(name, entry, scope):
            local = {**scope, **each}
            if "when" in entry and not _to_bool(ArgSpec("when", None, "bool"),
                                                _substitute(entry["when"], local)):
                continue
            specs.append(_node(entry, local))
    return specs


def load_graph(name: str, overrides: Mapping[str, Any] | None = None) -> list[NodeSpec]:
    """The nodes of graph `name` with every substitution resolved, included graphs and
    foreach copies expanded (included nodes first).

    `overrides` maps argument names to values (strings as on a command line, or typed).
    Raises LaunchGraphError (a ValueError) for unknown arguments, listing the valid ones,
    bad values, or an inconsistent launch.yaml.
    """
    specs = _expand(name, resolve_arguments(name, overrides), 0)
    names = [spec.name for spec in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise LaunchGraphError(f"graph {name}: node names used twice: {duplicates}")
    return specs


def locate(spec: NodeSpec) -> str | None:
    """Where the node's code is: the module's file, or the executable on PATH or in the
    package's ament lib directory; None when not installed."""
    if spec.module:
        try:
            found = importlib.util.find_spec(spec.module)
        except ImportError:
            found = None
        return found.origin if found is not None else None
    path = shutil.which(spec.executable)
    if path:
        return path
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix
        candidate = Path(get_package_prefix(spec.package)) / "lib" / spec.package / spec.executable
    except (ImportError, PackageNotFoundError, ValueError):
        return None
    return str(candidate) if candidate.is_file() else None


def split_available(specs: list[NodeSpec]) -> tuple[list[NodeSpec], list[NodeSpec]]:
    """(to run, skipped): optional nodes whose executable is not installed are skipped."""
    skipped = [s for s in specs if s.optional and locate(s) is None]
    return [s for s in specs if s not in skipped], skipped


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

    declared = [DeclareLaunchArgument(arg, default_value=_text(_substitute(spec.default, {})),
                                      description=spec.description)
                for arg, spec in args.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=nodes)])


def _launch_node(spec: NodeSpec) -> Any:
    from launch_ros.actions import Node

    return Node(package=spec.package, executable=spec.executable, name=spec.name,
                parameters=[spec.parameters] if spec.parameters else [],
                arguments=list(spec.arguments), remappings=list(spec.remappings),
                output="screen")
