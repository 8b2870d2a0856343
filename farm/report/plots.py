"""The report's charts, one function per chart, each returning a matplotlib `Figure`.

Object API on an explicit Agg canvas only: no pyplot state, never `show()`, no global backend
switch. Pure apart from `to_png_data_uri`, which renders into memory. Never touches a file.
Every function accepts empty or all-failed frames and then returns a figure that says "no data".
A latency measured with a delegate that did not apply is never drawn as that delegate's number:
it is either left out (thread scaling, speedups) or drawn in grey and labelled as not applied.
"""

from __future__ import annotations

import base64
import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter
from matplotlib.transforms import ScaledTranslation, blended_transform_factory
from PIL import Image

from farm import analysis
from farm.workers import Workers

_WIDTH_IN = 9.0
_ROW_IN = 0.26
_MAX_HEIGHT_IN = 40.0
_VERDICT_COLORS = {"faster": "tab:green", "slower": "tab:red", "no clear difference": "tab:gray"}
_GROUP_STYLE = {  # group -> (legend label, marker, face colour, edge colour)
    "ok": ("median, CI (verdict ok)", "o", "tab:blue", "tab:blue"),
    "no_verdict": ("no verdict (too few samples / failures)", "o", "white", "tab:orange"),
    "not_applied": ("delegate NOT applied (CPU latency)", "x", "tab:gray", "tab:gray"),
}


def no_data_figure(message: str = "no data") -> Figure:
    """A small figure that only says why there is nothing to plot."""
    fig = _figure(1.6, fixed=True)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.5, _text(message), ha="center", va="center", fontsize=12, color="0.35",
            transform=ax.transAxes)
    return fig


def latency_figure(summary: pd.DataFrame, *, title: str = "Median latency per case") -> Figure:
    """Median latency (ms) per case with its CI as error bars; invalid cases drawn apart."""
    rows = _with_values(summary, "median_us")
    if rows.empty:
        return no_data_figure("no data: no case has a successful sample")
    fig = _figure(_ROW_IN * len(rows) + 1.4, fixed=True)
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]
    groups = rows.apply(_latency_group, axis=1)
    for group, (label, marker, face, edge) in _GROUP_STYLE.items():
        mask = (groups == group).to_numpy()
        if not mask.any():
            continue
        sub = rows[mask]
        med = sub["median_us"].to_numpy(float) / 1e3
        ax.errorbar(med, y[mask], xerr=_err(sub, "median_us", "ci_low_us", "ci_high_us", 1e3),
                    fmt=marker, color=edge, mfc=face, mec=edge, ecolor=edge, capsize=3,
                    label=label)
    labels = [_case_text(r) for _, r in rows.iterrows()]
    ax.set_yticks(y, labels=labels, fontsize=8)
    _maybe_log(ax, rows["median_us"], axis="x")
    ax.set_xlabel("latency per inference (ms); bars: median CI at the level in the table")
    ax.set_title(_text(title))
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    _fit_labels(fig, labels)
    return fig


