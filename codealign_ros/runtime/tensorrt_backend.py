"""TensorRT 10 backend: engines built from ONNX on first use and cached beside the ONNX file.

The cache file ``<stem>.<fp16|fp32>.<key>.engine`` is keyed by sha256(ONNX) + TensorRT version +
GPU name + precision (+ optimisation profile); its JSON sidecar records the key. Device buffers
are torch CUDA tensors and inference runs on a torch CUDA stream, so pycuda is not needed.
``tensorrt`` is imported lazily: this module imports without it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from codealign_ros.runtime.base import LOGGER_NAME, BackendError, InferenceBackend, TensorSpec
from codealign_ros.runtime.export import load_sidecar, onnx_sha256

__all__ = [
    "TensorRTError", "TensorRTBackend", "engine_key", "engine_path_for", "cache_problem",
    "default_profile", "build_engine", "build_engines", "trt_version", "gpu_name",
]

Shape = tuple[int, ...]
Profile = dict[str, tuple[Shape, Shape, Shape]]  # input name -> (min, opt, max) shapes
_TRT_LOGGER: Any = None


class TensorRTError(BackendError):
    """TensorRT is missing, the ONNX file does not parse, or the engine fails to build/run."""

    reason: str = "tensorrt"


def _import_trt() -> Any:
    try:
        import tensorrt
    except ImportError as exc:
        raise TensorRTError("tensorrt not installed (pip install tensorrt)") from exc
    return tensorrt


def _trt_logger(trt: Any) -> Any:
    global _TRT_LOGGER
    if _TRT_LOGGER is None:
        _TRT_LOGGER = trt.Logger(trt.Logger.WARNING)
    return _TRT_LOGGER


def trt_version() -> str | None:
    """The installed TensorRT version, or None."""
    return _import_trt().__version__ if importlib.util.find_spec("tensorrt") else None


def gpu_name(device: int | None = None) -> str:
    """Name of CUDA device ``device`` (default: torch's current one) as torch reports it."""
    if not torch.cuda.is_available():
        raise TensorRTError("TensorRT needs a CUDA GPU visible to torch")
    return torch.cuda.get_device_name(torch.cuda.current_device() if device is None else device)


def _precision(fp16: bool) -> str:
    return "fp16" if fp16 else "fp32"


def engine_key(onnx_hash: str, fp16: bool, trt_version: str, gpu_name: str,
               profile: Profile | None = None) -> str:
    """16-hex-digit cache key of everything an engine depends on."""
    fields = {"onnx": onnx_hash, "precision": _precision(fp16), "tensorrt": trt_version,
              "gpu": gpu_name, "profile": _profile_json(profile)}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _profile_json(profile: Profile | None) -> dict[str, list[list[int]]]:
    return {name: [list(shape) for shape in shapes] for name, shapes in (profile or {}).items()}


def _engine_record(onnx_path: Path, fp16: bool, trt_ver: str, gpu: str,
                   profile: Profile | None) -> dict[str, Any]:
    onnx_hash = onnx_sha256(onnx_path)
    return {"key": engine_key(onnx_hash, fp16, trt_ver, gpu, profile), "onnx": onnx_path.name,
            "onnx_sha256": onnx_hash, "precision": _precision(fp16), "tensorrt": trt_ver,
            "gpu": gpu, "profile": _profile_json(profile)}


def _path_for(onnx_path: Path, record: dict[str, Any]) -> Path:
    return onnx_path.with_name(f"{onnx_path.stem}.{record['precision']}.{record['key']}.engine")


def engine_path_for(onnx_path: Path | str, fp16: bool, trt_version: str, gpu_name: str,
                    profile: Profile | None = None) -> Path:
    """Cache file of the engine for this ONNX file, precision, TensorRT version and GPU."""
    onnx_path = Path(onnx_path)
    return _path_for(onnx_path, _engine_record(onnx_path, fp16, trt_version, gpu_name, profile))


def _record_path(engine_path: Path) -> Path:
    return engine_path.with_suffix(".json")


def cache_problem(engine_path: Path, key: str) -> str | None:
    """Why the cached engine cannot be used (missing, no sidecar, key mismatch), or None."""
    if not engine_path.is_file():
        stem = engine_path.name.rsplit(".", 3)[0]
        stale = sorted(p.name for p in engine_path.parent.glob(f"{stem}.*.engine"))
        return f"no cached engine {engine_path.name}" + (f" (other keys: {stale})" if stale else "")
    try:
        recorded = json.loads(_record_path(engine_path).read_text()).get("key")
    except (OSError, ValueError, AttributeError):
        return f"engine sidecar {_record_path(engine_path).name} missing or unreadable"
    return None if recorded == key else f"engine sidecar key {recorded!r} != {key!r}"


def default_profile(onnx_path: Path | str) -> Profile:
    """(min, opt, max) shapes of the dynamic inputs in the export sidecar.

    Dynamic dims run from 1 to the export example (opt = max = example shape).
    """
    sidecar = load_sidecar(onnx_path) or {"inputs": []}
    profile: Profile = {}
    for spec in sidecar["inputs"]:
        dynamic = [not (isinstance(d, int) and d > 0) for d in spec["shape"]]
        example = tuple(int(d) for d in spec.get("example_shape") or [])
        if any(dynamic) and len(example) == len(dynamic):
            low = tuple(1 if dyn else d for dyn, d in zip(dynamic, example))
            profile[spec["name"]] = (low, example, example)
    return profile


def _parse(trt: Any, builder: Any, onnx_path: Path) -> Any:
    major = int(trt.__version__.split(".")[0])
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, _trt_logger(trt))
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTError(f"TensorRT cannot parse {onnx_path}: {errors or 'unknown error'}")
    return network, parser


