"""Soak: one long, time-scaled sweep over many simulated phones while random faults strike.

    python bench/soak.py --phones 12 --minutes 5 [--servers 2] [--time-scale 20] [--seed 0]
                         [--write]

The phones run in `farm sim up` daemons (one per adb server, each a separate process with its
own real adb server), so the memory sampled here is the controller's alone: this process runs
`farm.api.run_plan` in its main thread, a chaos thread that injects faults through the daemons'
control ports (disconnects, handshake faults, benchmark_model crashes and hangs, adb server
restarts), and a sampler thread that reads this process's RSS every few seconds.

It reports samples completed, samples lost (planned (case, repeat) pairs missing from the store:
must be 0), duplicates (appends the store ignored as already present: must be 0; rows sharing
a (run, case, repeat) are shown too, though the store's UNIQUE constraint keeps them at 0), the
faults injected, the phones quarantined and the controller's memory over time, as a Markdown
section on stdout; `--write` appends it to bench/RESULTS.md.
Exit status 1 when a sample was lost or doubled. Not part of the pytest suite.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import git_sha  # noqa: E402 - after the path fix above
from farm import api  # noqa: E402
from farm.errors import FarmError  # noqa: E402
from farm.sim import control  # noqa: E402

TINY = ROOT / "tests" / "data" / "models" / "tiny_fp32.tflite"
PROFILES = ("flagship", "midrange", "lowend", "old_armv7")
RESULTS = ROOT / "bench" / "RESULTS.md"
# Chaos: a fault every GAP_S seconds on average; each handshake/crash/hang fault lasts a few
# seconds, comparable to the runner's backoff (1 + 2 s before the third try), so some phones
# recover and some are quarantined. An adb server restart at most every RESTART_GAP_S.
GAP_S = (2.0, 6.0)
HOLD_S = (0.5, 4.0)
RESTART_GAP_S = 45.0
SAMPLE_EVERY_S = 2.0
SAMPLE_TIMEOUT_S = 6.0  # the sweep's run.timeout_s: a hang costs this much real time


def say(msg: str) -> None:
    """Progress on stderr."""
    sys.stderr.write(f"[soak {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


# ----------------------------------------------------------------------------- memory

def rss_mib() -> float:
    """This process's resident set size in MiB (psutil if installed, else /proc/self/status)."""
    try:
        import psutil

        return float(psutil.Process().memory_info().rss) / 2**20
    except ImportError:
        pass
    from farm.probes import parse_proc_status_kb

    rss = parse_proc_status_kb(Path("/proc/self/status").read_text())[0]
    return float("nan") if rss is None else rss / 1024


class MemorySampler(threading.Thread):
    """RSS every `every_s` seconds, as (elapsed s, MiB)."""

    def __init__(self, every_s: float) -> None:
        super().__init__(name="soak-rss", daemon=True)
        self.every_s = every_s
        self.points: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while True:
            self.points.append((time.monotonic() - self.t0, rss_mib()))
            if self.stop.wait(self.every_s):
                self.points.append((time.monotonic() - self.t0, rss_mib()))
                return


# ----------------------------------------------------------------------------- the lab

@dataclass
class Lab:
    """The simulator daemons (one per adb server) and their phones."""

    state_dirs: list[Path]
    ports: list[int]
    phones: dict[str, int] = field(default_factory=dict)  # serial -> index of its daemon

    def serials_on(self, i: int) -> list[str]:
        """The phones of daemon i."""
        return [s for s, d in self.phones.items() if d == i]


@contextlib.contextmanager
def lab(work: Path, phones: int, servers: int, time_scale: float, seed: int) -> Iterator[Lab]:
    """Start `servers` daemons with `phones` phones spread over them; stop them at the end."""
    dirs: list[Path] = []
    ports: list[int] = []
    out = Lab(dirs, ports)
    try:
        for i in range(servers):
            profiles = [PROFILES[k % len(PROFILES)] for k in range(phones) if k % servers == i]
            d = work / f"sim{i}"
            port = control.free_port()
            dirs.append(d)
            ports.append(port)
            state = control.start_daemon(d, adb_port=port, profiles=profiles,
                                         time_scale=time_scale, seed=seed + 100 * i,
                                         timeout_s=180)
            for p in state.phones:
                out.phones[str(p["serial"])] = i
            say(f"adb server :{port}: {len(state.phones)} phones ({', '.join(profiles)})")
        yield out
    finally:
        for d in dirs:
            with contextlib.suppress(FarmError):
                control.stop_daemon(d)


