"""The README's drop table and the code agree: one row per reason, the same reasons per stage,
and every reason literal the nodes and pipelines count is in the table."""
from __future__ import annotations

import re
from pathlib import Path

from codealign_ros.pipeline.drops import drop_table

ROOT = Path(__file__).resolve().parent.parent
# where drops are counted; reasons appear as literals in these calls / returns
SOURCES = ["codealign_ros/nodes/fusion_node.py", "codealign_ros/nodes/vehicle_node.py",
           "codealign_ros/pipeline/receiver.py", "codealign_ros/pipeline/vehicle.py",
           "codealign_ros/pipeline/link.py", "codealign_ros/core/signing.py",
           "codealign_ros/ros/sync.py"]
COUNTED = re.compile(r'(?:_drop|\.drop|PipelineError)\(\s*"([a-z_]+)"'
                     r'|(?:return|reason =) "([a-z_]+)"')
# PipelineError("config"): a start-up error; the others: ReceiverPipeline._path's fusion paths
NOT_DROPS = {"config", "own_space", "sender_translated", "translated"}


def readme_table() -> list[tuple[str, list[str]]]:
    text = (ROOT / "README.md").read_text()
    body = text.split("<!-- drop-table:start -->")[1].split("<!-- drop-table:end -->")[0]
    rows = []
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            rows.append((cells[0].strip("`"), [s.strip() for s in cells[1].split(",")]))
    return rows


def test_every_reason_is_documented_once() -> None:
    reasons = [r for r, _ in readme_table()]
    assert len(reasons) == len(set(reasons)), "a reason has two rows"
    assert len(reasons) > 30


def test_readme_table_matches_the_code_per_stage() -> None:
    documented: dict[str, set[str]] = {}
    for reason, stages in readme_table():
        for stage in stages:
            documented.setdefault(stage, set()).add(reason)
    assert documented == {stage: set(r) for stage, r in drop_table().items() if r}


def test_every_counted_reason_literal_is_in_the_table() -> None:
    known = {r for reasons in drop_table().values() for r in reasons}
    for path in SOURCES:
        found = {a or b for a, b in COUNTED.findall((ROOT / path).read_text())}
        missing = found - known - NOT_DROPS
        assert not missing, f"{path} counts {sorted(missing)}, not in the drop table"
