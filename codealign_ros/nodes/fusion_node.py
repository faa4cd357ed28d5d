"""fusion_node: the ego's receiver. CodeMaps in, fused 3D detections out (no sensors here).

Subscribes the V2X code-map topic for peers and the ego's local topic (topics.yaml
codemap_local) for its own maps. The callbacks only hand each map to a latest-wins slot per
(agent, code space, channel) (pipeline.transport: pending maps replaced are counted
`superseded`, ego frames replaced while fusing `busy`, the RMW's message-lost events `lost`).
A worker thread then runs every map through the link checks of codealign_ros.pipeline.link
(field bounds, the ego's id only on the local topic, signature, key pinned to the agent id,
replay) before anything is decoded; then it is decoded and offered to a `ReceiverPipeline`
(drops counted by reason, see codealign_ros.pipeline.receiver and README "Drop reasons"); each
accepted map of the ego agent (its own vehicle_node's output, in the ego space) triggers one
fusion of the peers' newest maps. Publishes, stamped with the ego sensor stamp in the ego grid
frame:
codealign_msgs/Detection3DArray (+ vision_msgs/Detection3DArray on `<detections>_vision` when
vision_msgs is importable), a MarkerArray (DELETEALL, then LINE_LIST boxes + scores),
`~/latency_ms` (ego sensor stamp -> publish, std_msgs/Float64) and a /diagnostics status each
second on a steady clock (agents fused, drops and skips by reason, timings, and the ledger
`ledger_offered` = `ledger_fused` + `ledger_dropped` + `ledger_held`).

Parameters (defaults: config/fusion_node.param.yaml, schema/fusion_node.schema.json):
agent_id (ego), modality ("" = learn it from the ego's first code map), model_dir,
profile ("" = model_dir's name), backend, cache_dir, max_age_s (peer vs ego stamp),
max_delay_s (stamp -> arrival), future_tolerance_s,
comm_range_m (< 0: groups.yaml data.comm_range), max_peers, claim_window_s, class_name,
threads (0 = backend default), require_signed (codemap.yaml security), trust_store
(directory of trusted <agent>.pub keys; "" = codemap.yaml security.key_dir).
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.serialization import deserialize_message, serialize_message
from std_msgs.msg import Float64, Header
from visualization_msgs.msg import MarkerArray

from codealign_msgs.msg import CodeMap as CodeMapMsg
from codealign_msgs.msg import Detection3DArray
from codealign_ros.config import ConfigError, frame, topic
from codealign_ros.core.codemap import CodeMap, CodeMapError, Encoding, GridPose
from codealign_ros.core.signing import warm_verifier
from codealign_ros.core.stats import DropCounter
from codealign_ros.pipeline import (PipelineError, ReceiverConfig, ReceiverPipeline,
                                    ReceiverResult, drop_reason)
from codealign_ros.ros.diagnostics import RateLimitedLog, diagnostic_status
from codealign_ros.pipeline.transport import LatestWins, Worker, ledger
from codealign_ros.ros import markers
from codealign_ros.ros.codemap_msg import codemap_to_msg, msg_to_codemap, ns_to_stamp
from codealign_ros.ros.qos import qos_profile
from codealign_ros.ros.transport import (CpuMeter, LostCounter, steady_timer,
                                         subscribe_counting_lost)
from codealign_ros.ros.params import declare_from_file
from codealign_ros.ros.runner import run_node
from codealign_ros.pipeline.link import ECHO
from codealign_ros.nodes.link_setup import make_link_checker
from codealign_ros.ros.signing_msg import wire_fields
from codealign_ros.core.wire import printable

try:
    from vision_msgs.msg import Detection3DArray as VisionDetection3DArray
except ImportError:
    VisionDetection3DArray = None

NODE = "fusion_node"  # its parameters: config/fusion_node.param.yaml (+ schema/)
MARKER_COLOR = (1.0, 0.45, 0.0)
EGO_SILENT_S = 2.0  # diagnostics warn when the ego's own map has not arrived for this long


def vision_topic() -> str:
    """Topic of the vision_msgs copy of the detections (topics.yaml `detections_vision`,
    else `<detections>_vision`)."""
    try:
        return topic("detections_vision")
    except ConfigError:
        return topic("detections") + "_vision"


def publisher_id(info: Any) -> str | None:
    """Hex GID of the publisher of a message (None when the RMW does not report it)."""
    gid = (info or {}).get("publisher_gid") if isinstance(info, dict) else None
    data = gid.get("data") if isinstance(gid, dict) else None
    return bytes(data).hex() if data else None


class FusionNode(Node):
    """Code maps of the ego and its peers -> fused detections in the ego frame."""

    def __init__(self) -> None:
        super().__init__("fusion_node")
        self.p = declare_from_file(self, NODE)
        self.ego = self.p["agent_id"]
        self.frame_id = frame("grid", agent=self.ego)
        self.link = self._link_checker()
        self.pipeline: ReceiverPipeline | None = None
        self.early = DropCounter()  # drops before the pipeline exists
        self.unusable: set[str] = set()  # ego modalities the model dir cannot serve
        self.log = RateLimitedLog(self.get_logger())
        self.last_ego_s: float | None = None
        self.latency_ms = float("nan")
        self.last_result: ReceiverResult | None = None
        if self.p["modality"]:
            self._build(self.p["modality"])
        out = qos_profile("output")
        self.det_pub = self.create_publisher(Detection3DArray, topic("detections"), out)
        self.vision_pub = (self.create_publisher(VisionDetection3DArray, vision_topic(), out)
                           if VisionDetection3DArray is not None else None)
        self.marker_pub = self.create_publisher(MarkerArray, topic("markers"), out)
        self.latency_pub = self.create_publisher(Float64, "~/latency_ms", out)
        self.diag_pub = self.create_publisher(DiagnosticArray, topic("diagnostics"), out)
        self.mailbox: LatestWins[tuple[CodeMapMsg, Any, int, bool]] = LatestWins()
        self.lock = threading.Lock()  # the worker's pipeline vs the diagnostics timer
        self.lost = LostCounter()
        self.worker = Worker(self.mailbox, self._process, self.lock, "fusion-worker")
        subscribe_counting_lost(self, CodeMapMsg, topic("codemap"), self._on_codemap,
                                self._qos(), self.lost)
        self.create_subscription(CodeMapMsg, topic("codemap_local", agent=self.ego),
                                 self._on_local_codemap, qos_profile("codemap"))
        self.cpu = CpuMeter()
        steady_timer(self, 1.0, self._diagnostics)

    def _link_checker(self) -> Any:
        """Field, channel and signature checks (exits with one clear line without keys)."""
        return make_link_checker(self.ego, bool(self.p["require_signed"]),
                                 self.p["trust_store"])

    def _on_local_codemap(self, msg: CodeMapMsg, info: Any) -> None:
        self._on_codemap(msg, info, local=True)

    def _qos(self) -> QoSProfile:
        """The V2X QoS, with reader history for one map of every allowed peer and the ego."""
        qos = qos_profile("codemap")
        qos.depth = max(qos.depth, 2 * (int(self.p["max_peers"]) + 1))
        return qos

    def _build(self, modality: str) -> None:
        self.pipeline = ReceiverPipeline(ReceiverConfig.from_params(self.p, modality),
                                         logging.getLogger("codealign.pipeline"))
        self.pipeline.drops.update(self.early)
        self._dry_run()
        self.get_logger().info(f"ego {self.ego} ({modality}, space {self.pipeline.ego_group}) "
                               f"on {self.pipeline.backend_name}; translating "
                               f"{sorted(self.pipeline.translators) or 'nothing'}")

    def _dry_run(self) -> None:
        """An empty ego-space map through CDR, decoding and a signature check (a throwaway
        key), nothing counted: the first real maps then pay no lazy import (zstd) or first
        use of the verifier (the pipeline warmed its stages)."""
        assert self.pipeline is not None
        grid, space = self.pipeline.grid, self.pipeline.ego_group
        code_map = self.pipeline.spaces[space].code_map(
            space, np.zeros((grid.height, grid.width), np.uint8), grid, self.ego,
            self.pipeline.ego_modality, 1, GridPose())
        msg = deserialize_message(serialize_message(codemap_to_msg(code_map, Encoding.ZSTD)),
                                  CodeMapMsg)
        msg_to_codemap(msg).validate()
        warm_verifier()

    # -- input ---------------------------------------------------------------------------------
    def _on_codemap(self, msg: CodeMapMsg, info: Any, local: bool = False) -> None:
        """Executor thread: stamp the arrival, keep only the newest map per slot."""
        now = self.get_clock().now().nanoseconds
        ego = msg.agent_id == self.ego and (self.pipeline is None
                                            or msg.code_space == self.pipeline.ego_group)
        if self.mailbox.put((msg.agent_id, msg.code_space, local), (msg, info, now, local),
                            ego):
            self.log.warning("superseded", "a newer code map replaced a pending one "
                             "(busy receiver); counted")

    def _process(self, item: tuple[CodeMapMsg, Any, int, bool]) -> None:
        """Worker thread (holding self.lock): one map through the link checks and the
        pipeline (and a fusion for the ego's)."""
        self._handle(*item)

    def on_shutdown(self) -> None:
        """Stop the worker before the node is destroyed (called by run_node)."""
        self.worker.stop()

    def _handle(self, msg: CodeMapMsg, info: Any, now: int, local: bool) -> None:
        link, ticket = self.link.check(wire_fields(msg), bytes(msg.signature), local,
                                       publisher_id(info))
        if link == ECHO:  # our own vehicle's broadcast copy of a map taken locally
            return
        if link:  # nothing of it is decoded
            self._drop(link, printable(msg.agent_id), ValueError(f"link check: {link}"))
            return
        early = self.pipeline and self.pipeline.space_reason(msg.code_space, msg.codebook_hash,
                                                             msg.agent_id)
        if early:  # unusable code space: not even decompressed
            self._drop(early, msg.agent_id, ValueError(f"code space {msg.code_space!r}"))
            return
        try:
            code_map = msg_to_codemap(msg)
        except CodeMapError as exc:
            self._drop(drop_reason(exc), msg.agent_id, exc)
            return
        if self.pipeline is None and not self._learn_modality(code_map):
            return
        assert self.pipeline is not None
        try:
            reason, result = self.pipeline.handle(code_map, now, publisher_id(info))
        except PipelineError as exc:
            reason, result = exc.reason, None
            self.pipeline.drops.drop(reason)
        except Exception as exc:  # noqa: BLE001 - a node must survive any one bad map
            self._drop("internal_error", code_map.agent_id, exc)
            return
        if reason is not None:
            self.log.warning(reason, f"dropped code map of {code_map.agent_id!r}: {reason}")
        if reason is None:
            self.link.commit(ticket)
        if result is not None:
            self._publish(code_map, result)

    def _learn_modality(self, code_map: CodeMap) -> bool:
        """Build the pipeline from the ego's first map when no modality was configured."""
        if code_map.agent_id != self.ego or code_map.modality in self.unusable:
            self.early.drop("no_ego_yet" if code_map.agent_id != self.ego else "ego_unusable")
            return False
        try:
            self._build(code_map.modality)
        except (ValueError, KeyError, OSError) as exc:  # PipelineError, ConfigError, store
            self.unusable.add(code_map.modality)
            self._drop("ego_unusable", code_map.agent_id, exc)
            return False
        return True

    def _drop(self, reason: str, agent: str, exc: Exception) -> None:
        if self.pipeline is not None:
            self.pipeline.count_drop(reason)
        else:
            self.early.drop(reason)
        self.log.warning(reason, f"dropped code map of {agent!r} ({reason}): {exc}")

    # -- output --------------------------------------------------------------------------------
    def _publish(self, ego_map: CodeMap, result: ReceiverResult) -> None:
        if not self.context.ok():  # shut down while this frame was fused
            return
        header = Header(stamp=ns_to_stamp(ego_map.stamp_ns), frame_id=self.frame_id)
        name = str(self.p["class_name"])
        self.det_pub.publish(markers.boxes_to_detections(result.boxes, result.scores, name,
                                                         result.agents, header))
        if self.vision_pub is not None:
            self.vision_pub.publish(markers.vision_detections(result.boxes, result.scores, name,
                                                              header))
        self.marker_pub.publish(markers.boxes_to_marker_array(
            result.boxes, self.frame_id, ego_map.stamp_ns, "detections", MARKER_COLOR,
            scores=result.scores))
        self.latency_ms = (self.get_clock().now().nanoseconds - ego_map.stamp_ns) / 1e6
        self.latency_pub.publish(Float64(data=self.latency_ms))
        self.last_ego_s, self.last_result = time.monotonic(), result

    def transport_ledger(self) -> dict[str, Any]:
        """offered = fused + dropped (by reason, incl. superseded / busy / lost) + held."""
        stats = self.pipeline.stats() if self.pipeline else {"drops": dict(self.early)}
        received, pending, transport = self.mailbox.snapshot()
        transport["echo"] = int(self.link.echoes)  # the V2X copy of a map taken locally
        return ledger(received, self.lost.total, transport, stats,
                      pending + self.worker.in_hand)

    def _diagnostics(self) -> None:
        with self.lock:
            self._publish_diagnostics()

    def _publish_diagnostics(self) -> None:
        stats = self.pipeline.stats() if self.pipeline else {"drops": dict(self.early)}
        book = self.transport_ledger()
        result = self.last_result
        values = {k: v for k, v in stats.items() if k not in ("drops", "skipped", "last_agents")}
        values.update({"agents_fused": len(stats.get("last_agents", [])),
                       "last_agents": ",".join(stats.get("last_agents", [])),
                       "latency_ms": f"{self.latency_ms:.1f}", "ego_echo": self.link.echoes,
                       "boxes": 0 if result is None else len(result.boxes),
                       **{f"drop_{k}": v for k, v in book["drops"].items()},
                       **{f"ledger_{k}": book[k] for k in ("offered", "fused", "dropped",
                                                            "held")},
                       "message_lost_supported": self.lost.supported,
                       "cpu_percent": f"{self.cpu.percent():.1f}",
                       **{f"skipped_{k}": v for k, v in sorted(stats.get("skipped", {}).items())},
                       **({} if result is None else
                          {k: f"{v:.2f}" for k, v in result.timings.items()})})
        silent = self.last_ego_s is None or time.monotonic() - self.last_ego_s > EGO_SILENT_S
        problem = f"no fused ego frame for {EGO_SILENT_S:.0f} s" if silent else ""
        status = diagnostic_status(f"codealign fusion {self.ego}", self.ego, values, problem)
        header = Header(stamp=self.get_clock().now().to_msg())
        self.diag_pub.publish(DiagnosticArray(header=header, status=[status]))


def main(args: list[str] | None = None) -> int:
    """Entry point: `fusion_node --ros-args -p agent_id:=cav_1 -p model_dir:=models/mini`."""
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    return run_node(FusionNode, args, NODE)


if __name__ == "__main__":
    sys.exit(main())
