"""One prepared GPU check (issue 10 point 6): data, mini retrain on the device, opv2v-profile
steps/s per stage on the device vs the CPU (same stage, same batch), GPU memory.

    python tools/gpu_train_bench.py --out "$OUT/results"                 # on a GPU machine
    python tools/gpu_train_bench.py --tiny --device cpu --out /tmp/gtb   # CPU smoke run

1. generates the mini-V2X data (`tools/make_data.sh`; `--tiny`: a few frames);
2. retrains every `mini` component (`--ablation`) on `--device`, then evaluates
   codealign on [m1]+[m2] (AP, wall time);
3. `--big-profile` (opv2v): every dependency 2 steps, then each measured stage (base m1,
   base m4, codespace g2, translator g2, heal m2->g1) for `--steps` on `--device` and
   `--cpu-steps` on the CPU (`--tiny`: mini, no ablations, a few steps); steps/s from the per-step times after `--warmup`, peak GPU MB.
Writes OUT/gpu_train.json, OUT/gpu_train.md and the logs of every command under OUT/logs.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
MEASURED = [("base", "m1", "base_m1"), ("base", "m4", "base_m4"),
            ("codespace", "g2", "codespace_g2"), ("translator", "g2", "uct_g2"),
            ("heal", "m2", "heal_m2_g1")]


class Runner:
    """Runs commands with their output in OUT/logs; a failure stops the script."""

    def __init__(self, out: Path) -> None:
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str, *cmd: str) -> float:
        started = time.perf_counter()
        with (self.logs / f"{name}.log").open("w") as log:
            print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(cmd)}", flush=True)
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        if proc.returncode:
            tail = (self.logs / f"{name}.log").read_text()[-2000:]
            raise SystemExit(f"{name} failed ({proc.returncode}):\n{tail}")
        return time.perf_counter() - started


def train(run: Runner, name: str, out: Path, data: Path, profile: str, device: str,
          *extra: str) -> float:
    return run(name, sys.executable, "-m", "codealign_ros", "train", "--profile", profile,
               "--data", str(data), "--out", str(out), "--device", device, "--no-progress",
               "--val-frames", "0", *extra)


def rate(ckpt: Path, warmup: int) -> dict[str, Any]:
    """Steps/s and peak GPU memory from a checkpoint's per-step history."""
    history = torch.load(ckpt, map_location="cpu", weights_only=False)["history"]
    timed = history[warmup:] or history
    seconds = sum(h["seconds"] for h in timed)
    return {"steps": len(history), "timed": len(timed),
            "steps_per_s": round(len(timed) / seconds, 3) if seconds else None,
            "data_wait_share": round(sum(h.get("data_seconds", 0) for h in timed) / seconds, 3)
            if seconds else None,
            "gpu_peak_mb": round(max(h.get("gpu_peak_mb", 0.0) for h in history), 1) or None}


def big_profile(run: Runner, args: argparse.Namespace, data: Path, work: Path,
                device: str, steps: int) -> dict[str, Any]:
    """Each measured stage for `steps` on `device`, its dependencies 2 steps each first."""
    deps = work / f"{args.big_profile}-deps-{device}"
    threads = args.cpu_threads if device == "cpu" else 1
    common = ("--batch-size", str(args.batch), "--workers", str(args.workers), "--threads",
              str(threads), *(["--amp"] if args.amp and device != "cpu" else []))
    train(run, f"{args.big_profile}-{device}-deps-base", deps, data, args.big_profile,
          device, "--stage", "base", "--steps", "2", *common)
    train(run, f"{args.big_profile}-{device}-deps-codespace", deps, data, args.big_profile,
          device, "--stage", "codespace", "--steps", "2", *common)
    rows = {}
    for stage, only, name in MEASURED:
        out = work / f"{args.big_profile}-{device}-{name}"
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(deps, out)
        for stale in (out / f"{name}.pt", out / "checkpoints" / f"{name}.ckpt"):
            stale.unlink(missing_ok=True)
        wall = train(run, f"{args.big_profile}-{device}-{name}", out, data, args.big_profile,
                     device, "--stage", stage, "--only", only, "--steps", str(steps), *common)
        rows[name] = {**rate(out / "checkpoints" / f"{name}.ckpt", args.warmup),
                      "wall_s": round(wall, 1)}
        print(f"  {device} {name}: {rows[name]}", flush=True)
    return rows


