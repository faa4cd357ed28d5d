"""Access to the YAML files in `config/`: the one place for topics, QoS and geometry."""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import yaml

from codealign_ros.errors import CodeAlignError

ENV_CONFIG_DIR = "CODEALIGN_CONFIG_DIR"


class ConfigError(CodeAlignError, KeyError):
    """A config file or key is missing."""

    reason: str = "config"


def config_dir() -> Path:
    """Directory of the config files: $CODEALIGN_CONFIG_DIR, the checkout, or the ament share."""
    override = os.environ.get(ENV_CONFIG_DIR)
    if override:
        return Path(override)
    checkout = Path(__file__).resolve().parents[2] / "config"
    if checkout.is_dir():
        return checkout
    try:
        from ament_index_python.packages import get_package_share_directory
    except ImportError as exc:  # pragma: no cover - only outside a checkout without ROS
        raise ConfigError(f"no config directory: set {ENV_CONFIG_DIR}") from exc
    return Path(get_package_share_directory("codealign_ros")) / "config"


@functools.lru_cache(maxsize=None)
def load_config(name: str) -> dict[str, Any]:
    """Parsed `config/<name>.yaml`."""
    path = config_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    with path.open() as stream:
        return yaml.safe_load(stream) or {}


def lookup(name: str, *keys: str) -> Any:
    """Value at `keys` in `config/<name>.yaml`, with a clear error when absent."""
    node: Any = load_config(name)
    for depth, key in enumerate(keys):
        if not isinstance(node, dict) or key not in node:
            raise ConfigError(f"{name}.yaml has no key {'.'.join(keys[: depth + 1])}")
        node = node[key]
    return node


def topic(key: str, **fields: Any) -> str:
    """Topic name `topics.<key>` of topics.yaml, with {agent}/{index} filled in."""
    return str(lookup("topics", "topics", key)).format(**fields)


def sensor_topics(agent: str, cameras: int) -> list[tuple[str, str]]:
    """(topics.yaml key, name) of the sensor topics a vehicle of `agent` subscribes: its cloud
    (cameras == 0) or each camera's image and info, then its pose."""
    if not cameras:
        keys = [("lidar", {})]
    else:
        keys = [(k, {"index": i}) for k in ("camera_image", "camera_info") for i in range(cameras)]
    return [(k, topic(k, agent=agent, **f)) for k, f in [*keys, ("pose", {})]]


def frame(key: str, **fields: Any) -> str:
    """Frame name `frames.<key>` of topics.yaml, with {agent} filled in."""
    return str(lookup("topics", "frames", key)).format(**fields)


def qos_settings(key: str) -> dict[str, Any]:
    """QoS settings `qos.<key>` of topics.yaml (reliability, durability, history, depth)."""
    return dict(lookup("topics", "qos", key))
