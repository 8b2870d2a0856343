"""benchmark_model emulation on simulated phones, read back by farm's own parser.

The performance model's truths (`expected_latency_us`, `Profile.expected_speedup`) are compared
with what the emulated runs print, for several profiles, output eras, delegates and dtypes.
"""

from __future__ import annotations

import re
import struct
import threading
import time

import numpy as np
import pytest

from farm.benchmark_model import BenchmarkOutput, parse_output
from farm.errors import ConfigError
from farm.sim.benchmark import (
    ABI_OF_MACHINE,
    CorruptModel,
    analyze_model,
    elf_info,
    emulate_outputs,
    era_for,
    expected_latency_us,
    make_stub_binary,
    parse_flags,
)
from farm.sim.phone import Phone
from farm.sim.profiles import available_profiles, load_profile, profile_from_dict
from tests.fixtures_simuser import (  # noqa: F401 - make_phone is a fixture
    BM,
    REPO_MODELS,
    conv_macs,
    conv_model,
    install_benchmark_model,
    make_phone,
    push,
)

T = "/data/local/tmp"
FAST = "--warmup_min_secs=0.2 --min_secs=0.5 --num_runs=40"


def bench(phone: Phone, args: str, *, timeout: float = 60) -> tuple[int | None, str, str,
                                                                    BenchmarkOutput]:
    rc, out, err = phone.run(f"{BM} {args}", timeout=timeout)
    return rc, out, err, parse_output(out + err, rc)


@pytest.fixture(scope="module")
def models() -> dict[str, bytes]:
    return {dt: conv_model(dt) for dt in ("fp32", "fp16", "dynamic", "int8", "int16x8")}


def ready(make_phone, profile: str, models: dict[str, bytes], *,  # noqa: F811
          time_scale: float = 2000.0) -> Phone:
    phone = make_phone(profile, time_scale=time_scale)
    install_benchmark_model(phone)
    for dt, data in models.items():
        push(phone, data, f"{T}/{dt}.tflite")
    return phone


# --------------------------------------------------------------------------- stub & model


@pytest.mark.parametrize("abi", ["arm64-v8a", "armeabi-v7a", "x86_64", "x86"])
def test_stub_binary_is_an_elf_of_its_abi(abi: str) -> None:
    data = make_stub_binary(abi, "2.19")
    assert data.startswith(b"\x7fELF") and b"FARM_SIM_BENCHMARK_MODEL" in data
    info = elf_info(data)
    assert info is not None
    bits, machine = info
    assert ABI_OF_MACHINE[machine] == abi
    assert bits == (64 if abi in ("arm64-v8a", "x86_64") else 32)
    assert data[4] == (2 if bits == 64 else 1)
    ehsize = struct.unpack_from("<H", data, 52 if bits == 64 else 40)[0]
    assert ehsize == (64 if bits == 64 else 52)
    assert make_stub_binary(abi, "2.8") != data
    with pytest.raises(ValueError, match="unknown ABI"):
        make_stub_binary("mips")


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "dynamic", "int8", "int16x8"])
def test_model_analysis(dtype: str, models: dict[str, bytes]) -> None:
    work = analyze_model(models[dtype])
    assert work.dtype == dtype
    assert work.total_macs == conv_macs()
    assert sum(o.op == "CONV_2D" for o in work.ops) == 6
    assert analyze_model(models[dtype]) is work  # cached by sha256


def test_model_analysis_of_converter_outputs() -> None:
    fp32 = analyze_model((REPO_MODELS / "tiny_fp32.tflite").read_bytes())
    int8 = analyze_model((REPO_MODELS / "tiny_int8.tflite").read_bytes())
    assert (fp32.dtype, int8.dtype) == ("fp32", "int8")
    assert [o.op for o in int8.ops] == ["CONV_2D", "MEAN", "FULLY_CONNECTED", "SOFTMAX"]
    assert int8.ops[0].macs == 16 * 16 * 8 * 9 * 3


def test_corrupt_models_are_rejected() -> None:
    good = conv_model("fp32")
    with pytest.raises(CorruptModel, match="should be 'TFL3'"):
        analyze_model(good[:4] + b"XXXX" + good[8:])
    with pytest.raises(CorruptModel, match="not a valid Flatbuffer"):
        analyze_model(good[:8] + b"\xff" * 64)


