"""Node parameters the Autoware way: `config/<node>.param.yaml` (`/**: ros__parameters:`)
holds the ONE default of every parameter a node declares, `config/schema/<node>.schema.json`
its JSON schema (types, ranges, choices). Nodes declare from the file (nothing defaulted in
code); `codealign launch` and `ros2 launch` pass the same file (`param_file`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from codealign_ros.config import ConfigError, config_dir

__all__ = ["declare_from_file", "node_defaults", "node_schema", "param_file", "schema_file"]

_ARRAY_TYPES = {"string": "STRING_ARRAY", "number": "DOUBLE_ARRAY", "integer": "INTEGER_ARRAY",
                "boolean": "BOOL_ARRAY"}


def param_file(node: str) -> Path:
    """config/<node>.param.yaml."""
    return config_dir() / f"{node}.param.yaml"


def schema_file(node: str) -> Path:
    """config/schema/<node>.schema.json."""
    return config_dir() / "schema" / f"{node}.schema.json"


def node_defaults(node: str) -> dict[str, Any]:
    """The `/**: ros__parameters` mapping of config/<node>.param.yaml."""
    path = param_file(node)
    try:
        data = yaml.safe_load(path.read_text()) or {}
        return dict(data["/**"]["ros__parameters"])
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: no `/**: ros__parameters:` mapping ({exc})") from None


def node_schema(node: str) -> dict[str, Any]:
    """The JSON schema of a node's parameters (config/schema/<node>.schema.json)."""
    path = schema_file(node)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable schema ({exc})") from None


def _properties(node: str) -> dict[str, Any]:
    return node_schema(node)["definitions"][node]["properties"]["ros__parameters"]["properties"]


def declare_from_file(ros_node: Any, node: str) -> dict[str, Any]:
    """Declare every parameter of config/<node>.param.yaml on `ros_node` with the file's
    default (an empty list takes its array type from the schema); their values."""
    from rclpy.parameter import Parameter

    values = {}
    for name, default in node_defaults(node).items():
        if default == []:
            kind = _ARRAY_TYPES[_properties(node)[name]["items"]["type"]]
            value = ros_node.declare_parameter(name, getattr(Parameter.Type, kind)).value
            values[name] = list(value) if value is not None else []
        else:
            values[name] = ros_node.declare_parameter(name, default).value
    return values
