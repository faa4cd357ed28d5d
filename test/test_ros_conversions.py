"""PointCloud2 / Image conversions on real sensor_msgs messages, checked against
per-point ``struct`` reference decoders written here."""
from __future__ import annotations

import array
import dataclasses
import importlib.util
import math
import struct
import sys
from collections.abc import Callable

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sensor_msgs.msg import Image, PointCloud2, PointField

from codealign_ros.ros import image as image_module
from codealign_ros.ros import pointcloud as pointcloud_module
from codealign_ros.ros.errors import MalformedMessageError
from codealign_ros.ros.image import SUPPORTED_ENCODINGS, image_to_rgb, rgb_to_image
from codealign_ros.ros.pointcloud import pointcloud2_to_xyzi, xyzi_to_pointcloud2

F32, F64, U8, U16 = PointField.FLOAT32, PointField.FLOAT64, PointField.UINT8, PointField.UINT16
STRUCT_CODES = {PointField.INT8: "b", PointField.UINT8: "B", PointField.INT16: "h",
                PointField.UINT16: "H", PointField.INT32: "i", PointField.UINT32: "I",
                PointField.FLOAT32: "f", PointField.FLOAT64: "d"}
GARBAGE = 0xA5  # fills padding bytes, so decoding any of them shows up
XYZI = ("x", "y", "z", "intensity")


# --------------------------------------------------------------------------- point clouds

@dataclasses.dataclass(frozen=True)
class Layout:
    fields: tuple[tuple[str, int, int], ...]  # (name, offset, datatype)
    point_step: int
    big_endian: bool = False
    height: int = 1
    row_padding: int = 0


XYZ32 = (("x", 0, F32), ("y", 4, F32), ("z", 8, F32))
SHUFFLED = (("intensity", 24, F32), ("z", 4, F32), ("ring", 28, U16), ("x", 12, F32),
            ("y", 16, F32))
XYZ64 = (("x", 0, F64), ("y", 8, F64), ("z", 16, F64), ("intensity", 24, F32))
LAYOUTS = {
    "shuffled_padded": Layout(SHUFFLED, 32),
    "intensity_uint8": Layout(XYZ32 + (("intensity", 12, U8),), 16),
    "intensity_uint16": Layout(XYZ32 + (("intensity", 12, U16),), 16),
    "intensity_float64": Layout(XYZ32 + (("intensity", 16, F64),), 24),
    "xyz_float64": Layout(XYZ64, 32),
    "big_endian": Layout(SHUFFLED, 32, big_endian=True),
    "big_endian_xyz_float64": Layout(XYZ64, 32, big_endian=True),
    "organized_row_padding": Layout(XYZ32 + (("intensity", 16, U16),), 20, height=2,
                                    row_padding=12),
    "no_intensity": Layout(XYZ32, 12),
}


def _field_offset(msg: PointCloud2, name: str) -> tuple[str, int]:
    field = next(f for f in msg.fields if f.name == name)
    return (">" if msg.is_bigendian else "<") + STRUCT_CODES[field.datatype], field.offset


def set_point_value(msg: PointCloud2, row: int, col: int, name: str, value: float) -> None:
    code, offset = _field_offset(msg, name)
    struct.pack_into(code, msg.data, row * msg.row_step + col * msg.point_step + offset, value)


def build_cloud(layout: Layout, width: int = 7, seed: int = 0) -> PointCloud2:
    rng = np.random.default_rng(seed)
    msg = PointCloud2(
        height=layout.height, width=width, is_bigendian=layout.big_endian,
        point_step=layout.point_step, row_step=width * layout.point_step + layout.row_padding,
        is_dense=False, fields=[PointField(name=n, offset=o, datatype=d, count=1)
                                for n, o, d in layout.fields])
    msg.data = array.array("B", bytes([GARBAGE]) * (msg.row_step * msg.height))
    for name, _, datatype in layout.fields:
        shape = (layout.height, width)
        values = (rng.integers(0, 256 if datatype == U8 else 65536, shape)
                  if datatype in (U8, U16) else rng.normal(0.0, 50.0, shape))
        for (row, col), value in np.ndenumerate(values):
            set_point_value(msg, row, col, name, value.item())
    return msg


