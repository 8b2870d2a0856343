"""Simulated phone profiles: frozen values loaded from `farm/sim/profiles/*.yaml`, with validation.

Reads YAML files (the shipped profiles or a path the user gives); nothing else. Every error names
the file, the key path and the allowed values. A profile is the *known truth* a simulated phone
obeys: its throughput per delegate and dtype, its clusters and its thermal behaviour, so tests can
compare farm's verdicts with `Profile.expected_speedup`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from farm.errors import ConfigError

SCHEMA_VERSION = 1
PROFILES_DIR = Path(__file__).with_name("profiles")

DTYPES: tuple[str, ...] = ("fp32", "fp16", "dynamic", "int8", "int16x8")
GPU_DELEGATES: tuple[str, ...] = ("opencl", "opengl", "unsupported")
GPU_INT8: tuple[str, ...] = ("partial", "none")
NNAPI_MODES: tuple[str, ...] = ("vendor", "reference", "missing")
PLUGGED: tuple[str, ...] = ("none", "usb", "ac")
ARCHES: tuple[str, ...] = ("aarch64", "armv7l", "armv8l", "x86_64", "i686")
ABIS: tuple[str, ...] = ("arm64-v8a", "armeabi-v7a", "armeabi", "x86_64", "x86")
# Thermal HAL temperature types (android.hardware.thermal TemperatureType).
HAL_TYPES: dict[int, str] = {0: "CPU", 1: "GPU", 2: "BATTERY", 3: "SKIN", 4: "USB_PORT",
                             5: "POWER_AMPLIFIER", 6: "BCL_VOLTAGE", 7: "BCL_CURRENT",
                             8: "BCL_PERCENTAGE", 9: "NPU"}
# Names farm's delegates/*.yaml use, mapped to the perf tables below.
DELEGATE_NAMES: tuple[str, ...] = ("cpu", "xnnpack", "gpu", "nnapi")
# How a backend's arithmetic shows in the outputs (`numerics:` in a profile): "exact" is the
# CPU's result, "fp16" computes in half precision (small errors), "corrupt" is a driver bug that
# returns garbage (fast but wrong).
NUMERIC_BEHAVIOURS: tuple[str, ...] = ("exact", "fp16", "corrupt")
NUMERIC_BACKENDS: tuple[str, ...] = ("cpu", "xnnpack", "gpu", "nnapi")

# ShellV2 is what lets adbutils' shell2 see exit codes; old phones lack it (and several others).
MODERN_FEATURES: tuple[str, ...] = (
    "shell_v2", "cmd", "stat_v2", "ls_v2", "fixed_push_mkdir", "apex", "abb",
    "fixed_push_symlink_timestamp", "abb_exec", "remount_shell", "track_app", "sendrecv_v2",
    "sendrecv_v2_brotli", "sendrecv_v2_lz4", "sendrecv_v2_zstd", "sendrecv_v2_dry_run_send",
    "openscreen_mdns",
)


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """CPUs sharing a frequency domain; `rel_speed` is per-core speed at max freq vs the fastest."""

    name: str
    core: str
    part: str  # /proc/cpuinfo "CPU part", e.g. 0xd82
    cpus: tuple[int, ...]
    freqs_khz: tuple[int, ...]  # ascending; the last one is cpuinfo_max_freq
    rel_speed: float
    power_w: float  # per busy core at max freq

    @property
    def max_freq_khz(self) -> int:
        """cpuinfo_max_freq."""
        return self.freqs_khz[-1]

    @property
    def min_freq_khz(self) -> int:
        """cpuinfo_min_freq."""
        return self.freqs_khz[0]


@dataclass(frozen=True, slots=True)
class CpuSpec:
    """The CPU: architecture, ISA features and clusters, plus how threads share work."""

    arch: str
    hardware: str  # /proc/cpuinfo "Hardware" line
    features: tuple[str, ...]
    clusters: tuple[ClusterSpec, ...]
    # 0 = perfectly dynamic work split (sum of core speeds), 1 = static split (slowest core rules).
    thread_imbalance: float
    thread_sync_us: float  # per op and extra thread: barrier cost

    @property
    def cpu_count(self) -> int:
        """Number of CPUs."""
        return sum(len(c.cpus) for c in self.clusters)

    @property
    def dotprod(self) -> bool:
        """ARMv8.2 dot-product instructions (what makes int8 fast)."""
        return "asimddp" in self.features

    @property
    def i8mm(self) -> bool:
        """ARMv8.6 int8 matrix multiply."""
        return "i8mm" in self.features

    def cluster_of(self, cpu: int) -> ClusterSpec:
        """The cluster that holds `cpu`."""
        for c in self.clusters:
            if cpu in c.cpus:
                return c
        raise KeyError(cpu)


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """The GPU and how TFLite's GPU delegate behaves on it."""

    name: str
    delegate: str  # GPU_DELEGATES
    int8: str  # GPU_INT8: int8 models partially delegated (computed in float) or not at all
    gmacs: tuple[tuple[str, float], ...]  # fp32 (precision loss not allowed), fp16
    op_overhead_us: float
    partition_overhead_us: float  # CPU<->GPU copies per partition boundary
    init_ms: float
    power_w: float

    def rate(self, precision: str) -> float:
        """GMAC/s for 'fp32' or 'fp16' arithmetic."""
        return dict(self.gmacs)[precision]


