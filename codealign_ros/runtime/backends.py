"""Inference backends (PyTorch, ONNX Runtime, TensorRT) behind one numpy-in/numpy-out interface."""

from __future__ import annotations

import importlib.util
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from codealign_ros.runtime.base import (LOGGER_NAME, BackendError, InferenceBackend, TensorSpec,
                                        specs_from_sidecar, static_dims)
from codealign_ros.runtime.export import ExportError, as_output_list, load_sidecar

if TYPE_CHECKING:  # torch only for the torch backend: ONNX Runtime nodes never import it
    from torch import nn

__all__ = [
    "BackendError", "TensorSpec", "InferenceBackend", "TorchBackend", "OnnxRuntimeBackend",
    "available_backends", "create_backend", "compare_outputs", "specs_from_sidecar", "verify_onnx",
]

KINDS = ("auto", "tensorrt", "onnxruntime", "torch")
DEVICES = ("auto", "cpu", "cuda")
# Preference order of ``backend: auto`` (best first), with the labels of available_backends().
AUTO_ORDER = (("tensorrt", "cuda"), ("onnxruntime", "cuda"), ("torch", "cuda"),
              ("onnxruntime", "cpu"), ("torch", "cpu"))
_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(uint16)": np.uint16,
    "tensor(bool)": np.bool_,
}


