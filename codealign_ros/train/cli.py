"""`codealign train`: run the training stages, write components, run configs and model cards."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from codealign_ros.config import lookup
from codealign_ros.config.groups import group_of, groups
from codealign_ros.train.cards import git_commit, refresh_metrics, write_card

if TYPE_CHECKING:
    from codealign_ros.models.store import ModelStore
    from codealign_ros.train import stages
    from codealign_ros.train.distributed import Accel
    from codealign_ros.train.loop import LoopConfig

LOG = logging.getLogger("codealign.train")
EVAL_DOC = """Evaluate one method (single, late, noalign, heal, codealign) on one setting of
config/groups.yaml under the paper's protocol: AP at BEV IoU 0.3/0.5/0.7, trainable
parameters (TP) and bytes per peer message."""
TRAIN_DOC = """Train CodeAlign at a profile's scale on a dataset's isolated group split:
a) base detectors per modality, b) code spaces per group, c) Unified Code Translators per
source group, d) HEAL-style baselines; `--ablation` adds codebook sizes 4/64 and the
one-to-one / multi-head translators. Checkpoints resume after an interruption."""
METHODS = ("single", "late", "noalign", "heal", "codealign")
STAGES = ("base", "codespace", "translator", "heal", "ablation", "e2e")
ABLATION_CODES = (4, 64)
ABLATION_TRANSLATORS = ("multi_head", "one_to_one")
ABLATION_SOURCE = "g2"
# Table 7 analog: this group's code space also with the other backend strategy, codespace_g2_<mode>
ABLATION_BACKEND_GROUP = "g2"


def heal_pairs() -> list[tuple[str, str]]:
    """(modality, ego group) pairs the configured settings need for the HEAL baseline."""
    pairs = set()
    for s in lookup("groups", "settings").values():
        for m in s["others"]:
            if m != s["ego"]:
                pairs.add((m, group_of(s["ego"])))
    return sorted(pairs)


def plan(stage_names: list[str], backend_mode: str = "auto", init: str = "kmeans",
         backends: dict[str, str] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(stage, keyword arguments) of every training job, in dependency order; code spaces
    with codebook `init` and each group's backend mode: `backends` (the profile's
    `train.codespace_backend`) unless `backend_mode` forces one (codespace.train_codespace)."""
    from codealign_ros.train.codespace import backend_trained, group_backend_modes

    modes = group_backend_modes({"codespace_backend": backends or {}}, backend_mode)
    init_kw = {"init": init} if init != "kmeans" else {}

    def space(g: str, mode: str | None = None, **kw: Any) -> dict[str, Any]:
        mode = mode or modes[g]
        return {"group": g, **({"backend_mode": mode} if mode != "auto" else {}), **kw,
                **init_kw}
    jobs: list[tuple[str, dict[str, Any]]] = []
    mods = [m for ms in groups().values() for m in ms]
    if "base" in stage_names:
        jobs += [("base", {"modality": m}) for m in mods]
    if "codespace" in stage_names:
        jobs += [("codespace", space(g)) for g in groups()]
    if "translator" in stage_names:
        jobs += [("translator", {"source": g}) for g in groups()]
    if "heal" in stage_names:
        jobs += [("heal", {"modality": m, "group": g}) for m, g in heal_pairs()]
    if "ablation" in stage_names:
        jobs += [("codespace", space("g1", num_codes=k, variant=f"_k{k}"))
                 for k in ABLATION_CODES]
        jobs += [("translator", {"source": ABLATION_SOURCE, "variant": v})
                 for v in ABLATION_TRANSLATORS]
        g = ABLATION_BACKEND_GROUP
        other = "frozen" if backend_trained(modes[g], groups()[g]) else "trained"
        jobs.append(("codespace", space(g, other, variant=f"_{other}")))
    if "e2e" in stage_names:
        from codealign_ros.train.e2e import MODES, SETTING

        jobs += [("e2e", {"mode": mode, "setting": SETTING}) for mode in MODES]
    return jobs


