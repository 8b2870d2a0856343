"""Report sections over the v2 data: verdicts with output fidelity, thermal environment,
sustained runs, memory, trends over runs, and the per-tier policy.

Each function turns frames into template values (Tables, notes, figure URIs). Pure apart from
drawing figures in memory through the page's FigureBudget; never touches a file or a device.
Hot paths are column operations, never a per-row `apply`: a run can hold 100k samples.
Per-sample tables stop at MAX_SAMPLE_ROWS rows and point to samples.csv.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from farm import analysis, sustained
from farm.errors import FarmError
from farm.models import QUANTIZATIONS
from farm.report import plots
from farm.report.tables import (
    Table,
    capped_note,
    case_labels,
    is_nan,
    ms,
    num,
    pct,
    text,
)
from farm.runner import TAINTING_FLAGS

log = logging.getLogger(__name__)

#: Per-sample tables show at most this many rows; the rest is in samples.csv.
MAX_SAMPLE_ROWS = 200
#: Trend and memory tables show at most this many cases (largest change first).
MAX_CASE_ROWS = 300
#: How many runs the trend table spells out per case.
TREND_RUNS_SHOWN = 8

FIDELITY_KEYS: tuple[str, ...] = ("device", "model", "quantization", "delegate", "threads")
CONFIG_KEYS: tuple[str, ...] = ("device", "model", "quantization", "delegate", "threads")

FIDELITY_OK = "within tolerance"
FIDELITY_OUTSIDE = "outside tolerance"
FIDELITY_FAILED = "check failed"
FIDELITY_UNCHECKED = "not checked"


# --- shared ------------------------------------------------------------------------------------


def measure_rows(samples: pd.DataFrame) -> pd.DataFrame:
    """The interleaved-repeat samples (phase "measure", or no phase: a v1 store)."""
    if samples.empty or "phase" not in samples.columns:
        return samples
    phase = samples["phase"]
    return samples[phase.isna() | (phase != sustained.PHASE)]


def _num_col(frame: pd.DataFrame, name: str) -> pd.Series:
    if name not in frame.columns:
        return pd.Series(np.nan, index=frame.index, dtype=float)
    return pd.to_numeric(frame[name], errors="coerce")


def _text_col(frame: pd.DataFrame, name: str) -> pd.Series:
    if name not in frame.columns:
        return pd.Series("", index=frame.index, dtype=object)
    col = frame[name]
    return col.astype(object).where(col.notna(), "").astype(str)


def _bool_col(frame: pd.DataFrame, name: str) -> pd.Series:
    if name not in frame.columns:
        return pd.Series(False, index=frame.index)
    return frame[name].astype("boolean").fillna(False).astype(bool)


def _has_flag(flags: pd.Series, flag: str) -> pd.Series:
    """Rows whose comma-separated flags contain `flag` (vectorized)."""
    return ("," + flags + ",").str.contains("," + flag + ",", regex=False)


def _quant_rank(frame: pd.DataFrame) -> pd.Series:
    order = {q: i for i, q in enumerate(QUANTIZATIONS)}
    return frame["quantization"].map(order).fillna(len(order))


def _sorted_configs(frame: pd.DataFrame, label_col: str = "device_label") -> pd.DataFrame:
    keys = [k for k in (label_col, "model", "_q", "delegate", "threads") if k in frame.columns
            or k == "_q"]
    return (frame.assign(_q=_quant_rank(frame)).sort_values(keys, kind="stable")
            .drop(columns="_q"))


def _labels(frame: pd.DataFrame, labels: Mapping[str, str]) -> pd.Series:
    """Device labels for the frame's rows: the report's labels, else the frame's, else serial."""
    own = _text_col(frame, "device_label")
    mapped = frame["device"].astype(str).map(labels)
    return mapped.where(mapped.notna(), own.where(own != "", frame["device"].astype(str)))


def _sweep(run: Mapping[str, Any]) -> dict[str, Any]:
    raw = run.get("sweep_json")
    try:
        value = json.loads(raw) if isinstance(raw, str | bytes) else dict(raw or {})
    except (ValueError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}


# --- verdicts and output fidelity --------------------------------------------------------------


