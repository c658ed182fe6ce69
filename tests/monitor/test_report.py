"""report.html from real profiles of generated data, read back with html.parser."""

from __future__ import annotations

import base64
import logging
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from capture.profile import DatasetProfile
from monitor_job.report import render_report
from tests.monitor.test_quality import JOIN

EVIL = "<script>alert(1)</script>"
PNG = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """What the tests look at: tags, violations rows, column order, images per column."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.violation_rows: list[list[str]] = []
        self.order: list[str] = []  # data-column of sections and rest-table rows
        self.images: dict[str, list[str]] = {}  # column -> img srcs in its section
        self.text: list[str] = []
        self._section: str | None = None
        self._in_violations = False
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "table" and a.get("class") == "violations":
            self._in_violations = True
        if tag == "section" and "data-column" in a:
            self._section = a["data-column"]
            self.order.append(str(a["data-column"]))
            self.images[str(a["data-column"])] = []
        if tag == "tr" and "data-column" in a:
            self.order.append(str(a["data-column"]))
        if tag == "img" and self._section is not None:
            self.images[self._section].append(str(a.get("src")))
        if self._in_violations and tag == "tr":
            self._row = []
        if self._row is not None and tag == "td":
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._section = None
        if tag == "table":
            self._in_violations = False
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        if tag == "tr" and self._row is not None:
            if self._row:
                self.violation_rows.append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def _profile(columns: dict[str, Any], n: int) -> DatasetProfile:
    prof = DatasetProfile()
    prof.update_columns(columns, n)
    return prof


@pytest.fixture
def scene() -> dict[str, Any]:
    rng = np.random.default_rng(7)
    nb, nc = 4000, 1500
    cats = np.array(["de", "fr", "us", "$x^$ math", "a&b"])
    base = _profile(
        {
            "price": rng.normal(10, 2, nb),
            "user_ltv": rng.lognormal(3, 1, nb),
            "country": rng.choice(cats, nb, p=[0.4, 0.3, 0.2, 0.05, 0.05]).tolist(),
            EVIL: rng.normal(0, 1, nb),
            "gone": rng.normal(0, 1, nb),
            "user_id": [f"u{i}" for i in range(nb)],
            "empty": [None] * nb,
        },
        nb,
    )
    country = rng.choice(cats, nc).tolist()
    country[:300] = [EVIL] * 300
    cur = _profile(
        {
            "price": rng.normal(11, 2, nc),
            "lookups.user_ltv": rng.lognormal(3, 1, nc),
            "country": country,
            EVIL: rng.normal(0, 1, nc),
            "new_col": rng.normal(0, 1, nc),
            "user_id": [f"u{i}" for i in range(nc)],
            "empty": [None] * nc,
        },
        nc,
    )
    prev = _profile({"price": rng.normal(10.2, 2, nc - 300), "country": country[300:]}, nc - 300)
    violations = [
        {
            "feature_name": EVIL,
            "constraint_check_type": "baseline_drift_check",
            "description": f"KS distance 0.2 & more <b>{EVIL}</b>",
        },
        {
            "feature_name": "price",
            "constraint_check_type": "baseline_drift_check",
            "description": "KS distance 0.19 from the baseline exceeds 0.1",
        },
        {
            "feature_name": "gone",
            "constraint_check_type": "missing_column_check",
            "description": "column is in the baseline, not here",
        },
        {
            "feature_name": "(dataset)",
            "constraint_check_type": "volume_check",
            "description": "0.5x the previous window",
            "segment": "model.version=2",
        },
    ]

    def num(ks: float) -> dict[str, Any]:
        return {"ks": ks, "psi": 0.3, "js": 0.2, "threshold": 0.1, "noise_floor": 0.05}

    columns = [
        {
            "name": "country",
            "baseline_name": "country",
            "kind": "categorical",
            "origin": "features",
            "previous_drift": None,
            "drift": {"linf": 0.3, "unseen_share": 0.2, "threshold": 0.1, "noise_floor": 0.04},
        },
        {
            "name": "lookups.user_ltv",
            "baseline_name": "user_ltv",
            "kind": "numeric",
            "origin": "lookups",
            "drift": num(0.02),
            "previous_drift": None,
        },
        {
            "name": "price",
            "baseline_name": "price",
            "kind": "numeric",
            "origin": "features",
            "drift": num(0.19),
            "previous_drift": num(0.15),
        },
        {
            "name": "user_id",
            "baseline_name": "user_id",
            "kind": "id_like",
            "origin": "features",
            "drift": None,
            "previous_drift": None,
        },
        {
            "name": "empty",
            "baseline_name": "empty",
            "kind": "numeric",
            "origin": "features",
            "drift": {"ks": None, "threshold": 0.1},
            "previous_drift": None,
        },
        {
            "name": EVIL,
            "baseline_name": EVIL,
            "kind": "numeric",
            "origin": "features",
            "drift": num(0.2),
            "previous_drift": None,
        },
        {
            "name": "gone",
            "baseline_name": "gone",
            "kind": "missing",
            "origin": "features",
            "drift": None,
            "previous_drift": None,
        },
        {
            "name": "new_col",
            "baseline_name": None,
            "kind": "extra",
            "origin": "features",
            "drift": None,
            "previous_drift": None,
        },
    ]
    summary = {
        "model": "ranker<x>",
        "window_start": "2026-01-01T10:00:00+00:00",
        "window_end": "2026-01-01T11:00:00+00:00",
        "rows": nc,
        "baseline_rows": nb,
        "records": 700,
        "objects": 3,
        "bad_lines": 0,
        "status": "violations",
        "notes": ["a note with <tags> & ampersands"],
    }
    return {
        "baseline": base,
        "current": cur,
        "previous": prev,
        "violations": violations,
        "columns": columns,
        "summary": summary,
    }


def test_report_structure(tmp_path: Path, scene: dict[str, Any]) -> None:
    out = render_report(tmp_path / "report.html", **scene)
    assert out == tmp_path / "report.html"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temp file left
    page = parse(out)

    # the violations table holds exactly the violations given, in order
    rows = page.violation_rows
    assert len(rows) == len(scene["violations"])
    for row, v in zip(rows, scene["violations"], strict=True):
        seg = v.get("segment", "")
        assert row == [v["feature_name"], v["constraint_check_type"], seg, v["description"]]

    # every column, once, violated ones first, otherwise in the given order
    names = [c["name"] for c in scene["columns"]]
    flagged = {v["feature_name"] for v in scene["violations"]}
    expected = [n for n in names if n in flagged] + [n for n in names if n not in flagged]
    assert (
        page.order
        == expected
        == ["price", EVIL, "gone", "country", "lookups.user_ltv", "user_id", "empty", "new_col"]
    )

    # one inline PNG per plotted column; none for missing/extra/id-like/all-null columns
    plotted = {"price", EVIL, "country", "lookups.user_ltv"}
    for name, srcs in page.images.items():
        assert len(srcs) == (1 if name in plotted else 0), name
        for src in srcs:
            assert src.startswith("data:image/png;base64,")
            assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG)

    # self-contained and escaped: no script, no external reference, user text intact as text
    assert not [t for t, _ in page.tags if t in ("script", "link", "iframe", "object")]
    for _, attrs in page.tags:
        for key in ("src", "href"):
            value = attrs.get(key)
            assert value is None or value.startswith(("data:", "#")), value
    raw = out.read_text(encoding="utf-8")
    assert "<script" not in raw and "&lt;script&gt;" in raw
    text = "".join(page.text)
    assert EVIL in text  # the category value and column name, shown as text
    assert "a&b" in text and "$x^$ math" in text and "ranker<x>" in text
    assert "a note with <tags> & ampersands" in text
    assert "baseline: user_ltv" in text


def test_category_shares_shown(tmp_path: Path, scene: dict[str, Any]) -> None:
    page = parse(render_report(tmp_path / "r.html", **scene))
    text = "".join(page.text)
    # the window's new category (not in the baseline) shows beside the baseline's top ones
    cur = scene["current"].columns["country"]
    share = 300 / (cur.count - cur.nulls)
    assert f"{share:.2%}" in text
    assert "OTHER" in text


def test_max_plots_caps_and_says_so(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 500
    data = {f"f{i:02d}": rng.normal(0, 1, n) for i in range(30)}
    base, cur = _profile(data, n), _profile(data, n)
    columns = [
        {
            "name": k,
            "baseline_name": k,
            "kind": "numeric",
            "origin": "features",
            "drift": {"ks": 0.01, "threshold": 0.1},
            "previous_drift": None,
        }
        for k in data
    ]
    violations = [
        {"feature_name": "f29", "constraint_check_type": "data_type_check", "description": "d"}
    ]
    out = render_report(
        tmp_path / "r.html",
        baseline=base,
        current=cur,
        violations=violations,
        columns=columns,
        summary={},
        max_plots=5,
    )
    page = parse(out)
    assert page.order == ["f29", *[f"f{i:02d}" for i in range(29)]]
    assert sum(len(v) for v in page.images.values()) == 5
    assert list(page.images) == ["f29", "f00", "f01", "f02", "f03"]
    text = "".join(page.text)
    assert "max_plots=5" in text and "other 25" in text
    with pytest.raises(ValueError, match="max_plots"):
        render_report(
            tmp_path / "x.html",
            baseline=base,
            current=cur,
            violations=[],
            columns=columns,
            summary={},
            max_plots=-1,
        )


def test_empty_window_and_null_columns(tmp_path: Path, scene: dict[str, Any]) -> None:
    empty = DatasetProfile()
    out = render_report(
        tmp_path / "r.html",
        baseline=scene["baseline"],
        current=empty,
        violations=[
            {
                "feature_name": "(dataset)",
                "constraint_check_type": "volume_check",
                "description": "no rows in the window",
            }
        ],
        columns=scene["columns"],
        summary={"status": "violations", "rows": 0},
        previous=empty,
    )
    page = parse(out)
    assert len(page.violation_rows) == 1
    assert set(page.order) == {c["name"] for c in scene["columns"]}
    # baseline-only sides still plot; nothing fails on the empty window
    assert page.images["price"] and page.images["country"]
    # and a report with nothing at all
    out2 = render_report(
        tmp_path / "r2.html", baseline=empty, current=empty, violations=[], columns=[], summary={}
    )
    page2 = parse(out2)
    assert page2.order == [] and "No violations." in "".join(page2.text)


@pytest.mark.slow
def test_many_columns_render_time(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """300 columns (2 numeric : 1 categorical): the default 200 plots, the rest as rows."""
    rng = np.random.default_rng(3)
    n = 2000
    letters = np.array(list("abcdefghij"))
    data: dict[str, Any] = {}
    for i in range(300):
        if i % 3 == 2:
            data[f"cat_{i:03d}"] = rng.choice(letters, n).tolist()
        else:
            data[f"num_{i:03d}"] = rng.normal(i % 7, 1, n)
    base, cur = _profile(data, n), _profile(data, n)
    columns = [
        {
            "name": k,
            "baseline_name": k,
            "kind": "numeric" if k.startswith("num") else "categorical",
            "origin": "features",
            "drift": {"ks": 0.01, "threshold": 0.1},
            "previous_drift": None,
        }
        for k in data
    ]
    caplog.set_level(logging.INFO, logger="monitor_job.report")
    started = time.perf_counter()
    out = render_report(
        tmp_path / "r.html",
        baseline=base,
        current=cur,
        violations=[],
        columns=columns,
        summary={"status": "clean"},
    )
    elapsed = time.perf_counter() - started
    page = parse(out)
    assert sum(len(v) for v in page.images.values()) == 200
    assert page.order == list(data)
    assert len(page.images) == 200  # sections; the other 100 are rows of the rest table
    assert any("200 plots" in r.getMessage() for r in caplog.records)
    logging.getLogger(__name__).info("300 columns rendered in %.1fs", elapsed)
    assert elapsed < 240  # a regression guard on a shared 2-core machine, not a benchmark


def test_odd_columns_render(tmp_path: Path) -> None:
    """Constant, huge-range, inf-only and wide categorical columns plot or say why not."""
    n = 400
    rng = np.random.default_rng(5)
    data: dict[str, Any] = {
        "constant": np.full(n, 3.0),
        "huge": np.array([1e308, -1e308] * (n // 2)),
        "tiny_spread": 1e17 + rng.integers(0, 3, n).astype(float),
        "inf_only": np.full(n, np.inf),
        "wide": [f"{'long label ' * 8}{i % 60} 漢字 🙂" for i in range(n)],
    }
    prof = _profile(data, n)
    kinds = {"wide": "categorical"}
    columns = [
        {
            "name": k,
            "baseline_name": k,
            "kind": kinds.get(k, "numeric"),
            "origin": "features",
            "drift": None,
            "previous_drift": None,
        }
        for k in data
    ]
    page = parse(
        render_report(
            tmp_path / "r.html",
            baseline=prof,
            current=prof,
            violations=[],
            columns=columns,
            summary={"status": "clean"},
        )
    )
    assert page.order == list(data)
    assert len(page.images["constant"]) == 1
    assert len(page.images["wide"]) == 1
    assert len(page.images["tiny_spread"]) == 1
    assert page.images["inf_only"] == []  # no finite number to draw
    assert page.images["huge"] == []
    text = "".join(page.text)
    assert "OTHER" in text and f"{'long label ' * 8}0 漢字 🙂" in text  # full value in the table
    assert "too wide to bin" in text  # the reason a plot is missing


def test_no_pyplot_and_bounded_figures(tmp_path: Path) -> None:
    """The report never imports pyplot (no backend choice, no global figure registry)
    and draws every plot into the same two figures, so memory stays flat."""
    import subprocess
    import sys

    code = f"""
