"""One farm controller in a process of its own (benchmark 5), so its CPU and memory are its own.

    python bench/_controller.py SWEEP DEVICES WORKDIR

Runs `api.run_plan` twice (a first run that pushes, then a warm rerun) and prints one JSON line:
per run the wall and CPU seconds, the time in device discovery and the run's stats; and the
process's peak RSS (VmHWM, MB), plus its RSS after imports, before any run.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _status_mb(key: str) -> float:
    """VmRSS / VmHWM of this process. (getrusage's ru_maxrss is no good here: Linux keeps it
    across fork and exec, so a child of a big parent reports the parent's peak.)"""
    from farm.probes import parse_proc_status_kb

    rss, hwm = parse_proc_status_kb(Path("/proc/self/status").read_text())
    kb = {"VmRSS": rss, "VmHWM": hwm}[key]
    return float("nan") if kb is None else kb / 1024


def main() -> int:
    """Two runs; one JSON line."""
    from farm import api

    sweep, devices, work = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    plan = api.load_plan(sweep, devices_file=devices)
    real_discover = api.discover_devices
    spent = {"discover_s": 0.0}

    def discover(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return real_discover(*a, **k)
        finally:
            spent["discover_s"] += time.perf_counter() - t0

    api.discover_devices = discover
    runs: list[dict[str, Any]] = []
    out: dict[str, Any] = {"rss_after_imports_mb": _status_mb("VmRSS"), "runs": runs}
    for _ in range(2):
        spent["discover_s"] = 0.0
        cpu0, t0 = time.process_time(), time.perf_counter()
        r = api.run_plan(plan, db=work / "farm.sqlite", out_dir=work / "reports",
                         cache_dir=work / "cache", vendor_dir=work / "no-vendor", report=False)
        s = r.stats
        runs.append({
            "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - cpu0,
            "discover_s": spent["discover_s"], "runner_wall_s": s.wall_s,
            "benchmark_s": s.benchmark_s, "ok": s.samples_ok, "failed": s.samples_failed,
            "skipped": s.samples_skipped, "bytes_pushed": s.bytes_pushed,
            "devices": len(r.devices), "errors": s.errors[:5]})
    out["max_rss_mb"] = _status_mb("VmHWM")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