@dataclass(frozen=True, slots=True)
class NnapiSpec:
    """NNAPI: a vendor driver, only the reference CPU device, or missing entirely."""

    mode: str  # NNAPI_MODES
    accelerators: tuple[str, ...]
    gmacs: tuple[tuple[str, float], ...]  # per dtype on the vendor accelerator
    unsupported_ops: tuple[str, ...]
    op_overhead_us: float
    partition_overhead_us: float
    init_ms: float
    power_w: float


@dataclass(frozen=True, slots=True)
class PerfSpec:
    """CPU throughput of ONE thread on the fastest core at max freq, per model dtype."""

    cpu_gmacs: tuple[tuple[str, float], ...]
    xnnpack_off_factor: float  # float kernels without XNNPACK (builtin/ruy) are this much as fast
    op_overhead_us: float
    elementwise_gelem_s: float
    init_ms: float
    noise_cv: float

    def cpu_rate(self, dtype: str) -> float:
        """GMAC/s for one thread on the fastest core."""
        return dict(self.cpu_gmacs)[dtype]


@dataclass(frozen=True, slots=True)
class TripPoint:
    """Above `temp_c` every cluster's scaling_max_freq is capped to `cap_fraction` of its max."""

    temp_c: float
    cap_fraction: float


@dataclass(frozen=True, slots=True)
class ZoneSpec:
    """A thermal zone: temp = ambient + (soc - ambient) * factor + offset."""

    type: str
    hal_type: int
    factor: float
    offset_c: float = 0.0


@dataclass(frozen=True, slots=True)
class ThermalSpec:
    """Lumped thermal model: C dT/dt = P - G (T - ambient)."""

    ambient_c: float
    heat_capacity_j_per_c: float
    cooling_w_per_c: float
    idle_power_w: float
    power_exponent: float  # core power scales with (f/fmax) ** exponent
    hysteresis_c: float
    trip_points: tuple[TripPoint, ...]
    status_thresholds_c: tuple[float, ...]  # LIGHT, MODERATE, SEVERE, CRITICAL, EMERGENCY, SHUTDOWN
    zones: tuple[ZoneSpec, ...]

    @property
    def time_constant_s(self) -> float:
        """Seconds for 63 % of a temperature step."""
        return self.heat_capacity_j_per_c / self.cooling_w_per_c


@dataclass(frozen=True, slots=True)
class BatterySpec:
    """Battery facts for `dumpsys battery` and /sys/class/power_supply."""

    level_pct: int
    capacity_mah: int
    voltage_mv: int
    technology: str
    plugged: str  # PLUGGED
    temp_factor: float  # battery rise as a fraction of the SoC's rise over ambient


