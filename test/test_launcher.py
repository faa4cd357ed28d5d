"""Launch graphs (config/launch.yaml), the launch files, the RViz config and `codealign launch`."""
from __future__ import annotations

import ast
import importlib
import json
import os
import py_compile
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
import yaml
from rclpy.context import Context

from codealign_ros.config import config_dir, frame, lookup, qos_settings, topic
from codealign_ros.core.geometry import pose6_to_matrix
from codealign_ros.data.assignment import assign_modalities
from codealign_ros.data.bag import write_bag
from codealign_ros.data.types import AgentFrame, CooperativeFrame
from codealign_ros.launch import (LaunchGraphError, NodeSpec, graph_arguments,
                                  graph_names, load_graph, locate, param_text,
                                  split_available)

ROOT = Path(__file__).resolve().parent.parent
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))
CLI = [sys.executable, "-m", "codealign_ros", "launch"]
DEMO_AGENTS = "cav_1,cav_2:m3,rsu_1"


def _overrides(graph: str) -> dict[str, str]:
    return {"agents": DEMO_AGENTS} if graph == "demo" else {}


def _all_strings(value: object) -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_all_strings(k), *_all_strings(v))]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _all_strings(v)]
    return [value] if isinstance(value, str) else []


@pytest.mark.parametrize("graph", graph_names())
def test_every_graph_loads_fully_resolved(graph: str) -> None:
    specs = load_graph(graph, _overrides(graph))
    assert specs
    executables = lookup("launch", "executables")
    for spec in specs:
        strings = _all_strings([spec.name, spec.parameters, spec.arguments, spec.remappings])
        assert not [s for s in strings if "${" in s], spec
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", spec.name)
        assert spec.module == executables[spec.executable]["module"]
        assert spec.package == executables[spec.executable]["package"]
    assert len({s.name for s in specs}) == len(specs)


def test_graphs_of_the_brief_exist_with_their_arguments() -> None:
    assert {"vehicle", "receiver", "demo", "transport"} <= set(graph_names())
    vehicle = graph_arguments("vehicle")
    assert {name: vehicle[name].default for name in
            ("modality", "agent", "backend", "profile", "model_dir")} == {
        "modality": "m1", "agent": "cav_1", "backend": "auto", "profile": "mini",
        "model_dir": "models/mini"}
    assert {"agent", "backend", "max_age"} <= set(graph_arguments("receiver"))
    demo = graph_arguments("demo")
    assert {"bag", "agents", "rviz"} <= set(demo) and demo["rviz"].default is False


def test_vehicle_parameters_follow_the_arguments() -> None:
    (spec,) = load_graph("vehicle", {"modality": "m4", "agent": "cav_2", "use_sim_time": "True"})
    assert (spec.name, spec.executable, spec.module) == (
        "vehicle_cav_2", "vehicle_node", "codealign_ros.nodes.vehicle_node")
    assert spec.parameters == {"agent_id": "cav_2", "modality": "m4", "backend": "auto",
                               "profile": "mini", "model_dir": "models/mini",
                               "use_sim_time": True, "require_signed": True,
                               "signing_key": "keys/cav_2.key", "publish_tf": False}


def test_typed_arguments_are_converted() -> None:
    (spec,) = load_graph("receiver", {"max_age": "0.25", "agent": "rsu_1"})
    assert spec.parameters["max_age_s"] == 0.25 and spec.name == "fusion_rsu_1"
    monitor = load_graph("transport", {"expected": "12"})[0]
    assert monitor.parameters == {"expected": 12}


def test_unknown_argument_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown argument.*modalty.*valid: .*modality"):
        load_graph("vehicle", {"modalty": "m2"})
    with pytest.raises(LaunchGraphError, match="unknown launch graph 'nope'.*vehicle"):
        load_graph("nope", {})


