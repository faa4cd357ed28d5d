"""demo_recorder: records what the demo graph publishes as JSON lines; prints status each second.

Subscribes the V2X code maps, the fused detections, the ego-only detections (a second fusion
node remapped by the demo runner), /diagnostics of both, the vehicles' processing times and
the fusion node's latency. Once every vehicle publishes code maps and every receiver listens
(`count_publishers` / `count_subscribers` of the code-map topic), it also subscribes the bag's
ground truth and the ego pose; the bag player waits for those two subscriptions (its
--wait-for-subscribers count includes them), so playback starts only when the graph is up.

One JSON object per line, each with `kind` and `t` (wall seconds, time.time()):
  ready       all nodes up
  pose        the ego pose of a frame arrived (stamp): the start of the end-to-end latency
  gt          ground truth of a frame (stamp, boxes in the world frame)
  codemap     agent, modality, space, bits, height, width, encoding, coded_bytes (len(data)),
              raw_bytes (length of the decoded packed stream) or error
  ego_codemap every map of the ego agent, lossless (demo.baseline.codemap_record_fields): the
              ego-only baseline is computed from these after the run
  detections  source (fused | ego_only), stamp, frame_id, boxes (K, 7), scores, agents,
              e2e_ms (ego pose arrival -> detections arrival, wall clock)
  diagnostics source (main | ego_only), name, hardware_id, level, message, values
  processing  topic, ms (a vehicle's sensor -> code map time)
  latency     ms (the fusion node's stamp -> publish latency, on its clock)
  done        both detection sources covered the first `frames` frames: the node exits, which
              ends the whole graph (the embedded launcher stops all nodes when one exits)
  timeout     timeout_s passed first: the node exits as well
  end         the node stopped

Parameters: out (file), ego, frames (frames to cover), timeout_s, codemap_publishers,
codemap_subscribers (including this node), ego_only_detections, ego_only_diagnostics,
processing_topics (string array), latency_topic.
"""
from __future__ import annotations

import collections
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_msgs.msg import Float64

from codealign_msgs.msg import CodeMap as CodeMapMsg
from codealign_msgs.msg import Detection3DArray
from codealign_ros.config import topic
from codealign_ros.core.codemap import CodeMapError, Encoding, decompress, packed_size
from codealign_ros.demo.baseline import codemap_record_fields
from codealign_ros.ros.codemap_msg import msg_to_codemap, stamp_to_ns
from codealign_ros.ros.qos import qos_profile
from codealign_ros.ros.runner import run_node

DEFAULTS = {"out": "out/demo/record.jsonl", "ego": "cav_1", "frames": 0, "timeout_s": 600.0,
            "codemap_publishers": 1, "codemap_subscribers": 2,
            "ego_only_detections": "", "ego_only_diagnostics": "", "latency_topic": ""}
READY_POLL_S = 0.2
STATUS_PERIOD_S = 1.0
CODEMAP_DEPTH = 50  # every agent's maps of a few frames: the recorder must not lose them


def detection_arrays(msg: Detection3DArray) -> tuple[list[list[float]], list[float], list[str]]:
    """(boxes [[x, y, z, l, w, h, yaw]], scores, contributing agents) of a Detection3DArray."""
    boxes = [[round(v, 4) for v in (d.center.x, d.center.y, d.center.z, d.size.x, d.size.y,
                                    d.size.z, d.yaw)] for d in msg.detections]
    scores = [round(float(d.score), 4) for d in msg.detections]
    agents = list(msg.detections[0].contributing_agents) if msg.detections else []
    return boxes, scores, agents


def codemap_record(msg: CodeMapMsg) -> dict[str, Any]:
    """Sizes of one received code map: coded (on the wire) and raw (decoded packed stream)."""
    rec = {"agent": msg.agent_id, "modality": msg.modality, "space": msg.code_space,
           "stamp": stamp_to_ns(msg.header.stamp), "bits": int(msg.bits),
           "height": int(msg.height), "width": int(msg.width), "coded_bytes": len(msg.data)}
    try:
        encoding = Encoding(int(msg.encoding))
        rec["encoding"] = encoding.name.lower()
        expected = packed_size(int(msg.height), int(msg.width), int(msg.bits))
        rec["raw_bytes"] = len(decompress(bytes(msg.data), encoding, expected))
    except (CodeMapError, ValueError) as exc:
        rec["error"] = str(exc)
    return rec