@dataclass(frozen=True, slots=True)
class Profile:
    """One simulated phone model. `props()` gives its system properties."""

    name: str
    source_file: str
    description: str
    manufacturer: str
    brand: str
    model: str
    marketing_name: str
    device: str
    product: str
    board: str
    hardware: str
    soc_manufacturer: str
    soc_model: str
    abis: tuple[str, ...]
    sdk: int
    release: str
    build_id: str
    incremental: str
    security_patch: str
    build_date_utc: int
    kernel: str
    shell_v2: bool
    ram_mb: int
    storage_total_mb: int
    storage_free_mb: int
    cpu: CpuSpec
    gpu: GpuSpec | None
    nnapi: NnapiSpec
    perf: PerfSpec
    thermal: ThermalSpec
    battery: BatterySpec
    benchmark_model_tf_version: str
    extra_props: tuple[tuple[str, str], ...] = field(default=())
    # (backend, ((dtype, behaviour), ...)): overrides of `numeric_behaviour`'s defaults
    numerics: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = field(default=())

    @property
    def fingerprint(self) -> str:
        """ro.build.fingerprint."""
        return (f"{self.brand}/{self.product}/{self.device}:{self.release}/{self.build_id}/"
                f"{self.incremental}:user/release-keys")

    @property
    def primary_abi(self) -> str:
        """ro.product.cpu.abi."""
        return self.abis[0]

    @property
    def is_64bit(self) -> bool:
        """Whether 64-bit executables can run."""
        return any(a in ("arm64-v8a", "x86_64") for a in self.abis)

    @property
    def features(self) -> tuple[str, ...]:
        """adbd feature list for the CNXN banner."""
        if self.shell_v2:
            return MODERN_FEATURES
        # An Android 6 adbd advertises nothing the modern host needs; keep the legacy shell.
        return ()

    def props(self) -> dict[str, str]:
        """All system properties, as `getprop` prints them (before runtime overrides)."""
        abilist = ",".join(self.abis)
        abi32 = ",".join(a for a in self.abis if a in ("armeabi-v7a", "armeabi", "x86"))
        abi64 = ",".join(a for a in self.abis if a in ("arm64-v8a", "x86_64"))
        p: dict[str, str] = {
            "ro.product.manufacturer": self.manufacturer,
            "ro.product.brand": self.brand,
            "ro.product.model": self.model,
            "ro.product.name": self.product,
            "ro.product.device": self.device,
            "ro.product.board": self.board,
            "ro.product.cpu.abi": self.primary_abi,
            "ro.product.cpu.abilist": abilist,
            "ro.product.cpu.abilist32": abi32,
            "ro.product.cpu.abilist64": abi64,
            "ro.board.platform": self.board,
            "ro.hardware": self.hardware,
            "ro.build.version.sdk": str(self.sdk),
            "ro.build.version.release": self.release,
            "ro.build.version.incremental": self.incremental,
            "ro.build.version.security_patch": self.security_patch,
            "ro.build.id": self.build_id,
            "ro.build.display.id": f"{self.build_id}.{self.incremental}",
            "ro.build.type": "user",
            "ro.build.tags": "release-keys",
            "ro.build.date.utc": str(self.build_date_utc),
            "ro.build.fingerprint": self.fingerprint,
            "ro.build.characteristics": "phone",
            "ro.serialno": "",
            "ro.debuggable": "0",
            "ro.secure": "1",
            "ro.adb.secure": "1",
            "ro.config.low_ram": "false",
            "ro.product.first_api_level": str(self.sdk),
            "ro.kernel.version": self.kernel,
            "ro.farm.simulated": "1",
            "ro.farm.profile": self.name,
            "persist.sys.timezone": "UTC",
            "persist.sys.locale": "en-US",
            "sys.boot_completed": "1",
            "dev.bootcomplete": "1",
            "init.svc.adbd": "running",
            "service.adb.root": "0",
            "sys.usb.config": "adb" if self.battery.plugged == "none" else "mtp,adb",
            "sys.usb.state": "adb" if self.battery.plugged == "none" else "mtp,adb",
            "ro.sf.lcd_density": "480",
            "dalvik.vm.heapsize": "512m",
        }
        if self.sdk >= 31:
            p["ro.soc.manufacturer"] = self.soc_manufacturer
            p["ro.soc.model"] = self.soc_model
        if self.sdk >= 29:
            p["ro.product.system.model"] = self.model
            p["ro.product.vendor.model"] = self.model
            p["ro.product.vendor.manufacturer"] = self.manufacturer
            p["ro.vndk.version"] = str(self.sdk)
        if self.marketing_name:
            p["ro.product.marketname"] = self.marketing_name
        if self.gpu is not None:
            p["ro.hardware.egl"] = self.gpu.name.split()[0].lower()
        p.update(dict(self.extra_props))
        return p

    def expected_speedup(self, delegate: str, dtype_a: str, dtype_b: str,
                         threads: int = 1) -> float:
        """Known truth for MAC-bound models: how many times faster dtype_b runs than dtype_a.

        `delegate` is one of cpu, xnnpack, gpu, nnapi (farm's delegate names). This is the
        ratio of raw throughputs as the performance model applies them; `benchmark.py`'s
        `expected_latency_us` gives the exact noise-free latency of a given model.
        """
        if delegate not in DELEGATE_NAMES:
            raise ValueError(f"unknown delegate {delegate!r}; known: {', '.join(DELEGATE_NAMES)}")
        for d in (dtype_a, dtype_b):
            if d not in DTYPES:
                raise ValueError(f"unknown dtype {d!r}; known: {', '.join(DTYPES)}")
        return (effective_rate(self, delegate, dtype_b, threads)
                / effective_rate(self, delegate, dtype_a, threads))

    def numeric_behaviour(self, backend: str, dtype: str, *, fp16_allowed: bool) -> str:
        """How `backend` (cpu, xnnpack, gpu, nnapi) computes a `dtype` model's outputs.

        The profile's `numerics:` table wins; otherwise the CPU backends are exact, the GPU
        computes in fp16 when precision loss is allowed (int8 models too: it runs them in
        float), and a vendor NNAPI driver computes float models in fp16 when
        --nnapi_allow_fp16 allows it and integer models exactly.
        """
        explicit = dict(dict(self.numerics).get(backend, ())).get(dtype)
        if explicit is not None:
            return explicit
        if backend == "gpu" and fp16_allowed:
            return "fp16"
        if backend == "nnapi" and fp16_allowed and dtype in ("fp32", "fp16", "dynamic"):
            return "fp16"
        return "exact"

    def summary(self) -> str:
        """One line for `farm sim status`."""
        return f"{self.manufacturer} {self.model} ({self.soc_model}, SDK {self.sdk}) [SIMULATED]"