def reference_xyzi(msg: PointCloud2, skip_nans: bool = True) -> np.ndarray:
    names = {f.name for f in msg.fields}
    points = []
    for row in range(msg.height):
        for col in range(msg.width):
            base = row * msg.row_step + col * msg.point_step
            point = []
            for name in XYZI:
                if name not in names:
                    point.append(0.0)
                    continue
                code, offset = _field_offset(msg, name)
                point.append(struct.unpack_from(code, msg.data, base + offset)[0])
            if skip_nans and not all(math.isfinite(v) for v in point[:3]):
                continue
            points.append(point)
    return np.array(points, dtype=np.float32).reshape(-1, 4)


@given(hnp.arrays(np.float32, st.tuples(st.integers(0, 40), st.just(4)),
                  elements=st.floats(width=32)))
def test_xyzi_round_trip_is_exact(points: np.ndarray) -> None:
    msg = xyzi_to_pointcloud2(points, "lidar")
    finite = np.isfinite(points[:, :3]).all(axis=1)
    assert msg.is_dense == bool(finite.all())
    kept = pointcloud2_to_xyzi(msg, skip_nans=False)
    assert kept.dtype == np.float32 and kept.tobytes() == points.tobytes()
    assert pointcloud2_to_xyzi(msg).tobytes() == points[finite].tobytes()


def test_xyzi_to_pointcloud2_layout() -> None:
    msg = xyzi_to_pointcloud2(np.zeros((3, 4)), "cav/lidar", Time(sec=5, nanosec=7))
    assert (msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec) == (
        "cav/lidar", 5, 7)
    assert [(f.name, f.offset, f.datatype) for f in msg.fields] == [
        (name, 4 * i, F32) for i, name in enumerate(XYZI)]
    assert (msg.height, msg.width, msg.point_step, msg.row_step, len(msg.data)) == (
        1, 3, 16, 48, 48)
    with pytest.raises(ValueError, match="N, 4"):
        xyzi_to_pointcloud2(np.zeros((3, 3)), "lidar")


@pytest.mark.parametrize("name", LAYOUTS)
def test_decodes_like_reference(name: str) -> None:
    msg = build_cloud(LAYOUTS[name])
    before = bytes(msg.data)
    xyzi = pointcloud2_to_xyzi(msg)
    assert xyzi.dtype == np.float32 and xyzi.shape == (msg.width * msg.height, 4)
    np.testing.assert_array_equal(xyzi, reference_xyzi(msg))
    assert bytes(msg.data) == before  # the message is left untouched


def test_missing_intensity_is_zero() -> None:
    xyzi = pointcloud2_to_xyzi(build_cloud(LAYOUTS["no_intensity"]))
    assert len(xyzi) == 7 and not xyzi[:, 3].any() and xyzi[:, :3].any()


def test_non_finite_coordinates_skipped_or_kept() -> None:
    msg = build_cloud(Layout(XYZ32 + (("intensity", 12, F32),), 16, height=2, row_padding=4))
    set_point_value(msg, 0, 1, "x", math.nan)
    set_point_value(msg, 1, 3, "z", -math.inf)
    set_point_value(msg, 1, 5, "intensity", math.nan)  # not a coordinate: the row stays
    kept = pointcloud2_to_xyzi(msg, skip_nans=False)
    skipped = pointcloud2_to_xyzi(msg)
    assert (len(kept), len(skipped)) == (14, 12)
    np.testing.assert_array_equal(kept, reference_xyzi(msg, skip_nans=False))
    np.testing.assert_array_equal(skipped, reference_xyzi(msg))
    assert np.isnan(skipped[:, 3]).sum() == 1


@pytest.mark.parametrize("msg", [PointCloud2(), xyzi_to_pointcloud2(np.zeros((0, 4)), "l"),
                                 PointCloud2(height=3, width=0, point_step=16)])
def test_empty_cloud_gives_empty_array(msg: PointCloud2) -> None:
    xyzi = pointcloud2_to_xyzi(msg)
    assert xyzi.shape == (0, 4) and xyzi.dtype == np.float32


