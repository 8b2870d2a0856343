"""Tests for farm.analysis against hand-computed golden files and synthetic runs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from farm import analysis
from tests.fixtures_report import REAL_DEVICE, SIM_DEVICE, empty_samples, make_samples

DATA = Path(__file__).parent / "data" / "analysis"


def _load(name: str) -> pd.DataFrame:
    return pd.read_csv(DATA / name)


def _expected(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())


def _by_key(frame: pd.DataFrame, keys: tuple[str, ...]) -> dict[str, pd.Series]:
    return {"/".join(str(r[k]) for k in keys): r for _, r in frame.iterrows()}


def _check(row: pd.Series, expected: dict[str, Any]) -> None:
    for field, want in expected.items():
        if field.startswith("_"):
            continue
        if field.endswith("_contains"):
            column = field.removesuffix("_contains")
            assert want in str(row[column]), (column, row[column])
            continue
        got = row[field]
        if want is None:
            assert got is None or pd.isna(got), (field, got)
        elif isinstance(want, bool):
            assert bool(got) is want, (field, got)
        elif isinstance(want, int | float):
            assert got == pytest.approx(want, rel=1e-9), (field, got)
        else:
            assert str(got) == want, (field, got)


# --- golden files ------------------------------------------------------------------------------

SUMMARY = _expected("summary.expected.json")
SPEEDUPS = _expected("speedups.expected.json")
CASE = ("device", "model", "quantization", "delegate", "threads")


@pytest.mark.parametrize("key", sorted(SUMMARY["cases"]))
def test_summarize_matches_golden(key: str) -> None:
    summary = _by_key(analysis.summarize(_load("summary.csv")), CASE)
    assert set(summary) == set(SUMMARY["cases"])
    _check(summary[key], SUMMARY["cases"][key])


@pytest.mark.parametrize("key", sorted(SUMMARY["including_tainted"]))
def test_summarize_can_include_tainted_samples(key: str) -> None:
    summary = _by_key(analysis.summarize(_load("summary.csv"), exclude_tainted=False), CASE)
    _check(summary[key], SUMMARY["including_tainted"][key])


@pytest.mark.parametrize("key", sorted(SUMMARY["fastest"]))
def test_fastest_matches_golden(key: str) -> None:
    fastest = _by_key(analysis.fastest(analysis.summarize(_load("summary.csv"))),
                      ("device", "model"))
    assert len(fastest) == 2
    _check(fastest[key], SUMMARY["fastest"][key])


@pytest.mark.parametrize("key", sorted(SPEEDUPS["rows"]))
def test_speedups_match_golden(key: str) -> None:
    rows = _by_key(analysis.speedups(_load("speedups.csv")),
                   ("device", "model", "delegate", "threads", "quantization"))
    assert set(rows) == set(SPEEDUPS["rows"])
    _check(rows[key], SPEEDUPS["rows"][key])


def test_golden_t_quantile_is_the_one_used() -> None:
    """The golden CIs were computed with a t quantile from tables; check the table value."""
    from scipy import stats

    assert stats.t.ppf(0.975, 2) == pytest.approx(SPEEDUPS["t_0975_df2"], rel=1e-12)


# --- median CI ---------------------------------------------------------------------------------


def _coverage(low_rank: int, n: int) -> float:
    """1 - 2 P(B <= l-1), B ~ Binomial(n, 1/2), with integer arithmetic."""
    return 1 - 2 * sum(math.comb(n, k) for k in range(low_rank)) / 2**n


@pytest.mark.parametrize("n", range(2, 31))
def test_median_ci_picks_the_narrowest_interval_that_reaches_95(n: int) -> None:
    values = [float(v) for v in range(100, 100 + n)][::-1]  # unsorted on purpose
    ci = analysis.median_ci(values)
    candidates = [lr for lr in range(1, (n + 1) // 2 + 1) if _coverage(lr, n) >= 0.95]
    if candidates:
        lr = max(candidates)
        assert (ci.low_rank, ci.high_rank, ci.low_n) == (lr, n + 1 - lr, False)
        assert ci.level == pytest.approx(_coverage(lr, n))
        assert ci.level >= 0.95
    else:
        assert n <= 5
        assert (ci.low_rank, ci.high_rank, ci.low_n) == (1, n, True)
        assert ci.level == pytest.approx(1 - 2 / 2**n)
    assert (ci.low, ci.high) == (100.0 + ci.low_rank - 1, 100.0 + ci.high_rank - 1)


def test_median_ci_known_levels() -> None:
    assert analysis.median_ci([3.0, 1.0, 2.0]).level == 0.75
    assert analysis.median_ci([1.0, 2.0, 3.0, 4.0]).level == 0.875
    assert analysis.median_ci(range(6)).level == pytest.approx(0.96875)
    assert not analysis.median_ci(range(6)).low_n
    one = analysis.median_ci([5.0])
    assert math.isnan(one.low) and math.isnan(one.level) and one.low_n


def test_median_ci_ignores_nan() -> None:
    ci = analysis.median_ci([1.0, float("nan"), 3.0, 2.0])
    assert (ci.low, ci.high, ci.level) == (1.0, 3.0, 0.75)


# --- stability flags ---------------------------------------------------------------------------


def test_stability_flags() -> None:
    assert analysis.stability_flags([100.0] * 6) == ()
    assert analysis.stability_flags([100.0, 100.0, 100.0]) == ("low_n",)
    # mean 100, sd 12.5 -> CV 12.5 %
    assert "high_variance" in analysis.stability_flags([87.5, 100.0, 112.5] * 2)
    # CV 5 %: stays quiet
    assert analysis.stability_flags([95.0, 100.0, 105.0] * 2) == ()
    assert analysis.stability_flags([]) == ("low_n",)


# --- bootstrap path ----------------------------------------------------------------------------


def _paired_frame(n: int, base: list[float], variant: list[float]) -> pd.DataFrame:
    rows = []
    for quant, values in (("fp32", base), ("int8", variant)):
        for rnd, value in enumerate(values[:n], start=1):
            rows.append({"device": "d", "device_label": "D", "model": "m", "quantization": quant,
                         "delegate": "xnnpack", "threads": 1, "round": rnd, "status": "ok",
                         "inference_avg_us": value, "delegation": "full", "flags": "",
                         "tainted": False})
    return pd.DataFrame(rows)


def test_speedup_uses_a_seeded_paired_bootstrap_from_ten_pairs() -> None:
    rng = np.random.default_rng(7)
    base = list(1000 * rng.lognormal(0, 0.05, 12))
    variant = list(500 * rng.lognormal(0, 0.05, 12))
    frame = _paired_frame(12, base, variant)
    first = analysis.speedups(frame).iloc[0]
    again = analysis.speedups(frame).iloc[0]
    assert "bootstrap" in first["ci_method"]
    assert first["n_pairs"] == 12
    assert first["ratio"] == pytest.approx(float(np.median(base) / np.median(variant)))
    assert (first["ci_low"], first["ci_high"]) == (again["ci_low"], again["ci_high"])
    assert 1.0 < first["ci_low"] < first["ratio"] < first["ci_high"]
    # the interval can only hold values a resample can produce
    assert first["ci_high"] <= max(base) / min(variant)
    assert first["verdict"] == "faster"


def test_speedup_below_ten_pairs_uses_the_t_interval() -> None:
    frame = _paired_frame(9, [1000.0 + 10 * i for i in range(9)], [800.0 + 7 * i for i in range(9)])
    row = analysis.speedups(frame).iloc[0]
    assert "t-interval" in row["ci_method"]


# --- empty, failed and synthetic runs ----------------------------------------------------------


def test_empty_inputs_give_empty_frames_with_columns() -> None:
    empty = empty_samples()
    summary = analysis.summarize(empty)
    assert summary.empty and list(summary.columns) == list(analysis.SUMMARY_COLUMNS)
    assert list(analysis.speedups(empty).columns) == list(analysis.SPEEDUP_COLUMNS)
    assert list(analysis.fastest(summary).columns) == list(analysis.FASTEST_COLUMNS)
    assert list(analysis.thread_scaling(summary).columns) == list(analysis.SCALING_COLUMNS)


def test_all_failed_run_has_no_verdicts() -> None:
    samples = make_samples(repeats=3)
    samples["status"] = "failed"
    samples["error"] = "Benchmarking failed."
    summary = analysis.summarize(samples)
    assert not summary["verdict_ok"].any()
    assert summary["median_us"].isna().all()
    fastest = analysis.fastest(summary)
    assert (fastest["quantization"] == "").all()
    assert fastest["note"].str.contains("no case with a valid verdict").all()
    assert (analysis.speedups(samples)["verdict"] == "not comparable").all()


def test_synthetic_run_verdicts() -> None:
    samples = make_samples(repeats=5)
    summary = analysis.summarize(samples)
    sim_gpu = summary[(summary["device"] == SIM_DEVICE.serial) & (summary["delegate"] == "gpu")]
    assert (sim_gpu["delegation_status"] == "not applied").all()
    assert not sim_gpu["verdict_ok"].any()
    # the fixture's model: int8 on XNNPACK with 4 threads is 0.2x of fp32 t1; gpu fp16 is 0.3x
    fastest = analysis.fastest(summary)
    assert len(fastest) == 4
    assert set(zip(fastest["quantization"], fastest["delegate"], fastest["threads"],
                   strict=True)) == {("int8", "xnnpack", 4)}
    speed = analysis.speedups(samples)
    sim_gpu_speed = speed[(speed["device"] == SIM_DEVICE.serial) & (speed["delegate"] == "gpu")]
    assert (sim_gpu_speed["verdict"] == "not comparable").all()
    assert sim_gpu_speed["ratio"].isna().all()
    real_int8 = speed[(speed["device"] == REAL_DEVICE.serial) & (speed["delegate"] == "xnnpack")
                      & (speed["quantization"] == "int8")]
    assert (real_int8["verdict"] == "faster").all()
    # round 2 of the real device is tainted: one sample per side excluded
    assert (real_int8["n_tainted_excluded"] == 2).all()
    assert (real_int8["n_pairs"] == 4).all()


def test_thread_scaling() -> None:
    summary = analysis.summarize(_load("speedups.csv"))
    scaling = analysis.thread_scaling(summary)
    rows = _by_key(scaling, CASE)
    t4 = rows["d1/m/int8/xnnpack/4"]
    assert t4["base_threads"] == 1
    assert t4["speedup_vs_base"] == pytest.approx(550 / 255)
    assert t4["efficiency"] == pytest.approx(550 / 255 / 4)
    assert rows["d1/m/int8/xnnpack/1"]["speedup_vs_base"] == pytest.approx(1.0)


def test_summary_is_sorted_fp32_first() -> None:
    summary = analysis.summarize(_load("speedups.csv"))
    d1_xnn_t1 = summary[(summary["delegate"] == "xnnpack") & (summary["threads"] == 1)]
    assert list(d1_xnn_t1["quantization"]) == ["fp32", "fp16", "dynamic", "int8", "int16x8"]


def test_partial_delegation_is_flagged_but_keeps_its_verdict() -> None:
    rows = _by_key(analysis.summarize(_load("speedups.csv")), CASE)
    partial = rows["d1/m/fp32/xnnpack/4"]
    assert partial["delegation_status"] == "partial"
    assert "partial_delegation" in partial["flags"].split(",")
    assert bool(partial["verdict_ok"])
    assert rows["d1/m/int8/gpu/1"]["delegation_status"] == "not applied"
    assert not bool(rows["d1/m/int8/gpu/1"]["verdict_ok"])
