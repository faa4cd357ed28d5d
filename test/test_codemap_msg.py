"""Core CodeMap <-> codealign_msgs/CodeMap, through real CDR serialisation."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message

from codealign_msgs.msg import CodeMap as CodeMapMsg
from codealign_ros.core.codemap import CodeMap, CodeMapError, Encoding, GridPose
from codealign_ros.core.codemap_samples import realistic_code_map
from codealign_ros.ros.codemap_msg import codemap_to_msg, msg_to_codemap, ns_to_stamp, stamp_to_ns


def _code_map(bits: int = 4, height: int = 256, width: int = 256) -> CodeMap:
    return CodeMap(indices=realistic_code_map(height, width, bits, seed=3), bits=bits,
                   agent_id="cav_641", modality="m4", code_space="g2",
                   codebook_hash="0123456789abcdef", stamp_ns=1_700_000_000_123_456_789,
                   frame_id="cav_641/lidar", resolution=0.8, origin=(-102.4, -102.4, 0.0),
                   pose=GridPose((12.5, -3.25, 1.9), (0.0, 0.0, 0.3826834, 0.9238795)))


def _over_the_wire(msg: CodeMapMsg) -> CodeMapMsg:
    return deserialize_message(serialize_message(msg), CodeMapMsg)


def test_message_constants_match_core_encodings() -> None:
    assert {e.name: int(e) for e in Encoding} == {
        "RAW": CodeMapMsg.ENCODING_RAW, "ZLIB": CodeMapMsg.ENCODING_ZLIB,
        "ZSTD": CodeMapMsg.ENCODING_ZSTD}


@pytest.mark.parametrize("encoding", list(Encoding))
@pytest.mark.parametrize("bits", [1, 3, 4, 8])
def test_round_trip_through_cdr_keeps_content(encoding: Encoding, bits: int) -> None:
    original = _code_map(bits, height=64, width=96)
    msg = _over_the_wire(codemap_to_msg(original, encoding))
    assert msg.encoding == int(encoding)
    assert msg_to_codemap(msg).content_hash() == original.content_hash()


def test_raw_payload_of_256_squared_4_bit_map_is_32768_bytes() -> None:
    msg = codemap_to_msg(_code_map(), Encoding.RAW)
    assert len(msg.data) == 32768 == msg.height * msg.width * msg.bits // 8


def test_stamp_conversion_is_exact() -> None:
    for ns in (0, 1, 999_999_999, 1_000_000_000, 1_700_000_000_123_456_789):
        assert stamp_to_ns(ns_to_stamp(ns)) == ns


def test_received_garbage_raises_code_map_error() -> None:
    msg = codemap_to_msg(_code_map(), Encoding.ZSTD)
    msg.data = bytes(msg.data)[:-7]
    with pytest.raises(CodeMapError) as err:
        msg_to_codemap(_over_the_wire(msg))
    assert err.value.reason == "corrupt"
    msg = codemap_to_msg(_code_map(), Encoding.RAW)
    msg.width = 255
    with pytest.raises(CodeMapError) as err:
        msg_to_codemap(msg)
    assert err.value.reason == "length"


def test_sender_refuses_invalid_map() -> None:
    bad = dataclasses.replace(_code_map(), indices=np.full((8, 8), 16, np.uint8))
    with pytest.raises(CodeMapError) as err:
        codemap_to_msg(bad)
    assert err.value.reason == "index"
