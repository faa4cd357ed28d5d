"""Arguments of launch graphs: their spec (`ArgSpec`), typing and the text of parameter values."""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import yaml

from codealign_ros.config import ConfigError, lookup
from codealign_ros.errors import CodeAlignError

NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*$")
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}
KINDS = {bool: "bool", int: "int", float: "float", str: "str"}


class LaunchGraphError(CodeAlignError, ValueError):
    """Unknown graph or argument, a bad argument value, or an inconsistent launch.yaml."""

    reason = "launch_graph"


@dataclass(frozen=True)
class ArgSpec:
    """One argument of a graph: its type ("str", "int", "float", "bool", "agents")."""

    name: str
    default: Any
    kind: str
    description: str = ""
    choices: tuple[str, ...] = ()
    from_bag: str | None = None


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


def _node_default(graph: str, name: str, source: Any) -> Any:
    """The default of node parameter `source` = [node, parameter] (config/<node>.param.yaml)."""
    from codealign_ros.ros.params import node_defaults

    try:
        node, param = source
        return node_defaults(node)[param]
    except (ValueError, TypeError, KeyError) as err:
        raise LaunchGraphError(f"launch.yaml: graph {graph} argument {name}: default_from "
                               f"{source!r}: {err}") from None


def arg_spec(graph: str, name: str, raw: Any) -> ArgSpec:
    if not isinstance(raw, dict) or ("default" in raw) == ("default_from" in raw):
        raise LaunchGraphError(f"launch.yaml: graph {graph} argument {name} needs a default "
                               f"or a default_from: [node, parameter]")
    default = raw["default"] if "default" in raw else _node_default(graph, name,
                                                                    raw["default_from"])
    kind = raw.get("type") or KINDS.get(type(default))
    if kind not in ("agents", *KINDS.values()):
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


def bad_value(spec: ArgSpec, value: Any, expected: str) -> LaunchGraphError:
    return LaunchGraphError(f"argument {spec.name}:={value!r}: expected {expected}")


def to_bool(spec: ArgSpec, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise bad_value(spec, value, "true or false")


def to_number(spec: ArgSpec, value: Any) -> int | float:
    if isinstance(value, bool):
        raise bad_value(spec, value, f"a number ({spec.kind})")
    try:
        number = int(str(value), 10) if spec.kind == "int" else float(value)
    except ValueError:
        raise bad_value(spec, value, f"a number ({spec.kind})") from None
    if not math.isfinite(number):
        raise bad_value(spec, value, "a finite number")
    return number


def text(value: Any) -> str:
    """A value as it reads in a string substitution (booleans as true/false)."""
    return param_text(value) if isinstance(value, bool) else str(value)
