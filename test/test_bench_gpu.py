"""The prepared GPU benchmark (benchmarks/bench_gpu.py) runs end to end on the CPU."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_bench_gpu_cpu_smoke_run(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "benchmarks" / "bench_gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)  # type: ignore[union-attr]
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--profile", "mini", "--device", "cpu", "--cpu-repeat", "1",
                           "--cpu-threads", "1", "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    res = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert [s["stage"] for s in res["stages"]] == ["vehicle_m1", "vehicle_m4",
                                                   "receiver_3_agents"]
    assert all(s["cpu_fp32"]["p50_ms"] > 0 and s["params"] > 0 for s in res["stages"])
    assert "| vehicle_m1 |" in (tmp_path / "bench_gpu.md").read_text()
