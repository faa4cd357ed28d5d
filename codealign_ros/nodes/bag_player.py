"""Bag player: publishes a rosbag2 (mcap or sqlite3) with its recorded timing.

Works without `ros2 bag`: the bag is read with rosbags' AnyReader and every message is
published as the stored serialized bytes (never deserialised), one publisher per topic.
Sensor topics (PointCloud2, Image, CameraInfo) use the "sensor" QoS, poses "pose", /tf and
/tf_static tf2's ("tf", "tf_static": latched, so a late RViz still gets the cameras), all
others "output" (config/topics.yaml). Timing: message k is sent at
t0 + (stamp_k - bag_start) / rate on a monotonic clock, so delays do not accumulate.

    codealign play BAG [--rate R] [--loop] [--start S] [--topics T ...] [--clock]
    python -m codealign_ros.nodes.bag_player BAG ... [--ros-args ...]
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from rosbags.highlevel import AnyReader, AnyReaderError
from rosgraph_msgs.msg import Clock

from codealign_ros.config import topic
from codealign_ros.ros.qos import qos_profile
from codealign_ros.ros.runner import run_node
from codealign_ros.errors import CodeAlignError

NS_PER_S = 1_000_000_000
CLOCK_TOPIC = "/clock"  # the ROS convention for simulated time
CLOCK_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.VOLATILE)
QOS_BY_TYPE = {"sensor_msgs/msg/PointCloud2": "sensor", "sensor_msgs/msg/Image": "sensor",
               "sensor_msgs/msg/CameraInfo": "sensor", "geometry_msgs/msg/PoseStamped": "pose"}
DEFAULT_QOS = "output"
QOS_BY_TOPIC = {topic("tf"): "tf", topic("tf_static"): "tf_static"}  # tf2's profiles
SETTLE_S = 1.0  # after subscribers matched, let their side of discovery finish
ACK_TIMEOUT_S = 2.0  # at the end, wait this long for reliable readers to acknowledge


class BagError(CodeAlignError):
    """Not a readable ROS 2 bag, or options that do not fit it."""

    reason: str = "bag"


@dataclass(frozen=True)
class PlayOptions:
    """What to play and how (the `codealign play` options)."""

    bag: Path
    rate: float = 1.0
    loop: bool = False
    start_s: float = 0.0
    topics: tuple[str, ...] = ()
    clock: bool = False
    wait_for_subscribers: int = 0
    linger_s: float = 0.0  # stay up this long after the end (downstream nodes drain)


@dataclass(frozen=True)
class BagInfo:
    """The played part of a bag: topic -> message type, and its time span."""

    topics: dict[str, str]
    start_ns: int
    end_ns: int
    messages: int


def message_class(msgtype: str) -> type:
    """The rclpy message class of a type name "pkg/msg/Name"."""
    package, _, name = msgtype.partition("/msg/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError) as err:
        raise BagError(f"message type {msgtype} is not available here ({err}); "
                       f"is the workspace sourced?") from None


def inspect_bag(options: PlayOptions) -> BagInfo:
    """Open the bag once and check it fits the options; raises BagError."""
    if options.rate <= 0:
        raise BagError(f"--rate must be > 0, got {options.rate}")
    try:
        with AnyReader([Path(options.bag)]) as reader:
            if not reader.is2:
                raise BagError(f"{options.bag}: ROS 1 bags are not supported")
            types = {name: info.msgtype for name, info in reader.topics.items()}
            start_ns, end_ns, count = reader.start_time, reader.end_time, reader.message_count
    except (AnyReaderError, OSError) as err:
        raise BagError(f"{options.bag}: not a readable rosbag2 ({err})") from None
    if not count:
        raise BagError(f"{options.bag}: the bag has no messages")
    missing = sorted(set(options.topics) - set(types))
    if missing:
        raise BagError(f"topics not in the bag: {', '.join(missing)}; "
                       f"it has {', '.join(sorted(types))}")
    if not 0 <= options.start_s * NS_PER_S < end_ns - start_ns:  # end_ns: after the last
        raise BagError(f"--start {options.start_s} is outside the bag "
                       f"(0 to {(end_ns - 1 - start_ns) / NS_PER_S:.3f} s)")
    played = {t: types[t] for t in (options.topics or sorted(types))}
    for msgtype in set(played.values()):
        message_class(msgtype)
    return BagInfo(played, start_ns, end_ns, count)


class BagPlayer(Node):
    """Publishes a bag's messages from a playback thread; shuts down when done."""

    def __init__(self, options: PlayOptions, info: BagInfo | None = None) -> None:
        super().__init__("bag_player")
        self.options, self.info = options, info or inspect_bag(options)
        self.bag_publishers = {
            name: self.create_publisher(message_class(msgtype), name, qos_profile(
                QOS_BY_TOPIC.get(name) or QOS_BY_TYPE.get(msgtype, DEFAULT_QOS)))
            for name, msgtype in self.info.topics.items()}
        self.clock = self.create_publisher(Clock, CLOCK_TOPIC, CLOCK_QOS) \
            if options.clock else None
        self.played = self.bytes = self.loops = 0
        self.bag_time_s, self.exit_code = 0.0, 0
        self.started = self.next_report = time.monotonic()
        self.finished: float | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="bag_player", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            if self._wait_for_subscribers():
                self.started = time.monotonic()
                while self._play_once() and self.options.loop:
                    pass
                self.finished = time.monotonic()
                self._flush()
        except Exception as err:  # a publish racing shutdown is no error
            if self.context.ok() and not self.stop.is_set():
                self.get_logger().error(f"playback failed: {err!r}")
                self.exit_code = 1
        finally:
            self.context.try_shutdown()

    def _wait_for_subscribers(self) -> bool:
        """Wait until `wait_for_subscribers` subscriptions matched (summed over topics)."""
        wanted = self.options.wait_for_subscribers
        if wanted > 0:
            print(f"bag_player: waiting for {wanted} subscription(s)", flush=True)
        while not self.stop.is_set():
            have = sum(p.get_subscription_count() for p in self.bag_publishers.values())
            if have >= wanted:
                return not (wanted and self.stop.wait(SETTLE_S))
            self.stop.wait(0.05)
        return False

    def _play_once(self) -> bool:
        """Play the bag (from --start) once; False when stopped."""
        start_ns = self.info.start_ns + round(self.options.start_s * NS_PER_S)
        last_stamp = None
        with AnyReader([Path(self.options.bag)]) as reader:
            t0 = time.monotonic()  # after opening, which takes a while
            connections = [c for c in reader.connections if c.topic in self.bag_publishers]
            for conn, stamp, raw in reader.messages(connections=connections, start=start_ns):
                delay = t0 + (stamp - start_ns) / NS_PER_S / self.options.rate - time.monotonic()
                if self.stop.wait(max(delay, 0.0)):
                    return False
                if self.clock is not None and stamp != last_stamp:
                    self.clock.publish(Clock(clock=Time(nanoseconds=stamp).to_msg()))
                last_stamp = stamp
                self.bag_publishers[conn.topic].publish(bytes(raw))
                self.played, self.bytes = self.played + 1, self.bytes + len(raw)
                self.bag_time_s = (stamp - self.info.start_ns) / NS_PER_S
                self._report()
        self.loops += 1
        return not self.stop.is_set()

    def _report(self) -> None:
        now = time.monotonic()
        if now >= self.next_report:
            self.next_report = now + 1.0
            span = (self.info.end_ns - self.info.start_ns) / NS_PER_S
            print(f"bag_player: {self.played} messages, bag time {self.bag_time_s:.2f} / "
                  f"{span:.2f} s", flush=True)

    def _flush(self) -> None:
        """Give readers time to receive the last messages before shutting down."""
        for publisher in (*self.bag_publishers.values(), self.clock):
            if publisher is not None and publisher.qos_profile.reliability == \
                    ReliabilityPolicy.RELIABLE:
                publisher.wait_for_all_acked(Duration(seconds=ACK_TIMEOUT_S))
        self.stop.wait(0.2 + self.options.linger_s)  # best effort: nothing to wait on but time

    def summary(self) -> dict[str, Any]:
        """Messages, bytes and times played so far."""
        return {"messages": self.played, "bytes": self.bytes, "loops": self.loops,
                "topics": len(self.bag_publishers), "bag_time_s": round(self.bag_time_s, 3),
                "wall_s": round((self.finished or time.monotonic()) - self.started, 3)}

    def on_shutdown(self) -> None:
        """Stop the playback thread and print the summary."""
        self.stop.set()
        self.thread.join(timeout=ACK_TIMEOUT_S + 3.0)
        print("SUMMARY " + json.dumps(self.summary()), flush=True)


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", type=Path, metavar="BAG", help="rosbag2 directory (mcap or sqlite3)")
    parser.add_argument("--rate", type=_positive, default=1.0,
                        help="playback speed factor (default 1.0; 2 = twice as fast)")
    parser.add_argument("--loop", action="store_true", help="restart at the end, until Ctrl-C")
    parser.add_argument("--start", type=float, default=0.0, metavar="S",
                        help="skip the first S seconds of the bag")
    parser.add_argument("--topics", nargs="+", default=[], metavar="T",
                        help="play only these topics (default: all)")
    parser.add_argument("--clock", action="store_true",
                        help=f"publish rosgraph_msgs/Clock on {CLOCK_TOPIC} with the bag time")
    parser.add_argument("--wait-for-subscribers", type=int, default=0, metavar="N",
                        help="start once N subscriptions (summed over topics) matched")
    parser.add_argument("--linger", type=float, default=0.0, metavar="S",
                        help="stay up S seconds after the last message, so that a graph that "
                        "ends with the player can process its last frames (default 0)")