def test_era_mapping() -> None:
    assert [era_for(v) for v in ("1.14", "1.15", "2.1", "2.4", "2.8", "2.16", "2.19", "2.20")] \
        == ["tf1.12-1.14", "tf1.15-2.1", "tf1.15-2.1", "tf2.2-2.4", "tf2.5-2.12",
            "tf2.13-2.18", "tf2.19+", "tf2.19+"]
    p = parse_flags(["--graph=x", "--use_xnnpack=true", "--bogus=1", "positional"], (2, 1))
    assert p.values == {"graph": "x"} and p.unconsumed == ["--use_xnnpack=true", "--bogus=1",
                                                           "positional"]


# --------------------------------------------------------------------------- CLI behaviour


def test_cli_errors(make_phone, models: dict[str, bytes]) -> None:  # noqa: F811
    phone = ready(make_phone, "flagship", models)
    rc, out, err, parsed = bench(phone, "--help")
    assert rc == 1 and not parsed.success
    assert err.startswith("ERROR: usage: /data/local/tmp/benchmark_model\nFlags:\n\t--num_runs=50")
    assert "ERROR: Benchmarking failed." in err
    rc, out, err, parsed = bench(phone, f"--graph={T}/fp32.tflite --use_gpu=yes")
    assert rc == 1
    assert "ERROR: Failed to parse flag 'use_gpu' against argv '--use_gpu=yes'" in err
    rc, out, err, parsed = bench(phone, "--num_runs=3")
    assert rc == 1
    assert "ERROR: Please specify the name of your TF Lite input file with --graph" in err
    rc, out, err, parsed = bench(phone, f"--graph={T}/missing.tflite")
    assert rc == 1 and not parsed.success
    assert f"ERROR: Could not open '{T}/missing.tflite'." in err
    assert f"ERROR: Failed to mmap model {T}/missing.tflite" in err
    bad = models["fp32"][:4] + b"JUNK" + models["fp32"][8:]
    push(phone, bad, f"{T}/bad.tflite")
    rc, out, err, parsed = bench(phone, f"--graph={T}/bad.tflite")
    assert rc == 1 and "Model provided has model identifier 'JUNK', should be 'TFL3'" in err
    rc, out, err, parsed = bench(phone, f"--graph={T}/fp32.tflite {FAST} --nonsense_flag=1")
    assert rc == 0 and parsed.success
    assert "WARN: Unconsumed cmdline flags: --nonsense_flag=1" in out
    assert parsed.unconsumed_flags == ("--nonsense_flag=1",)


def test_old_era_failures_exit_zero(make_phone, models: dict[str, bytes]) -> None:  # noqa: F811
    phone = ready(make_phone, "old_armv7", {"int8": models["int8"]})
    rc, out, err, parsed = bench(phone, "--graph=/nope.tflite")
    assert rc == 0 and out == "" and "Benchmarking failed." not in err  # TF <= 2.1
    assert not parsed.success
    rc, out, err, parsed = bench(phone, f"--graph={T}/int8.tflite --use_gpu=true")
    assert rc == 0 and not parsed.success and parsed.delegation == "failed"
    assert "OpenGL ES 3.1 or above is required" in err


def test_output_filepath_peak_memory_and_require_full(make_phone,  # noqa: F811
                                                      models: dict[str, bytes]) -> None:
    phone = ready(make_phone, "flagship", models)
    rc, out, err, parsed = bench(phone, f"--graph={T}/fp32.tflite {FAST} "
                                        f"--output_filepath={T}/out.bin "
                                        "--report_peak_memory_footprint=true")
    assert rc == 0 and parsed.success
    size = int(phone.run(f"stat -c %s {T}/out.bin")[1])
    assert size == 28 * 28 * 32 * 4  # the float32 output tensor
    assert parsed.peak_mem_mb is not None and parsed.peak_mem_mb > (parsed.mem_overall_mb or 0)
    assert "Memory status at the end of exeution:" in out
    rc, out, err, parsed = bench(phone, f"--graph={T}/int8.tflite {FAST} --use_gpu=true "
                                        "--require_full_delegation=true")
    assert rc == 1 and not parsed.success
    assert "ERROR: Disallowed CPU fallback detected." in err


