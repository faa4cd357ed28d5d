"""Vehicle and receiver pipelines (ROS-free): outputs, every drop reason, flood bounds,
translation paths, ONNX Runtime == PyTorch, and agreement with `codealign eval`'s path."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from codealign_ros.cli import main as cli_main
from codealign_ros.core.codemap import CodeMap, GridPose
from codealign_ros.data.bag import quaternion_xyzw
from codealign_ros.data.types import AgentFrame, CameraFrame, CooperativeFrame
from codealign_ros.models.deploy import CodeTranslator
from codealign_ros.models.encoders.inputs import (collate, encoder_inputs, synthetic_points,
                                                  synthetic_rig)
from codealign_ros.config.profiles import load_profile
from codealign_ros.models.store import ModelStore, save_component
from codealign_ros.pipeline import (DROP_REASONS, PipelineError, ReceiverConfig,
                                    ReceiverPipeline, VehicleConfig, VehiclePipeline, export_all)
from codealign_ros.pipeline.stages import component_key, receiver_spec
from codealign_ros.pipeline.testing import make_random_store
from codealign_ros.train.evaluate import Evaluator
from codealign_ros.train.samples import make_sample

S = 1_000_000_000
NOW = 1_700_000_000 * S
SCORE = {"score_bias": -4.0, "score_gain": 300.0}  # random heads that do produce boxes


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_random_store(tmp_path_factory.mktemp("models") / "mini",
                             modalities=("m1", "m2"), **SCORE)


@pytest.fixture(scope="module")
def vehicles(store_dir: Path) -> dict[str, VehiclePipeline]:
    return {"m1": VehiclePipeline(VehicleConfig(store_dir, "m1", "cav_1", "torch")),
            "m2": VehiclePipeline(VehicleConfig(store_dir, "m2", "cav_2", "torch")),
            "m2_d2c": VehiclePipeline(VehicleConfig(store_dir, "m2", "cav_2", "torch",
                                                    translate_to=("g1",)))}


@pytest.fixture(scope="module")
def clouds() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [synthetic_points(load_profile("mini"), 4000, rng) for _ in range(3)]


def pose_at(x: float, y: float = 0.0, yaw: float = 0.0) -> GridPose:
    return GridPose((x, y, 0.0), (0.0, 0.0, float(np.sin(yaw / 2)), float(np.cos(yaw / 2))))


def receiver(store_dir: Path, **kw: object) -> ReceiverPipeline:
    args = {"backend": "torch", "max_age_s": 0.5, "max_peers": 4, **kw}
    return ReceiverPipeline(ReceiverConfig(store_dir, "cav_1", "m1",
                                           **args))  # type: ignore[arg-type]


def maps_of(vehicle: VehiclePipeline, points: np.ndarray, stamp: int, pose: GridPose,
            agent: str | None = None) -> dict[str, CodeMap]:
    maps = vehicle.code_maps(vehicle.process_lidar(points), stamp, pose)
    return {m.code_space: dataclasses.replace(m, agent_id=agent or m.agent_id) for m in maps}


# -- vehicle ---------------------------------------------------------------------------------
def test_vehicle_lidar_gives_valid_code_maps_per_space(vehicles, clouds, store_dir) -> None:
    store = ModelStore(store_dir)
    result = vehicles["m2_d2c"].process_lidar(clouds[0])
    assert list(result.maps) == ["g2", "g1"]
    for space, (indices, digest) in result.maps.items():
        assert indices.dtype == np.uint8 and indices.shape == (64, 64)
        assert digest == store.codebook(space).weights_hash()
        assert indices.max() < 16
    # random SECOND weights give near-zero features (one code); random PointPillars do not
    assert len(np.unique(vehicles["m1"].process_lidar(clouds[0]).maps["g1"][0])) > 1
    assert set(result.timings) == {"preprocess_ms", "inference_ms", "postprocess_ms"}
    maps = vehicles["m2_d2c"].code_maps(result, NOW, pose_at(3.0))
    assert [m.code_space for m in maps] == ["g2", "g1"]
    assert maps[0].frame_id == "cav_2/lidar" and maps[0].bits == 4
    assert maps[0].origin == (-25.6, -25.6, 0.0) and maps[0].resolution == pytest.approx(0.8)
    # the own-space map equals the pipeline without translation (D2C is extra, not different)
    plain = vehicles["m2"].process_lidar(clouds[0]).maps["g2"][0]
    np.testing.assert_array_equal(plain, result.maps["g2"][0])


def test_vehicle_refuses_bad_clouds_with_reasons(vehicles, clouds) -> None:
    v = vehicles["m1"]
    cases = {"empty_cloud": np.zeros((0, 4), np.float32),
             "nan_points": np.full((50, 4), np.nan, np.float32),
             "bad_points": np.zeros((10, 3), np.float32)}
    for reason, points in cases.items():
        with pytest.raises(PipelineError) as err:
            v.process_lidar(points)
        assert err.value.reason == reason, reason
    dirty = clouds[1].copy()
    dirty[::7, 0] = np.nan
    before = v.nonfinite_points
    got = v.process_lidar(dirty).maps["g1"][0]
    want = v.process_lidar(dirty[np.isfinite(dirty).all(1)]).maps["g1"][0]
    np.testing.assert_array_equal(got, want)
    assert v.nonfinite_points - before == len(dirty[::7])
    far = np.array([[500.0, 0.0, 0.0, 1.0]], np.float32)  # finite but out of range: "nothing seen"
    assert v.process_lidar(far).maps["g1"][0].shape == (64, 64)


def test_vehicle_config_errors(store_dir) -> None:
    with pytest.raises(PipelineError, match="cannot translate") as err:
        VehiclePipeline(VehicleConfig(store_dir, "m1", "cav_1", "torch", translate_to=("g3",)))
    assert err.value.reason == "config"
    with pytest.raises(PipelineError) as err:
        VehiclePipeline(VehicleConfig(store_dir, "m9", "cav_1", "torch"))
    assert err.value.reason == "config"


def test_vehicle_cameras(tmp_path: Path) -> None:
    store = make_random_store(tmp_path / "mini", modalities=("m4",), translators=False)
    v = VehiclePipeline(VehicleConfig(store, "m4", "cav_4", "torch"))
    k, cam_to_lidar = synthetic_rig(4, (160, 120))
    rng = np.random.default_rng(0)
    cams = [CameraFrame(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), k[i],
                        np.linalg.inv(cam_to_lidar[i])) for i in range(4)]
    indices, _ = v.process_cameras(cams).maps["g1"]
    assert indices.shape == (64, 64) and indices.dtype == np.uint8
    with pytest.raises(PipelineError) as err:
        v.process_cameras(cams[:3])
    assert err.value.reason == "bad_cameras"
    broken = [dataclasses.replace(c, image=c.image[..., :2]) for c in cams]
    with pytest.raises(PipelineError) as err:
        v.process_cameras(broken)
    assert err.value.reason == "bad_cameras"


# -- receiver: drops -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base_maps(vehicles, clouds) -> dict[str, CodeMap]:
    """A valid ego map (g1), a g1 peer, a g2 peer (own space) and its D2C g1 map, at NOW."""
    ego = maps_of(vehicles["m1"], clouds[0], NOW, pose_at(0.0))["g1"]
    g1_peer = maps_of(vehicles["m1"], clouds[1], NOW, pose_at(10.0), "cav_3")["g1"]
    d2c = maps_of(vehicles["m2_d2c"], clouds[2], NOW, pose_at(-8.0, 4.0, 0.5))
    return {"ego": ego, "g1_peer": g1_peer, "g2_peer": d2c["g2"], "g2_d2c": d2c["g1"]}


def test_every_drop_reason_is_counted(store_dir, base_maps) -> None:
    rx = receiver(store_dir, comm_range_m=70.0)
    peer = base_maps["g1_peer"]
    assert rx.offer(base_maps["ego"], NOW, "ego-gid") is None
    bad = {
        "malformed": dataclasses.replace(peer, frame_id=None),
        "bad_size": dataclasses.replace(peer, indices=peer.indices[:32]),
        "bad_bits": dataclasses.replace(peer, bits=5),
        "bad_grid": dataclasses.replace(peer, resolution=0.4),
        "nan_pose": dataclasses.replace(peer, pose=GridPose((np.nan, 0.0, 0.0))),
        "unknown_space": dataclasses.replace(peer, code_space="g3"),
        "hash_mismatch": dataclasses.replace(peer, codebook_hash="0123456789abcdef"),
        "future": dataclasses.replace(peer, stamp_ns=NOW + S),
        "stale": dataclasses.replace(peer, stamp_ns=NOW - 2 * S),
        "out_of_range": dataclasses.replace(peer, pose=pose_at(90.0)),
    }
    for reason, code_map in bad.items():
        assert rx.offer(code_map, NOW, "peer-gid") == reason
    assert rx.offer(peer, NOW, "peer-gid") is None
    # duplicates: another publisher, another modality, the ego's id from elsewhere
    assert rx.offer(peer, NOW, "other-gid") == "duplicate_agent"
    assert rx.offer(dataclasses.replace(peer, modality="m4"), NOW, None) == "duplicate_agent"
    assert rx.offer(dataclasses.replace(base_maps["ego"], modality="m2"), NOW) \
        == "duplicate_agent"
    assert rx.offer(base_maps["ego"], NOW, "intruder") == "duplicate_agent"
    # an older map than the one held is stale too
    assert rx.offer(dataclasses.replace(peer, stamp_ns=NOW - S // 10), NOW, "peer-gid") == "stale"
    # the claim expires after claim_window_s of silence: a restarted peer is accepted
    assert rx.offer(dataclasses.replace(peer, stamp_ns=NOW + 2 * S), NOW + 2 * S, "new-gid") \
        is None
    drops = rx.stats()["drops"]
    # the accepted peer map was replaced before any ego frame fused it
    assert drops == {**{r: 1 for r in bad}, "duplicate_agent": 4, "stale": 2, "unused": 1}
    assert set(drops) <= set(DROP_REASONS)
    assert rx.stats()["offered"] == len(bad) + 8 and rx.stats()["accepted"] == 3


def test_flood_of_50_peers_keeps_memory_bounded(store_dir, base_maps) -> None:
    rx = receiver(store_dir, max_peers=4)
    peer = base_maps["g1_peer"]
    for rnd in range(3):
        for i in range(50):
            stamp = NOW + rnd * S // 10
            rx.offer(dataclasses.replace(peer, agent_id=f"flood_{i}", stamp_ns=stamp), stamp,
                     f"gid_{i}")
    stats = rx.stats()
    assert stats["peers"] == 4 and stats["claims"] == rx.max_claims
    assert stats["accepted"] == 3 * 4  # rounds 2 and 3 replace 4 maps no frame fused
    assert stats["drops"] == {"too_many_peers": 3 * 46, "unused": 2 * 4}
    ego = dataclasses.replace(base_maps["ego"], stamp_ns=NOW + S // 5)
    assert rx.offer(ego, NOW + S // 5, "ego-gid") is None  # the flood never locks the ego out
    result = rx.fuse(ego, NOW + S // 5)
    assert len(result.agents) == 5
    # once the flood stops its maps expire; a newcomer then gets a slot, never before
    later = NOW + 2 * S
    assert rx.offer(dataclasses.replace(peer, agent_id="late", stamp_ns=later), later) is None
    assert rx.stats()["peers"] == 1


def test_ego_only_when_peers_vanish(store_dir, base_maps) -> None:
    rx = receiver(store_dir)
    alone = rx.fuse(base_maps["ego"], NOW)
    assert alone.agents == ["cav_1"] and alone.paths == {"cav_1": "ego"}
    assert len(alone.boxes) > 0 and alone.boxes.shape[1] == 7
    assert rx.offer(base_maps["g1_peer"], NOW) is None
    assert rx.fuse(base_maps["ego"], NOW).agents == ["cav_1", "cav_3"]
    later = dataclasses.replace(base_maps["ego"], stamp_ns=NOW + 2 * S)
    gone = rx.fuse(later, NOW + 2 * S)
    assert gone.agents == ["cav_1"]
    assert rx.stats()["peers"] == 0  # the vanished peer was forgotten
    again = rx.fuse(base_maps["ego"], NOW)
    np.testing.assert_array_equal(again.boxes, alone.boxes)


def test_skipped_when_out_of_the_ego_window(store_dir, base_maps) -> None:
    rx = receiver(store_dir, max_age_s=0.2)
    assert rx.offer(dataclasses.replace(base_maps["g1_peer"], stamp_ns=NOW - S // 10), NOW) \
        is None
    result = rx.fuse(dataclasses.replace(base_maps["ego"], stamp_ns=NOW + S // 5))
    assert result.agents == ["cav_1"] and result.skipped == {"stale": 1}


# -- receiver: translation paths -------------------------------------------------------------
def test_translation_paths(store_dir, base_maps) -> None:
    rx = receiver(store_dir)
    assert rx.stats()["translators"] == ["g2"]
    assert rx.offer(base_maps["g1_peer"], NOW) is None
    assert rx.offer(base_maps["g2_peer"], NOW) is None
    res = rx.fuse(base_maps["ego"], NOW)
    assert res.paths == {"cav_1": "ego", "cav_3": "own_space", "cav_2": "translated"}
    # the receiver-side translation is the UCT of the sender's group applied to its codes
    store = ModelStore(store_dir)
    uct = CodeTranslator(store.codebook("g2"), store.translator("g2"), "g1").eval()
    with torch.no_grad():
        want = uct(torch.from_numpy(base_maps["g2_peer"].indices[None].astype(np.int64)))[0]
    chosen, _ = rx._select(base_maps["ego"])
    indices, _ = rx._ego_space_indices(base_maps["ego"], chosen)
    np.testing.assert_array_equal(indices[1 + [a for a, _, _ in chosen].index("cav_2")],
                                  want.numpy())
    # once the sender translated into our space itself, that map is preferred
    assert rx.offer(base_maps["g2_d2c"], NOW) is None
    assert rx.fuse(base_maps["ego"], NOW).paths["cav_2"] == "sender_translated"


def test_unknown_space_without_translator(tmp_path: Path, base_maps) -> None:
    store = make_random_store(tmp_path / "mini", modalities=("m1", "m2"), translators=False)
    rx = receiver(store)
    assert rx.stats()["translators"] == []
    g2 = dataclasses.replace(base_maps["g2_peer"],
                             codebook_hash=ModelStore(store).codebook("g2").weights_hash())
    assert rx.offer(g2, NOW) == "unknown_space"


# -- backends ----------------------------------------------------------------------------------
def test_onnxruntime_matches_torch(store_dir, vehicles, clouds, base_maps) -> None:
    ort = {"m1": VehiclePipeline(VehicleConfig(store_dir, "m1", "cav_1", "onnxruntime")),
           "m2_d2c": VehiclePipeline(VehicleConfig(store_dir, "m2", "cav_2", "onnxruntime",
                                                   translate_to=("g1",)))}
    assert ort["m1"].backend.name == "onnxruntime"
    for key, v in ort.items():
        for cloud in clouds:
            got, want = v.process_lidar(cloud).maps, vehicles[key].process_lidar(cloud).maps
            for space in want:
                assert_same_codes(got[space][0], want[space][0], vehicles[key], cloud, space)
    results = []
    for backend in ("torch", "onnxruntime"):
        rx = receiver(store_dir, backend=backend)
        for name in ("g1_peer", "g2_peer"):
            assert rx.offer(base_maps[name], NOW) is None
        results.append(rx.fuse(base_maps["ego"], NOW))
    assert results[1].paths == results[0].paths and len(results[0].boxes) > 0
    np.testing.assert_allclose(results[1].scores, results[0].scores, atol=1e-4)
    np.testing.assert_allclose(results[1].boxes, results[0].boxes, atol=1e-3)
    assert (store_dir / "onnx").is_dir()


def assert_same_codes(got: np.ndarray, want: np.ndarray, vehicle: VehiclePipeline,
                      cloud: np.ndarray, space: str) -> None:
    """Equal index maps, except (at most 0.1 % of) cells where two codes tie within float
    noise: argmin/argmax may break such ties differently in ONNX Runtime and PyTorch."""
    diff = np.argwhere(got != want)
    assert len(diff) <= got.size // 1000, f"{len(diff)} cells differ in {space}"
    if not len(diff):
        return
    module = vehicle.backend.module
    inputs = collate([encoder_inputs(vehicle.modality, AgentFrame("a", cloud, np.eye(4)),
                                     vehicle.profile)])
    with torch.no_grad():
        x = module.features(**inputs)
        score = (-module.codebook.distances(x) if space == vehicle.group
                 else module.translator(x, space))[0]
    for r, c in diff:
        a, b = float(score[got[r, c], r, c]), float(score[want[r, c], r, c])
        assert abs(a - b) <= 1e-4 * max(1.0, abs(b)), f"cell {(r, c)}: {a} vs {b}"


def test_export_all_writes_every_stage(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    store = make_random_store(tmp_path / "mini", modalities=("m1",))
    rows = export_all(store)
    assert sorted(r["stage"] for r in rows) == ["receiver_g1", "vehicle_m1"]
    assert all(Path(r["onnx"]).with_suffix(".json").is_file() for r in rows)
    capsys.readouterr()
    assert cli_main(["export", "--models", str(store)]) == 0  # cached: no re-export
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["onnx"] for r in printed] == [r["onnx"] for r in rows]
    assert len(list((store / "onnx").glob("*.onnx"))) == 2
    assert cli_main(["export", "--models", str(tmp_path / "missing")]) == 1
    # the cache key follows the weight files: a retrained code space means a new export
    models = ModelStore(store)
    spec = receiver_spec(models, "g1")
    key = component_key(models, spec)
    data = torch.load(store / "codespace_g1.pt", weights_only=False)
    save_component(store / "codespace_g1.pt", data["kind"], data["state"],
                   {**data["meta"], "steps": 1})
    assert component_key(models, spec) != key


# -- agreement with the evaluation path ------------------------------------------------------
def _frame(clouds: list[np.ndarray]) -> CooperativeFrame:
    poses = []
    for x, y, yaw in ((0.0, 0.0, 0.0), (-8.0, 4.0, 0.5)):
        m = np.eye(4)
        m[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
        m[:2, 3] = (x, y)
        poses.append(m)
    agents = {f"cav_{i + 1}": AgentFrame(f"cav_{i + 1}", clouds[i], poses[i]) for i in range(2)}
    return CooperativeFrame("s", "000000", NOW, agents, np.zeros((0, 7)), np.zeros(0, int), [])


def test_receiver_matches_codealign_evaluation(store_dir, vehicles, clouds) -> None:
    frame = _frame(clouds)
    store = ModelStore(store_dir)
    sample = make_sample(frame, {"cav_1": "m1", "cav_2": "m2"}, store.profile)
    want_boxes, want_scores = Evaluator(store, "codealign", {"ego": "m1", "others": ["m2"]}
                                        ).detect(sample)
    rx = receiver(store_dir)
    maps = {}
    for agent, key in (("cav_1", "m1"), ("cav_2", "m2_d2c")):
        pose = frame.agents[agent].lidar_pose
        gp = GridPose(tuple(pose[:3, 3]), tuple(quaternion_xyzw(pose[:3, :3])))
        maps[agent] = maps_of(vehicles[key], frame.agents[agent].points, NOW, gp)["g1"]
    assert rx.offer(maps["cav_2"], NOW) is None
    got = rx.fuse(maps["cav_1"], NOW)
    assert got.paths["cav_2"] == "sender_translated" and len(want_boxes) > 0
    np.testing.assert_allclose(got.scores, want_scores, atol=1e-4)
    np.testing.assert_allclose(got.boxes, want_boxes, atol=1e-3)
