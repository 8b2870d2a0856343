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


# --- quantization verdicts: phases, evidence, adaptive stopping -----------------------------------


def test_sustained_windows_never_enter_verdicts_or_summaries() -> None:
    frame = _paired_frame(5, [1000.0, 1010.0, 990.0, 1005.0, 995.0],
                          [500.0, 505.0, 495.0, 502.0, 498.0])
    frame["phase"] = "measure"
    hot = frame.assign(phase="sustained", inference_avg_us=frame["inference_avg_us"] * 3,
                       round=0)
    both = pd.concat([frame, hot], ignore_index=True)
    row = analysis.quantization_verdicts(both).iloc[0]
    assert (row["n_pairs"], row["baseline_n"], row["variant_n"]) == (5, 5, 5)
    assert row["ratio"] == pytest.approx(1000.0 / 500.0)
    summary = analysis.summarize(both)
    assert (summary["n_samples"] == 5).all()
    assert (analysis.summarize(both, phase=None)["n_samples"] == 10).all()


def test_verdict_evidence_per_side() -> None:
    frame = _paired_frame(6, [1000.0 + i for i in range(6)], [500.0 + i for i in range(6)])
    frame.loc[(frame["quantization"] == "int8") & (frame["round"].isin([2, 3])), "tainted"] = True
    frame.loc[(frame["quantization"] == "fp32") & (frame["round"] == 5), "tainted"] = True
    row = analysis.quantization_verdicts(frame).iloc[0]
    assert list(analysis.quantization_verdicts(frame).columns) == list(analysis.VERDICT_COLUMNS)
    assert (row["baseline_tainted_excluded"], row["variant_tainted_excluded"]) == (1, 2)
    assert row["n_tainted_excluded"] == 3
    assert (row["baseline_n"], row["variant_n"], row["n_pairs"]) == (5, 4, 3)
    assert row["baseline_delegation"] == "full" and row["variant_delegation"] == "full"
    kept = analysis.quantization_verdicts(frame, include_tainted=True).iloc[0]
    assert (kept["n_pairs"], kept["n_tainted_excluded"]) == (6, 0)


def test_partial_delegation_on_either_side_is_not_a_verdict_for_that_delegate() -> None:
    frame = _paired_frame(5, [1000.0] * 5, [400.0, 410.0, 405.0, 395.0, 400.0])
    frame.loc[frame["quantization"] == "int8", "delegation"] = "partial"
    row = analysis.quantization_verdicts(frame).iloc[0]
    assert row["verdict"] == "not comparable" and math.isnan(row["ratio"])
    assert row["reason"] == ("not a verdict for the xnnpack delegate: xnnpack delegate partial "
                             "on int8")


def test_needs_more_samples_until_the_ci_excludes_one() -> None:
    base = [1000.0, 1012.0, 995.0, 1003.0, 990.0, 1007.0]
    assert analysis.needs_more_samples(base[:2], [500.0, 505.0])  # below the minimum pairs
    assert not analysis.needs_more_samples(base[:3], [500.0, 505.0, 497.0])
    assert not analysis.needs_more_samples(base[:3], [2000.0, 2020.0, 1990.0])  # slower counts
    same = [1001.0, 1009.0, 998.0, 1000.0, 995.0, 1006.0]
    assert analysis.needs_more_samples(base, same)
    # NaN rounds are dropped, and then too few pairs remain
    assert analysis.needs_more_samples([1000.0, math.nan, 990.0], [500.0, 505.0, math.nan])
    with pytest.raises(ValueError, match="differ in length"):
        analysis.needs_more_samples([1.0], [1.0, 2.0])


def test_needs_more_samples_with_a_budget_uses_a_stricter_level() -> None:
    # a clear but noisy effect: enough at 95 % per look, not at the Bonferroni level for 8 looks
    base = [1000.0, 1100.0, 950.0, 1050.0]
    variant = [900.0, 930.0, 890.0, 960.0]
    assert not analysis.needs_more_samples(base, variant)
    assert analysis.needs_more_samples(base, variant, max_pairs=10)
    ci_plain = analysis.ratio_ci(np.array(base), np.array(variant))
    ci_strict = analysis.ratio_ci(np.array(base), np.array(variant), level=1 - 0.05 / 8)
    assert ci_plain.low > 1.0 > ci_strict.low


def test_needs_more_samples_equivalence_stop() -> None:
    base = [1000.0, 1002.0, 998.0, 1001.0, 999.0, 1000.0]
    same = [1000.5, 1001.0, 998.5, 1000.0, 999.5, 1000.5]
    assert analysis.needs_more_samples(base, same)
    assert not analysis.needs_more_samples(base, same, equivalence_margin=0.05)


