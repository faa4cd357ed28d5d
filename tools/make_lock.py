"""Write requirements.lock: exact pins of everything pip installed into .venv.

Run with the venv's interpreter after `pip install -r requirements.txt` in a fresh venv.
The ROS wheels ship their packages' own egg-info (e.g. `rclpy`), which `pip freeze`
would list although no such PyPI project exists; only real wheel installs (dist-info) are
pinned. PyTorch's local label (+cpu) is dropped so `torch==2.13.0` matches any build.
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import re
from pathlib import Path

HEADER = ("# Exact pins of requirements.txt, written by tools/make_lock.py from a fresh .venv.\n"
          "# `make setup` installs exactly these.\n")
SKIP = {"pip"}


def pins() -> list[str]:
    """`name==version` of every dist-info distribution in this interpreter's environment."""
    found = {}
    for dist in md.distributions():
        path = getattr(dist, "_path", None)
        name = dist.metadata["Name"]
        if path is None or not str(path).endswith(".dist-info") or name.lower() in SKIP:
            continue
        found[name.lower()] = f"{name}=={re.sub(r'[+].*$', '', dist.version)}"
    return [found[k] for k in sorted(found)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("requirements.lock"))
    args = parser.parse_args()
    args.out.write_text(HEADER + "\n".join(pins()) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
