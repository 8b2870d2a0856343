"""The conversion worker: `python -m farm.convert_worker`, the only farm process that imports TF.

Protocol (farm.variants drives it): one JSON document on stdin,
`{"protocol": 1, "jobs": [{"id", "source", "source_sha256", "quantization", "calibration",
"out"}, ...]}`; JSON lines on stdout: `hello` (with `converter_version`), then per job
`loading` (before a source is read), `start` (before converting) and `done` (`status` "ok" or
"failed", `error`, `conversion_s`, `details`), then `bye`. Anything else TensorFlow or Keras
writes goes to stderr: file descriptor 1 is pointed at stderr before TF is imported, and the
protocol uses a private duplicate of the original stdout.

I/O: reads model sources and calibration data, writes each .tflite to the job's `out` path (the
parent moves it into the cache) and exports Keras models to a scratch SavedModel next to it.
Never touches a device. One job failing (an exception from a loader or the converter) is
reported and the next job runs; the model of one source is kept while its jobs run, then
dropped.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from farm.calibration import load_calibration
from farm.errors import ConversionError
from farm.models import CalibrationSpec, ModelSource

PROTOCOL_VERSION = 1
# Random batch used to set BatchNormalization statistics of built-in Keras architectures.
INIT_BATCH = 8
_ERROR_CHARS = 4000


@dataclass
class _Loaded:
    """A source ready to convert: how to make a fresh converter, and the model's input shape."""

    make_converter: Callable[[], Any]
    # The input shape without batch, None when not a single input; a call, because reading it
    # for a SavedModel means loading the model, done only when calibration needs it.
    input_shape: Callable[[], tuple[int | None, ...] | None]
    details: dict[str, Any] = field(default_factory=dict)


def _protocol_stream() -> IO[str]:
    """A private duplicate of stdout for protocol lines; fd 1 and sys.stdout then go to stderr."""
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(fd, "w", encoding="utf-8", buffering=1)


def _message(exc: BaseException) -> str:
    """The exception as one readable message: type name kept, repeated lines said once."""
    # Our own ConversionError messages stand alone; anything else keeps its type name, which
    # is part of what the converter or loader is saying (ConverterError, ValueError, ...).
    text = str(exc) if isinstance(exc, ConversionError) else f"{type(exc).__name__}: {exc}"
    # The converter repeats a line per offending op ("not yet supported for op: 'HARD_SWISH'").
    counts: dict[str, int] = {}
    for line in text.strip().splitlines():
        counts[line] = counts.get(line, 0) + 1
    text = "\n".join(f"{line} (x{n})" if n > 1 else line for line, n in counts.items())
    if len(text) > _ERROR_CHARS:
        text = text[:_ERROR_CHARS] + " ... [truncated]"
    return text


def _keras_input_shape(model: Any) -> tuple[int | None, ...] | None:
    inputs = list(getattr(model, "inputs", None) or [])
    if len(inputs) != 1:
        return None
    return tuple(None if d is None else int(d) for d in inputs[0].shape[1:])


def _all_layers(model: Any) -> Iterator[Any]:
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)
        else:
            yield layer


def nondegenerate_init(keras: Any, model: Any, seed: int,
                       input_shape: tuple[int, ...]) -> dict[str, Any]:
    """Give a `weights=None` Keras model weights whose activations keep a usable scale.

    Keras' default init leaves BatchNormalization at mean 0 / variance 1, so in inference mode
    nothing renormalises and activations shrink layer after layer (about 1e-11 at the end of
    MobileNetV2), which breaks int16x8 calibration. So: every kernel gets a seeded He-normal
    re-init (variance 2/fan_in, fan_in per output channel, also for depthwise kernels), biases
    are zeroed, and then one training-mode pass over a seeded random batch with BN momentum 0
    sets each BN layer's moving mean/variance to the statistics of its actual input, so in
    inference mode every BN output has about unit variance. Dropout is off during that pass.
    """
    rng = np.random.default_rng(seed)
    layers = list(_all_layers(model))
    for layer in layers:
        depthwise = "Depthwise" in type(layer).__name__
        for w in layer.weights:
            name = str(w.name).rsplit("/", 1)[-1]
            shape = tuple(int(d) for d in w.shape)
            if name in ("kernel", "depthwise_kernel", "pointwise_kernel") and shape:
                if depthwise or name == "depthwise_kernel":
                    fan_in = math.prod(shape[:-2])  # (kh, kw, in, multiplier): one input channel
                else:
                    fan_in = math.prod(shape[:-1])
                std = math.sqrt(2.0 / max(fan_in, 1))
                w.assign((rng.standard_normal(shape) * std).astype(np.float32))
            elif name == "bias":
                w.assign(np.zeros(shape, np.float32))
    batch = rng.uniform(-1.0, 1.0, size=(INIT_BATCH, *input_shape)).astype(np.float32)
    norms = [ly for ly in layers if type(ly).__name__ == "BatchNormalization"]
    drops = [ly for ly in layers if "Dropout" in type(ly).__name__ and hasattr(ly, "rate")]
    saved = [(ly, "momentum", ly.momentum) for ly in norms] + [
        (ly, "rate", ly.rate) for ly in drops
    ]
    try:
        for layer, attr, _ in saved:
            setattr(layer, attr, 0.0)
        model(batch, training=True)
    finally:
        for layer, attr, value in saved:
            setattr(layer, attr, value)
    outputs = model(batch, training=False)
    outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
    stds = [float(np.std(np.asarray(o))) for o in outputs]
    return {"init": "he_normal+bn_stats", "init_batch": INIT_BATCH,
            "batchnorm_layers": len(norms), "init_output_std": stds}


