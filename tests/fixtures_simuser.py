"""Helpers for the simulator userland tests: phones without adb, and generated .tflite models.

Writes only under pytest's tmp_path. Models are built with the flatbuffer object API that
ai_edge_litert ships (`schema_py_generated`), without TensorFlow: a stack of 3x3 convolutions in
any dtype (fp32, fp16 weights + DEQUANTIZE, dynamic-range, int8 with float I/O, int16x8), big
enough to be MAC-bound so the performance model's truths show through.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from farm.sim.benchmark import make_stub_binary
from farm.sim.phone import Phone
from farm.sim.profiles import load_profile

BM = "/data/local/tmp/benchmark_model"
REPO_MODELS = Path(__file__).resolve().parent / "data" / "models"


def conv_model(dtype: str = "fp32", *, size: int = 28, channels: int = 32, layers: int = 6,
               seed: int = 0) -> bytes:
    """A .tflite: input [1,size,size,3] float32 -> `layers` CONV_2D 3x3 (SAME) -> output."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    rng = random.Random(seed)
    buffers: list[s.BufferT] = [s.BufferT()]
    tensors: list[s.TensorT] = []
    opcodes: list[int] = []
    operators: list[s.OperatorT] = []

    def buffer(nbytes: int) -> int:
        b = s.BufferT()
        b.data = [rng.randrange(256) for _ in range(nbytes)]
        buffers.append(b)
        return len(buffers) - 1

    def tensor(shape: list[int], ttype: int, name: str, nbytes: int = 0,
               quant: bool = False) -> int:
        t = s.TensorT()
        t.shape = shape
        t.type = ttype
        t.name = name.encode()
        t.buffer = buffer(nbytes) if nbytes else 0
        if quant:
            q = s.QuantizationParametersT()
            q.scale = [0.05]
            q.zeroPoint = [0]
            t.quantization = q
        tensors.append(t)
        return len(tensors) - 1

    def op(code: int, ins: list[int], outs: list[int],
           options: tuple[int, object] | None = None) -> None:
        if code not in opcodes:
            opcodes.append(code)
        o = s.OperatorT()
        o.opcodeIndex = opcodes.index(code)
        o.inputs = ins
        o.outputs = outs
        if options is not None:
            o.builtinOptionsType, o.builtinOptions = options
        operators.append(o)

    tt = s.TensorType
    act_type = {"int8": tt.INT8, "int16x8": tt.INT16}.get(dtype, tt.FLOAT32)
    quant_act = dtype in ("int8", "int16x8")
    x_in = tensor([1, size, size, 3], tt.FLOAT32, "input")
    x = x_in
    if quant_act:
        q = tensor([1, size, size, 3], act_type, "input_q", quant=True)
        op(s.BuiltinOperator.QUANTIZE, [x], [q])
        x = q
    c_in = 3
    for i in range(layers):
        wshape = [channels, 3, 3, c_in]
        n = channels * 9 * c_in
        if dtype == "fp32":
            w = tensor(wshape, tt.FLOAT32, f"w{i}", 4 * n)
        elif dtype == "fp16":
            w16 = tensor(wshape, tt.FLOAT16, f"w{i}_fp16", 2 * n)
            w = tensor(wshape, tt.FLOAT32, f"w{i}")
            op(s.BuiltinOperator.DEQUANTIZE, [w16], [w])
        else:
            w = tensor(wshape, tt.INT8, f"w{i}", n, quant=True)
        bias_type = tt.INT32 if dtype == "int8" else (tt.INT64 if dtype == "int16x8"
                                                       else tt.FLOAT32)
        b = tensor([channels], bias_type, f"b{i}", channels * (8 if dtype == "int16x8" else 4))
        y = tensor([1, size, size, channels], act_type, f"conv{i}", quant=quant_act)
        opt = s.Conv2DOptionsT()
        opt.padding = s.Padding.SAME
        opt.strideW = opt.strideH = 1
        opt.fusedActivationFunction = s.ActivationFunctionType.RELU
        op(s.BuiltinOperator.CONV_2D, [x, w, b], [y], (s.BuiltinOptions.Conv2DOptions, opt))
        x = y
        c_in = channels
    if quant_act:
        out = tensor([1, size, size, channels], tt.FLOAT32, "output")
        op(s.BuiltinOperator.DEQUANTIZE, [x], [out])
        x = out
    sg = s.SubGraphT()
    sg.tensors = tensors
    sg.inputs = [x_in]
    sg.outputs = [x]
    sg.operators = operators
    sg.name = b"main"
    codes = []
    for c in opcodes:
        oc = s.OperatorCodeT()
        oc.builtinCode = c
        oc.deprecatedBuiltinCode = min(c, 127)
        oc.version = 1
        codes.append(oc)
    m = s.ModelT()
    m.version = 3
    m.description = b"farm simulator test model"
    m.operatorCodes = codes
    m.subgraphs = [sg]
    m.buffers = buffers
    builder = flatbuffers.Builder(1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def conv_macs(*, size: int = 28, channels: int = 32, layers: int = 6) -> int:
    """MACs of `conv_model` with the same arguments."""
    first = size * size * channels * 9 * 3
    rest = size * size * channels * 9 * channels
    return first + (layers - 1) * rest


def push(phone: Phone, data: bytes, remote: str, mode: int = 0o644) -> None:
    """Write a file onto the phone as `adb push` (the sync service) does."""
    f = phone.sync_open_write(remote, mode)
    f.write(data)
    phone.sync_finish_write(remote, f, 1_700_000_000, True)


@pytest.fixture
def make_phone(tmp_path: Path) -> Iterator[Callable[..., Phone]]:
    """Factory: make_phone('flagship', time_scale=100.0) -> a Phone under tmp_path."""
    phones: list[Phone] = []

    def make(profile: str = "flagship", *, time_scale: float = 1.0, seed: int = 0,
             serial: str | None = None) -> Phone:
        p = Phone(load_profile(profile), root_dir=tmp_path / "phones",
                  serial=serial or f"sim-{profile}-{len(phones) + 1}", time_scale=time_scale,
                  seed=seed)
        phones.append(p)
        return p

    yield make
    for p in phones:
        p.close()


def install_benchmark_model(phone: Phone, *, abi: str | None = None) -> str:
    """Push farm's stub benchmark_model for the phone's primary ABI; returns its path."""
    push(phone, make_stub_binary(abi or phone.profile.abis[0]), BM, 0o755)
    return BM
