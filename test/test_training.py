"""Tiny end-to-end training runs of every stage on a generated frame, then every eval method."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from codealign_ros.data.world import World, WorldConfig
from codealign_ros.config.profiles import load_profile
from codealign_ros.models.store import ModelStore
from codealign_ros.train import codespace, stages
from codealign_ros.train.evaluate import METHODS, Variant, evaluate, parse_setting
from codealign_ros.train.loop import LoopConfig, fit, smoothed

PROFILE = load_profile("mini")


@pytest.fixture(scope="module")
def frames() -> list:
    config = WorldConfig(seed=5, agents=2, azimuth_steps=512, background_vehicles=12)
    return list(World(config, 0).frames(2, "tiny"))


@pytest.fixture(scope="module")
def data(frames: list) -> stages.StageData:
    groups = ("g1", "g2", "g3", "g4")
    return stages.StageData(PROFILE, {g: frames for g in groups}, seed=1)


def test_tiny_base_training_lowers_the_loss(data: stages.StageData, tmp_path: Path) -> None:
    cfg = LoopConfig(steps=40, lr=3e-3, progress=False, checkpoint_every=1000)
    result = stages.train_base(data, "m1", tmp_path, cfg)
    assert result.loss_last < 0.7 * result.loss_first, (result.loss_first, result.loss_last)
    assert (tmp_path / "base_m1.pt").exists()


def test_fit_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    x, y = torch.randn(64, 3), torch.randn(64, 1)

    def step(_: int) -> tuple[torch.Tensor, dict[str, float]]:
        return torch.nn.functional.mse_loss(model(x), y), {}

    ckpt = tmp_path / "lin.ckpt"
    fit("lin", {"m": model}, list(model.parameters()), step,
        LoopConfig(steps=10, progress=False, checkpoint_every=5), ckpt)
    history = fit("lin", {"m": model}, list(model.parameters()), step,
                  LoopConfig(steps=12, progress=False, checkpoint_every=5), ckpt)
    assert [h["step"] for h in history] == list(range(12))  # resumed at 10, ran 2 more
    first, last = smoothed(history, window=3)
    assert last < first


@pytest.fixture(scope="module")
def store_dir(data: stages.StageData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every stage for a few steps: base m1/m2/m4/m5, code spaces, translators, HEAL."""
    out = tmp_path_factory.mktemp("models") / "mini"
    cfg = LoopConfig(steps=3, progress=False, checkpoint_every=1000)
    for m in ("m1", "m2", "m3", "m4", "m5"):
        stages.train_base(data, m, out, cfg)
    store = ModelStore(out, PROFILE)
    for g in ("g1", "g2", "g3", "g4"):
        codespace.train_codespace(data, store, g, out, cfg)
    for g in ("g1", "g2", "g3", "g4"):
        stages.train_translator(data, ModelStore(out, PROFILE), g, out, cfg)
    stages.train_heal(data, ModelStore(out, PROFILE), "m2", "g1", out, cfg)
    return out


def test_codespace_stage_trains_adapters_codebook_and_shared_backend(store_dir: Path) -> None:
    store = ModelStore(store_dir, PROFILE)
    meta = store.meta("codespace_g1")
    assert meta["modalities"] == ["m1", "m4"] and meta["backend_trained"] is True
    assert store.meta("codespace_g2")["backend_trained"] is False
    assert meta["codebook_hash"] == store.codebook("g1").weights_hash()
    # A single-modality group keeps the base backend frozen: identical weights.
    base = store.base_backend("m2").state_dict()
    kept = store.group_backend("g2").state_dict()
    assert all(torch.equal(base[k], kept[k]) for k in base)


def test_translator_targets_every_other_group(store_dir: Path) -> None:
    store = ModelStore(store_dir, PROFILE)
    meta = store.meta("uct_g2")
    assert sorted(meta["targets"]) == ["g1", "g3", "g4"]
    assert meta["target_hashes"]["g1"] == store.codebook("g1").weights_hash()


# e2e_* need their own training: test/test_e2e.py trains and evaluates them
@pytest.mark.parametrize("method", [m for m in METHODS if not m.startswith("e2e_")])
def test_every_method_evaluates(store_dir: Path, frames: list, method: str) -> None:
    result = evaluate(ModelStore(store_dir, PROFILE), method, parse_setting("m1+m2"),
                      frames[:1], progress=False)
    assert result["frames"] == 1
    assert all(0.0 <= result[k] <= 1.0 for k in ("ap30", "ap50", "ap70"))
    grid = PROFILE.grid
    expected = {"single": 0.0, "noalign": PROFILE.channels * grid.height * grid.width * 4.0,
                "heal": PROFILE.channels * grid.height * grid.width * 4.0,
                "codealign": grid.height * grid.width * 4 / 8}
    if method in expected:
        assert result["payload_bytes"] == expected[method]
    if method == "codealign":
        assert 0 < result["payload_coded_bytes"] <= grid.height * grid.width * 4 / 8 + 64
        assert result["trainable_params"] > 0
    if method in ("single", "late", "noalign"):
        assert result["trainable_params"] == 0


def test_unknown_setting_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="ego\\+others"):
        parse_setting("m1")
    assert parse_setting("m1+m4,m2") == {"ego": "m1", "others": ["m4", "m2"]}
    assert np.isfinite(len(Variant().translator))
