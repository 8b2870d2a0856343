"""Start, inspect and stop simulated phones; the adb servers they join; the `farm sim up` daemon.

Library API: `AdbServer` (a real adb server, the binary shipped in the adbutils wheel, on a port
the caller chooses), `Fleet` (phones running in this process, one `AdbdServer` listener each) and
the daemon helpers `start_daemon` / `stop_daemon` / `daemon_status` / `daemon_fault`.

I/O: runs the adb binary as a subprocess (start-server, kill-server, connect, disconnect,
devices), always with a timeout and never through a shell; opens loopback TCP listeners for the
phones; the daemon (`python -m farm.sim.control serve`) writes `state.json` and `daemon.log` in its
state directory, keeps each phone's files under `phones/<name>/` there, and answers one-line JSON
requests on a loopback TCP control port guarded by a random token.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from farm.errors import DeviceError, FarmError
from farm.sim.adbd import AdbdServer, SimPhone

logger = logging.getLogger("farm.sim.control")  # also when run as __main__

SCHEMA_VERSION = 1
FAULT_KINDS: tuple[str, ...] = (
    "disconnect",
    "unauthorized",
    "offline",
    "storage_full",
    "crash",
    "hang",
    "slow",
)
# The adb state each handshake fault leaves a phone in, once the server has reconnected.
_FAULT_STATE = {"unauthorized": "unauthorized", "offline": "offline"}
# Environment variables that would redirect the adb CLI to another server or device.
_ADB_ENV_DROP = (
    "ADB_SERVER_SOCKET",
    "ANDROID_ADB_SERVER_ADDRESS",
    "ANDROID_ADB_SERVER_PORT",
    "ANDROID_SERIAL",
    "ADB_TRACE",
)
STATE_FILE = "state.json"
LOG_FILE = "daemon.log"


def default_state_dir() -> Path:
    """`$FARM_SIM_STATE_DIR`, else `~/.cache/farm/sim`."""
    env = os.environ.get("FARM_SIM_STATE_DIR")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "farm" / "sim"


# --- the adb server ------------------------------------------------------------------------------


def adb_binary() -> Path:
    """The adb binary shipped in the adbutils wheel (found without importing adbutils, which only
    `farm.devices.adb` imports), else `adb` on PATH."""
    spec = importlib.util.find_spec("adbutils")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "binaries" / "adb"
            if candidate.is_file():
                return candidate
    found = shutil.which("adb")
    if found:
        return Path(found)
    raise FarmError("no adb binary: install adbutils (it ships one) or put adb on PATH")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _adb_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _ADB_ENV_DROP}
    return env


class AdbServer:
    """A real adb server on 127.0.0.1:`port`, driven through the adb CLI."""

    def __init__(self, port: int, *, adb: Path | None = None) -> None:
        if port <= 0:
            raise FarmError(f"adb server port must be positive, not {port}")
        self.port = port
        self.adb = adb or adb_binary()

    def __repr__(self) -> str:
        return f"AdbServer(port={self.port})"

    def run(self, *args: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
        """`adb -P PORT ARGS...`; output captured as text; raises DeviceError on a timeout."""
        argv = [str(self.adb), "-P", str(self.port), *args]
        try:
            return subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                stdin=subprocess.DEVNULL,
                env=_adb_env(),
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise DeviceError(f"adb:{self.port}", " ".join(args), "timed out") from None

    def is_running(self) -> bool:
        """Whether something accepts connections on the server port."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                return True
        except OSError:
            return False

    def start(self, *, timeout_s: float = 30.0) -> bool:
        """Start the server unless one is running; True when this call started it."""
        if self.is_running():
            return False
        r = self.run("start-server", timeout_s=timeout_s)
        if r.returncode != 0:
            raise DeviceError(f"adb:{self.port}", "start-server", (r.stderr or r.stdout).strip())
        return True

    def kill(self, *, timeout_s: float = 10.0) -> None:
        """`adb kill-server` (a no-op when none runs)."""
        if self.is_running():
            self.run("kill-server", timeout_s=timeout_s)

    def connect(self, address: str, *, timeout_s: float = 30.0) -> str:
        """`adb connect ADDRESS`; returns the server's answer, raises DeviceError on failure."""
        r = self.run("connect", address, timeout_s=timeout_s)
        out = (r.stdout + r.stderr).strip()
        if r.returncode != 0 or "connected to" not in out:
            raise DeviceError(address, "adb connect", out or f"exit {r.returncode}")
        return out

    def disconnect(self, address: str, *, timeout_s: float = 10.0) -> str:
        """`adb disconnect ADDRESS`; returns the server's answer (errors are not raised)."""
        r = self.run("disconnect", address, timeout_s=timeout_s)
        return (r.stdout + r.stderr).strip()

    def devices(self) -> dict[str, str]:
        """`adb devices` as {serial: state}."""
        r = self.run("devices", timeout_s=10.0)
        out: dict[str, str] = {}
        for line in r.stdout.splitlines()[1:]:
            serial, tab, state = line.partition("\t")
            if tab:
                out[serial.strip()] = state.strip()
        return out

    def state(self, serial: str) -> str:
        """One serial's state, or "absent"."""
        return self.devices().get(serial, "absent")

    def wait_for_state(
        self, serial: str, states: str | Sequence[str] = "device", *, timeout_s: float = 20.0
    ) -> str:
        """Poll `adb devices` until `serial` is in one of `states`; DeviceError on timeout."""
        wanted = (states,) if isinstance(states, str) else tuple(states)
        deadline = time.monotonic() + timeout_s
        state = "absent"
        while True:
            state = self.state(serial)
            if state in wanted:
                return state
            if time.monotonic() >= deadline:
                raise DeviceError(
                    serial,
                    f"wait for {'/'.join(wanted)} on adb server :{self.port}",
                    f"still {state} after {timeout_s:.0f} s",
                )
            time.sleep(0.05)


