"""vehicle_node + fusion_node as processes over real DDS, fed faulty inputs by this test.

One graph per module: the ego's vehicle_node (cav_1, m1) and fusion_node, both on a model dir of
random weights. The test publishes sensor data for the ego, code maps of fake peers (good and
bad) and reads detections, latency and /diagnostics. Every fault must be counted by reason,
and the ego must still get detections afterwards.
"""
from __future__ import annotations

import array
import contextlib
import dataclasses
import hashlib
import math
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from codealign_msgs.msg import CodeMap as CodeMapMsg
from codealign_msgs.msg import Detection3DArray
from codealign_ros.config import topic
from codealign_ros.core.codemap import CodeMap, Encoding, GridPose
from codealign_ros.models.encoders.inputs import synthetic_points, synthetic_rig
from codealign_ros.config.profiles import load_profile
from codealign_ros.models.store import ModelStore
from codealign_ros.pipeline.testing import make_random_store
from codealign_ros.processes import ProcessGroup
from codealign_ros.ros.codemap_msg import codemap_to_msg, ns_to_stamp
from codealign_ros.ros.image import rgb_to_image
from codealign_ros.ros.pointcloud import xyzi_to_pointcloud2
from codealign_ros.ros.qos import qos_profile
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Float64
from visualization_msgs.msg import Marker, MarkerArray

pytestmark = pytest.mark.dds
EGO = "cav_1"
CAM = "cav_4"  # a camera agent (m4, same code space g1 as the ego)
MAX_PEERS = 8  # the earlier tests leave 4 fake peers in the table (max_delay_s 30)
FUSION = f"codealign fusion {EGO}"
VEHICLE = f"codealign vehicle {EGO}"
CAM_VEHICLE = f"codealign vehicle {CAM}"
STARTUP_S = 120.0


class Probe:
    """The test's own ROS node: publishers of faulty inputs, recorders of the outputs."""

    def __init__(self, context: Context) -> None:
        self.node = Node("fault_probe", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        n, sensor = self.node, qos_profile("sensor")
        self.cloud = n.create_publisher(PointCloud2, topic("lidar", agent=EGO), sensor)
        self.images = [n.create_publisher(Image, topic("camera_image", agent=CAM, index=i), sensor)
                       for i in range(4)]
        self.infos = [n.create_publisher(CameraInfo, topic("camera_info", agent=CAM, index=i),
                                         sensor) for i in range(4)]
        self.cam_pose = n.create_publisher(PoseStamped, topic("pose", agent=CAM),
                                           qos_profile("pose"))
        self.pose = n.create_publisher(PoseStamped, topic("pose", agent=EGO), qos_profile("pose"))
        self.maps = n.create_publisher(CodeMapMsg, topic("codemap"), qos_profile("codemap"))
        self.other = n.create_publisher(CodeMapMsg, topic("codemap"), qos_profile("codemap"))
        out = qos_profile("output")
        self.detections: list[Detection3DArray] = []
        self.markers: list[MarkerArray] = []
        self.latency: list[float] = []
        self.diag: dict[str, dict[str, str]] = {}
        self.diag_at: dict[str, float] = {}
        n.create_subscription(Detection3DArray, topic("detections"), self.detections.append, out)
        n.create_subscription(MarkerArray, topic("markers"), self.markers.append, out)
        n.create_subscription(Float64, f"/fusion_{EGO}/latency_ms",
                              lambda m: self.latency.append(m.data), out)
        n.create_subscription(DiagnosticArray, topic("diagnostics"), self._on_diag, out)
        self.points = synthetic_points(load_profile("mini"), 3000, np.random.default_rng(3))

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            self.diag[status.name] = {kv.key: kv.value for kv in status.values}
            self.diag_at[status.name] = time.monotonic()

    def spin_until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; "
                                     f"diagnostics: {self.diag}")
            self.executor.spin_once(timeout_sec=0.05)

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.02)

    def now_ns(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def count(self, status: str, key: str) -> int:
        return int(self.diag.get(status, {}).get(key, 0))

    def wait_count(self, status: str, key: str, value: int, timeout: float = 15.0) -> None:
        self.spin_until(lambda: self.count(status, key) >= value, timeout,
                        f"{status}: {key} >= {value}")
        self.spin_for(1.2)  # one more diagnostics period: the count must not overshoot
        assert self.count(status, key) == value, f"{key}: {self.diag[status]}"

    def sensors(self, stamp_ns: int, cloud: PointCloud2 | None = None,
                x: float = 0.0) -> None:
        """The ego's LiDAR cloud and pose with one stamp."""
        msg = cloud or xyzi_to_pointcloud2(self.points, f"{EGO}/lidar")
        msg.header.stamp = ns_to_stamp(stamp_ns)
        self.cloud.publish(msg)
        self.pose.publish(_pose(stamp_ns, x))

    def cameras(self, stamp_ns: int, encoding: str = "rgb8") -> None:
        """CAM's 4 images (random, 160 x 120) + camera_info + pose with one stamp."""
        k, _ = synthetic_rig(4, (160, 120))
        rng = np.random.default_rng(stamp_ns % 1000)
        for i in range(4):
            image = rgb_to_image(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8),
                                 f"{CAM}/camera{i}", ns_to_stamp(stamp_ns))
            image.encoding = encoding
            info = CameraInfo(width=160, height=120, k=k[i].reshape(-1).tolist())
            info.header = image.header
            self.images[i].publish(image)
            self.infos[i].publish(info)
        self.cam_pose.publish(_pose(stamp_ns, -10.0))

    def ego_frame(self, before: Callable[[int], None] | None = None, timeout: float = 60.0,
                  retry_s: float = 10.0, stamp: int | None = None) -> Detection3DArray:
        """Publish an ego sensor frame (after `before(stamp)`) and return its detections;
        a new frame every `retry_s` while none came back (discovery, best-effort loss)."""
        deadline, stamps = time.monotonic() + timeout, set()
        while True:
            stamp = stamp if stamp is not None and not stamps else self.now_ns()
            if before is not None:
                before(stamp)
            self.sensors(stamp)
            stamps.add(stamp)
            wait = min(retry_s, deadline - time.monotonic())
            try:
                self.spin_until(lambda: any(_stamp(d) in stamps for d in self.detections),
                                max(wait, 0.1), "detections of the ego frame")
                return next(d for d in self.detections if _stamp(d) in stamps)
            except AssertionError:
                if time.monotonic() >= deadline:
                    raise


    def fused_agents(self, **kw: Any) -> set[str]:
        """Agents fused into the next ego frame (from the fusion node's next diagnostics:
        the detections carry them too, but a frame may have no detections)."""
        det = self.ego_frame(**kw)
        arrived = time.monotonic()
        self.spin_until(lambda: self.diag_at[FUSION] > arrived, 5.0, "fresh diagnostics")
        agents = set(self.diag[FUSION]["last_agents"].split(","))
        for d in det.detections:
            assert set(d.contributing_agents) == agents
        return agents


