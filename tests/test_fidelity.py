"""Output fidelity: pure parts against golden files, the driver on the host and on fakes, and a
simulated phone whose NNAPI driver returns garbage for int8 models ("fast but wrong").

Golden files live in tests/data/golden/fidelity/: inputs.json (value-file bytes for a fixed
seed), outputs.bin/.json (an --output_filepath file and its decoded values), compare_cases.json
and verdict_cases.json (metrics and verdicts worked out by hand).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from farm import fidelity
from farm.devices import DeviceInfo, ShellResult
from farm.devices.fake import FakeDevice
from farm.devices.local import LocalDevice
from farm.fidelity import (
    Comparison,
    FidelityError,
    ModelIO,
    TensorInfo,
    compare,
    decode,
    encode,
    input_flags,
    logical_inputs,
    parse_output_file,
    select_cases,
    value_file_bytes,
    verdict,
)
from farm.models import Case, DelegateSpec, FidelitySpec, ModelVariant, Tolerance
from farm.sim.benchmark import make_stub_binary
from farm.store import FIDELITY_COLUMNS, Store
from tests.fixtures_sim import adb_servers, sim_fleet  # noqa: F401 - pytest fixtures

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "tests" / "data" / "models"
GOLDEN = ROOT / "tests" / "data" / "golden" / "fidelity"
HOSTBENCH = (sys.executable, "-m", "farm.hostbench")
CPU = DelegateSpec(name="cpu", provider="", flags=("--use_xnnpack=false",))
XNNPACK = DelegateSpec(name="xnnpack", provider="XNNPACK", flags=("--use_xnnpack=true",))
GPU = DelegateSpec(name="gpu", provider="GPU", flags=("--use_gpu=true",
                                                      "--gpu_precision_loss_allowed=true"))
NNAPI = DelegateSpec(name="nnapi", provider="NNAPI", flags=("--use_nnapi=true",
                                                            "--nnapi_allow_fp16=true",
                                                            "--disable_nnapi_cpu=true"))
LOOSE_INT8 = Tolerance(max_abs_error=0.02, min_cosine=0.99, min_top1_agreement=0.75,
                       min_top5_agreement=0.8)
TIGHT = Tolerance(max_abs_error=1e-4, min_cosine=0.99999)


def variant(quantization: str, filename: str) -> ModelVariant:
    path = MODELS / filename
    return ModelVariant(model="tiny", quantization=quantization, status="ok", path=str(path),
                        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                        size_bytes=path.stat().st_size)


FP32 = variant("fp32", "tiny_fp32.tflite")
INT8 = variant("int8", "tiny_int8.tflite")


def spec(**tolerances: Tolerance) -> FidelitySpec:
    return FidelitySpec(enabled=True, num_inputs=4, seed=3,
                        tolerances=tuple(tolerances.items()) or (("default", Tolerance()),))


def _num(x: Any) -> float | None:
    if x is None:
        return None
    return float(x)  # "inf" / "nan" strings included


# --------------------------------------------------------------------------- inputs (golden)


def test_value_files_match_the_golden_bytes() -> None:
    doc = json.loads((GOLDEN / "inputs.json").read_text())
    io = ModelIO.from_dict(doc["io"])
    rows = logical_inputs(io, num_inputs=doc["num_inputs"], seed=doc["seed"])
    got = [{t.name: value_file_bytes(t, v).hex() for t, v in zip(io.inputs, row, strict=True)}
           for row in rows]
    assert got == doc["value_files"]
    # each file is exactly the tensor's size, in its dtype
    for row in got:
        for t in io.inputs:
            assert len(bytes.fromhex(row[t.name])) == t.nbytes
    # another seed gives other inputs; the same seed the same ones
    other = logical_inputs(io, num_inputs=2, seed=8)
    assert not np.array_equal(other[0][0], rows[0][0])
    assert all(np.array_equal(a, b) for a, b in zip(
        logical_inputs(io, num_inputs=2, seed=7)[1], rows[1], strict=True))


def test_every_variant_sees_the_same_logical_input() -> None:
    f32 = ModelIO((TensorInfo("input", "float32", (1, 4, 4, 3)),), ())
    i8 = ModelIO((TensorInfo("input", "int8", (1, 4, 4, 3), 2 / 255, -1),), ())
    a = logical_inputs(f32, num_inputs=3, seed=11)
    b = logical_inputs(i8, num_inputs=3, seed=11)
    for ra, rb in zip(a, b, strict=True):
        assert np.array_equal(ra[0], rb[0])
        assert ra[0].min() >= -1.0 and ra[0].max() <= 1.0
        floats = np.frombuffer(value_file_bytes(f32.inputs[0], ra[0]), "<f4")
        ints = np.frombuffer(value_file_bytes(i8.inputs[0], rb[0]), np.int8)
        assert np.array_equal(ints, np.rint(floats.astype(np.float64) * 255 / 2) - 1)
        # dequantized int8 is within half a step of the float input
        assert np.abs(decode(i8.inputs[0], ints) - floats).max() <= 1 / 255 + 1e-9


def test_encode_clips_and_decode_inverts() -> None:
    u8 = TensorInfo("x", "uint8", (4,), 0.5, 10)
    q = encode(u8, np.array([-100.0, 0.0, 1.26, 1000.0]))
    assert q.tolist() == [0, 10, 13, 255]
    assert decode(u8, q).tolist() == [-5.0, 0.0, 1.5, 122.5]
    ids = TensorInfo("ids", "int32", (2,))
    assert encode(ids, np.array([3.4, 7.6])).tolist() == [3, 8]
    assert not ids.quantized and not ids.real and u8.quantized and u8.real


def test_input_flags_list_every_input_in_order_and_escape_colons() -> None:
    io = ModelIO((TensorInfo("serving_default_x:0", "float32", (1, 8)),
                  TensorInfo("mask", "int32", (1, 2, 3))), ())
    assert input_flags(io, ["/d/a.bin", "/d/b.bin"]) == [
        "--input_layer=serving_default_x:0,mask",
        "--input_layer_shape=1,8:1,2,3",
        "--input_layer_value_files=serving_default_x::0:/d/a.bin,mask:/d/b.bin"]
    with pytest.raises(FidelityError, match="contains ','"):
        input_flags(ModelIO((TensorInfo("a,b", "float32", (1,)),), ()), ["/x"])
    with pytest.raises(FidelityError, match="dynamic shape"):
        input_flags(ModelIO((TensorInfo("a", "float32", (-1, 3)),), ()), ["/x"])
    with pytest.raises(FidelityError, match="2 value files for 1 inputs"):
        input_flags(ModelIO((TensorInfo("a", "float32", (1,)),), ()), ["/x", "/y"])


# --------------------------------------------------------------------------- outputs (golden)


def test_output_file_is_parsed_and_dequantized() -> None:
    doc = json.loads((GOLDEN / "outputs.json").read_text())
    outputs = [TensorInfo.from_dict(t) for t in doc["outputs"]]
    got = parse_output_file((GOLDEN / "outputs.bin").read_bytes(), outputs)
    assert [a.tolist() for a in got] == doc["expected"]
    with pytest.raises(FidelityError, match="has 10 bytes; the model's outputs .* take 16"):
        parse_output_file((GOLDEN / "outputs.bin").read_bytes()[:10], outputs)


@pytest.mark.parametrize("case", json.loads((GOLDEN / "compare_cases.json").read_text())["cases"],
                         ids=lambda c: c["name"])
def test_compare_golden(case: dict[str, Any]) -> None:
    def arrays(rows: list[Any]) -> list[list[np.ndarray]]:
        return [[np.array(o, dtype=np.float64) for o in row] for row in rows]

    got = compare(arrays(case["reference"]), arrays(case["candidate"]))
    for key, want in case["expected"].items():
        value = getattr(got, key)
        if want is None:
            assert value is None, key
        else:
            assert value == pytest.approx(_num(want), abs=1e-9), key


@pytest.mark.parametrize("case", json.loads((GOLDEN / "verdict_cases.json").read_text())["cases"])
def test_verdict_golden(case: dict[str, Any]) -> None:
    c = {k: _num(v) if k not in ("n_inputs", "nonfinite") else v
         for k, v in case["comparison"].items()}
    tol = Tolerance(**case["tolerance"])
    assert verdict(Comparison(**c), tol) == (case["within"], case["reason"])


def test_compare_rejects_mismatched_shapes() -> None:
    with pytest.raises(FidelityError, match="differs from the reference"):
        compare([[np.zeros((1, 3))]], [[np.zeros((1, 4))]])


def test_select_cases_takes_the_smallest_thread_count() -> None:
    cases = [Case(f"c{i}", dev, "m", q, d, t) for i, (dev, q, d, t) in enumerate([
        ("p1", "fp32", "cpu", 4), ("p1", "fp32", "cpu", 1), ("p1", "fp32", "cpu", 2),
        ("p1", "int8", "cpu", 2), ("p1", "int8", "gpu", 4), ("p2", "fp32", "cpu", 4)])]
    got = [(c.device, c.quantization, c.delegate, c.threads) for c in select_cases(cases)]
    assert got == [("p1", "fp32", "cpu", 1), ("p1", "int8", "cpu", 2), ("p1", "int8", "gpu", 4),
                   ("p2", "fp32", "cpu", 4)]


# --------------------------------------------------------------------------- reference


def test_reference_is_the_fp32_model_on_the_host() -> None:
    s = spec()
    ref = fidelity.build_reference("tiny", FP32, s)
    assert len(ref.outputs) == 4 and ref.io.outputs[0].shape == (1, 10)
    for out in ref.outputs:  # a softmax: probabilities summing to 1
        assert out[0].sum() == pytest.approx(1.0, abs=1e-5) and (out[0] >= 0).all()
    # different inputs, different answers (the inputs really reach the model)
    assert not np.allclose(ref.outputs[0][0], ref.outputs[1][0])
    refs = fidelity.build_references({("tiny", "fp32"): FP32, ("other", "int8"): INT8}, s)
    assert isinstance(refs["tiny"], fidelity.Reference)
    assert refs["other"] == "other: no fp32 variant in this sweep to compare with"
    broken = ModelVariant("tiny", "fp32", status="failed", error="converter exploded")
    with pytest.raises(FidelityError, match="converter exploded"):
        fidelity.build_reference("tiny", broken, s)


# --------------------------------------------------------------------------- host end to end


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalDevice, dict[str, str]]:
    dev = LocalDevice(tmp_path_factory.mktemp("hostdev"))
    remotes = {}
    for v in (FP32, INT8):
        remotes[v.quantization] = f"{dev.workdir}/models/{v.sha256}.tflite"
        dev.push(Path(v.path), remotes[v.quantization])
    return dev, remotes


@pytest.mark.slow
def test_host_fp32_matches_and_int8_is_close_but_not_exact(
        host: tuple[LocalDevice, dict[str, str]], tmp_path: Path) -> None:
    dev, remotes = host
    s = spec(fp32=TIGHT, int8=LOOSE_INT8)
    ref = fidelity.build_reference("tiny", FP32, s)
    [fp] = fidelity.measure(dev, HOSTBENCH, remotes["fp32"], FP32, CPU, 1, s, ref,
                            tmp_path / "a", run_id="r1")
    assert set(fp) == set(FIDELITY_COLUMNS) - {"created_at"}
    assert (fp["status"], fp["within_tolerance"], fp["error"]) == ("ok", 1, "")
    assert fp["n_inputs"] == 4 and fp["max_abs_error"] < 1e-6 and fp["top1_agreement"] == 1.0
    argv = fp["details_json"]["argv"]
    assert "--num_runs=1" in argv and "--warmup_runs=0" in argv and "--use_xnnpack=false" in argv
    assert any(a.startswith("--output_filepath=") for a in argv)
    [q] = fidelity.measure(dev, HOSTBENCH, remotes["int8"], INT8, XNNPACK, 1, s, ref,
                           tmp_path / "b", run_id="r1")
    assert (q["status"], q["within_tolerance"]) == ("ok", 1), q["error"]
    assert 1e-4 < q["max_abs_error"] < 0.02  # quantization error: real, and small
    assert q["cosine_min"] > 0.99 and q["top1_agreement"] >= 0.75
    # the same int8 outputs against a tight tolerance: flagged, with the reason
    [tight] = fidelity.measure(dev, HOSTBENCH, remotes["int8"], INT8, XNNPACK, 1,
                               spec(int8=TIGHT), ref, tmp_path / "c", run_id="r1")
    assert (tight["status"], tight["within_tolerance"]) == ("ok", 0)
    assert tight["max_abs_error"] == pytest.approx(q["max_abs_error"])
    assert tight["error"].startswith("max abs error ") and "> 0.0001" in tight["error"]
    # rows go into the store as they are
    store = Store(tmp_path / "farm.sqlite")
    store.add_fidelity([fp, q])
    stored = {r["quantization"]: r for r in store.fidelity("r1")}
    assert stored["int8"]["within_tolerance"] == 1 and stored["fp32"]["delegate"] == "cpu"
    assert json.loads(stored["int8"]["tolerance_json"])["min_top1_agreement"] == 0.75


# --------------------------------------------------------------------------- failures are rows


def _fake(on_run: Callable[[tuple[str, ...], FakeDevice], ShellResult]) -> FakeDevice:
    info = DeviceInfo(serial="fake1", kind="adb", simulated=True)
    box: list[FakeDevice] = []

    def script(argv: tuple[str, ...]) -> ShellResult:
        if argv[0] == "rm":
            return ShellResult(argv, 0, "")
        return on_run(argv, box[0])

    box.append(FakeDevice(info, script))
    return box[0]


def _out_path(argv: tuple[str, ...]) -> str:
    return next(a.split("=", 1)[1] for a in argv if a.startswith("--output_filepath="))


def _ok_output() -> str:
    return ("INFO: STARTING!\nINFO: Loaded model x\n"
            "INFO: Inference timings in us: Init: 100, First inference: 50, "
            "Warmup (avg): 50, Inference (avg): 40\n")


@pytest.fixture(scope="module")
def tiny_ref() -> fidelity.Reference:
    return fidelity.build_reference("tiny", FP32, FidelitySpec(num_inputs=2, seed=1))


def test_failed_run_unknown_flag_missing_file_and_bad_size_are_rows(
        tiny_ref: fidelity.Reference, tmp_path: Path) -> None:
    s = FidelitySpec(num_inputs=2, seed=1)

    def failing(argv: tuple[str, ...], dev: FakeDevice) -> ShellResult:
        return ShellResult(argv, 1, "INFO: STARTING!\n",
                           "ERROR: Failed to apply GPU delegate.\nERROR: Benchmarking failed.\n")

    [row] = fidelity.measure(_fake(failing), ("/bm",), "/m.tflite", FP32, GPU, 1, s, tiny_ref,
                             tmp_path / "1", run_id="r")
    assert row["status"] == "failed" and "Failed to apply GPU delegate" in row["error"]
    assert row["within_tolerance"] is None and row["device"] == "fake1"

    def unconsumed(argv: tuple[str, ...], dev: FakeDevice) -> ShellResult:
        return ShellResult(argv, 0, _ok_output().replace(
            "INFO: Loaded", f"WARN: Unconsumed cmdline flags: --output_filepath={_out_path(argv)}"
                            "\nINFO: Loaded"))

    [row] = fidelity.measure(_fake(unconsumed), ("/bm",), "/m.tflite", FP32, CPU, 1, s,
                             tiny_ref, tmp_path / "2")
    assert row["status"] == "skipped" and "does not know --output_filepath" in row["error"]

    def silent(argv: tuple[str, ...], dev: FakeDevice) -> ShellResult:
        return ShellResult(argv, 0, _ok_output())  # succeeds, writes nothing (TF < 2.3)

    [row] = fidelity.measure(_fake(silent), ("/bm",), "/m.tflite", FP32, CPU, 1, s, tiny_ref,
                             tmp_path / "3")
    assert row["status"] == "skipped" and "wrote no --output_filepath file" in row["error"]

    def short(argv: tuple[str, ...], dev: FakeDevice) -> ShellResult:
        dev.pushed[_out_path(argv)] = b"\0" * 12
        return ShellResult(argv, 0, _ok_output())

    [row] = fidelity.measure(_fake(short), ("/bm",), "/m.tflite", FP32, CPU, 1, s, tiny_ref,
                             tmp_path / "4")
    assert row["status"] == "failed"
    assert "has 12 bytes" in row["error"] and "take 40" in row["error"]

    [row] = fidelity.measure(_fake(silent), ("/bm",), "/m.tflite", FP32, CPU, 1, s,
                             "tiny: no fp32 variant", tmp_path / "5")
    assert row["status"] == "failed" and row["error"] == "no fp32 reference: tiny: no fp32 variant"


def test_exact_outputs_through_a_fake_device_pass(tiny_ref: fidelity.Reference,
                                                  tmp_path: Path) -> None:
    """The driver feeds input k to run k and reads run k's file: the fake answers with the
    reference's own outputs for the input it was given, so any mix-up would show."""
    by_input = {}
    io = tiny_ref.io
    for k, row in enumerate(tiny_ref.inputs):
        blob = value_file_bytes(io.inputs[0], row[0])
        by_input[hashlib.sha256(blob).hexdigest()[:24]] = k

    def answer(argv: tuple[str, ...], dev: FakeDevice) -> ShellResult:
        files = next(a for a in argv if a.startswith("--input_layer_value_files="))
        k = by_input[files.rsplit("/in_", 1)[1][:24]]
        dev.pushed[_out_path(argv)] = tiny_ref.outputs[k][0].astype("<f4").tobytes()
        return ShellResult(argv, 0, _ok_output())

    fake = _fake(answer)
    [row] = fidelity.measure(fake, ("/bm",), "/m.tflite", FP32, CPU, 2,
                             FidelitySpec(num_inputs=2, seed=1), tiny_ref, tmp_path)
    assert (row["status"], row["within_tolerance"], row["threads"]) == ("ok", 1, 2)
    assert row["max_abs_error"] < 1e-7
    runs = [c for c in fake.calls if c[0] == "/bm"]
    assert len(runs) == 2 and all("--num_threads=2" in c for c in runs)
    assert all("--input_layer=input" in c and "--input_layer_shape=1,16,16,3" in c for c in runs)
    # each run is preceded by removing the output file, so a stale one is never read
    assert [c[0] for c in fake.calls] == ["rm", "/bm", "rm", "/bm"]


