"""Tests for farm.bmformat: tsl::Stat lines, byte-exact re-renders of transcripts, round trips."""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import replace
from typing import Any

import pytest

from farm.benchmark_model import parse_output
from farm.bmformat import (
    ERAS,
    DelegateReport,
    FormatInput,
    echo_params,
    format_output,
    stat_line,
)
from tests.fixtures_bm import TRANSCRIPTS, split_transcript, synthesize_samples


def _transcript(prefix: str) -> list[str]:
    path = next(p for p in TRANSCRIPTS if p.name.startswith(prefix))
    return split_transcript(path)[1].split("\n")


# --------------------------------------------------------------------------- stat_line


def test_stat_line_forms() -> None:
    assert stat_line([], percentiles=False) == "count=0"
    assert stat_line([], percentiles=True) == "count=0 p5=0 median=0 p95=0"
    assert stat_line([7], percentiles=False) == "count=1 curr=7"
    assert stat_line([7], percentiles=True) == "count=1 curr=7 p5=7 median=7 p95=7"
    assert stat_line([5, 5, 5], percentiles=False) == "count=3 curr=5(all same)"
    assert stat_line([3, 1, 2], percentiles=False) == (
        "count=3 first=3 curr=2 min=1 max=3 avg=2 std=0")
    # Population std of [1, 2, 3] is 0.816: truncated to 0; of [0, 10] it is 5.
    assert stat_line([0, 10], percentiles=False).endswith("avg=5 std=5")


def test_stat_line_scientific_average_and_percentile_indices() -> None:
    samples = [2_900_000 + 1000 * i for i in range(20)]
    line = stat_line(samples, percentiles=True)
    assert "avg=2.9095e+06" in line
    ordered = sorted(samples)
    assert line.endswith(f"p5={ordered[1]} median={ordered[10]} p95={ordered[19]}")


def test_stat_line_std_matches_a_truncated_population_std() -> None:
    rng = random.Random(3)
    for _ in range(300):
        samples = [rng.randint(1, 3_000_000) for _ in range(rng.randint(2, 60))]
        if len(set(samples)) == 1:
            continue
        std = int(stat_line(samples, percentiles=False).rsplit("std=", 1)[1])
        assert abs(std - math.floor(statistics.pstdev(samples))) <= 1


# --------------------------------------------------------------------------- real transcripts


def test_transcript_20_is_reproduced_byte_for_byte() -> None:
    body = _transcript("20")
    warm = synthesize_samples(count=5, first=106436, curr=105929, min_us=105929, max_us=106436,
                              avg="106065", std=193, p5=105929, median=105948, p95=106436)
    regular = synthesize_samples(count=50, first=106022, curr=105780, min_us=105416,
                                 max_us=106528, avg="105784", std=260, p5=105485, median=105718,
                                 p95=106281)
    graph = "mobilenet_quant_v1_224.tflite"
    inp = FormatInput(
        graph=graph, params=echo_params("tf2.19+", {"use_gpu": "false"}, graph=graph),
        model_size_bytes=4_276_100, init_us=87639, warmup_us=tuple(warm),
        regular_us=tuple(regular), mem_init_mb=14.4414, mem_overall_mb=14.8164,
        delegates=(DelegateReport("XNNPACK", explicit=False),),
    )
    out, err = format_output(inp, era="tf2.19+")
    runtime = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
    assert body[0].startswith("+ ./benchmark_model")  # the script's set -x line
    assert out == "\n".join(x for x in body[1:] if x != runtime).rstrip("\n") + "\n"
    assert err == runtime + "\n"


def test_transcript_01_tf112_is_reproduced_byte_for_byte() -> None:
    body = _transcript("01")
    regular = synthesize_samples(count=50, first=137789, curr=137254, min_us=137079,
                                 max_us=143416, avg="137722", std=896)
    graph = "mobilenet_v1_1.0_224_quant.tflite"
    inp = FormatInput(graph=graph, params=echo_params("tf1.12-1.14", {}, graph=graph),
                      init_us=4452, warmup_us=(146161,), regular_us=tuple(regular))
    out, err = format_output(inp, era="tf1.12-1.14")
    assert out == ""  # TF 1.x logs everything to stderr
    assert err == "\n".join(body).rstrip("\n") + "\n"


