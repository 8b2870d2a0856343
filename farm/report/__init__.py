"""The self-contained HTML report of one run, plus its CSV exports.

`render_report(data, out_dir)` writes `index.html` (CSS and charts inline as base64 PNG, no
external URL), `summary.csv` (one row per case), `speedups.csv` and `samples.csv` (one row per
sample). It reads nothing and touches no device: the store hands it a `ReportData`. Templates are
rendered by jinja2 with autoescape on for every template, because device strings (model names,
fingerprints, error messages) end up in the page.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from farm import analysis
from farm.errors import FarmError
from farm.report import plots

log = logging.getLogger(__name__)

#: How many items (cases, sample ids) a table cell lists before it says "and N more".
_MAX_ITEMS = 12


@dataclass(frozen=True, slots=True, eq=False)  # eq=False: DataFrames have no truth value
class ReportData:
    """Everything a report shows, as the store loads it for one run."""

    run: Mapping[str, Any]
    devices: Sequence[Mapping[str, Any]]
    variants: pd.DataFrame
    samples: pd.DataFrame


@dataclass(frozen=True, slots=True)
class Table:
    """A table ready for the template: header, string cells, one CSS class per row."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    classes: tuple[str, ...]


def render_report(data: ReportData, out_dir: Path, *, exclude_tainted: bool = True) -> Path:
    """Write index.html, summary.csv, speedups.csv and samples.csv in out_dir; return index.html."""
    summary = analysis.summarize(data.samples, exclude_tainted=exclude_tainted)
    speedups = analysis.speedups(data.samples, exclude_tainted=exclude_tainted)
    html = render_html(data, summary=summary, speedups=speedups,
                       exclude_tainted=exclude_tainted)
    index = out_dir / "index.html"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        summary.to_csv(out_dir / "summary.csv", index=False)
        speedups.to_csv(out_dir / "speedups.csv", index=False)
        data.samples.to_csv(out_dir / "samples.csv", index=False)
        index.write_text(html, encoding="utf-8")
    except OSError as e:
        raise FarmError(f"{out_dir}: cannot write the report: {e}") from e
    log.info("report written to %s", index)
    return index


