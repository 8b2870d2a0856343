"""Benchmark 2: orchestration overhead, the share of a device's wall time outside
benchmark_model, with a warm push cache; and where that time goes.

A first run warms the cache (binary and model already on the phones); the second run is
measured. Per device, benchmark_model's time (`RunStats.benchmark_s / n_devices`, the
benchmark shells, less the closing sensor reading that runs in the same shell, estimated by
`closing_probe_cost`) is set against `RunStats.wall_s` (the runner's wall time, all devices in
parallel). The breakdown comes
from timers wrapped around farm's own functions (`instrument`), on every thread: the device
workers and the sampler threads (cProfile sees only one thread).
"""

from __future__ import annotations

import math
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import (
    TINY,
    ExclusiveTimer,
    Section,
    fmt,
    lab,
    median,
    mobilenet,
    model_label,
    pct,
    say,
    write_configs,
)

GOAL = 0.05
# Steps a device pays once per run (not per sample), and the run_plan steps outside the runner.
PER_RUN = ("stage:", "release lock", "run_plan:")
WAIT = "run_plan: main thread waiting for the device workers"
BENCH = "benchmark_model, then the closing probe (one adb shell)"


def _is_sampler() -> bool:
    return threading.current_thread().name.startswith("farm-sampler")


def _shell_label(parent: str, dev: Any, argv: Any, *a: Any, **k: Any) -> str:
    if _is_sampler():
        return "sampler thread: adb shell (runs beside the benchmark)"
    words = [str(x) for x in argv]
    if parent.startswith("sample") and any(w.startswith("--graph=") for w in words):
        return BENCH
    if parent.startswith("gate"):
        return "gate: probe (adb shell)"
    if parent.startswith("probe"):
        return "probe after sample, timed-out benchmarks only (adb shell)"
    return f"{parent or 'other'}: adb shell"


def _probe_label(parent: str, *a: Any, **k: Any) -> str:
    if _is_sampler():
        return "sampler thread: probe parsing"
    if parent.startswith("gate"):
        return "gate: probe parsing"
    return "closing probe (parsing)"


def instrument(timer: ExclusiveTimer) -> None:
    """Wrap the runner's steps in `timer` (undone by timer.restore())."""
    from farm import api, probes, runner, sampler, store
    from farm.devices import adb

    W = runner.DeviceWorker
    timer.wrap(api, "discover_devices", "run_plan: discover devices", absorb=True)
    timer.wrap(api, "build_variants", "run_plan: variants (cache lookup)", absorb=True)
    timer.wrap(api, "render_report", "run_plan: report", absorb=True)
    timer.wrap(runner, "run", WAIT)
    timer.wrap(W, "run", "worker: other")
    timer.wrap(W, "stage",
               "stage: lock with sha256 checks, --help smoke check, cleanup, idle probe",
               absorb=True)
    timer.wrap(W, "release", "release lock", absorb=True)
    timer.wrap(W, "wait_cool", "gate: decision and sleeps between polls")
    timer.wrap(W, "run_sample", "sample: argv, record, env (other)")
    timer.wrap(W, "_store", "progress events")
    timer.wrap(store.Store, "append", "store.append (one commit per sample)")
    timer.wrap(runner, "parse_output", "parse benchmark_model output")
    timer.wrap(runner, "classify", "classify flags")
    timer.wrap(sampler.Sampler, "__enter__", "sampler start")
    timer.wrap(sampler.Sampler, "__exit__", "sampler stop (joins an in-flight probe)")
    timer.wrap(probes, "sample", _probe_label)
    timer.wrap(adb.AdbDevice, "shell", _shell_label)
    # device facts: read once per device and run, during discovery (which may use a pool)
    timer.wrap(adb.AdbDevice, "info", "run_plan: device facts (AdbDevice.info)", absorb=True)


def breakdown_rows(timer: ExclusiveTimer, devices: int, wall_s: float) -> list[list[str]]:
    """Table rows: label, seconds per device, share of the per-device wall, calls."""
    rows = []
    for name, total in sorted(timer.totals.items(), key=lambda kv: -kv[1]):
        if name == WAIT:
            continue
        per = total / devices
        rows.append([name, fmt(per, 3), pct(per / wall_s) if wall_s else "n/a",
                     str(timer.counts.get(name, 0))])
    return rows


