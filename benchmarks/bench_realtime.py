"""Real-time figures: NMS before/after, pipeline stages (PyTorch vs ONNX Runtime), node
start-up and memory with and without torch, and the demo graph at rate 1.0.

1. Rotated NMS on 1,000 low-score candidates (anchor-like boxes of the mini grid, plus the
   decoded head outputs of the shipped receiver on a demo frame): the per-pair reference
   (`core.metrics.rotated_nms`) vs the vectorised one (`core.nms.rotated_nms_fast`), and the
   whole post-processing before (decode every anchor + reference NMS) / after (pre-NMS top-k
   decoded + vectorised NMS). One thread (OMP/BLAS pinned before numpy loads).
2. The real pipelines on `--models` (shipped weights): vehicle stage per modality (preprocess /
   inference / postprocess; m2 includes its D2C UCT into g1) and the receiver with 3 agents
   (translate / head / post) on sender-translated maps (the demo's default) and on own-space
   maps it translates itself (c2c), p50 and p95 over `--repeat` frames, PyTorch and ONNX
   Runtime in the same run.
3. Node start-up (import + pipeline ready) and peak RSS of a receiver + vehicle in a fresh
   interpreter: ONNX Runtime deploy path (torch never imported) vs the PyTorch backend.
4. With `--demo SUMMARY` (the summary.json of `codealign demo`, rate 1.0): achieved rate,
   end-to-end latency, per-node CPU % and stage timings under the demo's load.
Writes benchmarks/results/realtime.{json,md}.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402

from codealign_ros.core.detect import PostConfig, decode_boxes, make_anchors, postprocess  # noqa: E402
from codealign_ros.core.metrics import rotated_nms  # noqa: E402
from codealign_ros.core.nms import rotated_nms_fast  # noqa: E402

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parents[1]


def timed(fn: Callable[[], Any], repeat: int, warmup: int = 1) -> dict[str, float]:
    """p50 / p95 wall ms of fn after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"p50_ms": round(float(np.median(times)), 2),
            "p95_ms": round(float(np.percentile(times, 95)), 2)}


def _pct(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(float(np.median(values)), 2),
            "p95_ms": round(float(np.percentile(values, 95)), 2)}