def add_play_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `play` sub-command to a sub-parser collection."""
    parser = subparsers.add_parser(
        "play", help="publish a rosbag2 with its recorded timing (no `ros2 bag` needed)",
        description=__doc__.split("\n\n")[0] + " Prints progress once per second and a "
                    "summary; exit code 2 when BAG is not a readable rosbag2.")
    _add_arguments(parser)
    parser.set_defaults(func=run_play)
    return parser


def run_play(args: argparse.Namespace, ros_argv: Sequence[str] | None = None) -> int:
    """Run `codealign play`: 0 played, 1 playback failed, 2 bad bag or options."""
    options = PlayOptions(bag=args.bag, rate=args.rate, loop=args.loop, start_s=args.start,
                          topics=tuple(args.topics), clock=args.clock,
                          wait_for_subscribers=args.wait_for_subscribers,
                          linger_s=max(float(args.linger), 0.0))
    try:
        info = inspect_bag(options)
    except BagError as err:
        print(f"play: error: {err}", file=sys.stderr)
        return 2
    print(f"play: {options.bag}: {len(info.topics)} topic(s), {info.messages} messages, "
          f"{(info.end_ns - info.start_ns) / NS_PER_S:.2f} s", flush=True)
    nodes: list[BagPlayer] = []

    def factory() -> BagPlayer:
        nodes.append(BagPlayer(options, info))
        return nodes[0]

    run_node(factory, list(ros_argv) if ros_argv is not None else None, "bag_player")
    return nodes[0].exit_code if nodes else 1


def main(args: list[str] | None = None) -> int:
    """Entry point: `bag_player BAG [--rate R] ... [--ros-args ...]`."""
    argv = sys.argv if args is None else ["bag_player", *args]
    parser = argparse.ArgumentParser(prog="bag_player", description=__doc__.split("\n\n")[0])
    _add_arguments(parser)
    from rclpy.utilities import remove_ros_args
    return run_play(parser.parse_args(remove_ros_args(argv)[1:]), argv)


if __name__ == "__main__":
    sys.exit(main())
