"""`LocalDevice`: this machine as a benchmark device.

Runs commands with `subprocess` (never through a shell), reads /proc and /sys directly, and
"pushes" by copying into a local work directory. Its numbers are real and are labelled with
the host's CPU.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from farm.devices import CpuCluster, DeviceInfo, ShellResult
from farm.errors import DeviceError
from farm.hashing import file_sha256
from farm.probes import cluster_cpus

HOST_SERIAL = "host"


def host_abi() -> str:
    """This machine's ABI in vendor/ naming (linux-x86_64, linux-aarch64, ...)."""
    from farm import vendor
    from farm.errors import BenchmarkError

    try:
        return vendor.host_abi()
    except BenchmarkError:
        return f"{platform.system().lower()}-{platform.machine().lower()}"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "Processor") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_mb() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class LocalDevice:
    """The host, behind the same `Device` protocol as a phone."""

    def __init__(self, workdir: Path, *, serial: str = HOST_SERIAL) -> None:
        self.serial = serial
        self.workdir = str(Path(workdir).resolve())
        Path(self.workdir).mkdir(parents=True, exist_ok=True)
        self._lockfile: Any = None

    def info(self) -> DeviceInfo:
        """Facts about this machine."""
        cpu_count = os.cpu_count() or 1
        max_khz: dict[int, int] = {}
        for c in range(cpu_count):
            p = Path(f"/sys/devices/system/cpu/cpu{c}/cpufreq/cpuinfo_max_freq")
            try:
                max_khz[c] = int(p.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pass
        clusters = tuple(CpuCluster(cpus, khz) for cpus, khz in cluster_cpus(max_khz))
        zones = []
        for p in sorted(Path("/sys/class/thermal").glob("thermal_zone*/type")):
            try:
                zones.append(p.read_text().strip())
            except OSError:
                pass
        return DeviceInfo(
            serial=self.serial, kind="local", simulated=False, manufacturer="host",
            model=_cpu_name(), soc=platform.machine(), abis=(host_abi(),),
            fingerprint=f"{platform.system()} {platform.release()} {platform.version()}",
            cpu_name=_cpu_name(), cpu_count=cpu_count, clusters=clusters, ram_mb=_ram_mb(),
            thermal_zones=tuple(zones), has_gpu=False, has_nnapi=False,
            extra=(("hostname", socket.gethostname()), ("python", platform.python_version())))

    def push(self, local: Path, remote: str) -> int:
        """Copy into the work directory unless an identical file is there; bytes copied."""
        src, dst = Path(local).resolve(), Path(remote)
        if src == dst.resolve():
            return 0
        if dst.exists() and dst.stat().st_size == src.stat().st_size \
                and file_sha256(dst) == file_sha256(src):
            return 0
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".part")
        try:
            shutil.copyfile(src, tmp)
            os.chmod(tmp, 0o755)
            os.replace(tmp, dst)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise DeviceError(self.serial, f"push {src}", e.strerror or str(e)) from None
        return src.stat().st_size

    def shell(self, argv: Sequence[str], *, timeout_s: float) -> ShellResult:
        """Run argv directly (no shell); kill its whole process group on timeout."""
        argv = tuple(str(a) for a in argv)
        start = time.monotonic()
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as e:
            return ShellResult(argv, 127, "", f"{argv[0]}: {e.strerror}\n",
                               time.monotonic() - start)
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = proc.communicate()
            return ShellResult(argv, None, out.decode(errors="replace"),
                               err.decode(errors="replace"), time.monotonic() - start,
                               timed_out=True)
        except BaseException:
            _kill_group(proc)  # Ctrl-C: never leave a benchmark running behind us
            raise
        rc = proc.returncode
        if rc < 0:
            rc = 128 - rc  # report signals as a shell does (SIGSEGV -> 139)
        return ShellResult(argv, rc, out.decode(errors="replace"), err.decode(errors="replace"),
                           time.monotonic() - start)

    def pull(self, remote: str, local: Path) -> int:
        """Copy a file out of the work directory."""
        try:
            shutil.copyfile(remote, local)
            return Path(local).stat().st_size
        except OSError as e:
            raise DeviceError(self.serial, f"pull {remote}", e.strerror or str(e)) from None

    def lock(self, owner: str, *, hash_paths: Sequence[str] = ()) -> None:
        """One farm process at a time benchmarks on this machine (flock on workdir/.lock).
        `hash_paths` is for remote devices (push compares local files here)."""
        import fcntl

        Path(self.workdir).mkdir(parents=True, exist_ok=True)
        f = open(Path(self.workdir) / ".lock", "a+")  # noqa: SIM115 - held until unlock()
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip()
            f.close()
            raise DeviceError(self.serial, "lock",
                              f"in use by another farm process ({holder or 'unknown'}); "
                              f"lock {Path(self.workdir) / '.lock'}") from None
        f.seek(0)
        f.truncate()
        f.write(owner + "\n")
        f.flush()
        self._lockfile = f

    def unlock(self) -> None:
        """Release the host lock."""
        f = self._lockfile
        if f is not None:
            f.close()
            self._lockfile = None

    def process_memory_kb(self, match: str) -> tuple[int | None, int | None]:
        """(VmRSS, VmHWM) in kB of the largest process (other than farm) whose command line
        contains `match`, from /proc; (None, None) if there is none."""
        from farm.probes import parse_proc_status_kb

        best: tuple[int | None, int | None] = (None, None)
        me = os.getpid()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            try:
                if match not in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    continue
                rss, hwm = parse_proc_status_kb((entry / "status").read_text())
            except OSError:
                continue
            if rss is not None and (best[0] is None or rss > best[0]):
                best = (rss, hwm)
        return best

    def read_text(self, remote: str) -> str:
        """Read a local file."""
        try:
            return Path(remote).read_text(errors="replace")
        except OSError as e:
            raise DeviceError(self.serial, f"read {remote}", e.strerror or str(e)) from None


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
