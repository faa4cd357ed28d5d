"""ROS-free receiver (ego) side: validate peers' code maps, translate, warp, fuse, detect.

`offer(code_map, now_ns, source)` checks one received map and keeps the newest per agent and
code space; it returns None (accepted) or the drop reason, counted in `drops`:
  malformed        the map fails CodeMap validation for another reason (see core.codemap)
  bad_size         height x width differ from the profile grid (or are not positive)
  bad_length       the payload's decoded length is not height x width x bits / 8 bytes,
                   whatever its encoding (RAW, zlib, zstd)
  bomb             a zlib / zstd payload expanding past that size (decompression bomb;
                   decoding stops one byte beyond it)
  bad_bits         bits differ from the code space's codebook (or lie outside 1..8)
  bad_grid         resolution / origin differ from the profile grid
  nan_pose         non-finite pose or a quaternion that is not unit
  unknown_space    no codebook for that space here, or no UCT from it into the ego space
  hash_mismatch    the sender's codebook hash differs from ours for that space
  future           stamped more than future_tolerance_s after now
  stale            arrived more than max_delay_s after its stamp (sender processing +
                   transport), or older than the map already held for that agent and space
  duplicate_agent  an agent id claimed by another publisher (or with another modality)
                   within claim_window_s; the ego's id used with another modality
  out_of_range     farther than comm_range_m from the ego's latest pose
  too_many_peers   max_peers agents already hold fresh maps (flood protection; expired
                   agents are evicted first, fresh ones are never displaced)
Accepted maps that no fusion ever used are counted too (`drops`), so that offered = fused +
dropped + held (pipeline.transport.ledger):
  unused           replaced by a newer map of the same agent and space, or expired, before any
                   ego frame fused it; or the ego's own map in another code space
The node's transport (pipeline/transport.py, fusion_node) adds, before a map reaches `offer`:
  superseded       a peer's pending map replaced by its newer one before the worker took it
  busy             an ego frame replaced by the next one while the node was fusing (skipped)
  lost             the RMW's message-lost events of the code-map subscription
  echo             the ego's own map arriving on the V2X topic too (the local copy is used)
Nothing is decoded before these checks pass. `fuse(ego_map)` then takes, per peer, the map in
the ego's space when its stamp is within max_age_s of the ego stamp (sender-side D2C), else
a foreign-space map translated here by the source group's UCT; warps every map from the
sender's pose at its stamp into the ego pose at the ego stamp; fuses and detects.
"""
from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from codealign_ros.config import ConfigError, lookup
from codealign_ros.core.codemap import CodeMap, CodeMapError
from codealign_ros.core.detect import PostConfig, make_anchors, postprocess
from codealign_ros.core.grid import normalized_affine, relative_transform
from codealign_ros.core.stats import DropCounter
from codealign_ros.config.groups import group_of
from codealign_ros.pipeline.configs import ReceiverConfig
from codealign_ros.pipeline.deploy import SpaceInfo, StageRequest
from codealign_ros.pipeline.drops import DROP_REASONS, drop_reason
from codealign_ros.pipeline.sources import open_source
from codealign_ros.pipeline.stages import PipelineError, space_output

__all__ = ["DROP_REASONS", "ReceiverPipeline", "ReceiverResult", "drop_reason"]

NS_PER_S = 1_000_000_000
WARM_AGENTS = 5  # warmup(): agent counts the fusion head runs once at start-up (1..this)


@dataclass
class _Entry:
    code_map: CodeMap
    source: str | None
    received_ns: int
    used: bool = False  # fused into at least one ego frame


@dataclass
class _Claim:
    source: str | None
    modality: str
    last_ns: int


@dataclass
class ReceiverResult:
    """Detections of one ego frame: boxes (K, 7) and scores (K,) in the ego grid frame."""

    boxes: np.ndarray
    scores: np.ndarray
    agents: list[str]  # contributing agent ids, ego first
    paths: dict[str, str]  # agent -> "ego" | "own_space" | "sender_translated" | "translated"
    timings: dict[str, float]
    skipped: dict[str, int] = field(default_factory=dict)  # peers held but not fused, by reason


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


