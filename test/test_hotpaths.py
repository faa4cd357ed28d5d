"""Hot paths without copies or per-pixel Python: PointCloud2 view, image resize, ORT options."""
from __future__ import annotations

import numpy as np
import pytest

from codealign_ros.models.inputs import IMAGENET_MEAN, IMAGENET_STD, _resize_normalise


def test_common_pointcloud_layout_decodes_without_copy() -> None:
    from codealign_ros.ros.pointcloud import pointcloud2_to_xyzi, xyzi_to_pointcloud2

    pts = np.random.default_rng(0).normal(size=(500, 4)).astype(np.float32)
    msg = xyzi_to_pointcloud2(pts, "lidar")
    out = pointcloud2_to_xyzi(msg)
    np.testing.assert_array_equal(out, pts)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))
    pts[3, 1] = np.nan  # a non-finite point: filtered (then copied)
    out = pointcloud2_to_xyzi(xyzi_to_pointcloud2(pts, "lidar"))
    assert len(out) == 499 and np.isfinite(out).all()


@pytest.mark.parametrize(("shape", "size"), [((600, 800), (160, 120)), ((120, 160), (160, 120)),
                                             ((97, 131), (160, 120))])
def test_image_resize_matches_torch_antialias(shape: tuple[int, int],
                                              size: tuple[int, int]) -> None:
    torch = pytest.importorskip("torch", reason="torch not installed (reference only)")
    image = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    if x.shape[-2:] != (size[1], size[0]):
        x = torch.nn.functional.interpolate(x, size=(size[1], size[0]), mode="bilinear",
                                            align_corners=False, antialias=True)
    ref = ((x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
           / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))[0].numpy()
    got = _resize_normalise(image, size)
    assert got.shape == ref.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=5e-4)


def test_ort_session_options_do_not_spin() -> None:
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    from codealign_ros.runtime.backends import session_options

    opts = session_options(ort)
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert session_options(ort, 2).intra_op_num_threads == 2
