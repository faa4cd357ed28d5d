"""Signed code maps without DDS: keys, canonical encoding, signatures, replay, field bounds,
the receiver's link checks (incl. a hypothesis fuzz of the validation), node start-up errors."""
from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rclpy.serialization import deserialize_message, serialize_message

from codealign_msgs.msg import CodeMap as CodeMapMsg
from codealign_ros.core.codemap import REASONS, CodeMap, CodeMapError, Encoding, GridPose
from codealign_ros.core.signing import (LINK_REASONS, Signer, SigningError, TrustStore,
                                        generate_keys, key_id)
from codealign_ros.core.wire import (FIELD_REASONS, TEXT_FIELDS, FieldLimits, WireFields,
                                     canonical_bytes, field_reason)
from codealign_ros.nodes.link_setup import load_signer
from codealign_ros.pipeline.link import ECHO, LinkChecker, link_reasons
from codealign_ros.ros.codemap_msg import codemap_to_msg, msg_to_codemap
from codealign_ros.ros.signing_msg import sign_msg, wire_fields

LIMITS = FieldLimits.from_config()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("keys")
    for agent in ("cav_1", "cav_2"):
        generate_keys(agent, d)
    generate_keys("cav_2", d / "attacker")  # a key of the right name nobody trusts
    return d


def _map(agent: str = "cav_2", stamp_ns: int = 5_000_000_000, space: str = "g1") -> CodeMap:
    rng = np.random.default_rng(stamp_ns % 97)
    return CodeMap(indices=rng.integers(0, 16, (16, 16), dtype=np.uint8), bits=4,
                   agent_id=agent, modality="m1", code_space=space,
                   codebook_hash="0123456789abcdef", stamp_ns=stamp_ns,
                   frame_id=f"{agent}/lidar", resolution=0.8, origin=(-6.4, -6.4, 0.0),
                   pose=GridPose((3.0, -1.0, 0.5), (0.0, 0.0, 0.0, 1.0)))


def _signed(keys: Path, agent: str = "cav_2", key_dir: Path | None = None,
            **kw: object) -> CodeMapMsg:
    signer = Signer.from_file(agent, (key_dir or keys) / f"{agent}.key")
    msg = sign_msg(codemap_to_msg(_map(agent, **kw), Encoding.ZSTD), signer)
    return deserialize_message(serialize_message(msg), CodeMapMsg)  # as received


def _check(checker: LinkChecker, msg: CodeMapMsg, local: bool = False) -> str | None:
    reason, ticket = checker.check(wire_fields(msg), bytes(msg.signature), local)
    if reason is None:
        checker.commit(ticket)
    return reason


def test_generated_keys_are_private_and_listed(keys: Path) -> None:
    assert stat.S_IMODE(os.stat(keys / "cav_1.key").st_mode) == 0o600
    store = TrustStore.from_dir(keys)
    assert sorted(k.agent_id for k in store.keys.values()) == ["cav_1", "cav_2"]
    signer = Signer.from_file("cav_1", keys / "cav_1.key")
    assert signer.key_id in store.keys and len(signer.key_id) == 16
    with pytest.raises(SigningError, match="exists"):
        generate_keys("cav_1", keys)


def test_trust_store_refuses_foreign_and_doubly_named_keys(keys: Path, tmp_path: Path) -> None:
    (tmp_path / "cav_9.pub").write_bytes((keys / "cav_1.pub").read_bytes())
    (tmp_path / "cav_1.pub").write_bytes((keys / "cav_1.pub").read_bytes())
    with pytest.raises(SigningError, match="same key"):
        TrustStore.from_dir(tmp_path)
    other = tmp_path / "ed"
    other.mkdir()
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    (other / "cav_3.pub").write_bytes(ed25519.Ed25519PrivateKey.generate().public_key()
                                      .public_bytes(serialization.Encoding.PEM, spki))
    with pytest.raises(SigningError, match="P-256"):
        TrustStore.from_dir(other)


def test_signed_map_is_accepted_once_and_replay_is_dropped(keys: Path) -> None:
    checker = LinkChecker("cav_1", True, keys)
    msg = _signed(keys)
    assert len(msg.signature) == 64 and msg.signer_key_id == key_id(
        TrustStore.from_dir(keys).keys[msg.signer_key_id].public_key)
    assert _check(checker, msg) is None
    assert _check(checker, msg) == "replayed"  # the captured map again
    assert _check(checker, _signed(keys, stamp_ns=4_000_000_000)) == "replayed"  # older
    assert _check(checker, _signed(keys, stamp_ns=5_000_000_000, space="g2")) is None
    assert _check(checker, _signed(keys, stamp_ns=5_000_000_001)) is None
    assert msg_to_codemap(msg).agent_id == "cav_2"  # still an ordinary, decodable map


