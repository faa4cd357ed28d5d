"""ROS-free deployment pipelines: vehicle (sensors -> code maps) and receiver (maps -> boxes).

Nodes (codealign_ros.nodes.vehicle_node / fusion_node) are thin wrappers around these. Names
load lazily (torch is slow to import; `codealign export --help` should not wait for it).
"""
from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "PipelineError": "stages", "export_all": "stages", "stage_backend": "stages",
    "DROP_REASONS": "drops", "ReceiverPipeline": "receiver", "ReceiverResult": "receiver",
    "drop_reason": "drops",
    "ReceiverConfig": "configs", "VehicleConfig": "configs",
    "SpaceInfo": "vehicle", "VehiclePipeline": "vehicle", "VehicleResult": "vehicle",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
