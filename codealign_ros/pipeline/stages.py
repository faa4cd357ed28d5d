"""Deployable stages as ONNX files (cached by component hashes) and their inference backends.

Stages (codealign_ros.models.deploy):
  vehicle_<m>[_to_<targets>]  sensor inputs -> code indices, own space first, then targets (D2C)
  translator_<src>_to_<dst>   foreign indices -> ego-space indices (receiver-side UCT)
  receiver_<g>                ego-space indices (N, H, W) + theta (N, 2, 3) -> cls, reg, dir

An exported file is `<cache>/<stage>.<key>.onnx` (+ sidecar), key = sha256 of the stage
spec, the bytes of every component file it is built from, torch, the opset and the export
version: changing a weight file re-exports on next start. `codealign export` writes every
stage of a model dir and `<cache>/deploy.json` (pipeline.deploy), with which onnxruntime /
tensorrt nodes load the stages without importing torch.
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from codealign_ros.errors import CodeAlignError

if TYPE_CHECKING:  # torch and the models load lazily: `codealign --help` stays fast
    from torch import Tensor, nn

    from codealign_ros.models.store import ModelStore
    from codealign_ros.runtime import InferenceBackend

__all__ = ["OPSET", "PipelineError", "StageSpec", "add_export_parser", "component_key",
           "export_all", "receiver_spec", "run_export", "stage_backend", "translator_spec",
           "vehicle_spec"]

LOG = logging.getLogger("codealign.pipeline")
OPSET = 17
ONNX_KINDS = ("auto", "onnxruntime", "tensorrt")  # backends that run an exported file


class PipelineError(CodeAlignError, ValueError):
    """Bad input or set-up of a pipeline; `reason` is a short key for drop counters."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class StageSpec:
    """One deployable stage: module, example inputs, output names and the cache key parts."""

    name: str
    module: nn.Module
    example_inputs: dict[str, Tensor]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]
    components: list[str]  # store component names the stage is built from
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def input_names(self) -> list[str]:
        return list(self.example_inputs)


def component_key(store: ModelStore, spec: StageSpec) -> str:
    """16-hex cache key of a stage: spec, component file bytes, torch version, opset and the
    export version (pipeline.deploy.VERSION: bumped when the exported graphs change)."""
    import torch

    from codealign_ros.pipeline.deploy import VERSION, file_digest

    parts = {"stage": spec.name, "outputs": spec.output_names, "inputs": spec.input_names,
             "profile": store.profile.name, "torch": torch.__version__, "opset": OPSET,
             "export_version": VERSION,
             "files": {c: file_digest(store.path(c)) for c in spec.components}}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def onnx_file(store: ModelStore, spec: StageSpec, cache_dir: Path) -> Path:
    """Export `spec` to `<cache_dir>/<name>.<key>.onnx` unless that file exists (file-locked,
    so nodes sharing a cache export once)."""
    from codealign_ros.runtime import export_onnx

    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{spec.name}.{component_key(store, spec)}.onnx"
    with open(cache_dir / ".export.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (path.is_file() and path.with_suffix(".json").is_file()):
                started = time.perf_counter()
                export_onnx(spec.module, spec.example_inputs, path, spec.output_names,
                            dynamic_axes=spec.dynamic_axes, opset=OPSET, meta=spec.meta)
                LOG.info("exported %s in %.1f s", path, time.perf_counter() - started)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return path


def stage_backend(store: ModelStore, spec: StageSpec, kind: str = "auto",
                  cache_dir: Path | None = None, logger: logging.Logger | None = None,
                  threads: int | None = None) -> InferenceBackend:
    """The inference backend of a stage; ONNX-based kinds export (or reuse) the file first."""
    from codealign_ros.runtime import create_backend

    path = None
    if kind in ONNX_KINDS:
        path = onnx_file(store, spec, cache_dir or store.root / "onnx")
    return create_backend(kind, path, module_factory=lambda: spec.module, logger=logger or LOG,
                          input_names=spec.input_names, output_names=spec.output_names,
                          threads=threads)


def space_output(space: str) -> str:
    """Output name of the index map in code space `space`."""
    return f"codes_{space}"


def vehicle_spec(store: ModelStore, modality: str, targets: tuple[str, ...] = ()) -> StageSpec:
    """Encoder + adapter + nearest code (own space), then the UCT into each target space."""
    from codealign_ros.models.deploy import VehicleEncoder
    from codealign_ros.config.groups import group_of

    own = group_of(modality)
    translator = store.translator(own) if targets else None
    module = VehicleEncoder(store.encoder(modality), store.adapter(own, modality),
                            store.codebook(own), translator, tuple(targets)).eval()
    encoder = module.encoder
    examples = dict(encoder.example_inputs(1))
    outputs = [space_output(s) for s in (own, *targets)]
    axes = {n: a for n, a in encoder.dynamic_axes().items() if n in examples}
    axes.update({n: {0: "batch"} for n in outputs})
    components = [f"base_{modality}", store.codespace_name(own)]
    components += [f"uct_{own}"] if targets else []
    name = f"vehicle_{modality}" + (f"_to_{'_'.join(targets)}" if targets else "")
    return StageSpec(name, module, examples, outputs, axes, components,
                     {"stage": "vehicle", "modality": modality, "code_space": own,
                      "codebook_hash": module.codebook.weights_hash(), "targets": list(targets)})


def translator_spec(store: ModelStore, source: str, target: str) -> StageSpec:
    """Receiver-side translation: source indices -> decode -> UCT(target) -> target indices."""
    import torch

    from codealign_ros.models.deploy import CodeTranslator

    grid = store.profile.grid
    module = CodeTranslator(store.codebook(source), store.translator(source), target).eval()
    examples = {"indices": torch.zeros((1, grid.height, grid.width), dtype=torch.int64)}
    out = space_output(target)
    return StageSpec(f"translator_{source}_to_{target}", module, examples, [out],
                     {"indices": {0: "batch"}, out: {0: "batch"}},
                     [store.codespace_name(source), f"uct_{source}"],
                     {"stage": "translator", "source": source, "target": target})


def receiver_spec(store: ModelStore, group: str) -> StageSpec:
    """Decode ego-space indices of all agents, warp, fuse, detection head (dense maps)."""
    import torch

    from codealign_ros.models.deploy import ReceiverHead

    grid = store.profile.grid
    module = ReceiverHead(store.codebook(group), store.group_backend(group)).eval()
    theta = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]]).repeat(2, 1, 1)
    examples = {"indices": torch.zeros((2, grid.height, grid.width), dtype=torch.int64),
                "theta": theta}
    axes = {"indices": {0: "agents"}, "theta": {0: "agents"}}
    return StageSpec(f"receiver_{group}", module, examples, ["cls", "reg", "dir"], axes,
                     [store.codespace_name(group)],
                     {"stage": "receiver", "code_space": group,
                      "codebook_hash": module.codebook.weights_hash()})