class ReceiverPipeline:
    """The ego's receiver: bounded table of peers' newest code maps + fusion of ego frames."""

    def __init__(self, config: ReceiverConfig, logger: logging.Logger | None = None) -> None:
        c = self.config = config
        backend, threads, ego_modality = c.backend, c.threads, c.ego_modality
        self._set_limits(c.max_age_s, c.max_delay_s, c.future_tolerance_s, c.claim_window_s,
                         c.comm_range_m, c.max_peers)
        self.source = open_source(c.model_dir, c.profile, backend, c.cache_dir, logger)
        self.grid = self.source.profile.grid
        self.ego_id, self.ego_modality = c.ego_agent_id, ego_modality
        try:
            self.ego_group = group_of(ego_modality)
        except ConfigError as exc:
            raise PipelineError("config", str(exc)) from exc
        self.spaces: dict[str, SpaceInfo] = dict(self.source.spaces)
        if self.ego_group not in self.spaces:
            raise PipelineError("config", f"no code space {self.ego_group} in "
                                f"{self.source.root}")
        self.head = self.source.backend(StageRequest("receiver", (self.ego_group,)), backend,
                                        logger, threads)
        profile_spec = self.source.profile
        self.anchors = make_anchors(self.grid, profile_spec["anchors"])  # numpy post-processing
        self.post = PostConfig.from_profile(profile_spec["post"], profile_spec["anchors"])
        self.translators = {
            src: self.source.backend(StageRequest("translator", (src, self.ego_group)), backend,
                                     logger, threads)
            for src in self._translatable()}
        self.peers: collections.OrderedDict[str, dict[str, _Entry]] = collections.OrderedDict()
        self.claims: collections.OrderedDict[str, _Claim] = collections.OrderedDict()
        self.ego: _Entry | None = None
        self.drops, self.skipped = DropCounter(), DropCounter()
        self.counts = collections.Counter()
        self.last_agents: list[str] = []
        self.warmup()

    def warmup(self) -> None:
        """Run every stage on empty maps (no counters touched), the fusion head once per
        agent count up to WARM_AGENTS (largest first): the first ego frames then pay no
        session initialisation, and no new agent count re-plans the runtime's buffers
        (measured on ONNX Runtime: 3 agents 24 ms on first use, 13 ms after)."""
        most = min(self.max_peers + 1, WARM_AGENTS)
        zeros = np.zeros((most, self.grid.height, self.grid.width), np.int64)
        theta = np.tile(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32), (most, 1, 1))
        for n in range(most, 0, -1):
            self.head({"indices": zeros[:n], "theta": theta[:n]})
        for translator in self.translators.values():
            translator({"indices": zeros[:1]})

    def _set_limits(self, max_age_s: float, max_delay_s: float, future_tolerance_s: float,
                    claim_window_s: float, comm_range_m: float | None, max_peers: int) -> None:
        if min(max_age_s, max_delay_s) <= 0 or min(max_peers, future_tolerance_s,
                                                   claim_window_s) < 0:
            raise PipelineError("config", "need max_age_s, max_delay_s > 0 and max_peers, "
                                "future_tolerance_s, claim_window_s >= 0")
        self.max_age_ns, self.max_delay_ns = int(max_age_s * NS_PER_S), int(max_delay_s
                                                                            * NS_PER_S)
        self.expire_ns = self.max_delay_ns + self.max_age_ns  # no later ego frame can use it
        self.future_ns, self.claim_ns = (int(future_tolerance_s * NS_PER_S),
                                         int(claim_window_s * NS_PER_S))
        comm = comm_range_m if comm_range_m is not None else lookup("groups", "data",
                                                                    "comm_range")
        self.comm_range, self.max_peers = float(comm), int(max_peers)
        self.max_claims = 4 * self.max_peers + 16
        bound = int(lookup("codemap", "max_contributing_agents"))
        if self.max_peers + 1 > bound:
            raise PipelineError("config", f"max_peers {self.max_peers} + the ego exceeds "
                                f"codemap.yaml max_contributing_agents {bound}")

    def _translatable(self) -> list[str]:
        """Foreign spaces whose UCT targets the ego space (trained against our codebook)."""
        ego_hash = self.spaces[self.ego_group].codebook_hash
        out = []
        for src in self.spaces:
            if src == self.ego_group or self.ego_group not in self.source.translator_targets(src):
                continue
            trained = self.source.trained_hash(src, self.ego_group)
            if trained in (None, ego_hash):
                out.append(src)
        return out

    @property
    def backend_name(self) -> str:
        return f"{self.head.name} ({self.head.device})"

    # -- offer ---------------------------------------------------------------------------------
    def is_ego_map(self, code_map: CodeMap) -> bool:
        """The ego's own map in the ego space (defines the ego frame)."""
        return code_map.agent_id == self.ego_id and code_map.code_space == self.ego_group

    def offer(self, code_map: CodeMap, now_ns: int, source: str | None = None) -> str | None:
        """Check and keep one received map; None when accepted, else the counted drop reason.
        `source` identifies the publisher (e.g. its DDS GID) for duplicate-id detection."""
        self.counts["offered"] += 1
        reason = self._check(code_map, int(now_ns), source)
        if reason is not None:
            self.drops.drop(reason)
            return reason
        self.counts["accepted"] += 1
        return None

    def count_drop(self, reason: str) -> None:
        """Count a drop found before `offer` (e.g. a message that did not decode)."""
        self.counts["offered"] += 1
        self.drops.drop(reason)

    def _check(self, cm: CodeMap, now: int, source: str | None) -> str | None:
        reason = self._check_content(cm)
        if reason is None:
            reason = self._check_time(cm, now)
        if reason is None:
            reason = self._claim(cm, source, now)
        if reason is not None:
            return reason
        entry = _Entry(cm, source, now)
        if cm.agent_id == self.ego_id:
            if cm.code_space == self.ego_group:
                self.ego = entry
            else:
                self.drops.drop("unused")
            return None
        if self.ego is not None and self._distance(self.ego.code_map, cm) > self.comm_range:
            return "out_of_range"
        return self._store(entry, now)

    def space_reason(self, code_space: str, codebook_hash: str, agent_id: str) -> str | None:
        """unknown_space / hash_mismatch from header fields alone (before any payload is
        decompressed), else None."""
        space = self.spaces.get(code_space)
        if space is None or (code_space != self.ego_group and code_space not in self.translators
                             and agent_id != self.ego_id):
            return "unknown_space"
        if codebook_hash != space.codebook_hash:
            return "hash_mismatch"
        return None

    def _check_content(self, cm: CodeMap) -> str | None:
        try:
            cm.validate()
        except CodeMapError as exc:
            return drop_reason(exc)
        reason = self.space_reason(cm.code_space, cm.codebook_hash, cm.agent_id)
        if reason is not None:
            return reason
        if cm.bits != self.spaces[cm.code_space].bits:
            return "bad_bits"
        if (cm.height, cm.width) != (self.grid.height, self.grid.width):
            return "bad_size"
        if (abs(cm.resolution - self.grid.resolution) > 1e-4
                or abs(cm.origin[0] - self.grid.x_min) > 1e-3
                or abs(cm.origin[1] - self.grid.y_min) > 1e-3):
            return "bad_grid"
        return None

    def _check_time(self, cm: CodeMap, now: int) -> str | None:
        if cm.stamp_ns - now > self.future_ns:
            return "future"
        if now - cm.stamp_ns > self.max_delay_ns:
            return "stale"
        return None

    def _claim(self, cm: CodeMap, source: str | None, now: int) -> str | None:
        """Agent-id ownership: first publisher (and modality) keeps it while it keeps sending.
        The table is bounded (flood), but the ego's own id always gets a claim."""
        if cm.agent_id == self.ego_id and cm.modality != self.ego_modality:
            return "duplicate_agent"
        claim = self.claims.get(cm.agent_id)
        if claim is not None and 0 <= now - claim.last_ns <= self.claim_ns:
            other_source = None not in (source, claim.source) and source != claim.source
            if other_source or claim.modality != cm.modality:
                return "duplicate_agent"
        elif claim is None and cm.agent_id != self.ego_id and len(self.claims) >= self.max_claims:
            self._expire_claims(now)
            if len(self.claims) >= self.max_claims:
                return "too_many_peers"
        self.claims[cm.agent_id] = _Claim(source, cm.modality, now)
        self.claims.move_to_end(cm.agent_id)
        return None

    def _expire_claims(self, now: int) -> None:
        for agent in [a for a, c in self.claims.items() if not 0 <= now - c.last_ns
                      <= self.claim_ns]:
            del self.claims[agent]

    def _store(self, entry: _Entry, now: int) -> str | None:
        cm = entry.code_map
        if cm.agent_id not in self.peers and len(self.peers) >= self.max_peers:
            self._expire_peers(now)
            if len(self.peers) >= self.max_peers:
                return "too_many_peers"
        spaces = self.peers.setdefault(cm.agent_id, {})
        held = spaces.get(cm.code_space)
        if held is not None and held.code_map.stamp_ns > cm.stamp_ns:
            return "stale"
        if held is not None and not held.used:
            self.drops.drop("unused")
        spaces[cm.code_space] = entry
        self.peers.move_to_end(cm.agent_id)
        return None

    def _expire_peers(self, now: int) -> None:
        """Forget agents whose maps no later ego frame can use (vanished peers)."""
        for agent in [a for a, s in self.peers.items()
                      if all(now - e.code_map.stamp_ns > self.expire_ns for e in s.values())]:
            unused = sum(not e.used for e in self.peers.pop(agent).values())
            if unused:
                self.drops["unused"] += unused

    @staticmethod
    def _distance(a: CodeMap, b: CodeMap) -> float:
        pa, pb = a.pose.position, b.pose.position
        return float(np.hypot(pa[0] - pb[0], pa[1] - pb[1]))

    # -- fuse ----------------------------------------------------------------------------------
    def handle(self, code_map: CodeMap, now_ns: int, source: str | None = None
               ) -> tuple[str | None, ReceiverResult | None]:
        """offer(); when it is the ego's accepted map, also fuse() that ego frame."""
        reason = self.offer(code_map, now_ns, source)
        if reason is None and self.is_ego_map(code_map):
            return None, self.fuse(code_map, now_ns)
        return reason, None

    def fuse(self, ego_map: CodeMap, now_ns: int | None = None) -> ReceiverResult:
        """Detections of one ego frame from the ego map and the peers' newest usable maps."""
        start = time.perf_counter()
        self._check_ego(ego_map)
        if now_ns is not None:
            self._expire_peers(int(now_ns))
        chosen, skipped = self._select(ego_map)
        self.skipped.update(skipped)
        for _, entry, _ in chosen:
            self.counts["peer_maps_fused"] += not entry.used
            entry.used = True
        t0 = time.perf_counter()
        indices, paths = self._ego_space_indices(ego_map, chosen)
        translate = _ms(t0)
        poses = np.stack([ego_map.pose.to_matrix()] + [e.code_map.pose.to_matrix()
                                                       for _, e, _ in chosen])
        theta = normalized_affine(relative_transform(poses[0], poses), self.grid)
        t0 = time.perf_counter()
        out = self.head({"indices": indices, "theta": theta.astype(np.float32)})
        head = _ms(t0)
        t0 = time.perf_counter()
        boxes, scores = postprocess(*(np.asarray(out[k]) for k in ("cls", "reg", "dir")),
                                    self.anchors, self.post)[0]
        agents = [self.ego_id] + [a for a, _, _ in chosen]
        self.counts["fused"] += 1
        self.last_agents = agents
        return ReceiverResult(
            np.asarray(boxes, np.float32).reshape(-1, 7), np.asarray(scores, np.float32),
            agents, paths, {"translate_ms": translate, "head_ms": head, "post_ms": _ms(t0),
                            "total_ms": _ms(start)}, dict(skipped))

    def _check_ego(self, ego_map: CodeMap) -> None:
        try:
            ego_map.validate()
        except CodeMapError as exc:
            raise PipelineError(drop_reason(exc), f"ego map: {exc}") from exc
        if ego_map.code_space != self.ego_group:
            raise PipelineError("unknown_space", f"ego map is in {ego_map.code_space}, the ego "
                                f"space is {self.ego_group}")
        reason = self._check_content(ego_map)
        if reason is not None:
            raise PipelineError(reason, f"ego map rejected: {reason}")

    def _select(self, ego_map: CodeMap) -> tuple[list[tuple[str, _Entry, str]], DropCounter]:
        """(agent, entry, path) of the peers to fuse, sorted by agent id; skips by reason."""
        chosen, skipped = [], DropCounter()
        for agent in sorted(self.peers):
            usable = {s: e for s, e in self.peers[agent].items()
                      if abs(e.code_map.stamp_ns - ego_map.stamp_ns) <= self.max_age_ns}
            if not usable:
                skipped.drop("stale")
                continue
            entry = usable.get(self.ego_group) or max(
                usable.values(), key=lambda e: e.code_map.stamp_ns)
            if self._distance(ego_map, entry.code_map) > self.comm_range:
                skipped.drop("out_of_range")
                continue
            chosen.append((agent, entry, self._path(entry.code_map)))
        return chosen, skipped

    def _path(self, cm: CodeMap) -> str:
        if cm.code_space != self.ego_group:
            return "translated"
        try:
            own = group_of(cm.modality)
        except KeyError:
            own = None
        return "own_space" if own == self.ego_group else "sender_translated"

    def _ego_space_indices(self, ego_map: CodeMap, chosen: list[tuple[str, _Entry, str]]
                           ) -> tuple[np.ndarray, dict[str, str]]:
        """(N, H, W) int64 ego-space indices, ego first; foreign maps translated per space."""
        maps = [ego_map.indices] + [e.code_map.indices for _, e, _ in chosen]
        indices = np.stack(maps).astype(np.int64)
        by_space: dict[str, list[int]] = {}
        for i, (_, entry, path) in enumerate(chosen, start=1):
            if path == "translated":
                by_space.setdefault(entry.code_map.code_space, []).append(i)
        for space, rows in by_space.items():
            out = self.translators[space]({"indices": indices[rows]})
            indices[rows] = out[space_output(self.ego_group)]
        paths = {self.ego_id: "ego", **{a: p for a, _, p in chosen}}
        return indices, paths

    # -- diagnostics -----------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters for diagnostics: offered/accepted/fused, drops and skips by reason."""
        held = sum(not e.used for s in self.peers.values() for e in s.values())
        return {**{k: int(self.counts[k]) for k in ("offered", "accepted", "fused",
                                                     "peer_maps_fused")},
                "held_unused": held,
                "peers": len(self.peers), "claims": len(self.claims),
                "drops": dict(self.drops), "skipped": dict(self.skipped),
                "last_agents": list(self.last_agents), "translators": sorted(self.translators),
                "backend": self.backend_name}