# --- phones in this process ----------------------------------------------------------------------


def _make_phone(
    profile: str, *, root_dir: Path, name: str, time_scale: float, seed: int
) -> tuple[SimPhone, str]:
    """A `farm.sim.phone.Phone` for a shipped profile name or a profile YAML path."""
    from farm.sim.phone import Phone
    from farm.sim.profiles import load_profile

    prof = load_profile(profile)
    phone = Phone(prof, root_dir=root_dir, serial=name, time_scale=time_scale, seed=seed)
    return phone, prof.name


@dataclass
class RunningPhone:
    """A simulated phone running in this process: its adbd listener and its adb servers."""

    name: str
    profile: str
    phone: SimPhone
    adbd: AdbdServer
    adb_servers: list[AdbServer] = field(default_factory=list)

    @property
    def serial(self) -> str:
        """The adb serial, `127.0.0.1:PORT`."""
        return self.adbd.serial

    @property
    def port(self) -> int:
        """The phone's adbd TCP port."""
        return self.adbd.port

    @property
    def adb_port(self) -> int | None:
        """The port of the (first) adb server this phone is connected to."""
        return self.adb_servers[0].port if self.adb_servers else None

    def fault(self, kind: str, *, wait_s: float = 20.0, **params: Any) -> None:
        """Inject a fault. For `unauthorized` and `offline`, return once every adb server the
        phone is connected to shows that state."""
        check_fault_kind(kind)
        self.adbd.inject(kind, **params)
        if kind in _FAULT_STATE:
            for server in self.adb_servers:
                server.wait_for_state(self.serial, _FAULT_STATE[kind], timeout_s=wait_s)

    def clear(self, kind: str | None = None, *, wait_s: float = 20.0) -> None:
        """Clear one fault (or all); return once the phone is `device` again where it was
        connected, if the cleared fault had taken it away."""
        if kind is not None:
            check_fault_kind(kind)
        gone = [k for k in ("unauthorized", "offline", "disconnect") if self.active(k)]
        self.adbd.clear(kind)
        if any(kind in (None, k) for k in gone):
            for server in self.adb_servers:
                if server.state(self.serial) == "absent":  # the server gave up retrying
                    server.connect(self.serial, timeout_s=wait_s)
                server.wait_for_state(self.serial, "device", timeout_s=wait_s)

    def active(self, kind: str) -> bool:
        """Whether a fault is on."""
        return self.phone.faults.active(kind)

    def faults(self) -> dict[str, dict[str, Any]]:
        """Active faults with their parameters."""
        return {k: self.phone.faults.params(k) for k in FAULT_KINDS if self.active(k)}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "name": self.name,
            "serial": self.serial,
            "port": self.port,
            "profile": self.profile,
            "model": self.phone.props.get("ro.product.model", ""),
            "manufacturer": self.phone.props.get("ro.product.manufacturer", ""),
            "sdk": self.phone.props.get("ro.build.version.sdk", ""),
            "adb_ports": [s.port for s in self.adb_servers],
            "connections": self.adbd.connection_count,
            "faults": self.faults(),
            "temp_c": self._temperature_c(),
            "simulated": True,
        }

    def _temperature_c(self) -> float | None:
        thermal = getattr(self.phone, "thermal", None)  # the real Phone has a thermal model
        reading = getattr(thermal, "temperature_c", None)
        return round(float(reading()), 1) if callable(reading) else None


