"""Environment probes: thermal zones, cpufreq, thermal status and battery, per sample.

The parsers are pure functions over the text Android (or Linux) prints. `discover` and `sample`
read through the `Device` protocol only (sysfs files and `dumpsys`), so phones and the host
share one code path. A device without sensors yields a probe with `has_sensors=False`: farm
records "no sensors" instead of inventing numbers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from farm.devices import Device
from farm.errors import DeviceError

THERMAL_ROOT = "/sys/class/thermal"
CPU_ROOT = "/sys/devices/system/cpu"
PROBE_TIMEOUT_S = 10.0

# Zone types that describe the SoC or the skin, in order of preference for the cooldown gate.
PREFERRED_ZONES = ("cpu", "soc", "ap", "skin", "battery")


@dataclass(frozen=True, slots=True)
class SensorMap:
    """Where a device's sensors are, learned once per run."""

    zones: tuple[tuple[str, str], ...] = ()  # (zone type, path of its temp file)
    cpus: tuple[int, ...] = ()  # CPUs with a cpufreq directory
    has_dumpsys: bool = False


@dataclass(frozen=True, slots=True)
class Probe:
    """One reading of a device's environment."""

    has_sensors: bool
    temps_c: tuple[tuple[str, float], ...] = ()  # (zone type, °C)
    thermal_status: int | None = None  # Android: 0 NONE .. 6 SHUTDOWN
    battery_level: float | None = None
    battery_temp_c: float | None = None
    charging: str = ""  # "ac", "usb", "wireless", "none", "" unknown
    cur_freq_khz: tuple[int, ...] = ()
    max_freq_khz: tuple[int, ...] = ()  # scaling_max_freq (a thermal cap lowers it)
    hw_max_freq_khz: tuple[int, ...] = ()  # cpuinfo_max_freq

    @property
    def max_temp_c(self) -> float | None:
        """The hottest zone, or the battery if there are no zones."""
        temps = [t for _, t in self.temps_c]
        if not temps and self.battery_temp_c is not None:
            return self.battery_temp_c
        return max(temps) if temps else None

    @property
    def freq_cap_ratio(self) -> float | None:
        """min(scaling_max / cpuinfo_max) over CPUs: 1.0 = uncapped."""
        pairs = [(m, h) for m, h in zip(self.max_freq_khz, self.hw_max_freq_khz, strict=False)
                 if h > 0]
        return min(m / h for m, h in pairs) if pairs else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"has_sensors": self.has_sensors, "temps_c": dict(self.temps_c),
                "thermal_status": self.thermal_status, "battery_level": self.battery_level,
                "battery_temp_c": self.battery_temp_c, "charging": self.charging,
                "cur_freq_khz": list(self.cur_freq_khz), "max_freq_khz": list(self.max_freq_khz),
                "hw_max_freq_khz": list(self.hw_max_freq_khz), "max_temp_c": self.max_temp_c,
                "freq_cap_ratio": self.freq_cap_ratio}


# ----------------------------------------------------------------------------- pure parsers

def parse_zone_temp(text: str) -> float | None:
    """A thermal_zone*/temp value in °C (sysfs is milli-°C; some vendors print °C)."""
    try:
        v = float(text.strip().split()[0])
    except (ValueError, IndexError):
        return None
    # Values above 1000 are milli-degrees; a few old kernels report plain degrees or deci-degrees.
    if abs(v) >= 1000:
        return v / 1000.0
    if abs(v) >= 200:
        return v / 10.0
    return v


_BATTERY_RE = re.compile(r"^\s*([A-Za-z ]+?):\s*(.+?)\s*$")


def parse_dumpsys_battery(text: str) -> dict[str, Any]:
    """`dumpsys battery`: level, temperature (tenths of °C), charging source."""
    raw: dict[str, str] = {}
    for line in text.splitlines():
        m = _BATTERY_RE.match(line)
        if m:
            raw.setdefault(m.group(1).strip().lower(), m.group(2))
    out: dict[str, Any] = {}
    if "level" in raw:
        try:
            out["level"] = float(raw["level"])
        except ValueError:
            pass
    if "temperature" in raw:
        try:
            out["temp_c"] = float(raw["temperature"]) / 10.0
        except ValueError:
            pass
    sources = [s for s, key in (("ac", "ac powered"), ("usb", "usb powered"),
                                ("wireless", "wireless powered"), ("dock", "dock powered"))
               if raw.get(key, "").lower() == "true"]
    if any(k.endswith("powered") for k in raw):
        out["charging"] = "+".join(sources) if sources else "none"
    return out


_STATUS_RE = re.compile(r"Thermal Status:\s*(\d+)")
_HAL_TEMP_RE = re.compile(
    r"Temperature\{mValue=([-\d.eE+]+),\s*mType=(-?\d+),\s*mName=([^,}]*),\s*mStatus=(-?\d+)")


