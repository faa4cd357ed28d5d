"""`codealign paper-table`: the claims check and the markdown it writes."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from codealign_ros.train.paper_table import claims, markdown, opv2v_trainable_parameters

SETTING = "[m1]+[m2]"


def _row(ap50: float, ap70: float = 0.0, **extra: Any) -> dict[str, Any]:
    return {"ap30": ap50 + 0.05, "ap50": ap50, "ap70": ap70, "trainable_params": 1000,
            "payload_bytes": 2048.0, "payload_coded_bytes": 600.0, **extra}


def _results(codealign: float, heal: float, zero: float) -> dict[str, Any]:
    rows = {"single": _row(0.5, 0.3), "noalign": _row(0.2), "late": _row(0.6, 0.35),
            "heal": _row(heal, 0.5), "codealign": _row(codealign, 0.4)}
    return {"frames": 4, "every": 1, "data": "d", "split": "test", "profile": "mini",
            "settings": {SETTING: rows},
            "codebook": {"4": _row(0.5), "16": _row(0.7), "64": _row(0.6)},
            "translator": {v: _row(0.7, translator_params=10, switching_params=1)
                           for v in ("one_to_one", "multi_head", "uct")},
            "quantisation": {"m1": {"single": _row(0.5), "codes": _row(0.45)}},
            "no_harm": {SETTING: {"none": _row(0.45), "zero": _row(zero)}},
            "tp_opv2v": {SETTING: 3_600_000},
            "isolation": {"cooccurring": _row(0.6), "isolated": _row(0.5)}}


def test_claims_hold_and_fail_on_the_numbers() -> None:
    good = dict(claims(_results(codealign=0.7, heal=0.71, zero=0.45)))
    assert all(good.values()), good
    bad = dict(claims(_results(codealign=0.55, heal=0.71, zero=0.40)))
    assert not bad[f"{SETTING}: CodeAlign within 2 AP50 of HEAL-style (or above)"]
    assert not bad[f"{SETTING}: all-zero peers cost the ego at most 1 AP50"]
    assert bad[f"{SETTING}: CodeAlign above Single (AP50)"]
    assert bad["End-to-end training loses accuracy on isolated data (Table 2, AP50)"]


def test_markdown_has_every_section() -> None:
    res = _results(codealign=0.55, heal=0.71, zero=0.45)
    res["claims"] = claims(res)
    text = markdown(res)
    for part in ("Table 8 analog", "Do no harm", "`opv2v` profile", "| 3.600 M | 0.800 M |",
                 "The paper's claims", "| **no** |", "Table 2 analog"):
        assert part in text, part


def test_opv2v_trainable_parameters_count_the_paper_scale() -> None:
    tp = opv2v_trainable_parameters()
    assert set(tp) == {"[m1]+[m2]", "[m2]+[m4]", "[m1 m4]+[m2]+[m5]"}
    # more modalities to align, more parameters; the opv2v scale is far above mini's 0.6 M
    assert tp["[m1 m4]+[m2]+[m5]"] > tp["[m1]+[m2]"] > 1_000_000


def test_readme_option_can_skip(tmp_path: Path) -> None:
    from codealign_ros.train.paper_table import readme_path

    readme = tmp_path / "README.md"
    readme.write_text("x")
    assert readme_path("") is None and readme_path(str(tmp_path)) is None
    assert readme_path(str(readme)) == readme