def _pose(stamp_ns: int, x: float) -> PoseStamped:
    pose = PoseStamped()
    pose.header.stamp, pose.header.frame_id = ns_to_stamp(stamp_ns), "map"
    pose.pose.position.x, pose.pose.orientation.w = x, 1.0
    return pose


def _stamp(msg: Any) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


class Peers:
    """Valid code maps of fake peers (random indices, the store's codebook hashes)."""

    def __init__(self, store: Path) -> None:
        books = ModelStore(store)
        self.hash = {g: books.codebook(g).weights_hash() for g in ("g1", "g2")}
        self.grid = books.profile.grid
        self.rng = np.random.default_rng(11)

    def code_map(self, agent: str, stamp_ns: int, space: str = "g1", modality: str = "m1",
                 x: float = 10.0) -> CodeMap:
        g = self.grid
        return CodeMap(indices=self.rng.integers(0, 16, (g.height, g.width), dtype=np.uint8),
                       bits=4, agent_id=agent, modality=modality, code_space=space,
                       codebook_hash=self.hash[space], stamp_ns=stamp_ns,
                       frame_id=f"{agent}/lidar", resolution=g.resolution,
                       origin=(g.x_min, g.y_min, 0.0), pose=GridPose((x, 0.0, 0.0)))

    def msg(self, *args: Any, **kw: Any) -> CodeMapMsg:
        return codemap_to_msg(self.code_map(*args, **kw), Encoding.ZSTD)


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("faults")
    store = make_random_store(tmp / "mini", modalities=("m1", "m2", "m4"), score_bias=-4.0,
                              score_gain=300.0)
    key = f"{os.getpid()}:{__name__}".encode()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROS_DOMAIN_ID", str(1 + int(hashlib.sha256(key).hexdigest(), 16) % 100))
        mp.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        with ProcessGroup() as group:
            # unsigned fake peers here; signed maps: test/test_link_security.py
            common = {"agent_id": EGO, "modality": "m1", "model_dir": store, "backend": "torch",
                      "require_signed": False}
            logs = {name: open(tmp / f"{name}.log", "w")
                    for name in ("fusion", "vehicle", "camera")}
            # no modality: fusion_node learns it from the ego's first map (as launched)
            fusion_params = {k: v for k, v in common.items() if k != "modality"}
            fusion = group.start_module(
                "fusion", "codealign_ros.nodes.fusion_node",
                {**fusion_params, "max_peers": MAX_PEERS, "max_age_s": 0.5, "max_delay_s": 30.0,
                 "claim_window_s": 5.0, "comm_range_m": 70.0},
                args=["--ros-args", "-r", f"__node:=fusion_{EGO}"],
                stdout=logs["fusion"], stderr=subprocess.STDOUT)
            group.start_module("vehicle", "codealign_ros.nodes.vehicle_node", common,
                               stdout=logs["vehicle"], stderr=subprocess.STDOUT)
            group.start_module("camera", "codealign_ros.nodes.vehicle_node",
                               {**common, "agent_id": CAM, "modality": "m4"},
                               args=["--ros-args", "-r", f"__node:=vehicle_{CAM}"],
                               stdout=logs["camera"], stderr=subprocess.STDOUT)
            with probe_session(group, logs, tmp, {FUSION, VEHICLE, CAM_VEHICLE}) as probe:
                yield {"probe": probe, "peers": Peers(store), "group": group,
                       "fusion_pid": fusion.pid, "logs": tmp}


