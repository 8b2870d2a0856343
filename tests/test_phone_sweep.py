"""Sweeps on simulated phones over two real adb servers: parallel, stored, reported, cached.

The phones are farm's simulator (adbd wire protocol over loopback); everything between farm and
them is real: the adb binary from adbutils, adbutils, sync push, shell v2 (and legacy shell on
the old armv7 profile, which lacks shell_v2).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from farm import api
from tests.fixtures_sim import adb_servers, sim_fleet  # noqa: F401 - pytest fixtures

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "tests" / "data" / "models"
pytestmark = pytest.mark.slow


def write_configs(tmp: Path, servers: list[int]) -> tuple[Path, Path]:
    sweep = {
        "schema_version": 1,
        "models": [{"name": "tiny", "source": str(MODELS / "tiny_fp32.tflite")}],
        "quantizations": ["fp32"],
        "delegates": ["cpu", "xnnpack", "gpu", "nnapi"],
        "threads": [1, 2],
        "repeats": 2,
        "run": {"warmup_runs": 1, "warmup_min_secs": 0, "num_runs": 5, "min_secs": 0,
                "max_secs": 5, "timeout_s": 60},
        "cooldown": {"delta_c": 5.0, "timeout_s": 5},
    }
    devices = {"schema_version": 1, "host": "never",
               "adb_servers": [f"127.0.0.1:{p}" for p in servers],
               "tiers": {"flagship": {"min_ram_mb": 8000}, "mid": {"min_ram_mb": 4000},
                         "low": {"max_ram_mb": 4000}}}
    (tmp / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    (tmp / "devices.yaml").write_text(yaml.safe_dump(devices))
    return tmp / "sweep.yaml", tmp / "devices.yaml"


def test_sweep_on_three_phones_over_two_servers(sim_fleet, tmp_path: Path) -> None:  # noqa: F811
    fleet = sim_fleet(profiles=("flagship", "midrange", "old_armv7"), servers=2,
                      time_scale=50.0)
    ports = sorted({h.adb_port for h in fleet})
    assert len(ports) == 2
    sweep, devices = write_configs(tmp_path, ports)
    plan = api.load_plan(sweep, devices_file=devices)
    db, out, cache = tmp_path / "farm.sqlite", tmp_path / "reports", tmp_path / "cache"
    first = api.run_plan(plan, db=db, out_dir=out, cache_dir=cache,
                         vendor_dir=tmp_path / "no-vendor")
    serials = {h.serial for h in fleet}
    assert {d.serial for d in first.devices} == serials
    assert all(d.simulated for d in first.devices)
    df = api.load_samples(db, first.run_id)
    assert set(df["device"]) == serials
    assert df["device_label"].str.endswith("[SIMULATED]").all()
    ok = df[df["status"] == "ok"]
    assert set(ok["device"]) == serials  # every phone produced real parsed samples
    # delegation coverage is parsed and stored for delegate cases; where the binary printed no
    # delegate status (the old armv7 phone's TF 2.1-era benchmark_model has no XNNPACK), the
    # sample is flagged and never presented as the delegate's number
    deleg = df[df["delegate"].isin(["gpu", "nnapi", "xnnpack"]) & (df["status"] == "ok")]
    assert (deleg["delegation"].isin(["full", "partial", "none"])
            | deleg["flags"].str.contains("delegate_not_applied")).all()
    assert (deleg["delegation"] == "full").any()
    assert (deleg[deleg["delegation"] == "none"]["flags"].str.contains("delegate_not_applied")
            ).all()
    old = fleet.by_profile("old_armv7")[0].serial
    assert df[(df["device"] == old) & (df["delegate"] == "nnapi")]["status"].eq("skipped").all()
    # phones ran in parallel: some samples on different phones overlap in time
    spans = ok.groupby("device").agg(start=("started_at", "min"), end=("ended_at", "max"))
    assert max(spans["start"]) < min(spans["end"])
    assert first.stats.bytes_pushed > 0
    html = (out / first.run_id / "index.html").read_text()
    assert "SIMULATED" in html
    # a rerun pushes nothing: the phones already hold the binary and the model (sha256 match)
    second = api.run_plan(plan, db=db, out_dir=out, cache_dir=cache,
                          vendor_dir=tmp_path / "no-vendor", report=False)
    assert second.stats.bytes_pushed == 0
    assert second.stats.samples_ok == first.stats.samples_ok