@pytest.mark.parametrize("graph, overrides, match", [
    ("vehicle", {"modality": "m9"}, "modality:='m9'.*one of m1"),
    ("vehicle", {"profile": "huge"}, "profile:='huge'.*mini"),
    ("vehicle", {"use_sim_time": "maybe"}, "true or false"),
    ("vehicle", {"agent": "cav-1"}, "not a valid ROS node name"),
    ("receiver", {"max_age": "soon"}, "a number"),
    ("receiver", {"max_age": "nan"}, "finite"),
    ("transport", {"count": "2.5"}, "a number \\(int\\)"),
    ("transport", {"agents": "a,a"}, "unique"),
    ("transport", {"agents": "a:m7"}, "unknown modalities"),
    ("transport", {"agents": " , "}, "agent\\[:modality\\]"),
    ("demo", {"agents": "cav_1", "rviz": "perhaps"}, "true or false")])
def test_bad_values_raise_value_errors(graph: str, overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_graph(graph, overrides)


def test_demo_expands_one_vehicle_per_agent_and_fuses_on_the_ego() -> None:
    specs = {s.name: s for s in load_graph("demo", {"agents": DEMO_AGENTS, "rate": "2"})}
    names = ["cav_1", "cav_2", "rsu_1"]
    expected = {**assign_modalities(names, {"rsu_1"}), "cav_2": "m3"}
    for agent in names:
        params = specs[f"vehicle_{agent}"].parameters
        assert (params["agent_id"], params["modality"]) == (agent, expected[agent])
        assert params["use_sim_time"] is True
    assert specs["fusion_cav_1"].parameters["agent_id"] == "cav_1"
    player = specs["bag_player"]
    assert player.module == "codealign_ros.nodes.bag_player"
    assert player.arguments[:3] == [graph_arguments("demo")["bag"].default, "--rate", "2.0"]
    assert "--clock" in player.arguments
    assert set(specs) == {"vehicle_cav_1", "vehicle_cav_2", "vehicle_rsu_1", "fusion_cav_1",
                          "bag_player"}


def test_demo_rviz_is_optional_and_uses_the_shipped_config() -> None:
    specs = load_graph("demo", {"agents": "cav_1", "rviz": "true"})
    rviz = next(s for s in specs if s.executable == "rviz2")
    assert rviz.optional and rviz.module is None and rviz.package == "rviz2"
    assert rviz.arguments[0] == "-d" and Path(rviz.arguments[1]).is_file()
    run, skipped = split_available(specs)
    assert (rviz in skipped) == (locate(rviz) is None)
    assert all(not s.optional for s in run if s.name != "rviz2")


def _tiny_frames(agents: list[str], count: int = 2) -> list[CooperativeFrame]:
    rng = np.random.default_rng(0)
    return [CooperativeFrame(
        scenario="s", timestamp=f"{i:06d}", stamp_ns=1_700_000_000_000_000_000 + i * 10**8,
        agents={name: AgentFrame(agent_id=name, points=rng.normal(size=(20, 4)).astype(np.float32),
                                 lidar_pose=pose6_to_matrix([5.0 * j, 0, 1.8, 0, 0, 0]),
                                 is_rsu=name.startswith("rsu"))
                for j, name in enumerate(agents)},
        boxes=np.zeros((0, 7)), box_ids=np.zeros(0, int), box_classes=[]) for i in range(count)]


def test_demo_auto_takes_agents_from_the_bag(tmp_path: Path) -> None:
    agents = ["cav_641", "cav_650", "rsu_1"]
    write_bag(_tiny_frames(agents), tmp_path / "bag", progress=False)
    specs = load_graph("demo", {"bag": str(tmp_path / "bag")})
    vehicles = [s for s in specs if s.executable == "vehicle_node"]
    expected = assign_modalities(agents, {"rsu_1"})
    assert [(s.parameters["agent_id"], s.parameters["modality"]) for s in vehicles] == \
        [(a, expected[a]) for a in agents]
    assert [s.name for s in specs if s.executable == "fusion_node"] == ["fusion_cav_641"]


def test_demo_auto_without_a_bag_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="agents:=auto needs a readable bag"):
        load_graph("demo", {"bag": str(tmp_path / "missing")})