def _set(target: str, attr: str, value: object) -> Callable[[PointCloud2], None]:
    """A mutation setting msg.<attr> (target "msg") or msg.fields[i].<attr> (target "i")."""
    return lambda msg: setattr(msg if target == "msg" else msg.fields[int(target)], attr, value)


CLOUD_REJECTIONS = {  # applied to the intensity_uint8 layout: x@0 y@4 z@8 intensity@12 (u8)
    "missing_x": (lambda msg: msg.fields.pop(0), "fields"),
    "duplicate_name": (_set("1", "name", "x"), "fields"),
    "x_count_3": (_set("0", "count", 3), "fields"),
    "unknown_datatype": (_set("3", "datatype", 9), "datatype"),
    "unknown_datatype_0": (_set("2", "datatype", 0), "datatype"),
    "integer_x": (_set("0", "datatype", PointField.INT32), "datatype"),
    "int32_intensity": (_set("3", "datatype", PointField.INT32), "datatype"),
    "field_beyond_point_step": (_set("3", "offset", 16), "point_step"),
    "zero_point_step": (_set("msg", "point_step", 0), "point_step"),
    "row_step_too_small": (_set("msg", "row_step", 7 * 16 - 1), "point_step"),
    "data_one_byte_short": (lambda msg: msg.data.pop(), "data_size"),
    "data_empty": (_set("msg", "data", array.array("B")), "data_size"),
    "height_larger_than_data": (_set("msg", "height", 2), "data_size"),
}


@pytest.mark.parametrize("case", CLOUD_REJECTIONS)
def test_malformed_cloud_rejected(case: str) -> None:
    mutate, reason = CLOUD_REJECTIONS[case]
    msg = build_cloud(LAYOUTS["intensity_uint8"])
    mutate(msg)
    with pytest.raises(MalformedMessageError) as raised:
        pointcloud2_to_xyzi(msg)
    assert raised.value.reason == reason and str(raised.value)


def _perturb(msg: PointCloud2, target: str, delta: int) -> None:
    """Shift a size by ``delta`` or rewrite one attribute of the field picked by ``delta``."""
    if target == "data":
        raw = bytes(msg.data)
        msg.data = array.array("B", raw[:max(0, len(raw) + delta)] + bytes(max(0, delta)))
    elif target in ("point_step", "row_step", "height", "width"):
        setattr(msg, target, max(0, getattr(msg, target) + delta))
    else:
        field = msg.fields[abs(delta) % len(msg.fields)]
        setattr(field, target, {"offset": max(0, field.offset + delta),
                                "datatype": abs(delta) % 11, "count": abs(delta) % 3,
                                "name": (XYZI + ("",))[abs(delta) % 5]}[target])


@given(st.sampled_from(list(LAYOUTS)), st.lists(st.tuples(
    st.sampled_from(["data", "point_step", "row_step", "height", "width", "offset", "datatype",
                     "count", "name"]), st.integers(-9, 9)), max_size=3))
def test_perturbed_layouts_decode_or_raise_malformed(layout: str,
                                                     changes: list[tuple[str, int]]) -> None:
    msg = build_cloud(LAYOUTS[layout], width=3)
    for target, delta in changes:
        _perturb(msg, target, delta)
    try:
        xyzi = pointcloud2_to_xyzi(msg, skip_nans=False)
    except MalformedMessageError:
        return
    assert xyzi.shape == (msg.width * msg.height, 4) and xyzi.dtype == np.float32


# --------------------------------------------------------------------------------- images

def build_image(rgb: np.ndarray, encoding: str, padding: int) -> Image:
    """An image storing ``rgb`` (mono8: its red channel) with garbage row padding."""
    stored = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "mono8": rgb[..., :1]}[encoding]
    height, width, channels = stored.shape
    step = width * channels + padding
    data = bytearray([GARBAGE]) * (step * height)
    for row in range(height):
        data[row * step:row * step + width * channels] = stored[row].tobytes()
    msg = Image(height=height, width=width, encoding=encoding, step=step)
    msg.data = array.array("B", data)
    return msg


