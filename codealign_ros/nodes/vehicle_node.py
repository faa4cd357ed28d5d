"""vehicle_node: one agent's sensors -> CodeMaps on the V2X topic (one per code space).

Subscribes (topics.yaml, {agent} = agent_id) the LiDAR cloud or the modality's cameras (image +
camera_info each) and the pose, synchronised by `ros.sync.make_synchronizer`; runs a
`VehiclePipeline`; publishes each code space's map with header.stamp = sensor stamp and pose =
the synced LiDAR -> world pose, signed (ECDSA P-256), on the V2X topic and on the agent's
local topic (topics.yaml codemap_local: its own receiver takes the ego's maps only there).
Debug: `~/processing_time_ms` (std_msgs/Float64, sync callback to publish) and a /diagnostics
status each second with frame, publish and drop counts.
Latest wins: the synchroniser hands each matched frame to a worker thread through one
pipeline.transport.LatestWins slot, so the node always encodes the newest frame; a matched
frame replaced before the worker took it (the node was busy) is counted as drop `busy`.

Parameters (defaults: config/vehicle_node.param.yaml, schema/vehicle_node.schema.json):
agent_id, modality, model_dir, profile ("" = model_dir's name), backend (auto, onnxruntime,
tensorrt, torch), translate_to (string array of target spaces: sender-side D2C), encoding
(raw|zlib|zstd), cache_dir ("" = <model_dir>/onnx), slop_s, queue_size, threads (0 = backend
default), require_signed (sign every map; codemap.yaml security), signing_key ("" =
<key_dir>/<agent_id>.key, made by `codealign keys generate`), camera_extrinsics (16 doubles per
camera, LiDAR -> camera row-major, OpenCV axes; empty = camera_calibration, a calibration YAML,
default config/mini_vehicle.calibration.yaml; intrinsics: camera_info), publish_tf (default
false: a bag replay carries TF; true broadcasts map -> <agent>/lidar from the pose topic and the
static <agent>/lidar -> <agent>/camera<i>, `ros.tf.PoseTfRelay`).
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Float64, Header

from codealign_msgs.msg import CodeMap as CodeMapMsg
from codealign_ros.config import sensor_topics, topic
from codealign_ros.core.codemap import CodeMapError, GridPose
from codealign_ros.core.stats import DropCounter
from codealign_ros.data.types import CameraFrame
from codealign_ros.pipeline import PipelineError, VehicleConfig, VehiclePipeline
from codealign_ros.pipeline.vehicle import VehicleResult
from codealign_ros.pipeline.transport import LatestWins, Worker
from codealign_ros.ros.codemap_msg import codemap_to_msg, encoding_param
from codealign_ros.ros.diagnostics import RateLimitedLog, diagnostic_status
from codealign_ros.ros.errors import MalformedMessageError
from codealign_ros.ros.image import image_to_rgb
from codealign_ros.ros.pointcloud import pointcloud2_to_xyzi
from codealign_ros.ros.qos import qos_profile
from codealign_ros.ros.params import declare_from_file
from codealign_ros.ros.runner import run_node
from codealign_ros.nodes.link_setup import load_signer
from codealign_ros.ros.signing_msg import sign_msg
from codealign_ros.ros.transport import CpuMeter, steady_timer
from codealign_ros.ros.sync import header_stamp_ns, make_synchronizer

NODE = "vehicle_node"  # its parameters: config/vehicle_node.param.yaml (+ schema/)


def grid_pose(msg: PoseStamped) -> GridPose:
    """GridPose of a PoseStamped (validated: CodeMapError("pose") when NaN / not unit)."""
    p, q = msg.pose.position, msg.pose.orientation
    pose = GridPose((p.x, p.y, p.z), (q.x, q.y, q.z, q.w))
    pose.validate()
    return pose


def calibration_extrinsics(path: str) -> list[np.ndarray]:
    """LiDAR -> camera transforms of a calibration YAML (`cameras: [{lidar_to_camera: 16
    doubles}]`, config/mini_vehicle.calibration.yaml); a relative path the working directory
    lacks is read from the config directory. ValueError naming the file when unusable."""
    import yaml

    from codealign_ros.config import config_dir

    file = Path(path)
    if not file.is_absolute() and not file.exists():
        file = config_dir() / file
    try:
        cams = yaml.safe_load(file.read_text())["cameras"]
        return [np.asarray(c["lidar_to_camera"], np.float64).reshape(4, 4) for c in cams]
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"camera_calibration {file}: not a calibration YAML "
                         f"(cameras: [{{lidar_to_camera: 16 doubles}}]): {exc}") from None


class VehicleNode(Node):
    """Sensors of one agent -> its CodeMaps."""

    def __init__(self) -> None:
        super().__init__("vehicle_node")
        p = declare_from_file(self, NODE)
        self.agent = p["agent_id"]
        self.signer = load_signer(self.agent, p["signing_key"], bool(p["require_signed"]))
        self.encoding = encoding_param(p["encoding"])
        self.pipeline = VehiclePipeline(VehicleConfig.from_params(p),
                                        logging.getLogger("codealign.pipeline"))
        self._dry_run()
        self.get_logger().info(f"{self.agent}: {p['modality']} -> spaces "
                               f"{list(self.pipeline.spaces)} on {self.pipeline.backend_name}")
        self.drops, self.counts = DropCounter(), {"frames": 0, "published": 0}
        self.timings: dict[str, float] = {}
        self.log = RateLimitedLog(self.get_logger())
        self.publisher = self.create_publisher(CodeMapMsg, topic("codemap"),
                                               qos_profile("codemap"))
        self.local_publisher = self.create_publisher(
            CodeMapMsg, topic("codemap_local", agent=self.agent), qos_profile("codemap"))
        self.time_pub = self.create_publisher(Float64, "~/processing_time_ms",
                                              qos_profile("output"))
        self.diag_pub = self.create_publisher(DiagnosticArray, topic("diagnostics"),
                                              qos_profile("output"))
        self.extrinsics = self._extrinsics(p["camera_extrinsics"], p["camera_calibration"])
        self.lock = threading.Lock()  # the worker's frame vs the diagnostics timer
        self.frames_box: LatestWins[tuple[Any, ...]] = LatestWins()
        self.worker = Worker(self.frames_box, lambda msgs: self._on_sensors(*msgs), self.lock,
                             "vehicle-worker")
        self.sync = make_synchronizer(self, self._specs(), self._offer_frame,
                                      queue_size=int(p["queue_size"]), slop=float(p["slop_s"]))
        self.cpu = CpuMeter()
        steady_timer(self, 1.0, self._diagnostics)
        if p["publish_tf"]:
            from codealign_ros.ros.tf import PoseTfRelay

            self.tf_relay = PoseTfRelay(self, self.agent, self.extrinsics)

    def _dry_run(self) -> None:
        """Empty code maps of every space through encoding, signing and CDR, nothing
        published (the pipeline warmed its backend): the first real frame then pays no lazy
        import (zstd), first signature or first message conversion."""
        grid = self.pipeline.grid
        empty = np.zeros((grid.height, grid.width), np.uint8)
        result = VehicleResult({s: (empty, info.codebook_hash)
                                for s, info in self.pipeline.spaces.items()}, {})
        for code_map in self.pipeline.code_maps(result, 1, GridPose()):
            serialize_message(self._signed(codemap_to_msg(code_map, self.encoding)))

    def _signed(self, msg: CodeMapMsg) -> CodeMapMsg:
        return msg if self.signer is None else sign_msg(msg, self.signer)

    def _extrinsics(self, flat: list[float], calibration: str) -> list[np.ndarray]:
        """camera_extrinsics when given, else the camera_calibration YAML (intrinsics come
        with each frame's camera_info)."""
        cams = int(self.pipeline.num_cameras or 0)
        if not flat:
            if not cams:
                return []
            rig = calibration_extrinsics(calibration)
            if len(rig) < cams:
                raise ValueError(f"camera_calibration {calibration}: {len(rig)} cameras, the "
                                 f"modality has {cams}")
            return rig[:cams]
        if len(flat) != 16 * cams:
            raise ValueError(f"camera_extrinsics needs 16 values per camera ({16 * cams}), "
                             f"got {len(flat)}")
        return [np.asarray(flat[16 * i:16 * i + 16], np.float64).reshape(4, 4)
                for i in range(cams)]

    def _specs(self) -> list[tuple[type, str, Any]]:
        classes = {"lidar": PointCloud2, "camera_image": Image, "camera_info": CameraInfo,
                   "pose": PoseStamped}
        return [(classes[key], name, qos_profile("pose" if key == "pose" else "sensor"))
                for key, name in sensor_topics(self.agent, int(self.pipeline.num_cameras or 0))]

    # -- processing --------------------------------------------------------------------------
    def _offer_frame(self, *msgs: Any) -> None:
        """Executor thread: keep only the newest matched frame for the worker (a replaced
        pending frame is counted `busy`)."""
        self.frames_box.put("frame", msgs, ego=True)

    def on_shutdown(self) -> None:
        """Stop the worker before the node is destroyed (called by run_node)."""
        self.worker.stop()

    def _on_sensors(self, *msgs: Any) -> None:
        start = time.perf_counter()
        self.counts["frames"] += 1
        try:
            pose = grid_pose(msgs[-1])
            result = self._run(msgs[:-1])
            maps = self.pipeline.code_maps(result, header_stamp_ns(msgs[0]), pose)
            out = [self._signed(codemap_to_msg(m, self.encoding)) for m in maps]
        except CodeMapError as exc:
            self._drop("nan_pose" if exc.reason == "pose" else "bad_codemap", exc)
            return
        except MalformedMessageError as exc:
            self._drop(f"malformed_{'cloud' if len(msgs) == 2 else 'camera'}", exc)
            return
        except PipelineError as exc:
            self._drop(exc.reason, exc)
            return
        except Exception as exc:  # noqa: BLE001 - a node must survive any one bad frame
            self._drop("internal_error", exc)
            return
        if not self.context.ok():  # shut down (SIGTERM) while this frame was processed
            return
        for msg in out:
            self.local_publisher.publish(msg)  # first: the own receiver's copy
            self.publisher.publish(msg)
        self.counts["published"] += len(out)
        self.timings = dict(result.timings, total_ms=(time.perf_counter() - start) * 1e3)
        self.time_pub.publish(Float64(data=self.timings["total_ms"]))

    def _run(self, sensors: tuple[Any, ...]) -> Any:
        if not self.pipeline.num_cameras:
            return self.pipeline.process_lidar(pointcloud2_to_xyzi(sensors[0], skip_nans=False))
        n = len(sensors) // 2
        cams = [CameraFrame(image_to_rgb(img), np.asarray(info.k, np.float64).reshape(3, 3),
                            ext) for img, info, ext in zip(sensors[:n], sensors[n:],
                                                           self.extrinsics)]
        return self.pipeline.process_cameras(cams)

    def _drop(self, reason: str, exc: Exception) -> None:
        self.drops.drop(reason)
        self.log.warning(reason, f"dropped a sensor frame ({reason}): {exc}")

    def _diagnostics(self) -> None:
        with self.lock:
            self._publish_diagnostics()

    def _publish_diagnostics(self) -> None:
        drops = self.drops + DropCounter(self.frames_box.snapshot()[2])
        values = {**self.counts, "backend": self.pipeline.backend_name,
                  "spaces": ",".join(self.pipeline.spaces),
                  "nonfinite_points": self.pipeline.nonfinite_points,
                  "cpu_percent": f"{self.cpu.percent():.1f}",
                  **{f"drop_{k}": v for k, v in sorted(drops.items())},
                  **{k: f"{v:.2f}" for k, v in self.timings.items()},
                  **{f"sync_{k}": v for k, v in self.sync.stats().items()
                     if k in ("matched", "queued", "dropped")}}
        problem = f"{sum(drops.values())} frames dropped" if drops else ""
        status = diagnostic_status(f"codealign vehicle {self.agent}", self.agent, values, problem)
        header = Header(stamp=self.get_clock().now().to_msg())
        self.diag_pub.publish(DiagnosticArray(header=header, status=[status]))


def main(args: list[str] | None = None) -> int:
    """Entry point: `vehicle_node --ros-args -p agent_id:=cav_1 -p modality:=m1`."""
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    return run_node(VehicleNode, args, NODE)


if __name__ == "__main__":
    sys.exit(main())
