"""The results store: one SQLite database (WAL) for all runs.

Owns all database I/O. Tables: runs, devices, variants, cases, samples (raw output kept).
Each sample is committed as soon as it is appended, so an interrupted run loses nothing and
`--resume` is a set difference over (case_id, repeat).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from farm.errors import StoreError

if TYPE_CHECKING:
    import pandas as pd

SCHEMA_VERSION = 2

# Parser fields (farm.benchmark_model.BenchmarkOutput) stored as columns, with SQLite types.
PARSED_COLUMNS: tuple[tuple[str, str], ...] = (
    ("success", "INTEGER"), ("format", "TEXT"), ("source", "TEXT"), ("truncated", "INTEGER"),
    ("init_us", "REAL"), ("first_inference_us", "REAL"), ("warmup_avg_us", "REAL"),
    ("warmup_count", "INTEGER"), ("inference_avg_us", "REAL"), ("count", "INTEGER"),
    ("first_us", "REAL"), ("curr_us", "REAL"), ("min_us", "REAL"), ("max_us", "REAL"),
    ("avg_us", "REAL"), ("std_us", "REAL"), ("p5_us", "REAL"), ("median_us", "REAL"),
    ("p95_us", "REAL"), ("mem_init_mb", "REAL"), ("mem_overall_mb", "REAL"),
    ("peak_mem_mb", "REAL"), ("vmrss_mb", "REAL"), ("model_size_mb", "REAL"),
    ("num_threads", "INTEGER"), ("delegate_applied", "TEXT"), ("delegation", "TEXT"),
    ("delegate_kernels", "INTEGER"), ("delegated_nodes", "INTEGER"), ("total_nodes", "INTEGER"),
    ("partitions", "INTEGER"), ("default_xnnpack", "INTEGER"),
)

# The environment of each sample (see farm.probes).
ENV_COLUMNS: tuple[tuple[str, str], ...] = (
    ("variant_sha256", "TEXT"), ("variant_size_bytes", "INTEGER"), ("binary_sha256", "TEXT"),
    ("temp_before_c", "REAL"), ("temp_after_c", "REAL"), ("temp_max_c", "REAL"),
    ("thermal_status_before", "INTEGER"), ("thermal_status_after", "INTEGER"),
    ("battery_level", "REAL"), ("battery_temp_c", "REAL"), ("charging", "TEXT"),
    ("freq_cap_ratio", "REAL"), ("cooldown_wait_s", "REAL"),
    # v2: the sampler's view of the whole sample (farm.sampler)
    ("thermal_status_max", "INTEGER"), ("charging_before", "TEXT"), ("charging_after", "TEXT"),
    ("vmhwm_mb", "REAL"), ("vmrss_max_mb", "REAL"), ("sampler_points", "INTEGER"),
    ("sampler_cost_s", "REAL"),
)

META_COLUMNS: tuple[tuple[str, str], ...] = (
    ("run_id", "TEXT NOT NULL"), ("case_id", "TEXT NOT NULL"), ("device", "TEXT NOT NULL"),
    ("model", "TEXT"), ("quantization", "TEXT"), ("delegate", "TEXT"), ("threads", "INTEGER"),
    ("repeat", "INTEGER NOT NULL"), ("round", "INTEGER"), ("position", "INTEGER"),
    ("status", "TEXT NOT NULL"), ("error", "TEXT"), ("flags", "TEXT"), ("tainted", "INTEGER"),
    ("cpu_mask", "TEXT"), ("exit_code", "INTEGER"),
    # v2: "measure" (interleaved repeats) or "sustained" (repeat = window index)
    ("phase", "TEXT"), ("window_offset_s", "REAL"),
)

TAIL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("started_at", "TEXT"), ("ended_at", "TEXT"), ("duration_s", "REAL"), ("argv", "TEXT"),
    ("env_json", "TEXT"), ("parsed_json", "TEXT"), ("raw_output", "TEXT"),
)

SAMPLE_COLUMNS = META_COLUMNS + PARSED_COLUMNS + ENV_COLUMNS + TAIL_COLUMNS
_BOOL_COLUMNS = ("success", "truncated", "default_xnnpack", "tainted")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, sweep_file TEXT, sweep_sha256 TEXT, sweep_json TEXT,
    started_at TEXT, ended_at TEXT, status TEXT, farm_version TEXT, tf_version TEXT,
    litert_version TEXT, host TEXT, git_sha TEXT, calibration TEXT, seed INTEGER,
    repeats INTEGER, notes TEXT);
CREATE TABLE IF NOT EXISTS devices (
    run_id TEXT NOT NULL, serial TEXT NOT NULL, label TEXT, tier TEXT, simulated INTEGER,
    info_json TEXT, PRIMARY KEY (run_id, serial));
CREATE TABLE IF NOT EXISTS variants (
    run_id TEXT NOT NULL, model TEXT NOT NULL, quantization TEXT NOT NULL, status TEXT,
    path TEXT, sha256 TEXT, size_bytes INTEGER, source_sha256 TEXT, converter_version TEXT,
    conversion_s REAL, cached INTEGER, calibration TEXT, error TEXT,
    PRIMARY KEY (run_id, model, quantization));
CREATE TABLE IF NOT EXISTS cases (
    run_id TEXT NOT NULL, case_id TEXT NOT NULL, device TEXT, model TEXT, quantization TEXT,
    delegate TEXT, threads INTEGER, variant_sha256 TEXT, skip_reason TEXT,
    PRIMARY KEY (run_id, case_id));
CREATE TABLE IF NOT EXISTS samples (
    sample_id INTEGER PRIMARY KEY AUTOINCREMENT,
    {", ".join(f'"{n}" {t}' for n, t in SAMPLE_COLUMNS)},
    UNIQUE (run_id, case_id, repeat));
CREATE INDEX IF NOT EXISTS samples_run ON samples (run_id, case_id);
CREATE TABLE IF NOT EXISTS fidelity (
    run_id TEXT NOT NULL, device TEXT NOT NULL, model TEXT NOT NULL, quantization TEXT NOT NULL,
    delegate TEXT NOT NULL, threads INTEGER NOT NULL, variant_sha256 TEXT, status TEXT NOT NULL,
    error TEXT, n_inputs INTEGER, max_abs_error REAL, mean_abs_error REAL, cosine_min REAL,
    cosine_mean REAL, top1_agreement REAL, top5_agreement REAL, within_tolerance INTEGER,
    tolerance_json TEXT, details_json TEXT, created_at TEXT,
    PRIMARY KEY (run_id, device, model, quantization, delegate, threads));
"""