def test_ratio_ci_independent() -> None:
    base = np.array([100.0, 102.0, 98.0, 101.0, 99.0])
    slower = base * 1.2
    ci = analysis.ratio_ci_independent(slower, base)
    assert ci.ratio == pytest.approx(1.2)
    assert 1.0 < ci.low < 1.2 < ci.high
    assert "Welch" in ci.method
    many = analysis.ratio_ci_independent(np.tile(slower, 3), np.tile(base, 3))
    assert "bootstrap" in many.method and many.low > 1.0
    assert math.isnan(analysis.ratio_ci_independent(base[:1], base).low)


# --- simulated truth: no false "faster" -----------------------------------------------------------
#
# Latencies are drawn around the simulator's noise-free truth (farm.sim.benchmark
# .expected_latency_us for a MAC-bound conv model) with each profile's own noise CV, and the
# delegation coverage is what the simulator's planner says the delegate does with each model.

SIM_SEEDS = 60


@pytest.fixture(scope="module")
def conv_work() -> dict[str, Any]:
    from farm.sim.benchmark import analyze_model
    from tests.fixtures_simuser import conv_model

    return {q: analyze_model(conv_model(q)) for q in ("fp32", "int8")}


def _sim_delegation(profile: Any, work: Any, delegate: str, threads: int) -> str:
    """full / partial / none as the simulator's planner assigns the nodes ("" for plain CPU)."""
    from farm.sim.benchmark import flags_for_delegate, parse_flags, plan_run, run_options

    if delegate == "cpu":
        return ""
    version = tuple(int(x) for x in profile.benchmark_model_tf_version.split(".")[:2])
    argv = [*flags_for_delegate(delegate), f"--num_threads={threads}"]
    plan = plan_run(profile, work, run_options(parse_flags(argv, version), profile, None),
                    default_xnnpack=version >= (2, 6))
    on = sum(1 for e in plan.executor if e == delegate)
    return "full" if on == len(plan.executor) else "partial" if on else "none"


def _truth_samples(profile_name: str, delegate: str, threads: int, work: dict[str, Any], *,
                   seeds: int = SIM_SEEDS, repeats: int = 5, truth_ratio: float | None = None,
                   force_full: bool = False) -> tuple[pd.DataFrame, float]:
    """One synthetic 'device' per seed, interleaved rounds, lognormal noise (profile CV) around
    the truth. Returns the frame and the true speedup fp32 / int8."""
    from farm.sim.benchmark import expected_latency_us
    from farm.sim.profiles import load_profile

    prof = load_profile(profile_name)
    truth = {q: expected_latency_us(prof, work[q], delegate=delegate, threads=threads)
             for q in ("fp32", "int8")}
    if truth_ratio is not None:
        truth["int8"] = truth["fp32"] / truth_ratio
    coverage = {q: "full" if force_full and delegate != "cpu"
                else _sim_delegation(prof, work[q], delegate, threads) for q in truth}
    cv = prof.perf.noise_cv
    rows = []
    for seed in range(seeds):
        rng = np.random.default_rng([seed, threads, len(profile_name)])
        for rnd in range(1, repeats + 1):
            drift = float(rng.lognormal(0.0, cv / 2))  # shared by the round (heat, load)
            for quant, true_us in truth.items():
                rows.append({"device": f"{profile_name}-{seed}", "model": "conv",
                             "quantization": quant, "delegate": delegate, "threads": threads,
                             "round": rnd, "status": "ok", "tainted": False, "flags": "",
                             "delegation": coverage[quant],
                             "inference_avg_us": true_us * drift * float(rng.lognormal(0, cv))})
    return pd.DataFrame(rows), truth["fp32"] / truth["int8"]


@pytest.mark.parametrize("threads", [1, 4])
def test_simulated_truth_int8_slower_on_old_armv7_is_never_called_faster(
        conv_work: dict[str, Any], threads: int) -> None:
    frame, truth = _truth_samples("old_armv7", "cpu", threads, conv_work)
    assert truth < 0.75  # the simulator's truth: armv7 without dot-product runs int8 slower
    verdicts = analysis.quantization_verdicts(frame)["verdict"].value_counts().to_dict()
    assert verdicts.get("faster", 0) == 0
    assert verdicts.get("slower", 0) >= 0.95 * SIM_SEEDS


@pytest.mark.parametrize("profile", ["lowend", "midrange", "flagship"])
def test_simulated_truth_gpu_int8_in_float_is_never_called_faster(
        conv_work: dict[str, Any], profile: str) -> None:
    from farm.sim.profiles import load_profile

    # midrange/flagship GPUs run int8 models in float (1x); the low-end GPU refuses int8
    # entirely and benchmark_model runs it on the CPU
    in_float = load_profile(profile).expected_speedup("gpu", "fp32", "int8") == 1.0
    assert in_float is (profile != "lowend")
    frame, truth = _truth_samples(profile, "gpu", 1, conv_work)
    rows = analysis.quantization_verdicts(frame)
    assert (rows["verdict"] != "faster").all()
    # int8 on these GPUs is not (fully) delegated: never a verdict for the GPU delegate
    assert (rows["verdict"] == "not comparable").all()
    assert rows["reason"].str.startswith("not a verdict for the gpu delegate").all()
    if in_float:
        assert 0.9 < truth < 1.1


