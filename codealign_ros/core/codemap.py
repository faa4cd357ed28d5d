"""ROS-free code-map codec: bit packing, entropy coding and the validated `CodeMap`.

Wire format (codealign_msgs/msg/CodeMap.msg): cells row-major, each index `bits` bits,
most significant bit first, concatenated, last byte zero-padded; the packed stream is
sent as is (RAW), as zlib (ZLIB) or as one Zstandard frame (ZSTD). Every invalid input
raises `CodeMapError` whose `reason` is one of `REASONS`.
"""
from __future__ import annotations

import enum
import hashlib
import json
import math
import numbers
import zlib
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from codealign_ros.errors import CodeAlignError

REASONS = ("bits", "shape", "size", "length", "bomb", "index", "pose", "resolution",
           "encoding", "corrupt", "padding", "meta")
MAX_CELLS = 4096 * 4096


class CodeMapError(CodeAlignError, ValueError):
    """An invalid code map; `reason` (one of `REASONS`) is a key for counters and tests."""

    def __init__(self, reason: str, message: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown CodeMapError reason {reason!r}; known: {REASONS}")
        super().__init__(message)
        self.reason = reason


class Encoding(enum.IntEnum):
    """Values of CodeMap.msg ENCODING_* (part of the wire format; never renumber)."""

    RAW = 0
    ZLIB = 1
    ZSTD = 2


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _check_bits(bits: object) -> int:
    if not _is_int(bits) or not 1 <= bits <= 8:  # type: ignore[operator]
        raise CodeMapError("bits", f"bits must be an integer in 1..8, got {bits!r}")
    return int(bits)  # type: ignore[call-overload]


def _check_shape(height: object, width: object) -> tuple[int, int]:
    for name, value in (("height", height), ("width", width)):
        if not _is_int(value) or value <= 0:  # type: ignore[operator]
            raise CodeMapError("shape", f"{name} must be a positive integer, got {value!r}")
    h, w = int(height), int(width)  # type: ignore[call-overload]
    if h * w > MAX_CELLS:
        raise CodeMapError("shape", f"{h} x {w} = {h * w} cells exceeds MAX_CELLS = {MAX_CELLS}")
    return h, w


def _check_encoding(encoding: object) -> Encoding:
    try:
        return Encoding(encoding)
    except (ValueError, TypeError):
        known = ", ".join(f"{e.name}={e.value}" for e in Encoding)
        raise CodeMapError("encoding", f"unknown encoding {encoding!r} (known: {known})") from None


def _check_indices(indices: object, bits: int) -> np.ndarray:
    """`indices` as a uint8 2-D array after checking shape, dtype and range."""
    try:
        a = np.asarray(indices)
    except (TypeError, ValueError) as exc:
        raise CodeMapError("shape", f"indices are not a rectangular array: {exc}") from None
    if a.ndim != 2 or a.size == 0:
        raise CodeMapError("shape", f"indices must be a non-empty 2-D array, got shape {a.shape}")
    _check_shape(*a.shape)
    if not np.issubdtype(a.dtype, np.integer):
        raise CodeMapError("index", f"indices must have an integer dtype, got {a.dtype}")
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi >= 1 << bits:
        raise CodeMapError("index", f"indices must lie in 0..{(1 << bits) - 1} for bits={bits}, "
                                    f"got values in {lo}..{hi}")
    return a.astype(np.uint8, copy=False)


def _byte_view(data: object) -> memoryview:
    try:
        return memoryview(data).cast("B")  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise CodeMapError("size", "data must be a contiguous bytes-like object, "
                                   f"got {type(data).__name__}") from None


def packed_size(height: int, width: int, bits: int) -> int:
    """Bytes of the packed stream: ceil(height * width * bits / 8)."""
    return (height * width * bits + 7) // 8


def _pack_general(flat: np.ndarray, bits: int) -> bytes:
    """Pack uint8 values of any width 1..8 through a bit array (reference path)."""
    return np.packbits(np.unpackbits(flat[:, None], axis=1)[:, 8 - bits:]).tobytes()


def _unpack_general(buf: np.ndarray, bits: int, cells: int) -> np.ndarray:
    """Inverse of `_pack_general`: `cells` uint8 values from the packed bytes `buf`."""
    wide = np.zeros((cells, 8), np.uint8)
    wide[:, 8 - bits:] = np.unpackbits(buf)[:cells * bits].reshape(cells, bits)
    return np.packbits(wide, axis=1).ravel()


def pack_indices(indices: np.ndarray, bits: int) -> bytes:
    """Validate a 2-D index map and pack it into the wire bit stream."""
    bits = _check_bits(bits)
    flat = _check_indices(indices, bits).ravel()
    if bits == 8:
        return flat.tobytes()
    if 8 % bits:
        return _pack_general(flat, bits)
    per = 8 // bits  # cells per byte; for bits=4 this is (a[0::2] << 4) | a[1::2]
    groups = np.zeros(-(-flat.size // per) * per, np.uint8)
    groups[:flat.size] = flat
    groups = groups.reshape(-1, per)
    out = groups[:, 0].copy()
    for j in range(1, per):
        out = (out << bits) | groups[:, j]
    return out.tobytes()


def unpack_indices(data: bytes, bits: int, height: int, width: int) -> np.ndarray:
    """Unpack the wire bit stream into a (height, width) uint8 index map.

    Everything is checked before numpy touches the data: bits, shape, exact byte
    length and zero padding bits.
    """
    bits = _check_bits(bits)
    h, w = _check_shape(height, width)
    buf = np.frombuffer(_byte_view(data), np.uint8)
    cells, size = h * w, packed_size(h, w, bits)
    if buf.size != size:
        raise CodeMapError("length", f"a {bits}-bit {h} x {w} map needs {size} bytes, "
                                   f"got {buf.size}")
    pad = 8 * size - cells * bits
    if pad and int(buf[-1]) & ((1 << pad) - 1):
        raise CodeMapError("padding", f"the last {pad} padding bits must be zero, "
                                      f"last byte is 0x{int(buf[-1]):02x}")
    if bits == 8:
        flat = buf.copy()
    elif 8 % bits:
        flat = _unpack_general(buf, bits, cells)
    else:
        per, mask = 8 // bits, (1 << bits) - 1
        flat = np.empty((size, per), np.uint8)
        for j in range(per):
            flat[:, j] = (buf >> (8 - bits * (j + 1))) & mask
    return flat.ravel()[:cells].reshape(h, w)


def _zstandard() -> Any:
    try:
        import zstandard
    except ImportError:
        raise CodeMapError("encoding", "ZSTD code maps need the zstandard package: "
                                       "pip install zstandard") from None
    return zstandard


def compress(packed: bytes, encoding: Encoding, level: int | None = None) -> bytes:
    """Entropy-code a packed stream (default levels: zlib 6, zstd 3)."""
    encoding = _check_encoding(encoding)
    data = bytes(packed)
    if encoding is Encoding.ZLIB:
        return zlib.compress(data, -1 if level is None else level)
    if encoding is Encoding.ZSTD:
        return _zstandard().ZstdCompressor(level=3 if level is None else level).compress(data)
    return data


def _zstd_complete(zstd: Any, view: memoryview) -> bool:
    """Whether `view` ends with a complete zstd frame. Only called once a bounded read has
    drained the input, so this second pass produces no more than that read did."""
    stream = zstd.ZstdDecompressor().decompressobj()
    try:
        stream.decompress(view)
    except zstd.ZstdError:
        return False
    return bool(stream.eof) and not stream.unused_data


def decompress(data: bytes, encoding: Encoding, expected_size: int) -> bytes:
    """Decode a payload into exactly `expected_size` bytes of packed stream.

    Never produces more than `expected_size + 1` bytes (decompression-bomb guard). A payload
    whose decoded length is wrong raises reason "length" whatever its encoding (RAW: its own
    length; zlib / zstd: a complete stream that decodes short); a compressed stream that
    expands past `expected_size` reason "bomb" (decoding stops one byte beyond it); invalid,
    truncated or trailing-garbage streams reason "corrupt".
    """
    encoding = _check_encoding(encoding)
    if not _is_int(expected_size) or expected_size < 0:
        raise CodeMapError("size", f"expected_size must be an integer >= 0, got {expected_size!r}")
    view, n = _byte_view(data), int(expected_size)
    if encoding is Encoding.RAW:
        if len(view) != n:
            raise CodeMapError("length", f"RAW payload has {len(view)} bytes, expected {n}")
        return view.tobytes()
    if encoding is Encoding.ZLIB:
        stream = zlib.decompressobj()
        try:
            out = stream.decompress(view, n + 1)
        except zlib.error as exc:
            raise CodeMapError("corrupt",
                               f"invalid zlib stream ({len(view)} bytes): {exc}") from None
        complete = stream.eof and not stream.unused_data
    else:
        zstd = _zstandard()
        try:
            # read_across_frames: trailing garbage or extra frames fail or overflow the limit
            with zstd.ZstdDecompressor().stream_reader(view, read_across_frames=True) as reader:
                out = reader.read(n + 1)
        except zstd.ZstdError as exc:
            raise CodeMapError("corrupt",
                               f"invalid zstd frame ({len(view)} bytes): {exc}") from None
        complete = len(out) > n or _zstd_complete(zstd, view)
    if len(out) > n:
        raise CodeMapError("bomb", f"{encoding.name} payload of {len(view)} bytes decodes to "
                                   f"more than {n} bytes (decompression stopped there)")
    if not complete:
        raise CodeMapError("corrupt", f"{encoding.name} payload of {len(view)} bytes is "
                                      f"truncated or has trailing bytes")
    if len(out) < n:
        raise CodeMapError("length", f"{encoding.name} payload of {len(view)} bytes decodes "
                                     f"to {len(out)} bytes, expected {n}")
    return out


def _finite_vector(values: object, n: int, what: str) -> np.ndarray:
    try:
        v = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        v = np.empty(0)
    if v.shape != (n,) or not np.isfinite(v).all():
        raise CodeMapError("pose", f"{what} must be {n} finite numbers, got {values!r}")
    return v


@dataclass(frozen=True)
class GridPose:
    """Pose of the grid frame in the world frame: position (x, y, z), quaternion (x, y, z, w)."""

    position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    orientation: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 1.0)

    @classmethod
    def identity(cls) -> GridPose:
        """The identity pose."""
        return cls()

    def validate(self) -> None:
        """Raise CodeMapError("pose") unless finite with a unit quaternion (tolerance 1e-3)."""
        _finite_vector(self.position, 3, "position")
        norm = float(np.linalg.norm(_finite_vector(self.orientation, 4, "orientation")))
        if abs(norm - 1.0) > 1e-3:
            raise CodeMapError("pose", f"orientation quaternion must have norm 1 (+-1e-3), "
                                       f"got {norm:.6g}")

    def to_matrix(self) -> np.ndarray:
        """4x4 float64 homogeneous transform grid -> world (quaternion renormalised)."""
        self.validate()
        q = np.asarray(self.orientation, np.float64)
        x, y, z, w = q / np.linalg.norm(q)
        m = np.eye(4)
        m[:3, :3] = [[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]]
        m[:3, 3] = self.position
        return m


@dataclass(frozen=True, eq=False)  # eq=False: ndarray fields; compare content_hash()
class CodeMap:
    """One agent's bird's-eye-view code map plus the metadata of CodeMap.msg."""

    indices: np.ndarray  # uint8 (height, width), values < 2**bits
    bits: int
    agent_id: str
    modality: str
    code_space: str
    codebook_hash: str
    stamp_ns: int
    frame_id: str
    resolution: float  # metres per cell
    origin: tuple[float, float, float]
    pose: GridPose

    @property
    def height(self) -> int:
        """Rows (cells along +y)."""
        return int(self.indices.shape[0])

    @property
    def width(self) -> int:
        """Columns (cells along +x)."""
        return int(self.indices.shape[1])

    @property
    def raw_nbytes(self) -> int:
        """Bytes of the packed (RAW) payload."""
        return packed_size(self.height, self.width, self.bits)

    def validate(self) -> None:
        """Raise CodeMapError unless every field is valid for the wire."""
        _check_indices(self.indices, _check_bits(self.bits))
        for name in ("agent_id", "modality", "code_space", "codebook_hash"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise CodeMapError("meta", f"{name} must be a non-empty string, got {value!r}")
        if not isinstance(self.frame_id, str):
            raise CodeMapError("meta", f"frame_id must be a string, got {self.frame_id!r}")
        if not _is_int(self.stamp_ns) or self.stamp_ns < 0:
            raise CodeMapError("meta", f"stamp_ns must be an integer >= 0, got {self.stamp_ns!r}")
        r = self.resolution
        if not isinstance(r, numbers.Real) or isinstance(r, bool) or not math.isfinite(r) or r <= 0:
            raise CodeMapError("resolution", f"resolution must be finite and > 0 m/cell, got {r!r}")
        _finite_vector(self.origin, 3, "origin")
        if not isinstance(self.pose, GridPose):
            raise CodeMapError("pose", f"pose must be a GridPose, got {type(self.pose).__name__}")
        self.pose.validate()

    def payload(self, encoding: Encoding = Encoding.RAW, level: int | None = None) -> bytes:
        """Validate, pack and entropy-code the indices for CodeMap.msg `data`."""
        self.validate()
        return compress(pack_indices(self.indices, self.bits), encoding, level)

    @classmethod
    def from_payload(cls, data: bytes, encoding: int, *, bits: int, height: int, width: int,
                     **meta: Any) -> CodeMap:
        """Decode a received payload; header numbers are checked before the data is read."""
        bits = _check_bits(bits)
        h, w = _check_shape(height, width)
        encoding = _check_encoding(encoding)
        packed = decompress(data, encoding, packed_size(h, w, bits))
        code_map = cls(indices=unpack_indices(packed, bits, h, w), bits=bits, **meta)
        code_map.validate()
        return code_map

    def content_hash(self) -> str:
        """sha256 hex of all fields; resolution as float32 like the wire, so it survives CDR."""
        self.validate()
        meta = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "indices"}
        meta.update(bits=int(self.bits), stamp_ns=int(self.stamp_ns),
                    shape=[self.height, self.width], resolution=float(np.float32(self.resolution)),
                    origin=[float(v) for v in self.origin],
                    pose=[float(v) for v in (*self.pose.position, *self.pose.orientation)])
        digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
        digest.update(np.ascontiguousarray(self.indices, np.uint8).tobytes())
        return digest.hexdigest()


def codebook_hash(weights: np.ndarray) -> str:
    """First 16 hex chars of sha256 over shape + float32 little-endian codebook weights."""
    a = np.ascontiguousarray(np.asarray(weights, dtype="<f4"))
    digest = hashlib.sha256(np.asarray([a.ndim, *a.shape], dtype="<u8").tobytes())
    digest.update(a.tobytes())
    return digest.hexdigest()[:16]
