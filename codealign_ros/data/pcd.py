"""PCD v0.7 point clouds (the OPV2V LiDAR format) without open3d.

`read_pcd` handles DATA ascii and binary with any field layout and returns (N, 4) float32
[x, y, z, intensity] (intensity zeros when absent, extra fields such as rgb or ring ignored,
NaN points kept). OPV2V's files (written by open3d) have no intensity field: OpenCDA stored
the intensity as the red channel of the packed `rgb` field, which `rgb_intensity=True`
decodes (r / 255, as OpenCOOD's `pcd_to_np`). `write_pcd` writes x y z intensity float32.
`read_pcd_cached` keeps a binary copy (.npy beside the .pcd, keyed by the file's size and
modification time) so that an ASCII cloud is parsed once.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from codealign_ros.data.types import DatasetError

_REQUIRED = ("FIELDS", "SIZE", "TYPE", "WIDTH", "HEIGHT", "POINTS", "DATA")
_SIZES = {"F": (4, 8), "I": (1, 2, 4, 8), "U": (1, 2, 4, 8)}
_KINDS = {"F": "f", "I": "i", "U": "u"}
_CONVERT_HINT = ("convert it to binary first, e.g. `pcl_convert_pcd_ascii_binary in.pcd out.pcd 1` "
                 "(PCL) or open3d's write_point_cloud(out, read_point_cloud(in), compressed=False)")


def _split_header(path: Path, raw: bytes) -> tuple[dict[str, list[str]], int]:
    """Header entries (key -> values) up to the DATA line, and the offset of the data."""
    header: dict[str, list[str]] = {}
    pos = 0
    while pos < len(raw):
        end = raw.find(b"\n", pos)
        end = len(raw) if end < 0 else end
        line = raw[pos:end].decode("ascii", errors="replace").strip()
        pos = end + 1
        if not line or line.startswith("#"):
            continue
        key, *values = line.split()
        header[key.upper()] = values
        if key.upper() == "DATA":
            return header, pos
    raise DatasetError(path, "PCD header has no DATA line")


def _layout(path: Path, header: dict[str, list[str]]) -> tuple[list[str], np.dtype, int]:
    """Validated (field names, packed little-endian record dtype, point count) of a header."""
    missing = [key for key in _REQUIRED if key not in header]
    if missing:
        raise DatasetError(path, f"PCD header lacks {', '.join(missing)}")
    fields, types = header["FIELDS"], [t.upper() for t in header["TYPE"]]
    try:
        sizes = [int(v) for v in header["SIZE"]]
        counts = [int(v) for v in header.get("COUNT", ["1"] * len(fields))]
        width, height, points = (int(header[k][0]) for k in ("WIDTH", "HEIGHT", "POINTS"))
    except (ValueError, IndexError):
        raise DatasetError(path, "PCD header has a non-integer SIZE, COUNT, WIDTH, HEIGHT "
                                 "or POINTS") from None
    if not fields or not len(fields) == len(sizes) == len(types) == len(counts):
        raise DatasetError(path, f"PCD header has {len(fields)} FIELDS but {len(sizes)} SIZE, "
                                 f"{len(types)} TYPE and {len(counts)} COUNT entries")
    bad = [f for f, t, s, c in zip(fields, types, sizes, counts)
           if s not in _SIZES.get(t, ()) or c < 1]
    if bad:
        raise DatasetError(path, f"PCD fields {bad} have an unsupported TYPE/SIZE/COUNT")
    if points != width * height or points < 0:
        raise DatasetError(path, f"PCD POINTS {points} != WIDTH {width} * HEIGHT {height}")
    absent = [axis for axis in "xyz" if axis not in fields]
    if absent:
        raise DatasetError(path, f"PCD has no {'/'.join(absent)} field (FIELDS {' '.join(fields)})")
    formats = [(f"<{_KINDS[t]}{s}", (c,)) if c > 1 else f"<{_KINDS[t]}{s}"
               for t, s, c in zip(types, sizes, counts)]
    dtype = np.dtype({"names": [f"f{i}" for i in range(len(fields))], "formats": formats})
    return fields, dtype, points


def _parse_ascii(path: Path, data: bytes, dtype: np.dtype, points: int) -> np.ndarray:
    """Rows of the ascii body as a (points,) record array of `dtype`."""
    columns = sum(int(np.prod(dtype[name].shape)) for name in dtype.names)
    if points == 0 and not data.strip():
        return np.zeros(0, dtype)
    try:
        values = np.loadtxt(io.BytesIO(data), dtype=np.float64, ndmin=2, comments=None)
    except ValueError as err:
        raise DatasetError(path, f"PCD ascii data is malformed: {err}") from None
    if values.shape[1] != columns:
        raise DatasetError(path, f"PCD ascii rows have {values.shape[1]} values, the header "
                                 f"declares {columns}")
    if values.shape[0] != points:
        raise DatasetError(path, f"PCD ascii data has {values.shape[0]} rows, POINTS says {points}")
    out = np.zeros(points, dtype)
    start = 0
    for name in dtype.names:
        width = int(np.prod(dtype[name].shape))
        out[name] = values[:, start:start + width].reshape(out[name].shape)
        start += width
    return out


def read_pcd(path: str | Path, rgb_intensity: bool = False) -> np.ndarray:
    """(N, 4) float32 [x, y, z, intensity] of a PCD v0.7 file (DATA ascii or binary).

    rgb_intensity: without an intensity field, take red / 255 of a packed rgb/rgba field.
    Raises DatasetError naming the file for anything missing, malformed or unsupported.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DatasetError(path, f"cannot read PCD file ({err.strerror or err})") from None
    header, offset = _split_header(path, raw)
    fields, dtype, points = _layout(path, header)
    mode = (header["DATA"] or [""])[0].lower()
    if mode == "binary_compressed":
        raise DatasetError(path, f"PCD DATA binary_compressed is unsupported; {_CONVERT_HINT}")
    if mode == "ascii":
        records = _parse_ascii(path, raw[offset:], dtype, points)
    elif mode == "binary":
        need = points * dtype.itemsize
        if len(raw) - offset < need:
            raise DatasetError(path, f"PCD binary data is truncated: {len(raw) - offset} bytes, "
                                     f"{points} points of {dtype.itemsize} bytes need {need}")
        records = np.frombuffer(raw, dtype, count=points, offset=offset)
    else:
        raise DatasetError(path, f"PCD DATA {mode!r} is not ascii, binary or binary_compressed")
    def column(name: str) -> np.ndarray:  # first component of a field
        values = records[f"f{fields.index(name)}"]
        return values[:, 0] if values.ndim > 1 else values

    out = np.zeros((points, 4), np.float32)
    for col, name in enumerate(("x", "y", "z", "intensity")):
        if name in fields:
            out[:, col] = column(name)
    packed = next((f for f in ("rgb", "rgba") if f in fields), None)
    if rgb_intensity and packed and "intensity" not in fields:
        rgb = column(packed)
        bits = rgb.astype(np.float32).view(np.uint32) if rgb.dtype.kind == "f" \
            else rgb.astype(np.uint32)
        out[:, 3] = ((bits >> 16) & 0xFF) / np.float32(255)
    return out