def fidelity_frame(fidelity: pd.DataFrame | Sequence[Mapping[str, Any]] | None) -> pd.DataFrame:
    """The store's fidelity rows as a frame with typed keys (empty when there are none)."""
    frame = fidelity if isinstance(fidelity, pd.DataFrame) else pd.DataFrame(list(fidelity or ()))
    if frame.empty or not set(FIDELITY_KEYS) <= set(frame.columns):
        return pd.DataFrame({c: pd.Series(dtype=object) for c in (*FIDELITY_KEYS, "status")})
    frame = frame.copy()
    frame["threads"] = pd.to_numeric(frame["threads"], errors="coerce").fillna(0).astype(int)
    return frame


def fidelity_index(frame: pd.DataFrame) -> dict[tuple[str, str, str, str, int], dict[str, Any]]:
    """(device, model, quantization, delegate, threads) -> fidelity row."""
    out: dict[tuple[str, str, str, str, int], dict[str, Any]] = {}
    for r in frame.to_dict("records"):
        out[(str(r["device"]), str(r["model"]), str(r["quantization"]), str(r["delegate"]),
             int(r["threads"]))] = r
    return out


def fidelity_state(row: Mapping[str, Any] | None) -> str:
    """FIDELITY_OK / _OUTSIDE / _FAILED / _UNCHECKED for one fidelity row (or none)."""
    if row is None:
        return FIDELITY_UNCHECKED
    if text(row.get("status")) not in ("", "ok"):
        return FIDELITY_FAILED
    within: Any = row.get("within_tolerance")
    if is_nan(within):
        return FIDELITY_UNCHECKED
    return FIDELITY_OK if float(within) else FIDELITY_OUTSIDE


def _fidelity_numbers(row: Mapping[str, Any]) -> str:
    parts = []
    if not is_nan(row.get("cosine_min")):
        parts.append(f"cos min {float(row['cosine_min']):.4f}")
    if not is_nan(row.get("top1_agreement")):
        parts.append(f"top-1 {pct(row['top1_agreement'])}")
    if not is_nan(row.get("max_abs_error")):
        parts.append(f"max |err| {float(row['max_abs_error']):.3g}")
    return ", ".join(parts)


def fidelity_cell(row: Mapping[str, Any] | None, verdict: str) -> tuple[str, bool]:
    """The verdict table's fidelity cell, and whether the row is "fast but wrong"."""
    state = fidelity_state(row)
    if row is None or state == FIDELITY_UNCHECKED:
        return FIDELITY_UNCHECKED, False
    if state == FIDELITY_FAILED:
        return f"{FIDELITY_FAILED}: {text(row.get('error')) or text(row.get('status'))}", False
    detail = _fidelity_numbers(row)
    detail = f" ({detail})" if detail else ""
    if state == FIDELITY_OUTSIDE:
        wrong = verdict == "faster"
        return ("FAST BUT WRONG: " if wrong else "") + FIDELITY_OUTSIDE + detail, wrong
    return FIDELITY_OK + detail, False


def _evidence(r: Mapping[str, Any]) -> str:
    base, quant = text(r.get("baseline")), text(r.get("quantization"))
    parts = [f"n pairs {text(r.get('n_pairs'))}"]
    if not is_nan(r.get("baseline_n")) and not is_nan(r.get("variant_n")):
        parts[0] += f" ({base} n {int(r['baseline_n'])}, {quant} n {int(r['variant_n'])})"
    parts.append(f"CV {base} {pct(r.get('baseline_cv'))}, {quant} {pct(r.get('variant_cv'))}")
    if not is_nan(r.get("baseline_tainted_excluded")):
        parts.append(f"tainted excluded {base} {int(r['baseline_tainted_excluded'])}, "
                     f"{quant} {int(r.get('variant_tainted_excluded') or 0)}")
    else:
        parts.append(f"tainted excluded {text(r.get('n_tainted_excluded')) or '0'}")
    base_cov = text(r.get("baseline_delegation")) or text(r.get("baseline_coverage"))
    var_cov = text(r.get("variant_delegation")) or text(r.get("variant_coverage"))
    parts.append(f"delegation {base} {base_cov or '—'}, {quant} {var_cov or '—'}")
    return "; ".join(parts)