def test_unsigned_unknown_mismatched_and_forged_maps_are_dropped(keys: Path) -> None:
    checker = LinkChecker("cav_1", True, keys)
    assert _check(checker, codemap_to_msg(_map(), Encoding.ZSTD)) == "unsigned"
    assert _check(checker, _signed(keys, key_dir=keys / "attacker")) == "unknown_key"
    claim = _signed(keys)
    claim.agent_id = "cav_3"  # cav_2's valid key on a map claiming another id
    assert _check(checker, claim) == "key_agent_mismatch"
    ego = _signed(keys, agent="cav_1")
    assert _check(checker, codemap_to_msg(_map("cav_1"))) == "ego_broadcast"
    assert _check(checker, ego, local=True) is None
    assert _check(checker, ego) == ECHO and checker.echoes == 1  # own copy: discarded
    forged = _signed(keys, agent="cav_1", stamp_ns=9_000_000_000)
    forged.data = bytes(len(forged.data))
    assert _check(checker, forged) == "ego_broadcast"
    assert _check(checker, _signed(keys, stamp_ns=7), local=True) == "local_not_ego"


TAMPER = {
    "modality": lambda m: setattr(m, "modality", "m2"),
    "code_space": lambda m: setattr(m, "code_space", "g2"),
    "codebook_hash": lambda m: setattr(m, "codebook_hash", "0123456789abcdee"),
    "frame_id": lambda m: setattr(m.header, "frame_id", "cav_2/camera0"),
    "stamp": lambda m: setattr(m.header.stamp, "nanosec", m.header.stamp.nanosec + 1),
    "bits": lambda m: setattr(m, "bits", 3),
    "height": lambda m: setattr(m, "height", 8),
    "width": lambda m: setattr(m, "width", 32),
    "resolution": lambda m: setattr(m, "resolution", 0.4),
    "origin": lambda m: setattr(m.origin, "y", 1.0),
    "pose": lambda m: setattr(m.pose.orientation, "z", 1e-9),
    "encoding": lambda m: setattr(m, "encoding", 1),
    "data": lambda m: setattr(m, "data", bytes([m.data[0] ^ 1]) + bytes(m.data[1:])),
    "signature": lambda m: setattr(m, "signature", bytes(64)),
}


@pytest.mark.parametrize("field", sorted(TAMPER))
def test_any_changed_field_breaks_the_signature(keys: Path, field: str) -> None:
    checker = LinkChecker("cav_1", True, keys)
    msg = _signed(keys)
    TAMPER[field](msg)
    assert _check(checker, msg) == "bad_signature"


def test_canonical_encoding_has_no_shifts() -> None:
    f = wire_fields(codemap_to_msg(_map()))
    shifted = dataclasses.replace(f, agent_id=f.agent_id + "x", modality=f.modality[1:])
    assert canonical_bytes(shifted) != canonical_bytes(f)
    moved = dataclasses.replace(f, data=f.data[:-1], signer_key_id=f.signer_key_id + "0")
    assert canonical_bytes(moved) != canonical_bytes(f)


def test_node_without_key_names_the_command(tmp_path: Path) -> None:
    cases = [("vehicle_node", "cav_1", f"signing_key:={tmp_path}/cav_1.key",
              "codealign keys generate --agent cav_1"),
             ("fusion_node", "cav_1", f"trust_store:={tmp_path}", "codealign keys generate")]
    runs = [(subprocess.Popen([sys.executable, "-m", f"codealign_ros.nodes.{module}",
                               "--ros-args", "-p", f"agent_id:={agent}", "-p", params],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), says)
            for module, agent, params, says in cases]
    for run, says in runs:
        _, err = run.communicate(timeout=120)
        assert run.returncode == 1, err
        assert says in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1, err
    with pytest.raises(SystemExit, match="not a valid agent id"):
        load_signer("cav-1", "", require_signed=False)  # would be dropped as bad_agent_id