def test_measure_cases_runs_one_thread_count_and_reports_unstaged(
        tiny_ref: fidelity.Reference) -> None:
    def silent(argv: tuple[str, ...], dev: FakeDevice) -> ShellResult:
        return ShellResult(argv, 0, _ok_output())

    fake = _fake(silent)
    cases = [Case("a", "fake1", "tiny", "fp32", "cpu", 4), Case("b", "fake1", "tiny", "fp32",
                                                                 "cpu", 1),
             Case("c", "fake1", "tiny", "int8", "cpu", 1)]
    rows = fidelity.measure_cases(
        fake, ("/bm",), {FP32.sha256: "/m.tflite"}, cases,
        {("tiny", "fp32"): FP32, ("tiny", "int8"): INT8}, {"cpu": CPU},
        FidelitySpec(num_inputs=2, seed=1), {"tiny": tiny_ref}, run_id="r")
    by_q = {r["quantization"]: r for r in rows}
    assert by_q["fp32"]["threads"] == 1 and by_q["fp32"]["status"] == "skipped"
    assert by_q["int8"]["error"] == "the variant was not staged on the device"
    assert all(r["run_id"] == "r" for r in rows)


# --------------------------------------------------------------------------- simulated phones


def _stage(dev: Any, tmp: Path) -> tuple[tuple[str, ...], dict[str, str]]:
    tmp.mkdir(parents=True, exist_ok=True)
    stub = tmp / "benchmark_model"
    stub.write_bytes(make_stub_binary(dev.info().abis[0]))
    binary = f"{dev.workdir}/bin/stub/benchmark_model"
    dev.push(stub, binary)
    remotes = {}
    for v in (FP32, INT8):
        remotes[v.quantization] = f"{dev.workdir}/models/{v.sha256}.tflite"
        dev.push(Path(v.path), remotes[v.quantization])
    return (binary,), remotes


