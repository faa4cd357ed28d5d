"""Learnable per-group codebook of CodeAlign (eq. 9): BEV features <-> code indices."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codealign_ros.core.codemap import codebook_hash

__all__ = ["Codebook", "CodeAssigner", "CodeDecoder"]


class Codebook(nn.Module):
    """``num_codes`` learnable codes of ``dim`` channels, trained with a straight-through estimator.

    ``forward`` returns the unweighted VQ-VAE losses ``"codebook"`` and ``"commitment"``;
    the commitment weight (beta, 0.25 in VQ-VAE) is the caller's choice.
    """

    usage: Tensor

    def __init__(self, num_codes: int = 16, dim: int = 64, usage_decay: float = 0.99) -> None:
        super().__init__()
        if not isinstance(num_codes, int) or not 2 <= num_codes <= 256 or num_codes & (num_codes - 1):
            raise ValueError(f"num_codes must be a power of two in 2..256, got {num_codes!r}")
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim!r}")
        if not 0.0 <= usage_decay < 1.0:
            raise ValueError(f"usage_decay must be in [0, 1), got {usage_decay!r}")
        self.num_codes, self.dim, self.usage_decay = num_codes, dim, usage_decay
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

    @torch.no_grad()
    def revive_dead_codes(self, x: Tensor, threshold: float = 1e-3) -> int:
        """Re-initialise codes with usage EMA < threshold to random cells of x; returns the count."""
        if not self.training:
            return 0
        dead = torch.nonzero(self.usage < threshold).flatten()
        n = int(dead.numel())
        if n == 0:
            return 0
        cells = x.detach().permute(0, 2, 3, 1).reshape(-1, self.dim)
        if cells.shape[0] >= n:
            pick = torch.randperm(cells.shape[0], device=cells.device)[:n]
        else:
            pick = torch.randint(cells.shape[0], (n,), device=cells.device)
        self.codes[dead] = cells[pick].to(self.codes)
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