import gc, sys
import numpy as np
from pathlib import Path
from matplotlib.figure import Figure
from capture.profile import DatasetProfile
from monitor_job.report import render_report
rng = np.random.default_rng(0)
data = {{f"n{{i}}": rng.normal(0, 1, 300) for i in range(12)}}
data.update({{f"c{{i}}": rng.choice(["a", "b"], 300).tolist() for i in range(12)}})
p = DatasetProfile(); p.update_columns(data, 300)
cols = [{{"name": k, "baseline_name": k, "kind": "numeric" if k[0] == "n" else "categorical",
         "origin": "features", "drift": None, "previous_drift": None}} for k in data]
render_report(Path({str(tmp_path / "r.html")!r}), baseline=p, current=p, violations=[],
              columns=cols, summary={{}})
gc.collect()
alive = sum(isinstance(o, Figure) for o in gc.get_objects())
print("pyplot" if "matplotlib.pyplot" in sys.modules else "no-pyplot", alive)
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
        check=True,
    ).stdout.split()
    assert out == ["no-pyplot", "0"]
    assert parse(tmp_path / "r.html").images["c11"]  # it did draw


def _quality_doc() -> dict[str, Any]:
    """evaluate() on a model right 90% of the time for a day, then 60%."""
    from monitor_job.quality import Pair, evaluate

    rng = np.random.default_rng(11)
    t0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    pairs = []
    for i in range(48 * 30):
        t = t0 + i * 120
        y = int(rng.integers(0, 2))
        right = rng.random() < (0.9 if i < 24 * 30 else 0.6)
        p = float(np.clip((0.8 if y else 0.2) if right else (0.3 if y else 0.7), 0, 1))
        pairs.append(Pair(f"e{i}", None, y, p, p, None, None, f"v{i % 2}", t, t + 60))
    join = JOIN
    cur = _profile({"prediction": [p.prediction for p in pairs]}, len(pairs))
    base = _profile({"prediction": [0.2, 0.8] * 50}, 100)
    return evaluate(
        pairs,
        join=join,
        holdout={"accuracy": 0.9, "roc_auc": 0.95},
        config=None,
        start=t0,
        end=t0 + 48 * 3600,
        baseline=base,
        constraints={},
        current=cur,
    )


