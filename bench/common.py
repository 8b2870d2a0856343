"""Shared pieces of the bench suite: the machine, simulated labs, configs, models, timers.

Nothing here asserts anything: the benchmarks measure and `bench/run.py` writes the figures.
I/O: starts adb servers (the binary in the adbutils wheel) on free ports and the phone host
(`bench/simhost.py`) as a child process, writes YAML configs into temp dirs, reads /proc.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PY = sys.executable
TINY = ROOT / "tests" / "data" / "models" / "tiny_fp32.tflite"


# ----------------------------------------------------------------------------- results

VERDICTS = {"met": "met", "missed": "**missed**", "inconclusive": "inconclusive (noise)"}


@dataclass
class Section:
    """One benchmark's findings: markdown lines for RESULTS.md and figures for JSON."""

    name: str
    title: str
    goal: str = ""
    # "met" | "missed" | "inconclusive" (the CI straddles the goal) | "" (not judged)
    verdict: str = ""
    headline: str = ""  # the one figure for the summary table
    lines: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, text: str = "") -> None:
        """One markdown line."""
        self.lines.append(text)

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """A markdown table."""
        self.add("| " + " | ".join(header) + " |")
        self.add("|" + "|".join("---" for _ in header) + "|")
        for r in rows:
            self.add("| " + " | ".join(str(c) for c in r) + " |")
        self.add()

    def markdown(self) -> str:
        """The section as RESULTS.md shows it."""
        head = [f"<!-- bench:{self.name} -->", f"## {self.title}", ""]
        if self.goal:
            mark = VERDICTS.get(self.verdict, "not judged")
            head += [f"Goal: {self.goal}. Result: {mark}.", ""]
        tail = [f"_({self.seconds:.0f} s)_", f"<!-- /bench:{self.name} -->", ""]
        return "\n".join(head + self.lines + tail)


def say(msg: str) -> None:
    """Progress on stderr (the bench is a program, not library code)."""
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


# ----------------------------------------------------------------------------- the machine


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _ram_gb() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return None


