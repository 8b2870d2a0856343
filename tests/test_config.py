"""Config validation: every error names the file, the key path, the bad value and the allowed
values."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from farm import config
from farm.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def delegates() -> dict:
    return config.load_delegates(ROOT / "delegates")


def write(tmp_path: Path, data: object, name: str = "sweep.yaml") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def base(**over: object) -> dict:
    d = {"schema_version": 1,
         "models": [{"source": "keras:MobileNetV2", "input_shape": [96, 96, 3]}],
         "quantizations": ["fp32", "int8"], "delegates": ["cpu", "xnnpack"],
         "threads": [1, 2], "repeats": 3}
    d.update(over)
    return d


def error(tmp_path: Path, delegates: dict, data: object) -> str:
    with pytest.raises(ConfigError) as ei:
        config.load_sweep(write(tmp_path, data), delegates)
    return str(ei.value)


def test_shipped_files_are_valid(delegates: dict) -> None:
    for f in [ROOT / "sweep.yaml", *sorted((ROOT / "examples").glob("*.yaml"))]:
        s = config.load_sweep(f, delegates)
        assert s.models and s.repeats >= 3
    fleet = config.load_fleet(ROOT / "devices.yaml", list(delegates))
    assert fleet.host == "auto"
    assert {"cpu", "xnnpack", "gpu", "nnapi", "hexagon", "qnn"} <= set(delegates)
    assert delegates["cpu"].flags == ("--use_xnnpack=false",)
    assert delegates["gpu"].requires == ("gpu",)


def test_valid_sweep_values(tmp_path: Path, delegates: dict) -> None:
    s = config.load_sweep(write(tmp_path, base(run={"num_runs": 10, "min_secs": 0.5})),
                          delegates)
    assert s.models[0].kind == "keras_app" and s.models[0].arch == "MobileNetV2"
    assert s.models[0].input_shape == (96, 96, 3)
    assert s.params.num_runs == 10 and s.params.min_secs == 0.5
    assert s.threads == (1, 2) and s.quantizations == ("fp32", "int8")
    assert len(s.source_sha256) == 64


@pytest.mark.parametrize("data, expected", [
    (base(quantizations=["fp32", "int4"]),
     "quantizations[1]: unknown value 'int4'; allowed: fp32, fp16, dynamic, int8, int16x8"),
    (base(delegates=["cpu", "gpu2"]), "delegates[1]: unknown value 'gpu2'; allowed: cpu, "),
    (base(threads=[1, "two"]), "threads[1]: expected an integer, got 'two'; allowed: 1..64"),
    (base(threads=[10**12]), "threads[0]: 1000000000000 is out of range; allowed: 1..64"),
    (base(repeats=True), "repeats: expected an integer, got True"),
    (base(bogus=1), "bogus: unknown key; allowed: schema_version, name, models"),
    (base(run={"warmup": 1}), "run.warmup: unknown key; allowed: warmup_runs"),
    (base(run={"max_secs": float("inf")}), "run.max_secs: inf is out of range"),
    (base(run={"min_secs": 10, "max_secs": 5}), "run.min_secs: 10 exceeds run.max_secs 5"),
    (base(schema_version=2), "schema_version: unsupported version 2; allowed: 1"),
    ({"models": []}, "schema_version: missing required key"),
    (base(models=[{"source": "keras:MobileNetV2"}]), "models[0].input_shape: required"),
    (base(models=[{"source": "missing.tflite"}]), "models[0].source: tflite 'missing.tflite' "
                                                  "not found"),
    (base(models=[{"source": "model.onnx"}]), "models[0].source: cannot tell what"),
    (base(models=[{"source": "keras:Mobile Net"}]), "is not a Keras application name"),
    (base(calibration={"random": "yes"}), "calibration.random: random calibration must be "
                                          "asked for explicitly"),
    (base(calibration={"images": "nope"}), "calibration.images: directory 'nope' not found"),
    (base(calibration={"random": True, "npy": "x.npy"}), "calibration: give exactly one"),
    (base(exclude=[{"delegate": ["gpu9"]}]), "exclude[0].delegate[0]: unknown value 'gpu9'"),
    (base(include=[{}]), "include[0]: empty rule matches everything"),
    ("models: [unclosed", "malformed YAML: line 1"),
    ("- a list\n", "expected a mapping, got ['a list']"),
])
def test_sweep_errors(tmp_path: Path, delegates: dict, data: object, expected: str) -> None:
    msg = error(tmp_path, delegates, data)
    assert msg.startswith(str(tmp_path / "sweep.yaml") + ": "), msg
    assert expected in msg, msg


def test_model_kinds_and_relative_paths(tmp_path: Path, delegates: dict) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "saved_model.pb").write_bytes(b"x")
    (tmp_path / "a.tflite").write_bytes(b"\0\0\0\0TFL3")
    (tmp_path / "b.keras").write_bytes(b"PK")
    s = config.load_sweep(write(tmp_path, base(models=["a.tflite", "b.keras", {"source": "m"}])),
                          delegates)
    assert [m.kind for m in s.models] == ["tflite", "keras_file", "saved_model"]
    assert [m.name for m in s.models] == ["a", "b", "m"]
    assert s.models[0].path == str(tmp_path / "a.tflite")
    msg = error(tmp_path, delegates, base(models=["a.tflite", {"source": "a.tflite"}]))
    assert "models[1].name: duplicate model name 'a'" in msg


def test_missing_file_and_binary(tmp_path: Path, delegates: dict) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        config.load_sweep(tmp_path / "nope.yaml", delegates)
    p = tmp_path / "bin.yaml"
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        config.load_sweep(p, delegates)


def test_delegate_file_errors(tmp_path: Path) -> None:
    d = tmp_path / "delegates"
    d.mkdir()
    (d / "gpu.yaml").write_text(yaml.safe_dump({
        "schema_version": 1, "name": "gpu", "provider": "GPU",
        "flags": ["--use_gpu=true; rm -rf /"], "quantizations": ["fp32"]}))
    # A flag value is an argv element (never shell text), so this is a valid (odd) flag...
    spec = config.load_delegate(d / "gpu.yaml")
    assert spec.flags == ("--use_gpu=true; rm -rf /",)
    (d / "gpu.yaml").write_text(yaml.safe_dump({
        "schema_version": 1, "name": "gpu", "flags": ["use_gpu"], "color": "red"}))
    with pytest.raises(ConfigError, match=r"gpu.yaml: color: unknown key; allowed: "):
        config.load_delegate(d / "gpu.yaml")
    (d / "gpu.yaml").write_text(yaml.safe_dump({"schema_version": 1, "name": "gpu",
                                                "flags": ["use_gpu"]}))
    with pytest.raises(ConfigError, match=r"flags\[0\]: 'use_gpu' is not a benchmark_model "
                                          r"flag; allowed: --name=value"):
        config.load_delegate(d / "gpu.yaml")
    (d / "gpu.yaml").write_text(yaml.safe_dump({"schema_version": 1, "name": "gpu",
                                                "flags": [], "requires": ["tpu"]}))
    with pytest.raises(ConfigError, match=r"requires\[0\]: unknown value 'tpu'; allowed: gpu, "
                                          r"nnapi, hexagon"):
        config.load_delegate(d / "gpu.yaml")
    (d / "gpu.yaml").write_text(yaml.safe_dump({"schema_version": 1, "name": "gpu9",
                                                "flags": []}))
    with pytest.raises(ConfigError, match="name: 'gpu9' differs from the file name"):
        config.load_delegate(d / "gpu.yaml")


def test_fleet_errors() -> None:
    with pytest.raises(ConfigError, match=r"d.yaml: adb_servers\[0\]: 'localhost' is not "
                                          r"host:port"):
        config.parse_fleet({"schema_version": 1, "adb_servers": ["localhost"]}, file="d.yaml")
    with pytest.raises(ConfigError, match=r"overrides.X1.cpu_masks.4: 'zz' is not a hex CPU "
                                          r"mask"):
        config.parse_fleet({"schema_version": 1, "overrides": {"X1": {"cpu_masks": {4: "zz"}}}},
                           file="d.yaml")
    with pytest.raises(ConfigError, match=r"tiers.low.max_ram: unknown key"):
        config.parse_fleet({"schema_version": 1, "tiers": {"low": {"max_ram": 1}}},
                           file="d.yaml")
    f = config.parse_fleet({"schema_version": 1, "adb_servers": ["10.0.0.2:5037"],
                            "tiers": {"mid": {"min_ram_mb": 4000}},
                            "overrides": {"R5*": {"cpu_masks": {2: "c0"}, "max_threads": 4}}},
                           file="d.yaml")
    assert f.adb_servers == ("10.0.0.2:5037",)
    assert f.overrides[0].cpu_masks == ((2, "c0"),) and f.tiers[0].min_ram_mb == 4000
