"""Node parameters the Autoware way: config/<node>.param.yaml + config/schema/<node>.schema.json."""
from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import rclpy
import yaml

from codealign_ros.config import config_dir, lookup
from codealign_ros.launch import graph_arguments
from codealign_ros.ros.params import node_defaults, node_schema, param_file

ROOT = Path(__file__).resolve().parent.parent
NODES = sorted(p.name.removesuffix(".param.yaml") for p in config_dir().glob("*.param.yaml"))


def test_every_python_node_of_the_launch_table_has_a_parameter_file() -> None:
    declaring = {path.stem for path in (ROOT / "codealign_ros" / "nodes").glob("*.py")
                 if "declare_from_file(" in path.read_text()}
    assert declaring == {"vehicle_node", "fusion_node", "codemap_source", "codemap_monitor"}
    assert set(NODES) == declaring


@pytest.mark.parametrize("node", NODES)
def test_parameter_file_fits_its_schema(node: str) -> None:
    data = yaml.safe_load(param_file(node).read_text())
    jsonschema.validate(data, node_schema(node))
    assert list(data) == ["/**"] and list(data["/**"]) == ["ros__parameters"]


@pytest.mark.parametrize("node", NODES)
def test_schema_rejects_a_wrong_type_and_an_unknown_parameter(node: str) -> None:
    schema, defaults = node_schema(node), node_defaults(node)
    name = next(iter(defaults))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"/**": {"ros__parameters": {**defaults, name: {"x": 1}}}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"/**": {"ros__parameters": {**defaults, "no_such": 1}}}, schema)


def test_no_node_defaults_a_parameter_in_code() -> None:
    for path in (ROOT / "codealign_ros" / "nodes").glob("*.py"):
        assert "declare_parameter(" not in path.read_text(), path.name


def test_modality_choices_of_the_schemas_are_the_configured_modalities() -> None:
    known = list(lookup("modalities", "modalities"))
    props = node_schema("vehicle_node")["definitions"]["vehicle_node"]["properties"]
    assert props["ros__parameters"]["properties"]["modality"]["enum"] == known


def test_launch_defaults_come_from_the_parameter_files() -> None:
    for graph in ("vehicle", "receiver", "demo"):
        assert graph_arguments(graph)["model_dir"].default == \
            node_defaults("vehicle_node")["model_dir"] == node_defaults("fusion_node")["model_dir"]
    for graph in ("receiver", "demo"):
        assert graph_arguments(graph)["max_age"].default == node_defaults("fusion_node")["max_age_s"]
    text = (config_dir() / "launch.yaml").read_text()
    assert not re.search(r"default: (models/mini|0\.5)\b", text)


def test_shipped_camera_calibration_is_the_rendered_rig() -> None:
    """The calibration vehicle_node reads by default is what `codealign synth` renders."""
    from codealign_ros.data import world
    from codealign_ros.nodes.vehicle_node import calibration_extrinsics

    rig = calibration_extrinsics(node_defaults("vehicle_node")["camera_calibration"])
    expected = [np.linalg.inv(m) for m in world._camera_rig(world.VEHICLE_CAMERAS)]
    assert len(rig) == len(expected)
    for got, want in zip(rig, expected):
        np.testing.assert_allclose(got, want, atol=1e-9)
    with pytest.raises(ValueError, match="camera_calibration"):
        calibration_extrinsics(str(param_file("vehicle_node")))  # not a calibration YAML


@pytest.mark.parametrize("node", ["codemap_source", "codemap_monitor"])
def test_a_node_declares_exactly_its_file(ros_domain: int, node: str) -> None:
    import importlib

    module = importlib.import_module(f"codealign_ros.nodes.{node}")
    factory = {"codemap_source": "CodeMapSource", "codemap_monitor": "CodeMapMonitor"}[node]
    rclpy.init(args=["--ros-args", "-p", "expected:=3"] if node == "codemap_monitor" else [])
    try:
        ros_node = getattr(module, factory)()
        declared = set(ros_node._parameters) - {"use_sim_time", "start_type_description_service"}
        assert declared == set(node_defaults(node))
        if node == "codemap_monitor":
            assert ros_node.expected == 3
        ros_node.destroy_node()
    finally:
        rclpy.shutdown()


def test_relative_model_dir_resolves_from_any_directory(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from codealign_ros.config.share import resolve_shipped, share_dir

    default = node_defaults("vehicle_node")["model_dir"]
    monkeypatch.chdir(tmp_path)
    assert resolve_shipped(default) == ROOT / default  # a source checkout: its root
    assert resolve_shipped("no/such/dir") == Path("no/such/dir")  # unchanged: errors name it
    (tmp_path / default).mkdir(parents=True)
    assert resolve_shipped(default) == Path(default)  # the working directory wins
    share = share_dir()
    if share is None:
        pytest.skip("codealign_ros not installed (make setup): no share directory")
    shipped = sorted(p.name for p in (share / default).iterdir())
    assert shipped == sorted(p.name for p in (ROOT / default).iterdir()
                             if p.suffix in (".pt", ".md"))