def thread_scaling_figure(scaling: pd.DataFrame, *, title: str = "Thread scaling") -> Figure:
    """Median latency vs threads, one line per quantization × delegate, one panel per model."""
    rows = _with_values(scaling, "median_us")
    if not rows.empty:
        rows = rows[rows["delegation_status"] != analysis.COVERAGE_NOT_APPLIED]
    if rows.empty:
        return no_data_figure("no data for thread scaling (failed, or delegate not applied)")
    models = list(dict.fromkeys(rows["model"]))
    fig = _figure(3.4, width=min(4.5 * len(models), 18.0), fixed=True)
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    _margins(fig, left_in=0.75, right_in=0.15, top_in=0.75, bottom_in=0.5, wspace=0.3)
    for ax, model in zip(axes, models, strict=True):
        sub = rows[rows["model"] == model]
        for (quant, delegate), line in sub.groupby(["quantization", "delegate"], sort=False):
            line = line.sort_values("threads")
            partial = (line["delegation_status"] == analysis.COVERAGE_PARTIAL).any()
            ax.errorbar(line["threads"].to_numpy(int), line["median_us"].to_numpy(float) / 1e3,
                        yerr=_err(line, "median_us", "ci_low_us", "ci_high_us", 1e3),
                        fmt="o--" if partial else "o-", capsize=3,
                        label=_text(f"{quant} / {delegate}" + (" (partial)" if partial else "")))
        ax.set_xticks(sorted(set(sub["threads"].astype(int))))
        ax.set_xlabel("threads")
        ax.set_ylabel("median latency (ms)")
        ax.set_title(_text(model), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(_text(title))
    return fig


def speedup_figure(speedups: pd.DataFrame, *,
                   title: str = "Speedup over the baseline (ratio > 1: faster)") -> Figure:
    """Forest plot of comparable speedups with CI whiskers and a line at 1."""
    rows = speedups
    if not rows.empty:
        rows = rows[(rows["verdict"] != "not comparable") & rows["ratio"].notna()]
    if rows.empty:
        return no_data_figure("no comparable pair: nothing to plot (see the table for why)")
    rows = rows.reset_index(drop=True)
    fig = _figure(_ROW_IN * len(rows) + 1.4, fixed=True)
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]
    for verdict, color in _VERDICT_COLORS.items():
        mask = (rows["verdict"] == verdict).to_numpy()
        if not mask.any():
            continue
        sub = rows[mask]
        ax.errorbar(sub["ratio"].to_numpy(float), y[mask],
                    xerr=_err(sub, "ratio", "ci_low", "ci_high", 1.0), fmt="D", color=color,
                    capsize=3, label=verdict)
    ax.axvline(1.0, color="black", linewidth=1)
    labels = [_text(f"{m} {q} vs {b} / {d} / t{t}") for m, q, b, d, t in zip(
        rows["model"], rows["quantization"], rows["baseline"], rows["delegate"],
        rows["threads"], strict=True)]
    _row_labels(ax, y, labels)
    ax.set_xscale("log")
    _plain_log_ticks(ax.xaxis)
    ax.set_xlabel("baseline median / variant median (log scale)")
    ax.set_title(_text(title))
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7)
    _fit_labels(fig, labels)
    return fig


def init_first_figure(summary: pd.DataFrame, *,
                      title: str = "Init and first inference (medians)") -> Figure:
    """Grouped bars: init time and first inference per case (ms, log scale)."""
    return _paired_bars(summary, ("init_median_us", "first_median_us"),
                        ("init", "first inference"), 1e3, "time (ms, log scale)", title,
                        log=True)


def memory_figure(summary: pd.DataFrame, *, title: str = "Memory (medians)") -> Figure:
    """Grouped bars: peak memory and overall memory footprint per case (MB)."""
    return _paired_bars(summary, ("peak_mem_median_mb", "mem_overall_median_mb"),
                        ("peak memory", "overall footprint"), 1.0, "MB", title, log=False)


def model_size_figure(variants: pd.DataFrame, *, title: str = "Model sizes") -> Figure:
    """Bars of each converted variant's size (MB); failed conversions are left to the table."""
    rows = variants
    if not rows.empty and "status" in rows.columns:
        rows = rows[rows["status"] == "ok"]
    rows = _with_values(rows, "size_bytes") if not rows.empty else rows
    if rows.empty:
        return no_data_figure("no converted variant")
    rows = rows.reset_index(drop=True)
    fig = _figure(_ROW_IN * len(rows) + 1.2, fixed=True)
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]
    ax.barh(y, rows["size_bytes"].to_numpy(float) / 1e6, color="tab:purple")
    labels = [_text(f"{r['model']}/{r['quantization']}") for _, r in rows.iterrows()]
    ax.set_yticks(y, labels=labels, fontsize=8)
    ax.set_xlabel("size (MB, 10^6 bytes)")
    ax.set_title(_text(title))
    ax.grid(axis="x", alpha=0.3)
    _fit_labels(fig, labels)
    return fig


#: Most points a time-series line gets; longer series are bucketed (mean line, min-max band).
MAX_SERIES_POINTS = 400


