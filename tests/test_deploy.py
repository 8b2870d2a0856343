"""Deployment on simulated phones over a real adb server: the per-phone lock, stale-file
cleanup, the --help smoke check, and what a sweep records when a phone is taken."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from farm import api
from farm.devices import adb
from farm.errors import DeviceError
from tests.fixtures_sim import adb_servers, sim_fleet  # noqa: F401 - pytest fixtures

MODEL = Path(__file__).resolve().parent / "data" / "models" / "tiny_fp32.tflite"


def phone(handle) -> adb.AdbDevice:
    return handle.farm_device()  # type: ignore[no-any-return]


def test_lock_is_exclusive_and_stale_locks_are_taken_over(sim_fleet) -> None:  # noqa: F811
    [h] = sim_fleet(profiles=("midrange",))
    a, b = phone(h), phone(h)
    a.lock("farm pid 1 on lab-a")
    with pytest.raises(DeviceError, match=r"in use by another farm process \(farm pid 1 on "
                                          r"lab-a\)"):
        b.lock("farm pid 2 on lab-b")
    a.unlock()
    b.lock("farm pid 2 on lab-b")  # free again
    # a lock left behind 13 hours ago by a crashed controller is taken over
    b._write(adb.LOCK_DIR + "/owner", f"{b._phone_epoch() - 13 * 3600} farm pid 3 on gone")
    c = phone(h)
    c.lock("farm pid 4 on lab-c")
    assert c.read_text(adb.LOCK_DIR + "/owner").strip().endswith("farm pid 4 on lab-c")
    b.unlock()  # no longer b's: leaves c's lock alone
    assert c.read_text(adb.LOCK_DIR + "/owner").strip().endswith("farm pid 4 on lab-c")
    c.unlock()
    assert c.shell(["ls", adb.LOCK_DIR], timeout_s=10).returncode != 0


def test_cleanup_removes_only_old_unused_files(sim_fleet) -> None:  # noqa: F811
    [h] = sim_fleet(profiles=("midrange",))
    dev = phone(h)
    models = f"{adb.WORKDIR}/models"
    dev.shell(["mkdir", "-p", models, f"{adb.WORKDIR}/tmp"], timeout_s=10)
    for name in ("used.tflite", "old.tflite", "recent.tflite"):
        dev.shell(["touch", f"{models}/{name}"], timeout_s=10)
    month_ago = dev._phone_epoch() - 30 * 86400
    for name in ("used.tflite", "old.tflite"):
        dev.shell(["touch", "-d", f"@{month_ago}", f"{models}/{name}"], timeout_s=10)
    dev.shell(["touch", f"{adb.WORKDIR}/tmp/out.bin"], timeout_s=10)
    removed = dev.cleanup([f"{models}/used.tflite"])
    assert sorted(removed) == [f"{models}/old.tflite", f"{adb.WORKDIR}/tmp/out.bin"]
    left = dev.shell(["ls", models], timeout_s=10).stdout.split()
    assert sorted(left) == ["recent.tflite", "used.tflite"]
    # the file in use was touched: it is young again, so the next cleanup keeps it
    assert dev.cleanup([]) == []


def sweep_files(tmp: Path, port: int) -> api.Plan:
    (tmp / "sweep.yaml").write_text(yaml.safe_dump({
        "schema_version": 1, "models": [{"name": "tiny", "source": str(MODEL)}],
        "quantizations": ["fp32"], "delegates": ["cpu"], "threads": [1], "repeats": 2,
        "run": {"warmup_runs": 0, "warmup_min_secs": 0, "num_runs": 3, "min_secs": 0,
                "max_secs": 2, "timeout_s": 30}}))
    (tmp / "devices.yaml").write_text(yaml.safe_dump(
        {"schema_version": 1, "host": "never", "adb_servers": [f"127.0.0.1:{port}"]}))
    return api.load_plan(tmp / "sweep.yaml", devices_file=tmp / "devices.yaml")


def test_a_phone_in_use_is_skipped_with_the_holder(sim_fleet, tmp_path: Path) -> None:  # noqa: F811
    flagship, mid = sim_fleet(profiles=("flagship", "midrange"), time_scale=20.0)
    other = phone(mid)
    other.lock("farm pid 99 on lab-b, run nightly")
    result = api.run_plan(sweep_files(tmp_path, mid.adb_port), db=tmp_path / "db.sqlite",
                          out_dir=tmp_path / "r", cache_dir=tmp_path / "c",
                          vendor_dir=tmp_path / "none")
    df = api.load_samples(tmp_path / "db.sqlite", result.run_id)
    busy = df[df["device"] == mid.serial]
    assert len(busy) == 2 and (busy["status"] == "skipped").all()
    assert busy["error"].str.contains("lab-b, run nightly").all()
    assert (df[df["device"] == flagship.serial]["status"] == "ok").all()
    # our own lock was released at the end; the other holder's is untouched
    assert phone(flagship).shell(["ls", adb.LOCK_DIR], timeout_s=10).returncode != 0
    assert "lab-b" in other.read_text(adb.LOCK_DIR + "/owner")


def test_a_binary_that_cannot_run_fails_the_smoke_check(sim_fleet, tmp_path: Path) -> None:  # noqa: F811
    [h] = sim_fleet(profiles=("midrange",), time_scale=20.0)
    vendor = tmp_path / "vendor"
    # a vendor arm64 ELF that is not benchmark_model (a stub with its marker removed): the
    # phone's linker refuses it, as it would a build against a missing library
    from farm import vendor as vendor_mod
    from farm.sim.benchmark import MARKER, REAL_MARKER, make_stub_binary

    bad = tmp_path / "benchmark_model"
    stub = make_stub_binary("arm64-v8a")
    for marker in (MARKER, REAL_MARKER):
        stub = stub.replace(marker, b"X" * len(marker))
    bad.write_bytes(stub)
    vendor_mod.add_local(bad, "arm64-v8a", vendor_dir=vendor)
    result = api.run_plan(sweep_files(tmp_path, h.adb_port), db=tmp_path / "db.sqlite",
                          out_dir=tmp_path / "r", cache_dir=tmp_path / "c", vendor_dir=vendor)
    df = api.load_samples(tmp_path / "db.sqlite", result.run_id)
    assert (df["status"] == "skipped").all() and len(df) == 2
    assert df["error"].str.contains("benchmark_model --help exited 1").all()
    assert df["error"].str.contains("CANNOT LINK EXECUTABLE").all()
