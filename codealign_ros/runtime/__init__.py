"""ROS-free deployment runtime: ONNX export and TensorRT / ONNX Runtime / PyTorch backends."""

from __future__ import annotations

from codealign_ros.runtime.backends import (
    BackendError, InferenceBackend, OnnxRuntimeBackend, TorchBackend, available_backends,
    compare_outputs, create_backend, verify_onnx,
)
from codealign_ros.runtime.export import ExportError, export_onnx, onnx_sha256

__all__ = [
    "BackendError", "ExportError", "InferenceBackend", "OnnxRuntimeBackend", "TorchBackend",
    "available_backends", "compare_outputs", "create_backend", "export_onnx", "onnx_sha256",
    "verify_onnx",
]
