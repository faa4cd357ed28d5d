"""The shipped models/mini weights: "do no harm" and their model cards (issue 9)."""
from __future__ import annotations

from pathlib import Path

import pytest

from codealign_ros.data.world import World, WorldConfig
from codealign_ros.models.store import ModelStore
from codealign_ros.train.evaluate import Evaluator, Variant, parse_setting, settings

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "mini"


@pytest.fixture(scope="module")
def store() -> ModelStore:
    return ModelStore(SHIPPED)


@pytest.fixture(scope="module")
def frames() -> list:
    """Frames of a generated scene no split of tools/make_data.sh uses (seed 77)."""
    return list(World(WorldConfig(seed=77, agents=3, rsu=True), 0).frames(3, "harm"))


@pytest.mark.parametrize("setting", sorted(settings()))
def test_all_zero_peers_do_no_harm(store: ModelStore, frames: list, setting: str) -> None:
    """Fusing peers whose features are all zero leaves the ego's detections as alone."""
    alone = Evaluator(store, "codealign", parse_setting(setting), Variant(peers="none"))
    blank = Evaluator(store, "codealign", parse_setting(setting), Variant(peers="zero"))
    for frame in frames:
        alone.add(frame)
        blank.add(frame)
    a, b = alone.result(), blank.result()
    assert a["frames"] == b["frames"] == len(frames)
    assert abs(a["ap50"] - b["ap50"]) <= 0.01, (a["ap50"], b["ap50"])
    assert abs(a["ap70"] - b["ap70"]) <= 0.01, (a["ap70"], b["ap70"])


def test_every_shipped_component_has_a_card_with_its_learning_curve() -> None:
    weights = sorted(SHIPPED.glob("*.pt"))
    assert len(weights) >= 20
    for pt in weights:
        card = pt.with_suffix(".md").read_text()
        assert "## Learning curve" in card, pt.name
        assert (SHIPPED / f"{pt.stem}_curve.png").is_file(), pt.name
