"""Runtime: ONNX export + sidecar, ONNX Runtime vs PyTorch, backend selection, engine cache."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from codealign_ros.runtime import (
    BackendError, ExportError, OnnxRuntimeBackend, TorchBackend, available_backends,
    compare_outputs, create_backend, export_onnx, onnx_sha256, verify_onnx,
)
from codealign_ros.runtime.tensorrt_backend import cache_problem, default_profile, engine_path_for

INPUTS = ["features", "gain"]
OUTPUTS = ["labels", "scores"]
LOGGER = "codealign.runtime"


class TwoHeadNet(nn.Module):
    """Conv net with two inputs and two outputs: per-cell argmax (int64) and softmax scores."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 5, 1)

    def forward(self, features: torch.Tensor,
                gain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.head(torch.relu(self.conv(features)) * gain)
        return logits.argmax(dim=1), logits.softmax(dim=1)


def make_net() -> TwoHeadNet:
    torch.manual_seed(0)
    return TwoHeadNet()


def make_inputs(batch: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"features": rng.standard_normal((batch, 4, 8, 8)).astype(np.float32),
            "gain": rng.uniform(0.5, 2.0, (batch, 1, 1, 1)).astype(np.float32)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    example = {k: torch.from_numpy(v) for k, v in make_inputs(2).items()}
    axes = {n: {0: "batch"} for n in INPUTS + OUTPUTS}
    out = tmp_path_factory.mktemp("onnx") / "two_head.onnx"
    return export_onnx(make_net(), example, out, OUTPUTS, dynamic_axes=axes,
                       meta={"modality": "m1", "code_space": "g1"})


def test_export_sidecar_records_graph_and_hash(exported: Path) -> None:
    sidecar = json.loads(exported.with_suffix(".json").read_text())
    file_hash = hashlib.sha256(exported.read_bytes()).hexdigest()
    assert sidecar["sha256"] == onnx_sha256(exported) == file_hash
    assert sidecar["onnx"] == exported.name and sidecar["opset"] == 17
    assert [(i["name"], i["dtype"], i["shape"]) for i in sidecar["inputs"]] == [
        ("features", "float32", ["batch", 4, 8, 8]), ("gain", "float32", ["batch", 1, 1, 1])]
    assert [(o["name"], o["dtype"], o["shape"]) for o in sidecar["outputs"]] == [
        ("labels", "int64", ["batch", 8, 8]), ("scores", "float32", ["batch", 5, 8, 8])]
    assert sidecar["inputs"][0]["example_shape"] == [2, 4, 8, 8]
    assert sidecar["meta"] == {"modality": "m1", "code_space": "g1"}
    assert sidecar["torch_version"] == torch.__version__ and sidecar["onnx_version"]


@pytest.mark.parametrize("batch", [2, 5, 1])  # 2 = export batch; 5 and 1 use the dynamic axis
def test_onnxruntime_matches_torch(exported: Path, batch: int) -> None:
    ort_backend = OnnxRuntimeBackend(exported, threads=1)
    torch_backend = TorchBackend(make_net(), INPUTS, OUTPUTS)
    feed = make_inputs(batch, seed=batch)
    want, got = torch_backend(feed), ort_backend(feed)
    assert got["labels"].dtype == np.int64 and got["labels"].shape == (batch, 8, 8)
    np.testing.assert_array_equal(got["labels"], want["labels"])
    np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-4, rtol=0)
    assert compare_outputs(want, got, atol=1e-4) < 1e-4
    assert ort_backend.last_ms > 0 and torch_backend.last_ms > 0


def test_verify_onnx_passes_and_catches_a_different_module(exported: Path) -> None:
    example = {k: torch.from_numpy(v) for k, v in make_inputs(3).items()}
    assert verify_onnx(make_net(), example, exported) < 1e-4
    other = make_net()
    with torch.no_grad():
        other.head.weight.mul_(-1.0)
    with pytest.raises(ExportError, match="disagrees"):
        verify_onnx(other, example, exported)


def test_compare_outputs_integer_outputs_must_match_exactly() -> None:
    want = {"labels": np.array([1, 2, 3]), "scores": np.zeros(3, np.float32)}
    with pytest.raises(ValueError, match="labels"):
        compare_outputs(want, {"labels": np.array([1, 2, 4]), "scores": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="scores"):
        compare_outputs(want, {"labels": want["labels"], "scores": np.full(3, 1e-2, np.float32)})


def _bad_inputs() -> list[tuple[str, dict, str]]:
    good = make_inputs(2)
    return [
        ("unknown name", {"featurez": good["features"], "gain": good["gain"]}, "featurez"),
        ("missing", {"features": good["features"]}, "'gain'"),
        ("dtype", {**good, "features": good["features"].astype(np.float64)}, "'features'.*float64"),
        ("channels", {**good, "features": good["features"][:, :3]}, "'features'.*shape"),
        ("rank", {**good, "gain": good["gain"][..., 0]}, "'gain'.*shape"),
        ("not an array", {**good, "gain": good["gain"].tolist()}, "'gain'.*numpy"),
    ]


@pytest.mark.parametrize("kind", ["onnxruntime", "torch"])
@pytest.mark.parametrize(("case", "inputs", "pattern"), _bad_inputs(),
                         ids=[c[0] for c in _bad_inputs()])
def test_bad_input_raises_backend_error_naming_it(exported: Path, kind: str, case: str,
                                                  inputs: dict, pattern: str) -> None:
    backend = create_backend(kind, exported, make_net, device="cpu")
    with pytest.raises(BackendError, match=pattern):
        backend(inputs)


def test_auto_on_cpu_picks_onnxruntime_with_onnx_file(exported: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        backend = create_backend("auto", exported, make_net, device="cpu")
    assert backend.name == "onnxruntime" and backend.device == "cpu"
    assert "backend auto -> onnxruntime (cpu)" in caplog.text


def test_auto_device_picks_best_available(exported: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        backend = create_backend("auto", exported, make_net)
    best = available_backends()[0]
    assert backend.name == best.split("-")[0]
    assert backend.device == ("cuda" if best == "tensorrt" or best.endswith("-cuda") else "cpu")
    assert f"backend auto -> {backend.name} ({backend.device})" in caplog.text
    if best == "onnxruntime":  # CPU-only machine: every CUDA candidate is logged as skipped
        assert "no CUDA GPU" in caplog.text


def test_auto_picks_torch_with_only_a_factory(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        backend = create_backend("auto", module_factory=make_net, device="cpu",
                                 input_names=INPUTS, output_names=OUTPUTS)
    assert backend.name == "torch"
    assert "backend auto -> torch (cpu)" in caplog.text and "no ONNX file given" in caplog.text
    out = backend(make_inputs(2))
    assert set(out) == set(OUTPUTS) and out["labels"].dtype == np.int64


def test_torch_names_come_from_the_sidecar(exported: Path) -> None:
    backend = create_backend("torch", exported, make_net, device="cpu")
    assert (backend.input_names, backend.output_names) == (INPUTS, OUTPUTS)


def test_explicit_backend_without_its_prerequisite_raises(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="onnxruntime.*no ONNX file"):
        create_backend("onnxruntime", module_factory=make_net, device="cpu")
    with pytest.raises(BackendError, match="onnxruntime.*not found"):
        create_backend("onnxruntime", tmp_path / "absent.onnx", device="cpu")
    with pytest.raises(BackendError, match="torch.*no module factory"):
        create_backend("torch", device="cpu")
    with pytest.raises(BackendError, match="names unknown"):
        create_backend("torch", module_factory=make_net, device="cpu")
    with pytest.raises(BackendError, match="unknown backend"):
        create_backend("openvino")
    with pytest.raises(BackendError, match="unknown device"):
        create_backend("torch", module_factory=make_net, device="tpu")


def test_cuda_requests_fail_clearly_without_a_gpu(exported: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present; this test covers CPU-only machines")
    with pytest.raises(BackendError, match="torch.*CUDA"):
        TorchBackend(make_net(), INPUTS, OUTPUTS, device="cuda")
    if "onnxruntime-cuda" not in available_backends():
        with pytest.raises(BackendError, match="onnxruntime \\(cuda\\)"):
            create_backend("onnxruntime", exported, device="cuda")


def _tensorrt_ready() -> bool:
    return "tensorrt" in available_backends()


def test_explicit_tensorrt_unavailable_raises(exported: Path) -> None:
    if _tensorrt_ready():
        pytest.skip("tensorrt and a CUDA GPU are present; see test_tensorrt_matches_torch")
    with pytest.raises(BackendError, match="tensorrt"):
        create_backend("tensorrt", exported)


def test_tensorrt_matches_torch(exported: Path, caplog: pytest.LogCaptureFixture) -> None:
    if importlib.util.find_spec("tensorrt") is None:
        pytest.skip("tensorrt not installed")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU for TensorRT")
    from codealign_ros.runtime.tensorrt_backend import TensorRTBackend, build_engines

    (engine,) = build_engines([exported])
    assert engine.is_file() and engine.parent == exported.parent
    with caplog.at_level(logging.INFO, logger=LOGGER):
        backend = TensorRTBackend(exported)
    assert backend.engine_path == engine and "rebuild" not in caplog.text  # served from the cache
    feed = make_inputs(2)
    want = TorchBackend(make_net(), INPUTS, OUTPUTS)(feed)
    compare_outputs(want, backend(feed), atol=1e-3, rtol=1e-3)
    with pytest.raises(BackendError, match="features"):
        backend({**feed, "features": feed["features"].astype(np.float64)})


def _key(*args: object, **kwargs: object) -> str:
    return engine_path_for(*args, **kwargs).name.split(".")[-2]


def test_engine_cache_key_changes_with_every_dependency(tmp_path: Path) -> None:
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    a.write_bytes(b"graph one")
    b.write_bytes(b"graph two")
    path = engine_path_for(a, False, "10.3.0", "NVIDIA H100")
    assert path.parent == tmp_path and path.name.startswith("a.fp32.") and path.suffix == ".engine"
    assert engine_path_for(a, True, "10.3.0", "NVIDIA H100").name.startswith("a.fp16.")
    base = _key(a, False, "10.3.0", "NVIDIA H100")
    assert base == _key(a, False, "10.3.0", "NVIDIA H100")  # deterministic
    variants = [
        _key(b, False, "10.3.0", "NVIDIA H100"),
        _key(a, True, "10.3.0", "NVIDIA H100"),
        _key(a, False, "10.4.0", "NVIDIA H100"),
        _key(a, False, "10.3.0", "NVIDIA A100"),
        _key(a, False, "10.3.0", "NVIDIA H100", {"x": ((1, 4), (2, 4), (8, 4))}),
    ]
    assert len({base, *variants}) == 6
    b.write_bytes(b"graph one")  # the key follows the file's content, not its name
    assert _key(b, False, "10.3.0", "NVIDIA H100") == base
    a.write_bytes(b"graph one, edited")
    assert _key(a, False, "10.3.0", "NVIDIA H100") != base


def test_cache_problem_reports_missing_stale_and_matching(tmp_path: Path) -> None:
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(b"graph")
    engine = engine_path_for(onnx_path, False, "10.3.0", "GPU")
    key = engine.name.split(".")[-2]
    assert "no cached engine" in cache_problem(engine, key)
    engine.write_bytes(b"engine bytes")
    assert "missing or unreadable" in cache_problem(engine, key)
    engine.with_suffix(".json").write_text(json.dumps({"key": "0" * 16}))
    assert "!=" in cache_problem(engine, key)
    engine.with_suffix(".json").write_text(json.dumps({"key": key}))
    assert cache_problem(engine, key) is None


def test_default_profile_spans_one_to_the_example_batch(exported: Path) -> None:
    profile = default_profile(exported)
    assert profile == {"features": ((1, 4, 8, 8), (2, 4, 8, 8), (2, 4, 8, 8)),
                       "gain": ((1, 1, 1, 1), (2, 1, 1, 1), (2, 1, 1, 1))}
