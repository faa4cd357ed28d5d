"""A hostile V2X link against live nodes over real DDS: signed maps, bounded fields, the ego's
identity, replays, forgeries, unknown keys, a flood of 200 peers, a bomb.

One graph for the module: the ego's vehicle_node (cav_1, m1, signing with its key) and its
fusion_node (require_signed, a trust store of cav_1, cav_2 and 200 flood agents), on random
weights. The test signs peers' maps with cav_2's key (and keys nobody trusts) and checks that
every attack is dropped under its own reason while the ego keeps getting detections.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from codealign_msgs.msg import CodeMap as CodeMapMsg
from codealign_ros.config import lookup, topic
from codealign_ros.core.codemap import Encoding, compress
from codealign_ros.core.signing import Signer, generate_keys
from codealign_ros.pipeline.testing import make_random_store
from codealign_ros.processes import ProcessGroup
from codealign_ros.ros.codemap_msg import codemap_to_msg, ns_to_stamp
from codealign_ros.ros.qos import qos_profile
from codealign_ros.ros.signing_msg import sign_msg
from test_nodes_faults import (EGO, FUSION, STARTUP_S, VEHICLE, Peers, Probe, _rss_kb, _stamp,
                              probe_session)

pytestmark = pytest.mark.dds
MAX_PEERS = 8
FLOOD = 200


class Attacker:
    """Signed and unsigned maps of trusted peers, of keys nobody trusts, on both topics."""

    def __init__(self, probe: Probe, peers: Peers, keys: Path, pid: int) -> None:
        self.probe, self.peers, self.pid = probe, peers, pid
        self.signers = {a: Signer.from_file(a, keys / f"{a}.key") for a in ("cav_1", "cav_2")}
        self.untrusted = Signer.from_file("cav_2", keys / "untrusted" / "cav_2.key")
        self.flood = [Signer.from_file(f"flood_{i}", keys / f"flood_{i}.key")
                      for i in range(FLOOD)]
        self.local = probe.node.create_publisher(CodeMapMsg, topic("codemap_local", agent=EGO),
                                                 qos_profile("codemap"))
        self.captured: list[CodeMapMsg] = []  # the ego's own maps, as anyone can receive them
        probe.node.create_subscription(CodeMapMsg, topic("codemap"), self._capture,
                                       qos_profile("codemap"))

    def _capture(self, msg: CodeMapMsg) -> None:
        if msg.agent_id == EGO:
            self.captured.append(msg)

    def signed(self, agent: str, stamp: int, signer: Signer | None = None, **kw: Any
               ) -> CodeMapMsg:
        return sign_msg(self.peers.msg(agent, stamp, **kw), signer or self.signers[agent])

    def send(self, *msgs: CodeMapMsg, local: bool = False) -> None:
        for msg in msgs:
            (self.local if local else self.probe.maps).publish(msg)
            self.probe.spin_for(0.1)

    def expect(self, counts: dict[str, int]) -> None:
        """Every drop_<reason> reaches its count (the counts before + the new), and stays
        there one more diagnostics period (no overshoot)."""
        probe = self.probe
        now = lambda: {r: probe.count(FUSION, f"drop_{r}") for r in counts}  # noqa: E731
        probe.spin_until(lambda: all(now()[r] >= n for r, n in counts.items()), 15.0,
                         f"drop counts {counts}")
        probe.spin_for(1.2)
        assert now() == counts, probe.diag[FUSION]

    def before(self, *reasons: str) -> dict[str, int]:
        return {r: self.probe.count(FUSION, f"drop_{r}") for r in reasons}


@pytest.fixture(scope="module")
def link(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Attacker]:
    tmp = tmp_path_factory.mktemp("link")
    store = make_random_store(tmp / "mini", modalities=("m1", "m2"), score_bias=-4.0,
                              score_gain=300.0)
    keys = tmp / "keys"
    for agent in ["cav_1", "cav_2"] + [f"flood_{i}" for i in range(FLOOD)]:
        generate_keys(agent, keys)
    generate_keys("cav_2", keys / "untrusted")
    key = f"{os.getpid()}:{__name__}".encode()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROS_DOMAIN_ID", str(1 + int(hashlib.sha256(key).hexdigest(), 16) % 100))
        mp.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        with ProcessGroup() as group:
            common = {"agent_id": EGO, "model_dir": store, "backend": "torch",
                      "require_signed": True}
            logs = {n: open(tmp / f"{n}.log", "w") for n in ("fusion", "vehicle")}
            fusion = group.start_module(
                "fusion", "codealign_ros.nodes.fusion_node",
                {**common, "trust_store": str(keys), "max_peers": MAX_PEERS, "max_age_s": 0.5,
                 "max_delay_s": 30.0, "claim_window_s": 1.0, "comm_range_m": 70.0},
                args=["--ros-args", "-r", f"__node:=fusion_{EGO}"],
                stdout=logs["fusion"], stderr=subprocess.STDOUT)
            group.start_module("vehicle", "codealign_ros.nodes.vehicle_node",
                               {**common, "modality": "m1",
                                "signing_key": str(keys / f"{EGO}.key")},
                               stdout=logs["vehicle"], stderr=subprocess.STDOUT)
            with probe_session(group, logs, tmp, {FUSION, VEHICLE}) as probe:
                attacker = Attacker(probe, Peers(store), keys, fusion.pid)
                probe.ego_frame(timeout=STARTUP_S)  # discovery of every path
                yield attacker


def test_signed_maps_of_ego_and_peer_are_fused(link: Attacker) -> None:
    probe = link.probe
    agents = probe.fused_agents(before=lambda s: link.send(link.signed("cav_2", s)))
    assert agents == {EGO, "cav_2"}
    probe.spin_until(lambda: link.captured, 10.0, "the ego's broadcast map")
    ego = link.captured[-1]
    assert ego.signer_key_id == link.signers[EGO].key_id and len(ego.signature) == 64
    assert ego.signature_scheme == CodeMapMsg.SIGNATURE_ECDSA_P256_SHA256


def test_unsigned_unknown_forged_replayed_maps_are_dropped(link: Attacker) -> None:
    probe = link.probe
    counts = link.before("unsigned", "unknown_key", "key_agent_mismatch", "bad_signature",
                         "replayed")
    now = probe.now_ns()
    genuine = link.signed("cav_2", now)
    accepted = probe.count(FUSION, "accepted")
    link.send(genuine)
    probe.spin_until(lambda: probe.count(FUSION, "accepted") > accepted, 10.0, "the genuine map")
    forged_data = link.signed("cav_2", now + 1)
    forged_data.data = bytes([forged_data.data[0] ^ 0xFF]) + bytes(forged_data.data[1:])
    forged_stamp = link.signed("cav_2", now + 2)
    forged_stamp.header.stamp = ns_to_stamp(now + 3)
    claim = link.signed("cav_2", now + 4)
    claim.agent_id, claim.header.frame_id = "cav_3", "cav_3/lidar"  # cav_2's key, not its id
    link.send(peers_msg := link.peers.msg("cav_2", now + 5),  # unsigned
              link.signed("cav_2", now + 6, signer=link.untrusted),
              claim, forged_data, forged_stamp, genuine)  # genuine again: a replay
    assert not peers_msg.signature
    counts = {k: v + (2 if k == "bad_signature" else 1) for k, v in counts.items()}
    link.expect(counts)
    assert len(probe.ego_frame().detections) > 0


def test_long_and_out_of_charset_fields_are_dropped(link: Attacker) -> None:
    probe = link.probe
    now = probe.now_ns()
    cases = {"agent_id": "a" * 10_000, "modality": "m" * 10_000, "code_space": "g1/../g2",
             "codebook_hash": "XYZ", "frame_id": "cav_2/lidar "}
    counts = link.before(*(f"bad_{f}" for f in cases))
    for field, value in cases.items():
        msg = link.signed("cav_2", now)
        setattr(msg.header if field == "frame_id" else msg, field, value)
        link.send(msg)
    link.expect({k: v + 1 for k, v in counts.items()})
    det = probe.ego_frame()
    limit = int(lookup("codemap", "max_contributing_agents"))
    id_limit = lookup("codemap", "fields", "agent_id", "max_length")
    for d in det.detections:
        assert len(d.contributing_agents) <= limit
        assert all(len(a) <= id_limit for a in d.contributing_agents)


def test_ego_identity_cannot_be_taken_over(link: Attacker) -> None:
    probe = link.probe
    counts = link.before("ego_broadcast", "unsigned", "key_agent_mismatch", "local_not_ego",
                         "replayed")
    probe.spin_until(lambda: link.captured, 10.0, "a captured ego map")
    captured = link.captured[-1]

    def attack() -> None:  # unsigned, another's key, a replay of the ego's own signed map
        stamp = probe.now_ns()
        link.send(link.peers.msg(EGO, stamp, x=0.0),
                  link.signed(EGO, stamp, signer=link.signers["cav_2"], x=0.0), captured)

    echoes = probe.count(FUSION, "ego_echo")
    attack()  # while the ego sends
    assert len(probe.ego_frame().detections) > 0
    attack()
    assert len(probe.ego_frame().detections) > 0
    counts["ego_broadcast"] += 4
    link.expect({"ego_broadcast": counts["ego_broadcast"]})
    # the replays (and the ego vehicle's own broadcast copies) are discarded as echoes
    assert probe.count(FUSION, "ego_echo") >= echoes + 4
    # the ego falls silent for longer than the claim window; the attacker keeps sending
    fused, sent = probe.count(FUSION, "fused"), []
    silence_end = time.monotonic() + 1.6
    while time.monotonic() < silence_end:
        stamp = probe.now_ns()
        sent.append(stamp)
        link.send(link.peers.msg(EGO, stamp, x=0.0),
                  link.signed(EGO, stamp, signer=link.signers["cav_2"], x=0.0))
    # ... also on the ego's local topic: unsigned, someone else's key, another agent, a replay
    link.send(link.peers.msg(EGO, probe.now_ns(), x=0.0), local=True)
    link.send(link.signed(EGO, probe.now_ns(), signer=link.signers["cav_2"], x=0.0), local=True)
    link.send(link.signed("cav_2", probe.now_ns()), local=True)
    link.send(captured, local=True)
    counts["ego_broadcast"] += 2 * len(sent)
    counts["unsigned"] += 1
    counts["key_agent_mismatch"] += 1
    counts["local_not_ego"] += 1
    counts["replayed"] += 1
    link.expect(counts)
    assert probe.count(FUSION, "fused") == fused, "an attacker's map was fused as the ego"
    assert not {_stamp(d) for d in probe.detections} & set(sent)
    stamp = probe.now_ns()
    det = probe.ego_frame(stamp=stamp)  # the real ego is back: its frame, its stamp
    assert _stamp(det) >= stamp and len(det.detections) > 0


def test_signed_bomb_and_wrong_lengths_are_one_reason_each(link: Attacker) -> None:
    probe = link.probe
    counts = link.before("bomb", "bad_length", "unsigned")
    now = probe.now_ns()
    size = link.peers.grid.height * link.peers.grid.width // 2
    payloads = {"bomb": _zstd_zeros(256 * 2**20),
                "short_zstd": compress(bytes(size - 1), Encoding.ZSTD),
                "short_zlib": compress(bytes(size - 1), Encoding.ZLIB),
                "short_raw": bytes(size - 1)}
    encodings = {"bomb": 2, "short_zstd": 2, "short_zlib": 1, "short_raw": 0}
    for i, (name, data) in enumerate(payloads.items()):
        msg = codemap_to_msg(link.peers.code_map("cav_2", now + i), Encoding.RAW)
        msg.data, msg.encoding = data, encodings[name]
        link.send(sign_msg(msg, link.signers["cav_2"]))
    unsigned = codemap_to_msg(link.peers.code_map("cav_2", now + 9), Encoding.RAW)
    unsigned.data, unsigned.encoding = payloads["bomb"], 2
    link.send(unsigned)  # never decompressed
    link.expect({"bomb": counts["bomb"] + 1, "bad_length": counts["bad_length"] + 3,
                 "unsigned": counts["unsigned"] + 1})
    assert len(probe.ego_frame().detections) > 0


def _zstd_zeros(n: int) -> bytes:
    """One zstd frame of n zero bytes (256 MiB -> ~8 kB), compressed without holding n."""
    import zstandard

    stream, chunk = zstandard.ZstdCompressor().compressobj(), bytes(2**20)
    return b"".join([stream.compress(chunk) for _ in range(n // len(chunk))] + [stream.flush()])


def test_flood_of_200_peers_is_bounded(link: Attacker) -> None:
    """Last: fresh flood maps hold every peer slot until they expire (by design)."""
    probe = link.probe
    rss_before = _rss_kb(link.pid)
    unknown = probe.count(FUSION, "drop_unknown_key")
    stamp = probe.now_ns()
    for i, signer in enumerate(link.flood):
        probe.maps.publish(link.signed(signer.agent_id, stamp, signer=signer, x=float(i % 20)))
        probe.maps.publish(link.signed(f"ghost_{i}", stamp, signer=link.untrusted))
        probe.spin_for(0.004)
    probe.spin_until(lambda: probe.count(FUSION, "drop_too_many_peers") > 0
                     and probe.count(FUSION, "drop_unknown_key") > unknown, 20.0,
                     "too_many_peers and unknown_key drops")
    probe.spin_for(1.2)
    diag = probe.diag[FUSION]
    assert int(diag["peers"]) <= MAX_PEERS and int(diag["claims"]) <= 4 * MAX_PEERS + 16
    agents = probe.fused_agents()
    assert EGO in agents and len(agents) <= MAX_PEERS + 1
    assert _rss_kb(link.pid) - rss_before < 100_000, "fusion_node grew by > 100 MB"
    print("fusion_node counts after the attacks:", {k: v for k, v in probe.diag[FUSION].items()
                                                   if k.startswith("drop_") or k in (
                                                       "ego_echo", "accepted", "fused")})
