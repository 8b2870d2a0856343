"""Thermal-aware measurement on simulated phones with known thermal models (issue 5).

The truth comes from the simulator's own thermal model (farm.sim.thermal), integrated offline
from the temperature the phone had when the case started; farm only sees the phone through a
real adb server, like any phone.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import pytest
import yaml

from farm import api, runner, sustained
from farm.sim.profiles import load_profile
from farm.sim.thermal import Load, ManualClock, ThermalModel
from farm.store import Store
from tests.fixtures_sim import adb_servers, sim_fleet  # noqa: F401 - pytest fixtures

MODEL = Path(__file__).resolve().parent / "data" / "models" / "tiny_fp32.tflite"
pytestmark = pytest.mark.slow


def configs(tmp: Path, port: int, **sweep_over: object) -> api.Plan:
    sweep = {"schema_version": 1, "models": [{"name": "tiny", "source": str(MODEL)}],
             "quantizations": ["fp32"], "delegates": ["cpu"], "threads": [4], "repeats": 1,
             "affinity": "big_cores",
             "run": {"warmup_runs": 1, "warmup_min_secs": 0, "num_runs": 1, "min_secs": 1,
                     "max_secs": 5, "timeout_s": 120},
             "cooldown": {"delta_c": 3.0, "timeout_s": 600}}
    sweep.update(sweep_over)
    (tmp / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    (tmp / "devices.yaml").write_text(yaml.safe_dump(
        {"schema_version": 1, "host": "never", "adb_servers": [f"127.0.0.1:{port}"]}))
    return api.load_plan(tmp / "sweep.yaml", devices_file=tmp / "devices.yaml")


def onset_truth_s(phone, start_uptime_s: float) -> float:
    """Seconds from the case's start to the first trip point the phone's thermal model
    engaged (its own log, in simulated time)."""
    first = next(t for t, n in phone.thermal.trip_log if n > 0)
    boot = phone.clock.uptime_s() - phone.clock.now_s()
    return first - (start_uptime_s - boot)


def test_thermal_model_logs_trips_in_simulated_time() -> None:
    clock = ManualClock()
    model = ThermalModel(load_profile("midrange"), clock, start_temp_c=42.0)
    model.add_load(Load(cpus=(4, 5, 6, 7)))
    clock.advance(30.0)
    assert model.cap_fraction() < 1.0
    [(t, n)] = model.trip_log
    assert n == 1 and 0 < t < 30.0


def test_sustained_onset_matches_the_thermal_model(sim_fleet, tmp_path: Path) -> None:  # noqa: F811
    fleet = sim_fleet(profiles=("midrange",), time_scale=20.0)
    phone = fleet[0]
    plan = configs(tmp_path, phone.adb_port, sustained=[
        {"match": {"threads": [4]}, "duration_s": 240, "window_s": 4, "onset_threshold": 0.1}])
    result = api.run_plan(plan, db=tmp_path / "db.sqlite", out_dir=tmp_path / "r",
                          cache_dir=tmp_path / "c", vendor_dir=tmp_path / "none")
    with Store(tmp_path / "db.sqlite") as store:
        samples = store.load_samples(result.run_id)
        run = store.run(result.run_id)
    win = samples[samples["phase"] == "sustained"].sort_values("repeat")
    assert len(win) == 60 and (win["status"] == "ok").all()
    assert set(win["cpu_mask"]) == {"f0"}  # the big cluster, cpus 4-7
    table = sustained.analyze(samples, sustained.specs_from_run(run))
    [row] = table.to_dict("records")
    with Store(tmp_path / "db.sqlite") as store:
        raw = store.load_samples(result.run_id, raw=True)
    first = raw[(raw["phase"] == "sustained") & (raw["repeat"] == 0)].iloc[0]
    start_uptime = json.loads(first["env_json"])["series"]["before"]["uptime_s"]
    truth = onset_truth_s(phone.phone, start_uptime)
    assert 60 < truth < 300
    assert row["onset_s"] == pytest.approx(truth, rel=0.10)
    # the cap costs > 10 % once engaged (it may release again: the trip has hysteresis)
    assert win["avg_us"].max() > 1.1 * row["peak_us"] and row["max_thermal_status"] >= 1
    # no window before the trip is flagged as capped; the one right after it is
    before = win[win["window_offset_s"] < truth - 8]
    assert len(before) > 10 and not before["flags"].str.contains("freq_capped").any()
    after = win[win["window_offset_s"] > truth].iloc[0]
    assert "freq_capped" in after["flags"]


def test_cool_profile_is_never_flagged_throttled(sim_fleet, tmp_path: Path) -> None:  # noqa: F811
    """The flagship at 1 thread on a short sweep stays far below its first trip point."""
    fleet = sim_fleet(profiles=("flagship",), time_scale=5.0)
    plan = configs(tmp_path, fleet[0].adb_port, threads=[1], repeats=4)
    result = api.run_plan(plan, db=tmp_path / "db.sqlite", out_dir=tmp_path / "r",
                          cache_dir=tmp_path / "c", vendor_dir=tmp_path / "none")
    df = api.load_samples(tmp_path / "db.sqlite", result.run_id)
    assert len(df) == 4 and (df["status"] == "ok").all()
    assert not df["tainted"].any()
    assert not df["flags"].str.contains("throttled|freq_capped|started_hot").any()
    assert df["temp_max_c"].notna().all() and (df["temp_max_c"] >= df["temp_before_c"]).all()
    assert (df["thermal_status_max"] == 0).all()


def test_closed_loop_gate_waits_only_as_long_as_needed(sim_fleet, tmp_path: Path) -> None:  # noqa: F811
    scale = 20.0
    fleet = sim_fleet(profiles=("midrange",), time_scale=scale)
    handle = fleet[0]
    plan = configs(tmp_path, handle.adb_port)
    from farm.devices import adb

    [(dev, info)] = adb.discover(plan.fleet)
    target = runner.DeviceTarget(device=dev, info=info,
                                 binary=api.phone_binary(info, vendor_dir=tmp_path / "none",
                                                         cache_dir=tmp_path / "c"),
                                 cooldown_delta_c=3.0, cooldown_timeout_s=600,
                                 gate_poll_s=0.1)
    with Store(tmp_path / "db.sqlite") as store:
        w = runner.DeviceWorker(target, run_id="r", store=store, params=plan.sweep.params,
                                delegates=plan.delegates, variants={},
                                progress=runner._Progress(1, lambda e: None),
                                stop=threading.Event())
        w.stage([])
        # a cool phone passes at once
        waited, reason, _ = w.wait_cool()
        assert reason == "cool" and waited < 2.0
        # heat it, then time the gate against the model's cooling curve
        thermal = handle.phone.thermal
        spec = load_profile("midrange").thermal
        base_soc = w.baseline.temp_c - 0.5  # BIG zone = SoC + 0.5 °C
        idle_soc = spec.ambient_c + spec.idle_power_w / spec.cooling_w_per_c
        thermal.set_temperature(46.0)
        waited, reason, probe = w.wait_cool()
        assert reason == "cool"
        assert probe.max_temp_c <= w.baseline.temp_c + 3.0
        # T(t) = idle + (T0 - idle) exp(-t G / C), until T = baseline + delta
        tau = spec.heat_capacity_j_per_c / spec.cooling_w_per_c
        truth_sim_s = tau * math.log((46.0 - idle_soc) / (base_soc + 3.0 - idle_soc))
        waited_sim_s = waited * scale
        poll_sim_s = 0.1 * scale
        assert truth_sim_s - poll_sim_s <= waited_sim_s <= truth_sim_s * 1.1 + 3 * poll_sim_s
