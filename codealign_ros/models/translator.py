"""Unified Code Translator (UCT) of CodeAlign (sec. 3.2.2): dense source features -> target codes.

Dense-to-code (D2C): a source group's features become logits over a *target* group's codebook;
argmax gives the code map that is sent, decoded by the target's frozen codebook and backend.
Three variants from the paper's ablation (Fig. 4), built from the same small pieces:

* ``"uct"`` (channel modulation): stem 1x1 conv -> x * sigmoid(W2 relu(W1 e_t)) -> ConvNeXt blocks
  -> 1x1 conv to logits. Only the embedding e_t (1 x hidden) is target specific; the gate MLP
  (W1, W2) is shared, so switching costs ``hidden`` parameters (64 at paper scale, ~1% of a
  multi-head head). Targets may differ in ``num_codes``: the single output conv has
  ``max(num_codes)`` channels and a target reads its first ``num_codes`` logits (padding).
  ``head="mlp"`` puts a shared 1x1 conv + GELU before that output conv (the multi-head's head
  shape, shared by all targets, so switching still costs ``hidden`` parameters); ``"linear"``
  (the output conv alone) is how the first translators were built. ``gate="blocks"`` applies
  the same target gate before every ConvNeXt block instead of once after the stem (still
  ``hidden`` switching parameters: the paper does not say where its modulation sits).
* ``"multi_head"``: the same trunk without gate, one head per target (1x1 conv hidden -> hidden,
  GELU, 1x1 conv -> num_codes; 5,200 parameters at hidden 64 / 16 codes, the paper's 5.2k).
* ``"one_to_one"``: an independent trunk + output conv per target (quadratic cost overall).
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codealign_ros.models.codebook import Codebook
from codealign_ros.errors import CodeAlignError

__all__ = [
    "VARIANTS", "HEADS", "GATES", "UnknownTargetError", "ConvNeXtBlock", "ChannelGate", "Trunk", "CodeHead",
    "UnifiedCodeTranslator", "TargetTranslatorExport",
]

VARIANTS = ("uct", "multi_head", "one_to_one")
HEADS = ("linear", "mlp")
GATES = ("stem", "blocks")


class UnknownTargetError(CodeAlignError, KeyError):
    """A target group the translator does not know; the message lists the known ones."""

    reason: str = "unknown_target"


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7, LayerNorm(C), Linear C->4C, GELU, Linear 4C->C, layer scale, residual."""

    def __init__(self, dim: int, expansion: int = 4, layer_scale: float = 1e-6) -> None:
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pw1 = nn.Linear(dim, expansion * dim)
        self.pw2 = nn.Linear(expansion * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale)))

    def forward(self, x: Tensor) -> Tensor:
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.pw2(F.gelu(self.pw1(self.norm(y)))) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class ChannelGate(nn.Module):
    """Embedding (1, C) -> channel weights (1, C, 1, 1) = sigmoid(W2 relu(W1 e))."""

    def __init__(self, dim: int, reduction: int = 4) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, dim // reduction)
        self.w2 = nn.Linear(dim // reduction, dim)

    def forward(self, embedding: Tensor) -> Tensor:
        return torch.sigmoid(self.w2(F.relu(self.w1(embedding))))[:, :, None, None]


class Trunk(nn.Module):
    """1x1 stem conv in -> hidden, optional channel gate, ``blocks`` ConvNeXt blocks; the gate
    multiplies the stem output, or with ``every_block`` the input of every block."""

    def __init__(self, in_channels: int, hidden: int, blocks: int, layer_scale: float) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, hidden, 1)
        self.blocks = nn.Sequential(*(ConvNeXtBlock(hidden, layer_scale=layer_scale)
                                      for _ in range(blocks)))

    def forward(self, x: Tensor, gate: Tensor | None = None, every_block: bool = False) -> Tensor:
        h = self.stem(x)
        if gate is None:
            return self.blocks(h)
        if not every_block:
            return self.blocks(h * gate)
        for block in self.blocks:
            h = block(h * gate)
        return h


class CodeHead(nn.Module):
    """Multi-head output head: 1x1 conv hidden -> hidden, GELU, 1x1 conv -> num_codes."""

    def __init__(self, hidden: int, num_codes: int) -> None:
        super().__init__()
        self.mid = nn.Conv2d(hidden, hidden, 1)
        self.out = nn.Conv2d(hidden, num_codes, 1)

    def forward(self, h: Tensor) -> Tensor:
        return self.out(F.gelu(self.mid(h)))


