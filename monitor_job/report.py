"""The human report of a monitor run: one self-contained ``report.html``.

Order: the run's summary, the violations table, then one section per
compared column, columns with a violation first (otherwise in the order
given). A numeric column gets its CDF and density, baseline vs current (and
the previous window when given), drawn from the KLL sketches; a categorical
one gets side-by-side bars of the baseline's top categories (plus the
window's most frequent new ones) and OTHER. Beside each plot: the drift
figures and the column's stats on each side. Missing and extra columns get
a line; id-like columns get their stats only (an id's distribution says
nothing).

Invariants:

- Self-contained: no external CSS, script, font or image; plots are inline
  base64 PNGs. Nothing from the data reaches the HTML unescaped (column
  names, category values, summary values and descriptions are user data).
- Bounded work: at most ``max_plots`` plots (default 200, the columns
  needing attention first); the rest become rows of a table at the end, and
  the report says so. Plots reuse two matplotlib figures of the object API
  (``matplotlib.figure.Figure``, never pyplot), so no backend is selected,
  no global figure registry grows, and the caller's pyplot state is left
  alone; matplotlib is imported only when a report is rendered. Cost:
  about 90 ms a plot on a busy 2-core machine (text layout dominates), so
  the default 200 plots take ~20 s; the HTML is ~22 KB a plot.
- Empty sides (a column of nulls only, a window without rows) render as
  "no values", and a column that cannot be drawn (values spanning beyond
  float range) says why in place of its plot; neither fails the report.

Model quality (``quality``: the dict ``monitor_job.quality.evaluate``
returns), between the violations and the columns: the label join's counts,
the metrics beside the holdout's (rows with a ``model_quality_check``
violation highlighted), the metrics per model version, a trend chart of the
task's headline metric (per bucket and cumulative, the holdout as a dashed
line), the prediction bias and the notes. Any key may be missing or None:
it renders as a dash.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import os
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from capture.profile import ColumnProfile, DatasetProfile
from monitor_job.quality import HEADLINE, real_number

log = logging.getLogger(__name__)

MAX_PLOTS = 200
TOP_CATEGORIES = 15  # baseline categories in a bar chart
NEW_CATEGORIES = 5  # plus the window's most frequent categories the baseline's top lacks
_LABEL_CHARS = 40
SIDES = (("baseline", "#4c72b0"), ("current", "#dd8452"), ("previous", "#8c8c8c"))
DRIFT_KEYS = ("ks", "psi", "js", "linf", "unseen_share", "noise_floor", "threshold")
PLOTTED_KINDS = ("numeric", "categorical")
DASH = "\u2013"  # shown for a missing figure
QUALITY_CHECK = "model_quality_check"
QUALITY_JOIN = (
    ("labels", "labels"),
    ("matched", "matched"),
    ("unmatched", "matched no prediction"),
    ("duplicates", "repeats (last one kept)"),
    ("wrong_model", "for another model's prediction"),
    ("ambiguous", "ambiguous (several rows, no item id)"),
    ("invalid", "invalid"),
    ("labelled_share", "share of predictions labelled"),
)
QUALITY_METRICS = {
    "classification": (
        "accuracy",
        "precision",
        "recall",
        "f1",
        "roc_auc",
        "log_loss",
        "calibration_error",
        "positive_rate",
        "label_positive_rate",
        "mean_score",
    ),
    "regression": ("mae", "rmse", "mape", "bias", "mean_prediction", "mean_label"),
    "ranking": ("ndcg_at_k", "mrr", "hit_rate_at_k"),
}
VERSION_METRICS = {
    "classification": ("accuracy", "precision", "recall", "f1", "roc_auc"),
    "regression": ("mae", "rmse", "bias"),
    "ranking": ("ndcg_at_k", "mrr", "hit_rate_at_k"),
}

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}
h1 .status{font-size:.6em;padding:.15em .5em;border-radius:.3em;color:#fff;vertical-align:middle}
.clean{background:#2e7d32}.violations{background:#c62828}.other{background:#777}
table{border-collapse:collapse;margin:.4em 0}th,td{border:1px solid #ddd;padding:.2em .5em;
text-align:left;vertical-align:top}th{background:#f4f4f4}td.n{text-align:right}
.over{color:#c62828;font-weight:bold}section.column{border-top:1px solid #ccc;padding:.4em 0}
section.column.violated h3{color:#c62828}.row{display:flex;gap:1em;flex-wrap:wrap}
tr.violated th{color:#c62828}
small{color:#666;font-weight:normal}.key span{display:inline-block;width:1em;height:.7em;
margin:0 .3em 0 1em}.note{color:#555}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any) -> str:
    if value is None:
        return DASH
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return _e(value)


def _label(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _LABEL_CHARS else flat[: _LABEL_CHARS - 1] + "…"


def _present(col: ColumnProfile) -> int:
    """Values with a categorical key (not null, not NaN), as drift.categorical counts them."""
    return max(0, col.count - col.nulls - col.nan)


class _Plotter:
    """Draws into two reused figures; returns base64 PNG data."""

    def __init__(self) -> None:
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        self.num = Figure(figsize=(7.0, 2.2), dpi=80)
        self.cdf_ax, self.den_ax = self.num.subplots(1, 2)
        self.lines: dict[str, tuple[Any, Any]] = {}
        for ax, title in ((self.cdf_ax, "CDF"), (self.den_ax, "density (1st-99th pct)")):
            ax.set_title(title, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.xaxis.set_major_locator(MaxNLocator(5))
            ax.yaxis.set_major_locator(MaxNLocator(4))
        for side, color in SIDES:
            dash = "--" if side == "previous" else "-"
            (c,) = self.cdf_ax.plot([], [], color=color, lw=1.3, ls=dash)
            (d,) = self.den_ax.plot([], [], color=color, lw=1.3, ls=dash, drawstyle="steps-post")
            self.lines[side] = (c, d)
        self.num.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.88, wspace=0.18)
        self.cat = Figure(figsize=(7.0, 2.0), dpi=80)
        self.cat_ax = self.cat.add_subplot()
        self.cat_ax.tick_params(labelsize=7)
        self.cat_ax.xaxis.set_major_locator(MaxNLocator(6))
        self.cat_ax.set_xlabel("share of present values", fontsize=7)

    @staticmethod
    def _png(fig: Any) -> str:
        buf = io.BytesIO()
        with warnings.catch_warnings():  # glyphs the default font lacks (CJK, emoji)
            warnings.simplefilter("ignore", UserWarning)
            fig.savefig(buf, format="png")
        return base64.b64encode(buf.getvalue()).decode("ascii")

    def numeric(self, sides: dict[str, ColumnProfile]) -> str | None:
        have = {s: p for s, p in sides.items() if p.numeric_count > 0}
        if not have:
            return None
        lo = min(p.quantiles([0.01])[0] for p in have.values())
        hi = max(p.quantiles([0.99])[0] for p in have.values())
        if not hi > lo:  # a constant column
            pad = max(abs(lo) * 0.05, 0.5)
            lo, hi = lo - pad, hi + pad
        if not math.isfinite(hi - lo):  # a span beyond float range cannot be binned
            raise ValueError(f"values span [{lo:.3g}, {hi:.3g}], too wide to bin")
        grid = np.linspace(lo, hi, 128)
        edges = np.unique(np.linspace(lo, hi, 25))  # unique: huge values, tiny spread
        if edges.size < 2 or not np.isfinite(edges[-1] - edges[0]):
            return None
        widths = np.diff(edges)
        top = 0.0
        for side, (c_line, d_line) in self.lines.items():
            prof = have.get(side)
            c_line.set_visible(prof is not None)
            d_line.set_visible(prof is not None)
            if prof is None:
                continue
            cdf = prof.cdf(grid.tolist())[: len(grid)]
            dens = np.asarray(prof.pmf(edges.tolist()), dtype=float)[1 : len(edges)] / widths
            top = max(top, float(dens.max()))
            c_line.set_data(grid, cdf)
            d_line.set_data(edges, np.append(dens, dens[-1]))
        # Limits set by hand: autoscale would keep the previous column's y range.
        self.cdf_ax.set_xlim(lo, hi)
        self.den_ax.set_xlim(lo, hi)
        self.cdf_ax.set_ylim(-0.02, 1.02)
        self.den_ax.set_ylim(0, top * 1.08 if top > 0 else 1.0)
        return self._png(self.num)

    def categorical(self, cats: list[str], shares: dict[str, list[float]]) -> str | None:
        if not cats or not shares:
            return None
        from matplotlib.collections import PolyCollection

        ax = self.cat_ax
        for old in list(ax.collections):  # the previous column's bars
            old.remove()
        n, k = len(cats), len(shares)
        self.cat.set_size_inches(7.0, 0.6 + 0.16 * n * max(k, 2) / 2)
        height = 0.8 / k
        colors = dict(SIDES)
        top = 0.0
        for i, (side, values) in enumerate(shares.items()):
            # One collection per side: far cheaper than barh's artist per bar.
            y0 = np.arange(n) + (i - k / 2) * height
            verts = [
                [(0.0, a), (v, a), (v, a + height), (0.0, a + height)]
                for a, v in zip(y0.tolist(), values, strict=True)
            ]
            ax.add_collection(PolyCollection(verts, facecolors=colors[side], edgecolors="none"))
            top = max(top, *values)
        ax.set_yticks(np.arange(n), [_label(c) for c in cats], parse_math=False)
        ax.set_ylim(n - 0.5, -0.5)  # first category on top
        ax.set_xlim(0, top * 1.05 if top > 0 else 1.0)
        bottom = 0.5 / self.cat.get_figheight() + 0.02  # room for the axis label
        self.cat.subplots_adjust(left=0.3, right=0.98, bottom=bottom, top=0.98)
        return self._png(self.cat)


def _category_shares(sides: dict[str, ColumnProfile]) -> tuple[list[str], dict[str, list[float]]]:
    """The categories to draw and each side's share of them (OTHER last)."""
    have = {s: p for s, p in sides.items() if _present(p) > 0}
    ref = next((have[s] for s in ("baseline", "previous", "current") if s in have), None)
    if ref is None:
        return [], {}
    cats = [c for c, _ in ref.top(TOP_CATEGORIES)]
    if "current" in have and have["current"] is not ref:
        known = set(cats)
        cats += [c for c, _ in have["current"].top(TOP_CATEGORIES) if c not in known][
            :NEW_CATEGORIES
        ]
    shares: dict[str, list[float]] = {}
    for side, prof in have.items():
        present = _present(prof)
        values = [min(1.0, max(0, int(prof.freq.get_estimate(c))) / present) for c in cats]
        shares[side] = [*values, max(0.0, 1.0 - sum(values))]
    return [*cats, "OTHER"], shares


