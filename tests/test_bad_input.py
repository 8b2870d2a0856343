"""Bad input: malformed or hostile sweep.yaml, devices.yaml, delegates/*.yaml and model files.

Each gives one clear error naming the file and the key (through the real CLI: exit 1, no
traceback) and leaves nothing half-written in the results store. A model that turns corrupt
after validation becomes a recorded failed variant, never a traceback.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from farm import api, config
from farm.cli import main
from farm.devices.local import LocalDevice
from farm.errors import ConfigError, ConversionError
from farm.variants import model_file_problem, read_tflite
from tests import fixtures_sim

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "data" / "models" / "tiny_fp32.tflite"

adb_servers = fixtures_sim.adb_servers
sim_fleet = fixtures_sim.sim_fleet


# --------------------------------------------------------------------------- helpers

def good_sweep(**over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "schema_version": 1,
        "models": [{"name": "tiny", "source": str(TINY)}],
        "quantizations": ["fp32"], "delegates": ["cpu"], "threads": [1], "repeats": 1,
        "run": {"warmup_runs": 1, "warmup_min_secs": 0, "num_runs": 3, "min_secs": 0,
                "max_secs": 5, "timeout_s": 60},
    }
    d.update(over)
    return d


GOOD_DEVICES = "schema_version: 1\nhost: only\n"


class Workspace:
    """A tmp directory with sweep.yaml, devices.yaml, a db path and a cache, driven by the CLI."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sweep = root / "sweep.yaml"
        self.devices = root / "devices.yaml"
        self.db = root / "farm.sqlite"
        self.sweep.write_text(yaml.safe_dump(good_sweep()))
        self.devices.write_text(GOOD_DEVICES)

    def write(self, name: str, content: str | bytes | dict[str, Any]) -> Path:
        p = self.root / name
        if isinstance(content, dict):
            content = yaml.safe_dump(content)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
        return p

    def run(self, *extra: str) -> Result:
        return CliRunner().invoke(
            main, ["--db", str(self.db), "run", "--matrix", str(self.sweep), "--devices-file",
                   str(self.devices), "--out", str(self.root / "reports"), "--quiet", *extra],
            env={"FARM_CACHE": str(self.root / "cache")})

    def run_rows(self) -> list[tuple[Any, ...]]:
        if not self.db.exists():
            return []
        with sqlite3.connect(self.db) as c:
            return c.execute("SELECT run_id, status FROM runs").fetchall()


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path)


def assert_clean_failure(ws: Workspace, r: Result, *needles: str) -> None:
    """Exit 1 via ClickException, one message naming what is wrong, no traceback, no run."""
    assert r.exit_code == 1, r.output
    assert isinstance(r.exception, SystemExit), repr(r.exception)  # not an escaped exception
    assert "Traceback" not in r.output
    assert r.output.startswith("Error: "), r.output
    assert r.output.count("Error: ") == 1
    for needle in needles:
        assert needle in r.output, (needle, r.output)
    assert ws.run_rows() == []  # validation failed before anything reached the store


