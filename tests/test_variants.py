"""Tests for farm.variants and farm.convert_worker.

Fast tests use hand-built .tflite bytes and a fake worker (no TensorFlow). Tests marked slow run
the real converter in one worker per fixture; the test process itself never imports TF (the
tiny models are built in a child process) and inspects results with LiteRT's Interpreter.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from farm.errors import ConfigError, ConversionError
from farm.models import CalibrationSpec, ModelSource, ModelVariant, Preprocess
from farm.variants import (
    TfliteInfo,
    TfliteTensor,
    VariantEvent,
    build_variants,
    detect_quantization,
    read_tflite,
    sha256_tree,
    variant_key,
)
from tests.fixtures_variants import (
    FLOAT16,
    INT8,
    INT16,
    FakeWorker,
    TinyModels,
    build_tflite,
    fake_worker,
    load_meta,
    no_worker,
    tiny_models,
)

__all__ = ["fake_worker", "tiny_models"]  # fixtures used by name below

ROOT = Path(__file__).resolve().parents[1]
CAL_IMAGES = ROOT / "tests" / "data" / "calibration" / "images"
ALL = ["fp32", "fp16", "dynamic", "int8", "int16x8"]


def _events() -> tuple[list[VariantEvent], Callable[[VariantEvent], None]]:
    seen: list[VariantEvent] = []
    return seen, seen.append


def _kinds(events: list[VariantEvent]) -> list[str]:
    return [e.kind for e in events]


# ---------------------------------------------------------------------------------------------
# The .tflite reader and quantization detection (pure)


def test_read_tflite_reads_hand_built_flatbuffer() -> None:
    info = read_tflite(build_tflite(weight_type=INT8, weight_scale=0.25, version=3))
    assert info.version == 3 and info.num_subgraphs == 1
    assert [t.name for t in info.tensors] == ["input", "weights", "output"]
    assert [t.dtype for t in info.tensors] == ["float32", "int8", "float32"]
    assert [t.shape for t in info.tensors] == [(1, 4), (4, 4), (1, 4)]
    assert [t.is_constant for t in info.tensors] == [False, True, False]
    assert info.tensors[1].scale == 0.25 and info.tensors[0].scale is None
    assert info.inputs == (0,) and info.outputs == (2,)
    assert info.input_dtypes == ("float32",) and info.output_dtypes == ("float32",)


@pytest.mark.parametrize(
    ("weights", "activations", "expected"),
    [
        (0, 0, "fp32"),
        (FLOAT16, 0, "fp16"),
        (INT8, 0, "dynamic"),
        (INT8, INT8, "int8"),
        (INT8, INT16, "int16x8"),
    ],
)
def test_detect_quantization_from_tensor_types(weights: int, activations: int,
                                               expected: str) -> None:
    info = read_tflite(build_tflite(weight_type=weights, activation_type=activations))
    assert detect_quantization(info) == expected


def test_detect_int8_with_float_io_by_activation_majority() -> None:
    def t(dtype: str, const: bool = False) -> TfliteTensor:
        return TfliteTensor(name="t", dtype=dtype, shape=(1,), is_constant=const)

    tensors = (t("float32"), t("int8"), t("int8"), t("int8"), t("int8", True), t("float32"))
    info = TfliteInfo(version=3, num_subgraphs=1, tensors=tensors, inputs=(0,), outputs=(5,))
    assert detect_quantization(info) == "int8"


@pytest.mark.parametrize("data", [b"", b"12345678", b"\x10\x00\x00\x00TFL3\xff\xff"])
def test_read_tflite_rejects_garbage(data: bytes) -> None:
    with pytest.raises(ConversionError):
        read_tflite(data)


def test_read_tflite_rejects_truncated_model() -> None:
    data = build_tflite()
    with pytest.raises(ConversionError):
        read_tflite(data[: len(data) // 2])


# ---------------------------------------------------------------------------------------------
# Hashes and keys


def test_tree_hash_is_content_and_path_based(tmp_path: Path) -> None:
    a = tmp_path / "a"
    (a / "variables").mkdir(parents=True)
    (a / "saved_model.pb").write_bytes(b"graph")
    (a / "variables" / "v.data").write_bytes(b"weights")
    first = sha256_tree(a)
    b = tmp_path / "b"
    (b / "variables").mkdir(parents=True)
    (b / "variables" / "v.data").write_bytes(b"weights")  # other creation order, same content
    (b / "saved_model.pb").write_bytes(b"graph")
    assert sha256_tree(b) == first
    (b / "variables" / "v.data").write_bytes(b"weightz")
    assert sha256_tree(b) != first
    (b / "variables" / "v.data").rename(b / "variables" / "w.data")
    (b / "variables" / "w.data").write_bytes(b"weights")
    assert sha256_tree(b) != first


def test_variant_key_covers_every_input() -> None:
    src = ModelSource("m", "keras_file", path="m.keras")
    base = variant_key(src, "a" * 64, "int8", "2.21.0", "c" * 64)
    assert base == variant_key(src, "a" * 64, "int8", "2.21.0", "c" * 64)
    assert base != variant_key(src, "b" * 64, "int8", "2.21.0", "c" * 64)
    assert base != variant_key(src, "a" * 64, "int16x8", "2.21.0", "c" * 64)
    assert base != variant_key(src, "a" * 64, "int8", "2.22.0", "c" * 64)
    assert base != variant_key(src, "a" * 64, "int8", "2.21.0", "d" * 64)
    # the source's name is not content: renaming a model keeps its cache
    renamed = ModelSource("other", "keras_file", path="elsewhere.keras")
    assert base == variant_key(renamed, "a" * 64, "int8", "2.21.0", "c" * 64)
    # calibration does not matter to quantizations that do not calibrate
    assert variant_key(src, "a" * 64, "fp16", "2.21.0", "c" * 64) == \
        variant_key(src, "a" * 64, "fp16", "2.21.0", None)


# ---------------------------------------------------------------------------------------------
# Decisions made without a worker


def test_int8_without_calibration_fails_clearly_and_never_calibrates_randomly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_worker(monkeypatch)
    model = tmp_path / "m.keras"
    model.write_bytes(b"unused: no conversion happens")
    seen, emit = _events()
    out = build_variants([ModelSource("m", "keras_file", path=str(model))], ["int8", "int16x8"],
                         calibration=None, cache_dir=tmp_path / "cache", on_event=emit)
    assert [v.status for v in out] == ["failed", "failed"]
    for v in out:
        assert "needs calibration data and none was given" in v.error
        assert "kind 'random'" in v.error and v.calibration == ""
    assert "worker_started" not in _kinds(seen)


def test_missing_sources_fail_without_a_worker(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    no_worker(monkeypatch)
    sources = [
        ModelSource("gone", "keras_file", path=str(tmp_path / "gone.keras")),
        ModelSource("notsm", "saved_model", path=str(tmp_path)),
        ModelSource("noarch", "keras_app", input_shape=(8, 8, 3)),
    ]
    out = build_variants(sources, ["fp32"], calibration=None, cache_dir=tmp_path / "c")
    assert [v.status for v in out] == ["failed"] * 3
    assert "gone.keras: file not found" in out[0].error
    assert "not a SavedModel directory" in out[1].error
    assert "keras_app needs an arch" in out[2].error


def test_unknown_quantization_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="quantization 'int4': unknown; allowed: fp32, fp16"):
        build_variants([], ["fp32", "int4"], calibration=None, cache_dir=tmp_path)


def test_bad_calibration_fails_only_calibrated_variants(tmp_path: Path,
                                                        fake_worker: FakeWorker) -> None:
    model = tmp_path / "m.keras"
    model.write_bytes(b"fake")
    cal = CalibrationSpec(kind="images", path=str(tmp_path / "no_such_folder"))
    out = build_variants([ModelSource("m", "keras_file", path=str(model))], ["fp32", "int8"],
                         calibration=cal, cache_dir=tmp_path / "c")
    assert out[0].status == "ok"
    assert out[1].status == "failed"
    assert "calibration data" in out[1].error and "no_such_folder" in out[1].error


def test_tflite_source_is_used_as_is_and_cached(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    no_worker(monkeypatch)
    model = tmp_path / "given.tflite"
    model.write_bytes(build_tflite(weight_type=INT8))  # a dynamic-range model
    src = ModelSource("given", "tflite", path=str(model))
    out = build_variants([src], ["fp32", "dynamic"], calibration=None, cache_dir=tmp_path / "c")
    fp32, dynamic = out
    assert fp32.status == "failed"
    assert "its tensors are dynamic; cannot re-quantize a .tflite to fp32" in fp32.error
    assert dynamic.status == "ok" and not dynamic.cached
    assert Path(dynamic.path) == tmp_path / "c" / f"{dynamic.sha256}.tflite"
    assert Path(dynamic.path).read_bytes() == model.read_bytes()
    assert dynamic.source_sha256 == dynamic.sha256 and dynamic.converter_version == ""
    again = build_variants([src], ["dynamic"], calibration=None, cache_dir=tmp_path / "c")
    assert again[0].cached and again[0].sha256 == dynamic.sha256
    only_int8 = build_variants([src], ["int8"], calibration=None, cache_dir=tmp_path / "c")
    assert "or add 'dynamic' to the quantizations" in only_int8[0].error


def test_damaged_tflite_source_is_a_failed_variant(tmp_path: Path) -> None:
    model = tmp_path / "broken.tflite"
    model.write_bytes(b"definitely not a flatbuffer")
    out = build_variants([ModelSource("b", "tflite", path=str(model))], ["fp32"],
                         calibration=None, cache_dir=tmp_path / "c")
    assert out[0].status == "failed" and "TFL3" in out[0].error


# ---------------------------------------------------------------------------------------------
# The worker protocol, with a fake worker (crashes and timeouts)


def _fake_source(tmp_path: Path, name: str) -> ModelSource:
    path = tmp_path / f"{name}.keras"
    path.write_bytes(name.encode())  # distinct content per source
    return ModelSource(name, "keras_file", path=str(path))


def test_worker_crash_fails_one_job_and_the_rest_continue(tmp_path: Path,
                                                          fake_worker: FakeWorker) -> None:
    sources = [_fake_source(tmp_path, n) for n in ("good1", "crashy", "good2")]
    seen, emit = _events()
    out = build_variants(sources, ["fp32", "fp16"], calibration=None,
                         cache_dir=tmp_path / "cache", on_event=emit)
    by = {(v.model, v.quantization): v for v in out}
    assert [(v.model, v.quantization) for v in out] == [
        (s.name, q) for s in sources for q in ("fp32", "fp16")
    ]
    # "crashy" crashes in its first job; its second job runs in a fresh worker and crashes too.
    for q in ("fp32", "fp16"):
        err = by[("crashy", q)].error
        assert by[("crashy", q)].status == "failed"
        assert "converter process exited with code 3 while converting crashy/" + q in err
        assert "fake converter segfault in " + q in err  # the stderr tail
    for name in ("good1", "good2"):
        for q in ("fp32", "fp16"):
            v = by[(name, q)]
            assert v.status == "ok" and v.converter_version == "9.9.9"
            assert Path(v.path).is_file()
    assert fake_worker.starts() == 3
    assert _kinds(seen).count("worker_lost") == 2
    assert not list((tmp_path / "cache").glob(".convert-*")), "work dir left behind"


def test_worker_crash_while_loading_fails_that_source_only(tmp_path: Path,
                                                          fake_worker: FakeWorker) -> None:
    sources = [_fake_source(tmp_path, "loadcrash"), _fake_source(tmp_path, "fine")]
    out = build_variants(sources, ["fp32", "fp16", "dynamic"], calibration=None,
                         cache_dir=tmp_path / "cache")
    assert [v.status for v in out] == ["failed"] * 3 + ["ok"] * 3
    assert all("exited with code 4 while loading loadcrash/fp32" in v.error for v in out[:3])
    assert all("fake loader fell over" in v.error for v in out[:3])
    assert fake_worker.starts() == 2  # one crash took the whole source, one worker for the rest


def test_worker_that_never_starts_fails_every_job_once(
        tmp_path: Path, fake_worker: FakeWorker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_BROKEN", "1")
    sources = [_fake_source(tmp_path, n) for n in ("a", "b")]
    out = build_variants(sources, ["fp32", "fp16"], calibration=None, cache_dir=tmp_path / "c")
    assert [v.status for v in out] == ["failed"] * 4
    for v in out:
        assert "converter process exited with code 1 before it was ready" in v.error
        assert "No module named 'tensorflow'" in v.error
    assert fake_worker.starts() == 1


def test_worker_timeout_is_a_failed_variant(tmp_path: Path, fake_worker: FakeWorker) -> None:
    sources = [_fake_source(tmp_path, "hang"), _fake_source(tmp_path, "after")]
    out = build_variants(sources, ["fp32"], calibration=None, cache_dir=tmp_path / "cache",
                         timeout_s=1.5)
    assert out[0].status == "failed"
    assert "timed out after 1.5 s and was killed while converting hang/fp32" in out[0].error
    assert out[1].status == "ok"


def test_converted_variants_are_cached_by_content(tmp_path: Path,
                                                  fake_worker: FakeWorker,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    src = _fake_source(tmp_path, "m")
    first = build_variants([src], ["fp32"], calibration=None, cache_dir=tmp_path / "c")
    assert first[0].status == "ok" and not first[0].cached
    assert fake_worker.starts() == 1
    meta = load_meta(Path(first[0].path))
    assert meta["sha256"] == first[0].sha256 and meta["quantization"] == "fp32"
    # the cache key used the worker's TF version, so this install's version must match it
    monkeypatch.setattr("farm.variants.installed_converter_version", lambda: "9.9.9")
    renamed = ModelSource("renamed", "keras_file", path=src.path)
    second = build_variants([renamed], ["fp32"], calibration=None, cache_dir=tmp_path / "c")
    assert second[0].cached and second[0].model == "renamed"
    assert second[0].sha256 == first[0].sha256 and fake_worker.starts() == 1
    # a damaged cache entry is converted again, not served
    Path(first[0].path).write_bytes(b"damaged")
    third = build_variants([src], ["fp32"], calibration=None, cache_dir=tmp_path / "c")
    assert not third[0].cached and fake_worker.starts() == 2
    assert Path(third[0].path).read_bytes() == build_tflite()


def test_worker_messages_keep_the_type_and_say_repeats_once() -> None:
    from farm.convert_worker import _message

    class ConverterError(Exception):
        pass

    op = "Quantization to 16x8-bit not yet supported for op: 'HARD_SWISH'."
    text = _message(ConverterError("\n".join([op] * 3 + ["done"])))
    assert text == f"ConverterError: {op}\n{op} (x2)\ndone"
    assert _message(ConversionError("plain words")) == "plain words"
    assert _message(ValueError("x" * 10000)).endswith("... [truncated]")


def test_parent_modules_do_not_import_tensorflow() -> None:
    code = (
        "import sys, farm.variants, farm.calibration, farm.convert_worker; "
        "sys.exit(1 if {'tensorflow', 'keras'} & set(sys.modules) else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60).returncode == 0


# ---------------------------------------------------------------------------------------------
# Real conversions (one worker per fixture)


def _interpreter(path: str):  # type: ignore[no-untyped-def]
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=path)
    it.allocate_tensors()
    return it


def _run(path: str, batch: np.ndarray) -> np.ndarray:
    it = _interpreter(path)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    results = []
    for sample in batch:
        x = sample[None]
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            x = np.clip(np.round(x / scale + zero), -128, 127).astype(inp["dtype"])
        it.set_tensor(inp["index"], x)
        it.invoke()
        results.append(it.get_tensor(out["index"]).astype(np.float32).copy())
    return np.concatenate(results)


IMAGES_CAL = CalibrationSpec(kind="images", path=str(CAL_IMAGES), num_samples=8,
                             preprocess=Preprocess(resize="bilinear"))


@pytest.fixture(scope="module")
def converted(tiny_models: TinyModels,
              tmp_path_factory: pytest.TempPathFactory) -> tuple[list[ModelVariant],
                                                                 list[VariantEvent], Path]:
    cache = tmp_path_factory.mktemp("variant_cache")
    sources = [
        ModelSource("corrupt", "keras_file", path=str(tiny_models.corrupt_keras)),
        ModelSource("tiny_sm", "saved_model", path=str(tiny_models.saved_model)),
        ModelSource("det", "saved_model", path=str(tiny_models.unconvertible)),
        ModelSource("tiny_keras", "keras_file", path=str(tiny_models.keras_file)),
    ]
    seen, emit = _events()
    out = build_variants(sources, ALL, calibration=IMAGES_CAL, cache_dir=cache, on_event=emit)
    return out, seen, cache


def _pick(variants: list[ModelVariant], model: str) -> dict[str, ModelVariant]:
    return {v.quantization: v for v in variants if v.model == model}


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny_sm", "tiny_keras"])
def test_all_five_variants_have_the_promised_tensor_types(
        converted: tuple[list[ModelVariant], list[VariantEvent], Path], model: str) -> None:
    variants, events, _ = converted
    got = _pick(variants, model)
    assert sorted(got) == sorted(ALL)
    for q, v in got.items():
        assert v.status == "ok", v.error
        data = Path(v.path).read_bytes()
        assert data[4:8] == b"TFL3" and len(data) == v.size_bytes
        assert v.converter_version and v.source_sha256 and not v.cached
        assert v.calibration == (f"images:{CAL_IMAGES}" if q in ("int8", "int16x8") else "")
        it = _interpreter(v.path)
        details = it.get_tensor_details()
        ours = read_tflite(data).tensors
        # our flatbuffer reader agrees with LiteRT about every tensor of the file (LiteRT may
        # add nameless scratch tensors after them when it allocates)
        assert [(t["name"], np.dtype(t["dtype"]).name) for t in details[:len(ours)]] == \
            [(t.name, t.dtype) for t in ours]
        dtypes = {np.dtype(t["dtype"]).name for t in details}
        inp = np.dtype(it.get_input_details()[0]["dtype"]).name
        out = np.dtype(it.get_output_details()[0]["dtype"]).name
        if q == "fp32":
            assert dtypes <= {"float32", "int32"} and inp == out == "float32"
        elif q == "fp16":
            assert "float16" in dtypes and inp == "float32"
        elif q == "dynamic":
            assert "int8" in dtypes and inp == out == "float32"
        elif q == "int8":
            assert inp == out == "int8"
        else:
            assert "int16" in dtypes and "int8" in dtypes and inp == "float32"
        assert detect_quantization(read_tflite(data)) == q
    assert "worker_started" in _kinds(events)


@pytest.mark.slow
def test_converted_models_run_and_agree_with_fp32(
        converted: tuple[list[ModelVariant], list[VariantEvent], Path]) -> None:
    got = _pick(converted[0], "tiny_sm")
    batch = np.random.default_rng(3).uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    reference = _run(got["fp32"].path, batch)
    assert reference.shape == (4, 10)
    for q in ("fp16", "dynamic", "int16x8"):
        np.testing.assert_allclose(_run(got[q].path, batch), reference, atol=0.05)
    int8 = _interpreter(got["int8"].path).get_output_details()[0]
    scale, zero = int8["quantization"]
    dequantized = (_run(got["int8"].path, batch) - zero) * scale
    np.testing.assert_allclose(dequantized, reference, atol=0.1)


@pytest.mark.slow
def test_unconvertible_models_fail_with_the_converters_message(
        converted: tuple[list[ModelVariant], list[VariantEvent], Path]) -> None:
    variants = converted[0]
    corrupt = _pick(variants, "corrupt")
    assert all(v.status == "failed" for v in corrupt.values())
    assert "loading" in corrupt["fp32"].error and "corrupt.keras" in corrupt["fp32"].error
    assert ".keras` zip file" in corrupt["fp32"].error  # Keras' own words
    det = _pick(variants, "det")
    assert det["fp32"].status == "failed"
    assert "ConverterError" in det["fp32"].error and "MatrixDeterminant" in det["fp32"].error
    # a model whose input is not an image cannot take image calibration: said, not guessed
    assert det["int8"].status == "failed" and "(H, W, C)" in det["int8"].error
    # ... and the sources after them converted (checked in detail above)
    assert all(v.status == "ok" for v in _pick(variants, "tiny_keras").values())


@pytest.mark.slow
def test_second_call_is_fully_cached_without_a_worker(
        converted: tuple[list[ModelVariant], list[VariantEvent], Path], tiny_models: TinyModels,
        monkeypatch: pytest.MonkeyPatch) -> None:
    first, _, cache = converted
    no_worker(monkeypatch)
    sources = [
        ModelSource("tiny_sm", "saved_model", path=str(tiny_models.saved_model)),
        ModelSource("tiny_keras", "keras_file", path=str(tiny_models.keras_file)),
    ]
    seen, emit = _events()
    again = build_variants(sources, ALL, calibration=IMAGES_CAL, cache_dir=cache, on_event=emit)
    assert all(v.status == "ok" and v.cached for v in again)
    assert set(_kinds(seen)) == {"cached"}
    before = {(v.model, v.quantization): v for v in first}
    for v in again:
        old = before[(v.model, v.quantization)]
        assert (v.path, v.sha256, v.converter_version) == (old.path, old.sha256,
                                                           old.converter_version)
        assert v.conversion_s == old.conversion_s  # the original cost, from the metadata
    # other calibration content -> the calibrated variants are not cache hits any more
    other = CalibrationSpec(kind="random", num_samples=4, seed=1)
    with pytest.raises(AssertionError, match="a conversion worker was started"):
        build_variants(sources[:1], ["int8"], calibration=other, cache_dir=cache)


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelVariant]:
    source = ModelSource(
        "mnv2", "keras_app", arch="MobileNetV2", input_shape=(96, 96, 3), seed=1,
        options=(("alpha", 0.35), ("include_top", False), ("pooling", "avg")),
    )
    cal = CalibrationSpec(kind="random", num_samples=8, seed=2)
    out = build_variants([source], ["fp32", "int16x8"], calibration=cal,
                         cache_dir=tmp_path_factory.mktemp("mnv2_cache"))
    return {v.quantization: v for v in out}


@pytest.mark.slow
def test_keras_mobilenetv2_int16x8_is_not_degenerate(mobilenet: dict[str, ModelVariant]) -> None:
    fp32, int16 = mobilenet["fp32"], mobilenet["int16x8"]
    assert fp32.status == "ok", fp32.error
    assert int16.status == "ok", int16.error
    assert int16.calibration == "random (explicit)"
    details = load_meta(Path(fp32.path))["details"]
    assert isinstance(details, dict)
    # after the re-init the 1280 pooled features have a usable scale (Keras' default: ~1e-11)
    assert details["batchnorm_layers"] == 52 and details["init_output_std"][0] > 0.05
    batch = np.random.default_rng(9).uniform(-1, 1, (4, 96, 96, 3)).astype(np.float32)
    ref, q = _run(fp32.path, batch), _run(int16.path, batch)
    assert ref.shape == (4, 1280)
    assert ref.std() > 0.05 and q.std() > 0.05
    # A randomly initialised deep net amplifies small perturbations (here input noise of 1e-3
    # changes fp32 outputs by about 5%), so int8 weight rounding leaves a correlation of about
    # 0.9, not 0.99; a degenerate model would give none.
    assert np.corrcoef(ref.ravel(), q.ravel())[0, 1] > 0.8
    # every int16 activation can represent values far above 1e-11
    ranges = [t["quantization"][0] * 32767 for t in _interpreter(int16.path).get_tensor_details()
              if np.dtype(t["dtype"]) == np.int16 and t["quantization"][0] > 0]
    assert len(ranges) > 40 and float(np.median(ranges)) > 0.1 and min(ranges) > 1e-6
