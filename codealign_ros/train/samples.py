"""Cooperative training/evaluation samples: frames + modality assignment -> model batches."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch import Tensor

from codealign_ros.config import lookup
from codealign_ros.core.geometry import transform_boxes
from codealign_ros.data.convert import iter_dataset_frames
from codealign_ros.data.types import AgentFrame, CooperativeFrame
from codealign_ros.models.encoders.inputs import collate, encoder_inputs
from codealign_ros.config.profiles import Profile
from codealign_ros.models.warp import normalized_affine, relative_transform

__all__ = ["Sample", "Batch", "load_frames", "make_sample", "sample_agents", "InputCache", "make_batch",
           "ego_ground_truth", "encode_batch"]


@dataclass
class Sample:
    """One ego's view of a cooperative frame: agents (ego first) with their modalities."""

    key: str
    agents: list[AgentFrame]
    modalities: list[str]
    gt_boxes: np.ndarray  # (M, 7) in the ego LiDAR frame, inside the profile range
    stamp_ns: int = 0

    @property
    def ego(self) -> AgentFrame:
        return self.agents[0]


@dataclass
class Batch:
    """Agents of several samples, flattened in sample order (ego of each sample first)."""

    modalities: list[str]
    sample: Tensor  # (N,) long: the sample each agent belongs to
    theta: Tensor  # (N, 2, 3) agent -> its ego, normalised affine
    inputs: dict[str, dict[str, Tensor]]  # modality -> collated encoder inputs
    rows: dict[str, Tensor]  # modality -> positions (in 0..N-1) of its agents
    gt_boxes: list[np.ndarray]
    keys: list[str] = field(default_factory=list)
    agent_ids: list[str] = field(default_factory=list)
    depth: Tensor | None = None  # (N, cams, h, w) LiDAR depth targets of camera agents

    @property
    def size(self) -> int:
        return len(self.gt_boxes)

    def _map(self, fn: Callable[[Tensor], Tensor]) -> "Batch":
        return Batch(self.modalities, fn(self.sample), fn(self.theta),
                     {m: {k: fn(v) for k, v in x.items()} for m, x in self.inputs.items()},
                     {m: fn(r) for m, r in self.rows.items()}, self.gt_boxes, self.keys,
                     self.agent_ids, None if self.depth is None else fn(self.depth))

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        """The batch's tensors on `device` (GT boxes stay NumPy: targets move them)."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "Batch":
        """Page-locked copy (called by DataLoader(pin_memory=True))."""
        return self._map(lambda t: t.pin_memory())


def load_frames(root: Path, split: str = "train", scenarios: Iterable[str] | None = None,
                cameras: bool = True) -> list[CooperativeFrame]:
    """Frames of `scenarios` (all when None) of an OPV2V split or a DAIR-V2X root."""
    from codealign_ros.data.opv2v import OPV2VDataset, is_opv2v_root

    root = Path(root)
    wanted = None if scenarios is None else set(scenarios)
    if not is_opv2v_root(root):
        return [f for f in iter_dataset_frames("dairv2x", root)
                if wanted is None or f.scenario in wanted]
    dataset = OPV2VDataset(root, split)
    return [dataset.load(sc, ts, cameras=cameras) for sc in dataset.scenarios()
            if wanted is None or sc in wanted for ts in dataset.timestamps(sc)]


def ego_ground_truth(frame: CooperativeFrame, ego: AgentFrame, profile: Profile) -> np.ndarray:
    """World GT boxes in the ego LiDAR frame, inside the profile's x/y range, minus the ego."""
    boxes = transform_boxes(np.linalg.inv(ego.lidar_pose), np.asarray(frame.boxes).reshape(-1, 7))
    r = profile.lidar_range
    inside = ((boxes[:, 0] >= r[0]) & (boxes[:, 0] < r[3]) & (boxes[:, 1] >= r[1])
              & (boxes[:, 1] < r[4]))
    radius = float(lookup("groups", "data", "ego_box_radius"))
    not_ego = np.hypot(boxes[:, 0], boxes[:, 1]) > radius
    return boxes[inside & not_ego].astype(np.float32)


def sample_agents() -> int:
    """Agents per cooperative sample, ego included, that evaluation fuses and training uses
    by default (config/groups.yaml data.max_agents; 0 = every agent within comm range)."""
    value = int(lookup("groups", "data", "max_agents"))
    if value < 0 or value == 1:
        raise ValueError(f"config/groups.yaml data.max_agents must be 0 or >= 2, got {value}")
    return value


