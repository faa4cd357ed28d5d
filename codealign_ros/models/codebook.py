"""Learnable per-group codebook of CodeAlign (eq. 9): BEV features <-> code indices."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codealign_ros.core.codemap import codebook_hash

__all__ = ["Codebook", "CodeAssigner", "CodeDecoder"]


class Codebook(nn.Module):
    """``num_codes`` learnable codes of ``dim`` channels, trained with a straight-through estimator.

    ``forward`` returns the unweighted VQ-VAE losses ``"codebook"`` and ``"commitment"``;
    the commitment weight (beta, 0.25 in VQ-VAE) is the caller's choice.

    ``usage`` (a buffer, saved with the weights) is an exponential moving average, with decay
    ``usage_decay`` per training forward, of each code's share of the cells assigned to it.
    A code is *dead* when its usage falls below ``dead_fraction / num_codes`` (a fraction of a
    uniform share: 0.01 of 1/16 is 0.06 % of the cells, below what even a code kept for rare
    foreground cells gets); an unused code starting from a uniform share is dead after
    ``ln(dead_fraction) / ln(usage_decay)`` = 44 training steps with the defaults, so revival
    fires within a short run. ``kmeans_init`` initialises the codes from features (k-means++ + Lloyd),
    ``revive_dead_codes`` re-seeds dead codes from the features they would help most.
    """

    usage: Tensor

    def __init__(self, num_codes: int = 16, dim: int = 64, usage_decay: float = 0.9,
                 dead_fraction: float = 0.01) -> None:
        super().__init__()
        if not isinstance(num_codes, int) or not 2 <= num_codes <= 256 or num_codes & (num_codes - 1):
            raise ValueError(f"num_codes must be a power of two in 2..256, got {num_codes!r}")
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim!r}")
        if not 0.0 <= usage_decay < 1.0:
            raise ValueError(f"usage_decay must be in [0, 1), got {usage_decay!r}")
        if not 0.0 < dead_fraction < 1.0:
            raise ValueError(f"dead_fraction must be in (0, 1), got {dead_fraction!r}")
        self.num_codes, self.dim, self.usage_decay = num_codes, dim, usage_decay
        self.dead_fraction = dead_fraction
        self.codes = nn.Parameter(torch.randn(num_codes, dim) / dim**0.5)
        self.register_buffer("usage", torch.full((num_codes,), 1.0 / num_codes))

    @property
    def bits(self) -> int:
        """Bits per code index (log2 of ``num_codes``)."""
        return self.num_codes.bit_length() - 1

    def distances(self, x: Tensor) -> Tensor:
        """Squared L2 distances (B, D, H, W) of features x (B, C, H, W) to every code."""
        xc = F.conv2d(x, self.codes[:, :, None, None])  # (B, D, H, W) = x . c
        x2 = (x * x).sum(dim=1, keepdim=True)
        c2 = (self.codes * self.codes).sum(dim=1)[None, :, None, None]
        return x2 - 2.0 * xc + c2

    def assign(self, x: Tensor) -> Tensor:
        """Index (B, H, W, int64) of the nearest code of every cell."""
        return self.distances(x).argmin(dim=1)

    def decode(self, indices: Tensor) -> Tensor:
        """Code vectors (B, C, H, W) for indices (B, H, W)."""
        return F.embedding(indices.long(), self.codes).permute(0, 3, 1, 2)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Quantize x: (quantized, indices, {"codebook", "commitment"} losses)."""
        idx = self.assign(x)
        q = self.decode(idx)
        losses = {
            "codebook": F.mse_loss(q, x.detach()),
            "commitment": F.mse_loss(x, q.detach()),
        }
        if self.training:
            with torch.no_grad():
                counts = torch.bincount(idx.flatten(), minlength=self.num_codes).to(self.usage)
                frac = counts / max(idx.numel(), 1)
                self.usage.mul_(self.usage_decay).add_((1.0 - self.usage_decay) * frac)
            q = x + (q - x).detach()
        return q, idx, losses

    # -- initialisation and revival -----------------------------------------------------
    def _cells(self, features: Tensor | Iterable[Tensor], max_cells: int,
               generator: torch.Generator | None) -> Tensor:
        """(N, dim) float cells of feature maps (B, dim, H, W) or rows (N, dim), at most
        `max_cells` of them (a uniform random subset)."""
        parts = [features] if isinstance(features, Tensor) else list(features)
        rows = []
        for f in parts:
            f = f.detach()
            if f.dim() == 4:
                f = f.permute(0, 2, 3, 1).reshape(-1, f.shape[1])
            if f.dim() != 2 or f.shape[1] != self.dim:
                raise ValueError(f"features must be (B, {self.dim}, H, W) or (N, {self.dim}), "
                                 f"got {tuple(f.shape)}")
            rows.append(f.to(self.codes.device, torch.float32))
        cells = torch.cat(rows) if rows else self.codes.new_zeros((0, self.dim))
        if cells.shape[0] == 0:
            raise ValueError("no feature cells to initialise codes from")
        if cells.shape[0] > max_cells:
            pick = torch.randperm(cells.shape[0], generator=generator)[:max_cells]
            cells = cells[pick.to(cells.device)]
        return cells

    @staticmethod
    def _sq_dist(cells: Tensor, codes: Tensor) -> Tensor:
        """(N, K) squared L2 distances, clamped at 0."""
        d = (cells * cells).sum(1, keepdim=True) - 2.0 * cells @ codes.T + (codes * codes).sum(1)
        return d.clamp_min_(0.0)

    @staticmethod
    def _seed(cells: Tensor, live: Tensor, n: int, generator: torch.Generator | None) -> Tensor:
        """Greedy k-means++ seeding continued from `live` codes (K0, dim): n new codes; each
        step draws 2 + log(n) candidate cells with probability proportional to their squared
        distance to the nearest code so far (uniformly when there is none) and keeps the one
        that lowers the total squared error most."""
        trials = 2 + int(math.log(max(n, 1)))
        new = []
        if live.shape[0]:
            d2 = Codebook._sq_dist(cells, live).min(dim=1).values
        else:
            d2 = torch.full((cells.shape[0],), float("inf"), device=cells.device)
        for _ in range(n):
            finite = torch.isfinite(d2).all() and float(d2.sum()) > 0
            weights = d2 if finite else torch.ones_like(d2)
            picks = torch.multinomial(weights.cpu(), trials, replacement=True,
                                      generator=generator).to(cells.device)
            after = torch.minimum(d2[:, None], Codebook._sq_dist(cells, cells[picks]))
            best = int(after.sum(dim=0).argmin())
            new.append(cells[picks[best]])
            d2 = after[:, best]
        return torch.stack(new) if new else cells.new_zeros((0, cells.shape[1]))

    @torch.no_grad()
    def quantisation_error(self, features: Tensor | Iterable[Tensor]) -> float:
        """Mean squared distance of feature cells to their nearest code (per cell, summed over
        channels)."""
        cells = self._cells(features, 1 << 62, None)
        return float(self._sq_dist(cells, self.codes.detach().float()).min(dim=1).values.mean())

    @torch.no_grad()
    def kmeans_init(self, features: Tensor | Iterable[Tensor], iterations: int = 10,
                    max_cells: int = 65536, generator: torch.Generator | None = None
                    ) -> dict[str, float]:
        """Set the codes by k-means over feature cells: k-means++ seeding, then `iterations`
        Lloyd steps (an emptied cluster is re-seeded k-means++-style from the others).

        features: one or several batches, (B, dim, H, W) maps or (N, dim) rows; at most
        `max_cells` random cells are used. Usage is set to the final cluster shares. Returns
        {"seed_error", "error"} (mean squared quantisation error after seeding / Lloyd) and
        {"cells", "iterations"}."""
        cells = self._cells(features, max_cells, generator)
        codes = self._seed(cells, cells.new_zeros((0, self.dim)), self.num_codes, generator)
        seed_error = float(self._sq_dist(cells, codes).min(dim=1).values.mean())
        counts = torch.zeros(self.num_codes, device=cells.device)
        for _ in range(iterations):
            idx = self._sq_dist(cells, codes).argmin(dim=1)
            counts = torch.bincount(idx, minlength=self.num_codes).to(cells)
            sums = torch.zeros_like(codes).index_add_(0, idx, cells)
            used = counts > 0
            codes = torch.where(used[:, None], sums / counts.clamp_min(1.0)[:, None], codes)
            if not bool(used.all()):
                codes[~used] = self._seed(cells, codes[used], int((~used).sum()), generator)
        d2 = self._sq_dist(cells, codes)
        counts = torch.bincount(d2.argmin(dim=1), minlength=self.num_codes).to(cells)
        self.codes.copy_(codes.to(self.codes))
        self.usage.copy_((counts / cells.shape[0]).to(self.usage))
        return {"seed_error": seed_error, "error": float(d2.min(dim=1).values.mean()),
                "cells": float(cells.shape[0]), "iterations": float(iterations)}

    def dead_codes(self, threshold: float | None = None) -> Tensor:
        """Indices of codes whose usage EMA is below `threshold` (default
        ``dead_fraction / num_codes``)."""
        limit = self.dead_fraction / self.num_codes if threshold is None else threshold
        return torch.nonzero(self.usage < limit).flatten()

    @torch.no_grad()
    def revive_dead_codes(self, x: Tensor | Iterable[Tensor], threshold: float | None = None,
                          generator: torch.Generator | None = None,
                          max_cells: int = 65536) -> int:
        """Re-seed dead codes (see ``dead_codes``) from the cells of x that the live codes
        quantise worst: k-means++ sampling (probability proportional to the squared error to
        the nearest code so far), so revived codes spread over the badly served features.
        Their usage restarts at a uniform share. Training mode only; returns the count."""
        if not self.training:
            return 0
        dead = self.dead_codes(threshold)
        n = int(dead.numel())
        if n == 0:
            return 0
        alive = torch.ones(self.num_codes, dtype=torch.bool, device=dead.device)
        alive[dead] = False
        cells = self._cells(x, max_cells, generator)
        new = self._seed(cells, self.codes.detach()[alive].float(), n, generator)
        self.codes[dead] = new.to(self.codes)
        self.usage[dead] = 1.0 / self.num_codes
        return n

    def weights_hash(self) -> str:
        """Hash identifying this exact codebook on the wire (``codemap.codebook_hash``)."""
        return codebook_hash(self.codes.detach().cpu().numpy())


class CodeAssigner(nn.Module):
    """Export wrapper: features (B, C, H, W) -> int64 indices (B, H, W), castable to uint8."""

    def __init__(self, codebook: Codebook) -> None:
        super().__init__()
        self.codebook = codebook

    def forward(self, x: Tensor) -> Tensor:
        return self.codebook.assign(x)


class CodeDecoder(nn.Module):
    """Export wrapper: indices (B, H, W) -> code features (B, C, H, W)."""

    def __init__(self, codebook: Codebook) -> None:
        super().__init__()
        self.codebook = codebook

    def forward(self, indices: Tensor) -> Tensor:
        return self.codebook.decode(indices)
