"""Code maps as images (issue 13, point 4): the palette, the orientation, the monitor's topic."""
from __future__ import annotations

import time

import numpy as np
import pytest

from codealign_ros.core.codemap_image import colorize, palette, upscale


@pytest.mark.parametrize("codes", [4, 16, 64])
def test_every_code_has_its_own_fixed_colour(codes: int) -> None:
    colours = palette(codes)
    assert colours.shape == (codes, 3) and colours.dtype == np.uint8
    assert len({tuple(c) for c in colours}) == codes
    np.testing.assert_array_equal(palette(4), palette(16)[:4])  # fixed per index


def test_image_is_top_view_x_right_y_up() -> None:
    idx = np.zeros((3, 4), np.uint8)
    idx[0, 3] = 5  # row 0 = lowest y, column 3 = highest x
    rgb = colorize(idx, 4)
    assert rgb.shape == (3, 4, 3)
    np.testing.assert_array_equal(rgb[2, 3], palette(16)[5])  # bottom right
    np.testing.assert_array_equal(rgb[0, 0], palette(16)[0])
    assert upscale(rgb, 3).shape == (9, 12, 3)


def test_bad_indices_are_refused() -> None:
    with pytest.raises(ValueError):
        colorize(np.full((2, 2), 16, np.uint8), 4)
    with pytest.raises(ValueError):
        colorize(np.zeros(4, np.uint8), 4)
    with pytest.raises(ValueError):
        palette(1 << 8)


@pytest.mark.dds
def test_monitor_publishes_each_map_as_an_image(ros_domain: int) -> None:
    """codemap_monitor publish_images:=true -> an rgb8 image per map on the agent's topic,
    in the map's grid frame at its stamp, pixels = colorize(indices)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image

    from codealign_msgs.msg import CodeMap as CodeMapMsg
    from codealign_ros.config import topic
    from codealign_ros.core.codemap import CodeMap, Encoding, GridPose
    from codealign_ros.core.codemap_samples import realistic_code_map
    from codealign_ros.nodes.codemap_monitor import CodeMapMonitor
    from codealign_ros.ros.codemap_msg import codemap_to_msg
    from codealign_ros.ros.qos import qos_profile

    indices = realistic_code_map(32, 48, 4, seed=1)
    code_map = CodeMap(indices=indices, bits=4, agent_id="cav_7", modality="m1",
                       code_space="g1", codebook_hash="0123456789abcdef",
                       stamp_ns=5_000_000_123, frame_id="cav_7/lidar", resolution=0.8,
                       origin=(-19.2, -12.8, 0.0), pose=GridPose())
    rclpy.init(args=["--ros-args", "-p", "publish_images:=true", "-p", "report:=false"])
    try:
        monitor, probe = CodeMapMonitor(), Node("image_probe")
        images: list[Image] = []
        probe.create_subscription(Image, topic("codemap_image", agent="cav_7"), images.append,
                                  qos_profile("output"))
        pub = probe.create_publisher(CodeMapMsg, topic("codemap"), qos_profile("codemap"))
        executor = SingleThreadedExecutor()
        executor.add_node(monitor)
        executor.add_node(probe)
        deadline = time.monotonic() + 30.0
        while not images and time.monotonic() < deadline:
            pub.publish(codemap_to_msg(code_map, Encoding.ZSTD))
            for _ in range(5):
                executor.spin_once(timeout_sec=0.05)
        assert images, "no code-map image arrived"
        img = images[-1]
        assert (img.encoding, img.height, img.width, img.header.frame_id) == \
            ("rgb8", 32, 48, "cav_7/lidar")
        assert img.header.stamp.sec * 10**9 + img.header.stamp.nanosec == 5_000_000_123
        pixels = np.frombuffer(bytes(img.data), np.uint8).reshape(32, 48, 3)
        np.testing.assert_array_equal(pixels, colorize(indices, 4))
    finally:
        rclpy.shutdown()