def sustained_figure(windows: pd.DataFrame, result: Mapping[str, Any], *,
                     title: str = "Sustained run") -> Figure:
    """Latency (top) and temperature with thermal status (bottom) over a sustained run.

    `windows` are one device x configuration's rows of `sustained.windows()`; `result` is its
    row of `sustained.analyze()`: the peak, the onset threshold, the onset and the tail median
    are drawn as reference lines so the numbers in the table can be checked by eye.
    """
    ok = windows[(windows["status"] == "ok") & (windows["latency_us"] > 0)] \
        if not windows.empty else windows
    if ok.empty:
        return no_data_figure("no successful sustained window")
    fig = _figure(5.2, fixed=True)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    _margins(fig, left_in=0.8, right_in=0.75, top_in=0.45, bottom_in=0.55, hspace=0.08)
    x = ok["offset_s"].to_numpy(float)
    _series(top, x, ok["latency_us"].to_numpy(float) / 1e3, color="tab:blue",
            label="window latency")
    peak = float(result.get("peak_us", math.nan)) / 1e3
    threshold = float(result.get("onset_threshold", math.nan))
    if not math.isnan(peak):
        top.axhline(peak, color="tab:green", linewidth=1, label="peak (first window)")
        if not math.isnan(threshold):
            top.axhline(peak * (1 + threshold), color="tab:orange", linewidth=1, linestyle="--",
                        label=f"onset threshold (+{threshold:.0%})")
    sustained = float(result.get("sustained_us", math.nan)) / 1e3
    tail = int(result.get("tail_windows") or 0)
    if not math.isnan(sustained) and tail > 0:
        start = x[-min(tail, len(x))]
        top.hlines(sustained, start, x[-1], color="tab:red", linewidth=2,
                   label=f"sustained (median of last {tail})")
    onset = result.get("onset_s")
    if onset is not None and not (isinstance(onset, float) and math.isnan(onset)):
        for ax in (top, bottom):
            ax.axvline(float(onset), color="tab:orange", linewidth=1, linestyle=":")
        top.annotate(f"onset {float(onset):.0f} s", (float(onset), peak), fontsize=7,
                     textcoords="offset points", xytext=(3, 3))
    top.set_ylabel("latency (ms)")
    top.grid(alpha=0.3)
    top.legend(fontsize=7, loc="best")
    temps = ok[["offset_s", "temp_c"]].dropna()
    if not temps.empty:
        _series(bottom, temps["offset_s"].to_numpy(float), temps["temp_c"].to_numpy(float),
                color="tab:red", label="hottest sensor (°C)")
    bottom.set_ylabel("temperature (°C)")
    bottom.set_xlabel("seconds since the sustained run started")
    bottom.grid(alpha=0.3)
    status = ok[["offset_s", "thermal_status"]].dropna()
    if not status.empty:
        twin = bottom.twinx()
        twin.step(status["offset_s"].to_numpy(float), status["thermal_status"].to_numpy(float),
                  where="post", color="tab:purple", linewidth=1, label="thermal status")
        twin.set_ylabel("thermal status", color="tab:purple")
        twin.set_ylim(-0.2, max(3.0, float(status["thermal_status"].max()) + 0.5))
    if temps.empty and status.empty:
        bottom.text(0.5, 0.5, "no temperature or thermal status recorded", ha="center",
                    va="center", transform=bottom.transAxes, fontsize=9, color="0.35")
    fig.suptitle(_text(title))
    return fig


