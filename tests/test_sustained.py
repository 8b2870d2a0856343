"""Tests for farm.sustained: golden windows, the simulated thermal model, the store."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from farm import sustained
from farm.models import Rule, SustainedSpec
from farm.store import Store
from tests.fixtures_report import (
    REAL_DEVICE,
    SIM_DEVICE,
    make_report_data,
    sustained_frame,
    sustained_sweep_json,
    thermal_windows,
    write_store,
)

GOLDEN = Path(__file__).parent / "data" / "golden" / "sustained"


def _golden() -> tuple[pd.DataFrame, tuple[SustainedSpec, ...], dict[int, Any], dict[str, Any]]:
    frame = pd.read_csv(GOLDEN / "windows.csv")
    specs = sustained.specs_from_run({"sweep_json": (GOLDEN / "sweep.json").read_text()})
    series = {int(k): v for k, v in
              json.loads((GOLDEN / "series.json").read_text())["series"].items()}
    return frame, specs, series, json.loads((GOLDEN / "expected.json").read_text())


def _by_group(table: pd.DataFrame) -> dict[str, pd.Series]:
    return {"/".join(str(r[k]) for k in sustained.GROUP_KEYS): r for _, r in table.iterrows()}


def _check(row: pd.Series, want: dict[str, Any], *, suffix: str = "") -> None:
    for field, value in want.items():
        if field.startswith("_") or (field.endswith("_with_series") and not suffix):
            continue
        if suffix and field.endswith(suffix):
            field = field.removesuffix(suffix)
        elif suffix and f"{field}{suffix}" in want:
            continue
        if field.endswith("_contains"):
            assert value in str(row[field.removesuffix("_contains")]), (field, row)
            continue
        got = row[field]
        if value is None:
            assert got is None or (isinstance(got, float) and math.isnan(got)), (field, got)
        elif isinstance(value, float):
            assert got == pytest.approx(value, rel=1e-9, abs=1e-12), (field, got)
        else:
            assert got == value, (field, got)


# --- golden ------------------------------------------------------------------------------------


def test_specs_from_run_reads_the_sweep() -> None:
    specs = _golden()[1]
    assert [s.onset_threshold for s in specs] == [0.10, 0.20]
    assert specs[1].match == Rule(quantization=("int8",), device=("devA",))
    assert sustained.spec_for(specs, device="devB", model="m", quantization="int8",
                              delegate="cpu", threads=1) is None
    assert sustained.spec_for(specs, device="devA", model="m", quantization="int8",
                              delegate="cpu", threads=1) is specs[1]


@pytest.mark.parametrize("run", [{}, {"sweep_json": None}, {"sweep_json": "not json"},
                                 {"sweep_json": "{}"}, {"sweep_json": '{"sustained": 3}'}])
def test_specs_from_run_without_specs(run: dict[str, Any]) -> None:
    assert sustained.specs_from_run(run) == ()


def test_golden_groups_with_series() -> None:
    frame, specs, series, expected = _golden()
    table = sustained.analyze(frame, specs, series=series)
    assert list(table.columns) == list(sustained.SUSTAINED_COLUMNS)
    groups = _by_group(table)
    assert set(groups) == set(expected["groups"])  # the measure-phase row is not a group
    for key, want in expected["groups"].items():
        _check(groups[key], want, suffix="_with_series")


def test_golden_groups_without_series() -> None:
    frame, specs, _, expected = _golden()
    groups = _by_group(sustained.analyze(frame, specs))
    for key, want in expected["groups"].items():
        _check(groups[key], want)


def test_golden_ranking() -> None:
    frame, specs, series, expected = _golden()
    ranking = sustained.ranking(sustained.analyze(frame, specs, series=series))
    assert list(ranking.columns) == list(sustained.RANKING_COLUMNS)
    got = ranking[["model", "quantization", "device", "n_devices", "peak_rank",
                   "sustained_rank", "rank_change"]].to_dict("records")
    assert got == expected["ranking"]["rows"]


def test_windows_are_in_time_order() -> None:
    frame = _golden()[0]
    w = sustained.windows(frame)
    a = w[(w["device"] == "devA") & (w["quantization"] == "fp32")]
    assert list(a["offset_s"]) == [10.0 * i for i in range(10)]
    assert list(a["latency_us"])[:4] == [1000, 1020, 1050, 1100]
    assert (w["sample_id"] != 41).all()  # the measure row


def test_unmatched_group_uses_defaults_and_says_so() -> None:
    frame = _golden()[0]
    frame = frame[frame["device"] == "devC"].assign(quantization="fp16")
    specs = _golden()[1]
    (row,) = [r for _, r in sustained.analyze(frame, specs).iterrows()]
    assert row["spec_source"].startswith("defaults")
    assert row["onset_threshold"] == SustainedSpec().onset_threshold
    assert row["tail_windows"] == SustainedSpec().tail_windows


def test_all_windows_failed() -> None:
    frame = _golden()[0]
    frame = frame[frame["device"] == "devC"].assign(status="failed", avg_us=math.nan)
    (row,) = [r for _, r in sustained.analyze(frame).iterrows()]
    assert row["n_windows"] == 0 and row["n_failed"] == 4
    assert math.isnan(row["peak_us"]) and "no successful window" in row["note"]
    assert sustained.ranking(sustained.analyze(frame)).empty


def test_no_sustained_rows() -> None:
    frame = _golden()[0]
    assert sustained.analyze(frame[frame["phase"] == "measure"]).empty
    assert list(sustained.analyze(pd.DataFrame()).columns) == list(sustained.SUSTAINED_COLUMNS)
    assert sustained.ranking(sustained.analyze(pd.DataFrame())).empty
    no_phase = make_report_data().samples.drop(columns=["phase"])
    assert sustained.windows(no_phase).empty


def test_window_freq_fraction() -> None:
    points = [{"cur_freq_khz": [1_000_000, 2_000_000], "max_freq_khz": [2_000_000, 2_500_000]},
              {"cur_freq_khz": [500_000, 1_000_000], "max_freq_khz": [2_000_000, 2_500_000]},
              {"cur_freq_khz": [], "max_freq_khz": []},
              {"cur_freq_khz": [1_000_000], "max_freq_khz": [0]}]
    # per point, the fastest cluster: max(0.5, 0.8) = 0.8, max(0.25, 0.4) = 0.4; median 0.6
    assert sustained.window_freq_fraction(points) == pytest.approx(0.6)
    assert math.isnan(sustained.window_freq_fraction([]))


# --- the simulator's thermal model -------------------------------------------------------------


@pytest.mark.parametrize("profile", ["flagship", "midrange", "lowend", "old_armv7"])
def test_onset_within_10_percent_of_the_simulated_truth(profile: str) -> None:
    trace = thermal_windows(profile, duration_s=240.0, window_s=5.0)
    truth = trace.truth_onset_s(0.10)
    assert truth is not None and truth > 20.0  # every profile throttles with all cores busy
    (row,) = [r for _, r in sustained.analyze(
        sustained_frame(trace), [SustainedSpec(duration_s=240.0, window_s=5.0)]).iterrows()]
    assert row["onset_s"] == pytest.approx(truth, rel=0.10)
    assert row["sustained_peak_ratio"] > 1.1
    assert row["max_thermal_status"] >= 1
    assert 0.1 < row["freq_drop"] < 0.6
    assert row["temp_max_c"] > row["temp_start_c"] + 5.0


def test_cool_profile_is_not_flagged() -> None:
    trace = thermal_windows("midrange", threads=1, duration_s=240.0, window_s=5.0)
    assert trace.truth_onset_s(0.10) is None
    (row,) = [r for _, r in sustained.analyze(sustained_frame(trace)).iterrows()]
    assert row["onset_s"] is None and row["onset_window"] is None
    assert row["sustained_peak_ratio"] == pytest.approx(1.0)
    assert row["max_thermal_status"] == 0 and row["freq_drop"] == 0.0


def test_ranking_changes_once_warm() -> None:
    """A phone fast at peak that throttles hard ranks below a slower phone that holds."""
    hot = sustained_frame(thermal_windows("flagship", duration_s=240.0, window_s=5.0,
                                          base_us=10_000.0))
    steady = sustained_frame(thermal_windows("midrange", threads=1, duration_s=240.0,
                                             window_s=5.0, base_us=13_000.0),
                             info=SIM_DEVICE, tier="mid", first_sample_id=200_000)
    ranking = sustained.ranking(sustained.analyze(pd.concat([hot, steady])))
    by = {r["device"]: r for _, r in ranking.iterrows()}
    assert by[REAL_DEVICE.serial]["peak_rank"] == 1 and by[REAL_DEVICE.serial][
        "sustained_rank"] == 2
    assert by[SIM_DEVICE.serial]["rank_change"] == 1


# --- through the store -------------------------------------------------------------------------


def test_store_round_trip(tmp_path: Path) -> None:
    """Rows written with Store.append (phase, window offset, series) analyse the same."""
    trace = thermal_windows("lowend", duration_s=120.0, window_s=5.0)
    frame = sustained_frame(trace, info=SIM_DEVICE, tier="mid")
    frame = frame.assign(freq_cap_ratio=math.nan)  # force the series fallback
    data = make_report_data(frame)
    data = type(data)(run={**data.run, "sweep_json": sustained_sweep_json(window_s=5.0)},
                      devices=data.devices, variants=data.variants, samples=frame)
    with Store(tmp_path / "farm.sqlite") as store:
        write_store(store, data, series=trace.series())
        loaded = store.load_samples(data.run["run_id"])
        raw = store.load_samples(data.run["run_id"], raw=True)
        run = store.run(data.run["run_id"])
    assert (loaded["phase"] == "sustained").all()
    series = sustained.series_from_env_json(raw)
    assert len(series) == len(trace.windows)
    specs = sustained.specs_from_run(run)
    (direct,) = [r for _, r in sustained.analyze(frame, specs,
                                                 series=trace.series()).iterrows()]
    (stored,) = [r for _, r in sustained.analyze(loaded, specs, series=series).iterrows()]
    for col in ("n_windows", "peak_us", "sustained_us", "onset_s", "max_thermal_status",
                "freq_drop", "temp_max_c"):
        assert stored[col] == pytest.approx(direct[col]), col
    assert stored["freq_source"] == "sampler cur/max freq"
    assert stored["device_label"] == SIM_DEVICE.label and bool(stored["simulated"])
    assert stored["onset_s"] == pytest.approx(trace.truth_onset_s(0.10), rel=0.10)
