"""`codealign eval`: AP30/50/70, trainable parameters and payload of one method on one setting.

Methods (paper protocol: the ego carries the setting's first modality, every other agent the
second, cycled; road-side units the setting's `rsu` modality when given):
  single     the ego's own detector, no cooperation
  late       every agent's own detector; boxes sent, merged by NMS on the ego
  noalign    every agent's own encoder, features fused by the ego's backend without alignment
  heal       foreign encoders retrained against the ego's backend (HEAL-style), dense features
  codealign  code maps: intra-group adapter + codebook, foreign groups through their UCT
  e2e_isolated / e2e_cooccurring
             one detector trained end to end on isolated / co-occurring data (train/e2e.py)
"""
from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from codealign_ros.config import lookup
from codealign_ros.core.codemap import Encoding, compress, pack_indices
from codealign_ros.core.geometry import transform_boxes
from codealign_ros.core.metrics import APAccumulator, rotated_nms
from codealign_ros.data.assignment import assign_modalities
from codealign_ros.data.types import CooperativeFrame
from codealign_ros.models.deploy import ReceiverHead, VehicleEncoder
from codealign_ros.config.groups import group_of, groups
from codealign_ros.models.store import ModelStore
from codealign_ros.train.samples import InputCache, Sample, load_frames, make_batch, make_sample

LOG = logging.getLogger("codealign.eval")
METHODS = ("single", "late", "noalign", "heal", "codealign", "e2e_isolated",
           "e2e_cooccurring")
BOX_BYTES = 8 * 4  # a late-fusion box on the wire: 7 floats + score


def settings() -> dict[str, dict[str, Any]]:
    """Named settings of config/groups.yaml."""
    return dict(lookup("groups", "settings"))


def parse_setting(text: str) -> dict[str, Any]:
    """A named setting, or "ego+other1,other2" such as "m1+m2" or "m1+m4,m2,m5"."""
    named = settings()
    if text in named:
        return dict(named[text])
    ego, _, others = text.partition("+")
    if not ego or not others:
        raise ValueError(f"setting {text!r}: use a name of config/groups.yaml "
                         f"({', '.join(named)}) or ego+others, e.g. m1+m2 or m1+m4,m2,m5")
    return {"ego": ego.strip(), "others": [o.strip() for o in others.split(",") if o.strip()]}


def assignment_of(frame: CooperativeFrame, setting: dict[str, Any]) -> dict[str, str]:
    """Modality per agent of `frame` under `setting`."""
    ids = list(frame.agents)
    rsus = {a for a, ag in frame.agents.items() if ag.is_rsu}
    spec = {"ego": setting["ego"], "others": list(setting["others"]),
            "rsu": setting.get("rsu", setting["others"][0])}
    return assign_modalities(ids, rsus, spec)


@dataclass
class Variant:
    """Which trained pieces a CodeAlign evaluation uses (ablations)."""

    codebook: str = ""  # codespace file suffix, e.g. "_k4"
    translator: str = "uct"
    peers: str = "all"  # "all"; "none": the ego alone; "zero": peers' features all zero


PEERS = ("all", "none", "zero")