def verdict_table(speedups: pd.DataFrame, fidelity: pd.DataFrame) -> tuple[Table, list[str]]:
    """The quantization verdicts with a fidelity column, and the "fast but wrong" list.

    Reads the columns of analysis.speedups by name and ignores any others, so new evidence
    columns do not break the page.
    """
    cols = ("device", "model", "delegate", "threads", "quantization", "ratio",
            "CI (level, method)", "verdict", "output fidelity", "evidence", "why")
    index = fidelity_index(fidelity)
    rows, classes, wrong = [], [], []
    for r in speedups.to_dict("records"):
        verdict = text(r.get("verdict"))
        key = (text(r.get("device")), text(r.get("model")), text(r.get("quantization")),
               text(r.get("delegate")), int(r.get("threads") or 0))
        cell, fast_but_wrong = fidelity_cell(index.get(key), verdict)
        ci = "—"
        if not is_nan(r.get("ci_low")):
            ci = (f"[{float(r['ci_low']):.2f}, {float(r['ci_high']):.2f}] "
                  f"({pct(r.get('ci_level'))}, {text(r.get('ci_method'))})")
        ratio = "—" if is_nan(r.get("ratio")) else f"{float(r['ratio']):.2f}×"
        config = f"{key[2]} vs {text(r.get('baseline'))}"
        rows.append((text(r.get("device_label")) or key[0], key[1], key[3], str(key[4]), config,
                     ratio, ci, verdict, cell, _evidence(r), text(r.get("reason")) or "—"))
        if fast_but_wrong:
            classes.append("bad")
            wrong.append(f"{text(r.get('device_label')) or key[0]}: {key[1]} {key[2]} / "
                         f"{key[3]} / {key[4]} threads is {ratio} faster than "
                         f"{text(r.get('baseline'))}, but its outputs are outside the "
                         f"tolerance ({_fidelity_numbers(index[key])})")
        else:
            classes.append({"faster": "good", "slower": "bad", "not comparable": "warn"}.get(
                verdict, ""))
    return Table(cols, tuple(rows), tuple(classes)), wrong


def fidelity_table(fidelity: pd.DataFrame, labels: Mapping[str, str]) -> Table:
    """Every fidelity row: errors against the fp32 CPU reference and the tolerance verdict."""
    cols = ("device", "model", "quantization", "delegate", "threads", "result", "inputs",
            "max |err|", "mean |err|", "cosine min / mean", "top-1", "top-5", "tolerance",
            "error")
    if fidelity.empty:
        return Table(cols, (), ())
    frame = _sorted_configs(fidelity.assign(device_label=_labels(fidelity, labels)))
    rows, classes = [], []
    for r in frame.to_dict("records"):
        state = fidelity_state(r)
        rows.append((
            text(r.get("device_label")), text(r.get("model")), text(r.get("quantization")),
            text(r.get("delegate")), text(r.get("threads")), state,
            text(r.get("n_inputs")) or "—", _g(r.get("max_abs_error")),
            _g(r.get("mean_abs_error")),
            f"{_g(r.get('cosine_min'), 4)} / {_g(r.get('cosine_mean'), 4)}",
            pct(r.get("top1_agreement")), pct(r.get("top5_agreement")),
            text(r.get("tolerance_json")) or "—", text(r.get("error")) or "—"))
        classes.append({FIDELITY_OUTSIDE: "bad", FIDELITY_FAILED: "warn"}.get(state, ""))
    return Table(cols, tuple(rows), tuple(classes))


def _g(v: Any, digits: int = 3) -> str:
    return "—" if is_nan(v) else f"{float(v):.{digits}g}"


# --- thermal environment -----------------------------------------------------------------------


def thermal_section(samples: pd.DataFrame, run: Mapping[str, Any],
                    labels: Mapping[str, str]) -> dict[str, Any]:
    """Environment per device and per sample, tainted samples with reasons, cooldown waits and
    the sampler's cost. Measure-phase samples only (sustained windows have their section)."""
    df = measure_rows(samples)
    df = df[_text_col(df, "status") != "skipped"] if not df.empty else df
    sweep = _sweep(run)
    mode = text(sweep.get("cooldown_mode")) or "closed_loop"
    if mode == "fixed":
        gate = f"fixed sleep of {num(sweep.get('cooldown_fixed_s'))} s before each sample"
    else:
        gate = ("closed loop: before each sample, wait for thermal status 0 and the gate "
                f"sensors within {num(sweep.get('cooldown_delta_c', 3.0))} °C of the device's "
                f"idle baseline (timeout {num(sweep.get('cooldown_timeout_s', 120.0))} s)")
    if df.empty:
        empty = Table(("device",), (), ())
        return {"gate": gate, "devices": empty, "cooldown": empty, "sampler": empty,
                "tainted": empty, "samples": empty, "cooldown_total_s": "—",
                "sampler_overall": "—", "n_tainted": 0}
    df = df.assign(device_label=_labels(df, labels), _flags=_text_col(df, "flags"))
    return {
        "gate": gate,
        "devices": _env_device_table(df),
        "cooldown": _cooldown_table(df),
        "cooldown_total_s": num(_num_col(df, "cooldown_wait_s").sum(min_count=1)),
        "sampler": _sampler_table(df),
        "sampler_overall": _sampler_overall(df),
        "tainted": _tainted_table(df),
        "n_tainted": int(_bool_col(df, "tainted").sum()),
        "samples": _env_sample_table(df),
    }


