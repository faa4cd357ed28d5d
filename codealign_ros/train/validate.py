"""Validation AP of a component being trained: during training (every N steps, the curve of
train/curves.py) and at the end of a stage, into its TensorBoard run and model card."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from codealign_ros.data.types import CooperativeFrame
from codealign_ros.config.profiles import Profile
from codealign_ros.config.groups import groups
from codealign_ros.models.store import ModelStore
from codealign_ros.train.evaluate import Variant, evaluate, parse_setting

LOG = logging.getLogger("codealign.train")


def validation_job(stage: str, kw: dict[str, Any]) -> tuple[str, dict[str, Any], Variant]:
    """(method, setting, variant) that exercises the component a stage job trained."""
    gs = groups()
    if stage == "base":
        return "single", {"ego": kw["modality"], "others": [kw["modality"]]}, Variant()
    if stage == "codespace":
        mods = gs[kw["group"]]
        return "codealign", {"ego": mods[0], "others": [mods[-1]]}, \
            Variant(codebook=kw.get("variant", ""))
    if stage == "translator":
        target = next(g for g in gs if g != kw["source"])
        return "codealign", {"ego": gs[target][0], "others": [gs[kw["source"]][0]]}, \
            Variant(translator=kw.get("variant", "uct"))
    if stage == "e2e":
        return f"e2e_{kw['mode']}", parse_setting(kw["setting"]), Variant()
    return "heal", {"ego": gs[kw["group"]][0], "others": [kw["modality"]]}, Variant()


def validation_aps(out: Path, profile: Profile, stage: str, kw: dict[str, Any],
                   frames: list[CooperativeFrame]) -> dict[str, float]:
    """{"val_ap30", "val_ap50", "val_ap70"} of the component files now in `out` ({} when the
    evaluation fails, e.g. an upstream component is missing: logged, never fatal)."""
    method, setting, variant = validation_job(stage, kw)
    try:
        res = evaluate(ModelStore(out, profile), method, setting, frames, variant,
                       progress=False)
    except Exception as exc:  # a missing upstream component must not lose the training
        LOG.warning("%s %s: validation skipped (%s)", stage, kw, exc)
        return {}
    return {f"val_{k}": float(res[k]) for k in ("ap30", "ap50", "ap70")}


def during_training(out: Path, profile: Profile, stage: str, kw: dict[str, Any],
                    frames: list[CooperativeFrame]) -> Callable[[Callable[[], None]],
                                                                Callable[[], dict[str, float]]]:
    """The validation hook of a stage: given the stage's `save` (writes the component file
    from the modules being trained), a function returning the AP of those weights now."""
    def bind(save: Callable[[], None]) -> Callable[[], dict[str, float]]:
        def run() -> dict[str, float]:
            save()
            return validation_aps(out, profile, stage, kw, frames)
        return run
    return bind


def card_entry(stage: str, kw: dict[str, Any], aps: dict[str, float], frames: int) -> dict[str, Any]:
    """The model-card line of a final validation AP."""
    method, setting, _ = validation_job(stage, kw)
    text = " / ".join(f"{100 * aps[k]:.1f}" for k in ("val_ap30", "val_ap50", "val_ap70"))
    return {"Validation AP30/50/70": f"{text} ({method}, {setting['ego']}+"
            f"{','.join(setting['others'])}, {frames} frames)"}