def test_transcript_21_gpu_full_is_reproduced_per_stream() -> None:
    body = _transcript("21")[1:]
    warm = synthesize_samples(count=5, first=125113, curr=112537, min_us=111758, max_us=125113,
                              avg="115344", std=4959, p5=111758, median=112912, p95=125113)
    regular = synthesize_samples(count=50, first=119614, curr=115889, min_us=111842,
                                 max_us=119614, avg="115246", std=1329, p5=112107, median=115350,
                                 p95=116620)
    graph = "mobilenet_quant_v1_224.tflite"
    inp = FormatInput(
        graph=graph, params=echo_params("tf2.19+", {"use_gpu": "true"}, graph=graph),
        model_size_bytes=4_276_100, init_us=1_361_236, warmup_us=tuple(warm),
        regular_us=tuple(regular), mem_init_mb=132.816, mem_overall_mb=132.816,
        delegates=(DelegateReport("GPU", status="full"),),
    )
    out, err = format_output(inp, era="tf2.19+")
    runtime = ["INFO: Created TensorFlow Lite delegate for GPU.",
               "INFO: Loaded OpenCL library with dlopen.", "INFO: Initialized OpenCL-based API.",
               "INFO: Created 1 GPU delegate kernels."]
    assert out == "\n".join(x for x in body if x not in runtime).rstrip("\n") + "\n"
    assert err == "".join(x + "\n" for x in runtime)


def test_transcript_09_nnapi_failure_has_the_same_lines() -> None:
    graph = "/data/local/tmp/yolov5s_int8_640.tflite"
    flags = {"num_threads": "4", "use_nnapi": "true", "nnapi_execution_preference":
             "sustained_speed", "nnapi_accelerator_name": "qti-dsp"}
    inp = FormatInput(
        graph=graph, android=True,
        params=echo_params("tf2.2-2.4", flags, graph=graph, nnapi_accelerators=(
            "qti-default", "qti-dsp", "qti-gpu", "nnapi-reference")),
        delegates=(DelegateReport("NNAPI", status="failed", error_lines=(
            "NN API returned error ANEURALNETWORKS_BAD_DATA at line 1068 while adding "
            "operation.",)),),
    )
    out, err = format_output(inp, era="tf2.2-2.4")
    # The two streams interleave unpredictably in a terminal, so compare the lines as a multiset.
    assert sorted(x for x in (out + err).split("\n") if x) == sorted(
        x for x in _transcript("09") if x)
    assert err.endswith("Failed to apply NNAPI delegate.\nBenchmarking failed.\n")


def _stats_block(lines: list[str]) -> list[str]:
    start = next(i for i, x in enumerate(lines) if "Initialized session" in x)
    end = next(i for i, x in enumerate(lines) if "Inference timings in us" in x)
    return [x for x in lines[start:end + 1] if x.strip()]