def test_transport_remaps_the_codemap_topic_in_every_node() -> None:
    default = load_graph("transport", {"agents": "a,b"})
    assert all(not s.remappings for s in default)
    assert [s.parameters.get("seed") for s in default] == [None, 0, 1]
    specs = load_graph("transport", {"codemap_topic": "/t/maps"})
    assert all(s.remappings == [(topic("codemap"), "/t/maps")] for s in specs)


@pytest.mark.parametrize("value, text", [(True, "true"), (False, "false"), (3, "3"),
                                         (0.5, "0.5"), ("cav_1", "cav_1"), ("1", "'1'"),
                                         ("true", "'true'"), ("", "''"), ("it's", "it's"),
                                         ("a: b", "'a: b'"), ([1, 2], "[1, 2]")])
def test_param_text(value: object, text: str) -> None:
    assert param_text(value) == text


def test_ros_argv_is_read_back_by_rclpy_with_types_kept() -> None:
    params = {"s_num": "1", "s_bool": "true", "s_empty": "", "s": "models/mini", "b": False,
              "i": 7, "f": 0.25}
    spec = NodeSpec(name="renamed", executable="x", package="codealign_ros", module="m",
                    parameters=params, remappings=[("/a", "/b")])
    context = Context()
    rclpy.init(args=["prog", *spec.ros_argv()], context=context)
    try:
        node = rclpy.create_node("original", context=context)
        assert node.get_name() == "renamed"
        got = {name: node.declare_parameter(name, value).value for name, value in params.items()}
        assert got == params and all(type(got[k]) is type(v) for k, v in params.items())
        assert node.resolve_topic_name("/a") == "/b"
    finally:
        rclpy.shutdown(context=context)


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_compiles_and_builds_its_graph(path: Path, tmp_path: Path) -> None:
    py_compile.compile(str(path), cfile=str(tmp_path / "x.pyc"), doraise=True)
    graph = path.name.removesuffix(".launch.py")
    assert graph in graph_names()
    calls = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)
             and getattr(n.func, "id", "") == "launch_description"]
    assert [c.args[0].value for c in calls] == [graph]


def test_launch_files_cover_the_brief() -> None:
    assert {p.name for p in LAUNCH_FILES} >= {"vehicle.launch.py", "receiver.launch.py",
                                              "demo.launch.py"}


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_description_declares_the_graph_arguments(path: Path) -> None:
    try:
        from launch import LaunchDescription
        from launch.actions import DeclareLaunchArgument
    except ImportError:
        pytest.skip("launch not installed")
    pytest.importorskip("launch_ros", reason="launch_ros not installed")
    namespace: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    description = namespace["generate_launch_description"]()
    assert isinstance(description, LaunchDescription)
    declared = [e.name for e in description.entities if isinstance(e, DeclareLaunchArgument)]
    assert declared == list(graph_arguments(path.name.removesuffix(".launch.py")))


def _console_scripts() -> dict[str, str]:
    """setup.py's console_scripts: name -> module."""
    return dict(re.findall(r'"(\w+) = ([\w.]+):main"', (ROOT / "setup.py").read_text()))


def test_setup_installs_every_executable_of_the_executables_table() -> None:
    scripts = _console_scripts()
    for name, info in lookup("launch", "executables").items():
        if info["package"] == "codealign_ros":
            assert scripts.get(name) == info["module"], f"setup.py does not install {name}"


def test_setup_installs_every_executable_a_graph_names() -> None:
    """What `ros2 launch` runs: every executable of every graph's nodes (whatever the
    arguments) is a console script, or an optional one of another package."""
    scripts, table = _console_scripts(), lookup("launch", "executables")
    named = {(entry["executable"], bool(entry.get("optional")))
             for graph in lookup("launch", "graphs").values()
             for entry in graph.get("nodes") or []}
    assert named
    for exe, optional in sorted(named):
        if table[exe]["package"] == "codealign_ros":
            assert scripts.get(exe) == table[exe]["module"], f"setup.py does not install {exe}"
        else:
            assert optional, f"{exe} of package {table[exe]['package']} must be optional"
    for module in set(scripts.values()):
        assert callable(getattr(importlib.import_module(module), "main", None)), module


