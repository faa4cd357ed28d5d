"""Stage b) of CodeAlign: intra-group code space formation (`train_codespace`).

Frozen encoders, one adapter per modality + the group codebook (+ the shared backend when
the group has several modalities), loss = detection + occupancy + lambda * eq. 10 + VQ terms.
"""
from __future__ import annotations

import collections
import copy
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from codealign_ros.config.groups import groups
from codealign_ros.models.adapter import Adapter
from codealign_ros.models.align_losses import cosine_alignment_loss
from codealign_ros.models.codebook import Codebook
from codealign_ros.models.store import ModelStore
from codealign_ros.models.warp import warp_with_theta
from codealign_ros.train.distributed import broadcast_module
from codealign_ros.train.loop import LoopConfig, fit
from codealign_ros.train.samples import Batch
from codealign_ros.train.stages import (COMMITMENT, COSINE_WEIGHT, LOG, StageData, StageResult,
                                        _finish, _floats, _save, apply_per_modality,
                                        encode_frozen, trainable_parameters, valid_mask)

__all__ = ["BACKEND_MODES", "CODEBOOK_INITS", "backend_trained", "group_backend_modes",
           "step_cap", "train_codespace"]

BACKEND_MODES = ("auto", "frozen", "trained")
CODEBOOK_INITS = ("kmeans", "revive")
INIT_BATCHES = 4  # batches of adapted features the codebook k-means runs over
REVIVE_EVERY = 25  # steps between dead-code revivals
USAGE_WINDOW = 10  # training batches over which the model card counts unused codes


def backend_trained(mode: str, modalities: list[str]) -> bool:
    """Whether the code-space stage trains the group backend: "auto" is the paper (trained
    for a multi-modality group, frozen for a single one), "frozen" / "trained" force it (the
    two single-group strategies of the paper's Table 7)."""
    if mode not in BACKEND_MODES:
        raise ValueError(f"codespace backend must be one of {BACKEND_MODES}, got {mode!r}")
    return len(modalities) > 1 if mode == "auto" else mode == "trained"


def group_backend_modes(train: dict[str, Any], cli_mode: str = "auto") -> dict[str, str]:
    """The code-space backend mode of every group: `cli_mode` (`--codespace-backend`) when
    it forces one, else the profile's `train.codespace_backend` entry (group -> mode), else
    "auto"."""
    table = train.get("codespace_backend") or {}
    bad = {g: m for g, m in table.items() if g not in groups() or m not in BACKEND_MODES}
    if bad or cli_mode not in BACKEND_MODES:
        raise ValueError(f"train.codespace_backend maps groups {sorted(groups())} to one of "
                         f"{BACKEND_MODES}; got {bad or cli_mode!r}")
    return {g: cli_mode if cli_mode != "auto" else table.get(g, "auto") for g in groups()}


def step_cap(stage: str, kwargs: dict[str, Any], steps: dict[str, int]) -> str:
    """The profile's step-cap key of a training job: its stage's, `codespace_shared` for a code
    space that trains its backend too (many more parameters than adapters + codebook), "base"
    for a stage without a cap of its own."""
    if stage == "codespace" and "codespace_shared" in steps and backend_trained(
            kwargs.get("backend_mode", "auto"), groups()[kwargs["group"]]):
        return "codespace_shared"
    return stage if stage in steps else "base"


def _init_codebook(data: StageData, codebook: Codebook, init: str, batches: Any,
                   adapt: Callable[[Batch], Tensor]) -> dict[str, float]:
    """Codes from `INIT_BATCHES` batches of adapted features: k-means (kmeans_init) or, as
    before, random codes with usage zeroed and revived from one batch ("revive")."""
    if init not in CODEBOOK_INITS:
        raise ValueError(f"codebook init must be one of {CODEBOOK_INITS}, got {init!r}")
    codebook.train()
    gen = torch.Generator().manual_seed(data.seed)
    with torch.no_grad():
        feats = [adapt(next(batches).to(data.accel.device))
                 for _ in range(INIT_BATCHES if init == "kmeans" else 1)]
    if init == "kmeans":
        stats = codebook.kmeans_init(feats, generator=gen)
    else:
        codebook.usage.zero_()
        stats = {"revived": float(codebook.revive_dead_codes(feats[0], generator=gen))}
    broadcast_module(codebook)  # data-dependent: keep the replicas identical
    LOG.info("codebook init (%s): %s", init, {k: round(v, 4) for k, v in stats.items()})
    return stats


