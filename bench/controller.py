"""Benchmark 5: controller cost per device driven. One controller drives 100 simulated phones
(on this machine's cores, shared with the phones and the adb servers); its CPU and memory.

The controller runs in a child process (bench/_controller.py) and the phones in another
(bench/simhost.py), so each one's CPU seconds (getrusage / /proc) are its own. A small fleet
(10 phones) is run the same way beside the big one; the difference between the two gives the
marginal cost of one more device, apart from the controller's fixed cost (imports, store).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.common import (
    PY,
    ROOT,
    TINY,
    Lab,
    Section,
    adb_server_pids,
    fmt,
    lab,
    load_average,
    proc_cpu_s,
    say,
    write_configs,
)


def drive(tmp: Path, lab_: Lab, *, repeats: int, run: dict[str, Any]) -> dict[str, Any]:
    """Run the controller child against a lab; its JSON plus the phones' and adb's CPU."""
    sweep, devices = write_configs(tmp / "cfg", lab_, model=TINY, delegates=("cpu",),
                                   repeats=repeats, run=run)
    pids = adb_server_pids(lab_.ports)
    sim0 = lab_.phones_cpu_s()
    adb0 = sum(proc_cpu_s(p) or 0.0 for p in pids)
    r = subprocess.run([PY, str(ROOT / "bench" / "_controller.py"), str(sweep), str(devices),
                        str(tmp / "work")], capture_output=True, text=True, timeout=3600,
                       cwd=ROOT, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"controller exited {r.returncode}: {r.stderr[-800:]}")
    out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    out["phones_cpu_s"] = lab_.phones_cpu_s() - sim0
    out["adb_cpu_s"] = sum(proc_cpu_s(p) or 0.0 for p in pids) - adb0
    out["adb_pids"] = len(pids)
    return out


def run(quick: bool, workdir: Path | None = None) -> Section:
    """Benchmark 5."""
    big = 20 if quick else 100
    small = 4 if quick else 10
    sec = Section("controller", f"5. Controller cost per device ({big} simulated phones)",
                  goal=f"one controller drives {big} simulated phones on this machine" if quick
                  else "one controller drives 100 simulated phones on 2 cores")
    run_params = {"warmup_runs": 1, "warmup_min_secs": 0.2, "num_runs": 20, "min_secs": 1.0}
    repeats = 3
    results: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-controller-", dir=workdir) as d, \
            contextlib.ExitStack() as stack:
        tmp = Path(d)
        for n in (small, big):
            say(f"controller: {n} flagship phones on 2 adb servers, controller in a child")
            lab_ = stack.enter_context(lab(tmp / f"phones{n}", profile="flagship", phones=n,
                                           servers=2, hosts=2))
            load0 = load_average()
            results[n] = drive(tmp / f"run{n}", lab_, repeats=repeats, run=run_params)
            results[n]["load_avg"] = [load0, load_average()]
            stack.close()  # stop these phones before the next fleet starts
    rows = []
    for n in (small, big):
        r = results[n]
        for k, (label, m) in enumerate((("first (pushes)", r["runs"][0]),
                                        ("rerun (warm)", r["runs"][1]))):
            cpu_share = m["cpu_s"] / m["wall_s"]
            rows.append([n, label, m["ok"], f"{m['failed']}/{m['skipped']}", fmt(m["wall_s"], 1),
                         fmt(m["discover_s"], 1), fmt(m["cpu_s"], 2), f"{cpu_share:.2f}",
                         f"{m['cpu_s'] / n * 1000:.0f} ms",
                         fmt(r["max_rss_mb"], 0) if k == 1 else ""])
    b, s = results[big], results[small]
    wb, ws = b["runs"][1], s["runs"][1]
    marginal_cpu = (wb["cpu_s"] - ws["cpu_s"]) / (big - small)
    marginal_rss = (b["max_rss_mb"] - s["max_rss_mb"]) / (big - small)
    everything_ok = all(m["ok"] == n * repeats and not m["failed"] and not m["skipped"]
                        for n, r in results.items() for m in r["runs"])
    share = wb["cpu_s"] / wb["wall_s"]
    sec.verdict = "met" if everything_ok and share < 1.0 else "missed"
    sec.headline = (f"{big} phones, warm rerun: controller {share:.2f} cores, peak RSS "
                    f"{b['max_rss_mb']:.0f} MB, {marginal_cpu * 1000:.0f} ms CPU per extra "
                    f"device; discovery {wb['discover_s']:.0f} s of {wb['wall_s']:.0f} s wall")
    sec.figures = {"results": results, "marginal_cpu_s_per_device_run": marginal_cpu,
                   "marginal_rss_mb_per_device": marginal_rss}
    sec.add(f"Profile `flagship` at time scale 1, tiny model, CPU delegate, {repeats} repeats "
            f"per phone, params {run_params}. The controller is one process; the phones run "
            "in 2 others, one per adb server. Every sample ok on every phone: "
            f"{'yes' if everything_ok else 'NO'}.")
    sec.add()
    sec.table(["phones", "run", "samples ok", "failed/skipped", "wall s",
               "of which discovery s", "controller CPU s", "CPU / wall (cores)",
               "CPU per device", "peak RSS (VmHWM) MB"], rows)
    sec.table(["figure", "value"], [
        [f"controller RSS after imports ({big}-phone process)",
         f"{b['rss_after_imports_mb']:.0f} MB"],
        [f"marginal controller CPU per extra device per run ({small} -> {big} phones, "
         "warm rerun)", f"{marginal_cpu * 1000:.0f} ms"],
        ["marginal controller memory per extra device", f"{marginal_rss:.2f} MB"],
        [f"phones' process CPU / adb servers' CPU over the {big}-phone runs",
         f"{b['phones_cpu_s']:.1f} s / {b['adb_cpu_s']:.1f} s ({b['adb_pids']} adb servers)"],
        ["load average before/after the big fleet",
         f"{b['load_avg'][0][0]:.2f} / {b['load_avg'][1][0]:.2f}"],
    ])
    return sec