class Chaos(threading.Thread):
    """Injects random faults into random phones until stopped; logs what it did."""

    def __init__(self, the_lab: Lab, rng: random.Random) -> None:
        super().__init__(name="soak-chaos", daemon=True)
        self.lab = the_lab
        self.rng = rng
        self.stop = threading.Event()
        self.log: list[tuple[float, str, str]] = []  # (elapsed s, kind, where)
        self.errors: list[str] = []
        self.t0 = time.monotonic()
        self.last_restart = time.monotonic()

    def _fault(self, serial: str, kind: str, params: dict[str, Any] | None = None,
               clear: bool = False) -> None:
        d = self.lab.state_dirs[self.lab.phones[serial]]
        control.daemon_fault(d, serial, kind, params, clear=clear)

    def _hold(self) -> None:
        self.stop.wait(self.rng.uniform(*HOLD_S))

    def one(self) -> None:
        """One random fault (kept for a few seconds where it is a state, then cleared)."""
        serial = self.rng.choice(sorted(self.lab.phones))
        kinds = ["disconnect", "disconnect_mid", "crash", "hang", "unauthorized", "offline"]
        if time.monotonic() - self.last_restart > RESTART_GAP_S:
            kinds.append("adb_restart")
        kind = self.rng.choice(kinds)
        where = serial
        if kind == "disconnect":
            self._fault(serial, "disconnect", {"times": 1})
        elif kind == "disconnect_mid":  # the next command's output stream is cut
            self._fault(serial, "disconnect", {"times": 1,
                                               "after_bytes": self.rng.randrange(1, 4000)})
        elif kind in ("crash", "hang", "unauthorized", "offline"):
            self._fault(serial, kind)
            self._hold()
            self._fault(serial, kind, clear=True)
        else:
            i = self.rng.randrange(len(self.lab.ports))
            server = control.AdbServer(self.lab.ports[i])
            where = f"adb server :{server.port} ({len(self.lab.serials_on(i))} phones)"
            server.kill()
            self.stop.wait(self.rng.uniform(0.2, 1.5))
            server.start(timeout_s=60)
            for s in self.lab.serials_on(i):  # as a lab's USB phones come back by themselves
                with contextlib.suppress(FarmError):
                    server.connect(s, timeout_s=20)
            self.last_restart = time.monotonic()
        self.log.append((time.monotonic() - self.t0, kind, where))

    def run(self) -> None:
        while not self.stop.wait(self.rng.uniform(*GAP_S)):
            try:
                self.one()
            except FarmError as e:  # the daemon refused (e.g. a state wait timed out)
                self.errors.append(str(e))


# ----------------------------------------------------------------------------- the sweep