def closing_probe_cost(phone: dict[str, Any], n: int = 15) -> float:
    """What the closing probe adds to each benchmark shell (it runs in the same `sh -c` after
    benchmark_model, so RunStats.benchmark_s includes it): the median of n shells running the
    probe script minus the median of n running nothing, ABAB on the same phone."""
    from farm import probes
    from farm.devices import adb

    server = f"127.0.0.1:{phone['adb_port']}"
    dev = adb.AdbDevice(adb._client(server), phone["serial"], server=server)
    info = dev.info()
    sensors = probes.discover(dev, cpu_count=info.cpu_count, android=True)
    tick, empty = [], []
    for _ in range(n):
        for argv, out in ((["sh", "-c", probes.tick_script(sensors)], tick),
                          (["sh", "-c", "true"], empty)):
            t0 = time.perf_counter()
            dev.shell(argv, timeout_s=30)
            out.append(time.perf_counter() - t0)
    return max(0.0, median(tick) - median(empty))


def measure(tmp: Path, *, phones: int, profile: str, model: Path, time_scale: float,
            run: dict[str, Any], repeats: int, delegates: tuple[str, ...]
            ) -> dict[str, Any]:
    """Warm run, then an instrumented run; the figures of the second."""
    from farm import api

    with lab(tmp / "phones", profile=profile, phones=phones, time_scale=time_scale,
             hosts=2) as lab_:
        sweep, devices = write_configs(tmp / "cfg", lab_, model=model, delegates=delegates,
                                       repeats=repeats, run=run)
        plan = api.load_plan(sweep, devices_file=devices)
        kw = dict(db=tmp / "farm.sqlite", out_dir=tmp / "reports", cache_dir=tmp / "cache",
                  vendor_dir=tmp / "no-vendor", report=False)
        first = api.run_plan(plan, **kw)  # type: ignore[arg-type]
        timer = ExclusiveTimer()
        instrument(timer)
        try:
            t0 = time.perf_counter()
            second = api.run_plan(plan, **kw)  # type: ignore[arg-type]
            plan_wall = time.perf_counter() - t0
        finally:
            timer.restore()
        df = api.load_samples(tmp / "farm.sqlite", second.run_id)
        probe_in_shell_s = closing_probe_cost(lab_.phones[0])
    s = second.stats
    return {"first": first.stats, "second": s, "plan_wall_s": plan_wall, "timer": timer,
            "probe_in_shell_s": probe_in_shell_s,
            "samples": len(df), "ok": int((df["status"] == "ok").sum()),
            "gate_wait_s": float(df["cooldown_wait_s"].fillna(0).sum()),
            "sampler_points": int(df["sampler_points"].fillna(0).sum())}


