"""Model profiles of config/profiles.yaml (opv2v, dairv2x, mini) with their derived grids."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from codealign_ros import config
from codealign_ros.config.grid import BevGrid

__all__ = ["Profile", "load_profile", "profile_names"]


def profile_names() -> list[str]:
    """Names of the profiles in config/profiles.yaml."""
    return sorted(config.lookup("profiles", "profiles"))


def _grid_size(extent: float, cell: float, what: str) -> int:
    n = extent / cell
    if abs(n - round(n)) > 1e-6 or round(n) < 1:
        raise config.ConfigError(f"profiles.yaml: {what} extent {extent} m is not a whole "
                                 f"number of {cell} m cells")
    return int(round(n))


@dataclass(frozen=True)
class Profile:
    """One model scale: its raw YAML section plus the grids derived from it."""

    name: str
    spec: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.spec[key]

    @property
    def lidar_range(self) -> tuple[float, ...]:
        """(x_min, y_min, z_min, x_max, y_max, z_max) in metres, LiDAR frame."""
        return tuple(float(v) for v in self.spec["lidar_range"])

    @property
    def channels(self) -> int:
        """Channels C of the exchanged BEV feature (and of every code)."""
        return int(self.spec["channels"])

    @property
    def adapter_blocks(self) -> int:
        """Residual blocks of the adapter (`adapter.blocks`; the paper's 4 when absent)."""
        return int(self.spec.get("adapter", {}).get("blocks", 4))

    @property
    def num_codes(self) -> int:
        """Codes per codebook (16 -> 4 bits per cell)."""
        return int(self.spec["codebook"]["num_codes"])

    def voxel_grid(self, key: str = "pillar") -> tuple[int, int, int]:
        """(nx, ny, nz) voxels of the `pillar` or `voxel3d` voxelisation over lidar_range."""
        r, size = self.lidar_range, self.spec[key]["voxel_size"]
        return tuple(_grid_size(r[i + 3] - r[i], float(size[i]), f"{key} axis {i}")
                     for i in range(3))

    @cached_property
    def grid(self) -> BevGrid:
        """The exchanged BEV grid (code-map geometry) of this profile."""
        r = self.lidar_range
        cell = float(self.spec["pillar"]["voxel_size"][0]) * int(self.spec["feature_stride"])
        return BevGrid(r[0], r[1], _grid_size(r[3] - r[0], cell, "x"),
                       _grid_size(r[4] - r[1], cell, "y"), cell)


def load_profile(name: str) -> Profile:
    """Profile `name` of config/profiles.yaml; ConfigError listing the known ones otherwise."""
    profiles = config.lookup("profiles", "profiles")
    if name not in profiles:
        raise config.ConfigError(f"unknown profile {name!r}; known: {sorted(profiles)}")
    return Profile(name, profiles[name])
