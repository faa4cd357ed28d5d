"""sensor_msgs/PointCloud2 <-> (N, 4) float32 [x, y, z, intensity] arrays.

Every layout field is validated before any byte is decoded, so a malformed
cloud raises :class:`MalformedMessageError` rather than a numpy error. The usual
layout (x, y, z, intensity FLOAT32, point_step 16, host byte order, no row
padding) decodes to a float32 view of the message buffer without any copy; other
layouts use ``sensor_msgs_py`` when it is installed and a structured numpy dtype
over the buffer otherwise; all give identical results.
"""
from __future__ import annotations

import array

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from codealign_ros.ros.errors import MalformedMessageError

try:
    from sensor_msgs_py import point_cloud2 as _point_cloud2
except ImportError:
    _point_cloud2 = None

HAVE_SENSOR_MSGS_PY = _point_cloud2 is not None

__all__ = ["HAVE_SENSOR_MSGS_PY", "MalformedMessageError", "pointcloud2_to_xyzi",
           "xyzi_to_pointcloud2"]

_NUMPY_CODES = {PointField.INT8: "i1", PointField.UINT8: "u1", PointField.INT16: "i2",
                PointField.UINT16: "u2", PointField.INT32: "i4", PointField.UINT32: "u4",
                PointField.FLOAT32: "f4", PointField.FLOAT64: "f8"}
_ALLOWED_TYPES = {
    "x": {PointField.FLOAT32, PointField.FLOAT64},
    "y": {PointField.FLOAT32, PointField.FLOAT64},
    "z": {PointField.FLOAT32, PointField.FLOAT64},
    "intensity": {PointField.FLOAT32, PointField.FLOAT64, PointField.UINT8, PointField.UINT16},
}
_XYZI = tuple(_ALLOWED_TYPES)


def _checked_fields(msg: PointCloud2) -> list[PointField]:
    """Validate the layout of a non-empty cloud; return its x, y, z[, intensity] fields."""
    if msg.point_step == 0:
        raise MalformedMessageError("point_step", "point_step is 0")
    by_name: dict[str, PointField] = {}
    for field in msg.fields:
        code = _NUMPY_CODES.get(field.datatype)
        if code is None:
            raise MalformedMessageError(
                "datatype", f"field {field.name!r} has unknown datatype code {field.datatype}")
        if field.name and field.name in by_name:
            raise MalformedMessageError("fields", f"duplicate field name {field.name!r}")
        end = field.offset + np.dtype(code).itemsize * max(field.count, 1)
        if end > msg.point_step:
            raise MalformedMessageError(
                "point_step", f"field {field.name!r} ends at byte {end}, "
                f"beyond point_step {msg.point_step}")
        by_name[field.name] = field
    missing = [name for name in "xyz" if name not in by_name]
    if missing:
        raise MalformedMessageError(
            "fields", f"missing coordinate field(s) {missing}; fields are {list(by_name)}")
    wanted = [by_name[name] for name in _XYZI if name in by_name]
    for field in wanted:
        if field.count > 1:
            raise MalformedMessageError(
                "fields", f"field {field.name!r} has count {field.count}, expected 1")
        if field.datatype not in _ALLOWED_TYPES[field.name]:
            allowed = sorted(_NUMPY_CODES[t] for t in _ALLOWED_TYPES[field.name])
            raise MalformedMessageError(
                "datatype", f"field {field.name!r} is {_NUMPY_CODES[field.datatype]}, "
                f"expected one of {allowed}")
    if msg.row_step < msg.width * msg.point_step:
        raise MalformedMessageError(
            "point_step", f"row_step {msg.row_step} < width {msg.width} * "
            f"point_step {msg.point_step}")
    if len(msg.data) < msg.row_step * msg.height:
        raise MalformedMessageError(
            "data_size", f"data has {len(msg.data)} bytes, row_step {msg.row_step} * "
            f"height {msg.height} needs {msg.row_step * msg.height}")
    return wanted


def _point_rows(msg: PointCloud2) -> np.ndarray:
    """The point bytes as a contiguous (height, width * point_step) array, row padding dropped."""
    data = np.frombuffer(msg.data, dtype=np.uint8, count=msg.row_step * msg.height)
    rows = data.reshape(msg.height, msg.row_step)[:, :msg.width * msg.point_step]
    return np.ascontiguousarray(rows)