def render_html(data: ReportData, *, summary: pd.DataFrame | None = None,
                speedups: pd.DataFrame | None = None, exclude_tainted: bool = True) -> str:
    """The report page as a string (summary and speedups are computed when not given)."""
    if summary is None:
        summary = analysis.summarize(data.samples, exclude_tainted=exclude_tainted)
    if speedups is None:
        speedups = analysis.speedups(data.samples, exclude_tainted=exclude_tainted)
    env = jinja2.Environment(loader=jinja2.PackageLoader("farm", "report/templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    return env.get_template("run.html.j2").render(
        **_context(data, summary, speedups, exclude_tainted))


# --- context -----------------------------------------------------------------------------------


def _context(data: ReportData, summary: pd.DataFrame, speedups: pd.DataFrame,
             exclude_tainted: bool) -> dict[str, Any]:
    run = dict(data.run)
    devices = _devices(data.devices, data.samples)
    simulated = [d["label"] for d in devices if d["simulated"]]
    scaling = analysis.thread_scaling(summary)
    fastest = analysis.fastest(summary)
    return {
        "run_id": _s(run.get("run_id")),
        "status": _s(run.get("status")),
        "provenance": _provenance(run, data.samples),
        "simulated": simulated,
        "calibration": _calibration(run, data.variants),
        "totals": _totals(data.samples, summary),
        "fastest": _fastest_table(fastest),
        "exclude_tainted": exclude_tainted,
        "speedups": _speedup_table(speedups),
        "speedup_figures": [
            (d["label"], plots.to_png_data_uri(plots.speedup_figure(
                _rows_of(speedups, d["serial"]), title=f"Speedup over fp32: {d['label']}")))
            for d in devices if not _rows_of(speedups, d["serial"]).empty
        ],
        "tiers": _tiers(devices, summary, scaling, fastest),
        "variants": _variant_table(data.variants),
        "size_figure": plots.to_png_data_uri(plots.model_size_figure(data.variants)),
        "failures": _failure_table(data.samples),
        "flagged": _flagged_table(data.samples),
        "thresholds": {
            "min_n": analysis.MIN_N_FOR_VERDICT,
            "cv": f"{analysis.HIGH_VARIANCE_CV:.0%}",
            "boot_n": analysis.MIN_PAIRS_FOR_BOOTSTRAP,
            "min_effect": f"{analysis.MIN_EFFECT:.0%}",
        },
    }


def _rows_of(frame: pd.DataFrame, serial: str) -> pd.DataFrame:
    if frame.empty:
        return frame
    return frame[frame["device"] == serial]


def _provenance(run: Mapping[str, Any], samples: pd.DataFrame) -> list[tuple[str, str]]:
    keys = (("run id", "run_id"), ("status", "status"), ("sweep file", "sweep_file"),
            ("sweep sha256", "sweep_sha256"), ("started", "started_at"), ("ended", "ended_at"),
            ("farm", "farm_version"), ("TensorFlow", "tf_version"),
            ("LiteRT", "litert_version"), ("host", "host"), ("git sha", "git_sha"),
            ("calibration", "calibration"))
    out = [(name, _s(run.get(key)) or "—") for name, key in keys]
    if "binary_sha256" in samples.columns:
        shas = sorted({_s(v) for v in samples["binary_sha256"] if _s(v)})
        out.append(("benchmark_model sha256", ", ".join(shas) or "—"))
    return out


def _calibration(run: Mapping[str, Any], variants: pd.DataFrame) -> dict[str, Any]:
    text = _s(run.get("calibration"))
    used: list[str] = []
    if not variants.empty and "calibration" in variants.columns:
        for _, v in variants.iterrows():
            if _s(v.get("calibration")).lower().startswith("random"):
                used.append(f"{v['model']}/{v['quantization']}")
    return {"text": text or "none recorded",
            "random": text.lower().startswith("random") or bool(used), "variants": used}


def _totals(samples: pd.DataFrame, summary: pd.DataFrame) -> dict[str, int]:
    status = samples["status"] if "status" in samples.columns else pd.Series(dtype=str)
    tainted = samples["tainted"].fillna(False).astype(bool) if "tainted" in samples.columns \
        else pd.Series(dtype=bool)
    return {"samples": len(samples), "ok": int((status == "ok").sum()),
            "failed": int((status == "failed").sum()),
            "skipped": int((status == "skipped").sum()), "tainted": int(tainted.sum()),
            "cases": len(summary),
            "verdict_ok": int(summary["verdict_ok"].astype(bool).sum()) if len(summary) else 0}


def _devices(facts: Sequence[Mapping[str, Any]], samples: pd.DataFrame) -> list[dict[str, Any]]:
    """One entry per device, from the facts and from any serial seen only in the samples."""
    out: dict[str, dict[str, Any]] = {}
    for d in facts:
        serial = _s(d.get("serial"))
        name = " ".join(p for p in (_s(d.get("manufacturer")), _s(d.get("model"))) if p)
        simulated = _truthy(d.get("simulated"))
        label = (name or serial) + (" [SIMULATED]" if simulated else "")
        out[serial] = {"serial": serial, "label": label, "simulated": simulated,
                       "tier": _s(d.get("tier")), "facts": _facts(d)}
    if "device" in samples.columns and len(samples):
        for serial, g in samples.groupby("device", sort=False):
            first = g.iloc[0]
            entry = out.setdefault(str(serial), {
                "serial": str(serial), "label": _s(first.get("device_label")) or str(serial),
                "simulated": _truthy(first.get("simulated")), "tier": _s(first.get("tier")),
                "facts": [("facts", "none recorded for this device")]})
            entry["label"] = _s(first.get("device_label")) or entry["label"]
    for i, entry in enumerate(out.values()):
        entry["anchor"] = f"device-{i}"
    return sorted(out.values(), key=lambda d: (d["tier"] == "", d["tier"], d["label"]))


def _facts(d: Mapping[str, Any]) -> list[tuple[str, str]]:
    clusters = "; ".join(
        f"cpu{_span(c.get('cpus', ()))} @ {int(c.get('max_freq_khz', 0)) / 1e6:.2f} GHz"
        for c in d.get("clusters", ()) or ())
    sdk = _s(d.get("sdk"))
    ram = d.get("ram_mb")
    extra = d.get("extra") or {}
    rows = [
        ("serial", _s(d.get("serial"))), ("kind", _s(d.get("kind"))),
        ("simulated", "YES" if d.get("simulated") else "no"),
        ("tier", _s(d.get("tier")) or "—"),
        ("manufacturer", _s(d.get("manufacturer"))), ("model", _s(d.get("model"))),
        ("SoC", _s(d.get("soc"))), ("CPU", _s(d.get("cpu_name"))),
        ("CPU count", _s(d.get("cpu_count"))), ("clusters", clusters),
        ("ABIs", ", ".join(map(str, d.get("abis", ()) or ()))),
        ("Android / SDK", f"{_s(d.get('android_release'))} / {sdk}" if sdk else
         _s(d.get("android_release"))),
        ("fingerprint", _s(d.get("fingerprint"))),
        ("RAM", f"{int(ram)} MB" if isinstance(ram, int | float) and not _nan(ram) else ""),
        ("thermal zones", ", ".join(map(str, d.get("thermal_zones", ()) or ()))),
        ("GPU / NNAPI", f"{'yes' if d.get('has_gpu') else 'no'} / "
                        f"{'yes' if d.get('has_nnapi') else 'no'}"),
    ]
    rows += [(str(k), _s(v)) for k, v in dict(extra).items()]
    return [(k, v or "—") for k, v in rows]


def _span(cpus: Sequence[int]) -> str:
    cpus = sorted(int(c) for c in cpus)
    if not cpus:
        return "?"
    if cpus == list(range(cpus[0], cpus[-1] + 1)) and len(cpus) > 1:
        return f"{cpus[0]}-{cpus[-1]}"
    return ",".join(map(str, cpus))


def _tiers(devices: list[dict[str, Any]], summary: pd.DataFrame, scaling: pd.DataFrame,
           fastest: pd.DataFrame) -> list[dict[str, Any]]:
    tiers: dict[str, list[dict[str, Any]]] = {}
    for d in devices:
        cases = _rows_of(summary, d["serial"])
        dev_scaling = _rows_of(scaling, d["serial"])
        tiers.setdefault(d["tier"], []).append({
            **d,
            "cases": _case_table(cases),
            "n_cases": len(cases),
            "latency_figure": plots.to_png_data_uri(plots.latency_figure(
                cases, title=f"Median latency: {d['label']}")),
            "scaling_figure": plots.to_png_data_uri(plots.thread_scaling_figure(
                dev_scaling, title=f"Thread scaling: {d['label']}")),
            "scaling": _scaling_table(dev_scaling),
            "init_figure": plots.to_png_data_uri(plots.init_first_figure(
                cases, title=f"Init and first inference: {d['label']}")),
            "init": _init_table(cases),
            "memory_figure": plots.to_png_data_uri(plots.memory_figure(
                cases, title=f"Memory: {d['label']}")),
        })
    return [{"name": name or "untiered", "anchor": f"tier-{i}", "devices": devs,
             "fastest": _fastest_table(fastest[fastest["device"].isin([d["serial"]
                                                                     for d in devs])])}
            for i, (name, devs) in enumerate(tiers.items())]


# --- tables ------------------------------------------------------------------------------------


def _case_class(row: Any) -> str:
    if row.get("delegation_status") == analysis.COVERAGE_NOT_APPLIED:
        return "bad"
    return "" if bool(row.get("verdict_ok")) else "warn"


def _case_table(cases: pd.DataFrame) -> Table:
    cols = ("case", "median ms", "CI ms (achieved level)", "n ok / samples", "tainted excl.",
            "failed", "skipped", "p90 ms", "min ms", "CV", "delegation", "flags", "verdict")
    rows = [(
        analysis.display_label(r), _ms(r["median_us"]), _ci_ms(r),
        f"{r['n_ok']} / {r['n_samples']}",
        str(r["n_tainted"]), str(r["n_failed"]), str(r["n_skipped"]), _ms(r["p90_us"]),
        _ms(r["min_us"]), _pct(r["cv"]), _s(r["delegation"]), _s(r["flags"]) or "—",
        "ok" if r["verdict_ok"] else f"no verdict: {_s(r['verdict_reason'])}",
    ) for _, r in cases.iterrows()]
    return Table(cols, tuple(rows), tuple(_case_class(r) for _, r in cases.iterrows()))


def _init_table(cases: pd.DataFrame) -> Table:
    cols = ("case", "init ms", "first inference ms", "warm-up avg ms", "steady median ms",
            "peak mem MB", "overall mem MB", "model size MB")
    rows = [(
        analysis.display_label(r), _ms(r["init_median_us"]), _ms(r["first_median_us"]),
        _ms(r["warmup_median_us"]), _ms(r["median_us"]), _num(r["peak_mem_median_mb"]),
        _num(r["mem_overall_median_mb"]), _num(r["model_size_mb"]),
    ) for _, r in cases.iterrows()]
    return Table(cols, tuple(rows), tuple(_case_class(r) for _, r in cases.iterrows()))


def _scaling_table(scaling: pd.DataFrame) -> Table:
    cols = ("model", "quantization", "delegate", "threads", "median ms", "CI ms",
            "speedup vs fewest threads", "efficiency", "verdict")
    rows = [(
        _s(r["model"]), _s(r["quantization"]),
        _s(r["delegate"]) + (" (NOT APPLIED)" if r["delegation_status"]
                             == analysis.COVERAGE_NOT_APPLIED else ""),
        str(r["threads"]), _ms(r["median_us"]), _ci_ms(r),
        "—" if _nan(r["speedup_vs_base"])
        else f"{r['speedup_vs_base']:.2f}× vs t{r['base_threads']}",
        _pct(r["efficiency"]), "ok" if r["verdict_ok"] else "no verdict",
    ) for _, r in scaling.iterrows()]
    return Table(cols, tuple(rows), tuple(_case_class(r) for _, r in scaling.iterrows()))


def _fastest_table(fastest: pd.DataFrame) -> Table:
    cols = ("tier", "device", "model", "fastest configuration", "median ms", "CI ms (level)",
            "n", "delegation", "flags", "cannot be told apart from", "note")
    rows, classes = [], []
    for _, r in fastest.iterrows():
        config = (f"{r['quantization']} / {r['delegate']} / {r['threads']} threads"
                  if _s(r["quantization"]) else "—")
        rows.append((_s(r["tier"]) or "—", _s(r["device_label"]), _s(r["model"]), config,
                     _ms(r["median_us"]), _ci_ms(r), _s(r["n_ok"]), _s(r["delegation_status"]),
                     _s(r["flags"]) or "—", _s(r["indistinguishable_from"]) or "—",
                     _s(r["note"]) or "—"))
        classes.append("" if _s(r["quantization"]) else "warn")
    return Table(cols, tuple(rows), tuple(classes))


def _speedup_table(speedups: pd.DataFrame) -> Table:
    cols = ("device", "model", "delegate", "threads", "quantization", "ratio",
            "CI (level, method)", "verdict", "evidence", "why")
    rows, classes = [], []
    for _, r in speedups.iterrows():
        ci = "—"
        if not _nan(r["ci_low"]):
            ci = (f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}] ({_pct(r['ci_level'])}, "
                  f"{_s(r['ci_method'])})")
        evidence = (f"n pairs {r['n_pairs']}; CV {r['baseline']} {_pct(r['baseline_cv'])}, "
                    f"{r['quantization']} {_pct(r['variant_cv'])}; tainted excluded "
                    f"{r['n_tainted_excluded']}; delegation {r['baseline']} "
                    f"{r['baseline_coverage']}, {r['quantization']} {r['variant_coverage']}")
        rows.append((_s(r["device_label"]), _s(r["model"]), _s(r["delegate"]),
                     _s(r["threads"]), f"{r['quantization']} vs {r['baseline']}",
                     "—" if _nan(r["ratio"]) else f"{r['ratio']:.2f}×", ci, _s(r["verdict"]),
                     evidence, _s(r["reason"]) or "—"))
        classes.append({"faster": "good", "slower": "bad", "not comparable": "warn"}.get(
            _s(r["verdict"]), ""))
    return Table(cols, tuple(rows), tuple(classes))


