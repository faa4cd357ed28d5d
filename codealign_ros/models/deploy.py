"""The deployable stages of CodeAlign: what runs on a vehicle and on a receiver (ONNX-ready).

VehicleEncoder   sensor inputs -> code indices in the own space (+ translated spaces: D2C)
CodeTranslator   foreign code indices -> ego-space code indices (receiver-side translation)
ReceiverHead     ego-space indices of all agents + poses -> detection maps (cls, reg, dir)
"""
from __future__ import annotations

from torch import Tensor, nn

from codealign_ros.models.detector import DetectionBackend
from codealign_ros.models.codebook import Codebook
from codealign_ros.models.translator import UnifiedCodeTranslator

__all__ = ["VehicleEncoder", "CodeTranslator", "ReceiverHead", "DenseReceiverHead"]


class VehicleEncoder(nn.Module):
    """Frozen encoder -> adapter -> nearest code; optionally the UCT into `targets` too.

    forward(**inputs) -> tuple of (B, H, W) int64 index maps: own space first, then one per
    target in order.
    """

    def __init__(self, encoder: nn.Module, adapter: nn.Module, codebook: Codebook,
                 translator: UnifiedCodeTranslator | None = None,
                 targets: tuple[str, ...] = ()) -> None:
        super().__init__()
        if targets and translator is None:
            raise ValueError("translating into target spaces needs a translator")
        self.encoder, self.adapter, self.codebook = encoder, adapter, codebook
        self.translator, self.targets = translator, tuple(targets)
        self.input_names = list(getattr(encoder, "input_names", []))

    def features(self, **inputs: Tensor) -> Tensor:
        """Adapter output (B, C, H, W): the dense feature before quantisation."""
        return self.adapter(self.encoder(**inputs))

    def forward(self, *args: Tensor, **inputs: Tensor) -> tuple[Tensor, ...]:
        inputs.update(zip(self.input_names, args))
        x = self.features(**inputs)
        own = self.codebook.assign(x)
        return (own, *(self.translator.translate(x, t) for t in self.targets))  # type: ignore


class CodeTranslator(nn.Module):
    """Receiver-side translation: decode foreign indices with their codebook, UCT to `target`."""

    def __init__(self, source_codebook: Codebook, translator: UnifiedCodeTranslator,
                 target: str) -> None:
        super().__init__()
        self.codebook, self.translator, self.target = source_codebook, translator, target

    def forward(self, indices: Tensor) -> Tensor:
        return self.translator.translate(self.codebook.decode(indices), self.target)


class ReceiverHead(nn.Module):
    """Decode ego-space indices (N, H, W) of one sample's agents, fuse with theta (N, 2, 3)."""

    def __init__(self, codebook: Codebook, backend: DetectionBackend) -> None:
        super().__init__()
        self.codebook, self.backend = codebook, backend

    def forward(self, indices: Tensor, theta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        features = self.codebook.decode(indices)
        return DenseReceiverHead.run(self.backend, features, theta)


class DenseReceiverHead(nn.Module):
    """Fusion of dense features (baselines: no alignment, HEAL-style)."""

    def __init__(self, backend: DetectionBackend) -> None:
        super().__init__()
        self.backend = backend

    def forward(self, features: Tensor, theta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.run(self.backend, features, theta)

    @staticmethod
    def run(backend: DetectionBackend, features: Tensor,
            theta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        sample = (features[:, 0, 0, 0] * 0).long()  # all agents belong to one ego sample
        out = backend(features, theta, sample, 1)
        return out["cls"], out["reg"], out["dir"]