@pytest.mark.parametrize(("prefix", "era", "init_us", "warm", "regular"), [
    ("11", "tf2.5-2.12", 17187, dict(count=1, first=3512391, curr=3512391, min_us=3512391,
                                     max_us=3512391, avg="3.51239e+06", std=0),
     dict(count=50, first=2990275, curr=2913402, min_us=2727568, max_us=3189954,
          avg="2.95034e+06", std=109798)),
    ("16", "tf2.13-2.18", 6418, dict(count=1, first=1041765, curr=1041765, min_us=1041765,
                                     max_us=1041765, avg="1.04176e+06", std=0),
     dict(count=50, first=977738, curr=964908, min_us=911877, max_us=1112273, avg="971535",
          std=39112)),
    ("22", "tf2.19+", 92318, dict(count=3, first=235158, curr=200386, min_us=199462,
                                  max_us=235158, avg="211669", std=16613, p5=199462,
                                  median=200386, p95=235158),
     dict(count=25, first=187533, curr=140990, min_us=140071, max_us=195121, avg="145528",
          std=13583, p5=140545, median=141253, p95=187533)),
    ("24", "tf2.19+", 102320, dict(count=1, first=670083, curr=670083, min_us=670083,
                                   max_us=670083, avg="670083", std=0, p5=670083,
                                   median=670083, p95=670083),
     dict(count=50, first=591245, curr=917186, min_us=502355, max_us=2270688, avg="699438",
          std=325425, p5=502674, median=576856, p95=1373207)),
])
def test_stats_and_summary_lines_match_other_transcripts(
    prefix: str, era: str, init_us: int, warm: dict[str, Any], regular: dict[str, Any],
) -> None:
    lines = _transcript(prefix)
    if prefix == "22":  # a logcat capture: compare the messages
        lines = [x.split("tflite  : ", 1)[1] for x in lines if "tflite  : " in x]
    inp = FormatInput(graph="m.tflite", init_us=init_us,
                      warmup_us=tuple(synthesize_samples(**warm)),
                      regular_us=tuple(synthesize_samples(**regular)),
                      num_runs=regular["count"] if prefix == "22" else 50)
    out, _ = format_output(inp, era=era)
    mine = _stats_block(out.split("\n"))
    if prefix == "22":
        mine = [x.removeprefix("INFO: ") for x in mine]
    assert mine == _stats_block(lines)


def test_echo_params_of_old_and_new_eras() -> None:
    lines = _transcript("01")
    graph = "mobilenet_v1_1.0_224_quant.tflite"
    old = [f"{d}: [{v}]" for d, v in echo_params("tf1.12-1.14", {}, graph=graph)]
    assert old == lines[1:11]
    flags = {"num_threads": "4", "use_nnapi": "true", "nnapi_execution_preference":
             "sustained_speed", "nnapi_accelerator_name": "qti-default"}
    got = echo_params("tf2.2-2.4", flags, graph="/data/local/tmp/yolov5s_int8_640.tflite",
                      nnapi_accelerators=("qti-default", "qti-dsp", "qti-gpu", "nnapi-reference"))
    assert [f"{d}: [{v}]" for d, v in got] == _transcript("08")[2:9]
    new = dict(echo_params("tf2.19+", {"num_threads": "4", "use_xnnpack": "0"}, graph="g"))
    assert new == {"Num threads": "4", "Graph": "g", "Signature to run": "",
                   "#threads used for CPU inference": "4", "Use xnnpack": "0"}


# --------------------------------------------------------------------------- streams


def _simple(**kw: Any) -> FormatInput:
    base: dict[str, Any] = dict(graph="/data/local/tmp/m.tflite", model_size_bytes=1_234_567,
                                init_us=5000, warmup_us=(1200, 1100), regular_us=(1000, 1010, 990),
                                mem_init_mb=3.5, mem_overall_mb=4.25)
    base.update(kw)
    return FormatInput(**base)


def test_stream_placement_per_era() -> None:
    for era in ("tf1.12-1.14", "tf1.15-2.1"):
        out, err = format_output(_simple(), era=era)
        assert out == "" and "count=3" in err and "INFO:" not in err
    for era in ("tf2.2-2.4", "tf2.5-2.12"):
        out, err = format_output(_simple(fail_stage="regular", error_lines=("Failed to invoke!",)),
                                 era=era)
        assert out.startswith("STARTING!\n") and "INFO:" not in out
        assert err.endswith("Failed to invoke!\nBenchmarking failed.\n")
    for era in ("tf2.13-2.18", "tf2.19+"):
        out, err = format_output(_simple(fail_stage="regular", error_lines=("Failed to invoke!",)),
                                 era=era)
        assert all(x.startswith("INFO: ") for x in out.split("\n") if x)
        assert err.endswith("ERROR: Failed to invoke!\nERROR: Benchmarking failed.\n")


def test_runtime_lines_go_to_stderr_and_verbose_only_on_android() -> None:
    default = DelegateReport("XNNPACK", explicit=False, replaced_nodes=49, total_nodes=49,
                             partitions=1)
    out, err = format_output(_simple(delegates=(default,)), era="tf2.19+")
    assert "XNNPACK" not in out
    assert err == "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
    out, err = format_output(_simple(delegates=(default,), android=True), era="tf2.19+")
    assert err.split("\n")[:3] == [
        "INFO: Initialized TensorFlow Lite runtime.",
        "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
        "VERBOSE: Replacing 49 out of 49 node(s) with delegate (TfLiteXNNPackDelegate) node, "
        "yielding 1 partitions for subgraph 0.",
    ]
    _, err = format_output(_simple(delegates=(default,), android=True), era="tf2.13-2.18")
    assert "yielding 1 partitions for the whole graph." in err


