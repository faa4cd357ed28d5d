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
    from codealign_ros.train import e2e

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
    out["quantisation"] = {}
    for m in modalities():
        own = {"ego": m, "others": [m]}
        out["quantisation"][m] = {
            "single": evaluate(store, "single", own, frames, progress=progress, cache=cache),
            "codes": evaluate(store, "codealign", own, frames, Variant(peers="none"), progress,
                              cache)}
    out["no_harm"] = {name: {peers: evaluate(store, "codealign", parse_setting(name), frames,
                                             Variant(peers=peers), progress, cache)
                             for peers in ("none", "zero")} for name in settings()}
    shipped = "trained" if store.has("codespace_g2") and store.meta("codespace_g2").get(
        "backend_trained") else "frozen"
    other = {"trained": "frozen", "frozen": "trained"}[shipped]
    if (models / f"codespace_g2_{other}.pt").exists():  # Table 7: the other strategy too
        own = {"ego": "m2", "others": ["m2"]}
        suffix = {shipped: "", other: f"_{other}"}
        out["backend"] = {f"{v} (shipped)" if v == shipped else v: evaluate(
            store, "codealign", own, frames, Variant(suffix[v], peers="none"), progress, cache)
            for v in ("frozen", "trained")}
    if all((models / f"e2e_{mode}.pt").exists() for mode in e2e.MODES):
        setting = parse_setting(e2e.SETTING)
        out["isolation_setting"] = e2e.SETTING
        out["isolation"] = {mode: evaluate(store, f"e2e_{mode}", setting, frames,
                                           progress=progress, cache=cache)
                            for mode in e2e.MODES}
    out["tp_opv2v"] = opv2v_trainable_parameters()
    out["claims"] = claims(out)
    return out


def opv2v_trainable_parameters() -> dict[str, int]:
    """CodeAlign's TP per setting at the `opv2v` profile (randomly initialised components of
    that scale, counted as the evaluation counts the trained ones)."""
    import tempfile

    from codealign_ros.models.store import ModelStore
    from codealign_ros.pipeline.testing import make_random_store
    from codealign_ros.train.evaluate import Evaluator, settings

    named = settings()
    mods = sorted({m for s in named.values() for m in [s["ego"], *s["others"]]})
    with tempfile.TemporaryDirectory() as d:
        store = ModelStore(make_random_store(Path(d), "opv2v", mods), "opv2v")
        return {name: Evaluator(store, "codealign", s).trainable_parameters(
            [s["ego"], *s["others"]]) for name, s in named.items()}


def modalities() -> list[str]:
    """Every modality of config/groups.yaml, in group order."""
    from codealign_ros.config.groups import groups

    return [m for ms in groups().values() for m in ms]


