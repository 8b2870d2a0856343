"""A small real end-to-end run on the host, through the CLI: convert, benchmark, store, report.

Real TensorFlow converter (in a child process), real LiteRT runner processes, real SQLite.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from farm.cli import main
from tests.fixtures_variants import TinyModels, tiny_models  # noqa: F401 - pytest fixture

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, tiny_models: TinyModels  # noqa: F811
              ) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("e2e")
    sweep = {
        "schema_version": 1,
        "models": [{"name": "tiny", "source": str(tiny_models.keras_file)},
                   {"name": "broken", "source": str(tiny_models.unconvertible)}],
        "quantizations": ["fp32", "int8"],
        "delegates": ["cpu", "xnnpack", "gpu"],
        "threads": [1],
        "repeats": 3,
        "run": {"warmup_runs": 1, "warmup_min_secs": 0, "num_runs": 5, "min_secs": 0,
                "max_secs": 5, "timeout_s": 60},
        "sampler": {"hz": 20},
        "calibration": {"random": True, "num_samples": 4},
        "fidelity": {"num_inputs": 2, "tolerances": {"int8": {"min_cosine": 0.9}}},
    }
    (root / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    (root / "devices.yaml").write_text("schema_version: 1\nhost: only\n")
    return {"root": root, "sweep": root / "sweep.yaml", "devices": root / "devices.yaml",
            "db": root / "farm.sqlite", "out": root / "reports", "cache": root / "cache"}


def cli(ws: dict[str, Path], *args: str, monkeypatch: pytest.MonkeyPatch | None = None):
    runner = CliRunner()
    return runner.invoke(main, ["--db", str(ws["db"]), *args], catch_exceptions=False,
                         env={"FARM_CACHE": str(ws["cache"])})


@pytest.fixture(scope="module")
def first_run(workspace: dict[str, Path]) -> dict:
    r = cli(workspace, "run", "--matrix", str(workspace["sweep"]), "--devices-file",
            str(workspace["devices"]), "--out", str(workspace["out"]), "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.output.strip().splitlines()[-1])


def test_run_measures_stores_and_reports(workspace: dict[str, Path], first_run: dict) -> None:
    import farm

    assert first_run["ok"] == 2 * 2 * 3  # tiny × {fp32,int8} × {cpu,xnnpack} × 3 repeats
    df = farm.load_samples(workspace["db"], first_run["run_id"])
    ok = df[df["status"] == "ok"]
    assert len(ok) == 12 and (ok["inference_avg_us"] > 0).all()
    assert (ok["count"] >= 5).all() and ok["init_us"].notna().all()
    assert set(ok["format"]) == {"tf2.19+"}
    assert ok["binary_sha256"].str.len().eq(64).all() and ok["variant_sha256"].nunique() == 2
    assert (ok["device_label"].str.contains("Intel|AMD|host", regex=True)).all()
    assert not ok["simulated"].any()
    # XNNPACK explicitly applied on the xnnpack cases, never on the cpu cases
    assert set(ok[ok["delegate"] == "xnnpack"]["delegate_applied"]) == {"XNNPACK"}
    assert set(ok[ok["delegate"] == "cpu"]["delegate_applied"]) == {""}
    # GPU is unavailable on the host: skipped with a reason, never dropped silently
    gpu = df[df["delegate"] == "gpu"]
    assert set(gpu["status"]) <= {"skipped", "failed"} and len(gpu) == 4
    assert gpu[gpu["model"] == "tiny"]["error"].str.contains("needs gpu").all()
    # the unconvertible model is a recorded failure carrying the converter's message
    broken = df[df["model"] == "broken"]
    assert set(broken["status"]) == {"failed"}
    assert broken["error"].str.startswith("conversion failed:").all()
    # one sample per process, interleaved rounds
    assert sorted(ok["round"].unique()) == [0, 1, 2]
    report = Path(first_run["report"])
    html = report.read_text()
    assert report.name == "index.html" and "tiny" in html and "needs gpu" in html
    assert "random" in html.lower()  # random calibration is stated
    assert "data:image/png;base64," in html
    assert (report.parent / "summary.csv").exists() and (report.parent / "samples.csv").exists()


def test_rerun_converts_nothing_and_resume_adds_nothing(workspace: dict[str, Path],
                                                        first_run: dict) -> None:
    r = cli(workspace, "variants", "build", "--matrix", str(workspace["sweep"]), "--json")
    assert r.exit_code == 0, r.output
    built = json.loads(r.output)
    assert all(v["cached"] for v in built if v["status"] == "ok")
    before = sqlite3.connect(workspace["db"]).execute("SELECT COUNT(*) FROM samples").fetchone()
    r = cli(workspace, "run", "--matrix", str(workspace["sweep"]), "--devices-file",
            str(workspace["devices"]), "--out", str(workspace["out"]), "--resume", "last",
            "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.output.strip().splitlines()[-1])
    assert res["run_id"] == first_run["run_id"] and res["ok"] == 0
    after = sqlite3.connect(workspace["db"]).execute("SELECT COUNT(*) FROM samples").fetchone()
    assert before == after


def test_runs_report_and_parse_commands(workspace: dict[str, Path], first_run: dict) -> None:
    r = cli(workspace, "runs")
    assert first_run["run_id"] in r.output and "12 ok" in r.output
    r = cli(workspace, "report", first_run["run_id"][:15], "--out",
            str(workspace["root"] / "again"))
    assert r.exit_code == 0 and Path(r.output.strip()).exists()
    raw = sqlite3.connect(workspace["db"]).execute(
        "SELECT raw_output FROM samples WHERE status='ok' LIMIT 1").fetchone()[0]
    f = workspace["root"] / "out.txt"
    f.write_text(raw)
    r = cli(workspace, "parse", str(f), "--json")
    parsed = json.loads(r.output)
    assert parsed["success"] is True and parsed["count"] >= 5


def test_user_errors_are_one_line(workspace: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema_version: 1\nmodels: [x.tflite]\nthreads: [0]\n")
    r = cli(workspace, "run", "--matrix", str(bad), "--devices-file", str(workspace["devices"]))
    assert r.exit_code == 1
    assert r.output.strip().startswith(f"Error: {bad}: models[0].source:")
    assert "Traceback" not in r.output
    r = cli(workspace, "report", "nope")
    assert r.exit_code == 1 and "no run 'nope'" in r.output


def test_host_run_checks_fidelity_and_reads_process_memory(workspace: dict[str, Path],
                                                            first_run: dict) -> None:
    """Every variant x delegate that runs got a fidelity row against the host fp32 reference,
    and memory is recorded: the tool's own peak footprint on every sample, and the process's
    VmHWM from /proc wherever the sampler caught it running (samples over a second)."""
    from farm.store import Store

    with Store(workspace["db"]) as store:
        rows = store.fidelity(first_run["run_id"])
        df = store.load_samples(first_run["run_id"])
    got = {(r["model"], r["quantization"], r["delegate"]): r for r in rows}
    assert set(got) == {("tiny", q, d) for q in ("fp32", "int8") for d in ("cpu", "xnnpack")}
    fp32 = got[("tiny", "fp32", "cpu")]
    assert fp32["status"] == "ok" and fp32["within_tolerance"] == 1
    assert fp32["max_abs_error"] < 1e-5 and fp32["cosine_min"] > 0.9999
    int8 = got[("tiny", "int8", "cpu")]
    assert int8["status"] == "ok" and 0 < int8["max_abs_error"] and int8["n_inputs"] == 2
    ok = df[(df["status"] == "ok") & (df["phase"] == "measure")]
    assert (ok["peak_mem_mb"] > 1).all()
    caught = ok[ok["sampler_points"] > 0]
    assert len(caught) and caught["vmhwm_mb"].notna().all()
    assert (caught["vmhwm_mb"].astype(float) >= caught["vmrss_max_mb"].astype(float)).all()
