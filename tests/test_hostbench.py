"""Tests for farm.hostbench: flag parsing, the run loop, and the runner end to end (subprocess).

The end-to-end tests run `python -m farm.hostbench` on the tiny committed models in
tests/data/models (made by make_tiny.py) with short loops, and read its output back with
farm.benchmark_model.parse_output.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from farm.benchmark_model import BenchmarkOutput, parse_output
from farm.hostbench import (
    FLAGS,
    delegation_of,
    input_layer_info,
    main,
    parse_flags,
    run_loop,
    split_value_files,
    usage,
)
from tests.fixtures_bm import MODELS_DIR

ROOT = Path(__file__).resolve().parents[1]
FP32 = MODELS_DIR / "tiny_fp32.tflite"
INT8 = MODELS_DIR / "tiny_int8.tflite"
PARTIAL = MODELS_DIR / "tiny_partial_fp32.tflite"
SHORT = ("--num_runs=5", "--min_secs=0", "--warmup_min_secs=0")


def _bench(*args: str) -> tuple[subprocess.CompletedProcess[str], BenchmarkOutput]:
    proc = subprocess.run(
        [sys.executable, "-m", "farm.hostbench", *args], cwd=ROOT, capture_output=True,
        text=True, timeout=120, check=False,
    )
    return proc, parse_output(proc.stdout + proc.stderr, exit_code=proc.returncode)


# --------------------------------------------------------------------------- in-process units


def test_parse_flags_like_benchmark_model() -> None:
    p = parse_flags(["--graph=m.tflite", "--num_runs=7x", "--num_runs=9", "--use_xnnpack=1",
                     "--num_threads", "4", "--min_secs=0.25"])
    assert p.values["graph"] == "m.tflite"
    assert p.values["num_runs"] == 7  # istringstream reads the number prefix; first match wins
    assert p.values["use_xnnpack"] is True and p.values["min_secs"] == 0.25
    assert p.unconsumed == ["--num_runs=9", "--num_threads", "4"]
    assert p.order == ["graph", "num_runs", "use_xnnpack", "min_secs"]
    assert not p.errors and not p.help
    bad = parse_flags(["--use_gpu=yes", "--num_runs=abc", "--num_threads=99999999999"])
    assert bad.errors == [
        "Failed to parse flag 'num_runs' against argv '--num_runs=abc'",
        "Failed to parse flag 'num_threads' against argv '--num_threads=99999999999'",
        "Failed to parse flag 'use_gpu' against argv '--use_gpu=yes'",
    ]
    assert parse_flags(["--help"]).help and parse_flags(["--help=true"]).help
    # A bare --help counts when it is the first argument left after the known flags.
    assert parse_flags(["--graph=x", "--help"]).help
    assert not parse_flags(["--foo", "--help"]).help


def test_usage_table_layout() -> None:
    text = usage("bm")
    lines = text.split("\n")
    assert lines[:2] == ["usage: bm <flags>", "Flags:"]
    assert len(lines) == 2 + len(FLAGS)
    assert lines[2].startswith("\t--num_runs=50 ")
    assert "\tint32\toptional\texpected number" in lines[2]
    widths = {len(line.split("\t")[1]) for line in lines[2:]}
    assert len(widths) == 1  # the name column is padded to one width


def test_split_value_files() -> None:
    assert split_value_files("") == ([], "")
    assert split_value_files("input:/tmp/a.bin,x::0:/tmp/b.bin") == (
        [("input", "/tmp/a.bin"), ("x:0", "/tmp/b.bin")], "")
    assert split_value_files("nodelimiter")[1] == (
        "Wrong input value file item specified: nodelimiter")
    assert split_value_files("a:b:c")[1].startswith("Wrong input value file item")


class _Clock:
    """A fake perf_counter_ns: each invoke takes `step_us`, sleeps advance time too."""

    def __init__(self, step_us: int) -> None:
        self.now_ns = 1_000_000_000
        self.step_us = step_us
        self.invokes = 0
        self.slept: list[float] = []

    def ns(self) -> int:
        return self.now_ns

    def invoke(self) -> None:
        self.invokes += 1
        self.now_ns += self.step_us * 1000

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now_ns += int(s * 1e9)


def test_run_loop_count_follows_runs_and_min_secs() -> None:
    c = _Clock(step_us=100_000)  # 0.1 s per run
    samples, errors = run_loop(c.invoke, lambda: None, min_runs=3, min_secs=1.0, max_secs=150,
                               clock_ns=c.ns, sleep=c.sleep)
    assert errors == [] and samples == [100_000] * 10  # min_secs, not num_runs, decides
    c = _Clock(step_us=100_000)
    samples, _ = run_loop(c.invoke, lambda: None, min_runs=25, min_secs=0.5, max_secs=150,
                          clock_ns=c.ns, sleep=c.sleep)
    assert len(samples) == 25
    c = _Clock(step_us=400_000)
    samples, _ = run_loop(c.invoke, lambda: None, min_runs=50, min_secs=1.0, max_secs=1.0,
                          clock_ns=c.ns, sleep=c.sleep)
    assert len(samples) == 3  # starts a run while now <= max_finish, then stops


def test_run_loop_delay_frequency_and_errors() -> None:
    c = _Clock(step_us=10_000)
    resets: list[int] = []
    run_loop(c.invoke, lambda: resets.append(1), min_runs=4, min_secs=0, max_secs=150,
             run_delay=0.05, clock_ns=c.ns, sleep=c.sleep)
    assert c.slept == [0.05] * 4 and len(resets) == 4
    c = _Clock(step_us=10_000)
    run_loop(c.invoke, lambda: None, min_runs=3, min_secs=0, max_secs=150, run_frequency=20,
             clock_ns=c.ns, sleep=c.sleep)
    assert c.slept == pytest.approx([0.04, 0.04, 0.04])

    def failing() -> None:
        raise RuntimeError("Node number 2 (CONV_2D) failed to invoke.")

    samples, errors = run_loop(failing, lambda: None, min_runs=3, min_secs=0, max_secs=150)
    assert len(samples) == 3  # the tool keeps looping and remembers the error
    assert errors == ["Node number 2 (CONV_2D) failed to invoke."]


def test_delegation_of_ops_details() -> None:
    ops = [
        {"index": 0, "op_name": "CONV_2D", "inputs": [0, 1, 2], "outputs": [3]},
        {"index": 1, "op_name": "MEAN", "inputs": [3, 4], "outputs": [5]},
        {"index": 2, "op_name": "FULLY_CONNECTED", "inputs": [5, 6, 7], "outputs": [8]},
        {"index": 3, "op_name": "ARG_MAX", "inputs": [8, 9], "outputs": [10]},
        {"index": 4, "op_name": "DELEGATE", "inputs": [0, 1, 2, 4, 6, 7], "outputs": [8]},
    ]
    d = delegation_of(ops)
    assert (d.kernels, d.replaced_nodes, d.total_nodes, d.cpu_nodes) == (1, 3, 4, 1)
    assert delegation_of(ops[:4]).kernels == 0 and delegation_of(ops[:4]).cpu_nodes == 4


def test_main_prints_like_the_tool_without_loading_the_runtime(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--num_runs=3"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "INFO: STARTING!\n"
    assert captured.err == ("ERROR: Please specify the name of your TF Lite input file with "
                            "--graph\nERROR: Benchmarking failed.\n")


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_never_imports_tensorflow() -> None:
    code = (
        "import sys\n"
        "import farm.hostbench as h\n"
        "assert 'ai_edge_litert' not in sys.modules and 'numpy' not in sys.modules\n"
        f"status, out, err = h.run(['--graph={FP32}', '--num_runs=2', '--min_secs=0',"
        " '--warmup_min_secs=0'])\n"
        "assert status == 0, err\n"
        "assert 'ai_edge_litert' in sys.modules\n"
        "assert not any(m == 'tensorflow' or m.startswith('tensorflow.') for m in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_default_run_uses_the_default_xnnpack_delegate() -> None:
    proc, out = _bench(f"--graph={FP32}", *SHORT, "--num_threads=2")
    assert proc.returncode == 0, proc.stderr
    assert out.success and out.format == "tf2.19+"
    assert out.count == 5 and out.warmup_count == 1
    assert out.init_us is not None and out.init_us > 0
    assert out.first_inference_us is not None and out.inference_avg_us is not None
    assert None not in (out.p5_us, out.median_us, out.p95_us, out.mem_init_mb, out.mem_overall_mb)
    assert out.model_size_mb == pytest.approx(FP32.stat().st_size / 1e6, rel=1e-5)
    assert out.default_xnnpack and out.delegate_applied == "" and out.delegation == ""
    assert (out.delegated_nodes, out.total_nodes, out.partitions) == (4, 4, 1)
    assert out.num_threads == 2
    assert proc.stderr.count("Created TensorFlow Lite XNNPACK delegate for CPU.") == 1
    assert "Explicitly applied" not in proc.stdout and "delegate created" not in proc.stdout


@pytest.mark.slow
def test_explicit_xnnpack_full_and_partial() -> None:
    proc, out = _bench(f"--graph={FP32}", *SHORT, "--use_xnnpack=true")
    assert out.success, proc.stderr
    assert "INFO: XNNPACK delegate created." in proc.stdout
    assert ("INFO: Explicitly applied XNNPACK delegate, and the model graph will be completely "
            "executed by the delegate.") in proc.stdout
    assert (out.delegate_applied, out.delegation, out.delegate_kernels) == ("XNNPACK", "full", 1)
    assert not out.default_xnnpack
    proc, out = _bench(f"--graph={PARTIAL}", *SHORT, "--use_xnnpack=true")
    assert out.success, proc.stderr
    assert (out.delegation, out.delegate_kernels) == ("partial", 1)
    assert (out.delegated_nodes, out.total_nodes) == (3, 4)  # ARG_MAX stays on the CPU


@pytest.mark.slow
def test_xnnpack_off_means_no_delegate_at_all() -> None:
    proc, out = _bench(f"--graph={INT8}", *SHORT, "--use_xnnpack=false")
    assert out.success, proc.stderr
    assert ("Use xnnpack", "0") in out.params
    assert "XNNPACK" not in proc.stderr
    assert not out.default_xnnpack and out.delegate_applied == "" and out.delegated_nodes is None


@pytest.mark.slow
def test_unknown_flags_gpu_nnapi_and_profiling_warn_and_continue() -> None:
    proc, out = _bench(f"--graph={INT8}", *SHORT, "--use_gpu=true", "--use_nnapi=true",
                       "--enable_op_profiling=true", "--no_such_flag=3", "--num_threads", "2")
    assert proc.returncode == 0 and out.success, proc.stderr
    assert out.unconsumed_flags == ("--no_such_flag=3", "--num_threads", "2")
    assert "WARN: GPU acceleration is unsupported on this platform." in out.warnings
    assert "WARN: NNAPI acceleration is unsupported on this platform." in out.warnings
    assert any("--enable_op_profiling" in w for w in out.warnings)
    assert out.delegate_applied == "" and out.default_xnnpack


@pytest.mark.slow
def test_peak_memory_report() -> None:
    proc, out = _bench(f"--graph={FP32}", *SHORT, "--report_peak_memory_footprint=true",
                       "--memory_footprint_check_interval_ms=5")
    assert out.success, proc.stderr
    assert out.peak_mem_mb is not None and out.peak_mem_mb > 10
    assert out.vmrss_mb is not None and out.vmrss_mb > 0
    assert "INFO: Memory status at the end of exeution:" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize(("args", "fragment"), [
    (SHORT, "Please specify the name of your TF Lite input file with --graph"),
    (("--graph=/nonexistent/m.tflite",), "Failed to load model /nonexistent/m.tflite (Could not "
                                         "open '/nonexistent/m.tflite'.)"),
    ((f"--graph={FP32}", "--use_xnnpack=yes"),
     "Failed to parse flag 'use_xnnpack' against argv '--use_xnnpack=yes'"),
    ((f"--graph={PARTIAL}", "--use_xnnpack=true", "--require_full_delegation=true"),
     "Disallowed CPU fallback detected."),
    ((f"--graph={FP32}", "--require_full_delegation=true"), "Disallowed CPU fallback detected."),
])
def test_failures_exit_1_with_the_real_messages(args: tuple[str, ...], fragment: str) -> None:
    proc, out = _bench(*args)
    assert proc.returncode == 1
    assert proc.stderr.rstrip().endswith("ERROR: Benchmarking failed.")
    assert not out.success and not out.truncated
    assert fragment in out.error


@pytest.mark.slow
@pytest.mark.parametrize("content", [b"", b"not a model at all", b"\x1c\x00\x00\x00TFL3junk"])
def test_corrupt_model(tmp_path: Path, content: bytes) -> None:
    model = tmp_path / "bad.tflite"
    model.write_bytes(content)
    proc, out = _bench(f"--graph={model}", *SHORT)
    assert proc.returncode == 1
    assert f"Failed to load model {model} (The model is not a valid Flatbuffer buffer)" in out.error


@pytest.mark.slow
def test_bad_bool_and_help_print_the_usage_and_fail() -> None:
    proc, out = _bench(f"--graph={FP32}", "--report_peak_memory_footprint=maybe")
    assert proc.returncode == 1 and proc.stdout == "INFO: STARTING!\n"
    assert "\n\t--report_peak_memory_footprint=false" in proc.stderr
    assert out.error.startswith("Failed to parse flag 'report_peak_memory_footprint'")
    proc, out = _bench("--help")
    assert proc.returncode == 1 and proc.stdout == "INFO: STARTING!\n"
    assert proc.stderr.startswith("ERROR: usage: ")
    assert "\tint32\toptional\t" in proc.stderr
    assert proc.stderr.endswith("ERROR: Benchmarking failed.\n")
    assert out.error.startswith("usage: ")


@pytest.mark.slow
@pytest.mark.parametrize(("model", "nbytes"), [(FP32, 40), (INT8, 10), (PARTIAL, 4)])
def test_output_filepath_holds_the_raw_output_tensor(tmp_path: Path, model: Path,
                                                      nbytes: int) -> None:
    target = tmp_path / "out.bin"
    proc, out = _bench(f"--graph={model}", *SHORT, f"--output_filepath={target}")
    assert out.success, proc.stderr
    assert target.stat().st_size == nbytes


def _direct_run(model: Path, data: np.ndarray, *, default_delegates: bool) -> bytes:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.AUTO if default_delegates else \
        OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = Interpreter(model_path=str(model), experimental_op_resolver_type=kind)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], data)
    interp.invoke()
    return bytes(interp.get_tensor(interp.get_output_details()[0]["index"]).tobytes())


@pytest.mark.slow
@pytest.mark.parametrize(("model", "xnnpack"), [(FP32, "false"), (FP32, "true"), (INT8, "false")])
def test_input_layer_value_files_are_used(tmp_path: Path, model: Path, xnnpack: str) -> None:
    rng = np.random.default_rng(5)
    if model == INT8:
        data = rng.integers(-128, 127, (1, 16, 16, 3), endpoint=True).astype(np.int8)
    else:
        data = rng.uniform(-1, 1, (1, 16, 16, 3)).astype(np.float32)
    values = tmp_path / "input.bin"
    values.write_bytes(data.tobytes())
    target = tmp_path / "out.bin"
    proc, out = _bench(f"--graph={model}", *SHORT, f"--input_layer_value_files=input:{values}",
                       f"--output_filepath={target}", f"--use_xnnpack={xnnpack}")
    assert out.success, proc.stderr
    assert ("Input value files", f"input:{values}") in out.params
    expected = _direct_run(model, data, default_delegates=xnnpack == "true")
    assert target.read_bytes() == expected
    # And a different input gives a different output, so the file really was read.
    assert _direct_run(model, np.zeros_like(data), default_delegates=xnnpack == "true") != expected


@pytest.mark.slow
@pytest.mark.parametrize(("spec", "fragment"), [
    ("wrong_name:{path}", "Cannot find the corresponding input_layer name(wrong_name)"),
    ("input:{path}.missing", "Failed to read the input_layer_value_file:"),
    ("input:{short}", "bytes. It should be 3072 bytes."),
    ("nodelimiter", "Wrong input value file item specified: nodelimiter"),
])
def test_bad_input_value_files(tmp_path: Path, spec: str, fragment: str) -> None:
    path = tmp_path / "in.bin"
    path.write_bytes(b"\x00" * 3072)
    short = tmp_path / "short.bin"
    short.write_bytes(b"\x00" * 100)
    proc, out = _bench(f"--graph={FP32}", *SHORT,
                       "--input_layer_value_files=" + spec.format(path=path, short=short))
    assert proc.returncode == 1
    assert fragment in out.error


def test_input_layer_info_like_populate_input_layer_info() -> None:
    files = [("a", "/x.bin")]
    assert input_layer_info("", "", files) == ([], "")  # lenient: names matched later
    assert input_layer_info("a,b", "1,2:3", files) == ([("a", (1, 2)), ("b", (3,))], "")
    assert input_layer_info("a", "1,2:3", [])[1] == (
        "The number of items in --input_layer_shape (1,2:3, with 2 items) must match the number "
        "of items in --input_layer (a, with 1 items). For example --input_layer=input1,input2 "
        "--input_layer_shape=1,224,224,4:1,20")
    assert input_layer_info("a", "1,x", [])[1] == "Incorrect size string specified: 1,x"
    assert input_layer_info("a", "1,-1", [])[1].startswith("Any unknown sizes in the shapes")
    assert input_layer_info("b", "1", files)[1] == (
        "Cannot find the corresponding input_layer name(a) in --input_layer as b")
    assert input_layer_info("", "", files, strict=True)[1] == (
        "Cannot find the corresponding input_layer name(a) in --input_layer as ")


@pytest.mark.slow
def test_value_files_go_by_position_in_input_layer(tmp_path: Path) -> None:
    data = np.random.default_rng(9).uniform(-1, 1, (1, 16, 16, 3)).astype(np.float32)
    values = tmp_path / "input.bin"
    values.write_bytes(data.tobytes())
    target = tmp_path / "out.bin"
    # the tool feeds --input_layer's j-th name to the j-th input and only warns on the name
    proc, out = _bench(f"--graph={FP32}", *SHORT, "--use_xnnpack=false", "--input_layer=pixels",
                       "--input_layer_shape=1,16,16,3",
                       f"--input_layer_value_files=pixels:{values}", f"--output_filepath={target}")
    assert out.success, proc.stderr
    assert "WARN: Tensor # 0 is named input but flags call it pixels" in proc.stdout
    assert ("Input layers", "pixels") in out.params
    assert target.read_bytes() == _direct_run(FP32, data, default_delegates=False)


@pytest.mark.slow
@pytest.mark.parametrize(("flags", "fragment"), [
    (("--input_layer=input,x", "--input_layer_shape=1,16,16,3:1"),
     "Inputs mismatch: Model inputs #:2 expected: 1"),
    (("--input_layer=input", "--input_layer_shape=16,3"),
     "Input tensor #0 should have 4 dimensions!"),
    (("--input_layer=input", "--input_layer_shape=1,16,16,3",
      "--input_layer_value_files=other:/x.bin"),
     "Cannot find the corresponding input_layer name(other) in --input_layer as input"),
])
def test_input_layer_errors_fail_the_run(flags: tuple[str, ...], fragment: str) -> None:
    proc, out = _bench(f"--graph={FP32}", *SHORT, *flags)
    assert proc.returncode == 1 and not out.success
    assert fragment in proc.stderr
