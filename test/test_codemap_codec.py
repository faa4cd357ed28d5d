"""Tests of the ROS-free code-map codec (codealign_ros.core.codemap)."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
import tracemalloc
import zlib
from typing import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codealign_ros.core import codemap as cm
from codealign_ros.core.codemap import (
    MAX_CELLS, REASONS, CodeMap, CodeMapError, Encoding, GridPose, codebook_hash, compress,
    decompress, pack_indices, packed_size, unpack_indices)
from codealign_ros.core.codemap_samples import realistic_code_map

SETTINGS = settings(max_examples=60, deadline=None)
META = dict(agent_id="cav_641", modality="m1", code_space="g1", codebook_hash="0123456789abcdef",
            stamp_ns=1_700_000_000_123_456_789, frame_id="cav_641/lidar", resolution=0.4,
            origin=(-51.2, -51.2, -1.6), pose=GridPose((10.0, -2.5, 0.0), (0.0, 0.0, 0.6, 0.8)))


def ref_pack(values: np.ndarray, bits: int) -> bytes:
    """Independent reference: write every index as a bit string, pad, cut into bytes."""
    stream = "".join(format(int(v), f"0{bits}b") for v in values.ravel())
    stream += "0" * (-len(stream) % 8)
    return bytes(int(stream[i:i + 8], 2) for i in range(0, len(stream), 8))


@st.composite
def index_maps(draw: st.DrawFn, bits: st.SearchStrategy[int] = st.integers(1, 8),
               side: int = 64) -> tuple[int, np.ndarray]:
    """(bits, map): random, all-zero or all-max maps of random shape and integer dtype."""
    b = draw(bits)
    shape = (draw(st.integers(1, side)), draw(st.integers(1, side)))
    fill = draw(st.sampled_from(["random", "zero", "max"]))
    dtype = draw(st.sampled_from([np.uint8, np.int16, np.int64, np.uint32]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    a = {"random": lambda: rng.integers(0, 1 << b, shape), "zero": lambda: np.zeros(shape),
         "max": lambda: np.full(shape, (1 << b) - 1)}[fill]()
    return b, a.astype(dtype)


def make_map(indices: np.ndarray, bits: int = 4, **changes: object) -> CodeMap:
    return CodeMap(indices=indices, bits=bits, **{**META, **changes})  # type: ignore[arg-type]


# --- bit packing ---------------------------------------------------------------------------

@SETTINGS
@given(index_maps())
def test_pack_unpack_round_trip_matches_reference(case: tuple[int, np.ndarray]) -> None:
    bits, a = case
    packed = pack_indices(a, bits)
    assert len(packed) == packed_size(*a.shape, bits)
    assert packed == ref_pack(a, bits)
    out = unpack_indices(packed, bits, *a.shape)
    assert out.dtype == np.uint8 and out.shape == a.shape
    np.testing.assert_array_equal(out, a)


@SETTINGS
@given(index_maps(bits=st.sampled_from([1, 2, 4, 8])))
def test_general_path_equals_fast_paths(case: tuple[int, np.ndarray]) -> None:
    bits, a = case
    flat = a.astype(np.uint8).ravel()
    general = cm._pack_general(flat, bits)
    assert pack_indices(a, bits) == general == ref_pack(a, bits)
    buf = np.frombuffer(general, np.uint8)
    np.testing.assert_array_equal(cm._unpack_general(buf, bits, flat.size),
                                  unpack_indices(general, bits, *a.shape).ravel())


@pytest.mark.parametrize("bits, indices, expected", [
    (4, [[1, 2], [3, 15]], b"\x12\x3f"),
    (4, [[1, 2, 3]], b"\x12\x30"),               # odd count: low nibble of the last byte is 0
    (3, [[5, 3, 7]], b"\xaf\x80"),               # 101 011 111 -> 10101111 1(0000000)
    (5, [[31, 1]], b"\xf8\x40"),                 # 11111 00001 -> 11111000 01(000000)
    (1, [[1, 0, 1, 1, 0, 0, 0, 1, 1]], b"\xb1\x80"),
    (2, [[3, 0], [1, 2]], b"\xc6"),              # 11 00 01 10
    (8, [[0, 255]], b"\x00\xff"),
])
def test_bit_layout_is_msb_first_row_major(bits: int, indices: list[list[int]],
                                           expected: bytes) -> None:
    a = np.array(indices)
    assert pack_indices(a, bits) == expected
    np.testing.assert_array_equal(unpack_indices(expected, bits, *a.shape), a)


def test_256_squared_4_bit_map_is_32768_bytes() -> None:
    a = realistic_code_map(256, 256, 4)
    assert packed_size(256, 256, 4) == len(pack_indices(a, 4)) == 32768
    assert packed_size(3, 3, 3) == 4 and packed_size(1, 1, 1) == 1


# --- entropy coding ------------------------------------------------------------------------

@SETTINGS
@given(index_maps(), st.sampled_from(list(Encoding)), st.sampled_from([None, 1, 9]))
def test_compress_round_trip(case: tuple[int, np.ndarray], encoding: Encoding,
                             level: int | None) -> None:
    packed = pack_indices(case[1], case[0])
    assert decompress(compress(packed, encoding, level), encoding, len(packed)) == packed


@pytest.mark.parametrize("encoding", [Encoding.ZLIB, Encoding.ZSTD])
def test_multi_block_payload_round_trips(encoding: Encoding) -> None:
    """1 MiB of incompressible data spans many zstd blocks / zlib chunks."""
    packed = pack_indices(np.random.default_rng(1).integers(0, 256, (1024, 1024)), 8)
    assert decompress(compress(packed, encoding), encoding, len(packed)) == packed


def test_missing_zstandard_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zstandard", None)  # makes `import zstandard` fail
    with pytest.raises(CodeMapError, match="pip install zstandard") as err:
        compress(b"\x00", Encoding.ZSTD)
    assert err.value.reason == "encoding"
    assert compress(b"\x01", Encoding.ZLIB)  # the others still work


@pytest.mark.parametrize("encoding", [Encoding.ZLIB, Encoding.ZSTD])
def test_decompression_bomb_is_refused_without_inflating(encoding: Encoding) -> None:
    bomb = compress(bytes(10_000_000), encoding, 9)
    assert len(bomb) < 20_000
    tracemalloc.start()
    try:
        with pytest.raises(CodeMapError) as err:
            CodeMap.from_payload(bomb, encoding, bits=4, height=16, width=16, **META)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.value.reason == "bomb" and "more than 128" in str(err.value)
    assert peak < 1_000_000


# --- every error reason --------------------------------------------------------------------

def _zlib_of(data: bytes) -> bytes:
    return zlib.compress(data)


def _zstd_of(data: bytes) -> bytes:
    return compress(data, Encoding.ZSTD)


ONE = np.ones((4, 4), np.uint8)
ERROR_CASES: list[tuple[str, str, Callable[[], object]]] = [
    ("bits", "bits 0", lambda: pack_indices(ONE, 0)),
    ("bits", "bits 9", lambda: pack_indices(ONE, 9)),
    ("bits", "bits float", lambda: unpack_indices(b"\x00", 4.0, 1, 2)),  # type: ignore[arg-type]
    ("bits", "bits bool", lambda: CodeMap.from_payload(b"\x00", 0, bits=True, height=1, width=8)),
    ("index", "index 16 at 4 bits", lambda: pack_indices(np.full((2, 2), 16), 4)),
    ("index", "index 8 at 3 bits", lambda: pack_indices(np.array([[0, 8]]), 3)),
    ("index", "negative index", lambda: pack_indices(np.array([[0, -1]]), 4)),
    ("index", "float array", lambda: pack_indices(np.zeros((2, 2)), 4)),
    ("index", "bool array", lambda: pack_indices(np.zeros((2, 2), bool), 4)),
    ("index", "map index 2 at 1 bit", lambda: make_map(ONE * 2, bits=1).payload()),
    ("shape", "1-D array", lambda: pack_indices(np.zeros(4, np.uint8), 4)),
    ("shape", "3-D array", lambda: pack_indices(np.zeros((2, 2, 2), np.uint8), 4)),
    ("shape", "empty array", lambda: pack_indices(np.zeros((0, 3), np.uint8), 4)),
    ("shape", "ragged list", lambda: pack_indices([[1, 2], [3]], 4)),  # type: ignore[arg-type]
    ("shape", "height 0", lambda: unpack_indices(b"", 4, 0, 5)),
    ("shape", "negative width", lambda: unpack_indices(b"", 4, 5, -1)),
    # h * w > MAX_CELLS is refused before `data` (None: not even bytes-like) is looked at
    ("shape", "too many cells", lambda: CodeMap.from_payload(
        None, Encoding.ZLIB, bits=1, height=4097, width=4096, **META)),  # type: ignore[arg-type]
    ("shape", "too many cells unpack", lambda: unpack_indices(None, 8, 4096, 4097)),  # type: ignore
    ("length", "one byte short", lambda: unpack_indices(bytes(7), 4, 4, 4)),
    ("length", "one byte long", lambda: unpack_indices(bytes(9), 4, 4, 4)),
    ("size", "not bytes-like", lambda: unpack_indices("abcdefgh", 4, 4, 4)),  # type: ignore
    ("length", "raw payload short", lambda: CodeMap.from_payload(
        bytes(31), Encoding.RAW, bits=4, height=8, width=8, **META)),
    ("padding", "4 bits odd cells", lambda: unpack_indices(b"\x12\x31", 4, 1, 3)),
    ("padding", "3 bits last pad bit", lambda: unpack_indices(b"\xaf\x81", 3, 1, 3)),
    ("corrupt", "garbage zlib", lambda: decompress(b"not a zlib stream", Encoding.ZLIB, 8)),
    ("corrupt", "truncated zlib", lambda: decompress(_zlib_of(bytes(range(64)))[:-3],
                                                     Encoding.ZLIB, 64)),
    ("corrupt", "zlib trailing bytes", lambda: decompress(_zlib_of(bytes(8)) + b"x",
                                                          Encoding.ZLIB, 8)),
    ("length", "zlib too short", lambda: decompress(_zlib_of(bytes(7)), Encoding.ZLIB, 8)),
    ("bomb", "zlib too long", lambda: decompress(_zlib_of(bytes(9)), Encoding.ZLIB, 8)),
    ("corrupt", "garbage zstd", lambda: decompress(b"\x28\xb5\x2f\xfd" + bytes(range(40)),
                                                   Encoding.ZSTD, 8)),
    ("corrupt", "empty zstd", lambda: decompress(b"", Encoding.ZSTD, 8)),
    ("corrupt", "truncated zstd", lambda: decompress(_zstd_of(bytes(range(200)))[:-5],
                                                     Encoding.ZSTD, 200)),
    ("corrupt", "zstd trailing garbage", lambda: decompress(_zstd_of(bytes(8)) + b"junk!",
                                                            Encoding.ZSTD, 8)),
    ("length", "zstd too short", lambda: decompress(_zstd_of(bytes(7)), Encoding.ZSTD, 8)),
    ("encoding", "compress encoding 7", lambda: compress(b"\x00", 7)),  # type: ignore[arg-type]
    ("encoding", "decompress encoding 7", lambda: decompress(b"\x00", 7, 1)),  # type: ignore
    ("encoding", "from_payload encoding 7", lambda: CodeMap.from_payload(
        bytes(8), 7, bits=4, height=4, width=4, **META)),
    ("encoding", "payload encoding 3", lambda: make_map(ONE).payload(3)),  # type: ignore[arg-type]
    ("pose", "NaN position", lambda: GridPose((float("nan"), 0.0, 0.0)).validate()),
    ("pose", "inf quaternion", lambda: GridPose(orientation=(0, 0, float("inf"), 1)).validate()),
    ("pose", "quaternion norm 2", lambda: GridPose(orientation=(0, 0, 0, 2.0)).validate()),
    ("pose", "zero quaternion", lambda: GridPose(orientation=(0, 0, 0, 0)).to_matrix()),
    ("pose", "position of 2", lambda: GridPose((1.0, 2.0)).validate()),  # type: ignore[arg-type]
    ("pose", "map with bad pose", lambda: make_map(ONE, pose=GridPose((0, 0, float("inf")))
                                                   ).validate()),
    ("pose", "NaN origin", lambda: make_map(ONE, origin=(0.0, float("nan"), 0.0)).validate()),
    ("resolution", "resolution 0", lambda: make_map(ONE, resolution=0.0).validate()),
    ("resolution", "resolution NaN", lambda: make_map(ONE, resolution=float("nan")).validate()),
    ("resolution", "resolution -0.4", lambda: make_map(ONE, resolution=-0.4).validate()),
    ("resolution", "resolution str", lambda: make_map(ONE, resolution="0.4").validate()),
    ("meta", "empty agent_id", lambda: make_map(ONE, agent_id="").validate()),
    ("meta", "empty code_space", lambda: make_map(ONE, code_space="").payload()),
    ("meta", "negative stamp", lambda: make_map(ONE, stamp_ns=-1).validate()),
    ("meta", "received empty modality", lambda: CodeMap.from_payload(
        bytes(8), Encoding.RAW, bits=4, height=4, width=4, **{**META, "modality": ""})),
]


@pytest.mark.parametrize("reason, _name, call", ERROR_CASES, ids=[c[1] for c in ERROR_CASES])
def test_invalid_input_raises_code_map_error_with_reason(reason: str, _name: str,
                                                         call: Callable[[], object]) -> None:
    with pytest.raises(CodeMapError) as err:
        call()
    assert err.value.reason == reason, str(err.value)


def test_every_reason_has_a_case() -> None:
    assert {c[0] for c in ERROR_CASES} == set(REASONS)
    with pytest.raises(ValueError, match="unknown CodeMapError reason"):
        CodeMapError("nope", "x")
    assert MAX_CELLS == 4096 * 4096


def test_messages_give_the_numbers() -> None:
    with pytest.raises(CodeMapError, match=r"needs 32768 bytes, got 32767"):
        unpack_indices(bytes(32767), 4, 256, 256)
    with pytest.raises(CodeMapError, match=r"0\.\.15 for bits=4, got values in 0\.\.16"):
        pack_indices(np.array([[0, 16]]), 4)
    with pytest.raises(CodeMapError, match=r"4097 x 4096 = 16781312 cells exceeds"):
        unpack_indices(b"", 4, 4097, 4096)
    with pytest.raises(CodeMapError, match=r"ZLIB payload of \d+ bytes decodes to 7 bytes, "
                                           r"expected 8"):
        decompress(zlib.compress(bytes(7)), Encoding.ZLIB, 8)
    with pytest.raises(CodeMapError, match=r"last 4 padding bits must be zero, last byte is 0x31"):
        unpack_indices(b"\x12\x31", 4, 1, 3)


# --- CodeMap container ---------------------------------------------------------------------

@SETTINGS
@given(index_maps(side=48), st.sampled_from(list(Encoding)))
def test_code_map_payload_round_trip_keeps_content_hash(case: tuple[int, np.ndarray],
                                                        encoding: Encoding) -> None:
    bits, a = case
    original = make_map(a, bits)
    data = original.payload(encoding)
    if encoding is Encoding.RAW:
        assert len(data) == original.raw_nbytes
    back = CodeMap.from_payload(data, int(encoding), bits=bits, height=original.height,
                                width=original.width, **META)
    np.testing.assert_array_equal(back.indices, a)
    assert back.content_hash() == original.content_hash()


def test_content_hash_sees_every_change() -> None:
    base = make_map(realistic_code_map(32, 48, 4, seed=1))
    flipped = base.indices.copy()
    flipped[31, 47] ^= 1
    changes = [dict(indices=flipped), dict(indices=base.indices.reshape(48, 32))]
    changes += [{k: v} for k, v in dict(
        agent_id="cav_642", modality="m2", code_space="g2", codebook_hash="fedcba9876543210",
        stamp_ns=META["stamp_ns"] + 1, frame_id="cav_641/base_link", resolution=0.8,
        origin=(-51.2, -51.2, -1.5), pose=GridPose((10.0, -2.5, 0.01), (0, 0, 0.6, 0.8)),
    ).items()]
    hashes = {base.content_hash()} | {dataclasses.replace(base, **c).content_hash()
                                      for c in changes}
    assert len(hashes) == len(changes) + 1
    # the wire carries resolution as float32: that rounding must not change the hash
    same = dataclasses.replace(base, resolution=float(np.float32(0.4)))
    assert same.content_hash() == base.content_hash()


def test_code_map_properties() -> None:
    m = make_map(np.zeros((3, 5), np.uint8), bits=3)
    assert (m.height, m.width, m.raw_nbytes) == (3, 5, 6)  # 45 bits


def test_grid_pose_matrix() -> None:
    np.testing.assert_array_equal(GridPose.identity().to_matrix(), np.eye(4))
    s = np.sqrt(0.5)
    t = GridPose((1.0, 2.0, 3.0), (0.0, 0.0, s, s)).to_matrix()  # yaw +90 degrees
    np.testing.assert_allclose(t @ [1.0, 0.0, 0.0, 1.0], [1.0, 3.0, 3.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(t[:3, :3] @ t[:3, :3].T, np.eye(3), atol=1e-12)
    assert t.dtype == np.float64 and t.shape == (4, 4)


def test_core_imports_without_ros_or_torch() -> None:
    code = ("import sys, codealign_ros.core.codemap; "
            "print(sorted(m for m in ('rclpy', 'torch', 'zstandard') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- codebook hash and the synthetic scene -------------------------------------------------

def test_codebook_hash() -> None:
    w64 = np.random.default_rng(0).normal(size=(16, 64))
    h = codebook_hash(w64)
    assert h == codebook_hash(w64.astype(np.float32)) == codebook_hash(w64.T.copy().T)
    assert len(h) == 16 and int(h, 16) >= 0
    changed = w64.copy()
    changed[7, 3] += 1e-3
    assert codebook_hash(changed) != h
    assert codebook_hash(w64.reshape(32, 32)) != h  # same numbers, other shape


@pytest.mark.parametrize("bits", range(1, 9))
def test_realistic_code_map_is_deterministic_and_in_range(bits: int) -> None:
    for h, w in ((1, 1), (3, 200), (17, 9), (96, 128)):
        for seed in range(6):
            a = realistic_code_map(h, w, bits, seed)
            assert a.shape == (h, w) and a.dtype == np.uint8 and int(a.max()) < 1 << bits
    a = realistic_code_map(96, 128, bits, seed=5)
    np.testing.assert_array_equal(a, realistic_code_map(96, 128, bits, seed=5))
    assert not np.array_equal(a, realistic_code_map(96, 128, bits, seed=6))


def test_realistic_code_map_compresses_and_random_does_not() -> None:
    rng = np.random.default_rng(0)
    for seed in range(3):
        scene = pack_indices(realistic_code_map(256, 256, 4, seed), 4)
        noise = pack_indices(rng.integers(0, 16, (256, 256)), 4)
        assert np.bincount(realistic_code_map(256, 256, 4, seed).ravel()).max() > 0.5 * 65536
        for encoding in (Encoding.ZLIB, Encoding.ZSTD):
            assert len(compress(scene, encoding)) < 0.5 * len(scene)
            assert len(compress(noise, encoding)) > 0.9 * len(noise)
