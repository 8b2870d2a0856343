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
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from farm import analysis

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
    fig = _figure(1.6)
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
    fig = _figure(_ROW_IN * len(rows) + 1.4)
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
    return fig


def thread_scaling_figure(scaling: pd.DataFrame, *, title: str = "Thread scaling") -> Figure:
    """Median latency vs threads, one line per quantization × delegate, one panel per model."""
    rows = _with_values(scaling, "median_us")
    if not rows.empty:
        rows = rows[rows["delegation_status"] != analysis.COVERAGE_NOT_APPLIED]
    if rows.empty:
        return no_data_figure("no data for thread scaling (failed, or delegate not applied)")
    models = list(dict.fromkeys(rows["model"]))
    fig = _figure(3.4, width=min(4.5 * len(models), 18.0))
    axes = fig.subplots(1, len(models), squeeze=False)[0]
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
    fig = _figure(_ROW_IN * len(rows) + 1.4)
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
    labels = [_text(f"{r['model']} {r['quantization']} vs {r['baseline']} / {r['delegate']} / "
                    f"t{r['threads']}") for _, r in rows.iterrows()]
    ax.set_yticks(y, labels=labels, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("baseline median / variant median (log scale)")
    ax.set_title(_text(title))
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7)
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
    fig = _figure(_ROW_IN * len(rows) + 1.2)
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]
    ax.barh(y, rows["size_bytes"].to_numpy(float) / 1e6, color="tab:purple")
    ax.set_yticks(y, labels=[_text(f"{r['model']}/{r['quantization']}")
                             for _, r in rows.iterrows()], fontsize=8)
    ax.set_xlabel("size (MB, 10^6 bytes)")
    ax.set_title(_text(title))
    ax.grid(axis="x", alpha=0.3)
    return fig


def to_png_data_uri(fig: Figure, *, dpi: int = 90) -> str:
    """Render a figure to an inline `data:image/png;base64,...` URI (in memory)."""
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# --- internals ---------------------------------------------------------------------------------


def _figure(height_in: float, *, width: float = _WIDTH_IN) -> Figure:
    fig = Figure(figsize=(width, min(max(height_in, 1.6), _MAX_HEIGHT_IN)), layout="constrained")
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
    fig = _figure(_ROW_IN * 1.6 * len(rows) + 1.4)
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1] * 1.0
    height = 0.4
    for i, (column, name) in enumerate(zip(columns, names, strict=True)):
        vals = pd.to_numeric(rows[column], errors="coerce").to_numpy(float) / scale
        ax.barh(y + (0.5 - i) * height, np.nan_to_num(vals, nan=0.0), height=height,
                label=name)
    ax.set_yticks(y, labels=[_case_text(r) for _, r in rows.iterrows()], fontsize=8)
    if log and not math.isnan(float(np.nanmax(rows[list(columns)].to_numpy(float)))):
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_title(_text(title))
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7)
    return fig
