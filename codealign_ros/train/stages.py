"""The training stages of CodeAlign and its baselines (paper section 3, issue #4 point 6).

a) `train_base`: a per-modality detector (encoder + pyramid-fusion backend + head) on the
   modality's own group data, all agents carrying that modality.
b) `train_codespace` (train/codespace.py): intra-group code space formation: frozen encoders, one adapter per
   modality + the group codebook (+ the shared backend when the group has several
   modalities), loss = detection + occupancy + lambda * eq. 10 + VQ terms.
c) `train_translator`: inter-group UCT on the source group's local data only; every target
   group's codebook and backend frozen; targets balanced by their losses.
d) `train_heal`: HEAL-style backward alignment: a modality's encoder retrained against another
   group's frozen dense backend, on the modality's own data.
Isolation: every stage draws frames only from the scenarios of the group it trains for.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from codealign_ros.data.types import CooperativeFrame
from codealign_ros.models.align_losses import BalanceState, translation_loss_balance
from codealign_ros.models.detector import DetectionBackend
from codealign_ros.models.encoders import build_encoder
from codealign_ros.config import ConfigError
from codealign_ros.config.profiles import Profile
from codealign_ros.config.groups import group_of, groups
from codealign_ros.models.store import ModelStore, save_component
from codealign_ros.models.translator import GATES, HEADS, UnifiedCodeTranslator
from codealign_ros.models.warp import warp_with_theta
from codealign_ros.train.dataset import Collate, CoopDataset, StepLoader
from codealign_ros.train.distributed import Accel
from codealign_ros.train.loop import LoopConfig, ValidateFn, fit, smoothed
from codealign_ros.train.augment import Augment
from codealign_ros.train.samples import AUG_TAG, Batch, InputCache, encode_batch, sample_agents

LOG = logging.getLogger("codealign.train")
COMMITMENT = 0.25  # VQ-VAE beta
COSINE_WEIGHT = 1.0  # lambda of eq. 10
DEPTH_WEIGHT = 0.5


def trainable_parameters(*modules: nn.Module) -> int:
    """Number of parameters with requires_grad (the paper's TP)."""
    return sum(p.numel() for m in modules for p in m.parameters() if p.requires_grad)


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no gradients for `module`'s own parameters (inputs still get gradients)."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


@dataclass
class StageData:
    """Frames of each group's training scenarios, how to load them, and the frozen-feature
    cache; every stage draws its batches from `loader` (train/dataset.py)."""

    profile: Profile
    frames: dict[str, list[CooperativeFrame]]  # group -> its frames (isolation)
    batch_size: int = 2
    seed: int = 0
    max_agents: int | None = None  # agents per training sample; None: as evaluation
    # (config/groups.yaml data.max_agents; 0 = every agent within comm_range)
    workers: int = 0  # DataLoader worker processes (0: batches built in the training process)
    accel: Accel = field(default_factory=Accel)
    feature_budget: float = 4e9  # bytes of cached frozen-encoder features (then recomputed)
    features: dict[tuple[str, str, str], Tensor] = field(default_factory=dict)
    # validation hook of the stage being run (train/validate.py during_training): given the
    # stage's save(), a function returning val AP of the weights now; None = no validation
    validate: Callable[[Callable[[], None]], ValidateFn] | None = None
    augment: Augment | None = None  # consistent flip / rotation / scaling (off by default)

    def __post_init__(self) -> None:
        self.cache = InputCache(self.profile)  # sensor / encoder kind look-ups
        self.rng = random.Random(self.seed)
        if self.max_agents is None:
            self.max_agents = sample_agents()

    def hook(self, save: Callable[[], None]) -> ValidateFn | None:
        """The validation function of the stage whose component `save` writes."""
        return None if self.validate is None else self.validate(save)

    def loader(self, group: str, modalities: list[str], depth: bool = False) -> StepLoader:
        """Batches of `group`'s frames only, agents cycling through `modalities`; `depth`
        adds camera depth targets."""
        size = tuple(self.profile["camera"]["image_size"]) if depth else None
        dataset = CoopDataset(self.frames[group], modalities, self.profile, self.seed,
                              self.max_agents, min_items=self.batch_size * self.accel.world,
                              augment=self.augment)
        return StepLoader(dataset, Collate(self.profile, size), self.batch_size, self.seed,
                          self.workers, self.accel.cuda, self.accel.rank, self.accel.world)

    def to(self, *modules: nn.Module) -> None:
        """Move modules to the training device."""
        for m in modules:
            m.to(self.accel.device)


def encode_frozen(data: StageData, encoders: dict[str, nn.Module], batch: Batch) -> Tensor:
    """Features (N, C, H, W) of frozen encoders, cached per (frame, agent, modality)."""
    rows: list[Tensor | None] = [None] * len(batch.modalities)
    todo: dict[str, list[int]] = {}
    keys = _agent_keys(batch)
    for i, key in enumerate(keys):
        rows[i] = data.features.get(key)
        if rows[i] is None:
            todo.setdefault(key[2], []).append(i)
    with torch.no_grad():
        for m, idx in todo.items():
            pos = batch.rows[m].tolist()
            sel = [pos.index(i) for i in idx]
            inputs = _select_inputs(batch.inputs[m], sel, m, data)
            feats = encoders[m](**inputs)
            room = len(data.features) * feats[0].nelement() * feats.element_size() \
                < data.feature_budget
            for j, i in enumerate(idx):
                rows[i] = feats[j:j + 1].clone()
                if room and AUG_TAG not in keys[i][0]:  # augmented: never seen again
                    data.features[keys[i]] = rows[i]
    return torch.cat(rows, 0)  # type: ignore[arg-type]


def _agent_keys(batch: Batch) -> list[tuple[str, str, str]]:
    keys, ptr = [], 0
    counts = torch.bincount(batch.sample, minlength=batch.size).tolist()
    for key, n in zip(batch.keys, counts):
        frame_key = key.rsplit("/", 1)[0]
        for j in range(n):
            keys.append((frame_key, batch.agent_ids[ptr], batch.modalities[ptr]))
            ptr += 1
    return keys


def _select_inputs(inputs: dict[str, Tensor], sel: list[int], modality: str,
                   data: StageData) -> dict[str, Tensor]:
    """Inputs of the `sel`-th agents of one modality's collated inputs."""
    if data.cache.sensor(modality) == "camera":
        return {k: v[sel] for k, v in inputs.items()}
    coords = inputs["coords"]
    dev = coords.device
    keep = torch.isin(coords[:, 0], torch.tensor(sel, dtype=coords.dtype, device=dev))
    remap = torch.full((int(coords[:, 0].max()) + 1,), -1, dtype=coords.dtype, device=dev)
    remap[torch.tensor(sel, dtype=torch.long, device=dev)] = torch.arange(
        len(sel), dtype=coords.dtype, device=dev)
    out = {k: v[keep] for k, v in inputs.items()}
    out["coords"] = out["coords"].clone()
    out["coords"][:, 0] = remap[out["coords"][:, 0].long()]
    return out


def apply_per_modality(modules: dict[str, nn.Module], x: Tensor, batch: Batch) -> Tensor:
    """y[rows of m] = modules[m](x[rows of m]) for every modality of the batch."""
    out = torch.zeros_like(x)
    for m, rows in batch.rows.items():
        out = out.index_copy(0, rows, modules[m](x.index_select(0, rows)))
    return out


@dataclass
class StageResult:
    """What a stage produced, for the model card."""

    name: str
    path: Path
    steps: int
    seconds: float
    loss_first: float
    loss_last: float
    trainable: int
    extra: dict[str, Any] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)  # per-step records (+ val AP points)