def cap_freq_khz(freqs_khz: Sequence[int], fraction: float) -> int:
    """The highest frequency of the table not above `fraction` of the maximum (min if none)."""
    table = sorted(freqs_khz)
    limit = table[-1] * fraction + 1e-6
    allowed = [f for f in table if f <= limit]
    return allowed[-1] if allowed else table[0]


def thread_speed(cpu: CpuSpec, threads: int, affinity: int = -1, cap: float = 1.0) -> float:
    """Throughput of `threads` threads relative to one thread on the fastest core at max freq.

    Threads go to the fastest allowed cores. A dynamic work split sums the core speeds; a static
    split waits for the slowest core (and for the busiest one when there are more threads than
    cores); `thread_imbalance` blends the two. `cap` is the thermal frequency cap.
    """
    allowed = [c for c in range(cpu.cpu_count) if affinity < 0 or affinity >> c & 1]
    if not allowed:
        allowed = list(range(cpu.cpu_count))
    speeds = []
    for c in allowed:
        cl = cpu.cluster_of(c)
        speeds.append(cl.rel_speed * cap_freq_khz(cl.freqs_khz, cap) / cl.max_freq_khz)
    speeds.sort(reverse=True)
    n = max(1, threads)
    m = len(speeds)
    used = speeds[: min(n, m)]
    dynamic = sum(used) * max(0.3, 1.0 - 0.04 * max(0, n - m))
    static = n * min(used) / math.ceil(n / m)
    return (1.0 - cpu.thread_imbalance) * dynamic + cpu.thread_imbalance * static


