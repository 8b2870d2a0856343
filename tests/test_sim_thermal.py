"""The simulated phone's thermal model: heat under load, trip points capping cpufreq, recovery
when idle, and time scaling applied to all of it (unit level and through the shell)."""

from __future__ import annotations

import threading
import time

import pytest

from farm.benchmark_model import parse_output
from farm.probes import parse_dumpsys_thermalservice, parse_zone_temp
from farm.sim.profiles import load_profile, thread_speed
from farm.sim.thermal import Load, ManualClock, SimClock, ThermalModel
from tests.fixtures_simuser import (  # noqa: F401 - make_phone is a fixture
    BM,
    conv_model,
    install_benchmark_model,
    make_phone,
    push,
)


def model_for(name: str) -> tuple[ThermalModel, ManualClock]:
    clock = ManualClock()
    return ThermalModel(load_profile(name), clock), clock


def big_cores(name: str, n: int = 4) -> tuple[int, ...]:
    cpu = load_profile(name).cpu
    cpus = sorted(range(cpu.cpu_count), key=lambda c: (-cpu.cluster_of(c).rel_speed, -c))
    return tuple(cpus[:n])


@pytest.mark.parametrize("name", ["flagship", "midrange", "lowend", "old_armv7"])
def test_heat_rises_under_load_trips_and_recovers(name: str) -> None:
    th, clock = model_for(name)
    spec = th.spec
    idle = th.snapshot()
    assert idle.soc_c == pytest.approx(spec.ambient_c + spec.idle_power_w / spec.cooling_w_per_c)
    assert idle.cap_fraction == 1.0 and idle.status == 0
    cpu = th.cpu
    top = max(cpu.clusters, key=lambda c: c.rel_speed)
    assert th.scaling_max_freq_khz(top.cpus[0]) == top.max_freq_khz
    token = th.add_load(Load(cpus=big_cores(name)))
    temps = []
    caps = []
    for _ in range(600):
        clock.advance(1.0)
        snap = th.snapshot()
        temps.append(snap.soc_c)
        caps.append(snap.cap_fraction)
    hot = th.snapshot()
    # heat rises (monotonically until the first trip point caps the power)
    first_trip = next(i for i, c in enumerate(caps) if c < 1.0)
    assert temps[first_trip] > spec.trip_points[0].temp_c - spec.hysteresis_c
    assert all(b > a for a, b in zip(temps[:first_trip], temps[1:first_trip], strict=False))
    assert hot.soc_c > spec.trip_points[0].temp_c - spec.hysteresis_c
    assert hot.cap_fraction < 1.0
    assert th.scaling_max_freq_khz(top.cpus[0]) < top.max_freq_khz
    assert th.scaling_cur_freq_khz(big_cores(name)[0]) <= th.scaling_max_freq_khz(
        big_cores(name)[0])
    assert hot.status >= 1
    assert hot.battery_c > idle.battery_c and hot.battery_c < hot.soc_c
    zones = {z[0]: z[2] for z in hot.zones}
    assert all(t > spec.ambient_c for t in zones.values())
    th.remove_load(token)
    clock.advance(20 * spec.time_constant_s)
    cool = th.snapshot()
    assert cool.soc_c == pytest.approx(idle.soc_c, abs=0.2)
    assert cool.cap_fraction == 1.0 and cool.status == 0
    assert th.scaling_max_freq_khz(top.cpus[0]) == top.max_freq_khz


def test_hysteresis_keeps_the_cap_until_cooler() -> None:
    th, clock = model_for("flagship")
    trip = th.spec.trip_points[0]
    th.set_temperature(trip.temp_c + 0.1)
    assert th.cap_fraction() == trip.cap_fraction
    th.set_temperature(trip.temp_c - th.spec.hysteresis_c / 2)
    assert th.cap_fraction() == trip.cap_fraction  # still capped inside the hysteresis band
    th.set_temperature(trip.temp_c - th.spec.hysteresis_c - 0.1)
    assert th.cap_fraction() == 1.0


def test_gpu_load_heats_less_than_all_cores() -> None:
    a, ca = model_for("flagship")
    b, cb = model_for("flagship")
    a.add_load(Load(cpus=big_cores("flagship", 1), gpu=1.0))
    b.add_load(Load(cpus=tuple(range(8))))
    ca.advance(60)
    cb.advance(60)
    assert a.temperature_c() < b.temperature_c()


