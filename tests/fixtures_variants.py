"""Fixtures for tests/test_variants.py: tiny models, hand-built .tflite bytes, fake workers.

The tiny models are built by a child Python process, so TensorFlow is never imported into the
test process. Import what you need explicitly:
`from tests.fixtures_variants import tiny_models, build_tflite, ...`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import flatbuffers
import pytest

import farm.variants

# TensorType codes of the .tflite schema.
FLOAT32, FLOAT16, INT16, INT8, INT64 = 0, 1, 7, 9, 4

_BUILD_SCRIPT = textwrap.dedent('''
    import sys
    from pathlib import Path

    import keras
    import tensorflow as tf

    out = Path(sys.argv[1])
    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(16, 3, activation="relu")(inp)
    # 3*3*16*32 = 4608 weights: over the 1024-element floor of dynamic-range quantization,
    # so the dynamic variant really has int8 weights.
    x = keras.layers.Conv2D(32, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    y = keras.layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inp, y)
    model.save(out / "tiny.keras")
    model.export(str(out / "tiny_saved_model"))

    class Det(tf.Module):
        # MatrixDeterminant has no TFLite builtin: the converter refuses it.
        @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
        def serve(self, x):
            return {"y": tf.linalg.det(tf.reshape(x, [1, 2, 2]))}

    det = Det()
    tf.saved_model.save(det, str(out / "unconvertible"), signatures={"serving_default": det.serve})
    (out / "corrupt.keras").write_bytes(b"this is not a zip archive")
''')


@dataclass(frozen=True)
class TinyModels:
    """Paths of the models the slow tests convert."""

    saved_model: Path
    keras_file: Path
    unconvertible: Path  # a SavedModel the converter rejects (MatrixDeterminant)
    corrupt_keras: Path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    """A 32x32x3 conv+dense model as SavedModel and .keras, plus two that cannot convert."""
    out = tmp_path_factory.mktemp("tiny_models")
    proc = subprocess.run(
        [sys.executable, "-c", _BUILD_SCRIPT, str(out)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return TinyModels(out / "tiny_saved_model", out / "tiny.keras", out / "unconvertible",
                      out / "corrupt.keras")


def build_tflite(weight_type: int = FLOAT32, activation_type: int = FLOAT32,
                 weight_scale: float | None = None, version: int = 3) -> bytes:
    """A minimal .tflite flatbuffer: tensors input (1, 4), weights (4, 4) constant, output (1, 4).

    No operators: enough for the schema reader, not for an interpreter.
    """
    b = flatbuffers.Builder(1024)
    weight_bytes = {FLOAT32: 4, FLOAT16: 2, INT8: 1, INT16: 2}[weight_type] * 16

    b.StartVector(1, weight_bytes, 16)
    for i in reversed(range(weight_bytes)):
        b.PrependUint8(i % 251)
    data = b.EndVector()
    b.StartObject(3)
    b.PrependUOffsetTRelativeSlot(0, data, 0)
    weights_buffer = b.EndObject()
    b.StartObject(3)
    empty_buffer = b.EndObject()

    def int_vector(values: list[int]) -> int:
        b.StartVector(4, len(values), 4)
        for v in reversed(values):
            b.PrependInt32(v)
        return int(b.EndVector())

    def tensor(name: str, shape: list[int], ttype: int, buffer: int,
               scale: float | None) -> int:
        name_off = b.CreateString(name)
        shape_off = int_vector(shape)
        quant = None
        if scale is not None:
            b.StartVector(4, 1, 4)
            b.PrependFloat32(scale)
            scales = b.EndVector()
            b.StartObject(7)
            b.PrependUOffsetTRelativeSlot(2, scales, 0)
            quant = b.EndObject()
        b.StartObject(10)
        b.PrependUOffsetTRelativeSlot(0, shape_off, 0)
        b.PrependInt8Slot(1, ttype, 0)
        b.PrependUint32Slot(2, buffer, 0)
        b.PrependUOffsetTRelativeSlot(3, name_off, 0)
        if quant is not None:
            b.PrependUOffsetTRelativeSlot(4, quant, 0)
        return int(b.EndObject())

    tensors = [
        tensor("input", [1, 4], activation_type, 0, None),
        tensor("weights", [4, 4], weight_type, 1, weight_scale),
        tensor("output", [1, 4], activation_type, 0, None),
    ]
    b.StartVector(4, len(tensors), 4)
    for t in reversed(tensors):
        b.PrependUOffsetTRelative(t)
    tensors_vec = b.EndVector()
    inputs, outputs = int_vector([0]), int_vector([2])
    b.StartObject(5)
    b.PrependUOffsetTRelativeSlot(0, tensors_vec, 0)
    b.PrependUOffsetTRelativeSlot(1, inputs, 0)
    b.PrependUOffsetTRelativeSlot(2, outputs, 0)
    subgraph = b.EndObject()

    b.StartVector(4, 1, 4)
    b.PrependUOffsetTRelative(subgraph)
    subgraphs = b.EndVector()
    b.StartVector(4, 2, 4)
    b.PrependUOffsetTRelative(weights_buffer)
    b.PrependUOffsetTRelative(empty_buffer)
    buffers = b.EndVector()
    b.StartObject(8)
    b.PrependUint32Slot(0, version, 0)
    b.PrependUOffsetTRelativeSlot(2, subgraphs, 0)
    b.PrependUOffsetTRelativeSlot(4, buffers, 0)
    model = b.EndObject()
    b.Finish(model, file_identifier=b"TFL3")
    return bytes(b.Output())


# A stand-in for `python -m farm.convert_worker` that speaks the same protocol without TF.
# With $FAKE_BROKEN set it dies before its hello. Per job, by the model's name: "crash*" writes
# to stderr and exits 3 after "start"; "loadcrash*" exits 4 after "loading"; "hang*" sleeps;
# anything else writes the .tflite at $FAKE_TFLITE to the job's out path. Every start is
# appended to $FAKE_LOG.
_FAKE_WORKER = textwrap.dedent('''
    import json, os, shutil, sys, time
    doc = json.load(sys.stdin)
    out = sys.stdout
    def send(msg):
        out.write(json.dumps(msg) + "\\n")
        out.flush()
    with open(os.environ["FAKE_LOG"], "a") as log:
        log.write("worker\\n")
    if os.environ.get("FAKE_BROKEN"):
        sys.stderr.write("ModuleNotFoundError: No module named 'tensorflow'\\n")
        sys.exit(1)
    send({"event": "hello", "converter_version": "9.9.9"})
    last = None
    for job in doc["jobs"]:
        name = job["source"]["name"]
        if name != last:
            last = name
            send({"event": "loading", "id": job["id"]})
            if name.startswith("loadcrash"):
                sys.stderr.write("fake loader fell over\\n")
                sys.exit(4)
        send({"event": "start", "id": job["id"]})
        if name.startswith("crash"):
            sys.stderr.write("noise\\nfake converter segfault in " + job["quantization"] + "\\n")
            sys.stderr.flush()
            sys.exit(3)
        if name.startswith("hang"):
            time.sleep(600)
        shutil.copyfile(os.environ["FAKE_TFLITE"], job["out"])
        send({"event": "done", "id": job["id"], "status": "ok", "conversion_s": 0.5})
    send({"event": "bye"})
''')


@dataclass(frozen=True)
class FakeWorker:
    """Where the fake worker logs each of its starts."""

    log: Path

    def starts(self) -> int:
        """How many worker processes started."""
        return len(self.log.read_text().splitlines()) if self.log.exists() else 0


@pytest.fixture
def fake_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeWorker:
    """Replace the conversion worker by the protocol-speaking fake above (fp32 output)."""
    script = tmp_path / "fake_worker.py"
    script.write_text(_FAKE_WORKER)
    tflite = tmp_path / "fake_out.tflite"
    tflite.write_bytes(build_tflite())
    log = tmp_path / "fake_worker.log"
    monkeypatch.setenv("FAKE_TFLITE", str(tflite))
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setattr(farm.variants, "_worker_command", lambda: [sys.executable, str(script)])
    return FakeWorker(log)


def no_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to start a conversion worker fail the test."""

    def refuse() -> list[str]:
        raise AssertionError("a conversion worker was started")

    monkeypatch.setattr(farm.variants, "_worker_command", refuse)


def load_meta(path: Path) -> dict[str, object]:
    """The cache metadata next to a cached .tflite."""
    meta: dict[str, object] = json.loads(path.with_suffix(".json").read_text())
    return meta