def rewrite_cards(out: Path) -> int:
    """Model cards again from the run configs and checkpoint histories in `out`; cards of
    components without their checkpoint get their Metrics section refreshed."""
    import torch

    from codealign_ros.train import stages
    from codealign_ros.train.loop import smoothed

    count = 0
    for run_file in sorted((out / "checkpoints").glob("*.yaml")):
        run = yaml.safe_load(run_file.read_text())
        kw = run["kwargs"]
        name = _component_name(run["stage"], kw)
        ckpt, path = out / "checkpoints" / f"{name}.ckpt", out / f"{name}.pt"
        if not (ckpt.exists() and path.exists()):
            card = path.with_suffix(".md")  # shipped without its checkpoint: metrics only
            count += int(path.exists() and card.exists() and refresh_metrics(card, name))
            continue
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        history = state["history"]
        first, last = smoothed(history)
        trainable = sum(p.numel() for _, p in _trainable_state(state, run["stage"], kw))
        result = stages.StageResult(name, path, len(history),
                                    sum(h.get("seconds", 0.0) for h in history), first, last,
                                    trainable, history=history)
        write_card(path, result, run)
        count += 1
    return count


def _component_name(stage: str, kw: dict[str, Any]) -> str:
    if stage == "base":
        return f"base_{kw['modality']}"
    if stage == "codespace":
        return f"codespace_{kw['group']}{kw.get('variant', '')}"
    if stage == "translator":
        variant = kw.get("variant", "uct")
        return f"uct_{kw['source']}" + ("" if variant == "uct" else f"_{variant}")
    if stage == "e2e":
        return f"e2e_{kw['mode']}"
    return f"heal_{kw['modality']}_{kw['group']}"


def _trainable_state(state: dict[str, Any], stage: str,
                     kw: dict[str, Any]) -> list[tuple[str, Any]]:
    """(name, tensor) of the parameters a stage trained, from its checkpoint."""
    modules = state["modules"]
    from codealign_ros.train.codespace import backend_trained

    keep = {"base": ("encoder", "backend"), "codespace": ("adapters", "codebook"),
            "translator": ("translator",), "heal": ("encoder",),
            "e2e": ("encoders", "backend")}[stage]
    if stage == "codespace" and backend_trained(kw.get("backend_mode", "auto"),
                                                groups()[kw["group"]]):
        keep = (*keep, "backend")  # e.g. a multi-modality group trains its shared backend
    return [(k, v) for m in keep for k, v in modules[m].items()
            if v.is_floating_point() and "running_" not in k and "usage" not in k]


def run_train(args: argparse.Namespace) -> int:
    """Train the chosen stages (see `codealign train --help`); under `torchrun` every rank
    runs this, rank 0 alone writing components, cards, run configs and TensorBoard logs."""
    if args.cards_only:
        print(f"rewrote {rewrite_cards(Path(args.out))} model cards in {args.out}")
        return 0
    from codealign_ros.train import distributed

    if args.config:
        for key, value in yaml.safe_load(args.config.read_text()).items():
            setattr(args, key.replace("-", "_"), value)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        accel = distributed.setup(args.device, args.amp)
    except distributed.DeviceError as exc:
        print(f"codealign train: {exc}", file=sys.stderr)
        return 2
    try:
        return _train(args, accel)
    finally:
        distributed.teardown()