@pytest.mark.parametrize("profile", ["midrange", "flagship"])
def test_simulated_truth_gpu_int8_at_one_x_fully_delegated_is_not_faster(
        conv_work: dict[str, Any], profile: str) -> None:
    """Even if the GPU took the whole int8 graph (computing it in float at the fp32 speed), the
    verdict must not say faster: the true ratio is ~0.98."""
    frame, truth = _truth_samples(profile, "gpu", 1, conv_work, force_full=True)
    assert 0.9 < truth < 1.0
    verdicts = analysis.quantization_verdicts(frame)["verdict"]
    assert (verdicts != "faster").all()
    assert (verdicts != "not comparable").all()


def test_simulated_truth_real_speedups_are_found(conv_work: dict[str, Any]) -> None:
    """The other side of the coin: int8 on a dot-product CPU is called faster."""
    frame, truth = _truth_samples("flagship", "xnnpack", 1, conv_work)
    assert truth > 2.0
    verdicts = analysis.quantization_verdicts(frame)["verdict"]
    assert (verdicts == "faster").mean() >= 0.95


def test_false_faster_rate_at_a_true_ratio_of_one_stays_at_the_ci_level(
        conv_work: dict[str, Any]) -> None:
    """At a true ratio of exactly 1 a 95 % CI calls 'faster' at most ~2.5 % of the time (one
    tail); with adaptive repeats (looks at every round, Bonferroni per look) at most ~5 %."""
    seeds = 400
    frame, truth = _truth_samples("lowend", "xnnpack", 1, conv_work, seeds=seeds, repeats=10,
                                  truth_ratio=1.0)
    assert truth == pytest.approx(1.0)
    fixed = frame[frame["round"] <= 5]
    fixed_rate = (analysis.quantization_verdicts(fixed)["verdict"] == "faster").mean()
    assert fixed_rate <= 0.03
    wide = frame.pivot_table(index=["device", "round"], columns="quantization",
                             values="inference_avg_us")
    stop: dict[str, int] = {}
    for device, rounds in wide.groupby(level="device"):
        b, v = rounds["fp32"].to_numpy(), rounds["int8"].to_numpy()
        n = analysis.MIN_N_FOR_VERDICT
        while n < 10 and analysis.needs_more_samples(b[:n], v[:n], max_pairs=10):
            n += 1
        stop[str(device)] = n
    adaptive = analysis.quantization_verdicts(frame[frame["round"] <= frame["device"].map(stop)])
    assert len(set(stop.values())) > 2  # the looks did stop at different rounds
    assert (adaptive["verdict"] == "faster").mean() <= 0.05


def test_many_rounds_use_the_sign_test_interval_which_agrees_with_the_bootstrap() -> None:
    """At n >= MAX_PAIRS_FOR_BOOTSTRAP the ratio CI is the sign-test interval of the per-round
    ratios; on lognormal data it covers the truth and overlaps the bootstrap's interval."""
    import numpy as np

    from farm import analysis

    rng = np.random.default_rng(3)
    n = analysis.MAX_PAIRS_FOR_BOOTSTRAP
    base = 1000 * rng.lognormal(0, 0.05, n)
    variant = 800 * rng.lognormal(0, 0.05, n)
    fast = analysis.ratio_ci(base, variant)
    assert fast.method.startswith("sign-test") and fast.low < 1.25 < fast.high
    slow = analysis.ratio_ci(base[: n - 1], variant[: n - 1])
    assert "bootstrap" in slow.method
    assert fast.low < slow.high and slow.low < fast.high
    assert abs(np.log(fast.high / fast.low) / np.log(slow.high / slow.low) - 1) < 0.5


# --- the grouped (vectorised) path against scipy and plain pandas -------------------------------


