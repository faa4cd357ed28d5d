"""Trained components on disk (models/<profile>/): save, load, and rebuild from metadata.

Files (torch.save of {"kind", "meta", "state"}), one per trained piece:
  base_<m>.pt        stage a: encoder + fusion backend of modality m (also used by baselines)
  codespace_<g>.pt   stage b: adapters of g's modalities + g's codebook + g's backend
  uct_<g>.pt         stage c: Unified Code Translator of source group g (targets: other groups)
  heal_<m>_<g>.pt    stage d: m's encoder retrained against g's frozen backend (HEAL-style)
Each has a model card <name>.md beside it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from codealign_ros.models.adapter import Adapter
from codealign_ros.models.detector import DetectionBackend
from codealign_ros.models.codebook import Codebook
from codealign_ros.models.encoders import build_encoder
from codealign_ros.config.profiles import Profile, load_profile
from codealign_ros.models.translator import UnifiedCodeTranslator
from codealign_ros.errors import CodeAlignError

__all__ = ["ModelStore", "ModelStoreError", "save_component"]


class ModelStoreError(CodeAlignError, FileNotFoundError):
    """A component is missing or does not fit the profile; the message names the file."""

    reason: str = "model_store"


def save_component(path: Path, kind: str, state: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write one component file (states moved to CPU)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"kind": kind, "meta": meta, "state": state}, path)


def _frozen(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class ModelStore:
    """Loads the components of one profile's model directory, caching what it built."""

    def __init__(self, root: Path | str, profile: Profile | str | None = None) -> None:
        self.root = Path(root)
        name = profile if isinstance(profile, str) else None
        self.profile = profile if isinstance(profile, Profile) else \
            load_profile(name or self.root.name)
        self._files: dict[str, dict[str, Any]] = {}

    def path(self, name: str) -> Path:
        return self.root / f"{name}.pt"

    def has(self, name: str) -> bool:
        return self.path(name).exists()

    def file(self, name: str) -> dict[str, Any]:
        """The raw content of component `name` (ModelStoreError when missing/corrupt)."""
        if name not in self._files:
            path = self.path(name)
            if not path.exists():
                raise ModelStoreError(f"{path}: missing (run `make models` or `codealign train`)")
            try:
                data = torch.load(path, map_location="cpu", weights_only=False)
            except Exception as exc:  # torch raises many types for corrupt files
                raise ModelStoreError(f"{path}: unreadable ({exc})") from exc
            if data.get("meta", {}).get("profile") not in (None, self.profile.name):
                raise ModelStoreError(f"{path}: trained for profile {data['meta']['profile']}, "
                                      f"not {self.profile.name}")
            self._files[name] = data
        return self._files[name]

    def meta(self, name: str) -> dict[str, Any]:
        return self.file(name)["meta"]

    def _load(self, module: nn.Module, name: str, *keys: str) -> nn.Module:
        state = self.file(name)["state"]
        for key in keys:
            state = state[key]
        module.load_state_dict(state)
        return _frozen(module)

    def encoder(self, modality: str) -> nn.Module:
        """Stage-a encoder of `modality` (frozen)."""
        return self._load(build_encoder(modality, self.profile), f"base_{modality}", "encoder")

    def base_backend(self, modality: str) -> DetectionBackend:
        """Stage-a fusion backend + head of `modality` (frozen)."""
        return self._load(DetectionBackend(self.profile), f"base_{modality}", "backend")

    def codespace_name(self, group: str, variant: str = "") -> str:
        return f"codespace_{group}{variant}"

    def adapter(self, group: str, modality: str, variant: str = "") -> Adapter:
        adapter = Adapter(self.profile.channels, self.profile.adapter_blocks)
        return self._load(adapter, self.codespace_name(group, variant), "adapters", modality)

    def codebook(self, group: str, variant: str = "") -> Codebook:
        name = self.codespace_name(group, variant)
        num_codes = int(self.meta(name)["num_codes"])
        return self._load(Codebook(num_codes, self.profile.channels), name, "codebook")

    def group_backend(self, group: str, variant: str = "") -> DetectionBackend:
        return self._load(DetectionBackend(self.profile), self.codespace_name(group, variant),
                          "backend")

    def translator(self, group: str, variant: str = "uct") -> UnifiedCodeTranslator:
        name = f"uct_{group}" if variant == "uct" else f"uct_{group}_{variant}"
        meta = self.meta(name)
        uct = UnifiedCodeTranslator(self.profile.channels, dict(meta["targets"]),
                                    hidden=int(meta["hidden"]), variant=meta["variant"],
                                    head=meta.get("head", "linear"),
                                    gate=meta.get("gate", "stem"))
        return self._load(uct, name, "translator")

    def e2e(self, mode: str) -> tuple[dict[str, nn.Module], DetectionBackend]:
        """Encoders per modality and the shared backend of the end-to-end model `e2e_<mode>`
        (train/e2e.py, the Table 2 analog)."""
        name = f"e2e_{mode}"
        encoders = {m: self._load(build_encoder(m, self.profile), name, "encoders", m)
                    for m in self.meta(name)["modalities"]}
        return encoders, self._load(DetectionBackend(self.profile), name, "backend")

    def heal_encoder(self, modality: str, group: str) -> nn.Module:
        return self._load(build_encoder(modality, self.profile), f"heal_{modality}_{group}",
                          "encoder")
