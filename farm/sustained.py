"""Sustained-mode analysis: peak vs sustained latency, throttle onset, frequency drop, ranking.

Pure pandas/numpy over the samples frame: never touches a file, a device or the network.

A sustained case runs back-to-back benchmark_model processes ("windows") for the spec's
`duration_s`, with no cooldown between them. The store has one row per window with
`phase == "sustained"`, `repeat` = window index and `window_offset_s` = seconds since the case
started; the window's latency is its `avg_us` and its environment is in the usual columns.

Definitions, stated once (issue 5, section 4):

- Peak latency: the first window's latency (the phone is as cool as the cooldown gate left it).
- Sustained latency: the median of the last `tail_windows` windows. With `tail_windows` or fewer
  windows the tail overlaps the first window and the row says so (`short`).
- Ratio: sustained / peak latency (> 1: slower once warm). `perf_retained` = its inverse, the
  fraction of peak throughput the device keeps.
- Throttle onset: the offset of the first window slower than the peak by more than
  `onset_threshold` (latency > peak x (1 + threshold)); None when no window is. One window
  suffices, as the spec says; a single slow window from another cause reads as an onset, which is
  why the report shows the whole series next to the number.
- Maximum thermal status: the highest `thermal_status_max` (else `_after`, `_before`) of any
  window.
- Frequency drop: 1 - the smallest `freq_cap_ratio` of any window. Where no window has one, it
  comes from the sampler's series: per sampler point the fastest cluster's cur/max frequency (the
  cluster the benchmark keeps busy; idle clusters park low and would read as a drop), per window
  the median of its points (a point taken while the process starts reads idle clocks), and the
  smallest window value.
- Ranking: per configuration (model, quantization, delegate, threads), devices ranked by peak
  latency and by sustained latency (1 = fastest; ties share the lower rank).

Windows are used whatever their `tainted` flag: throttling is what sustained mode measures.
Failed windows are counted (`n_failed`) and left out of every statistic.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from farm.models import SustainedSpec

PHASE = "sustained"
CONFIG_KEYS: tuple[str, ...] = ("model", "quantization", "delegate", "threads")
GROUP_KEYS: tuple[str, ...] = ("device", *CONFIG_KEYS)

SUSTAINED_COLUMNS: tuple[str, ...] = (
    "device", "device_label", "simulated", "tier", "model", "quantization", "delegate",
    "threads", "n_windows", "n_failed", "window_s", "duration_s", "onset_threshold",
    "tail_windows", "last_offset_s", "peak_us", "sustained_us", "sustained_peak_ratio",
    "perf_retained", "onset_s", "onset_window", "max_thermal_status", "freq_drop",
    "freq_source", "temp_start_c", "temp_max_c", "spec_source", "note",
)

RANKING_COLUMNS: tuple[str, ...] = (
    "model", "quantization", "delegate", "threads", "device", "device_label", "n_devices",
    "peak_us", "sustained_us", "peak_rank", "sustained_rank", "rank_change",
)

#: Columns of `windows()`: one row per sustained window, in time order per device x config.
WINDOW_COLUMNS: tuple[str, ...] = (
    "sample_id", "device", "device_label", "model", "quantization", "delegate", "threads",
    "window", "offset_s", "latency_us", "temp_before_c", "temp_c", "thermal_status",
    "freq_cap_ratio", "status",
)


def specs_from_run(run: Mapping[str, Any]) -> tuple[SustainedSpec, ...]:
    """The sustained specs of a run, from its `sweep_json` (empty when absent or unreadable)."""
    raw = run.get("sweep_json")
    if not raw:
        return ()
    try:
        sweep = json.loads(raw) if isinstance(raw, str | bytes) else dict(raw)
        items = sweep.get("sustained") or ()
        return tuple(SustainedSpec.from_dict(dict(s)) for s in items)
    except (ValueError, TypeError, AttributeError):
        return ()


def spec_for(specs: Sequence[SustainedSpec], *, device: str, model: str, quantization: str,
             delegate: str, threads: int) -> SustainedSpec | None:
    """The first spec whose `match` rule selects this device x configuration, as the planner
    picks it (`Sweep.sustained_for`)."""
    for s in specs:
        if s.match.matches(model=model, quantization=quantization, delegate=delegate,
                           threads=threads, device=device):
            return s
    return None


def windows(samples: pd.DataFrame) -> pd.DataFrame:
    """The sustained windows of a samples frame, one row each, ordered in time per group.

    `latency_us` is the window's avg_us (else inference_avg_us, else median_us); `temp_c` the
    hottest reading of the window (temp_max_c, else temp_after_c, else temp_before_c);
    `thermal_status` the highest status seen (thermal_status_max, else _after, else _before).
    """
    if samples.empty or "phase" not in samples.columns:
        return _empty(WINDOW_COLUMNS)
    df = samples[samples["phase"] == PHASE]
    if df.empty:
        return _empty(WINDOW_COLUMNS)
    out = pd.DataFrame({
        "sample_id": _col(df, "sample_id"),
        "device": df["device"].astype(str),
        "device_label": _text_col(df, "device_label").where(
            _text_col(df, "device_label") != "", df["device"].astype(str)),
        "model": df["model"].astype(str), "quantization": df["quantization"].astype(str),
        "delegate": df["delegate"].astype(str),
        "threads": pd.to_numeric(df["threads"], errors="coerce").fillna(0).astype(int),
        "window": pd.to_numeric(_col(df, "repeat"), errors="coerce"),
        "offset_s": pd.to_numeric(_col(df, "window_offset_s"), errors="coerce"),
        "latency_us": _first_of(df, ("avg_us", "inference_avg_us", "median_us")),
        "temp_before_c": pd.to_numeric(_col(df, "temp_before_c"), errors="coerce"),
        "temp_c": _first_of(df, ("temp_max_c", "temp_after_c", "temp_before_c")),
        "thermal_status": _max_of(df, ("thermal_status_max", "thermal_status_after",
                                       "thermal_status_before")),
        "freq_cap_ratio": pd.to_numeric(_col(df, "freq_cap_ratio"), errors="coerce"),
        "status": _text_col(df, "status"),
    })
    # a window with no stored offset sits at its index (times the spec's window is unknown here)
    out["offset_s"] = out["offset_s"].fillna(out["window"])
    out = out.sort_values([*GROUP_KEYS, "offset_s", "window"], kind="stable")
    return out.reset_index(drop=True)


def analyze(samples: pd.DataFrame, specs: Sequence[SustainedSpec] = (), *,
            series: Mapping[int, Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """One row per device x configuration that has sustained windows (SUSTAINED_COLUMNS).

    `specs` come from the run's sweep (`specs_from_run`); a group no spec matches is analysed
    with SustainedSpec's defaults and says so in `spec_source`. `series` maps a window's
    sample_id to its sampler series (`env_json["series"]`), used for the frequency drop only
    when no window has a `freq_cap_ratio`.
    """
    w = windows(samples)
    if w.empty:
        return _empty(SUSTAINED_COLUMNS)
    labels = _labels(samples)
    rows = []
    for key, group in w.groupby(list(GROUP_KEYS), sort=False):
        keys = dict(zip(GROUP_KEYS, key, strict=True))
        spec = spec_for(specs, **keys)
        rows.append(_analyze_group(keys, group, spec, series, labels.get(str(keys["device"]))))
    return pd.DataFrame(rows, columns=list(SUSTAINED_COLUMNS))


def ranking(table: pd.DataFrame) -> pd.DataFrame:
    """Per configuration, the devices ranked at peak and when sustained (RANKING_COLUMNS).

    rank_change = peak_rank - sustained_rank: positive when a device climbs once warm.
    Devices without a peak or a sustained latency are left out of that configuration.
    """
    if table.empty:
        return _empty(RANKING_COLUMNS)
    ok = table[table["peak_us"].notna() & table["sustained_us"].notna()].copy()
    if ok.empty:
        return _empty(RANKING_COLUMNS)
    by = ok.groupby(list(CONFIG_KEYS), sort=False)
    ok["n_devices"] = by["device"].transform("count")
    ok["peak_rank"] = by["peak_us"].rank(method="min").astype(int)
    ok["sustained_rank"] = by["sustained_us"].rank(method="min").astype(int)
    ok["rank_change"] = ok["peak_rank"] - ok["sustained_rank"]
    ok = ok.sort_values([*CONFIG_KEYS, "sustained_rank", "peak_rank", "device"], kind="stable")
    return ok[list(RANKING_COLUMNS)].reset_index(drop=True)


def window_freq_fraction(points: Sequence[Mapping[str, Any]]) -> float:
    """A window's frequency as a fraction of max, from its sampler points (NaN without data):
    the median over points of the fastest cluster's cur/max (see the module docstring)."""
    values = []
    for p in points:
        cur, top = p.get("cur_freq_khz") or (), p.get("max_freq_khz") or ()
        fractions = [float(c) / float(m) for c, m in zip(cur, top, strict=False)
                     if _finite(c) and _finite(m) and float(m) > 0]
        if fractions:
            values.append(max(fractions))
    return float(np.median(values)) if values else math.nan


