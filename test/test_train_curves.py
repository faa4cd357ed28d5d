"""Learning curves + early stop, codebook k-means init in the code-space stage, the backend
strategies, agents per sample as evaluation, the point-cloud cache."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from codealign_ros.data.pcd import read_pcd, read_pcd_cached, write_pcd
from codealign_ros.data.world import World, WorldConfig
from codealign_ros.config.profiles import load_profile
from codealign_ros.models.store import ModelStore
from codealign_ros.train import codespace, stages
from codealign_ros.train.curves import Plateau, curve_png, curve_table
from codealign_ros.train.dataset import CoopDataset
from codealign_ros.train.evaluate import assignment_of
from codealign_ros.train.loop import LoopConfig, fit
from codealign_ros.train.samples import make_sample, sample_agents

PROFILE = load_profile("mini")


def test_plateau_rule() -> None:
    rule = Plateau(evals=2, min_gain=0.01)
    assert not rule.reached([0.1, 0.2])  # too few evaluations
    assert not rule.reached([0.1, 0.2, 0.3])  # still rising
    assert rule.reached([0.1, 0.3, 0.305, 0.29])  # +0.5 AP over 2 evaluations: flat
    assert not Plateau(evals=0).reached([0.5] * 10)  # off


def _linear_run(tmp_path: Path, cfg: LoopConfig) -> list[dict]:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    x = torch.randn(64, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])

    def step(_: int) -> tuple[torch.Tensor, dict[str, float]]:
        return torch.nn.functional.mse_loss(model(x), y), {}

    def validate() -> dict[str, float]:  # a real score of the model: 1 / (1 + val mse)
        with torch.no_grad():
            score = 1.0 / (1.0 + float(torch.nn.functional.mse_loss(model(x), y)))
        return {"val_ap30": score, "val_ap50": score, "val_ap70": score ** 2}

    return fit("lin", {"m": model}, list(model.parameters()), step, cfg,
               tmp_path / "lin.ckpt", validate=validate)


def test_validation_curve_and_early_stop(tmp_path: Path) -> None:
    cfg = LoopConfig(steps=400, lr=0.05, progress=False, eval_every=10, plateau_evals=3,
                     plateau_gain=0.01, checkpoint_every=10**6)
    history = _linear_run(tmp_path, cfg)
    points = [h for h in history if "val_ap50" in h]
    assert [p["step"] + 1 for p in points] == list(range(10, len(history) + 1, 10))
    assert history[-1].get("stopped_early") and len(history) < 400  # converged, then stopped
    curve = [p["val_ap50"] for p in points]
    assert cfg.plateau.reached(curve) and not cfg.plateau.reached(curve[:-1])
    # a stopped run is not continued when resumed
    assert len(_linear_run(tmp_path, cfg)) == len(history)
    rows = curve_table(history)
    assert len(rows) == 2 + len(points) and rows[-1].startswith(f"| {len(history)} |")
    png = curve_png(history, tmp_path / "curve.png", "lin")
    assert png is not None and Image.open(png).size == (480, 300)


@pytest.fixture(scope="module")
def frames() -> list:
    config = WorldConfig(seed=5, agents=3, azimuth_steps=512, background_vehicles=12)
    return list(World(config, 0).frames(2, "tiny"))


def test_training_samples_have_as_many_agents_as_evaluation(frames: list) -> None:
    data = stages.StageData(PROFILE, {"g2": frames})
    assert data.max_agents == sample_agents()  # config/groups.yaml data.max_agents
    dataset = CoopDataset(frames, ["m2"], PROFILE, max_agents=data.max_agents)
    for k, (i, ego) in enumerate(dataset.items):
        if ego != frames[i].ego_id:
            continue
        evaluated = make_sample(frames[i], assignment_of(frames[i], {"ego": "m2",
                                                                    "others": ["m2"]}), PROFILE)
        assert len(dataset[k].agents) == len(evaluated.agents) >= 3


@pytest.fixture(scope="module")
def base_dir(frames: list, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cs") / "mini"
    data = stages.StageData(PROFILE, {"g2": frames}, seed=1)
    stages.train_base(data, "m2", out, LoopConfig(steps=2, progress=False))
    return out


def _codespace(base_dir: Path, frames: list, tmp: Path, steps: int, **kw: str
               ) -> tuple[stages.StageResult, ModelStore]:
    out = tmp / "_".join(kw.values())
    out.mkdir()
    (out / "base_m2.pt").symlink_to(base_dir / "base_m2.pt")
    data = stages.StageData(PROFILE, {"g2": frames}, seed=1)
    cfg = LoopConfig(steps=steps, progress=False, checkpoint_every=10**6)
    result = codespace.train_codespace(data, ModelStore(out, PROFILE), "g2", out, cfg, **kw)
    return result, ModelStore(out, PROFILE)


def test_kmeans_init_leaves_fewer_dead_codes(base_dir: Path, frames: list,
                                             tmp_path: Path) -> None:
    kmeans, store = _codespace(base_dir, frames, tmp_path, 30, init="kmeans")
    revive, _ = _codespace(base_dir, frames, tmp_path, 30, init="revive")
    key = "codes unused in the last 10 batches"
    assert kmeans.extra[key] == 0 or kmeans.extra[key] < revive.extra[key], (kmeans.extra,
                                                                            revive.extra)
    assert store.meta("codespace_g2")["codebook_init"] == "kmeans"
    assert kmeans.history[24]["revived"] >= 0 and "dead" in kmeans.history[0]


def test_single_group_backend_frozen_or_trained(base_dir: Path, frames: list,
                                                tmp_path: Path) -> None:
    base = ModelStore(base_dir, PROFILE).base_backend("m2").state_dict()
    tp = {}
    for mode in ("frozen", "trained"):
        result, store = _codespace(base_dir, frames, tmp_path, 2, backend_mode=mode)
        meta = store.meta("codespace_g2")
        assert meta["backend_trained"] is (mode == "trained") and meta["backend_mode"] == mode
        same = all(torch.equal(v, store.group_backend("g2").state_dict()[k])
                   for k, v in base.items())
        assert same is (mode == "frozen")
        tp[mode] = result.trainable
    assert tp["trained"] > tp["frozen"]
    with pytest.raises(ValueError, match="codespace backend"):
        codespace.backend_trained("sometimes", ["m2"])


def test_point_cloud_cache_follows_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a.pcd"
    pts = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    write_pcd(path, pts, binary=False)
    first = read_pcd_cached(path)
    caches = list(tmp_path.glob(".a.pcd.*.npy"))
    assert len(caches) == 1 and np.array_equal(first, read_pcd(path))
    np.testing.assert_array_equal(read_pcd_cached(path), first)  # from the cache
    write_pcd(path, pts[:10], binary=False)  # a changed file: parsed again, old cache gone
    assert read_pcd_cached(path).shape == (10, 4)
    assert len(list(tmp_path.glob(".a.pcd.*.npy"))) == 1


def test_augmentation_moves_clouds_poses_and_boxes_alike(frames: list) -> None:
    import random

    from codealign_ros.train.augment import Augment
    from codealign_ros.train.samples import InputCache, make_batch

    frame = frames[0]
    sample = make_sample(frame, {a: "m2" for a in frame.agents}, PROFILE)
    aug = Augment(max_rotation=1.0, scale=(1.1, 1.1))
    for seed in range(4):  # both mirror outcomes
        lin, mirror, theta, s = aug.matrix(random.Random(seed))
        out = aug.apply(sample, PROFILE, random.Random(seed))
        to_ego, to_ego_new = (np.linalg.inv(x.ego.lidar_pose) for x in (sample, out))
        for old, new in zip(sample.agents, out.agents):
            rel = to_ego_new @ new.lidar_pose
            assert np.allclose(rel[:3, :3] @ rel[:3, :3].T, np.eye(3), atol=1e-9)
            assert np.linalg.det(rel[:3, :3]) > 0  # still a proper rigid pose
            before = (to_ego @ old.lidar_pose)[:3, :3] @ old.points[:50, :3].T.astype(float) \
                + (to_ego @ old.lidar_pose)[:3, 3:]
            after = rel[:3, :3] @ new.points[:50, :3].T + rel[:3, 3:]
            np.testing.assert_allclose(after, lin @ before, atol=1e-3)  # one world, moved
        heading = np.stack([np.cos(sample.gt_boxes[:, 6]), np.sin(sample.gt_boxes[:, 6]),
                            np.zeros(len(sample.gt_boxes))])
        moved = lin @ heading
        kept = [i for i, b in enumerate(sample.gt_boxes)
                if any(np.allclose(lin @ b[:3], c[:3], atol=1e-3) for c in out.gt_boxes)]
        assert kept and len(kept) == len(out.gt_boxes)
        for i, b in zip(kept, out.gt_boxes):
            assert np.allclose(b[3:6], s * sample.gt_boxes[i, 3:6], atol=1e-4)
            assert np.allclose([np.cos(b[6]), np.sin(b[6])], moved[:2, i] / s, atol=1e-4)
        cache = InputCache(PROFILE)
        make_batch([out], PROFILE, cache)
        assert not cache._items  # augmented inputs are never cached


def test_step_caps_per_job() -> None:
    """A code space that trains its backend too takes the profile's codespace_shared cap."""
    from codealign_ros.train.codespace import step_cap as _budget

    steps = dict(load_profile("mini")["train"]["steps"])
    assert steps["codespace_shared"] > steps["codespace"]
    assert _budget("codespace", {"group": "g1"}, steps) == "codespace_shared"  # m1 + m4
    assert _budget("codespace", {"group": "g2"}, steps) == "codespace"  # frozen backend
    assert _budget("codespace", {"group": "g2", "backend_mode": "trained"},
                   steps) == "codespace_shared"
    assert _budget("e2e", {"mode": "isolated"}, steps) == "e2e"
    assert _budget("e2e", {"mode": "isolated"}, {"base": 9}) == "base"  # no cap of its own
    assert _budget("codespace", {"group": "g1"}, {"codespace": 5, "base": 9}) == "codespace"