def test_rviz_config_shows_the_configured_topics_in_the_world_frame() -> None:
    rviz = yaml.safe_load((config_dir() / "codealign.rviz").read_text())
    manager = rviz["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == frame("world")
    displays = {}
    for display in manager["Displays"]:
        displays.setdefault(display["Class"].split("/")[-1], []).append(display)
    assert len(displays["Grid"]) == 1
    assert {d["Topic"]["Value"] for d in displays["MarkerArray"]} == {topic("markers"),
                                                                      topic("gt_markers")}
    clouds = displays["PointCloud2"]  # one per agent of the demo scene
    assert [c["Topic"]["Value"] for c in clouds] == [topic("lidar", agent=a)
                                                     for a in lookup("viz", "demo_agents")]
    policy = {"best_effort": "Best Effort", "reliable": "Reliable"}
    for cloud in clouds:
        assert cloud["Topic"]["Reliability Policy"] == \
            policy[qos_settings("sensor")["reliability"]]
    for marker in displays["MarkerArray"]:
        assert marker["Topic"]["Reliability Policy"] == \
            policy[qos_settings("output")["reliability"]]


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_help_lists_graphs_and_arguments() -> None:
    result = _cli("--help")
    assert result.returncode == 0, result.stderr
    for graph in graph_names():
        assert f"  {graph}: " in result.stdout
        for name in graph_arguments(graph):
            assert f"{name}:=" in result.stdout


def test_dry_run_prints_the_commands() -> None:
    result = _cli("vehicle", "modality:=m1", "agent:=cav_2", "--dry-run")
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    assert "-m codealign_ros.nodes.vehicle_node --ros-args -r __node:=vehicle_cav_2" in line
    assert "-p agent_id:=cav_2 -p modality:=m1" in line


@pytest.mark.parametrize("args, match", [(["vehicle", "modalty:=m1"], "valid: agent"),
                                         (["vehicle", "modality=m1"], "expected name:=value"),
                                         (["receiver", "max_age:=x"], "a number")])
def test_bad_arguments_exit_2_with_a_message(args: list[str], match: str) -> None:
    result = _cli(*args)
    assert result.returncode == 2 and re.search(match, result.stderr), result.stderr


@pytest.fixture
def broken_config(tmp_path: Path) -> dict[str, str]:
    """A config dir: the real files plus a graph whose node module does not exist."""
    shutil.copytree(config_dir(), tmp_path / "config")
    launch = yaml.safe_load((tmp_path / "config" / "launch.yaml").read_text())
    launch["executables"]["ghost"] = {"package": "codealign_ros",
                                      "module": "codealign_ros.nodes.no_such_node"}
    launch["graphs"]["broken"] = {"description": "x", "arguments": {},
                                  "nodes": [{"executable": "ghost", "name": "ghost"}]}
    (tmp_path / "config" / "launch.yaml").write_text(yaml.safe_dump(launch))
    return {"CODEALIGN_CONFIG_DIR": str(tmp_path / "config")}


def test_missing_node_module_exits_2_naming_it(broken_config: dict[str, str]) -> None:
    result = _cli("broken", env=broken_config)
    assert result.returncode == 2
    assert "not installed: ghost (codealign_ros.nodes.no_such_node)" in result.stderr


class _Launch:
    """`codealign launch` as a child process whose output lines are collected."""

    def __init__(self, *args: str, cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, cwd=cwd)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout_s: float) -> str | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            self.seen.append(line)
            if re.search(pattern, line):
                return line
        return None

    def finish(self, timeout_s: float = 60) -> tuple[int, str]:
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        time.sleep(0.2)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return self.proc.returncode, "\n".join(self.seen)


def _pids(output: str) -> dict[str, int]:
    return {m[1]: int(m[2]) for m in re.finditer(r"launch: started (\w+) \(pid (\d+)\)", output)}


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _exit_codes(output: str) -> dict[str, int]:
    line = re.findall(r"launch: exit codes: (.*)", output)[-1]
    return {name: int(code) for name, code in (item.split("=") for item in line.split(", "))}


