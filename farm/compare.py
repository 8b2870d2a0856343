"""Nightly regression detection between two runs, noise thresholds learned from history, trends.

`compare`, `trends`, `junit_xml` and `markdown` are pure (frames in, values or text out).
`compare_runs` reads the store and `write_outputs` writes the JUnit/Markdown files; nothing
here touches a device.

Cases are matched across runs by (device, model, quantization, delegate, threads), never by
case_id: case ids hash the benchmark binary's sha, which changes whenever the binary does.

A case *regressed* when both hold (asv and IREE also require both):
- the change is significant: the CI of the latency ratio new / base excludes 1. Below 10
  samples a side it is a Welch t-interval on log latencies, from 10 a two-sample bootstrap of
  the ratio of medians (`analysis.ratio_ci_independent`); the Mann–Whitney p-value is shown
  as well;
- the change is larger than the case's threshold: max(`threshold_pct`, `noise_k` × the
  case's night-to-night noise). A within-run CI says nothing about how much a phone drifts
  between nights (20–50 % has been reported on unrooted phones); the store's history does.
  The noise is learned per device × case, as in an individuals/moving-range control chart:
  order the case's previous run medians by time, take the mean absolute change of log median
  from one run to the next (the mean moving range, MR̄), and scale it to the standard
  deviation of a night-to-night change, sd = MR̄ × √(π/2) (exact for normal changes). Moving
  ranges, unlike the plain spread of the medians, stay small after a past step change (a
  regression that was accepted contributes one range, not a bimodal history). The comparison
  itself is such a change (BASE to NEW), so k = 3 gives a 0.13 % one-sided false-alarm rate
  per case when sd is known; estimated from few runs it is higher (simulated, normal drift:
  about 2 % with 5 runs of history, 1 % with 8, 0.5 % with 15). With fewer than
  `min_history_runs` runs only `threshold_pct` applies, and the row says so.

A case that ran in the base and now has no usable sample (every sample failed), or whose
delegate applied in the base and no longer does (a silent CPU fallback), is "broken": a
failure in JUnit and for `--fail-on-regression`, whatever its latency.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from farm import analysis
from farm.errors import FarmError

MATCH_KEYS: tuple[str, ...] = ("device", "model", "quantization", "delegate", "threads")
DEFAULT_THRESHOLD_PCT = 5.0
DEFAULT_NOISE_K = 3.0
MIN_HISTORY_RUNS = 5
#: sd of a normal night-to-night change = mean absolute change × √(π/2).
MR_TO_SD = math.sqrt(math.pi / 2.0)

REGRESSION = "regression"
IMPROVEMENT = "improvement"
UNCHANGED = "unchanged"
BROKEN = "broken"
NEW = "new"
MISSING = "missing"
NOT_COMPARABLE = "not comparable"
#: Statuses that fail a JUnit testcase.
FAILING: frozenset[str] = frozenset({REGRESSION, BROKEN})

TREND_COLUMNS: tuple[str, ...] = (
    "device", "device_label", "model", "quantization", "delegate", "threads", "run_id",
    "run_started_at", "n", "median_us", "ci_low_us", "ci_high_us", "ci_level",
    "change_vs_previous_pct",
)


@dataclass(frozen=True, slots=True)
class CaseChange:
    """One case compared between the base and the new run."""

    device: str
    device_label: str
    model: str
    quantization: str
    delegate: str
    threads: int
    status: str
    reason: str
    n_base: int = 0
    n_new: int = 0
    base_median_us: float = math.nan
    new_median_us: float = math.nan
    ratio: float = math.nan  # new / base latency: > 1 is slower
    change_pct: float = math.nan
    ci_low: float = math.nan  # of the ratio new / base
    ci_high: float = math.nan
    ci_level: float = math.nan
    ci_method: str = ""
    p_value: float = math.nan  # two-sided Mann–Whitney U
    threshold_pct: float = math.nan
    noise_pct: float = math.nan
    history_runs: int = 0
    threshold_source: str = ""

    def label(self) -> str:
        """model/quantization/delegate/t<threads>."""
        return f"{self.model}/{self.quantization}/{self.delegate}/t{self.threads}"

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in ((f, getattr(self, f)) for f in self.__slots__)}


@dataclass(frozen=True, slots=True)
class Comparison:
    """Every case of two runs, compared."""

    base_run: str
    new_run: str
    threshold_pct: float
    noise_k: float
    level: float
    cases: tuple[CaseChange, ...]

    def with_status(self, *statuses: str) -> tuple[CaseChange, ...]:
        """The cases with one of `statuses`."""
        return tuple(c for c in self.cases if c.status in statuses)

    def failing(self, fail_pct: float | None = None) -> tuple[CaseChange, ...]:
        """Broken cases, and regressions (slower by more than `fail_pct` when given)."""
        return tuple(c for c in self.cases if c.status == BROKEN or (
            c.status == REGRESSION and (fail_pct is None or c.change_pct > fail_pct)))

    def counts(self) -> dict[str, int]:
        """Cases per status."""
        out: dict[str, int] = {}
        for c in self.cases:
            out[c.status] = out.get(c.status, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"base_run": self.base_run, "new_run": self.new_run,
                "threshold_pct": self.threshold_pct, "noise_k": self.noise_k,
                "level": self.level, "counts": self.counts(),
                "cases": [c.to_dict() for c in self.cases]}


# --- comparing ---------------------------------------------------------------------------------


def compare(base: pd.DataFrame, new: pd.DataFrame, history: pd.DataFrame | None = None, *,
            base_run: str = "", new_run: str = "", threshold_pct: float = DEFAULT_THRESHOLD_PCT,
            noise_k: float = DEFAULT_NOISE_K, min_history_runs: int = MIN_HISTORY_RUNS,
            level: float = 0.95, include_tainted: bool = False, seed: int = 0) -> Comparison:
    """Compare every case of `new` with the same case of `base` (see the module docstring).

    `history` holds the samples of earlier runs (any number, `run_id` column; the new run's
    own samples are ignored if present) for the noise thresholds.
    """
    b = _prepare(base)
    n = _prepare(new)
    noise = case_noise(history, exclude_run=new_run or _single_run(new),
                       include_tainted=include_tainted) if history is not None else {}
    b_groups = {k: g for k, g in b.groupby(list(MATCH_KEYS), sort=False)}
    n_groups = {k: g for k, g in n.groupby(list(MATCH_KEYS), sort=False)}
    cases = []
    for key in sorted(set(b_groups) | set(n_groups), key=lambda k: tuple(map(str, k))):
        cases.append(_compare_case(key, b_groups.get(key), n_groups.get(key),
                                   noise.get(key), threshold_pct, noise_k, min_history_runs,
                                   level, include_tainted, seed))
    order = {BROKEN: 0, REGRESSION: 1, IMPROVEMENT: 2, NOT_COMPARABLE: 3, MISSING: 4, NEW: 5,
             UNCHANGED: 6}
    cases.sort(key=lambda c: order.get(c.status, 9))
    return Comparison(base_run=base_run or _single_run(base), new_run=new_run or _single_run(new),
                      threshold_pct=threshold_pct, noise_k=noise_k, level=level,
                      cases=tuple(cases))


@dataclass(frozen=True, slots=True)
class Noise:
    """A case's night-to-night noise: the sd of a change between consecutive runs' medians
    (from the mean moving range of log medians), as a percentage; and how many runs it used."""

    noise_pct: float
    runs: int


def case_noise(history: pd.DataFrame, *, exclude_run: str = "",
               include_tainted: bool = False) -> dict[tuple[Any, ...], Noise]:
    """Per device × case: its night-to-night noise over the runs in `history` (time order from
    `run_started_at` when present, else the run ids, which sort by time)."""
    df = _prepare(history)
    df["_when"] = (df["run_started_at"].astype(str) if "run_started_at" in df.columns
                   else df["run_id"].astype(str))
    if exclude_run:
        df = df[df["run_id"].astype(str) != exclude_run]
    df = df[analysis.usable_mask(df, exclude_tainted=not include_tainted)]
    out: dict[tuple[Any, ...], Noise] = {}
    if df.empty:
        return out
    medians = df.groupby([*MATCH_KEYS, "_when", "run_id"], sort=True)["inference_avg_us"].median()
    for key, series in medians.groupby(level=list(range(len(MATCH_KEYS))), sort=False):
        logs = np.log(series.to_numpy(dtype=float))  # in time order (sorted by _when)
        logs = logs[np.isfinite(logs)]
        if len(logs) < 2:
            out[key] = Noise(math.nan, len(logs))
            continue
        moving_range = float(np.mean(np.abs(np.diff(logs))))
        out[key] = Noise(100.0 * (math.exp(MR_TO_SD * moving_range) - 1.0), len(logs))
    return out


def _prepare(samples: pd.DataFrame) -> pd.DataFrame:
    df = analysis.normalize_samples(samples)
    if "run_id" not in df.columns:
        df["run_id"] = ""
    return df[df["phase"] == analysis.MEASURE_PHASE]


def _single_run(df: pd.DataFrame) -> str:
    if "run_id" not in df.columns:
        return ""
    ids = sorted({str(r) for r in df["run_id"].dropna()})
    return ids[0] if len(ids) == 1 else ""


def _compare_case(key: tuple[Any, ...], base: pd.DataFrame | None, new: pd.DataFrame | None,
                  noise: Noise | None, threshold_pct: float, noise_k: float,
                  min_history_runs: int, level: float, include_tainted: bool,
                  seed: int) -> CaseChange:
    keys = dict(zip(MATCH_KEYS, key, strict=True))
    first = (new if new is not None else base)
    assert first is not None
    head: dict[str, Any] = {
        "device": str(keys["device"]), "device_label": str(first.iloc[0]["device_label"]),
        "model": str(keys["model"]), "quantization": str(keys["quantization"]),
        "delegate": str(keys["delegate"]), "threads": int(keys["threads"])}
    threshold, source = threshold_pct, f"user threshold {threshold_pct:g} %"
    noise_pct, runs = math.nan, 0
    if noise is not None:
        noise_pct, runs = noise.noise_pct, noise.runs
        if runs >= min_history_runs and not math.isnan(noise_pct):
            learned = noise_k * noise_pct
            if learned > threshold_pct:
                threshold = learned
                source = (f"learned: {noise_k:g} × {noise_pct:.1f} % night-to-night noise over "
                          f"{runs} runs")
            else:
                source = (f"user threshold {threshold_pct:g} % (history: {noise_k:g} × "
                          f"{noise_pct:.1f} % noise over {runs} runs is smaller)")
        else:
            source += f" (history: {runs} run(s), {min_history_runs} needed to learn the noise)"
    else:
        source += f" (no history; {min_history_runs} runs needed to learn the noise)"
    head.update(threshold_pct=threshold, noise_pct=noise_pct, history_runs=runs,
                threshold_source=source)
    if base is None:
        return CaseChange(**head, status=NEW, reason="not in the base run")
    if new is None:
        return CaseChange(**head, status=MISSING, reason="not in the new run")
    b_vals = _values(base, include_tainted)
    n_vals = _values(new, include_tainted)
    head.update(n_base=len(b_vals), n_new=len(n_vals),
                base_median_us=float(np.median(b_vals)) if len(b_vals) else math.nan,
                new_median_us=float(np.median(n_vals)) if len(n_vals) else math.nan)
    if len(b_vals) and not len(n_vals):
        errors = sorted({str(e) for e in new["error"] if str(e)})
        failed = int((new["status"] == "failed").sum())
        if failed:
            return CaseChange(**head, status=BROKEN,
                              reason=f"{failed} of {len(new)} sample(s) failed now"
                              + (f": {errors[0]}" if errors else ""))
        return CaseChange(**head, status=NOT_COMPARABLE,
                          reason="no usable sample in the new run (skipped or tainted)")
    # Night to night, a configuration is compared with itself: a partially delegated case is
    # comparable with the same partial delegation. Less delegation than in the base is a
    # breakage (a silent CPU fallback); more makes the latencies incomparable.
    b_cov, b_detail = analysis.delegation_coverage(base)
    n_cov, n_detail = analysis.delegation_coverage(new)
    b_rank, n_rank = _COVERAGE_RANK.get(b_cov), _COVERAGE_RANK.get(n_cov)
    delegate = head["delegate"]
    if b_rank is None or n_rank is None:
        return CaseChange(**head, status=NOT_COMPARABLE,
                          reason=f"{delegate} delegation unknown: base {b_detail}, new {n_detail}")
    b_nodes, n_nodes = _nodes(base), _nodes(new)
    fewer = (b_rank == n_rank == 1 and n_nodes < b_nodes)
    more = (b_rank == n_rank == 1 and n_nodes > b_nodes)
    if len(b_vals) and (n_rank < b_rank or fewer):
        return CaseChange(**head, status=BROKEN,
                          reason=f"{delegate} delegation {b_detail} in the base, {n_detail} now")
    if n_rank > b_rank or more:
        return CaseChange(**head, status=NOT_COMPARABLE,
                          reason=f"{delegate} delegation changed from {b_detail} to {n_detail}: "
                          "latencies of different graphs")
    if len(b_vals) < 2 or len(n_vals) < 2:
        return CaseChange(**head, status=NOT_COMPARABLE,
                          reason=f"{len(b_vals)} vs {len(n_vals)} usable samples; at least 2 "
                          "per side needed")
    # ratio_ci_independent(new, base) gives median(new)/median(base): > 1 means slower now
    ci = analysis.ratio_ci_independent(n_vals, b_vals, level=level, seed=seed)
    p_value = float(stats.mannwhitneyu(n_vals, b_vals, alternative="two-sided").pvalue)
    change = 100.0 * (ci.ratio - 1.0)
    head.update(ratio=ci.ratio, change_pct=change, ci_low=ci.low, ci_high=ci.high,
                ci_level=ci.level, ci_method=ci.method, p_value=p_value)
    significant = not math.isnan(ci.low) and (ci.low > 1.0 or ci.high < 1.0)
    if significant and ci.low > 1.0 and change > threshold:
        return CaseChange(**head, status=REGRESSION,
                          reason=f"{change:.1f} % slower, over the {threshold:.1f} % threshold "
                          f"and significant ({ci.level:.0%} CI of the ratio "
                          f"[{ci.low:.3f}, {ci.high:.3f}])")
    if significant and ci.high < 1.0 and -change > threshold:
        return CaseChange(**head, status=IMPROVEMENT,
                          reason=f"{-change:.1f} % faster, over the {threshold:.1f} % threshold "
                          f"and significant ({ci.level:.0%} CI of the ratio "
                          f"[{ci.low:.3f}, {ci.high:.3f}])")
    if significant:
        why = (f"significant but {abs(change):.1f} % is within the {threshold:.1f} % threshold")
    else:
        why = (f"{change:+.1f} %, not significant ({ci.level:.0%} CI of the ratio "
               f"[{ci.low:.3f}, {ci.high:.3f}] includes 1)")
    return CaseChange(**head, status=UNCHANGED, reason=why)


_COVERAGE_RANK = {analysis.COVERAGE_FULL: 2, analysis.COVERAGE_NONE_REQUESTED: 2,
                  analysis.COVERAGE_PARTIAL: 1, analysis.COVERAGE_NOT_APPLIED: 0}


def _nodes(group: pd.DataFrame) -> float:
    """Median delegated node count (-1 when unknown, so unknown never looks like a change)."""
    values = pd.to_numeric(group["delegated_nodes"], errors="coerce").dropna()
    return float(values.median()) if len(values) else -1.0


def _values(group: pd.DataFrame, include_tainted: bool) -> np.ndarray:
    used = group[analysis.usable_mask(group, exclude_tainted=not include_tainted)]
    return np.asarray(used["inference_avg_us"].to_numpy(dtype=float), dtype=float)


# --- trends ------------------------------------------------------------------------------------


def trends(samples: pd.DataFrame, *, level: float = 0.95,
           include_tainted: bool = False) -> pd.DataFrame:
    """Per case and run (oldest first): n, median with its distribution-free CI, and the change
    from the previous run of the same case, for plotting nights.

    The run time is the `run_started_at` column when present (`Store.history_samples` adds
    it), else the earliest sample `started_at` of the run, else the run id (ids sort by time).
    """
    df = _prepare(samples)
    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in TREND_COLUMNS})
    if "run_started_at" in df.columns:
        df["run_started_at"] = df["run_started_at"].fillna(df["run_id"]).astype(str)
    elif "started_at" in df.columns:
        first = df.groupby("run_id")["started_at"].min()
        df["run_started_at"] = df["run_id"].map(first).fillna(df["run_id"]).astype(str)
    else:
        df["run_started_at"] = df["run_id"].astype(str)
    usable = analysis.usable_mask(df, exclude_tainted=not include_tainted)
    rows: list[dict[str, Any]] = []
    for key, group in df.groupby(list(MATCH_KEYS), sort=True):
        keys = dict(zip(MATCH_KEYS, key, strict=True))
        previous = math.nan
        runs = group.groupby(["run_started_at", "run_id"], sort=True)
        for (started, run_id), run in runs:
            values = run.loc[usable.loc[run.index], "inference_avg_us"].to_numpy(dtype=float)
            ci = analysis.median_ci(values, level)
            median = float(np.median(values)) if len(values) else math.nan
            change = (100.0 * (median / previous - 1.0)
                      if not math.isnan(previous) and not math.isnan(median) else math.nan)
            rows.append({**keys, "device_label": str(run.iloc[0]["device_label"]),
                         "run_id": str(run_id), "run_started_at": str(started),
                         "n": len(values), "median_us": median, "ci_low_us": ci.low,
                         "ci_high_us": ci.high, "ci_level": ci.level,
                         "change_vs_previous_pct": change})
            if not math.isnan(median):
                previous = median
    return pd.DataFrame(rows, columns=list(TREND_COLUMNS))


# --- output ------------------------------------------------------------------------------------

# XML 1.0 forbids most control characters even when escaped; error texts from phones have them.
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _x(text: Any) -> str:
    return _XML_BAD.sub("\ufffd", str(text))


def _pct(v: float) -> str:
    return "—" if math.isnan(v) else f"{v:+.1f} %"


def _ms(v: float) -> str:
    return "—" if math.isnan(v) else f"{v / 1000:.3f} ms"


def _ci(c: CaseChange) -> str:
    if math.isnan(c.ci_low):
        return "—"
    return f"[{c.ci_low:.3f}, {c.ci_high:.3f}]"


def _details(c: CaseChange) -> str:
    return (f"{c.status}: {c.reason}\n"
            f"base {_ms(c.base_median_us)} (n={c.n_base}), new {_ms(c.new_median_us)} "
            f"(n={c.n_new}), change {_pct(c.change_pct)}\n"
            f"ratio new/base {c.ratio:.4f}, CI {_ci(c)} at {c.ci_level:.0%} ({c.ci_method}); "
            f"Mann-Whitney p={c.p_value:.3g}\n"
            f"threshold {c.threshold_pct:.1f} % ({c.threshold_source})")


def junit_xml(comparison: Comparison, *, fail_pct: float | None = None) -> str:
    """JUnit XML: one testcase per case; regressions and broken cases fail, new/missing/
    not-comparable cases are skipped. With `fail_pct`, only regressions over it fail."""
    failing = {id(c) for c in comparison.failing(fail_pct)}
    suite_name = f"farm compare {comparison.base_run} -> {comparison.new_run}"
    root = ET.Element("testsuites", name="farm compare")
    suite = ET.SubElement(root, "testsuite", name=_x(suite_name))
    props = ET.SubElement(suite, "properties")
    for name, value in (("base_run", comparison.base_run), ("new_run", comparison.new_run),
                        ("threshold_pct", f"{comparison.threshold_pct:g}"),
                        ("noise_k", f"{comparison.noise_k:g}"),
                        ("level", f"{comparison.level:g}"),
                        ("fail_on_regression_pct", "" if fail_pct is None else f"{fail_pct:g}")):
        ET.SubElement(props, "property", name=name, value=_x(value))
    failures = skipped = 0
    for c in comparison.cases:
        seconds = 0.0 if math.isnan(c.new_median_us) else c.new_median_us / 1e6
        case = ET.SubElement(suite, "testcase", classname=_x(f"farm.{c.device}.{c.model}"),
                             name=_x(f"{c.quantization}/{c.delegate}/t{c.threads}"),
                             time=f"{seconds:.6f}")
        if id(c) in failing:
            failures += 1
            failure = ET.SubElement(case, "failure", type=c.status,
                                    message=_x(f"{c.status}: {c.reason}"))
            failure.text = _x(_details(c))
        elif c.status in (NEW, MISSING, NOT_COMPARABLE):
            skipped += 1
            ET.SubElement(case, "skipped", message=_x(f"{c.status}: {c.reason}"))
        out = ET.SubElement(case, "system-out")
        out.text = _x(_details(c))
    n = len(comparison.cases)
    for el in (root, suite):
        el.set("tests", str(n))
        el.set("failures", str(failures))
        el.set("errors", "0")
        el.set("skipped", str(skipped))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _md(text: Any) -> str:
    """A Markdown table cell: no pipes, newlines or raw HTML."""
    s = str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")
    return s.replace("<", "&lt;").replace(">", "&gt;").replace("`", "\\`")


def markdown(comparison: Comparison, *, fail_pct: float | None = None) -> str:
    """A Markdown summary: counts, then a table of every case (failures first)."""
    counts = comparison.counts()
    failing = comparison.failing(fail_pct)
    failing_ids = {id(c) for c in failing}
    lines = [f"## farm compare: {_md(comparison.base_run)} → {_md(comparison.new_run)}", ""]
    summary = ", ".join(f"{counts.get(s, 0)} {s}" for s in
                        (REGRESSION, BROKEN, IMPROVEMENT, UNCHANGED, NOT_COMPARABLE, NEW,
                         MISSING) if counts.get(s))
    lines.append(f"**{len(failing)} failing** ({summary or 'no cases'}).")
    lines.append("")
    lines.append(f"A regression is significant ({comparison.level:.0%} CI of the latency ratio "
                 f"excludes 1) and slower than max({comparison.threshold_pct:g} %, "
                 f"{comparison.noise_k:g} × the case's night-to-night noise)."
                 + (f" The gate fails on regressions over {fail_pct:g} % and on broken cases."
                    if fail_pct is not None else ""))
    lines += ["", "| status | device | case | base | new | change | CI of new/base | "
              "threshold | why |", "|---|---|---|---|---|---|---|---|---|"]
    for c in comparison.cases:
        mark = "**" if id(c) in failing_ids else ""
        lines.append("| " + " | ".join((
            f"{mark}{_md(c.status)}{mark}", _md(c.device_label), _md(c.label()),
            _ms(c.base_median_us), _ms(c.new_median_us), _pct(c.change_pct), _ci(c),
            "—" if math.isnan(c.threshold_pct) else f"{c.threshold_pct:.1f} %",
            _md(c.reason))) + " |")
    return "\n".join(lines) + "\n"


# --- the store and files (used by the CLI) -----------------------------------------------------


def compare_runs(db: Path, base_ref: str, new_ref: str, *,
                 threshold_pct: float = DEFAULT_THRESHOLD_PCT, noise_k: float = DEFAULT_NOISE_K,
                 history_runs: int = 30, level: float = 0.95,
                 include_tainted: bool = False) -> Comparison:
    """Compare two runs of the store (ids, prefixes or 'last'), with thresholds learned from
    up to `history_runs` runs that started no later than the base."""
    from farm.errors import StoreError
    from farm.store import Store

    if not Path(db).exists():
        raise StoreError(f"{db}: no results database yet; run `farm run --matrix sweep.yaml` "
                         "first or pass --db")
    with Store(db) as store:
        base_id, new_id = store.resolve_run(base_ref), store.resolve_run(new_ref)
        if base_id == new_id:
            raise FarmError(f"BASE and NEW are the same run ({base_id}); compare two runs")
        history = store.history_samples(until_run=base_id, max_runs=history_runs)
        base = store.load_samples(base_id)
        new = store.load_samples(new_id)
    return compare(base, new, history, base_run=base_id, new_run=new_id,
                   threshold_pct=threshold_pct, noise_k=noise_k, level=level,
                   include_tainted=include_tainted)


def baseline_for(db: Path, run_id: str, ref: str) -> str | None:
    """The baseline run for `farm run --baseline`: 'last' is the newest finished run that
    started before `run_id` (None when there is none yet); anything else is resolved as is."""
    from farm.store import Store

    with Store(db) as store:
        if ref in ("last", "latest"):
            return store.previous_run(run_id)
        return store.resolve_run(ref)


def write_outputs(comparison: Comparison, *, junit: Path | None = None,
                  markdown_file: Path | None = None, fail_pct: float | None = None
                  ) -> list[Path]:
    """Write the JUnit XML and/or Markdown summary; returns the paths written."""
    written = []
    for path, kind in ((junit, "junit"), (markdown_file, "markdown")):
        if path is None:
            continue
        text = (junit_xml(comparison, fail_pct=fail_pct) if kind == "junit"
                else markdown(comparison, fail_pct=fail_pct))
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text, encoding="utf-8")
        except OSError as e:
            raise FarmError(f"{path}: cannot write: {e.strerror}") from None
        written.append(Path(path))
    return written


def summary_lines(comparison: Comparison, *, fail_pct: float | None = None,
                  limit: int = 20) -> Iterable[str]:
    """Short human lines for the terminal: counts, then failing and improved cases."""
    counts = comparison.counts()
    yield (f"compare {comparison.base_run} -> {comparison.new_run}: "
           + (", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "no cases"))
    shown: Sequence[CaseChange] = [c for c in comparison.cases
                                   if c.status in (BROKEN, REGRESSION, IMPROVEMENT)]
    failing = {id(c) for c in comparison.failing(fail_pct)}
    for c in shown[:limit]:
        tag = "FAIL " if id(c) in failing else ""
        yield f"  {tag}{c.status:11} {c.device_label}  {c.label()}: {c.reason}"
    if len(shown) > limit:
        yield f"  ... and {len(shown) - limit} more (see the Markdown/JUnit output)"
