"""The torch-free deploy path: ONNX Runtime pipelines run with torch made unimportable and
agree with the PyTorch pipelines; a stale export falls back to PyTorch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from codealign_ros.pipeline.deploy import DeployError, DeploySource, StageRequest
from codealign_ros.pipeline.sources import TorchSource, open_source
from codealign_ros.pipeline.stages import export_all
from codealign_ros.pipeline.testing import make_random_store

pytest.importorskip("onnxruntime", reason="onnxruntime not installed")

# Runs in a fresh interpreter: torch blocked on sys.meta_path, then both pipelines on ORT.
SCRIPT = textwrap.dedent("""
    import json, sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this test")
    sys.meta_path.insert(0, Block())
    import numpy as np
    from codealign_ros.core.codemap import GridPose
    from codealign_ros.data.types import CameraFrame
    from codealign_ros.models.inputs import synthetic_points, synthetic_rig
    from codealign_ros.pipeline import (ReceiverConfig, ReceiverPipeline, VehicleConfig,
                                        VehiclePipeline)
    store = sys.argv[1]
    ego = VehiclePipeline(VehicleConfig(store, "m1", "cav_1", backend="onnxruntime", threads=1))
    peer = VehiclePipeline(VehicleConfig(store, "m2", "cav_2", backend="onnxruntime", threads=1,
                                         translate_to=("g1",)))
    cam = VehiclePipeline(VehicleConfig(store, "m4", "cav_3", backend="onnxruntime", threads=1))
    rx = ReceiverPipeline(ReceiverConfig(store, "cav_1", "m1", backend="onnxruntime", threads=1))
    pts = synthetic_points(ego.profile, 4000, np.random.default_rng(1))
    k, ext = synthetic_rig(4, (160, 120))
    rng = np.random.default_rng(2)
    cams = [CameraFrame(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), k[i],
                        np.linalg.inv(ext[i])) for i in range(4)]
    stamp = 10**9
    maps = ego.code_maps(ego.process_lidar(pts), stamp, GridPose((0.0, 0.0, 0.0)))
    maps += peer.code_maps(peer.process_lidar(pts), stamp, GridPose((4.0, 1.0, 0.3)))
    maps += cam.code_maps(cam.process_cameras(cams), stamp, GridPose((-3.0, 2.0, 0.0)))
    for m in maps[1:]:
        assert rx.offer(m, stamp) is None, m.agent_id
    out = rx.fuse(maps[0], stamp)
    print(json.dumps({"torch": "torch" in sys.modules, "agents": out.agents,
                      "indices": [m.indices.tolist() for m in maps],
                      "boxes": out.boxes.tolist(), "scores": out.scores.tolist(),
                      "backend": rx.backend_name}))
""")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = make_random_store(tmp_path_factory.mktemp("deploy") / "mini",
                              modalities=("m1", "m2", "m4"), score_bias=-1.5, score_gain=300.0)
    export_all(store)
    return store


def _run_blocked(store: Path, tmp_path: Path) -> dict:
    script = tmp_path / "blocked.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])
           + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, str(script), str(store)], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_ort_pipelines_run_without_torch_and_match_pytorch(exported: Path,
                                                           tmp_path: Path) -> None:
    got = _run_blocked(exported, tmp_path)
    assert got["torch"] is False and got["backend"].startswith("onnxruntime")
    assert got["agents"] == ["cav_1", "cav_2", "cav_3"] and len(got["scores"]) > 0
    # the same frame through the PyTorch backend (this process has torch)
    from codealign_ros.core.codemap import GridPose
    from codealign_ros.data.types import CameraFrame
    from codealign_ros.models.inputs import synthetic_points, synthetic_rig
    from codealign_ros.pipeline import (ReceiverConfig, ReceiverPipeline, VehicleConfig,
                                        VehiclePipeline)

    ego = VehiclePipeline(VehicleConfig(exported, "m1", "cav_1", backend="torch"))
    cam = VehiclePipeline(VehicleConfig(exported, "m4", "cav_3", backend="torch"))
    pts = synthetic_points(ego.profile, 4000, np.random.default_rng(1))
    k, ext = synthetic_rig(4, (160, 120))
    rng = np.random.default_rng(2)
    cams = [CameraFrame(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), k[i],
                        np.linalg.inv(ext[i])) for i in range(4)]
    own = ego.code_maps(ego.process_lidar(pts), 10**9, GridPose((0.0, 0.0, 0.0)))[0]
    cam_map = cam.code_maps(cam.process_cameras(cams), 10**9, GridPose((-3.0, 2.0, 0.0)))[0]
    for idx, ref in ((got["indices"][0], own.indices), (got["indices"][-1], cam_map.indices)):
        assert np.mean(np.asarray(idx) == ref) > 0.99  # argmin ties may flip a few cells
    rx = ReceiverPipeline(ReceiverConfig(exported, "cav_1", "m1", backend="torch"))
    out = rx.fuse(own, 10**9)
    assert isinstance(rx.source, TorchSource) and len(out.scores) > 0


def test_stale_or_missing_export_falls_back_to_pytorch(exported: Path, tmp_path: Path) -> None:
    source = DeploySource(exported)
    assert source.stage_file(StageRequest("receiver", ("g1",))).is_file()
    with pytest.raises(DeployError, match="not exported"):
        source.stage_file(StageRequest("receiver", ("g9",)))
    copy = tmp_path / "mini"
    copy.mkdir()
    for f in exported.iterdir():
        if f.is_file():
            (copy / f.name).write_bytes(f.read_bytes())
    assert isinstance(open_source(copy, None, "onnxruntime"), TorchSource)  # no deploy.json
    (copy / "onnx").symlink_to(exported / "onnx")
    (copy / "codespace_g1.pt").write_bytes((copy / "codespace_g1.pt").read_bytes() + b" ")
    with pytest.raises(DeployError, match="changed since the export"):
        DeploySource(copy).stage_file(StageRequest("receiver", ("g1",)))
    assert isinstance(open_source(copy, None, "torch"), TorchSource)


def test_export_has_d2c_stages_into_each_single_space(tmp_path: Path) -> None:
    """A sender translating for one ego's group (the demo's road-side unit) stays torch-free:
    with three spaces the export holds vehicle_<m>_to_<t> for every single target too."""
    from codealign_ros.models.store import ModelStore
    from codealign_ros.pipeline.stages import deployable_specs

    store = ModelStore(make_random_store(tmp_path / "mini", modalities=("m1", "m2", "m3")))
    names = {factory().name for factory in deployable_specs(store)}
    assert {"vehicle_m2", "vehicle_m2_to_g1_g3", "vehicle_m2_to_g1", "vehicle_m2_to_g3",
            "vehicle_m1_to_g2", "translator_g2_to_g1"} <= names
