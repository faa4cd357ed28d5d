"""The demo scene: a generated mini-V2X scenario as a rosbag2 (cached), and its ground truth.

`scene_bag` runs `data.synth.synthesize` (OPV2V layout, one test scenario) and
`data.convert.convert` (MCAP) into data/demo/<key>/, keyed by the generator settings; a
directory whose stamp matches is reused. `read_truth` / `read_points` read the bag back
without ROS (rosbags).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from codealign_ros.config import topic
from codealign_ros.core.codemap import GridPose
from codealign_ros.data.synth import SynthConfig
from codealign_ros.data.world_presets import default_world
from codealign_ros.data.types import AgentFrame, CooperativeFrame
from codealign_ros.errors import CodeAlignError

STAMP = ".generated"
BAG_FORMAT = "tf1"  # bumped when `codealign convert` writes new topics: regenerates the cache
SPLIT = "test"
POINT_FIELDS = ("x", "y", "z", "intensity")


class SceneError(CodeAlignError, ValueError):
    """The demo scene could not be generated or read."""

    reason: str = "scene"


@dataclass(frozen=True)
class SceneSpec:
    """Generator arguments of the demo scene (`codealign synth`)."""

    seed: int
    frames: int
    agents: int = 2
    rsu: bool = True
    world: str = field(default_factory=default_world)  # config/worlds.yaml preset

    @property
    def key(self) -> str:
        """Cache directory name."""
        return (f"s{self.seed}_f{self.frames}_a{self.agents}{'_rsu' if self.rsu else ''}"
                f"_{self.world}")

    def synth_config(self, out: Path) -> SynthConfig:
        """`codealign synth` settings writing into `out`."""
        return SynthConfig(out=Path(out), format="opv2v", scenes=1, frames=self.frames,
                           agents=self.agents, seed=self.seed, rsu=self.rsu, split=SPLIT,
                           world=self.world)

    def stamp(self) -> str:
        """Cache stamp: the generator settings and the bag format."""
        return f"{self.synth_config(Path('<out>'))!r} bag {BAG_FORMAT}"


def scene_bag(spec: SceneSpec, root: Path | str = "data/demo") -> Path:
    """The rosbag2 of `spec` under `root`/<key>/bag, generated when missing or stale."""
    final = Path(root) / spec.key
    from codealign_ros.data.convert import ConvertConfig, convert
    from codealign_ros.data.synth import synthesize

    stamp = spec.stamp()
    if (final / STAMP).is_file() and (final / STAMP).read_text() == stamp \
            and (final / "bag").is_dir():
        return final / "bag"
    tmp = Path(root) / f".{spec.key}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        print(f"demo: generating the scene {spec.key} into {final}", flush=True)
        if synthesize(spec.synth_config(tmp / "opv2v"), progress=False) != 0:
            raise SceneError(f"codealign synth failed for {spec}")
        if convert(ConvertConfig("opv2v", tmp / "opv2v", tmp / "bag", split=SPLIT),
                   progress=False) != 0:
            raise SceneError(f"codealign convert failed for {spec}")
        (tmp / STAMP).write_text(stamp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final / "bag"


# -- reading the bag back --------------------------------------------------------------------
def _matrix(pose: Any) -> np.ndarray:
    p, q = pose.position, pose.orientation
    return GridPose((p.x, p.y, p.z), (q.x, q.y, q.z, q.w)).to_matrix()


def _stamp(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _boxes(msg: Any) -> np.ndarray:
    return np.array([[d.center.x, d.center.y, d.center.z, d.size.x, d.size.y, d.size.z, d.yaw]
                     for d in msg.detections], np.float64).reshape(-1, 7)


@dataclass
class BagTruth:
    """Ground truth of a demo bag: frame stamps, world GT boxes, every agent's LiDAR pose."""

    stamps: list[int]
    gt_world: dict[int, np.ndarray]
    poses: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)

    def ego_gt(self, ego: str, stamp: int, profile: Any) -> np.ndarray:
        """GT boxes of a frame in the ego LiDAR frame, inside the profile range, minus the ego
        (the evaluation's `ego_ground_truth`)."""
        from codealign_ros.train.samples import ego_ground_truth

        agent = AgentFrame(ego, np.zeros((0, 4), np.float32), self.poses[ego][stamp])
        frame = CooperativeFrame("demo", str(stamp), stamp, {ego: agent},
                                 self.gt_world[stamp], np.arange(len(self.gt_world[stamp])),
                                 ["car"] * len(self.gt_world[stamp]))
        return ego_ground_truth(frame, agent, profile)

    def in_ego_frame(self, ego: str, agent: str, stamp: int) -> np.ndarray:
        """4x4 pose of `agent`'s LiDAR in the ego LiDAR frame at `stamp`."""
        return np.linalg.inv(self.poses[ego][stamp]) @ self.poses[agent][stamp]


def _reader(bag: Path) -> Any:
    from rosbags.highlevel import AnyReader

    from codealign_ros.data.bag import typestore

    return AnyReader([Path(bag)], default_typestore=typestore())


def read_truth(bag: Path | str, agents: list[str]) -> BagTruth:
    """GT boxes (world frame) and poses of `agents` per frame stamp of a demo bag."""
    wanted = {topic("gt_objects"): None, **{topic("pose", agent=a): a for a in agents}}
    truth = BagTruth([], {}, {a: {} for a in agents})
    with _reader(Path(bag)) as reader:
        conns = [c for c in reader.connections if c.topic in wanted]
        for conn, _, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            agent = wanted[conn.topic]
            if agent is None:
                truth.gt_world[_stamp(msg.header)] = _boxes(msg)
            else:
                truth.poses[agent][_stamp(msg.header)] = _matrix(msg.pose)
    truth.stamps = sorted(truth.gt_world)
    if not truth.stamps:
        raise SceneError(f"{bag}: no {topic('gt_objects')} messages")
    return truth


def read_points(bag: Path | str, agent: str, stamp: int) -> np.ndarray:
    """(N, 4) x, y, z, intensity of `agent`'s LiDAR sweep at `stamp` (our bags' layout)."""
    name = topic("lidar", agent=agent)
    with _reader(Path(bag)) as reader:
        conns = [c for c in reader.connections if c.topic == name]
        for conn, _, raw in reader.messages(connections=conns, start=stamp, stop=stamp + 1):
            msg = reader.deserialize(raw, conn.msgtype)
            fields = [(f.name, f.offset) for f in msg.fields]
            if msg.point_step != 16 or fields[:4] != [(n, 4 * i) for i, n in
                                                      enumerate(POINT_FIELDS)]:
                raise SceneError(f"{bag}: {name} is not x, y, z, intensity float32")
            return np.frombuffer(bytes(msg.data), "<f4").reshape(-1, 4)
    raise SceneError(f"{bag}: no {name} message at {stamp}")
