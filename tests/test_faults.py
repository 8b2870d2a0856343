"""Device faults during a sweep, and a controller interrupted by SIGINT, SIGTERM and SIGKILL.

Every test runs a small real sweep (`farm.api.run_plan` or `python -m farm run`) on simulated
phones behind real adb servers and injects one fault into one phone while the sweep runs. What
the issue demands, asserted for each fault:
- the sweep finishes on the healthy phones, every sample of theirs ok;
- nothing is lost and nothing is doubled: every planned (case, repeat) is in the store once;
- the failed samples carry a reason that names the fault;
- a quarantined phone's remaining samples are `skipped` with the reason;
- after a hang, no benchmark_model is left running on the phone.
After an interrupted controller, `farm run --resume RUN` completes the run, keeping every
sample committed before the interruption.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from farm import api
from farm.cli import main
from farm.sim.control import AdbServer, free_port
from farm.store import now_iso
from tests import fixtures_sim
from tests.fixtures_sim import SimFleet, SimHandle

adb_servers = fixtures_sim.adb_servers
sim_fleet = fixtures_sim.sim_fleet

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "data" / "models" / "tiny_fp32.tflite"
PROFILES = ("flagship", "midrange", "lowend")
TIME_SCALE = 50.0


# --------------------------------------------------------------------------- helpers

def write_configs(tmp: Path, ports: Sequence[int], *, delegates: Sequence[str] = ("cpu",),
                  repeats: int = 3, timeout_s: float = 30, min_secs: float = 0) -> Path:
    sweep = {
        "schema_version": 1,
        "models": [{"name": "tiny", "source": str(TINY)}],
        "quantizations": ["fp32"], "delegates": list(delegates), "threads": [1],
        "repeats": repeats,
        "run": {"warmup_runs": 1, "warmup_min_secs": 0, "num_runs": 5, "min_secs": min_secs,
                "max_secs": 30, "timeout_s": timeout_s},
        "cooldown": {"delta_c": 50, "timeout_s": 1},
    }
    (tmp / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    (tmp / "devices.yaml").write_text(yaml.safe_dump({
        "schema_version": 1, "host": "never",
        "adb_servers": [f"127.0.0.1:{p}" for p in sorted(set(ports))]}))
    return tmp


def planned_keys(db: Path, run_id: str) -> set[tuple[str, str, int]]:
    """(device, case_id, repeat) of every planned sample: runnable cases x repeats, and one
    record (repeat 0) for each case planned as skipped."""
    with sqlite3.connect(db) as c:
        repeats = int(c.execute("SELECT repeats FROM runs WHERE run_id=?", (run_id,)
                                ).fetchone()[0])
        cases = c.execute("SELECT device, case_id, skip_reason FROM cases WHERE run_id=?",
                          (run_id,)).fetchall()
    out = set()
    for device, case_id, skip in cases:
        for r in ([0] if skip else range(repeats)):
            out.add((device, case_id, r))
    return out


def assert_nothing_lost(db: Path, run_id: str) -> pd.DataFrame:
    """Every planned (case, repeat) stored exactly once; returns the samples."""
    with sqlite3.connect(db) as c:
        dups = c.execute("SELECT case_id, repeat, COUNT(*) FROM samples WHERE run_id=? "
                         "GROUP BY case_id, repeat HAVING COUNT(*) > 1", (run_id,)).fetchall()
    assert dups == []
    df = api.load_samples(db, run_id)
    got = {(d, c, int(r)) for d, c, r in zip(df["device"], df["case_id"], df["repeat"],
                                               strict=True)}
    planned = planned_keys(db, run_id)
    assert len(df) == len(got)
    assert got == planned, (sorted(planned - got)[:5], sorted(got - planned)[:5])
    assert set(df["status"]) <= {"ok", "failed", "skipped"}
    assert df[df["status"] != "ok"]["error"].str.len().gt(0).all()  # every non-ok has a reason
    return df


def benchmark_procs(h: SimHandle) -> list[Any]:
    """benchmark_model processes on the phone (its process table, which `ps` prints)."""
    return [p for p in h.phone.procs.snapshot() if p.name == "benchmark_model"]


def wait_until(pred: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


class AfterSamples:
    """on_event: run `action` once, in the victim's worker thread, after its n-th sample."""

    def __init__(self, serial: str, action: Callable[[], None], n: int = 1) -> None:
        self.serial = serial
        self.action = action
        self.n = n
        self.seen = 0
        self.fired_at = ""
        self.lock = threading.Lock()

    def __call__(self, event: Any) -> None:
        if getattr(event, "kind", "") != "sample_finished" or event.device != self.serial:
            return
        with self.lock:
            self.seen += 1
            fire = self.seen == self.n
        if fire:
            self.fired_at = now_iso()
            self.action()


