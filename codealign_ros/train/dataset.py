"""torch Dataset / DataLoader of cooperative training samples (the path every stage uses).

- `CoopDataset`: one item per (frame, ego agent) of ONE group's frames (isolation: a stage
  only ever sees its own group's scenarios); modalities are cycled over the agents from an
  offset and peers subsampled to `max_agents` (0: all, as evaluation), both drawn from a per-item RNG seeded by
  (seed, epoch, item), so an item is the same in every worker and every process.
- `Collate`: samples -> `Batch` (voxelisation, pillar/image inputs, camera depth targets) in
  the DataLoader workers, with a per-worker input cache.
- `StepLoader`: an endless stream of batches, epoch after epoch; the order of epoch e is
  `DistributedSampler(seed=seed).set_epoch(e)` (a torch.Generator seeded with seed + e),
  sharded over the torchrun ranks; resuming at step s skips exactly the batches already used.
"""
from __future__ import annotations

import random
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from codealign_ros.data.types import AgentFrame, CooperativeFrame
from codealign_ros.config.profiles import Profile
from codealign_ros.train.augment import Augment
from codealign_ros.train.depth import lidar_depth_maps
from codealign_ros.train.samples import Batch, InputCache, Sample, make_batch, make_sample

__all__ = ["CoopDataset", "Collate", "PooledDataset", "StepLoader"]


class CoopDataset(Dataset):
    """(frame, ego) items of one group's frames; index k = epoch * n + item (see StepLoader)."""

    def __init__(self, frames: Sequence[CooperativeFrame], modalities: Sequence[str],
                 profile: Profile, seed: int = 0, max_agents: int = 0,
                 min_items: int = 1, augment: Augment | None = None) -> None:
        if not frames:
            raise ValueError("CoopDataset: no frames (is the group's training split empty?)")
        self.frames, self.modalities = list(frames), list(modalities)
        self.profile, self.seed, self.max_agents = profile, seed, max_agents
        self.augment = augment  # train/augment.py, drawn from the item's RNG
        self.items = [(i, ego) for i, f in enumerate(self.frames) for ego in f.agents]
        self.length = max(len(self.items), min_items)  # tiny sets repeat to fill one batch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Sample:
        epoch, k = divmod(int(index), self.length)
        frame_idx, ego = self.items[k % len(self.items)]
        rng = random.Random(hash((self.seed, epoch, k)))
        frame = self.frames[frame_idx]
        order = [ego] + [n for n in frame.agents if n != ego]
        offset = rng.randrange(len(self.modalities))
        modality_of = {n: self.modalities[(offset + i) % len(self.modalities)]
                       for i, n in enumerate(order)}
        sample = make_sample(frame, modality_of, self.profile, ego_id=ego)
        if self.max_agents and len(sample.agents) > self.max_agents:
            keep = [0, *sorted(rng.sample(range(1, len(sample.agents)), self.max_agents - 1))]
            sample.agents = [sample.agents[i] for i in keep]
            sample.modalities = [sample.modalities[i] for i in keep]
        if self.augment is not None:
            sample = self.augment.apply(sample, self.profile, rng)
        return sample


class PooledDataset(Dataset):
    """Several CoopDatasets as one (index k = epoch * n + item, passed on to the part that
    holds the item with that part's own epoch numbering)."""

    def __init__(self, parts: Sequence[CoopDataset]) -> None:
        if not parts:
            raise ValueError("PooledDataset: no parts")
        self.parts = list(parts)
        self.length = sum(len(p) for p in self.parts)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Sample:
        epoch, k = divmod(int(index), self.length)
        for part in self.parts:
            if k < len(part):
                return part[epoch * len(part) + k]
            k -= len(part)
        raise IndexError(index)  # unreachable: k < sum of the part lengths


class Collate:
    """Samples -> Batch; `depth_size` (w, h) adds LiDAR depth targets for camera encoders,
    computed once per (frame, agent) and cached (at most `max_depth` maps per worker)."""

    def __init__(self, profile: Profile, depth_size: tuple[int, int] | None = None,
                 max_depth: int = 20_000) -> None:
        self.profile, self.depth_size, self.max_depth = profile, depth_size, max_depth
        self.cache: InputCache | None = None  # built lazily: one per worker process
        self.depth: dict[tuple[str, str], np.ndarray] = {}

    def _depth(self, frame_key: str, agent: AgentFrame) -> np.ndarray:
        key = (frame_key, agent.agent_id)
        maps = self.depth.get(key)
        if maps is None:
            assert self.depth_size is not None
            maps = lidar_depth_maps(agent, self.depth_size)
            if len(self.depth) < self.max_depth:
                self.depth[key] = maps
        return maps

    def __call__(self, samples: list[Sample]) -> Batch:
        if self.cache is None:
            self.cache = InputCache(self.profile)
        batch = make_batch(samples, self.profile, self.cache)
        if self.depth_size is not None:
            batch.depth = torch.from_numpy(np.stack(
                [self._depth(s.key.rsplit("/", 1)[0], a) for s in samples for a in s.agents]))
        return batch


class _EpochSampler(Sampler[int]):
    """This rank's shard of epoch `epoch`'s permutation, from position `skip`, as dataset
    indices epoch * len + i (so items can draw per-epoch randomness)."""

    def __init__(self, n: int, seed: int, rank: int, world: int) -> None:
        self.n, self.epoch, self.skip = n, 0, 0
        self.inner = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True,
                                        seed=seed, drop_last=False)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip
        self.inner.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        order = list(self.inner)[self.skip:]
        return iter([self.epoch * self.n + i for i in order])

    def __len__(self) -> int:
        return len(self.inner) - self.skip


class StepLoader:
    """Endless batches of `dataset` for a step-based loop (DataLoader with workers, pinned
    memory on CUDA, per-epoch seeded shuffle, DistributedSampler sharding)."""

    def __init__(self, dataset: Dataset, collate: Callable[[list[Any]], Any], batch_size: int,
                 seed: int = 0, workers: int = 0, pin_memory: bool = False, rank: int = 0,
                 world: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        n = len(dataset)  # type: ignore[arg-type]
        if n < batch_size * world:
            raise ValueError(f"{n} samples cannot fill a batch of {batch_size} on {world} "
                             "process(es)")
        self.batch_size = batch_size
        self.sampler = _EpochSampler(n, seed, rank, world)
        self.per_epoch = len(self.sampler) // batch_size
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=self.sampler,
                                 collate_fn=collate, num_workers=workers, drop_last=True,
                                 pin_memory=pin_memory, persistent_workers=workers > 0,
                                 prefetch_factor=2 if workers > 0 else None)

    def batches(self, start_step: int = 0) -> Iterator[Any]:
        """Batches of steps start_step, start_step + 1, ... (forever)."""
        epoch, done = divmod(start_step, self.per_epoch)
        while True:
            self.sampler.set_epoch(epoch, done * self.batch_size)
            yield from self.loader
            epoch, done = epoch + 1, 0
