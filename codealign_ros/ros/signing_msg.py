"""CodeMap messages -> core.wire.WireFields (what a receiver checks and a signature covers);
signing of outgoing messages."""
from __future__ import annotations

from codealign_msgs.msg import CodeMap as CodeMapMsg

from codealign_ros.core.signing import SCHEME_ECDSA_P256_SHA256, Signer, sign_fields
from codealign_ros.core.wire import WireFields

__all__ = ["sign_msg", "wire_fields"]


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