def check_fault_kind(kind: str) -> None:
    """Raise FarmError for an unknown fault kind."""
    if kind not in FAULT_KINDS:
        raise FarmError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")


class Fleet:
    """Simulated phones running in this process (threads), each behind its own adbd listener."""

    def __init__(self, root_dir: Path, *, time_scale: float = 1.0, seed: int = 0) -> None:
        if time_scale <= 0:
            raise FarmError(f"time scale must be positive, not {time_scale}")
        self.root_dir = Path(root_dir)
        self.time_scale = time_scale
        self.seed = seed
        self.phones: list[RunningPhone] = []
        self._counts: dict[str, int] = {}

    def add(self, profile: str, *, port: int = 0, phone: SimPhone | None = None) -> RunningPhone:
        """Start one phone for a profile (name or YAML path) on `port` (0: any free port)."""
        if phone is None:
            stem = Path(profile).stem if profile.endswith((".yaml", ".yml")) else profile
            n = self._counts.get(stem, 0) + 1
            self._counts[stem] = n
            name = f"sim-{stem}-{n}"
            self.root_dir.mkdir(parents=True, exist_ok=True)
            phone, profile_name = _make_phone(
                profile,
                root_dir=self.root_dir,  # the phone keeps its files in a folder named after it
                name=name,
                time_scale=self.time_scale,
                seed=self.seed + len(self.phones),
            )
        else:
            name, profile_name = phone.serial, profile
        adbd = AdbdServer(phone, port=port).start()
        running = RunningPhone(name=name, profile=profile_name, phone=phone, adbd=adbd)
        self.phones.append(running)
        logger.info("started %s (%s) on %s", name, profile_name, adbd.serial)
        return running

    def connect(
        self,
        server: AdbServer,
        phones: Sequence[RunningPhone] | None = None,
        *,
        timeout_s: float = 20.0,
    ) -> None:
        """`adb connect` each phone (default: all) and wait until each is `device`."""
        chosen = list(phones) if phones is not None else self.phones
        for p in chosen:
            server.connect(p.serial, timeout_s=timeout_s)
            if server not in p.adb_servers:
                p.adb_servers.append(server)
        for p in chosen:
            server.wait_for_state(p.serial, "device", timeout_s=timeout_s)

    def disconnect(self, phones: Sequence[RunningPhone] | None = None) -> None:
        """`adb disconnect` each phone from every server it joined."""
        for p in list(phones) if phones is not None else self.phones:
            for server in p.adb_servers:
                if server.is_running():
                    server.disconnect(p.serial)
            p.adb_servers.clear()

    def find(self, key: str) -> RunningPhone:
        """A phone by adb serial, name (sim-flagship-1) or port."""
        for p in self.phones:
            if key in (p.serial, p.name, str(p.port)):
                return p
        known = ", ".join(f"{p.serial} ({p.name})" for p in self.phones) or "none"
        raise FarmError(f"no simulated phone {key!r}; running: {known}")

    def stop(self) -> None:
        """Disconnect every phone from its adb servers and close its listener."""
        self.disconnect()
        for p in self.phones:
            p.adbd.stop()
            close = getattr(p.phone, "close", None)
            if callable(close):
                close()

    def status(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per phone."""
        return [p.to_dict() for p in self.phones]

    def __iter__(self) -> Iterator[RunningPhone]:
        return iter(self.phones)

    def __len__(self) -> int:
        return len(self.phones)

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def default_profiles() -> tuple[str, ...]:
    """Every shipped profile name."""
    from farm.sim.profiles import available_profiles

    return available_profiles()


# --- the daemon ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DaemonState:
    """What `state.json` records about a running `farm sim up` daemon."""

    pid: int
    status: str  # "starting" | "ready" | "failed"
    adb_port: int
    control_port: int = 0
    token: str = ""
    started_adb_server: bool = False
    time_scale: float = 1.0
    phones: tuple[dict[str, Any], ...] = ()
    error: str = ""
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "schema_version": self.schema_version,
            "pid": self.pid,
            "status": self.status,
            "adb_port": self.adb_port,
            "control_port": self.control_port,
            "token": self.token,
            "started_adb_server": self.started_adb_server,
            "time_scale": self.time_scale,
            "phones": [dict(p) for p in self.phones],
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DaemonState:
        """Inverse of `to_dict`; rejects other schema versions."""
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise FarmError(f"{STATE_FILE}: schema_version {version!r}; expected {SCHEMA_VERSION}")
        return cls(
            pid=int(d["pid"]),
            status=str(d["status"]),
            adb_port=int(d["adb_port"]),
            control_port=int(d.get("control_port", 0)),
            token=str(d.get("token", "")),
            started_adb_server=bool(d.get("started_adb_server", False)),
            time_scale=float(d.get("time_scale", 1.0)),
            phones=tuple(dict(p) for p in d.get("phones", ())),
            error=str(d.get("error", "")),
        )


def _write_state(state_dir: Path, state: DaemonState) -> None:
    tmp = state_dir / f".{STATE_FILE}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(state.to_dict(), f, indent=2)
    os.replace(tmp, state_dir / STATE_FILE)


def read_state(state_dir: Path) -> DaemonState | None:
    """The daemon's recorded state, or None when there is none."""
    path = Path(state_dir) / STATE_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as e:
        raise FarmError(f"{path}: cannot read: {e.strerror}") from None
    try:
        return DaemonState.from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError) as e:
        raise FarmError(f"{path}: corrupt simulator state ({e}); delete it") from None


