"""The simulated phone: properties, adbd banner, filesystem, processes, clock, thermal state and
fault flags, behind the interface the adbd transport (`farm/sim/adbd.py`) drives.

Does host file I/O through `SimFS` (one directory per phone under `root_dir`) and runs shell
commands in threads. Thread-safe: the adb server opens several streams at once.
"""

from __future__ import annotations

import errno
import posixpath
import random
import re
import stat as st
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO

from farm.sim.fs import SimFS, build_tree, fs_error
from farm.sim.profiles import Profile
from farm.sim.shell import (
    PATH,
    SH,
    SIGHUP,
    CallbackOut,
    Pipe,
    PipeIn,
    ProcessTable,
    Shell,
    ShellState,
    SimProc,
    Streams,
)
from farm.sim.thermal import SimClock, ThermalModel

FAULT_KINDS: tuple[str, ...] = ("disconnect", "unauthorized", "offline", "storage_full", "crash",
                                "hang", "slow")
TRANSPORT_FAULTS: tuple[str, ...] = ("disconnect", "unauthorized", "offline", "slow")


class FaultState:
    """Thread-safe set of active fault kinds, each with its parameters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[str, dict[str, Any]] = {}
        self._changed = threading.Condition(self._lock)

    def set(self, kind: str, **params: Any) -> None:
        """Activate (or re-parameterise) a fault."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
        with self._lock:
            self._active[kind] = dict(params)
            self._changed.notify_all()

    def clear(self, kind: str | None = None) -> None:
        """Deactivate one fault, or all of them."""
        if kind is not None and kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
        with self._lock:
            if kind is None:
                self._active.clear()
            else:
                self._active.pop(kind, None)
            self._changed.notify_all()

    def active(self, kind: str) -> bool:
        """Whether a fault is on."""
        with self._lock:
            return kind in self._active

    def params(self, kind: str) -> dict[str, Any]:
        """A copy of the parameters of an active fault ({} if inactive)."""
        with self._lock:
            return dict(self._active.get(kind, {}))

    def kinds(self) -> tuple[str, ...]:
        """Active fault kinds."""
        with self._lock:
            return tuple(sorted(self._active))

    def wait_change(self, timeout: float) -> None:
        """Block until a fault is set or cleared (or the timeout passes)."""
        with self._lock:
            self._changed.wait(timeout)


