"""Copy benchmark result tables into the README between `<!-- results:NAME -->` and
`<!-- /results:NAME -->` markers (NAME: a file of benchmarks/results/). Run by `make bench`.

    python tools/readme_results.py [--readme README.md] [--results benchmarks/results]
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

MARKER = re.compile(r"(<!-- results:(?P<name>[\w.\-]+) -->\n)(?P<body>.*?)"
                    r"(<!-- /results:(?P=name) -->)", re.S)


def fill(text: str, results: Path) -> tuple[str, list[str]]:
    """`text` with every marked block replaced by its results file; the names replaced."""
    done: list[str] = []

    def replace(m: re.Match) -> str:
        path = results / m["name"]
        if not path.is_file():
            return m[0]
        done.append(m["name"])
        return f"{m[1]}{path.read_text().rstrip()}\n{m[4]}"
    return MARKER.sub(replace, text), done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--readme", type=Path, default=Path("README.md"))
    p.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args(argv)
    text, done = fill(args.readme.read_text(), args.results)
    args.readme.write_text(text)
    print(f"readme_results: {', '.join(done) or 'nothing'} copied into {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
