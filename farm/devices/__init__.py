"""The one `Device` protocol that phones (adb) and the host (local) implement, and its values.

Never touches a device itself: implementations live in `adb.py`, `local.py` and `fake.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class ShellResult:
    """The outcome of one command: exit status and both streams, never raised as an exception.

    `returncode` is the process exit status; a process killed by signal N reports 128+N
    (as the Android shell does), a timeout reports None with `timed_out=True`.
    """

    argv: tuple[str, ...]
    returncode: int | None
    stdout: str
    stderr: str = ""
    duration_s: float = 0.0
    timed_out: bool = False

    @property
    def output(self) -> str:
        """stdout and stderr together, as a person at a terminal would see them."""
        if self.stderr and self.stdout:
            return self.stdout + ("" if self.stdout.endswith("\n") else "\n") + self.stderr
        return self.stdout or self.stderr


@dataclass(frozen=True, slots=True)
class CpuCluster:
    """CPUs that share a maximum frequency (a big.LITTLE cluster)."""

    cpus: tuple[int, ...]
    max_freq_khz: int


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """Facts about a device, collected once per run and stored with it."""

    serial: str
    kind: str  # "local" | "adb"
    simulated: bool
    manufacturer: str = ""
    model: str = ""
    soc: str = ""
    abis: tuple[str, ...] = ()
    android_release: str = ""
    sdk: int | None = None
    fingerprint: str = ""
    cpu_name: str = ""
    cpu_count: int = 0
    clusters: tuple[CpuCluster, ...] = ()
    ram_mb: int | None = None
    thermal_zones: tuple[str, ...] = ()
    has_gpu: bool = False
    has_nnapi: bool = False
    extra: tuple[tuple[str, str], ...] = field(default=())

    @property
    def label(self) -> str:
        """A human label; simulated devices always say so."""
        name = " ".join(p for p in (self.manufacturer, self.model) if p) or self.serial
        return f"{name} [SIMULATED]" if self.simulated else name

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        d = asdict(self)
        d["clusters"] = [{"cpus": list(c.cpus), "max_freq_khz": c.max_freq_khz}
                         for c in self.clusters]
        d["abis"] = list(self.abis)
        d["thermal_zones"] = list(self.thermal_zones)
        d["extra"] = dict(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeviceInfo:
        """Inverse of `to_dict`."""
        d = dict(d)
        d["clusters"] = tuple(
            CpuCluster(tuple(c["cpus"]), int(c["max_freq_khz"])) for c in d.get("clusters", ())
        )
        d["abis"] = tuple(d.get("abis", ()))
        d["thermal_zones"] = tuple(d.get("thermal_zones", ()))
        d["extra"] = tuple(sorted(dict(d.get("extra", {})).items()))
        return cls(**d)


@runtime_checkable
class Device(Protocol):
    """What farm needs from anything it benchmarks on."""

    serial: str
    workdir: str  # where farm keeps its files on the device (models, binaries)

    def info(self) -> DeviceInfo:
        """Collect the device's facts."""
        ...

    def push(self, local: Path, remote: str) -> int:
        """Copy a file to the device unless an identical one is there; return bytes sent."""
        ...

    def shell(self, argv: Sequence[str], *, timeout_s: float) -> ShellResult:
        """Run argv (each element quoted, never interpreted by a shell) with a hard timeout."""
        ...

    def read_text(self, remote: str) -> str:
        """Read a small text file (sysfs, procfs); raises DeviceError if it cannot."""
        ...

    def pull(self, remote: str, local: Path) -> int:
        """Copy a file from the device (binary-safe); return its size; DeviceError if not."""
        ...