def build_keras_app(keras: Any, source: ModelSource) -> tuple[Any, dict[str, Any]]:
    """Build a keras.applications architecture offline (weights=None), seeded, re-initialised."""
    arch = source.arch.removeprefix("keras:")
    fn = getattr(keras.applications, arch, None)
    if not arch[:1].isupper() or not callable(fn):
        known = sorted(n for n in dir(keras.applications) if n[:1].isupper())
        raise ConversionError(f"unknown Keras architecture {arch!r}; known: {', '.join(known)}")
    kwargs = dict(source.options)
    if kwargs.pop("weights", None) is not None:
        raise ConversionError("keras_app models are built offline with weights=None; "
                              "for trained weights save a .keras file or a SavedModel")
    if "input_shape" in kwargs:
        raise ConversionError("give input_shape as the model's input_shape, not in options")
    shape = tuple(int(d) for d in source.input_shape)
    keras.utils.set_random_seed(source.seed)
    model = fn(weights=None, input_shape=shape, **kwargs)
    details = nondegenerate_init(keras, model, source.seed, shape)
    return model, details


def source_problem(source: ModelSource) -> str:
    """Why a file source cannot be loaded at all ("" if it can be tried): missing, or of the
    wrong type. The file may have changed since the sweep was validated; checking here gives
    one plain sentence instead of a loader's stack of errors. Corrupt content is left to the
    loader, whose own message says what is wrong with it."""
    if source.kind not in ("saved_model", "keras_file"):
        return ""
    path = Path(source.path)
    try:
        if source.kind == "saved_model":
            if not path.is_dir():
                return f"{path}: SavedModel directory not found"
            if not any((path / n).is_file() for n in ("saved_model.pb", "saved_model.pbtxt")):
                return f"{path}: not a SavedModel directory (no saved_model.pb)"
            return ""
        if not path.exists():
            return f"{path}: file not found"
        if not path.is_file():
            return f"{path}: not a regular file"
    except OSError as e:
        return f"{path}: cannot read: {e.strerror or e}"
    return ""


def _load(source: ModelSource, scratch: Path) -> _Loaded:
    """Read or build a source. Keras models are exported to a SavedModel in `scratch` once, so
    each quantization converts from it (from_keras_model would export again for every one)."""
    problem = source_problem(source)
    if problem:
        raise ConversionError(problem)
    import keras  # noqa: I001 - TF and Keras are imported here, in the worker only
    import tensorflow as tf

    if source.kind == "saved_model":
        path = source.path

        @functools.cache
        def saved_model_shape() -> tuple[int | None, ...] | None:
            loaded = tf.saved_model.load(path)
            sig = loaded.signatures.get("serving_default")
            if sig is None:
                return None
            specs = list(sig.structured_input_signature[1].values())
            if len(specs) != 1:
                return None
            return tuple(None if d is None else int(d) for d in specs[0].shape[1:])

        return _Loaded(lambda: tf.lite.TFLiteConverter.from_saved_model(path), saved_model_shape)
    if source.kind == "keras_file":
        model = keras.models.load_model(source.path, compile=False)
        details: dict[str, Any] = {}
    elif source.kind == "keras_app":
        model, details = build_keras_app(keras, source)
    else:
        raise ConversionError(f"source kind {source.kind!r} is not converted")
    shape = _keras_input_shape(model)
    exported = str(scratch / "saved_model")
    model.export(exported, format="tf_saved_model", verbose=False)
    return _Loaded(lambda: tf.lite.TFLiteConverter.from_saved_model(exported), lambda: shape,
                   details)