# --- fuzz -----------------------------------------------------------------------------------
_TEXT = st.one_of(st.text(max_size=80), st.text(alphabet="ab_/09Z-.", max_size=140),
                  st.sampled_from(["cav_1", "cav_2", "g1", "m1", "cav_2/lidar", "0a1b"]),
                  st.integers(0, 20_000).map(lambda n: "a" * n))
_WIRE = st.builds(
    WireFields, agent_id=_TEXT, modality=_TEXT, code_space=_TEXT, codebook_hash=_TEXT,
    frame_id=_TEXT, stamp_sec=st.integers(-2**31, 2**31 - 1),
    stamp_nanosec=st.integers(0, 2**32 - 1), bits=st.integers(0, 255),
    height=st.integers(0, 2**32 - 1), width=st.integers(0, 2**32 - 1),
    resolution=st.floats(width=32), origin=st.tuples(*[st.floats()] * 3),
    pose=st.tuples(*[st.floats()] * 7), encoding=st.integers(0, 255),
    data=st.binary(max_size=300), signature_scheme=st.integers(0, 255),
    signer_key_id=_TEXT)


_NAME_START = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_NAME_CHARS = _NAME_START | set("0123456789")


def _valid(name: str, value: str) -> bool:
    """Oracle of config/codemap.yaml `fields`, written without regular expressions."""
    if not 0 < len(value) <= LIMITS.rules[name][0]:
        return False
    if name == "codebook_hash":
        return set(value) <= set("0123456789abcdef")
    tokens = value.split("/") if name == "frame_id" else [value]
    return all(t and t[0] in _NAME_START and set(t) <= _NAME_CHARS for t in tokens)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields=_WIRE, signature=st.binary(max_size=80), local=st.booleans())
def test_fuzz_link_checks_never_raise_and_name_a_known_reason(
        keys: Path, fields: WireFields, signature: bytes, local: bool) -> None:
    checker = LinkChecker("cav_1", True, keys, LIMITS)
    reason, _ = checker.check(fields, signature, local)
    assert reason in link_reasons()  # random maps are never authentic
    first_bad = next((n for n in TEXT_FIELDS if not _valid(n, getattr(fields, n))), None)
    assert field_reason(fields, LIMITS) == (first_bad and f"bad_{first_bad}")
    if first_bad:
        assert reason == f"bad_{first_bad}"


def _bits(f: WireFields) -> tuple:
    """f with its floats as the bit patterns the wire carries (float32 resolution)."""
    floats = np.asarray([*f.origin, *f.pose], np.float64).tobytes()
    return dataclasses.astuple(dataclasses.replace(f, resolution=0.0, origin=(0.0,) * 3,
                                                   pose=(0.0,) * 7)) + (
        np.float32(f.resolution).tobytes(), floats)


@settings(max_examples=300, deadline=None)
@given(a=_WIRE, b=_WIRE, one=st.sampled_from([None] + [f.name for f in
                                                      dataclasses.fields(WireFields)]))
def test_fuzz_canonical_encoding_is_injective(a: WireFields, b: WireFields,
                                              one: str | None) -> None:
    if one:  # near pairs: only this field may differ
        b = dataclasses.replace(a, **{one: getattr(b, one)})
    assert (canonical_bytes(a) == canonical_bytes(b)) == (_bits(a) == _bits(b))


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=600), encoding=st.integers(0, 4), bits=st.integers(0, 9),
       height=st.integers(0, 40), width=st.integers(0, 40))
def test_fuzz_decoding_raises_only_code_map_errors(data: bytes, encoding: int, bits: int,
                                                   height: int, width: int) -> None:
    msg = codemap_to_msg(_map(), Encoding.RAW)
    msg.data, msg.encoding, msg.bits, msg.height, msg.width = data, encoding, bits, height, width
    try:
        msg_to_codemap(msg)
    except CodeMapError as exc:
        assert exc.reason in REASONS


def test_reason_tuples_are_disjoint() -> None:
    assert not set(FIELD_REASONS) & set(LINK_REASONS)
    assert len(link_reasons()) == len(set(link_reasons()))


def test_detections_name_a_bounded_number_of_agents() -> None:
    from codealign_ros.config import lookup
    from codealign_ros.pipeline import PipelineError, ReceiverConfig, ReceiverPipeline

    bound = int(lookup("codemap", "max_contributing_agents"))
    with pytest.raises(PipelineError, match="max_contributing_agents") as err:
        # + ego > bound
        ReceiverPipeline(ReceiverConfig("no/such/models", "cav_1", "m1", max_peers=bound))
    assert err.value.reason == "config"
