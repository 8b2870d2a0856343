"""A simulated phone's clock and its lumped thermal model (heat, trip points, cpufreq caps).

No I/O. The clock runs `time_scale` times faster than the host's monotonic clock and every
simulated time the phone exposes (uptime, date, /proc/uptime, thermal evolution, benchmark
latencies) derives from it. The thermal model integrates C dT/dt = P - G (T - ambient) lazily, up
to the current simulated time, whenever someone looks at it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from farm.sim.profiles import CpuSpec, GpuSpec, NnapiSpec, Profile, ThermalSpec, cap_freq_khz

THERMAL_STATUS_NAMES = ("NONE", "LIGHT", "MODERATE", "SEVERE", "CRITICAL", "EMERGENCY",
                        "SHUTDOWN")
_MAX_STEP_S = 0.5  # integration step (simulated seconds); caps change only at step boundaries


class Interrupted(Exception):  # noqa: N818 - it is a signal, not a failure
    """A simulated sleep was interrupted (the sleeping process got a signal)."""


class SimClock:
    """Simulated time: `time_scale` simulated seconds per real second.

    `now_s()` is simulated seconds since the phone started; `uptime_s()` adds the uptime the
    phone had at that moment; `epoch_s()` is its wall clock (starting at the host's).
    """

    def __init__(self, time_scale: float = 1.0, *, boot_uptime_s: float = 4 * 3600 + 1234.56,
                 epoch_s: float | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        self.time_scale = float(time_scale)
        self._monotonic = monotonic
        self._t0 = monotonic()
        self._boot_uptime_s = boot_uptime_s
        self._epoch0 = time.time() if epoch_s is None else epoch_s

    def now_s(self) -> float:
        """Simulated seconds since the phone object was created."""
        return (self._monotonic() - self._t0) * self.time_scale

    def uptime_s(self) -> float:
        """Seconds since the simulated boot (/proc/uptime)."""
        return self._boot_uptime_s + self.now_s()

    def epoch_s(self) -> float:
        """The phone's wall clock (`date`)."""
        return self._epoch0 + self.now_s()

    def to_real_s(self, sim_s: float) -> float:
        """Real seconds that `sim_s` simulated seconds take."""
        return sim_s / self.time_scale

    def sleep(self, sim_s: float, cancel: threading.Event | None = None) -> None:
        """Sleep for `sim_s` simulated seconds; raise Interrupted if `cancel` gets set."""
        self.sleep_until(self.now_s() + sim_s, cancel)

    def sleep_until(self, sim_t: float, cancel: threading.Event | None = None) -> None:
        """Sleep until simulated time `sim_t`; raise Interrupted if `cancel` gets set."""
        while True:
            remaining = self.to_real_s(sim_t - self.now_s())
            if cancel is not None and cancel.is_set():
                raise Interrupted
            if remaining <= 0:
                return
            if cancel is None:
                time.sleep(remaining)
            elif cancel.wait(remaining):
                raise Interrupted


class ManualClock(SimClock):
    """A clock that only moves when told to (for deterministic tests)."""

    def __init__(self, time_scale: float = 1.0) -> None:
        self._now = 0.0
        super().__init__(time_scale, monotonic=lambda: 0.0, epoch_s=1.7e9)

    def now_s(self) -> float:
        return self._now

    def advance(self, sim_s: float) -> None:
        """Move simulated time forward."""
        self._now += sim_s

    def sleep_until(self, sim_t: float, cancel: threading.Event | None = None) -> None:
        if cancel is not None and cancel.is_set():
            raise Interrupted
        if sim_t > self._now:
            self._now = sim_t


@dataclass(frozen=True, slots=True)
class Load:
    """What a running workload keeps busy: CPU numbers, and GPU/NPU utilisation (0..1)."""

    cpus: tuple[int, ...] = ()
    gpu: float = 0.0
    npu: float = 0.0


@dataclass(frozen=True, slots=True)
class ThermalSnapshot:
    """The thermal state at one simulated instant."""

    t_s: float
    soc_c: float
    cap_fraction: float  # 1.0 = no thermal cap
    status: int  # 0..6 (AThermalStatus)
    zones: tuple[tuple[str, int, float], ...]  # (type, hal_type, temp_c)
    battery_c: float
    busy_cpus: frozenset[int]
    gpu_busy: bool
    npu_busy: bool


class ThermalModel:
    """Heat rises under load and falls when idle; trip points cap cpufreq (thread-safe)."""

    def __init__(self, profile: Profile, clock: SimClock, *,
                 start_temp_c: float | None = None) -> None:
        self.spec: ThermalSpec = profile.thermal
        self.cpu: CpuSpec = profile.cpu
        self.gpu: GpuSpec | None = profile.gpu
        self.nnapi: NnapiSpec = profile.nnapi
        self.battery_factor = profile.battery.temp_factor
        self.clock = clock
        self._lock = threading.RLock()
        self._t = clock.now_s()
        idle_rise = self.spec.idle_power_w / self.spec.cooling_w_per_c
        self._temp = self.spec.ambient_c + idle_rise if start_temp_c is None else start_temp_c
        self._tripped = 0  # number of trip points currently active
        # (simulated time, trip points active) at every change: the truth tests compare with
        self.trip_log: list[tuple[float, int]] = []
        self._loads: dict[int, Load] = {}
        self._next_token = 1
        self._update_trips()

    # -- loads -------------------------------------------------------------------------------

    def add_load(self, load: Load) -> int:
        """Start a workload now; returns a token for `remove_load`."""
        with self._lock:
            self._advance(self.clock.now_s())
            token = self._next_token
            self._next_token += 1
            self._loads[token] = load
            return token

    def remove_load(self, token: int) -> None:
        """End a workload now."""
        with self._lock:
            self._advance(self.clock.now_s())
            self._loads.pop(token, None)

    def set_temperature(self, temp_c: float) -> None:
        """Force the SoC temperature (tests, `farm sim` tooling)."""
        with self._lock:
            self._advance(self.clock.now_s())
            self._temp = temp_c
            self._update_trips()

    # -- physics -----------------------------------------------------------------------------

    def _power_w(self) -> float:
        p = self.spec.idle_power_w
        frac = self._cap()
        busy: set[int] = set()
        gpu = npu = 0.0
        for load in self._loads.values():
            busy.update(load.cpus)
            gpu = max(gpu, load.gpu)
            npu = max(npu, load.npu)
        for cpu in busy:
            if cpu < self.cpu.cpu_count:
                cl = self.cpu.cluster_of(cpu)
                p += cl.power_w * frac ** self.spec.power_exponent
        if self.gpu is not None:
            p += gpu * self.gpu.power_w * frac ** self.spec.power_exponent
        p += npu * self.nnapi.power_w
        return p

    def _cap(self) -> float:
        if self._tripped == 0:
            return 1.0
        return min(tp.cap_fraction for tp in self.spec.trip_points[: self._tripped])

    def _update_trips(self) -> None:
        before = self._tripped
        self._update_trip_count()
        if self._tripped != before:
            self.trip_log.append((self._t, self._tripped))

    def _update_trip_count(self) -> None:
        trips = self.spec.trip_points
        # rise: every trip point at or below the temperature; fall: with hysteresis
        while self._tripped < len(trips) and self._temp >= trips[self._tripped].temp_c:
            self._tripped += 1
        while (self._tripped > 0
               and self._temp < trips[self._tripped - 1].temp_c - self.spec.hysteresis_c):
            self._tripped -= 1

    def _advance(self, t: float) -> None:
        c = self.spec.heat_capacity_j_per_c
        g = self.spec.cooling_w_per_c
        while self._t < t:
            dt = min(_MAX_STEP_S, t - self._t)
            target = self.spec.ambient_c + self._power_w() / g
            self._temp = target + (self._temp - target) * math.exp(-dt * g / c)
            self._t += dt
            self._update_trips()

    # -- observation -------------------------------------------------------------------------

    def snapshot(self) -> ThermalSnapshot:
        """Advance to now and describe the state."""
        with self._lock:
            self._advance(self.clock.now_s())
            amb = self.spec.ambient_c
            rise = self._temp - amb
            zones = tuple((z.type, z.hal_type, amb + rise * z.factor + z.offset_c)
                          for z in self.spec.zones)
            busy: set[int] = set()
            gpu = npu = False
            for load in self._loads.values():
                busy.update(load.cpus)
                gpu = gpu or load.gpu > 0
                npu = npu or load.npu > 0
            return ThermalSnapshot(
                t_s=self._t, soc_c=self._temp, cap_fraction=self._cap(),
                status=self._status(self._temp), zones=zones,
                battery_c=amb + rise * self.battery_factor,
                busy_cpus=frozenset(busy), gpu_busy=gpu, npu_busy=npu,
            )

    def _status(self, temp: float) -> int:
        status = 0
        for i, threshold in enumerate(self.spec.status_thresholds_c):
            if temp >= threshold:
                status = i + 1
        return status

    def cap_fraction(self) -> float:
        """Current thermal cap on every cluster's frequency (1.0 = none)."""
        with self._lock:
            self._advance(self.clock.now_s())
            return self._cap()

    def scaling_max_freq_khz(self, cpu: int) -> int:
        """scaling_max_freq of `cpu`: the highest available frequency under the cap."""
        cl = self.cpu.cluster_of(cpu)
        return cap_freq_khz(cl.freqs_khz, self.cap_fraction())

    def scaling_cur_freq_khz(self, cpu: int) -> int:
        """scaling_cur_freq: the capped max when busy, a low frequency when idle."""
        snap = self.snapshot()
        cl = self.cpu.cluster_of(cpu)
        if cpu in snap.busy_cpus:
            return cap_freq_khz(cl.freqs_khz, snap.cap_fraction)
        # schedutil parks idle cores low; the second step looks like background activity
        return cl.freqs_khz[min(1, len(cl.freqs_khz) - 1)]

    def temperature_c(self) -> float:
        """SoC temperature now."""
        return self.snapshot().soc_c