def claims(res: dict[str, Any]) -> list[tuple[str, bool]]:
    """The paper's claims checked on these results: (claim, holds)."""
    out = []
    for name, rows in res["settings"].items():
        ca = rows["codealign"]
        out += [(f"{name}: CodeAlign above Single (AP50)", ca["ap50"] > rows["single"]["ap50"]),
                (f"{name}: CodeAlign above No-align (AP50)",
                 ca["ap50"] > rows["noalign"]["ap50"]),
                (f"{name}: CodeAlign within 2 AP50 of HEAL-style (or above)",
                 ca["ap50"] >= rows["heal"]["ap50"] - 0.02),
                (f"{name}: Late fusion below CodeAlign at AP70",
                 rows["late"]["ap70"] < ca["ap70"])]
        harm = res["no_harm"][name]
        out.append((f"{name}: all-zero peers cost the ego at most 1 AP50",
                    harm["zero"]["ap50"] >= harm["none"]["ap50"] - 0.01))
    cb = {int(k): r["ap50"] for k, r in res["codebook"].items()}
    out.append(("16 codes best of {4, 16, 64} (AP50)", cb[16] >= max(cb.values())))
    if "isolation" in res:
        iso = res["isolation"]
        out.append(("End-to-end training loses accuracy on isolated data (Table 2, AP50)",
                    iso["isolated"]["ap50"] < iso["cooccurring"]["ap50"]))
    tr = res["translator"]
    out.append(("UCT within 2 AP50 of multi-head",
                tr["uct"]["ap50"] >= tr["multi_head"]["ap50"] - 0.02))
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
    lines += ["", "Cost of quantisation per modality (Table 8 analog; the ego alone, its base "
              "detector vs its own code space):", "",
              "| Modality | Single AP30 | AP50 | AP70 | Through codes AP30 | AP50 | AP70 |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for m, r in res["quantisation"].items():
        a, b = r["single"], r["codes"]
        lines.append(f"| {m} | {_pct(a['ap30'])} | {_pct(a['ap50'])} | {_pct(a['ap70'])} | "
                     f"{_pct(b['ap30'])} | {_pct(b['ap50'])} | {_pct(b['ap70'])} |")
    lines += ["", "Do no harm (CodeAlign, AP50: the ego alone through its codes / with every "
              "peer's features all zero / with the peers):", "",
              "| Setting | Ego alone | All-zero peers | With peers |", "|---|---:|---:|---:|"]
    for name, r in res["no_harm"].items():
        lines.append(f"| {name} | {_pct(r['none']['ap50'])} | {_pct(r['zero']['ap50'])} | "
                     f"{_pct(res['settings'][name]['codealign']['ap50'])} |")
    if "backend" in res:
        lines += _ap_table("Single-group strategy (Table 7 analog; group g2 = [m2], the ego "
                           "alone through its codes)", "Backend in the code-space stage",
                           res["backend"])
    if "isolation" in res:
        lines += _ap_table(f"End-to-end training on isolated vs co-occurring data (Table 2 "
                           f"analog; encoders of {res.get('isolation_setting', '')} + one backend, trained jointly "
                           "from scratch on the same frames)", "Training data",
                           res["isolation"])
    if "tp_opv2v" in res:
        from codealign_ros.train.evaluate import settings

        lines += ["", "CodeAlign's trainable parameters at the `opv2v` profile (the paper's "
                  "scale) against the paper's Table 4:", "", "| Setting | TP here (opv2v) | "
                  "TP in the paper |", "|---|---:|---:|"]
        for name, tp in res["tp_opv2v"].items():
            paper = settings().get(name, {}).get("paper_tp")
            lines.append(f"| {name} | {_params(tp)} | "
                         f"{_params(int(paper)) if paper else '-'} |")
    lines += ["", "The paper's claims on this split:", "", "| Claim | Holds |", "|---|---|"]
    lines += [f"| {c} | {'yes' if ok else '**no**'} |" for c, ok in res["claims"]]
    return "\n".join(lines) + "\n"


def _ap_table(title: str, label: str, rows: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown lines: `title`, then AP30/50/70 per named result."""
    lines = ["", f"{title}:", "", f"| {label} | AP30 | AP50 | AP70 |", "|---|---:|---:|---:|"]
    return lines + [f"| {name} | {_pct(r['ap30'])} | {_pct(r['ap50'])} | {_pct(r['ap70'])} |"
                    for name, r in rows.items()]


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


def readme_path(text: str) -> Path | None:
    """The --readme file, None for '' (skip; Path('') would be the working directory) or a
    path that is not a file."""
    path = Path(text) if text else None
    return path if path is not None and path.is_file() else None


def add_paper_table_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("paper-table", help="Table-4-style results + ablations into markdown",
                       description=__doc__)
    p.add_argument("--models", type=Path, default=Path("models/mini"))
    p.add_argument("--data", type=Path, default=Path("data/mini-v2x"))
    p.add_argument("--split", default="test")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--readme", default="README.md",
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
    readme = readme_path(args.readme)
    if readme is not None and update_readme(readme, table):
        print(f"updated {readme}")
    return 0
