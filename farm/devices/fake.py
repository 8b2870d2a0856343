"""`FakeDevice`: replays scripted benchmark_model outputs, for fast unit tests of the runner.

Integration tests use the real adb server and simulated phones instead. Touches nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from farm.devices import DeviceInfo, ShellResult
from farm.errors import DeviceError

Script = Callable[[tuple[str, ...]], ShellResult]


class FakeDevice:
    """A device whose shell answers come from a script function; files are a dict."""

    def __init__(self, info: DeviceInfo, script: Script, *,
                 files: dict[str, str] | None = None) -> None:
        self.serial = info.serial
        self.workdir = "/data/local/tmp/farm"
        self._info = info
        self._script = script
        self.files: dict[str, str] = dict(files or {})
        self.pushed: dict[str, bytes] = {}
        self.calls: list[tuple[str, ...]] = []
        self.lock = threading.Lock()

    def info(self) -> DeviceInfo:
        return self._info

    def push(self, local: Path, remote: str) -> int:
        data = Path(local).read_bytes()
        with self.lock:
            if self.pushed.get(remote) == data:
                return 0
            self.pushed[remote] = data
        return len(data)

    def shell(self, argv: Sequence[str], *, timeout_s: float) -> ShellResult:
        argv = tuple(argv)
        with self.lock:
            self.calls.append(argv)
        return self._script(argv)

    def pull(self, remote: str, local: Path) -> int:
        with self.lock:
            data = self.pushed.get(remote)
            if data is None and remote in self.files:
                data = self.files[remote].encode()
        if data is None:
            raise DeviceError(self.serial, f"pull {remote}", "No such file or directory")
        Path(local).write_bytes(data)
        return len(data)

    def read_text(self, remote: str) -> str:
        with self.lock:
            if remote in self.files:
                return self.files[remote]
        raise DeviceError(self.serial, f"read {remote}", "No such file or directory")