def trend_figure(trends: pd.DataFrame, *, title: str = "Median latency over runs",
                 max_lines: int = 10) -> Figure:
    """Median latency per run (oldest left) for up to `max_lines` cases, with CI bars where
    the trend has them. `trends` has compare.TREND_COLUMNS (or at least the case keys, run_id,
    run_started_at and median_us); the cases whose latest change is largest are drawn."""
    rows = _with_values(trends, "median_us")
    if rows.empty or rows["run_id"].nunique() < 2:
        return no_data_figure("no trend: fewer than two runs with this case")
    runs = (rows[["run_started_at", "run_id"]].drop_duplicates()
            .sort_values(["run_started_at", "run_id"]))
    position = {r: i for i, r in enumerate(runs["run_id"])}
    rows = rows.assign(_x=rows["run_id"].map(position), _case=_case_labels(rows))
    last = rows.sort_values("_x").groupby("_case")["change_vs_previous_pct"].last() \
        if "change_vs_previous_pct" in rows.columns else pd.Series(dtype=float)
    order = last.abs().sort_values(ascending=False, na_position="last").index.tolist()
    cases = (order + [c for c in dict.fromkeys(rows["_case"]) if c not in order])[:max_lines]
    fig = _figure(3.8, fixed=True)
    ax = fig.add_subplot()
    longest = max((len(_text(c)) for c in cases), default=0)  # the legend sits on the right
    _margins(fig, left_in=0.8, right_in=0.45 + longest * 6 * 0.62 / 72.0, top_in=0.4,
             bottom_in=0.55)
    for case in cases:
        line = rows[rows["_case"] == case].sort_values("_x")
        yerr = (_err(line, "median_us", "ci_low_us", "ci_high_us", 1e3)
                if {"ci_low_us", "ci_high_us"} <= set(line.columns) else None)
        ax.errorbar(line["_x"].to_numpy(int), line["median_us"].to_numpy(float) / 1e3,
                    yerr=yerr, fmt="o-", capsize=2, markersize=3, label=_text(case))
    ticks = list(range(len(runs)))
    step = max(1, len(ticks) // 12)
    ax.set_xticks(ticks[::step], labels=[_text(str(s)[:10]) for s in
                                         runs["run_started_at"].tolist()[::step]], fontsize=7)
    ax.set_xlabel("run (start date)")
    ax.set_ylabel("median latency (ms)")
    _maybe_log(ax, rows["median_us"], axis="y")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    more = rows["_case"].nunique() - len(cases)
    ax.set_title(_text(title + (f" ({more} more case(s) in the table)" if more > 0 else "")))
    return fig


def to_png_data_uri(fig: Figure, *, dpi: int = 90) -> str:
    """Render a figure to an inline `data:image/png;base64,...` URI (in memory).

    The PNG is palette-quantized (128 colours): charts use a handful of colours plus
    anti-aliasing, and an 8-bit palette makes them about 3x smaller than RGBA at no visible
    cost, which is what keeps a report with many devices under its size budget.
    """
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    fig.set_dpi(dpi)
    canvas.draw()  # type: ignore[no-untyped-call]
    width, height = canvas.get_width_height()
    rgba = canvas.buffer_rgba()  # type: ignore[no-untyped-call]
    image = Image.frombuffer("RGBA", (width, height), rgba, "raw", "RGBA", 0, 1)
    buf = io.BytesIO()
    image.convert("RGB").quantize(colors=128, method=Image.Quantize.FASTOCTREE).save(
        buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def draw_png(make: Callable[[], Figure], dpi: int) -> str:
    """`to_png_data_uri(make())`: what a figure worker runs (module level, so it pickles)."""
    return to_png_data_uri(make(), dpi=dpi)


def report_workers(n_samples: int, cpu_count: int | None = None) -> int:
    """How many worker processes help render a report (figures, samples.csv): none for a
    small report (starting one costs about a second of imports) or on one core, else one
    per core (at most 4; the parent shares the cores, mostly waiting at the end)."""
    cores = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    if n_samples < PARALLEL_MIN_SAMPLES or cores < 2:
        return 0
    return min(4, cores)


#: Reports with at least this many samples are rendered with worker processes.
PARALLEL_MIN_SAMPLES = 20_000


class PendingFigure:
    """A figure being drawn by a worker; `FigureBudget.finish` sets `uri`."""

    __slots__ = ("future", "uri")

    def __init__(self, future: Future[str]) -> None:
        self.future = future
        self.uri = ""


class FigureBudget:
    """How many inline figures, and how many bytes of them, one page may carry.

    Figures are drawn lazily through `png`; once the budget is spent the factory is not even
    called (drawing is most of a report's time) and `png` returns "" so the template says the
    figure was left out and where its data is. Sections ask in page order, so the leading
    sections always get their figures.

    With a `pool` of worker processes, figures are drawn there while the caller goes on
    building tables: `png` returns a PendingFigure, and `finish` (then `resolve`) turns them
    into data URIs, applying the byte cap in the order they were asked for; the page is the
    same as with serial drawing. The pool stays the caller's to close.
    """

    def __init__(self, max_figures: int = 24, max_bytes: int = 2_500_000, dpi: int = 90,
                 pool: Workers | None = None) -> None:
        self.max_figures = max_figures
        self.max_bytes = max_bytes
        self.dpi = dpi
        self.figures = 0
        self.bytes = 0
        self.omitted = 0
        self._asked = 0
        self._pending: list[PendingFigure] = []
        self._pool = pool

    def png(self, make: Callable[[], Figure]) -> str | PendingFigure:
        """The figure's data URI (or, with workers, a PendingFigure), or "" when the budget
        is spent (counted in `omitted`)."""
        if self._pool is not None:
            if self._asked >= self.max_figures:
                self.omitted += 1
                return ""
            self._asked += 1
            pending = PendingFigure(self._pool.submit(draw_png, make, self.dpi))
            self._pending.append(pending)
            return pending
        if self.figures >= self.max_figures or self.bytes >= self.max_bytes:
            self.omitted += 1
            return ""
        uri = to_png_data_uri(make(), dpi=self.dpi)
        self.figures += 1
        self.bytes += len(uri)
        return uri

    def finish(self) -> None:
        """Wait for the workers' figures and apply the byte cap in page order. A figure that
        failed to draw raises here, as it would have in `png`."""
        pending, self._pending = self._pending, []
        for p in pending:
            uri = p.future.result()
            if self.bytes >= self.max_bytes:
                self.omitted += 1
                continue
            p.uri = uri
            self.figures += 1
            self.bytes += len(uri)


def resolve(value: Any) -> Any:
    """`value` with every PendingFigure inside (dicts, lists, tuples) replaced by its URI."""
    if isinstance(value, PendingFigure):
        return value.uri
    if isinstance(value, dict):
        return {k: resolve(v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v) for v in value]
    if type(value) is tuple:
        return tuple(resolve(v) for v in value)
    return value


# --- internals ---------------------------------------------------------------------------------


def _row_labels(ax: Axes, y: np.ndarray, labels: Sequence[str], *,
                fontsize: float = 8.0) -> None:
    """One text per row left of the axes, where tick labels would sit, without the y-axis
    tick machinery (a Tick is several artists, and measuring them was about a fifth of a
    48-row chart's drawing time)."""
    ax.set_yticks([])
    at = blended_transform_factory(ax.transAxes, ax.transData) + ScaledTranslation(
        -4.0 / 72, 0, ax.figure.dpi_scale_trans)
    for row, label in zip(y, labels, strict=True):
        ax.text(0, row, label, transform=at, ha="right", va="center", fontsize=fontsize)


def _plain_log_ticks(axis: Any) -> None:
    """Log-axis tick labels as plain numbers ("0.6", "1", "2"), not mathtext powers of ten
    (easier to read for ratios, and mathtext is the slowest text to lay out)."""
    axis.set_major_formatter(_PlainLogFormatter())
    axis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False,
                                                minor_thresholds=(2, 0.5)))