def _cache_path(path: Path, rgb_intensity: bool) -> Path:
    st = path.stat()
    return path.with_name(f".{path.name}.{st.st_size}-{st.st_mtime_ns}"
                          f"{'-rgb' if rgb_intensity else ''}.npy")


def read_pcd_cached(path: str | Path, rgb_intensity: bool = False) -> np.ndarray:
    """`read_pcd`, through a hidden binary cache `.<name>.<size>-<mtime_ns>.npy` beside the
    file: written on the first read (older caches of the file removed), used while the file's
    size and mtime match; an unwritable directory just skips the cache."""
    path = Path(path)
    try:
        cache = _cache_path(path, rgb_intensity)
    except OSError:
        return read_pcd(path, rgb_intensity)  # read_pcd names the missing file
    if cache.exists():
        try:
            return np.load(cache)
        except (OSError, ValueError):
            pass  # a torn cache file: parse again
    points = read_pcd(path, rgb_intensity)
    try:
        for old in path.parent.glob(f".{path.name}.*.npy"):
            old.unlink(missing_ok=True)
        tmp = cache.with_name(cache.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, points)
        tmp.replace(cache)
    except OSError:
        pass
    return points


def write_pcd(path: str | Path, points: np.ndarray, binary: bool = False) -> None:
    """Write (N, >=3) points as PCD v0.7 float32 x y z intensity (intensity 0 if absent);
    ascii values carry 4 decimals."""
    pts = np.asarray(points, np.float32)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f"points must be (N, >=3), got {pts.shape}")
    xyzi = np.zeros((len(pts), 4), np.float32)
    xyzi[:, :min(4, pts.shape[1])] = pts[:, :4]
    mode = "binary" if binary else "ascii"
    header = ("# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS x y z intensity\n"
              "SIZE 4 4 4 4\nTYPE F F F F\nCOUNT 1 1 1 1\n"
              f"WIDTH {len(xyzi)}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {len(xyzi)}\n"
              f"DATA {mode}\n").encode("ascii")
    if binary:
        body = xyzi.astype("<f4").tobytes()
    else:  # one C-level %-format of the whole cloud: ~3x faster than np.savetxt
        rows = "%.4f %.4f %.4f %.4f\n" * len(xyzi)
        body = (rows % tuple(xyzi.ravel().tolist())).encode("ascii")
    Path(path).write_bytes(header + body)
