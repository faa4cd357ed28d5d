"""The bag player publishes a bag's stored bytes over real DDS, in order, with its timing."""
from __future__ import annotations

import json
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile
from rclpy.subscription import MessageInfo
from rosbags.highlevel import AnyReader
from rosgraph_msgs.msg import Clock

from codealign_msgs.msg import Detection3DArray
from codealign_ros.config import topic
from codealign_ros.data.bag import write_bag
from codealign_ros.nodes.bag_player import CLOCK_QOS, CLOCK_TOPIC, main
from codealign_ros.processes import ProcessGroup
from codealign_ros.ros.qos import qos_profile
from sensor_msgs.msg import PointCloud2
from test_bag import make_frames

pytestmark = pytest.mark.dds
FRAMES = 10  # 0.1 s apart: 0.9 s of bag time
LIDAR = topic("lidar", agent="cav_641")
GT = topic("gt_objects")


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("player") / "bag"
    write_bag(make_frames(FRAMES), out, progress=False)
    return out


def stored(bag: Path, name: str) -> list[tuple[int, bytes]]:
    """(bag time, serialized bytes as they travel) of one topic, in bag order.

    RTPS carries serialized payloads in whole 4-byte words: a reader gets the stored
    bytes zero-padded to a multiple of 4.
    """
    with AnyReader([bag]) as reader:
        conns = [c for c in reader.connections if c.topic == name]
        return [(stamp, bytes(raw) + bytes(-len(raw) % 4))
                for _, stamp, raw in reader.messages(connections=conns)]


def recorder(arrivals: list[tuple[float, object]]) -> Callable[[object, MessageInfo], None]:
    """Callback appending (publish time in s, message): the source timestamp keeps the
    player's pacing measurable when this process is slow to spin."""
    return lambda msg, info: arrivals.append((info["source_timestamp"] / 1e9, msg))


def play(bag: Path, args: list[str], subscriptions: dict[str, tuple[type, object]],
         done: Callable[[dict[str, list]], bool], timeout_s: float = 20.0,
         ) -> tuple[dict[str, list[tuple[float, object]]], int, str]:
    """Run the player process while this process subscribes (raw, but Clock); returns
    arrivals by topic as (publish time, bytes or Clock), the player's exit code and output."""
    received: dict[str, list[tuple[float, object]]] = defaultdict(list)
    context = Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("bag_listener", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        for name, (msg_type, qos) in subscriptions.items():
            node.create_subscription(msg_type, name, recorder(received[name]), qos,
                                     raw=msg_type is not Clock)
        with ProcessGroup() as group:
            player = group.start_module("player", "codealign_ros.nodes.bag_player",
                                        args=[str(bag), *args], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and not done(received):
                executor.spin_once(timeout_sec=0.05)
            group.stop()
            out, _ = player.communicate()
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
    return received, player.returncode, out


def deep(key: str) -> QoSProfile:
    """QoS `key` with a reader history deep enough to hold a whole test bag (a slow test
    process must not lose old samples to keep_last)."""
    profile = qos_profile(key)
    profile.depth = 1000
    return profile


def clock_ns(msg: Clock) -> int:
    return msg.clock.sec * 10**9 + msg.clock.nanosec


def summary(out: str) -> dict:
    lines = [line for line in out.splitlines() if line.startswith("SUMMARY ")]
    assert lines, f"player printed no summary:\n{out}"
    return json.loads(lines[-1][len("SUMMARY "):])


def test_player_publishes_stored_bytes_in_order_with_bag_timing(ros_domain: int,
                                                                  bag: Path) -> None:
    rate = 2.0
    expected = {name: stored(bag, name) for name in (LIDAR, GT)}
    stamps = [stamp for stamp, _ in expected[LIDAR]]
    subscriptions = {LIDAR: (PointCloud2, deep("sensor")),
                     GT: (Detection3DArray, deep("output")),
                     CLOCK_TOPIC: (Clock, CLOCK_QOS)}
    received, code, out = play(
        bag, ["--rate", str(rate), "--clock", "--wait-for-subscribers", "2"], subscriptions,
        lambda got: all(len(got[n]) >= FRAMES for n in expected)
        and bool(got[CLOCK_TOPIC]) and clock_ns(got[CLOCK_TOPIC][-1][1]) == stamps[-1])
    assert code == 0, out
    for name, messages in expected.items():
        assert [raw for _, raw in received[name]] == [raw for _, raw in messages], \
            f"{name}: missing, reordered or altered messages\n{out}"
    bag_span = (expected[LIDAR][-1][0] - expected[LIDAR][0][0]) / 1e9 / rate
    wall_span = received[LIDAR][-1][0] - received[LIDAR][0][0]  # publish times
    assert 0.6 * bag_span <= wall_span <= 2.0 * bag_span, (wall_span, bag_span)
    clocks = [clock_ns(c) for _, c in received[CLOCK_TOPIC]]
    assert clocks == sorted(set(clocks)) and set(clocks) <= set(stamps)
    assert clocks[-1] == stamps[-1]
    # 10 topics + /tf per frame, /tf_static once
    assert summary(out)["messages"] == FRAMES * 11 + 1 and summary(out)["loops"] == 1


def test_player_loops_from_start_offset_on_selected_topics(ros_domain: int, bag: Path) -> None:
    gt = stored(bag, GT)
    tail = [raw for stamp, raw in gt if stamp - gt[0][0] >= 450_000_000]  # 0.5 .. 0.9 s
    subscriptions = {GT: (Detection3DArray, deep("output")),
                     LIDAR: (PointCloud2, deep("sensor"))}
    received, code, out = play(
        bag, ["--rate", "4", "--loop", "--start", "0.45", "--topics", GT,
              "--wait-for-subscribers", "1"], subscriptions,
        lambda got: len(got[GT]) >= 2 * len(tail) + 1)
    assert code == 0, out
    got = [raw for _, raw in received[GT]]
    assert len(tail) == 5 and got[: 2 * len(tail) + 1] == (tail * 3)[: 2 * len(tail) + 1]
    assert not received[LIDAR], "--topics did not filter"
    assert summary(out)["loops"] >= 2


@pytest.mark.parametrize("args, error", [
    (["/nonexistent/bag"], "not a readable rosbag2"),
    (["{bag}/metadata.yaml"], "not a readable rosbag2"),
    (["{bag}", "--topics", "/nope"], "topics not in the bag: /nope"),
    (["{bag}", "--start", "5"], "--start 5.0 is outside the bag"),
])
def test_player_rejects_bad_bags_and_options(bag: Path, args: list[str], error: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main([arg.format(bag=bag) for arg in args]) == 2
    assert error in capsys.readouterr().err