def git_sha() -> str:
    """The farm checkout's HEAD, with `+dirty` when tracked files differ from it."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, timeout=10, check=False
                             ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True, timeout=10,
                               check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (sha or "unknown") + ("+dirty" if dirty else "")


def load_average() -> tuple[float, float, float]:
    """The 1/5/15-minute load averages (how shared the machine was)."""
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, OS, Python, farm git sha, date and load."""
    from importlib.metadata import PackageNotFoundError, version

    def ver(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    return {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gb": _ram_gb(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "farm_git_sha": git_sha(),
        "ai_edge_litert": ver("ai-edge-litert"),
        "adbutils": ver("adbutils"),
        "load_avg_at_start": [round(x, 2) for x in load_average()],
    }


# ----------------------------------------------------------------------------- statistics


def median(xs: Sequence[float]) -> float:
    """Median (nan for an empty list)."""
    return statistics.median(xs) if xs else float("nan")


def cv(xs: Sequence[float]) -> float:
    """Coefficient of variation (sample stdev / mean), as farm reports it; nan below 2."""
    from farm.analysis import coefficient_of_variation

    return coefficient_of_variation(xs)


def pct(x: float, digits: int = 1) -> str:
    """0.0123 -> '1.2 %'."""
    return "n/a" if x != x else f"{x * 100:.{digits}f} %"


def fmt(x: float | None, digits: int = 2) -> str:
    """A float for a table; n/a for None/nan."""
    if x is None or x != x:
        return "n/a"
    return f"{x:.{digits}f}"


# ----------------------------------------------------------------------------- models


def mobilenet(quantization: str = "fp32") -> Path:
    """The default sweep's MobileNetV2 (alpha 0.35, 96x96) in one quantization: farm's own
    variant build (TF converter in a child process), cached by content hash under farm's
    cache dir, so only the first call on a machine converts."""
    from dataclasses import replace

    from farm import api

    plan = api.load_plan(ROOT / "sweep.yaml", devices_file=ROOT / "devices.yaml")
    sweep = replace(plan.sweep, quantizations=(quantization,))
    [v] = api.build_variants(sweep, cache_dir=api.default_cache_dir())
    if v.status != "ok":
        raise RuntimeError(f"MobileNetV2 {quantization} did not build: {v.error}")
    return Path(v.path)


def model_label(path: Path) -> str:
    """How RESULTS.md names a model file."""
    if path == TINY:
        return "`tiny_fp32.tflite` (16x16 conv, the test model)"
    if path.parent.name == "variants":
        return f"MobileNetV2 0.35 96x96 fp32 (farm's cached variant {path.stem[:12]})"
    return f"`{path.name}`"


# ----------------------------------------------------------------------------- simulated labs


@dataclass
class Lab:
    """adb servers plus simulated phones in child processes (bench/simhost.py)."""

    root: Path
    servers: list[Any]
    phones: list[dict[str, Any]]
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    host_usage: list[dict[str, float]] = field(default_factory=list)

    @property
    def ports(self) -> list[int]:
        """The adb server ports."""
        return [s.port for s in self.servers]

    @property
    def serials(self) -> list[str]:
        """The phones' adb serials."""
        return [p["serial"] for p in self.phones]

    def phones_cpu_s(self) -> float:
        """CPU seconds the phone processes have used so far."""
        return sum(proc_cpu_s(p.pid) or 0.0 for p in self.procs)


def start_servers(n: int) -> list[Any]:
    """`n` real adb servers on free ports, started in parallel (each takes ~3 s)."""
    from farm.sim.control import AdbServer, free_port

    servers: list[Any] = []
    for _ in range(n):
        port = free_port()
        while any(s.port == port for s in servers):
            port = free_port()
        servers.append(AdbServer(port))
    try:
        with ThreadPoolExecutor(max_workers=n) as pool:
            list(pool.map(lambda s: s.start(timeout_s=60), servers))
    except BaseException:  # one failed to start: stop the ones that did
        for s in servers:
            with contextlib.suppress(Exception):
                s.kill()
        raise
    return servers


@contextlib.contextmanager
def lab(root: Path, *, profile: str, phones: int, servers: int = 2, time_scale: float = 1.0,
        seed: int = 0, hosts: int = 1, adb: Sequence[Any] | None = None) -> Iterator[Lab]:
    """Phones of one profile spread over `servers` adb servers (new ones, killed at the end,
    unless `adb` passes running ones in), in `hosts` child processes.

    With one host, phone i joins server i % servers. With several, host k runs every
    hosts-th phone and connects them all to server k % servers: like lab hosts with their own
    USB phones, and the phones' Python work is spread over processes (cores) instead of one GIL.
    """
    own = adb is None
    srv = start_servers(servers) if adb is None else list(adb)
    hosts = max(1, min(hosts, phones))
    lab_ = Lab(root=root, servers=srv, phones=[])
    try:
        root.mkdir(parents=True, exist_ok=True)
        for k in range(hosts):
            count = len(range(k, phones, hosts))
            mine = srv if hosts == 1 else [srv[k % len(srv)]]
            argv = [PY, str(ROOT / "bench" / "simhost.py"), "--root", str(root / f"host{k}"),
                    "--profile", profile, "--count", str(count), "--time-scale",
                    repr(time_scale), "--seed", str(seed + 1000 * k)]
            for s in mine:
                argv += ["--server", str(s.port)]
            with open(root / f"simhost{k}.log", "ab") as log:
                lab_.procs.append(subprocess.Popen(argv, stdin=subprocess.PIPE,
                                                   stdout=subprocess.PIPE, stderr=log,
                                                   text=True, cwd=ROOT))
        per_host = []
        for proc in lab_.procs:
            line = _readline(proc, timeout_s=120 + 2 * phones)
            per_host.append(json.loads(line)["phones"])
        for i in range(max(len(h) for h in per_host)):  # interleave the hosts' phones
            lab_.phones += [h[i] for h in per_host if i < len(h)]
        yield lab_
    finally:
        for proc in lab_.procs:
            with contextlib.suppress(OSError):
                assert proc.stdin is not None
                proc.stdin.close()
        for proc in lab_.procs:
            try:
                last = _readline(proc, timeout_s=60)
                lab_.host_usage.append(json.loads(last) if last.strip() else {})
            except (TimeoutError, RuntimeError, ValueError):
                pass
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if own:
            for s in srv:
                s.kill()


def _readline(proc: subprocess.Popen[str], *, timeout_s: float) -> str:
    """One line of the child's stdout, or TimeoutError (with the child's log tail)."""
    out: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: out.append(proc.stdout.readline()),  # type: ignore
                              daemon=True)
    reader.start()
    reader.join(timeout_s)
    if not out:
        raise TimeoutError(f"bench/simhost.py gave no answer in {timeout_s:.0f} s")
    if not out[0]:
        raise RuntimeError(f"bench/simhost.py exited ({proc.poll()}) before answering")
    return out[0]