def _env_device_table(df: pd.DataFrame) -> Table:
    cols = ("device", "samples", "tainted", "tainting reasons", "start °C (median)",
            "hottest °C", "max thermal status", "lowest freq cap", "battery °C (median)",
            "charging changed", "no sensors")
    work = pd.DataFrame({
        "device_label": df["device_label"], "tainted": _bool_col(df, "tainted"),
        "temp_before_c": _num_col(df, "temp_before_c"),
        "hottest": pd.concat([_num_col(df, "temp_max_c"), _num_col(df, "temp_after_c")],
                             axis=1).max(axis=1),
        "status": pd.concat([_num_col(df, c) for c in ("thermal_status_max",
                                                       "thermal_status_after",
                                                       "thermal_status_before")],
                            axis=1).max(axis=1),
        "freq_cap_ratio": _num_col(df, "freq_cap_ratio"),
        "battery_temp_c": _num_col(df, "battery_temp_c"),
        "no_sensors": _has_flag(df["_flags"], "no_sensors"),
        **{f: _has_flag(df["_flags"], f) for f in TAINTING_FLAGS},
    })
    before, after = _text_col(df, "charging_before"), _text_col(df, "charging_after")
    work["charging_changed"] = (before != "") & (after != "") & (before != after)
    agg = work.groupby("device_label", sort=True).agg(
        samples=("tainted", "size"), tainted=("tainted", "sum"),
        start=("temp_before_c", "median"), hottest=("hottest", "max"),
        status=("status", "max"), cap=("freq_cap_ratio", "min"),
        battery=("battery_temp_c", "median"), charging=("charging_changed", "sum"),
        no_sensors=("no_sensors", "sum"), **{f: (f, "sum") for f in TAINTING_FLAGS})
    rows, classes = [], []
    for label, r in agg.iterrows():
        reasons = ", ".join(f"{f} {int(r[f])}" for f in TAINTING_FLAGS if r[f]) or "—"
        share = r["tainted"] / r["samples"] if r["samples"] else math.nan
        rows.append((str(label), str(int(r["samples"])), f"{int(r['tainted'])} ({pct(share)})",
                     reasons, num(r["start"]), num(r["hottest"]),
                     "—" if is_nan(r["status"]) else str(int(r["status"])),
                     pct(r["cap"]), num(r["battery"]), str(int(r["charging"])),
                     str(int(r["no_sensors"]))))
        classes.append("warn" if r["tainted"] else "")
    return Table(cols, tuple(rows), tuple(classes))


def _cooldown_table(df: pd.DataFrame) -> Table:
    cols = ("device", "waits", "total s", "median s", "p90 s", "max s")
    wait = _num_col(df, "cooldown_wait_s")
    work = pd.DataFrame({"device_label": df["device_label"], "wait": wait}).dropna()
    if work.empty:
        return Table(cols, (), ())
    agg = work.groupby("device_label", sort=True)["wait"].agg(
        ["count", "sum", "median", lambda s: s.quantile(0.9), "max"])
    rows = tuple((str(label), str(int(r.iloc[0])), num(r.iloc[1]), num(r.iloc[2]),
                  num(r.iloc[3]), num(r.iloc[4])) for label, r in agg.iterrows())
    return Table(cols, rows, tuple("" for _ in rows))


def _sampler_frame(df: pd.DataFrame) -> pd.DataFrame:
    work = pd.DataFrame({"device_label": df["device_label"],
                         "points": _num_col(df, "sampler_points"),
                         "cost": _num_col(df, "sampler_cost_s"),
                         "duration": _num_col(df, "duration_s")})
    work = work[work["points"].notna() | work["cost"].notna()]
    work["share"] = work["cost"] / work["duration"].where(work["duration"] > 0)
    return work


