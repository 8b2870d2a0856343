"""Benchmark 4: scale. Report rendering time and HTML size for 100k samples, the store's insert
rate, and the latency of `farm runs` and `farm compare A B` with 1000 runs in the store.

The samples are synthetic but stored the way the runner stores them: one `Store.append` (one
commit) per sample, each with a real benchmark_model transcript as raw output and a sampler
series of 3 points in env_json, so a row is as large as a real one. Latencies follow a
multiplicative model (device x model x quantization x delegate x threads x lognormal noise),
3 % of samples are throttled (tainted) and 1 % failed.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import subprocess
import tempfile
import time
from collections.abc import Iterator
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import PY, ROOT, Section, fmt, median, say, timed

REPORT_GOAL_S = 15.0
REPORT_GOAL_MB = 5.0
TRANSCRIPT = (ROOT / "tests" / "data" / "benchmark_model" /
              "24_tf2.19plus_android-adbshell_cpu_default-xnnpack_verbose-replacing_percentiles"
              ".txt")
QUANT = {"fp32": 1.0, "fp16": 0.97, "dynamic": 0.8, "int8": 0.55, "int16x8": 1.6}
DELEGATE = {"cpu": 1.0, "xnnpack": 0.6, "gpu": 0.35}
MODEL_US = {"mobilenet_v2": 9000.0, "efficientnet_lite0": 15000.0}


def _parsed_template() -> dict[str, Any]:
    from farm.benchmark_model import parse_output

    return parse_output(TRANSCRIPT.read_text()).to_dict()


def synthetic_records(run_id: str, *, devices: int, repeats: int,
                      models: tuple[str, ...] = tuple(MODEL_US),
                      quantizations: tuple[str, ...] = tuple(QUANT),
                      delegates: tuple[str, ...] = tuple(DELEGATE),
                      threads: tuple[int, ...] = (1, 4), seed: int = 0,
                      limit: int | None = None) -> Iterator[Any]:
    """SampleRecords of one run, round by round (interleaved like a real schedule)."""
    from farm.store import SampleRecord

    rng = np.random.default_rng(seed)
    raw = TRANSCRIPT.read_text()
    template = _parsed_template()
    cases = list(product(range(devices), models, quantizations, delegates, threads))
    n = 0
    for rnd in range(repeats):
        order = rng.permutation(len(cases))
        for pos, i in enumerate(order):
            if limit is not None and n >= limit:
                return
            d, m, q, g, t = cases[i]
            lat = (MODEL_US[m] * (1 + 0.1 * d) * QUANT[q] * DELEGATE[g] * (0.6 if t > 1 else 1)
                   * float(rng.lognormal(0, 0.04)))
            failed = rng.random() < 0.01
            tainted = not failed and rng.random() < 0.03
            parsed = dict(template)
            parsed.update(avg_us=lat, inference_avg_us=lat, median_us=lat * 0.99,
                          min_us=lat * 0.9, max_us=lat * 1.4, std_us=lat * 0.04,
                          p5_us=lat * 0.93, p95_us=lat * 1.15, first_us=lat * 1.5,
                          init_us=lat * 4, warmup_avg_us=lat * 1.1, num_threads=t,
                          delegation="full" if g != "cpu" else "",
                          delegate_applied={"xnnpack": "XNNPACK", "gpu": "GPU"}.get(g, ""),
                          success=not failed)
            temp = 31.0 + 3 * rng.random() + (12 if tainted else 0)
            points = [{"t_s": k * 1.0, "temps_c": {"cpu": temp + k}, "thermal_status": 0,
                       "cur_freq_khz": [1800000] * 8, "max_freq_khz": [2400000] * 8,
                       "battery_level": 80, "battery_temp_c": 29.0, "charging": "none",
                       "vmrss_kb": 41000, "vmhwm_kb": 42000} for k in range(3)]
            env = {"variant_sha256": f"{m}-{q}", "variant_size_bytes": 3_400_000,
                   "binary_sha256": "b" * 64, "temp_before_c": temp, "temp_after_c": temp + 3,
                   "temp_max_c": temp + 3.5, "thermal_status_before": 0,
                   "thermal_status_after": 2 if tainted else 0,
                   "thermal_status_max": 2 if tainted else 0, "battery_level": 80.0,
                   "battery_temp_c": 29.0, "charging": "none", "charging_before": "none",
                   "charging_after": "none", "freq_cap_ratio": 0.7 if tainted else 1.0,
                   "cooldown_wait_s": round(float(rng.exponential(6.0)), 2),
                   "vmhwm_mb": 41.0, "vmrss_max_mb": 40.0, "sampler_points": 3,
                   "sampler_cost_s": 0.02}
            yield SampleRecord(
                run_id=run_id, case_id=f"c{d:03d}-{m}-{q}-{g}-{t}", device=f"phone-{d:03d}",
                model=m, quantization=q, delegate=g, threads=t, repeat=rnd, round=rnd,
                position=int(pos), status="failed" if failed else "ok",
                error="Benchmarking failed." if failed else "",
                flags=("throttled",) if tainted else (), tainted=tainted, parsed=parsed,
                env=env, env_series={"before": {}, "after": {}, "gate": "cool",
                                     "points": points, "sampler_errors": 0},
                started_at=f"2026-01-01T00:{rnd % 60:02d}:00", ended_at="", duration_s=3.0,
                argv=("/data/local/tmp/farm/bin/benchmark_model", f"--num_threads={t}"),
                raw_output=raw)
            n += 1


def fill_run(store: Any, run_id: str, started_at: str, *, devices: int, repeats: int,
             limit: int | None = None, seed: int = 0, **kw: Any) -> tuple[int, float]:
    """One run's rows (run, devices, samples by Store.append); (samples, append seconds)."""
    store.start_run(run_id, sweep_file="bench.yaml", sweep_sha256="s" * 64, sweep_json="{}",
                    farm_version="bench", host="bench", git_sha="", calibration="",
                    seed=seed, repeats=repeats, status="finished")
    store.update_run(run_id, started_at=started_at, ended_at=started_at)
    for d in range(devices):
        store.add_device(run_id, {"serial": f"phone-{d:03d}", "label": f"Phone {d} [SIMULATED]",
                                  "simulated": True, "model": f"SM-{d:03d}", "kind": "adb",
                                  "abis": ["arm64-v8a"], "cpu_count": 8, "ram_mb": 8000},
                         tier=("high", "mid", "low")[d % 3])
    n, spent = 0, 0.0
    for rec in synthetic_records(run_id, devices=devices, repeats=repeats, limit=limit,
                                 seed=seed, **kw):
        t0 = time.perf_counter()
        store.append(rec)
        spent += time.perf_counter() - t0
        n += 1
    return n, spent


