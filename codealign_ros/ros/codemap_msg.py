"""Conversion between the core `CodeMap` and `codealign_msgs/CodeMap`."""
from __future__ import annotations

from builtin_interfaces.msg import Time
from codealign_msgs.msg import CodeMap as CodeMapMsg
from geometry_msgs.msg import Point, Pose

from codealign_ros.core.codemap import CodeMap, CodeMapError, Encoding, GridPose

NS_PER_S = 1_000_000_000


def ns_to_stamp(stamp_ns: int) -> Time:
    """builtin_interfaces/Time from integer nanoseconds."""
    return Time(sec=int(stamp_ns // NS_PER_S), nanosec=int(stamp_ns % NS_PER_S))


def stamp_to_ns(stamp: Time) -> int:
    """Integer nanoseconds of a builtin_interfaces/Time."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def _pose_msg(pose: GridPose) -> Pose:
    msg = Pose()
    msg.position.x, msg.position.y, msg.position.z = (float(v) for v in pose.position)
    q = msg.orientation
    q.x, q.y, q.z, q.w = (float(v) for v in pose.orientation)
    return msg


def _grid_pose(msg: Pose) -> GridPose:
    p, q = msg.position, msg.orientation
    return GridPose(position=(p.x, p.y, p.z), orientation=(q.x, q.y, q.z, q.w))


def codemap_to_msg(code_map: CodeMap, encoding: Encoding = Encoding.RAW,
                   level: int | None = None) -> CodeMapMsg:
    """Validate, pack and (optionally) entropy-code a code map into a message."""
    msg = CodeMapMsg()
    msg.header.stamp = ns_to_stamp(code_map.stamp_ns)
    msg.header.frame_id = code_map.frame_id
    msg.agent_id = code_map.agent_id
    msg.modality = code_map.modality
    msg.code_space = code_map.code_space
    msg.codebook_hash = code_map.codebook_hash
    msg.bits = code_map.bits
    msg.height, msg.width = code_map.height, code_map.width
    msg.resolution = float(code_map.resolution)
    msg.origin = Point(x=float(code_map.origin[0]), y=float(code_map.origin[1]),
                       z=float(code_map.origin[2]))
    msg.pose = _pose_msg(code_map.pose)
    msg.encoding = int(encoding)
    msg.data = code_map.payload(encoding, level)
    return msg


def msg_to_codemap(msg: CodeMapMsg) -> CodeMap:
    """Decode and validate a received message; raises CodeMapError when it is invalid."""
    if not isinstance(msg, CodeMapMsg):
        raise CodeMapError("meta", f"expected codealign_msgs/CodeMap, got {type(msg).__name__}")
    origin = msg.origin
    return CodeMap.from_payload(
        msg.data.tobytes(), msg.encoding, bits=msg.bits, height=msg.height, width=msg.width,
        agent_id=msg.agent_id, modality=msg.modality, code_space=msg.code_space,
        codebook_hash=msg.codebook_hash, stamp_ns=stamp_to_ns(msg.header.stamp),
        frame_id=msg.header.frame_id, resolution=float(msg.resolution),
        origin=(origin.x, origin.y, origin.z), pose=_grid_pose(msg.pose))


def encoding_param(text: str) -> Encoding:
    """The `encoding` node parameter (raw, zlib or zstd; any case) as an Encoding;
    ValueError naming the choices otherwise."""
    try:
        return Encoding[str(text).upper()]
    except KeyError:
        raise ValueError(f"encoding {text!r}: expected one of "
                         f"{', '.join(e.name.lower() for e in Encoding)}") from None