def test_plan_backend_strategy_per_group() -> None:
    """`train.codespace_backend` sets a group's code-space backend; the Table 7 ablation
    trains the other strategy; --codespace-backend overrides every group."""
    from codealign_ros.train.cli import plan
    from codealign_ros.train.codespace import group_backend_modes

    def spaces(*args: object) -> dict[str, dict]:
        return {kw["group"] + kw.get("variant", ""): kw
                for stage, kw in plan(["codespace", "ablation"], *args) if stage == "codespace"}
    auto = spaces()
    assert "backend_mode" not in auto["g2"] and auto["g2_trained"]["backend_mode"] == "trained"
    per_group = spaces("auto", "kmeans", {"g2": "trained"})
    assert per_group["g2"]["backend_mode"] == "trained" and "backend_mode" not in per_group["g3"]
    assert per_group["g2_frozen"]["backend_mode"] == "frozen" and "g2_trained" not in per_group
    forced = spaces("frozen", "kmeans", {"g2": "trained"})
    assert {kw.get("backend_mode") for g, kw in forced.items() if g[:2] != "g2"} == {"frozen"}
    assert forced["g2"]["backend_mode"] == "frozen" and "g2_trained" in forced
    with pytest.raises(ValueError, match="codespace_backend"):
        group_backend_modes({"codespace_backend": {"g9": "trained"}})
    with pytest.raises(ValueError, match="codespace_backend"):
        group_backend_modes({"codespace_backend": {"g2": "sometimes"}})


def test_card_metrics_refresh_keeps_the_rest(tmp_path: Path) -> None:
    from codealign_ros.train import cards

    card = tmp_path / "uct_g9.md"
    card.write_text("# uct_g9\n\n- Steps: 7\n\n## Metrics\n\n- stale row\n")
    assert cards.refresh_metrics(card, "uct_g9")
    text = card.read_text()
    assert text.startswith("# uct_g9\n\n- Steps: 7\n\n## Metrics\n\n") and "stale" not in text
    assert text.count("## Metrics") == 1
    plain = tmp_path / "other.md"
    plain.write_text("# no metrics here\n")
    assert not cards.refresh_metrics(plain, "other")