def _sampler_table(df: pd.DataFrame) -> Table:
    cols = ("device", "samples sampled", "points per sample (median)",
            "sampler s per sample (median)", "share of benchmark time (median)",
            "share of benchmark time (all samples)")
    work = _sampler_frame(df)
    if work.empty:
        return Table(cols, (), ())
    rows = []
    for label, g in work.groupby("device_label", sort=True):
        total = g["duration"].sum(min_count=1)
        overall = g["cost"].sum(min_count=1) / total if total and not is_nan(total) else math.nan
        rows.append((str(label), str(len(g)), num(g["points"].median()),
                     _g(g["cost"].median()), pct(g["share"].median()), pct(overall)))
    return Table(cols, tuple(rows), tuple("" for _ in rows))


def _sampler_overall(df: pd.DataFrame) -> str:
    work = _sampler_frame(df)
    total = work["duration"].sum(min_count=1) if not work.empty else math.nan
    if work.empty or is_nan(total) or not total:
        return "—"
    return pct(work["cost"].sum(min_count=1) / total)


def _tainted_table(df: pd.DataFrame) -> Table:
    cols = ("sample", "device", "case", "round", "reasons", "start °C", "hottest °C",
            "max status", "freq cap", "charging", "cooldown wait s")
    bad = df[_bool_col(df, "tainted")]
    if bad.empty:
        return Table(cols, (), ())
    shown = bad.head(MAX_SAMPLE_ROWS)
    reasons = shown["_flags"].map(lambda f: ", ".join(
        x for x in analysis.split_flags(f) if x in TAINTING_FLAGS) or "(no tainting flag)")
    rows = _sample_rows(shown, reasons)
    return Table(cols, rows, tuple("warn" for _ in rows), capped_note(len(shown), len(bad)))


def _sample_rows(frame: pd.DataFrame, last: pd.Series) -> tuple[tuple[str, ...], ...]:
    hottest = pd.concat([_num_col(frame, "temp_max_c"), _num_col(frame, "temp_after_c")],
                        axis=1).max(axis=1)
    status = pd.concat([_num_col(frame, c) for c in ("thermal_status_max",
                                                     "thermal_status_after")],
                       axis=1).max(axis=1)
    before, after = _text_col(frame, "charging_before"), _text_col(frame, "charging_after")
    charging = before.where(before == after, before + " → " + after)
    charging = charging.where(charging != "", _text_col(frame, "charging"))
    columns = zip(_text_col(frame, "sample_id"), frame["device_label"], case_labels(frame),
                  _text_col(frame, "round"), last, _num_col(frame, "temp_before_c"), hottest,
                  status, _num_col(frame, "freq_cap_ratio"), charging,
                  _num_col(frame, "cooldown_wait_s"), strict=True)
    return tuple((sid, str(dev), case, rnd, str(why), num(t0), num(t1),
                  "—" if is_nan(st) else str(int(st)), pct(cap), ch or "—", num(wait))
                 for sid, dev, case, rnd, why, t0, t1, st, cap, ch, wait in columns)


def _env_sample_table(df: pd.DataFrame) -> Table:
    cols = ("sample", "device", "case", "round", "flags", "start °C", "hottest °C",
            "max status", "freq cap", "charging", "cooldown wait s")
    shown = df.head(MAX_SAMPLE_ROWS)
    rows = _sample_rows(shown, shown["_flags"].where(shown["_flags"] != "", "—"))
    tainted = _bool_col(shown, "tainted")
    return Table(cols, rows, tuple("warn" if t else "" for t in tainted),
                 capped_note(len(shown), len(df)))


# --- sustained ---------------------------------------------------------------------------------


def sustained_section(samples: pd.DataFrame, run: Mapping[str, Any],
                      series: Mapping[int, Mapping[str, Any]] | None,
                      labels: Mapping[str, str], budget: plots.FigureBudget
                      ) -> dict[str, Any]:
    """Per device x configuration: the sustained table, the ranking, one figure each."""
    specs = sustained.specs_from_run(run)
    table = sustained.analyze(samples, specs, series=series)
    if table.empty:
        return {"present": False, "frame": table}
    table = table.assign(device_label=_labels(table, labels))
    windows = sustained.windows(samples)
    ranking = sustained.ranking(table)
    figures = []
    for r in table.to_dict("records"):
        mask = np.ones(len(windows), dtype=bool)
        for k in sustained.GROUP_KEYS:
            mask &= (windows[k] == r[k]).to_numpy()
        title = (f"{r['device_label']}: {r['model']} {r['quantization']} / {r['delegate']} / "
                 f"{r['threads']} threads")
        uri = budget.png(partial(plots.sustained_figure, windows[mask], r, title=title))
        figures.append((title, uri))
    return {"present": True, "frame": table, "table": _sustained_table(table),
            "ranking": _ranking_table(ranking), "figures": figures,
            "specs": [s.to_dict() for s in specs]}