class DemoRecorder(Node):
    """Writes the demo graph's outputs to a JSON-lines file."""

    def __init__(self) -> None:
        super().__init__("demo_recorder")
        self.p = {k: self.declare_parameter(k, v).value for k, v in DEFAULTS.items()}
        processing = self.declare_parameter("processing_topics",
                                            Parameter.Type.STRING_ARRAY).value or []
        path = Path(self.p["out"])
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file: TextIO = open(path, "w", encoding="utf-8", buffering=1)
        self.started = time.monotonic()
        self.ready_at: float | None = None
        self.pose_t: dict[int, float] = {}
        self.counts: collections.Counter = collections.Counter()
        self.maps: collections.Counter = collections.Counter()
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
    def _subscribe(self, processing: list[str]) -> None:
        out, p = qos_profile("output"), self.p
        maps = qos_profile("codemap")
        maps.depth = max(maps.depth, CODEMAP_DEPTH)
        self.create_subscription(CodeMapMsg, topic("codemap"), self._on_codemap, maps)
        self.create_subscription(Detection3DArray, topic("detections"),
                                 lambda m: self._on_detections(m, "fused"), out)
        self.create_subscription(DiagnosticArray, topic("diagnostics"),
                                 lambda m: self._on_diagnostics(m, "main"), out)
        if p["ego_only_detections"]:
            self.create_subscription(Detection3DArray, p["ego_only_detections"],
                                     lambda m: self._on_detections(m, "ego_only"), out)
        if p["ego_only_diagnostics"]:
            self.create_subscription(DiagnosticArray, p["ego_only_diagnostics"],
                                     lambda m: self._on_diagnostics(m, "ego_only"), out)
        for name in processing:
            self.create_subscription(Float64, name, lambda m, n=name: self._write(
                "processing", topic=n, ms=round(m.data, 3)), out)
        if p["latency_topic"]:
            self.create_subscription(Float64, p["latency_topic"],
                                     lambda m: self._write("latency", ms=round(m.data, 3)), out)

    def _check_ready(self) -> None:
        """Subscribe the bag's topics once every vehicle sends and every receiver listens."""
        name = topic("codemap")
        pubs, subs = self.count_publishers(name), self.count_subscribers(name)
        self.waiting = (pubs, subs)
        if pubs < int(self.p["codemap_publishers"]) or subs < int(self.p["codemap_subscribers"]):
            return
        self.ready_timer.cancel()
        self.ready_at = time.monotonic()
        self.create_subscription(Detection3DArray, topic("gt_objects"), self._on_gt,
                                 qos_profile("output"))
        self.create_subscription(PoseStamped, topic("pose", agent=self.p["ego"]), self._on_pose,
                                 qos_profile("pose"))
        self._write("ready", after_s=round(self.ready_at - self.started, 2))
        print(f"demo: all nodes up after {self.ready_at - self.started:.1f} s "
              f"({pubs} senders, {subs - 1} receivers); the bag player starts", flush=True)

    # -- callbacks ---------------------------------------------------------------------------
    def _write(self, kind: str, **fields: Any) -> None:
        if not self.file.closed:
            self.file.write(json.dumps({"kind": kind, "t": round(time.time(), 4), **fields})
                            + "\n")

    def _on_pose(self, msg: PoseStamped) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        self.pose_t.setdefault(stamp, time.time())
        self._write("pose", stamp=stamp)

    def _on_gt(self, msg: Detection3DArray) -> None:
        boxes, _, _ = detection_arrays(msg)
        self.counts["frames"] += 1
        self.gt_stamps.append(stamp_to_ns(msg.header.stamp))
        self._write("gt", stamp=self.gt_stamps[-1], frame_id=msg.header.frame_id, boxes=boxes)
        self._check_done()

    def _on_codemap(self, msg: CodeMapMsg) -> None:
        rec = codemap_record(msg)
        self.maps[rec["agent"]] += 1
        self._write("codemap", **rec)
        if msg.agent_id == self.p["ego"]:
            self._write_ego_map(msg)

    def _write_ego_map(self, msg: CodeMapMsg) -> None:
        try:
            fields = codemap_record_fields(msg_to_codemap(msg))
        except CodeMapError:
            return  # counted in the codemap record's error
        self._write("ego_codemap", **fields)

    def _on_detections(self, msg: Detection3DArray, source: str) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        boxes, scores, agents = detection_arrays(msg)
        start = self.pose_t.get(stamp)
        e2e = None if start is None else round((time.time() - start) * 1e3, 2)
        self.counts[source] += 1
        if source == "fused":
            self.boxes.append(len(boxes))
            if e2e is not None:
                self.e2e.append(e2e)
            self.agents = len(agents)
        self._write("detections", source=source, stamp=stamp, frame_id=msg.header.frame_id,
                    boxes=boxes, scores=scores, agents=agents, e2e_ms=e2e)
        self.covered[source].add(stamp)
        self._check_done()

    def _check_done(self) -> None:
        wanted = int(self.p["frames"])
        if wanted <= 0 or len(self.gt_stamps) < wanted:
            return
        first = set(self.gt_stamps[:wanted])
        if all(first <= seen for seen in self.covered.values()):
            self._finish("done", f"demo: detections of all {wanted} frames arrived")

    def _on_timeout(self) -> None:
        self._finish("timeout", f"demo: timed out after {self.p['timeout_s']} s")

    def _finish(self, kind: str, text: str) -> None:
        """Record why, then shut down: the launcher then stops the whole graph."""
        self.timeout.cancel()
        self._write(kind, elapsed_s=round(time.monotonic() - self.started, 2))
        print(text, flush=True)
        self.context.try_shutdown()

    def _on_diagnostics(self, msg: DiagnosticArray, source: str) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            level = status.level if isinstance(status.level, int) else ord(status.level)
            self._write("diagnostics", source=source, name=status.name,
                        hardware_id=status.hardware_id, level=level, message=status.message,
                        values=values)
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
        """Close the record."""
        self._write("end", counts=dict(self.counts), maps=dict(self.maps))
        self.file.close()


def main(args: list[str] | None = None) -> int:
    """Entry point: `python -m codealign_ros.demo.recorder --ros-args -p out:=FILE ...`."""
    return run_node(DemoRecorder, args)


if __name__ == "__main__":
    sys.exit(main())