def _quality_html(raw: str) -> str:
    start = raw.index('<section class="quality"')
    return raw[start : raw.index("</section>", start) + len("</section>")]


def test_model_quality_section(tmp_path: Path, scene: dict[str, Any]) -> None:
    quality = _quality_doc()
    assert [v["feature_name"] for v in quality["violations"]] == ["accuracy"]
    violations = scene["violations"] + quality["violations"]
    out = render_report(tmp_path / "r.html", **{**scene, "violations": violations}, quality=quality)
    raw = out.read_text(encoding="utf-8")
    # after the violations list, before the per-column sections
    assert raw.index('id="violations"') < raw.index('id="quality"') < raw.index("data-column=")
    section = Page()
    section.feed(_quality_html(raw))
    text = "".join(section.text)
    assert "Model quality" in text and "classification" in text
    # join counts, the labelled share as a percentage
    for figure in ("1,500", "1,440", "50", "48.0%", "another model", "matched no prediction"):
        assert figure in text, figure
    # metrics beside the holdout, the violated row highlighted like the violations
    m = quality["metrics"]
    assert f"{m['accuracy']:.4g}" in text and f"{m['roc_auc']:.4g}" in text
    assert f"{quality['deltas']['accuracy']:.4g}" in text
    violated = [a.get("data-metric") for t, a in section.tags if t == "tr" and a.get("class")]
    assert violated == ["accuracy"]
    assert any(t == "td" and a.get("class") == "n over" for t, a in section.tags)
    # per version, the bias table, the trend chart as an inline PNG
    assert "v0" in text and "v1" in text and "Prediction bias" in text
    assert f"{quality['bias']['current_mean']:.4g}" in text
    images = [str(a.get("src")) for t, a in section.tags if t == "img"]
    assert len(images) == 1 and images[0].startswith("data:image/png;base64,")
    assert base64.b64decode(images[0].split(",", 1)[1]).startswith(PNG)
    # the violation links to the section
    page = parse(out)
    assert ("a", {"href": "#quality"}) in page.tags
    assert len(page.violation_rows) == len(violations)


