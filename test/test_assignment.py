"""Modality assignment and the isolated-group split."""
from __future__ import annotations

import pytest

from codealign_ros.data.assignment import (assign_modalities, check_isolation, group_assignment,
                                           isolation_split)

GROUPS = {"lidar": ["m1", "m2"], "camera": ["m4"], "mixed": ["m3", "m5"]}
SCENARIOS = [f"scene_{i:02d}" for i in range(23)]


def test_default_spec_follows_paper_protocol() -> None:
    agents = ["cav_1", "cav_2", "rsu_1", "cav_3", "cav_4"]
    got = assign_modalities(agents, rsu_ids={"rsu_1"})
    assert got == {"cav_1": "m1", "cav_2": "m4", "rsu_1": "m2", "cav_3": "m2", "cav_4": "m4"}


def test_custom_spec_and_unknown_names() -> None:
    spec = {"ego": "m3", "others": ["m5"], "rsu": "m1"}
    assert assign_modalities(["a", "b", "c"], {"c"}, spec) == {"a": "m3", "b": "m5", "c": "m1"}
    with pytest.raises(ValueError, match="m9"):
        assign_modalities(["a", "b"], spec={**spec, "others": ["m2", "m9"]})
    with pytest.raises(ValueError, match="m7"):
        group_assignment(["a"], ["m7"])


def test_group_assignment_cycles_ego_first() -> None:
    assert group_assignment(["e", "x", "y", "z"], ["m3", "m5"]) == {
        "e": "m3", "x": "m5", "y": "m3", "z": "m5"}


def test_isolation_split_covers_each_scenario_once() -> None:
    split = isolation_split(SCENARIOS, GROUPS, test_fraction=0.2, seed=7)
    train = [s for scenarios in split["train"].values() for s in scenarios]
    assert sorted(train + split["test"]) == sorted(SCENARIOS)
    assert len(split["test"]) == round(0.2 * len(SCENARIOS))
    sizes = [len(v) for v in split["train"].values()]
    assert list(split["train"]) == list(GROUPS) and max(sizes) - min(sizes) <= 1


def test_isolation_split_is_deterministic_per_seed() -> None:
    first = isolation_split(SCENARIOS, GROUPS, 0.25, seed=3)
    assert isolation_split(list(reversed(SCENARIOS)), GROUPS, 0.25, seed=3) == first
    assert any(isolation_split(SCENARIOS, GROUPS, 0.25, seed=s) != first for s in range(4, 8))


def test_isolation_split_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="disjoint"):
        isolation_split(SCENARIOS, {"a": ["m1"], "b": ["m1", "m2"]}, 0.2, 0)
    with pytest.raises(ValueError, match="test_fraction"):
        isolation_split(SCENARIOS, GROUPS, 1.0, 0)
    with pytest.raises(ValueError, match="groups"):
        isolation_split(SCENARIOS[:3], GROUPS, 0.5, 0)


def _assignments(split: dict) -> dict[str, dict[str, str]]:
    agents = ["ego", "cav_2", "cav_3"]
    out = {s: group_assignment(agents, GROUPS[g]) for g, ss in split["train"].items() for s in ss}
    out.update({s: assign_modalities(agents) for s in split["test"]})
    return out


def test_check_isolation_catches_a_mixed_scenario() -> None:
    split = isolation_split(SCENARIOS, GROUPS, 0.2, seed=1)
    assignments = _assignments(split)
    check_isolation(split, assignments, GROUPS)  # test scenarios may mix groups
    scenario = split["train"]["lidar"][0]
    assignments[scenario]["cav_3"] = "m4"
    with pytest.raises(ValueError, match=rf"{scenario}.*m4"):
        check_isolation(split, assignments, GROUPS)


def test_check_isolation_catches_a_shared_scenario() -> None:
    split = isolation_split(SCENARIOS, GROUPS, 0.2, seed=1)
    split["train"]["camera"].append(split["train"]["lidar"][0])
    with pytest.raises(ValueError, match=split["train"]["lidar"][0]):
        check_isolation(split, {}, GROUPS)