def _stats_table(sides: dict[str, ColumnProfile]) -> str:
    if not sides:
        return ""
    head = "".join(f"<th>{s}</th>" for s in sides)
    rows = []
    fields: list[tuple[str, Any]] = [
        ("count", lambda p: p.count),
        ("nulls", lambda p: p.nulls),
        ("NaN", lambda p: p.nan),
        ("inf", lambda p: p.inf),
        ("types", lambda p: ", ".join(f"{k} {n:,}" for k, n in sorted(p.types.items()) if n)),
        ("inferred", lambda p: p.inferred_type()),
        ("min", lambda p: p.min),
        ("max", lambda p: p.max),
        ("mean", lambda p: p.mean),
        ("std", lambda p: p.std),
        ("distinct (est.)", lambda p: round(p.distinct()) if p.count > p.nulls else 0),
    ]
    for name, get in fields:
        cls = "" if name in ("types", "inferred") else ' class="n"'
        cells = "".join(f"<td{cls}>{_num(get(p))}</td>" for p in sides.values())
        rows.append(f"<tr><th>{name}</th>{cells}</tr>")
    return f'<table class="stats"><tr><th></th>{head}</tr>{"".join(rows)}</table>'


def _drift_table(col: dict[str, Any]) -> str:
    sets: list[tuple[str, dict[str, Any]]] = []
    for title, key in (("vs baseline", "drift"), ("vs previous", "previous_drift")):
        d = col.get(key)
        if isinstance(d, dict):
            sets.append((title, d))
    if not sets:
        return ""
    judged = "ks" if col.get("kind") == "numeric" else "linf"
    head = "".join(f"<th>{t}</th>" for t, _ in sets)
    rows = []
    for key in DRIFT_KEYS:
        if all(d.get(key) is None for _, d in sets):
            continue
        cells = []
        for _, d in sets:
            v, t = d.get(key), d.get("threshold")
            over = (
                key == judged
                and isinstance(v, float | int)
                and isinstance(t, float | int)
                and v > t
            )
            cls = ' class="n over"' if over else ' class="n"'
            cells.append(f"<td{cls}>{_num(v)}</td>")
        rows.append(f"<tr><th>{key}</th>{''.join(cells)}</tr>")
    return f'<table class="drift"><tr><th></th>{head}</tr>{"".join(rows)}</table>'