def make_sample(frame: CooperativeFrame, modality_of: dict[str, str], profile: Profile,
                ego_id: str | None = None) -> Sample:
    """Sample with `ego_id` (default: the frame's ego) and its peers within comm range (the
    nearest `sample_agents() - 1` of them when that is not 0)."""
    ego_id = ego_id or frame.ego_id
    ego = frame.agents[ego_id]
    comm = float(lookup("groups", "data", "comm_range"))
    dist = {name: float(np.hypot(*(a.lidar_pose[:2, 3] - ego.lidar_pose[:2, 3])))
            for name, a in frame.agents.items()}
    peers = [a for name, a in frame.agents.items() if name != ego_id and name in modality_of
             and dist[name] <= comm]
    cap = sample_agents()
    if cap and len(peers) > cap - 1:
        nearest = sorted(peers, key=lambda a: dist[a.agent_id])[: cap - 1]
        peers = [a for a in peers if a in nearest]
    agents = [ego, *peers]
    return Sample(f"{frame.scenario}/{frame.timestamp}/{ego_id}", agents,
                  [modality_of[a.agent_id] for a in agents],
                  ego_ground_truth(frame, ego, profile), frame.stamp_ns)


AUG_TAG = "~aug"  # in an augmented sample's key (train/augment.py): inputs never cached


class InputCache:
    """Encoder inputs per (sample key, agent, modality), computed once (voxelisation etc.)."""

    def __init__(self, profile: Profile, max_items: int = 100_000) -> None:
        self.profile, self.max_items = profile, max_items
        self._kinds: dict[str, str] = {}
        self._items: dict[tuple[str, str, str], dict[str, np.ndarray]] = {}

    def kind(self, modality: str) -> str:
        """Encoder kind of a modality (config/modalities.yaml)."""
        if modality not in self._kinds:
            self._kinds[modality] = lookup("modalities", "modalities", modality, "encoder")
        return self._kinds[modality]

    def sensor(self, modality: str) -> str:
        """"lidar" or "camera" (config/modalities.yaml)."""
        return lookup("modalities", "modalities", modality, "sensor")

    def get(self, frame_key: str, agent: AgentFrame, modality: str) -> dict[str, np.ndarray]:
        key = (frame_key, agent.agent_id, self.kind(modality))
        item = self._items.get(key)
        if item is None:
            item = encoder_inputs(self.kind(modality), agent, self.profile)
            if len(self._items) < self.max_items and AUG_TAG not in frame_key:
                self._items[key] = item
        return item


def make_batch(samples: list[Sample], profile: Profile, cache: InputCache,
               modality_map: Callable[[int, str], str] | None = None) -> Batch:
    """Collate samples; `modality_map(position, modality)` may override an agent's modality."""
    mods, ids, sample_idx, thetas, per_mod = [], [], [], [], {}
    for s, sample in enumerate(samples):
        frame_key = sample.key.rsplit("/", 1)[0]
        for agent, modality in zip(sample.agents, sample.modalities):
            m = modality_map(len(mods), modality) if modality_map else modality
            per_mod.setdefault(m, []).append((len(mods), cache.get(frame_key, agent, m)))
            mods.append(m)
            ids.append(agent.agent_id)
            sample_idx.append(s)
            thetas.append(normalized_affine(
                relative_transform(sample.ego.lidar_pose, agent.lidar_pose), profile.grid))
    return Batch(
        modalities=mods, sample=torch.tensor(sample_idx, dtype=torch.long),
        theta=torch.cat(thetas, 0),
        inputs={m: collate([x for _, x in items]) for m, items in per_mod.items()},
        rows={m: torch.tensor([i for i, _ in items], dtype=torch.long)
              for m, items in per_mod.items()},
        gt_boxes=[s.gt_boxes for s in samples], keys=[s.key for s in samples], agent_ids=ids)


def encode_batch(encoders: dict[str, torch.nn.Module], batch: Batch) -> Tensor:
    """Run each modality's encoder on its agents; features (N, C, H, W) in batch order."""
    out: Tensor | None = None
    for m, rows in batch.rows.items():
        feats = encoders[m](**batch.inputs[m])
        if out is None:
            out = feats.new_zeros((len(batch.modalities), *feats.shape[1:]))
        out = out.index_copy(0, rows, feats)
    assert out is not None, "empty batch"
    return out

