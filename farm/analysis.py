"""Statistics over the samples frame: per-case summaries, paired quantization speedups, verdicts.

Pure pandas/numpy/scipy: never touches a file, a device or the network.

Measurement model (see shared/METHODOLOGY.md §3.2, §3.6). One *sample* is one benchmark_model
process and its value is `inference_avg_us`, the mean of that process's timed runs. A *case*
(device × model × quantization × delegate × threads) has `repeat` samples taken in randomized,
interleaved *rounds*, so two cases of the same device × model × delegate × threads are paired by
`round`. Phones are noisy between processes (CV 5–50 %) and n is small (3–10), so every interval
here is chosen to stay honest at small n, and every result states the confidence it achieved.

Choices, stated once:

- Centre: the median of the per-sample averages. `p90_us` is the 90th percentile (linear
  interpolation) of the per-sample averages, *not* of the within-process p95; `min_us` is the
  smallest per-sample average; `cv` is their sample standard deviation (ddof=1) over their mean.
- Median CI: distribution-free, from order statistics. For sorted x(1..n) the interval
  [x(l), x(n+1-l)] covers the population median with probability 1 - 2·P(B ≤ l-1),
  B ~ Binomial(n, 1/2). We pick the narrowest such interval whose coverage is ≥ the asked level
  and report the coverage it *achieves* (it is ≥ the level, never rounded up). With n ≤ 5 no
  interval reaches 95 %: we then report [min, max] with its own level (n=3: 75 %, n=4: 87.5 %,
  n=5: 93.75 %) and flag the case `low_n`. With n < 2 there is no interval (NaN).
- Tainted samples (set by the runner: throttled, charging changed, ...) are excluded from every
  statistic and verdict by default, counted in `n_tainted`, and still shown in the report.
- Speedup of a quantization over the baseline: ratio = median(baseline) / median(variant) over
  the rounds where both cases have a usable sample (> 1 means the variant is faster). Its CI:
  * n_pairs < 10: a paired t-interval on the per-round log-ratios, exponentiated. With 3–9 pairs
    a bootstrap has few distinct resamples and its percentile interval under-covers; the t
    quantile (4.30 at n=3) widens the interval honestly. It assumes roughly log-normal ratios,
    which suits latencies (positive, multiplicative noise). Its centre is the geometric mean of
    the per-round ratios (`geomean_ratio`), reported next to the ratio of medians.
  * n_pairs ≥ 10: a paired percentile bootstrap over rounds of the ratio of medians
    (`scipy.stats.bootstrap`, fixed seed, so reports are reproducible).
  Verdict: "faster" when the whole CI is above 1 and the ratio is at least 1 + `min_effect`;
  "slower" when the whole CI is below 1 and the ratio is at most 1 / (1 + `min_effect`);
  otherwise "no clear difference". "not comparable" when a side's delegate did not fully apply
  (a partial or CPU-fallback number is not that delegate's number), a side has no usable sample,
  the baseline case does not exist, or there are fewer than 2 pairs. A side whose delegate did
  not fully apply makes the row "not a verdict for that delegate" (the reason says which side
  and why).
- Phase: only `phase == "measure"` samples (the interleaved repeats) enter summaries and
  verdicts. Sustained-mode windows (`phase == "sustained"`) are back-to-back, uncooled and
  heat-dependent by design: they answer a different question (see `farm.policy`).
- Adaptive repeats (`needs_more_samples`): the runner keeps sampling a pair while the speedup
  CI still includes 1 and the budget lasts. Looking at the CI after every round and stopping at
  the first exclusion inflates false verdicts (optional stopping); given the budget, each look
  uses a Bonferroni-adjusted level, so the chance of any false early stop stays ≤ 1 - level.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from farm.models import QUANTIZATIONS

CASE_KEYS: tuple[str, ...] = ("device", "model", "quantization", "delegate", "threads")
PAIR_KEYS: tuple[str, ...] = ("device", "model", "delegate", "threads")

#: Below this many usable samples a case gets no verdict (the sweep's minimum repeat is 3).
MIN_N_FOR_VERDICT = 3
#: Coefficient of variation from which a case's samples are flagged `high_variance` (pyperf).
HIGH_VARIANCE_CV = 0.10
#: Pairs from which the speedup CI switches from the log-ratio t-interval to the bootstrap.
MIN_PAIRS_FOR_BOOTSTRAP = 10
BOOTSTRAP_RESAMPLES = 1999  # percentile CI endpoints settle well before this
MAX_PAIRS_FOR_BOOTSTRAP = 200  # beyond this, an order-statistic CI (same answer, no resampling)
#: Smallest speedup (or slowdown) called a difference, as asv's factor and IREE's threshold do.
MIN_EFFECT = 0.05

#: Flags meaning the requested delegate did not run the model (its latency is a CPU number).
NOT_APPLIED_FLAGS: frozenset[str] = frozenset({"delegate_not_applied", "delegate_failed",
                                               "cpu_fallback"})
PARTIAL_FLAGS: frozenset[str] = frozenset({"partial_delegation"})

#: Delegation coverage of a case, from the samples' `delegation` column and flags.
COVERAGE_FULL = "full"
COVERAGE_PARTIAL = "partial"
COVERAGE_NOT_APPLIED = "not applied"
COVERAGE_NONE_REQUESTED = "n/a"  # no explicit delegate status line: the plain CPU path
COVERAGE_UNKNOWN = "unknown"  # nothing ran
#: Coverages under which a latency may be presented as the delegate's number.
COMPARABLE_COVERAGES: frozenset[str] = frozenset({COVERAGE_FULL, COVERAGE_NONE_REQUESTED})

SUMMARY_COLUMNS: tuple[str, ...] = (
    "device", "device_label", "simulated", "tier", "model", "quantization", "delegate", "threads",
    "n_samples", "n_ok", "n_failed", "n_skipped", "n_tainted",
    "median_us", "ci_low_us", "ci_high_us", "ci_level", "ci_method",
    "p90_us", "min_us", "max_us", "mean_us", "cv",
    "init_median_us", "first_median_us", "warmup_median_us",
    "mem_overall_median_mb", "peak_mem_median_mb", "model_size_mb",
    "delegation_status", "delegation", "delegate_applied", "delegated_nodes", "total_nodes",
    "flags", "verdict_ok", "verdict_reason", "errors",
)

SPEEDUP_COLUMNS: tuple[str, ...] = (
    "device", "device_label", "simulated", "tier", "model", "delegate", "threads",
    "quantization", "baseline", "n_pairs", "ratio", "ci_low", "ci_high", "ci_level", "ci_method",
    "geomean_ratio", "verdict", "reason", "baseline_median_us", "variant_median_us",
    "baseline_cv", "variant_cv", "n_tainted_excluded", "baseline_coverage", "variant_coverage",
    "baseline_n", "variant_n", "baseline_tainted_excluded", "variant_tainted_excluded",
    "baseline_delegation", "variant_delegation",
)

#: The columns of `quantization_verdicts`, in the order `farm verdict quantization` shows them.
VERDICT_COLUMNS: tuple[str, ...] = (
    "device", "device_label", "simulated", "tier", "model", "delegate", "threads",
    "quantization", "baseline", "ratio", "ci_low", "ci_high", "ci_level", "ci_method",
    "verdict", "reason", "n_pairs", "baseline_n", "variant_n", "baseline_cv", "variant_cv",
    "baseline_tainted_excluded", "variant_tainted_excluded", "n_tainted_excluded",
    "baseline_coverage", "variant_coverage", "baseline_delegation", "variant_delegation",
    "baseline_median_us", "variant_median_us", "geomean_ratio",
)

#: The phase of the interleaved repeats; the only phase summaries and verdicts use.
MEASURE_PHASE = "measure"

FASTEST_COLUMNS: tuple[str, ...] = (
    "device", "device_label", "simulated", "tier", "model", "quantization", "delegate", "threads",
    "median_us", "ci_low_us", "ci_high_us", "ci_level", "n_ok", "delegation_status", "flags",
    "indistinguishable_from", "note",
)

SCALING_COLUMNS: tuple[str, ...] = (
    "device", "device_label", "model", "quantization", "delegate", "threads", "median_us",
    "ci_low_us", "ci_high_us", "ci_level", "verdict_ok", "delegation_status", "base_threads",
    "speedup_vs_base", "efficiency",
)


@dataclass(frozen=True, slots=True)
class MedianCI:
    """A distribution-free confidence interval for a median, with the confidence it achieves."""

    low: float
    high: float
    level: float  # achieved coverage probability, NaN when there is no interval
    method: str
    low_rank: int  # 1-based order statistics used; 0 when there is no interval
    high_rank: int
    low_n: bool  # True when the asked level was not attainable with this n


@dataclass(frozen=True, slots=True)
class RatioCI:
    """A speedup ratio with its confidence interval."""

    ratio: float
    low: float
    high: float
    level: float
    method: str
    geomean_ratio: float


def median_ci(values: Iterable[float], level: float = 0.95) -> MedianCI:
    """Order-statistic CI for the median of `values` (NaNs dropped); see the module docstring."""
    x = np.sort(_non_nan(values))
    n = len(x)
    if n < 2:
        return MedianCI(math.nan, math.nan, math.nan, "none (n<2)", 0, 0, True)
    best = _median_ci_rank(n, float(level))
    if best is None:
        coverage = 1.0 - 2.0 * 0.5**n
        return MedianCI(float(x[0]), float(x[-1]), coverage,
                        f"order statistics [min, max] (n={n}: {level:.0%} not attainable)",
                        1, n, True)
    low_rank, coverage = best
    high_rank = n + 1 - low_rank
    return MedianCI(float(x[low_rank - 1]), float(x[high_rank - 1]), coverage,
                    f"order statistics [x({low_rank}), x({high_rank})] of n={n}",
                    low_rank, high_rank, False)


def coefficient_of_variation(values: Iterable[float]) -> float:
    """Sample standard deviation (ddof=1) over the mean; NaN with fewer than 2 values."""
    x = _non_nan(values)
    if len(x) < 2 or float(np.mean(x)) == 0.0:
        return math.nan
    return float(np.std(x, ddof=1) / np.mean(x))


def stability_flags(sample_avgs: Sequence[float]) -> tuple[str, ...]:
    """Flags about a case's spread: `high_variance` (CV ≥ 10 %) and `low_n` (no 95 % median CI)."""
    values = _non_nan(sample_avgs)
    return _stability(values, coefficient_of_variation(values))


