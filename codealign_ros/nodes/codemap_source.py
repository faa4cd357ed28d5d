"""Synthetic code-map source: publishes realistic-looking CodeMaps for transport tests.

Stands in for a vehicle node where no trained model is wanted (transport demo,
load and flood tests). Maps come from `realistic_code_map`; the pose drives along +x.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time

import numpy as np
from rclpy.node import Node

from codealign_ros.config import frame, lookup, topic
from codealign_ros.core.codemap import CodeMap, GridPose, codebook_hash
from codealign_ros.core.codemap_samples import realistic_code_map
from codealign_ros.config.profiles import load_profile
from codealign_ros.ros.codemap_msg import codemap_to_msg, encoding_param
from codealign_ros.ros.qos import qos_profile
from codealign_ros.ros.params import declare_from_file
from codealign_ros.ros.runner import run_node
from codealign_msgs.msg import CodeMap as CodeMapMsg

DISTINCT_MAPS = 8  # maps are precomputed and cycled
SETTLE_S = 1.5  # after a reader matched, let its side of discovery finish (best effort QoS;
#                 0.5 s lost the first maps on a loaded 2-core machine)


def synthetic_codebook_hash(code_space: str, bits: int, dims: int = 64) -> str:
    """Hash of a deterministic stand-in codebook of `code_space`."""
    seed = int.from_bytes(code_space.encode()[:8].ljust(8, b"\0"), "little")
    return codebook_hash(np.random.default_rng(seed).normal(size=(2**bits, dims)))


class CodeMapSource(Node):
    """Publishes `count` synthetic CodeMaps at `rate_hz` (count 0: until stopped)."""

    def __init__(self) -> None:
        super().__init__("codemap_source")
        p = self._declare_parameters()
        self.agent_id = p["agent_id"]
        bits = int(lookup("codemap", "codebook_bits"))
        grid = load_profile(p["profile"]).grid
        self.encoding = encoding_param(p["encoding"])
        self.count, self.sent, self.wait_for = p["count"], 0, p["wait_for_subscribers"]
        self.speed, self.matched_at = p["speed_mps"], None
        self.record = open(p["record"], "w") if p["record"] else None
        self.maps = [
            CodeMap(indices=realistic_code_map(grid.height, grid.width, bits,
                                               seed=p["seed"] * 1000 + i),
                    bits=bits, agent_id=self.agent_id, modality=p["modality"],
                    code_space=p["code_space"],
                    codebook_hash=synthetic_codebook_hash(p["code_space"], bits),
                    stamp_ns=0, frame_id=frame("grid", agent=self.agent_id),
                    resolution=grid.resolution, origin=(grid.x_min, grid.y_min, 0.0),
                    pose=GridPose.identity())
            for i in range(DISTINCT_MAPS)]
        self.publisher = self.create_publisher(CodeMapMsg, topic("codemap"), qos_profile("codemap"))
        self.timer = self.create_timer(1.0 / p["rate_hz"], self._tick)

    def _declare_parameters(self) -> dict:
        return declare_from_file(self, "codemap_source")

    def _tick(self) -> None:
        if self.sent == 0 and not self._subscribers_ready():
            return
        now_ns = self.get_clock().now().nanoseconds
        template = self.maps[self.sent % DISTINCT_MAPS]
        pose = GridPose(position=(self.speed * self.sent / 10.0, 0.0, 0.0),
                        orientation=(0.0, 0.0, 0.0, 1.0))
        code_map = dataclasses.replace(template, stamp_ns=now_ns, pose=pose)
        self.publisher.publish(codemap_to_msg(code_map, self.encoding))
        if self.record:
            self.record.write(json.dumps({"seq": self.sent, "hash": code_map.content_hash()}) + "\n")
            self.record.flush()
        self.sent += 1
        if self.count and self.sent >= self.count:
            self.get_logger().info(f"sent {self.sent} code maps, done")
            raise SystemExit(0)

    def _subscribers_ready(self) -> bool:
        """True once `wait_for_subscribers` readers matched and discovery settled."""
        if self.publisher.get_subscription_count() < self.wait_for:
            self.matched_at = None
            return False
        now = time.monotonic()
        self.matched_at = self.matched_at or now
        return not self.wait_for or now - self.matched_at >= SETTLE_S

    def on_shutdown(self) -> None:
        """Close the record file."""
        if self.record:
            self.record.close()


def main(args: list[str] | None = None) -> int:
    """Entry point: `codemap_source --ros-args -p agent_id:=cav_2 -p encoding:=raw`."""
    return run_node(CodeMapSource, args, "codemap_source")


if __name__ == "__main__":
    sys.exit(main())