def markdown(res: dict[str, Any]) -> str:
    dev, big = res["device"], res["big_profile"]
    lines = [f"# Training on {res['device_name']} vs CPU ({res['cpu']})", "",
             f"mini retrain on {dev}: {res['mini']['wall_s']} s; codealign [m1]+[m2] "
             f"AP30/50/70 = {res['mini']['ap']}", "",
             f"{big} profile, batch {res['batch']}, {res['workers']} workers, AMP "
             f"{res['amp']}:", "",
             f"| stage | {dev} steps/s | CPU steps/s | speed-up | peak GPU MB | "
             f"data-wait share ({dev}) |", "|---|---|---|---|---|---|"]
    for name, g in res["device_rows"].items():
        c = res["cpu_rows"].get(name, {})
        up = round(g["steps_per_s"] / c["steps_per_s"], 1) if c.get("steps_per_s") else "-"
        lines.append(f"| {name} | {g['steps_per_s']} | {c.get('steps_per_s', '-')} | {up} | "
                     f"{g['gpu_peak_mb']} | {g['data_wait_share']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "out")) / "results")
    p.add_argument("--work", type=Path, default=Path("out/gpu_train_bench"),
                   help="data and models (large; not copied back)")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu", "auto"))
    p.add_argument("--amp", action="store_true", help="mixed precision on the device")
    p.add_argument("--big-profile", default="opv2v")
    p.add_argument("--steps", type=int, default=300, help="device steps per measured stage")
    p.add_argument("--cpu-steps", type=int, default=8, help="CPU steps per measured stage")
    p.add_argument("--warmup", type=int, default=3, help="first steps not timed")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--mini-steps", type=int, default=0, help="0: the profile's steps")
    p.add_argument("--tiny", action="store_true",
                   help="smoke run: a few frames, 2 mini steps, mini as the big profile")
    p.add_argument("--skip-cpu", action="store_true", help="no CPU comparison")
    p.add_argument("--cpu-threads", type=int, default=os.cpu_count() or 1,
                   help="torch threads of the CPU comparison")
    args = p.parse_args(argv)
    if args.tiny:
        args.big_profile, args.mini_steps, args.steps = "mini", 2, min(args.steps, 4)
        args.cpu_steps, args.warmup, args.workers = min(args.cpu_steps, 4), 1, 1
        args.cpu_threads = 1
    args.out.mkdir(parents=True, exist_ok=True)
    run, data = Runner(args.out), args.work / "data"
    if args.tiny:
        for split, scenes in (("train", 4), ("validate", 1), ("test", 1)):
            run(f"data-{split}", sys.executable, "-m", "codealign_ros", "synth", "--out",
                str(data), "--format", "opv2v", "--scenes", str(scenes), "--frames", "2",
                "--agents", "2", "--seed", "7", "--split", split)
    else:
        run("data", "bash", "tools/make_data.sh", str(data))
    mini = args.work / f"mini-{args.device}" / "mini"  # the store reads the profile name
    shutil.rmtree(mini, ignore_errors=True)
    extra = ["--steps", str(args.mini_steps)] if args.mini_steps else ["--ablation"]
    wall = train(run, "mini-train", mini, data, "mini", args.device,
                 "--workers", str(args.workers), *extra)
    ev = args.out / "mini_eval.json"
    run("mini-eval", sys.executable, "-m", "codealign_ros", "eval", "--method", "codealign",
        "--setting", "[m1]+[m2]", "--models", str(mini), "--data", str(data), "--split",
        "test", "--json", str(ev), "--no-progress")
    res_ev = json.loads(ev.read_text())
    res: dict[str, Any] = {
        "device": args.device, "device_name": torch.cuda.get_device_name(0)
        if torch.cuda.is_available() and args.device != "cpu" else "CPU",
        "cpu": f"{os.cpu_count()} cores", "batch": args.batch, "workers": args.workers,
        "amp": args.amp, "big_profile": args.big_profile,
        "mini": {"wall_s": round(wall, 1), "ap": " / ".join(
            f"{100 * res_ev[k]:.1f}" for k in ("ap30", "ap50", "ap70"))}}
    res["device_rows"] = big_profile(run, args, data, args.work, args.device, args.steps)
    res["cpu_rows"] = {} if args.skip_cpu or args.device == "cpu" else \
        big_profile(run, args, data, args.work, "cpu", args.cpu_steps)
    (args.out / "gpu_train.json").write_text(json.dumps(res, indent=2) + "\n")
    (args.out / "gpu_train.md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