def write_configs(tmp: Path, lab_: Lab, *, model: Path, delegates: Sequence[str] = ("cpu",),
                  threads: Sequence[int] = (1,), repeats: int = 2,
                  run: Mapping[str, Any] | None = None,
                  cooldown: Mapping[str, Any] | None = None,
                  extra: Mapping[str, Any] | None = None,
                  serials: Sequence[str] | None = None) -> tuple[Path, Path]:
    """sweep.yaml and devices.yaml for a lab: one model, phones only, the lab's servers, the
    lab's phones (or `serials` of them)."""
    sweep: dict[str, Any] = {
        "schema_version": 1,
        "models": [{"name": model.stem[:24] or "model", "source": str(model)}],
        "quantizations": ["fp32"],
        "delegates": list(delegates),
        "threads": list(threads),
        "repeats": repeats,
        "run": {"warmup_runs": 1, "warmup_min_secs": 0.2, "num_runs": 20, "min_secs": 1.0,
                "max_secs": 30, "timeout_s": 120, **dict(run or {})},
        "cooldown": {"delta_c": 3.0, "timeout_s": 120, **dict(cooldown or {})},
        **dict(extra or {}),
    }
    devices = {"schema_version": 1, "host": "never",
               "adb_servers": [f"127.0.0.1:{p}" for p in lab_.ports],
               "select": {"serials": list(serials if serials is not None else lab_.serials)}}
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "sweep.yaml").write_text(yaml.safe_dump(sweep, sort_keys=False))
    (tmp / "devices.yaml").write_text(yaml.safe_dump(devices, sort_keys=False))
    return tmp / "sweep.yaml", tmp / "devices.yaml"


# ----------------------------------------------------------------------------- timers


class ExclusiveTimer:
    """Wraps functions to accumulate their *exclusive* wall time (a wrapped callee's time is
    subtracted from its caller's), per label, over every thread.

    cProfile sees only the thread that enabled it, and farm works in one thread per device
    plus one sampler thread per sample; this sees them all. `label` is a string or a function
    `label(parent, *args, **kwargs)` of the enclosing wrapped call's label (or "") and the
    call's arguments, e.g. to tell the benchmark_model shell from the probe shells. With
    `absorb=True` the wrapped calls beneath are not timed apart (they count as this call).
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.totals: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._undo: list[tuple[Any, str, Any, bool]] = []

    def wrap(self, owner: Any, attr: str, label: str | Callable[..., str], *,
             absorb: bool = False) -> None:
        """Replace owner.attr by a timed wrapper (undone by `restore`)."""
        original = getattr(owner, attr)
        had = attr in vars(owner)
        self._undo.append((owner, attr, vars(owner).get(attr), had))
        timer = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            stack = timer._stack()
            if stack and stack[-1][2]:  # inside an absorbing call
                return original(*args, **kwargs)
            parent = stack[-1][0] if stack else ""
            name = label(parent, *args, **kwargs) if callable(label) else label
            frame: list[Any] = [name, 0.0, absorb]
            stack.append(frame)
            t0 = timer.clock()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = timer.clock() - t0
                stack.pop()
                if stack:
                    stack[-1][1] += elapsed
                with timer._lock:
                    timer.totals[name] = timer.totals.get(name, 0.0) + elapsed - frame[1]
                    timer.counts[name] = timer.counts.get(name, 0) + 1

        timed.__wrapped__ = original  # type: ignore[attr-defined]
        setattr(owner, attr, timed)

    def _stack(self) -> list[list[Any]]:
        stack: list[list[Any]] | None = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def restore(self) -> None:
        """Put every wrapped function back."""
        for owner, attr, original, had in reversed(self._undo):
            if had:
                setattr(owner, attr, original)
            else:
                delattr(owner, attr)
        self._undo.clear()

    def __enter__(self) -> ExclusiveTimer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()


def proc_cpu_s(pid: int) -> float | None:
    """User+system CPU seconds of a live process (from /proc/PID/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def adb_server_pids(ports: Sequence[int]) -> list[int]:
    """PIDs of the adb server processes serving these ports (from /proc cmdlines)."""
    wanted = {str(p) for p in ports}
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv]
        if any(w.endswith("adb") for w in words[:1]) and "fork-server" in words:
            if wanted & set(words) or any(f"tcp:{p}" in w for w in words for p in wanted):
                pids.append(int(d.name))
    return pids


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    t0 = time.perf_counter()
    r = fn()
    return time.perf_counter() - t0, r