def _share_table(cats: list[str], shares: dict[str, list[float]]) -> str:
    head = "".join(f"<th>{s}</th>" for s in shares)
    rows = "".join(
        f"<tr><td>{_e(c)}</td>"
        + "".join(f'<td class="n">{v[i]:.2%}</td>' for v in shares.values())
        + "</tr>"
        for i, c in enumerate(cats)
    )
    return f'<table class="shares"><tr><th>category</th>{head}</tr>{rows}</table>'


def _summary(summary: dict[str, Any]) -> str:
    rows = []
    for key, value in summary.items():
        if key == "status":
            continue
        if isinstance(value, list | tuple):
            text = "<br>".join(_e(v) for v in value) or DASH
        elif isinstance(value, dict):
            text = ", ".join(f"{_e(k)}: {_num(v)}" for k, v in value.items()) or DASH
        else:
            text = _num(value)
        rows.append(f"<tr><th>{_e(key.replace('_', ' '))}</th><td>{text}</td></tr>")
    return f'<table class="summary">{"".join(rows)}</table>'


def _violations(
    violations: Sequence[dict[str, Any]], anchors: dict[str, str], quality: bool = False
) -> str:
    if not violations:
        return "<p>No violations.</p>"
    seg = any(v.get("segment") for v in violations)
    head = "<th>feature</th><th>check</th>" + ("<th>segment</th>" if seg else "")
    rows = []
    for v in violations:
        name = str(v.get("feature_name", ""))
        cell = _e(name)
        if quality and v.get("constraint_check_type") == QUALITY_CHECK:
            cell = f'<a href="#quality">{cell}</a>'
        elif name in anchors:
            cell = f'<a href="#{anchors[name]}">{cell}</a>'
        seg_cell = f"<td>{_e(v.get('segment') or '')}</td>" if seg else ""
        rows.append(
            f"<tr><td>{cell}</td><td>{_e(v.get('constraint_check_type', ''))}</td>"
            f"{seg_cell}<td>{_e(v.get('description', ''))}</td></tr>"
        )
    return (
        f'<table class="violations"><thead><tr>{head}<th>description</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _order(
    columns: Iterable[dict[str, Any]], violations: Sequence[dict[str, Any]]
) -> list[tuple[dict[str, Any], bool]]:
    flagged = {str(v.get("feature_name")) for v in violations}
    tagged = [
        (c, str(c.get("name")) in flagged or (c.get("baseline_name") or "") in flagged)
        for c in columns
    ]
    return [t for t in tagged if t[1]] + [t for t in tagged if not t[1]]


