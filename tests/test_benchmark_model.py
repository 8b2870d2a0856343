"""Tests for farm.benchmark_model: golden transcripts, robustness, exit codes, build_argv."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from farm.benchmark_model import FORMATS, BenchmarkOutput, build_argv, parse_output
from farm.errors import BenchmarkError
from farm.models import RunParams
from tests.fixtures_bm import TRANSCRIPTS, expected, split_transcript

FLOAT_FIELDS = {
    "init_us", "first_inference_us", "warmup_avg_us", "inference_avg_us", "first_us", "curr_us",
    "min_us", "max_us", "avg_us", "std_us", "p5_us", "median_us", "p95_us", "mem_init_mb",
    "mem_overall_mb", "peak_mem_mb", "vmrss_mb", "model_size_mb",
}
STAT_FIELDS = ("count", "first_us", "curr_us", "min_us", "max_us", "avg_us", "std_us", "p5_us",
               "median_us", "p95_us")


def _ids(paths: tuple[Path, ...]) -> list[str]:
    return [p.name[:2] for p in paths]


def _body(path: Path) -> str:
    return split_transcript(path)[1]


def _check_against(out: BenchmarkOutput, want: dict[str, Any]) -> None:
    got = out.to_dict()
    for key, value in want.items():
        if key == "error_contains":
            for fragment in value:
                assert fragment in out.error, (fragment, out.error)
            continue
        if key in FLOAT_FIELDS and value is not None:
            assert got[key] is not None, key
            # Printed values carry 6 significant digits.
            assert got[key] == pytest.approx(value, rel=1e-5), key
        else:
            assert got[key] == value, key


def test_every_transcript_has_expectations_and_a_source_header() -> None:
    assert len(TRANSCRIPTS) >= 18
    for path in TRANSCRIPTS:
        header, body = split_transcript(path)
        assert header[0].startswith("# source: "), path.name
        assert any(line.startswith("# expect.") for line in header), path.name
        assert body.strip(), path.name
        assert path.with_suffix(".expected.json").is_file(), path.name


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=_ids(TRANSCRIPTS))
def test_golden_transcript(path: Path) -> None:
    out = parse_output(_body(path))
    _check_against(out, expected(path))
    assert out.format in FORMATS
    if not out.success:
        assert out.error


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=_ids(TRANSCRIPTS))
def test_leading_header_is_tolerated(path: Path) -> None:
    whole = parse_output(path.read_text(encoding="utf-8"))
    assert whole == parse_output(_body(path))


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=_ids(TRANSCRIPTS))
def test_crlf_line_endings(path: Path) -> None:
    body = _body(path)
    assert parse_output(body.replace("\n", "\r\n")) == parse_output(body)


_PREFIX = re.compile(r"^(INFO|WARN|WARNING|ERROR|VERBOSE): ")
_LEVEL_LETTER = {"INFO": "I", "VERBOSE": "I", "WARN": "W", "WARNING": "W", "ERROR": "E"}


def _as_logcat(body: str, style: str) -> str:
    """Re-render native output as logcat shows it (tag tflite, no INFO: prefix, no blank lines)."""
    out = []
    for line in body.split("\n"):
        if not line.strip() or line.startswith(("+ ", "root@")):
            continue
        m = _PREFIX.match(line)
        letter = _LEVEL_LETTER[m.group(1)] if m else "I"
        msg = line[m.end():] if m else line
        if style == "threadtime":
            out.append(f"07-14 13:14:52.097 22838 22838 {letter} tflite  : {msg}")
        else:
            out.append(f"{letter}/tflite  (22838): {msg}")
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("style", ["threadtime", "brief"])
@pytest.mark.parametrize("name", ["08", "16", "17", "20", "21", "24"])
def test_logcat_rendering_gives_the_same_values(style: str, name: str) -> None:
    path = next(p for p in TRANSCRIPTS if p.name.startswith(name))
    native = parse_output(_body(path))
    logcat = parse_output(_as_logcat(_body(path), style))
    assert logcat.source == "logcat"
    for key in ("success", "init_us", "first_inference_us", "warmup_avg_us", "inference_avg_us",
                "warmup_count", *STAT_FIELDS, "mem_init_mb", "mem_overall_mb", "model_size_mb",
                "delegate_applied", "delegation", "delegate_kernels", "delegated_nodes",
                "default_xnnpack", "nnapi_accelerators", "error_lines"):
        assert getattr(logcat, key) == getattr(native, key), key


def test_logcat_from_a_foreign_tag_is_ignored_but_a_fatal_signal_counts() -> None:
    body = _body(next(p for p in TRANSCRIPTS if p.name.startswith("22")))  # already logcat
    lines = body.splitlines()
    cut = "\n".join(lines[:16])
    assert lines[15].endswith("p95=235158")  # the warmup count= line
    noisy = (cut + "\n07-14 13:14:53.000  1000  1000 I SomeApp : count=3 curr=5\n"
             "07-14 13:14:53.100 22838 22860 F libc    : Fatal signal 11 (SIGSEGV), code 1 "
             "(SEGV_MAPERR), fault addr 0x0 in tid 22860 (tflite)\n")
    out = parse_output(noisy)
    assert not out.success
    assert out.error.startswith("crashed (SIGSEGV")
    assert out.warmup_count == 3  # the tflite warmup line, not SomeApp's


def _summary_start(body: str) -> int:
    for marker in ("Inference timings in us:", "Average inference timings in us:"):
        i = body.find(marker)
        if i >= 0:
            return body.rfind("\n", 0, i) + 1
    return -1


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.75])
@pytest.mark.parametrize("path", TRANSCRIPTS, ids=_ids(TRANSCRIPTS))
def test_cut_output_is_reported_consistently(path: Path, fraction: float) -> None:
    body = _body(path)
    full = parse_output(body)
    cut_at = int(len(body) * fraction)
    out = parse_output(body[:cut_at])
    assert isinstance(out, BenchmarkOutput)
    if out.truncated:
        assert not out.success
    if not out.success:
        assert out.error
    if not full.success:
        assert not out.success
    summary = _summary_start(body)
    if full.success and summary >= 0 and cut_at <= summary:
        assert not out.success
        assert out.truncated
        assert "truncated" in out.error
    if out.success:
        for key in STAT_FIELDS:
            assert getattr(out, key) == getattr(full, key), key


@pytest.mark.parametrize("name", ["01", "11", "20", "22"])
def test_cut_at_every_character_of_the_tail_never_lies(name: str) -> None:
    path = next(p for p in TRANSCRIPTS if p.name.startswith(name))
    body = _body(path)
    full = parse_output(body)
    start = body.rfind("count=")
    for cut_at in range(start, len(body) + 1):
        out = parse_output(body[:cut_at])
        if out.success:
            assert out.inference_avg_us == full.inference_avg_us, cut_at
            assert out.count == full.count, cut_at
            assert out.std_us == full.std_us, cut_at
        else:
            assert out.truncated, cut_at


def test_summary_cut_inside_its_last_number_is_truncation() -> None:
    body = _body(next(p for p in TRANSCRIPTS if p.name.startswith("11")))
    cut = body[: body.index("Inference (avg): 2.95034e+06") + len("Inference (avg): 2.95")]
    out = parse_output(cut)
    assert not out.success and out.truncated
    assert out.inference_avg_us == pytest.approx(2950340)


def test_profiler_timings_are_not_benchmark_stats() -> None:
    out = parse_output(_body(next(p for p in TRANSCRIPTS if p.name.startswith("07"))))
    assert out.count is None and out.avg_us is None and out.inference_avg_us is None
    out = parse_output(_body(next(p for p in TRANSCRIPTS if p.name.startswith("02"))))
    assert out.avg_us == 394183  # the profiler total says avg=394059


def test_profile_only_excerpt_cut_before_its_end_is_truncated() -> None:
    body = _body(next(p for p in TRANSCRIPTS if p.name.startswith("07")))
    out = parse_output(body[: body.rindex("11 nodes observed")])
    assert not out.success and out.truncated


@pytest.mark.parametrize(("code", "fragment"), [
    (139, "crashed (SIGSEGV, exit 139)"),
    (134, "crashed (SIGABRT, exit 134)"),
    (-11, "crashed (SIGSEGV, exit -11)"),
    (137, "killed (SIGKILL, exit 137)"),
])
def test_crash_exit_codes(code: int, fragment: str) -> None:
    body = _body(next(p for p in TRANSCRIPTS if p.name.startswith("24")))
    out = parse_output(body[: len(body) // 2], exit_code=code)
    assert not out.success
    assert out.error.startswith(fragment)
    assert out.exit_code == code


def test_non_zero_exit_fails_an_otherwise_complete_run() -> None:
    body = _body(next(p for p in TRANSCRIPTS if p.name.startswith("20")))
    assert parse_output(body, exit_code=0).success
    out = parse_output(body, exit_code=1)
    assert not out.success and not out.truncated
    assert "exit status 1" in out.error
    assert out.inference_avg_us == 105784


def test_failure_with_exit_status_names_both() -> None:
    body = _body(next(p for p in TRANSCRIPTS if p.name.startswith("08")))
    out = parse_output(body, exit_code=1)
    assert out.error.startswith("Failed to apply NNAPI delegate.")
    assert out.error.endswith("exit status 1")


def test_unconsumed_flags_with_and_without_prefix() -> None:
    body = _body(next(p for p in TRANSCRIPTS if p.name.startswith("20")))
    lines = body.split("\n")
    lines.insert(2, "WARN: Unconsumed cmdline flags: --use_gpu_typo=true --num_threads 4")
    out = parse_output("\n".join(lines))
    assert out.success
    assert out.unconsumed_flags == ("--use_gpu_typo=true", "--num_threads", "4")
    assert out.warnings == ("WARN: Unconsumed cmdline flags: --use_gpu_typo=true "
                            "--num_threads 4",)
    old = parse_output("STARTING!\nUnconsumed cmdline flags: --foo=1\n")
    assert old.unconsumed_flags == ("--foo=1",)
    assert old.truncated


def test_gpu_partial_and_nnapi_none_and_several_replacing_lines() -> None:
    text = "\n".join([
        "INFO: STARTING!",
        "INFO: Use gpu: [1]",
        "INFO: Use NNAPI: [1]",
        "INFO: NNAPI accelerators available: [nnapi-reference]",
        "INFO: Loaded model /data/local/tmp/m.tflite",
        "INFO: Created TensorFlow Lite delegate for GPU.",
        "INFO: GPU delegate created.",
        "INFO: Going to apply 2 delegates one after another.",
        "ERROR: Following operations are not supported by GPU delegate:",
        "ERROR: UNPACK: Operation is not supported.",
        "ERROR: 40 operations will run on the GPU, and the remaining 3 operations will run on "
        "the CPU.",
        "VERBOSE: Replacing 40 out of 43 node(s) with delegate (TfLiteGpuDelegateV2) node, "
        "yielding 2 partitions for subgraph 0.",
        "INFO: Explicitly applied GPU delegate, and the model graph will be partially executed "
        "by the delegate w/ 2 delegate kernels.",
        "INFO: Created TensorFlow Lite delegate for NNAPI.",
        "VERBOSE: Replacing 0 out of 5 node(s) with delegate (TfLiteNnapiDelegate) node, "
        "yielding 0 partitions for subgraph 0.",
        "INFO: Though NNAPI delegate is explicitly applied, the model graph will not be executed "
        "by the delegate.",
    ])
    out = parse_output(text)
    assert out.delegate_applied == "GPU+NNAPI"
    assert out.delegate_statuses == ("GPU:partial", "NNAPI:none")
    assert out.delegation == "partial"
    assert out.delegate_kernels == 2
    assert (out.gpu_ops_on_gpu, out.gpu_ops_on_cpu) == (40, 3)
    assert (out.delegated_nodes, out.total_nodes, out.partitions) == (40, 43, 2)
    assert out.nnapi_accelerators == ("nnapi-reference",)
    assert out.truncated and not out.success
    assert not any("UNPACK" in x for x in [out.error])


def test_nnapi_not_executed_alone_is_none() -> None:
    out = parse_output("Though NNAPI delegate is explicitly applied, the model graph will not "
                       "be executed by the delegate.\n")
    assert (out.delegate_applied, out.delegation, out.delegate_kernels) == ("NNAPI", "none", 0)


@pytest.mark.parametrize(("lines", "fragment"), [
    (["INFO: STARTING!", "ERROR: Please specify the name of your TF Lite input file with --graph",
      "ERROR: Benchmarking failed."], "Please specify the name of your TF Lite input file"),
    (["INFO: STARTING!", "INFO: Graph: [/x.tflite]", "ERROR: Could not open '/x.tflite'.",
      "ERROR: The model allocation is null/empty", "ERROR: Failed to load model /x.tflite",
      "ERROR: Benchmarking failed."], "Failed to load model /x.tflite (Could not open"),
    (["INFO: STARTING!", "ERROR: Failed to parse flag 'use_gpu' against argv '--use_gpu=yes'",
      "ERROR: usage: ./benchmark_model <flags>", "Flags:", "\t--num_runs=50\tint32\toptional",
      "ERROR: Benchmarking failed."], "Failed to parse flag 'use_gpu'"),
    (["INFO: Explicitly applied XNNPACK delegate, and the model graph will be partially executed "
      "by the delegate w/ 3 delegate kernels.", "ERROR: Disallowed CPU fallback detected.",
      "ERROR: Benchmarking failed."], "Disallowed CPU fallback detected."),
    (["ERROR: Select TensorFlow op(s), included in the given model, is(are) not supported by "
      "this interpreter.", "ERROR: Node number 3 (FlexErf) failed to prepare.",
      "ERROR: Failed to allocate tensors!", "ERROR: Benchmarking failed."],
     "Failed to allocate tensors! (Select TensorFlow op(s)"),
    (["STARTING!", "ERROR: Something odd happened", "Benchmarking failed."],
     "Benchmarking failed. (Something odd happened)"),
])
def test_failure_messages(lines: list[str], fragment: str) -> None:
    out = parse_output("\n".join(lines) + "\n")
    assert not out.success and not out.truncated
    assert fragment in out.error


def test_help_output_is_a_failure() -> None:
    out = parse_output("INFO: STARTING!\nERROR: usage: ./benchmark_model <flags>\nFlags:\n"
                       "\t--num_runs=50\tint32\toptional\texpected number of runs\n"
                       "ERROR: Benchmarking failed.\n", exit_code=1)
    assert not out.success
    assert out.error.startswith("usage: ./benchmark_model")


def test_litert_compiled_model_block() -> None:
    text = "\n".join([
        "INFO: Initialized session in 45.32ms.",
        "INFO: ========== BENCHMARK RESULTS ==========",
        "INFO: Model initialization: 45.32 ms",
        "INFO: Warmup (first):       120.45 ms",
        "INFO: Warmup (avg):         98.76 ms (1 runs)",
        "INFO: Inference (avg):      85.23 ms (50 runs)",
        "INFO: Inference (min):      82.10 ms",
        "INFO: Inference (max):      92.45 ms",
        "INFO: Inference (std):      3.21",
        "INFO: Throughput:           12.45 MB/s",
        "INFO: ",
        "INFO: Memory Usage:",
        "INFO: Init footprint:       25.60 MB",
        "INFO: Overall footprint:    32.40 MB",
        "INFO: Peak memory:          35.20 MB",
        "INFO: ======================================",
    ])
    out = parse_output(text)
    assert out.success and out.format == "litert-compiled"
    assert out.init_us == pytest.approx(45320)
    assert out.first_inference_us == pytest.approx(120450)
    assert out.warmup_avg_us == pytest.approx(98760) and out.warmup_count == 1
    assert out.inference_avg_us == pytest.approx(85230) and out.count == 50
    assert (out.min_us, out.max_us, out.std_us) == pytest.approx((82100, 92450, 3210))
    assert (out.mem_init_mb, out.mem_overall_mb, out.peak_mem_mb) == pytest.approx((25.6, 32.4,
                                                                                   35.2))


def test_litert_block_prefers_exact_count_lines() -> None:
    text = ("Running benchmark for at least 1 iterations\ncount=1 curr=120450 p5=120450 "
            "median=120450 p95=120450\nRunning benchmark for at least 50 iterations\n"
            "count=2 first=85000 curr=85461 min=85000 max=85461 avg=85230.5 std=230 p5=85000 "
            "median=85461 p95=85461\n========== BENCHMARK RESULTS ==========\n"
            "Inference (avg):      85.23 ms (2 runs)\n=====\n")
    out = parse_output(text)
    assert out.success and out.count == 2 and out.inference_avg_us == 85230.5
    assert out.warmup_count == 1 and out.warmup_avg_us == 120450


def test_old_style_curr_first_stats_and_dry_run_forms() -> None:
    out = parse_output("Running benchmark for 1 iterations\ncurr=900 count=1\n\n"
                       "Running benchmark for 3 iterations\ncurr=700 count=3 min=690 max=720 "
                       "avg=703.333 std=12\n\nAverage inference timings in us: Warmup: 900, "
                       "Init: 40, no stats: 703.333\n")
    assert out.success and out.count == 3 and out.min_us == 690 and out.warmup_avg_us == 900
    dry = parse_output("INFO: count=0\n\nINFO: count=0\n\nINFO: Inference timings in us: Init: "
                       "12, First inference: 0, Warmup (avg): nan, Inference (avg): nan\n")
    assert dry.success and dry.count == 0 and dry.inference_avg_us is None
    assert dry.init_us == 12


def test_all_same_form_fills_the_stats() -> None:
    out = parse_output("count=4 curr=250(all same)\n\ncount=3 curr=240(all same) p5=240 "
                       "median=240 p95=240\n\nInference timings in us: Init: 1, First inference: "
                       "250, Warmup (avg): 250, Inference (avg): 240\n")
    assert out.success
    assert (out.count, out.first_us, out.min_us, out.max_us, out.avg_us, out.std_us) == (
        3, 240, 240, 240, 240, 0)
    assert out.warmup_count == 4 and out.warmup_avg_us == 250


@pytest.mark.parametrize("text", [
    "", "\n\n", "hello world\n", "\x00\xff garbage \x01", "count=\n", "count=abc first=1\n",
    "Inference timings in us: Init: x\n", "# just a comment\n", "=" * 5000,
    "Replacing x out of y node(s)\n", "Running benchmark for at least 9999999999999999999 "
    "iterations\n", "count=99999999999999999999999 first=-1 curr=2\n",
])
def test_garbage_never_crashes(text: str) -> None:
    out = parse_output(text)
    assert not out.success
    assert out.error


def test_bytes_input_and_shuffled_lines_never_crash() -> None:
    rng = random.Random(7)
    all_lines = [line for p in TRANSCRIPTS for line in _body(p).split("\n")]
    for _ in range(200):
        sample = rng.sample(all_lines, rng.randint(0, 40))
        out = parse_output("\n".join(sample))
        assert out.success or out.error
        if out.truncated:
            assert not out.success
    assert parse_output(_body(TRANSCRIPTS[0]).encode()).success


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=_ids(TRANSCRIPTS))
def test_to_dict_round_trips_through_json(path: Path) -> None:
    out = parse_output(_body(path))
    data = json.loads(json.dumps(out.to_dict()))
    assert BenchmarkOutput.from_dict(data) == out


# --------------------------------------------------------------------------- build_argv


def test_build_argv_order_and_values() -> None:
    params = RunParams(warmup_runs=2, warmup_min_secs=0.25, num_runs=30, min_secs=0.0,
                       max_secs=60.0, run_delay_s=0.5, report_peak_memory=True)
    argv = build_argv(["/data/local/tmp/benchmark_model"], graph="/data/local/tmp/m 1.tflite",
                      threads=4, params=params, delegate_flags=["--use_gpu=true"],
                      extra=["--enable_op_profiling=true"])
    assert argv == [
        "/data/local/tmp/benchmark_model", "--graph=/data/local/tmp/m 1.tflite",
        "--num_threads=4", "--warmup_runs=2", "--warmup_min_secs=0.25", "--num_runs=30",
        "--min_secs=0", "--max_secs=60", "--run_delay=0.5", "--report_peak_memory_footprint=true",
        "--use_gpu=true", "--enable_op_profiling=true",
    ]


def test_build_argv_defaults_omit_optional_flags() -> None:
    argv = build_argv(("taskset", "f0", "./bm"), graph="m.tflite", threads=1,
                      params=RunParams(report_peak_memory=False))
    assert argv[:3] == ["taskset", "f0", "./bm"]
    assert not any(a.startswith(("--run_delay", "--report_peak")) for a in argv)
    assert "--warmup_min_secs=0.5" in argv and "--min_secs=1" in argv


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"binary": "benchmark_model"}, "binary must be a non-empty list"),
    ({"binary": []}, "binary must be a non-empty list"),
    ({"binary": ["bm", 3]}, "binary[1]"),
    ({"graph": ""}, "graph must be a non-empty path"),
    ({"threads": True}, "threads must be an integer"),
    ({"threads": 2.0}, "threads must be an integer"),
    ({"delegate_flags": ["use_gpu=true"]}, "is not of the form --name=value"),
    ({"delegate_flags": ["--use_gpu", "true"]}, "is not of the form --name=value"),
    ({"delegate_flags": "--use_gpu=true"}, "must be a list of flags"),
    ({"extra": [7]}, "extra[0] must be a string"),
    ({"extra": ["--num_threads=2"]}, "repeats --num_threads"),
    ({"extra": ["--x=1", "--x=2"]}, "repeats --x"),
    ({"params": RunParams(min_secs=float("nan"))}, "min_secs must be a finite number"),
])
def test_build_argv_rejects(kwargs: dict[str, Any], fragment: str) -> None:
    base: dict[str, Any] = {"binary": ["bm"], "graph": "m.tflite", "threads": 1,
                            "params": RunParams()}
    base.update(kwargs)
    binary = base.pop("binary")
    with pytest.raises(BenchmarkError) as info:
        build_argv(binary, **base)
    assert fragment in str(info.value)