def write_configs(work: Path, ports: Sequence[int], repeats: int) -> tuple[Path, Path]:
    """A sweep of the tiny model (cpu and xnnpack, 1 and 2 threads) and a fleet file."""
    sweep = {
        "schema_version": 1, "name": "soak",
        "models": [{"name": "tiny", "source": str(TINY)}],
        "quantizations": ["fp32"], "delegates": ["cpu", "xnnpack"], "threads": [1, 2],
        "repeats": repeats,
        "run": {"warmup_runs": 1, "warmup_min_secs": 0, "num_runs": 10, "min_secs": 1,
                "max_secs": 20, "timeout_s": SAMPLE_TIMEOUT_S},
        "cooldown": {"delta_c": 50, "timeout_s": 2},
    }
    (work / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    (work / "devices.yaml").write_text(yaml.safe_dump({
        "schema_version": 1, "host": "never",
        "adb_servers": [f"127.0.0.1:{p}" for p in ports]}))
    return work / "sweep.yaml", work / "devices.yaml"


def run_once(work: Path, ports: Sequence[int], repeats: int, tag: str) -> Any:
    """One sweep (no report); returns api.RunResult."""
    sweep, devices = write_configs(work, ports, repeats)
    plan = api.load_plan(sweep, devices_file=devices)
    return api.run_plan(plan, db=work / f"{tag}.sqlite", out_dir=work / "reports",
                        cache_dir=work / "cache", vendor_dir=work / "no-vendor", report=False)


def round_seconds(db: Path, run_id: str) -> float:
    """Seconds from the first sample's start to the last sample's end."""
    with sqlite3.connect(db) as c:
        first, last = c.execute("SELECT MIN(started_at), MAX(ended_at) FROM samples "
                                "WHERE run_id=?", (run_id,)).fetchone()
    return (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()


@dataclass
class Counts:
    """What the store holds for a run, against what was planned."""

    planned: int
    stored: int
    ok: int
    failed: int
    skipped: int
    lost: int
    duplicate_rows: int
    quarantined: list[str]
    reasons: Counter[str]


def count(db: Path, run_id: str) -> Counts:
    """Planned (case, repeat) pairs vs stored samples (pure SQL over the store)."""
    with sqlite3.connect(db) as c:
        repeats = int(c.execute("SELECT repeats FROM runs WHERE run_id=?", (run_id,)
                                ).fetchone()[0])
        planned = set()
        for case_id, skip in c.execute("SELECT case_id, skip_reason FROM cases WHERE run_id=?",
                                       (run_id,)):
            for r in ([0] if skip else range(repeats)):
                planned.add((case_id, r))
        rows = c.execute("SELECT case_id, repeat, status, error, device FROM samples "
                         "WHERE run_id=?", (run_id,)).fetchall()
        dup = c.execute("SELECT COUNT(*) FROM (SELECT 1 FROM samples WHERE run_id=? "
                        "GROUP BY case_id, repeat HAVING COUNT(*) > 1)", (run_id,)).fetchone()
    stored = {(r[0], int(r[1])) for r in rows}
    status = Counter(r[2] for r in rows)
    reasons: Counter[str] = Counter()
    for r in rows:
        if r[2] != "ok":
            reasons[_reason_kind(str(r[3] or ""))] += 1
    quarantined = sorted({r[4] for r in rows if "quarantin" in str(r[3] or "")})
    return Counts(planned=len(planned), stored=len(rows), ok=status["ok"],
                  failed=status["failed"], skipped=status["skipped"],
                  lost=len(planned - stored), duplicate_rows=int(dup[0]),
                  quarantined=quarantined, reasons=reasons)


def _reason_kind(error: str) -> str:
    """A short class of a failure reason, for the table."""
    e = error.lower()
    for key, label in (("quarantin", "quarantined (skipped)"), ("timed out", "timed out (hang)"),
                       ("sigsegv", "crash"), ("segmentation", "crash"),
                       ("unauthorized", "unauthorized"), ("offline", "offline"),
                       ("not found", "device not found"), ("prepare", "staging failed"),
                       ("lock", "phone lock"), ("internal error", "internal error")):
        if key in e:
            return label
    return e[:60] or "(no reason)"


# ----------------------------------------------------------------------------- report

def markdown(args: argparse.Namespace, counts: Counts, stats: Any, chaos: Chaos,
             mem: MemorySampler, wall_s: float, run_id: str) -> str:
    """The soak section for RESULTS.md."""
    lost_ok = counts.lost == 0
    dup_attempts = max(0, (stats.samples_ok + stats.samples_failed + stats.samples_skipped)
                       - counts.stored)
    dup_ok = dup_attempts == 0  # rows themselves cannot repeat: UNIQUE (run, case, repeat)
    lines = [
        "## soak",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()} "
        f"({os.cpu_count()} CPUs, Python {platform.python_version()}, farm {git_sha()}); "
        f"`python bench/soak.py --phones {args.phones} --minutes {args.minutes:g} "
        f"--servers {args.servers} --time-scale {args.time_scale:g} --seed {args.seed}`",
        "",
        f"One sweep (run {run_id}) of {counts.planned} planned samples on {args.phones} "
        f"simulated phones over {args.servers} adb servers, {wall_s / 60:.1f} min wall, "
        f"with {len(chaos.log)} random faults.",
        "",
        "| measure | value | goal |",
        "|---|---|---|",
        f"| samples completed (ok) | {counts.ok} | |",
        f"| samples failed (recorded with a reason) | {counts.failed} | |",
        f"| samples skipped (quarantine, with the reason) | {counts.skipped} | |",
        f"| samples lost (planned, not in the store) | {counts.lost} | 0: "
        f"{'met' if lost_ok else '**missed**'} |",
        f"| duplicate appends (the store ignored them as already present) | {dup_attempts} | "
        f"0: {'met' if dup_ok else '**missed**'} |",
        f"| duplicate rows (kept at 0 by the store's UNIQUE (run, case, repeat)) | "
        f"{counts.duplicate_rows} | |",
        f"| phones quarantined | {len(counts.quarantined)} of {args.phones} | |",
        f"| runner errors logged | {len(stats.errors)} | |",
        "",
    ]
    kinds = Counter(k for _, k, _ in chaos.log)
    lines += ["Faults injected:", "", "| fault | times |", "|---|---|"]
    lines += [f"| {k} | {n} |" for k, n in sorted(kinds.items())]
    if chaos.errors:
        lines.append(f"| (refused by the simulator) | {len(chaos.errors)} |")
    lines += ["", "Reasons of the samples that are not ok:", "", "| reason | samples |",
              "|---|---|"]
    lines += [f"| {k} | {n} |" for k, n in counts.reasons.most_common(10)]
    pts = mem.points
    lines += ["", "Controller memory (RSS of this process, MiB), sampled every "
              f"{SAMPLE_EVERY_S:g} s:", "", "| elapsed | RSS MiB |", "|---|---|"]
    step = max(1, len(pts) // 12)
    shown = pts[::step] + ([pts[-1]] if pts and (len(pts) - 1) % step else [])
    lines += [f"| {t:.0f} s | {m:.1f} |" for t, m in shown]
    if pts:
        half = [m for t, m in pts if t >= pts[-1][0] / 2]
        lines += ["", f"RSS start {pts[0][1]:.1f} MiB, max {max(m for _, m in pts):.1f} MiB, "
                      f"end {pts[-1][1]:.1f} MiB; over the second half it moved "
                      f"{max(half) - min(half):.1f} MiB."]
    lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak; print the Markdown section; exit 1 if a sample was lost or doubled."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--phones", type=int, default=12)
    ap.add_argument("--servers", type=int, default=2)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--time-scale", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write", action="store_true", help="append the section to RESULTS.md")
    args = ap.parse_args(argv)
    if args.phones < 1 or not 1 <= args.servers <= args.phones or args.minutes <= 0:
        ap.error("need phones >= 1, 1 <= servers <= phones, minutes > 0")
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="farm-soak-") as tmp:
        work = Path(tmp)
        with lab(work, args.phones, args.servers, args.time_scale, args.seed) as the_lab:
            # Calibrate: two rounds without faults (variants built, binaries pushed) tell how
            # long a round of the interleaved schedule takes, from the first sample's start to
            # the last one's end; the soak sweep gets as many rounds as fill the time asked for.
            cal = run_once(work, the_lab.ports, 2, "calibrate")
            per_round = max(0.2, round_seconds(work / "calibrate.sqlite", cal.run_id) / 2)
            repeats = max(2, min(1000, int(args.minutes * 60 / per_round)))
            say(f"one round takes {per_round:.1f} s: {repeats} repeats")
            mem = MemorySampler(SAMPLE_EVERY_S)
            chaos = Chaos(the_lab, rng)
            mem.start()
            chaos.start()
            t = time.monotonic()
            try:
                result = run_once(work, the_lab.ports, repeats, "soak")
            finally:
                chaos.stop.set()
                chaos.join(120)
                mem.stop.set()
                mem.join(10)
            wall = time.monotonic() - t
            db = work / "soak.sqlite"
            counts = count(db, result.run_id)
            text = markdown(args, counts, result.stats, chaos, mem, wall, result.run_id)
    sys.stdout.write(text)
    if args.write:
        with RESULTS.open("a", encoding="utf-8") as f:
            f.write("\n" + text)
        say(f"appended to {RESULTS}")
    appended = (result.stats.samples_ok + result.stats.samples_failed
                + result.stats.samples_skipped)
    doubled = counts.duplicate_rows + max(0, appended - counts.stored)
    return 0 if counts.lost == 0 and doubled == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
