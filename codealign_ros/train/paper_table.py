"""`codealign paper-table`: Table-4-style comparison + codebook / translator ablations.

Evaluates every method on every setting of config/groups.yaml on a held-out split with the
shipped (or given) weights and writes markdown, JSON and a bar plot.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

METHOD_ROWS = (("single", "Single (ego only)"), ("noalign", "No-align"), ("late", "Late fusion"),
               ("heal", "HEAL-style"), ("codealign", "CodeAlign"))
CODEBOOK_VARIANTS = (("_k4", 4), ("", 16), ("_k64", 64))
TRANSLATORS = (("one_to_one", "One-to-one"), ("multi_head", "Multi-head"), ("uct", "UCT"))
CODEBOOK_SETTING = "m1+m4"
TRANSLATOR_SETTING = "[m1]+[m2]"
COLORS = {"single": (150, 150, 150), "noalign": (220, 120, 90), "late": (230, 190, 80),
          "heal": (90, 150, 220), "codealign": (60, 170, 90)}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _bytes(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x / 1e6:.2f} MB" if x >= 1e6 else f"{x / 1e3:.2f} kB" if x >= 1e3 else f"{x:.0f} B"


def _params(n: int) -> str:
    return "0" if n == 0 else f"{n / 1e6:.3f} M"


def compute(models: Path, data: Path, split: str, max_frames: int = 0,
            progress: bool = True, every: int = 1) -> dict[str, Any]:
    """All evaluations of the table (dict ready for JSON)."""
    from codealign_ros.models.store import ModelStore
    from codealign_ros.train.evaluate import Variant, evaluate, parse_setting, settings
    from codealign_ros.train.samples import InputCache, load_frames

    store = ModelStore(models)
    cache = InputCache(store.profile)
    frames = load_frames(data, split)[::every]
    if max_frames:
        frames = frames[:max_frames]
    out: dict[str, Any] = {"frames": len(frames), "every": every, "data": str(data),
                           "split": split,
                           "profile": store.profile.name, "settings": {}}
    for name in settings():
        setting = parse_setting(name)
        out["settings"][name] = {m: evaluate(store, m, setting, frames, progress=progress,
                                                    cache=cache)
                                 for m, _ in METHOD_ROWS}
    setting = parse_setting(CODEBOOK_SETTING)
    out["codebook"] = {str(k): evaluate(store, "codealign", setting, frames, Variant(suffix),
                                        progress, cache) for suffix, k in CODEBOOK_VARIANTS}
    setting = parse_setting(TRANSLATOR_SETTING)
    out["translator"] = {}
    for variant, _ in TRANSLATORS:
        res = evaluate(store, "codealign", setting, frames, Variant("", variant), progress, cache)
        uct = store.translator("g2", variant)
        res["translator_params"] = sum(p.numel() for p in uct.parameters())
        res["switching_params"] = uct.switching_parameters("g1")
        out["translator"][variant] = res
    return out


def markdown(res: dict[str, Any]) -> str:
    """The README table text."""
    lines = [f"Held-out split: {res['frames']} frames (every {res.get('every', 1)}. one) of "
             f"`{res['data']}` ({res['split']}), "
             f"profile `{res['profile']}`. AP in %, BEV rotated IoU; TP = trainable parameters "
             "of the alignment; payload = bytes per peer message (raw; zstd in brackets).", "",
             "| Setting | Method | AP30 | AP50 | AP70 | TP | Payload |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name, rows in res["settings"].items():
        for method, label in METHOD_ROWS:
            r = rows[method]
            pay = _bytes(r["payload_bytes"])
            if r.get("payload_coded_bytes"):
                pay += f" ({_bytes(r['payload_coded_bytes'])})"
            lines.append(f"| {name} | {label} | {_pct(r['ap30'])} | {_pct(r['ap50'])} | "
                         f"{_pct(r['ap70'])} | {_params(r['trainable_params'])} | {pay} |")
    lines += ["", f"Codebook size (CodeAlign, setting {CODEBOOK_SETTING}):", "",
              "| Codes | Bits/cell | AP30 | AP50 | AP70 | Payload |", "|---:|---:|---:|---:|---:|---:|"]
    for k, r in res["codebook"].items():
        lines.append(f"| {k} | {int(k).bit_length() - 1} | {_pct(r['ap30'])} | "
                     f"{_pct(r['ap50'])} | {_pct(r['ap70'])} | {_bytes(r['payload_bytes'])} |")
    lines += ["", f"Translator (source g2 into g1, setting {TRANSLATOR_SETTING}):", "",
              "| Translator | Params (all targets) | Per-target switching params | AP30 | AP50 | "
              "AP70 |", "|---|---:|---:|---:|---:|---:|"]
    for variant, label in TRANSLATORS:
        r = res["translator"][variant]
        lines.append(f"| {label} | {r['translator_params']:,} | {r['switching_params']:,} | "
                     f"{_pct(r['ap30'])} | {_pct(r['ap50'])} | {_pct(r['ap70'])} |")
    return "\n".join(lines) + "\n"


def plot(res: dict[str, Any], path: Path) -> None:
    """Grouped bar chart of AP50 per setting and method (Pillow, no plotting library)."""
    names = list(res["settings"])
    w, h, left, bottom, top = 220 * len(names) + 80, 360, 60, 60, 30
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    plot_h = h - bottom - top
    for tick in range(0, 101, 20):
        y = h - bottom - plot_h * tick / 100
        d.line([(left, y), (w - 10, y)], fill=(225, 225, 225))
        d.text((10, y - 6), f"{tick}", fill="black")
    d.text((10, 8), "AP50 (%) per setting and method", fill="black")
    bar = 30
    for i, name in enumerate(names):
        x0 = left + 20 + i * 220
        for j, (method, _) in enumerate(METHOD_ROWS):
            ap = res["settings"][name][method]["ap50"]
            x = x0 + j * (bar + 4)
            d.rectangle([x, h - bottom - plot_h * ap, x + bar, h - bottom], fill=COLORS[method])
        d.text((x0, h - bottom + 8), name, fill="black")
    for j, (method, label) in enumerate(METHOD_ROWS):
        x = left + j * 120
        d.rectangle([x, h - 22, x + 12, h - 10], fill=COLORS[method])
        d.text((x + 16, h - 23), label, fill="black")
    img.save(path)


def update_readme(readme: Path, table: str, start: str = "<!-- paper-table:start -->",
                  end: str = "<!-- paper-table:end -->") -> bool:
    """Replace the text between the markers; False when the README has no markers."""
    text = readme.read_text()
    if start not in text or end not in text:
        return False
    head, rest = text.split(start, 1)
    readme.write_text(f"{head}{start}\n{table}{end}{rest.split(end, 1)[1]}")
    return True


def add_paper_table_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("paper-table", help="Table-4-style results + ablations into markdown",
                       description=__doc__)
    p.add_argument("--models", type=Path, default=Path("models/mini"))
    p.add_argument("--data", type=Path, default=Path("data/mini-v2x"))
    p.add_argument("--split", default="test")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--readme", type=Path, default=Path("README.md"),
                   help="README whose paper-table markers get the table ('' to skip)")
    p.add_argument("--max-frames", type=int, default=0)
    p.add_argument("--every", type=int, default=2, help="use every N-th frame of the split")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_paper_table)
    return p


def run_paper_table(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    res = compute(args.models, args.data, args.split, args.max_frames, not args.no_progress,
                  args.every)
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown(res)
    (args.out / "paper_table.json").write_text(json.dumps(res, indent=2) + "\n")
    (args.out / "paper_table.md").write_text(table)
    plot(res, args.out / "paper_table.png")
    print(table)
    if str(args.readme) and args.readme.exists() and update_readme(args.readme, table):
        print(f"updated {args.readme}")
    return 0