class _PlainLogFormatter(LogFormatter):
    """matplotlib's choice of which log ticks to label, written as plain numbers."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return f"{x:g}" if super().__call__(x, pos) else ""


def _fit_labels(fig: Figure, labels: Sequence[str], *, fontsize: float = 8.0) -> None:
    """Fixed margins for a one-axes chart with case labels on the y axis, instead of the
    constrained layout: measuring every tick label's extent is most of a chart's drawing time
    (about 40 %), and a report draws dozens of these. The left margin is estimated from the
    longest label at 0.62 em per character (DejaVu Sans averages about 0.55)."""
    width, height = fig.get_size_inches()
    for ax in fig.axes:  # centre the title on the figure: a long device name stays in view
        if ax.get_title():
            fig.suptitle(ax.get_title(), y=1.0 - 0.08 / height, va="top")
            ax.set_title("")
    longest = max((len(str(x)) for x in labels), default=0)
    left_in = 0.45 + longest * fontsize * 0.62 / 72.0
    fig.subplots_adjust(left=min(0.75, left_in / width), right=1.0 - 0.25 / width,
                        bottom=min(0.45, 0.55 / height), top=1.0 - min(0.4, 0.4 / height))


def _margins(fig: Figure, *, left_in: float, right_in: float, top_in: float, bottom_in: float,
             **space: float) -> None:
    """Fixed margins in inches instead of the constrained layout, which measures every text
    extent and was half of a chart's drawing time; each chart knows what sits in its margins
    (axis labels, a suptitle, a twin axis, a legend outside) and reserves that much."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=min(0.45, left_in / width), right=max(0.55, 1.0 - right_in / width),
                        bottom=min(0.4, bottom_in / height), top=max(0.6, 1.0 - top_in / height),
                        **space)