def run_sweep(tmp: Path, fleet: SimFleet, on_event: Callable[[Any], None] | None = None,
              **sweep: Any) -> tuple[Path, str]:
    write_configs(tmp, [h.adb_port for h in fleet], **sweep)
    p = api.load_plan(tmp / "sweep.yaml", devices_file=tmp / "devices.yaml")
    result = api.run_plan(p, db=tmp / "db.sqlite", out_dir=tmp / "reports",
                          cache_dir=tmp / "cache", vendor_dir=tmp / "no-vendor", report=False,
                          on_event=on_event)
    assert {d.serial for d in result.devices} == {h.serial for h in fleet}
    return tmp / "db.sqlite", result.run_id


def assert_healthy(df: pd.DataFrame, healthy: Sequence[SimHandle], per_phone: int) -> None:
    for h in healthy:
        mine = df[df["device"] == h.serial]
        assert len(mine) == per_phone, h.profile
        assert (mine["status"] == "ok").all(), mine[["status", "error"]].to_string()


def assert_quarantined(victim: pd.DataFrame, fault: str) -> None:
    """Failed samples name the fault; the rest are skipped, quarantined, with the fault too."""
    failed = victim[victim["status"] == "failed"]
    skipped = victim[victim["status"] == "skipped"]
    assert len(failed) >= 1, victim[["status", "error"]].to_string()
    assert failed["error"].str.contains(fault, flags=re.I, regex=True).all(), \
        failed["error"].tolist()
    assert len(skipped) >= 1, victim[["status", "error"]].to_string()
    assert skipped["error"].str.contains("quarantin", case=False).all(), skipped["error"].tolist()
    assert skipped["error"].str.contains(fault, flags=re.I, regex=True).all(), \
        skipped["error"].tolist()
    # quarantine ends the phone's sweep: nothing ran on it after the first skip
    first_skip = skipped["started_at"].min()
    assert not (victim[victim["status"] != "skipped"]["started_at"] > first_skip).any()


# --------------------------------------------------------------------------- device faults

PERSISTENT = [
    # (fault, params, what the failed samples' reason must say)
    ("unauthorized", {}, r"unauthori[sz]ed"),
    ("offline", {}, r"offline"),
    ("disconnect", {"times": 0}, r"offline|not found|disconnect|closed|connection|EOF|reset"),
]


@pytest.mark.parametrize("fault, params, reason", PERSISTENT, ids=[f for f, _, _ in PERSISTENT])
def test_a_lost_phone_is_retried_then_quarantined(sim_fleet, tmp_path: Path, fault: str,  # noqa: F811
                                                  params: dict[str, Any], reason: str) -> None:
    fleet = sim_fleet(PROFILES, time_scale=TIME_SCALE)
    victim, healthy = fleet[1], [fleet[0], fleet[2]]
    inject = AfterSamples(victim.serial, lambda: victim.fault(fault, **params))
    t0 = time.monotonic()
    db, run_id = run_sweep(tmp_path, fleet, inject, delegates=("cpu", "xnnpack"), repeats=4)
    elapsed = time.monotonic() - t0
    df = assert_nothing_lost(db, run_id)
    assert_healthy(df, healthy, per_phone=8)
    mine = df[df["device"] == victim.serial]
    assert (mine["status"] == "ok").sum() == 1  # the sample before the fault
    assert_quarantined(mine, reason)
    # retried with backoff, not given up at the first error: the failures are spread in time
    failed = mine[mine["status"] == "failed"].sort_values("started_at")
    assert len(failed) >= 2
    times = pd.to_datetime(failed["started_at"])
    span = times.iloc[-1] - times.iloc[0]
    assert span.total_seconds() >= 1.0
    assert elapsed < 120


@pytest.mark.parametrize("after_bytes", [0, 1], ids=["between-commands", "mid-stream"])
def test_a_transient_disconnect_is_retried_and_the_phone_goes_on(sim_fleet,  # noqa: F811
                                                                  tmp_path: Path,
                                                                  after_bytes: int) -> None:
    """The connection drops once (now, or inside the next command's output stream); the adb
    server reconnects by itself."""
    fleet = sim_fleet(PROFILES, time_scale=TIME_SCALE)
    victim, healthy = fleet[1], [fleet[0], fleet[2]]
    inject = AfterSamples(victim.serial, lambda: victim.fault("disconnect", times=1,
                                                              after_bytes=after_bytes))
    db, run_id = run_sweep(tmp_path, fleet, inject, delegates=("cpu", "xnnpack"), repeats=4)
    df = assert_nothing_lost(db, run_id)
    assert_healthy(df, healthy, per_phone=8)
    assert victim.running.adbd.stats.connections_dropped >= 1  # the drop did happen
    mine = df[df["device"] == victim.serial]
    assert not (mine["status"] == "skipped").any(), mine[["status", "error"]].to_string()
    after = mine[mine["started_at"] > inject.fired_at]
    assert (after["status"] == "ok").any()  # back after the retry
    assert mine.sort_values("started_at")["status"].iloc[-1] == "ok"
    failed = mine[mine["status"] == "failed"]
    assert failed["error"].str.contains(PERSISTENT[2][2], regex=True, flags=re.I).all()