def test_loop_semantics_and_ignored_op_profiling(make_phone,  # noqa: F811
                                                 models: dict[str, bytes]) -> None:
    phone = ready(make_phone, "midrange", {"fp32": models["fp32"]}, time_scale=500.0)
    base = f"--graph={T}/fp32.tflite --warmup_runs=3 --warmup_min_secs=0 --min_secs=0"
    rc, out, err, p = bench(phone, f"{base} --num_runs=7 --run_delay=0.2 "
                                   "--enable_op_profiling=true")
    assert rc == 0 and p.success
    assert (p.warmup_count, p.count) == (3, 7)
    assert any("Op profiling is not emulated" in w for w in p.warnings)
    t0 = phone.clock.now_s()
    # min_secs keeps it running past num_runs: count * avg covers the simulated 2 s
    rc, out, err, p = bench(phone, f"{base} --num_runs=1 --min_secs=2")
    assert p.count and p.avg_us and p.count > 1
    assert p.count * p.avg_us / 1e6 == pytest.approx(2.0, rel=0.05)
    assert phone.clock.now_s() - t0 >= 2.0
    # max_secs stops it before num_runs
    rc, out, err, p = bench(phone, f"{base} --num_runs=1000000 --max_secs=1")
    assert p.count and p.count < 1000000 and p.count * (p.avg_us or 0) / 1e6 < 1.1


# --------------------------------------------------------------------------- truths


def avg_ratio(phone: Phone, a: str, b: str, extra: str) -> tuple[float, BenchmarkOutput,
                                                                 BenchmarkOutput]:
    _, _, _, pa = bench(phone, f"--graph={T}/{a}.tflite {FAST} {extra}")
    _, _, _, pb = bench(phone, f"--graph={T}/{b}.tflite {FAST} {extra}")
    assert pa.success and pb.success, (pa.error, pb.error)
    assert pa.inference_avg_us and pb.inference_avg_us
    return pa.inference_avg_us / pb.inference_avg_us, pa, pb


@pytest.mark.parametrize(("profile", "threads", "lo", "hi"), [
    ("flagship", 1, 2.0, 3.0),  # dotprod + i8mm: int8 2-3x faster
    ("midrange", 1, 2.0, 3.0),  # dotprod
    ("lowend", 4, 1.05, 1.6),  # A53 without dotprod: a little faster
    ("old_armv7", 1, 0.45, 0.85),  # armv7: int8 slower than fp32
])
def test_int8_speedup_differs_by_phone(make_phone, models: dict[str, bytes], profile: str,  # noqa: F811
                                       threads: int, lo: float, hi: float) -> None:
    phone = ready(make_phone, profile, {"fp32": models["fp32"], "int8": models["int8"]})
    speedup, p32, p8 = avg_ratio(phone, "fp32", "int8", f"--num_threads={threads}")
    assert lo < speedup < hi
    prof = phone.profile
    truth = (expected_latency_us(prof, models["fp32"], threads=threads)
             / expected_latency_us(prof, models["int8"], threads=threads))
    assert speedup == pytest.approx(truth, rel=0.12)
    raw = prof.expected_speedup("xnnpack", "fp32", "int8", threads)
    assert truth == pytest.approx(raw, rel=0.25)  # MAC-bound model: close to the raw ratio
    for parsed, dt in ((p32, "fp32"), (p8, "int8")):
        want = expected_latency_us(prof, models[dt], threads=threads)
        assert parsed.inference_avg_us == pytest.approx(want, rel=0.12)


def test_gpu_int8_is_partial_and_about_one_x(make_phone, models: dict[str, bytes]) -> None:  # noqa: F811
    phone = ready(make_phone, "flagship", {"fp32": models["fp32"], "int8": models["int8"]})
    ratio, p32, p8 = avg_ratio(phone, "fp32", "int8", "--use_gpu=true")
    assert 0.8 < ratio < 1.25
    assert (p32.delegate_applied, p32.delegation) == ("GPU", "full")
    assert (p8.delegate_applied, p8.delegation) == ("GPU", "partial")
    assert p8.gpu_ops_on_cpu == 2 and p8.gpu_ops_on_gpu == 6
    assert phone.profile.expected_speedup("gpu", "fp32", "int8") == 1.0


