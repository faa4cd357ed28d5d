"""Every command has a working --help."""
import subprocess
import sys

import pytest

COMMANDS = [[], ["demo"], ["synth"], ["dataset-stats"], ["convert"], ["play"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "codealign")
def test_help(command: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "codealign_ros", *command, "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "usage: codealign" in result.stdout


def test_unknown_command_fails_clearly() -> None:
    result = subprocess.run([sys.executable, "-m", "codealign_ros", "fly"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