class TorchBackend(InferenceBackend):
    """A PyTorch module in eval/inference mode, called positionally in ``input_names`` order."""

    name = "torch"

    def __init__(self, module: nn.Module, input_names: list[str], output_names: list[str],
                 device: str = "cpu", input_specs: dict[str, TensorSpec] | None = None) -> None:
        import torch

        super().__init__(input_names, output_names, input_specs)
        if device not in ("cpu", "cuda"):
            raise BackendError(f"torch device must be 'cpu' or 'cuda', got {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendError(f"torch CUDA unavailable (torch {torch.__version__}, no usable GPU)")
        self.device = device
        self.module = module.to(device).eval()

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            args = [torch.as_tensor(np.ascontiguousarray(inputs[n]), device=self.device)
                    for n in self.input_names]
            outputs = as_output_list(self.module(*args), self.output_names)
            return {n: t.detach().cpu().numpy() for n, t in zip(self.output_names, outputs)}


class OnnxRuntimeBackend(InferenceBackend):
    """An ONNX Runtime session on the CPU, or the CUDA execution provider."""

    name = "onnxruntime"

    def __init__(self, onnx_path: Path | str, device: str = "cpu",
                 threads: int | None = None) -> None:
        ort = _import_onnxruntime()
        if device not in ("cpu", "cuda"):
            raise BackendError(f"onnxruntime device must be 'cpu' or 'cuda', got {device!r}")
        if not Path(onnx_path).is_file():
            raise BackendError(f"ONNX file not found: {onnx_path}")
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendError(
                    "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
            providers.insert(0, "CUDAExecutionProvider")
        options = session_options(ort, threads)
        try:
            self.session = ort.InferenceSession(str(onnx_path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendError(f"onnxruntime cannot load {onnx_path}: {exc}") from exc
        if providers[0] not in self.session.get_providers():
            raise BackendError(
                f"onnxruntime could not enable {providers[0]} (CUDA libraries missing?)")
        self.device, self.onnx_path = device, Path(onnx_path)
        ins, outs = self.session.get_inputs(), self.session.get_outputs()
        specs = {i.name: TensorSpec(i.name, _ort_dtype(i.type), static_dims(i.shape)) for i in ins}
        super().__init__([i.name for i in ins], [o.name for o in outs], specs)

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.session.run(self.output_names, {n: inputs[n] for n in self.input_names})
        return dict(zip(self.output_names, results))


def session_options(ort: Any, threads: int | None = None) -> Any:
    """ONNX Runtime options for a node sharing a small CPU with other nodes: `threads`
    intra-op threads (default 1), one inter-op thread, sequential execution and no
    spin-waiting (idle threads yield the core instead of burning it between frames)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads) if threads else 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def _ort_dtype(type_str: str) -> np.dtype | None:
    dtype = _ORT_TYPES.get(type_str)
    return None if dtype is None else np.dtype(dtype)


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendError("onnxruntime is not installed") from exc
    return onnxruntime


def compare_outputs(expected: dict[str, np.ndarray], actual: dict[str, np.ndarray],
                    atol: float = 1e-4, rtol: float = 1e-4) -> float:
    """Max abs error over float outputs; integer/bool outputs must match exactly.

    Raises ValueError naming the first output that is missing, misshapen or out of tolerance.
    """
    worst = 0.0
    for name, want in expected.items():
        if name not in actual:
            raise ValueError(f"output {name!r} missing")
        got = np.asarray(actual[name])
        if got.shape != want.shape:
            raise ValueError(f"output {name!r} has shape {got.shape}, expected {want.shape}")
        if not np.issubdtype(want.dtype, np.floating):
            bad = int(np.count_nonzero(got != want))
            if bad:
                raise ValueError(
                    f"integer output {name!r} differs in {bad} of {want.size} elements")
            continue
        err = np.abs(got.astype(np.float64) - want.astype(np.float64))
        worst = max(worst, float(err.max(initial=0.0)))
        if not np.allclose(got, want, atol=atol, rtol=rtol):
            raise ValueError(f"output {name!r} max abs error {float(err.max()):.3g} "
                             f"exceeds atol={atol} rtol={rtol}")
    return worst


def _gpu_present() -> bool:
    """A CUDA GPU is visible (torch sees one, or the NVIDIA driver's device node exists)."""
    return Path("/dev/nvidiactl").exists() or _torch_cuda()


def _torch_cuda() -> bool:
    """torch sees a GPU; False without importing torch when no node imported it yet."""
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_available())


def _missing(kind: str, device: str) -> str | None:
    """Why backend ``kind`` cannot run on ``device`` in this environment, or None."""
    if kind in ("tensorrt", "onnxruntime") and importlib.util.find_spec(kind) is None:
        return f"{kind} not installed"
    if device == "cpu":
        return None
    if not _gpu_present():
        return "no CUDA GPU"
    if kind == "onnxruntime":
        providers = _import_onnxruntime().get_available_providers()
        if "CUDAExecutionProvider" not in providers:
            return "onnxruntime has no CUDAExecutionProvider"
        return None
    if importlib.util.find_spec("torch") is None:
        return f"{kind} needs torch with CUDA (torch not installed)"
    import torch

    if not torch.cuda.is_available():
        return f"{kind} needs torch with CUDA (torch {torch.__version__} sees no GPU)"
    return None


def available_backends() -> list[str]:
    """Usable backends, best first: tensorrt, onnxruntime-cuda, torch-cuda, onnxruntime, torch."""
    labels = []
    for kind, device in AUTO_ORDER:
        if _missing(kind, device) is None:
            labels.append(kind if kind == "tensorrt" or device == "cpu" else f"{kind}-{device}")
    return labels


def _candidates(kind: str, device: str) -> list[tuple[str, str]]:
    if kind not in KINDS:
        raise BackendError(f"unknown backend {kind!r}; choose one of {KINDS}")
    if device not in DEVICES:
        raise BackendError(f"unknown device {device!r}; choose one of {DEVICES}")
    order = [c for c in AUTO_ORDER if kind in ("auto", c[0]) and device in ("auto", c[1])]
    if not order:
        raise BackendError(f"backend {kind} cannot run on device {device!r}")
    return order


def _names(onnx_path: Path | None, input_names: list[str] | None,
           output_names: list[str] | None) -> tuple[list[str] | None, list[str] | None, dict]:
    sidecar = load_sidecar(onnx_path) if onnx_path is not None and onnx_path.is_file() else None
    specs = specs_from_sidecar(sidecar) if sidecar else {}
    if sidecar:
        input_names = input_names or [i["name"] for i in sidecar["inputs"]]
        output_names = output_names or [o["name"] for o in sidecar["outputs"]]
    return input_names, output_names, specs


def create_backend(kind: str = "auto", onnx_path: Path | str | None = None,
                   module_factory: Callable[[], nn.Module] | None = None, device: str = "auto",
                   fp16: bool = False, logger: logging.Logger | None = None, *,
                   input_names: list[str] | None = None, output_names: list[str] | None = None,
                   threads: int | None = None) -> InferenceBackend:
    """Build the requested backend, or with ``kind="auto"`` the best available one (logged).

    The torch backend needs ``module_factory`` plus names, given here or read from the ONNX
    sidecar. ``fp16`` applies to TensorRT only. Raises :class:`BackendError` when nothing fits.
    """
    log = logger or logging.getLogger(LOGGER_NAME)
    path = Path(onnx_path) if onnx_path is not None else None
    ins, outs, specs = _names(path, input_names, output_names)
    skipped: list[str] = []
    for cand_kind, cand_device in _candidates(kind, device):
        reason = (_prerequisite(cand_kind, path, module_factory, ins, outs)
                  or _missing(cand_kind, cand_device))
        if reason is None:
            try:
                backend = _build(cand_kind, cand_device, path, module_factory, ins, outs, specs,
                                 fp16, threads, log)
            except BackendError as exc:
                reason = str(exc)
        if reason is not None:
            skipped.append(f"{cand_kind} ({cand_device}): {reason}")
            continue
        why = "; ".join(skipped) if skipped else "best available" if kind == "auto" else "requested"
        note = " [fp16 ignored: TensorRT only]" if fp16 and cand_kind != "tensorrt" else ""
        log.info("backend %s -> %s (%s): %s%s", kind, cand_kind, cand_device, why, note)
        return backend
    what = "no backend available" if kind == "auto" else f"backend {kind} unavailable"
    raise BackendError(f"{what}: " + "; ".join(skipped))


def _prerequisite(kind: str, path: Path | None, factory: Callable | None,
                  ins: list[str] | None, outs: list[str] | None) -> str | None:
    if kind in ("tensorrt", "onnxruntime"):
        if path is None:
            return "no ONNX file given"
        return None if path.is_file() else f"ONNX file not found: {path}"
    if factory is None:
        return "no module factory given"
    if not ins or not outs:
        return "input/output names unknown (pass them or an ONNX file with its sidecar)"
    return None


def _build(kind: str, device: str, path: Path | None, factory: Callable[[], nn.Module] | None,
           ins: list[str] | None, outs: list[str] | None, specs: dict[str, TensorSpec],
           fp16: bool, threads: int | None, log: logging.Logger) -> InferenceBackend:
    if kind == "tensorrt":
        from codealign_ros.runtime.tensorrt_backend import TensorRTBackend

        return TensorRTBackend(path, fp16=fp16, logger=log)
    if kind == "onnxruntime":
        return OnnxRuntimeBackend(path, device=device, threads=threads)
    assert factory is not None and ins and outs
    return TorchBackend(factory(), ins, outs, device=device, input_specs=specs)


def verify_onnx(module: nn.Module, example_inputs: dict[str, Any], onnx_path: Path | str,
                atol: float = 1e-4, rtol: float = 1e-4) -> float:
    """Run ONNX Runtime (CPU) and PyTorch on the same inputs; max abs error of float outputs.

    Integer/bool outputs must match exactly. Raises :class:`ExportError` on any disagreement.
    """
    ort_backend = OnnxRuntimeBackend(onnx_path, device="cpu")
    feed = {n: t.detach().cpu().numpy() for n, t in example_inputs.items()}
    was_training = module.training
    try:
        torch_backend = TorchBackend(module, list(example_inputs), ort_backend.output_names)
        return compare_outputs(torch_backend(feed), ort_backend(feed), atol=atol, rtol=rtol)
    except ValueError as exc:
        raise ExportError(f"{onnx_path} disagrees with PyTorch: {exc}") from exc
    finally:
        module.train(was_training)
