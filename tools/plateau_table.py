"""Steps to plateau of every component of a model directory, from its training checkpoints
(`OUT/checkpoints/*.ckpt`, written by `codealign train`; not shipped, so run after
`make models`). Prints a Markdown table: steps run, best validation AP50, the first step whose
val AP50 is within 1 AP of that best, whether the stage stopped early, and its training time.

    python tools/plateau_table.py [models/mini]
"""
from __future__ import annotations

import argparse
from pathlib import Path


def rows(models: Path) -> list[str]:
    import torch

    from codealign_ros.train.curves import val_points

    out = ["| component | steps run | best val AP50 | first step within 1 AP of it | "
           "stopped early | training time |", "|---|---:|---:|---:|---|---:|"]
    for ckpt in sorted((models / "checkpoints").glob("*.ckpt")):
        history = torch.load(ckpt, map_location="cpu", weights_only=False)["history"]
        points = [(h["step"] + 1, h["val_ap50"]) for h in val_points(history)]
        minutes = sum(h.get("seconds", 0.0) for h in history) / 60
        stopped = "yes" if any(h.get("stopped_early") for h in history) else "no (cap)"
        if not points:
            out.append(f"| {ckpt.stem} | {len(history)} | - | - | {stopped} | {minutes:.1f} min |")
            continue
        best = max(v for _, v in points)
        reach = next(s for s, v in points if v >= best - 0.01)
        out.append(f"| {ckpt.stem} | {len(history)} | {100 * best:.1f} | {reach} | {stopped} | "
                   f"{minutes:.1f} min |")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", type=Path, nargs="?", default=Path("models/mini"))
    args = p.parse_args(argv)
    print("\n".join(rows(args.models)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