def run(quick: bool, workdir: Path | None = None) -> Section:
    """Benchmark 2."""
    sec = Section("overhead", "2. Orchestration overhead (warm push cache)",
                  goal=f"time outside benchmark_model <= {GOAL:.0%} of a device's wall time")
    model = TINY if quick else mobilenet("fp32")
    run_params = {"warmup_runs": 1, "warmup_min_secs": 0.5, "num_runs": 50, "min_secs": 1.0}
    phones = 1 if quick else 4
    repeats = 2 if quick else 5
    delegates = ("cpu",) if quick else ("cpu", "xnnpack")
    with tempfile.TemporaryDirectory(prefix="bench-overhead-", dir=workdir) as d:
        say(f"overhead: {phones} flagship phone(s), {model_label(model)}, warm cache")
        m = measure(Path(d), phones=phones, profile="flagship", model=model, time_scale=1.0,
                    run=run_params, repeats=repeats, delegates=delegates)
    s = m["second"]
    # benchmark_model's own time: the benchmark shells less the closing probe riding in them
    probe_s = m["probe_in_shell_s"]
    bench_per_dev = (s.benchmark_s - probe_s * m["samples"]) / phones
    frac = 1 - bench_per_dev / s.wall_s if s.wall_s else float("nan")
    frac_plan = 1 - bench_per_dev / m["plan_wall_s"]
    sec.verdict = "met" if frac <= GOAL else "missed"
    samples_per_dev = m["samples"] / phones
    per_sample_overhead = (s.wall_s - bench_per_dev) / samples_per_dev
    # Split the device's overhead into what it pays once per run and once per sample (the
    # worker's own steps; the sampler thread runs beside benchmark_model), to tell how many
    # samples per device a run needs for the goal: f(N) = (R + N p) / (R + N (p + b)).
    totals = m["timer"].totals
    per_run = sum(v for k, v in totals.items()
                  if k.startswith(PER_RUN) and not k.startswith("run_plan:")) / phones
    per_sample = sum(v for k, v in totals.items()
                     if not k.startswith(PER_RUN) and not k.startswith("sampler thread")
                     and k != BENCH) / phones / samples_per_dev
    per_sample += probe_s
    b = bench_per_dev / samples_per_dev
    need = (1 - GOAL) * per_run / (GOAL * b - (1 - GOAL) * per_sample) \
        if GOAL * b > (1 - GOAL) * per_sample else float("inf")
    need_n = math.ceil(need) if need != float("inf") else need  # whole samples
    sec.headline = (f"{pct(frac)} at {samples_per_dev:.0f} samples per device "
                    f"({per_run:.2f} s per run + {per_sample * 1000:.0f} ms per sample); "
                    + (f"<= 5 % from {need_n} samples per device; " if need != float("inf")
                       else "") + f"rerun pushed {s.bytes_pushed} bytes")
    sec.figures = {"phones": phones, "samples": m["samples"], "runner_wall_s": s.wall_s,
                   "benchmark_s_per_device": bench_per_dev, "overhead_fraction": frac,
                   "overhead_fraction_run_plan": frac_plan, "plan_wall_s": m["plan_wall_s"],
                   "overhead_per_sample_s": per_sample_overhead,
                   "per_run_s_per_device": per_run, "per_sample_s": per_sample,
                   "samples_per_device_for_goal": need,
                   "bytes_pushed_first": m["first"].bytes_pushed,
                   "bytes_pushed_rerun": s.bytes_pushed,
                   "gate_wait_s": m["gate_wait_s"],
                   "closing_probe_in_shell_s": probe_s,
                   "breakdown_s_per_device": {k: v / phones for k, v in m["timer"].totals.items()}}
    sec.add(f"{phones} simulated flagship phone(s) at time scale 1 (phones take real time), "
            f"model {model_label(model)}, delegates {', '.join(delegates)}, {repeats} repeats, "
            f"benchmark_model params {run_params}; {m['samples']} samples in the measured "
            "(second) run.")
    sec.add()
    sec.table(["figure", "value"], [
        ["runner wall time (RunStats.wall_s)", f"{s.wall_s:.2f} s"],
        ["benchmark_model time per device (RunStats.benchmark_s / devices, less the "
         "closing reading below)",
         f"{bench_per_dev:.2f} s"],
        ["**outside benchmark_model, share of the runner's wall time**", f"**{pct(frac)}**"],
        ["outside benchmark_model, share of the whole run_plan call", pct(frac_plan)],
        ["overhead per sample (all of it / samples)", f"{per_sample_overhead * 1000:.0f} ms"],
        ["of which paid once per run per device (stage, release)", f"{per_run:.2f} s"],
        ["closing probe inside each benchmark shell (probe-script shell minus empty shell, "
         "15 ABAB pairs; counted as overhead, not as benchmark_model time)",
         f"{probe_s * 1000:.1f} ms"],
        ["of which paid per sample (closing probe, gate, parse, store, ...)",
         f"{per_sample * 1000:.0f} ms = {pct(per_sample / (b + per_sample))} of a "
         f"{b:.2f} s sample"],
        ["samples per device a run needs for the goal, from these two",
         f">= {need_n}" if need != float("inf") else "never (per-sample cost alone is over)"],
        ["cooldown gate waits (device cooling, in the stored cooldown_wait_s)",
         f"{m['gate_wait_s']:.2f} s"],
        ["bytes pushed: first run / rerun",
         f"{m['first'].bytes_pushed:,} / {s.bytes_pushed:,}"],
    ])
    sec.add("Where the time goes (exclusive seconds per device, all threads; `sampler thread` "
            "rows run beside benchmark_model and are not on the device's critical path):")
    sec.add()
    sec.table(["step", "s per device", "share of wall", "calls"],
              breakdown_rows(m["timer"], phones, s.wall_s))
    return sec
