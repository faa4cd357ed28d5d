"""Data-layer benchmark: generation and bag conversion throughput, bag size per agent-second.

Writes benchmarks/results/data.json and data.md. Run through `make bench`.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from codealign_ros.cli import build_parser

RESULTS = Path(__file__).parent / "results"


def _timed(argv: list[str]) -> float:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    assert args.func(args) == 0
    return time.perf_counter() - start


def run(frames: int, agents: int) -> dict:
    """Generate one OPV2V scene and one DAIR scene, convert both, return the figures."""
    work = Path(tempfile.mkdtemp(prefix="codealign-bench-"))
    try:
        common = ["--scenes", "1", "--frames", str(frames), "--seed", "0", "--no-progress"]
        opv2v = _timed(["synth", "--out", str(work / "opv2v"), "--format", "opv2v",
                        "--agents", str(agents), *common])
        dair = _timed(["synth", "--out", str(work / "dair"), "--format", "dairv2x", *common])
        bag = work / "opv2v.bag"
        convert = _timed(["convert", "--dataset", "opv2v", "--root", str(work / "opv2v"),
                          "--split", "train", "--out", str(bag)])
        bag_bytes = sum(p.stat().st_size for p in bag.rglob("*") if p.is_file())
        agent_seconds = agents * frames / 10.0
        return {
            "frames": frames, "agents": agents,
            "synth_opv2v_s": round(opv2v, 2), "synth_opv2v_fps": round(frames / opv2v, 2),
            "synth_dair_s": round(dair, 2), "synth_dair_fps": round(frames / dair, 2),
            "convert_s": round(convert, 2), "convert_fps": round(frames / convert, 2),
            "bag_mb": round(bag_bytes / 1e6, 1),
            "bag_mb_per_agent_second": round(bag_bytes / 1e6 / agent_seconds, 2),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def to_markdown(r: dict) -> str:
    """A small results table."""
    return "\n".join([
        "| data benchmark | value |", "|---|---|",
        f"| synth OPV2V, {r['agents']} agents x {r['frames']} frames | {r['synth_opv2v_s']} s "
        f"({r['synth_opv2v_fps']} frames/s) |",
        f"| synth DAIR-V2X-C, {r['frames']} frames | {r['synth_dair_s']} s "
        f"({r['synth_dair_fps']} frames/s) |",
        f"| convert OPV2V -> rosbag2 (mcap) | {r['convert_s']} s ({r['convert_fps']} frames/s) |",
        f"| bag size | {r['bag_mb']} MB, {r['bag_mb_per_agent_second']} MB per agent-second |",
    ]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--agents", type=int, default=3)
    args = parser.parse_args()
    result = run(args.frames, args.agents)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "data.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "data.md").write_text(to_markdown(result))
    print(to_markdown(result))


if __name__ == "__main__":
    main()
