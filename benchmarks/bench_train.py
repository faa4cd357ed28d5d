"""Training throughput: optimiser steps/s of one stage at one batch size, per device and
DataLoader worker count (the stage code of `codealign train`, its own group's frames).

    python benchmarks/bench_train.py --modality m1 --batch 2 --steps 60 --workers 0,2
    python benchmarks/bench_train.py --device cuda --profile opv2v --steps 300 --workers 4
    python benchmarks/bench_train.py --modality m2 --images always --workers 0   # old loading

Loading is timed twice (load_first_s: ASCII clouds parsed and their binary cache written;
load_again_s: from the cache), apart from the steps.

`--workers 0` builds every batch in the training process (the loop before the DataLoader;
the same script run against an older source tree with PYTHONPATH measures that tree).
Writes --json (default benchmarks/results/train.json) and a Markdown table beside it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results"


def _data(root: Path | None, scenes: int) -> Path:
    """The dataset root; generated (small, OPV2V layout) into a temp dir when absent."""
    if root is not None and (root / "train").is_dir():
        return root
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    subprocess.run([sys.executable, "-m", "codealign_ros", "synth", "--out", str(tmp),
                    "--format", "opv2v", "--scenes", str(scenes), "--frames", "10",
                    "--agents", "3", "--rsu", "--seed", "100", "--split", "train"],
                   check=True, capture_output=True)
    return tmp


def measure(args: argparse.Namespace, data_root: Path, workers: int) -> dict[str, Any]:
    """Steps/s (after `--warmup` steps) of the base stage of `args.modality`."""
    from codealign_ros.config import lookup
    from codealign_ros.data.assignment import isolation_split
    from codealign_ros.data.opv2v import OPV2VDataset
    try:
        from codealign_ros.config.groups import group_of, groups
        from codealign_ros.config.profiles import load_profile
    except ImportError:  # a source tree before the config layer (the "before" runs)
        from codealign_ros.models.profile import load_profile
        from codealign_ros.train.cli import group_of, groups
    from codealign_ros.train import stages
    from codealign_ros.train.loop import LoopConfig
    from codealign_ros.train.samples import load_frames

    profile = load_profile(args.profile)
    group = group_of(args.modality)
    split = isolation_split(OPV2VDataset(data_root, "train").scenarios(), groups(), 0.0, 0)
    cameras = args.images == "always" or lookup("modalities", "modalities", args.modality,
                                                  "sensor") == "camera"
    loads = []
    for _ in range(2):  # first: parses the ASCII clouds; second: the binary cache when any
        t0 = time.perf_counter()
        frames = {group: load_frames(data_root, "train", split["train"][group], cameras)}
        loads.append(time.perf_counter() - t0)
    kw: dict[str, Any] = {"batch_size": args.batch, "seed": 0}
    if args.max_agents is not None:
        kw["max_agents"] = args.max_agents
    fields = {f.name for f in dataclasses.fields(stages.StageData)}
    if "workers" in fields:  # this tree has the DataLoader
        from codealign_ros.train.distributed import setup

        kw.update(workers=workers, accel=setup(args.device, args.amp))
    elif workers:
        raise SystemExit("this source tree has no DataLoader: use --workers 0")
    data = stages.StageData(profile, frames, **kw)
    cfg = LoopConfig(steps=args.steps, progress=False, checkpoint_every=10**9)
    cuda = torch.cuda.is_available() and args.device != "cpu"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        stages.train_base(data, args.modality, Path(out), cfg)
        wall = time.perf_counter() - started
        ckpt = Path(out) / "checkpoints" / f"base_{args.modality}.ckpt"
        history = torch.load(ckpt, map_location="cpu", weights_only=False)["history"]
    timed = history[args.warmup:] or history
    seconds = sum(h["seconds"] for h in timed)
    waiting = sum(h.get("data_seconds", 0.0) for h in timed)
    accel = kw.get("accel")
    return {"tree": str(Path(stages.__file__).resolve().parents[2]),
            "loop": "DataLoader" if accel else "inline (batches built in the step)",
            "profile": args.profile, "modality": args.modality,
            "device": str(accel.device) if accel else "cpu",
            "amp": str(accel.amp_dtype) if accel and accel.amp_dtype else "off",
            "workers": workers, "batch": args.batch, "steps": len(history),
            "images": cameras, "max_agents": data.max_agents, "frames": len(frames[group]),
            "load_first_s": round(loads[0], 2), "load_again_s": round(loads[1], 2),
            "timed_steps": len(timed), "steps_per_s": round(len(timed) / seconds, 3),
            "data_wait_share": round(waiting / seconds, 3) if "data_seconds" in timed[0]
            else None, "wall_s": round(wall, 1),
            "gpu_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda
            else None}


def _table(rows: list[dict[str, Any]]) -> str:
    cols = ["loop", "profile", "modality", "device", "amp", "workers", "batch", "timed_steps",
            "steps_per_s", "data_wait_share", "gpu_peak_mb", "max_agents", "images", "frames",
            "load_first_s", "load_again_s"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="mini")
    p.add_argument("--modality", default="m1", help="base stage of this modality")
    p.add_argument("--data", type=Path, default=Path("data/mini-v2x"),
                   help="OPV2V-layout root (a small one is generated when absent)")
    p.add_argument("--scenes", type=int, default=4, help="scenes when generating data")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=5, help="first steps not timed")
    p.add_argument("--workers", default="0,2", help="comma list of DataLoader worker counts")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    p.add_argument("--amp", action="store_true")
    p.add_argument("--max-agents", type=int, default=None,
                   help="agents per sample (default: the tree's default; this tree: as "
                        "evaluation, config/groups.yaml data.max_agents)")
    p.add_argument("--images", choices=("auto", "always"), default="auto",
                   help="load camera images only for a camera modality (auto, as `codealign "
                        "train`) or always (as before)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--json", type=Path, default=RESULTS / "train.json")
    p.add_argument("--append", action="store_true", help="add rows to an existing --json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = _data(args.data, args.scenes)
    rows = json.loads(args.json.read_text())["rows"] if args.append and args.json.exists() \
        else []
    for w in (int(v) for v in args.workers.split(",")):
        rows.append({**measure(args, root, w), "threads": args.threads})
        print(json.dumps(rows[-1]), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    args.json.with_suffix(".md").write_text(_table(rows))
    print(_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