@pytest.mark.dds
def test_transport_graph_runs_until_the_monitor_is_done(ros_domain: int) -> None:
    run = _Launch("transport", "expected:=12", "agents:=cav_1,rsu_1", "rate_hz:=20.0",
                  "codemap_topic:=/launch_test/codemap")
    code, out = run.finish(timeout_s=180)
    assert code == 0, out
    summary = json.loads(re.findall(r"\[monitor\] SUMMARY (.*)", out)[-1])
    assert sum(a["messages"] for a in summary["agents"].values()) >= 12
    assert set(summary["agents"]) <= {"cav_1", "rsu_1"} and summary["drops"] == {}
    assert "launch: monitor exited with code 0" in out
    assert _exit_codes(out) == {"monitor": 0, "source_cav_1": 0, "source_rsu_1": 0}
    assert set(_pids(out)) == {"monitor", "source_cav_1", "source_rsu_1"}
    assert all(_gone(pid) for pid in _pids(out).values())


@pytest.mark.dds
def test_vehicle_graph_comes_up_from_another_directory(ros_domain: int, tmp_path: Path) -> None:
    """The default model_dir (relative models/mini) resolves against the checkout / the
    package share directory when the working directory lacks it."""
    assert not (tmp_path / "models").exists()
    run = _Launch("vehicle", "modality:=m1", "require_signed:=false", cwd=tmp_path)
    ready = run.wait_for(r"cav_1: m1 -> spaces \['g1'\]", 240)
    run.proc.send_signal(signal.SIGINT)
    code, out = run.finish()
    assert ready, out
    assert code == 0 and "Traceback" not in out, out


def test_a_node_that_cannot_start_says_why_in_one_line(tmp_path: Path) -> None:
    cases = [("vehicle_node", ["model_dir:=no/such/models"], "no model directory no/such/models"),
             ("vehicle_node", ["encoding:=lz4"], "encoding 'lz4': expected one of raw"),
             ("fusion_node", ["max_age_s:=soon"], "max_age_s")]
    runs = [(subprocess.Popen([sys.executable, "-m", f"codealign_ros.nodes.{node}",
                               "--ros-args", "-p", "require_signed:=false",
                               *[a for p in params for a in ("-p", p)]],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=tmp_path), node, says)
            for node, params, says in cases]
    for run, node, says in runs:
        _, err = run.communicate(timeout=180)
        assert run.returncode == 1, err
        line = err.strip().splitlines()[-1]
        assert line.startswith(f"{node}: cannot start: ") and says in line, err
        assert "Traceback" not in err and ("fix" in line or "run `make models`" in line), err


@pytest.mark.dds
def test_ctrl_c_stops_every_node_cleanly(ros_domain: int) -> None:
    run = _Launch("transport", "rate_hz:=20.0")
    assert run.wait_for(r"\[monitor\] cav_1: [1-9]\d* msgs", 180), "\n".join(run.seen)
    run.proc.send_signal(signal.SIGINT)
    code, out = run.finish()
    assert code == 0, out
    assert "launch: got SIGINT; stopping 2 node(s)" in out
    assert _exit_codes(out) == {"monitor": 0, "source_cav_1": 0}
    assert re.search(r"\[monitor\] SUMMARY .*\"cav_1\": \{\"messages\": [1-9]", out)
    assert all(_gone(pid) for pid in _pids(out).values())


@pytest.mark.dds
def test_a_failing_node_stops_the_graph_and_is_named(ros_domain: int) -> None:
    run = _Launch("transport", "encoding:=bogus")
    code, out = run.finish(timeout_s=180)
    assert code == 1, out
    assert re.search(r"launch: source_cav_1 exited with code [1-9]", out)
    codes = _exit_codes(out)
    assert codes["monitor"] == 0 and codes["source_cav_1"] != 0
    assert all(_gone(pid) for pid in _pids(out).values())