def test_model_quality_section_robust(tmp_path: Path, scene: dict[str, Any]) -> None:
    # without quality: no section, as before
    raw = render_report(tmp_path / "a.html", **scene).read_text(encoding="utf-8")
    assert 'id="quality"' not in raw and "Model quality" not in raw
    # no labelled predictions: the join and the note, no chart
    empty = {
        "task": None,
        "pairs": 0,
        "join": {"labels": 0, "matched": 0},
        "metrics": {},
        "by_version": {},
        "series": [],
        "holdout": None,
        "deltas": {},
        "violations": [],
        "notes": ["no labels received in the window: model quality not measured"],
        "bias": {},
    }
    raw = render_report(tmp_path / "b.html", **scene, quality=empty).read_text(encoding="utf-8")
    section = Page()
    section.feed(_quality_html(raw))
    text = "".join(section.text)
    assert "no labels received in the window: model quality not measured" in text
    assert not [t for t, _ in section.tags if t == "img"]
    # odd values: missing keys, None, wrong types, a series of junk render as dashes
    odd: dict[str, Any] = {
        "task": "regression",
        "join": None,
        "metrics": {"n": 300, "mae": None, "rmse": "<b>x</b>", "bias": float("nan")},
        "holdout": {"mae": None, EVIL: 1.0},
        "deltas": None,
        "by_version": {"v<1>": None},
        "series": [
            None,
            {"start": "not a time", "mae": 1.0},
            {"start": "2026-01-01T00:00:00+00:00"},
        ],
        "bias": {"column": EVIL, "current_mean": None},
        "notes": [EVIL],
    }
    raw = render_report(tmp_path / "c.html", **scene, quality=odd).read_text(encoding="utf-8")
    assert "<script" not in raw
    section = Page()
    section.feed(_quality_html(raw))
    text = "".join(section.text)
    assert EVIL in text and "v<1>" in text and "\u2013" in text


def test_summary_dicts_read_as_key_value_pairs() -> None:
    from monitor_job.report import DASH, _summary

    html = _summary({"rows": 500, "traffic_rows": 2000, "sampled_rows": {"0.25": 500}, "x": {}})
    assert "<th>traffic rows</th><td>2,000</td>" in html
    assert "<th>sampled rows</th><td>0.25: 500</td>" in html
    assert f"<th>x</th><td>{DASH}</td>" in html
