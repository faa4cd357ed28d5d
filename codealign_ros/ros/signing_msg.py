"""CodeMap messages <-> core.wire.WireFields; signing of outgoing messages; key set-up errors
of nodes (one clear line naming `codealign keys generate`, no traceback)."""
from __future__ import annotations

from pathlib import Path

from codealign_msgs.msg import CodeMap as CodeMapMsg

from codealign_ros.config import lookup
from codealign_ros.core.signing import (SCHEME_ECDSA_P256_SHA256, Signer, SigningError,
                                        key_paths, sign_fields)
from codealign_ros.core.wire import WireFields
from codealign_ros.pipeline.link import LinkChecker, keys_hint

__all__ = ["load_signer", "make_link_checker", "sign_msg", "wire_fields"]


def wire_fields(msg: CodeMapMsg) -> WireFields:
    """The fields of `msg` a receiver uses, as they travelled."""
    p, q, o = msg.pose.position, msg.pose.orientation, msg.origin
    return WireFields(
        agent_id=msg.agent_id, modality=msg.modality, code_space=msg.code_space,
        codebook_hash=msg.codebook_hash, frame_id=msg.header.frame_id,
        stamp_sec=int(msg.header.stamp.sec), stamp_nanosec=int(msg.header.stamp.nanosec),
        bits=int(msg.bits), height=int(msg.height), width=int(msg.width),
        resolution=float(msg.resolution), origin=(o.x, o.y, o.z),
        pose=(p.x, p.y, p.z, q.x, q.y, q.z, q.w), encoding=int(msg.encoding),
        data=bytes(msg.data), signature_scheme=int(msg.signature_scheme),
        signer_key_id=msg.signer_key_id)


def sign_msg(msg: CodeMapMsg, signer: Signer) -> CodeMapMsg:
    """Sign `msg` in place (after every other field is final) and return it."""
    msg.signature_scheme = SCHEME_ECDSA_P256_SHA256
    msg.signer_key_id = signer.key_id
    msg.signature = sign_fields(signer, wire_fields(msg))
    return msg


def default_key_dir() -> Path:
    """config/codemap.yaml security.key_dir."""
    return Path(str(lookup("codemap", "security", "key_dir")))


def load_signer(agent: str, path: str, require_signed: bool) -> Signer | None:
    """The agent's signer from `path` ("" = <key_dir>/<agent>.key); None when signing is off.
    SystemExit with one line naming the command that makes the key when it is missing."""
    if not require_signed:
        return None
    key = Path(path) if path else key_paths(agent, default_key_dir())[0]
    if not key.is_file():
        raise SystemExit(f"vehicle_node: no signing key {key} for agent {agent} "
                         f"(require_signed is on): create it with "
                         f"`{keys_hint(agent, key.parent)}` or set require_signed:=false")
    try:
        return Signer.from_file(agent, key)
    except SigningError as exc:
        raise SystemExit(f"vehicle_node: {exc}; create a key with "
                         f"`{keys_hint(agent, key.parent)} --force`") from None


def make_link_checker(ego: str, require_signed: bool, trust_store: str) -> LinkChecker:
    """The receiver's LinkChecker; SystemExit with one clear line when the trust store is
    missing or unusable."""
    try:
        return LinkChecker(ego, require_signed, trust_store or default_key_dir())
    except SigningError as exc:
        raise SystemExit(f"fusion_node: {exc}") from None