def effective_rate(profile: Profile, delegate: str, dtype: str, threads: int = 1) -> float:
    """GMAC/s the performance model uses for a fully MAC-bound model (the known truth)."""
    if delegate == "gpu" and profile.gpu is not None:
        if profile.gpu.delegate == "unsupported":
            raise ValueError(f"{profile.name}: the GPU delegate cannot be applied (it fails)")
        # benchmark_model allows precision loss by default: fp16 arithmetic; int8 in float
        if not (dtype in ("int8", "int16x8") and profile.gpu.int8 == "none"
                or dtype == "int16x8"):
            return profile.gpu.rate("fp16")
    if delegate == "nnapi" and profile.nnapi.mode == "vendor":
        rates = dict(profile.nnapi.gmacs)
        if dtype in rates:
            return rates[dtype]
    rate = profile.perf.cpu_rate(dtype) * thread_speed(profile.cpu, threads)
    if delegate == "cpu" and dtype in ("fp32", "fp16"):
        rate *= profile.perf.xnnpack_off_factor
    return rate


# ---------------------------------------------------------------------------------------------
# Loading and validation


class _Section:
    """Reads one mapping and remembers which keys were used, to reject unknown ones."""

    def __init__(self, file: str, path: str, data: Any) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{file}: {path or '<root>'}: expected a mapping, "
                              f"got {type(data).__name__}")
        self.file = file
        self.path = path
        self.data: Mapping[str, Any] = data
        self.allowed: list[str] = []

    def _where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.file}: {self._where(key)}: {problem}")

    def get(self, key: str, default: Any = ..., ) -> Any:
        self.allowed.append(key)
        if key not in self.data:
            if default is ...:
                raise self._fail(key, "missing required key")
            return default
        return self.data[key]

    def text(self, key: str, default: Any = ...) -> str:
        v = self.get(key, default)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = str(v)
        if not isinstance(v, str):
            raise self._fail(key, f"expected a string, got {v!r}")
        return v

    def integer(self, key: str, default: Any = ..., lo: int | None = None) -> int:
        v = self.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self._fail(key, f"expected an integer, got {v!r}")
        if lo is not None and v < lo:
            raise self._fail(key, f"must be >= {lo}, got {v}")
        return v

    def number(self, key: str, default: Any = ..., lo: float | None = None,
              hi: float | None = None) -> float:
        v = self.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self._fail(key, f"expected a number, got {v!r}")
        if lo is not None and v < lo:
            raise self._fail(key, f"must be >= {lo}, got {v}")
        if hi is not None and v > hi:
            raise self._fail(key, f"must be <= {hi}, got {v}")
        return float(v)

    def flag(self, key: str, default: Any = ...) -> bool:
        v = self.get(key, default)
        if not isinstance(v, bool):
            raise self._fail(key, f"expected true or false, got {v!r}")
        return v

    def choice(self, key: str, allowed: Sequence[str], default: Any = ...) -> str:
        v = self.get(key, default)
        if v not in allowed:
            raise self._fail(key, f"invalid value {v!r}; allowed: {', '.join(allowed)}")
        return str(v)

    def items(self, key: str, default: Any = ...) -> list[Any]:
        v = self.get(key, default)
        if not isinstance(v, list):
            raise self._fail(key, f"expected a list, got {v!r}")
        return v

    def str_list(self, key: str, default: Any = ..., allowed: Sequence[str] | None = None,
                 nonempty: bool = False) -> tuple[str, ...]:
        items = self.items(key, default)
        out: list[str] = []
        for i, v in enumerate(items):
            if not isinstance(v, str):
                raise ConfigError(f"{self.file}: {self._where(key)}[{i}]: expected a string, "
                                  f"got {v!r}")
            if allowed is not None and v not in allowed:
                raise ConfigError(f"{self.file}: {self._where(key)}[{i}]: invalid value {v!r}; "
                                  f"allowed: {', '.join(allowed)}")
            out.append(v)
        if nonempty and not out:
            raise self._fail(key, "must not be empty")
        return tuple(out)

    def rates(self, key: str, allowed: Sequence[str], required: Sequence[str],
              default: Any = ...) -> tuple[tuple[str, float], ...]:
        sub = self.section(key, default)
        if sub is None:
            return ()
        out = []
        for name in allowed:
            if name in required:
                out.append((name, sub.number(name, lo=1e-6)))
            elif name in sub.data:
                out.append((name, sub.number(name, lo=1e-6)))
        sub.finish()
        return tuple(out)

    def section(self, key: str, default: Any = ...) -> _Section | None:
        v = self.get(key, default)
        if v is None:
            return None
        return _Section(self.file, self._where(key), v)

    def sections(self, key: str) -> Iterator[_Section]:
        for i, v in enumerate(self.items(key)):
            yield _Section(self.file, f"{self._where(key)}[{i}]", v)

    def finish(self) -> None:
        unknown = [k for k in self.data if k not in self.allowed]
        if unknown:
            raise self._fail(str(unknown[0]),
                             f"unknown key; allowed: {', '.join(sorted(set(self.allowed)))}")