def train_codespace(data: StageData, store: ModelStore, group: str, out: Path,
                    cfg: LoopConfig, num_codes: int | None = None, variant: str = "",
                    backend_mode: str = "auto", init: str = "kmeans") -> StageResult:
    """Stage b: adapters + codebook (+ the backend, see `backend_trained`) of `group`; the
    codebook starts from k-means over a few batches of adapted features (`init`), dead codes
    are revived every REVIVE_EVERY steps."""
    mods = groups()[group]
    num_codes = num_codes or data.profile.num_codes
    encoders = {m: store.encoder(m) for m in mods}
    # Zero-initialised residual branches: the adapter starts as the identity on the (ReLU,
    # non-negative) encoder features, so the frozen backend sees familiar input from step 0.
    adapters = nn.ModuleDict({m: Adapter(data.profile.channels, data.profile.adapter_blocks,
                                      zero_init_residual=True)
                              for m in mods})
    codebook = Codebook(num_codes, data.profile.channels)
    backend = copy.deepcopy(store.base_backend(mods[0]))
    shared = backend_trained(backend_mode, mods)
    for p in backend.parameters():
        p.requires_grad_(shared)
    backend.train(shared)
    data.to(*encoders.values(), adapters, codebook, backend)
    name = store.codespace_name(group, variant)
    ckpt = out / "checkpoints" / f"{name}.ckpt"
    loader = data.loader(group, mods)

    def adapt(batch: Batch) -> Tensor:
        return apply_per_modality(adapters, encode_frozen(data, encoders, batch), batch)

    recent: collections.deque[Tensor] = collections.deque(maxlen=USAGE_WINDOW)
    init_stats: dict[str, float] = {}
    if not ckpt.exists():  # a resumed run restores its codebook from the checkpoint
        batches = loader.batches(0)
        init_stats = _init_codebook(data, codebook, init, batches, adapt)
        batches.close()

    def step(i: int, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        adapted = adapt(batch)
        q, idx, vq = codebook(adapted)
        recent.append(torch.bincount(idx.flatten(), minlength=num_codes).cpu())
        outputs = backend(q, batch.theta, batch.sample, batch.size)
        det, parts = backend.loss(outputs, batch.gt_boxes)
        warped = warp_with_theta(adapted, batch.theta)
        cos = cosine_alignment_loss(warped, batch.modalities,
                                    mask=valid_mask(batch.theta, adapted.shape[-2:]),
                                    batch_of=batch.sample)
        loss = det + COSINE_WEIGHT * cos + vq["codebook"] + COMMITMENT * vq["commitment"]
        revived = 0
        if i % REVIVE_EVERY == REVIVE_EVERY - 1:
            revived = codebook.revive_dead_codes(adapted)
            broadcast_module(codebook)
        return loss, _floats({**parts, "cos": cos, "vq": vq["codebook"], "revived": revived,
                              "dead": len(codebook.dead_codes())})

    trained = [adapters, codebook] + ([backend] if shared else [])
    path = out / f"{name}.pt"

    def save() -> None:
        _save(data, path, "codespace", {
            "adapters": {m: a.state_dict() for m, a in adapters.items()},
            "codebook": codebook.state_dict(), "backend": backend.state_dict()},
            group=group, modalities=mods, num_codes=num_codes,
            codebook_hash=codebook.weights_hash(), backend_trained=shared,
            backend_mode=backend_mode, codebook_init=init, steps=cfg.steps)
    # Adam moves a parameter by about lr per step whatever its gradient; codes must travel the
    # feature scale within a short run, hence a 10x higher learning rate for the codebook.
    params = [{"params": [p for m in trained if m is not codebook for p in m.parameters()
                          if p.requires_grad]},
              {"params": list(codebook.parameters()), "lr_scale": 10.0}]
    history = fit(f"codespace {group}{variant}", {"adapters": adapters, "codebook": codebook,
                                                   "backend": backend},
                  params, step, cfg, ckpt, loader, data.accel, data.hook(save))
    save()
    dead = len(codebook.dead_codes())
    unused = int((torch.stack(list(recent)).sum(0) == 0).sum()) if recent else -1
    return _finish(name, path, history, trainable_parameters(*trained),
                   codebook_hash=codebook.weights_hash(), num_codes=num_codes,
                   backend=f"{'trained' if shared else 'frozen'} ({backend_mode})",
                   codebook_init=init + (f" (k-means error {init_stats['error']:.4f})"
                                         if "error" in init_stats else ""),
                   dead_codes_at_end=dead, **{
                       f"codes unused in the last {USAGE_WINDOW} batches": unused})
