"""The demo graph (issue #5, point 8): launched by the embedded launcher on a short generated bag.

The ROS-free summary and picture are checked on a hand-made record first. Then one run of
`codealign_ros.demo.runner.run_demo` (the code behind `make demo`) with fewer frames:
bag player -> vehicle nodes (ego m1 LiDAR, m4 camera vehicle, m2 road-side unit) -> fusion on
the ego, plus the ego-only fusion node and the recorder, as separate processes over DDS with
the shipped mini weights. Checks: detections arrive for the frames, every agent's code maps
arrive, fusing the peers beats the ego alone on this scene, raw CodeMap bytes equal
height x width x bits / 8 of the profile grid, and the summary and picture are written.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from codealign_ros.demo.bev_picture import AgentMark, draw_bev
from codealign_ros.demo.runner import (DemoError, DemoOptions, background_cpus, check_models,
                                       demo_specs, run_demo)
from codealign_ros.demo.scene import BagTruth
from codealign_ros.demo.recording import bag_topics, load_recording
from codealign_ros.demo.summary import summarize
from codealign_ros.config.profiles import load_profile

REPO = Path(__file__).resolve().parents[1]
FRAMES = 10
SEED = 191  # a scene where the road-side unit and the other vehicle see what the ego misses
RATE = 0.05
LEAD = 2  # lead-in frames (played, not evaluated)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """One short demo run in its own ROS domain (chosen as conftest's `ros_domain` does; a
    module fixture, so the graph runs once for all checks)."""
    import hashlib
    import os

    out = tmp_path_factory.mktemp("demo")
    domain = 1 + int(hashlib.sha256(f"{os.getpid()}:demo".encode()).hexdigest(), 16) % 100
    opts = DemoOptions(frames=FRAMES, seed=SEED, rate=RATE, model_dir=str(REPO / "models/mini"),
                       data_dir=REPO / "data/demo", out_dir=out, domain_id=domain,
                       seconds=150.0, lead_frames=LEAD)
    return run_demo(opts), out


@pytest.mark.dds
def test_detections_arrive_for_the_frames(demo_run: tuple[dict[str, Any], Path]) -> None:
    summary, _ = demo_run
    frames = summary["frames"]
    assert frames["played"] >= LEAD + FRAMES
    # the lead-in frames are played and fused, but neither evaluated nor in the latency
    lead = summary["latency_ms"]["lead_in"]
    assert lead["frames"] == LEAD and lead["fused"] >= LEAD - 1 and len(lead["ms"]) >= 1, lead
    assert summary["scene"]["lead_frames"] == LEAD and frames["evaluated_span"] == FRAMES
    assert frames["fused"] >= FRAMES - 1 and frames["ego_only"] >= FRAMES - 1, frames
    assert frames["evaluated"] >= FRAMES - 1, frames
    assert summary["boxes_per_frame"]["fused"] > 0
    # three agents of three modalities; the peers' maps reach the fusion
    assert sorted(summary["agents"].values()) == ["m1", "m2", "m4"]
    assert max(summary["agents_fused"], key=int) == len(summary["agents"]), summary
    # the recorder ends the run only once every agent's maps of every frame arrived (or a
    # grace period passed): none missing at this rate
    assert set(summary["drops"]["maps_missing"].values()) == {0}, summary["drops"]


@pytest.mark.dds
def test_peers_change_the_fused_result(demo_run: tuple[dict[str, Any], Path]) -> None:
    """The peers' maps reach the fused detections: fused and ego-only AP differ. (Whether
    fusion beats ego-only is the models' quality, reported by `make paper-table`; with the
    current mini weights it does not, see the README.)"""
    summary, _ = demo_run
    ap = summary["ap"]
    assert ap["fused"] != ap["ego_only"], ap


@pytest.mark.dds
def test_raw_codemap_bytes_are_height_width_bits(demo_run: tuple[dict[str, Any], Path]) -> None:
    summary, out = demo_run
    profile = load_profile("mini")
    grid, bits = profile.grid, int(math.log2(profile.num_codes))
    maps = [r for r in load_recording(out / "recording") if r["kind"] == "codemap"]
    assert {r["agent"] for r in maps} == set(summary["agents"])
    for rec in maps:
        assert "error" not in rec, rec
        assert (rec["height"], rec["width"], rec["bits"]) == (grid.height, grid.width, bits)
        assert rec["raw_bytes"] == grid.height * grid.width * bits // 8
        assert 0 < rec["coded_bytes"] <= rec["raw_bytes"] + 64  # entropy-coded payload
    assert summary["codemap_bytes"]["raw"] == grid.height * grid.width * bits / 8


@pytest.mark.dds
def test_summary_and_picture_are_written(demo_run: tuple[dict[str, Any], Path]) -> None:
    summary, out = demo_run
    assert json.loads((out / "summary.json").read_text())["ap"] == summary["ap"]
    e2e = summary["latency_ms"]["end_to_end"]
    # from the publishers' clocks: the ego's sensor publish -> the detections' publish spans
    # the ego vehicle's processing and the fusion's, never less than the fusion alone
    assert e2e["n"] >= FRAMES - 1 and e2e["p50"] > summary["latency_ms"]["fusion"]["p50"], e2e
    picture = Path(summary["picture"])
    assert picture.is_file() and picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Path(summary["animation"]).read_bytes()[:6] == b"GIF89a"


# -- ROS-free parts on a hand-made record ---------------------------------------------------
def _truth() -> BagTruth:
    """Two frames; the ego at the origin, a peer 10 m ahead; three cars in the world."""
    gt = np.array([[8.0, 3.0, 0.8, 4.0, 1.8, 1.6, 0.0], [-12.0, -4.0, 0.8, 4.0, 1.8, 1.6, 0.3],
                   [15.0, 10.0, 0.8, 4.5, 2.0, 1.7, 1.2]])
    stamps = [1_000_000_000, 1_100_000_000]
    peer = np.eye(4)
    peer[0, 3] = 10.0
    return BagTruth(stamps, {s: gt for s in stamps},
                    {"cav_1": {s: np.eye(4) for s in stamps}, "rsu_1": {s: peer for s in stamps}})


def _record(truth: BagTruth) -> list[dict[str, Any]]:
    gt = truth.gt_world[truth.stamps[0]].round(4).tolist()
    recs: list[dict[str, Any]] = [{"kind": "ready", "t": 0.0}]
    for i, stamp in enumerate(truth.stamps):
        recs.append({"kind": "detections", "source": "fused", "stamp": stamp, "boxes": gt,
                     "scores": [0.9, 0.8, 0.7], "agents": ["cav_1", "rsu_1"], "e2e_ms": 100.0 + i})
        recs.append({"kind": "detections", "source": "ego_only", "stamp": stamp,
                     "boxes": gt[:1] + [[0.0, 20.0, 0.8, 4.0, 1.8, 1.6, 0.0]],
                     "scores": [0.9, 0.95], "agents": ["cav_1"], "e2e_ms": 90.0})
        for agent in ("cav_1", "rsu_1")[: 2 - i]:  # rsu_1's second map is missing
            recs.append({"kind": "codemap", "agent": agent, "modality": "m1", "space": "g1",
                         "stamp": stamp, "bits": 4, "height": 64, "width": 64,
                         "coded_bytes": 300, "raw_bytes": 2048, "encoding": "zstd"})
    recs.append({"kind": "diagnostics", "source": "main", "name": "codealign vehicle rsu_1",
                 "hardware_id": "rsu_1", "level": 1, "message": "",
                 "values": {"frames": "1", "published": "1", "drop_empty_cloud": "2",
                            "sync_dropped": "{'unmatched': 1}"}})
    recs.append({"kind": "diagnostics", "source": "main", "name": "codealign fusion cav_1",
                 "hardware_id": "cav_1", "level": 0, "message": "OK",
                 "values": {"fused": "2", "drop_stale": "3", "skipped_out_of_range": "1",
                            "total_ms": "12.5"}})
    return recs


def test_summary_of_a_record() -> None:
    truth = _truth()
    profile = load_profile("mini")
    summary = summarize(_record(truth), truth, "cav_1", {"cav_1": "m1", "rsu_1": "m2"},
                        truth.stamps, profile)
    assert summary["frames"] == {"evaluated_span": 2, "played": 0, "ego_only": 2, "fused": 2,
                                 "evaluated": 2}
    # every GT box inside the mini range found by the fused source; one of two by the ego
    inside = len(truth.ego_gt("cav_1", truth.stamps[0], profile))
    assert inside == 3
    assert summary["ap"]["fused"] == {"ap30": 1.0, "ap50": 1.0, "ap70": 1.0}
    assert summary["ap"]["ego_only"]["ap50"] < 1.0 / 3 + 1e-6
    assert summary["agents_fused"] == {2: 2}
    assert summary["codemap_bytes"]["raw"] == 2048 and summary["codemap_bytes"]["coded"] == 300
    assert summary["latency_ms"]["end_to_end"]["p50"] == 100.5
    drops = summary["drops"]
    assert drops["maps_missing"] == {"cav_1": 0, "rsu_1": 1}
    assert drops["nodes"]["codealign vehicle rsu_1"]["drops"] == {"empty_cloud": 2}
    assert drops["nodes"]["codealign vehicle rsu_1"]["sync_dropped"] == {"unmatched": 1}
    assert drops["nodes"]["codealign fusion cav_1"]["skipped"] == {"out_of_range": 1}
    assert drops["total"] == 6
    # the vehicles' processing times count from the first evaluated frame's ego pose on
    lead = [{"kind": "processing", "t": 0.5, "topic": "/vehicle_cav_1/processing_time_ms",
             "ms": 500.0},
            {"kind": "pose", "t": 1.0, "stamp": truth.stamps[0]},
            *({"kind": "processing", "t": 1.0 + i, "topic": "/vehicle_cav_1/processing_time_ms",
               "ms": ms} for i, ms in enumerate((20.0, 30.0)))]
    timed = summarize(_record(truth) + lead, truth, "cav_1", {"cav_1": "m1", "rsu_1": "m2"},
                      truth.stamps, profile)
    assert timed["latency_ms"]["vehicle_cav_1"] == {"p50": 25.0, "p95": 29.5, "n": 2}


def test_bev_picture_draws_every_layer(tmp_path: Path) -> None:
    from PIL import Image

    from codealign_ros.demo import bev_picture as bp

    truth = _truth()
    gt = truth.ego_gt("cav_1", truth.stamps[0], load_profile("mini"))
    points = np.random.default_rng(0).uniform(-20, 20, (500, 4)).astype(np.float32)
    marks = [AgentMark("cav_1", "cav_1 (ego): m1", 0.0, 0.0, 0.0, True),
             AgentMark("rsu_1", "rsu_1: m2", 60.0, 5.0, 1.0)]  # outside the view
    path = draw_bev(tmp_path / "bev.png", points, gt, gt[:1] + 0.5, gt[1:], marks,
                    (-25.6, -25.6, 25.6, 25.6), "title", ["line"])
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
    for color in (bp.GT, bp.FUSED, bp.EGO_ONLY, bp.POINTS):
        assert (pixels == color).all(axis=1).any(), color


def test_graph_has_one_receiver_and_the_recorder(tmp_path: Path) -> None:
    agents = [("cav_1", "m1"), ("cav_2", "m4"), ("rsu_1", "m2")]
    specs = demo_specs(DemoOptions(rate=0.5), tmp_path / "bag", agents, 8,
                       tmp_path / "recording")
    by_name = {s.name: s for s in specs}
    assert specs[0].name == "demo_recorder" and specs[-1].executable == "bag_player"
    assert {"vehicle_cav_1", "vehicle_cav_2", "vehicle_rsu_1"} <= set(by_name)
    # the ego-only baseline is computed afterwards from the recorded ego maps: one receiver
    assert [s.name for s in specs if s.executable == "fusion_node"] == ["fusion_cav_1"]
    fused = by_name["fusion_cav_1"]
    assert fused.parameters["modality"] == "m1" and not fused.remappings
    assert specs[0].parameters["codemap_subscribers"] == 3  # fusion, code-map images, recorder
    assert DemoOptions().rate == 1.0
    keys = str(DemoOptions().out_dir / "keys")  # signed maps: a key pair per agent and run
    assert fused.parameters["require_signed"] is True and fused.parameters["trust_store"] == keys
    assert by_name["vehicle_rsu_1"].parameters["signing_key"] == f"{keys}/rsu_1.key"
    # the player starts once every vehicle's sensor subscriptions (2 + 9 + 2) and the
    # recorder's bag topics (TF, ground truth, every agent's pose; no clouds) matched
    player = specs[-1].arguments
    ids = [a for a, _ in agents]
    assert len(bag_topics(ids)) == 4 + 2 * 3 and len(bag_topics(ids, ids[:1])) == 4 + 3 + 1
    assert specs[0].parameters["record_clouds"] == "none"  # the pictures read the scene bag
    assert player[player.index("--wait-for-subscribers") + 1] == "20"
    # the player sends only the consumed topics: no camera of a LiDAR agent, no cloud of the
    # camera agent; every camera of cav_2, both clouds and all recorded topics
    played = set(player[player.index("--topics") + 1:])
    assert {"/cav_1/lidar/points", "/rsu_1/lidar/points", "/cav_2/camera3/image_raw",
            "/cav_2/camera0/camera_info", "/tf_static", "/gt/markers", "/cav_2/pose"} <= played
    assert not {"/cav_2/lidar/points", "/cav_1/camera0/image_raw",
                "/rsu_1/camera2/camera_info"} & played and len(played) == 4 + 3 + 2 + 8
    assert by_name["codemap_images"].parameters["publish_images"] is True
    assert player[player.index("--rate") + 1] == "0.5"
    assert specs[0].parameters["processing_topics"] == [
        "/vehicle_cav_1/processing_time_ms", "/vehicle_cav_2/processing_time_ms",
        "/vehicle_rsu_1/processing_time_ms"]
    # sender-side D2C by default: only the road-side unit (m2, group g2) translates into g1
    assert [s.parameters.get("translate_to") for s in specs if s.executable == "vehicle_node"] \
        == [None, None, ["g1"]]
    # peers' vehicles and the observers run niced: the ego's vehicle and fusion come first
    nice = {s.name: s.nice for s in specs}
    assert nice["vehicle_cav_1"] == nice["fusion_cav_1"] == nice["bag_player"] == 0
    assert min(nice["vehicle_cav_2"], nice["vehicle_rsu_1"], nice["demo_recorder"],
               nice["codemap_images"]) > 0
    assert by_name["vehicle_rsu_1"].command(program="x")[:3] == ["nice", "-n", str(nice[
        "vehicle_rsu_1"])]
    # ... and on the upper half of the cores (taskset), the ego's nodes anywhere
    cpus = {s.name: s.cpus for s in specs}
    assert cpus["vehicle_cav_1"] == cpus["fusion_cav_1"] == cpus["bag_player"] == ()
    assert cpus["vehicle_rsu_1"] == cpus["demo_recorder"] == background_cpus()
    pinned = demo_specs(DemoOptions(background_cpus="0"), tmp_path / "bag", agents, 8,
                        tmp_path / "recording")
    rsu = next(s for s in pinned if s.name == "vehicle_rsu_1").command(program="x")
    assert rsu[:6] == ["nice", "-n", str(nice["vehicle_rsu_1"]), "taskset", "-c", "0"]
    assert all(s.cpus == () for s in demo_specs(DemoOptions(background_cpus="all"),
                                                tmp_path / "bag", agents, 8,
                                                tmp_path / "recording"))
    receiver = demo_specs(DemoOptions(translate="receiver"), tmp_path / "bag", agents, 8,
                          tmp_path / "recording")
    assert not any(s.parameters.get("translate_to") for s in receiver)


def test_background_cores_are_checked() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    auto = background_cpus("auto")
    assert auto == (tuple(allowed[len(allowed) // 2:]) if len(allowed) > 1 else ())
    assert not set(auto) & set(allowed[:len(allowed) // 2])  # the ego keeps a free core
    assert background_cpus("all") == ()
    assert background_cpus(str(allowed[0])) == (allowed[0],)
    for bad in ("9999", "x", ""):
        with pytest.raises(DemoError, match="--background-cpus"):
            background_cpus(bad)


def test_missing_weights_are_named(tmp_path: Path) -> None:
    with pytest.raises(DemoError) as err:
        check_models(str(tmp_path), "mini", [("cav_1", "m1"), ("rsu_1", "m2")])
    for name in ("base_m1.pt", "base_m2.pt", "codespace_g1.pt", "codespace_g2.pt", "uct_g2.pt"):
        assert name in str(err.value)
    assert "uct_g1.pt" not in str(err.value)