class _SingleTranslator(nn.Module):
    """One full translator for one target (the one-to-one variant)."""

    def __init__(self, in_channels: int, hidden: int, blocks: int, layer_scale: float,
                 num_codes: int) -> None:
        super().__init__()
        self.trunk = Trunk(in_channels, hidden, blocks, layer_scale)
        self.out = nn.Conv2d(hidden, num_codes, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.trunk(x))


def _count(params: list[nn.Parameter]) -> int:
    return sum(p.numel() for p in params)


_RESERVED = frozenset(dir(nn.ModuleDict)) | frozenset(dir(nn.ParameterDict))


def _check_target(name: object, num_codes: object) -> None:
    if not isinstance(name, str) or not name or "." in name or name in _RESERVED:
        raise ValueError(f"target name must be a non-empty str without '.' and not a "
                         f"ModuleDict attribute, got {name!r}")
    if not isinstance(num_codes, int) or isinstance(num_codes, bool) or num_codes < 2:
        raise ValueError(f"num_codes of target {name!r} must be an int >= 2, got {num_codes!r}")


class UnifiedCodeTranslator(nn.Module):
    """Source features (B, in_channels, H, W) -> logits (B, D_t, H, W) over target t's codes."""

    def __init__(self, in_channels: int, targets: Mapping[str, int], hidden: int = 64,
                 blocks: int = 3, reduction: int = 4, variant: str = "uct",
                 layer_scale: float = 1e-6, head: str = "linear", gate: str = "stem") -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, got {gate!r}")
        for name, value in (("in_channels", in_channels), ("hidden", hidden), ("blocks", blocks),
                            ("reduction", reduction)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if hidden // reduction < 1:
            raise ValueError(f"hidden ({hidden}) must be >= reduction ({reduction})")
        if not isinstance(targets, Mapping) or not targets:
            raise ValueError(f"targets must be a non-empty {{name: num_codes}} mapping, "
                             f"got {targets!r}")
        for name, num_codes in targets.items():
            _check_target(name, num_codes)
        self.in_channels, self.hidden, self.variant = in_channels, hidden, variant
        self.head = head if variant == "uct" else "linear"
        self.gate_at = gate if variant == "uct" else "stem"
        self._blocks, self._layer_scale = blocks, layer_scale
        self.targets: dict[str, int] = {}
        if variant == "uct":
            self.trunk = Trunk(in_channels, hidden, blocks, layer_scale)
            self.gate = ChannelGate(hidden, reduction)
            self.embeddings = nn.ParameterDict()
            self.mid = nn.Conv2d(hidden, hidden, 1) if self.head == "mlp" else nn.Identity()
            self.out = nn.Conv2d(hidden, max(targets.values()), 1)
        elif variant == "multi_head":
            self.trunk = Trunk(in_channels, hidden, blocks, layer_scale)
            self.heads = nn.ModuleDict()
        else:
            self.translators = nn.ModuleDict()
        for name, num_codes in targets.items():
            self.add_target(name, num_codes)

    # -- targets ---------------------------------------------------------------------------
    def add_target(self, name: str, num_codes: int) -> list[nn.Parameter]:
        """Register target group ``name``; returns its new parameters (train only these).

        Shared weights are untouched. For ``uct`` a ``num_codes`` above the current maximum
        widens the output conv (existing rows copied unchanged); the widened weight and bias
        are then returned too, as they are new Parameter objects.
        """
        _check_target(name, num_codes)
        if name in self.targets:
            raise ValueError(f"target {name!r} already registered")
        ref = next(self.parameters(), None)
        self.targets[name] = num_codes
        if self.variant == "uct":
            new = [self._add_embedding(name, ref)]
            if num_codes > self.out.out_channels:
                new += self._widen_out(num_codes)
            return new
        if self.variant == "multi_head":
            module: nn.Module = CodeHead(self.hidden, num_codes)
            self.heads[name] = module
        else:
            module = _SingleTranslator(self.in_channels, self.hidden, self._blocks,
                                       self._layer_scale, num_codes)
            self.translators[name] = module
        if ref is not None:
            module.to(device=ref.device, dtype=ref.dtype)
        return list(module.parameters())

    def _add_embedding(self, name: str, ref: Tensor | None) -> nn.Parameter:
        kw = {} if ref is None else {"device": ref.device, "dtype": ref.dtype}
        self.embeddings[name] = nn.Parameter(torch.randn(1, self.hidden, **kw))
        return self.embeddings[name]

    @torch.no_grad()
    def _widen_out(self, num_codes: int) -> list[nn.Parameter]:
        old = self.out
        new = nn.Conv2d(self.hidden, num_codes, 1).to(old.weight)
        new.weight[: old.out_channels] = old.weight
        new.bias[: old.out_channels] = old.bias
        self.out = new
        return [new.weight, new.bias]

    def _num_codes(self, target: str) -> int:
        try:
            return self.targets[target]
        except (KeyError, TypeError):
            raise UnknownTargetError(
                f"unknown target group {target!r}; known: {sorted(self.targets)}") from None

    def target_parameters(self, target: str) -> list[nn.Parameter]:
        """Parameters used by ``target`` alone (its switching module)."""
        self._num_codes(target)
        if self.variant == "uct":
            return [self.embeddings[target]]
        if self.variant == "multi_head":
            return list(self.heads[target].parameters())
        return list(self.translators[target].parameters())

    def switching_parameters(self, target: str) -> int:
        """Parameter count specific to one target (uct: its embedding, ``hidden`` values)."""
        return _count(self.target_parameters(target))

    def trainable_parameters(self) -> int:
        """Count of parameters with ``requires_grad`` (all targets included)."""
        return _count([p for p in self.parameters() if p.requires_grad])

    # -- inference -------------------------------------------------------------------------
    def forward(self, x: Tensor, target: str) -> Tensor:
        """Logits (B, D_t, H, W) over target ``target``'s codes."""
        d = self._num_codes(target)
        if not torch.jit.is_tracing() and (x.dim() != 4 or x.shape[1] != self.in_channels):
            raise ValueError(f"translator expects (B, {self.in_channels}, H, W), "
                             f"got {tuple(x.shape)}")
        if self.variant == "uct":
            h = self.trunk(x, self.gate(self.embeddings[target]), self.gate_at == "blocks")
            if self.head == "mlp":
                h = F.gelu(self.mid(h))
            return self.out(h)[:, :d]
        if self.variant == "multi_head":
            return self.heads[target](self.trunk(x))
        return self.translators[target](x)

    def translate(self, x: Tensor, target: str) -> Tensor:
        """Target code indices (B, H, W) int64: argmax of the logits."""
        return self.forward(x, target).argmax(dim=1)

    @staticmethod
    def to_codes(logits: Tensor, codebook: Codebook, hard: bool = True, tau: float = 1.0,
                 gumbel: bool = False) -> Tensor:
        """Code features (B, C_code, H, W) from logits, differentiable w.r.t. the logits.

        hard: forward value is exactly ``codebook.decode(argmax)``; gradients follow the soft
        mixture softmax(logits / tau) @ codes (straight-through). gumbel: sample with Gumbel
        noise first (hard Gumbel-softmax, as the authors' code; training only). hard=False: the
        soft mixture itself.
        """
        if logits.dim() != 4 or logits.shape[1] != codebook.num_codes:
            raise ValueError(f"logits must be (B, {codebook.num_codes}, H, W) for this codebook, "
                             f"got {tuple(logits.shape)}")
        if tau <= 0:
            raise ValueError(f"tau must be positive, got {tau!r}")
        if gumbel:
            soft = F.gumbel_softmax(logits, tau=tau, hard=False, dim=1)
        else:
            soft = torch.softmax(logits / tau, dim=1)
        mix = torch.einsum("bdhw,dc->bchw", soft, codebook.codes)
        if not hard:
            return mix
        return codebook.decode(soft.argmax(dim=1)) + (mix - mix.detach())

    def export_module(self, target: str) -> "TargetTranslatorExport":
        """(x) -> indices module for one fixed target, for ONNX export."""
        self._num_codes(target)
        return TargetTranslatorExport(self, target)


class TargetTranslatorExport(nn.Module):
    """Export wrapper: source features (B, C, H, W) -> target code indices (B, H, W) int64."""

    def __init__(self, translator: UnifiedCodeTranslator, target: str) -> None:
        super().__init__()
        self.translator, self.target = translator, target

    def forward(self, x: Tensor) -> Tensor:
        return self.translator.translate(x, self.target)
