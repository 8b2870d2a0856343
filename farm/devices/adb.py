"""`AdbDevice`: a phone reached through an adb server, over adbutils. The only adbutils importer.

Every command goes through `shell2` with an explicit timeout (shell v2 where the phone offers
it, so exit codes and stderr survive); argv elements are quoted with `shlex.quote`, so nothing
from a config file, a model name or a device property is interpreted by the phone's shell.
Pushes are skipped when the phone already holds a file with the same sha256.
"""

from __future__ import annotations

import functools
import logging
import os
import posixpath
import re
import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from farm.devices import CpuCluster, DeviceInfo, ShellResult
from farm.errors import DeviceError
from farm.hashing import file_sha256
from farm.probes import (
    CPU_ROOT,
    DISCOVER_ARGV,
    cluster_cpus,
    parse_discovery,
    parse_freq,
    parse_heads,
)

log = logging.getLogger(__name__)

WORKDIR = "/data/local/tmp/farm"
DEFAULT_SERVER = "127.0.0.1:5037"
QUICK_TIMEOUT_S = 30.0
LOCK_DIR = f"{WORKDIR}/lock"
STALE_LOCK_S = 12 * 3600  # a lock older than this (by the phone's clock) is taken over
STALE_FILE_S = 14 * 86400  # unused models/binaries older than this are removed
SIMULATED_PROP = "ro.farm.simulated"
_UNKNOWN: Any = object()
_GETPROP_RE = re.compile(r"^\[([^\]]+)\]: \[(.*)\]$")
_SAFE_REMOTE = re.compile(r"^/data/local/tmp/farm(/[A-Za-z0-9._-]+)+$")


def parse_getprop(text: str) -> dict[str, str]:
    """`getprop` output (`[key]: [value]` lines) as a dict (pure)."""
    props = {}
    for line in text.splitlines():
        m = _GETPROP_RE.match(line.strip())
        if m:
            props[m.group(1)] = m.group(2)
    return props


def parse_meminfo_mb(text: str) -> int | None:
    """MemTotal from /proc/meminfo in MB (pure)."""
    m = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.M)
    return int(m.group(1)) // 1024 if m else None


def parse_df_free_kb(text: str) -> int | None:
    """Available KiB from `df -k PATH` (toybox layout; pure)."""
    lines = [ln.split() for ln in text.strip().splitlines() if ln.strip()]
    if len(lines) < 2:
        return None
    header, row = lines[0], lines[-1]
    try:
        idx = [h.lower() for h in header].index("available")
    except ValueError:
        idx = 3
    try:
        return int(row[idx])
    except (ValueError, IndexError):
        return None


def soc_of(props: dict[str, str]) -> str:
    """The SoC name, from the most specific property a phone sets."""
    for key in ("ro.soc.model", "ro.board.platform", "ro.hardware"):
        if props.get(key):
            return props[key]
    return ""


def adb_cause(e: BaseException) -> str:
    """What went wrong talking to adb, in words a lab tech can act on."""
    text = str(e)
    if isinstance(e, EOFError) or text.startswith("Unknown data: b''"):
        return f"connection closed by the adb server or the phone (EOF): {text}"
    if isinstance(e, ConnectionRefusedError):
        return f"the adb server refused the connection (not running or restarting): {text}"
    if isinstance(e, ConnectionResetError | BrokenPipeError):
        return f"connection reset by the adb server: {text}"
    return text or type(e).__name__


