"""sensor_msgs/Image <-> (H, W, 3) uint8 RGB arrays for 8-bit colour and mono images.

The layout is validated before decoding, so a malformed image raises
:class:`MalformedMessageError` rather than a numpy error. Decoding uses
``cv_bridge`` when it is installed and numpy otherwise; both give identical results.
"""
from __future__ import annotations

import array

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from codealign_ros.ros.errors import MalformedMessageError

try:
    from cv_bridge import CvBridge
except ImportError:
    CvBridge = None

HAVE_CV_BRIDGE = CvBridge is not None
_BRIDGE = CvBridge() if HAVE_CV_BRIDGE else None

__all__ = ["HAVE_CV_BRIDGE", "MalformedMessageError", "SUPPORTED_ENCODINGS", "image_to_rgb",
           "rgb_to_image"]

SUPPORTED_ENCODINGS = ("rgb8", "bgr8", "mono8")
_CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1}


def _checked_channels(msg: Image) -> int:
    """Validate the image layout; return its channel count."""
    channels = _CHANNELS.get(msg.encoding)
    if channels is None:
        raise MalformedMessageError(
            "encoding", f"unsupported image encoding {msg.encoding!r}; "
            f"supported: {', '.join(SUPPORTED_ENCODINGS)}")
    if msg.height == 0 or msg.width == 0:
        raise MalformedMessageError("dimensions", f"empty image {msg.height}x{msg.width}")
    if msg.step < msg.width * channels:
        raise MalformedMessageError(
            "dimensions", f"step {msg.step} < width {msg.width} * {channels} channel(s)")
    if len(msg.data) < msg.step * msg.height:
        raise MalformedMessageError(
            "data_size", f"data has {len(msg.data)} bytes, step {msg.step} * "
            f"height {msg.height} needs {msg.step * msg.height}")
    return channels


def _decode_cv_bridge(msg: Image, pixels: np.ndarray) -> np.ndarray:
    # A private row-packed, little-endian copy: cv_bridge mishandles row padding that is
    # not a multiple of the pixel size and byte-swaps with an API numpy 2 removed.
    packed = Image(header=msg.header, height=msg.height, width=msg.width,
                   encoding=msg.encoding, is_bigendian=False, step=pixels[0].size)
    packed.data = array.array("B", pixels.tobytes())
    return _BRIDGE.imgmsg_to_cv2(packed, desired_encoding="rgb8")


def image_to_rgb(msg: Image) -> np.ndarray:
    """Decode an rgb8, bgr8 or mono8 image into a new (H, W, 3) uint8 RGB array.

    Row padding (step > width * channels) is skipped; mono8 is replicated
    into three channels.

    Raises:
        MalformedMessageError: unsupported encoding or inconsistent layout.
    """
    channels = _checked_channels(msg)
    rows = np.frombuffer(msg.data, dtype=np.uint8, count=msg.step * msg.height)
    pixels = rows.reshape(msg.height, msg.step)[:, :msg.width * channels].reshape(
        msg.height, msg.width, channels)
    if HAVE_CV_BRIDGE:
        return _decode_cv_bridge(msg, pixels)
    if channels == 1:
        return np.repeat(pixels, 3, axis=2)
    return (pixels[..., ::-1] if msg.encoding == "bgr8" else pixels).copy()


def rgb_to_image(rgb: np.ndarray, frame_id: str, stamp: Time | None = None,
                 encoding: str = "rgb8") -> Image:
    """Encode a uint8 array as an unpadded Image.

    rgb8 and bgr8 take an (H, W, 3) RGB array; mono8 takes an (H, W) array.
    """
    channels = _CHANNELS.get(encoding)
    if channels is None:
        raise ValueError(f"unsupported encoding {encoding!r}; "
                         f"supported: {', '.join(SUPPORTED_ENCODINGS)}")
    pixels = np.asarray(rgb)
    shape_ok = pixels.ndim == 2 if channels == 1 else pixels.ndim == 3 and pixels.shape[2] == 3
    if pixels.dtype != np.uint8 or not shape_ok:
        expected = "(H, W)" if channels == 1 else "(H, W, 3)"
        raise ValueError(f"{encoding} needs a uint8 {expected} array, "
                         f"got {pixels.dtype} {pixels.shape}")
    if encoding == "bgr8":
        pixels = pixels[..., ::-1]
    msg = Image(header=Header(frame_id=frame_id, stamp=stamp if stamp is not None else Time()),
                height=pixels.shape[0], width=pixels.shape[1], encoding=encoding,
                is_bigendian=False, step=pixels.shape[1] * channels)
    msg.data = array.array("B", pixels.tobytes())
    return msg
