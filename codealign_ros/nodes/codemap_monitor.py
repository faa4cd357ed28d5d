"""Code-map monitor: decodes every CodeMap on the V2X topic, reports bytes, rates, drops.

Prints one status line per second and a JSON summary on exit. With `record` set, each
decoded map's content hash is written as a JSON line (used by the transport tests). With
`publish_images` (default false; the demo sets it), each decoded map is also published as an
rgb8 sensor_msgs/Image on topics.yaml `codemap_image` of its agent (one fixed colour per code,
`core.codemap_image`; +x right, +y up; header = the map's stamp and grid frame).
"""
from __future__ import annotations

import json
import sys
import time
from typing import Any

from rclpy.exceptions import InvalidNamespaceException, InvalidTopicNameException
from rclpy.node import Node

from codealign_ros.config import topic
from codealign_ros.core.codemap import CodeMap, CodeMapError
from codealign_ros.core.codemap_image import colorize
from codealign_ros.core.stats import DropCounter, StreamStats
from codealign_ros.ros.codemap_msg import msg_to_codemap, ns_to_stamp
from codealign_ros.ros.image import rgb_to_image
from codealign_ros.ros.qos import qos_profile
from codealign_ros.ros.params import declare_from_file
from codealign_ros.ros.runner import run_node
from codealign_msgs.msg import CodeMap as CodeMapMsg
from sensor_msgs.msg import Image

MAX_STREAMS = 256  # bound on distinct agent ids tracked (flooding peers)


class CodeMapMonitor(Node):
    """Subscribes the code-map topic and keeps per-agent statistics."""

    def __init__(self) -> None:
        super().__init__("codemap_monitor")
        p = declare_from_file(self, "codemap_monitor")
        self.expected, record = p["expected"], p["record"]
        self.record = open(record, "w") if record else None
        self.publish_images = bool(p["publish_images"])
        self.report = bool(p["report"])  # the status lines
        self.image_pubs: dict[str, Any] = {}
        self.streams: dict[str, StreamStats] = {}
        self.drops = DropCounter()
        self.create_subscription(CodeMapMsg, topic("codemap"), self._on_codemap,
                                 qos_profile("codemap"))
        if self.report:
            self.create_timer(1.0, self._report)

    def _on_codemap(self, msg: CodeMapMsg) -> None:
        now_ns = self.get_clock().now().nanoseconds
        try:
            code_map = msg_to_codemap(msg)
        except CodeMapError as err:
            self.drops.drop(err.reason)
            self.get_logger().warning(f"dropped code map from {msg.agent_id!r}: {err}",
                                      throttle_duration_sec=1.0)
            return
        stream = self.streams.get(code_map.agent_id)
        if stream is None:
            if len(self.streams) >= MAX_STREAMS:
                self.drops.drop("too_many_agents")
                return
            stream = self.streams[code_map.agent_id] = StreamStats()
        stream.add(time.monotonic(), len(msg.data), code_map.raw_nbytes,
                   (now_ns - code_map.stamp_ns) / 1e6)
        if self.publish_images:
            self._publish_image(code_map)
        if self.record:
            self.record.write(json.dumps({"agent": code_map.agent_id,
                                          "hash": code_map.content_hash()}) + "\n")
            self.record.flush()
        total = sum(s.messages for s in self.streams.values())
        if self.expected and total >= self.expected:
            self.get_logger().info(f"received {total} code maps, done")
            raise SystemExit(0)

    def _publish_image(self, code_map: CodeMap) -> None:
        """The map as a colourised image on its agent's debug topic."""
        pub = self.image_pubs.get(code_map.agent_id)
        if pub is None:
            try:
                pub = self.create_publisher(Image, topic("codemap_image", agent=code_map.agent_id),
                                            qos_profile("output"))
            except (InvalidTopicNameException, InvalidNamespaceException) as err:
                self.drops.drop("image_topic")  # an agent id that makes no topic name
                self.get_logger().warning(f"no image topic for {code_map.agent_id!r}: {err}",
                                          throttle_duration_sec=1.0)
                return
            self.image_pubs[code_map.agent_id] = pub
        pub.publish(rgb_to_image(colorize(code_map.indices, code_map.bits), code_map.frame_id,
                                 ns_to_stamp(code_map.stamp_ns)))

    def summary(self) -> dict:
        """Per-agent statistics and drops by reason."""
        return {"agents": {a: s.summary() for a, s in sorted(self.streams.items())},
                "drops": dict(self.drops)}

    def _report(self) -> None:
        parts = [f"{agent}: {s['messages']} msgs {s['rate_hz']:.1f} Hz "
                 f"{s['payload_bytes_per_msg']:.0f} B/msg (raw {s['raw_bytes_per_msg']:.0f})"
                 for agent, s in self.summary()["agents"].items()]
        drops = sum(self.drops.values())
        print(" | ".join(parts or ["waiting for code maps"]) + f" | drops {drops}", flush=True)

    def on_shutdown(self) -> None:
        """Print the JSON summary and close the record file."""
        if self.report:
            print("SUMMARY " + json.dumps(self.summary()), flush=True)
        if self.record:
            self.record.close()


def main(args: list[str] | None = None) -> int:
    """Entry point: `codemap_monitor --ros-args -p expected:=20 -p record:=/tmp/rx.jsonl`."""
    return run_node(CodeMapMonitor, args, "codemap_monitor")


if __name__ == "__main__":
    sys.exit(main())
