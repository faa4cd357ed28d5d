"""End-of-stage validation AP of a freshly trained component, into its TensorBoard run."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from codealign_ros.data.types import CooperativeFrame
from codealign_ros.models.profile import Profile
from codealign_ros.models.store import ModelStore, groups
from codealign_ros.train.evaluate import Variant, evaluate
from codealign_ros.train.tb import RunLog, run_dir

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
    return "heal", {"ego": gs[kw["group"]][0], "others": [kw["modality"]]}, Variant()


def log_validation(out: Path, profile: Profile, stage: str, kw: dict[str, Any], result: Any,
                   frames: list[CooperativeFrame], logdir: Path | None) -> dict[str, Any]:
    """AP30/50/70 of the component on `frames`, logged as val/ap* at the stage's last step;
    returns the model-card entries. A failed evaluation is logged, never fatal."""
    method, setting, variant = validation_job(stage, kw)
    try:
        res = evaluate(ModelStore(out, profile), method, setting, frames, variant,
                       progress=False)
    except Exception as exc:  # a missing upstream component must not lose the training
        LOG.warning("%s: validation skipped (%s)", result.name, exc)
        return {}
    aps = {f"val/{k}": float(res[k]) for k in ("ap30", "ap50", "ap70")}
    log = RunLog(run_dir(logdir, result.name) if logdir else None)
    log.scalars(max(result.steps - 1, 0), aps)
    log.close()
    text = " / ".join(f"{100 * v:.1f}" for v in aps.values())
    LOG.info("%s: validation AP30/50/70 %s (%s %s+%s, %d frames)", result.name, text, method,
             setting["ego"], ",".join(setting["others"]), len(frames))
    return {"Validation AP30/50/70": f"{text} ({method}, {setting['ego']}+"
            f"{','.join(setting['others'])}, {len(frames)} frames)"}
