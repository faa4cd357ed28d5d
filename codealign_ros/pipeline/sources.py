"""Stage sources of the pipelines: the export (`DeploySource`), the PyTorch store
(`TorchSource`: the `torch` backend, or when the export is missing / stale, building stages
from the .pt components and exporting them on demand), and `open_source`, which picks one.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codealign_ros.config.share import resolve_shipped
from codealign_ros.pipeline import stages
from codealign_ros.pipeline.deploy import (DEPLOY_KINDS, LOG, DeployError, DeploySource,
                                           StageRequest, _store_spaces)

if TYPE_CHECKING:
    from codealign_ros.models.store import ModelStore
    from codealign_ros.runtime.backends import InferenceBackend

__all__ = ["FallbackSource", "TorchSource", "open_source"]


class TorchSource:
    """Stages built from the .pt components (PyTorch), exported on demand for ONNX kinds."""

    torch_free = False

    def __init__(self, model_dir: Path | str, profile: str | None = None,
                 cache_dir: Path | str | None = None) -> None:
        from codealign_ros.models.store import ModelStore

        self.store: ModelStore = ModelStore(model_dir, profile)
        self.root, self.profile = self.store.root, self.store.profile
        self.cache = Path(cache_dir) if cache_dir else None
        self.spaces = _store_spaces(self.store)

    @property
    def grid(self) -> Any:
        return self.profile.grid

    def translator_targets(self, source: str) -> dict[str, int]:
        return stages.translator_targets(self.store, source)

    def trained_hash(self, source: str, target: str) -> str | None:
        return self.store.meta(f"uct_{source}").get("target_hashes", {}).get(target)

    def backend(self, request: StageRequest, kind: str, logger: logging.Logger | None = None,
                threads: int | None = None) -> InferenceBackend:
        build = {"vehicle": stages.vehicle_spec, "translator": stages.translator_spec,
                 "receiver": stages.receiver_spec}[request.kind]
        return stages.stage_backend(self.store, build(self.store, *request.args), kind,
                                    self.cache, logger, threads)


class FallbackSource(DeploySource):
    """A DeploySource that builds a stage the export cannot serve (not exported, e.g. a D2C
    target subset, or stale) with PyTorch instead, logged; `torch_free` tells which."""

    def __init__(self, model_dir: Path | str, profile: str | None = None,
                 cache_dir: Path | str | None = None,
                 logger: logging.Logger | None = None) -> None:
        super().__init__(model_dir, profile, cache_dir)
        self._args = (model_dir, profile, cache_dir)
        self._torch: TorchSource | None = None
        self.log = logger or LOG

    def backend(self, request: StageRequest, kind: str, logger: logging.Logger | None = None,
                threads: int | None = None) -> InferenceBackend:
        try:
            return super().backend(request, kind, logger, threads)
        except DeployError as exc:
            self.log.info("%s; building it with PyTorch", exc)
        if self._torch is None:
            self._torch = TorchSource(*self._args)
            self.torch_free = False
        return self._torch.backend(request, kind, logger, threads)


def open_source(model_dir: Path | str, profile: str | None, backend: str,
                cache_dir: Path | str | None = None,
                logger: logging.Logger | None = None) -> DeploySource | TorchSource:
    """The export (torch-free, PyTorch only for stages it lacks) for ONNX backends when one
    exists, else TorchSource (logged). A relative `model_dir` the working directory lacks
    resolves against the checkout / the package share directory (config.share)."""
    log = logger or LOG
    model_dir = resolve_shipped(model_dir)
    if not Path(model_dir).is_dir():
        raise FileNotFoundError(f"no model directory {model_dir} (looked in the working "
                                f"directory, the checkout and the package share): run "
                                f"`make models` or set model_dir:=<trained weights>")
    if backend in DEPLOY_KINDS:
        try:
            return FallbackSource(model_dir, profile, cache_dir, log)
        except DeployError as exc:
            log.info("deploy export unusable, building stages with PyTorch: %s", exc)
    return TorchSource(model_dir, profile, cache_dir)