def _sustained_table(table: pd.DataFrame) -> Table:
    cols = ("device", "configuration", "windows (failed)", "peak ms", "sustained ms",
            "sustained / peak", "throughput kept", "throttle onset", "max thermal status",
            "frequency drop", "°C start → max", "note")
    rows, classes = [], []
    for r in _sorted_configs(table).to_dict("records"):
        onset = r.get("onset_s")
        onset_text = "none" if onset is None or is_nan(onset) else (
            f"{float(onset):.0f} s (window {r.get('onset_window')})")
        ratio = r.get("sustained_peak_ratio")
        rows.append((
            text(r["device_label"]),
            f"{r['model']} {r['quantization']} / {r['delegate']} / t{r['threads']}",
            f"{r['n_windows']} ({r['n_failed']})", ms(r["peak_us"]), ms(r["sustained_us"]),
            "—" if is_nan(ratio) else f"{float(ratio):.2f}×", pct(r.get("perf_retained")),
            onset_text,
            "—" if is_nan(r.get("max_thermal_status")) else str(int(r["max_thermal_status"])),
            pct(r.get("freq_drop")) + (f" ({r['freq_source']})" if text(r.get("freq_source"))
                                       not in ("", "freq_cap_ratio") else ""),
            f"{num(r.get('temp_start_c'))} → {num(r.get('temp_max_c'))}",
            "; ".join(x for x in (text(r.get("note")), "" if r.get("spec_source") == "sweep"
                                  else text(r.get("spec_source"))) if x) or "—"))
        if r["n_windows"] == 0:
            classes.append("bad")
        elif not is_nan(ratio) and float(ratio) > 1.0 + float(r["onset_threshold"]):
            classes.append("warn")
        else:
            classes.append("")
    return Table(cols, tuple(rows), tuple(classes))


def _ranking_table(ranking: pd.DataFrame) -> Table:
    cols = ("configuration", "device", "peak ms (rank)", "sustained ms (rank)",
            "change once warm")
    rows, classes = [], []
    for r in ranking.to_dict("records"):
        change = int(r["rank_change"])
        rows.append((f"{r['model']} {r['quantization']} / {r['delegate']} / t{r['threads']}",
                     text(r["device_label"]),
                     f"{ms(r['peak_us'])} (#{r['peak_rank']} of {r['n_devices']})",
                     f"{ms(r['sustained_us'])} (#{r['sustained_rank']} of {r['n_devices']})",
                     "same rank" if change == 0 else
                     f"up {change}" if change > 0 else f"down {-change}"))
        classes.append("" if change == 0 else "warn")
    return Table(cols, tuple(rows), tuple(classes))


# --- memory ------------------------------------------------------------------------------------


MEMORY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("peak_mem_mb", "peak MB (benchmark_model)"), ("vmhwm_mb", "VmHWM MB"),
    ("vmrss_max_mb", "VmRSS max MB"), ("mem_overall_mb", "overall footprint MB"))


def memory_table(samples: pd.DataFrame, labels: Mapping[str, str]) -> Table:
    """Medians of the memory figures per device x configuration (successful measure samples):
    benchmark_model's own --report_peak_memory_footprint and the sampler's /proc VmHWM/VmRSS."""
    cols = ("device", "configuration", "samples", *(title for _, title in MEMORY_COLUMNS))
    df = measure_rows(samples)
    if df.empty:
        return Table(cols, (), ())
    df = df[_text_col(df, "status") == "ok"]
    values = pd.DataFrame({c: _num_col(df, c) for c, _ in MEMORY_COLUMNS})
    if df.empty or values.isna().all().all():
        return Table(cols, (), ())
    work = pd.concat([df[list(CONFIG_KEYS)], values], axis=1)
    agg = work.groupby(list(CONFIG_KEYS), sort=False).agg(
        n=("peak_mem_mb", "size"), **{c: (c, "median") for c, _ in MEMORY_COLUMNS})
    agg = agg.reset_index()
    agg = _sorted_configs(agg.assign(device_label=_labels(agg, labels)))
    total = len(agg)
    agg = agg.head(MAX_CASE_ROWS * 4)
    rows = tuple((text(r["device_label"]),
                  f"{r['model']} {r['quantization']} / {r['delegate']} / t{r['threads']}",
                  str(int(r["n"])), *(num(r[c]) for c, _ in MEMORY_COLUMNS))
                 for r in agg.to_dict("records"))
    return Table(cols, rows, tuple("" for _ in rows),
                 capped_note(len(agg), total, "samples.csv (per sample)"))