def _sides(
    col: dict[str, Any],
    baseline: DatasetProfile,
    current: DatasetProfile,
    previous: DatasetProfile | None,
) -> dict[str, ColumnProfile]:
    name, base_name = str(col.get("name")), col.get("baseline_name")
    found = {
        "baseline": baseline.columns.get(str(base_name)) if base_name else None,
        "current": current.columns.get(name),
        "previous": previous.columns.get(name) if previous is not None else None,
    }
    return {s: p for s, p in found.items() if p is not None}


def _heading(col: dict[str, Any], anchor: str, violated: bool) -> str:
    name, base_name = str(col.get("name")), col.get("baseline_name")
    extra = f" · baseline: {_e(base_name)}" if base_name and base_name != name else ""
    cls = "column violated" if violated else "column"
    return (
        f'<section class="{cls}" id="{anchor}" data-column="{_e(name)}">'
        f"<h3>{_e(name)} <small>{_e(col.get('kind', '?'))} · {_e(col.get('origin', '?'))}"
        f"{extra}</small></h3>"
    )


def _section(
    col: dict[str, Any],
    anchor: str,
    violated: bool,
    sides: dict[str, ColumnProfile],
    plotter: _Plotter | None,
) -> str:
    """One column's section; ``plotter`` None means "no plot for this one"."""
    kind = col.get("kind")
    out = [_heading(col, anchor, violated)]
    if kind == "missing":
        out.append("<p>In the baseline, not in this window.</p></section>")
        return "".join(out)
    if kind == "extra":
        out.append("<p>In this window, not in the baseline.</p></section>")
        return "".join(out)
    image, shares_html, failed = None, "", ""
    cats: list[str] = []
    shares: dict[str, list[float]] = {}
    if kind == "categorical":
        cats, shares = _category_shares(sides)
        shares_html = _share_table(cats, shares) if cats else ""
    try:
        if kind == "numeric" and plotter is not None:
            image = plotter.numeric(sides)
        elif kind == "categorical" and plotter is not None:
            image = plotter.categorical(cats, shares)
    except (ValueError, ArithmeticError, RuntimeError) as exc:  # one odd column, not the report
        log.warning("report: no plot for column %r: %s", col.get("name"), exc)
        failed = f" (plotting failed: {exc})"
    out.append('<div class="row">')
    if image is not None:
        alt = _e(f"distribution of {col.get('name')}")
        out.append(f'<img src="data:image/png;base64,{image}" alt="{alt}">')
    elif kind in PLOTTED_KINDS:
        out.append(f'<p class="note">No values to plot{_e(failed)}.</p>')
    out.append(f"<div>{_drift_table(col)}{_stats_table(sides)}</div>{shares_html}</div>")
    out.append("</section>")
    return "".join(out)


