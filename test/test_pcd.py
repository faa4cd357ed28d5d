"""PCD reader/writer: round trips, hand-written layouts, and errors that name the file."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from codealign_ros.data.pcd import read_pcd, write_pcd
from codealign_ros.data.types import DatasetError

XYZI = ("x y z intensity", "4 4 4 4", "F F F F")


def header(fields: str, size: str, type_: str, points: int, data: str = "ascii",
           count: str | None = None, width: int | None = None) -> str:
    """A PCD v0.7 header; width defaults to `points` (HEIGHT 1)."""
    count = count or " ".join("1" for _ in fields.split())
    return (f"# .PCD v0.7\nVERSION 0.7\nFIELDS {fields}\nSIZE {size}\nTYPE {type_}\n"
            f"COUNT {count}\nWIDTH {points if width is None else width}\nHEIGHT 1\n"
            f"VIEWPOINT 0 0 0 1 0 0 0\nPOINTS {points}\nDATA {data}\n")


def rows(values: np.ndarray) -> str:
    return "".join(" ".join(repr(float(v)) for v in row) + "\n" for row in values)


@pytest.mark.parametrize("binary", [False, True])
def test_round_trip(tmp_path: Path, binary: bool) -> None:
    pts = (np.random.default_rng(1).normal(size=(3000, 4)) * [40, 40, 2, 0.3]).astype(np.float32)
    pts[5] = [np.nan, np.nan, np.nan, 0.5]
    write_pcd(tmp_path / "a.pcd", pts, binary=binary)
    back = read_pcd(tmp_path / "a.pcd")
    assert back.dtype == np.float32 and back.shape == pts.shape
    np.testing.assert_allclose(back, pts, atol=0 if binary else 6e-5)
    assert np.isnan(back[5, :3]).all()


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(0, 50), st.just(4)),
              elements=st.floats(-1e4, 1e4, width=32)), st.booleans())
def test_round_trip_any_points(pts: np.ndarray, binary: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        write_pcd(Path(tmp) / "a.pcd", pts, binary=binary)
        np.testing.assert_allclose(read_pcd(Path(tmp) / "a.pcd"), pts, atol=0 if binary else 5e-5)


def test_xyz_only_points_get_zero_intensity(tmp_path: Path) -> None:
    xyz = np.random.default_rng(2).normal(size=(7, 3)).astype(np.float32)
    write_pcd(tmp_path / "a.pcd", xyz, binary=True)
    back = read_pcd(tmp_path / "a.pcd")
    np.testing.assert_array_equal(back[:, :3], xyz)
    assert not back[:, 3].any()


def test_ascii_x_y_z_intensity(tmp_path: Path) -> None:
    values = np.random.default_rng(3).normal(size=(5, 4)).round(3)
    (tmp_path / "a.pcd").write_text(header(*XYZI, 5) + rows(values))
    np.testing.assert_allclose(read_pcd(tmp_path / "a.pcd"), values, rtol=1e-6)


@pytest.mark.parametrize("count", ["1 1 1 1 1", "2 1 1 1 1"])
def test_ascii_reordered_fields_with_ring(tmp_path: Path, count: str) -> None:
    """intensity x y z ring; with COUNT 2 on intensity its first value counts."""
    width = 5 + count.startswith("2")
    values = np.random.default_rng(4).normal(size=(6, width)).round(3)
    values[:, -1] = np.arange(6)
    x = width - 4
    (tmp_path / "a.pcd").write_text(
        header("intensity x y z ring", "4 4 4 4 2", "F F F F U", 6, count=count) + rows(values))
    np.testing.assert_allclose(read_pcd(tmp_path / "a.pcd"), values[:, [x, x + 1, x + 2, 0]],
                               rtol=1e-6)


def test_binary_mixed_types_counts_and_padding(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    rec = np.zeros(9, [("intensity", "<u1"), ("x", "<f8"), ("rgb", "<f4"), ("y", "<f4"),
                       ("normal", "<f4", (3,)), ("z", "<f4"), ("_", "<u1", (3,))])
    rec["x"], rec["y"], rec["z"] = rng.normal(size=(3, 9)) * 20
    rec["intensity"] = rng.integers(0, 255, 9)
    text = header("intensity x rgb y normal z _", "1 8 4 4 4 4 1", "U F F F F F U", 9,
                  data="binary", count="1 1 1 1 3 1 3")
    (tmp_path / "a.pcd").write_bytes(text.encode() + rec.tobytes())
    expected = np.column_stack([rec["x"], rec["y"], rec["z"], rec["intensity"]]).astype(np.float32)
    np.testing.assert_array_equal(read_pcd(tmp_path / "a.pcd"), expected)


@pytest.mark.parametrize("binary", [False, True])
def test_open3d_rgb_intensity(tmp_path: Path, binary: bool) -> None:
    """OPV2V (open3d) stores intensity as the red byte of a packed float rgb."""
    red = np.array([0, 17, 128, 255], np.uint32)
    packed = ((red << 16) | (3 << 8) | 9).view(np.float32)
    xyz = np.arange(12, dtype=np.float32).reshape(4, 3)
    text = header("x y z rgb", "4 4 4 4", "F F F F", 4, data="binary" if binary else "ascii")
    body = (np.column_stack([xyz, packed]).astype("<f4").tobytes() if binary else
            "".join(f"{a:g} {b:g} {c:g} {p:.10g}\n" for (a, b, c), p in zip(xyz, packed)).encode())
    (tmp_path / "a.pcd").write_bytes(text.encode() + body)
    np.testing.assert_allclose(read_pcd(tmp_path / "a.pcd", rgb_intensity=True)[:, 3], red / 255)
    assert not read_pcd(tmp_path / "a.pcd")[:, 3].any()  # off by default: rgb is ignored


BAD_FILES = {
    "no DATA line": (header(*XYZI, 1).replace("DATA ascii\n", ""), "no DATA line"),
    "missing header lines": (header(*XYZI, 1).replace("TYPE F F F F\n", "") + "1 2 3 4\n",
                             "lacks TYPE"),
    "size count": (header("x y z intensity", "4 4 4", "F F F F", 1) + "1 2 3 4\n",
                   "but 3 SIZE"),
    "bad type": (header("x y z intensity", "4 4 4 4", "F F F Q", 1) + "1 2 3 4\n",
                 "unsupported TYPE"),
    "non-integer": (header(*XYZI, 1).replace("POINTS 1", "POINTS one") + "1 2 3 4\n",
                    "non-integer"),
    "points vs width": (header(*XYZI, 3, width=2) + "1 2 3 4\n" * 3, "POINTS 3 != WIDTH 2"),
    "no x": (header("a y z intensity", "4 4 4 4", "F F F F", 1) + "1 2 3 4\n", "no x field"),
    "no y z": (header("x b c intensity", "4 4 4 4", "F F F F", 1) + "1 2 3 4\n", "no y/z field"),
    "ragged row": (header(*XYZI, 3) + "1 2 3 4\n1 2 3\n1 2 3 4\n", "malformed"),
    "short rows": (header(*XYZI, 2) + "1 2 3\n1 2 3\n", "rows have 3 values"),
    "not a number": (header(*XYZI, 2) + "1 2 3 4\n1 two 3 4\n", "malformed"),
    "too few rows": (header(*XYZI, 3) + "1 2 3 4\n1 2 3 4\n", "2 rows, POINTS says 3"),
    "too many rows": (header(*XYZI, 1) + "1 2 3 4\n1 2 3 4\n", "2 rows, POINTS says 1"),
    "truncated binary": (header(*XYZI, 3, data="binary") + "\0" * 40, "truncated: 40 bytes"),
    "compressed": (header(*XYZI, 3, data="binary_compressed") + "\0" * 40,
                   "binary_compressed is unsupported.*pcl_convert_pcd_ascii_binary"),
    "unknown data": (header(*XYZI, 1, data="text") + "1 2 3 4\n", "not ascii, binary"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_malformed_file_names_file_and_problem(tmp_path: Path, case: str) -> None:
    text, problem = BAD_FILES[case]
    path = tmp_path / f"{case.replace(' ', '_')}.pcd"
    path.write_bytes(text.encode())
    with pytest.raises(DatasetError, match=problem) as err:
        read_pcd(path)
    assert err.value.path == path and str(path) in str(err.value)


def test_missing_file_names_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot read PCD") as err:
        read_pcd(tmp_path / "nope.pcd")
    assert str(tmp_path / "nope.pcd") in str(err.value)


def test_empty_cloud(tmp_path: Path) -> None:
    for binary in (False, True):
        write_pcd(tmp_path / "e.pcd", np.zeros((0, 4), np.float32), binary=binary)
        assert read_pcd(tmp_path / "e.pcd").shape == (0, 4)