# --- trends over runs --------------------------------------------------------------------------


_TREND_INPUT = ("run_id", "run_started_at", "device", "device_label", "model", "quantization",
                "delegate", "threads", "status", "tainted", "phase", "inference_avg_us",
                "round", "repeat", "flags", "delegation", "started_at")


def trends_section(history: pd.DataFrame | None, samples: pd.DataFrame,
                   run: Mapping[str, Any], labels: Mapping[str, str],
                   budget: plots.FigureBudget) -> dict[str, Any]:
    """Median latency per case over the runs in `history` plus this run, oldest first.

    Only this run's cases are trended (history rows of other cases are dropped). The table
    and trends.csv hold every case; each device's chart draws its most changed cases.
    """
    if history is None:
        return {"present": False, "reason": "no history was loaded for this report"}
    run_id = text(run.get("run_id"))
    current = measure_rows(samples)
    current = current.assign(run_started_at=text(run.get("started_at")) or run_id)
    past = history[history["run_id"].astype(str) != run_id] if "run_id" in history.columns \
        else history.iloc[0:0]
    if "run_started_at" not in past.columns:
        first = past.groupby("run_id")["started_at"].transform("min") \
            if "started_at" in past.columns else past["run_id"]
        past = past.assign(run_started_at=first)
    past = measure_rows(past)
    keys = list(CONFIG_KEYS)
    wanted = pd.MultiIndex.from_frame(current[keys].drop_duplicates().astype(str))
    have = pd.MultiIndex.from_frame(past[keys].astype(str)) if not past.empty else wanted[:0]
    past = past[have.isin(wanted)] if not past.empty else past
    combined = pd.concat([f[[c for c in _TREND_INPUT if c in f.columns]]
                          for f in (past, current)], ignore_index=True)
    n_runs = combined["run_id"].nunique() if not combined.empty else 0
    if n_runs < 2:
        return {"present": False,
                "reason": "no earlier run of this run's cases in the store" if n_runs else
                "no measured sample"}
    trends = _median_trends(combined)
    trends = trends.assign(device_label=_labels(trends, labels))
    table = _trend_table(trends)
    figures = []
    for serial, group in trends.groupby("device", sort=True):
        label = labels.get(str(serial), str(group["device_label"].iloc[0]))
        uri = budget.png(partial(_trend_figure, combined, group, labels,
                                 f"Median latency per run: {label}"))
        figures.append((label, uri))
    return {"present": True, "n_runs": n_runs, "table": table, "figures": figures,
            "frame": trends}


def _median_trends(combined: pd.DataFrame) -> pd.DataFrame:
    """Median of the usable samples (ok, with a latency, untainted) per case and run, oldest
    first, with the change from the case's previous run: column operations, so 60 nights of a
    large lab take well under a second (compare.trends adds a CI per case and run, which
    costs about 1 ms each: it is kept for the plotted cases)."""
    df = combined.assign(_lat=_num_col(combined, "inference_avg_us"))
    df = df[(_text_col(df, "status") == "ok") & df["_lat"].notna() & ~_bool_col(df, "tainted")]
    out = (df.groupby([*CONFIG_KEYS, "run_started_at", "run_id"], sort=True)
           .agg(n=("_lat", "size"), median_us=("_lat", "median"),
                device_label=("device_label", "first")).reset_index())
    prev = out.groupby(list(CONFIG_KEYS))["median_us"].shift(1)
    out["change_vs_previous_pct"] = 100.0 * (out["median_us"] / prev - 1.0)
    return out


def _trend_figure(combined: pd.DataFrame, device_trends: pd.DataFrame,
                  labels: Mapping[str, str], title: str, max_lines: int = 10) -> Figure:
    """One device's trend chart: its `max_lines` cases with the largest latest change, with
    CIs from compare.trends for just those cases."""
    last = (device_trends.sort_values(["run_started_at", "run_id"])
            .groupby(list(CONFIG_KEYS))["change_vs_previous_pct"].last())
    top = last.abs().sort_values(ascending=False, na_position="last").index[:max_lines]
    keys = list(CONFIG_KEYS)
    picked = pd.MultiIndex.from_frame(combined[keys].astype(str)).isin(
        pd.MultiIndex.from_tuples([tuple(str(x) for x in k) for k in top], names=keys))
    try:
        from farm import compare
        frame = compare.trends(combined[picked])
    except ImportError:  # pragma: no cover - farm.compare ships with farm
        frame = _median_trends(combined[picked])
    frame = frame.assign(device_label=_labels(frame, labels))
    more = last.index.size - len(top)
    return plots.trend_figure(frame, title=title + (f" ({more} more case(s) in the table)"
                                                    if more > 0 else ""), max_lines=max_lines)