def _rest_table(rest: list[tuple[dict[str, Any], bool, dict[str, ColumnProfile]]]) -> str:
    head = "".join(
        f"<th>{h}</th>"
        for h in ("column", "baseline column", "kind", "origin", *DRIFT_KEYS[:5], "threshold")
    )
    head += "<th>rows (current)</th><th>nulls (current)</th>"
    rows = []
    for col, violated, sides in rest:
        drift = col.get("drift")
        d: dict[str, Any] = drift if isinstance(drift, dict) else {}
        cur = sides.get("current")
        figures = "".join(
            f'<td class="n">{_num(d.get(k))}</td>' for k in (*DRIFT_KEYS[:5], "threshold")
        )
        cls = ' class="violated"' if violated else ""
        rows.append(
            f'<tr{cls} data-column="{_e(col.get("name"))}"><td>{_e(col.get("name"))}</td>'
            f"<td>{_e(col.get('baseline_name') or DASH)}</td><td>{_e(col.get('kind', '?'))}</td>"
            f"<td>{_e(col.get('origin', '?'))}</td>{figures}"
            f'<td class="n">{_num(cur.count if cur else None)}</td>'
            f'<td class="n">{_num(cur.nulls if cur else None)}</td></tr>'
        )
    return f'<table class="rest"><tr>{head}</tr>{"".join(rows)}</table>'


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _or_nan(value: Any) -> float:
    x = real_number(value)
    return math.nan if x is None else x


def _share(value: Any) -> str:
    x = real_number(value)
    return DASH if x is None else f"{x:.1%}"


def _headline(task: str, metrics: dict[str, Any], holdout: dict[str, Any]) -> str | None:
    """The metric drawn over time: the task's first with a value, one with a holdout first."""
    have = [m for m in HEADLINE.get(task, ()) if real_number(metrics.get(m)) is not None]
    with_holdout = [m for m in have if real_number(holdout.get(m)) is not None]
    names = with_holdout or have
    return names[0] if names else None


def _quality_chart(series: Any, metric: str, holdout: float | None) -> str | None:
    """The metric per bucket and cumulative over time; None when nothing to draw."""
    starts: list[float] = []
    per: list[float] = []
    cum: list[float] = []
    for b in series if isinstance(series, list) else []:
        if not isinstance(b, Mapping):
            continue
        try:
            starts.append(datetime.fromisoformat(str(b.get("start"))).timestamp())
        except ValueError:
            continue
        per.append(_or_nan(b.get(metric)))
        cum.append(_or_nan(_mapping(b.get("cumulative")).get(metric)))
    if all(math.isnan(v) for v in per + cum):
        return None
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    first = min(starts)
    span = max(starts) - first
    unit, size = ("days", 86400.0) if span > 2 * 86400 else ("hours", 3600.0)
    xs = [(t - first) / size for t in starts]
    origin = datetime.fromtimestamp(first, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    fig = Figure(figsize=(7.0, 2.2), dpi=80)
    ax = fig.add_subplot()
    colors = dict(SIDES)
    ax.plot(xs, per, color=colors["current"], lw=1.3, marker="o", ms=3, label="per bucket")
    ax.plot(xs, cum, color=colors["baseline"], lw=1.3, label="cumulative")
    if holdout is not None:
        ax.axhline(holdout, color=colors["previous"], lw=1.0, ls="--", label="holdout")
    ax.set_title(f"{metric} over time", fontsize=8)
    ax.set_xlabel(f"{unit} since {origin} (bucket start)", fontsize=7)
    ax.tick_params(labelsize=7)
    ax.xaxis.set_major_locator(MaxNLocator(8))
    ax.yaxis.set_major_locator(MaxNLocator(4))
    ax.legend(fontsize=7, frameon=False)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.2, top=0.88)
    return _Plotter._png(fig)