def test_benchmark_model_crash_is_a_failed_sample_with_the_signal(sim_fleet,  # noqa: F811
                                                                   tmp_path: Path) -> None:
    fleet = sim_fleet(PROFILES, time_scale=TIME_SCALE)
    victim, healthy = fleet[1], [fleet[0], fleet[2]]
    inject = AfterSamples(victim.serial, lambda: victim.fault("crash"))
    db, run_id = run_sweep(tmp_path, fleet, inject, repeats=4)
    df = assert_nothing_lost(db, run_id)
    assert_healthy(df, healthy, per_phone=4)
    mine = df[df["device"] == victim.serial]
    bad = mine[mine["status"] != "ok"]
    assert len(bad) == 3
    failed = bad[bad["status"] == "failed"]
    assert len(failed) >= 1
    assert failed["error"].str.contains(r"SIGSEGV|segmentation|signal 11|crash", case=False,
                                        regex=True).all(), failed["error"].tolist()
    assert (failed["exit_code"] == 139).all()
    assert benchmark_procs(victim) == []


def test_a_hang_times_out_and_nothing_is_left_running(sim_fleet, tmp_path: Path  # noqa: F811
                                                      ) -> None:
    fleet = sim_fleet(PROFILES, time_scale=TIME_SCALE)
    victim, healthy = fleet[1], [fleet[0], fleet[2]]
    leftovers: list[int] = []
    stop = threading.Event()

    def hup_proof() -> None:
        # On a phone, a hung benchmark_model outlives the adb session that started it (no pty,
        # no SIGHUP); the simulator hangs up on it unless told otherwise. So: tell it.
        while not stop.is_set():
            for p in benchmark_procs(victim):
                p.ignore_hup = True
            time.sleep(0.01)

    def on_event(e: Any) -> None:
        inject(e)
        if getattr(e, "kind", "") == "sample_finished" and e.device == victim.serial \
                and e.status != "ok":
            # the runner has given up on this sample: it must have killed the process
            if not wait_until(lambda: not benchmark_procs(victim), 3.0):
                leftovers.append(len(benchmark_procs(victim)))

    inject = AfterSamples(victim.serial, lambda: victim.fault("hang"))
    watcher = threading.Thread(target=hup_proof, daemon=True)
    watcher.start()
    try:
        db, run_id = run_sweep(tmp_path, fleet, on_event, repeats=4, timeout_s=2)
    finally:
        stop.set()
        watcher.join(5)
    df = assert_nothing_lost(db, run_id)
    assert_healthy(df, healthy, per_phone=4)
    mine = df[df["device"] == victim.serial]
    failed = mine[mine["status"] == "failed"]
    assert len(failed) >= 1
    assert failed["error"].str.contains("timed out", case=False).all(), failed["error"].tolist()
    assert leftovers == []
    assert benchmark_procs(victim) == []
    r = victim.device().shell2("pidof benchmark_model", timeout=30)
    assert r.output.strip() == ""


def test_storage_full_fails_the_phone_with_the_reason(sim_fleet, tmp_path: Path  # noqa: F811
                                                      ) -> None:
    fleet = sim_fleet(PROFILES, time_scale=TIME_SCALE)
    victim, healthy = fleet[1], [fleet[0], fleet[2]]
    victim.fault("storage_full")  # before staging: the model and binary cannot be pushed
    db, run_id = run_sweep(tmp_path, fleet, repeats=3)
    df = assert_nothing_lost(db, run_id)
    assert_healthy(df, healthy, per_phone=3)
    mine = df[df["device"] == victim.serial]
    assert len(mine) == 3 and not (mine["status"] == "ok").any()
    assert mine["error"].str.contains("space", case=False).all(), mine["error"].tolist()


