"""Every simulator fault, observed the way farm observes a phone: through the real adb server,
adbutils and the adb CLI."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import adbutils
import pytest

from farm.benchmark_model import parse_output
from farm.sim.benchmark import make_stub_binary
from farm.sim.profiles import load_profile
from tests import fixtures_sim
from tests.fixtures_sim import SimHandle

# pytest fixtures (pytest_plugins is only allowed in the root conftest)
adb_server = fixtures_sim.adb_server
adb_servers = fixtures_sim.adb_servers
sim_fleet = fixtures_sim.sim_fleet

pytestmark = pytest.mark.timeout(120)

T = "/data/local/tmp"
BM = f"{T}/benchmark_model"
MODEL = Path(__file__).resolve().parent / "data" / "models" / "tiny_fp32.tflite"
FAST = "--warmup_min_secs=0.1 --min_secs=0.2 --num_runs=20"


def _install_benchmark_model(handle: SimHandle) -> adbutils.AdbDevice:
    d = handle.device()
    abi = load_profile(handle.profile).abis[0]
    d.sync.push(make_stub_binary(abi), BM, mode=0o755)
    d.sync.push(MODEL.read_bytes(), f"{T}/tiny.tflite", mode=0o644)
    return d


def _pid_of(d: adbutils.AdbDevice, name: str) -> int | None:
    out = d.shell2("ps -A -o PID,NAME", v2=True, timeout=30).stdout
    for line in out.splitlines():
        if line.split()[-1:] == [name]:
            return int(line.split()[0])
    return None


def _wait(predicate, what: str, timeout_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_benchmark_model_runs_through_adb_and_farm_parses_it(sim_fleet) -> None:
    fleet = sim_fleet(["flagship", "old_armv7"], time_scale=100)
    for handle in fleet:
        d = _install_benchmark_model(handle)
        r = d.shell2(f"{BM} --graph={T}/tiny.tflite {FAST}", v2=True, timeout=60)
        assert r.returncode == 0, r.output
        parsed = parse_output(r.output, r.returncode)
        assert parsed.success, parsed.error
        assert parsed.avg_us is not None and parsed.avg_us > 0


def test_disconnect_mid_stream_then_the_server_reconnects(sim_fleet) -> None:
    (handle,) = sim_fleet(["flagship"])
    d = handle.device()
    payload = os.urandom(8 * 1024 * 1024)
    d.sync.push(payload, f"{T}/blob")
    handle.fault("disconnect", after_bytes=1_000_000)
    with pytest.raises((adbutils.AdbError, OSError, EOFError)):
        d.sync.read_bytes(f"{T}/blob")
    assert handle.running.adbd.stats.connections_dropped == 1
    # a one-shot fault: the adb server reconnects by itself and the phone is back
    handle.server.wait_for_state(handle.serial, "device", timeout_s=20)
    assert not handle.running.active("disconnect")
    assert handle.device().sync.read_bytes(f"{T}/blob") == payload

    # shell v2: the exit packet never comes, and the CLI says 255 (as OpenSSH does)
    handle.fault("disconnect", after_bytes=200_000)
    r = handle.adb("shell", f"cat {T}/blob")
    assert r.returncode == 255
    assert 190_000 <= len(r.stdout) < len(payload)  # cut after 200 kB of WRTEs (with framing)
    assert r.stdout == payload[: len(r.stdout)]
    handle.server.wait_for_state(handle.serial, "device", timeout_s=20)
    # exec: has no exit status: a cut stream looks like success, only shorter
    handle.fault("disconnect", after_bytes=200_000)
    r = handle.adb("exec-out", f"cat {T}/blob")
    assert r.returncode == 0
    assert 200_000 <= len(r.stdout) < len(payload)  # the cut comes after 200 kB


def test_disconnect_for_good_until_cleared(sim_fleet) -> None:
    (handle,) = sim_fleet(["midrange"])
    handle.fault("disconnect", times=0)  # every reconnection is dropped too
    handle.server.wait_for_state(handle.serial, ("offline", "absent"), timeout_s=20)
    r = handle.adb("shell", "echo hi")
    assert r.returncode != 0
    assert re.search(rb"device offline|not found", r.stderr)
    handle.clear("disconnect")
    assert handle.server.state(handle.serial) == "device"
    assert handle.adb("shell", "echo hi").stdout == b"hi\n"


def test_unauthorized(sim_fleet) -> None:
    (handle,) = sim_fleet(["flagship"])
    handle.fault("unauthorized")
    assert handle.server.state(handle.serial) == "unauthorized"
    with pytest.raises(adbutils.AdbError, match="unauthorized"):
        handle.device().shell2("echo hi", timeout=10)
    r = handle.adb("shell", "echo hi")
    assert r.returncode == 1
    assert b"device unauthorized" in r.stderr
    handle.clear("unauthorized")
    assert handle.server.state(handle.serial) == "device"
    assert handle.device().shell2("echo hi", v2=True).stdout == "hi\n"


def test_offline(sim_fleet) -> None:
    (handle,) = sim_fleet(["lowend"])
    handle.fault("offline")
    assert handle.server.state(handle.serial) == "offline"
    r = handle.adb("shell", "echo hi")
    assert r.returncode == 1
    assert b"device offline" in r.stderr
    with pytest.raises(adbutils.AdbError, match="offline"):
        handle.device().shell2("echo hi", timeout=10)
    handle.clear("offline")
    assert handle.device().shell2("echo hi", v2=True).stdout == "hi\n"


def test_storage_full(sim_fleet, tmp_path: Path) -> None:
    (handle,) = sim_fleet(["midrange"])
    d = handle.device()
    handle.fault("storage_full")
    df = d.shell2("df /data", v2=True).stdout.splitlines()
    assert df[1].split()[3] == "0"  # Available
    local = tmp_path / "model.tflite"
    local.write_bytes(os.urandom(300_000))
    r = handle.adb("push", str(local), f"{T}/model.tflite")
    assert r.returncode == 1
    assert b"remote write failed: No space left on device" in r.stderr
    with pytest.raises(adbutils.AdbError):
        d.sync.push(local.read_bytes(), f"{T}/model2.tflite")
    assert not d.sync.exists(f"{T}/model.tflite")  # adbd unlinks the partial file
    assert not d.sync.exists(f"{T}/model2.tflite")
    sh = d.shell2(f"echo x > {T}/f.txt", v2=True)
    assert sh.returncode != 0
    assert "No space left on device" in sh.stderr
    handle.clear("storage_full")
    assert handle.adb("push", str(local), f"{T}/model.tflite").returncode == 0


def test_benchmark_model_crash(sim_fleet) -> None:
    (handle,) = sim_fleet(["flagship"], time_scale=100)
    d = _install_benchmark_model(handle)
    handle.fault("crash")
    r = d.shell2(f"{BM} --graph={T}/tiny.tflite {FAST}", v2=True, timeout=60)
    assert r.returncode == 139  # 128 + SIGSEGV
    assert "Segmentation fault" in r.stderr  # mksh reports the signal
    assert "Inference timings" not in r.output
    parsed = parse_output(r.output, r.returncode)
    assert not parsed.success
    legacy = d.shell2(f"{BM} --graph={T}/tiny.tflite {FAST}", timeout=60)  # `; echo X4EXIT:$?`
    assert legacy.returncode == 139
    assert "Segmentation fault" in legacy.output
    cli = handle.adb("shell", f"{BM} --graph={T}/tiny.tflite {FAST}")
    assert cli.returncode == 139
    handle.clear("crash")
    ok = d.shell2(f"{BM} --graph={T}/tiny.tflite {FAST}", v2=True, timeout=60)
    assert ok.returncode == 0 and parse_output(ok.output, 0).success


def test_benchmark_model_hang_then_kill(sim_fleet) -> None:
    (handle,) = sim_fleet(["flagship"], time_scale=100)
    d = _install_benchmark_model(handle)
    handle.fault("hang")
    result: list[adbutils.ShellReturn] = []
    runner = threading.Thread(
        target=lambda: result.append(
            d.shell2(f"{BM} --graph={T}/tiny.tflite {FAST}", v2=True, timeout=60)
        )
    )
    runner.start()
    try:
        _wait(lambda: _pid_of(d, "benchmark_model") is not None, "benchmark_model in ps")
        pid = _pid_of(d, "benchmark_model")
        assert d.shell2(f"kill {pid}", v2=True).returncode == 0
    finally:
        runner.join(30)
    assert result and result[0].returncode == 143  # 128 + SIGTERM
    assert not parse_output(result[0].output, 143).success
    assert _pid_of(d, "benchmark_model") is None


def test_benchmark_model_hang_ends_when_the_session_hangs_up(sim_fleet) -> None:
    (handle,) = sim_fleet(["midrange"], time_scale=100)
    d = _install_benchmark_model(handle)
    handle.fault("hang")
    with pytest.raises(adbutils.AdbTimeout):
        d.shell2(f"{BM} --graph={T}/tiny.tflite {FAST}", v2=True, timeout=2)
    # adbutils closed its socket, the server sent CLSE and adbd SIGHUPed the session
    _wait(lambda: _pid_of(d, "benchmark_model") is None, "benchmark_model to be gone")


def test_slow_transport(sim_fleet) -> None:
    (handle,) = sim_fleet(["flagship"])
    d = handle.device()
    handle.fault("slow", delay_s=0.4)  # every packet the phone sends waits 0.4 s
    assert handle.running.faults() == {"slow": {"delay_s": 0.4}}
    with pytest.raises(adbutils.AdbTimeout):
        d.shell2("echo hi", v2=True, timeout=0.1)
    assert d.shell2("echo still works", v2=True, timeout=30).stdout == "still works\n"
    handle.clear("slow")
    assert d.shell2("echo hi", v2=True, timeout=5).stdout == "hi\n"