@pytest.mark.slow
def test_simulated_phones_flag_the_buggy_accelerator(sim_fleet, tmp_path: Path) -> None:  # noqa: F811

    fleet = sim_fleet(profiles=("flagship", "old_armv7"), time_scale=50.0)
    s = spec(fp32=Tolerance(max_abs_error=0.01, min_cosine=0.999), int8=LOOSE_INT8)
    ref = fidelity.build_reference("tiny", FP32, s)
    flagship = fleet.by_profile("flagship")[0]
    dev = flagship.farm_device()
    binary, remotes = _stage(dev, tmp_path / "f")
    rows = {}
    for v in (FP32, INT8):
        for d in (CPU, GPU, NNAPI):
            [rows[v.quantization, d.name]] = fidelity.measure(
                dev, binary, remotes[v.quantization], v, d, 1, s, ref, tmp_path / "w",
                run_id="sim", timeout_s=60)
    assert all(r["status"] == "ok" for r in rows.values()), {k: r["error"] for k, r in
                                                             rows.items()}
    # the CPU is exact for fp32 and within the int8 tolerance for int8
    assert rows["fp32", "cpu"]["max_abs_error"] < 1e-6
    assert rows["int8", "cpu"]["within_tolerance"] == 1
    # the GPU computes in fp16: small but real errors, within tolerance
    gpu = rows["fp32", "gpu"]
    assert gpu["within_tolerance"] == 1 and 0 < gpu["max_abs_error"] < 0.01
    assert gpu["details_json"]["delegation"][0] == "full"
    # the flagship's NNAPI driver garbles int8 outputs: fast but wrong, and said why
    bad = rows["int8", "nnapi"]
    assert bad["within_tolerance"] == 0 and bad["cosine_min"] < 0.99
    assert "min cosine" in bad["error"] and bad["details_json"]["delegation"][0] == "full"
    assert rows["fp32", "nnapi"]["within_tolerance"] == 1  # its float path is fine
    # deterministic: the same config gives the same numbers again
    [again] = fidelity.measure(dev, binary, remotes["int8"], INT8, NNAPI, 1, s, ref,
                               tmp_path / "w2", run_id="sim", timeout_s=60)
    assert again["max_abs_error"] == bad["max_abs_error"]
    assert again["cosine_min"] == bad["cosine_min"]
    # a TF 1.15-era binary knows neither flag: skipped with the reason, not a wrong answer
    old = fleet.by_profile("old_armv7")[0]
    odev = old.farm_device()
    obinary, oremotes = _stage(odev, tmp_path / "o")
    [skip] = fidelity.measure(odev, obinary, oremotes["fp32"], FP32, CPU, 1, s, ref,
                              tmp_path / "w3", run_id="sim", timeout_s=60)
    assert skip["status"] == "skipped" and "--output_filepath" in skip["error"], skip["error"]
    assert skip["within_tolerance"] is None and skip["max_abs_error"] is None
