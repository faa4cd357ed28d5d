"""Where pipelines get their stages: exported ONNX files alone (torch-free) or the PyTorch store.

`codealign export` writes, next to the ONNX files, `deploy.json`: the profile, every code
space's bits and codebook hash, each UCT's targets (and the codebook hashes it was trained
against), and per stage its ONNX file and the sha256 of every component file it was built
from. `DeploySource` reads only that file, the ONNX files (+ sidecars) and config/*.yaml: a
vehicle or receiver node on `onnxruntime` / `tensorrt` then never imports torch.
`pipeline.sources` adds the PyTorch fallback and `open_source`, which picks one.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codealign_ros.config.profiles import Profile, load_profile
from codealign_ros.errors import CodeAlignError

if TYPE_CHECKING:
    from codealign_ros.models.store import ModelStore
    from codealign_ros.runtime.backends import InferenceBackend

__all__ = ["MANIFEST", "DeployError", "DeploySource", "SpaceInfo", "StageRequest",
           "TorchSource", "export_fresh", "file_digest", "open_source", "write_manifest"]

MANIFEST = "deploy.json"
VERSION = 3  # of the exported graphs (part of every stage's cache key); 3: ScatterND scatters
DEPLOY_KINDS = ("auto", "onnxruntime", "tensorrt")  # backends that can run without torch
LOG = logging.getLogger("codealign.pipeline")


class DeployError(CodeAlignError, RuntimeError):
    """The export cannot serve a stage (missing, stale, another profile)."""

    reason: str = "deploy"


@dataclass(frozen=True)
class SpaceInfo:
    """What goes into a CodeMap of one code space."""

    bits: int
    codebook_hash: str

    def code_map(self, space: str, indices: Any, grid: Any, agent_id: str, modality: str,
                 stamp_ns: int, pose: Any) -> Any:
        """A validated CodeMap of `space` with `indices` (H, W) on the profile `grid`, in
        the agent's grid frame (`pose` = grid -> world; CodeMapError("pose") when bad)."""
        from codealign_ros.config import frame
        from codealign_ros.core.codemap import CodeMap

        code_map = CodeMap(
            indices=indices, bits=self.bits, agent_id=agent_id, modality=modality,
            code_space=space, codebook_hash=self.codebook_hash, stamp_ns=int(stamp_ns),
            frame_id=frame("grid", agent=agent_id), resolution=grid.resolution,
            origin=(grid.x_min, grid.y_min, 0.0), pose=pose)
        code_map.validate()
        return code_map


@dataclass(frozen=True)
class StageRequest:
    """One deployable stage: vehicle (modality, targets), translator (source, target) or
    receiver (group); `name` is its file stem (pipeline.stages)."""

    kind: str
    args: tuple[Any, ...]

    @property
    def name(self) -> str:
        if self.kind == "vehicle":
            modality, targets = self.args
            return f"vehicle_{modality}" + (f"_to_{'_'.join(targets)}" if targets else "")
        if self.kind == "translator":
            return f"translator_{self.args[0]}_to_{self.args[1]}"
        return f"receiver_{self.args[0]}"


def file_digest(path: Path) -> str:
    """sha256 (hex) of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class DeploySource:
    """The torch-free view of a model dir's export (`<cache_dir>/deploy.json`)."""

    torch_free = True

    def __init__(self, model_dir: Path | str, profile: str | None = None,
                 cache_dir: Path | str | None = None) -> None:
        self.root = Path(model_dir)
        self.dir = Path(cache_dir) if cache_dir else self.root / "onnx"
        path = self.dir / MANIFEST
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DeployError(f"no usable {path} (run `codealign export --models "
                              f"{self.root}`): {exc}") from exc
        if data.get("version") != VERSION:
            raise DeployError(f"{path}: version {data.get('version')} != {VERSION}")
        self.profile: Profile = load_profile(profile or self.root.name)
        if data.get("profile") != self.profile.name:
            raise DeployError(f"{path} is for profile {data.get('profile')!r}, not "
                              f"{self.profile.name!r}")
        self.spaces = {g: SpaceInfo(int(s["bits"]), str(s["codebook_hash"]))
                       for g, s in data["spaces"].items()}
        self.uct: dict[str, dict[str, Any]] = data.get("uct", {})
        self.stages: dict[str, dict[str, Any]] = data.get("stages", {})
        self._fresh: dict[str, bool] = {}

    @property
    def grid(self) -> Any:
        return self.profile.grid

    def translator_targets(self, source: str) -> dict[str, int]:
        return dict(self.uct.get(source, {}).get("targets", {}))

    def trained_hash(self, source: str, target: str) -> str | None:
        return self.uct.get(source, {}).get("target_hashes", {}).get(target)

    def _component_fresh(self, name: str, digest: str) -> bool:
        if name not in self._fresh:
            path = self.root / f"{name}.pt"
            self._fresh[name] = path.is_file() and file_digest(path) == digest
        return self._fresh[name]

    def stage_file(self, request: StageRequest | str) -> Path:
        """The ONNX file of a stage (request or name); DeployError when it is not exported
        or is stale."""
        name = request if isinstance(request, str) else request.name
        entry = self.stages.get(name)
        if entry is None:
            raise DeployError(f"stage {name} was not exported to {self.dir}")
        path = self.dir / entry["onnx"]
        if not path.is_file():
            raise DeployError(f"{path} is missing")
        stale = [c for c, d in entry["components"].items() if not self._component_fresh(c, d)]
        if stale:
            raise DeployError(f"{name}: {', '.join(stale)} changed since the export")
        return path

    def backend(self, request: StageRequest, kind: str, logger: logging.Logger | None = None,
                threads: int | None = None) -> InferenceBackend:
        if kind not in DEPLOY_KINDS:
            raise DeployError(f"backend {kind} needs the PyTorch modules")
        from codealign_ros.runtime.backends import create_backend

        return create_backend(kind, self.stage_file(request), logger=logger or LOG,
                              threads=threads)


def _store_spaces(store: ModelStore) -> dict[str, SpaceInfo]:
    from codealign_ros.config.groups import groups

    out = {}
    for g in groups():
        if store.has(store.codespace_name(g)):
            cb = store.codebook(g)
            out[g] = SpaceInfo(cb.bits, cb.weights_hash())
    return out


def export_fresh(model_dir: Path | str, profile: str | None = None,
                 cache_dir: Path | str | None = None) -> bool:
    """Every stage of the model dir's export exists and matches the component files."""
    try:
        source = DeploySource(model_dir, profile, cache_dir)
        for name in source.stages:
            source.stage_file(name)
    except (DeployError, ValueError, KeyError):
        return False
    return bool(source.stages)


def write_manifest(store: ModelStore, exported: dict[str, tuple[Path, list[str]]],
                   out_dir: Path) -> Path:
    """`<out_dir>/deploy.json` for `exported` (stage name -> (ONNX file, components))."""
    uct = {}
    for g in _store_spaces(store):
        if store.has(f"uct_{g}"):
            meta = store.meta(f"uct_{g}")
            uct[g] = {"targets": dict(meta["targets"]),
                      "target_hashes": dict(meta.get("target_hashes", {}))}
    data = {"version": VERSION, "profile": store.profile.name,
            "spaces": {g: {"bits": s.bits, "codebook_hash": s.codebook_hash}
                       for g, s in _store_spaces(store).items()},
            "uct": uct,
            "stages": {name: {"onnx": path.name,
                              "components": {c: file_digest(store.path(c)) for c in comps}}
                       for name, (path, comps) in sorted(exported.items())}}
    path = out_dir / MANIFEST
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)
    return path