def test_require_full_delegation_fallbacks() -> None:
    out, err = format_output(_simple(delegates=(DelegateReport("CPU", status="fallback"),)),
                             era="tf2.19+")
    assert "delegate created" not in out
    assert err == "ERROR: Disallowed CPU fallback detected.\nERROR: Benchmarking failed.\n"
    partial = DelegateReport("XNNPACK", status="fallback", kernels=2)
    out, err = format_output(_simple(delegates=(partial,)), era="tf2.19+")
    assert "INFO: XNNPACK delegate created." in out and "Explicitly applied" not in out
    got = parse_output(out + err)
    assert not got.success and got.error == "Disallowed CPU fallback detected."
    assert got.delegate_applied == "XNNPACK" and got.delegation == ""


def test_unknown_era_and_stage_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown benchmark_model era"):
        format_output(_simple(), era="tf3")
    with pytest.raises(ValueError, match="unknown fail_stage"):
        format_output(_simple(fail_stage="later"), era="tf2.19+")


def test_memory_lines_per_era() -> None:
    inp = _simple(peak_mem_mb=93.2383, vmrss_mb=(13, 7, 6))
    out22, _ = format_output(inp, era="tf2.2-2.4")
    assert "Peak memory footprint (MB): init=3.5 overall=4.25" in out22
    assert "periodic monitoring" not in out22
    out25, _ = format_output(inp, era="tf2.5-2.12")
    assert "Memory footprint delta from the start of the tool (MB): init=3.5 overall=4.25" in out25
    assert "via periodic monitoring: 93.2383" in out25 and "VmRSS" not in out25
    out219, _ = format_output(inp, era="tf2.19+")
    assert out219.endswith("INFO: Memory status at the end of exeution:\n"
                           "INFO: - VmRSS              : 13 MB\n"
                           "INFO: + RssAnnon           : 7 MB\n"
                           "INFO: + RssFile + RssShmem : 6 MB\n")
    out1, err1 = format_output(inp, era="tf1.15-2.1")
    assert "Memory" not in out1 + err1


# --------------------------------------------------------------------------- round trips

_DELEGATE_CHOICES: tuple[tuple[DelegateReport, ...], ...] = (
    (),
    (DelegateReport("XNNPACK", explicit=False, replaced_nodes=30, total_nodes=31, partitions=2),),
    (DelegateReport("XNNPACK", explicit=False),
     DelegateReport("XNNPACK", status="full", replaced_nodes=31, total_nodes=31, partitions=1)),
    (DelegateReport("GPU", status="partial", kernels=2, gpu_ops_on_gpu=40, gpu_ops_on_cpu=3,
                    unsupported_ops=("UNPACK: Operation is not supported.",),
                    replaced_nodes=40, total_nodes=43, partitions=2),),
    (DelegateReport("GPU", status="full", gpu_backend="opengl"),
     DelegateReport("NNAPI", status="none")),
    (DelegateReport("Hexagon", status="unavailable"),),
    (DelegateReport("NNAPI", status="failed",
                    error_lines=("NN API returned error ANEURALNETWORKS_OP_FAILED at line 3779 "
                                 "while completing NNAPI compilation.",
                                 "Node number 248 (TfLiteNnapiDelegate) failed to prepare.")),),
)