def bomb(levels: int = 9, width: int = 10) -> str:
    """A "billion laughs" YAML document: width**levels strings from a few hundred bytes."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- sweep.yaml

SWEEP_CASES: list[tuple[str, Callable[[Workspace], str | bytes | dict[str, Any]], list[str]]] = [
    ("unclosed flow list", lambda w: "schema_version: 1\nmodels: [a, b\n",
     ["malformed YAML", "line"]),
    ("tab indentation", lambda w: "schema_version: 1\nrun:\n\twarmup_runs: 1\n",
     ["malformed YAML", "line 3"]),
    ("not UTF-8", lambda w: b"schema_version: 1\nname: \xff\xfe\n", ["not UTF-8"]),
    ("empty file", lambda w: "", ["expected a mapping, got None"]),
    ("a list, not a mapping", lambda w: "- 1\n- 2\n", ["expected a mapping"]),
    ("unknown top-level key", lambda w: good_sweep(reapeats=3), ["reapeats: unknown key"]),
    ("unknown nested key", lambda w: good_sweep(run={"warmup": 1}), ["run.warmup: unknown key"]),
    ("unknown model key", lambda w: good_sweep(models=[{"source": str(TINY), "quant": 1}]),
     ["models[0].quant: unknown key"]),
    ("wrong type: threads", lambda w: good_sweep(threads=["two"]),
     ["threads[0]: expected an integer"]),
    ("wrong type: run", lambda w: good_sweep(run=[1, 2]), ["run: expected a mapping"]),
    ("wrong type: models", lambda w: good_sweep(models={"a": 1}), ["models: expected a list"]),
    ("wrong type: repeats as string", lambda w: good_sweep(repeats="3"),
     ["repeats: expected an integer"]),
    ("wrong type: sweep name", lambda w: good_sweep(name=[1, 2]), ["name: expected"]),
    ("wrong type: bool for a number", lambda w: good_sweep(run={"timeout_s": True}),
     ["run.timeout_s: expected a number"]),
    ("huge int", lambda w: good_sweep(repeats=10**30), ["repeats:", "out of range"]),
    ("int beyond the float range", lambda w: good_sweep(run={"max_secs": 10**400}),
     ["run.max_secs:", "out of range"]),
    ("1.0e+400 is inf", lambda w: f"schema_version: 1\nmodels: ['{TINY}']\nrun:\n"
                                  "  timeout_s: 1.0e+400\n", ["run.timeout_s:", "out of range"]),
    ("negative", lambda w: good_sweep(threads=[-1]), ["threads[0]:", "out of range"]),
    ("integer of 5000 digits", lambda w: "schema_version: 1\nrepeats: " + "9" * 5000 + "\n",
     ["line 2", "5000 digits"]),
    ("megabyte string", lambda w: good_sweep(models=[{"source": str(TINY),
                                                      "name": "x" * 3_000_000}]),
     ["models[0].name:", "longer than"]),
    ("file over the size limit", lambda w: "schema_version: 1\n" + "#" * 9_000_000 + "\n",
     ["larger than"]),
    ("NUL in a string", lambda w: 'schema_version: 1\nmodels: ["a\\0.tflite"]\n',
     ["models[0].source:", "NUL"]),
    ("deeply nested", lambda w: "schema_version: 1\nrun: " + "[" * 5000 + "]" * 5000 + "\n",
     ["nested deeper than", "line 2"]),
    ("billion laughs", lambda w: "schema_version: 1\nmodels: [x.tflite]\n" + bomb(), ["alias"]),
    ("alias bomb under a key", lambda w: bomb(6, 9).replace("l5:", "exclude:"),
     ["values once aliases are expanded"]),
    ("duplicate key", lambda w: "schema_version: 1\nrepeats: 3\nrepeats: 4\n",
     ["duplicate key 'repeats'", "line 3"]),
    ("python tag (code execution)", lambda w:
        f"schema_version: 1\nrepeats: !!python/object/apply:os.system ['touch {w.root}/pwned']\n",
     ["malformed YAML", "python/object/apply"]),
    ("unhashable key", lambda w: "schema_version: 1\n? [a, b]\n: 1\n", ["malformed YAML"]),
    ("missing model file", lambda w: good_sweep(models=["missing.tflite"]),
     ["models[0].source:", "'missing.tflite' not found"]),
    ("model path too long", lambda w: good_sweep(models=["d" * 300 + "/m.tflite"]),
     ["models[0].source:", "not found"]),
    ("text file named .tflite", lambda w: good_sweep(
        models=[str(w.write("notes.tflite", "these are not weights\n" * 10))]),
     ["models[0].source:", "TFL3"]),
    ("empty .tflite", lambda w: good_sweep(models=[str(w.write("empty.tflite", b""))]),
     ["models[0].source:", "only 0 bytes"]),
    ("directory named .tflite", lambda w: good_sweep(
        models=[str(_mkdir(w.root / "dir.tflite"))]), ["models[0].source:", "directory"]),
    ("a .tflite that is a PNG", lambda w: good_sweep(
        models=[{"name": "png", "source": str(w.write("img.tflite", b"\x89PNG\r\n\x1a\n" +
                                                       bytes(64)))}]),
     ["models[0].source:", "TFL3"]),
    ("not a model kind", lambda w: good_sweep(models=[str(w.write("m.onnx", b"onnx"))]),
     ["models[0].source:", "cannot tell what"]),
    ("corrupt .keras", lambda w: good_sweep(models=[str(w.write("m.keras", b"not a zip"))]),
     ["models[0].source:", "zip archive"]),
    ("second model bad", lambda w: good_sweep(models=[str(TINY), {"name": "b", "source":
                                                                  str(w.write("b.tflite",
                                                                              bytes(100)))}]),
     ["models[1].source:", "TFL3"]),
    ("calibration folder missing", lambda w: good_sweep(calibration={"images": "nope/"}),
     ["calibration.images:", "not found"]),
]


def _mkdir(p: Path) -> Path:
    p.mkdir()
    return p


@pytest.mark.parametrize("content, needles", [pytest.param(c, n, id=i) for i, c, n in SWEEP_CASES])
def test_bad_sweep_file_is_one_clear_error(ws: Workspace, content: Callable[[Workspace], Any],
                                           needles: list[str]) -> None:
    ws.write("sweep.yaml", content(ws))
    r = ws.run()
    assert_clean_failure(ws, r, str(ws.sweep), *needles)
    assert not (ws.root / "pwned").exists()


# --------------------------------------------------------------------------- devices.yaml

DEVICES_CASES: list[tuple[str, str, list[str]]] = [
    ("unknown key", "schema_version: 1\nhosts: only\n", ["hosts: unknown key"]),
    ("malformed", "schema_version: 1\nadb_servers: [127.0.0.1:5037\n", ["malformed YAML"]),
    ("no schema", "host: only\n", ["schema_version: missing"]),
    ("server without port", "schema_version: 1\nadb_servers: [localhost]\n",
     ["adb_servers[0]:", "host:port"]),
    ("port out of range", "schema_version: 1\nadb_servers: ['127.0.0.1:99999']\n",
     ["adb_servers[0]:"]),
    ("server with a shell command", "schema_version: 1\nadb_servers: ['$(id):5037']\n",
     ["adb_servers[0]:"]),
    ("host wrong type", "schema_version: 1\nhost: 5\n", ["host: expected"]),
    ("tier as a list", "schema_version: 1\ntiers: [a, b]\n", ["tiers: expected a mapping"]),
    ("tier huge number", "schema_version: 1\ntiers:\n  big:\n    min_ram_mb: 1.0e+400\n",
     ["tiers.big.min_ram_mb:", "got inf"]),
    ("tier unknown key", "schema_version: 1\ntiers:\n  big:\n    ram: 8\n",
     ["tiers.big.ram: unknown key"]),
    ("cpu mask not hex", "schema_version: 1\noverrides:\n  '*':\n    cpu_masks: {1: zz}\n",
     ["overrides.*.cpu_masks.1:", "hex"]),
    ("override threads huge", "schema_version: 1\noverrides:\n  '*':\n"
                              "    max_threads: 100000000000000000000\n",
     ["overrides.*.max_threads:", "out of range"]),
    ("skip unknown delegate", "schema_version: 1\noverrides:\n  '*':\n"
                              "    skip_delegates: [warp]\n",
     ["overrides.*.skip_delegates[0]:", "warp"]),
    ("billion laughs", "schema_version: 1\n" + bomb(), ["alias"]),
    ("duplicate key", "schema_version: 1\nhost: only\nhost: never\n", ["duplicate key 'host'"]),
]


@pytest.mark.parametrize("content, needles", [pytest.param(c, n, id=i)
                                              for i, c, n in DEVICES_CASES])
def test_bad_devices_file_is_one_clear_error(ws: Workspace, content: str,
                                             needles: list[str]) -> None:
    ws.write("devices.yaml", content)
    r = ws.run()
    assert_clean_failure(ws, r, str(ws.devices), *needles)


# --------------------------------------------------------------------------- delegates/*.yaml

DELEGATE_CASES: list[tuple[str, str, list[str]]] = [
    ("malformed", "schema_version: 1\nname: bad\nflags: [--use_gpu=true\n", ["malformed YAML"]),
    ("unknown key", "schema_version: 1\nname: bad\nflags: [--a=1]\nflag: x\n",
     ["flag: unknown key"]),
    ("flags not a list", "schema_version: 1\nname: bad\nflags: --use_gpu=true\n",
     ["flags: expected a list"]),
    ("flag without dashes", "schema_version: 1\nname: bad\nflags: [use_gpu=true]\n",
     ["flags[0]:", "not a benchmark_model flag"]),
    ("flag name with a shell command", "schema_version: 1\nname: bad\n"
                                       "flags: ['--x;touch /tmp/pwned=1']\n",
     ["flags[0]:", "not a benchmark_model flag"]),
    ("flag with a newline", "schema_version: 1\nname: bad\nflags: [\"--a=1\\nreboot\"]\n",
     ["flags[0]:", "line break"]),
    ("flag farm sets itself", "schema_version: 1\nname: bad\nflags: [--num_threads=4]\n",
     ["flags[0]:", "--num_threads is set by farm"]),
    ("flag given twice", "schema_version: 1\nname: bad\nflags: [--a=1, --a=2]\n",
     ["flags[1]:", "--a is given twice"]),
    ("name differs", "schema_version: 1\nname: other\nflags: [--a=1]\n",
     ["name:", "differs from the file name"]),
    ("unknown quantization", "schema_version: 1\nname: bad\nflags: [--a=1]\n"
                             "quantizations: [int3]\n", ["quantizations[0]:", "int3"]),
    ("unknown capability", "schema_version: 1\nname: bad\nflags: [--a=1]\nrequires: [tpu]\n",
     ["requires[0]:", "tpu"]),
    ("missing extra file", "schema_version: 1\nname: bad\nflags: [--a=1]\n"
                           "extra_files: [libnope.so]\n", ["extra_files[0]:", "not found"]),
    ("huge flag", "schema_version: 1\nname: bad\nflags: ['--a=" + "x" * 5000 + "']\n",
     ["flags[0]:", "longer than"]),
    ("billion laughs", "schema_version: 1\nname: bad\nflags: [--a=1]\n" + bomb(), ["alias"]),
]


@pytest.fixture
def delegates_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project root whose delegates/ the CLI reads (a copy of the shipped ones)."""
    root = tmp_path / "project"
    shutil.copytree(ROOT / "delegates", root / "delegates")
    monkeypatch.setattr(api, "project_root", lambda: root)
    return root


