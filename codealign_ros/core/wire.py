"""ROS-free view of a received CodeMap message: the fields a receiver uses, their bounds and
their canonical byte encoding (what a signature covers).

`WireFields` carries the message's values exactly as they travel (stamp as sec + nanosec,
resolution float32, origin and pose float64, the coded payload). `canonical_bytes` encodes
them with fixed-width big-endian numbers and length-prefixed strings and payload, in a fixed
order behind a versioned tag, so no two different messages encode alike. `field_reason` checks
the text fields against config/codemap.yaml `fields` (length limit + ROS name character set)
before anything else is looked at.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

__all__ = ["FIELD_REASONS", "TEXT_FIELDS", "FieldLimits", "WireFields", "canonical_bytes",
           "field_reason", "printable"]

CANONICAL_TAG = b"codealign/CodeMap\x00"
CANONICAL_VERSION = 1
TEXT_FIELDS = ("agent_id", "modality", "code_space", "codebook_hash", "frame_id")
FIELD_REASONS = tuple(f"bad_{name}" for name in TEXT_FIELDS)
_NUMBERS = struct.Struct(">iIBIIB")  # stamp sec, nanosec, bits, height, width, encoding


@dataclass(frozen=True)
class WireFields:
    """Every CodeMap field a receiver uses, as received (see codealign_msgs/msg/CodeMap.msg)."""

    agent_id: str
    modality: str
    code_space: str
    codebook_hash: str
    frame_id: str
    stamp_sec: int
    stamp_nanosec: int
    bits: int
    height: int
    width: int
    resolution: float  # float32 on the wire
    origin: tuple[float, float, float]
    pose: tuple[float, ...]  # position x, y, z, orientation x, y, z, w
    encoding: int
    data: bytes
    signature_scheme: int = 0
    signer_key_id: str = ""

    @property
    def stamp_ns(self) -> int:
        """header.stamp in integer nanoseconds."""
        return int(self.stamp_sec) * 1_000_000_000 + int(self.stamp_nanosec)


def _text(value: str) -> bytes:
    raw = value.encode("utf-8", "surrogatepass")
    return struct.pack(">I", len(raw)) + raw


def canonical_bytes(f: WireFields) -> bytes:
    """The versioned, injective byte encoding of `f` that a signature covers (not `signature`
    itself). Numbers are fixed width, strings and payload length-prefixed."""
    parts = [CANONICAL_TAG, bytes([CANONICAL_VERSION]), bytes([int(f.signature_scheme) & 0xFF]),
             _text(f.signer_key_id)]
    parts += [_text(getattr(f, name)) for name in TEXT_FIELDS]
    parts.append(_NUMBERS.pack(int(f.stamp_sec), int(f.stamp_nanosec), int(f.bits) & 0xFF,
                               int(f.height), int(f.width), int(f.encoding) & 0xFF))
    parts.append(np.asarray(f.resolution, ">f4").tobytes())
    parts.append(np.asarray([*f.origin, *f.pose], ">f8").reshape(10).tobytes())
    parts.append(struct.pack(">Q", len(f.data)))
    parts.append(bytes(f.data))
    return b"".join(parts)


@dataclass(frozen=True)
class FieldLimits:
    """Per text field: (maximum length in characters, compiled full-match pattern)."""

    rules: Mapping[str, tuple[int, re.Pattern[str]]]

    @classmethod
    def from_mapping(cls, fields: Mapping[str, Mapping[str, Any]]) -> FieldLimits:
        """From a mapping like config/codemap.yaml `fields`; every TEXT_FIELDS entry needed."""
        missing = [n for n in TEXT_FIELDS if n not in fields]
        if missing:
            raise ValueError(f"field limits lack {missing}")
        return cls({n: (int(fields[n]["max_length"]), re.compile(str(fields[n]["pattern"]),
                                                                 re.ASCII))
                    for n in TEXT_FIELDS})

    @classmethod
    def from_config(cls) -> FieldLimits:
        """The limits of config/codemap.yaml `fields`."""
        from codealign_ros.config import lookup

        return cls.from_mapping(lookup("codemap", "fields"))

    def reason(self, name: str, value: object) -> str | None:
        """`bad_<name>` unless `value` is a string within the length limit matching the
        pattern, else None."""
        limit, pattern = self.rules[name]
        if not isinstance(value, str) or not 0 < len(value) <= limit:
            return f"bad_{name}"
        return None if pattern.fullmatch(value) else f"bad_{name}"


def field_reason(f: WireFields, limits: FieldLimits) -> str | None:
    """The first bad_<field> drop reason of `f`'s text fields, or None when all are valid."""
    for name in TEXT_FIELDS:
        reason = limits.reason(name, getattr(f, name))
        if reason is not None:
            return reason
    return None


def printable(value: object, limit: int = 40) -> str:
    """A short repr for logs: a 10 kB hostile id must not flood the log either."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(str(value))} chars)"