def _input_shape(loaded: _Loaded, source: ModelSource) -> tuple[int, ...]:
    shape = loaded.input_shape()
    if shape is None:
        raise ConversionError("calibration supports single-input models only")
    if any(d is None for d in shape):
        given = tuple(source.input_shape)
        if len(given) != len(shape):
            raise ConversionError(
                f"model input shape {shape} has unknown dims; set the model's input_shape "
                f"(without batch) to calibrate it"
            )
        shape = tuple(g if d is None else d for d, g in zip(shape, given, strict=True))
    return tuple(int(d) for d in shape)  # type: ignore[arg-type]


def convert(tf: Any, loaded: _Loaded, quantization: str,
            calibration: np.ndarray | None) -> bytes:
    """Run the TFLite converter for one quantization; calibration is (N, ...) float32."""
    converter = loaded.make_converter()
    if quantization != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantization in ("int8", "int16x8"):
        if calibration is None:
            raise ConversionError(f"{quantization} needs calibration data")
        data = calibration

        def representative() -> Iterator[list[np.ndarray]]:
            for i in range(len(data)):
                yield [data[i:i + 1]]

        converter.representative_dataset = representative
        if quantization == "int8":
            # Full integer: every op int8 (conversion fails rather than falling back to float),
            # and int8 input/output as an integer-only accelerator expects.
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        else:
            # 16-bit activations, 8-bit weights; input/output stay float32.
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            ]
    elif quantization not in ("fp32", "dynamic"):
        raise ConversionError(f"unknown quantization {quantization!r}")
    return bytes(converter.convert())


def run(jobs: list[dict[str, Any]], send: Callable[[dict[str, Any]], None]) -> None:
    """Convert every job in order, reporting each; one source's model is loaded once."""
    import tensorflow as tf

    send({"event": "hello", "protocol": PROTOCOL_VERSION, "converter_version": tf.__version__,
          "pid": os.getpid()})
    current_key: tuple[str, str] | None = None
    loaded: _Loaded | BaseException | None = None
    scratch: Path | None = None
    batches: dict[tuple[str, tuple[int, ...]], np.ndarray] = {}
    for job in jobs:
        source = ModelSource.from_dict(job["source"])
        key = (source.name, str(job["source_sha256"]))
        result: dict[str, Any] = {"event": "done", "id": job["id"]}
        t0 = time.perf_counter()
        try:
            if key != current_key:
                current_key, loaded = key, None  # drop the previous model before loading
                if scratch is not None:
                    shutil.rmtree(scratch, ignore_errors=True)
                scratch = Path(tempfile.mkdtemp(prefix="load-", dir=Path(job["out"]).parent))
                send({"event": "loading", "id": job["id"]})
                try:
                    loaded = _load(source, scratch)
                except Exception as e:  # noqa: BLE001 - any loader error is this source's failure
                    loaded = e
            if isinstance(loaded, BaseException):
                raise ConversionError(f"loading {source.path or source.arch} failed: "
                                      f"{_message(loaded)}")
            assert loaded is not None
            send({"event": "start", "id": job["id"]})
            calibration = None
            if job.get("calibration"):
                # int8 and int16x8 of one model share the batch: read the images once
                cal_key = (json.dumps(job["calibration"], sort_keys=True),
                           _input_shape(loaded, source))
                if cal_key not in batches:
                    batches.clear()
                    spec = CalibrationSpec.from_dict(job["calibration"])
                    batches[cal_key] = load_calibration(spec, cal_key[1])
                calibration = batches[cal_key]
            t1 = time.perf_counter()
            blob = convert(tf, loaded, str(job["quantization"]), calibration)
            result["conversion_s"] = round(time.perf_counter() - t1, 3)
            with open(job["out"], "wb") as f:
                f.write(blob)
            result.update(status="ok", details=loaded.details)
        except Exception as e:  # noqa: BLE001 - the converter raises many types; report, go on
            result.update(status="failed", error=_message(e),
                          conversion_s=round(time.perf_counter() - t0, 3))
        send(result)
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)
    send({"event": "bye"})


def main() -> int:
    """Entry point: read the job document from stdin, stream results to the protocol stream."""
    proto = _protocol_stream()

    def send(msg: dict[str, Any]) -> None:
        proto.write(json.dumps(msg) + "\n")
        proto.flush()

    try:
        doc = json.load(sys.stdin)
        if doc.get("protocol") != PROTOCOL_VERSION:
            raise ValueError(f"protocol {doc.get('protocol')!r}, expected {PROTOCOL_VERSION}")
        jobs = list(doc["jobs"])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        sys.stderr.write(f"convert_worker: bad job document: {e}\n")
        return 2
    run(jobs, send)
    return 0


if __name__ == "__main__":
    sys.exit(main())
