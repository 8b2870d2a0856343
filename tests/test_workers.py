"""farm.workers: the report's helper processes (real subprocesses, real pickles), and the big-
report path through api.render_report that uses them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from farm import api
from farm.report import plots
from farm.store import Store, write_samples_csv
from farm.workers import Workers
from tests.fixtures_report import stored_v2_run


def _print_then_square(x: int) -> int:
    print("noise on stdout must not reach the protocol")
    return x * x


def _die() -> None:
    os._exit(3)


def test_jobs_run_in_child_processes_and_errors_come_back() -> None:
    pool = Workers(2)
    try:
        squares = [pool.submit(_print_then_square, i) for i in range(6)]
        pids = [pool.submit(os.getpid) for _ in range(4)]
        assert [f.result(timeout=60) for f in squares] == [0, 1, 4, 9, 16, 25]
        assert os.getpid() not in {f.result(timeout=60) for f in pids}
        bad = pool.submit(int, "x")
        with pytest.raises(RuntimeError, match=r"ValueError: invalid literal"):
            bad.result(timeout=60)
        unpicklable = pool.submit(lambda: 1)
        with pytest.raises(RuntimeError, match="figure worker .* failed"):
            unpicklable.result(timeout=60)
        assert pool.submit(_print_then_square, 7).result(timeout=60) == 49  # still working
    finally:
        pool.close()


def test_a_worker_that_dies_fails_its_job_with_the_reason() -> None:
    pool = Workers(1)
    try:
        dead = pool.submit(_die)
        with pytest.raises(RuntimeError, match=r"exit status 3|exited \(3\)"):
            dead.result(timeout=60)
    finally:
        pool.close()


def test_close_cancels_what_has_not_started() -> None:
    import time

    pool = Workers(1)
    first = pool.submit(time.sleep, 1.0)
    later = [pool.submit(time.sleep, 5.0) for _ in range(3)]
    deadline = time.monotonic() + 60
    while not first.running() and time.monotonic() < deadline:
        time.sleep(0.01)
    pool.close()
    assert first.done() and first.exception() is None
    assert all(f.cancelled() for f in later)


def test_big_report_path_through_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    """api.render_report with workers (threshold lowered to this small run): samples.csv is
    written by a worker straight from the store, and the report equals the serial one."""
    db = tmp_path / "farm.sqlite"
    run_id, _ = stored_v2_run(db)
    with Store(db) as store:
        assert store.count_samples(run_id) == len(store.load_samples(run_id))
    serial = api.render_report(db, run_id, tmp_path / "serial")
    calls: list[int] = []
    real = Workers.__init__

    def counting(self: Workers, n: int, **kw: object) -> None:
        calls.append(n)
        real(self, n, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Workers, "__init__", counting)
    monkeypatch.setattr(plots, "PARALLEL_MIN_SAMPLES", 1)
    par = api.render_report(db, run_id, tmp_path / "workers")
    assert calls and calls[0] >= 1
    for name in sorted(p.name for p in serial.parent.iterdir()):
        assert (serial.parent / name).read_bytes() == (par.parent / name).read_bytes(), name
    # the worker's job on its own: the same CSV as the store's frame gives
    out = tmp_path / "again.csv"
    assert write_samples_csv(db, run_id, out) == store_rows(db, run_id)
    assert out.read_bytes() == (par.parent / "samples.csv").read_bytes()


def store_rows(db: Path, run_id: str) -> int:
    with Store(db) as store:
        return len(store.load_samples(run_id))


def test_history_can_leave_out_the_run_itself(tmp_path: Path) -> None:
    db = tmp_path / "farm.sqlite"
    run_id, _ = stored_v2_run(db, earlier_runs=("night-1", "night-2"))
    with Store(db) as store:
        with_it = store.history_samples(until_run=run_id)
        without = store.history_samples(until_run=run_id, include_until=False)
        before = store.history_samples(until_run="night-2", include_until=False)
    assert set(with_it["run_id"]) == {run_id, "night-1", "night-2"}
    assert set(without["run_id"]) == {"night-1", "night-2"}
    assert set(before["run_id"]) == {"night-1"}  # later runs are never history




def test_big_report_into_an_unwritable_place_is_a_clear_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from farm.errors import FarmError

    db = tmp_path / "farm.sqlite"
    run_id, _ = stored_v2_run(db)
    blocker = tmp_path / "reports"
    blocker.write_text("a file where the reports folder should be")
    monkeypatch.setattr(plots, "PARALLEL_MIN_SAMPLES", 1)
    with pytest.raises(FarmError, match="cannot write the report"):
        api.render_report(db, run_id, blocker)