def test_gpu_fallbacks_by_profile(make_phone, models: dict[str, bytes]) -> None:  # noqa: F811
    low = ready(make_phone, "lowend", {"int8": models["int8"], "fp32": models["fp32"]})
    rc, out, err, p = bench(low, f"--graph={T}/int8.tflite {FAST} --use_gpu=true")
    assert p.success and p.delegation == "none"
    assert "No operations will run on the GPU, and all 8 operations will run on the CPU." in err
    rc, out, err, p = bench(low, f"--graph={T}/fp32.tflite {FAST} --use_gpu=true")
    assert p.delegation == "full" and "Initialized OpenGL-based API." in err
    rc, out, err, p = bench(low, f"--graph={T}/fp32.tflite {FAST} --use_gpu=true "
                                 "--gpu_backend=cl")
    assert rc == 1 and p.delegation == "failed" and "libOpenCL.so" in err


@pytest.mark.parametrize(("profile", "status", "text"), [
    ("flagship", "full", "VERBOSE: Replacing 6 out of 6 node(s) with delegate "
                         "(TfLiteNnapiDelegate) node, yielding 1 partitions for subgraph 0."),
    ("midrange", "none", "INFO: Though NNAPI delegate is explicitly applied, the model graph "
                         "will not be executed by the delegate."),
    ("lowend", "", "\nNNAPI acceleration is unsupported on this platform.\n"),  # TF 2.8
])
def test_nnapi_by_profile(make_phone, models: dict[str, bytes], profile: str, status: str,  # noqa: F811
                          text: str) -> None:
    phone = ready(make_phone, profile, {"fp32": models["fp32"]})
    rc, out, err, p = bench(phone, f"--graph={T}/fp32.tflite {FAST} --use_nnapi=true")
    assert rc == 0 and p.success
    assert p.delegation == status
    assert text in out + err
    if profile != "lowend":
        assert p.nnapi_accelerators == phone.profile.nnapi.accelerators


def test_threads_scale_over_clusters(make_phone, models: dict[str, bytes]) -> None:  # noqa: F811
    flag = ready(make_phone, "flagship", {"fp32": models["fp32"]})
    lat = {}
    for t in (1, 4):
        _, _, _, p = bench(flag, f"--graph={T}/fp32.tflite {FAST} --num_threads={t}")
        lat[t] = p.inference_avg_us
    assert lat[1] / lat[4] > 2.0
    old = load_profile("old_armv7")
    model = models["fp32"]
    assert expected_latency_us(old, model, threads=8) > expected_latency_us(old, model, threads=4)
    # pinning to the little cores with taskset is slower than the big ones
    _, _, _, little = bench(flag, f"--graph={T}/fp32.tflite {FAST} --num_threads=2")
    rc, out, err = flag.run(f"taskset 03 {BM} --graph={T}/fp32.tflite {FAST} --num_threads=2")
    pinned = parse_output(out + err, rc)
    assert pinned.inference_avg_us and little.inference_avg_us
    assert pinned.inference_avg_us > 2.5 * little.inference_avg_us


@pytest.mark.parametrize("profile", sorted(available_profiles()))
def test_every_profile_output_parses(make_phone, models: dict[str, bytes], profile: str) -> None:  # noqa: F811
    phone = ready(make_phone, profile, {"fp16": models["fp16"]})
    rc, out, err, p = bench(phone, f"--graph={T}/fp16.tflite {FAST} --num_threads=2")
    assert rc == 0 and p.success, p.error
    assert p.format == era_for(phone.profile.benchmark_model_tf_version)
    assert p.count is not None and p.count >= 40
    old = p.format in ("tf1.12-1.14", "tf1.15-2.1")
    assert p.init_us and p.init_us > 0
    assert (p.first_inference_us is None) == old  # "no stats" summary before TF 2.2
    tool = err if old else out  # TF <= 2.1 logged everything to stderr
    assert re.search(r"count=\d+ first=\d+ curr=\d+ min=\d+ max=\d+ avg=[\d.e+]+ std=\d+", tool)


# --------------------------------------------------------------------------- faults