@contextlib.contextmanager
def probe_session(group: ProcessGroup, logs: dict[str, Any], tmp: Path,
                  statuses: set[str]) -> Iterator[Probe]:
    """A Probe in its own context once every node in `statuses` published diagnostics; on
    exit: shut down, close the logs, fail when a node died."""
    context = Context()
    rclpy.init(context=context)
    probe = Probe(context)
    try:
        probe.spin_until(lambda: statuses <= set(probe.diag), STARTUP_S,
                         "every node's diagnostics")
        yield probe
    finally:
        probe.node.destroy_node()
        rclpy.shutdown(context=context)
        failed = group.failed()
        for log in logs.values():
            log.close()
        assert not failed, f"nodes died: {failed}; logs in {tmp}"


@pytest.fixture
def probe(graph: dict[str, Any]) -> Probe:
    return graph["probe"]


@pytest.fixture
def peers(graph: dict[str, Any]) -> Peers:
    return graph["peers"]


def test_ego_frame_gives_detections_markers_and_latency(probe: Probe) -> None:
    det = probe.ego_frame(timeout=STARTUP_S)  # the first frame also waits for discovery
    assert det.header.frame_id == f"{EGO}/lidar" and len(det.detections) > 0
    assert all(list(d.contributing_agents) == [EGO] for d in det.detections)
    assert probe.fused_agents() == {EGO}
    probe.spin_until(lambda: probe.latency and probe.markers, 10.0, "latency and markers")
    assert 0.0 < probe.latency[-1] < 60_000.0
    markers = probe.markers[-1].markers
    assert markers[0].action == Marker.DELETEALL
    assert {m.type for m in markers[1:]} == {Marker.LINE_LIST, Marker.TEXT_VIEW_FACING}


def test_vehicle_counts_malformed_empty_clouds_and_nan_pose(probe: Probe) -> None:
    bad = PointCloud2(height=1, width=10, point_step=16, row_step=160, fields=[
        PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
        for i, n in enumerate("xyz")])
    bad.data = array.array("B", bytes(16))  # 10 points announced, one present
    probe.sensors(probe.now_ns(), bad)
    probe.spin_for(0.3)
    probe.sensors(probe.now_ns(), xyzi_to_pointcloud2(np.zeros((0, 4)), f"{EGO}/lidar"))
    probe.spin_for(0.3)
    probe.sensors(probe.now_ns(), x=math.nan)
    for reason in ("malformed_cloud", "empty_cloud", "nan_pose"):
        probe.wait_count(VEHICLE, f"drop_{reason}", 1)
    assert len(probe.ego_frame().detections) > 0


