"""Charts are deterministic SVG with labelled axes."""

from __future__ import annotations

from reports import _charts


def test_the_same_chart_is_the_same_svg_and_undated() -> None:
    def draw() -> str:
        return _charts.bars(["female", "male"], [0.79, 1.0], xlabel="impact ratio (unitless)", title="t",
                            lines=[(0.8, "four-fifths line 0.8")], flag_below=0.8)

    first = draw()
    assert first == draw()
    assert "<dc:date>" not in first
    assert "impact ratio (unitless)" in first and "four-fifths line 0.8" in first


def test_a_missing_value_is_drawn_as_not_available() -> None:
    svg = _charts.bars(["a", "b"], [None, 0.5], xlabel="x (unit)", title="t")
    assert "n/a" in svg


def test_the_lineage_diagram_names_each_step() -> None:
    steps = [{"stage": s, "items": ["x"], "seqs": []} for s in ("data", "training", "artifact", "evidence", "decision")]
    svg = _charts.lineage(steps)
    assert all(s.upper() in svg for s in ("DATA", "TRAINING", "ARTIFACT", "EVIDENCE", "DECISION"))