def _random_input(rng: random.Random) -> FormatInput:
    base = rng.choice([700, 105_000, 2_950_000])
    n_warm, n_reg = rng.choice([1, 2, 5]), rng.choice([1, 3, 50])

    def samples(n: int) -> tuple[int, ...]:
        if rng.random() < 0.15:
            return (base,) * n
        return tuple(base + rng.randint(-base // 10, base // 10) for _ in range(n))

    delegates = rng.choice(_DELEGATE_CHOICES)
    stage = rng.choice(["", "", "", "", "regular", "warmup", "load"])
    errors: tuple[str, ...] = ()
    runtime_errors: tuple[str, ...] = ()
    if stage in ("regular", "warmup"):
        runtime_errors = ("Node number 3 (CONV_2D) failed to invoke.",)
        errors = ("Failed to invoke!",)
    elif stage == "load":
        runtime_errors = ("The model is not a valid Flatbuffer buffer",)
        errors = ("Failed to load model /data/local/tmp/m.tflite",)
    return FormatInput(
        graph="/data/local/tmp/m.tflite",
        params=(("Num threads", str(rng.choice([1, 4]))), ("Graph", "/data/local/tmp/m.tflite")),
        model_size_bytes=rng.choice([None, 4_276_100, 16_900_800]),
        init_us=rng.randint(100, 2_000_000),
        warmup_us=samples(n_warm), regular_us=samples(n_reg),
        warmup_runs=n_warm, num_runs=n_reg,
        mem_init_mb=rng.choice([None, 4.41016, 133.086]),
        mem_overall_mb=149.531,
        peak_mem_mb=rng.choice([None, 93.2383]),
        vmrss_mb=rng.choice([None, (13, 7, 6)]),
        delegates=delegates,
        android=rng.random() < 0.5,
        unconsumed_flags=rng.choice([(), ("--use_gpu_typo=true",)]),
        fail_stage=stage, error_lines=errors, runtime_error_lines=runtime_errors,
    )


def _check_round_trip(inp: FormatInput, era: str) -> None:
    out, err = format_output(inp, era=era)
    got = parse_output(out + err)
    old = era in ("tf1.12-1.14", "tf1.15-2.1")
    failed_delegate = any(d.status == "failed" for d in inp.delegates)
    stage = "init" if failed_delegate and inp.fail_stage not in ("load",) else inp.fail_stage
    assert got.success == (stage == ""), (era, out, err)
    assert not got.truncated
    if not got.success:
        assert got.error
    if stage in ("", "regular"):
        reg = inp.regular_us
        assert got.count == len(reg)
        assert (got.curr_us, got.min_us, got.max_us) == (reg[-1], min(reg), max(reg))
        assert got.avg_us == pytest.approx(statistics.fmean(reg), rel=5e-6)
        assert got.inference_avg_us == pytest.approx(statistics.fmean(reg), rel=5e-6)
        assert got.std_us is not None
        if len(set(reg)) > 1:
            assert abs(got.std_us - math.floor(statistics.pstdev(reg))) <= 1
        else:
            assert got.std_us == 0
        ordered = sorted(reg)
        percentiles = (ordered[len(reg) * 5 // 100], ordered[len(reg) // 2],
                       ordered[len(reg) * 95 // 100])
        if era == "tf2.19+":
            assert (got.p5_us, got.median_us, got.p95_us) == percentiles
        else:
            assert got.p5_us is None
        assert got.init_us == inp.init_us
        assert got.first_inference_us == (None if old else inp.warmup_us[0])
        if not old and inp.mem_init_mb is not None:
            assert got.mem_init_mb == pytest.approx(inp.mem_init_mb, rel=1e-5)
            assert got.mem_overall_mb == pytest.approx(inp.mem_overall_mb, rel=1e-5)
            if inp.peak_mem_mb is not None and era != "tf2.2-2.4":
                assert got.peak_mem_mb == pytest.approx(inp.peak_mem_mb, rel=1e-5)
                if era == "tf2.19+" and inp.vmrss_mb is not None:
                    assert got.vmrss_mb == inp.vmrss_mb[0]
        if stage == "" and (not old or era == "tf1.15-2.1") and (
                inp.mem_init_mb is not None or era != "tf2.5-2.12"):
            assert got.format == era
    if stage in ("", "regular", "warmup"):
        assert got.warmup_count == len(inp.warmup_us)
        assert got.warmup_avg_us == pytest.approx(statistics.fmean(inp.warmup_us), rel=5e-6)
        if not old and inp.model_size_bytes:
            assert got.model_size_mb == pytest.approx(inp.model_size_bytes / 1e6, rel=1e-5)
    if stage in ("regular", "warmup"):
        assert "Failed to invoke!" in got.error
    if stage == "load":
        assert got.error.startswith("Failed to load model")
        assert "not a valid Flatbuffer" in got.error
        return
    assert got.unconsumed_flags == (() if old else inp.unconsumed_flags)
    explicit = [d for d in inp.delegates if d.explicit and d.status != "unavailable"]
    assert got.default_xnnpack == (any(not d.explicit for d in inp.delegates) and not any(
        d.provider == "XNNPACK" for d in explicit))
    assert got.delegate_applied == "+".join(d.provider for d in explicit)
    if failed_delegate:
        assert got.delegation == "failed"
        assert "ANEURALNETWORKS_OP_FAILED" in got.error
    elif explicit and not old:
        statuses = {d.status for d in explicit}
        want = next(s for s in ("full", "partial", "none") if s in statuses)
        assert got.delegation == want
        kernels = {"full": 1, "none": 0}
        assert got.delegate_kernels == sum(kernels.get(d.status, d.kernels) for d in explicit)
    gpu = next((d for d in explicit if d.gpu_ops_on_gpu is not None), None)
    if gpu is not None:
        assert (got.gpu_ops_on_gpu, got.gpu_ops_on_cpu) == (gpu.gpu_ops_on_gpu, gpu.gpu_ops_on_cpu)
        if old:
            assert got.delegation == "partial"
    replaced = [d for d in inp.delegates if d.replaced_nodes is not None and d.status != "failed"]
    if replaced and (inp.android or old):
        assert got.delegated_nodes == sum(d.replaced_nodes or 0 for d in replaced)
        if not old:
            assert got.total_nodes == max(d.total_nodes or 0 for d in replaced)
    elif not any(d.provider == "Hexagon" for d in inp.delegates):
        assert got.delegated_nodes is None
    if any(d.status == "unavailable" for d in inp.delegates):
        assert any("Could not create Hexagon delegate" in w for w in got.warnings)


@pytest.mark.parametrize("era", ERAS)
def test_round_trip_many_inputs(era: str) -> None:
    rng = random.Random(ERAS.index(era))
    for _ in range(60):
        _check_round_trip(_random_input(rng), era)


@pytest.mark.parametrize("era", ERAS)
def test_round_trip_every_delegate_choice_succeeding(era: str) -> None:
    rng = random.Random(11)
    for delegates in _DELEGATE_CHOICES:
        inp = replace(_random_input(rng), delegates=delegates, fail_stage="", error_lines=(),
                      runtime_error_lines=(), mem_init_mb=4.0)
        _check_round_trip(inp, era)


@pytest.mark.parametrize("era", ERAS)
def test_round_trip_through_separate_streams_in_either_order(era: str) -> None:
    inp = _simple(delegates=_DELEGATE_CHOICES[3], android=True)
    out, err = format_output(inp, era=era)
    assert parse_output(out + err) == parse_output(err + out)


def test_early_failures() -> None:
    usage = "usage: farm-benchmark-model <flags>\nFlags:\n\t--num_runs=50\tint32\toptional\tx"
    out, err = format_output(_simple(fail_stage="flags", error_lines=(
        "Failed to parse flag 'use_xnnpack' against argv '--use_xnnpack=yes'", usage)),
        era="tf2.19+")
    assert out == "INFO: STARTING!\n"
    assert err.startswith("ERROR: Failed to parse flag 'use_xnnpack'")
    assert "ERROR: usage: farm-benchmark-model <flags>\nFlags:\n\t--num_runs=50" in err
    got = parse_output(out + err)
    assert not got.success and got.error.startswith("Failed to parse flag 'use_xnnpack'")
    out, err = format_output(_simple(
        fail_stage="params", unconsumed_flags=("--bogus=1",),
        error_lines=("Please specify the name of your TF Lite input file with --graph",)),
        era="tf2.19+")
    got = parse_output(out + err)
    assert got.unconsumed_flags == ("--bogus=1",)
    assert got.error == "Please specify the name of your TF Lite input file with --graph"
    assert "Graph:" not in out
