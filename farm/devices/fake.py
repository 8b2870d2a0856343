"""`FakeDevice`: replays scripted benchmark_model outputs, for fast unit tests of the runner.

Integration tests use the real adb server and simulated phones instead. Touches nothing.
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase
from pathlib import Path

from farm.devices import DeviceInfo, ShellResult
from farm.errors import DeviceError

Script = Callable[[tuple[str, ...]], ShellResult]


class FakeDevice:
    """A device whose shell answers come from a script function; files are a dict."""

    def __init__(self, info: DeviceInfo, script: Script, *,
                 files: dict[str, str] | None = None, answer_help: bool = True) -> None:
        self.serial = info.serial
        self.workdir = "/data/local/tmp/farm"
        self._info = info
        self._script = script
        self.files: dict[str, str] = dict(files or {})
        self.pushed: dict[str, bytes] = {}
        self.calls: list[tuple[str, ...]] = []
        self.lock = threading.Lock()
        self.answer_help = answer_help  # `benchmark_model --help` prints the usage table

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
        if argv[:2] == ("sh", "-c") and argv[2].startswith("head -n 1 "):
            return self._sensor_script(argv)
        if self.answer_help and argv[-1:] == ("--help",):
            from farm.sim.benchmark import usage_text

            return ShellResult(argv, 1, "", "ERROR: " + usage_text((2, 19), argv[0]) +
                               "\nERROR: Benchmarking failed.\n")
        return self._script(argv)

    def _sensor_script(self, argv: tuple[str, ...]) -> ShellResult:
        """Answer farm.probes' two fixed `sh -c` scripts (discovery and the sampler's tick)
        from `files` and the script's `dumpsys` answers; nothing else is interpreted."""
        script = argv[2]
        head = script[len("head -n 1 "):].split(" 2>/dev/null", 1)[0]
        out = []
        for pattern in shlex.split(head):
            with self.lock:
                names = sorted(f for f in self.files if fnmatchcase(f, pattern))
            for name in names:
                out.append(f"==> {name} <==\n{self.files[name].splitlines()[0]}\n")
        if "@@mem" in script:
            out.append("@@mem\n@@thermal\n")
            if "dumpsys thermalservice" in script:
                out.append(self._script(("dumpsys", "thermalservice")).stdout)
            out.append("@@battery\n")
            if "dumpsys battery" in script:
                out.append(self._script(("dumpsys", "battery")).stdout)
        return ShellResult(argv, 0, "".join(out), "")

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
