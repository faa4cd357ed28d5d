"""Deploy stages on a GPU: the vehicle stage (m1 LiDAR, m4 cameras) and the receiver with 3
agents at one profile (default `opv2v`, the paper's scale), eager PyTorch on the CPU against
torch CUDA fp32, torch CUDA fp16 (autocast) and ONNX Runtime's CUDA provider when present, in
one run (issue 11 point 6). Weights are random (latency does not depend on them); agreement of
each GPU mode with CPU fp32 is reported (code indices equal, max |logit| difference).

    python benchmarks/bench_gpu.py --out "$OUT/gpu"                          # GPU machine
    python benchmarks/bench_gpu.py --profile mini --device cpu --out /tmp/bg   # CPU smoke run

Preprocessing (voxelisation, image resize) is numpy on the CPU in every mode and timed apart.
Writes OUT/bench_gpu.json and OUT/bench_gpu.md.
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
from codealign_ros.config.profiles import load_profile
from codealign_ros.data.world import World, WorldConfig
from codealign_ros.models.adapter import Adapter
from codealign_ros.models.codebook import Codebook
from codealign_ros.models.deploy import ReceiverHead, VehicleEncoder
from codealign_ros.models.detector import DetectionBackend
from codealign_ros.models.encoders import build_encoder
from codealign_ros.models.encoders.inputs import collate, encoder_inputs
from codealign_ros.runtime.export import export_onnx

Inputs = dict[str, torch.Tensor]


def timed(fn: Callable[[], Any], repeat: int, sync: bool) -> dict[str, float]:
    """p50 / p95 wall ms of fn after two warm-up calls (CUDA synchronised around each)."""
    def once() -> float:
        t0 = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) * 1e3
    once(), once()
    times = [once() for _ in range(repeat)]
    return {"p50_ms": round(float(np.median(times)), 2),
            "p95_ms": round(float(np.percentile(times, 95)), 2)}


def _to(inputs: Inputs, device: str) -> Inputs:
    return {k: v.to(device) for k, v in inputs.items()}


def _ort_session(path: Path) -> Any:
    """ONNX Runtime session on the CUDA provider, or None when it is not available."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return None
    return ort.InferenceSession(str(path), providers=["CUDAExecutionProvider"])


def _agreement(ref: tuple[torch.Tensor, ...], out: tuple[Any, ...]) -> dict[str, float]:
    """Index maps: share of equal cells; float outputs: max |difference|."""
    r, o = ref[0].cpu(), torch.as_tensor(np.asarray(out[0].cpu() if torch.is_tensor(out[0])
                                                     else out[0]))
    if r.dtype.is_floating_point:
        return {"max_abs_diff": round(float((r.float() - o.float()).abs().max()), 5)}
    return {"equal_share": round(float((r == o.to(r.dtype)).float().mean()), 5)}


def bench_module(name: str, module: torch.nn.Module, inputs: Inputs, outputs: list[str],
                 args: argparse.Namespace, tmp: Path, dynamic: dict | None = None
                 ) -> dict[str, Any]:
    """One stage in every available mode: {mode: timing (+ agreement)}."""
    module = module.eval()
    res: dict[str, Any] = {"stage": name, "params": sum(p.numel() for p in module.parameters())}
    with torch.inference_mode():
        ref = module.cpu()(**inputs)
        res["cpu_fp32"] = timed(lambda: module(**inputs), args.cpu_repeat, False)
        if args.device != "cuda":
            return res
        gpu = module.cuda()
        feed = _to(inputs, "cuda")
        res["cuda_fp32"] = {**timed(lambda: gpu(**feed), args.repeat, True),
                            **_agreement(ref, gpu(**feed))}
        with torch.autocast("cuda", dtype=torch.float16):
            res["cuda_fp16"] = {**timed(lambda: gpu(**feed), args.repeat, True),
                                **_agreement(ref, gpu(**feed))}
        module.cpu()
    path = export_onnx(module, inputs, tmp / f"{name}.onnx", outputs, dynamic_axes=dynamic)
    session = _ort_session(path)
    if session is not None:
        np_feed = {k: v.numpy() for k, v in inputs.items()}
        res["ort_cuda"] = {**timed(lambda: session.run(None, np_feed), args.repeat, False),
                           **_agreement(ref, session.run(None, np_feed))}
    return res


