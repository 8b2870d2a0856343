"""The self-contained HTML report of one run, plus its CSV exports.

`render_report(data, out_dir)` writes `index.html` (CSS and charts inline as base64 PNG, no
external URL), `summary.csv` (one row per case), `speedups.csv`, `samples.csv` (one row per
sample), and `sustained.csv` / `trends.csv` when the run has sustained windows / a history. It
reads nothing and touches no device: the store hands it a `ReportData`. Templates are rendered
by jinja2 with autoescape on for every template, because device strings (model names,
fingerprints, error messages) end up in the page.

Scale: the page stays small and quick with 100k samples. Per-sample tables stop at
`sections.MAX_SAMPLE_ROWS` rows and point to samples.csv; figures are drawn through one
`plots.FigureBudget` per page (a count and a byte cap, in page order), so a lab with many
devices loses its last per-device charts, not its time budget; long series are bucketed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from farm import analysis
from farm.errors import FarmError
from farm.report import plots, sections
from farm.report.tables import (
    Table,
    case_labels,
    ci_ms,
    first_items,
    is_nan,
    ms,
    num,
    pct,
    text,
    truthy,
)
from farm.workers import Workers, write_csv

log = logging.getLogger(__name__)

__all__ = ["ReportData", "Table", "render_html", "render_report"]


@dataclass(frozen=True, slots=True, eq=False)  # eq=False: DataFrames have no truth value
class ReportData:
    """Everything a report shows, as the store loads it for one run.

    Optional parts: `fidelity` (the store's fidelity rows of this run, as a frame or a list of
    dicts), `history` (measure samples of earlier runs, `Store.history_samples`; the trends
    section), `series` (sample_id -> env_json["series"] of the sustained windows; only used
    for the frequency drop when no window has a freq_cap_ratio).
    """

    run: Mapping[str, Any]
    devices: Sequence[Mapping[str, Any]]
    variants: pd.DataFrame
    samples: pd.DataFrame
    fidelity: pd.DataFrame | Sequence[Mapping[str, Any]] | None = None
    history: pd.DataFrame | None = None
    series: Mapping[int, Mapping[str, Any]] | None = None


def render_report(data: ReportData, out_dir: Path, *, exclude_tainted: bool = True,
                  budget: plots.FigureBudget | None = None, pool: Workers | None = None,
                  samples_csv: Future[Any] | None = None) -> Path:
    """Write index.html and the CSVs (summary, speedups, samples; sustained and trends when
    there are any) in out_dir; return index.html.

    A big report (`plots.report_workers`) is rendered with worker processes (`pool`, the
    caller's to close; else started here, first, so that they import while the tables are
    computed): one writes samples.csv, the others draw the figures. With a `budget` given,
    figures are drawn in it (serially unless it has a pool). `samples_csv`: samples.csv is
    already being written there (by a worker reading the store); wait for it."""
    own = None
    if pool is None and budget is None:
        n_workers = plots.report_workers(len(data.samples))
        pool = own = Workers(n_workers) if n_workers else None
    try:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise FarmError(f"{out_dir}: cannot write the report: {e}") from e
        if samples_csv is None and pool is not None:
            samples_csv = pool.submit(write_csv, data.samples, out_dir / "samples.csv")
        budget = budget or plots.FigureBudget(pool=pool)
        cases = analysis.group_cases(data.samples)  # grouped once for both tables
        summary = analysis.summarize(cases, exclude_tainted=exclude_tainted)
        speedups = analysis.speedups(cases, exclude_tainted=exclude_tainted)
        html, extra = _render(data, summary, speedups, exclude_tainted, budget)
        index = out_dir / "index.html"
        try:
            summary.to_csv(out_dir / "summary.csv", index=False)
            speedups.to_csv(out_dir / "speedups.csv", index=False)
            if samples_csv is None:
                write_csv(data.samples, out_dir / "samples.csv")
            for name, frame in extra.items():
                frame.to_csv(out_dir / name, index=False)
            if samples_csv is not None:
                try:
                    samples_csv.result()
                except RuntimeError as e:
                    raise OSError(str(e)) from None
            index.write_text(html, encoding="utf-8")
        except OSError as e:
            raise FarmError(f"{out_dir}: cannot write the report: {e}") from e
    finally:
        if own is not None:
            own.close()
    log.info("report written to %s", index)
    return index


def render_html(data: ReportData, *, summary: pd.DataFrame | None = None,
                speedups: pd.DataFrame | None = None, exclude_tainted: bool = True,
                budget: plots.FigureBudget | None = None) -> str:
    """The report page as a string (summary and speedups are computed when not given)."""
    if summary is None or speedups is None:
        cases = analysis.group_cases(data.samples)
        if summary is None:
            summary = analysis.summarize(cases, exclude_tainted=exclude_tainted)
        if speedups is None:
            speedups = analysis.speedups(cases, exclude_tainted=exclude_tainted)
    return _render(data, summary, speedups, exclude_tainted, budget)[0]


def _render(data: ReportData, summary: pd.DataFrame, speedups: pd.DataFrame,
            exclude_tainted: bool, budget: plots.FigureBudget | None
            ) -> tuple[str, dict[str, pd.DataFrame]]:
    env = jinja2.Environment(loader=jinja2.PackageLoader("farm", "report/templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    context, extra = _context(data, summary, speedups, exclude_tainted,
                              budget or plots.FigureBudget())
    return env.get_template("run.html.j2").render(**context), extra


# --- context -----------------------------------------------------------------------------------


def _context(data: ReportData, summary: pd.DataFrame, speedups: pd.DataFrame,
             exclude_tainted: bool, budget: plots.FigureBudget
             ) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """The template's values, built in page order (figures take the budget in that order),
    and the extra CSV frames."""
    run = dict(data.run)
    devices = _devices(data.devices, data.samples)
    labels = {d["serial"]: d["label"] for d in devices}
    simulated = [d["label"] for d in devices if d["simulated"]]
    scaling = analysis.thread_scaling(summary)
    fastest = analysis.fastest(summary)
    fidelity = sections.fidelity_frame(data.fidelity)
    verdicts, fast_but_wrong = sections.verdict_table(speedups, fidelity)
    context: dict[str, Any] = {
        "run_id": _s(run.get("run_id")),
        "status": _s(run.get("status")),
        "provenance": _provenance(run, data.samples),
        "simulated": simulated,
        "totals": _totals(data.samples, summary),
        "exclude_tainted": exclude_tainted,
        "speedups": verdicts,
        "fast_but_wrong": fast_but_wrong,
        "speedup_figures": [
            (d["label"], budget.png(partial(plots.speedup_figure, _rows_of(speedups, d["serial"]),
                                            title=f"Speedup over fp32: {d['label']}")))
            for d in devices if not _rows_of(speedups, d["serial"]).empty
        ],
        "fidelity": sections.fidelity_table(fidelity, labels),
        "fastest": _fastest_table(fastest, fidelity),
        "calibration": _calibration(run, data.variants),
        "policy": sections.policy_section(data.samples, data.devices, fidelity, run, labels),
    }
    sustained = sections.sustained_section(data.samples, run, data.series, labels, budget)
    context["sustained"] = sustained
    context["thermal"] = sections.thermal_section(data.samples, run, labels)
    context["memory"] = sections.memory_table(data.samples, labels)
    trends = sections.trends_section(data.history, data.samples, run, labels, budget)
    context["trends"] = trends
    context.update({
        "tiers": _tiers(devices, summary, scaling, fastest, budget),
        "variants": _variant_table(data.variants),
        "size_figure": budget.png(partial(plots.model_size_figure, data.variants)),
        "failures": _failure_table(data.samples),
        "flagged": _flagged_table(data.samples),
        "thresholds": {
            "min_n": analysis.MIN_N_FOR_VERDICT,
            "cv": f"{analysis.HIGH_VARIANCE_CV:.0%}",
            "boot_n": analysis.MIN_PAIRS_FOR_BOOTSTRAP,
            "min_effect": f"{analysis.MIN_EFFECT:.0%}",
        },
        "max_sample_rows": sections.MAX_SAMPLE_ROWS,
    })
    budget.finish()  # the workers' figures, with the byte cap applied in page order
    context = plots.resolve(context)
    context["budget"] = {"figures": budget.figures, "omitted": budget.omitted,
                         "max_figures": budget.max_figures,
                         "max_mb": f"{budget.max_bytes / 1e6:.1f}"}
    extra: dict[str, pd.DataFrame] = {}
    if sustained["present"]:
        extra["sustained.csv"] = sustained["frame"]
    if trends["present"]:
        extra["trends.csv"] = trends["frame"]
    return context, extra


#: Per-case charts of one device draw at most this many cases (the table lists all of them).
_MAX_FIGURE_CASES = 60


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
            "verdict_ok": int(summary["verdict_ok"].astype(bool).sum()) if len(summary) else 0,
            "sustained_windows": len(samples) - len(sections.measure_rows(samples))}


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
           fastest: pd.DataFrame, budget: plots.FigureBudget) -> list[dict[str, Any]]:
    tiers: dict[str, list[dict[str, Any]]] = {}
    for d in devices:
        cases = _rows_of(summary, d["serial"])
        dev_scaling = _rows_of(scaling, d["serial"])
        plotted = cases.head(_MAX_FIGURE_CASES)
        more = f" (first {len(plotted)} of {len(cases)} cases)" if len(cases) > len(plotted) \
            else ""
        tiers.setdefault(d["tier"], []).append({
            **d,
            "cases": _case_table(cases),
            "n_cases": len(cases),
            "latency_figure": budget.png(partial(
                plots.latency_figure, plotted, title=f"Median latency: {d['label']}{more}")),
            "scaling_figure": budget.png(partial(
                plots.thread_scaling_figure, dev_scaling, title=f"Thread scaling: {d['label']}")),
            "scaling": _scaling_table(dev_scaling),
            "init_figure": budget.png(partial(
                plots.init_first_figure, plotted,
                title=f"Init and first inference: {d['label']}{more}")),
            "init": _init_table(cases),
            "memory_figure": budget.png(partial(
                plots.memory_figure, plotted, title=f"Memory: {d['label']}{more}")),
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
    records = cases.to_dict("records")  # not iterrows: one Series per row is slow
    rows = [(
        analysis.display_label(r), _ms(r["median_us"]), _ci_ms(r),
        f"{r['n_ok']} / {r['n_samples']}",
        str(r["n_tainted"]), str(r["n_failed"]), str(r["n_skipped"]), _ms(r["p90_us"]),
        _ms(r["min_us"]), _pct(r["cv"]), _s(r["delegation"]), _s(r["flags"]) or "—",
        "ok" if r["verdict_ok"] else f"no verdict: {_s(r['verdict_reason'])}",
    ) for r in records]
    return Table(cols, tuple(rows), tuple(_case_class(r) for r in records))


def _init_table(cases: pd.DataFrame) -> Table:
    cols = ("case", "init ms", "first inference ms", "warm-up avg ms", "steady median ms",
            "peak mem MB", "overall mem MB", "model size MB")
    records = cases.to_dict("records")  # not iterrows: one Series per row is slow
    rows = [(
        analysis.display_label(r), _ms(r["init_median_us"]), _ms(r["first_median_us"]),
        _ms(r["warmup_median_us"]), _ms(r["median_us"]), _num(r["peak_mem_median_mb"]),
        _num(r["mem_overall_median_mb"]), _num(r["model_size_mb"]),
    ) for r in records]
    return Table(cols, tuple(rows), tuple(_case_class(r) for r in records))


def _scaling_table(scaling: pd.DataFrame) -> Table:
    cols = ("model", "quantization", "delegate", "threads", "median ms", "CI ms",
            "speedup vs fewest threads", "efficiency", "verdict")
    records = scaling.to_dict("records")  # not iterrows: one Series per row is slow
    rows = [(
        _s(r["model"]), _s(r["quantization"]),
        _s(r["delegate"]) + (" (NOT APPLIED)" if r["delegation_status"]
                             == analysis.COVERAGE_NOT_APPLIED else ""),
        str(r["threads"]), _ms(r["median_us"]), _ci_ms(r),
        "—" if _nan(r["speedup_vs_base"])
        else f"{r['speedup_vs_base']:.2f}× vs t{r['base_threads']}",
        _pct(r["efficiency"]), "ok" if r["verdict_ok"] else "no verdict",
    ) for r in records]
    return Table(cols, tuple(rows), tuple(_case_class(r) for r in records))


def _fastest_table(fastest: pd.DataFrame, fidelity: pd.DataFrame | None = None) -> Table:
    cols = ("tier", "device", "model", "fastest configuration", "median ms", "CI ms (level)",
            "n", "delegation", "flags", "cannot be told apart from", "note")
    index = sections.fidelity_index(fidelity) if fidelity is not None else {}
    rows, classes = [], []
    for r in fastest.to_dict("records"):
        config = (f"{r['quantization']} / {r['delegate']} / {r['threads']} threads"
                  if _s(r["quantization"]) else "—")
        note = _s(r["note"])
        wrong = False
        if _s(r["quantization"]):
            key = (_s(r["device"]), _s(r["model"]), _s(r["quantization"]), _s(r["delegate"]),
                   int(r["threads"]))
            wrong = sections.fidelity_state(index.get(key)) == sections.FIDELITY_OUTSIDE
            if wrong:
                note = "; ".join(x for x in ("FAST BUT WRONG: outputs outside the fidelity "
                                             "tolerance; never recommend it", note) if x)
        rows.append((_s(r["tier"]) or "—", _s(r["device_label"]), _s(r["model"]), config,
                     _ms(r["median_us"]), _ci_ms(r), _s(r["n_ok"]), _s(r["delegation_status"]),
                     _s(r["flags"]) or "—", _s(r["indistinguishable_from"]) or "—",
                     note or "—"))
        classes.append("bad" if wrong else "" if _s(r["quantization"]) else "warn")
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
    bad["case"] = case_labels(bad)
    if "phase" in bad.columns:  # a sustained window is named as such
        bad.loc[bad["phase"] == "sustained", "case"] += " (sustained)"
    bad["error"] = bad["error"].fillna("").astype(str).replace("", "(no reason recorded)")
    rows = []
    for (dev, status, err), g in bad.groupby(["device_label", "status", "error"], sort=True):
        rows.append((str(dev), str(status), str(err), str(len(g)),
                     _first(sorted(set(g["case"])))))
    return Table(cols, tuple(rows), tuple("bad" if r[1] == "failed" else "warn" for r in rows))


def _flagged_table(samples: pd.DataFrame) -> Table:
    cols = ("device", "case", "flags", "samples", "tainted (excluded)", "sample ids")
    samples = sections.measure_rows(samples)  # sustained windows run hot on purpose
    if samples.empty or "flags" not in samples.columns:
        return Table(cols, (), ())
    flags = samples["flags"].fillna("").astype(str)
    tainted = samples["tainted"].fillna(False).astype(bool) if "tainted" in samples.columns \
        else pd.Series(False, index=samples.index)
    flagged = samples[(flags != "") | tainted].copy()
    if flagged.empty:
        return Table(cols, (), ())
    flagged["case"] = case_labels(flagged)
    flagged["flag_set"] = flags[flagged.index].map(
        lambda f: ",".join(sorted(analysis.split_flags(f))) or "(tainted, no flag)")
    flagged["is_tainted"] = tainted[flagged.index]
    rows = []
    for (dev, case, fl), g in flagged.groupby(["device_label", "case", "flag_set"], sort=True):
        rows.append((str(dev), str(case), str(fl), str(len(g)), str(int(g["is_tainted"].sum())),
                     _first([str(i) for i in g["sample_id"]])))
    return Table(cols, tuple(rows), tuple("warn" for _ in rows))


# --- formatting (shared with the sections: farm.report.tables) ------------------------------

_first = first_items
_nan = is_nan
_truthy = truthy
_s = text
_num = num
_ms = ms
_pct = pct
_ci_ms = ci_ms
