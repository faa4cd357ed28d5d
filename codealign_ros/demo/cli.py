"""`codealign demo` on the command line: its flags and the summary's printed lines (the run
itself: codealign_ros.demo.runner)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from codealign_ros.config.share import resolve_shipped
from codealign_ros.demo.runner import (DEFAULT_FRAMES, DEFAULT_RATE, DEFAULT_SEED, LEAD_FRAMES,
                                       DemoError, DemoOptions, run_demo)


def _nonzero_drops(drops: dict[str, Any]) -> str:
    parts = [f"{node}: {reasons}" for node, entry in drops["nodes"].items()
             for reasons in [{k: v for key in ("drops", "sync_dropped", "skipped")
                              for k, v in entry.get(key, {}).items()}] if reasons]
    return f" ({'; '.join(parts)})" if parts else ""


def _ledger_lines(drops: dict[str, Any]) -> list[str]:
    out = []
    for node, entry in drops["nodes"].items():
        book = entry.get("ledger")
        if book:
            out.append(f"  transport  {node}: offered {book.get('offered')} = fused "
                       f"{book.get('fused')} + dropped {book.get('dropped')} + held "
                       f"{book.get('held')} ({'exact' if entry.get('balanced') else 'UNBALANCED'})")
    return out


def _lead_text(lat: dict[str, Any]) -> str:
    lead = lat.get("lead_in") or {}
    if not lead.get("frames"):
        return ""
    return (f"; lead-in {lead['frames']} frames (not evaluated): fused {lead['fused']}, "
            f"max {lead['max']} ms")


def format_summary(s: dict[str, Any]) -> str:
    """Human-readable lines of a summary."""
    f, ap, cb, lat = s["frames"], s["ap"], s["codemap_bytes"], s["latency_ms"]
    e2e, fus = lat["end_to_end"], lat["fusion"]
    lines = [
        "demo summary",
        f"  agents     {', '.join(f'{a}:{m}' for a, m in s['agents'].items())} (ego {s['ego']})",
        f"  frames     {f['evaluated']} evaluated of {f['evaluated_span']} (played "
        f"{f['played']}, fused {f['fused']}, ego-only {f['ego_only']}); rate {s['rate']}x; "
        f"agents fused: " + ", ".join(f"{n} in {c} frames" for n, c in s["agents_fused"].items()),
        f"  AP         ego-only  AP30 {ap['ego_only']['ap30']:.3f}  AP50 "
        f"{ap['ego_only']['ap50']:.3f}  AP70 {ap['ego_only']['ap70']:.3f}",
        f"             fused     AP30 {ap['fused']['ap30']:.3f}  AP50 {ap['fused']['ap50']:.3f}"
        f"  AP70 {ap['fused']['ap70']:.3f}",
        f"  CodeMap    {cb.get('height')} x {cb.get('width')} x {cb.get('bits')} bit: raw "
        f"{cb.get('raw')} B, coded ({cb.get('encoding')}) {cb.get('coded')} B per map "
        f"(dense float32 features: {cb.get('dense_float32')} B); {cb.get('maps')} maps",
        f"  latency    end-to-end p50 {e2e['p50']} ms, p95 {e2e['p95']} ms (ego sensor "
        f"publish -> fused detections); fusion p50 {fus['p50']} ms{_lead_text(lat)}",
        f"  drops      {s['drops']['total']} by the nodes{_nonzero_drops(s['drops'])}; code maps "
        f"missing {sum(s['drops']['maps_missing'].values())}",
        *_ledger_lines(s["drops"]),
        f"  pictures   {s['picture']}, {s.get('animation')}; recording {s.get('recording')}",
        f"  wall time  {s['wall_s']} s (ended by {s['ended_by']}; launcher exit code "
        f"{s['launcher_exit_code']})"]
    return "\n".join(lines)


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `codealign demo`."""
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES,
                        help=f"evaluated 10 Hz frames of the scene (default {DEFAULT_FRAMES})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help=f"scene generator seed (default {DEFAULT_SEED})")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE,
                        help=f"bag playback speed factor (default {DEFAULT_RATE}: no frame "
                             f"drops on 2 CPU cores)")
    parser.add_argument("--modalities", default="",
                        help="modality per bag agent, ego first, e.g. m1,m5,m2 (default: "
                             "config/modalities.yaml assignment)")
    parser.add_argument("--model-dir", default="models/mini", help="trained weights")
    parser.add_argument("--backend", default="auto", help="inference backend of every node")
    parser.add_argument("--out", type=Path, default=Path("out/demo"),
                        help="recording (MCAP), summary.json, pictures and RViz / Foxglove "
                             "presets go here (default out/demo)")
    parser.add_argument("--picture", type=Path, default=None,
                        help="BEV picture path (default <out>/demo_bev.png; the animation "
                             "goes beside it as .gif)")
    parser.add_argument("--seconds", type=float, default=600.0,
                        help="stop the graph after this long in any case (default 600)")
    parser.add_argument("--record-clouds", choices=("none", "ego", "all"), default="none",
                        help="LiDAR clouds recorded: none (default; the pictures read the "
                             "scene bag's), the ego's, or every agent's (about 1 MB each, "
                             "10 Hz)")
    parser.add_argument("--translate", choices=("sender", "receiver"), default="sender",
                        help="where foreign code spaces become the ego's: the sender's UCT on "
                             "its dense features (D2C, the paper's; default) or the receiver's "
                             "UCT on the received codes (C2C)")
    parser.add_argument("--lead-in", type=int, default=LEAD_FRAMES,
                        help=f"frames played before the evaluated ones, fused but not "
                             f"evaluated: the graph's first frames run slower after idling "
                             f"(default {LEAD_FRAMES}; their latency is printed apart)")
    parser.add_argument("--background-cpus", default="auto",
                        help="cores of the peers' vehicles and the observers (recorder, "
                             "code-map images): auto (default: the upper half of the cores, "
                             "core 1 of 2, so the ego's vehicle and fusion always have one "
                             "free), all (no pinning) or a list such as 1 or 2,3")
    parser.add_argument("--domain-id", type=int, default=None,
                        help="ROS_DOMAIN_ID of the demo graph (default: one derived from the "
                             "process id)")


def run_demo_cli(args: argparse.Namespace) -> int:
    """`codealign demo`: 0 when detections came through, 1 otherwise."""
    opts = DemoOptions(frames=args.frames, seed=args.seed, rate=args.rate,
                       modalities=args.modalities,
                       model_dir=str(resolve_shipped(args.model_dir)),  # from any directory
                       backend=args.backend, out_dir=args.out, picture=args.picture,
                       domain_id=args.domain_id, seconds=args.seconds,
                       record_clouds=args.record_clouds, translate=args.translate,
                       background_cpus=args.background_cpus, lead_frames=args.lead_in)
    try:
        summary = run_demo(opts)
    except (DemoError, ValueError) as err:
        print(f"demo: error: {err}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    print(f"demo: summary written to {opts.out_dir / 'summary.json'}")
    return 0 if summary["frames"]["fused"] else 1
