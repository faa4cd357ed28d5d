"""Typed configurations of the pipelines (`VehicleConfig`, `ReceiverConfig`), in place of
long positional parameter lists; `from_params` reads a node's parameter mapping
(config/<node>.param.yaml conventions: "" = unset, 0 threads = backend default)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

__all__ = ["ReceiverConfig", "VehicleConfig"]


def _opt_str(value: Any) -> str | None:
    return str(value) if value else None


def _opt_int(value: Any) -> int | None:
    return int(value) if value else None


@dataclass(frozen=True)
class VehicleConfig:
    """One agent's vehicle pipeline: its weights, modality and id, backend, D2C targets."""

    model_dir: Path | str
    modality: str
    agent_id: str
    backend: str = "auto"
    translate_to: tuple[str, ...] = ()
    profile: str | None = None      # None: model_dir's name
    cache_dir: Path | str | None = None  # None: <model_dir>/onnx
    threads: int | None = None      # None: backend default

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> "VehicleConfig":
        """From vehicle_node's parameters (config/vehicle_node.param.yaml)."""
        return cls(p["model_dir"], p["modality"], p["agent_id"], p["backend"],
                   tuple(p["translate_to"]), _opt_str(p["profile"]), _opt_str(p["cache_dir"]),
                   _opt_int(p["threads"]))


@dataclass(frozen=True)
class ReceiverConfig:
    """The ego's receiver: weights, ego id and modality, backend and the peer-table limits
    (seconds / metres; comm_range_m None = groups.yaml data.comm_range)."""

    model_dir: Path | str
    ego_agent_id: str
    ego_modality: str
    backend: str = "auto"
    max_age_s: float = 0.5
    future_tolerance_s: float = 0.05
    comm_range_m: float | None = None
    max_peers: int = 8
    profile: str | None = None
    cache_dir: Path | str | None = None
    claim_window_s: float = 1.0
    threads: int | None = None
    max_delay_s: float = 1.0

    @classmethod
    def from_params(cls, p: Mapping[str, Any], modality: str) -> "ReceiverConfig":
        """From fusion_node's parameters (config/fusion_node.param.yaml) and the ego's
        modality; a negative comm_range_m means the configured range."""
        comm = float(p["comm_range_m"])
        return cls(p["model_dir"], p["agent_id"], modality, p["backend"],
                   float(p["max_age_s"]), float(p["future_tolerance_s"]),
                   comm if comm >= 0 else None, int(p["max_peers"]), _opt_str(p["profile"]),
                   _opt_str(p["cache_dir"]), float(p["claim_window_s"]),
                   _opt_int(p["threads"]), float(p["max_delay_s"]))