def _is_our_daemon(pid: int) -> bool:
    """Whether `pid` is alive and is a `farm.sim.control serve` process."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if this process started it and it has exited
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no procfs: trust the pid
    return b"farm.sim.control" in cmdline


def _request(state: DaemonState, payload: dict[str, Any], *, timeout_s: float) -> Any:
    """One JSON request to the daemon's control port; returns its `result`."""
    body = dict(payload, token=state.token)
    try:
        with socket.create_connection(("127.0.0.1", state.control_port), timeout=timeout_s) as s:
            s.settimeout(timeout_s)
            s.sendall(json.dumps(body).encode() + b"\n")
            data = bytearray()
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as e:
        raise FarmError(
            f"simulator daemon (pid {state.pid}) does not answer on port {state.control_port}: {e}"
        ) from None
    try:
        reply = json.loads(data)
    except ValueError:
        raise FarmError("simulator daemon sent a malformed reply") from None
    if not reply.get("ok"):
        raise FarmError(str(reply.get("error", "simulator daemon refused the request")))
    return reply.get("result")


def _running_state(state_dir: Path) -> DaemonState:
    state = read_state(state_dir)
    if state is None or not _is_our_daemon(state.pid):
        raise FarmError(f"no simulator is running (state dir {state_dir}); run `farm sim up`")
    if state.status != "ready":
        raise FarmError(f"the simulator daemon is {state.status}: {state.error}")
    return state


