"""The inference-backend interface: `InferenceBackend`, its input specs and its error."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from codealign_ros.errors import CodeAlignError

__all__ = ["LOGGER_NAME", "BackendError", "TensorSpec", "InferenceBackend", "specs_from_sidecar",
           "static_dims"]

LOGGER_NAME = "codealign.runtime"


class BackendError(CodeAlignError, ValueError):
    """A backend is unavailable, failed to load, or was given bad inputs."""

    reason: str = "backend"


@dataclass(frozen=True)
class TensorSpec:
    """Expected dtype and shape of one input; None means "any" (whole dtype/shape or one dim)."""

    name: str
    dtype: np.dtype | None = None
    shape: tuple[int | None, ...] | None = None

    def check(self, value: Any) -> None:
        """Raise :class:`BackendError` naming this input when ``value`` does not fit."""
        if not isinstance(value, np.ndarray):
            kind = type(value).__name__
            raise BackendError(f"input {self.name!r} must be a numpy array, got {kind}")
        if self.dtype is not None and value.dtype != self.dtype:
            raise BackendError(
                f"input {self.name!r} has dtype {value.dtype}, expected {self.dtype}")
        if self.shape is None:
            return
        fits = len(value.shape) == len(self.shape) and all(
            want is None or want == got for want, got in zip(self.shape, value.shape))
        if not fits:
            want = "(" + ", ".join("?" if d is None else str(d) for d in self.shape) + ")"
            raise BackendError(
                f"input {self.name!r} has shape {tuple(value.shape)}, expected {want}")


def specs_from_sidecar(sidecar: dict[str, Any]) -> dict[str, TensorSpec]:
    """Input specs from an export sidecar (dim names of dynamic axes become None)."""
    return {i["name"]: TensorSpec(i["name"], np.dtype(i["dtype"]), static_dims(i["shape"]))
            for i in sidecar["inputs"]}


def static_dims(shape: list[Any]) -> tuple[int | None, ...]:
    """Shape with dynamic dims (names, None, <= 0) as None."""
    return tuple(d if isinstance(d, int) and d > 0 else None for d in shape)


class InferenceBackend(ABC):
    """``backend(inputs: dict[name, ndarray]) -> dict[name, ndarray]``; ``last_ms`` = wall time."""

    name: str = "abstract"
    device: str = "cpu"

    def __init__(self, input_names: list[str], output_names: list[str],
                 input_specs: dict[str, TensorSpec] | None = None) -> None:
        self.input_names, self.output_names = list(input_names), list(output_names)
        self.input_specs = {n: (input_specs or {}).get(n, TensorSpec(n)) for n in self.input_names}
        self.last_ms = float("nan")

    def validate(self, inputs: dict[str, Any]) -> None:
        """Raise :class:`BackendError` naming the first missing, unknown or ill-shaped input."""
        unknown = [n for n in inputs if n not in self.input_specs]
        if unknown:
            raise BackendError(f"unknown input {unknown[0]!r} (expected {self.input_names})")
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise BackendError(f"missing input {missing[0]!r} (expected {self.input_names})")
        for name in self.input_names:
            self.input_specs[name].check(inputs[name])

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.validate(inputs)
        start = time.perf_counter()
        outputs = self._run(inputs)
        self.last_ms = (time.perf_counter() - start) * 1e3
        return outputs

    @abstractmethod
    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Inference on validated inputs."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={self.device!r}, inputs={self.input_names})"
