"""CodeMaps cross process boundaries over real Fast DDS and arrive intact."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import rclpy
from rclpy.context import Context

from codealign_msgs.msg import CodeMap as CodeMapMsg
from codealign_ros.config import topic
from codealign_ros.processes import ProcessGroup
from codealign_ros.ros.qos import qos_profile

pytestmark = pytest.mark.dds
PER_AGENT = 15


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def _summary(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("SUMMARY ")]
    assert lines, f"monitor printed no summary:\n{stdout}"
    return json.loads(lines[-1][len("SUMMARY "):])


def test_code_maps_arrive_intact_between_processes(ros_domain: int, tmp_path: Path) -> None:
    agents = {"cav_1": "zstd", "rsu_2": "raw", "cav_3": "zlib"}
    with ProcessGroup() as group:
        monitor = group.start_module(
            "monitor", "codealign_ros.nodes.codemap_monitor",
            {"expected": PER_AGENT * len(agents), "record": tmp_path / "rx.jsonl"},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for seed, (agent, encoding) in enumerate(agents.items()):
            group.start_module(agent, "codealign_ros.nodes.codemap_source", {
                "agent_id": agent, "encoding": encoding, "seed": seed, "count": PER_AGENT,
                "rate_hz": 20.0, "wait_for_subscribers": 1, "record": tmp_path / f"{agent}.jsonl"})
        try:
            out, _ = monitor.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            monitor.send_signal(2)
            out, _ = monitor.communicate(timeout=10)
            pytest.fail(f"monitor did not receive {PER_AGENT * len(agents)} maps:\n{out}")
    assert monitor.returncode == 0, out
    received = _read_jsonl(tmp_path / "rx.jsonl")
    for agent in agents:
        sent = [r["hash"] for r in _read_jsonl(tmp_path / f"{agent}.jsonl")]
        got = [r["hash"] for r in received if r["agent"] == agent]
        assert len(sent) == PER_AGENT
        assert got == sent, f"{agent}: content differs or out of order"
    summary = _summary(out)
    assert summary["drops"] == {}
    assert summary["agents"]["rsu_2"]["payload_bytes_per_msg"] == 32768
    assert summary["agents"]["cav_1"]["payload_bytes_per_msg"] < 32768


def test_monitor_counts_malformed_code_maps_and_keeps_running(ros_domain: int) -> None:
    with ProcessGroup() as group:
        monitor = group.start_module(
            "monitor", "codealign_ros.nodes.codemap_monitor", {"expected": 0},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        context = Context()
        rclpy.init(context=context)
        try:
            node = rclpy.create_node("bad_peer", context=context)
            pub = node.create_publisher(CodeMapMsg, topic("codemap"), qos_profile("codemap"))
            deadline = time.monotonic() + 30
            while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)  # best effort: let the monitor's side of discovery settle too
            for bits, data_len in ((4, 100), (9, 32768), (4, 32768)):
                msg = CodeMapMsg(agent_id="bad", modality="m1", code_space="g1",
                                 codebook_hash="00", bits=bits, height=256, width=256,
                                 resolution=0.8, encoding=0)
                msg.pose.orientation.w = 1.0
                msg.pose.position.x = float("nan") if data_len == 32768 and bits == 4 else 0.0
                msg.data = bytes(data_len)
                pub.publish(msg)
                time.sleep(0.2)
            time.sleep(0.5)
            node.destroy_node()
        finally:
            rclpy.shutdown(context=context)
        assert monitor.poll() is None, "monitor died on malformed input"
        group.stop()
        out, _ = monitor.communicate()
    assert _summary(out)["drops"] == {"length": 1, "bits": 1, "pose": 1}