def _trend_table(trends: pd.DataFrame) -> Table:
    cols = ("device", "case", "runs", f"medians ms, oldest → newest (last "
            f"{TREND_RUNS_SHOWN})", "change vs previous run", "newest vs median of earlier runs")
    frame = trends[trends["median_us"].notna()].sort_values(["run_started_at", "run_id"])
    rows = []
    for key, g in frame.groupby(list(CONFIG_KEYS), sort=False):
        values = g["median_us"].to_numpy(float)
        if len(values) < 2:
            continue
        last = float(values[-1])
        change = 100.0 * (last / float(values[-2]) - 1.0)
        earlier = 100.0 * (last / float(np.median(values[:-1])) - 1.0)
        label = text(g["device_label"].iloc[-1]) or str(key[0])
        case = f"{key[1]}/{key[2]}/{key[3]}/t{key[4]}"
        spark = " → ".join(ms(v) for v in values[-TREND_RUNS_SHOWN:])
        rows.append((abs(change), (label, case, str(len(values)), spark, f"{change:+.1f} %",
                                   f"{earlier:+.1f} %")))
    rows.sort(key=lambda x: -x[0])
    shown = [r for _, r in rows[:MAX_CASE_ROWS]]
    classes = tuple("warn" if abs(float(r[4].rstrip(" %"))) >= 5.0 else "" for r in shown)
    return Table(cols, tuple(shown), classes, capped_note(len(shown), len(rows), "trends.csv"))


# --- policy ------------------------------------------------------------------------------------


def policy_section(samples: pd.DataFrame, devices: Sequence[Mapping[str, Any]],
                   fidelity: pd.DataFrame, run: Mapping[str, Any],
                   labels: Mapping[str, str]) -> dict[str, Any] | None:
    """The per-tier policy `farm policy` would write for this run (p50), with its evidence;
    None when farm.policy is not available."""
    try:
        from farm import policy as pol
    except ImportError:  # pragma: no cover - optional module
        return None
    if measure_rows(samples).empty:
        return {"error": "", "table": None}
    tail = next((s.tail_windows for s in sustained.specs_from_run(run)), 3)
    try:
        made = pol.make_policy(samples, devices, fidelity.to_dict("records"), "p50",
                               run_id=text(run.get("run_id")), tail_windows=tail)
    except FarmError as e:
        return {"error": str(e), "table": None}
    cols = ("tier", "devices", "model", "choice", "median ms", "margin over runner-up",
            "fallback chain", "why", "excluded")
    rows, classes = [], []
    for tier in made.tiers:
        for m in tier.models:
            ev = m.evidence
            margin = "—"
            if ev is not None and not is_nan(ev.margin):
                margin = f"{ev.margin:+.1%} vs {ev.runner_up or '—'}"
                if not is_nan(ev.margin_ci_low):
                    margin += (f" [{ev.margin_ci_low:+.1%}, {ev.margin_ci_high:+.1%}] "
                               f"({pct(ev.margin_ci_level)})")
            excluded = "; ".join(f"{e.config}: {', '.join(e.reasons)}" for e in m.excluded[:6])
            if len(m.excluded) > 6:
                excluded += f"; and {len(m.excluded) - 6} more"
            rows.append((tier.tier + (" [SIMULATED]" if tier.simulated
                                      and "[SIMULATED]" not in tier.tier else ""),
                         ", ".join(labels.get(serial, label) for serial, label in
                                   zip(tier.devices, tier.device_labels, strict=False)),
                         m.model,
                         m.choice.label() if m.choice else "none eligible",
                         ms(ev.value_us) if ev is not None else "—", margin,
                         " → ".join(c.label() for c in m.fallback) or "—",
                         m.why or "—", excluded or "—"))
            classes.append("" if m.choice else "warn")
    return {"error": "", "table": Table(cols, tuple(rows), tuple(classes)),
            "objective": made.objective, "fidelity_checked": made.fidelity_checked}