def _load_cluster(s: _Section) -> ClusterSpec:
    cpus = s.items("cpus")
    if not cpus or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                           for c in cpus):
        raise ConfigError(f"{s.file}: {s.path}.cpus: expected a non-empty list of CPU numbers")
    freqs = s.items("freqs_khz")
    if not freqs or not all(isinstance(f, int) and f > 0 for f in freqs) or freqs != sorted(freqs):
        raise ConfigError(f"{s.file}: {s.path}.freqs_khz: expected ascending positive integers")
    c = ClusterSpec(
        name=s.text("name"), core=s.text("core"), part=s.text("part"), cpus=tuple(cpus),
        freqs_khz=tuple(freqs), rel_speed=s.number("rel_speed", lo=0.01, hi=1.0),
        power_w=s.number("power_w", lo=0.0),
    )
    s.finish()
    return c


def _load_cpu(s: _Section) -> CpuSpec:
    clusters = tuple(_load_cluster(c) for c in s.sections("clusters"))
    if not clusters:
        raise ConfigError(f"{s.file}: {s.path}.clusters: must not be empty")
    all_cpus = sorted(c for cl in clusters for c in cl.cpus)
    if all_cpus != list(range(len(all_cpus))):
        raise ConfigError(f"{s.file}: {s.path}.clusters: CPU numbers must be 0..N-1, each once; "
                          f"got {all_cpus}")
    if max(c.rel_speed for c in clusters) != 1.0:
        raise ConfigError(f"{s.file}: {s.path}.clusters: the fastest cluster must have "
                          f"rel_speed 1.0")
    cpu = CpuSpec(
        arch=s.choice("arch", ARCHES), hardware=s.text("hardware"),
        features=s.str_list("features", nonempty=True), clusters=clusters,
        thread_imbalance=s.number("thread_imbalance", lo=0.0, hi=1.0),
        thread_sync_us=s.number("thread_sync_us", lo=0.0),
    )
    s.finish()
    return cpu


def _load_gpu(s: _Section | None) -> GpuSpec | None:
    if s is None:
        return None
    g = GpuSpec(
        name=s.text("name"), delegate=s.choice("delegate", GPU_DELEGATES),
        int8=s.choice("int8", GPU_INT8),
        gmacs=s.rates("gmacs", ("fp32", "fp16"), ("fp32", "fp16")),
        op_overhead_us=s.number("op_overhead_us", lo=0.0),
        partition_overhead_us=s.number("partition_overhead_us", lo=0.0),
        init_ms=s.number("init_ms", lo=0.0), power_w=s.number("power_w", lo=0.0),
    )
    s.finish()
    return g


def _load_nnapi(s: _Section) -> NnapiSpec:
    mode = s.choice("mode", NNAPI_MODES)
    n = NnapiSpec(
        mode=mode,
        accelerators=s.str_list("accelerators", default=[]),
        gmacs=s.rates("gmacs", DTYPES, ("fp32", "int8") if mode == "vendor" else (), default={}),
        unsupported_ops=s.str_list("unsupported_ops", default=[]),
        op_overhead_us=s.number("op_overhead_us", default=20.0, lo=0.0),
        partition_overhead_us=s.number("partition_overhead_us", default=100.0, lo=0.0),
        init_ms=s.number("init_ms", default=500.0, lo=0.0),
        power_w=s.number("power_w", default=1.5, lo=0.0),
    )
    if mode == "vendor" and not n.accelerators:
        raise ConfigError(f"{s.file}: {s.path}.accelerators: a vendor NNAPI needs accelerators")
    if mode == "reference" and n.accelerators not in ((), ("nnapi-reference",)):
        raise ConfigError(f"{s.file}: {s.path}.accelerators: a reference-only NNAPI lists only "
                          f"nnapi-reference")
    s.finish()
    return n