def test_crash_fault(make_phone, models: dict[str, bytes]) -> None:  # noqa: F811
    phone = ready(make_phone, "flagship", {"fp32": models["fp32"]})
    phone.faults.set("crash")
    rc, out, err, p = bench(phone, f"--graph={T}/fp32.tflite {FAST}")
    assert rc == 139
    assert "INFO: Loaded model" in out and "Inference timings" not in out
    assert err.endswith("Segmentation fault\n")
    assert not p.success and "139" in p.error
    phone.faults.clear("crash")
    rc, _, _, p = bench(phone, f"--graph={T}/fp32.tflite {FAST}")
    assert rc == 0 and p.success


def _wait_for(phone: Phone, name: str) -> int:
    for _ in range(300):
        _, out, _ = phone.run("ps -A -o PID,NAME")
        for line in out.splitlines():
            if line.endswith(" " + name):
                return int(line.split()[0])
        time.sleep(0.02)
    raise AssertionError(f"{name} never showed up in ps")


def test_hang_fault_kill_and_proc_status(make_phone, models: dict[str, bytes]) -> None:  # noqa: F811
    phone = ready(make_phone, "flagship", {"fp32": models["fp32"]})
    phone.faults.set("hang")
    result: list[tuple[int | None, str, str]] = []
    t = threading.Thread(target=lambda: result.append(
        phone.run(f"{BM} --graph={T}/fp32.tflite", timeout=30)))
    t.start()
    try:
        pid = _wait_for(phone, "benchmark_model")
        time.sleep(0.05)
        _, status, _ = phone.run(f"cat /proc/{pid}/status")
        fields = dict(re.findall(r"^(\w+):\s+(.+)$", status, re.M))
        assert fields["Name"] == "benchmark_model"
        assert int(fields["VmRSS"].split()[0]) > 3000
        assert int(fields["VmHWM"].split()[0]) >= int(fields["VmRSS"].split()[0])
        _, out, _ = phone.run(f"kill {pid}")
    finally:
        t.join(20)
    rc, out, err = result[0]
    assert rc == 143 and "Inference timings" not in out
    assert parse_output(out + err, rc).success is False


def test_hang_ended_by_hangup(make_phone, models: dict[str, bytes]) -> None:  # noqa: F811
    phone = ready(make_phone, "midrange", {"fp32": models["fp32"]})
    phone.faults.set("hang")
    out = bytearray()
    proc = phone.spawn(f"{BM} --graph={T}/fp32.tflite", pty=True, on_stdout=out.extend,
                       on_stderr=out.extend)
    _wait_for(phone, "benchmark_model")
    assert proc.wait(0.2) is None
    proc.hangup()
    assert proc.wait(10) == 129
    _, ps, _ = phone.run("ps -A")
    assert "benchmark_model" not in ps


# --------------------------------------------------------------------------- profiles


def test_profiles_load_and_validate(tmp_path) -> None:
    names = available_profiles()
    assert {"flagship", "midrange", "lowend", "old_armv7"} <= set(names)
    for n in names:
        p = load_profile(n)
        assert p.props()["ro.farm.simulated"] == "1"
        assert p.summary().endswith("[SIMULATED]")
    old = load_profile("old_armv7")
    assert old.abis == ("armeabi-v7a", "armeabi") and not old.shell_v2 and old.sdk == 23
    assert load_profile("flagship").cpu.dotprod and not load_profile("lowend").cpu.dotprod
    import yaml

    src = load_profile("flagship").source_file
    data = yaml.safe_load(open(src, encoding="utf-8"))
    bad = dict(data, nnapi=dict(data["nnapi"], mode="sometimes"))
    with pytest.raises(ConfigError, match=r"x\.yaml: nnapi\.mode: invalid value 'sometimes'; "
                                          r"allowed: vendor, reference, missing"):
        profile_from_dict(bad, source_file="x.yaml")
    bad = dict(data, cpu=dict(data["cpu"], turbo=True))
    with pytest.raises(ConfigError, match=r"x\.yaml: cpu\.turbo: unknown key; allowed: arch"):
        profile_from_dict(bad, source_file="x.yaml")
    bad = dict(data)
    del bad["thermal"]
    with pytest.raises(ConfigError, match="x.yaml: thermal: missing required key"):
        profile_from_dict(bad, source_file="x.yaml")
    clusters = [dict(c) for c in data["cpu"]["clusters"]]
    clusters[1]["freqs_khz"] = [3, 2, 1]
    bad = dict(data, cpu=dict(data["cpu"], clusters=clusters))
    with pytest.raises(ConfigError, match=r"cpu\.clusters\[1\]\.freqs_khz: expected ascending"):
        profile_from_dict(bad, source_file="x.yaml")
    f = tmp_path / "custom.yaml"
    f.write_text(yaml.safe_dump(dict(data, name="custom")))
    assert load_profile(f).name == "custom"
    with pytest.raises(ConfigError, match="unknown simulator profile 'nope'; known: "):
        load_profile("nope")


