"""A model directory of randomly initialised components, in the ModelStore file format.

For plumbing, deployment and fault tests that need "trained" weights without training:
the real classes are instantiated with a fixed seed and saved with `store.save_component`
exactly as `train/stages.py` does. Random weights give meaningless detections.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from codealign_ros.models.adapter import Adapter
from codealign_ros.models.detector import DetectionBackend
from codealign_ros.models.codebook import Codebook
from codealign_ros.models.encoders import build_encoder
from codealign_ros.config.profiles import Profile, load_profile
from codealign_ros.config.groups import group_of, groups
from codealign_ros.models.store import save_component
from codealign_ros.models.translator import UnifiedCodeTranslator

__all__ = ["make_random_store"]


def _backend(profile: Profile, score_bias: float | None, score_gain: float) -> DetectionBackend:
    backend = DetectionBackend(profile).eval()
    if score_bias is not None:  # random heads score ~0.01 (focal prior): no boxes at all
        with torch.no_grad():
            backend.head.cls.weight.mul_(score_gain)
            backend.head.cls.bias.fill_(score_bias)
    return backend


def make_random_store(path: Path | str, profile: str | Profile = "mini",
                      modalities: Sequence[str] = ("m1", "m2"), seed: int = 0,
                      score_bias: float | None = None, score_gain: float = 1.0,
                      translators: bool = True) -> Path:
    """Write base_<m>, codespace_<g> (g: groups of `modalities`) and, with two or more groups
    and `translators`, uct_<g> files into `path`; returns `path`.

    `score_bias` overrides the class bias of every detection head and `score_gain` scales its
    class weights (random heads give near-constant scores below the threshold, so no boxes;
    e.g. gain 300, bias -4 lets ~2 % of the anchors pass at mini scale).
    """
    prof = load_profile(profile) if isinstance(profile, str) else profile
    root = Path(path)
    torch.manual_seed(seed)
    meta = {"profile": prof.name, "steps": 0, "random_init": True}
    for m in modalities:
        save_component(root / f"base_{m}.pt", "base",
                       {"encoder": build_encoder(m, prof).state_dict(),
                        "backend": _backend(prof, score_bias, score_gain).state_dict()},
                       {**meta, "modality": m, "group": group_of(m)})
    used = [g for g in groups() if any(group_of(m) == g for m in modalities)]
    codebooks = {}
    for g in used:
        mods = [m for m in modalities if group_of(m) == g]
        codebooks[g] = Codebook(prof.num_codes, prof.channels)
        save_component(root / f"codespace_{g}.pt", "codespace", {
            "adapters": {m: Adapter(prof.channels, prof.adapter_blocks).state_dict() for m in mods},
            "codebook": codebooks[g].state_dict(),
            "backend": _backend(prof, score_bias, score_gain).state_dict()},
            {**meta, "group": g, "modalities": mods, "num_codes": prof.num_codes,
             "codebook_hash": codebooks[g].weights_hash(), "backend_trained": len(mods) > 1})
    if not translators or len(used) < 2:
        return root
    for source in used:
        targets = {t: codebooks[t].num_codes for t in used if t != source}
        uct = UnifiedCodeTranslator(prof.channels, targets, hidden=prof.channels)
        save_component(root / f"uct_{source}.pt", "translator", {"translator": uct.state_dict()},
                       {**meta, "source": source, "targets": targets,
                        "target_hashes": {t: codebooks[t].weights_hash() for t in targets},
                        "hidden": prof.channels, "variant": "uct"})
    return root