def test_fusion_counts_bad_code_maps_by_reason(probe: Probe, peers: Peers) -> None:
    now = probe.now_ns()
    good = peers.msg("cav_9", now)
    short = codemap_to_msg(peers.code_map("cav_9", now), Encoding.RAW)
    short.data = short.data[:100]  # RAW payload of the wrong length
    small = codemap_to_msg(dataclasses.replace(peers.code_map("cav_9", now),
                                               indices=np.zeros((32, 64), np.uint8)))
    wide = peers.msg("cav_9", now)
    wide.bits = 9
    two = codemap_to_msg(dataclasses.replace(peers.code_map("cav_9", now), bits=2,
                                             indices=np.zeros((64, 64), np.uint8)))
    unknown = peers.msg("cav_9", now, space="g2")
    unknown.code_space = "g3"
    foreign = peers.msg("cav_9", now)
    foreign.codebook_hash = "0" * 16
    # far beyond max_delay_s (30 s: a slow, loaded test machine must not add stale drops)
    stale, future = peers.msg("cav_9", now - 60 * 10**9), peers.msg("cav_9", now + 60 * 10**9)
    nan_pose = peers.msg("cav_9", now)
    nan_pose.pose.orientation.w = math.nan
    for msg in (short, small, wide, two, unknown, foreign, stale, future, nan_pose):
        probe.maps.publish(msg)
        probe.spin_for(0.1)
    expected = {"bad_length": 1, "bad_size": 1, "bad_bits": 2, "unknown_space": 1,
                "hash_mismatch": 1, "stale": 1, "future": 1, "nan_pose": 1}
    for reason, count in expected.items():
        probe.wait_count(FUSION, f"drop_{reason}", count)
    accepted = probe.count(FUSION, "accepted")
    probe.maps.publish(good)  # a good map is still accepted afterwards
    probe.spin_until(lambda: probe.count(FUSION, "accepted") > accepted, 10.0, "acceptance")
    assert len(probe.ego_frame().detections) > 0


def test_duplicate_agent_ids_are_dropped(probe: Probe, peers: Peers) -> None:
    probe.ego_frame()  # the ego's vehicle_node has just used (claimed) its id
    before = probe.count(FUSION, "drop_duplicate_agent")
    now = probe.now_ns()
    probe.maps.publish(peers.msg("cav_7", now))
    probe.spin_for(0.2)
    probe.other.publish(peers.msg("cav_7", now))  # another publisher claims cav_7
    probe.spin_for(0.2)
    probe.wait_count(FUSION, "drop_duplicate_agent", before + 1)
    spoofed = probe.count(FUSION, "drop_ego_broadcast")
    probe.maps.publish(peers.msg(EGO, now, x=0.0))  # someone else claims the ego's id
    probe.spin_for(0.2)
    probe.maps.publish(peers.msg(EGO, now, space="g2", modality="m2", x=0.0))
    probe.wait_count(FUSION, "drop_ego_broadcast", spoofed + 2)  # the ego's maps are local


def test_peers_contribute_then_vanish_and_ego_continues(probe: Probe, peers: Peers) -> None:
    def send(stamp: int) -> None:
        probe.maps.publish(peers.msg("cav_3", stamp, x=12.0))
        probe.maps.publish(peers.msg("cav_5", stamp, space="g2", modality="m2", x=-9.0))
        probe.spin_for(0.2)

    assert probe.fused_agents(before=send) == {EGO, "cav_3", "cav_5"}
    assert "g2" in probe.diag[FUSION]["translators"]  # cav_5 (g2) was translated here
    probe.spin_for(0.7)  # the peers fall silent: their last maps leave the 0.5 s window
    assert probe.fused_agents() == {EGO}


def test_camera_agent_contributes_and_counts_bad_images(probe: Probe) -> None:
    accepted = probe.count(FUSION, "accepted")
    stamp = probe.now_ns()
    probe.cameras(stamp)
    probe.spin_until(lambda: probe.count(CAM_VEHICLE, "published") >= 1
                     and probe.count(FUSION, "accepted") > accepted, 60.0, "the camera map")
    assert probe.fused_agents(stamp=stamp) == {EGO, CAM}
    probe.cameras(probe.now_ns(), encoding="16UC1")
    probe.wait_count(CAM_VEHICLE, "drop_malformed_camera", 1)


def test_flood_of_50_peers_is_bounded(graph: dict[str, Any], probe: Probe, peers: Peers) -> None:
    """Last: fresh flood maps hold every peer slot until they expire (by design)."""
    pid = graph["fusion_pid"]
    probe.ego_frame()
    rss_before = _rss_kb(pid)
    msgs = [peers.msg(f"flood_{i}", 0, x=float(i % 20)) for i in range(50)]
    for rnd in range(4):
        stamp = probe.now_ns()
        for msg in msgs:
            msg.header.stamp = ns_to_stamp(stamp)
            probe.maps.publish(msg)
            probe.spin_for(0.002)
    probe.spin_until(lambda: probe.count(FUSION, "drop_too_many_peers") > 0, 15.0,
                     "too_many_peers drops")
    probe.spin_for(1.2)
    diag = probe.diag[FUSION]
    assert int(diag["peers"]) <= MAX_PEERS
    assert int(diag["claims"]) <= 4 * MAX_PEERS + 16
    agents = probe.fused_agents()  # still answering, fusing at most MAX_PEERS peers
    assert EGO in agents and len(agents) <= MAX_PEERS + 1
    assert _rss_kb(pid) - rss_before < 100_000, "fusion_node memory grew by > 100 MB"