def _train(args: argparse.Namespace, accel: "Accel") -> int:
    from codealign_ros.data.assignment import isolation_split
    from codealign_ros.config.profiles import load_profile
    from codealign_ros.models.store import ModelStore
    from codealign_ros.train import stages
    from codealign_ros.train.codespace import step_cap
    from codealign_ros.train.distributed import barrier
    from codealign_ros.train.loop import LoopConfig
    from codealign_ros.train.samples import load_frames
    from codealign_ros.train.validate import card_entry, during_training
    import torch

    torch.set_num_threads(args.threads)
    profile = load_profile(args.profile)
    steps = dict(profile["train"]["steps"])
    out = Path(args.out)
    logdir = Path(args.logdir) if args.logdir else out / "runs"
    if accel.main:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    names = list(STAGES[:4]) if args.stage == "all" else [args.stage]
    if args.stage == "all" and args.ablation:
        names.append("ablation")
    scenarios = _scenarios(Path(args.data), args.split)
    split = isolation_split(scenarios, groups(), 0.0, args.seed)["train"]
    LOG.info("isolated training split: %s", json.dumps(split))
    if args.workers < 0:
        args.workers = 0 if not accel.cuda else max(1, min(8, (os.cpu_count() or 2)
                                                           // accel.world - 1))
    frames: dict[str, list] = {}
    data = stages.StageData(profile, frames, batch_size=args.batch, seed=args.seed,
                            max_agents=args.max_agents, workers=args.workers, accel=accel,
                            augment=stages.Augment() if args.augment else None)
    eval_every = args.eval_every if args.eval_every >= 0 else int(
        profile["train"].get("eval_every", 0))
    LOG.info("training on %s, batch %d per process, %d DataLoader workers", accel.describe(),
             args.batch, args.workers)
    store = ModelStore(out, profile)
    only = set(args.only.split(",")) if args.only else None
    # every rank must agree on validating (rank 0 evaluates, the others wait for its verdict)
    validating = args.val_frames > 0 and (Path(args.data) / args.val_split).is_dir()
    if args.val_frames > 0 and not validating:
        LOG.warning("no %s split under %s: no validation AP in the logs", args.val_split,
                    args.data)
    val = _validation_frames(args) if accel.main and validating else []
    loaded: dict[tuple[str, bool], list] = {}
    for stage, kwargs in plan(names, args.codespace_backend, args.codebook_init,
                              profile["train"].get("codespace_backend")):
        label = "_".join(str(v) for v in kwargs.values())
        if only and not only & {str(v) for v in kwargs.values()}:
            continue
        needed, cameras = _groups_used(stage, kwargs), _needs_cameras(stage, kwargs)
        for g in needed:
            if (g, cameras) not in loaded:
                started = time.perf_counter()
                loaded[g, cameras] = load_frames(args.data, args.split, split[g], cameras)
                LOG.info("loaded %d frames of group %s (%s) in %.1f s", len(loaded[g, cameras]),
                         g, "with images" if cameras else "LiDAR only",
                         time.perf_counter() - started)
            frames[g] = loaded[g, cameras]
        budget = step_cap(stage, kwargs, steps)
        cfg = LoopConfig(steps=int(args.steps or steps[budget]),
                         lr=float(profile["train"]["lr"]),
                         weight_decay=float(profile["train"]["weight_decay"]), seed=args.seed,
                         progress=not args.no_progress, logdir=str(logdir),
                         eval_every=eval_every, plateau_evals=args.plateau,
                         plateau_gain=args.plateau_gain)
        run = {"stage": stage, "kwargs": kwargs, "profile": profile.name, "data": str(args.data),
               "split": args.split, "groups_used": needed,
               "scenarios": [s for g in needed for s in split[g]],
               "batch": args.batch * accel.world, "lr": cfg.lr, "steps": cfg.steps,
               "max_agents": data.max_agents, "seed": args.seed, "commit": git_commit(),
               "eval_every": eval_every, "plateau": cfg.plateau.describe(),
               "augment": str(data.augment) if data.augment else "off",
               "val_split": args.val_split, "val_frames": len(val),
               "host": args.host or accel.describe(), "device": str(accel.device),
               "amp": str(accel.amp_dtype or "off"), "processes": accel.world,
               "logdir": str(logdir)}
        if accel.main:
            (out / "checkpoints" / f"{stage}_{label}.yaml").write_text(yaml.safe_dump(run))
        started = time.perf_counter()
        data.validate = during_training(out, profile, stage, kwargs, val) if validating \
            else None
        result = _run_stage(stage, kwargs, data, store, out, cfg)
        barrier()  # every rank waits for rank 0's component before the next stage loads it
        store._files.clear()  # newly written components replace cached ones
        if accel.main:
            points = [h for h in result.history if "val_ap50" in h]
            if points:
                result.extra.update(card_entry(stage, kwargs, points[-1], len(val)))
            write_card(result.path, result, run)
        LOG.info("%s done in %.0f s", result.name, time.perf_counter() - started)
    return 0


def _validation_frames(args: argparse.Namespace) -> list:
    """Frames for the end-of-stage validation AP (`--val-frames` of `--val-split`)."""
    from codealign_ros.train.samples import load_frames

    frames = load_frames(Path(args.data), args.val_split)
    return frames[:: max(1, len(frames) // args.val_frames)][: args.val_frames]


def _scenarios(root: Path, split: str) -> list[str]:
    from codealign_ros.data.opv2v import OPV2VDataset

    return OPV2VDataset(root, split).scenarios()


def _needs_cameras(stage: str, kw: dict[str, Any]) -> bool:
    """Whether a job trains on a camera modality (else its frames load without images)."""
    if stage == "e2e":
        return False  # LiDAR settings only (train/e2e.py)
    mods = [kw["modality"]] if stage in ("base", "heal") else groups()[kw.get("group")
                                                                       or kw["source"]]
    return any(lookup("modalities", "modalities", m, "sensor") == "camera" for m in mods)


def _setting_modalities(kw: dict[str, Any]) -> list[str]:
    from codealign_ros.train.evaluate import parse_setting

    s = parse_setting(kw["setting"])
    return list(dict.fromkeys([s["ego"], *s["others"]]))


def _groups_used(stage: str, kw: dict[str, Any]) -> list[str]:
    if stage == "e2e":
        return list(dict.fromkeys(group_of(m) for m in _setting_modalities(kw)))
    if stage in ("base", "heal"):
        return [group_of(kw["modality"])]
    return [kw.get("group") or kw["source"]]


def _run_stage(stage: str, kw: dict[str, Any], data: "stages.StageData", store: "ModelStore",
               out: Path, cfg: "LoopConfig") -> "stages.StageResult":
    from codealign_ros.train import codespace, stages

    if stage == "base":
        return stages.train_base(data, kw["modality"], out, cfg)
    if stage == "codespace":
        return codespace.train_codespace(data, store, kw["group"], out, cfg,
                                         kw.get("num_codes"), kw.get("variant", ""),
                                         kw.get("backend_mode", "auto"),
                                         kw.get("init", "kmeans"))
    if stage == "translator":
        return stages.train_translator(data, store, kw["source"], out, cfg,
                                       kw.get("variant", "uct"))
    if stage == "e2e":
        from codealign_ros.train.e2e import train_e2e

        return train_e2e(data, _setting_modalities(kw), kw["mode"], out, cfg)
    return stages.train_heal(data, store, kw["modality"], kw["group"], out, cfg)


def add_train_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train CodeAlign stages (a-d) and write model components",
                       description=TRAIN_DOC,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=("all", *STAGES), default="all")
    p.add_argument("--profile", default="mini", help="config/profiles.yaml profile")
    p.add_argument("--data", type=Path, default=Path("data/mini-v2x"),
                   help="dataset root (OPV2V layout; generated mini-V2X by default)")
    p.add_argument("--split", default="train")
    p.add_argument("--out", type=Path, default=Path("models/mini"))
    p.add_argument("--only", help="comma list: train only jobs naming these (m1,g2,...)")
    p.add_argument("--steps", type=int, default=0, help="override the profile's steps")
    p.add_argument("--batch-size", "--batch", dest="batch", type=int, default=2,
                   help="cooperative samples per step and process (torchrun: x processes)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto: CUDA when available (under torchrun: the rank's local GPU)")
    p.add_argument("--amp", action="store_true",
                   help="mixed precision on CUDA (bf16 autocast, else fp16 + grad scaler); "
                        "ignored on the CPU")
    p.add_argument("--workers", type=int, default=-1,
                   help="DataLoader worker processes building batches (0: in the trainer; "
                        "default: 0 on the CPU, where the trainer needs the cores, else "
                        "up to 8 per GPU process)")
    p.add_argument("--logdir", type=Path,
                   help="TensorBoard root, one run per component (default: OUT/runs)")
    p.add_argument("--val-split", default="validate",
                   help="split for the end-of-stage validation AP (OPV2V: validate)")
    p.add_argument("--val-frames", type=int, default=8,
                   help="frames of --val-split evaluated after each stage (0: none)")
    p.add_argument("--eval-every", type=int, default=-1,
                   help="validation AP every N steps during each stage, for the learning "
                        "curve in the model card (0: at the end only; default: the profile's "
                        "train.eval_every, else 0)")
    p.add_argument("--plateau", type=int, default=0, metavar="K",
                   help="early stop when the best val AP50 of the last K evaluations is at "
                        "most --plateau-gain above the best before them (0: off)")
    p.add_argument("--plateau-gain", type=float, default=0.005,
                   help="AP50 gain (fraction, 0.005 = 0.5 AP) that counts as progress")
    p.add_argument("--codespace-backend", choices=("auto", "frozen", "trained"),
                   default="auto",
                   help="code-space stage: train the group backend or keep the base one "
                        "frozen for every group (auto: the profile's train.codespace_backend "
                        "per group, else the paper's rule, trained only for multi-modality "
                        "groups); recorded in the component meta, run config and model card")
    p.add_argument("--codebook-init", choices=("kmeans", "revive"), default="kmeans",
                   help="codebook start: k-means over a few batches of adapted features, "
                        "or random codes revived from one batch (the former behaviour)")
    p.add_argument("--augment", action="store_true",
                   help="global flip / rotation (+-45 deg) / scaling (0.95-1.05) applied alike "
                        "to every agent's cloud, pose and the GT of a sample (LiDAR samples "
                        "only; train/augment.py)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-agents", type=int, default=None,
                   help="agents per training sample, ego included (0: every agent in comm "
                        "range; default: what evaluation fuses, config/groups.yaml "
                        "data.max_agents)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: run two jobs side by side on 2 cores instead)")
    p.add_argument("--ablation", action="store_true", help="with --stage all: ablations too")
    p.add_argument("--config", type=Path, help="YAML of these options (a run config)")
    p.add_argument("--host", default="",
                   help="recorded in the model cards (default: the device in words)")
    p.add_argument("--cards-only", action="store_true",
                   help="only rewrite the model cards from the run configs and checkpoints")
    p.add_argument("--no-progress", action="store_true")
    return p


def add_eval_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("eval", help="evaluate a method on a dataset split (AP, TP, payload)",
                       description=EVAL_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=METHODS, default="codealign")
    p.add_argument("--data", type=Path, default=Path("data/mini-v2x"),
                   help="dataset root (OPV2V layout or DAIR-V2X)")
    p.add_argument("--split", default="test", help="OPV2V split directory")
    p.add_argument("--setting", default="[m1]+[m2]",
                   help="a name of config/groups.yaml settings, or ego+others (m1+m4,m2)")
    p.add_argument("--models", type=Path, default=Path("models/mini"))
    p.add_argument("--codebook-variant", default="", help="codespace suffix, e.g. _k4")
    p.add_argument("--translator", default="uct", choices=("uct", "multi_head", "one_to_one"))
    p.add_argument("--peers", default="all", choices=("all", "none", "zero"),
                   help="none: the ego alone; zero: every peer's features all zero (do no harm)")
    p.add_argument("--max-frames", type=int, default=0, help="0: all")
    p.add_argument("--json", type=Path, help="write the result here")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--no-progress", action="store_true")
    return p




def run_eval_cli(args: argparse.Namespace) -> int:
    from codealign_ros.train.evaluate import run_eval

    return run_eval(args)