def reference_rgb(msg: Image) -> np.ndarray:
    channels = 1 if msg.encoding == "mono8" else 3
    rgb = np.zeros((msg.height, msg.width, 3), dtype=np.uint8)
    for row in range(msg.height):
        for col in range(msg.width):
            start = row * msg.step + col * channels
            pixel = list(msg.data[start:start + channels])
            rgb[row, col] = pixel * 3 if channels == 1 else pixel[::-1] if (
                msg.encoding == "bgr8") else pixel
    return rgb


def _random_rgb(height: int = 4, width: int = 5) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("padding", [0, 3])
@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_image_decodes_like_reference(encoding: str, padding: int) -> None:
    rgb = _random_rgb()
    msg = build_image(rgb, encoding, padding)
    decoded = image_to_rgb(msg)
    expected = np.repeat(rgb[..., :1], 3, axis=2) if encoding == "mono8" else rgb
    assert decoded.dtype == np.uint8 and decoded.shape == rgb.shape
    np.testing.assert_array_equal(decoded, reference_rgb(msg))
    np.testing.assert_array_equal(decoded, expected)
    assert not np.shares_memory(decoded, np.frombuffer(msg.data, dtype=np.uint8))


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_rgb_to_image_round_trip(encoding: str) -> None:
    rgb = _random_rgb()
    source = rgb[..., 0] if encoding == "mono8" else rgb
    msg = rgb_to_image(source, "cam", Time(sec=3), encoding=encoding)
    channels = 1 if encoding == "mono8" else 3
    assert (msg.header.frame_id, msg.header.stamp.sec, msg.encoding, msg.step) == (
        "cam", 3, encoding, 5 * channels)
    np.testing.assert_array_equal(image_to_rgb(msg), reference_rgb(msg))
    np.testing.assert_array_equal(
        image_to_rgb(msg), np.repeat(source[..., None], 3, axis=2) if channels == 1 else rgb)


@pytest.mark.parametrize(("array_in", "encoding"), [
    (np.zeros((2, 2, 3), np.uint8), "rgba8"), (np.zeros((2, 2), np.uint8), "rgb8"),
    (np.zeros((2, 2, 3), np.uint8), "mono8"), (np.zeros((2, 2, 3), np.float32), "rgb8")])
def test_rgb_to_image_rejects_bad_input(array_in: np.ndarray, encoding: str) -> None:
    with pytest.raises(ValueError):
        rgb_to_image(array_in, "cam", encoding=encoding)


IMAGE_REJECTIONS = {  # applied to a 4x5 rgb8 image with 3 bytes of row padding (step 18)
    **{f"encoding_{e or 'empty'}": (_set("msg", "encoding", e), "encoding")
       for e in ("rgba8", "16UC1", "bayer_rggb8", "")},
    "zero_height": (_set("msg", "height", 0), "dimensions"),
    "zero_width": (_set("msg", "width", 0), "dimensions"),
    "step_too_small": (_set("msg", "step", 5 * 3 - 1), "dimensions"),
    "data_one_byte_short": (lambda msg: msg.data.pop(), "data_size"),
    "height_larger_than_data": (_set("msg", "height", 5), "data_size"),
}


@pytest.mark.parametrize("case", IMAGE_REJECTIONS)
def test_malformed_image_rejected(case: str) -> None:
    mutate, reason = IMAGE_REJECTIONS[case]
    msg = build_image(_random_rgb(), "rgb8", 3)
    mutate(msg)
    with pytest.raises(MalformedMessageError) as raised:
        image_to_rgb(msg)
    assert raised.value.reason == reason
    if reason == "encoding":
        assert ", ".join(SUPPORTED_ENCODINGS) in str(raised.value)


# ---------------------------------------------------------------------- optional packages

@pytest.mark.parametrize(("module", "flag", "package"), [
    (pointcloud_module, "HAVE_SENSOR_MSGS_PY", "sensor_msgs_py"),
    (image_module, "HAVE_CV_BRIDGE", "cv_bridge")])
def test_own_decoders_used_without_optional_packages(module: object, flag: str,
                                                     package: str) -> None:
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed")
    assert getattr(module, flag) is False and package not in sys.modules
    points = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(pointcloud2_to_xyzi(xyzi_to_pointcloud2(points, "l")), points)
    rgb = _random_rgb()
    np.testing.assert_array_equal(image_to_rgb(rgb_to_image(rgb, "cam", encoding="bgr8")), rgb)
