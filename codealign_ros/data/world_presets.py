"""Named presets of the generated world (config/worlds.yaml): layout and traffic numbers."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from codealign_ros.config import ConfigError, lookup

__all__ = ["SIZES", "WorldPreset", "ParkedPreset", "world_names", "default_world", "load_world"]

# Vehicle class: (length, width, height) low and high.
SIZES = {"car": ((4.2, 1.8, 1.4), (4.9, 2.0, 1.6)), "van": ((5.0, 1.95, 1.9), (5.4, 2.1, 2.3)),
         "truck": ((8.0, 2.4, 3.0), (10.0, 2.6, 3.4))}


def _pair(value: Any, what: str) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if lo > hi:
        raise ConfigError(f"worlds.yaml: {what} range {value} has lo > hi")
    return lo, hi


def _mix(value: dict[str, float], what: str) -> dict[str, float]:
    unknown = set(value) - set(SIZES)
    total = sum(value.values())
    if unknown or abs(total - 1.0) > 1e-6 or min(value.values()) < 0:
        raise ConfigError(f"worlds.yaml: {what} must give shares of {sorted(SIZES)} summing to 1,"
                          f" got {value}")
    return {str(k): float(v) for k, v in value.items()}


@dataclass(frozen=True)
class ParkedPreset:
    """Vehicles parked along both curbs of every road (fill 0: none)."""

    fill: float = 0.0
    gap: tuple[float, float] = (0.8, 3.0)
    offset: float = 0.3
    corner_clearance: float = 8.0
    mix: dict[str, float] = field(default_factory=lambda: {"car": 1.0})


@dataclass(frozen=True)
class WorldPreset:
    """One entry of config/worlds.yaml (see the comments there)."""

    name: str
    roads: tuple[int, int]
    block: tuple[float, float]
    buildings_per_road: int
    building_setback: tuple[float, float]
    building_size: tuple[tuple[float, float, float], tuple[float, float, float]]
    walls_per_road: int
    background_vehicles: int
    traffic_spread: float
    traffic_mix: dict[str, float]
    ego_before_intersection: tuple[float, float]
    parked: ParkedPreset


def world_names() -> list[str]:
    """Preset names of config/worlds.yaml."""
    return sorted(lookup("worlds", "worlds"))


def default_world() -> str:
    """The preset `codealign synth` uses without --world."""
    return str(lookup("worlds", "default"))


def load_world(name: str) -> WorldPreset:
    """The preset `name`, validated; ConfigError naming the problem otherwise."""
    if name not in world_names():
        raise ConfigError(f"worlds.yaml has no world {name!r}; choose from {world_names()}")
    raw = dict(lookup("worlds", "worlds", name))
    expected = {f.name for f in fields(WorldPreset)} - {"name"}
    if set(raw) != expected:
        raise ConfigError(f"worlds.yaml: world {name!r} needs exactly the keys {sorted(expected)}"
                          f"; missing {sorted(expected - set(raw))}, "
                          f"unknown {sorted(set(raw) - expected)}")
    parked = dict(raw["parked"])
    defaults = ParkedPreset()
    parked_preset = ParkedPreset(
        fill=float(parked.get("fill", defaults.fill)),
        gap=_pair(parked.get("gap", defaults.gap), f"{name}.parked.gap"),
        offset=float(parked.get("offset", defaults.offset)),
        corner_clearance=float(parked.get("corner_clearance", defaults.corner_clearance)),
        mix=_mix(parked.get("mix", defaults.mix), f"{name}.parked.mix"))
    lo_size, hi_size = (tuple(float(v) for v in s) for s in raw["building_size"])
    roads = tuple(int(v) for v in raw["roads"])
    if not 0.0 <= parked_preset.fill <= 1.0 or not 2 <= roads[0] <= roads[1] <= 4:
        raise ConfigError(f"worlds.yaml: world {name!r} needs parked.fill in [0, 1] and "
                          f"2 <= roads lo <= hi <= 4")
    return WorldPreset(
        name=name, roads=(roads[0], roads[1]), block=_pair(raw["block"], f"{name}.block"),
        buildings_per_road=int(raw["buildings_per_road"]),
        building_setback=_pair(raw["building_setback"], f"{name}.building_setback"),
        building_size=(lo_size, hi_size),  # type: ignore[arg-type]
        walls_per_road=int(raw["walls_per_road"]),
        background_vehicles=int(raw["background_vehicles"]),
        traffic_spread=float(raw["traffic_spread"]),
        traffic_mix=_mix(raw["traffic_mix"], f"{name}.traffic_mix"),
        ego_before_intersection=_pair(raw["ego_before_intersection"],
                                      f"{name}.ego_before_intersection"),
        parked=parked_preset)
