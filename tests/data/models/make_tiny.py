"""Regenerate the tiny .tflite models the host-runner tests use (needs TensorFlow; run once).

    .venv/bin/python tests/data/models/make_tiny.py

Writes, next to this script:
- tiny_fp32.tflite: conv 3x3 + relu, mean, dense, softmax on a [1, 16, 16, 3] float32 input.
  XNNPACK takes the whole graph.
- tiny_int8.tflite: the same graph, full-integer quantized (int8 input and output),
  calibrated on seeded random data (the values only need to be plausible, not meaningful).
- tiny_partial_fp32.tflite: the fp32 graph plus an ARG_MAX head (int32 output), an op XNNPACK
  does not take, so the graph is only partially delegated.
The weights come from a seeded generator, so reruns give the same models with the same TF version.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

HERE = Path(__file__).resolve().parent
SHAPE = (1, 16, 16, 3)


def _weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "conv_w": rng.normal(0, 0.3, (3, 3, 3, 8)).astype(np.float32),
        "conv_b": rng.normal(0, 0.1, (8,)).astype(np.float32),
        "dense_w": rng.normal(0, 0.3, (8, 10)).astype(np.float32),
        "dense_b": rng.normal(0, 0.1, (10,)).astype(np.float32),
    }


def _functions() -> tuple[tf.types.experimental.GenericFunction, ...]:
    w = {k: tf.constant(v) for k, v in _weights().items()}
    spec = tf.TensorSpec(SHAPE, tf.float32, name="input")

    def body(x: tf.Tensor) -> tf.Tensor:
        y = tf.nn.relu(tf.nn.conv2d(x, w["conv_w"], strides=1, padding="SAME") + w["conv_b"])
        y = tf.reduce_mean(y, axis=[1, 2])
        return tf.nn.softmax(tf.matmul(y, w["dense_w"]) + w["dense_b"])

    @tf.function(input_signature=[spec])
    def tiny(x: tf.Tensor) -> tf.Tensor:
        return body(x)

    @tf.function(input_signature=[spec])
    def tiny_partial(x: tf.Tensor) -> tf.Tensor:
        return tf.math.argmax(body(x), axis=1, output_type=tf.int32)

    return tiny, tiny_partial


def _convert(fn: tf.types.experimental.GenericFunction, *, int8: bool) -> bytes:
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    if int8:
        rng = np.random.default_rng(1)

        def representative() -> object:
            for _ in range(16):
                yield [rng.uniform(-1, 1, SHAPE).astype(np.float32)]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return bytes(conv.convert())


def main() -> None:
    tiny, tiny_partial = _functions()
    for name, data in (
        ("tiny_fp32.tflite", _convert(tiny, int8=False)),
        ("tiny_int8.tflite", _convert(tiny, int8=True)),
        ("tiny_partial_fp32.tflite", _convert(tiny_partial, int8=False)),
    ):
        (HERE / name).write_bytes(data)
        print(f"wrote {name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