# -- 1. NMS ------------------------------------------------------------------------------------
def anchor_candidates(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n noisy mini-grid anchors (0.8 m cells, yaw 0 / 90 deg) with flat low scores."""
    rng = np.random.default_rng(seed)
    xs = np.arange(64) * 0.8 - 25.2
    gx, gy = np.meshgrid(xs, xs)
    centres = np.column_stack([gx.ravel(), gy.ravel()]).repeat(2, 0)
    yaw = np.tile([0.0, np.pi / 2], 64 * 64)
    idx = rng.choice(len(centres), n, replace=False)
    boxes = np.column_stack([centres[idx] + rng.normal(0, 0.3, (n, 2)), -np.ones(n),
                             3.9 * np.exp(rng.normal(0, 0.1, n)), np.full(n, 1.6),
                             np.full(n, 1.56), yaw[idx] + rng.normal(0, 0.2, n)])
    return boxes, rng.uniform(0.05, 0.12, n)


def reference_post(cls: np.ndarray, reg: np.ndarray, dirs: np.ndarray, anchors: np.ndarray,
                   post: PostConfig) -> tuple[np.ndarray, np.ndarray]:
    """The previous post-processing: every anchor decoded, threshold, top-k, per-pair NMS."""
    from codealign_ros.core.detect import correct_direction

    a = anchors.shape[-2]
    scores = 1.0 / (1.0 + np.exp(-cls[0].transpose(1, 2, 0).reshape(-1)))
    deltas = reg[0].reshape(a, 7, *reg.shape[-2:]).transpose(2, 3, 0, 1).reshape(-1, 7)
    d = dirs[0].reshape(a, -1, *dirs.shape[-2:]).transpose(2, 3, 0, 1).reshape(len(deltas), -1)
    boxes = decode_boxes(deltas, anchors.reshape(-1, 7))
    boxes[:, 6] = correct_direction(boxes[:, 6], d.argmax(-1), post.dir_offset, d.shape[-1])
    keep = (scores > post.score) & np.isfinite(boxes).all(-1)
    s, b = scores[keep], boxes[keep]
    top = np.argsort(-s, kind="stable")[:post.pre_nms_top_k]
    idx = rotated_nms(b[top].astype(np.float64), s[top].astype(np.float64), post.nms_iou,
                      post.max_boxes)
    return b[top][idx], s[top][idx]


def bench_nms(head_outputs: dict[str, np.ndarray] | None, repeat: int) -> dict[str, Any]:
    from codealign_ros.config.profiles import load_profile

    boxes, scores = anchor_candidates(1000)
    out: dict[str, Any] = {"candidates": 1000}
    out["anchor_like"] = {"reference": timed(lambda: rotated_nms(boxes, scores, 0.15), 3),
                          "vectorised": timed(lambda: rotated_nms_fast(boxes, scores, 0.15),
                                              repeat),
                          "same_kept_set": bool(np.array_equal(
                              rotated_nms(boxes, scores, 0.15),
                              rotated_nms_fast(boxes, scores, 0.15)))}
    if head_outputs is not None:
        profile = load_profile("mini")
        anchors = make_anchors(profile.grid, profile["anchors"])
        post = PostConfig.from_profile(profile["post"], profile["anchors"])
        args = [head_outputs[k] for k in ("cls", "reg", "dir")]
        ref = reference_post(*args, anchors, post)
        new = postprocess(*args, anchors, post)[0]
        out["receiver_post"] = {
            "pre_nms_top_k": post.pre_nms_top_k, "score": post.score,
            "before": timed(lambda: reference_post(*args, anchors, post), 3),
            "after": timed(lambda: postprocess(*args, anchors, post), repeat),
            "kept": int(len(new[1])),
            "same_boxes": bool(len(ref[1]) == len(new[1])
                               and np.allclose(ref[0], new[0], atol=1e-4))}
    return out


# -- 2. pipelines ----------------------------------------------------------------------------
def demo_inputs(seed: int = 3, frames: int = 4) -> list[Any]:
    """Frames of the generated world (points + cameras of one agent)."""
    from codealign_ros.data.world import World, WorldConfig

    world = World(WorldConfig(seed=seed, agents=3), 0)
    return [next(iter(f.agents.values())) for f in world.frames(frames, "bench")]


def _receiver(rx: Any, maps: list[Any], repeat: int) -> dict[str, Any]:
    """Stage timings of `rx` fusing maps[0] (the ego's) with the others, `repeat` times."""
    stage: dict[str, list[float]] = {"translate_ms": [], "head_ms": [], "post_ms": [],
                                     "total_ms": []}
    for _ in range(repeat):
        for m in maps[1:]:
            rx.offer(m, 10**9)
        out = rx.fuse(maps[0], 10**9)
        for k in stage:
            stage[k].append(out.timings[k])
    return {k: _pct(v) for k, v in stage.items()}


def bench_pipelines(models: Path, backends: list[str], repeat: int
                    ) -> tuple[dict[str, Any], dict[str, np.ndarray] | None]:
    from codealign_ros.core.codemap import GridPose
    from codealign_ros.pipeline import (ReceiverConfig, ReceiverPipeline, VehicleConfig,
                                        VehiclePipeline)

    frames = demo_inputs()
    rows: dict[str, Any] = {}
    head_out = None
    for backend in backends:
        maps, res = [], {}
        for agent_id, modality, targets in (("cav_1", "m1", ()), ("cav_2", "m4", ("g1",)),
                                            ("rsu_1", "m2", ("g1",))):
            pipe = VehiclePipeline(VehicleConfig(models, modality, agent_id, backend=backend,
                                                 threads=1, translate_to=targets))
            stage: dict[str, list[float]] = {"preprocess_ms": [], "inference_ms": [],
                                             "postprocess_ms": []}
            result = None
            for i in range(repeat):
                agent = frames[i % len(frames)]
                result = (pipe.process_cameras(agent.cameras) if pipe.num_cameras
                          else pipe.process_lidar(agent.points))
                for k in stage:
                    stage[k].append(result.timings[k])
            res[modality] = {k: _pct(v) for k, v in stage.items()}
            pose = GridPose((3.0 * len(maps), 0.0, 0.0))
            by_space = {m.code_space: m for m in pipe.code_maps(result, 10**9, pose)}
            maps.append((by_space.get("g1", by_space[pipe.group]), by_space[pipe.group]))
        # the demo's default: peers send D2C maps in the ego space (sender's UCT); c2c: their
        # own-space maps, translated by the receiver's UCT (a fresh receiver each: it would
        # keep fusing the held ego-space maps)
        for name, chosen in (("receiver_3_agents", [d2c for d2c, _ in maps]),
                             ("receiver_3_agents_c2c", [own for _, own in maps])):
            rx = ReceiverPipeline(ReceiverConfig(models, "cav_1", "m1", backend=backend,
                                                 threads=1))
            res[name] = _receiver(rx, chosen, repeat)
        rows[backend] = res
        if backend == "onnxruntime":
            import numpy as _np

            idx = _np.stack([m.indices for m, _ in maps]).astype(_np.int64)
            theta = _np.tile(_np.array([[1, 0, 0], [0, 1, 0]], _np.float32), (3, 1, 1))
            head_out = rx.head({"indices": idx, "theta": theta})
    return rows, head_out


# -- 3. start-up -------------------------------------------------------------------------------
STARTUP = """
import sys, time
t0 = time.perf_counter()
from codealign_ros.pipeline import ReceiverConfig, ReceiverPipeline, VehicleConfig, VehiclePipeline
VehiclePipeline(VehicleConfig(sys.argv[1], "m1", "cav_1", backend=sys.argv[2], threads=1))
ReceiverPipeline(ReceiverConfig(sys.argv[1], "cav_1", "m1", backend=sys.argv[2], threads=1))
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(round(time.perf_counter() - t0, 3), hwm, "torch" in sys.modules)
"""  # VmHWM: peak RSS of this process image (ru_maxrss would carry the parent's over exec)


def bench_startup(models: Path, backends: list[str]) -> dict[str, Any]:
    out = {}
    for backend in backends:
        env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        proc = subprocess.run([sys.executable, "-c", STARTUP, str(models), backend],
                              capture_output=True, text=True, timeout=300, env=env)
        if proc.returncode:
            out[backend] = {"error": proc.stderr[-500:]}
            continue
        seconds, rss_kb, torch = proc.stdout.split()[-3:]
        out[backend] = {"startup_s": float(seconds), "peak_rss_mb": round(int(rss_kb) / 1024),
                        "torch_imported": torch == "True"}
    return out


# -- report ------------------------------------------------------------------------------------
def _ms(t: dict[str, float] | None) -> str:
    return "-" if not t else f"{t['p50_ms']:.1f} / {t['p95_ms']:.1f}"


def report(res: dict[str, Any]) -> str:
    nms = res["nms"]
    lines = [f"Real-time figures (`python benchmarks/bench_realtime.py`, {res['host']}); "
             "p50 / p95 ms.", "",
             "| NMS, 1,000 candidates, 1 thread | reference (per pair) | vectorised | same kept set |",
             "|---|---:|---:|---|",
             f"| anchor-like boxes, IoU 0.15 | {_ms(nms['anchor_like']['reference'])} | "
             f"{_ms(nms['anchor_like']['vectorised'])} | {nms['anchor_like']['same_kept_set']} |"]
    if "receiver_post" in nms:
        rp = nms["receiver_post"]
        lines.append(f"| receiver post-processing (shipped weights, score {rp['score']}, top-k "
                     f"{rp['pre_nms_top_k']}, {rp['kept']} kept) | {_ms(rp['before'])} | "
                     f"{_ms(rp['after'])} | {rp['same_boxes']} |")
    lines += ["", "| stage (1 thread) | " + " | ".join(res["pipelines"]) + " |",
              "|---|" + "---:|" * len(res["pipelines"])]
    first = next(iter(res["pipelines"].values()))
    for stage, parts in first.items():
        for part in parts:
            cells = [_ms(res["pipelines"][b].get(stage, {}).get(part)) for b in res["pipelines"]]
            lines.append(f"| {stage} {part.removesuffix('_ms')} | " + " | ".join(cells) + " |")
    lines += ["", "| node start-up (vehicle m1 + receiver) | seconds | peak RSS MB | torch imported |",
              "|---|---:|---:|---|"]
    for backend, s in res["startup"].items():
        if "error" not in s:
            lines.append(f"| {backend} | {s['startup_s']} | {s['peak_rss_mb']} | "
                         f"{s['torch_imported']} |")
    demo = res.get("demo")
    if demo:
        rt, lat = demo.get("realtime", {}), demo["latency_ms"]["end_to_end"]
        lines += ["", f"Demo graph (`codealign demo`, rate {demo['rate']}): achieved "
                  f"{rt.get('achieved_hz')} Hz, fused {demo['frames']['fused']} of "
                  f"{demo['frames']['evaluated_span']} frames, end-to-end p50 {lat['p50']} / "
                  f"p95 {lat['p95']} ms.", "",
                  "| node | CPU % (1 core) | stage timings p50 / p95 ms |", "|---|---:|---|"]
        for node, v in rt.get("nodes", {}).items():
            parts = ", ".join(f"{k.removesuffix('_ms')} {x['p50']} / {x['p95']}"
                              for k, x in v.items() if k != "cpu_percent" and x.get("n"))
            lines.append(f"| {node} | {v.get('cpu_percent')} | {parts} |")
        for node, entry in demo["drops"]["nodes"].items():
            if entry.get("ledger"):
                b = entry["ledger"]
                lines.append(f"\nTransport ledger of {node}: offered {b['offered']} = fused "
                             f"{b['fused']} + dropped {b['dropped']} + held {b['held']} "
                             f"({'exact' if entry.get('balanced') else 'unbalanced'}); drops "
                             f"{entry['drops']}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=REPO / "models/mini")
    parser.add_argument("--repeat", type=int, default=20, help="frames per stage")
    parser.add_argument("--backends", default="torch,onnxruntime")
    parser.add_argument("--demo", type=Path, default=None,
                        help="summary.json of a `codealign demo` run to include")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    from codealign_ros.pipeline.deploy import export_fresh
    from codealign_ros.pipeline.stages import export_all

    if not export_fresh(args.models):
        export_all(args.models)
    backends = [b for b in args.backends.split(",") if b]
    pipelines, head_out = bench_pipelines(args.models, backends, args.repeat)
    res = {"host": f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
           "nms": bench_nms(head_out, args.repeat), "pipelines": pipelines,
           "startup": bench_startup(args.models, backends)}
    if args.demo and args.demo.is_file():
        res["demo"] = json.loads(args.demo.read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "realtime.json").write_text(json.dumps(res, indent=2) + "\n")
    text = report(res)
    (args.out / "realtime.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
