"""Tests for farm.compare: regressions between nights, learned noise thresholds, JUnit/Markdown,
trends. Stores are built from synthetic samples with Store.append, as the runner writes them."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from farm import compare
from farm.store import SampleRecord, Store

CASES = [("mobilenet", q, "xnnpack", t) for q in ("fp32", "int8") for t in (1, 4)]
TRUTH = {("mobilenet", "fp32", "xnnpack", 1): 20_000.0,
         ("mobilenet", "fp32", "xnnpack", 4): 7_000.0,
         ("mobilenet", "int8", "xnnpack", 1): 9_000.0,
         ("mobilenet", "int8", "xnnpack", 4): 3_500.0}
DEVICES = {"R1": "Pixel 7", "S1": "Phone <b>|x|</b> [SIMULATED]"}


def night(store: Store, index: int, rng: np.random.Generator, *, drift_sd: float = 0.08,
          noise: float = 0.03, repeats: int = 5,
          slow: Mapping[tuple[str, str, str, str, int], float] | None = None,
          failed: tuple[tuple[str, str, str, str, int], ...] = (),
          delegation: Mapping[tuple[str, str, str, str, int], str] | None = None) -> str:
    """One nightly run: every case on every device; each device drifts by a night factor."""
    run_id = f"202601{index + 1:02d}-020000-{index:04x}"
    store.start_run(run_id, started_at=f"2026-01-{index + 1:02d}T02:00:00+00:00",
                    sweep_file="nightly.yaml", repeats=repeats)
    for serial, label in DEVICES.items():
        store.add_device(run_id, {"serial": serial, "label": label,
                                  "simulated": "SIMULATED" in label}, tier="")
        drift = float(rng.lognormal(0.0, drift_sd))
        for rnd in range(repeats):
            for model, quant, delegate, threads in CASES:
                key = (serial, model, quant, delegate, threads)
                latency = (TRUTH[(model, quant, delegate, threads)] * drift
                           * float(rng.lognormal(0.0, noise)) * (slow or {}).get(key, 1.0))
                bad = key in failed
                store.append(SampleRecord(
                    run_id=run_id, case_id=f"{serial}-{quant}-{threads}-bin{index}",  # changes
                    device=serial, model=model, quantization=quant, delegate=delegate,
                    threads=threads, repeat=rnd, round=rnd, status="failed" if bad else "ok",
                    error="Segmentation fault\x07 <in> | op" if bad else "",
                    parsed={} if bad else {"inference_avg_us": latency,
                                           "delegation": (delegation or {}).get(key, "full")}))
    store.update_run(run_id, status="finished", ended_at="x")
    return run_id


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    return tmp_path / "farm.sqlite"


def history(db: Path, nights: int, seed: int = 0, **kw: object) -> list[str]:
    rng = np.random.default_rng(seed)
    with Store(db) as store:
        return [night(store, i, rng, **kw) for i in range(nights)]  # type: ignore[arg-type]


# --- regressions and noise ---------------------------------------------------------------------


def test_an_injected_regression_is_found_and_nothing_else(db: Path) -> None:
    runs = history(db, 8)
    with Store(db) as store:
        new = night(store, 8, np.random.default_rng(99),
                    slow={("R1", "mobilenet", "int8", "xnnpack", 4): 1.6})
    result = compare.compare_runs(db, runs[-1], new)
    regressed = result.with_status(compare.REGRESSION)
    assert [(c.device, c.label()) for c in regressed] == [("R1", "mobilenet/int8/xnnpack/t4")]
    c = regressed[0]
    assert c.change_pct > c.threshold_pct > 5.0  # the threshold was learned, not the default
    assert c.history_runs == 8 and "learned" in c.threshold_source
    assert c.ci_low > 1.0 and c.p_value < 0.05
    # matched across runs although every case id changed with the binary
    assert not result.with_status(compare.NEW, compare.MISSING)
    assert len(result.cases) == len(DEVICES) * len(CASES)
    assert result.failing(fail_pct=10.0) == regressed
    assert result.failing(fail_pct=80.0) == ()


def test_noise_alone_is_not_flagged_once_history_exists(db: Path) -> None:
    """12 nights of one distribution with 8 % night-to-night drift: once 5 runs of history
    exist, no comparison of consecutive nights flags anything."""
    runs = history(db, 14, seed=3)
    flagged = []
    for base, new in zip(runs[5:], runs[6:], strict=False):
        result = compare.compare_runs(db, base, new)
        assert all(c.history_runs >= 5 for c in result.cases)
        flagged += [(new, c.label(), c.status, round(c.change_pct, 1))
                    for c in result.with_status(compare.REGRESSION, compare.IMPROVEMENT,
                                                compare.BROKEN)]
    assert flagged == []


def test_without_history_the_user_threshold_flags_night_drift(db: Path) -> None:
    """The same noisy nights, judged by a fixed 5 % threshold alone: drift is 'significant'
    within a run (the samples of a night share it), so a fixed threshold flags noise. This is
    why thresholds are learned."""
    runs = history(db, 14, seed=3)
    with Store(db) as store:
        frames = {r: store.load_samples(r) for r in runs}
    flagged = 0
    for base, new in zip(runs[5:], runs[6:], strict=False):
        result = compare.compare(frames[base], frames[new])
        assert all("no history" in c.threshold_source for c in result.cases)
        flagged += len(result.with_status(compare.REGRESSION, compare.IMPROVEMENT))
    assert flagged > 0


def test_learned_threshold_follows_the_night_to_night_spread(db: Path) -> None:
    quiet = history(db, 8, seed=1, drift_sd=0.01)
    with Store(db) as store:
        frame = store.history_samples(until_run=quiet[-1])
    noise = compare.case_noise(frame)
    key = ("R1", "mobilenet", "fp32", "xnnpack", 1)
    assert noise[key].runs == 8
    assert noise[key].noise_pct < 5.0
    loud_db = db.with_name("loud.sqlite")
    loud = history(loud_db, 8, seed=1, drift_sd=0.15)
    with Store(loud_db) as store:
        loud_noise = compare.case_noise(store.history_samples(until_run=loud[-1]))
    assert loud_noise[key].noise_pct > 3 * noise[key].noise_pct


def test_moving_ranges_ignore_a_past_step() -> None:
    """A regression accepted long ago adds one moving range, not a permanently wide threshold."""
    medians = [100.0] * 6 + [150.0] * 6
    rows = [{"run_id": f"r{i:02d}", "device": "d", "model": "m", "quantization": "fp32",
             "delegate": "cpu", "threads": 1, "status": "ok", "inference_avg_us": m * f,
             "round": k} for i, m in enumerate(medians) for k, f in enumerate((0.99, 1, 1.01))]
    noise = compare.case_noise(pd.DataFrame(rows))[("d", "m", "fp32", "cpu", 1)]
    step = math.log(1.5) / 11 * math.sqrt(math.pi / 2)
    assert noise.noise_pct == pytest.approx(100 * (math.exp(step) - 1), rel=1e-6)
    assert noise.noise_pct < 5.0  # the plain spread of these medians would be about 20 %


def test_broken_cases_fail_whatever_their_latency(db: Path) -> None:
    runs = history(db, 3)
    with Store(db) as store:
        new = night(store, 3, np.random.default_rng(5),
                    failed=(("R1", "mobilenet", "fp32", "xnnpack", 1),),
                    delegation={("S1", "mobilenet", "int8", "xnnpack", 4): "none"})
    result = compare.compare_runs(db, runs[-1], new)
    broken = {(c.device, c.label()): c for c in result.with_status(compare.BROKEN)}
    assert set(broken) == {("R1", "mobilenet/fp32/xnnpack/t1"),
                           ("S1", "mobilenet/int8/xnnpack/t4")}
    assert "5 of 5 sample(s) failed now" in broken[("R1", "mobilenet/fp32/xnnpack/t1")].reason
    assert "full in the base" in broken[("S1", "mobilenet/int8/xnnpack/t4")].reason
    assert set(result.failing(fail_pct=1000.0)) == set(broken.values())
    # with under 5 runs of history only the user threshold applies, and the rows say so
    assert all("needed to learn" in c.threshold_source for c in result.cases)


def test_new_and_missing_cases() -> None:
    base = pd.DataFrame([{"run_id": "a", "device": "d", "model": "m", "quantization": "fp32",
                          "delegate": "cpu", "threads": 1, "status": "ok", "round": r,
                          "inference_avg_us": 100.0 + r} for r in range(3)])
    new = base.assign(run_id="b", threads=2)
    result = compare.compare(base, new)
    assert [c.status for c in result.cases] == [compare.MISSING, compare.NEW]
    assert (result.base_run, result.new_run) == ("a", "b")
    assert result.failing() == ()


def test_sustained_windows_and_tainted_samples_are_ignored() -> None:
    rows = []
    for run, factor in (("a", 1.0), ("b", 1.0)):
        for r in range(5):
            rows.append({"run_id": run, "device": "d", "model": "m", "quantization": "fp32",
                         "delegate": "cpu", "threads": 1, "status": "ok", "round": r,
                         "inference_avg_us": 100.0 * factor * (1 + 0.01 * r), "phase": "measure",
                         "tainted": False})
        # hot windows and a throttled sample in the new run only
        rows.append({**rows[-1], "run_id": run, "phase": "sustained", "inference_avg_us": 900.0})
        if run == "b":
            rows.append({**rows[-2], "round": 9, "tainted": True, "inference_avg_us": 800.0})
    frame = pd.DataFrame(rows)
    result = compare.compare(frame[frame["run_id"] == "a"], frame[frame["run_id"] == "b"])
    (case,) = result.cases
    assert case.status == compare.UNCHANGED
    assert (case.n_base, case.n_new) == (5, 5)
    with_tainted = compare.compare(frame[frame["run_id"] == "a"], frame[frame["run_id"] == "b"],
                                   include_tainted=True).cases[0]
    assert with_tainted.n_new == 6


# --- outputs -----------------------------------------------------------------------------------


def _regressed(db: Path) -> compare.Comparison:
    runs = history(db, 6)
    with Store(db) as store:
        new = night(store, 6, np.random.default_rng(9),
                    slow={("S1", "mobilenet", "fp32", "xnnpack", 4): 2.0},
                    failed=(("R1", "mobilenet", "int8", "xnnpack", 1),))
    return compare.compare_runs(db, runs[-1], new)


def test_junit_xml_parses_and_has_one_testcase_per_case(db: Path) -> None:
    result = _regressed(db)
    root = ET.fromstring(compare.junit_xml(result))
    suite = root.find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert len(cases) == len(result.cases) == int(suite.get("tests", "0"))
    failures = [c for c in cases if c.find("failure") is not None]
    assert int(suite.get("failures", "0")) == len(failures) == 2
    kinds = {(c.get("classname"), c.get("name"), c.find("failure").get("type"))  # type: ignore[union-attr]
             for c in failures}
    assert kinds == {("farm.S1.mobilenet", "fp32/xnnpack/t4", "regression"),
                     ("farm.R1.mobilenet", "int8/xnnpack/t1", "broken")}
    broken = next(c for c in failures if c.get("name") == "int8/xnnpack/t1")
    message = broken.find("failure").get("message")  # type: ignore[union-attr]
    assert message is not None and "<in> | op" in message  # escaped on the way, intact after
    assert "\x07" not in message  # a control character XML cannot carry
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["base_run"] == result.base_run and props["new_run"] == result.new_run
    # a gate at 150 %: the +100 % regression passes it, the broken case still fails
    strict = ET.fromstring(compare.junit_xml(result, fail_pct=150.0)).find("testsuite")
    assert strict is not None and strict.get("failures") == "1"


def test_markdown_summary_escapes_cells(db: Path) -> None:
    result = _regressed(db)
    text = compare.markdown(result, fail_pct=10.0)
    assert text.startswith(f"## farm compare: {result.base_run} → {result.new_run}")
    assert "**2 failing**" in text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(result.cases)
    # every row keeps 9 cells: the device label's pipes and tags are escaped
    assert all(line.replace("\\|", "").count("|") == 10 for line in table)
    assert "Phone &lt;b&gt;\\|x\\|&lt;/b&gt; [SIMULATED]" in text
    assert "<b>" not in text


def test_write_outputs(db: Path, tmp_path: Path) -> None:
    result = _regressed(db)
    written = compare.write_outputs(result, junit=tmp_path / "o" / "j.xml",
                                    markdown_file=tmp_path / "o" / "s.md")
    assert [p.name for p in written] == ["j.xml", "s.md"]
    ET.parse(written[0])
    assert "farm compare" in written[1].read_text()


# --- trends ------------------------------------------------------------------------------------


def test_trends_one_row_per_case_and_run_in_time_order(db: Path) -> None:
    runs = history(db, 4)
    with Store(db) as store:
        frame = store.history_samples()
    t = compare.trends(frame)
    assert list(t.columns) == list(compare.TREND_COLUMNS)
    assert len(t) == len(DEVICES) * len(CASES) * 4
    one = t[(t["device"] == "R1") & (t["quantization"] == "fp32") & (t["threads"] == 1)]
    assert list(one["run_id"]) == runs
    assert (one["n"] == 5).all() and (one["ci_level"] > 0.9).all()
    assert math.isnan(one["change_vs_previous_pct"].iloc[0])
    medians = list(one["median_us"])
    assert one["change_vs_previous_pct"].iloc[1] == pytest.approx(
        100 * (medians[1] / medians[0] - 1))
    assert (one["ci_low_us"] <= one["median_us"]).all()
    assert (one["median_us"] <= one["ci_high_us"]).all()


def test_trends_of_nothing_is_an_empty_frame_with_columns() -> None:
    t = compare.trends(pd.DataFrame())
    assert t.empty and list(t.columns) == list(compare.TREND_COLUMNS)


def test_store_previous_run_skips_unfinished_runs(db: Path) -> None:
    runs = history(db, 3)
    with Store(db) as store:
        store.update_run(runs[1], status="interrupted")
        assert store.previous_run(runs[2]) == runs[0]
        assert store.previous_run(runs[2], status=None) == runs[1]
        assert store.previous_run(runs[0]) is None
    assert compare.baseline_for(db, runs[2], "last") == runs[0]
    assert compare.baseline_for(db, runs[2], runs[1][:17]) == runs[1]


def _delegated(run: str, nodes: int, delegation: str, factor: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame([{"run_id": run, "device": "d", "model": "m", "quantization": "int8",
                          "delegate": "gpu", "threads": 1, "status": "ok", "round": r,
                          "inference_avg_us": factor * (1000.0 + r), "delegation": delegation,
                          "delegated_nodes": nodes, "total_nodes": 10} for r in range(5)])


def test_partial_delegation_is_compared_with_itself_night_to_night() -> None:
    base = _delegated("a", 8, "partial")
    same = compare.compare(base, _delegated("b", 8, "partial", 1.5)).cases[0]
    assert same.status == compare.REGRESSION  # same graph split: a real slowdown
    fewer = compare.compare(base, _delegated("b", 6, "partial")).cases[0]
    assert fewer.status == compare.BROKEN
    assert "partial (8/10 nodes) in the base, partial (6/10 nodes) now" in fewer.reason
    more = compare.compare(base, _delegated("b", 10, "full")).cases[0]
    assert more.status == compare.NOT_COMPARABLE and "changed from partial" in more.reason