def _load_perf(s: _Section) -> PerfSpec:
    p = PerfSpec(
        cpu_gmacs=s.rates("cpu_gmacs", DTYPES, DTYPES),
        xnnpack_off_factor=s.number("xnnpack_off_factor", lo=0.05, hi=2.0),
        op_overhead_us=s.number("op_overhead_us", lo=0.0),
        elementwise_gelem_s=s.number("elementwise_gelem_s", lo=1e-6),
        init_ms=s.number("init_ms", lo=0.0),
        noise_cv=s.number("noise_cv", lo=0.0, hi=1.0),
    )
    s.finish()
    return p


def _load_thermal(s: _Section) -> ThermalSpec:
    trips = []
    for t in s.sections("trip_points"):
        trips.append(TripPoint(temp_c=t.number("temp_c"),
                               cap_fraction=t.number("cap_fraction", lo=0.05, hi=1.0)))
        t.finish()
    if [t.temp_c for t in trips] != sorted(t.temp_c for t in trips):
        raise ConfigError(f"{s.file}: {s.path}.trip_points: must be in ascending temp_c order")
    zones = []
    for z in s.sections("zones"):
        zones.append(ZoneSpec(type=z.text("type"),
                              hal_type=_hal(z),
                              factor=z.number("factor", lo=0.0),
                              offset_c=z.number("offset_c", default=0.0)))
        z.finish()
    if not zones:
        raise ConfigError(f"{s.file}: {s.path}.zones: must not be empty")
    thresholds = s.items("status_thresholds_c")
    if (len(thresholds) != 6 or not all(isinstance(x, (int, float)) for x in thresholds)
            or list(thresholds) != sorted(thresholds)):
        raise ConfigError(f"{s.file}: {s.path}.status_thresholds_c: expected 6 ascending numbers "
                          f"(LIGHT, MODERATE, SEVERE, CRITICAL, EMERGENCY, SHUTDOWN)")
    th = ThermalSpec(
        ambient_c=s.number("ambient_c", lo=-20.0, hi=60.0),
        heat_capacity_j_per_c=s.number("heat_capacity_j_per_c", lo=0.1),
        cooling_w_per_c=s.number("cooling_w_per_c", lo=0.001),
        idle_power_w=s.number("idle_power_w", lo=0.0),
        power_exponent=s.number("power_exponent", default=2.5, lo=1.0, hi=4.0),
        hysteresis_c=s.number("hysteresis_c", default=2.0, lo=0.0),
        trip_points=tuple(trips),
        status_thresholds_c=tuple(float(x) for x in thresholds),
        zones=tuple(zones),
    )
    s.finish()
    return th


def _hal(z: _Section) -> int:
    v = z.get("hal_type")
    if isinstance(v, bool) or not isinstance(v, int) or v not in HAL_TYPES:
        allowed = ", ".join(f"{k} ({n})" for k, n in HAL_TYPES.items())
        raise ConfigError(f"{z.file}: {z.path}.hal_type: invalid value {v!r}; allowed: {allowed}")
    return v


def _load_battery(s: _Section) -> BatterySpec:
    b = BatterySpec(
        level_pct=s.integer("level_pct", lo=0), capacity_mah=s.integer("capacity_mah", lo=1),
        voltage_mv=s.integer("voltage_mv", lo=1), technology=s.text("technology", default="Li-ion"),
        plugged=s.choice("plugged", PLUGGED), temp_factor=s.number("temp_factor", lo=0.0, hi=1.0),
    )
    if b.level_pct > 100:
        raise ConfigError(f"{s.file}: {s.path}.level_pct: must be <= 100, got {b.level_pct}")
    s.finish()
    return b


