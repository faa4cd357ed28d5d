"""Isolated modality groups of config/groups.yaml (torch-free).

Modalities that co-occur in training data form a *group*; each group has its own code
space. `modality_owner` is the one modality -> group mapping; it checks that the groups
are non-empty and disjoint.
"""
from __future__ import annotations

from codealign_ros.config import ConfigError, lookup

__all__ = ["group_of", "groups", "modality_owner"]


def groups() -> dict[str, list[str]]:
    """Group -> modalities (config/groups.yaml)."""
    return {g: list(ms) for g, ms in lookup("groups", "groups").items()}


def modality_owner(groups: dict[str, list[str]]) -> dict[str, str]:
    """Modality -> group; ValueError when a group is empty or groups share a modality."""
    owner: dict[str, str] = {}
    for group, modalities in groups.items():
        if not modalities:
            raise ValueError(f"group {group!r} has no modalities")
        for modality in modalities:
            if owner.setdefault(modality, group) != group:
                raise ValueError(f"modality {modality} is in groups {owner[modality]!r} and "
                                 f"{group!r}; isolated groups must be disjoint")
    return owner


def group_of(modality: str) -> str:
    """The group whose code space `modality` belongs to (ConfigError, a KeyError, if none)."""
    owner = modality_owner(groups())
    if modality not in owner:
        raise ConfigError(f"modality {modality!r} is in no group of config/groups.yaml")
    return owner[modality]