def test_cap_slows_the_cpu() -> None:
    cpu = load_profile("flagship").cpu
    assert thread_speed(cpu, 4, cap=0.5) < 0.6 * thread_speed(cpu, 4, cap=1.0)


def test_clock_scaling() -> None:
    fake = [100.0]
    clock = SimClock(50.0, monotonic=lambda: fake[0], boot_uptime_s=10.0, epoch_s=1000.0)
    fake[0] += 2.0
    assert clock.now_s() == pytest.approx(100.0)
    assert clock.uptime_s() == pytest.approx(110.0)
    assert clock.epoch_s() == pytest.approx(1100.0)
    assert clock.to_real_s(100.0) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        SimClock(0.0)
    real = SimClock(1000.0)
    t0 = time.monotonic()
    real.sleep(100.0)  # 100 simulated seconds: 0.1 s
    assert 0.09 <= time.monotonic() - t0 < 1.0


def test_sustained_run_heats_throttles_and_recovers(make_phone) -> None:  # noqa: F811
    """A 10-minute sustained run takes well under a second at time_scale=1000; a second shell
    samples the zones meanwhile, as farm's probes would."""
    phone = make_phone("flagship", time_scale=1000.0)
    install_benchmark_model(phone)
    push(phone, conv_model("fp32", size=56, channels=64, layers=8), "/data/local/tmp/big.tflite")
    zone = next(i for i, z in enumerate(phone.profile.thermal.zones) if z.type == "cpu-1-6-0")
    freq = "/sys/devices/system/cpu/cpu7/cpufreq"
    args = ("--graph=/data/local/tmp/big.tflite --num_threads=4 --warmup_min_secs=0 "
            "--num_runs=1")

    def sample() -> tuple[float, int, int, int]:
        _, out, _ = phone.run(f"cat /sys/class/thermal/thermal_zone{zone}/temp "
                              f"{freq}/scaling_max_freq {freq}/cpuinfo_max_freq")
        temp, smax, cmax = out.split()
        _, dump, _ = phone.run("dumpsys thermalservice")
        status = parse_dumpsys_thermalservice(dump)["status"]
        return parse_zone_temp(temp) or 0.0, int(smax), int(cmax), status

    cold_temp, cold_max, cpu_max, cold_status = sample()
    assert cold_max == cpu_max and cold_status == 0
    rc, out, err = phone.run(f"{BM} {args} --min_secs=5")
    cold = parse_output(out + err, rc)
    samples: list[tuple[float, int, int, int]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            samples.append(sample())
            stop.wait(0.02)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        t0 = time.monotonic()
        rc, out, err = phone.run(f"{BM} {args} --min_secs=600 --max_secs=600", timeout=60)
        real = time.monotonic() - t0
    finally:
        stop.set()
        poller.join(10)
    sustained = parse_output(out + err, rc)
    assert rc == 0 and sustained.success
    assert real < 5.0  # 600 simulated seconds
    assert sustained.count and sustained.avg_us
    assert sustained.count * sustained.avg_us / 1e6 == pytest.approx(600, rel=0.05)
    assert len(samples) >= 5
    temps = [s[0] for s in samples]
    assert max(temps) > cold_temp + 10
    assert min(s[1] for s in samples) < cpu_max  # scaling_max_freq capped below cpuinfo_max
    assert max(s[3] for s in samples) >= 1  # thermal status rose
    hot_temp, hot_max, _, _ = sample()
    rc, out, err = phone.run(f"{BM} {args} --min_secs=5")
    hot = parse_output(out + err, rc)
    assert hot.inference_avg_us and cold.inference_avg_us
    assert hot.inference_avg_us > 1.1 * cold.inference_avg_us  # throttled: slower
    assert sustained.max_us and sustained.min_us and sustained.max_us > 1.15 * sustained.min_us
    phone.run("sleep 1500")  # 1.5 s of real time
    back_temp, back_max, _, back_status = sample()
    assert back_temp < cold_temp + 1.5
    assert back_max == cpu_max and back_status == 0
