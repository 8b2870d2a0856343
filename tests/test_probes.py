"""Sensor probes and the sampler: pure parsers against golden files, the taint rules, the
sampler thread, and the cooldown gate's zone choice."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from farm import probes, runner
from farm.devices import ShellResult
from farm.models import DelegateSpec
from farm.sampler import Point, Sampler, summarize

DATA = Path(__file__).parent / "data" / "probes"


def body(name: str) -> str:
    return (DATA / name).read_text().split("# ---\n", 1)[1]


@pytest.mark.parametrize("name", ["sim_midrange", "sim_old_armv7"])
def test_discovery_and_tick_match_golden(name: str) -> None:
    want = json.loads((DATA / f"{name}.expected.json").read_text())
    zones, cpus = probes.parse_discovery(body(f"{name}_discover.txt"))
    assert [list(z) for z in zones] == want["zones"] and list(cpus) == want["cpus"]
    sensors = probes.SensorMap(zones=zones, cpus=cpus, has_dumpsys=True)
    got = probes.parse_tick(body(f"{name}_tick.txt"), sensors).to_dict()
    assert got == want["probe"]


def test_tick_with_missing_files_throttling_and_process_memory() -> None:
    sensors = probes.SensorMap(zones=(("cpu", "/z0/temp"), ("skin", "/z1/temp")), cpus=(0, 1),
                               has_dumpsys=True)
    cpu0 = "/sys/devices/system/cpu/cpu0/cpufreq"
    text = ("==> /proc/uptime <==\n100.50 200.0\n==> /z0/temp <==\n47000\n"
            f"==> {cpu0}/scaling_cur_freq <==\n1200000\n"
            f"==> {cpu0}/scaling_max_freq <==\n1500000\n"
            f"==> {cpu0}/cpuinfo_max_freq <==\n2000000\n"
            "@@mem\nName:\tbenchmark_model\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\n"
            "VmHWM:\t    1000 kB\nVmRSS:\t     900 kB\n"
            "@@thermal\nThermal Status: 2\n@@battery\n  AC powered: true\n  USB powered: false\n"
            "  level: 55\n  temperature: 341\n")
    p = probes.parse_tick(text, sensors)
    # the skin zone and cpu1 are missing: absent, not invented
    assert p.temps_c == (("cpu", 47.0),) and p.cur_freq_khz == (1200000,)
    assert p.freq_cap_ratio == pytest.approx(0.75) and p.thermal_status == 2
    assert (p.vmrss_kb, p.vmhwm_kb) == (40960, 51200) and p.uptime_s == 100.5
    assert (p.charging, p.battery_level, p.battery_temp_c) == ("ac", 55.0, 34.1)


def test_tick_argv_quotes_every_path() -> None:
    sensors = probes.SensorMap(zones=(("x", "/sys/class/thermal/thermal_zone0/temp"),),
                               cpus=(), has_dumpsys=True)
    argv = probes.tick_argv(sensors, "bench;rm -rf /")
    assert argv[:2] == ["sh", "-c"] and "'bench;rm -rf /'" in argv[2]


def test_gate_uses_the_chosen_zones() -> None:
    idle = probes.Probe(has_sensors=True, temps_c=(("cpu", 30.0), ("battery", 29.0)),
                        thermal_status=0)
    base = probes.Baseline(temp_c=idle.max_temp_c, probe=idle)
    warm_cpu = probes.Probe(has_sensors=True, temps_c=(("cpu", 36.0), ("battery", 30.0)),
                            thermal_status=0)
    assert probes.gate_ready(warm_cpu, base, 3.0)[0] is False
    assert probes.gate_ready(warm_cpu, base, 3.0, zones=("batt*",)) == (True, "cool")
    hot_status = probes.Probe(has_sensors=True, temps_c=(("cpu", 30.0),), thermal_status=1)
    assert probes.gate_ready(hot_status, base, 3.0) == (False, "thermal status 1")
    assert probes.gate_ready(probes.Probe(has_sensors=False), base, 3.0) == (True, "no sensors")


def _probe(**kw: object) -> probes.Probe:
    kw.setdefault("has_sensors", True)
    return probes.Probe(**kw)  # type: ignore[arg-type]


CPU = DelegateSpec(name="cpu", provider="")
OK = ShellResult(("bm",), 0, "")


@pytest.mark.parametrize(("points", "idle_cap", "gate", "flag"), [
    # throttled in the middle, cool at both ends: only the sampler sees it
    ([_probe(thermal_status=0), _probe(thermal_status=2)], None, "cool", "throttled"),
    # capped below the idle cap mid-sample
    ([_probe(max_freq_khz=(1_500_000,), hw_max_freq_khz=(2_000_000,))], 1.0, "cool",
     "freq_capped"),
    ([_probe(charging="none")], None, "cool", "charging_changed"),
    ([], None, "gate timeout after 120 s: 41.0 °C > baseline 30.0 + 3 °C", "started_hot"),
])
def test_taint_rules_see_the_whole_series(points, idle_cap, gate, flag) -> None:
    before = after = _probe(thermal_status=0, charging="usb",
                            max_freq_khz=(2_000_000,), hw_max_freq_khz=(2_000_000,))
    series = summarize(before, after, [Point(t_s=i + 1.0, probe=p) for i, p in enumerate(points)])
    flags = runner.classify({"success": True}, CPU, OK, before, after, gate, series, idle_cap)
    assert flag in flags and set(flags) <= set(runner.TAINTING_FLAGS) | {flag}


def test_a_device_capped_at_rest_is_not_flagged() -> None:
    capped = _probe(max_freq_khz=(1_800_000,), hw_max_freq_khz=(2_000_000,))
    series = summarize(capped, capped, [Point(1.0, capped)])
    assert runner.classify({"success": True}, CPU, OK, capped, capped, "cool", series,
                           idle_cap=0.9) == ()


def test_summary_keeps_extremes_and_memory() -> None:
    a = _probe(temps_c=(("cpu", 30.0),), vmhwm_kb=10, vmrss_kb=9, charging="usb")
    b = _probe(temps_c=(("cpu", 44.5),), thermal_status=1, vmhwm_kb=50, vmrss_kb=40,
               charging="usb")
    s = summarize(a, a, [Point(1.0, b)])
    assert (s.temp_max_c, s.thermal_status_max, s.vmhwm_max_kb, s.vmrss_max_kb, s.points) == \
        (44.5, 1, 50, 40, 1)
    assert s.charging_states == ("usb",)


def test_sampler_reads_at_its_rate_and_counts_cost() -> None:
    reads = threading.Semaphore(0)

    def read() -> probes.Probe:
        reads.release()
        return _probe(thermal_status=0)

    with Sampler(read, hz=50.0) as s:
        for _ in range(5):
            assert reads.acquire(timeout=5)
    assert len(s.points) >= 4 and s.cost_s >= 0.0
    assert all(b.t_s > a.t_s for a, b in zip(s.points, s.points[1:], strict=False))
    with Sampler(read, hz=0.0) as off:
        pass
    assert off.points == [] and off._thread is None