def _holder_is_dead(holder: str) -> bool:
    """Is the lock's holder a farm process on this host that no longer exists?"""
    m = re.match(r"farm pid (\d+) on ([^,]+)", holder)
    if not m or m.group(2) != socket.gethostname():
        return False
    try:
        os.kill(int(m.group(1)), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def check_remote_path(path: str) -> str:
    """Refuse any remote path outside farm's directory (no '..', no odd characters)."""
    norm = posixpath.normpath(path)
    if norm != path or not _SAFE_REMOTE.fullmatch(path):
        raise DeviceError("?", f"path {path!r}", f"outside {WORKDIR} or not a plain path")
    return path


# Fixed scripts for `sh -c`: every value reaches them as a positional argument ($1, $2, ...),
# each shell-quoted by shlex.join, never pasted into the script text.

# $1 workdir, $2 lock dir, $3 owner text, then paths to hash. One round trip for the lock, the
# phone's clock and the sha256 of every file the run is about to push. The holder's line comes
# last, so nothing in it can pose as a checksum.
LOCK_SCRIPT = (
    'now=$(date +%s); echo "@@now $now"; mkdir -p "$1" || exit 3; '
    'lock=$2; owner=$3; shift 3; echo @@sha256; '
    'if [ $# -gt 0 ]; then sha256sum "$@" 2>/dev/null; fi; '
    'if mkdir "$lock" 2>/dev/null; then echo @@lock taken; '
    "printf '%s %s\\n' \"$now\" \"$owner\" > \"$lock/owner\"; "
    'else echo @@lock held; cat "$lock/owner" 2>/dev/null; fi; exit 0')

# $1 lock dir, $2 our owner line: remove the lock only if it is ours (or has no owner).
UNLOCK_SCRIPT = (
    'h=$(cat "$1/owner" 2>/dev/null); '
    'if [ -z "$h" ] || [ "$h" = "$2" ]; then rm -rf "$1"; echo @@released; '
    'else echo "@@kept $h"; fi')

# $1 workdir, then the files in use (touched, so their age is the time since last use).
CLEANUP_SCRIPT = (
    'd=$1; shift; if [ $# -gt 0 ]; then touch -c "$@"; fi; echo "@@now $(date +%s)"; '
    'stat -c "%Y %n" "$d"/models/* "$d"/bin/* "$d"/tmp/* 2>/dev/null; exit 0')

# One round trip for the facts `info` needs.
INFO_SCRIPT = ("getprop; echo @@nproc; nproc; echo @@sensors; "
               f"{DISCOVER_ARGV[2]}; echo @@meminfo; cat /proc/meminfo")


def split_sections(text: str, names: Sequence[str]) -> dict[str, str]:
    """Split a script's output at `@@name` marker lines -> {"": before, name: body} (pure).

    A marker line may carry words after the name (`@@now 1700000000`); they start its body.
    Only a name's first marker counts: a later one (say, inside a file the script printed)
    stays body text. Line ends are normalised (a legacy shell on a pty answers CRLF).
    """
    pattern = re.compile(r"^@@(" + "|".join(re.escape(n) for n in names) + r")(?: (.*))?$")
    out = {"": ""}
    current = ""
    for line in text.replace("\r\n", "\n").splitlines(keepends=True):
        m = pattern.match(line.rstrip("\n"))
        if m and m.group(1) not in out:
            current = m.group(1)
            out[current] = "" if m.group(2) is None else m.group(2) + "\n"
        else:
            out[current] += line
    return out


def parse_sha256sum(text: str) -> dict[str, str]:
    """`sha256sum FILE...` output -> {path: hex} (pure); unreadable files are absent."""
    out = {}
    for line in text.splitlines():
        m = re.fullmatch(r"([0-9a-f]{64})\s+\*?(\S.*)", line.strip())
        if m:
            out[m.group(2)] = m.group(1)
    return out


def parse_lock_reply(text: str) -> tuple[int | None, bool, str, dict[str, str]]:
    """LOCK_SCRIPT's output -> (phone epoch, taken by us?, holder line if held, sha256s) (pure).
    """
    sec = split_sections(text, ("now", "lock", "sha256"))
    now_text = sec.get("now", "").strip()
    lock = sec.get("lock", "").strip()
    status, _, held = lock.partition("\n")
    return (int(now_text) if now_text.isdigit() else None, status == "taken",
            held.strip(), parse_sha256sum(sec.get("sha256", "")))


def parse_stat_listing(text: str) -> tuple[int | None, list[tuple[int, str]]]:
    """CLEANUP_SCRIPT's output -> (phone epoch, [(mtime, path)]) (pure)."""
    sec = split_sections(text, ("now",))
    lines = sec.get("now", "").splitlines()
    now_text = lines[0].strip() if lines else ""
    entries = []
    for line in lines[1:]:
        mtime, _, path = line.strip().partition(" ")
        if mtime.isdigit() and path:
            entries.append((int(mtime), path))
    return (int(now_text) if now_text.isdigit() else None, entries)


def stale_entries(entries: Sequence[tuple[int, str]], keep: Sequence[str], now: int | None,
                  workdir: str = WORKDIR, stale_s: float = STALE_FILE_S) -> list[str]:
    """Which entries of models/, bin/ and tmp/ to remove (pure): not in use and not used for
    stale_s, or anything in tmp/ (partial pushes, output files) that is not in use."""
    out = []
    for mtime, path in entries:
        sub, _, name = path[len(workdir) + 1:].partition("/")
        # the listing comes from the phone: only plain names right under farm's directories
        if not path.startswith(workdir + "/") or sub not in ("models", "bin", "tmp") \
                or not re.fullmatch(r"[A-Za-z0-9._-]+", name) or name in (".", "..") \
                or posixpath.normpath(path) != path:
            continue
        if any(k == path or k.startswith(path + "/") for k in keep):
            continue
        if sub == "tmp" or (now is not None and now - mtime > stale_s):
            out.append(path)
    return out


def closing_probe_argv(argv: Sequence[str], probe_script: str, marker: str) -> list[str]:
    """argv, then (in the same `sh -c`, so in the same adb round trip) a probe script whose
    output follows a marker line; the exit status stays argv's."""
    script = f'"$@"; rc=$?; echo; echo {shlex.quote(marker)}; {probe_script}; exit $rc'
    return ["sh", "-c", script, "farm-sample", *argv]


def split_closing_probe(stdout: str, marker: str) -> tuple[str, str | None]:
    """(the command's own stdout, the probe's output or None) from closing_probe_argv's
    stdout (pure). The marker's leading newline is the script's, not the command's."""
    found = list(re.finditer(r"\r?\n" + re.escape(marker) + r"\r?\n", stdout))
    if not found:
        return stdout, None
    return stdout[:found[-1].start()], stdout[found[-1].end():].replace("\r\n", "\n")


class AdbDevice:
    """A phone behind an adb server."""

    def __init__(self, client: Any, serial: str, *, server: str = DEFAULT_SERVER,
                 workdir: str = WORKDIR) -> None:
        self.serial = serial
        self.server = server
        self.workdir = workdir
        self._client = client
        self._dev = client.device(serial)
        self._lock = threading.Lock()
        self._info: DeviceInfo | None = None
        self._v2: bool | None = None
        self._owner = ""
        self._sensor_listing: str | None = None
        self._known_sha: dict[str, str | None] = {}

    # ----------------------------------------------------------------- protocol

    def shell(self, argv: Sequence[str], *, timeout_s: float) -> ShellResult:
        """Run argv on the phone (each element shell-quoted) with a hard timeout."""
        from adbutils.errors import AdbError, AdbTimeout

        argv = tuple(str(a) for a in argv)
        cmd = shlex.join(argv)
        start = time.monotonic()
        try:
            r = self._dev.shell2(cmd, timeout=timeout_s, v2=self._shell_v2())
        except AdbTimeout:
            self._kill_leftover(argv)
            return ShellResult(argv, None, "", "", time.monotonic() - start, timed_out=True)
        except (AdbError, OSError, EOFError) as e:
            raise DeviceError(self.serial, f"shell {argv[0]}", adb_cause(e)) from None
        return ShellResult(argv, r.returncode, r.stdout if r.stderr or r.stdout else r.output,
                           r.stderr, time.monotonic() - start)

    def _shell_v2(self) -> bool:
        """Does the phone speak shell v2 (exit codes, separate stderr)? Asked once."""
        if self._v2 is None:
            from adbutils.errors import AdbError

            try:
                self._v2 = "shell_v2" in self._dev.get_features().split(",")
            except (AdbError, OSError, EOFError) as e:
                raise DeviceError(self.serial, "features", adb_cause(e)) from None
        return self._v2

    def reconnect(self) -> None:
        """After an error: `adb connect` again for a network (host:port) serial, since a
        restarted adb server forgets those; then check the phone answers."""
        from adbutils.errors import AdbError

        if re.fullmatch(r"[\w.-]+:\d+", self.serial):
            try:
                self._client.connect(self.serial, timeout=QUICK_TIMEOUT_S)
            except (AdbError, OSError, EOFError) as e:
                raise DeviceError(self.serial, "adb connect", str(e)) from None
        self._v2 = None
        self._dev = self._client.device(self.serial)
        r = self.shell(["true"], timeout_s=QUICK_TIMEOUT_S)
        if r.returncode not in (0, None):
            raise DeviceError(self.serial, "reconnect", f"`true` exited {r.returncode}")

    def lock(self, owner: str, *, hash_paths: Sequence[str] = ()) -> None:
        """Take the phone for this farm process: `mkdir` of LOCK_DIR is atomic on the phone.

        A lock held by another farm process raises DeviceError naming the holder; one older
        than STALE_LOCK_S by the phone's clock is taken over (and logged). The same round trip
        learns the phone's sha256 of `hash_paths`, which `push` then uses instead of asking.
        """
        paths = [check_remote_path(p) for p in hash_paths]
        r = self.shell(["sh", "-c", LOCK_SCRIPT, "farm-lock", WORKDIR, LOCK_DIR, owner, *paths],
                       timeout_s=QUICK_TIMEOUT_S * 4)
        if r.timed_out or r.returncode not in (0, None):
            raise DeviceError(self.serial, "lock", r.output.strip()[:200] or
                              ("timed out" if r.timed_out else f"exit {r.returncode}"))
        now, taken, held, shas = parse_lock_reply(r.stdout)
        self._known_sha = {p: shas.get(p) for p in paths}
        stamp = f"{now} {owner}"
        if not taken:
            since_text, _, holder = held.partition(" ")
            since = int(since_text) if since_text.isdigit() else None
            if (since is not None and now is not None and now - since < STALE_LOCK_S
                    and not _holder_is_dead(holder)):
                raise DeviceError(self.serial, "lock",
                                  f"in use by another farm process ({holder}) for "
                                  f"{(now - since) / 60:.0f} min; lock {LOCK_DIR} (remove it "
                                  "if that process is gone)")
            log.warning("%s: taking over a stale farm lock (%s)", self.serial,
                        held or "no owner")
            try:
                self._write(f"{LOCK_DIR}/owner", stamp)
            except DeviceError as e:  # e.g. storage full: the lock holds, owner unknown
                log.warning("%s: could not write the lock's owner: %s", self.serial, e)
        elif r.stderr.strip():  # the owner line could not be written (storage full)
            log.warning("%s: could not write the lock's owner: %s", self.serial,
                        r.stderr.strip()[:200])
        self._owner = stamp

    def unlock(self) -> None:
        """Release the lock if it is still ours (one round trip)."""
        if not self._owner:
            return
        owner, self._owner = self._owner, ""
        r = self.shell(["sh", "-c", UNLOCK_SCRIPT, "farm-unlock", LOCK_DIR, owner],
                       timeout_s=QUICK_TIMEOUT_S)
        if "@@kept" in r.stdout:
            log.info("%s: the lock is no longer ours; left in place (%s)", self.serial,
                     r.stdout.strip())

    def cleanup(self, keep: Sequence[str]) -> list[str]:
        """Remove farm's stale files: entries of models/ and bin/ that this run does not use
        and that no run has used for STALE_FILE_S, plus leftover partial/output files.
        Files in use are touched, so their age is the time since they were last used.
        One round trip, plus one `rm` when there is something to remove."""
        keep_set = sorted({check_remote_path(k) for k in keep})
        r = self.shell(["sh", "-c", CLEANUP_SCRIPT, "farm-cleanup", WORKDIR, *keep_set],
                       timeout_s=QUICK_TIMEOUT_S)
        now, entries = parse_stat_listing(r.stdout)
        removed = stale_entries(entries, keep_set, now)
        if removed:
            self.shell(["rm", "-rf", *removed], timeout_s=QUICK_TIMEOUT_S)
        return removed

    def _phone_epoch(self) -> int | None:
        r = self.shell(["date", "+%s"], timeout_s=QUICK_TIMEOUT_S)
        text = r.stdout.strip()
        return int(text) if text.isdigit() else None

    def _write(self, remote: str, text: str) -> None:
        """Write a small file through the sync protocol (no shell redirection)."""
        import tempfile

        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write(text + "\n")
        try:
            from adbutils.errors import AdbError

            try:
                self._dev.sync.push(f.name, check_remote_path(remote), mode=0o644)
            except (AdbError, OSError, EOFError) as e:
                raise DeviceError(self.serial, f"write {remote}", str(e)) from None
        finally:
            Path(f.name).unlink(missing_ok=True)

    def read_text(self, remote: str) -> str:
        """cat a small file."""
        r = self.shell(["cat", remote], timeout_s=QUICK_TIMEOUT_S)
        if r.returncode != 0:
            raise DeviceError(self.serial, f"read {remote}", r.output.strip() or
                              f"exit {r.returncode}")
        return r.stdout

    def pull(self, remote: str, local: Path) -> int:
        """Pull a file from farm's directory on the phone over the sync protocol."""
        from adbutils.errors import AdbError

        check_remote_path(remote)
        try:
            # adbutils' pull of a missing file quietly makes an empty local directory
            if self._dev.sync.stat(remote).mode == 0:
                raise DeviceError(self.serial, f"pull {remote}", "No such file or directory")
            self._dev.sync.pull(remote, Path(local))
        except (AdbError, OSError, EOFError) as e:
            raise DeviceError(self.serial, f"pull {remote}", adb_cause(e)) from None
        return Path(local).stat().st_size

    def push(self, local: Path, remote: str) -> int:
        """Push unless the phone already has identical bytes there; verify after pushing."""
        from adbutils.errors import AdbError

        check_remote_path(remote)
        local = Path(local)
        want = file_sha256(local)
        known = self._known_sha.pop(remote, _UNKNOWN)
        have = self.remote_sha256(remote) if known is _UNKNOWN else known
        if have == want:
            return 0
        size = local.stat().st_size
        parent = posixpath.dirname(remote)
        r = self.shell(["mkdir", "-p", parent], timeout_s=QUICK_TIMEOUT_S)
        if r.returncode != 0:
            raise DeviceError(self.serial, f"mkdir {parent}", r.output.strip())
        free = self.free_kb(parent)
        if free is not None and free * 1024 < size + (1 << 20):
            raise DeviceError(self.serial, f"push {local.name}",
                              f"not enough space in {parent}: {free} KiB free, "
                              f"{size // 1024} KiB needed")
        try:
            self._dev.sync.push(local, remote, mode=0o755)
        except (AdbError, OSError, EOFError) as e:
            raise DeviceError(self.serial, f"push {local.name}",
                              f"{e} (check free space and permissions in {parent})") from None
        r = self.shell(["chmod", "755", remote], timeout_s=QUICK_TIMEOUT_S)
        if r.returncode != 0:
            raise DeviceError(self.serial, f"chmod {remote}", r.output.strip())
        got = self.remote_sha256(remote)
        if got is not None and got != want:
            raise DeviceError(self.serial, f"push {local.name}",
                              f"checksum mismatch after push ({got[:12]} != {want[:12]})")
        return size

    def info(self) -> DeviceInfo:
        """Facts from getprop, /proc and /sys (collected once, then cached)."""
        if self._info is not None:
            return self._info
        r = self.shell(["sh", "-c", INFO_SCRIPT], timeout_s=QUICK_TIMEOUT_S)
        sec = split_sections(r.stdout, ("nproc", "sensors", "meminfo"))
        props = parse_getprop(sec[""])
        if not props:
            raise DeviceError(self.serial, "getprop", r.output.strip()[:200] or "no properties")
        nproc = sec.get("nproc", "").strip()
        cpu_count = int(nproc) if nproc.isdigit() else 0
        self._sensor_listing = sec.get("sensors", "")
        heads = parse_heads(self._sensor_listing)
        max_khz: dict[int, int] = {}
        for c in range(cpu_count):
            khz = parse_freq(heads.get(f"{CPU_ROOT}/cpu{c}/cpufreq/cpuinfo_max_freq", ""))
            if khz is not None:
                max_khz[c] = khz
        clusters = tuple(CpuCluster(cpus, khz) for cpus, khz in cluster_cpus(max_khz))
        ram = parse_meminfo_mb(sec.get("meminfo", ""))
        zones = [kind for kind, _ in parse_discovery(self._sensor_listing)[0]]
        sdk_text = props.get("ro.build.version.sdk", "")
        sdk = int(sdk_text) if sdk_text.isdigit() else None
        abis = tuple(a for a in props.get("ro.product.cpu.abilist",
                                          props.get("ro.product.cpu.abi", "")).split(",") if a)
        simulated = props.get(SIMULATED_PROP) == "1"
        info = DeviceInfo(
            serial=self.serial, kind="adb", simulated=simulated,
            manufacturer=props.get("ro.product.manufacturer", ""),
            model=props.get("ro.product.model", ""), soc=soc_of(props), abis=abis,
            android_release=props.get("ro.build.version.release", ""), sdk=sdk,
            fingerprint=props.get("ro.build.fingerprint", ""), cpu_count=cpu_count,
            clusters=clusters, ram_mb=ram, thermal_zones=tuple(zones),
            # No shell command proves a working GPU or NNAPI driver; assume they may exist and
            # let benchmark_model's own delegate status lines decide, sample by sample.
            has_gpu=bool(props.get("ro.hardware.egl") or props.get("ro.opengles.version")),
            has_nnapi=(sdk or 0) >= 27,
            extra=tuple(sorted({"adb_server": self.server,
                                "hexagon": props.get("ro.farm.hexagon", "0")}.items())))
        self._info = info
        return info

    def sensor_listing(self) -> str:
        """The output of probes.DISCOVER_ARGV: read with the device facts, else now."""
        if self._sensor_listing is None:
            self._sensor_listing = self.shell(DISCOVER_ARGV, timeout_s=QUICK_TIMEOUT_S).stdout
        return self._sensor_listing

    def shell_then(self, argv: Sequence[str], script: str, *,
                   timeout_s: float) -> tuple[ShellResult, str | None]:
        """Run argv, then `script` (a fixed probe script) in the same round trip.

        Returns argv's result (its own stdout, argv as given) and the script's output, or
        None when argv timed out (the caller probes separately then).
        """
        marker = f"@@farm-after-{os.urandom(6).hex()}"
        r = self.shell(closing_probe_argv(argv, script, marker), timeout_s=timeout_s)
        own, after = split_closing_probe(r.stdout, marker)
        return (ShellResult(tuple(str(a) for a in argv), r.returncode, own, r.stderr,
                            r.duration_s, timed_out=r.timed_out),
                None if r.timed_out else after)

    # ----------------------------------------------------------------- helpers

    def remote_sha256(self, remote: str) -> str | None:
        """The phone's own sha256sum of a file (md5sum is not comparable; None if missing)."""
        r = self.shell(["sha256sum", remote], timeout_s=QUICK_TIMEOUT_S * 4)
        if r.returncode == 0 and r.stdout.strip():
            token = r.stdout.split()[0]
            if re.fullmatch(r"[0-9a-f]{64}", token):
                return token
        return None

    def free_kb(self, path: str) -> int | None:
        """Available space under path, from df."""
        r = self.shell(["df", "-k", path], timeout_s=QUICK_TIMEOUT_S)
        return parse_df_free_kb(r.stdout) if r.returncode == 0 else None

    def _kill_leftover(self, argv: tuple[str, ...]) -> None:
        """After a timeout, kill what we started so the phone is free for the next sample."""
        binary = next((a for a in argv if a.startswith(self.workdir)), "")
        if not binary:
            return
        try:
            r = self._dev.shell2(shlex.join(["ps", "-A", "-o", "PID,ARGS"]),
                                 timeout=QUICK_TIMEOUT_S)
            for line in r.output.splitlines()[1:]:
                pid, _, args = line.strip().partition(" ")
                if pid.isdigit() and binary in args:
                    self._dev.shell2(shlex.join(["kill", "-9", pid]), timeout=QUICK_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001 - best effort; the sample is already a failure
            log.warning("%s: could not kill %s after a timeout: %s", self.serial, binary, e)


# ----------------------------------------------------------------------------- discovery

@functools.cache
def _client_class() -> Any:
    from adbutils import AdbClient

    class Client(AdbClient):  # type: ignore[misc]
        """adbutils' client, asking the server's version once: adbutils asks it before every
        shell and sync connection to a serial, which is a second connection to the server (and
        its 10 ms close) per round trip. The version of a running server does not change; a
        restarted one is the same adb binary."""

        _version: int | None = None

        def server_version(self) -> int:
            if self._version is None:
                self._version = int(super().server_version())
            return self._version

    return Client


def _client(server: str) -> Any:
    host, _, port = server.rpartition(":")
    return _client_class()(host=host, port=int(port), socket_timeout=QUICK_TIMEOUT_S)


def ensure_server(server: str) -> bool:
    """Is the adb server up? Start the local default one with adbutils' adb if not."""
    import adbutils

    client = _client(server)
    try:
        client.server_version()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        pass
    host, _, port = server.rpartition(":")
    if host not in ("127.0.0.1", "localhost") or server != DEFAULT_SERVER:
        return False
    try:
        subprocess.run([adbutils.adb_path(), "-P", port, "start-server"], capture_output=True,
                       timeout=QUICK_TIMEOUT_S, check=False)
        client.server_version()
        return True
    except Exception:  # noqa: BLE001
        return False


def list_all(servers: Sequence[str]) -> Iterator[tuple[str, Any, str, str]]:
    """(server, client, serial, state) for every device on every reachable server."""
    for server in servers:
        if not ensure_server(server):
            yield server, None, "", "server unreachable"
            continue
        client = _client(server)
        try:
            for d in client.list():
                yield server, client, d.serial, d.state
        except Exception as e:  # noqa: BLE001
            yield server, None, "", f"server error: {e}"


def selected(serial: str, model: str, fleet: Any) -> bool:
    """Does devices.yaml's select: section admit this device?"""
    if not (fleet.serials or fleet.patterns or fleet.models):
        return True
    return (serial in fleet.serials or any(fnmatchcase(serial, p) for p in fleet.patterns)
            or bool(model and any(fnmatchcase(model, p) for p in fleet.models)))


def discover(fleet: Any) -> list[tuple[AdbDevice, DeviceInfo]]:
    """Usable phones (state `device`) on every adb server in devices.yaml.

    Facts are collected from all phones at once (a few round trips each), so discovery
    does not grow with the size of the lab.
    """
    from concurrent.futures import ThreadPoolExecutor

    devs = [AdbDevice(client, serial, server=server)
            for server, client, serial, state in list_all(fleet.adb_servers or (DEFAULT_SERVER,))
            if client is not None and state == "device"]

    def facts(dev: AdbDevice) -> DeviceInfo | None:
        try:
            return dev.info()
        except DeviceError as e:
            log.warning("%s: skipped: %s", dev.serial, e)
            return None

    with ThreadPoolExecutor(max_workers=max(1, min(32, len(devs))),
                            thread_name_prefix="farm-discover") as pool:
        infos = list(pool.map(facts, devs))
    return [(d, i) for d, i in zip(devs, infos, strict=True)
            if i is not None and selected(d.serial, i.model, fleet)]


def doctor(fleet: Any) -> list[dict[str, Any]]:
    """Every device on every server, with why it cannot be used (for `farm devices`)."""
    from farm.errors import BenchmarkError
    from farm.vendor import pick_binary

    rows: list[dict[str, Any]] = []
    vendor_dir = Path(__file__).resolve().parents[2] / "vendor" / "benchmark_model"
    for server, client, serial, state in list_all(fleet.adb_servers or (DEFAULT_SERVER,)):
        if client is None:
            if fleet.adb_servers:
                rows.append({"serial": f"({server})", "state": "unreachable", "reason": state,
                             "server": server})
            continue
        row: dict[str, Any] = {"serial": serial, "state": state, "server": server,
                               "reason": {"unauthorized": "unauthorized: accept the USB "
                                          "debugging prompt on the phone",
                                          "offline": "offline: reconnect the cable or "
                                          "`adb reconnect`"}.get(state, "")}
        if state == "device":
            dev = AdbDevice(client, serial, server=server)
            try:
                info = dev.info()
            except DeviceError as e:
                row["reason"] = str(e)
                rows.append(row)
                continue
            row.update(label=info.label, simulated=info.simulated, info=info.to_dict(),
                       facts=f"{info.soc}, {len(info.clusters)} clusters/{info.cpu_count} CPUs,"
                             f" {info.ram_mb} MB RAM, Android {info.android_release} "
                             f"(SDK {info.sdk}), ABIs {','.join(info.abis)}")
            from farm.api import tier_of

            row["tier"] = tier_of(info, fleet)
            if not selected(serial, info.model, fleet):
                row["reason"] = "not selected in devices.yaml"
            try:
                pick_binary(info.abis, vendor_dir)
            except BenchmarkError as e:
                if not info.simulated:  # simulated phones run the simulator's stub binary
                    row["reason"] = str(e)
        rows.append(row)
    return rows
