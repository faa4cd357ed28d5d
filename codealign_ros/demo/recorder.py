"""demo_recorder: records what the demo graph publishes as an MCAP rosbag2; status each second.

Subscribes the V2X code maps, their debug images (codemap_monitor), the fused detections and
markers, the ego-only detections (when the demo runs that node), /diagnostics of both, the
vehicles' processing times and the fusion node's latency, and writes every message it gets into
`out` (codealign_ros.demo.recording: the publisher's CDR at its arrival time, Foxglove and
`ros2 bag play` open it). Once every vehicle publishes code maps and every receiver listens
(`count_publishers` / `count_subscribers` of the code-map topic), it also subscribes the bag's
topics (`recording.bag_topics`: TF, ground truth, poses, clouds); the bag player waits for those
subscriptions (its --wait-for-subscribers count includes them), so playback starts only when
the graph is up.

Its own events go into the recording as JSON on `recording.EVENTS_TOPIC`:
  roles       which topic is what (fused / ego-only detections, diagnostics, processing)
  ready       all nodes up
  e2e         one detections message's end-to-end latency (source, stamp, ms): from the
              player's publish of the ego's pose to the detections' publish, both DDS
              source timestamps (the publishers' clocks: this node's own scheduling, at a
              low priority, does not enter)
  done        both detection sources covered the first `frames` frames: the node exits, which
              ends the whole graph (the embedded launcher stops all nodes when one exits)
  timeout     timeout_s passed first: the node exits as well
  end         the node stopped (the recording is then closed)

Parameters: out (recording directory, replaced), ego, agents (string array, bag order),
frames (frames to cover), timeout_s, codemap_publishers, codemap_subscribers (including this
node), ego_only_detections, ego_only_diagnostics, processing_topics (string array),
latency_topic, record_clouds (none / ego / all: whose LiDAR clouds are recorded).
"""
from __future__ import annotations

import collections
import sys
import time
from typing import Any, Callable

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import Float64
from visualization_msgs.msg import MarkerArray

from codealign_msgs.msg import CodeMap as CodeMapMsg
from codealign_msgs.msg import Detection3DArray
from codealign_ros.config import topic
from codealign_ros.demo.recording import (RecordingWriter, bag_topics, detection_arrays,
                                          type_name)
from codealign_ros.nodes.bag_player import message_class
from codealign_ros.ros.codemap_msg import stamp_to_ns
from codealign_ros.ros.qos import qos_profile
from codealign_ros.ros.runner import run_node

def sent_ns(info: Any) -> int:
    """When the publisher wrote the message (its DDS source timestamp, wall clock ns), or
    now where the RMW does not report it."""
    sent = info.get("source_timestamp") if isinstance(info, dict) else None
    return int(sent) if sent else time.time_ns()


DEFAULTS = {"out": "out/demo/recording", "ego": "cav_1", "frames": 0, "timeout_s": 600.0,
            "codemap_publishers": 1, "codemap_subscribers": 2,
            "ego_only_detections": "", "ego_only_diagnostics": "", "latency_topic": "",
            "record_clouds": "all"}
CLOUDS = ("none", "ego", "all")  # record_clouds: whose LiDAR clouds the recording keeps
READY_POLL_S = 0.2
STATUS_PERIOD_S = 1.0
MAP_GRACE_S = 1.5  # after the last detections: wait for every agent's last maps (and their
# nodes' next 1 Hz diagnostics, which count a map dropped at the end) before ending the run
CODEMAP_DEPTH = 50  # every agent's maps of a few frames: the recorder must not lose them