def _quality_join(join: dict[str, Any]) -> str:
    rows = "".join(
        f'<tr><th>{title}</th><td class="n">'
        f"{_share(join.get(key)) if key == 'labelled_share' else _num(join.get(key))}</td></tr>"
        for key, title in QUALITY_JOIN
    )
    return f'<h3>Labels joined</h3><table class="join">{rows}</table>'


def _quality_metrics(
    task: str,
    metrics: dict[str, Any],
    holdout: dict[str, Any],
    deltas: dict[str, Any],
    flagged: set[str],
) -> str:
    names = list(QUALITY_METRICS.get(task, ()))
    names += [str(m) for m in holdout if m not in names]
    rows = []
    for m in names:
        over = m in flagged
        cls = ' class="n over"' if over else ' class="n"'
        row_cls = ' class="violated"' if over else ""
        rows.append(
            f'<tr{row_cls} data-metric="{_e(m)}"><th>{_e(m)}</th>'
            f"<td{cls}>{_num(metrics.get(m))}</td>"
            f'<td class="n">{_num(holdout.get(m))}</td><td class="n">{_num(deltas.get(m))}</td>'
            "</tr>"
        )
    head = "<tr><th>metric</th><th>current</th><th>holdout</th><th>delta</th></tr>"
    return f'<h3>Metrics</h3><table class="metrics">{head}{"".join(rows)}</table>'


def _quality_versions(task: str, versions: dict[str, Any]) -> str:
    cols = ("n", "invalid", *VERSION_METRICS.get(task, ()))
    head = "<th>version</th>" + "".join(f"<th>{_e(c)}</th>" for c in cols)
    rows = []
    for name, figures in versions.items():
        vm = _mapping(figures)
        cells = "".join(f'<td class="n">{_num(vm.get(c))}</td>' for c in cols)
        rows.append(f"<tr><td>{_e(name)}</td>{cells}</tr>")
    return (
        f'<h3>By model version</h3><table class="versions"><tr>{head}</tr>{"".join(rows)}</table>'
    )


def _quality_bias(bias: dict[str, Any]) -> str:
    head = (
        f"<tr><th></th><th>current <small>{_e(bias.get('column') or DASH)}</small></th>"
        f"<th>baseline <small>{_e(bias.get('baseline_column') or DASH)}</small></th>"
        "<th>shift</th></tr>"
    )
    rows = "".join(
        f'<tr><th>{title}</th><td class="n">{_num(bias.get("current_" + key))}</td>'
        f'<td class="n">{_num(bias.get("baseline_" + key))}</td>'
        f'<td class="n">{_num(bias.get(key + "_shift"))}</td></tr>'
        for key, title in (("mean", "mean"), ("positive_rate", "positive rate"))
    )
    return (
        "<h3>Prediction bias <small>(no labels needed)</small></h3>"
        f'<table class="bias">{head}{rows}</table>'
    )


