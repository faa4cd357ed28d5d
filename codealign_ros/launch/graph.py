"""Launch graphs of config/launch.yaml as lists of `NodeSpec` (ROS-free): arguments resolved,
substitutions filled in, includes and foreach copies expanded. The YAML format is documented at
the top of launch.yaml."""
from __future__ import annotations

import re
from typing import Any, Mapping

from codealign_ros.config import ConfigError, config_dir, frame, load_config, topic
from codealign_ros.launch.agents import format_agents, parse_agents
from codealign_ros.launch.arguments import (NAME, ArgSpec, LaunchGraphError, arg_spec, bad_value,
                                            text, to_bool, to_number)
from codealign_ros.launch.executables import CONFIG, NodeSpec, executables, params_file

MAX_INCLUDE_DEPTH = 8
_SUBST = re.compile(r"\$\{([^}]*)\}")


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


def graph_arguments(name: str) -> dict[str, ArgSpec]:
    """The arguments a graph declares, in declaration order."""
    raw = _graph(name).get("arguments") or {}
    return {arg: arg_spec(name, arg, spec) for arg, spec in raw.items()}


def _convert(spec: ArgSpec, value: Any, values: Mapping[str, Any]) -> Any:
    """An argument value converted to the argument's type and checked."""
    if spec.kind == "bool":
        return to_bool(spec, value)
    if spec.kind in ("int", "float"):
        return to_number(spec, value)
    if spec.kind == "agents":
        return format_agents(parse_agents(str(value), values.get(spec.from_bag or ""), spec))
    plain = str(value)
    if spec.choices and plain not in spec.choices:
        raise bad_value(spec, value, f"one of {', '.join(spec.choices)}")
    return plain


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


def _substitute(value: Any, scope: Mapping[str, Any]) -> Any:
    """Resolve ${...} in strings (recursively in lists); `${x}` alone keeps x's type."""
    if isinstance(value, list):
        return [_substitute(v, scope) for v in value]
    if not isinstance(value, str):
        return value
    whole = _SUBST.fullmatch(value)
    if whole:
        return _lookup(whole[1], scope)
    return _SUBST.sub(lambda m: text(_lookup(m[1], scope)), value)


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
    info = executables().get(exe)
    if info is None:
        raise LaunchGraphError(f"launch.yaml: unknown executable {exe!r}; known: "
                               f"{', '.join(executables())}")
    name = str(_substitute(entry.get("name", exe), scope))
    if not NAME.match(name):
        raise LaunchGraphError(f"node name {name!r} is not a valid ROS node name")
    params = {str(k): _substitute(v, scope) for k, v in (entry.get("parameters") or {}).items()}
    if any(v is None for v in params.values()):
        raise LaunchGraphError(f"launch.yaml: node {name} has a parameter without a value")
    remaps = [(str(_substitute(a, scope)), str(_substitute(b, scope)))
              for a, b in (entry.get("remappings") or {}).items()]
    return NodeSpec(name=name, executable=str(exe), package=str(info["package"]),
                    module=info.get("module"), parameters=params,
                    arguments=[text(_substitute(a, scope)) for a in entry.get("arguments", [])],
                    remappings=[(a, b) for a, b in remaps if a != b],
                    optional=bool(entry.get("optional", False)),
                    params_file=params_file(str(exe)) if info["package"] == "codealign_ros"
                    else "")


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
            if "when" in entry and not to_bool(ArgSpec("when", None, "bool"),
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


def default_text(spec: ArgSpec) -> str:
    """An argument's default as launch text (substitutions resolved)."""
    return text(_substitute(spec.default, {}))
