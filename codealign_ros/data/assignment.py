"""Agent -> modality assignment and the isolated-group training split (ROS-free).

Modalities that co-occur in training data form a *group*; `isolation_split` gives every
training scenario to exactly one group, so agents of different groups never share a
training frame (paper protocol), while the held-out test scenarios mix them freely.
"""
from __future__ import annotations

from itertools import cycle
from typing import Any, Iterable

import numpy as np

from codealign_ros.config import lookup
from codealign_ros.config.groups import modality_owner


def _check_known(names: Iterable[str]) -> None:
    """ValueError naming the modalities missing from config/modalities.yaml."""
    known = lookup("modalities", "modalities")
    unknown = sorted({str(n) for n in names} - set(known))
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; known: {sorted(known)}")


def assign_modalities(agent_ids: list[str], rsu_ids: set[str] | None = None,
                      spec: dict[str, Any] | None = None) -> dict[str, str]:
    """Modality per agent: the first (ego) gets spec["ego"], road-side units spec["rsu"],
    the other vehicles cycle through spec["others"] in order.

    spec defaults to `assignment` of config/modalities.yaml.
    """
    spec = lookup("modalities", "assignment") if spec is None else spec
    ego, others, rsu = spec["ego"], list(spec["others"]), spec["rsu"]
    _check_known([ego, rsu, *others])
    if not others:
        raise ValueError("assignment spec has an empty 'others' list")
    rsus, vehicles = set(rsu_ids or ()), cycle(others)
    return {agent: ego if i == 0 else rsu if agent in rsus else next(vehicles)
            for i, agent in enumerate(agent_ids)}


def group_assignment(agent_ids: list[str], group_modalities: list[str]) -> dict[str, str]:
    """Modality per agent of a training scenario of one group: agents (ego first) cycle
    through the group's modalities."""
    if not group_modalities:
        raise ValueError("a group needs at least one modality")
    _check_known(group_modalities)
    return dict(zip(agent_ids, cycle(group_modalities)))


def isolation_split(scenarios: list[str], groups: dict[str, list[str]], test_fraction: float,
                    seed: int) -> dict[str, Any]:
    """{"train": {group: [scenarios]}, "test": [scenarios]}.

    The scenarios (sorted, so independent of listing order) are shuffled with `seed`; the
    first round(test_fraction * n) are held out for testing, the rest dealt round-robin
    to the groups, each training scenario to exactly one group.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if not groups:
        raise ValueError("isolation_split needs at least one group")
    owner = modality_owner(groups)
    _check_known(owner)
    unique = sorted(set(scenarios))
    if len(unique) != len(scenarios):
        raise ValueError("scenario names must be unique")
    order = [unique[i] for i in np.random.default_rng(seed).permutation(len(unique))]
    n_test = int(round(test_fraction * len(order)))
    train, names = order[n_test:], list(groups)
    if len(train) < len(names):
        raise ValueError(f"{len(train)} training scenarios cannot feed {len(names)} groups")
    return {"train": {g: sorted(train[i::len(names)]) for i, g in enumerate(names)},
            "test": sorted(order[:n_test])}


def check_isolation(split: dict[str, Any], assignments: dict[str, dict[str, str]],
                    groups: dict[str, list[str]]) -> None:
    """ValueError when a training scenario is in two groups or the test part, or carries
    modalities outside its group; scenarios without an assignment are skipped."""
    modality_owner(groups)
    seen: dict[str, str] = {scenario: "test" for scenario in split["test"]}
    for group, scenarios in split["train"].items():
        allowed = set(groups[group])
        for scenario in scenarios:
            if seen.setdefault(scenario, group) != group:
                raise ValueError(f"scenario {scenario} is in both {seen[scenario]!r} and "
                                 f"{group!r}")
            foreign = sorted(set(assignments.get(scenario, {}).values()) - allowed)
            if foreign:
                raise ValueError(f"training scenario {scenario} of group {group!r} mixes groups: "
                                 f"modalities {foreign} are not in {sorted(allowed)}")