def _top(prof: cProfile.Profile, n: int = 12) -> list[list[str]]:
    """The top `n` functions by cumulative time, farm's own first."""
    st = pstats.Stats(prof, stream=io.StringIO())
    rows = []
    for (file, line, func), (_cc, nc, tt, ct, _callers) in st.stats.items():  # type: ignore
        if "/farm/" in file or "/bench/" in file:
            rows.append((ct, tt, nc, f"{Path(file).name}:{line} {func}"))
    rows.sort(reverse=True)
    return [[name, fmt(ct, 2), fmt(tt, 2), str(nc)] for ct, tt, nc, name in rows[:n]]


def _cli(db: Path, *args: str, reps: int) -> float:
    """Median wall seconds of `python -m farm --db DB ARGS` (output discarded)."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        r = subprocess.run([PY, "-m", "farm", "--db", str(db), *args], capture_output=True,
                           text=True, timeout=600, cwd=ROOT, check=False)
        times.append(time.perf_counter() - t0)
        if r.returncode != 0:
            raise RuntimeError(f"farm {' '.join(args)} exited {r.returncode}: {r.stderr[-400:]}")
    return median(times)


SHAPES = {
    # name: (devices, models, quantizations, delegates, threads)
    "256 cases, many rounds": (8, ("mobilenet_v2", "efficientnet_lite0"),
                               ("fp32", "fp16", "dynamic", "int8"), ("cpu", "xnnpack"), (1, 4)),
    "2400 cases, fewer rounds": (40, tuple(MODEL_US), tuple(QUANT), tuple(DELEGATE), (1, 4)),
}


FIXTURE = "report fixture: 8 devices, measure + sustained + fidelity"


def _fill_fixture(db: Path, n_samples: int) -> tuple[int, int, int, float]:
    """The report owner's scale run (tests/fixtures_report.make_scale_report_data: measure
    samples plus sustained windows and fidelity rows), stored by its write_store (one append
    per sample). (samples, cases, rounds, append seconds)."""
    from farm.store import Store
    from tests.fixtures_report import make_scale_report_data, write_store

    data = make_scale_report_data(n_samples)
    frame = data.samples
    measure = frame[frame["phase"] == "measure"]
    cases = int(frame["case_id"].nunique())
    rounds = int(measure["round"].max()) if len(measure) else 0
    with Store(db) as store:
        t0 = time.perf_counter()
        write_store(store, data)
        spent = time.perf_counter() - t0
    return len(frame), cases, rounds, spent


def report_at(tmp: Path, name: str, n_samples: int) -> dict[str, Any]:
    """Fill one run of about `n_samples` in the shape `name`, then render its report (timed)."""
    from farm import api
    from farm.store import Store

    db = tmp / f"{len(name)}-{n_samples}.sqlite"
    if name == FIXTURE:
        say(f"scale: storing the report fixture's {n_samples:,}-sample run")
        t0 = time.perf_counter()
        n, cases, repeats, spent = _fill_fixture(db, n_samples)
        fill_wall = time.perf_counter() - t0
    else:
        devices, models, quants, delegates, threads = SHAPES[name]
        cases = devices * len(models) * len(quants) * len(delegates) * len(threads)
        repeats = -(-n_samples // cases)
        say(f"scale: appending {n_samples:,} samples ({cases} cases x {repeats} rounds)")
        with Store(db) as store:
            t0 = time.perf_counter()
            n, spent = fill_run(store, "20260101-000000-big", "2026-01-01T00:00:00",
                                devices=devices, repeats=repeats, limit=n_samples,
                                models=models, quantizations=quants, delegates=delegates,
                                threads=threads)
            fill_wall = time.perf_counter() - t0
    out: dict[str, Any] = {"shape": name, "cases": cases, "rounds": repeats, "samples": n,
                           "append_s": spent, "fill_wall_s": fill_wall, "db": str(db),
                           "db_mb": db.stat().st_size / 1e6, "error": "", "top": [],
                           "raw_output": name != FIXTURE}
    say(f"scale: rendering the report of {n:,} samples, {cases} cases")
    t0 = time.perf_counter()
    try:
        path = api.render_report(db, "last", tmp / f"reports-{db.stem}")
    except Exception as e:  # noqa: BLE001 - a broken report is a finding, not a crash
        out["error"] = f"{type(e).__name__}: {e}"
        path = None
    out["render_s"] = time.perf_counter() - t0
    out["html_mb"] = path.stat().st_size / 1e6 if path else float("nan")
    out["other_files_mb"] = ({p.name: round(p.stat().st_size / 1e6, 2)
                              for p in path.parent.iterdir() if p != path} if path else {})
    return out


def run(quick: bool, workdir: Path | None = None) -> Section:
    """Benchmark 4."""
    from farm import api
    from farm.store import Store

    sec = Section("scale", "4. Scale: report, store, `farm runs`, `farm compare`",
                  goal=f"report of 100k samples in <= {REPORT_GOAL_S:g} s and "
                       f"<= {REPORT_GOAL_MB:g} MB")
    sizes = ({FIXTURE: 5_000, "256 cases, many rounds": 2_000} if quick
             else {FIXTURE: 100_000, "2400 cases, fewer rounds": 100_000})
    n_runs = 100 if quick else 1000
    reports: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-", dir=workdir) as d:
        tmp = Path(d)
        profiled = False
        for name, n in sizes.items():
            r = report_at(tmp, name, n)
            missed = bool(r["error"]) or r["render_s"] > REPORT_GOAL_S * n / 100_000 or \
                r["html_mb"] > REPORT_GOAL_MB
            if missed and not profiled and not r["error"] and not quick:
                r = _profile_only(r)
                profiled = True
            reports.append(r)
        # -- many runs: `farm runs` and `farm compare`
        say(f"scale: {n_runs} runs of 60 samples for `farm runs` / `farm compare`")
        hist = tmp / "history.sqlite"
        with Store(hist) as store:
            t0 = time.perf_counter()
            hist_n = 0
            for i in range(n_runs):
                day = f"2026-{1 + i // 28 % 12:02d}-{1 + i % 28:02d}T{i // 336:02d}:00:00"
                k, _ = fill_run(store, f"run{i:05d}", day, devices=5, repeats=3,
                                models=("mobilenet_v2",), quantizations=("fp32", "int8"),
                                delegates=("cpu", "xnnpack"), threads=(1,), seed=i)
                hist_n += k
            hist_wall = time.perf_counter() - t0
            runs = store.runs()
        base, new = runs[1]["run_id"], runs[0]["run_id"]
        say("scale: timing `farm runs` and `farm compare`")
        reps = 3 if quick else 5
        startup = _cli(hist, "--version", reps=reps)
        runs_cli = _cli(hist, "runs", reps=reps)
        compare_cli = _cli(hist, "compare", base, new, reps=reps)
        from farm import compare

        runs_api = median([timed(lambda: api.list_runs(hist))[0] for _ in range(reps)])
        cmp_api = median([timed(lambda: compare.compare_runs(hist, base, new))[0]
                          for _ in range(reps)])
    full = [r for r in reports if r["samples"] >= 100_000]
    if full:
        ok = all(not r["error"] and r["render_s"] <= REPORT_GOAL_S
                 and r["html_mb"] <= REPORT_GOAL_MB for r in full)
        sec.verdict = "met" if ok else "missed"
    own = [r for r in reports if r["raw_output"]] or reports
    n = sum(r["samples"] for r in own)
    sec.headline = "; ".join(f"{r['samples']:,} samples, {r['cases']} cases: "
                             f"{r['render_s']:.1f} s, {fmt(r['html_mb'], 1)} MB"
                             for r in reports)
    spent = sum(r["append_s"] for r in own)
    rate = n / spent
    sec.headline += (f"; {rate:,.0f} appends/s; `farm runs` {runs_cli:.2f} s, `farm compare` "
                     f"{compare_cli:.2f} s ({n_runs} runs)")
    sec.figures = {"reports": reports, "append_per_s": rate, "history_runs": n_runs,
                   "history_samples": hist_n, "history_fill_s": hist_wall,
                   "cli_startup_s": startup, "runs_cli_s": runs_cli,
                   "compare_cli_s": compare_cli, "runs_api_s": runs_api,
                   "compare_api_s": cmp_api}
    sec.add("Two shapes of one big run, because the report's cost follows the number of cases "
            "more than the number of samples. The report fixture is the report owner's scale "
            "run (tests/fixtures_report.make_scale_report_data: measure samples, sustained "
            "windows, fidelity rows), stored by its `write_store`. The other is generated "
            "here and stored as the runner stores samples: one `Store.append` each, a real "
            f"{len(TRANSCRIPT.read_text()):,}-byte transcript as raw output, a 3-point sampler "
            "series in env_json, 3 % tainted, 1 % failed; the insert rate is measured on it.")
    sec.add()
    sec.table(["shape", "samples", "cases x rounds", "render s", "index.html MB",
               "other files MB", "database MB"],
              [[r["shape"], f"{r['samples']:,}", f"{r['cases']} x {r['rounds']}",
                f"**{r['render_s']:.1f}**" + (f" (failed: {r['error']})" if r["error"] else ""),
                f"**{fmt(r['html_mb'], 2)}**",
                ", ".join(f"{k} {v:g}" for k, v in r["other_files_mb"].items()) or "-",
                f"{r['db_mb']:.0f}"] for r in reports])
    sec.table(["figure", "value"], [
        ["store insert rate (Store.append, one commit each, rows with raw output)",
         f"{rate:,.0f} samples/s"],
        [f"store fill, {n_runs} runs x 60 samples",
         f"{hist_wall:.1f} s ({hist_n / hist_wall:,.0f} samples/s incl. generation)"],
        ["`python -m farm --version` (interpreter + import floor)", f"{startup:.2f} s"],
        [f"`farm runs`, {n_runs} runs in the store",
         f"{runs_cli:.2f} s (api.list_runs in process: {runs_api:.3f} s)"],
        [f"`farm compare A B`, {n_runs} runs in the store",
         f"{compare_cli:.2f} s (compare.compare_runs in process: {cmp_api:.3f} s)"],
    ])
    sec.add(f"CLI figures are medians of {reps} process runs; `--version` shows how much of "
            "them is Python start-up and imports.")
    sec.add()
    for r in reports:
        if r["top"]:
            sec.add(f"Report rendering ({r['shape']}, {r['samples']:,} samples), top farm "
                    "functions by cumulative time under cProfile (which slows it down):")
            sec.add()
            sec.table(["function", "cumulative s", "own s", "calls"], r["top"])
    return sec


def _profile_only(r: dict[str, Any]) -> dict[str, Any]:
    """Render the already filled run again under cProfile; r plus its top functions."""
    from farm import api

    say("scale: rendering again under cProfile")
    db = Path(r["db"])
    prof = cProfile.Profile()
    prof.enable()
    try:
        api.render_report(db, "last", db.parent / f"reports-{db.stem}-prof")
    finally:
        prof.disable()
    return {**r, "top": _top(prof)}


