"""Encoder registry and modality table lookups (config/modalities.yaml; torch-free).

`models.encoders` re-exports these next to the encoder classes; deploy nodes that run only
exported ONNX files import them from here without importing torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from codealign_ros import config

__all__ = ["ENCODERS", "EncoderKind", "encoder_kind", "modality_spec"]


@dataclass(frozen=True)
class EncoderKind:
    """Where an encoder class lives, its sensor, and the voxelisation of its LiDAR inputs."""

    module: str
    cls: str
    sensor: str
    voxel_key: str | None = None  # "pillar" | "voxel3d" for LiDAR encoders


ENCODERS: dict[str, EncoderKind] = {
    "pointpillars": EncoderKind("pointpillars", "PointPillars", "lidar", "pillar"),
    "second": EncoderKind("second", "Second", "lidar", "voxel3d"),
    "voxelnet": EncoderKind("voxelnet", "VoxelNet", "lidar", "voxel3d"),
    "lss_resnet101": EncoderKind("lss", "LssResNet", "camera"),
    "lss_efficientnet_b0": EncoderKind("lss", "LssEfficientNet", "camera"),
}


def encoder_kind(kind: str) -> EncoderKind:
    """Registry entry of encoder `kind`; ValueError listing the known kinds."""
    if kind not in ENCODERS:
        raise ValueError(f"unknown encoder {kind!r}; known: {sorted(ENCODERS)}")
    return ENCODERS[kind]


def modality_spec(modality: str) -> dict[str, Any]:
    """Entry of `modality` in config/modalities.yaml (ValueError listing known ones)."""
    table = config.lookup("modalities", "modalities")
    if modality not in table:
        raise ValueError(f"unknown modality {modality!r}; known: {sorted(table)}")
    spec = dict(table[modality])
    if "encoder" not in spec:
        raise ValueError(f"modalities.yaml: modality {modality!r} has no 'encoder'")
    kind = encoder_kind(spec["encoder"])
    if spec.get("sensor", kind.sensor) != kind.sensor:
        raise ValueError(f"modalities.yaml: {modality!r} says sensor {spec['sensor']!r} but "
                         f"encoder {spec['encoder']!r} takes {kind.sensor}")
    return spec