def _stability(values: np.ndarray, cv: float) -> tuple[str, ...]:
    """stability_flags of NaN-free `values` whose CV is already known."""
    flags: list[str] = []
    if not math.isnan(cv) and cv >= HIGH_VARIANCE_CV:
        flags.append("high_variance")
    if len(values) < 2 or _median_ci_rank(len(values), 0.95) is None:  # median_ci(...).low_n
        flags.append("low_n")
    return tuple(flags)


class Cases:
    """The samples of one run grouped by case once, for statistics that look at each case.

    Built by `group_cases`; `summarize`, `speedups` and `quantization_verdicts` accept it in
    place of a samples frame, so a report groups its 100k samples once instead of once per
    table, and the per-case results every table needs (delegation coverage, per-round medians)
    are computed once. Per case it keeps row positions into the normalized frame and works on
    numpy columns: no pandas operation per case. Results are exactly those of the frame path.
    """

    __slots__ = ("frame", "phase", "keys", "positions", "_cols", "_coverage", "_rounds")

    def __init__(self, samples: pd.DataFrame, *, phase: str | None = MEASURE_PHASE,
                 normalized: bool = False) -> None:
        df = samples if normalized else _normalized(samples)
        if phase is not None:
            df = df[df["phase"] == phase]
        self.frame: pd.DataFrame = df
        self.phase = phase
        self.keys, self.positions = _group_positions(df, CASE_KEYS)
        self._cols: dict[str, np.ndarray] = {}
        self._coverage: dict[int, tuple[str, str]] = {}
        self._rounds: dict[tuple[int, bool], tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def col(self, name: str, *, numeric: bool = False, as_str: bool = False) -> np.ndarray:
        """A column of the normalized frame as a numpy array (numeric ones, and any column
        when `numeric`, as float with NaN for what is not a number; `as_str`: the values of
        `column.astype(str)`)."""
        key = f"{name}\0{'f' if numeric else 's' if as_str else ''}"
        if key not in self._cols:
            series = self.frame[name]
            if as_str:
                self._cols[key] = series.astype(str).to_numpy(dtype=object)
            elif numeric or name in _NUMERIC:
                self._cols[key] = _floats(series)
            elif name in ("tainted", "simulated"):
                self._cols[key] = series.to_numpy(dtype=bool)
            else:
                self._cols[key] = series.to_numpy(dtype=object)
        return self._cols[key]

    def coverage(self, i: int) -> tuple[str, str]:
        """`delegation_coverage` of case i."""
        if i not in self._coverage:
            idx = self.positions[i]
            self._coverage[i] = _coverage_arrays(
                self.col("status")[idx], self.col("flags")[idx], self.col("delegation")[idx],
                self.col("delegated_nodes")[idx], self.col("total_nodes")[idx])
        return self._coverage[i]

    def coverage_at(self, idx: np.ndarray) -> tuple[str, str]:
        """`delegation_coverage` of the rows at positions `idx` (not memoised)."""
        return _coverage_arrays(
            self.col("status")[idx], self.col("flags")[idx], self.col("delegation")[idx],
            self.col("delegated_nodes")[idx], self.col("total_nodes")[idx])

    def usable(self, i: int, exclude_tainted: bool) -> np.ndarray:
        """`usable_mask` over case i's rows."""
        idx = self.positions[i]
        mask = (self.col("status")[idx] == "ok") & ~np.isnan(self.col("inference_avg_us")[idx])
        if exclude_tainted:
            mask &= ~self.col("tainted")[idx]
        return np.asarray(mask, dtype=bool)

    def rounds(self, i: int, exclude_tainted: bool) -> tuple[np.ndarray, np.ndarray]:
        """(rounds ascending, median usable latency of each): `_per_round` of case i."""
        key = (i, exclude_tainted)
        if key not in self._rounds:
            idx = self.positions[i][self.usable(i, exclude_tainted)]
            self._rounds[key] = round_medians(self.col("round")[idx],
                                              self.col("inference_avg_us")[idx])
        return self._rounds[key]


def group_cases(samples: pd.DataFrame | Cases) -> Cases:
    """The measure-phase samples grouped by case (a `Cases`; returned as is when it is one)."""
    return samples if isinstance(samples, Cases) else Cases(samples)


def _cases_for(samples: pd.DataFrame | Cases, phase: str | None) -> Cases:
    if not isinstance(samples, Cases):
        return Cases(samples, phase=phase)
    if samples.phase != phase:
        raise ValueError(f"these cases hold phase {samples.phase!r} samples, not {phase!r}")
    return samples


def round_medians(rounds: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per distinct round (ascending; NaN rounds dropped), the median of its values: what
    `frame.groupby("round")[value].median()` gives, as two arrays."""
    rounds = np.asarray(rounds, dtype=float)
    values = np.asarray(values, dtype=float)
    keep = ~np.isnan(rounds)
    r, x = rounds[keep], values[keep]
    if len(r) == 0:
        return np.empty(0), np.empty(0)
    order = np.argsort(r, kind="stable")
    r, x = r[order], x[order]
    uniq, start, counts = np.unique(r, return_index=True, return_counts=True)
    if len(uniq) == len(r):
        return uniq, x
    med = np.array([x[s] if c == 1 else _nanmedian(x[s:s + c])
                    for s, c in zip(start, counts, strict=True)], dtype=float)
    return uniq, med


def summarize(samples: pd.DataFrame | Cases, *, exclude_tainted: bool = True,
              level: float = 0.95, phase: str | None = MEASURE_PHASE) -> pd.DataFrame:
    """One row per case with median, CI, spread, init/memory, delegation, flags and verdict_ok.

    `n_ok` counts the samples the statistics use: status "ok", a latency, and (by default) not
    tainted. `n_tainted` counts ok samples that are tainted, whether excluded or not.
    `verdict_ok` is False when fewer than 3 samples are usable, any sample failed, or the
    delegate did not apply; `verdict_reason` says why. A partially delegated case keeps its
    verdict (that is how the configuration runs) but is flagged, and `speedups` refuses it.
    `flags` is the union of the runner's flags on the samples not excluded, plus
    `stability_flags` of the latencies used. Only samples of `phase` are used (None: all).
    `samples` may be a `Cases` of the same phase (`group_cases`).
    """
    cases = _cases_for(samples, phase)
    if not len(cases):
        return _empty(SUMMARY_COLUMNS)
    rows = [_summarize_case(cases, i, exclude_tainted, level) for i in range(len(cases))]
    return _sorted(pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS)))


def speedups(samples: pd.DataFrame | Cases, baseline: str = "fp32", *,
             exclude_tainted: bool = True, level: float = 0.95, min_effect: float = MIN_EFFECT,
             seed: int = 0) -> pd.DataFrame:
    """Paired speedup of each quantization over `baseline` per device × model × delegate × threads.

    ratio = baseline median / variant median over the rounds both have (> 1: variant faster).
    Only measure-phase samples are used; sustained windows never are. `samples` may be a
    measure-phase `Cases` (`group_cases`).
    """
    cases = _cases_for(samples, MEASURE_PHASE)
    if not len(cases):
        return _empty(SPEEDUP_COLUMNS)
    pairs: dict[tuple[Any, ...], dict[str, int]] = {}
    for i, key in enumerate(cases.keys):
        quant = key[2]
        if _isna_key(quant):  # a case without a quantization is in no pair
            continue
        pair = (key[0], key[1], key[3], key[4])
        pairs.setdefault(_pair_id(pair), {})[str(quant)] = i
    rows: list[dict[str, Any]] = []
    for by_quant in pairs.values():
        base = by_quant.get(baseline)
        for quant, i in by_quant.items():
            if quant == baseline:
                continue
            key = cases.keys[i]
            keys = {"device": key[0], "model": key[1], "delegate": key[3], "threads": key[4]}
            rows.append(_speedup_row(cases, keys, baseline, quant, base, i, level,
                                     min_effect, seed, exclude_tainted))
    if not rows:
        return _empty(SPEEDUP_COLUMNS)
    return _sorted(pd.DataFrame(rows, columns=list(SPEEDUP_COLUMNS)))


def quantization_verdicts(samples: pd.DataFrame | Cases, *, include_tainted: bool = False,
                          baseline: str = "fp32", level: float = 0.95,
                          min_effect: float = MIN_EFFECT, seed: int = 0) -> pd.DataFrame:
    """Each quantization against `baseline` per device × model × delegate × threads.

    The table behind `farm verdict quantization`: `speedups` with the evidence columns in
    display order (VERDICT_COLUMNS). Tainted samples are excluded unless `include_tainted`.
    """
    frame = speedups(samples, baseline, exclude_tainted=not include_tainted, level=level,
                     min_effect=min_effect, seed=seed)
    return frame[list(VERDICT_COLUMNS)].reset_index(drop=True)


def needs_more_samples(base_avgs: Sequence[float], variant_avgs: Sequence[float],
                       level: float = 0.95, *, max_pairs: int | None = None,
                       min_pairs: int = MIN_N_FOR_VERDICT,
                       equivalence_margin: float | None = None) -> bool:
    """True while a pair's speedup CI still includes 1: the runner should sample another round.

    `base_avgs[i]` and `variant_avgs[i]` are the latencies of round i (NaN where a side has no
    usable sample; such rounds are dropped). Fewer than `min_pairs` usable pairs always need
    more. With `max_pairs` (the budget), each look uses the Bonferroni level
    1 - (1 - level) / (max_pairs - min_pairs + 1), so stopping at the first exclusion keeps the
    chance of any false early stop ≤ 1 - level; without it each look uses `level` as is.
    With `equivalence_margin` m, a CI inside (1/(1+m), 1+m) also stops: a difference that
    large is ruled out, so more rounds cannot change the verdict to faster or slower.
    The runner stops anyway when its budget is spent.
    """
    b = np.asarray(base_avgs, dtype=float)
    v = np.asarray(variant_avgs, dtype=float)
    if len(b) != len(v):
        raise ValueError(f"paired latencies differ in length: {len(b)} vs {len(v)}")
    keep = np.isfinite(b) & np.isfinite(v) & (b > 0) & (v > 0)
    b, v = b[keep], v[keep]
    if len(b) < max(2, min_pairs):
        return True
    if max_pairs is not None and max_pairs >= min_pairs:
        level = 1.0 - (1.0 - level) / (max_pairs - max(2, min_pairs) + 1)
    ci = ratio_ci(b, v, level=level)
    if math.isnan(ci.low) or math.isnan(ci.high):
        return True
    if ci.low > 1.0 or ci.high < 1.0:
        return False
    if equivalence_margin is not None:
        m = 1.0 + equivalence_margin
        return not (ci.low > 1.0 / m and ci.high < m)
    return True


def fastest(summary: pd.DataFrame) -> pd.DataFrame:
    """Per model × device, the fastest case with verdict_ok, and the cases it cannot be told from.

    `indistinguishable_from` lists the other verdict_ok cases whose median CI overlaps the
    fastest's (their order could flip in another run). A model × device with no verdict_ok case
    gets a row with an empty configuration and a `note` saying why.
    """
    if summary.empty:
        return _empty(FASTEST_COLUMNS)
    rows: list[dict[str, Any]] = []
    for (device, model), group in summary.groupby(["device", "model"], sort=False):
        first = group.iloc[0]
        base = {"device": device, "device_label": first["device_label"],
                "simulated": first["simulated"], "tier": first["tier"], "model": model}
        valid = group[group["verdict_ok"].astype(bool) & group["median_us"].notna()]
        if valid.empty:
            reasons = sorted({str(r) for r in group["verdict_reason"] if str(r)})
            rows.append({**base, "quantization": "", "delegate": "", "threads": pd.NA,
                         "median_us": math.nan, "ci_low_us": math.nan, "ci_high_us": math.nan,
                         "ci_level": math.nan, "n_ok": 0, "delegation_status": "", "flags": "",
                         "indistinguishable_from": "",
                         "note": "no case with a valid verdict: " + "; ".join(reasons)})
            continue
        best = valid.loc[valid["median_us"].idxmin()]
        others = valid.drop(index=best.name)
        overlap = others[_overlaps(others, best)]
        rows.append({**base, **{k: best[k] for k in FASTEST_COLUMNS if k in best.index
                                and k not in base},
                     "indistinguishable_from": "; ".join(case_label(r) for _, r in
                                                         overlap.iterrows()),
                     "note": ("CI overlaps other cases: the order among them is not established"
                              if len(overlap) else "")})
    return pd.DataFrame(rows, columns=list(FASTEST_COLUMNS))


def thread_scaling(summary: pd.DataFrame) -> pd.DataFrame:
    """Per device × model × quantization × delegate: latency by threads and speedup vs the fewest.

    speedup_vs_base = median(at the fewest threads) / median(at these threads);
    efficiency = speedup_vs_base / (threads / base_threads). NaN when a side has no median.
    """
    if summary.empty:
        return _empty(SCALING_COLUMNS)
    keys = ["device", "model", "quantization", "delegate"]
    # column operations: the base of a group is its row with the fewest threads
    work = summary[summary[keys].notna().all(axis=1)].sort_values("threads", kind="stable")
    if work.empty:
        return _empty(SCALING_COLUMNS)
    first = work.groupby(keys, sort=False).cumcount().to_numpy() == 0
    base = work[first].set_index(keys)[["threads", "median_us"]]
    base.columns = ["_base_threads", "_base_median"]
    work = work.join(base, on=keys)
    num = pd.to_numeric(work["_base_median"], errors="coerce").to_numpy(float)
    den = pd.to_numeric(work["median_us"], errors="coerce").to_numpy(float)
    ok = ~np.isnan(num) & ~np.isnan(den) & (den != 0.0)
    speedup = np.full(len(work), math.nan)
    speedup[ok] = num[ok] / den[ok]
    base_threads = work["_base_threads"].to_numpy()
    threads = work["threads"].to_numpy()
    scale = np.full(len(work), math.nan)
    nonzero = base_threads != 0
    scale[nonzero] = threads[nonzero] / base_threads[nonzero]
    efficiency = np.full(len(work), math.nan)
    usable = scale != 0  # NaN scales give NaN, as speedup / NaN does
    efficiency[usable] = speedup[usable] / scale[usable]
    out = pd.DataFrame({k: work[k] for k in SCALING_COLUMNS if k in work.columns},
                       columns=list(SCALING_COLUMNS))
    out["base_threads"] = work["_base_threads"]
    out["speedup_vs_base"] = speedup
    out["efficiency"] = efficiency
    return _sorted(out)


def case_label(row: Any) -> str:
    """model/quantization/delegate/t<threads>, as `Case.label` spells it."""
    return f"{row['model']}/{row['quantization']}/{row['delegate']}/t{row['threads']}"


def display_label(row: Any) -> str:
    """`case_label`, marked when the delegate did not apply: never shown as that delegate's."""
    if row.get("delegation_status") == COVERAGE_NOT_APPLIED:
        return (f"{row['model']}/{row['quantization']}/{row['delegate']} NOT APPLIED (CPU)"
                f"/t{row['threads']}")
    return case_label(row)


def split_flags(text: Any) -> tuple[str, ...]:
    """The comma-separated flags column as a tuple of non-empty names."""
    if not isinstance(text, str):
        return ()
    return tuple(f.strip() for f in text.split(",") if f.strip())


# --- internals ---------------------------------------------------------------------------------

_NUMERIC = ("inference_avg_us", "init_us", "first_inference_us", "warmup_avg_us",
            "mem_overall_mb", "peak_mem_mb", "model_size_mb", "variant_size_bytes",
            "delegated_nodes", "total_nodes", "round", "threads")
_TEXT = ("device_label", "tier", "status", "error", "flags", "delegation", "delegate_applied")


def _non_nan(values: Iterable[float]) -> np.ndarray:
    """The values that are not NaN (nor None, nor non-numbers), as a float array, in order."""
    if isinstance(values, np.ndarray | pd.Series) and values.dtype == np.float64:
        x = np.asarray(values, dtype=float)
        return np.asarray(x[~np.isnan(x)], dtype=float)
    return np.asarray([v for v in values if not _isnan(v)], dtype=float)


@lru_cache(maxsize=4096)
def _median_ci_rank(n: int, level: float) -> tuple[int, float] | None:
    """(low rank, achieved coverage) of the narrowest order-statistic median CI of n values
    that reaches `level`, or None when none does (it depends on n and the level only)."""
    ranks = np.arange(1, (n + 1) // 2 + 1)
    coverages = 1.0 - 2.0 * stats.binom.cdf(ranks - 1, n, 0.5)  # decreasing in the rank
    ok = np.nonzero(coverages >= level)[0]
    if not len(ok):
        return None
    # later ranks are narrower; keep the last that qualifies
    return int(ranks[ok[-1]]), float(coverages[ok[-1]])


@lru_cache(maxsize=65536)
def _split_flags_cached(text: str) -> frozenset[str]:
    return frozenset(split_flags(text))


def _flag_union(flags: Iterable[Any]) -> set[str]:
    """The union of the comma-separated flag cells (each distinct cell split once)."""
    out: set[str] = set()
    for cell in set(flags):
        if isinstance(cell, str):
            out |= _split_flags_cached(cell)
    return out


def _nanmedian(values: np.ndarray) -> float:
    """`_median` of a float array: the median of its non-NaN values, NaN when there are none."""
    return _median_of(values[~np.isnan(values)])


def _median_of(x: np.ndarray) -> float:
    """float(np.median(x)) of a NaN-free 1-D float array, NaN when empty: the same value (the
    middle order statistic, or the mean of the two middle ones) without np.median's overhead,
    which is most of a small array's cost."""
    n = len(x)
    if n == 0:
        return math.nan
    if n == 1:
        return float(x[0])
    s = np.sort(x)
    if n % 2:
        return float(s[n // 2])
    return float((s[n // 2 - 1] + s[n // 2]) / 2)


def _floats(series: pd.Series) -> np.ndarray:
    return np.asarray(pd.to_numeric(series, errors="coerce").to_numpy(dtype=float,
                                                                      na_value=np.nan))


def _isna_key(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _pair_id(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """A dict key for a group key: missing parts compare equal (NaN != NaN otherwise)."""
    return tuple(None if _isna_key(k) else k for k in key)


def _group_positions(df: pd.DataFrame, keys: Sequence[str]
                     ) -> tuple[list[tuple[Any, ...]], list[np.ndarray]]:
    """The groups of `df.groupby(keys, sort=False, dropna=False)` in its iteration order: each
    group's key (missing parts as NaN, as groupby gives them) and row positions (in frame
    order), from one groupby instead of one frame per group."""
    if df.empty:
        return [], []
    grouped = df.groupby(list(keys), sort=False, dropna=False)
    ids = grouped.ngroup().to_numpy()
    order = np.argsort(ids, kind="stable")
    counts = np.bincount(ids, minlength=grouped.ngroups)
    positions = np.split(order, np.cumsum(counts)[:-1])
    firsts = [int(p[0]) for p in positions]
    columns = [df[k].iloc[firsts].tolist() for k in keys]
    labels = [tuple(math.nan if _isna_key(v) else v for v in row)
              for row in zip(*columns, strict=True)]
    return labels, positions


def _isnan(v: Any) -> bool:
    try:
        return v is None or math.isnan(float(v))
    except (TypeError, ValueError):
        return True


def _empty(columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


def _normalized(samples: pd.DataFrame) -> pd.DataFrame:
    """A copy with the columns this module reads, with missing ones filled (NaN, "" or False)."""
    df = samples.reset_index(drop=True).copy()
    for col in CASE_KEYS:
        if col not in df.columns:
            df[col] = pd.Series(dtype=object)
    for col in _NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df.columns else math.nan
    for col in _TEXT:
        df[col] = (df[col].astype(object).where(df[col].notna(), "").astype(str)
                   if col in df.columns else "")
    df["phase"] = (df["phase"].astype(object).where(df["phase"].notna(), MEASURE_PHASE)
                   .replace("", MEASURE_PHASE).astype(str)
                   if "phase" in df.columns else MEASURE_PHASE)
    for col in ("tainted", "simulated"):
        df[col] = df[col].fillna(False).astype(bool) if col in df.columns else False
    df.loc[df["device_label"] == "", "device_label"] = df["device"].astype(str)
    df["threads"] = df["threads"].fillna(0).astype(int)
    if "repeat" in df.columns:  # pairing key: the round, or the repeat index where it is missing
        df["round"] = df["round"].fillna(pd.to_numeric(df["repeat"], errors="coerce"))
    return df


def _usable_mask(df: pd.DataFrame, exclude_tainted: bool) -> pd.Series:
    mask = (df["status"] == "ok") & df["inference_avg_us"].notna()
    if exclude_tainted:
        mask &= ~df["tainted"]
    return mask


def _median(series: pd.Series) -> float:
    values = pd.to_numeric(series, errors="coerce").dropna()
    return float(values.median()) if len(values) else math.nan


def _ratio(num: Any, den: Any) -> float:
    if _isnan(num) or _isnan(den) or float(den) == 0.0:
        return math.nan
    return float(num) / float(den)


def _coverage(group: pd.DataFrame) -> tuple[str, str]:
    """Delegation coverage of a case's samples that ran, and a human detail."""
    return _coverage_arrays(group["status"].to_numpy(dtype=object),
                            group["flags"].to_numpy(dtype=object),
                            group["delegation"].to_numpy(dtype=object),
                            _floats(group["delegated_nodes"]), _floats(group["total_nodes"]))


def _coverage_arrays(status: np.ndarray, flags_col: np.ndarray, delegation: np.ndarray,
                     delegated_nodes: np.ndarray, total_nodes: np.ndarray) -> tuple[str, str]:
    """`_coverage` over one case's columns (normalized: text as str, nodes as float)."""
    ran = status != "skipped"
    if not ran.any():
        return COVERAGE_UNKNOWN, "nothing ran"
    flags = _flag_union(flags_col[ran])
    ran_delegation = [str(d) for d in delegation[ran]]
    # value_counts order: most frequent first, ties in order of first appearance
    counts = Counter("-" if d == "" else d for d in ran_delegation)
    kinds = sorted(counts.items(), key=lambda kv: -kv[1])
    mix = ", ".join(f"{k}×{v}" for k, v in kinds)
    nodes = ""
    delegated = _nanmedian(delegated_nodes[ran])
    total = _nanmedian(total_nodes[ran])
    if not math.isnan(delegated) and not math.isnan(total):
        nodes = f" ({delegated:g}/{total:g} nodes)"
    present = set(ran_delegation)
    if flags & NOT_APPLIED_FLAGS or present & {"none", "failed"}:
        why = sorted(flags & NOT_APPLIED_FLAGS) or ["delegation " + mix]
        return COVERAGE_NOT_APPLIED, "not applied: " + ", ".join(why) + nodes
    if flags & PARTIAL_FLAGS or "partial" in present:
        return COVERAGE_PARTIAL, f"partial{nodes}" + ("" if len(kinds) == 1 else f" [{mix}]")
    if present == {"full"}:
        return COVERAGE_FULL, f"full{nodes}"
    if present == {""}:
        return COVERAGE_NONE_REQUESTED, "no explicit delegate"
    return COVERAGE_UNKNOWN, f"mixed: {mix}"


def _summarize_case(cases: Cases, i: int, exclude_tainted: bool,
                    level: float) -> dict[str, Any]:
    keys = dict(zip(CASE_KEYS, cases.keys[i], strict=True))
    idx = cases.positions[i]
    statuses = cases.col("status")[idx]
    is_ok = np.asarray(statuses == "ok", dtype=bool)
    tainted = cases.col("tainted")[idx]
    usable = cases.usable(i, exclude_tainted)
    avgs = cases.col("inference_avg_us")[idx][usable]
    n_ok, n_failed = len(avgs), int((statuses == "failed").sum())
    ci = median_ci(avgs, level)
    coverage, detail = cases.coverage(i)
    # Flags of excluded (tainted) samples stay out of the case's flags: they describe samples the
    # statistics do not use; the report lists them under flagged samples.
    flags = cases.col("flags")[idx]
    kept = flags[~(tainted & is_ok)] if exclude_tainted else flags
    cv = coefficient_of_variation(avgs)
    all_flags = sorted(_flag_union(kept) | set(_stability(avgs, cv)))
    reasons: list[str] = []
    if coverage == COVERAGE_NOT_APPLIED:
        reasons.append(f"{keys['delegate']} delegate did not apply (the latency is a CPU number)")
    if n_failed:
        reasons.append(f"{n_failed} of {len(idx)} sample(s) failed")
    if n_ok < MIN_N_FOR_VERDICT:
        reasons.append(f"only {n_ok} usable sample(s); at least {MIN_N_FOR_VERDICT} needed")

    def med(column: str, mask: np.ndarray | None = None) -> float:
        values = cases.col(column)[idx]
        return _nanmedian(values if mask is None else values[mask])

    size_mb = med("model_size_mb", usable) if n_ok else med("model_size_mb", is_ok)
    if math.isnan(size_mb):
        size_mb = med("variant_size_bytes") / 1e6
    errors = sorted({str(e) for e in cases.col("error")[idx][~is_ok] if str(e)})
    applied = sorted({str(a) for a in cases.col("delegate_applied")[idx][is_ok] if str(a)})
    first = idx[0]
    return {
        **keys,
        "device_label": cases.col("device_label")[first],
        "simulated": bool(cases.col("simulated")[idx].any()),
        "tier": cases.col("tier")[first],
        "n_samples": len(idx), "n_ok": n_ok, "n_failed": n_failed,
        "n_skipped": int((statuses == "skipped").sum()),
        "n_tainted": int(tainted[is_ok].sum()),
        "median_us": float(np.median(avgs)) if n_ok else math.nan,
        "ci_low_us": ci.low, "ci_high_us": ci.high, "ci_level": ci.level, "ci_method": ci.method,
        "p90_us": float(np.percentile(avgs, 90)) if n_ok else math.nan,
        "min_us": float(avgs.min()) if n_ok else math.nan,
        "max_us": float(avgs.max()) if n_ok else math.nan,
        "mean_us": float(avgs.mean()) if n_ok else math.nan,
        "cv": cv,
        "init_median_us": med("init_us", usable),
        "first_median_us": med("first_inference_us", usable),
        "warmup_median_us": med("warmup_avg_us", usable),
        "mem_overall_median_mb": med("mem_overall_mb", usable),
        "peak_mem_median_mb": med("peak_mem_mb", usable),
        "model_size_mb": size_mb,
        "delegation_status": coverage, "delegation": detail,
        "delegate_applied": ",".join(applied),
        "delegated_nodes": med("delegated_nodes"),
        "total_nodes": med("total_nodes"),
        "flags": ",".join(all_flags),
        "verdict_ok": not reasons, "verdict_reason": "; ".join(reasons),
        "errors": " | ".join(errors),
    }


def _speedup_row(cases: Cases, keys: dict[str, Any], baseline: str, quant: str,
                 base: int | None, variant: int, level: float, min_effect: float,
                 seed: int, exclude_tainted: bool) -> dict[str, Any]:
    first = cases.positions[variant][0]
    empty = (np.empty(0), np.empty(0))
    base_r, base_v = cases.rounds(base, exclude_tainted) if base is not None else empty
    var_r, var_v = cases.rounds(variant, exclude_tainted)
    # the rounds both sides have, in round order
    _, ib, iv = np.intersect1d(base_r, var_r, assume_unique=True, return_indices=True)
    paired_b, paired_v = base_v[ib], var_v[iv]
    base_cov, base_detail = (cases.coverage(base) if base is not None
                             else (COVERAGE_UNKNOWN, f"no {baseline} case"))
    var_cov, var_detail = cases.coverage(variant)
    tainted_side = [0, 0]
    if exclude_tainted:
        for j, side in enumerate((base, variant)):
            if side is not None:
                idx = cases.positions[side]
                tainted_side[j] = int((cases.col("tainted")[idx]
                                       & (cases.col("status")[idx] == "ok")).sum())
    tainted = sum(tainted_side)
    row: dict[str, Any] = {
        **keys, "device_label": cases.col("device_label")[first],
        "simulated": bool(cases.col("simulated")[first]), "tier": cases.col("tier")[first],
        "quantization": quant, "baseline": baseline, "n_pairs": len(paired_b),
        "ratio": math.nan, "ci_low": math.nan, "ci_high": math.nan, "ci_level": math.nan,
        "ci_method": "", "geomean_ratio": math.nan,
        "baseline_median_us": float(np.median(base_v)) if len(base_v) else math.nan,
        "variant_median_us": float(np.median(var_v)) if len(var_v) else math.nan,
        "baseline_cv": coefficient_of_variation(base_v),
        "variant_cv": coefficient_of_variation(var_v),
        "n_tainted_excluded": tainted,
        "baseline_coverage": base_cov, "variant_coverage": var_cov,
        "baseline_n": len(base_v), "variant_n": len(var_v),
        "baseline_tainted_excluded": tainted_side[0], "variant_tainted_excluded": tainted_side[1],
        "baseline_delegation": base_detail, "variant_delegation": var_detail,
    }
    why = _not_comparable(keys["delegate"], baseline, quant, base is not None, base_cov,
                          var_cov, len(base_v), len(var_v), len(paired_b))
    if why:  # no ratio at all: a number here would be read as a verdict
        return {**row, "verdict": "not comparable", "reason": why}
    ci = ratio_ci(paired_b, paired_v, level=level, seed=seed)
    row.update(ratio=ci.ratio, ci_low=ci.low, ci_high=ci.high, ci_level=ci.level,
               ci_method=ci.method, geomean_ratio=ci.geomean_ratio)
    verdict = "no clear difference"
    if ci.low > 1.0 and ci.ratio >= 1.0 + min_effect:
        verdict = "faster"
    elif ci.high < 1.0 and ci.ratio <= 1.0 / (1.0 + min_effect):
        verdict = "slower"
    reason = "" if verdict != "no clear difference" else (
        "the CI includes 1" if ci.low <= 1.0 <= ci.high
        else f"the effect is below the {min_effect:.0%} minimum")
    return {**row, "verdict": verdict, "reason": reason}


def _not_comparable(delegate: str, baseline: str, quant: str, has_base: bool,
                    base_cov: str, var_cov: str, base_rounds: int, var_rounds: int,
                    n_pairs: int) -> str:
    """Why a pair cannot be judged, or "" when it can (`*_rounds`: rounds with a value)."""
    if not has_base:
        return f"no {baseline} case for this device × model × delegate × threads"
    reasons: list[str] = []
    coverage: list[str] = []
    for name, cov in ((baseline, base_cov), (quant, var_cov)):
        if cov not in COMPARABLE_COVERAGES and cov != COVERAGE_UNKNOWN:
            coverage.append(f"{delegate} delegate {cov} on {name}")
    if coverage:  # a partial or CPU-fallback latency is not that delegate's number
        reasons.append(f"not a verdict for the {delegate} delegate: " + ", ".join(coverage))
    for name, rounds in ((baseline, base_rounds), (quant, var_rounds)):
        if not rounds:
            reasons.append(f"{name} has no usable sample")
    if not reasons and n_pairs < 2:
        reasons.append(f"only {n_pairs} paired round(s); at least 2 needed")
    return "; ".join(reasons)


def ratio_ci(base: np.ndarray, variant: np.ndarray, *, level: float = 0.95,
             seed: int = 0) -> RatioCI:
    """CI for median(base)/median(variant) from paired samples (same index = same round).

    Deterministic (the bootstrap is seeded), so results are memoised per input: a report asks
    for the same pair from the verdicts and from the policy.
    """
    b, v = np.asarray(base), np.asarray(variant)
    if (b.dtype == np.float64 and v.dtype == np.float64 and b.ndim == v.ndim == 1
            and isinstance(seed, int) and isinstance(level, float | int)):
        return _ratio_ci_memo(b.tobytes(), v.tobytes(), float(level), seed)
    return _ratio_ci(base, variant, level, seed)


@lru_cache(maxsize=16384)
def _ratio_ci_memo(base: bytes, variant: bytes, level: float, seed: int) -> RatioCI:
    return _ratio_ci(np.frombuffer(base, dtype=np.float64),
                     np.frombuffer(variant, dtype=np.float64), level, seed)


def _ratio_ci(base: np.ndarray, variant: np.ndarray, level: float, seed: int) -> RatioCI:
    n = len(base)
    ratio = float(np.median(base) / np.median(variant))
    logs = np.log(base) - np.log(variant)
    geomean = float(np.exp(logs.mean()))
    if n < 2:
        return RatioCI(ratio, math.nan, math.nan, math.nan, "none (n<2)", geomean)
    if n < MIN_PAIRS_FOR_BOOTSTRAP:
        sd = float(np.std(logs, ddof=1))
        half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
        return RatioCI(ratio, float(np.exp(logs.mean() - half)), float(np.exp(logs.mean() + half)),
                       level, f"paired log-ratio t-interval (n={n} < {MIN_PAIRS_FOR_BOOTSTRAP})",
                       geomean)
    ratios = base / variant
    if np.allclose(ratios, ratios[0]):
        return RatioCI(ratio, ratio, ratio, level, "degenerate (identical ratios)", geomean)
    if n >= MAX_PAIRS_FOR_BOOTSTRAP:
        # Many rounds: the distribution-free sign-test CI for the median per-round ratio
        # (order statistics, exact binomial coverage) costs nothing and, at this n, sits on
        # the bootstrap's interval for the ratio of medians.
        ci = median_ci(ratios, level)
        return RatioCI(ratio, ci.low, ci.high, ci.level,
                       f"sign-test CI of the per-round ratio (n={n} >= "
                       f"{MAX_PAIRS_FOR_BOOTSTRAP})", geomean)

    low, high = paired_median_ratio_bootstrap(base, variant, level=level, seed=seed)
    return RatioCI(ratio, low, high, level,
                   f"paired percentile bootstrap over rounds (n={n}, "
                   f"{BOOTSTRAP_RESAMPLES} resamples, seed {seed})", geomean)


def paired_median_ratio_bootstrap(base: np.ndarray, variant: np.ndarray, *, level: float = 0.95,
                                  seed: int = 0, n_resamples: int = BOOTSTRAP_RESAMPLES
                                  ) -> tuple[float, float]:
    """The paired percentile bootstrap CI of median(base) / median(variant), exactly as
    `scipy.stats.bootstrap((base, variant), statistic, paired=True, vectorized=True,
    method="percentile", rng=np.random.default_rng(seed))` computes it: the same resample
    indices drawn from the same generator, the same medians, the same quantiles
    (tests/test_analysis.py checks the two agree to the last bit). It skips scipy's input
    checks and takes each resample's median from a sort, which is 4x quicker than
    `np.median` along an axis; a report computes thousands of these.
    """
    b = np.asarray(base, dtype=float)
    v = np.asarray(variant, dtype=float)
    i = _resample_indices(seed, len(b), n_resamples)
    theta = _row_medians(b[i]) / _row_medians(v[i])
    alpha = np.asarray((1 - level) / 2, dtype=theta.dtype)
    p = np.stack((alpha, 1 - alpha), axis=-1)
    if np.isnan(theta).any():  # scipy's own path (it propagates NaN and warns)
        ci = stats.quantile(theta, p, axis=-1)
        return float(ci[..., 0]), float(ci[..., 1])
    low, high = _linear_quantiles(np.sort(theta), p)
    return float(low), float(high)


@lru_cache(maxsize=8)
def _resample_indices(seed: int, n: int, n_resamples: int) -> np.ndarray:
    """The bootstrap's resample indices: what scipy draws from a fresh default_rng(seed)
    (`rng_integers(rng, 0, n, (n_resamples, n))`), the same for every pair of n rounds."""
    i = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n), dtype="int64")
    i.flags.writeable = False
    return i


def _linear_quantiles(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """scipy.stats.quantile(x, p, method="linear") of a sorted, NaN-free 1-D `y`: the same
    arithmetic (Hyndman & Fan type 7 as scipy writes it), without its input checks."""
    n = np.asarray(len(y), dtype=y.dtype)
    jg = p * n + (1 - p)
    jp1 = jg // 1
    j = jp1 - 1
    g = jg % 1
    g[j < 0] = 0
    j = np.clip(j, 0.0, n - 1)
    jp1 = np.clip(jp1, 0.0, n - 1)
    return np.asarray((1 - g) * y[j.astype(np.int64)] + g * y[jp1.astype(np.int64)])


def _row_medians(x: np.ndarray) -> np.ndarray:
    """np.median(x, axis=-1) of a NaN-free 2-D array (the same values: the middle order
    statistic, or the mean of the two middle ones)."""
    s = np.sort(x, axis=-1)
    n = s.shape[-1]
    if n % 2:
        return s[:, n // 2]
    return np.asarray(np.mean(s[:, n // 2 - 1:n // 2 + 1], axis=-1))


def ratio_ci_independent(base: np.ndarray, new: np.ndarray, *, level: float = 0.95,
                         seed: int = 0) -> RatioCI:
    """CI for median(base)/median(new) from two independent samples (e.g. two nights' runs).

    Fewer than 10 values on a side: a Welch t-interval on the difference of mean log latencies,
    exponentiated (its centre, `geomean_ratio`, is the ratio of geometric means); as for the
    paired case, a bootstrap at n < 10 has too few distinct resamples to cover honestly.
    Otherwise a two-sample percentile bootstrap of the ratio of medians (seeded).
    """
    b = np.asarray(base, dtype=float)
    v = np.asarray(new, dtype=float)
    nb, nv = len(b), len(v)
    if nb == 0 or nv == 0:
        return RatioCI(math.nan, math.nan, math.nan, math.nan, "none (empty side)", math.nan)
    ratio = float(np.median(b) / np.median(v))
    lb, lv = np.log(b), np.log(v)
    geomean = float(np.exp(lb.mean() - lv.mean()))
    if nb < 2 or nv < 2:
        return RatioCI(ratio, math.nan, math.nan, math.nan, "none (n<2 on a side)", geomean)
    if min(nb, nv) < MIN_PAIRS_FOR_BOOTSTRAP:
        vb, vv = float(np.var(lb, ddof=1)) / nb, float(np.var(lv, ddof=1)) / nv
        se = math.sqrt(vb + vv)
        diff = float(lb.mean() - lv.mean())
        if se == 0.0:
            return RatioCI(ratio, float(np.exp(diff)), float(np.exp(diff)), level,
                           "degenerate (no spread on either side)", geomean)
        # Welch–Satterthwaite degrees of freedom
        df = (vb + vv) ** 2 / ((vb**2 / (nb - 1) if nb > 1 else 0.0)
                               + (vv**2 / (nv - 1) if nv > 1 else 0.0))
        half = float(stats.t.ppf(0.5 + level / 2, df)) * se
        return RatioCI(ratio, float(np.exp(diff - half)), float(np.exp(diff + half)), level,
                       f"Welch t-interval on log latencies (n={nb} vs {nv})", geomean)

    def statistic(x: np.ndarray, y: np.ndarray, axis: int) -> np.ndarray:
        return np.asarray(np.median(x, axis=axis) / np.median(y, axis=axis))

    res = stats.bootstrap((b, v), statistic, vectorized=True, n_resamples=BOOTSTRAP_RESAMPLES,
                          confidence_level=level, method="percentile",
                          rng=np.random.default_rng(seed))
    return RatioCI(ratio, float(res.confidence_interval.low), float(res.confidence_interval.high),
                   level, f"two-sample percentile bootstrap of the ratio of medians (n={nb} vs "
                   f"{nv}, {BOOTSTRAP_RESAMPLES} resamples, seed {seed})", geomean)


def normalize_samples(samples: pd.DataFrame) -> pd.DataFrame:
    """A copy of a samples frame with every column this module reads present and typed.

    Missing numeric columns become NaN, text "", `tainted`/`simulated` False, `phase`
    "measure", `round` falls back to `repeat`. Other modules (policy, compare) build on it.
    """
    return _normalized(samples)


def usable_mask(df: pd.DataFrame, *, exclude_tainted: bool = True) -> pd.Series:
    """Samples a statistic may use: status ok with a latency (and untainted unless asked)."""
    return _usable_mask(df, exclude_tainted)


def delegation_coverage(group: pd.DataFrame) -> tuple[str, str]:
    """(coverage, detail) of a normalized group of one case's samples: COVERAGE_* and a text."""
    return _coverage(group)


def _overlaps(others: pd.DataFrame, best: pd.Series) -> pd.Series:
    """Rows whose CI (or, lacking one, median) reaches below the best case's CI high."""
    high = best["ci_high_us"] if not _isnan(best["ci_high_us"]) else best["median_us"]
    low = others["ci_low_us"].where(others["ci_low_us"].notna(), others["median_us"])
    return low <= high


def _quant_rank(q: Any) -> int:
    return QUANTIZATIONS.index(q) if q in QUANTIZATIONS else len(QUANTIZATIONS)


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    """Stable, human order: device, model, quantization (fp32 first), delegate, threads."""
    keys = [k for k in ("device", "model", "delegate", "threads") if k in df.columns]
    if "quantization" in df.columns:
        df = df.assign(_q=df["quantization"].map(_quant_rank))
        keys.insert(2, "_q")
        keys.insert(3, "quantization")
    return df.sort_values(keys, kind="stable").drop(columns=["_q"], errors="ignore").reset_index(
        drop=True)