@pytest.mark.parametrize("content, needles", [pytest.param(c, n, id=i)
                                              for i, c, n in DELEGATE_CASES])
def test_bad_delegate_file_is_one_clear_error(ws: Workspace, delegates_root: Path, content: str,
                                              needles: list[str]) -> None:
    bad = delegates_root / "delegates" / "bad.yaml"
    bad.write_text(content)
    r = ws.run()
    assert_clean_failure(ws, r, str(bad), *needles)
    assert not Path("/tmp/pwned").exists()


def test_shipped_delegates_still_load() -> None:
    delegates = config.load_delegates(ROOT / "delegates")
    assert {"cpu", "xnnpack", "gpu", "nnapi", "qnn"} <= set(delegates)


# --------------------------------------------------------------------------- fuzzing the parsers

HOSTILE: tuple[Any, ...] = (
    None, True, -1, 0, 10**30, 10**400, float("inf"), float("nan"), 1e308, "", "x" * 5000,
    "$(id)", "`id`", "; rm -rf /", "-rf", "a\nb", "\x00", [], {}, [[[[]]]], {"a": {"b": 1}},
    [None], [10**30], ["*"], 1.5,
)


def _paths(d: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key path of a nested dict/list document."""
    if isinstance(d, dict):
        for k, v in d.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield (*prefix, i)
            yield from _paths(v, (*prefix, i))


def _replaced(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    import copy

    out = copy.deepcopy(doc)
    target = out
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = value
    return out


FUZZ_SWEEP = {
    "schema_version": 1, "name": "fuzz",
    "models": [{"name": "tiny", "source": str(TINY), "seed": 1, "input_shape": [1, 4]},
               {"source": "keras:MobileNetV2", "input_shape": [96, 96, 3]}],
    "quantizations": ["fp32", "int8"], "delegates": ["cpu", "xnnpack"], "threads": [1, 2],
    "repeats": 2, "seed": 3,
    "run": {"warmup_runs": 1, "num_runs": 3, "min_secs": 0, "max_secs": 5, "timeout_s": 60,
            "report_peak_memory": True},
    "devices": ["*"], "include": [{"model": ["tiny"], "threads": [1]}],
    "exclude": [{"delegate": ["cpu"], "quantization": ["int8"]}],
    "calibration": {"random": True, "num_samples": 4},
    "cooldown": {"delta_c": 3, "timeout_s": 10, "zones": ["cpu"]},
    "sampler": {"hz": 2},
    "sustained": [{"duration_s": 10, "window_s": 2}],
    "adaptive": {"max_repeats": 4, "baseline": "fp32", "level": 0.9},
    "fidelity": {"enabled": True, "num_inputs": 2, "tolerances": {"int8": {"min_cosine": 0.9}}},
}
FUZZ_DEVICES = {
    "schema_version": 1, "host": "auto", "adb_servers": ["127.0.0.1:5037"],
    "select": {"serials": ["a"], "patterns": ["b*"], "models": ["Pixel*"]},
    "tiers": {"big": {"min_ram_mb": 8000, "socs": ["sm8*"], "min_sdk": 30}},
    "overrides": {"*": {"max_threads": 4, "cpu_masks": {2: "f0"}, "cooldown_delta_c": 2,
                        "skip_delegates": ["gpu"]}},
}
FUZZ_DELEGATE = {"schema_version": 1, "name": "fuzz", "provider": "GPU", "description": "d",
                 "flags": ["--use_gpu=true"], "quantizations": ["fp32"], "abis": ["arm64-v8a"],
                 "requires": ["gpu"], "extra_files": []}


def test_fuzzed_configs_raise_only_config_errors(tmp_path: Path) -> None:
    """Every key of a full sweep, fleet and delegate replaced by hostile values: each either
    validates or raises ConfigError naming the file (never TypeError, OverflowError, ...)."""
    delegates = config.load_delegates(ROOT / "delegates")

    def parse_sweep(d: Any) -> Any:
        return config.parse_sweep(d, file="s.yaml", sha256="0", base=tmp_path,
                                  delegates=delegates)

    def parse_devices(d: Any) -> Any:
        return config.parse_fleet(d, file="s.yaml", delegates=list(delegates))

    def parse_delegate(d: Any) -> Any:
        p = tmp_path / "fuzz.yaml"
        p.write_text(yaml.safe_dump(d))
        return config.load_delegate(p)

    parse_sweep(FUZZ_SWEEP)  # the unfuzzed documents are valid
    parse_devices(FUZZ_DEVICES)
    parse_delegate(FUZZ_DELEGATE)
    tried = rejected = 0
    rng = random.Random(7)
    for doc, parse, file in ((FUZZ_SWEEP, parse_sweep, "s.yaml"),
                             (FUZZ_DEVICES, parse_devices, "s.yaml"),
                             (FUZZ_DELEGATE, parse_delegate, str(tmp_path / "fuzz.yaml"))):
        for path in _paths(doc):
            values = list(HOSTILE) if doc is not FUZZ_DELEGATE else rng.sample(HOSTILE, 8)
            for value in values:
                if doc is FUZZ_DELEGATE and isinstance(value, float) and value != value:
                    continue  # yaml.safe_dump writes nan as .nan: covered by the others
                tried += 1
                try:
                    parse(_replaced(doc, path, value))
                except ConfigError as e:
                    rejected += 1
                    assert str(e).startswith(file), str(e)
                    assert len(str(e)) < 1000, str(e)[:200]  # bounded, even for huge values
    assert tried > 1000
    assert rejected > tried // 2


# --------------------------------------------------------------------------- model files

def test_model_file_problem() -> None:
    assert model_file_problem(TINY, "tflite") == ""
    assert "not found" in model_file_problem(TINY.with_name("nope.tflite"), "tflite")
    assert "directory" in model_file_problem(TINY.parent, "tflite")
    assert "regular file" in model_file_problem(Path("/dev/null"), "tflite")


def test_corrupt_tflite_bytes_raise_conversion_error_only() -> None:
    """Truncations, bit flips and overwritten words of a real model: parsed or ConversionError,
    never IndexError/struct.error/a long loop (read_tflite bounds every vector)."""
    data = TINY.read_bytes()
    rng = random.Random(11)
    failures = 0
    for _ in range(3000):
        b = bytearray(data)
        mode = rng.randrange(3)
        if mode == 0:
            b = b[:rng.randrange(len(b))]
        elif mode == 1:
            for _ in range(rng.randrange(1, 10)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        else:
            j = rng.randrange(0, len(b) - 4)
            b[j:j + 4] = rng.choice([0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, rng.randrange(2**32)]
                                    ).to_bytes(4, "little")
        try:
            from farm.variants import detect_quantization

            detect_quantization(read_tflite(bytes(b)))
        except ConversionError:
            failures += 1
    assert failures > 500


def test_model_corrupted_after_validation_is_a_recorded_failure(tmp_path: Path) -> None:
    """The sweep validated, then the .tflite was truncated (TFL3 header intact) or replaced:
    the run records failed variants and failed samples with the reason; no traceback."""
    good = tmp_path / "m.tflite"
    shutil.copyfile(TINY, good)
    other = tmp_path / "n.tflite"
    shutil.copyfile(TINY, other)
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(good_sweep(
        models=[{"name": "m", "source": str(good)}, {"name": "n", "source": str(other)}],
        repeats=2)))
    (tmp_path / "devices.yaml").write_text(GOOD_DEVICES)
    p = api.load_plan(tmp_path / "sweep.yaml", devices_file=tmp_path / "devices.yaml")
    good.write_bytes(TINY.read_bytes()[:200])  # header intact, flatbuffer cut
    other.write_bytes(b"#!/bin/sh\necho not a model\n")
    host = LocalDevice(tmp_path / "host")
    result = api.run_plan(p, db=tmp_path / "db.sqlite", out_dir=tmp_path / "reports",
                          cache_dir=tmp_path / "cache", devices=[(host, host.info())])
    df = api.load_samples(tmp_path / "db.sqlite", result.run_id)
    assert set(df["status"]) == {"failed"}
    assert set(df["model"]) == {"m", "n"}
    m_err = df[df["model"] == "m"]["error"]
    n_err = df[df["model"] == "n"]["error"]
    assert m_err.str.contains("corrupt .tflite").all(), m_err.tolist()
    assert n_err.str.contains("TFL3").all(), n_err.tolist()
    assert result.report is not None and "corrupt .tflite" in result.report.read_text()


# --------------------------------------------------------------------------- store left clean

def test_config_errors_create_no_store(ws: Workspace) -> None:
    ws.write("sweep.yaml", good_sweep(threads=[0]))
    assert_clean_failure(ws, ws.run(), "threads[0]")
    assert not ws.db.exists()
    # --repeats beyond the allowed range is click's usage error (exit 2), before any I/O too
    ws.write("sweep.yaml", good_sweep())
    r = ws.run("--repeats", "100000")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert not ws.db.exists()


def test_resume_with_unknown_run_is_clear(ws: Workspace) -> None:
    r = ws.run("--resume", "20990101-000000-dead")
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert "no run" in r.output or "no runs" in r.output, r.output
    assert ws.run_rows() == []


def test_failure_after_validation_leaves_no_running_run(ws: Workspace, sim_fleet,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A phone that is not simulated and has no vendor benchmark_model for its ABI: the run
    cannot start. It must fail with one clear message, and must not leave a run that claims
    to be `running` (with no samples) in the store."""
    fleet = sim_fleet(["midrange"], time_scale=50)
    fleet[0].phone.set_prop("ro.farm.simulated", "0")
    monkeypatch.setattr(api, "default_vendor_dir", lambda: _mkdir(ws.root / "no-vendor"))
    ws.write("devices.yaml", {"schema_version": 1, "host": "never",
                              "adb_servers": [f"127.0.0.1:{fleet[0].adb_port}"]})
    r = CliRunner().invoke(
        main, ["--db", str(ws.db), "run", "--matrix", str(ws.sweep), "--devices-file",
               str(ws.devices), "--out", str(ws.root / "reports"), "--quiet"],
        env={"FARM_CACHE": str(ws.root / "cache")})
    assert r.exit_code == 1, r.output
    assert isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    assert "benchmark_model" in r.output, r.output
    assert [row for row in ws.run_rows() if row[1] == "running"] == []