# --------------------------------------------------------------------------- outputs


def _litert(model: bytes, data: np.ndarray, *, xnnpack: bool) -> bytes:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = Interpreter(model_content=model, experimental_op_resolver_type=kind)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], data)
    interp.invoke()
    return bytes(interp.get_tensor(interp.get_output_details()[0]["index"]).tobytes())


@pytest.fixture(scope="module")
def tiny() -> dict[str, bytes]:
    return {q: (REPO_MODELS / f"tiny_{q}.tflite").read_bytes() for q in ("fp32", "int8")}


INPUT = "--input_layer=input --input_layer_shape=1,16,16,3"
ONE = "--num_runs=1 --warmup_runs=0 --warmup_min_secs=0 --min_secs=0"


def _with_inputs(make_phone, profile: str, tiny: dict[str, bytes]  # noqa: F811
                 ) -> tuple[Phone, dict[str, np.ndarray]]:
    phone = make_phone(profile, time_scale=2000.0)
    install_benchmark_model(phone)
    x = np.random.default_rng(4).uniform(-1, 1, (1, 16, 16, 3))
    data = {"fp32": x.astype(np.float32),
            "int8": (np.clip(np.rint(x * 255 / 2), -128, 127)).astype(np.int8)}
    for q, model in tiny.items():
        push(phone, model, f"{T}/tiny_{q}.tflite")
        push(phone, data[q].tobytes(), f"{T}/in_{q}.bin")
    return phone, data


def _out(phone: Phone, q: str, flags: str) -> bytes:
    phone.run(f"rm -f {T}/o.bin")
    rc, out, err = phone.run(f"{BM} --graph={T}/tiny_{q}.tflite {ONE} {INPUT} "
                             f"--input_layer_value_files=input:{T}/in_{q}.bin "
                             f"--output_filepath={T}/o.bin {flags}", timeout=60)
    assert rc == 0, out + err
    return phone.fs.read_bytes(f"{T}/o.bin")


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_outputs_are_the_model_run_on_the_phones_inputs(make_phone,  # noqa: F811
                                                        tiny: dict[str, bytes]) -> None:
    phone, data = _with_inputs(make_phone, "flagship", tiny)
    exact = _litert(tiny["fp32"], data["fp32"], xnnpack=False)
    assert _out(phone, "fp32", "--use_xnnpack=false") == exact
    assert _out(phone, "fp32", "") == _litert(tiny["fp32"], data["fp32"], xnnpack=True)
    # NNAPI without fp16 computes float models exactly; with it (and on the GPU) in fp16
    assert _out(phone, "fp32", "--use_nnapi=true") == exact
    want = np.frombuffer(exact, np.float32)
    for flags in ("--use_gpu=true", "--use_nnapi=true --nnapi_allow_fp16=true"):
        got = np.frombuffer(_out(phone, "fp32", flags), np.float32)
        assert not np.array_equal(got, want)
        assert np.allclose(got, want, rtol=0.02, atol=1e-4)
    # a different input gives a different output: the value file is really read
    push(phone, np.zeros((1, 16, 16, 3), np.float32).tobytes(), f"{T}/in_fp32.bin")
    assert _out(phone, "fp32", "--use_xnnpack=false") != exact


