"""Table 2 analog: end-to-end training on isolated vs co-occurring data (train/e2e.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from codealign_ros.config.profiles import load_profile
from codealign_ros.data.world import World, WorldConfig
from codealign_ros.models.store import ModelStore
from codealign_ros.train import e2e, stages
from codealign_ros.train.evaluate import evaluate, parse_setting
from codealign_ros.train.loop import LoopConfig

PROFILE = load_profile("mini")
MODS = ["m1", "m2"]


@pytest.fixture(scope="module")
def data() -> stages.StageData:
    """Two generated scenes, one per group of the setting (g1: m1, g2: m2)."""
    def scene(seed: int) -> list:
        config = WorldConfig(seed=seed, agents=2, azimuth_steps=512, background_vehicles=12,
                             world="open")
        return list(World(config, 0).frames(2, f"s{seed}"))
    return stages.StageData(PROFILE, {"g1": scene(5), "g2": scene(6)}, seed=1)


@pytest.mark.parametrize("mode, mixed", [("isolated", False), ("cooccurring", True)])
def test_samples_mix_modalities_only_when_cooccurring(data: stages.StageData, mode: str,
                                                       mixed: bool) -> None:
    dataset = e2e._dataset(data, MODS, mode)
    assert len(dataset) == sum(len(f.agents) for g in ("g1", "g2") for f in data.frames[g])
    samples = [dataset[i] for i in range(2 * len(dataset))]  # two epochs
    seen = {tuple(sorted(set(s.modalities))) for s in samples}
    if mixed:
        assert ("m1", "m2") in seen
    else:
        assert seen == {("m1",), ("m2",)}
        for s in samples:  # each group's frames carry its own modality only
            assert s.modalities[0] == ("m1" if s.key.startswith("s5") else "m2")


def test_e2e_trains_and_evaluates(data: stages.StageData, tmp_path: Path) -> None:
    cfg = LoopConfig(steps=4, lr=3e-3, progress=False, checkpoint_every=1000)
    result = e2e.train_e2e(data, MODS, "isolated", tmp_path, cfg)
    assert result.steps == 4 and (tmp_path / "e2e_isolated.pt").exists()
    store = ModelStore(tmp_path, "mini")
    encoders, _ = store.e2e("isolated")
    assert sorted(encoders) == MODS
    res = evaluate(store, "e2e_isolated", parse_setting(e2e.SETTING), data.frames["g1"][:1],
                   progress=False)
    assert res["frames"] == 1 and res["trainable_params"] == result.trainable


def test_camera_modalities_are_refused(data: stages.StageData, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="LiDAR modalities only"):
        e2e.train_e2e(data, ["m1", "m4"], "isolated", tmp_path, LoopConfig(steps=1))