@pytest.mark.parametrize("n", [10, 11, 42, 199])
def test_fast_paired_bootstrap_is_scipys_bootstrap_to_the_bit(n: int) -> None:
    """paired_median_ratio_bootstrap replaces scipy.stats.bootstrap in ratio_ci; seeds and
    reports must not move, so the two must agree exactly (ties included)."""
    from scipy import stats

    def statistic(b: np.ndarray, v: np.ndarray, axis: int) -> np.ndarray:
        return np.asarray(np.median(b, axis=axis) / np.median(v, axis=axis))

    rng = np.random.default_rng(n)
    for seed, level in ((0, 0.95), (1, 0.9), (5, 0.99)):
        base = 1000 * rng.lognormal(0, 0.2, n)
        variant = np.round(700 * rng.lognormal(0, 0.2, n), -1)  # rounded: many ties
        res = stats.bootstrap((base, variant), statistic, paired=True, vectorized=True,
                              n_resamples=analysis.BOOTSTRAP_RESAMPLES, confidence_level=level,
                              method="percentile", rng=np.random.default_rng(seed))
        got = analysis.paired_median_ratio_bootstrap(base, variant, level=level, seed=seed)
        assert got == (float(res.confidence_interval.low), float(res.confidence_interval.high))


def test_round_medians_match_pandas_groupby_median() -> None:
    rounds = np.array([3, 1, 2, 1, np.nan, 3, 3, 0, 2, 2], dtype=float)
    values = np.array([5.0, 1.0, 7.0, 2.0, 100.0, 4.0, 9.0, 0.5, 1.5, 2.5])
    want = pd.DataFrame({"round": rounds, "v": values}).groupby("round")["v"].median()
    got_rounds, got_values = analysis.round_medians(rounds, values)
    assert got_rounds.tolist() == want.index.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert got_values.tolist() == want.tolist()


def test_coverage_mix_lists_kinds_by_count_then_first_seen() -> None:
    group = analysis.normalize_samples(pd.DataFrame({
        "status": ["ok"] * 5 + ["skipped"],
        "delegation": ["full", "", "", "full", "weird", "none"],
        "flags": [""] * 6, "delegated_nodes": [5, 5, None, 5, 5, 1],
        "total_nodes": [9] * 6}))
    assert analysis.delegation_coverage(group) == (
        analysis.COVERAGE_UNKNOWN, "mixed: full×2, -×2, weird×1")


def test_grouped_cases_match_a_per_case_pandas_reference() -> None:
    """summarize and speedups on `group_cases` give, per case, exactly what plain pandas gives
    for the same definitions (medians, CI order statistics, p90, CV, counts, rounds paired).
    The CI ranks and the ratio CI come from median_ci / _ratio_ci, which have golden tests of
    their own; here the check is that each case gets them from its own rows."""
    samples = make_samples(repeats=12, seed=4)
    samples.loc[samples.index[::17], "status"] = "failed"
    samples.loc[samples.index[5::23], "tainted"] = True
    cases = analysis.group_cases(samples)
    summary = analysis.summarize(cases)
    df = analysis.normalize_samples(samples)
    usable = analysis.usable_mask(df)
    n_checked = 0
    for key, group in df.groupby(list(analysis.CASE_KEYS)):
        row = summary.set_index(list(analysis.CASE_KEYS)).loc[key]
        avgs = group.loc[usable[group.index], "inference_avg_us"].to_numpy(float)
        assert row["n_ok"] == len(avgs)
        assert row["n_failed"] == int((group["status"] == "failed").sum())
        if len(avgs) == 0:
            continue
        ordered = np.sort(avgs)
        ci = analysis.median_ci(avgs)
        assert row["median_us"] == float(np.median(avgs))
        assert (row["ci_low_us"], row["ci_high_us"]) == (ordered[ci.low_rank - 1],
                                                         ordered[ci.high_rank - 1])
        assert row["p90_us"] == float(np.percentile(avgs, 90))
        assert row["cv"] == float(np.std(avgs, ddof=1) / np.mean(avgs))
        assert row["init_median_us"] == float(
            group.loc[usable[group.index], "init_us"].dropna().median())
        n_checked += 1
    assert n_checked > 20
    speed = analysis.speedups(cases)
    comparable = speed[speed["verdict"] != "not comparable"]
    assert len(comparable) > 5
    for r in comparable.to_dict("records"):
        side = {}
        for quant in ("fp32", r["quantization"]):
            g = df[(df["device"] == r["device"]) & (df["model"] == r["model"])
                   & (df["quantization"] == quant) & (df["delegate"] == r["delegate"])
                   & (df["threads"] == r["threads"]) & usable]
            side[quant] = g.groupby("round")["inference_avg_us"].median()
        paired = pd.concat([side["fp32"].rename("b"), side[r["quantization"]].rename("v")],
                           axis=1, join="inner").dropna()
        want = analysis._ratio_ci(paired["b"].to_numpy(float), paired["v"].to_numpy(float),
                                  0.95, 0)
        assert r["n_pairs"] == len(paired)
        assert (r["ratio"], r["ci_low"], r["ci_high"]) == (want.ratio, want.low, want.high)


def test_cases_of_another_phase_are_refused() -> None:
    cases = analysis.group_cases(make_samples(repeats=3))
    with pytest.raises(ValueError, match="phase"):
        analysis.summarize(cases, phase=None)
