"""Latest-wins, counted transport: the slots alone, then a fusion_node process over real DDS
flooded faster than it can fuse: every offered map is fused, dropped by reason or held."""
from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from codealign_ros.pipeline.transport import LatestWins, Worker, ledger


def test_latest_wins_counts_superseded_and_busy_and_orders_peers_first() -> None:
    box: LatestWins[str] = LatestWins()
    assert box.put(("cav_2", "g1"), "p2a") is None
    assert box.put(("cav_1", "g1"), "e1", ego=True) is None
    assert box.put(("cav_2", "g1"), "p2b") == "superseded"
    assert box.put(("cav_3", "g2"), "p3") is None
    assert box.put(("cav_1", "g1"), "e2", ego=True) == "busy"
    assert box.take() == ["p2b", "p3", "e2"]  # peers by arrival, then the ego frame
    assert box.take() == []
    received, pending, drops = box.snapshot()
    assert (received, pending, drops) == (5, 0, {"superseded": 1, "busy": 1})


def test_worker_sees_every_item_once_and_survives_errors() -> None:
    box: LatestWins[int] = LatestWins()
    lock, seen = threading.Lock(), []

    def handle(i: int) -> None:
        if i == 3:
            raise RuntimeError("bad map")
        seen.append(i)

    worker = Worker(box, handle, lock)
    try:
        for i in range(6):
            box.put(i, i)
        deadline = time.monotonic() + 10
        while len(seen) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        worker.stop()
    assert sorted(seen) == [0, 1, 2, 4, 5] and worker.in_hand == 0


def test_ledger_balances() -> None:
    receiver = {"fused": 4, "peer_maps_fused": 6, "held_unused": 1,
                "drops": {"stale": 2, "unused": 1}}
    book = ledger(18, 1, {"superseded": 2, "busy": 1}, receiver, pending=1)
    assert book["offered"] == 19 and book["fused"] == 10 and book["held"] == 2
    assert book["drops"] == {"busy": 1, "lost": 1, "stale": 2, "superseded": 2, "unused": 1}
    assert book["balanced"]


# -- over real DDS ---------------------------------------------------------------------------
EGO, PEERS = "cav_1", ("cav_2", "cav_3")


