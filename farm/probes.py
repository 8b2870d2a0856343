"""Environment probes: thermal zones, cpufreq, thermal status and battery, per sample.

The parsers are pure functions over the text Android (or Linux) prints. `discover` and `sample`
read through the `Device` protocol only (sysfs files and `dumpsys`), so phones and the host
share one code path. A device without sensors yields a probe with `has_sensors=False`: farm
records "no sensors" instead of inventing numbers.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
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
    vmrss_kb: int | None = None  # of the running benchmark process, if one was found
    vmhwm_kb: int | None = None
    uptime_s: float | None = None  # the device's own clock (/proc/uptime)

    @property
    def max_temp_c(self) -> float | None:
        """The hottest zone, or the battery if there are no zones."""
        return self.temp_c(())

    def temp_c(self, zones: Sequence[str]) -> float | None:
        """The hottest zone whose type matches one of `zones` (fnmatch; empty: every zone);
        the battery if no zone matches."""
        temps = [t for kind, t in self.temps_c
                 if not zones or any(fnmatchcase(kind, z) for z in zones)]
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
                "freq_cap_ratio": self.freq_cap_ratio, "vmrss_kb": self.vmrss_kb,
                "vmhwm_kb": self.vmhwm_kb, "uptime_s": self.uptime_s}


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


_HEAD_RE = re.compile(r"^==> (.+) <==$")
_VM_RE = re.compile(r"^(VmRSS|VmHWM):\s*(\d+)\s*kB", re.MULTILINE)


def parse_heads(text: str) -> dict[str, str]:
    """`head -n 1 FILE FILE...` output -> {file: first line} (files that failed are absent)."""
    out: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        m = _HEAD_RE.match(line.strip())
        if m:
            current = m.group(1)
            out[current] = ""
        elif current is not None and not out[current] and line.strip():
            out[current] = line.strip()
    return {k: v for k, v in out.items() if v}


def parse_proc_status_kb(text: str) -> tuple[int | None, int | None]:
    """(VmRSS, VmHWM) in kB from /proc/<pid>/status text (the largest if several processes)."""
    rss = [int(v) for k, v in _VM_RE.findall(text) if k == "VmRSS"]
    hwm = [int(v) for k, v in _VM_RE.findall(text) if k == "VmHWM"]
    return (max(rss) if rss else None), (max(hwm) if hwm else None)


_SECTIONS = ("@@mem", "@@thermal", "@@battery")


def tick_argv(sensors: SensorMap, process_name: str = "") -> list[str]:
    """One `sh -c` that reads every sensor of an Android device at once (one adb round trip).
    """
    return ["sh", "-c", tick_script(sensors, process_name)]


def tick_script(sensors: SensorMap, process_name: str = "") -> str:
    """The script of `tick_argv`. It is fixed; the only interpolated values are sysfs paths
    farm discovered and the process name, each shell-quoted."""
    files = ["/proc/uptime", *(path for _, path in sensors.zones)]
    for c in sensors.cpus:
        base = f"{CPU_ROOT}/cpu{c}/cpufreq"
        files += [f"{base}/scaling_cur_freq", f"{base}/scaling_max_freq",
                  f"{base}/cpuinfo_max_freq"]
    script = f"head -n 1 {' '.join(shlex.quote(f) for f in files)} 2>/dev/null; echo @@mem; "
    if process_name:
        script += (f"for p in $(pidof {shlex.quote(process_name)} 2>/dev/null); do "
                   "cat /proc/$p/status 2>/dev/null; done; ")
    script += "echo @@thermal; "
    if sensors.has_dumpsys:
        script += "dumpsys thermalservice 2>/dev/null; echo @@battery; dumpsys battery 2>/dev/null"
    else:
        script += "echo @@battery"
    return script


def parse_tick(text: str, sensors: SensorMap) -> Probe:
    """The output of `tick_argv` -> a Probe (pure)."""
    parts = re.split(r"^(@@mem|@@thermal|@@battery)\s*$", text, flags=re.MULTILINE)
    body = {"heads": parts[0]}
    for i in range(1, len(parts) - 1, 2):
        body[parts[i]] = parts[i + 1]
    heads = parse_heads(body["heads"])
    temps = []
    for kind, path in sensors.zones:
        value = parse_zone_temp(heads[path]) if path in heads else None
        if value is not None:
            temps.append((kind, value))
    cur, mx, hw = [], [], []
    for c in sensors.cpus:
        base = f"{CPU_ROOT}/cpu{c}/cpufreq"
        vals = [parse_freq(heads.get(f"{base}/{n}", ""))
                for n in ("scaling_cur_freq", "scaling_max_freq", "cpuinfo_max_freq")]
        if all(v is not None for v in vals):
            cur.append(int(vals[0] or 0))
            mx.append(int(vals[1] or 0))
            hw.append(int(vals[2] or 0))
    rss, hwm = parse_proc_status_kb(body.get("@@mem", ""))
    ts = parse_dumpsys_thermalservice(body.get("@@thermal", ""))
    if not temps:
        temps = sorted(ts.get("temps_c", {}).items())
    battery = parse_dumpsys_battery(body.get("@@battery", ""))
    try:
        uptime = float(heads.get("/proc/uptime", "").split()[0])
    except (ValueError, IndexError):
        uptime = None
    status = ts.get("status")
    has = bool(temps or cur or status is not None or battery)
    return Probe(has_sensors=has, temps_c=tuple(temps), thermal_status=status,
                 battery_level=battery.get("level"), battery_temp_c=battery.get("temp_c"),
                 charging=battery.get("charging", ""), cur_freq_khz=tuple(cur),
                 max_freq_khz=tuple(mx), hw_max_freq_khz=tuple(hw), vmrss_kb=rss,
                 vmhwm_kb=hwm, uptime_s=uptime)


def parse_discovery(text: str) -> tuple[tuple[tuple[str, str], ...], tuple[int, ...]]:
    """`head -n 1 thermal_zone*/type cpu*/cpufreq/cpuinfo_max_freq` -> (zones, cpus) (pure).

    Zones are sorted by their number, so a gap in the numbering is harmless.
    """
    zones: list[tuple[int, str, str]] = []
    cpus: list[int] = []
    for path, value in parse_heads(text).items():
        m = re.fullmatch(re.escape(THERMAL_ROOT) + r"/thermal_zone(\d+)/type", path)
        if m:
            zones.append((int(m.group(1)), value, f"{THERMAL_ROOT}/thermal_zone{m.group(1)}/temp"))
            continue
        m = re.fullmatch(re.escape(CPU_ROOT) + r"/cpu(\d+)/cpufreq/cpuinfo_max_freq", path)
        if m and parse_freq(value) is not None:
            cpus.append(int(m.group(1)))
    return (tuple((kind, path) for _, kind, path in sorted(zones)), tuple(sorted(cpus)))


DISCOVER_ARGV = ("sh", "-c", f"head -n 1 {THERMAL_ROOT}/thermal_zone*/type "
                 f"{CPU_ROOT}/cpu*/cpufreq/cpuinfo_max_freq 2>/dev/null")


# ----------------------------------------------------------------------------- device reads

def _read(device: Device, path: str) -> str | None:
    try:
        return device.read_text(path)
    except DeviceError:
        return None


def discover(device: Device, *, cpu_count: int, android: bool) -> SensorMap:
    """Find thermal zones (by type, never by index) and cpufreq CPUs."""
    if android:
        listing = getattr(device, "sensor_listing", None)  # read with the facts (adb)
        text = listing() if callable(listing) else \
            device.shell(DISCOVER_ARGV, timeout_s=PROBE_TIMEOUT_S).stdout
        zs, cs = parse_discovery(text)
        return SensorMap(zones=zs, cpus=cs, has_dumpsys=True)
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


def sample(device: Device, sensors: SensorMap, *, process_name: str = "") -> Probe:
    """Read every known sensor once (and the memory of `process_name`'s processes, if any).

    Android devices answer one `sh -c` (see `tick_argv`); others are read file by file, which
    is cheap where the device is this machine.
    """
    if sensors.has_dumpsys:
        r = device.shell(tick_argv(sensors, process_name), timeout_s=PROBE_TIMEOUT_S)
        if r.timed_out:
            return Probe(has_sensors=False)
        return parse_tick(r.stdout, sensors)
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
    rss = hwm = None
    memory = getattr(device, "process_memory_kb", None)
    if process_name and callable(memory):
        rss, hwm = memory(process_name)
    has = bool(temps or cur)
    return Probe(has_sensors=has, temps_c=tuple(temps), cur_freq_khz=tuple(cur),
                 max_freq_khz=tuple(mx), hw_max_freq_khz=tuple(hw), vmrss_kb=rss,
                 vmhwm_kb=hwm)


@dataclass(frozen=True, slots=True)
class Baseline:
    """A device's idle state at the start of a run, for the cooldown gate."""

    temp_c: float | None
    probe: Probe = field(default_factory=lambda: Probe(has_sensors=False))


def gate_ready(probe: Probe, baseline: Baseline, delta_c: float,
               zones: Sequence[str] = ()) -> tuple[bool, str]:
    """Is the device cool enough to start a sample? (pure)

    Ready when the thermal status is 0 (or unknown) and the hottest of the chosen `zones`
    (fnmatch over zone types; empty: all) is within `delta_c` of its idle baseline.
    """
    if not probe.has_sensors:
        return True, "no sensors"
    if probe.thermal_status not in (None, 0):
        return False, f"thermal status {probe.thermal_status}"
    t = probe.temp_c(zones)
    b = baseline.probe.temp_c(zones) if baseline.probe.has_sensors else baseline.temp_c
    if t is not None and b is not None and t > b + delta_c:
        return False, f"{t:.1f} °C > baseline {b:.1f} + {delta_c:g} °C"
    return True, "cool"