@dataclass
class Evaluator:
    """Runs one method over frames and accumulates AP, payload and parameter counts."""

    store: ModelStore
    method: str
    setting: dict[str, Any]
    variant: Variant = field(default_factory=Variant)
    cache: InputCache | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose from {METHODS}")
        if self.variant.peers not in PEERS:
            raise ValueError(f"unknown peers {self.variant.peers!r}; choose from {PEERS}")
        self.profile = self.store.profile
        self.cache = self.cache or InputCache(self.profile)
        self.ap = APAccumulator()
        self.payload: list[float] = []
        self.coded: list[float] = []
        self.frames = 0
        post = self.profile["post"]
        self.nms_iou, self.max_boxes = float(post["nms_iou"]), int(post["max_boxes"])
        self._modules: dict[tuple, Any] = {}

    # -- components, built once -------------------------------------------------------
    def _get(self, key: tuple, build: Any) -> Any:
        if key not in self._modules:
            self._modules[key] = build()
        return self._modules[key]

    def encoder(self, m: str) -> torch.nn.Module:
        return self._get(("enc", m), lambda: self.store.encoder(m))

    def base_backend(self, m: str) -> Any:
        return self._get(("base", m), lambda: self.store.base_backend(m))

    def vehicle(self, m: str, space: str) -> VehicleEncoder:
        """m's vehicle stage producing codes of `space` (own group, or translated)."""
        own, v = group_of(m), self.variant

        def build() -> VehicleEncoder:
            cb_own = v.codebook if own == group_of(self.setting["ego"]) else ""
            adapter = self.store.adapter(own, m, cb_own)
            codebook = self.store.codebook(own, cb_own)
            if space == own:
                return VehicleEncoder(self.encoder(m), adapter, codebook).eval()
            uct = self.store.translator(own, v.translator)
            return VehicleEncoder(self.encoder(m), adapter, codebook, uct, (space,)).eval()
        return self._get(("veh", m, space), build)

    # -- methods ------------------------------------------------------------------------
    def detect(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (K, 7) in the ego frame and scores (K,) of this method on one sample."""
        if self.method == "single" or self.variant.peers == "none":
            sample = Sample(sample.key, sample.agents[:1], sample.modalities[:1],
                            sample.gt_boxes, sample.stamp_ns)
        if self.method == "single":
            return self._dense(sample, self.encoder, self.base_backend(sample.modalities[0]))
        if self.method == "late":
            return self._late(sample)
        ego_m = sample.modalities[0]
        if self.method == "noalign":
            return self._dense(sample, self.encoder, self.base_backend(ego_m))
        if self.method == "heal":
            return self._dense(sample, lambda m: self._heal_encoder(m, ego_m),
                               self.base_backend(groups()[group_of(ego_m)][0]))
        if self.method.startswith("e2e_"):
            encoders, backend = self._e2e()
            return self._dense(sample, encoders.__getitem__, backend)
        return self._codealign(sample)

    def _e2e(self) -> tuple[dict[str, torch.nn.Module], Any]:
        mode = self.method.removeprefix("e2e_")
        return self._get(("e2e", mode), lambda: self.store.e2e(mode))

    def _heal_encoder(self, m: str, ego_m: str) -> torch.nn.Module:
        if m == ego_m:
            return self.encoder(m)
        g = group_of(ego_m)
        return self._get(("heal", m, g), lambda: self.store.heal_encoder(m, g))

    def _run_backend(self, backend: Any, feats: torch.Tensor,
                     theta: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        sample = torch.zeros(feats.shape[0], dtype=torch.long)
        outputs = backend(feats, theta, sample, 1)
        boxes, scores = backend.detect(outputs)[0]
        return np.asarray(boxes, np.float32).reshape(-1, 7), np.asarray(scores, np.float32)

    @torch.no_grad()
    def _dense(self, sample: Sample, encoder_of: Any,
               backend: Any) -> tuple[np.ndarray, np.ndarray]:
        batch = make_batch([sample], self.profile, self.cache)
        feats = None
        for m, rows in batch.rows.items():
            f = encoder_of(m)(**batch.inputs[m])
            feats = f.new_zeros((len(batch.modalities), *f.shape[1:])) if feats is None else feats
            feats = feats.index_copy(0, rows, f)
        assert feats is not None
        feats = self._blank_peers(feats)
        peers = len(batch.modalities) - 1
        self.payload.extend([float(feats[0].numel() * 4)] * peers)
        return self._run_backend(backend, feats, batch.theta)

    @torch.no_grad()
    def _late(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        all_boxes, all_scores = [], []
        ego_pose = sample.ego.lidar_pose
        for i, (agent, m) in enumerate(zip(sample.agents, sample.modalities)):
            own = Sample(sample.key, [agent], [m], sample.gt_boxes, sample.stamp_ns)
            boxes, scores = self._dense(own, self.encoder, self.base_backend(m))
            if i:
                self.payload.append(float(len(boxes) * BOX_BYTES))
                boxes = transform_boxes(np.linalg.inv(ego_pose) @ agent.lidar_pose, boxes)
            all_boxes.append(np.asarray(boxes, np.float32).reshape(-1, 7))
            all_scores.append(scores)
        boxes, scores = np.concatenate(all_boxes), np.concatenate(all_scores)
        keep = rotated_nms(boxes, scores, self.nms_iou)[: self.max_boxes]
        return boxes[keep], scores[keep]

    @torch.no_grad()
    def _codealign(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        ego_group = group_of(sample.modalities[0])
        batch = make_batch([sample], self.profile, self.cache)
        indices = None
        for m, rows in batch.rows.items():
            idx = self.vehicle(m, ego_group)(**batch.inputs[m])[-1]
            indices = idx.new_zeros((len(batch.modalities), *idx.shape[1:])) \
                if indices is None else indices
            indices = indices.index_copy(0, rows, idx)
        assert indices is not None
        codebook = self._get(("cb", ego_group), lambda: self.store.codebook(
            ego_group, self.variant.codebook))
        backend = self._get(("gb", ego_group), lambda: self.store.group_backend(
            ego_group, self.variant.codebook))
        for peer in indices[1:]:
            packed = pack_indices(peer.numpy().astype(np.uint8), codebook.bits)
            self.payload.append(float(len(packed)))
            self.coded.append(float(len(compress(packed, Encoding.ZSTD))))
        head = ReceiverHead(codebook, backend).eval()
        feats = self._blank_peers(head.codebook.decode(indices))
        return self._run_backend(backend, feats, batch.theta)

    def _blank_peers(self, feats: torch.Tensor) -> torch.Tensor:
        """feats with every peer's (rows 1..) zeroed under Variant(peers="zero")."""
        if self.variant.peers == "zero":
            feats = feats.clone()
            feats[1:] = 0.0
        return feats

    # -- bookkeeping ----------------------------------------------------------------------
    def add(self, frame: CooperativeFrame) -> None:
        sample = make_sample(frame, assignment_of(frame, self.setting), self.profile)
        boxes, scores = self.detect(sample)
        self.ap.add_frame(boxes, scores, sample.gt_boxes)
        self.frames += 1

    def trainable_parameters(self, modalities: list[str]) -> int:
        """TP of the method's alignment for agents of `modalities` (ego first)."""
        ego_m = modalities[0]
        ego_g = group_of(ego_m)
        foreign = sorted({m for m in modalities if group_of(m) != ego_g})
        if self.method in ("single", "late", "noalign"):
            return 0
        if self.method.startswith("e2e_"):
            encoders, backend = self._e2e()
            return sum(_count(e) for e in encoders.values()) + _count(backend)
        if self.method == "heal":
            return sum(_count(self._heal_encoder(m, ego_m)) for m in set(modalities) - {ego_m})
        used = {group_of(m) for m in modalities}
        total = 0
        for g in used:
            suffix = self.variant.codebook if g == ego_g else ""
            total += sum(_count(self.store.adapter(g, m, suffix))
                         for m in set(modalities) if group_of(m) == g)
            total += _count(self.store.codebook(g, suffix))
            if g == ego_g and self.store.meta(self.store.codespace_name(g, suffix)).get(
                    "backend_trained"):
                total += _count(self.store.group_backend(g, suffix))
        for g in {group_of(m) for m in foreign}:
            total += _count(self.store.translator(g, self.variant.translator))
        return total

    def result(self) -> dict[str, Any]:
        ap = self.ap.ap()
        mods = [self.setting["ego"], *self.setting["others"]]
        return {"method": self.method, "setting": self.setting, "frames": self.frames,
                "ap30": ap[0.3], "ap50": ap[0.5], "ap70": ap[0.7],
                "trainable_params": self.trainable_parameters(mods),
                "payload_bytes": float(np.mean(self.payload)) if self.payload else 0.0,
                "payload_coded_bytes": float(np.mean(self.coded)) if self.coded else None,
                "variant": {"codebook": self.variant.codebook,
                            "translator": self.variant.translator, "peers": self.variant.peers}}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def evaluate(store: ModelStore, method: str, setting: dict[str, Any],
             frames: list[CooperativeFrame], variant: Variant | None = None,
             progress: bool = True, cache: InputCache | None = None) -> dict[str, Any]:
    """Evaluate `method` on `frames` (see module docstring); `cache` shares preprocessed
    inputs between evaluations of the same frames."""
    ev = Evaluator(store, method, setting, variant or Variant(), cache)
    for frame in tqdm(frames, desc=f"eval {method}", disable=not progress, leave=False):
        ev.add(frame)
    return ev.result()


def run_eval(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    store = ModelStore(args.models)
    frames = load_frames(args.data, args.split)
    if args.max_frames:
        frames = frames[: args.max_frames]
    result = evaluate(store, args.method, parse_setting(args.setting), frames,
                      Variant(args.codebook_variant, args.translator, args.peers),
                      not args.no_progress)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0