def _variant_table(variants: pd.DataFrame) -> Table:
    cols = ("model", "quantization", "status", "size MB", "sha256", "conversion s", "cached",
            "calibration", "error")
    rows, classes = [], []
    for _, v in variants.iterrows():
        size = v.get("size_bytes")
        rows.append((_s(v.get("model")), _s(v.get("quantization")), _s(v.get("status")),
                     "—" if _nan(size) or not size else f"{float(size) / 1e6:.3f}",
                     _s(v.get("sha256"))[:16] or "—", _num(v.get("conversion_s")),
                     "yes" if _truthy(v.get("cached")) else "no",
                     _s(v.get("calibration")) or "—", _s(v.get("error")) or "—"))
        classes.append("" if _s(v.get("status")) == "ok" else "bad")
    return Table(cols, tuple(rows), tuple(classes))


def _failure_table(samples: pd.DataFrame) -> Table:
    """One row per device × status × reason (a lost phone is one row, not one per case)."""
    cols = ("device", "status", "reason", "samples", "cases")
    if samples.empty or "status" not in samples.columns:
        return Table(cols, (), ())
    bad = samples[samples["status"].isin(["failed", "skipped"])].copy()
    if bad.empty:
        return Table(cols, (), ())
    bad["case"] = bad.apply(analysis.case_label, axis=1)
    bad["error"] = bad["error"].fillna("").astype(str).replace("", "(no reason recorded)")
    rows = []
    for (dev, status, err), g in bad.groupby(["device_label", "status", "error"], sort=True):
        rows.append((str(dev), str(status), str(err), str(len(g)),
                     _first(sorted(set(g["case"])))))
    return Table(cols, tuple(rows), tuple("bad" if r[1] == "failed" else "warn" for r in rows))


