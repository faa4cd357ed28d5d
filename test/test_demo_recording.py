"""The demo's MCAP recording (issue 13, points 2 and 5), over one short run of the demo graph.

Every frame_id of every recorded message with a header (clouds, poses, markers, detections,
code maps, code-map images, ground truth) must resolve to `map` through the recorded TF at the
message's stamp, with no gap between TF samples longer than one frame period. The recording
must decode with the `mcap` + `mcap_ros2` readers (Foxglove's path) as well as with rosbags,
carry every output topic, and give the summary, the picture and the animated BEV.
"""
from __future__ import annotations

import collections
import hashlib
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from codealign_ros.config import frame, topic
from codealign_ros.core.codemap import GridPose
from codealign_ros.core.tf import TfBuffer, Transform
from codealign_ros.data.bag import FRAME_RATE_HZ
from codealign_ros.demo.recording import EVENTS_TOPIC, iter_messages, load_recording

REPO = Path(__file__).resolve().parents[1]
FRAMES = 6
RATE = 0.05  # the demo's replay speed on 2 busy cores
PERIOD_NS = int(1e9 / FRAME_RATE_HZ)
pytestmark = pytest.mark.dds


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """One 6-frame demo run in its own ROS domain (as conftest's `ros_domain` picks one)."""
    from codealign_ros.demo.runner import DemoOptions, run_demo

    out = tmp_path_factory.mktemp("demo_recording")
    domain = 1 + int(hashlib.sha256(f"{os.getpid()}:recording".encode()).hexdigest(), 16) % 100
    opts = DemoOptions(frames=FRAMES, rate=RATE, model_dir=str(REPO / "models/mini"),
                       data_dir=REPO / "data/demo", out_dir=out, domain_id=domain,
                       seconds=150.0)
    summary = run_demo(opts)
    return summary, Path(summary["recording"])


def _stamp(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _headers(msg: Any) -> Iterator[Any]:
    """Every header of a message: its own, or each marker's."""
    if hasattr(msg, "markers"):
        yield from (m.header for m in msg.markers)
    elif hasattr(msg, "header"):
        yield msg.header


def _tf_buffer(recording: Path) -> tuple[TfBuffer, dict[str, list[int]]]:
    buffer, stamps = TfBuffer(max_gap_ns=PERIOD_NS), collections.defaultdict(list)
    for name, _, msg in iter_messages(recording, {topic("tf"), topic("tf_static")}):
        for t in msg.transforms:
            tr, q = t.transform.translation, t.transform.rotation
            static = name == topic("tf_static")
            buffer.add(Transform(t.header.frame_id, t.child_frame_id, _stamp(t.header),
                                 GridPose((tr.x, tr.y, tr.z), (q.x, q.y, q.z, q.w)).to_matrix(),
                                 static=static))
            if not static:
                stamps[t.child_frame_id].append(_stamp(t.header))
    return buffer, stamps


def test_every_frame_id_resolves_to_map(demo: tuple[dict[str, Any], Path]) -> None:
    summary, recording = demo
    buffer, tf_stamps = _tf_buffer(recording)
    agents = list(summary["agents"])
    for agent in agents:  # a TF sample every frame period, no gap
        stamps = sorted(set(tf_stamps[frame("grid", agent=agent)]))
        assert len(stamps) >= FRAMES, (agent, stamps)
        assert max(np.diff(stamps)) <= PERIOD_NS, (agent, np.diff(stamps))
    skip = {topic("tf"), topic("tf_static"), EVENTS_TOPIC, topic("diagnostics")}
    checked: collections.Counter = collections.Counter()
    failures = []
    for name, _, msg in iter_messages(recording):
        if name in skip or name.endswith("/diagnostics"):
            continue
        for header in _headers(msg):
            if not header.frame_id:  # Float64 timings etc. carry no header
                continue
            ok, why = buffer.can_transform(frame("world"), header.frame_id, _stamp(header))
            checked[name] += 1
            if not ok:
                failures.append(f"{name} [{header.frame_id} @ {_stamp(header)}]: {why}")
    assert not failures, "\n".join(failures[:20])
    for wanted in (topic("detections"), topic("markers"), topic("codemap"), topic("gt_markers"),
                   *(topic("codemap_image", agent=a) for a in agents),
                   *(topic("lidar", agent=a) for a in agents)):
        assert checked[wanted] > 0, (wanted, checked)
    frames_of = {frame("grid", agent=a) for a in agents}
    assert frames_of <= buffer.frames and frame("world") in buffer.frames


def test_recording_decodes_with_mcap_readers(demo: tuple[dict[str, Any], Path]) -> None:
    """Foxglove's path: mcap + mcap_ros2 decode every message from the embedded schemas."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    summary, recording = demo
    assert (recording / "metadata.yaml").is_file()  # a rosbag2 directory: ros2 bag play
    counts: collections.Counter = collections.Counter()
    images = []
    (path,) = recording.glob("*.mcap")
    with path.open("rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        for schema, channel, _, decoded in reader.iter_decoded_messages():
            counts[channel.topic] += 1
            assert schema.encoding == "ros2msg" and channel.message_encoding == "cdr"
            if channel.topic.startswith(topic("codemap_image", agent="")):
                images.append(decoded)
    for wanted in (topic("detections"), topic("markers"), topic("codemap"), topic("diagnostics"),
                   topic("tf"), topic("tf_static"), topic("gt_objects"), EVENTS_TOPIC,
                   *(topic("codemap_image", agent=a) for a in summary["agents"])):
        assert counts[wanted] > 0, (wanted, counts)
    img = images[0]
    assert img.encoding == "rgb8" and len(img.data) == img.height * img.width * 3


def test_summary_and_pictures_come_from_the_recording(demo: tuple[dict[str, Any], Path]
                                                      ) -> None:
    from PIL import Image

    summary, recording = demo
    records = load_recording(recording)
    kinds = collections.Counter(r["kind"] for r in records)
    assert kinds["roles"] == kinds["ready"] == kinds["end"] == 1
    assert kinds["detections"] >= summary["frames"]["fused"] > 0
    assert kinds["codemap"] == summary["codemap_bytes"]["maps"] > 0
    maps = [r for r in records if r["kind"] == "codemap"]
    assert all(r["indices"].shape == (r["height"], r["width"]) for r in maps)
    picture, animation = Image.open(summary["picture"]), Image.open(summary["animation"])
    assert picture.format == "PNG" and animation.format == "GIF"
    assert animation.n_frames == summary["frames"]["fused"]  # every fused evaluated frame
    assert (Path(summary["recording"]).parent / "codealign.rviz").is_file()