def _log_tail(state_dir: Path, lines: int = 15) -> str:
    try:
        text = (state_dir / LOG_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def start_daemon(
    state_dir: Path,
    *,
    adb_port: int,
    profiles: Sequence[str] = (),
    time_scale: float = 1.0,
    seed: int = 0,
    timeout_s: float = 90.0,
) -> DaemonState:
    """Spawn the detached `farm sim up` daemon and wait until its phones are `device`."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    old = read_state(state_dir)
    if old is not None:
        if _is_our_daemon(old.pid):
            raise FarmError(
                f"a simulator is already running (pid {old.pid}, adb port {old.adb_port}); "
                "run `farm sim down` first"
            )
        (state_dir / STATE_FILE).unlink(missing_ok=True)
    argv = [
        sys.executable,
        "-m",
        "farm.sim.control",
        "serve",
        "--state-dir",
        str(state_dir),
        "--adb-port",
        str(adb_port),
        "--time-scale",
        repr(time_scale),
        "--seed",
        str(seed),
    ]
    for p in profiles or default_profiles():
        argv += ["--profile", str(p)]
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(
        [package_root, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    )
    with open(state_dir / LOG_FILE, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # detached: survives the shell that ran `farm sim up`
            close_fds=True,
        )
    deadline = time.monotonic() + timeout_s
    while True:
        state = read_state(state_dir)
        if state is not None and state.pid == proc.pid:
            if state.status == "ready":
                return state
            if state.status == "failed":
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
                raise FarmError(f"farm sim up failed: {state.error}")
        code = proc.poll()
        if code is not None:
            raise FarmError(
                f"the simulator daemon exited with status {code}:\n{_log_tail(state_dir)}"
            )
        if time.monotonic() >= deadline:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            raise FarmError(
                f"the simulator daemon was not ready after {timeout_s:.0f} s:\n"
                f"{_log_tail(state_dir)}"
            )
        time.sleep(0.1)


def stop_daemon(state_dir: Path, *, timeout_s: float = 30.0) -> DaemonState:
    """Ask the daemon to disconnect and stop its phones; wait for it to exit."""
    state_dir = Path(state_dir)
    state = read_state(state_dir)
    if state is None or not _is_our_daemon(state.pid):
        if state is not None:
            (state_dir / STATE_FILE).unlink(missing_ok=True)
        raise FarmError(f"no simulator is running (state dir {state_dir})")
    try:
        _request(state, {"op": "down"}, timeout_s=timeout_s)
    except FarmError as e:
        logger.warning("daemon did not take `down` (%s); sending SIGTERM", e)
        with contextlib.suppress(ProcessLookupError):
            os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _is_our_daemon(state.pid):
        if time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(state.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return state


def daemon_status(state_dir: Path, *, timeout_s: float = 30.0) -> dict[str, Any]:
    """The daemon's phones, their faults and their state on the adb server."""
    state = _running_state(Path(state_dir))
    result = _request(state, {"op": "status"}, timeout_s=timeout_s)
    return dict(result)


def daemon_fault(
    state_dir: Path,
    serial: str,
    kind: str | None,
    params: Mapping[str, Any] | None = None,
    *,
    clear: bool = False,
    timeout_s: float = 60.0,
) -> dict[str, Any]:
    """Inject (or clear) a fault on one of the daemon's phones; returns that phone's status."""
    if kind is not None:
        check_fault_kind(kind)
    elif not clear:
        raise FarmError("a fault kind is needed unless clearing")
    state = _running_state(Path(state_dir))
    payload = {
        "op": "clear" if clear else "fault",
        "serial": serial,
        "kind": kind,
        "params": dict(params or {}),
    }
    return dict(_request(state, payload, timeout_s=timeout_s))


class _Daemon:
    """The process behind `farm sim up`: a Fleet, its adb server and the control port."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.state_dir = Path(args.state_dir)
        self.adb = AdbServer(args.adb_port)
        self.fleet = Fleet(self.state_dir / "phones", time_scale=args.time_scale, seed=args.seed)
        self.profiles: list[str] = list(args.profile or default_profiles())
        self.token = secrets.token_hex(16)
        self.stop_event = threading.Event()
        self.started_adb_server = False
        self.control = socket.create_server(("127.0.0.1", 0))
        self.control_port = int(self.control.getsockname()[1])
        self.time_scale = float(args.time_scale)

    def state(self, status: str, error: str = "") -> DaemonState:
        return DaemonState(
            pid=os.getpid(),
            status=status,
            adb_port=self.adb.port,
            control_port=self.control_port,
            token=self.token,
            started_adb_server=self.started_adb_server,
            time_scale=self.time_scale,
            phones=tuple(
                {
                    k: v
                    for k, v in p.to_dict().items()
                    if k in ("name", "serial", "port", "profile", "model", "manufacturer", "sdk")
                }
                for p in self.fleet
            ),
            error=error,
        )

    def start(self) -> None:
        for profile in self.profiles:
            self.fleet.add(profile)
        self.started_adb_server = self.adb.start()
        self.fleet.connect(self.adb)

    def serve(self) -> None:
        threading.Thread(target=self._accept_loop, name="sim-control", daemon=True).start()
        _write_state(self.state_dir, self.state("ready"))
        logger.info("ready: %d phones on adb server :%d", len(self.fleet), self.adb.port)
        self.stop_event.wait()

    def shutdown(self) -> None:
        logger.info("shutting down")
        with contextlib.suppress(OSError):
            self.control.close()
        self.fleet.stop()
        if self.started_adb_server:
            self.adb.kill()
        (self.state_dir / STATE_FILE).unlink(missing_ok=True)

    def _accept_loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                conn, _ = self.control.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(120)
            data = bytearray()
            try:
                while not data.endswith(b"\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                request = json.loads(data)
                if not secrets.compare_digest(str(request.get("token", "")), self.token):
                    raise FarmError("bad control token")
                reply: dict[str, Any] = {"ok": True, "result": self._do(request)}
            except (FarmError, ValueError, KeyError, TypeError) as e:
                reply = {"ok": False, "error": str(e)}
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(reply).encode() + b"\n")

    def _do(self, request: Mapping[str, Any]) -> Any:
        op = request.get("op")
        if op == "status":
            states = self.adb.devices() if self.adb.is_running() else {}
            phones = []
            for p in self.fleet:
                d = p.to_dict()
                d["adb_state"] = states.get(p.serial, "absent")
                phones.append(d)
            return {
                "pid": os.getpid(),
                "adb_port": self.adb.port,
                "time_scale": self.time_scale,
                "phones": phones,
            }
        if op in ("fault", "clear"):
            phone = self.fleet.find(str(request["serial"]))
            kind = request.get("kind")
            params = dict(request.get("params") or {})
            if op == "fault":
                phone.fault(str(kind), **params)
            else:
                phone.clear(None if kind is None else str(kind))
            d = phone.to_dict()
            d["adb_state"] = self.adb.state(phone.serial)
            return d
        if op == "down":
            self.stop_event.set()
            return {"stopping": True}
        raise FarmError(f"unknown request {op!r}")


def serve(argv: Sequence[str] | None = None) -> int:
    """Entry point of the daemon process (`python -m farm.sim.control serve ...`)."""
    parser = argparse.ArgumentParser(prog="python -m farm.sim.control")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run simulated phones until asked to stop")
    p.add_argument("--state-dir", required=True)
    p.add_argument("--adb-port", type=int, required=True)
    p.add_argument("--profile", action="append")
    p.add_argument("--time-scale", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    Path(args.state_dir).mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    daemon = _Daemon(args)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: daemon.stop_event.set())
    try:
        _write_state(daemon.state_dir, daemon.state("starting"))
        daemon.start()
    except Exception as e:  # noqa: BLE001 - any startup failure is reported through state.json
        logger.exception("startup failed")
        error = str(e) if isinstance(e, FarmError) else f"{type(e).__name__}: {e}"
        _write_state(daemon.state_dir, daemon.state("failed", error))
        with contextlib.suppress(Exception):
            daemon.fleet.stop()
        if daemon.started_adb_server:
            with contextlib.suppress(Exception):
                daemon.adb.kill()
        return 1
    try:
        daemon.serve()
    finally:
        daemon.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(serve())
