"""The environment sampler: reads a device's sensors at about 1 Hz while a sample runs.

It runs on its own thread and talks to the device over its own channel (every adb shell is a
new connection to the adb server), so the benchmark's own stream is never blocked. Its cost
(points taken and seconds spent reading) is recorded with each sample, because reading
sensors on a phone costs the phone CPU time too. `summarize` is pure.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from farm.errors import DeviceError
from farm.probes import Probe

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Point:
    """One reading, `t_s` seconds after the sample started."""

    t_s: float
    probe: Probe

    def to_dict(self) -> dict[str, Any]:
        """The series format stored in env_json["series"]["points"]."""
        p = self.probe
        return {"t_s": round(self.t_s, 3), "temps_c": dict(p.temps_c),
                "thermal_status": p.thermal_status, "cur_freq_khz": list(p.cur_freq_khz),
                "max_freq_khz": list(p.max_freq_khz), "battery_level": p.battery_level,
                "battery_temp_c": p.battery_temp_c, "charging": p.charging,
                "vmrss_kb": p.vmrss_kb, "vmhwm_kb": p.vmhwm_kb}


@dataclass(frozen=True, slots=True)
class SeriesSummary:
    """What the sample's environment did from start to end (pure summary of the readings)."""

    points: int
    temp_max_c: float | None
    thermal_status_max: int | None
    freq_cap_min: float | None  # min over readings of scaling_max / cpuinfo_max
    charging_states: tuple[str, ...]  # distinct charging states seen, in order
    vmrss_max_kb: int | None
    vmhwm_max_kb: int | None


def _max(values: Sequence[float | int | None]) -> Any:
    vals = [v for v in values if v is not None]
    return max(vals) if vals else None


def summarize(before: Probe, after: Probe, points: Sequence[Point]) -> SeriesSummary:
    """Fold the readings before, during and after a sample into its extremes (pure)."""
    probes = [before, *(p.probe for p in points), after]
    caps = [p.freq_cap_ratio for p in probes if p.freq_cap_ratio is not None]
    states: list[str] = []
    for p in probes:
        if p.charging and (not states or states[-1] != p.charging):
            states.append(p.charging)
    return SeriesSummary(
        points=len(points), temp_max_c=_max([p.max_temp_c for p in probes]),
        thermal_status_max=_max([p.thermal_status for p in probes]),
        freq_cap_min=min(caps) if caps else None, charging_states=tuple(states),
        vmrss_max_kb=_max([p.vmrss_kb for p in probes]),
        vmhwm_max_kb=_max([p.vmhwm_kb for p in probes]))


@dataclass
class Sampler:
    """Context manager: `with Sampler(read, hz) as s: run(); s.points, s.cost_s`.

    `read` returns one Probe; a failing read is logged and counted, never raised. hz <= 0
    disables sampling (no thread is started).
    """

    read: Callable[[], Probe]
    hz: float = 1.0
    monotonic: Callable[[], float] = time.monotonic
    points: list[Point] = field(default_factory=list)
    cost_s: float = 0.0
    errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _t0: float = 0.0

    def __enter__(self) -> Sampler:
        self._t0 = self.monotonic()
        if self.hz > 0:
            self._thread = threading.Thread(target=self._loop, name="farm-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        period = 1.0 / self.hz
        next_at = self._t0 + period
        while not self._stop.wait(max(0.0, next_at - self.monotonic())):
            start = self.monotonic()
            try:
                probe = self.read()
            except DeviceError as e:
                self.errors += 1
                log.debug("sampler: %s", e)
                probe = None
            end = self.monotonic()
            self.cost_s += end - start
            if probe is not None and not self._stop.is_set():
                self.points.append(Point(t_s=start - self._t0, probe=probe))
            next_at = max(next_at + period, end)