def _quality(quality: Mapping[str, Any], violations: Sequence[dict[str, Any]]) -> str:
    """The model quality section (see the module docstring)."""
    task = str(quality.get("task") or "")
    metrics = _mapping(quality.get("metrics"))
    holdout = _mapping(quality.get("holdout"))
    own = quality.get("violations")
    flagged = {
        str(v.get("feature_name"))
        for v in [*(own if isinstance(own, list) else []), *violations]
        if isinstance(v, Mapping)
        and v.get("constraint_check_type") == QUALITY_CHECK
        and not v.get("segment")
    }
    extra = f" · k={_num(metrics.get('k'))}" if task == "ranking" else ""
    out = [
        '<section class="quality" id="quality">',
        f"<h2>Model quality <small>{_e(task or 'no task')} · "
        f"{_num(metrics.get('n'))} labelled predictions{extra}</small></h2>",
        _quality_join(_mapping(quality.get("join"))),
    ]
    if metrics:
        deltas = _mapping(quality.get("deltas"))
        out.append(_quality_metrics(task, metrics, holdout, deltas, flagged))
    versions = _mapping(quality.get("by_version"))
    if versions:
        out.append(_quality_versions(task, versions))
    metric = _headline(task, metrics, holdout)
    if metric is not None:
        image, failed = None, ""
        try:
            image = _quality_chart(quality.get("series"), metric, real_number(holdout.get(metric)))
        except (ValueError, ArithmeticError, RuntimeError) as exc:  # a chart, not the report
            log.warning("report: no model quality chart: %s", exc)
            failed = f" (plotting failed: {exc})"
        if image is not None:
            alt = _e(f"{metric} over time, per bucket and cumulative")
            out.append(f'<h3>Trend</h3><img src="data:image/png;base64,{image}" alt="{alt}">')
        else:
            out.append(f'<p class="note">No trend to plot{_e(failed)}.</p>')
    bias = _mapping(quality.get("bias"))
    if bias:
        out.append(_quality_bias(bias))
    notes = quality.get("notes")
    if isinstance(notes, list) and notes:
        out.append('<ul class="note">' + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    out.append("</section>")
    return "".join(out)


def render_report(
    out: Path,
    *,
    baseline: DatasetProfile,
    current: DatasetProfile,
    violations: list[dict[str, Any]],
    columns: list[dict[str, Any]],
    summary: dict[str, Any],
    previous: DatasetProfile | None = None,
    max_plots: int = MAX_PLOTS,
    quality: dict[str, Any] | None = None,
) -> Path:
    """Write the report to ``out`` (atomically) and return its path.

    >>> render_report(Path("out/report.html"), baseline=base, current=cur,
    ...               violations=result.violations, columns=result.columns, summary=summary)

    ``quality``: ``monitor_job.quality.evaluate``'s dict, for the model quality section.
    """
    if max_plots < 0:
        raise ValueError(f"max_plots must be >= 0, not {max_plots}")
    started = time.perf_counter()
    ordered = _order(columns, violations)
    anchors: dict[str, str] = {}
    for i, (col, _) in enumerate(ordered):
        anchors.setdefault(str(col.get("name")), f"col-{i}")
    plotter = _Plotter() if max_plots and ordered else None
    sections, rest = [], []
    plots = 0
    for i, (col, violated) in enumerate(ordered):
        sides = _sides(col, baseline, current, previous)
        kind = col.get("kind")
        if kind in PLOTTED_KINDS and plots >= max_plots:
            rest.append((col, violated, sides))
            continue
        html_part = _section(col, f"col-{i}", violated, sides, plotter)
        plots += "<img " in html_part
        sections.append(html_part)

    status = str(summary.get("status") or ("violations" if violations else "clean"))
    cls = status if status in ("clean", "violations") else "other"
    model = summary.get("model") or "all models"
    key = "".join(
        f'<span style="background:{c}"></span>{s}'
        for s, c in SIDES
        if s != "previous" or previous is not None
    )
    parts = [
        '<!doctype html><html lang="en"><head><meta charset="utf-8">',
        f"<title>modeltap monitor: {_e(model)}</title><style>{_CSS}</style></head><body>",
        f'<h1>Monitor report: {_e(model)} <span class="status {cls}">{_e(status)}</span></h1>',
        _summary(summary),
        f'<h2 id="violations">Violations ({len(violations)})</h2>',
        _violations(violations, anchors, quality is not None),
        _quality(quality, violations) if quality is not None else "",
        f"<h2>Columns ({len(ordered)})</h2>",
        f'<p class="key">Plots:{key} (previous window dashed).</p>',
    ]
    if rest:
        parts.append(
            f'<p class="note">{plots} columns are plotted (max_plots={max_plots}); '
            f'the other {len(rest)} are rows of the <a href="#rest">table at the end</a>.</p>'
        )
    parts += sections
    if rest:
        parts += ['<h2 id="rest">Columns without plots</h2>', _rest_table(rest)]
    parts.append("</body></html>\n")
    out = Path(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(parts), encoding="utf-8")
    os.replace(tmp, out)
    elapsed = time.perf_counter() - started
    log.info("report %s: %d columns, %d plots in %.1fs", out, len(ordered), plots, elapsed)
    return out