class DemoRecorder(Node):
    """Writes the demo graph's outputs to an MCAP recording."""

    def __init__(self) -> None:
        super().__init__("demo_recorder")
        self.p = {k: self.declare_parameter(k, v).value for k, v in DEFAULTS.items()}
        processing = self.declare_parameter("processing_topics",
                                            Parameter.Type.STRING_ARRAY).value or []
        self.agent_ids = list(self.declare_parameter("agents", Parameter.Type.STRING_ARRAY)
                              .value or [self.p["ego"]])
        if self.p["record_clouds"] not in CLOUDS:
            raise ValueError(f"record_clouds must be one of {CLOUDS}, got "
                             f"{self.p['record_clouds']!r}")
        self.cloud_agents = {"none": [], "ego": [self.p["ego"]],
                             "all": self.agent_ids}[self.p["record_clouds"]]
        self.rec = RecordingWriter(self.p["out"])
        p = self.p
        self.rec.event("roles", ego=p["ego"], agents=self.agent_ids,
                       detections={"fused": topic("detections"),
                                   **({"ego_only": p["ego_only_detections"]}
                                      if p["ego_only_detections"] else {})},
                       diagnostics={"main": topic("diagnostics"),
                                    **({"ego_only": p["ego_only_diagnostics"]}
                                       if p["ego_only_diagnostics"] else {})},
                       processing=list(processing), latency=p["latency_topic"])
        self.started = time.monotonic()
        self.ready_at: float | None = None
        self.pose_sent: dict[int, int] = {}  # ego pose stamp -> publish time (ns)
        self.counts: collections.Counter = collections.Counter()
        self.maps: collections.Counter = collections.Counter()
        self.map_stamps: collections.defaultdict = collections.defaultdict(set)
        self.grace: Any = None
        self.boxes: collections.deque = collections.deque(maxlen=20)
        self.e2e: collections.deque = collections.deque(maxlen=50)
        self.drops: dict[str, int] = {}
        self.last_status = dict(self.counts)
        self.waiting, self.agents = (0, 0), 0
        self.gt_stamps: list[int] = []
        self.covered: dict[str, set[int]] = {"fused": set()}
        if self.p["ego_only_detections"]:
            self.covered["ego_only"] = set()
        self._subscribe(processing)
        self.ready_timer = self.create_timer(READY_POLL_S, self._check_ready)
        self.create_timer(STATUS_PERIOD_S, self._status)
        self.timeout = self.create_timer(float(self.p["timeout_s"]), self._on_timeout)

    # -- subscriptions -----------------------------------------------------------------------
    def _record(self, cls: type, name: str, qos: Any,
                callback: Callable[[Any, int], None] | None = None) -> None:
        """Subscribe `name` and write every message into the recording; `callback` also sees
        it parsed, with the time it was published (without one the subscription stays raw:
        no deserialisation)."""
        msgtype = type_name(cls)
        if callback is None:
            self.create_subscription(cls, name, lambda raw: self.rec.write(name, msgtype, raw),
                                     qos, raw=True)
            return

        def on_message(msg: Any, info: Any) -> None:
            self.rec.write(name, msgtype, serialize_message(msg))
            callback(msg, sent_ns(info))
        self.create_subscription(cls, name, on_message, qos)

    def _subscribe(self, processing: list[str]) -> None:
        out, p = qos_profile("output"), self.p
        maps = qos_profile("codemap")
        maps.depth = max(maps.depth, CODEMAP_DEPTH)
        self._record(CodeMapMsg, topic("codemap"), maps, self._on_codemap)
        self._record(Detection3DArray, topic("detections"), out,
                     lambda m, sent: self._on_detections(m, sent, "fused"))
        self._record(MarkerArray, topic("markers"), out)
        self._record(DiagnosticArray, topic("diagnostics"), out,
                     lambda m, _: self._on_diagnostics(m, "main"))
        for agent in self.agent_ids:
            self._record(Image, topic("codemap_image", agent=agent), out)
        if p["ego_only_detections"]:
            self._record(Detection3DArray, p["ego_only_detections"], out,
                         lambda m, sent: self._on_detections(m, sent, "ego_only"))
        if p["ego_only_diagnostics"]:
            self._record(DiagnosticArray, p["ego_only_diagnostics"], out,
                         lambda m, _: self._on_diagnostics(m, "ego_only"))
        for name in [*processing, *([p["latency_topic"]] if p["latency_topic"] else [])]:
            self._record(Float64, name, out)

    def _check_ready(self) -> None:
        """Subscribe the bag's topics once every vehicle sends and every receiver listens."""
        name = topic("codemap")
        pubs, subs = self.count_publishers(name), self.count_subscribers(name)
        self.waiting = (pubs, subs)
        if pubs < int(self.p["codemap_publishers"]) or subs < int(self.p["codemap_subscribers"]):
            return
        self.ready_timer.cancel()
        self.ready_at = time.monotonic()
        parsed = {topic("gt_objects"): self._on_gt, topic("pose", agent=self.p["ego"]):
                  self._on_pose}
        for name, msgtype, qos in bag_topics(self.agent_ids, self.cloud_agents):
            self._record(message_class(msgtype), name, qos_profile(qos), parsed.get(name))
        self._write("ready", after_s=round(self.ready_at - self.started, 2))
        print(f"demo: all nodes up after {self.ready_at - self.started:.1f} s "
              f"({pubs} senders, {subs - 1} receivers); the bag player starts", flush=True)

    # -- callbacks ---------------------------------------------------------------------------
    def _write(self, kind: str, **fields: Any) -> None:
        self.rec.event(kind, **fields)

    def _on_pose(self, msg: PoseStamped, sent: int) -> None:
        self.pose_sent.setdefault(stamp_to_ns(msg.header.stamp), sent)

    def _on_gt(self, msg: Detection3DArray, _sent: int) -> None:
        self.counts["frames"] += 1
        self.gt_stamps.append(stamp_to_ns(msg.header.stamp))
        self._check_done()

    def _on_codemap(self, msg: CodeMapMsg, _sent: int) -> None:
        self.maps[msg.agent_id] += 1
        self.map_stamps[msg.agent_id].add(stamp_to_ns(msg.header.stamp))
        self._check_done()

    def _on_detections(self, msg: Detection3DArray, sent: int, source: str) -> None:
        """End-to-end latency from the publishers' clocks (DDS source timestamps): the
        player's publish of the ego's pose (beside its sensor data) -> the detections'
        publish, whenever this node itself got to either message (an `e2e` event)."""
        stamp = stamp_to_ns(msg.header.stamp)
        boxes, _, agents = detection_arrays(msg)
        start = self.pose_sent.get(stamp)
        e2e = None if start is None else round((sent - start) / 1e6, 2)
        if e2e is not None:
            self._write("e2e", source=source, stamp=stamp, ms=e2e)
        self.counts[source] += 1
        if source == "fused":
            self.boxes.append(len(boxes))
            if e2e is not None:
                self.e2e.append(e2e)
            self.agents = len(agents)
        self.covered[source].add(stamp)
        self._check_done()

    def _check_done(self) -> None:
        wanted = int(self.p["frames"])
        if wanted <= 0 or len(self.gt_stamps) < wanted:
            return
        first = set(self.gt_stamps[:wanted])
        if not all(first <= seen for seen in self.covered.values()):
            return
        if all(first <= self.map_stamps[a] for a in self.agent_ids):
            self._finish("done", f"demo: detections and code maps of all {wanted} frames arrived")
        elif self.grace is None:  # a last map may still be on its way
            self.grace = self.create_timer(MAP_GRACE_S, lambda: self._finish(
                "done", f"demo: detections of all {wanted} frames arrived (some code maps "
                        f"did not within {MAP_GRACE_S} s)"))

    def _on_timeout(self) -> None:
        self._finish("timeout", f"demo: timed out after {self.p['timeout_s']} s")

    def _finish(self, kind: str, text: str) -> None:
        """Record why, then shut down: the launcher then stops the whole graph."""
        if not self.context.ok():
            return
        self.timeout.cancel()
        self._write(kind, elapsed_s=round(time.monotonic() - self.started, 2))
        print(text, flush=True)
        self.context.try_shutdown()

    def _on_diagnostics(self, msg: DiagnosticArray, source: str) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if source == "main":
                drops = sum(int(v) for k, v in values.items()
                            if k.startswith("drop_") and v.isdigit())
                self.drops[status.name] = drops

    # -- status --------------------------------------------------------------------------------
    def _status(self) -> None:
        elapsed = time.monotonic() - self.started
        if self.ready_at is None:
            pubs, subs = self.waiting
            print(f"demo {elapsed:5.1f} s | waiting for nodes: code-map senders {pubs}/"
                  f"{self.p['codemap_publishers']}, receivers {max(subs - 1, 0)}/"
                  f"{int(self.p['codemap_subscribers']) - 1}", flush=True)
            return
        fused_hz = self.counts["fused"] - self.last_status.get("fused", 0)
        self.last_status = dict(self.counts)
        e2e = sorted(self.e2e)
        p50 = f"{e2e[len(e2e) // 2]:.0f} ms" if e2e else "-"
        boxes = sum(self.boxes) / len(self.boxes) if self.boxes else 0.0
        maps = " ".join(f"{a} {n}" for a, n in sorted(self.maps.items()))
        of = f"/{self.p['frames']}" if int(self.p["frames"]) > 0 else ""
        alone = (f" | ego-only {len(self.covered['ego_only'])}{of}"
                 if "ego_only" in self.covered else "")
        print(f"demo {elapsed:5.1f} s | played {self.counts['frames']} | fused "
              f"{len(self.covered['fused'])}{of} ({fused_hz}/s, {self.agents} agents, "
              f"{boxes:.1f} boxes){alone} | maps {maps or '-'} | e2e p50 {p50} | drops "
              f"{sum(self.drops.values())}", flush=True)

    def on_shutdown(self) -> None:
        """Close the recording."""
        self._write("end", counts=dict(self.counts), maps=dict(self.maps))
        self.rec.close()
        print(f"demo: recorded {self.rec.messages} messages into {self.rec.path}", flush=True)


def main(args: list[str] | None = None) -> int:
    """Entry point: `python -m codealign_ros.demo.recorder --ros-args -p out:=DIR ...`."""
    return run_node(DemoRecorder, args, "demo_recorder")


if __name__ == "__main__":
    sys.exit(main())
