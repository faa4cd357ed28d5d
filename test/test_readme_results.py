"""tools/readme_results.py: benchmark tables copied between the README's markers."""
from __future__ import annotations

import importlib.util
from pathlib import Path

TOOL = Path(__file__).resolve().parents[1] / "tools" / "readme_results.py"
spec = importlib.util.spec_from_file_location("readme_results", TOOL)
readme_results = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readme_results)  # type: ignore[union-attr]


def test_marked_blocks_get_the_results_and_the_rest_stays(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("| new | table |\n")
    text = ("intro\n<!-- results:a.md -->\nold\nlines\n<!-- /results:a.md -->\nmiddle\n"
            "<!-- results:missing.md -->\nkept\n<!-- /results:missing.md -->\nend\n")
    out, done = readme_results.fill(text, tmp_path)
    assert done == ["a.md"]
    assert out == ("intro\n<!-- results:a.md -->\n| new | table |\n<!-- /results:a.md -->\n"
                   "middle\n<!-- results:missing.md -->\nkept\n<!-- /results:missing.md -->\n"
                   "end\n")


def test_the_readme_marks_the_benchmark_tables() -> None:
    readme = (TOOL.parents[1] / "README.md").read_text()
    for name in ("models.md", "realtime.md"):
        assert f"<!-- results:{name} -->" in readme and f"<!-- /results:{name} -->" in readme