def translator_targets(store: ModelStore, source: str) -> dict[str, int]:
    """Target groups of `source`'s UCT (empty when the store has none)."""
    if not store.has(f"uct_{source}"):
        return {}
    return dict(store.meta(f"uct_{source}")["targets"])


def deployable_specs(store: ModelStore) -> Iterator[Callable[[], StageSpec]]:
    """Factories of every stage the files of `store` allow: vehicle without D2C, with D2C
    into every other space and into each single one (a sender translating for one ego's
    group, as the demo's road-side unit), receiver and receiver-side translators."""
    from codealign_ros.config.groups import groups

    spaces = [g for g in groups() if store.has(store.codespace_name(g))]
    for g in spaces:
        targets = tuple(t for t in translator_targets(store, g) if t in spaces)
        for m in groups()[g]:
            if store.has(f"base_{m}") and m in store.file(store.codespace_name(g))["state"][
                    "adapters"]:
                yield lambda m=m: vehicle_spec(store, m)
                for subset in ([targets] if targets else []) + \
                        ([(t,) for t in targets] if len(targets) > 1 else []):
                    yield lambda m=m, t=subset: vehicle_spec(store, m, t)
        yield lambda g=g: receiver_spec(store, g)
        for t in targets:
            yield lambda g=g, t=t: translator_spec(store, g, t)


def export_all(model_dir: Path, out_dir: Path | None = None, profile: str | None = None,
               verify: bool = False) -> list[dict[str, Any]]:
    """Export every deployable stage of `model_dir`; one row per stage (name, file, seconds)."""
    from codealign_ros.models.store import ModelStore
    from codealign_ros.runtime import verify_onnx

    from codealign_ros.pipeline.deploy import write_manifest

    store = ModelStore(model_dir, profile)
    cache = out_dir or store.root / "onnx"
    rows, exported = [], {}
    for factory in deployable_specs(store):
        spec = factory()
        started = time.perf_counter()
        path = onnx_file(store, spec, cache)
        exported[spec.name] = (path, spec.components)
        row = {"stage": spec.name, "onnx": str(path), "mb": round(path.stat().st_size / 1e6, 2),
               "seconds": round(time.perf_counter() - started, 2)}
        if verify:
            row["max_abs_error"] = verify_onnx(spec.module, spec.example_inputs, path)
        rows.append(row)
    if exported:
        write_manifest(store, exported, cache)
    return rows


def add_export_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """`codealign export`: write the ONNX files of every deployable stage of a model dir."""
    p = sub.add_parser("export", help="export the deployable stages of a model dir to ONNX",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, default=Path("models/mini"),
                   help="model directory (default models/mini)")
    p.add_argument("--profile", default=None, help="model profile (default: the dir's name)")
    p.add_argument("--out", type=Path, default=None, help="ONNX directory (default <models>/onnx)")
    p.add_argument("--verify", action="store_true",
                   help="compare ONNX Runtime with PyTorch on the example inputs")
    return p


def run_export(args: argparse.Namespace) -> int:
    """Run `codealign export`; prints one JSON line per stage."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if not args.models.is_dir():
        print(f"codealign export: no model directory {args.models}")
        return 1
    try:
        rows = export_all(args.models, args.out, args.profile, args.verify)
    except (FileNotFoundError, ValueError, KeyError) as exc:  # ConfigError is a KeyError
        print(f"codealign export: {exc}")
        return 1
    for row in rows:
        print(json.dumps(row))
    if not rows:
        print(f"codealign export: no trained components in {args.models}")
        return 1
    return 0
