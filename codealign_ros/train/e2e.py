"""Table 2 analog: one collaborative detector trained end to end on isolated or co-occurring data.

The paper's motivation (its Table 2): training a heterogeneous cooperative model end to end
needs frames where the modalities co-occur; with each modality's data isolated in its own
group, naive end-to-end training loses accuracy. Here one encoder per modality of a setting
and one shared fusion backend + head are trained jointly from scratch on the same pooled frames
of the setting's groups, in one of two modes:
- `cooccurring`: every sample mixes the modalities (the agents cycle through them), as if the
  groups had shared their data;
- `isolated`: a group's frames carry only that group's modality, so no sample ever holds two
  modalities (what isolated data allows).
Both are evaluated on the heterogeneous setting (`codealign eval --method e2e_<mode>`).
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from codealign_ros.config.groups import group_of
from codealign_ros.config.modalities import modality_spec
from codealign_ros.models.detector import DetectionBackend
from codealign_ros.models.encoders import build_encoder
from codealign_ros.train.dataset import Collate, CoopDataset, PooledDataset, StepLoader
from codealign_ros.train.loop import LoopConfig, fit
from codealign_ros.train.samples import Batch, encode_batch
from codealign_ros.train.stages import StageData, StageResult, _finish, _floats, _save, \
    trainable_parameters

MODES = ("cooccurring", "isolated")
SETTING = "[m1]+[m2]"  # the paper's Table 2 pairs two LiDAR encoders


def _dataset(data: StageData, modalities: list[str], mode: str) -> PooledDataset:
    groups = list(dict.fromkeys(group_of(m) for m in modalities))
    kw = dict(profile=data.profile, seed=data.seed, max_agents=data.max_agents or 0,
              augment=data.augment)
    if mode == "cooccurring":
        parts = [CoopDataset(data.frames[g], modalities, **kw) for g in groups]
    else:
        parts = [CoopDataset(data.frames[g], [m for m in modalities if group_of(m) == g], **kw)
                 for g in groups]
    return PooledDataset(parts)


def train_e2e(data: StageData, modalities: list[str], mode: str, out: Path,
              cfg: LoopConfig) -> StageResult:
    """Encoders of `modalities` + one backend, trained jointly (see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"e2e mode must be one of {MODES}, got {mode!r}")
    if any(modality_spec(m).get("sensor") == "camera" for m in modalities):
        raise ValueError(f"e2e: LiDAR modalities only (no depth supervision here), got "
                         f"{modalities}")
    name = f"e2e_{mode}"
    encoders = nn.ModuleDict({m: build_encoder(m, data.profile) for m in modalities})
    backend = DetectionBackend(data.profile)
    data.to(encoders, backend)
    path = out / f"{name}.pt"

    def save() -> None:
        _save(data, path, "e2e", {"encoders": {m: e.state_dict() for m, e in encoders.items()},
                                  "backend": backend.state_dict()},
              modalities=modalities, mode=mode, steps=cfg.steps)

    def step(_: int, batch: Batch) -> tuple:
        outputs = backend(encode_batch(dict(encoders), batch), batch.theta, batch.sample,
                          batch.size)
        loss, parts = backend.loss(outputs, batch.gt_boxes)
        return loss, _floats(parts)

    loader = StepLoader(_dataset(data, modalities, mode), Collate(data.profile),
                        data.batch_size, data.seed, data.workers, data.accel.cuda,
                        data.accel.rank, data.accel.world)
    modules = {"encoders": encoders, "backend": backend}
    history = fit(f"e2e {mode}", modules, [p for m in modules.values() for p in m.parameters()],
                  step, cfg, out / "checkpoints" / f"{name}.ckpt", loader, data.accel,
                  data.hook(save))
    save()
    return _finish(name, path, history, trainable_parameters(encoders, backend), mode=mode,
                   modalities=",".join(modalities))
