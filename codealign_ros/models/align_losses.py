"""Alignment losses of CodeAlign: eq. 10 feature similarity, target balancing, auxiliary code CE."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Hashable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "nonempty_mask", "cosine_alignment_loss", "BalanceState", "translation_loss_balance",
    "target_sampling_probabilities", "code_ce_loss",
]


def nonempty_mask(features: Tensor) -> Tensor:
    """(N, 1, H, W) float mask of cells whose feature is not all zero (e.g. outside a warp)."""
    return (features.detach().abs().sum(dim=1, keepdim=True) > 0).to(features.dtype)


def _sample_ids(n: int, record_len: Sequence[int] | Tensor | None,
                batch_of: Sequence[int] | Tensor | None) -> list[int]:
    if record_len is not None and batch_of is not None:
        raise ValueError("give record_len or batch_of, not both")
    if batch_of is not None:
        ids = [int(b) for b in batch_of]
        if len(ids) != n:
            raise ValueError(f"batch_of has {len(ids)} entries for {n} agents")
        return ids
    if record_len is None:
        return [0] * n
    counts = [int(c) for c in record_len]
    if any(c < 0 for c in counts) or sum(counts) != n:
        raise ValueError(f"record_len {counts} does not add up to {n} agents")
    return [s for s, c in enumerate(counts) for _ in range(c)]


def _cross_modality_pairs(modality_of: Sequence[Hashable],
                          samples: list[int]) -> list[tuple[int, int]]:
    n = len(samples)
    return [(i, j) for i in range(n) for j in range(i + 1, n)
            if samples[i] == samples[j] and modality_of[i] != modality_of[j]]


def cosine_alignment_loss(features: Tensor, modality_of: Sequence[Hashable],
                          record_len: Sequence[int] | Tensor | None = None,
                          mask: Tensor | None = None, *,
                          batch_of: Sequence[int] | Tensor | None = None,
                          reduction: str = "mean", eps: float = 1e-8) -> Tensor:
    """Eq. 10 similarity term: 1 - cos(F_i, F_j) over cross-modality agent pairs of a sample.

    features: (N, C, H, W) of all agents, already warped into their sample's ego frame.
    modality_of: modality id per agent. Agents are grouped into samples by ``record_len``
    (agents per sample, OpenCOOD order) or ``batch_of`` (sample id per agent); neither means one
    sample. mask: (N, 1, H, W) validity (bool or weights); a pair uses mask_i * mask_j, so pass
    cells that are inside each agent's view and non-empty (see :func:`nonempty_mask`).

    Normalisation: each unordered pair (i < j, same sample, different modality) gives the
    mask-weighted mean of (1 - cos) over its valid cells; pairs with no valid cell are skipped;
    ``reduction="mean"`` averages over the remaining pairs (range [0, 2], independent of agent
    count), ``"sum"`` sums them (eq. 10 literally, counting each unordered pair once).
    Returns 0 attached to the graph of ``features`` when there is no such pair.
    """
    if features.dim() != 4:
        raise ValueError(f"features must be (N, C, H, W), got {tuple(features.shape)}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    n = features.shape[0]
    if len(modality_of) != n:
        raise ValueError(f"modality_of has {len(modality_of)} entries for {n} agents")
    if mask is not None and (mask.dim() != 4 or mask.shape[0] != n or mask.shape[1] != 1
                             or mask.shape[2:] != features.shape[2:]):
        raise ValueError(f"mask must be ({n}, 1, {features.shape[2]}, {features.shape[3]}), "
                         f"got {tuple(mask.shape)}")
    pairs = _cross_modality_pairs(modality_of, _sample_ids(n, record_len, batch_of))
    zero = features.sum() * 0.0
    if not pairs:
        return zero
    i, j = (torch.tensor(k, device=features.device) for k in zip(*pairs))
    unit = F.normalize(features, dim=1, eps=eps)
    dissim = 1.0 - (unit[i] * unit[j]).sum(dim=1)  # (P, H, W)
    if mask is None:
        valid = torch.ones_like(dissim)
    else:
        m = mask[:, 0].to(features.dtype)
        valid = m[i] * m[j]
    den = valid.sum(dim=(1, 2))
    per_pair = (dissim * valid).sum(dim=(1, 2)) / den.clamp(min=eps)
    used = (den > 0).to(features.dtype)
    total = (per_pair * used).sum()
    if reduction == "sum":
        return total + zero
    return total / used.sum().clamp(min=1.0) + zero


@dataclass
class BalanceState:
    """Running state of :func:`translation_loss_balance`.

    momentum: EMA factor of the per-target running loss. relative: weight by the loss relative
    to the target's first observed loss (how little it has improved) instead of the raw loss.
    """

    momentum: float = 0.9
    relative: bool = False
    ema: dict[str, float] = field(default_factory=dict)
    first: dict[str, float] = field(default_factory=dict)
    steps: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")

    def update(self, name: str, value: float) -> None:
        """Fold one observed loss of target ``name`` into the running mean."""
        if name not in self.ema:
            self.ema[name], self.first[name] = value, max(value, 1e-12)
        else:
            self.ema[name] = self.momentum * self.ema[name] + (1.0 - self.momentum) * value

    def score(self, name: str) -> float:
        """Difficulty of target ``name``: running loss (or running / first loss)."""
        return self.ema[name] / self.first[name] if self.relative else self.ema[name]


def _normalised(scores: dict[str, float]) -> dict[str, float]:
    total = sum(scores.values())
    if total <= 0.0:
        return {k: 1.0 for k in scores}
    return {k: len(scores) * v / total for k, v in scores.items()}


def translation_loss_balance(losses: dict[str, Tensor],
                             state: BalanceState | None) -> tuple[Tensor, dict[str, float]]:
    """Weighted sum of per-target translation losses, re-weighted towards the harder targets.

    The paper (sec. 3.2.2) adjusts the share of training data per target "according to the loss
    changes of different targets" without giving the formula. Here: each target's loss is
    tracked as an EMA (``state.momentum``); the weights of the targets in ``losses`` are
    proportional to their running loss (or, with ``state.relative``, to running / first loss)
    and sum to the number of those targets. Weights are constants (no gradient through them).
    ``state=None`` gives the plain sum (all weights 1). Use
    :func:`target_sampling_probabilities` for the data-proportion form of the same rule.
    """
    if not losses:
        raise ValueError("losses must name at least one target")
    values: dict[str, float] = {}
    for name, loss in losses.items():
        if loss.numel() != 1:
            raise ValueError(f"loss of target {name!r} must be a scalar, got {tuple(loss.shape)}")
        values[name] = float(loss.detach())
        if not math.isfinite(values[name]) or values[name] < 0:
            raise ValueError(f"loss of target {name!r} is {values[name]}; need finite and >= 0")
    if state is None:
        weights = {k: 1.0 for k in losses}
    else:
        for name, value in values.items():
            state.update(name, value)
        state.steps += 1
        weights = _normalised({k: state.score(k) for k in losses})
    total = sum(weights[k] * loss.reshape(()) for k, loss in losses.items())
    return total, weights


def target_sampling_probabilities(state: BalanceState,
                                  targets: Sequence[str] | None = None) -> dict[str, float]:
    """Share of training batches per target (sums to 1), proportional to the balancing score.

    Targets never seen yet get the mean score of the seen ones (uniform when none was seen).
    """
    names = list(state.ema if targets is None else targets)
    if not names:
        raise ValueError("no targets to sample from")
    seen = [state.score(k) for k in names if k in state.ema]
    fill = sum(seen) / len(seen) if seen else 1.0
    weights = _normalised({k: state.score(k) if k in state.ema else fill for k in names})
    return {k: w / len(names) for k, w in weights.items()}


def code_ce_loss(logits: Tensor, target_indices: Tensor, mask: Tensor | None = None) -> Tensor:
    """Auxiliary cross-entropy of translator logits (B, D, H, W) against known target codes.

    Needs the target group's code indices (B, H, W) of the *same* scene, which modality
    isolation rules out; kept for ablations with co-occurring data. mask: (B, H, W) or
    (B, 1, H, W) weights; the result is the mask-weighted mean over cells (0 with the graph
    intact when no cell is valid).
    """
    if logits.dim() != 4:
        raise ValueError(f"logits must be (B, D, H, W), got {tuple(logits.shape)}")
    b, d, h, w = logits.shape
    if tuple(target_indices.shape) != (b, h, w):
        raise ValueError(f"target_indices must be ({b}, {h}, {w}), "
                         f"got {tuple(target_indices.shape)}")
    idx = target_indices.long()
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= d):
        raise ValueError(f"target indices must lie in [0, {d}), got [{int(idx.min())}, "
                         f"{int(idx.max())}]")
    ce = F.cross_entropy(logits, idx, reduction="none")
    if mask is None:
        return ce.mean()
    m = mask[:, 0] if mask.dim() == 4 and mask.shape[1] == 1 else mask
    if tuple(m.shape) != (b, h, w):
        raise ValueError(f"mask must be ({b}, {h}, {w}) or ({b}, 1, {h}, {w}), "
                         f"got {tuple(mask.shape)}")
    m = m.to(ce.dtype)
    return (ce * m).sum() / m.sum().clamp(min=1e-12) + logits.sum() * 0.0
