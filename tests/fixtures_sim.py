"""pytest fixtures for simulated phones on real adb servers (the binary shipped in adbutils).

Import what you use into your test module, fixtures and their dependencies alike:

    from tests.fixtures_sim import adb_server, adb_servers, sim_fleet  # noqa: F401

- `adb_servers` (session): a pool of real adb servers on free non-default ports, started on
  demand (in parallel) and killed with `adb kill-server` at the end of the session.
- `adb_server`: the pool's first server.
- `sim_fleet`: a factory, `sim_fleet(profiles=("flagship",), servers=1, time_scale=1.0, seed=0)`,
  that starts phones in this process (threads), `adb connect`s phone i to server i % servers,
  waits until each is `device` and returns a `SimFleet` of `SimHandle`s (`.serial`, `.adb_port`,
  `.profile`, `.name`, `.phone`, `.fault(kind, **params)`, `.clear(kind)`, `.device()` for an
  adbutils device, `.adb(*args)` for the adb CLI). Phones are disconnected and stopped at teardown.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import adbutils
import pytest

from farm.sim.control import AdbServer, Fleet, RunningPhone, free_port


class AdbServerPool:
    """Real adb servers for the whole session, started when first needed."""

    def __init__(self) -> None:
        self._servers: list[AdbServer] = []
        self._lock = threading.Lock()

    def get(self, n: int = 1) -> list[AdbServer]:
        """The first `n` servers, starting the missing ones in parallel (each start takes ~3 s:
        a new adb server waits for its device scan before it accepts clients)."""
        with self._lock:
            missing = n - len(self._servers)
            if missing > 0:
                new = [AdbServer(free_port()) for _ in range(missing)]
                with ThreadPoolExecutor(max_workers=missing) as pool:
                    list(pool.map(lambda s: s.start(timeout_s=60), new))
                self._servers.extend(new)
            return self._servers[:n]

    def close(self) -> None:
        """Kill every server this pool started."""
        with self._lock:
            for s in self._servers:
                s.kill()
            self._servers.clear()


@dataclass
class SimHandle:
    """One simulated phone as a test sees it."""

    running: RunningPhone
    server: AdbServer

    @property
    def serial(self) -> str:
        """The adb serial, `127.0.0.1:PORT`."""
        return self.running.serial

    @property
    def adb_port(self) -> int:
        """The port of the adb server this phone is connected to."""
        return self.server.port

    @property
    def profile(self) -> str:
        """The profile name (flagship, midrange, lowend, old_armv7, ...)."""
        return self.running.profile

    @property
    def name(self) -> str:
        """The phone's own name, e.g. sim-flagship-1."""
        return self.running.name

    @property
    def phone(self) -> Any:
        """The `farm.sim.phone.Phone` object (to peek at its state in tests)."""
        return self.running.phone

    def fault(self, kind: str, **params: Any) -> None:
        """Inject a fault (handshake faults return once adb shows the new state)."""
        self.running.fault(kind, **params)

    def clear(self, kind: str | None = None) -> None:
        """Clear a fault (or all); returns once the phone is back to `device` if it was away."""
        self.running.clear(kind)

    def client(self) -> adbutils.AdbClient:
        """An adbutils client of this phone's adb server."""
        return adbutils.AdbClient(host="127.0.0.1", port=self.server.port)

    def device(self) -> adbutils.AdbDevice:
        """This phone through adbutils."""
        return self.client().device(self.serial)

    def farm_device(self) -> Any:
        """This phone as farm drives it: a farm AdbDevice on farm's own adb client."""
        from farm.devices import adb

        server = f"127.0.0.1:{self.server.port}"
        return adb.AdbDevice(adb._client(server), self.serial, server=server)

    def adb(
        self, *args: str, input: bytes | None = None, timeout_s: float = 60.0
    ) -> subprocess.CompletedProcess[bytes]:
        """`adb -P PORT -s SERIAL ARGS...` with bytes output (stdin empty unless `input`)."""
        argv = [str(self.server.adb), "-P", str(self.server.port), "-s", self.serial, *args]
        return subprocess.run(
            argv,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )


@dataclass
class SimFleet:
    """The phones one `sim_fleet(...)` call started."""

    fleet: Fleet
    servers: list[AdbServer]
    phones: list[SimHandle] = field(default_factory=list)

    def __iter__(self) -> Iterator[SimHandle]:
        return iter(self.phones)

    def __len__(self) -> int:
        return len(self.phones)

    def __getitem__(self, i: int) -> SimHandle:
        return self.phones[i]

    def by_profile(self, profile: str) -> list[SimHandle]:
        """The phones of one profile."""
        return [p for p in self.phones if p.profile == profile]

    def on_server(self, server: AdbServer) -> list[SimHandle]:
        """The phones connected to one adb server."""
        return [p for p in self.phones if p.server is server]


# One pool per process: every test module binds this fixture under its own name, which gives
# pytest one session-scoped instance per module; sharing the pool keeps it one server start.
_POOL = AdbServerPool()


@pytest.fixture(scope="session")
def adb_servers() -> Iterator[AdbServerPool]:
    """Session-wide pool of real adb servers (killed at the end; restarted on demand)."""
    try:
        yield _POOL
    finally:
        _POOL.close()


@pytest.fixture
def adb_server(adb_servers: AdbServerPool) -> AdbServer:
    """A real adb server on a free non-default port (shared by the session)."""
    return adb_servers.get(1)[0]


@pytest.fixture
def sim_fleet(
    adb_servers: AdbServerPool, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., SimFleet]]:
    """Factory: start simulated phones, connect them to 1 or 2 adb servers, stop them after."""
    made: list[Fleet] = []

    def make(
        profiles: Sequence[str] = ("flagship",),
        servers: int = 1,
        time_scale: float = 1.0,
        seed: int = 0,
    ) -> SimFleet:
        if servers < 1:
            raise ValueError("servers must be >= 1")
        pool = adb_servers.get(servers)
        root: Path = tmp_path_factory.mktemp("simphones")
        fleet = Fleet(root, time_scale=time_scale, seed=seed)
        made.append(fleet)
        result = SimFleet(fleet=fleet, servers=list(pool))
        for i, profile in enumerate(profiles):
            running = fleet.add(profile)
            result.phones.append(SimHandle(running=running, server=pool[i % servers]))
        for server in pool:
            mine = [h.running for h in result.phones if h.server is server]
            if mine:
                fleet.connect(server, mine)
        return result

    yield make
    for fleet in made:
        fleet.stop()
