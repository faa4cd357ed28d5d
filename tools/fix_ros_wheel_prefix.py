"""Repair CMake export files of the ROS 2 PyPI wheels.

Some wheels were built in an image whose Python lived under ``/opt/python/cpXY-cpXY``;
their exported ``*.cmake`` targets name include paths there (the Python headers and
NumPy's headers). CMake refuses such targets, so building an interface package
fails. This rewrites those paths to this interpreter's real ones. Idempotent.
"""
from __future__ import annotations

import argparse
import re
import sys
import sysconfig
from pathlib import Path

BUILD_PREFIX = re.compile(r"/opt/python/cp\d+-cp\d+(?P<rest>[^\";]*)")


def real_path(rest: str) -> str | None:
    """Map a path below the wheel build prefix to this interpreter's equivalent."""
    if re.fullmatch(r"/include/python3\.\d+", rest):
        return sysconfig.get_paths()["include"]
    numpy_part = re.search(r"site-packages/numpy(?P<tail>/.*)?$", rest)
    if numpy_part:
        import numpy

        return str(Path(numpy.__file__).parent) + (numpy_part.group("tail") or "")
    return None


def fix_file(path: Path) -> int:
    """Rewrite build-prefix paths in one file; return the number replaced."""
    text = path.read_text()
    count = 0

    def substitute(match: re.Match) -> str:
        nonlocal count
        new = real_path(match.group("rest"))
        if new is None:
            print(f"warning: {path}: no local equivalent of {match.group(0)}", file=sys.stderr)
            return match.group(0)
        count += 1
        return new

    fixed = BUILD_PREFIX.sub(substitute, text)
    if count:
        path.write_text(fixed)
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefix", type=Path, help="virtualenv prefix holding share/*/cmake")
    args = parser.parse_args(argv)
    total = files = 0
    for cmake_file in sorted((args.prefix / "share").glob("*/cmake/*.cmake")):
        replaced = fix_file(cmake_file)
        total += replaced
        files += bool(replaced)
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.exists():
        print(f"warning: {headers} missing: install the Python development headers", file=sys.stderr)
    print(f"fix_ros_wheel_prefix: {total} paths rewritten in {files} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
