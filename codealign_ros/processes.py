"""Start and stop groups of node processes (used by the demo, the launcher and tests)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any, Mapping, Sequence


def ros_args(params: Mapping[str, Any]) -> list[str]:
    """`--ros-args -p name:=value ...` for a parameter dict (bools lower-cased)."""
    argv = ["--ros-args"]
    for name, value in params.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        argv += ["-p", f"{name}:={text}"]
    return argv


class ProcessGroup:
    """Child processes that are stopped together (SIGINT, then SIGTERM, then SIGKILL)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = {**os.environ, **(env or {})}
        self.procs: dict[str, subprocess.Popen] = {}

    def start_module(self, name: str, module: str, params: Mapping[str, Any] | None = None,
                     args: Sequence[str] = (), **popen: Any) -> subprocess.Popen:
        """Run `python -m module args --ros-args -p ...` as process `name`."""
        argv = [sys.executable, "-u", "-m", module, *args]
        if params:
            argv += ros_args(params)
        proc = subprocess.Popen(argv, env=self.env, **popen)
        self.procs[name] = proc
        return proc

    def start_command(self, name: str, argv: Sequence[str], **popen: Any) -> subprocess.Popen:
        """Run the command line `argv` as process `name` (used by `codealign launch`)."""
        proc = subprocess.Popen(list(argv), env=self.env, **popen)
        self.procs[name] = proc
        return proc

    def failed(self) -> dict[str, int]:
        """Processes that already exited with a non-zero code."""
        return {name: p.returncode for name, p in self.procs.items()
                if p.poll() is not None and p.returncode != 0}

    def stop(self, timeout_s: float = 5.0) -> dict[str, int]:
        """Stop every process; returns their exit codes.

        A process that our SIGINT killed (-SIGINT: it was still importing, before its node
        could take the signal) stopped as asked and counts as 0.
        """
        interrupted = []
        for name, proc in self.procs.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                interrupted.append(name)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for proc in self.procs.values():
                try:
                    proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    proc.send_signal(sig)
        for proc in self.procs.values():
            proc.wait()
        return {name: 0 if name in interrupted and p.returncode == -signal.SIGINT
                else p.returncode for name, p in self.procs.items()}

    def __enter__(self) -> "ProcessGroup":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
