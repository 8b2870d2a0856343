"""Smoke tests of bench/ at the smallest sizes, so the bench entry points do not rot.

They assert structure (what was measured, and where), never timings: the figures themselves
belong in bench/RESULTS.md.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from bench import fidelity, overhead, run, scale
from bench.common import TINY, ExclusiveTimer, Section


class _Clock:
    """A fake clock that the work below advances (thread-safe enough: one adder at a time)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def spend(self, s: float) -> None:
        with self.lock:
            self.now += s


class _Work:
    def __init__(self, clock: _Clock) -> None:
        self.clock = clock

    def outer(self) -> None:
        self.clock.spend(2.0)
        self.inner()

    def inner(self) -> None:
        self.clock.spend(3.0)

    def absorbing(self) -> None:
        self.clock.spend(1.0)
        self.inner()


def test_exclusive_timer_subtracts_callees_and_restores() -> None:
    clock = _Clock()
    w = _Work(clock)
    timer = ExclusiveTimer(clock=clock)
    timer.wrap(_Work, "outer", "outer")
    timer.wrap(_Work, "inner", lambda parent, *a, **k: f"inner under {parent or 'nothing'}")
    timer.wrap(_Work, "absorbing", "absorbing", absorb=True)
    w.outer()
    w.inner()
    w.absorbing()
    assert timer.totals == {"outer": 2.0, "inner under outer": 3.0, "inner under nothing": 3.0,
                            "absorbing": 4.0}
    # counts are right when several threads call at once (a real clock: only counts checked)
    timer.clock = time.perf_counter
    threads = [threading.Thread(target=w.outer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    timer.restore()
    assert timer.counts == {"outer": 5, "inner under outer": 5, "inner under nothing": 1,
                            "absorbing": 1}
    assert not hasattr(_Work.outer, "__wrapped__") and not hasattr(_Work.inner, "__wrapped__")


def test_render_keeps_other_sections_and_appended_text() -> None:
    machine = {"date_utc": "2026-01-01 00:00 UTC", "cpu": "cpu", "cores": 2, "ram_gb": 4,
               "os": "os", "python": "3.11", "farm_git_sha": "abc", "ai_edge_litert": "1",
               "adbutils": "2", "load_avg_at_start": [0, 0, 0]}
    a = Section("parallel", "1. Parallel", goal="ratio <= 1.1", verdict="missed",
                headline="16 phones 1.5")
    a.add("old parallel body")
    first = run.render(machine, [a], quick=False)
    assert "| parallel | ratio <= 1.1 | **missed** | 16 phones 1.5 |" in first
    soak = "## Soak\n\nsoak body\n"
    b = Section("overhead", "2. Overhead", headline="7 %")
    b.add("new overhead body")
    second = run.render({**machine, "date_utc": "2026-02-02 00:00 UTC"}, [b], quick=False,
                        previous=first + "\n" + soak)
    assert "old parallel body" in second and "new overhead body" in second
    assert "_(kept)_" in second and "soak body" in second
    assert second.index("new overhead body") < second.index(run.END) < second.index("soak")
    c = Section("parallel", "1. Parallel", headline="16 phones 1.05")
    c.add("new parallel body")
    third = run.render(machine, [c], quick=False, previous=second)
    assert "old parallel body" not in third and "new parallel body" in third
    assert third.count("soak body") == 1 and "new overhead body" in third
    fourth = run.render(machine, [c], quick=False, previous=third)
    assert "7 % _(kept)_ |" in fourth and "_(kept)_ _(kept)_" not in fourth


def test_synthetic_store_rows_load_back(tmp_path: Path) -> None:
    from farm.store import Store

    with Store(tmp_path / "s.sqlite") as store:
        n, _ = scale.fill_run(store, "r1", "2026-01-01T00:00:00", devices=2, repeats=2,
                              models=("mobilenet_v2",), quantizations=("fp32", "int8"),
                              delegates=("cpu",), threads=(1,))
        df = store.load_samples("r1")
    assert n == len(df) == 2 * 1 * 2 * 1 * 1 * 2
    ok = df[df["status"] == "ok"]
    assert (ok["avg_us"] > 0).all() and set(df["quantization"]) == {"fp32", "int8"}


@pytest.mark.parametrize("runner", fidelity.RUNNERS)
def test_fidelity_runners_report_a_latency(runner: str) -> None:
    us = fidelity.measure_once(runner, TINY, 1, warmup=2, runs=20)
    assert 0 < us < 1e6


def test_overhead_measure_on_one_simulated_phone(tmp_path: Path) -> None:
    m = overhead.measure(tmp_path, phones=1, profile="flagship", model=TINY, time_scale=5.0,
                         run={"warmup_runs": 1, "warmup_min_secs": 0, "num_runs": 5,
                              "min_secs": 0.1}, repeats=1, delegates=("cpu",))
    assert m["first"].bytes_pushed > 0 and m["second"].bytes_pushed == 0
    assert m["ok"] == m["samples"] == 1
    timer = m["timer"]
    assert timer.counts[overhead.BENCH] == 1
    assert timer.counts["store.append (one commit per sample)"] == 1
    # the idle reading from staging opened the gate, and the closing probe rode in the
    # benchmark's shell: no probe shell of its own
    assert not any(k.endswith("(adb shell)") and "probe" in k for k in timer.totals)
    assert 0 <= m["probe_in_shell_s"] < 1.0
    assert m["second"].benchmark_s > 0
