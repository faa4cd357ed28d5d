"""Model-core latency per profile stage: vehicle stage per modality, receiver with 1..5 agents.

PyTorch and ONNX Runtime side by side in one run (CPU, batch 1). Weights are random (latency
does not depend on them). Writes benchmarks/results/models.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from codealign_ros.config import lookup
from codealign_ros.data.types import AgentFrame
from codealign_ros.data.world import World, WorldConfig
from codealign_ros.models.adapter import Adapter
from codealign_ros.models.detector import DetectionBackend
from codealign_ros.models.codebook import Codebook
from codealign_ros.models.deploy import ReceiverHead, VehicleEncoder
from codealign_ros.models.encoders import build_encoder
from codealign_ros.models.encoders.inputs import collate, encoder_inputs
from codealign_ros.config.profiles import load_profile
from codealign_ros.runtime.backends import OnnxRuntimeBackend
from codealign_ros.runtime.export import export_onnx

RESULTS = Path(__file__).parent / "results"


def timed(fn: Callable[[], Any], repeat: int) -> dict[str, float]:
    """Median and p95 wall time (ms) of fn after two warm-up calls."""
    fn(), fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"p50_ms": float(np.median(times)), "p95_ms": float(np.percentile(times, 95))}


def bench_vehicle(profile_name: str, modality: str, agent: AgentFrame, repeat: int,
                  tmp: Path) -> dict[str, Any]:
    profile = load_profile(profile_name)
    enc = build_encoder(modality, profile)
    stage = VehicleEncoder(enc, Adapter(profile.channels, profile.adapter_blocks),
                           Codebook(profile.num_codes, profile.channels)).eval()
    kind = lookup("modalities", "modalities", modality, "encoder")
    pre_t = timed(lambda: collate([encoder_inputs(kind, agent, profile)]), repeat)
    inputs = collate([encoder_inputs(kind, agent, profile)])
    with torch.inference_mode():
        torch_t = timed(lambda: stage(**inputs), repeat)
    axes = {k: v for k, v in enc.dynamic_axes().items() if k in inputs}
    onnx_path = export_onnx(stage, inputs, tmp / f"vehicle_{modality}.onnx", ["indices"],
                            dynamic_axes=axes)
    ort = OnnxRuntimeBackend(onnx_path, threads=torch.get_num_threads())
    feed = {k: v.numpy() for k, v in inputs.items()}
    ort_t = timed(lambda: ort(feed), repeat)
    return {"modality": modality, "preprocess": pre_t, "torch": torch_t, "onnxruntime": ort_t,
            "params": sum(p.numel() for p in stage.parameters())}


def bench_receiver(profile_name: str, agents: int, repeat: int, tmp: Path) -> dict[str, Any]:
    profile = load_profile(profile_name)
    backend = DetectionBackend(profile).eval()
    head = ReceiverHead(Codebook(profile.num_codes, profile.channels), backend).eval()
    g = profile.grid
    idx = torch.randint(0, profile.num_codes, (agents, g.height, g.width))
    theta = torch.eye(2, 3).repeat(agents, 1, 1)
    with torch.inference_mode():
        def run_torch() -> None:
            cls, reg, dir_ = head(idx, theta)
            backend.detect({"cls": cls, "reg": reg, "dir": dir_})
        torch_t = timed(run_torch, repeat)
        post_t = timed(lambda: backend.detect(dict(zip(("cls", "reg", "dir"),
                                                         head(idx, theta)))), repeat)
    onnx_path = export_onnx(head, {"indices": idx, "theta": theta}, tmp / f"recv{agents}.onnx",
                            ["cls", "reg", "dir"],
                            dynamic_axes={"indices": {0: "agents"}, "theta": {0: "agents"}})
    ort = OnnxRuntimeBackend(onnx_path, threads=torch.get_num_threads())
    feed = {"indices": idx.numpy(), "theta": theta.numpy()}
    ort_t = timed(lambda: ort(feed), repeat)
    return {"agents": agents, "torch_with_nms": torch_t, "torch_forward_and_nms": post_t,
            "onnxruntime_forward": ort_t}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="mini")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    agent = next(iter(World(WorldConfig(seed=3, agents=2), 0).frames(1, "bench"))).agents
    agent = next(iter(agent.values()))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        vehicles = [bench_vehicle(args.profile, m, agent, args.repeat, tmp)
                    for m in ("m1", "m2", "m3", "m4", "m5")]
        receivers = [bench_receiver(args.profile, n, args.repeat, tmp) for n in (1, 2, 3, 4, 5)]
    res = {"profile": args.profile, "threads": args.threads, "vehicle": vehicles,
           "receiver": receivers}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "models.json").write_text(json.dumps(res, indent=2) + "\n")
    lines = [f"Profile `{args.profile}`, CPU, {args.threads} torch/ORT threads, batch 1, "
             f"median (p95) ms over {args.repeat} runs.", "",
             "| vehicle stage (encoder + adapter + nearest code) | params | preprocess | PyTorch "
             "| ONNX Runtime | ORT / PyTorch |", "|---|---:|---:|---:|---:|---:|"]
    for v in vehicles:
        t, o = v["torch"], v["onnxruntime"]
        p = v["preprocess"]
        lines.append(f"| {v['modality']} | {v['params']:,} | {p['p50_ms']:.1f} ({p['p95_ms']:.1f}) "
                     f"| {t['p50_ms']:.1f} ({t['p95_ms']:.1f})"
                     f" | {o['p50_ms']:.1f} ({o['p95_ms']:.1f}) | {o['p50_ms'] / t['p50_ms']:.2f} |")
    lines += ["", "| receiver (decode + warp + pyramid fusion + head) | PyTorch incl. NMS | "
              "ONNX Runtime forward |", "|---|---:|---:|"]
    for r in receivers:
        t, o = r["torch_with_nms"], r["onnxruntime_forward"]
        lines.append(f"| {r['agents']} agent(s) | {t['p50_ms']:.1f} ({t['p95_ms']:.1f}) | "
                     f"{o['p50_ms']:.1f} ({o['p95_ms']:.1f}) |")
    text = "\n".join(lines) + "\n"
    (RESULTS / "models.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