def parse_dumpsys_thermalservice(text: str) -> dict[str, Any]:
    """`dumpsys thermalservice`: status and the HAL's current temperatures."""
    out: dict[str, Any] = {}
    m = _STATUS_RE.search(text)
    if m:
        out["status"] = int(m.group(1))
    temps: dict[str, float] = {}
    section = text.split("Current temperatures from HAL:", 1)
    body = section[1].split("Current cooling devices", 1)[0] if len(section) == 2 else ""
    for t in _HAL_TEMP_RE.finditer(body):
        temps.setdefault(t.group(3).strip(), float(t.group(1)))
    if temps:
        out["temps_c"] = temps
    return out


def parse_freq(text: str) -> int | None:
    """A cpufreq file (kHz)."""
    try:
        return int(text.strip().split()[0])
    except (ValueError, IndexError):
        return None


def cluster_cpus(hw_max_khz: Mapping[int, int]) -> list[tuple[tuple[int, ...], int]]:
    """Group CPUs by cpuinfo_max_freq, fastest cluster first: [((cpus), max_khz), ...]."""
    groups: dict[int, list[int]] = {}
    for cpu, khz in sorted(hw_max_khz.items()):
        groups.setdefault(khz, []).append(cpu)
    return [(tuple(cpus), khz) for khz, cpus in sorted(groups.items(), reverse=True)]


def big_core_mask(clusters: Sequence[tuple[tuple[int, ...], int]], threads: int) -> str:
    """A taskset hex mask with `threads` CPUs taken from the fastest clusters first."""
    chosen: list[int] = []
    for cpus, _ in clusters:
        for c in sorted(cpus, reverse=True):
            if len(chosen) < threads:
                chosen.append(c)
    return format(sum(1 << c for c in chosen), "x") if chosen else ""


# ----------------------------------------------------------------------------- device reads

def _read(device: Device, path: str) -> str | None:
    try:
        return device.read_text(path)
    except DeviceError:
        return None


def discover(device: Device, *, cpu_count: int, android: bool) -> SensorMap:
    """Find thermal zones (by type, never by index) and cpufreq CPUs."""
    zones = []
    misses = 0
    # Zone numbering can have gaps; stop after a few consecutive missing zones.
    for i in range(256):
        kind = _read(device, f"{THERMAL_ROOT}/thermal_zone{i}/type")
        if kind is None:
            misses += 1
            if misses >= 3:
                break
            continue
        misses = 0
        zones.append((kind.strip(), f"{THERMAL_ROOT}/thermal_zone{i}/temp"))
    cpus = tuple(c for c in range(max(cpu_count, 1))
                 if _read(device, f"{CPU_ROOT}/cpu{c}/cpufreq/cpuinfo_max_freq") is not None)
    return SensorMap(zones=tuple(zones), cpus=cpus, has_dumpsys=android)


def sample(device: Device, sensors: SensorMap) -> Probe:
    """Read every known sensor once."""
    temps = []
    for kind, path in sensors.zones:
        text = _read(device, path)
        value = parse_zone_temp(text) if text is not None else None
        if value is not None:
            temps.append((kind, value))
    cur, mx, hw = [], [], []
    for c in sensors.cpus:
        base = f"{CPU_ROOT}/cpu{c}/cpufreq"
        vals = [parse_freq(_read(device, f"{base}/{n}") or "")
                for n in ("scaling_cur_freq", "scaling_max_freq", "cpuinfo_max_freq")]
        if all(v is not None for v in vals):
            cur.append(int(vals[0] or 0))
            mx.append(int(vals[1] or 0))
            hw.append(int(vals[2] or 0))
    status = None
    battery: dict[str, Any] = {}
    if sensors.has_dumpsys:
        r = device.shell(["dumpsys", "thermalservice"], timeout_s=PROBE_TIMEOUT_S)
        if r.returncode == 0:
            ts = parse_dumpsys_thermalservice(r.stdout)
            status = ts.get("status")
            if not temps:
                temps = sorted(ts.get("temps_c", {}).items())
        r = device.shell(["dumpsys", "battery"], timeout_s=PROBE_TIMEOUT_S)
        if r.returncode == 0:
            battery = parse_dumpsys_battery(r.stdout)
    has = bool(temps or cur or status is not None or battery)
    return Probe(has_sensors=has, temps_c=tuple(temps), thermal_status=status,
                 battery_level=battery.get("level"), battery_temp_c=battery.get("temp_c"),
                 charging=battery.get("charging", ""), cur_freq_khz=tuple(cur),
                 max_freq_khz=tuple(mx), hw_max_freq_khz=tuple(hw))


@dataclass(frozen=True, slots=True)
class Baseline:
    """A device's idle state at the start of a run, for the cooldown gate."""

    temp_c: float | None
    probe: Probe = field(default_factory=lambda: Probe(has_sensors=False))


def gate_ready(probe: Probe, baseline: Baseline, delta_c: float) -> tuple[bool, str]:
    """Is the device cool enough to start a sample? (pure)"""
    if not probe.has_sensors:
        return True, "no sensors"
    if probe.thermal_status not in (None, 0):
        return False, f"thermal status {probe.thermal_status}"
    t, b = probe.max_temp_c, baseline.temp_c
    if t is not None and b is not None and t > b + delta_c:
        return False, f"{t:.1f} °C > baseline {b:.1f} + {delta_c:g} °C"
    return True, "cool"