FIDELITY_COLUMNS: tuple[str, ...] = (
    "run_id", "device", "model", "quantization", "delegate", "threads", "variant_sha256",
    "status", "error", "n_inputs", "max_abs_error", "mean_abs_error", "cosine_min",
    "cosine_mean", "top1_agreement", "top5_agreement", "within_tolerance", "tolerance_json",
    "details_json", "created_at")


def now_iso() -> str:
    """UTC timestamp with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True, slots=True)
class SampleRecord:
    """One finished (or failed, or skipped) sample, ready to store."""

    run_id: str
    case_id: str
    device: str
    model: str
    quantization: str
    delegate: str
    threads: int
    repeat: int
    status: str  # "ok" | "failed" | "skipped"
    round: int = 0
    position: int = 0
    error: str = ""
    flags: tuple[str, ...] = ()
    tainted: bool = False
    cpu_mask: str = ""
    exit_code: int | None = None
    parsed: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, Any] = field(default_factory=dict)
    env_series: Mapping[str, Any] = field(default_factory=dict)
    started_at: str = ""
    ended_at: str = ""
    duration_s: float | None = None
    argv: tuple[str, ...] = ()
    raw_output: str = ""
    phase: str = "measure"
    window_offset_s: float | None = None


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    if version > SCHEMA_VERSION:
        raise StoreError(f"database schema version {version} is newer than this farm "
                         f"({SCHEMA_VERSION}); upgrade farm")
    if version < 2:
        # v1 -> v2: new sample columns (NULL for old rows); the fidelity table is created by
        # the schema script.
        have = {r[1] for r in conn.execute("PRAGMA table_info(samples)")}
        for name, kind in SAMPLE_COLUMNS:
            if name not in have:
                conn.execute(f'ALTER TABLE samples ADD COLUMN "{name}" {kind}')
        conn.execute("UPDATE samples SET phase='measure' WHERE phase IS NULL")
        conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))


class Store:
    """A handle on the database; safe to share between device worker threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False,
                                         isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA busy_timeout=30000")
            with self._tx() as c:
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        c.execute(stmt)
                row = c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                if row is None:
                    c.execute("INSERT INTO meta VALUES ('schema_version', ?)",
                              (str(SCHEMA_VERSION),))
                else:
                    _migrate(c, int(row[0]))
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path}: not a usable farm database: {e}") from None
        self._lock = threading.RLock()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        lock = getattr(self, "_lock", None)
        if lock:
            lock.acquire()
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        finally:
            if lock:
                lock.release()

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writes

    def start_run(self, run_id: str, **fields: Any) -> None:
        """Record a new run (status running)."""
        cols = {"run_id": run_id, "started_at": now_iso(), "status": "running", **fields}
        with self._tx() as c:
            c.execute(f"INSERT INTO runs ({', '.join(cols)}) VALUES "
                      f"({', '.join('?' * len(cols))})", tuple(cols.values()))

    def update_run(self, run_id: str, **fields: Any) -> None:
        """Change a run's status, end time, etc."""
        if not fields:
            return
        with self._tx() as c:
            c.execute(f"UPDATE runs SET {', '.join(f'{k}=?' for k in fields)} WHERE run_id=?",
                      (*fields.values(), run_id))

    def add_device(self, run_id: str, info: Mapping[str, Any], *, tier: str = "") -> None:
        """Store a device's facts for a run (replaces an earlier record on resume)."""
        label = str(info.get("label") or info.get("serial"))
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO devices VALUES (?, ?, ?, ?, ?, ?)",
                      (run_id, info["serial"], label, tier, int(bool(info.get("simulated"))),
                       json.dumps(info, sort_keys=True)))

    def add_variant(self, run_id: str, v: Mapping[str, Any]) -> None:
        """Store a converted (or failed) variant."""
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO variants VALUES "
                      "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (run_id, v["model"], v["quantization"], v["status"], v.get("path", ""),
                       v.get("sha256", ""), v.get("size_bytes", 0), v.get("source_sha256", ""),
                       v.get("converter_version", ""), v.get("conversion_s", 0.0),
                       int(bool(v.get("cached"))), v.get("calibration", ""), v.get("error", "")))

    def add_cases(self, run_id: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Store the planned cases of a run."""
        with self._tx() as c:
            c.executemany("INSERT OR REPLACE INTO cases VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                          [(run_id, r["case_id"], r["device"], r["model"], r["quantization"],
                            r["delegate"], r["threads"], r.get("variant_sha256", ""),
                            r.get("skip_reason", "")) for r in rows])

    def append(self, s: SampleRecord) -> int:
        """Insert one sample and commit it before returning. Returns its sample_id.

        A (run, case, repeat) that is already stored is kept: resuming never duplicates.
        """
        values: dict[str, Any] = {
            "run_id": s.run_id, "case_id": s.case_id, "device": s.device, "model": s.model,
            "quantization": s.quantization, "delegate": s.delegate, "threads": s.threads,
            "repeat": s.repeat, "round": s.round, "position": s.position, "status": s.status,
            "error": s.error, "flags": ",".join(s.flags), "tainted": int(s.tainted),
            "cpu_mask": s.cpu_mask, "exit_code": s.exit_code, "started_at": s.started_at,
            "ended_at": s.ended_at, "duration_s": s.duration_s, "argv": json.dumps(list(s.argv)),
            "raw_output": s.raw_output, "phase": s.phase, "window_offset_s": s.window_offset_s,
        }
        for name, _ in PARSED_COLUMNS:
            v = s.parsed.get(name)
            values[name] = int(v) if isinstance(v, bool) else v
        for name, _ in ENV_COLUMNS:
            values[name] = s.env.get(name)
        values["parsed_json"] = json.dumps(dict(s.parsed), sort_keys=True, default=str)
        values["env_json"] = json.dumps({**dict(s.env), "series": dict(s.env_series)},
                                        sort_keys=True, default=str)
        cols = list(values)
        quoted = ", ".join('"' + k + '"' for k in cols)
        with self._tx() as c:
            cur = c.execute(
                f"INSERT OR IGNORE INTO samples ({quoted}) "
                f"VALUES ({', '.join('?' * len(cols))})", tuple(values[k] for k in cols))
            return int(cur.lastrowid or 0)

    def add_fidelity(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Store output-fidelity results (one row per run x device x variant x delegate x
        threads; a rerun of the same key replaces it). Keys are FIDELITY_COLUMNS."""
        stamp = now_iso()
        with self._tx() as c:
            for r in rows:
                vals = []
                for k in FIDELITY_COLUMNS:
                    v = r.get(k, stamp if k == "created_at" else None)
                    if k.endswith("_json") and v is not None and not isinstance(v, str):
                        v = json.dumps(v, sort_keys=True, default=str)
                    vals.append(int(v) if isinstance(v, bool) else v)
                c.execute(f"INSERT OR REPLACE INTO fidelity ({', '.join(FIDELITY_COLUMNS)}) "
                          f"VALUES ({', '.join('?' * len(FIDELITY_COLUMNS))})", vals)

    # ------------------------------------------------------------------ reads

    def fidelity(self, run_id: str) -> list[dict[str, Any]]:
        """Output-fidelity rows of a run."""
        with self._lock:
            cur = self._conn.execute("SELECT * FROM fidelity WHERE run_id=? ORDER BY device, "
                                     "model, quantization, delegate, threads", (run_id,))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def done_keys(self, run_id: str) -> set[tuple[str, int]]:
        """(case_id, repeat) pairs already stored for a run."""
        with self._lock:
            rows = self._conn.execute("SELECT case_id, repeat FROM samples WHERE run_id=?",
                                      (run_id,)).fetchall()
        return {(r[0], int(r[1])) for r in rows}

    def run(self, run_id: str) -> dict[str, Any]:
        """One run's record; StoreError if unknown."""
        with self._lock:
            cur = self._conn.execute("SELECT * FROM runs WHERE run_id=?", (run_id,))
            row = cur.fetchone()
            names = [d[0] for d in cur.description]
        if row is None:
            known = ", ".join(r["run_id"] for r in self.runs()[:5])
            raise StoreError(f"{self.path}: no run {run_id!r}" + (f"; recent: {known}" if known
                                                                  else "; the store is empty"))
        return dict(zip(names, row, strict=True))

    def resolve_run(self, ref: str) -> str:
        """A run id from 'last' or a unique prefix."""
        runs = self._run_ids()
        if ref in ("last", "latest"):
            if not runs:
                raise StoreError(f"{self.path}: no runs yet")
            return str(runs[0]["run_id"])
        matches = [r["run_id"] for r in runs if str(r["run_id"]).startswith(ref)]
        if len(matches) == 1:
            return str(matches[0])
        if not matches:
            return str(self.run(ref)["run_id"])  # raises with the recent list
        raise StoreError(f"{self.path}: {ref!r} matches several runs: {', '.join(matches[:5])}")

    def _run_ids(self) -> list[dict[str, Any]]:
        """Run ids, newest first, in the order of `runs()` without its sample counts (which
        read every sample row: 0.7-1.3 s for a 100k-sample run)."""
        with self._lock:
            rows = self._conn.execute("SELECT r.run_id FROM runs r ORDER BY started_at DESC")
            return [{"run_id": row[0]} for row in rows.fetchall()]

    def runs(self) -> list[dict[str, Any]]:
        """All runs, newest first, with sample counts."""
        with self._lock:
            cur = self._conn.execute(
                "SELECT r.*, "
                "(SELECT COUNT(*) FROM samples s WHERE s.run_id=r.run_id AND s.status='ok') n_ok,"
                "(SELECT COUNT(*) FROM samples s WHERE s.run_id=r.run_id AND s.status='failed')"
                " n_failed,"
                "(SELECT COUNT(*) FROM samples s WHERE s.run_id=r.run_id AND s.status='skipped')"
                " n_skipped, "
                "(SELECT COUNT(*) FROM devices d WHERE d.run_id=r.run_id) n_devices "
                "FROM runs r ORDER BY started_at DESC")
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def devices(self, run_id: str) -> list[dict[str, Any]]:
        """Device facts of a run (with tier)."""
        with self._lock:
            rows = self._conn.execute("SELECT info_json, tier FROM devices WHERE run_id=? "
                                      "ORDER BY serial", (run_id,)).fetchall()
        return [{**json.loads(r[0]), "tier": r[1] or ""} for r in rows]

    def cases(self, run_id: str) -> list[dict[str, Any]]:
        """Planned cases of a run."""
        with self._lock:
            cur = self._conn.execute("SELECT * FROM cases WHERE run_id=? ORDER BY case_id",
                                     (run_id,))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def variants_frame(self, run_id: str) -> pd.DataFrame:
        """Variants of a run as a DataFrame."""
        import pandas as pd

        with self._lock:
            return pd.read_sql_query("SELECT * FROM variants WHERE run_id=? ORDER BY model, "
                                     "quantization", self._conn, params=(run_id,))

    def round_latencies(self, run_id: str, device: str) -> dict[str, dict[int, float]]:
        """{case_id: {round: avg_us}} of a device's usable interleaved samples (ok, untainted,
        phase measure): what adaptive repeats decide on."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT case_id, round, avg_us FROM samples WHERE run_id=? AND device=? AND "
                "status='ok' AND COALESCE(tainted, 0)=0 AND COALESCE(phase, 'measure')="
                "'measure' AND avg_us IS NOT NULL", (run_id, device)).fetchall()
        out: dict[str, dict[int, float]] = {}
        for case_id, rnd, avg in rows:
            out.setdefault(case_id, {})[int(rnd)] = float(avg)
        return out

    def count_samples(self, run_id: str) -> int:
        """How many samples the run has stored (any status or phase)."""
        with self._lock:
            row = self._conn.execute("SELECT COUNT(*) FROM samples WHERE run_id=?",
                                     (run_id,)).fetchone()
        return int(row[0])

    def load_samples(self, run_id: str | None = None, *, raw: bool = False) -> pd.DataFrame:
        """Samples (one row each) with the device label, tier and simulated flag joined in."""
        import pandas as pd

        skip = set() if raw else {"raw_output", "env_json", "parsed_json", "argv"}
        cols = ", ".join(f's."{n}"' for n, _ in SAMPLE_COLUMNS if n not in skip)
        sql = (f"SELECT s.sample_id, {cols}, COALESCE(d.label, s.device) AS device_label, "
               "COALESCE(d.simulated, 0) AS simulated, COALESCE(d.tier, '') AS tier "
               "FROM samples s LEFT JOIN devices d ON d.run_id=s.run_id AND d.serial=s.device")
        params: tuple[Any, ...] = ()
        if run_id is not None:
            sql += " WHERE s.run_id=?"
            params = (run_id,)
        sql += " ORDER BY s.sample_id"
        with self._lock:
            frame = pd.read_sql_query(sql, self._conn, params=params)
        for col in (*_BOOL_COLUMNS, "simulated"):
            if col in frame:
                frame[col] = frame[col].astype("boolean")
        if "phase" in frame:
            frame["phase"] = frame["phase"].fillna("measure")
        for col in ("error", "flags", "cpu_mask", "delegation", "delegate_applied", "tier"):
            if col in frame:
                frame[col] = frame[col].fillna("")
        return frame

    # ------------------------------------------------------------------ history (farm.compare)

    def previous_run(self, run_id: str, *, status: str | None = "finished") -> str | None:
        """The newest run (with `status`, unless None) started before `run_id`, or None."""
        with self._lock:
            row = self._conn.execute("SELECT started_at FROM runs WHERE run_id=?",
                                     (run_id,)).fetchone()
            if row is None:
                self.run(run_id)  # raises with the recent list
            sql = ("SELECT run_id FROM runs WHERE run_id != ? AND "
                   "(started_at < ? OR (started_at = ? AND run_id < ?))")
            params: list[Any] = [run_id, row[0], row[0], run_id]
            if status is not None:
                sql += " AND status = ?"
                params.append(status)
            found = self._conn.execute(sql + " ORDER BY started_at DESC, run_id DESC LIMIT 1",
                                       params).fetchone()
        return None if found is None else str(found[0])

    def history_samples(self, *, until_run: str | None = None, max_runs: int = 60,
                        include_until: bool = True) -> pd.DataFrame:
        """Measure-phase samples of the newest `max_runs` runs that started no later than
        `until_run` (every run when None; without `until_run` itself when not
        `include_until`), with `run_started_at` and `run_status`; the columns regression
        thresholds and trends need, not the raw output."""
        import pandas as pd

        with self._lock:
            sql = "SELECT run_id, started_at, status FROM runs"
            params: tuple[Any, ...] = ()
            if until_run is not None:
                row = self._conn.execute("SELECT started_at FROM runs WHERE run_id=?",
                                         (until_run,)).fetchone()
                if row is None:
                    self.run(until_run)  # raises with the recent list
                sql += " WHERE started_at <= ?"
                params = (row[0],)
                if not include_until:
                    sql += " AND run_id != ?"
                    params = (row[0], until_run)
            runs = self._conn.execute(sql + " ORDER BY started_at DESC LIMIT ?",
                                      (*params, max_runs)).fetchall()
            ids = [r[0] for r in runs]
            cols = ("run_id", "case_id", "device", "model", "quantization", "delegate",
                    "threads", "repeat", "round", "status", "error", "flags", "tainted",
                    "phase", "inference_avg_us", "delegation", "delegate_applied",
                    "delegated_nodes", "total_nodes", "started_at")
            sel = ", ".join(f's."{c}"' for c in cols)
            marks = ", ".join("?" * len(ids))
            frame = pd.read_sql_query(
                f"SELECT {sel}, COALESCE(d.label, s.device) AS device_label, "
                "COALESCE(d.simulated, 0) AS simulated, COALESCE(d.tier, '') AS tier "
                "FROM samples s LEFT JOIN devices d ON d.run_id=s.run_id AND d.serial=s.device "
                f"WHERE s.run_id IN ({marks}) AND COALESCE(s.phase, 'measure') = 'measure' "
                "ORDER BY s.sample_id", self._conn, params=ids) if ids else None
        if frame is None:
            frame = pd.DataFrame({c: pd.Series(dtype=object) for c in
                                  (*cols, "device_label", "simulated", "tier")})
        started = {r[0]: r[1] for r in runs}
        status = {r[0]: r[2] for r in runs}
        frame["run_started_at"] = frame["run_id"].map(started)
        frame["run_status"] = frame["run_id"].map(status)
        for col in ("tainted", "simulated"):
            frame[col] = frame[col].astype("boolean")
        frame["phase"] = frame["phase"].fillna("measure")
        for col in ("error", "flags", "delegation", "delegate_applied", "tier"):
            frame[col] = frame[col].fillna("")
        return frame


def load_samples(db: Path, run_id: str | None = None) -> pd.DataFrame:
    """All samples of a run (or of every run) as a pandas DataFrame."""
    if not Path(db).exists():
        raise StoreError(f"{db}: no such database")
    with Store(db) as store:
        return store.load_samples(None if run_id is None else store.resolve_run(run_id))


def write_samples_csv(db: Path, run_id: str, path: Path) -> int:
    """Write a run's samples, as `Store.load_samples` gives them, to a CSV (what a report's
    samples.csv holds; run by a report worker, which reads the store itself instead of being
    sent 100k rows). Returns the number of rows."""
    with Store(db) as store:
        frame = store.load_samples(run_id)
    frame.to_csv(path, index=False)
    return len(frame)
