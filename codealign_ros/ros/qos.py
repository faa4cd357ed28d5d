"""QoS profiles built from config/topics.yaml."""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from codealign_ros.config import qos_settings

_POLICIES = {
    "reliability": ReliabilityPolicy,
    "durability": DurabilityPolicy,
    "history": HistoryPolicy,
}


def qos_profile(key: str) -> QoSProfile:
    """The QoSProfile named `key` in topics.yaml (e.g. "codemap", "sensor")."""
    settings = qos_settings(key)
    kwargs = {name: policy[settings[name].upper()] for name, policy in _POLICIES.items()}
    return QoSProfile(depth=int(settings["depth"]), **kwargs)