def _add_profile(trt: Any, builder: Any, config: Any, network: Any, profile: Profile) -> None:
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    dynamic = [t.name for t in inputs if any(d < 0 for d in tuple(t.shape))]
    if not dynamic:
        return
    missing = [n for n in dynamic if n not in profile]
    if missing:
        raise TensorRTError(f"inputs {missing} have dynamic dims: pass shapes={{name: (min, opt, "
                            "max)}} or export with a sidecar holding example shapes")
    opt_profile = builder.create_optimization_profile()
    for name in dynamic:
        opt_profile.set_shape(name, *profile[name])
    config.add_optimization_profile(opt_profile)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_engine(onnx_path: Path | str, fp16: bool = False, workspace_mb: int = 1024,
                 out: Path | str | None = None, shapes: Profile | None = None,
                 logger: logging.Logger | None = None) -> Path:
    """Build a serialized engine from ``onnx_path``; write it (and its key sidecar) to ``out``.

    ``out`` defaults to the cache path of :func:`engine_path_for`. ``shapes`` gives the
    optimisation profile of dynamic inputs (default: :func:`default_profile`).
    """
    trt, log, onnx_path = _import_trt(), logger or logging.getLogger(LOGGER_NAME), Path(onnx_path)
    profile = shapes if shapes is not None else default_profile(onnx_path)
    record = _engine_record(onnx_path, fp16, trt.__version__, gpu_name(), profile)
    out = Path(out) if out is not None else _path_for(onnx_path, record)
    builder = trt.Builder(_trt_logger(trt))
    network, _parser = _parse(trt, builder, onnx_path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    _add_profile(trt, builder, config, network, profile)
    log.info("building TensorRT %s engine for %s (TensorRT %s, %s)", record["precision"],
             onnx_path.name, record["tensorrt"], record["gpu"])
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTError(f"TensorRT engine build failed for {onnx_path} (see the TensorRT log)")
    _write_atomic(out, bytes(serialized))
    _write_atomic(_record_path(out), (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
    return out


def _np_dtype(trt: Any, dtype: Any) -> np.dtype:
    try:
        return np.dtype(trt.nptype(dtype))
    except TypeError as exc:
        raise TensorRTError(f"TensorRT dtype {dtype} has no numpy equivalent") from exc


class TensorRTBackend(InferenceBackend):
    """A cached (or freshly built) TensorRT engine run with torch CUDA buffers and stream.

    ``build_only=True`` builds/caches the engine and allocates nothing (calls then raise).
    """

    name = "tensorrt"
    device = "cuda"

    def __init__(self, onnx_path: Path | str, fp16: bool = False, build_only: bool = False,
                 workspace_mb: int = 1024, shapes: Profile | None = None,
                 logger: logging.Logger | None = None) -> None:
        trt, onnx_path = _import_trt(), Path(onnx_path)
        self._log = logger or logging.getLogger(LOGGER_NAME)
        if not onnx_path.is_file():
            raise TensorRTError(f"ONNX file not found: {onnx_path}")
        profile = shapes if shapes is not None else default_profile(onnx_path)
        record = _engine_record(onnx_path, fp16, trt.__version__, gpu_name(), profile)
        self.engine_path = _path_for(onnx_path, record)
        self.fp16, self.build_only = fp16, build_only
        self._build_args = (onnx_path, fp16, workspace_mb, self.engine_path, profile, self._log)
        problem = cache_problem(self.engine_path, record["key"])
        if problem:
            self._log.info("TensorRT engine rebuild: %s", problem)
            build_engine(*self._build_args)
        self.engine = None
        if build_only:
            super().__init__([], [])
            return
        self.engine = self._load(trt)
        self.context = self.engine.create_execution_context()
        self._stream = torch.cuda.Stream()
        self._bind_io(trt)

    def _load(self, trt: Any) -> Any:
        self._runtime = trt.Runtime(_trt_logger(trt))
        engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if engine is None:
            self._log.info("TensorRT engine rebuild: cached %s does not deserialize",
                           self.engine_path.name)
            build_engine(*self._build_args)
            engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if engine is None:
            raise TensorRTError(f"cannot deserialize TensorRT engine {self.engine_path}")
        return engine

    def _bind_io(self, trt: Any) -> None:
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._dtypes = {n: _np_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}
        shapes = {n: tuple(d if d >= 0 else None for d in self.engine.get_tensor_shape(n))
                  for n in inputs}
        specs = {n: TensorSpec(n, self._dtypes[n], shapes[n]) for n in inputs}
        super().__init__(inputs, [n for n in names if n not in inputs], specs)

    def _set_input(self, name: str, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array)).to("cuda", non_blocking=True)
        if not self.context.set_input_shape(name, tuple(tensor.shape)):
            low, _, high = self.engine.get_tensor_profile_shape(name, 0)
            raise BackendError(f"input {name!r} shape {tuple(tensor.shape)} outside the engine "
                               f"profile {tuple(low)}..{tuple(high)}")
        self.context.set_tensor_address(name, tensor.data_ptr())
        return tensor

    def _alloc_output(self, name: str) -> torch.Tensor:
        shape = tuple(self.context.get_tensor_shape(name))
        if any(d < 0 for d in shape):
            raise TensorRTError(f"output {name!r} has a data-dependent shape {shape}")
        dtype = torch.from_numpy(np.empty(0, self._dtypes[name])).dtype
        tensor = torch.empty(shape, dtype=dtype, device="cuda")
        self.context.set_tensor_address(name, tensor.data_ptr())
        return tensor

    def validate(self, inputs: dict[str, Any]) -> None:
        if self.engine is None:
            raise TensorRTError(
                f"backend was created with build_only=True ({self.engine_path.name})")
        super().validate(inputs)

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.cuda.stream(self._stream):
            held = [self._set_input(n, inputs[n]) for n in self.input_names]
            outputs = {n: self._alloc_output(n) for n in self.output_names}
            if not self.context.execute_async_v3(self._stream.cuda_stream):
                raise TensorRTError("TensorRT execute_async_v3 failed (see the TensorRT log)")
        self._stream.synchronize()
        del held
        return {n: t.cpu().numpy() for n, t in outputs.items()}


def build_engines(onnx_paths: list[Path | str], fp16: bool = False) -> list[Path]:
    """Build (or reuse cached) engines of every ONNX file (``codealign export --build-engines``)."""
    return [TensorRTBackend(p, fp16=fp16, build_only=True).engine_path for p in onnx_paths]