def series_from_env_json(frame: pd.DataFrame) -> dict[int, dict[str, Any]]:
    """sample_id -> sampler series from a raw samples frame (`load_samples(raw=True)`), for the
    sustained rows only; rows whose env_json is missing or unreadable are left out."""
    if frame.empty or "env_json" not in frame.columns or "phase" not in frame.columns:
        return {}
    out: dict[int, dict[str, Any]] = {}
    rows = frame[frame["phase"] == PHASE]
    for sample_id, text in zip(rows["sample_id"], rows["env_json"], strict=True):
        try:
            series = json.loads(text).get("series")
        except (TypeError, ValueError, AttributeError):
            continue
        if isinstance(series, dict):
            out[int(sample_id)] = series
    return out


# --- internals ---------------------------------------------------------------------------------


def _analyze_group(keys: dict[str, Any], group: pd.DataFrame, spec: SustainedSpec | None,
                   series: Mapping[int, Mapping[str, Any]] | None,
                   meta: Mapping[str, Any] | None) -> dict[str, Any]:
    used_spec = spec or SustainedSpec()
    ok = group[(group["status"] == "ok") & (group["latency_us"] > 0)]
    n_failed = int((group["status"] != "ok").sum())
    meta = meta or {}
    row: dict[str, Any] = {
        **keys, "device_label": group["device_label"].iloc[0],
        "simulated": bool(meta.get("simulated", False)), "tier": str(meta.get("tier", "")),
        "n_windows": len(ok), "n_failed": n_failed, "window_s": used_spec.window_s,
        "duration_s": used_spec.duration_s, "onset_threshold": used_spec.onset_threshold,
        "tail_windows": used_spec.tail_windows,
        "spec_source": "sweep" if spec else "defaults (no sustained rule matches)",
        "last_offset_s": math.nan, "peak_us": math.nan, "sustained_us": math.nan,
        "sustained_peak_ratio": math.nan, "perf_retained": math.nan, "onset_s": None,
        "onset_window": None, "max_thermal_status": math.nan, "freq_drop": math.nan,
        "freq_source": "", "temp_start_c": math.nan, "temp_max_c": math.nan, "note": "",
    }
    notes: list[str] = []
    if n_failed:
        notes.append(f"{n_failed} failed window(s) left out")
    if ok.empty:
        row["note"] = "; ".join([*notes, "no successful window"])
        return row
    lat = ok["latency_us"].to_numpy(float)
    offsets = ok["offset_s"].to_numpy(float)
    peak = float(lat[0])
    tail = lat[-used_spec.tail_windows:] if used_spec.tail_windows > 0 else lat[-1:]
    sustained = float(np.median(tail))
    if len(lat) <= used_spec.tail_windows:
        notes.append(f"short: {len(lat)} window(s), the tail includes the peak window")
    slower = np.nonzero(lat[1:] > peak * (1.0 + used_spec.onset_threshold))[0]
    if len(slower):
        i = int(slower[0]) + 1
        row["onset_s"] = float(offsets[i])
        row["onset_window"] = int(ok["window"].iloc[i]) if _finite(ok["window"].iloc[i]) else i
    status = ok["thermal_status"].dropna()
    temps = ok["temp_c"].dropna()
    start_temp = _first_valid(ok, "temp_before_c")
    row.update(
        last_offset_s=float(offsets[-1]), peak_us=peak, sustained_us=sustained,
        sustained_peak_ratio=sustained / peak, perf_retained=peak / sustained,
        max_thermal_status=float(status.max()) if len(status) else math.nan,
        temp_max_c=float(temps.max()) if len(temps) else math.nan,
        temp_start_c=start_temp if not math.isnan(start_temp) else (
            float(temps.iloc[0]) if len(temps) else math.nan),
    )
    row["freq_drop"], row["freq_source"] = _freq_drop(ok, series)
    row["note"] = "; ".join(notes)
    return row