def vehicle(modality: str, profile: Any, agent: Any, args: argparse.Namespace,
            tmp: Path) -> dict[str, Any]:
    enc = build_encoder(modality, profile)
    stage = VehicleEncoder(enc, Adapter(profile.channels, profile.adapter_blocks),
                           Codebook(profile.num_codes, profile.channels))
    kind = lookup("modalities", "modalities", modality, "encoder")
    t0 = time.perf_counter()
    inputs = collate([encoder_inputs(kind, agent, profile)])
    pre_ms = (time.perf_counter() - t0) * 1e3
    axes = {k: v for k, v in enc.dynamic_axes().items() if k in inputs}
    res = bench_module(f"vehicle_{modality}", stage, inputs, ["indices"], args, tmp, axes)
    return {**res, "preprocess_ms": round(pre_ms, 2)}


def receiver(profile: Any, agents: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    head = ReceiverHead(Codebook(profile.num_codes, profile.channels), DetectionBackend(profile))
    g = profile.grid
    gen = torch.Generator().manual_seed(0)
    inputs = {"indices": torch.randint(0, profile.num_codes, (agents, g.height, g.width),
                                       generator=gen),
              "theta": torch.eye(2, 3).repeat(agents, 1, 1)}
    return bench_module(f"receiver_{agents}_agents", head, inputs, ["cls", "reg", "dir"],
                        args, tmp, {"indices": {0: "agents"}, "theta": {0: "agents"}})


MODES = [("cpu_fp32", "PyTorch CPU fp32 (eager)"), ("cuda_fp32", "torch CUDA fp32"),
         ("cuda_fp16", "torch CUDA fp16 (autocast)"), ("ort_cuda", "ONNX Runtime CUDA")]


def table(results: dict[str, Any]) -> str:
    modes = [(k, label) for k, label in MODES if any(k in r for r in results["stages"])]
    lines = [f"Profile `{results['profile']}`, device {results['device_name']}, batch 1, "
             f"p50 / p95 ms (CPU: {results['cpu_threads']} threads); speed-up = CPU p50 / mode "
             "p50; agreement with CPU fp32 (equal code cells, or max |cls logit| difference).",
             "", "| stage | params | " + " | ".join(label for _, label in modes) + " |",
             "|---|---:|" + "---:|" * len(modes)]
    for r in results["stages"]:
        cells = []
        for key, _ in modes:
            m = r.get(key)
            if m is None:
                cells.append("-")
                continue
            cell = f"{m['p50_ms']:.1f} / {m['p95_ms']:.1f}"
            if key != "cpu_fp32":
                agree = m.get("equal_share", m.get("max_abs_diff"))
                cell += f" (x{r['cpu_fp32']['p50_ms'] / m['p50_ms']:.1f}, {agree})"
            cells.append(cell)
        lines.append(f"| {r['stage']} | {r['params']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="opv2v")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--repeat", type=int, default=50, help="timed runs per GPU mode")
    p.add_argument("--cpu-repeat", type=int, default=5, help="timed runs on the CPU")
    p.add_argument("--cpu-threads", type=int, default=0, help="0: every core")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device")
    if args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)
    profile = load_profile(args.profile)
    frame = next(iter(World(WorldConfig(seed=3, agents=2), 0).frames(1, "bench")))
    agent = next(iter(frame.agents.values()))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        stages = [vehicle("m1", profile, agent, args, tmp), vehicle("m4", profile, agent, args, tmp),
                  receiver(profile, 3, args, tmp)]
    results = {"profile": args.profile, "device": args.device,
               "device_name": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
               "cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
               "stages": stages}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_gpu.json").write_text(json.dumps(results, indent=2) + "\n")
    text = table(results)
    (args.out / "bench_gpu.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
