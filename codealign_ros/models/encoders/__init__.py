"""Frozen modality encoders m1..m5: sensor inputs -> exchanged BEV feature (B, C, H, W).

Which encoder a modality uses is config/modalities.yaml's `encoder` field; the kinds known
here are listed in ENCODERS (module and class, imported on demand).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from codealign_ros import config
from codealign_ros.config.modalities import ENCODERS, EncoderKind, encoder_kind, modality_spec
from codealign_ros.config.profiles import Profile

__all__ = ["ENCODERS", "Encoder", "EncoderKind", "build_encoder", "encoder_kind",
           "modality_spec"]


class Encoder(nn.Module):
    """Base of the modality encoders: named tensor inputs -> (B, C, H, W) on profile.grid."""

    kind: ClassVar[str] = ""
    sensor: ClassVar[str] = ""
    input_names: ClassVar[list[str]] = []
    output_name: ClassVar[str] = "bev"

    def __init__(self, profile: Profile) -> None:
        super().__init__()
        self.profile = profile

    @classmethod
    def from_profile(cls, profile: Profile, spec: dict[str, Any] | None = None) -> "Encoder":
        """Build from a profile and the modality's modalities.yaml entry (unused by default)."""
        return cls(profile)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the exchanged feature."""
        grid = self.profile.grid
        return self.profile.channels, grid.height, grid.width

    def example_inputs(self, batch: int = 1) -> dict[str, Tensor]:
        """Valid inputs of `batch` synthetic agents (for ONNX export and smoke tests)."""
        raise NotImplementedError

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """ONNX dynamic axes of the inputs and the output."""
        raise NotImplementedError


def encoder_class(kind: str) -> type[Encoder]:
    """The class implementing encoder `kind`."""
    entry = encoder_kind(kind)
    module = importlib.import_module(f"{__name__}.{entry.module}")
    return getattr(module, entry.cls)


def build_encoder(modality: str, profile: Profile) -> Encoder:
    """Encoder of `modality` (config/modalities.yaml) at `profile` scale."""
    spec = modality_spec(modality)
    return encoder_class(spec["encoder"]).from_profile(profile, spec)