def _freq_drop(ok: pd.DataFrame, series: Mapping[int, Mapping[str, Any]] | None
               ) -> tuple[float, str]:
    caps = ok["freq_cap_ratio"].dropna()
    if len(caps):
        return max(0.0, 1.0 - float(caps.min())), "freq_cap_ratio"
    if series:
        fractions = [window_freq_fraction((series.get(int(sid)) or {}).get("points") or ())
                     for sid in ok["sample_id"].dropna()]
        fractions = [f for f in fractions if not math.isnan(f)]
        if fractions:
            return max(0.0, 1.0 - min(fractions)), "sampler cur/max freq"
    return math.nan, "none recorded"


def _first_valid(ok: pd.DataFrame, column: str) -> float:
    """The first window's value of a column that `windows()` does not carry, from the frame."""
    if column not in ok.columns:
        return math.nan
    v = pd.to_numeric(ok[column], errors="coerce").dropna()
    return float(v.iloc[0]) if len(v) else math.nan


def _labels(samples: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """device -> {simulated, tier} from the first sustained row of each device."""
    if "device" not in samples.columns:
        return {}
    df = samples[samples["phase"] == PHASE].drop_duplicates("device")
    out = {}
    for _, r in df.iterrows():
        sim = r.get("simulated")
        out[str(r["device"])] = {"simulated": bool(sim) if not _isna(sim) else False,
                                 "tier": "" if _isna(r.get("tier")) else str(r.get("tier"))}
    return out


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name] if name in df.columns else pd.Series(np.nan, index=df.index)


def _text_col(df: pd.DataFrame, name: str) -> pd.Series:
    if name not in df.columns:
        return pd.Series("", index=df.index)
    col = df[name]
    return col.astype(object).where(col.notna(), "").astype(str)


def _first_of(df: pd.DataFrame, names: Sequence[str]) -> pd.Series:
    out = pd.Series(np.nan, index=df.index, dtype=float)
    for name in names:
        if name in df.columns:
            out = out.fillna(pd.to_numeric(df[name], errors="coerce"))
    return out


def _max_of(df: pd.DataFrame, names: Sequence[str]) -> pd.Series:
    cols = [pd.to_numeric(df[n], errors="coerce") for n in names if n in df.columns]
    if not cols:
        return pd.Series(np.nan, index=df.index, dtype=float)
    return pd.concat(cols, axis=1).max(axis=1, skipna=True)


def _empty(columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


def _isna(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False