class Process:
    """A running `shell:`/`shell,v2:`/`exec:` command, as the transport sees it."""

    def __init__(self, phone: Phone, command: str, *, pty: bool,
                 on_stdout: Callable[[bytes], None], on_stderr: Callable[[bytes], None]) -> None:
        self.phone = phone
        self.command = command
        self.pty = pty
        self._stdin = Pipe()
        self._status: int | None = None
        self._done = threading.Event()
        lock = threading.Lock()
        out = CallbackOut(on_stdout, pty, lock)
        err = out if pty else CallbackOut(on_stderr, False, threading.Lock())
        stdin = PipeIn(self._stdin, tty=pty)
        argv = (SH, "-c", command) if command.strip() else ("-" + SH.rsplit("/", 1)[-1],)
        self.sh: SimProc = phone.procs.spawn(ppid=702, name="sh", argv=argv)
        state = ShellState(vars=phone.initial_env(), exported=set(phone.initial_env()),
                           cwd="/", affinity=(1 << phone.profile.cpu.cpu_count) - 1)
        self.sh.affinity = state.affinity
        self._shell = Shell(phone, self.sh, Streams(stdin, out, err), state, tty=pty)
        self._thread = threading.Thread(target=self._run, name=f"sim-sh-{self.sh.pid}",
                                        daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int:
        """The shell's pid."""
        return self.sh.pid

    def _run(self) -> None:
        try:
            if self.command.strip():
                status = self._shell.run_script(self.command)
            else:  # `adb shell` with no command: an interactive shell on the pty
                status = self._shell.run_interactive(self.phone.props["ro.product.device"])
            # a non-interactive mksh waits for nothing else; background jobs keep running
            self._status = status & 0xFF if status <= 255 else 255
        except BaseException:  # noqa: BLE001 - a simulator bug must not hang the adb stream
            import logging

            logging.getLogger(__name__).exception("shell crashed: %s", self.command)
            self._status = 255
        finally:
            self.phone.procs.exit(self.sh.pid)
            self._done.set()

    def write_stdin(self, data: bytes) -> None:
        """Bytes from the host (shell_v2 id 0, or raw data on the legacy service)."""
        if data and not self._stdin.reader_closed:
            self._stdin.write_nowait(data)

    def close_stdin(self) -> None:
        """EOF on the command's stdin (shell_v2 close-stdin)."""
        self._stdin.close_write()

    def wait(self, timeout: float | None = None) -> int | None:
        """Exit status (128+N when killed by signal N), or None if still running."""
        if not self._done.wait(timeout):
            return None
        return self._status

    def hangup(self) -> None:
        """The transport closed: SIGHUP to the session, as adbd and the pty do."""
        self._stdin.close_write()
        for p in self.phone.procs.session_members(self.sh.session):
            if self.pty or not p.background:
                p.signal(SIGHUP)
        self.sh.signal(SIGHUP)


class Phone:
    """One simulated Android phone."""

    def __init__(self, profile: Profile, *, root_dir: Path, serial: str,
                 time_scale: float = 1.0, seed: int = 0) -> None:
        self.profile = profile
        self.serial = serial
        self.time_scale = time_scale
        self.seed = seed
        self.rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self.clock = SimClock(time_scale)
        self.faults = FaultState()
        self.thermal = ThermalModel(profile, self.clock)
        self.procs = ProcessTable(self.clock.uptime_s, sdk=profile.sdk)
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", serial)
        self.root_dir = Path(root_dir) / safe
        self.fs = SimFS(self.root_dir,
                        quota_bytes=profile.storage_free_mb * 1024 * 1024,
                        total_bytes=profile.storage_total_mb * 1024 * 1024,
                        now=self.clock.epoch_s,
                        storage_full=lambda: self.faults.active("storage_full"))
        self._props_lock = threading.Lock()
        props = profile.props()
        props["ro.serialno"] = _hw_serial(serial, seed)
        props["ro.boot.serialno"] = props["ro.serialno"]
        self._props: dict[str, str] = props
        self.props: Mapping[str, str] = MappingProxyType(self._props)
        build_tree(self.fs, self)

    # -- identity ----------------------------------------------------------------------------

    def banner(self) -> bytes:
        """The CNXN banner adbd sends."""
        p = self.props
        parts = [f"ro.product.name={p['ro.product.name']}",
                 f"ro.product.model={p['ro.product.model']}",
                 f"ro.product.device={p['ro.product.device']}"]
        body = ";".join(parts) + ";"
        if self.profile.features:
            body += "features=" + ",".join(self.profile.features)
        return b"device::" + body.encode()

    def set_prop(self, name: str, value: str) -> None:
        """setprop (runtime properties)."""
        with self._props_lock:
            self._props[name] = value

    def initial_env(self) -> dict[str, str]:
        """The environment adbd gives a shell."""
        return {"PATH": PATH, "HOME": "/", "SHELL": SH, "USER": "shell", "LOGNAME": "shell",
                "HOSTNAME": "localhost", "TERM": "dumb", "TMPDIR": "/data/local/tmp",
                "ANDROID_DATA": "/data", "ANDROID_ROOT": "/system",
                "ANDROID_STORAGE": "/storage", "EXTERNAL_STORAGE": "/sdcard",
                "ASEC_MOUNTPOINT": "/mnt/asec", "BOOTCLASSPATH": "/apex/com.android.art/"
                "javalib/core-oj.jar", "ANDROID_ASSETS": "/system/app"}

    def random(self) -> random.Random:
        """A new RNG derived from the phone's seed (deterministic sequence per phone)."""
        with self._rng_lock:
            return random.Random(self.rng.getrandbits(64))

    # -- shell -------------------------------------------------------------------------------

    def spawn(self, command: str, *, pty: bool, on_stdout: Callable[[bytes], None],
              on_stderr: Callable[[bytes], None]) -> Process:
        """Run `command` with /system/bin/sh -c in a thread (pty: merged streams, a tty)."""
        return Process(self, command, pty=pty, on_stdout=on_stdout, on_stderr=on_stderr)

    def run(self, command: str, *, timeout: float | None = 60.0,
            pty: bool = False) -> tuple[int | None, str, str]:
        """Convenience for tests and tools: run and collect (status, stdout, stderr)."""
        out = bytearray()
        err = bytearray()
        proc = self.spawn(command, pty=pty, on_stdout=out.extend, on_stderr=err.extend)
        proc.close_stdin()
        status = proc.wait(timeout)
        if status is None:
            proc.hangup()
            proc.wait(5.0)
        return status, out.decode(errors="replace"), err.decode(errors="replace")

    # -- sync service ------------------------------------------------------------------------

    def sync_stat(self, path: str) -> tuple[int, int, int] | None:
        """lstat v1: (mode, size, mtime); None when it fails (adbd then sends zeros)."""
        try:
            s = self.fs.stat(path, follow=False)
        except OSError:
            return None
        return s.mode, s.size & 0xFFFFFFFF, int(s.mtime)

    def sync_stat_v2(self, path: str, *, follow: bool = True) -> dict[str, int]:
        """Fields of the STA2 (follow) / LST2 (no follow) struct, with `error` as an errno."""
        try:
            s = self.fs.stat(path, follow=follow)
        except OSError as e:
            return {"error": e.errno or errno.EIO, "dev": 0, "ino": 0, "mode": 0, "nlink": 0,
                    "uid": 0, "gid": 0, "size": 0, "atime": 0, "mtime": 0, "ctime": 0}
        t = int(s.mtime)
        return {"error": 0, "dev": s.dev, "ino": s.ino, "mode": s.mode, "nlink": s.nlink,
                "uid": s.uid, "gid": s.gid, "size": s.size, "atime": t, "mtime": t,
                "ctime": t}

    def sync_list(self, path: str) -> list[tuple[str, int, int, int]]:
        """(name, mode, size, mtime) for '.', '..' and every entry of a directory."""
        s = self.fs.stat(path)
        if not s.is_dir:
            raise fs_error(errno.ENOTDIR, path)
        names = self.fs.listdir(path)
        full = self.fs.realpath(path)
        out = []
        for name in [".", ".."] + sorted(names):
            target = full if name == "." else (posixpath.dirname(full) or "/") if (
                name == "..") else posixpath.join(full, name)
            try:
                es = self.fs.stat(target, follow=False)
            except OSError:
                continue
            out.append((name, es.mode, es.size & 0xFFFFFFFF, int(es.mtime)))
        return out

    def sync_open_write(self, path: str, mode: int) -> BinaryIO:
        """Open a pushed file as adbd does: mkdir -p the parent, replace, fix permissions."""
        if not path.startswith("/"):
            raise fs_error(errno.ENOENT, path)
        perm = mode & 0o777
        user = perm & 0o700
        perm = user | (user >> 3) | (user >> 6)  # adbd copies the user bits to group and other
        parent = posixpath.dirname(path) or "/"
        if not self.fs.exists(parent):
            self.fs.makedirs(parent)
        try:
            existing = self.fs.stat(path, follow=False)
        except OSError:
            existing = None
        if existing is not None:
            if existing.is_dir:
                raise fs_error(errno.EISDIR, path)
            if st.S_ISREG(existing.mode) or existing.is_link:
                self.fs.unlink(path)
        f = self.fs.open_write(path, create_mode=perm)
        self.fs.set_mode(path, perm)
        return f

    def sync_finish_write(self, path: str, f: BinaryIO, mtime: int, ok: bool) -> None:
        """Close a pushed file; set its mtime, or unlink it when the transfer failed."""
        try:
            f.close()
        finally:
            if ok:
                self.fs.touch_mtime(path, mtime=float(mtime))
            else:
                try:
                    self.fs.unlink(path)
                except OSError:
                    pass

    def sync_open_read(self, path: str) -> BinaryIO:
        """Open a file for `adb pull`."""
        return self.fs.open_read(path)

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Kill every shell process (the phone is going away)."""
        for p in self.procs.snapshot():
            if not p.system:
                p.signal(9)

    def __repr__(self) -> str:
        return f"Phone({self.serial!r}, {self.profile.name!r})"


def _hw_serial(serial: str, seed: int) -> str:
    import hashlib

    return hashlib.sha256(f"{serial}:{seed}".encode()).hexdigest()[:12].upper()


__all__ = ["FAULT_KINDS", "TRANSPORT_FAULTS", "FaultState", "Phone", "Process", "SimProc"]