def test_adb_server_restart(sim_fleet, tmp_path: Path) -> None:  # noqa: F811
    """The adb server of two phones is killed and started again mid-sweep (its phones come back
    as a lab's USB phones would); the phone on the other server is not affected."""
    fleet = sim_fleet(PROFILES, time_scale=TIME_SCALE)
    other = fleet.servers[0]
    own = AdbServer(free_port())
    own.start(timeout_s=60)
    try:
        moved = [fleet[0], fleet[1]]
        fleet.fleet.disconnect([h.running for h in moved])
        fleet.fleet.connect(own, [h.running for h in moved])
        for h in moved:
            h.server = own
        restarted = threading.Event()

        def restart() -> None:
            own.kill()
            own.start(timeout_s=60)
            fleet.fleet.connect(own, [h.running for h in moved])
            restarted.set()

        inject = AfterSamples(fleet[1].serial,
                              lambda: threading.Thread(target=restart, daemon=True).start())
        db, run_id = run_sweep(tmp_path, fleet, inject, delegates=("cpu", "xnnpack"), repeats=4)
        assert restarted.wait(60)
        df = assert_nothing_lost(db, run_id)
        assert_healthy(df, [fleet[2]], per_phone=8)
        assert other.port != own.port
        hit = df[df["device"].isin([h.serial for h in moved])]
        failed = hit[hit["status"] == "failed"]
        assert len(failed) >= 1
        assert failed["error"].str.contains(
            r"connect|refused|closed|offline|not found|server|EOF|reset", case=False,
            regex=True).all(), failed["error"].tolist()
        skipped = hit[hit["status"] == "skipped"]
        assert skipped["error"].str.contains("quarantin", case=False).all()
        for h in moved:  # retried, and each phone went on once its server was back
            mine = hit[hit["device"] == h.serial].sort_values("started_at")
            assert mine["status"].iloc[-1] == "ok", mine[["status", "error"]].to_string()
    finally:
        for h in fleet:
            if h.server is own:
                h.running.adb_servers.clear()
        own.kill()


# --------------------------------------------------------------------------- the controller

def _farm(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "farm", *args], cwd=ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)


def _committed(db: Path) -> tuple[str, int]:
    if not db.exists():
        return "", 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
            row = c.execute("SELECT run_id FROM runs").fetchone()
            if row is None:
                return "", 0
            n = c.execute("SELECT COUNT(*) FROM samples WHERE run_id=?", (row[0],)).fetchone()
            return str(row[0]), int(n[0])
    except sqlite3.OperationalError:
        return "", 0


def _snapshot(db: Path, run_id: str) -> set[tuple[Any, ...]]:
    with sqlite3.connect(db) as c:
        return set(c.execute("SELECT sample_id, case_id, repeat, status, started_at, ended_at, "
                             "avg_us FROM samples WHERE run_id=?", (run_id,)).fetchall())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL],
                         ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_interrupted_controller_then_resume(sim_fleet, tmp_path: Path,  # noqa: F811
                                            sig: signal.Signals) -> None:
    fleet = sim_fleet(("flagship", "midrange"), time_scale=20.0)
    write_configs(tmp_path, [h.adb_port for h in fleet], repeats=15, min_secs=2)
    db = tmp_path / "db.sqlite"
    env = {**os.environ, "FARM_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    args = ("--db", str(db), "run", "--matrix", str(tmp_path / "sweep.yaml"), "--devices-file",
            str(tmp_path / "devices.yaml"), "--out", str(tmp_path / "reports"), "--quiet")
    proc = _farm(*args, env=env)
    try:
        assert wait_until(lambda: _committed(db)[1] >= 4 or proc.poll() is not None, 90)
        run_id, n_before = _committed(db)
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert 4 <= n_before < 30
        proc.send_signal(sig)
        out = proc.communicate(timeout=60)[0].decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert "Traceback" not in out, out
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 1, out
        assert "interrupted" in out and "--resume" in out, out
        with sqlite3.connect(db) as c:
            status = c.execute("SELECT status FROM runs WHERE run_id=?", (run_id,)).fetchone()[0]
        assert status == "interrupted"
    before = _snapshot(db, run_id)
    assert len(before) >= n_before  # what was committed at the signal is still there
    assert len(before) < 30
    # whatever the controller had started on the phones is gone (killed by it, or by the
    # phone when the adb session closed)
    for h in fleet:
        assert wait_until(lambda h=h: not benchmark_procs(h), 10), h.profile

    r = CliRunner().invoke(main, [*args[:-1], "--resume", run_id, "--quiet"],
                           env={"FARM_CACHE": str(tmp_path / "cache")})
    assert r.exit_code == 0, r.output
    after = _snapshot(db, run_id)
    assert before <= after  # every earlier sample kept as it was
    df = assert_nothing_lost(db, run_id)
    assert len(df) == 30
    assert (df["status"] == "ok").all(), df[df["status"] != "ok"][["status", "error"]]
    with sqlite3.connect(db) as c:
        runs = c.execute("SELECT run_id, status FROM runs").fetchall()
    assert runs == [(run_id, "finished")]