def _figure(height_in: float, *, width: float = _WIDTH_IN, fixed: bool = False) -> Figure:
    """An Agg figure; `fixed`: no layout engine (the caller sets margins with `_fit_labels`)."""
    fig = Figure(figsize=(width, min(max(height_in, 1.6), _MAX_HEIGHT_IN)),
                 layout=None if fixed else "constrained")
    FigureCanvasAgg(fig)  # an explicit Agg canvas: no pyplot, no global backend
    return fig


def _text(value: Any) -> str:
    """Plain text for matplotlib: `$` would start mathtext (and can raise on device strings)."""
    return str(value).replace("$", r"\$")


def _case_text(row: Any) -> str:
    return _text(analysis.display_label(row))


def _latency_group(row: Any) -> str:
    if row.get("delegation_status") == analysis.COVERAGE_NOT_APPLIED:
        return "not_applied"
    return "ok" if bool(row.get("verdict_ok")) else "no_verdict"


def _case_labels(rows: pd.DataFrame) -> pd.Series:
    return (rows["model"].astype(str) + "/" + rows["quantization"].astype(str) + "/"
            + rows["delegate"].astype(str) + "/t" + rows["threads"].astype(str))


def _series(ax: Axes, x: np.ndarray, y: np.ndarray, *, color: str, label: str) -> None:
    """A line, bucketed above MAX_SERIES_POINTS: the bucket means as the line, their
    min-max as a band, so a short spike stays visible after downsampling."""
    if len(x) <= MAX_SERIES_POINTS:
        ax.plot(x, y, "o-" if len(x) <= 60 else "-", color=color, markersize=3, label=label)
        return
    buckets = np.array_split(np.arange(len(x)), MAX_SERIES_POINTS)
    bx = np.array([x[b].mean() for b in buckets])
    ax.plot(bx, [y[b].mean() for b in buckets], "-", color=color, label=label)
    ax.fill_between(bx, [y[b].min() for b in buckets], [y[b].max() for b in buckets],
                    color=color, alpha=0.25, linewidth=0)


def _with_values(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    if frame.empty or column not in frame.columns:
        return frame.iloc[0:0]
    values = pd.to_numeric(frame[column], errors="coerce")
    return frame[values.notna() & (values > 0)].reset_index(drop=True)


def _err(rows: pd.DataFrame, centre: str, low: str, high: str, scale: float) -> np.ndarray:
    """Asymmetric error bars; zero-length where there is no interval (the table says why)."""
    c = pd.to_numeric(rows[centre], errors="coerce").to_numpy(float)
    lo = pd.to_numeric(rows[low], errors="coerce").to_numpy(float)
    hi = pd.to_numeric(rows[high], errors="coerce").to_numpy(float)
    below = np.where(np.isnan(lo), 0.0, np.clip(c - lo, 0.0, None))
    above = np.where(np.isnan(hi), 0.0, np.clip(hi - c, 0.0, None))
    return np.vstack([below, above]) / scale


def _maybe_log(ax: Axes, values: pd.Series, *, axis: str) -> None:
    v = pd.to_numeric(values, errors="coerce").dropna()
    v = v[v > 0]
    if len(v) and float(v.max()) / float(v.min()) > 20:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def _paired_bars(summary: pd.DataFrame, columns: Sequence[str], names: Sequence[str],
                 scale: float, xlabel: str, title: str, *, log: bool) -> Figure:
    rows = summary
    if not rows.empty and all(c in rows.columns for c in columns):
        values = rows[list(columns)].apply(pd.to_numeric, errors="coerce")
        rows = rows[values.notna().any(axis=1)].reset_index(drop=True)
    else:
        rows = rows.iloc[0:0]
    if rows.empty:
        return no_data_figure(f"no data: no case reported {' or '.join(names)}")
    fig = _figure(_ROW_IN * 1.6 * len(rows) + 1.4, fixed=True)
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1] * 1.0
    height = 0.4
    for i, (column, name) in enumerate(zip(columns, names, strict=True)):
        vals = pd.to_numeric(rows[column], errors="coerce").to_numpy(float) / scale
        ax.barh(y + (0.5 - i) * height, np.nan_to_num(vals, nan=0.0), height=height,
                label=name)
    labels = [_case_text(r) for _, r in rows.iterrows()]
    ax.set_yticks(y, labels=labels, fontsize=8)
    if log and not math.isnan(float(np.nanmax(rows[list(columns)].to_numpy(float)))):
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_title(_text(title))
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7)
    _fit_labels(fig, labels)
    return fig
