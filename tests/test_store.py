"""The SQLite store: round trip, commit per sample, no duplicates, schema version."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import farm
from farm.errors import StoreError
from farm.store import SAMPLE_COLUMNS, SCHEMA_VERSION, SampleRecord, Store, load_samples


def record(case: str = "c1", repeat: int = 0, status: str = "ok", **kw: object) -> SampleRecord:
    base = dict(run_id="r1", case_id=case, device="host", model="m", quantization="fp32",
                delegate="cpu", threads=1, repeat=repeat, status=status,
                parsed={"success": status == "ok", "inference_avg_us": 1234.5, "count": 50,
                        "delegation": "", "p95_us": 1400.0, "unknown_future_field": 7},
                env={"temp_before_c": 30.5, "binary_sha256": "ab" * 32},
                raw_output="INFO: count=50 ...\n", flags=("high_variance",), argv=("a", "b"))
    base.update(kw)
    return SampleRecord(**base)  # type: ignore[arg-type]


def test_round_trip(tmp_path: Path) -> None:
    db = tmp_path / "farm.sqlite"
    with Store(db) as s:
        s.start_run("r1", sweep_file="sweep.yaml", sweep_sha256="0" * 64, repeats=3, seed=0)
        s.add_device("r1", {"serial": "host", "label": "host CPU", "simulated": False})
        s.add_variant("r1", {"model": "m", "quantization": "fp32", "status": "ok",
                             "sha256": "f" * 64, "size_bytes": 10})
        assert s.append(record()) > 0
        s.append(record("c2", status="failed", error="Benchmarking failed."))
        s.update_run("r1", status="finished")
    frame = load_samples(db, "r1")
    assert list(frame["case_id"]) == ["c1", "c2"]
    row = frame.iloc[0]
    assert row["inference_avg_us"] == 1234.5 and row["count"] == 50 and row["p95_us"] == 1400
    assert row["device_label"] == "host CPU" and not row["simulated"]
    assert row["flags"] == "high_variance" and row["temp_before_c"] == 30.5
    assert frame.iloc[1]["error"] == "Benchmarking failed."
    assert "raw_output" not in frame.columns
    with Store(db) as s:
        raw = s.load_samples("r1", raw=True)
        assert raw.iloc[0]["raw_output"].startswith("INFO: count=50")
        assert '"unknown_future_field": 7' in raw.iloc[0]["parsed_json"]
        assert s.run("r1")["status"] == "finished"
        assert s.resolve_run("last") == "r1" and s.resolve_run("r") == "r1"
    # the public entry point, as the issue asks: farm.load_samples()
    assert len(farm.load_samples(db)) == 2


def test_each_sample_is_committed_and_never_duplicated(tmp_path: Path) -> None:
    db = tmp_path / "farm.sqlite"
    s = Store(db)
    s.start_run("r1")
    s.append(record("c1", 0))
    # A second connection sees the sample at once: it was committed, not buffered.
    other = sqlite3.connect(db)
    assert other.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 1
    s.append(record("c1", 0, status="failed"))  # a resumed run re-offering the same sample
    s.append(record("c1", 1))
    assert other.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 2
    assert s.done_keys("r1") == {("c1", 0), ("c1", 1)}
    assert other.execute("SELECT status FROM samples WHERE repeat=0").fetchone()[0] == "ok"
    s.close()


def test_schema_version_and_errors(tmp_path: Path) -> None:
    db = tmp_path / "farm.sqlite"
    Store(db).close()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT value FROM meta").fetchone()[0] == str(SCHEMA_VERSION)
    cols = [r[1] for r in conn.execute("PRAGMA table_info(samples)")]
    assert [n for n, _ in SAMPLE_COLUMNS] == cols[1:]
    conn.execute("UPDATE meta SET value='99'")
    conn.commit()
    with pytest.raises(StoreError, match="schema version 99 is newer"):
        Store(db)
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="not a usable farm database"):
        Store(bad)
    with pytest.raises(StoreError, match="no such database"):
        load_samples(tmp_path / "missing.sqlite")
    with Store(tmp_path / "e.sqlite") as s, pytest.raises(StoreError, match="no runs yet"):
        s.resolve_run("last")


def test_v1_database_is_migrated_in_place(tmp_path):
    """A store written by schema v1 (tests/data/store_v1.sqlite) opens, gains the v2 columns
    and the fidelity table, and keeps its samples."""
    import shutil

    from farm.store import SCHEMA_VERSION, Store

    db = tmp_path / "old.sqlite"
    shutil.copy(Path(__file__).parent / "data" / "store_v1.sqlite", db)
    with Store(db) as s:
        df = s.load_samples("r1")
        assert list(df["avg_us"]) == [1234.0]
        assert list(df["phase"]) == ["measure"]
        assert "vmhwm_mb" in df.columns and df["vmhwm_mb"].isna().all()
        version = s._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        assert int(version[0]) == SCHEMA_VERSION == 2
        s.add_fidelity([{"run_id": "r1", "device": "d", "model": "m", "quantization": "int8",
                         "delegate": "cpu", "threads": 1, "status": "ok", "cosine_min": 0.99,
                         "within_tolerance": True, "details_json": {"top1": [1, 1]}}])
        [row] = s.fidelity("r1")
        assert row["within_tolerance"] == 1 and row["details_json"] == '{"top1": [1, 1]}'
