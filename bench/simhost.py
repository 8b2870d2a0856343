"""Simulated phones in a process of their own, for the benchmarks.

    python bench/simhost.py --root DIR --server PORT [--server PORT] --profile lowend --count 16
                            [--time-scale 1] [--seed 0]

Starts `--count` phones of each `--profile` (farm.sim.control.Fleet), `adb connect`s phone i to
server i % len(servers), prints one JSON line `{"phones": [{"serial", "adb_port", "profile"}]}`
on stdout, then waits until stdin closes; it then stops the phones and prints a last JSON line
with its own CPU seconds and max RSS (`{"cpu_s", "max_rss_mb", "wall_s"}`).

Why a separate process: the phones are Python threads (adbd protocol, shell, benchmark_model
emulation). In the controller's process they would share its GIL and its CPU accounting, and
every figure about the controller would include the phones' cost.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from farm.sim.control import AdbServer, Fleet  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Run phones until stdin closes."""
    ap = argparse.ArgumentParser(prog="bench/simhost.py")
    ap.add_argument("--root", required=True, type=Path)
    ap.add_argument("--server", action="append", type=int, required=True)
    ap.add_argument("--profile", action="append", required=True)
    ap.add_argument("--count", type=int, default=1, help="phones per --profile")
    ap.add_argument("--time-scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    servers = [AdbServer(p) for p in args.server]
    fleet = Fleet(args.root, time_scale=args.time_scale, seed=args.seed)
    try:
        phones = [fleet.add(p) for p in args.profile for _ in range(args.count)]
        for k, server in enumerate(servers):
            mine = phones[k::len(servers)]
            if mine:
                fleet.connect(server, mine, timeout_s=120.0)
        print(json.dumps({"phones": [
            {"serial": p.serial, "adb_port": p.adb_port, "profile": p.profile, "name": p.name}
            for p in phones]}), flush=True)
        sys.stdin.read()  # until the parent closes our stdin (or dies)
    finally:
        fleet.stop()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    from farm.probes import parse_proc_status_kb

    hwm_kb = parse_proc_status_kb(Path("/proc/self/status").read_text())[1]
    hwm = None if hwm_kb is None else hwm_kb / 1024  # ru_maxrss survives exec: not ours
    print(json.dumps({"cpu_s": ru.ru_utime + ru.ru_stime, "max_rss_mb": hwm,
                      "wall_s": time.monotonic() - t0}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