def test_flagship_nnapi_garbles_int8_outputs(make_phone, tiny: dict[str, bytes]) -> None:  # noqa: F811
    phone, data = _with_inputs(make_phone, "flagship", tiny)
    exact = _litert(tiny["int8"], data["int8"], xnnpack=False)
    assert _out(phone, "int8", "--use_xnnpack=false") == exact
    bad = _out(phone, "int8", "--use_nnapi=true")
    assert _out(phone, "int8", "--use_nnapi=true") == bad  # deterministic
    real = (np.frombuffer(exact, np.int8).astype(float) + 128) / 256
    wrong = (np.frombuffer(bad, np.int8).astype(float) + 128) / 256
    assert _cos(real, wrong) < 0.97 and np.abs(real - wrong).max() > 0.2
    # the CPU reference device of NNAPI is not the buggy driver
    assert _out(phone, "int8", "--use_nnapi=true --nnapi_accelerator_name=nnapi-reference "
                               "--disable_nnapi_cpu=false") == exact
    # another phone's NNAPI (reference only) is not buggy either
    mid, mid_data = _with_inputs(make_phone, "midrange", tiny)
    assert _out(mid, "int8", "--use_nnapi=true --disable_nnapi_cpu=false") == _litert(
        tiny["int8"], mid_data["int8"], xnnpack=False)


@pytest.mark.parametrize(("args", "fragment"), [
    (f"--input_layer_value_files=input:{T}/in_fp32.bin",
     "Cannot find the corresponding input_layer name(input) in --input_layer as "),
    (f"{INPUT} --input_layer_value_files=input:{T}/in_int8.bin",
     f"The size of {T}/in_int8.bin is 768 bytes. It should be 3072 bytes."),
    (f"{INPUT} --input_layer_value_files=input:{T}/nope.bin",
     f"Failed to read the input_layer_value_file:{T}/nope.bin"),
    ("--input_layer=input,b --input_layer_shape=1,16,16,3",
     "The number of items in --input_layer_shape (1,16,16,3, with 1 items) must match"),
    ("--input_layer=input --input_layer_shape=1,16,-1,3", "Any unknown sizes in the shapes"),
    ("--input_layer=input --input_layer_shape=16,3", "Input tensor #0 should have 4 dimensions!"),
])
def test_input_flag_errors_fail_the_run(make_phone, tiny: dict[str, bytes], args: str,  # noqa: F811
                                        fragment: str) -> None:
    phone, _ = _with_inputs(make_phone, "flagship", tiny)
    rc, out, err, parsed = bench(phone, f"--graph={T}/tiny_fp32.tflite {ONE} {args} "
                                        f"--output_filepath={T}/o.bin")
    assert rc == 1 and not parsed.success
    assert fragment in err
    assert not phone.fs.exists(f"{T}/o.bin")


def test_numerics_in_profiles_are_validated() -> None:
    from pathlib import Path

    import yaml

    data = yaml.safe_load(Path(load_profile("flagship").source_file).read_text(encoding="utf-8"))
    assert load_profile("flagship").numeric_behaviour("nnapi", "int8", fp16_allowed=True) \
        == "corrupt"
    mid = load_profile("midrange")
    assert mid.numeric_behaviour("gpu", "int8", fp16_allowed=True) == "fp16"
    assert mid.numeric_behaviour("gpu", "fp32", fp16_allowed=False) == "exact"
    assert mid.numeric_behaviour("nnapi", "int8", fp16_allowed=True) == "exact"
    assert mid.numeric_behaviour("cpu", "fp32", fp16_allowed=True) == "exact"
    with pytest.raises(ConfigError, match=r"x\.yaml: numerics\.gpu\.fp32: invalid value 'wrong'"
                                          r"; allowed: exact, fp16, corrupt"):
        profile_from_dict(dict(data, numerics={"gpu": {"fp32": "wrong"}}), source_file="x.yaml")
    with pytest.raises(ConfigError, match=r"numerics\.gpu\.int4: unknown key; allowed: "):
        profile_from_dict(dict(data, numerics={"gpu": {"int4": "exact"}}), source_file="x.yaml")
    with pytest.raises(ConfigError, match=r"numerics\.npu: unknown key; allowed: cpu, gpu"):
        profile_from_dict(dict(data, numerics={"npu": {}}), source_file="x.yaml")
    with pytest.raises(ValueError, match="unknown numeric behaviour 'fuzzy'"):
        emulate_outputs(b"", [], behaviour="fuzzy", xnnpack=False, salt=b"")