@pytest.mark.dds
def test_fusion_node_flood_is_counted_exactly(ros_domain: int, tmp_path: Path) -> None:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from codealign_msgs.msg import CodeMap as CodeMapMsg
    from codealign_ros.config import topic
    from codealign_ros.core.codemap import CodeMap, Encoding, GridPose
    from codealign_ros.models.store import ModelStore
    from codealign_ros.pipeline.testing import make_random_store
    from codealign_ros.processes import ProcessGroup
    from codealign_ros.ros.codemap_msg import codemap_to_msg
    from codealign_ros.ros.qos import qos_profile

    store = make_random_store(tmp_path / "mini", modalities=("m1",), score_bias=-4.0,
                              score_gain=300.0)
    books = ModelStore(store)
    digest, grid = books.codebook("g1").weights_hash(), books.profile.grid
    rng = np.random.default_rng(5)
    status_name = f"codealign fusion {EGO}"

    def msg(agent: str, stamp: int) -> CodeMapMsg:
        cm = CodeMap(indices=rng.integers(0, 16, (grid.height, grid.width), dtype=np.uint8),
                     bits=4, agent_id=agent, modality="m1", code_space="g1",
                     codebook_hash=digest, stamp_ns=stamp, frame_id=f"{agent}/lidar",
                     resolution=grid.resolution, origin=(grid.x_min, grid.y_min, 0.0),
                     pose=GridPose((5.0 * int(agent[-1]), 0.0, 0.0)))
        return codemap_to_msg(cm, Encoding.ZSTD)

    log = open(tmp_path / "fusion.log", "w")
    with ProcessGroup() as group:
        group.start_module("fusion", "codealign_ros.nodes.fusion_node",
                           {"agent_id": EGO, "modality": "m1", "model_dir": store,
                            "backend": "torch", "max_delay_s": 30.0, "max_age_s": 30.0,
                            "require_signed": False},  # signing has its own tests
                           args=["--ros-args", "-r", f"__node:=fusion_{EGO}"],
                           stdout=log, stderr=subprocess.STDOUT)
        context = Context()
        rclpy.init(context=context)
        node = Node("flood_probe", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        diag: dict[str, str] = {}

        def on_diag(m: DiagnosticArray) -> None:
            for s in m.status:
                if s.name == status_name:
                    diag.clear()
                    diag.update({kv.key: kv.value for kv in s.values})

        pub = node.create_publisher(CodeMapMsg, topic("codemap"), qos_profile("codemap"))
        # the ego's own maps reach its receiver only over the local topic
        local = node.create_publisher(CodeMapMsg, topic("codemap_local", agent=EGO),
                                      qos_profile("codemap"))
        node.create_subscription(DiagnosticArray, topic("diagnostics"), on_diag,
                                 qos_profile("output"))

        def spin_until(done, timeout: float, what: str) -> None:
            deadline = time.monotonic() + timeout
            while not done():
                assert time.monotonic() < deadline, f"timed out waiting for {what}: {diag}"
                executor.spin_once(timeout_sec=0.05)

        try:
            spin_until(lambda: diag and pub.get_subscription_count() > 0
                       and local.get_subscription_count() > 0, 120.0, "the node")
            # one warm-up frame, so that the burst meets a built pipeline
            stamp = node.get_clock().now().nanoseconds
            local.publish(msg(EGO, stamp))
            spin_until(lambda: int(diag.get("fused", 0)) >= 1, 60.0, "the first fusion")
            published = 1
            frames = 30
            for k in range(frames):  # 30 frames of 3 agents within ~0.3 s: faster than fusion
                stamp = node.get_clock().now().nanoseconds
                for agent in (*PEERS, EGO):
                    (local if agent == EGO else pub).publish(msg(agent, stamp))
                    published += 1
                time.sleep(0.01)
            spin_until(lambda: int(diag.get("ledger_offered", 0)) >= published
                       and int(diag.get("ledger_held", 1)) <= len(PEERS), 60.0, "the ledger")
            values = dict(diag)
        finally:
            node.destroy_node()
            rclpy.shutdown(context=context)
            log.close()
            assert not group.failed(), (tmp_path / "fusion.log").read_text()[-3000:]
    offered, fused = int(values["ledger_offered"]), int(values["ledger_fused"])
    dropped, held = int(values["ledger_dropped"]), int(values["ledger_held"])
    assert offered == published, values  # localhost: nothing lost, or counted as lost
    assert offered == fused + dropped + held, values
    drops = {k[5:]: int(v) for k, v in values.items() if k.startswith("drop_")}
    assert sum(drops.values()) == dropped
    assert drops.get("busy", 0) > 0, values  # the receiver could not fuse 100 frames/s
    assert int(values["fused"]) + drops.get("busy", 0) == frames + 1


def test_summary_reads_ledger_rate_and_cpu() -> None:
    from codealign_ros.demo.summary import realtime_stats, transport_ledger

    values = {"ledger_offered": "10", "ledger_fused": "6", "ledger_dropped": "3",
              "ledger_held": "1", "drop_busy": "2"}
    assert transport_ledger(values) == {"ledger": {"offered": 10, "fused": 6, "dropped": 3,
                                                   "held": 1}, "balanced": True}
    assert transport_ledger({"drop_busy": "1"}) == {}
    diag = {"kind": "diagnostics", "source": "main", "name": "codealign fusion cav_1"}
    records = [{"kind": "pose", "t": 0.0, "stamp": 1},
               *({"kind": "detections", "source": "fused", "t": 0.1 * k} for k in range(11)),
               {**diag, "t": 0.5, "values": {"cpu_percent": "40.0", "total_ms": "30"}},
               {**diag, "t": 0.9, "values": {"cpu_percent": "60.0", "total_ms": "50"}},
               {**diag, "t": 9.0, "values": {"cpu_percent": "0.0", "total_ms": "50"}}]
    stats = realtime_stats(records)
    assert stats["achieved_hz"] == 10.0
    node = stats["nodes"]["codealign fusion cav_1"]
    assert node["cpu_percent"] == 50.0 and node["total_ms"]["n"] == 2  # idle tail left out
