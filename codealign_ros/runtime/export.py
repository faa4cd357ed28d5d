"""ONNX export of CodeAlign modules with a JSON sidecar (verification: `backends.verify_onnx`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from codealign_ros.errors import CodeAlignError

if TYPE_CHECKING:  # torch loads lazily: reading a sidecar must not import it (deploy nodes)
    from torch import Tensor, nn

__all__ = [
    "ExportError", "export_onnx", "onnx_sha256", "sidecar_path", "load_sidecar",
]

SIDECAR_FORMAT = 1


class ExportError(CodeAlignError, ValueError):
    """The export failed, or the exported graph disagrees with PyTorch."""

    reason: str = "export"


def onnx_sha256(path: Path | str) -> str:
    """Hex sha256 of the bytes of an .onnx file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sidecar_path(onnx_path: Path | str) -> Path:
    """``model.onnx`` -> ``model.json``."""
    return Path(onnx_path).with_suffix(".json")


def load_sidecar(onnx_path: Path | str) -> dict[str, Any] | None:
    """The sidecar written by :func:`export_onnx`, or None when there is none."""
    path = sidecar_path(onnx_path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"unreadable ONNX sidecar {path}: {exc}") from exc
    if not isinstance(data, dict) or "inputs" not in data or "outputs" not in data:
        raise ExportError(f"ONNX sidecar {path} lacks 'inputs'/'outputs'")
    return data


def _value_infos(values: Any, examples: dict[str, tuple[int, ...]]) -> list[dict[str, Any]]:
    """Name, shape (dim names for dynamic axes), example shape and numpy dtype of graph values."""
    from onnx import helper

    infos = []
    for value in values:
        ttype = value.type.tensor_type
        shape = [d.dim_param if d.HasField("dim_param") else int(d.dim_value)
                 for d in ttype.shape.dim]
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(ttype.elem_type)).name
        infos.append({"name": value.name, "shape": shape, "dtype": dtype,
                      "example_shape": list(examples.get(value.name, ()))})
    return infos


def _write_sidecar(out: Path, opset: int, dynamic_axes: dict | None, meta: dict[str, Any],
                   examples: dict[str, tuple[int, ...]]) -> None:
    import onnx

    graph = onnx.load(str(out), load_external_data=False).graph
    data = {
        "format": SIDECAR_FORMAT,
        "onnx": out.name,
        "sha256": onnx_sha256(out),
        "opset": opset,
        "inputs": _value_infos(graph.input, examples),
        "outputs": _value_infos(graph.output, examples),
        "dynamic_axes": {k: {str(a): n for a, n in _axes(v).items()}
                         for k, v in (dynamic_axes or {}).items()},
        "torch_version": _torch().__version__,
        "onnx_version": onnx.__version__,
        "meta": meta,
    }
    sidecar_path(out).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _torch() -> Any:
    import torch

    return torch


def _axes(spec: dict[int, str] | list[int]) -> dict[int, str]:
    return dict(spec) if isinstance(spec, dict) else {int(a): f"dim{a}" for a in spec}


def as_output_list(outputs: Any, output_names: list[str]) -> list[Tensor]:
    """A module's outputs (tensor, tuple/list or dict by name) as a list ordered like names."""
    if isinstance(outputs, _torch().Tensor):
        outputs = [outputs]
    elif isinstance(outputs, dict):
        missing = [n for n in output_names if n not in outputs]
        if missing:
            raise ExportError(f"module outputs lack {missing}; it returned {sorted(outputs)}")
        outputs = [outputs[n] for n in output_names]
    outputs = list(outputs)
    if len(outputs) != len(output_names):
        raise ExportError(f"module returned {len(outputs)} outputs, names given: {output_names}")
    return outputs


def export_onnx(module: nn.Module, example_inputs: dict[str, Tensor], out: Path | str,
                output_names: list[str], dynamic_axes: dict | None = None, opset: int = 17,
                meta: dict[str, Any] | None = None) -> Path:
    """Export ``module`` (called positionally, in ``example_inputs`` order) to ``out`` + sidecar.

    The graph inputs are named after the keys of ``example_inputs``. ``meta`` (modality, code
    space, codebook hash, ...) is stored verbatim in the sidecar ``<name>.json``.
    """
    import onnx

    if not example_inputs:
        raise ExportError("example_inputs is empty")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    args = tuple(example_inputs.values())
    was_training = module.training
    module.eval()
    try:
        with _torch().no_grad():
            results = as_output_list(module(*args), output_names)
            _torch().onnx.export(module, args, str(out), input_names=list(example_inputs),
                              output_names=list(output_names), dynamic_axes=dynamic_axes,
                              opset_version=opset, dynamo=False)
    finally:
        module.train(was_training)
    try:
        onnx.checker.check_model(str(out))
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"exported ONNX {out} fails onnx.checker: {exc}") from exc
    examples = {n: tuple(t.shape) for n, t in example_inputs.items()}
    examples.update({n: tuple(t.shape) for n, t in zip(output_names, results)})
    _write_sidecar(out, opset, dynamic_axes, dict(meta or {}), examples)
    return out
