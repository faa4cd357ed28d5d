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


def test_cli_defaults_are_the_typed_config_defaults() -> None:
    """`codealign synth` / `convert` without options run the library's defaults (one each)."""
    from pathlib import Path

    from codealign_ros.cli import build_parser
    from codealign_ros.data.convert import ConvertConfig
    from codealign_ros.data.synth import SynthConfig

    synth = build_parser().parse_args(["synth", "--out", "x"])
    assert SynthConfig.from_args(synth) == SynthConfig(out=Path("x"))
    conv = build_parser().parse_args(["convert", "--dataset", "opv2v", "--root", "r",
                                      "--out", "o"])
    assert ConvertConfig.from_args(conv) == ConvertConfig("opv2v", Path("r"), Path("o"))