def _packed_xyzi(msg: PointCloud2, fields: list[PointField],
                 rows: np.ndarray) -> np.ndarray | None:
    """(N, 4) float32 view of the buffer (no copy) when the cloud is x, y, z, intensity as
    consecutive FLOAT32 of the host byte order with point_step 16; else None."""
    native = msg.is_bigendian == (np.little_endian is False)
    layout = [(f.name, f.offset, f.datatype) for f in fields]
    want = [(n, 4 * i, PointField.FLOAT32) for i, n in enumerate(_XYZI)]
    if not native or msg.point_step != 16 or layout != want:
        return None
    return rows.reshape(-1).view(np.float32).reshape(-1, 4)


def _decode_numpy(msg: PointCloud2, fields: list[PointField], rows: np.ndarray) -> np.ndarray:
    order = ">" if msg.is_bigendian else "<"
    dtype = np.dtype({"names": [f.name for f in fields],
                      "formats": [order + _NUMPY_CODES[f.datatype] for f in fields],
                      "offsets": [f.offset for f in fields],
                      "itemsize": msg.point_step})
    return rows.view(dtype).reshape(-1)


def _decode_sensor_msgs_py(msg: PointCloud2, fields: list[PointField],
                           rows: np.ndarray) -> np.ndarray:
    # read_points ignores row_step and byte-swaps its input buffer in place, so it
    # gets a private, row-packed copy holding only the fields we read.
    packed = PointCloud2(
        height=1, width=msg.width * msg.height, is_bigendian=msg.is_bigendian,
        point_step=msg.point_step, row_step=rows.size, is_dense=False,
        fields=[PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=1)
                for f in fields])
    packed.data = array.array("B", rows.tobytes())
    return _point_cloud2.read_points(packed, field_names=[f.name for f in fields],
                                     skip_nans=False)


def pointcloud2_to_xyzi(msg: PointCloud2, skip_nans: bool = True) -> np.ndarray:
    """Decode a cloud into an (N, 4) float32 [x, y, z, intensity] array.

    Any field order, padding, organized clouds (row_step may exceed
    width * point_step) and either byte order are supported; x/y/z may be
    FLOAT32 or FLOAT64, intensity FLOAT32, FLOAT64, UINT8 or UINT16 (values cast
    as-is). A cloud without an ``intensity`` field gets zeros there. A
    ``count`` of 0 (the message default) is read as 1. An empty cloud
    (width * height == 0) gives a (0, 4) array without further checks.
    ``skip_nans`` drops rows whose x, y or z is not finite.

    Raises:
        MalformedMessageError: the layout is inconsistent or unsupported.
    """
    if msg.width * msg.height == 0:
        return np.zeros((0, 4), dtype=np.float32)
    fields = _checked_fields(msg)
    rows = _point_rows(msg)
    packed = _packed_xyzi(msg, fields, rows)
    if packed is not None:  # the common layout: a float32 view of the message buffer
        if skip_nans:
            finite = np.isfinite(packed[:, :3]).all(axis=1)
            return packed if finite.all() else packed[finite]
        return packed
    decode = _decode_sensor_msgs_py if HAVE_SENSOR_MSGS_PY else _decode_numpy
    records = decode(msg, fields, rows)
    xyzi = np.zeros((msg.width * msg.height, 4), dtype=np.float32)
    with np.errstate(over="ignore"):  # FLOAT64 beyond float32 range becomes inf
        for column, field in enumerate(fields):
            xyzi[:, column] = records[field.name]
    if skip_nans:
        xyzi = xyzi[np.isfinite(xyzi[:, :3]).all(axis=1)]
    return xyzi


def xyzi_to_pointcloud2(points: np.ndarray, frame_id: str,
                        stamp: Time | None = None) -> PointCloud2:
    """Encode an (N, 4) [x, y, z, intensity] array as an unorganized FLOAT32 cloud.

    ``is_dense`` is True when every x, y and z is finite.
    """
    xyzi = np.asarray(points)
    if xyzi.ndim != 2 or xyzi.shape[1] != 4:
        raise ValueError(f"expected an (N, 4) array, got shape {xyzi.shape}")
    xyzi = np.ascontiguousarray(xyzi, dtype="<f4")
    msg = PointCloud2(
        header=Header(frame_id=frame_id, stamp=stamp if stamp is not None else Time()),
        height=1, width=len(xyzi), is_bigendian=False, point_step=16,
        row_step=16 * len(xyzi), is_dense=bool(np.isfinite(xyzi[:, :3]).all()),
        fields=[PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                for i, name in enumerate(_XYZI)])
    msg.data = array.array("B", xyzi.tobytes())
    return msg
