"""Fleet control, the `farm sim up` daemon and the `farm sim` click group: through click's
CliRunner, and one real `python -m farm sim` subprocess round trip against a real adb server."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from farm.errors import FarmError
from farm.sim import control
from farm.sim.cli import _parse_param, sim
from farm.sim.control import AdbServer, DaemonState, Fleet, free_port
from tests import fixtures_sim

# pytest fixtures (pytest_plugins is only allowed in the root conftest)
adb_server = fixtures_sim.adb_server
adb_servers = fixtures_sim.adb_servers

pytestmark = pytest.mark.timeout(180)

REPO = Path(__file__).resolve().parents[1]


def test_fleet_names_finds_and_reports_phones(tmp_path: Path) -> None:
    with Fleet(tmp_path, time_scale=10) as fleet:
        a = fleet.add("flagship")
        b = fleet.add("flagship")
        c = fleet.add("old_armv7")
        assert [p.name for p in fleet] == ["sim-flagship-1", "sim-flagship-2", "sim-old_armv7-1"]
        assert len({a.port, b.port, c.port}) == 3
        assert fleet.find(b.serial) is b
        assert fleet.find("sim-old_armv7-1") is c
        assert fleet.find(str(a.port)) is a
        with pytest.raises(FarmError, match="no simulated phone 'nope'; running: 127.0.0.1:"):
            fleet.find("nope")
        status = {d["name"]: d for d in fleet.status()}
        assert status["sim-old_armv7-1"]["sdk"] == "23"
        assert status["sim-flagship-1"]["simulated"] is True
        assert status["sim-flagship-1"]["adb_ports"] == []
        assert 15.0 < status["sim-flagship-1"]["temp_c"] < 60.0  # from the phone's thermal model
        a.adbd.inject("slow", delay_s=0.1)
        assert a.faults() == {"slow": {"delay_s": 0.1}}
        a.clear()
        assert a.faults() == {}
    with pytest.raises(FarmError, match="unknown fault kind 'meteor'; known: disconnect"):
        control.check_fault_kind("meteor")
    with pytest.raises(FarmError, match="time scale"):
        Fleet(tmp_path, time_scale=0)


def test_adb_server_reports_absent_serials(adb_server: AdbServer) -> None:
    assert adb_server.is_running()
    assert adb_server.state("127.0.0.1:1") == "absent"
    with pytest.raises(FarmError, match="still absent"):
        adb_server.wait_for_state("127.0.0.1:1", "device", timeout_s=0.2)


def test_daemon_state_round_trip_and_schema(tmp_path: Path) -> None:
    state = DaemonState(
        pid=1,
        status="ready",
        adb_port=5037,
        control_port=4000,
        token="t",
        phones=({"name": "sim-flagship-1", "serial": "127.0.0.1:1"},),
    )
    assert DaemonState.from_dict(state.to_dict()) == state
    with pytest.raises(FarmError, match="schema_version 99"):
        DaemonState.from_dict(dict(state.to_dict(), schema_version=99))
    assert control.read_state(tmp_path) is None
    (tmp_path / control.STATE_FILE).write_text("{not json")
    with pytest.raises(FarmError, match="corrupt simulator state"):
        control.read_state(tmp_path)


def test_fault_params_are_typed() -> None:
    assert _parse_param("after_bytes=1000") == ("after_bytes", 1000)
    assert _parse_param("delay_s=0.25") == ("delay_s", 0.25)
    assert _parse_param("mode=odd") == ("mode", "odd")
    with pytest.raises(click.BadParameter):
        _parse_param("novalue")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _cleanup(state_dir: Path, adb_port: int) -> None:
    with contextlib.suppress(FarmError):
        control.stop_daemon(state_dir)
    AdbServer(adb_port).kill()


def test_cli_up_status_fault_down(runner: CliRunner, tmp_path: Path) -> None:
    state_dir, port = tmp_path / "state", free_port()
    base = ["--state-dir", str(state_dir)]
    try:
        r = runner.invoke(
            sim,
            [
                *base,
                "up",
                "--adb-port",
                str(port),
                "--profile",
                "flagship",
                "--profile",
                "old_armv7",
                "--time-scale",
                "50",
            ],
            catch_exceptions=False,
        )
        assert r.exit_code == 0, r.output
        assert r.output.count("[SIMULATED]") == 2
        state = control.read_state(state_dir)
        assert state is not None and state.started_adb_server and state.status == "ready"
        assert os.getsid(state.pid) == state.pid  # detached in its own session
        serials = {p["name"]: p["serial"] for p in state.phones}
        server = AdbServer(port)
        assert {s: server.state(s) for s in serials.values()} == {
            s: "device" for s in serials.values()
        }

        r = runner.invoke(sim, [*base, "status"], catch_exceptions=False)
        assert r.exit_code == 0
        assert f"adb server port {port}" in r.output
        assert "sim-flagship-1" in r.output and "sim-old_armv7-1" in r.output
        r = runner.invoke(sim, [*base, "status", "--json"], catch_exceptions=False)
        status = json.loads(r.output)
        assert {p["adb_state"] for p in status["phones"]} == {"device"}

        flagship = serials["sim-flagship-1"]
        r = runner.invoke(sim, [*base, "fault", flagship, "unauthorized"], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        assert "unauthorized" in r.output
        assert server.state(flagship) == "unauthorized"
        r = runner.invoke(
            sim, [*base, "fault", "sim-flagship-1", "all", "--clear"], catch_exceptions=False
        )
        assert r.exit_code == 0, r.output
        assert server.state(flagship) == "device"
        r = runner.invoke(
            sim,
            [*base, "fault", flagship, "slow", "--param", "delay_s=0.01"],
            catch_exceptions=False,
        )
        assert r.exit_code == 0 and "faults: slow" in r.output

        # user errors: exit 2 for bad usage, exit 1 with a message for FarmErrors
        assert runner.invoke(sim, [*base, "fault", flagship, "all"]).exit_code == 2
        assert runner.invoke(sim, [*base, "fault", flagship, "meteor"]).exit_code == 2
        r = runner.invoke(sim, [*base, "fault", "sim-nope-9", "crash"])
        assert r.exit_code == 1 and "no simulated phone 'sim-nope-9'" in r.output
        r = runner.invoke(sim, [*base, "up", "--adb-port", str(port)])
        assert r.exit_code == 1 and "already running" in r.output

        r = runner.invoke(sim, [*base, "down"], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        assert "simulator stopped" in r.output
        assert not server.is_running()  # `up` started it, so `down` stopped it
        assert control.read_state(state_dir) is None
        r = runner.invoke(sim, [*base, "status"])
        assert r.exit_code == 1 and "no simulator is running" in r.output
    finally:
        _cleanup(state_dir, port)


def test_cli_up_reports_a_bad_profile(runner: CliRunner, tmp_path: Path) -> None:
    state_dir, port = tmp_path / "state", free_port()
    try:
        r = runner.invoke(
            sim,
            ["--state-dir", str(state_dir), "up", "--adb-port", str(port), "--profile", "pixel99"],
        )
        assert r.exit_code == 1
        assert "unknown simulator profile 'pixel99'; known: flagship" in r.output
        assert not AdbServer(port).is_running()
    finally:
        _cleanup(state_dir, port)


def _farm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "farm", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_farm_sim_up_then_adb_devices_in_real_processes(
    adb_server: AdbServer,
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "state"
    base = ["sim", "--state-dir", str(state_dir)]
    try:
        up = _farm(
            *base,
            "up",
            "--adb-port",
            str(adb_server.port),
            "--profile",
            "midrange",
            "--profile",
            "lowend",
        )
        assert up.returncode == 0, up.stdout + up.stderr
        state = control.read_state(state_dir)
        assert state is not None and not state.started_adb_server  # it reused the running one
        devices = subprocess.run(
            [str(adb_server.adb), "-P", str(adb_server.port), "devices"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
        for p in state.phones:
            assert f"{p['serial']}\tdevice" in devices
        status = _farm(*base, "status")
        assert status.returncode == 0 and "midrange" in status.stdout and "lowend" in status.stdout
        lowend = next(p["serial"] for p in state.phones if p["profile"] == "lowend")
        fault = _farm(*base, "fault", lowend, "offline")
        assert fault.returncode == 0, fault.stderr
        assert adb_server.state(lowend) == "offline"
        down = _farm(*base, "down")
        assert down.returncode == 0, down.stderr
        assert not control._is_our_daemon(state.pid)
        assert adb_server.is_running()  # not ours to stop
        assert all(adb_server.state(p["serial"]) == "absent" for p in state.phones)
    finally:
        with contextlib.suppress(FarmError):
            control.stop_daemon(state_dir)