def _flagged_table(samples: pd.DataFrame) -> Table:
    cols = ("device", "case", "flags", "samples", "tainted (excluded)", "sample ids")
    if samples.empty or "flags" not in samples.columns:
        return Table(cols, (), ())
    flags = samples["flags"].fillna("").astype(str)
    tainted = samples["tainted"].fillna(False).astype(bool) if "tainted" in samples.columns \
        else pd.Series(False, index=samples.index)
    flagged = samples[(flags != "") | tainted].copy()
    if flagged.empty:
        return Table(cols, (), ())
    flagged["case"] = flagged.apply(analysis.case_label, axis=1)
    flagged["flag_set"] = flags[flagged.index].map(
        lambda f: ",".join(sorted(analysis.split_flags(f))) or "(tainted, no flag)")
    flagged["is_tainted"] = tainted[flagged.index]
    rows = []
    for (dev, case, fl), g in flagged.groupby(["device_label", "case", "flag_set"], sort=True):
        rows.append((str(dev), str(case), str(fl), str(len(g)), str(int(g["is_tainted"].sum())),
                     _first([str(i) for i in g["sample_id"]])))
    return Table(cols, tuple(rows), tuple("warn" for _ in rows))


# --- formatting --------------------------------------------------------------------------------


def _first(items: Sequence[str]) -> str:
    """The first few items, comma-separated, and how many more there are."""
    more = len(items) - _MAX_ITEMS
    return ", ".join(items[:_MAX_ITEMS]) + (f" and {more} more" if more > 0 else "")


def _nan(v: Any) -> bool:
    if v is None or v is pd.NA:
        return True
    try:
        return math.isnan(float(v))
    except (TypeError, ValueError):
        return False


def _truthy(v: Any) -> bool:
    """bool() that treats missing values (NaN, pd.NA, None) as False instead of raising."""
    return False if _nan(v) else bool(v)


def _s(v: Any) -> str:
    """A cell's text; missing values are empty."""
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v)


def _num(v: Any) -> str:
    if _nan(v):
        return "—"
    x = float(v)
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"


def _ms(us: Any) -> str:
    return "—" if _nan(us) else _num(float(us) / 1e3)


def _pct(v: Any) -> str:
    return "—" if _nan(v) else f"{float(v) * 100:.1f} %"


def _ci_ms(row: Any) -> str:
    if _nan(row["ci_low_us"]):
        return "—"
    return f"[{_ms(row['ci_low_us'])}, {_ms(row['ci_high_us'])}] ({_pct(row['ci_level'])})"
