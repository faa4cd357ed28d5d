"""ROS-free vehicle side: sensor data -> code maps of the own (and translated) code spaces.

Input policy (each refusal is a `PipelineError` whose `reason` the node counts as a drop):
  bad_points   points are not an (N, 4) numeric array
  empty_cloud  the cloud has no points at all: a LiDAR always sees the ground, so zero points
               is a sensor or driver fault, and an all-"nothing" map would tell peers that the
               area is free. No map is sent.
  nan_points   every point has a NaN/inf coordinate. Some non-finite points (the no-return
               cells of organised clouds) are removed and counted in `nonfinite_points`.
  bad_cameras  wrong camera count or malformed images / calibration
A cloud whose finite points all lie outside the profile range is processed: the map then says
"nothing within range", which is what the sensor reported.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from codealign_ros.config import ConfigError
from codealign_ros.core.codemap import CodeMap, GridPose
from codealign_ros.data.types import AgentFrame, CameraFrame
from codealign_ros.models.inputs import (collate_arrays, encoder_inputs, synthetic_points,
                                         synthetic_rig)
from codealign_ros.models.voxelize import finite_rows
from codealign_ros.config.groups import group_of
from codealign_ros.config.modalities import modality_spec
from codealign_ros.pipeline.configs import VehicleConfig
from codealign_ros.pipeline.deploy import SpaceInfo, StageRequest
from codealign_ros.pipeline.sources import open_source
from codealign_ros.pipeline.stages import PipelineError, space_output

__all__ = ["SpaceInfo", "VehiclePipeline", "VehicleResult"]


@dataclass
class VehicleResult:
    """maps: space -> (indices uint8 (H, W), codebook_hash), own space first; timings in ms."""

    maps: dict[str, tuple[np.ndarray, str]]
    timings: dict[str, float]


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


class VehiclePipeline:
    """Frozen encoder -> adapter -> nearest code (+ UCT into `translate_to`) of one agent."""

    def __init__(self, config: VehicleConfig, logger: logging.Logger | None = None) -> None:
        c = self.config = config
        modality, backend, translate_to, threads = c.modality, c.backend, c.translate_to, \
            c.threads
        self.source = open_source(c.model_dir, c.profile, backend, c.cache_dir, logger)
        self.profile, self.grid = self.source.profile, self.source.profile.grid
        self.modality, self.agent_id = modality, c.agent_id
        try:
            self.group = group_of(modality)
            self.num_cameras = modality_spec(modality).get("cameras")
        except (ConfigError, ValueError) as exc:  # no group / unknown modality
            raise PipelineError("config", str(exc)) from exc
        self.targets = tuple(dict.fromkeys(t for t in translate_to if t and t != self.group))
        self.spaces = self._spaces()
        self.backend = self.source.backend(StageRequest("vehicle", (modality, self.targets)),
                                           backend, logger, threads)
        self.outputs = {space_output(s): s for s in self.spaces}
        self.nonfinite_points = 0
        self.warmup()

    def warmup(self) -> None:
        """One synthetic frame through the backend: the first real frame then pays no session
        initialisation (allocations, kernel selection). LiDAR: a cloud dense enough to fill
        every voxel slot, so later frames never grow the runtime's buffers."""
        rng = np.random.default_rng(0)
        if self.num_cameras:
            k, ext = synthetic_rig(int(self.num_cameras), self.profile["camera"]["image_size"])
            size = tuple(int(v) for v in self.profile["camera"]["image_size"])
            cams = [CameraFrame(np.zeros((size[1], size[0], 3), np.uint8), k[i],
                                np.linalg.inv(ext[i])) for i in range(int(self.num_cameras))]
            agent = AgentFrame(self.agent_id, np.zeros((0, 4), np.float32), np.eye(4), cams)
        else:
            slots = max(int(self.profile[k]["max_voxels"]) for k in ("pillar", "voxel3d"))
            agent = AgentFrame(self.agent_id, synthetic_points(self.profile, 4 * slots, rng),
                               np.eye(4))
        batch = collate_arrays([encoder_inputs(self.modality, agent, self.profile)])
        self.backend({n: batch[n] for n in self.backend.input_names})

    def _spaces(self) -> dict[str, SpaceInfo]:
        """Bits and codebook hash per produced space; PipelineError("config") if unusable."""
        if self.group not in self.source.spaces:
            raise PipelineError("config", f"no code space {self.group} in {self.source.root}")
        spaces = {self.group: self.source.spaces[self.group]}
        known = self.source.translator_targets(self.group)
        for t in self.targets:
            if t not in known:
                raise PipelineError("config", f"cannot translate {self.modality} "
                                    f"({self.group}) into {t!r}: uct_{self.group} targets "
                                    f"{sorted(known) or 'nothing'}")
            space = self.source.spaces.get(t)
            if space is None:
                raise PipelineError("config", f"no code space {t} in {self.source.root}")
            trained = self.source.trained_hash(self.group, t)
            if trained not in (None, space.codebook_hash):
                raise PipelineError("config", f"uct_{self.group} was trained against another "
                                    f"codebook of {t} ({trained} != {space.codebook_hash})")
            spaces[t] = space
        return spaces

    @property
    def backend_name(self) -> str:
        return f"{self.backend.name} ({self.backend.device})"

    # -- inputs ------------------------------------------------------------------------------
    def _finite_points(self, points: np.ndarray) -> np.ndarray:
        arr = np.asarray(points)
        if arr.ndim != 2 or arr.shape[1] != 4 or not np.issubdtype(arr.dtype, np.number):
            raise PipelineError("bad_points", f"points must be a numeric (N, 4) array, got "
                                f"{arr.dtype} {arr.shape}")
        if len(arr) == 0:
            raise PipelineError("empty_cloud", "the point cloud has no points")
        finite = finite_rows(arr)
        if not finite.any():
            raise PipelineError("nan_points", f"all {len(arr)} points are NaN/inf")
        kept = int(finite.sum())
        self.nonfinite_points += len(arr) - kept
        arr = arr if kept == len(arr) else arr[finite]  # no copy of a clean cloud
        return arr.astype(np.float32, copy=False)

    def process_lidar(self, points: np.ndarray) -> VehicleResult:
        """(N, 4) x, y, z, intensity in the LiDAR frame -> code maps."""
        start = time.perf_counter()
        agent = AgentFrame(self.agent_id, self._finite_points(points), np.eye(4))
        return self._process(agent, start)

    def process_cameras(self, cameras: Sequence[CameraFrame]) -> VehicleResult:
        """The modality's cameras (image, intrinsic, LiDAR -> camera extrinsic) -> code maps."""
        start = time.perf_counter()
        if self.num_cameras is not None and len(cameras) != int(self.num_cameras):
            raise PipelineError("bad_cameras", f"{self.modality} needs {self.num_cameras} "
                                f"cameras, got {len(cameras)}")
        agent = AgentFrame(self.agent_id, np.zeros((0, 4), np.float32), np.eye(4),
                           list(cameras))
        return self._process(agent, start)

    def _process(self, agent: AgentFrame, start: float) -> VehicleResult:
        try:
            batch = collate_arrays([encoder_inputs(self.modality, agent, self.profile)])
        except ValueError as exc:
            reason = "bad_cameras" if agent.cameras else "bad_points"
            raise PipelineError(reason, str(exc)) from exc
        feed = {n: batch[n] for n in self.backend.input_names}
        pre = _ms(start)
        start = time.perf_counter()
        out = self.backend(feed)
        inference = _ms(start)
        start = time.perf_counter()
        maps = {space: (np.asarray(out[name][0], np.uint8), self.spaces[space].codebook_hash)
                for name, space in self.outputs.items()}
        return VehicleResult(maps, {"preprocess_ms": pre, "inference_ms": inference,
                                    "postprocess_ms": _ms(start)})

    # -- outputs -----------------------------------------------------------------------------
    def code_maps(self, result: VehicleResult, stamp_ns: int, pose: GridPose) -> list[CodeMap]:
        """One validated CodeMap per space of `result` (grid frame of this agent, `pose` =
        grid -> world at `stamp_ns`); CodeMapError("pose") for a bad pose."""
        return [SpaceInfo(self.spaces[space].bits, digest).code_map(
                    space, indices, self.grid, self.agent_id, self.modality, stamp_ns, pose)
                for space, (indices, digest) in result.maps.items()]