def _finish(name: str, path: Path, history: list[dict], trainable: int,
            **extra: Any) -> StageResult:
    """Result of a stage; its time is the sum of the step times, so a resumed run reports the
    whole training time, not the time since it resumed."""
    first, last = smoothed(history)
    seconds = sum(h.get("seconds", 0.0) for h in history)
    LOG.info("%s: loss %.3f -> %.3f in %d steps, %.0f s, %d trainable params", name, first,
             last, len(history), seconds, trainable)
    return StageResult(name, path, len(history), seconds, first, last, trainable, extra,
                       history)


def _meta(data: StageData, **kw: Any) -> dict[str, Any]:
    return {"profile": data.profile.name, **kw}


def detector_step(encoder: nn.Module, backend: DetectionBackend, modality: str,
                  camera: bool) -> Callable[[int, Batch], tuple[Tensor, dict[str, float]]]:
    """One training step of a dense detector (every agent `modality`); camera encoders add
    depth supervision from the agents' own LiDAR (built by the collate)."""

    def step(_: int, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        feats = encode_batch({modality: encoder}, batch)
        outputs = backend(feats, batch.theta, batch.sample, batch.size)
        loss, parts = backend.loss(outputs, batch.gt_boxes)
        if camera:
            depth = encoder.depth_loss(batch.depth)
            loss, parts = loss + DEPTH_WEIGHT * depth, {**parts, "depth": depth}
        return loss, _floats(parts)
    return step


def _detector(data: StageData, name: str, label: str, group: str, modality: str,
              encoder: nn.Module, backend: DetectionBackend, trained: dict[str, nn.Module],
              out: Path, cfg: LoopConfig, save: Callable[[], None]) -> list[dict]:
    """Fit `trained` (modules of encoder / backend) on `group`'s data, all agents `modality`;
    `save` writes the component (for validation during training)."""
    data.to(encoder, backend)
    camera = data.cache.sensor(modality) == "camera"
    params = [p for m in trained.values() for p in m.parameters()]
    return fit(label, trained, params, detector_step(encoder, backend, modality, camera), cfg,
               out / "checkpoints" / f"{name}.ckpt", data.loader(group, [modality], camera),
               data.accel, data.hook(save))


def _cpu(state: dict[str, Any]) -> dict[str, Any]:
    """A state dict (possibly nested) with its tensors on the CPU, for component files."""
    return {k: _cpu(v) if isinstance(v, dict) else v.detach().cpu() if isinstance(v, Tensor)
            else v for k, v in state.items()}


def _save(data: StageData, path: Path, kind: str, state: dict[str, Any],
          **meta: Any) -> None:
    """Write a component file (rank 0 only; tensors on the CPU)."""
    if data.accel.main:
        save_component(path, kind, _cpu(state), _meta(data, **meta))


def train_base(data: StageData, modality: str, out: Path, cfg: LoopConfig) -> StageResult:
    """Stage a: detector of `modality` on its group's scenarios (homogeneous agents)."""
    group, name = group_of(modality), f"base_{modality}"
    encoder, backend = build_encoder(modality, data.profile), DetectionBackend(data.profile)
    path = out / f"{name}.pt"

    def save() -> None:
        _save(data, path, "base", {"encoder": encoder.state_dict(),
                                   "backend": backend.state_dict()},
              modality=modality, group=group, steps=cfg.steps)
    history = _detector(data, name, f"base {modality}", group, modality, encoder, backend,
                        {"encoder": encoder, "backend": backend}, out, cfg, save)
    save()
    return _finish(name, path, history, trainable_parameters(encoder, backend), group=group)


def _floats(parts: dict[str, Any]) -> dict[str, float]:
    return {k: float(v.detach()) if isinstance(v, Tensor) else float(v) for k, v in parts.items()}


def valid_mask(theta: Tensor, shape: tuple[int, int]) -> Tensor:
    """(N, 1, H, W) 1 where an agent's warped grid covers the ego cell."""
    ones = torch.ones((theta.shape[0], 1, *shape), device=theta.device)
    return (warp_with_theta(ones, theta) > 0.99).float()


def translator_settings(profile: Profile) -> tuple[float, BalanceState]:
    """(C2C share, target balancing) of `train.translator_*` in config/profiles.yaml."""
    train = profile["train"]
    share, mode = float(train.get("translator_c2c_share", 0.0)), \
        train.get("translator_balance", "change")
    if not 0.0 <= share <= 1.0 or mode not in ("change", "loss"):
        raise ConfigError(f"profile {profile.name}: need translator_c2c_share in [0, 1] and "
                          f"translator_balance 'change' or 'loss', got {share}, {mode!r}")
    return share, BalanceState(relative=mode == "change")


def translator_options(profile: Profile) -> dict[str, Any]:
    """UCT keyword arguments of new translators from the profile: `train.translator_head`
    (default "linear"), `train.translator_gate` (default "stem"),
    `train.translator_layer_scale` (the ConvNeXt blocks' initial layer scale, default 1e-6) and
    `train.translator_hidden` (the translator's width, default the feature channels)."""
    train = profile["train"]
    hidden = train.get("translator_hidden", profile.channels)
    head = train.get("translator_head", "linear")
    gate = train.get("translator_gate", "stem")
    scale = train.get("translator_layer_scale", 1e-6)
    if head not in HEADS or gate not in GATES or not (
            isinstance(scale, (int, float)) and 0 < scale <= 1) or not (
            isinstance(hidden, int) and hidden >= 4):
        raise ConfigError(f"profile {profile.name}: translator_head must be one of {HEADS}, "
                          f"translator_gate one of {GATES}, translator_layer_scale in (0, 1] "
                          f"and translator_hidden an int >= 4; got {head!r}, {gate!r}, "
                          f"{scale!r}, {hidden!r}")
    return {"head": head, "gate": gate, "layer_scale": float(scale), "hidden": hidden}


def train_translator(data: StageData, store: ModelStore, source: str, out: Path,
                     cfg: LoopConfig, variant: str = "uct") -> StageResult:
    """Stage c: the UCT of `source` into every other group, on `source`'s data only.

    Input: the source adapter output (dense-to-code, the paper's D2C), in a share
    `train.translator_c2c_share` of the steps (config/profiles.yaml) replaced by its decoded
    codes, so one translator also serves the receiver-side code-to-code path.
    """
    c2c_share, balance = translator_settings(data.profile)
    mods = groups()[source]
    targets = [g for g in groups() if g != source]
    encoders = {m: store.encoder(m) for m in mods}
    adapters = {m: store.adapter(source, m) for m in mods}
    own_codebook = store.codebook(source)
    codebooks = {t: store.codebook(t) for t in targets}
    backends = {t: freeze(store.group_backend(t)) for t in targets}
    uct = UnifiedCodeTranslator(data.profile.channels,
                                {t: cb.num_codes for t, cb in codebooks.items()},
                                variant=variant, **translator_options(data.profile))
    data.to(*encoders.values(), *adapters.values(), own_codebook, *codebooks.values(),
            *backends.values(), uct)

    def step(_: int, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        with torch.no_grad():
            x = apply_per_modality(adapters, encode_frozen(data, encoders, batch), batch)
            if data.rng.random() < c2c_share:
                x = own_codebook.decode(own_codebook.assign(x))
        losses = {}
        for t in targets:
            codes = uct.to_codes(uct(x, t), codebooks[t])
            outputs = backends[t](codes, batch.theta, batch.sample, batch.size)
            losses[t], _ = backends[t].loss(outputs, batch.gt_boxes)
        total, weights = translation_loss_balance(losses, balance)
        return total, _floats({**{f"det_{t}": v for t, v in losses.items()},
                               **{f"w_{t}": w for t, w in weights.items()}})

    name = f"uct_{source}" if variant == "uct" else f"uct_{source}_{variant}"
    params = [p for p in uct.parameters() if p.requires_grad]
    path = out / f"{name}.pt"

    def save() -> None:
        _save(data, path, "translator", {"translator": uct.state_dict()}, source=source,
              targets={t: cb.num_codes for t, cb in codebooks.items()},
              target_hashes={t: cb.weights_hash() for t, cb in codebooks.items()},
              hidden=uct.hidden, variant=variant, head=uct.head,
              gate=uct.gate_at, steps=cfg.steps)
    history = fit(f"translator {source} ({variant})", {"translator": uct}, params, step, cfg,
                  out / "checkpoints" / f"{name}.ckpt", data.loader(source, mods), data.accel,
                  data.hook(save))
    save()
    return _finish(name, path, history, trainable_parameters(uct), variant=variant,
                   switching={t: uct.switching_parameters(t) for t in targets})


def train_heal(data: StageData, store: ModelStore, modality: str, group: str, out: Path,
               cfg: LoopConfig) -> StageResult:
    """Stage d: HEAL-style backward alignment of `modality`'s encoder to `group`'s base
    backend (frozen), trained on `modality`'s own group data."""
    own = group_of(modality)
    encoder = build_encoder(modality, data.profile)
    encoder.load_state_dict(store.encoder(modality).state_dict())
    backend = freeze(store.base_backend(groups()[group][0]))
    name = f"heal_{modality}_{group}"
    path = out / f"{name}.pt"

    def save() -> None:
        _save(data, path, "heal", {"encoder": encoder.state_dict()}, modality=modality,
              group=group, steps=cfg.steps)
    history = _detector(data, name, f"heal {modality}->{group}", own, modality, encoder,
                        backend, {"encoder": encoder}, out, cfg, save)
    save()
    return _finish(name, path, history, trainable_parameters(encoder))


StageFn = Callable[..., StageResult]
