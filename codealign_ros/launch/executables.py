"""Executables of launch graphs: the node process (`NodeSpec`) and where its code is installed."""
from __future__ import annotations

import importlib.util
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codealign_ros.config import load_config
from codealign_ros.launch.arguments import param_text

CONFIG = "launch"


@dataclass(frozen=True)
class NodeSpec:
    """One node process: ROS node `name` running `executable` of `package`.

    `module` is the Python module behind the executable (None: not a Python node);
    `arguments` go on the command line before `--ros-args`; `nice` > 0 starts the process
    under `nice -n` and a non-empty `cpus` pins it to those CPU cores with `taskset -c`
    (launch_ros: the same `prefix`), e.g. nodes that share a small CPU with the ones whose
    latency counts.
    """

    name: str
    executable: str
    package: str
    module: str | None
    parameters: dict[str, Any] = field(default_factory=dict)
    arguments: list[str] = field(default_factory=list)
    remappings: list[tuple[str, str]] = field(default_factory=list)
    optional: bool = False
    params_file: str = ""  # config/<executable>.param.yaml when it has one
    nice: int = 0
    cpus: tuple[int, ...] = ()

    def prefix(self) -> list[str]:
        """`nice -n N` and `taskset -c a,b` in front of the program (empty when unset)."""
        out = ["nice", "-n", str(self.nice)] if self.nice > 0 else []
        if self.cpus:
            out += ["taskset", "-c", ",".join(str(c) for c in sorted(self.cpus))]
        return out

    def ros_argv(self) -> list[str]:
        """`--ros-args -r __node:=name [--params-file f] -p k:=v ... -r from:=to ...`."""
        argv = ["--ros-args", "-r", f"__node:={self.name}"]
        if self.params_file:
            argv += ["--params-file", self.params_file]
        for key, value in self.parameters.items():
            argv += ["-p", f"{key}:={param_text(value)}"]
        for source, target in self.remappings:
            argv += ["-r", f"{source}:={target}"]
        return argv

    def command(self, python: str = sys.executable, program: str | None = None) -> list[str]:
        """argv of the process: `python -u -m module ...` or `program|executable ...`."""
        head = [python, "-u", "-m", self.module] if self.module else [program or self.executable]
        return [*self.prefix(), *head, *self.arguments, *self.ros_argv()]


def params_file(executable: str) -> str:
    """config/<executable>.param.yaml when it exists, else ""."""
    from codealign_ros.ros.params import param_file

    path = param_file(executable)
    return str(path) if path.is_file() else ""


def executables() -> dict[str, dict[str, Any]]:
    """launch.yaml `executables`: executable -> {package, module}."""
    return load_config(CONFIG).get("executables") or {}


def locate(spec: NodeSpec) -> str | None:
    """Where the node's code is: the module's file, or the executable on PATH or in the
    package's ament lib directory; None when not installed."""
    if spec.module:
        try:
            found = importlib.util.find_spec(spec.module)
        except ImportError:
            found = None
        return found.origin if found is not None else None
    path = shutil.which(spec.executable)
    if path:
        return path
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix
        candidate = Path(get_package_prefix(spec.package)) / "lib" / spec.package / spec.executable
    except (ImportError, PackageNotFoundError, ValueError):
        return None
    return str(candidate) if candidate.is_file() else None


def split_available(specs: list[NodeSpec]) -> tuple[list[NodeSpec], list[NodeSpec]]:
    """(to run, skipped): optional nodes whose executable is not installed are skipped."""
    skipped = [s for s in specs if s.optional and locate(s) is None]
    return [s for s in specs if s not in skipped], skipped