def _load_numerics(s: _Section | None) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    if s is None:
        return ()
    out = []
    for backend in NUMERIC_BACKENDS:
        sub = s.section(backend, default=None)
        if sub is None:
            continue
        sub.allowed.extend(DTYPES)
        table = tuple((dtype, sub.choice(dtype, NUMERIC_BEHAVIOURS)) for dtype in DTYPES
                      if dtype in sub.data)
        sub.finish()
        out.append((backend, table))
    s.finish()
    return tuple(out)


def profile_from_dict(data: Any, *, source_file: str) -> Profile:
    """Validate a parsed YAML document; raise ConfigError naming file, key path and choices."""
    root = _Section(source_file, "", data)
    version = root.integer("schema_version")
    if version != SCHEMA_VERSION:
        raise ConfigError(f"{source_file}: schema_version: unsupported version {version}; "
                          f"allowed: {SCHEMA_VERSION}")
    dev = root.section("device")
    assert dev is not None
    mem = root.section("memory")
    assert mem is not None
    cpu_s = root.section("cpu")
    assert cpu_s is not None
    extra = dev.section("extra_props", default={})
    extra_props: tuple[tuple[str, str], ...] = ()
    if extra is not None:
        extra_props = tuple((str(k), extra.text(str(k))) for k in list(extra.data))
        extra.finish()
    tf = root.text("benchmark_model_tf_version")
    try:
        tuple(int(x) for x in tf.split(".")[:2])
    except ValueError:
        raise ConfigError(f"{source_file}: benchmark_model_tf_version: expected a TF version "
                          f"such as '2.19', got {tf!r}") from None
    nnapi_s = root.section("nnapi")
    perf_s = root.section("perf")
    thermal_s = root.section("thermal")
    battery_s = root.section("battery")
    assert nnapi_s is not None and perf_s is not None
    assert thermal_s is not None and battery_s is not None
    p = Profile(
        name=root.text("name"),
        source_file=source_file,
        description=root.text("description", default=""),
        manufacturer=dev.text("manufacturer"),
        brand=dev.text("brand"),
        model=dev.text("model"),
        marketing_name=dev.text("marketing_name", default=""),
        device=dev.text("device"),
        product=dev.text("product"),
        board=dev.text("board"),
        hardware=dev.text("hardware"),
        soc_manufacturer=dev.text("soc_manufacturer"),
        soc_model=dev.text("soc_model"),
        abis=dev.str_list("abis", allowed=ABIS, nonempty=True),
        sdk=dev.integer("sdk", lo=21),
        release=dev.text("release"),
        build_id=dev.text("build_id"),
        incremental=dev.text("incremental"),
        security_patch=dev.text("security_patch"),
        build_date_utc=dev.integer("build_date_utc", lo=0),
        kernel=dev.text("kernel"),
        shell_v2=dev.flag("shell_v2"),
        ram_mb=mem.integer("ram_mb", lo=256),
        storage_total_mb=mem.integer("storage_total_mb", lo=64),
        storage_free_mb=mem.integer("storage_free_mb", lo=0),
        cpu=_load_cpu(cpu_s),
        gpu=_load_gpu(root.section("gpu", default=None)),
        nnapi=_load_nnapi(nnapi_s),
        perf=_load_perf(perf_s),
        thermal=_load_thermal(thermal_s),
        battery=_load_battery(battery_s),
        benchmark_model_tf_version=tf,
        extra_props=extra_props,
        numerics=_load_numerics(root.section("numerics", default=None)),
    )
    dev.finish()
    mem.finish()
    root.finish()
    if p.storage_free_mb > p.storage_total_mb:
        raise ConfigError(f"{source_file}: memory.storage_free_mb: must be <= storage_total_mb")
    return p


def load_profile_file(path: Path) -> Profile:
    """Load and validate one profile YAML file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    return profile_from_dict(data, source_file=str(path))


def available_profiles() -> tuple[str, ...]:
    """Names of the shipped profiles."""
    return tuple(sorted(p.stem for p in PROFILES_DIR.glob("*.yaml")))


def load_profile(name_or_path: str | Path) -> Profile:
    """A shipped profile by name (e.g. 'flagship') or a YAML file by path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return load_profile_file(p)
    candidate = PROFILES_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        raise ConfigError(f"unknown simulator profile {str(name_or_path)!r}; "
                          f"known: {', '.join(available_profiles())}")
    return load_profile_file(candidate)
