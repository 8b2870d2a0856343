"""benchmark_model emulation on a simulated phone, and the performance model behind it.

Reads the pushed .tflite through the phone's filesystem (and parses it with
`ai_edge_litert.schema_py_generated`; TensorFlow is never imported), sleeps real time =
simulated time / time_scale. For `--output_filepath` it writes what a phone would: the model
is run by the real LiteRT interpreter in this process, on the `--input_layer_value_files` the
phone holds (random inputs otherwise, as the tool does), and the profile's numeric behaviour of
the backends that ran the graph is applied (`emulate_outputs`: exact CPU, fp16 GPU, or a
driver bug's garbage; deterministic for a given profile, model and input). Everything else is pure:
`analyze_model` turns a .tflite into per-op work (MACs, elements, dtypes), `plan_run` decides
which delegate runs which node exactly as the profile says, and `expected_latency_us` is the
known, noise-free truth the emulated runs scatter around (lognormal noise with the profile's CV).
The text is rendered by `farm.bmformat.format_output` in the era of the profile's TF version.
"""

from __future__ import annotations

import hashlib
import math
import random
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from farm.bmformat import DelegateReport, FormatInput, echo_params, format_output
from farm.hostbench import input_layer_info, split_value_files
from farm.sim.profiles import Profile, thread_speed
from farm.sim.thermal import Interrupted, Load

if TYPE_CHECKING:
    from farm.sim.shell import Ctx

MARKER = b"FARM_SIM_BENCHMARK_MODEL"
REAL_MARKER = b"tflite::benchmark"
ABI_OF_MACHINE: dict[int, str] = {183: "arm64-v8a", 40: "armeabi-v7a", 62: "x86_64", 3: "x86"}
MACHINE_OF_ABI: dict[str, tuple[int, int]] = {  # abi -> (bits, e_machine)
    "arm64-v8a": (64, 183), "armeabi-v7a": (32, 40), "armeabi": (32, 40), "x86_64": (64, 62),
    "x86": (32, 3),
}

# ------------------------------------------------------------------------------- binaries


def elf_info(data: bytes) -> tuple[int, int] | None:
    """(bits, e_machine) of an ELF header, or None if `data` is not ELF."""
    if len(data) < 20 or not data.startswith(b"\x7fELF") or data[4] not in (1, 2):
        return None
    bits = 32 if data[4] == 1 else 64
    endian = ">" if data[5] == 2 else "<"
    (machine,) = struct.unpack_from(endian + "H", data, 18)
    return bits, machine


def is_benchmark_binary(data: bytes) -> bool:
    """Whether an ELF is farm's stub or a real benchmark_model (both are emulated)."""
    return MARKER in data or REAL_MARKER in data


def make_stub_binary(abi: str, tf_version: str = "2.19") -> bytes:
    """A minimal valid ELF header for `abi` plus the marker: what farm pushes to a simulated
    phone as benchmark_model. The phone's profile decides the output era; `tf_version` is
    recorded in the stub (so stubs for different versions differ in sha256)."""
    if abi not in MACHINE_OF_ABI:
        raise ValueError(f"unknown ABI {abi!r}; known: {', '.join(MACHINE_OF_ABI)}")
    bits, machine = MACHINE_OF_ABI[abi]
    ident = b"\x7fELF" + bytes([1 if bits == 32 else 2, 1, 1, 0]) + b"\0" * 8
    if bits == 64:
        header = ident + struct.pack("<HHIQQQIHHHHHH", 3, machine, 1, 0, 0, 0, 0, 64, 56, 0,
                                     64, 0, 0)
    else:
        flags = 0x05000000 if machine == 40 else 0
        header = ident + struct.pack("<HHIIIIIHHHHHH", 3, machine, 1, 0, 0, 0, flags, 52, 32, 0,
                                     40, 0, 0)
    body = (b"\0" * 16 + MARKER + b"\0" + f"tf_version={tf_version}\0".encode()
            + b"tflite::benchmark::BenchmarkTfLiteModel (farm simulated phone stub)\0")
    return header + body


# ------------------------------------------------------------------------------- models

_COMPUTE_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV",
                "BATCH_MATMUL", "CONV_3D"}
# ops each backend takes (a plausible subset of the real support lists)
XNNPACK_OPS = frozenset({
    "ABS", "ADD", "AVERAGE_POOL_2D", "BATCH_MATMUL", "CEIL", "CONCATENATION", "CONV_2D",
    "DEPTH_TO_SPACE", "DEPTHWISE_CONV_2D", "DEQUANTIZE", "DIV", "ELU", "FLOOR",
    "FULLY_CONNECTED", "GELU", "HARD_SWISH", "LEAKY_RELU", "LOGISTIC", "MAX_POOL_2D",
    "MAXIMUM", "MEAN", "MINIMUM", "MUL", "NEG", "PAD", "PRELU", "QUANTIZE", "RELU", "RELU6",
    "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR", "ROUND", "RSQRT", "SLICE", "SOFTMAX",
    "SPACE_TO_DEPTH", "SPLIT", "SQRT", "SQUARE", "SQUARED_DIFFERENCE", "STRIDED_SLICE", "SUB",
    "TANH", "TRANSPOSE", "TRANSPOSE_CONV", "SUM",
})
GPU_OPS = frozenset({
    "ABS", "ADD", "AVERAGE_POOL_2D", "BATCH_MATMUL", "CONCATENATION", "CONV_2D",
    "DEPTH_TO_SPACE", "DEPTHWISE_CONV_2D", "DEQUANTIZE", "DIV", "ELU", "EXP",
    "FULLY_CONNECTED", "GELU", "HARD_SWISH", "LEAKY_RELU", "LOGISTIC", "MAX_POOL_2D",
    "MAXIMUM", "MEAN", "MINIMUM", "MUL", "PAD", "PRELU", "QUANTIZE", "RELU", "RELU6",
    "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX",
    "SPACE_TO_DEPTH", "SPLIT", "SQRT", "SQUARE", "SQUARED_DIFFERENCE", "STRIDED_SLICE", "SUB",
    "TANH", "TRANSPOSE", "TRANSPOSE_CONV", "SUM",
})
NNAPI_OPS = GPU_OPS - {"GELU", "SQUARED_DIFFERENCE"}

_TYPE_NAMES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string",
               6: "bool", 7: "int16", 8: "complex64", 9: "int8", 10: "float64"}
_TYPE_BYTES = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 8: 8, 9: 1, 10: 8}


class CorruptModel(Exception):
    """The file is not a usable .tflite; the message is what the TFLite runtime prints."""


@dataclass(frozen=True, slots=True)
class OpWork:
    """One node of subgraph 0 and the work it does."""

    index: int
    op: str
    macs: int
    elems: int
    dtype: str  # fp32, fp16, dynamic, int8, int16x8 (the rate class)
    graph_input: bool  # consumes a graph input
    graph_output: bool  # produces a graph output
    io_dtype: str  # float32, int8, ... of its first input
    folded: bool = False  # DEQUANTIZE of constant (fp16) weights: done once at init, free later


@dataclass(frozen=True, slots=True)
class ModelWork:
    """What a .tflite asks of a phone (cached by sha256)."""

    sha256: str
    size_bytes: int
    dtype: str
    ops: tuple[OpWork, ...]
    input_bytes: int
    output_bytes: int
    activation_bytes: int
    weight_bytes: int
    subgraphs: int

    @property
    def total_macs(self) -> int:
        """Sum of multiply-accumulates."""
        return sum(o.macs for o in self.ops)


_CACHE: OrderedDict[str, ModelWork] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def analyze_model(data: bytes) -> ModelWork:
    """Per-op work of a .tflite (cached by content hash); raises CorruptModel."""
    sha = hashlib.sha256(data).hexdigest()
    with _CACHE_LOCK:
        hit = _CACHE.get(sha)
        if hit is not None:
            _CACHE.move_to_end(sha)
            return hit
    work = _analyze(data, sha)
    with _CACHE_LOCK:
        _CACHE[sha] = work
        while len(_CACHE) > 64:
            _CACHE.popitem(last=False)
    return work


def _op_names() -> dict[int, str]:
    from ai_edge_litert import schema_py_generated as sch

    return {v: k for k, v in vars(sch.BuiltinOperator).items()
            if not k.startswith("_") and isinstance(v, int)}


def _analyze(data: bytes, sha: str) -> ModelWork:
    if len(data) < 8:
        raise CorruptModel("The model is not a valid Flatbuffer buffer")
    ident = data[4:8]
    if ident != b"TFL3":
        shown = "".join(chr(b) if 32 <= b < 127 else "?" for b in ident)
        raise CorruptModel(f"Model provided has model identifier '{shown}', should be 'TFL3'\n")
    try:
        return _walk(data, sha)
    except CorruptModel:
        raise
    except Exception:  # noqa: BLE001 - any decoding failure means a corrupt flatbuffer
        raise CorruptModel("The model is not a valid Flatbuffer buffer") from None


def _walk(data: bytes, sha: str) -> ModelWork:
    from ai_edge_litert import schema_py_generated as sch

    names = _op_names()
    m = sch.Model.GetRootAs(data, 0)
    if m.SubgraphsLength() < 1:
        raise CorruptModel("The model is not a valid Flatbuffer buffer")
    sg = m.Subgraphs(0)
    tensors = []
    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        shape = [int(t.Shape(j)) for j in range(t.ShapeLength())]
        buf_idx = t.Buffer()
        const = False
        if 0 < buf_idx < m.BuffersLength():
            b = m.Buffers(buf_idx)
            const = b.DataLength() > 0 or (b.Size() > 0 if hasattr(b, "Size") else False)
        tensors.append((shape, int(t.Type()), const))
    graph_inputs = {int(sg.Inputs(j)) for j in range(sg.InputsLength())}
    graph_outputs = {int(sg.Outputs(j)) for j in range(sg.OutputsLength())}

    def nelem(idx: int) -> int:
        shape = tensors[idx][0]
        n = 1
        for d in shape:
            n *= max(1, d)
        return n

    def nbytes(idx: int) -> int:
        return nelem(idx) * _TYPE_BYTES.get(tensors[idx][1], 4)

    raw_ops = []
    fp16_weights = False
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        oc = m.OperatorCodes(op.OpcodeIndex())
        code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
        name = names.get(code, f"BUILTIN_{code}")
        if name == "CUSTOM":
            custom = oc.CustomCode()
            name = custom.decode() if custom else "CUSTOM"
        ins = [int(op.Inputs(j)) for j in range(op.InputsLength()) if op.Inputs(j) >= 0]
        outs = [int(op.Outputs(j)) for j in range(op.OutputsLength()) if op.Outputs(j) >= 0]
        if name == "DEQUANTIZE" and ins and tensors[ins[0]][1] == 1 and tensors[ins[0]][2]:
            fp16_weights = True
        raw_ops.append((i, name, ins, outs))
    ops = []
    activation = 0
    weight = sum(nbytes(i) for i, t in enumerate(tensors) if t[2])
    kinds: set[str] = set()
    for i, name, ins, outs in raw_ops:
        out_elems = sum(nelem(o) for o in outs)
        activation += sum(nbytes(o) for o in outs)
        act = next((x for x in ins if not tensors[x][2]), ins[0] if ins else None)
        w = next((x for x in ins[1:] if tensors[x][2]), None)
        act_type = tensors[act][1] if act is not None else 0
        w_type = tensors[w][1] if w is not None else act_type
        macs = _macs(name, ins, outs, tensors, out_elems)
        if name in _COMPUTE_OPS:
            if act_type == 7:
                dtype = "int16x8"
            elif act_type in (9, 3):
                dtype = "int8"
            elif w_type in (9, 3):
                dtype = "dynamic"
            else:
                dtype = "fp32"
            kinds.add(dtype)
        else:
            dtype = {7: "int16x8", 9: "int8", 3: "int8"}.get(act_type, "fp32")
        folded = name == "DEQUANTIZE" and bool(ins) and tensors[ins[0]][2]
        ops.append(OpWork(index=i, op=name, macs=macs, elems=0 if folded else out_elems,
                          dtype=dtype, graph_input=any(x in graph_inputs for x in ins),
                          graph_output=any(o in graph_outputs for o in outs),
                          io_dtype=_TYPE_NAMES.get(act_type, "float32"), folded=folded))
    if "int16x8" in kinds:
        model_dtype = "int16x8"
    elif "int8" in kinds:
        model_dtype = "int8"
    elif "dynamic" in kinds:
        model_dtype = "dynamic"
    elif fp16_weights:
        model_dtype = "fp16"
    else:
        model_dtype = "fp32"
    if model_dtype == "fp16":
        ops = [replace(o, dtype="fp16") if o.dtype == "fp32" else o for o in ops]
    return ModelWork(
        sha256=sha, size_bytes=len(data), dtype=model_dtype, ops=tuple(ops),
        input_bytes=sum(nbytes(i) for i in graph_inputs),
        output_bytes=sum(nbytes(i) for i in graph_outputs),
        activation_bytes=activation, weight_bytes=weight, subgraphs=m.SubgraphsLength(),
    )


def _macs(name: str, ins: list[int], outs: list[int],
          tensors: list[tuple[list[int], int, bool]], out_elems: int) -> int:
    def shape(i: int) -> list[int]:
        return tensors[i][0] if i < len(tensors) else []

    if not ins or not outs:
        return 0
    if name == "CONV_2D" and len(ins) >= 2:
        w = shape(ins[1])  # [out_c, kh, kw, in_c]
        if len(w) == 4:
            return out_elems * w[1] * w[2] * w[3]
    if name == "DEPTHWISE_CONV_2D" and len(ins) >= 2:
        w = shape(ins[1])  # [1, kh, kw, out_c]
        if len(w) == 4:
            return out_elems * w[1] * w[2]
    if name == "FULLY_CONNECTED" and len(ins) >= 2:
        w = shape(ins[1])  # [out, in]
        if len(w) == 2:
            return out_elems * w[1]
    if name == "TRANSPOSE_CONV" and len(ins) >= 3:
        w = shape(ins[1])  # [out_c, kh, kw, in_c]
        x = shape(ins[2])
        if len(w) == 4 and x:
            n = 1
            for d in x:
                n *= max(1, d)
            return n * w[0] * w[1] * w[2]
    if name == "BATCH_MATMUL" and len(ins) >= 2:
        a = shape(ins[0])
        if a:
            return out_elems * max(1, a[-1])
    return 0


# ------------------------------------------------------------------------------- planning


@dataclass(frozen=True, slots=True)
class RunOptions:
    """The benchmark_model flags that matter to the performance model."""

    threads: int = 1
    affinity: int = 0xFFFFFFFF
    delegates: tuple[str, ...] = ()  # explicit, in application order: GPU, NNAPI, XNNPACK, ...
    use_xnnpack: bool | None = None  # None: flag not given
    gpu_precision_loss_allowed: bool = True
    gpu_backend: str = ""
    nnapi_accelerator: str = ""
    disable_nnapi_cpu: bool = True
    require_full_delegation: bool = False
    max_delegated_partitions: int = 0


@dataclass(frozen=True, slots=True)
class Plan:
    """Which backend runs each node, the delegate reports, and a failure if Init fails."""

    executor: tuple[str, ...]  # per node: "cpu", "xnnpack", "gpu", "nnapi", "nnapi-reference"
    reports: tuple[DelegateReport, ...]
    partitions: tuple[tuple[str, int], ...]  # (backend, partition count) for delegated parts
    failed: bool = False
    runtime_lines: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    gpu_init_ms: float = 0.0
    nnapi_init_ms: float = 0.0


def _partitions(supported: Sequence[bool]) -> list[list[int]]:
    parts: list[list[int]] = []
    cur: list[int] = []
    for i, ok in enumerate(supported):
        if ok:
            cur.append(i)
        elif cur:
            parts.append(cur)
            cur = []
    if cur:
        parts.append(cur)
    return parts


def _apply(name: str, kernel_limit: int, executor: list[str], candidates: list[bool],
           ops: Sequence[OpWork]) -> tuple[int, int, int, list[list[int]]]:
    """Delegate the supported CPU nodes; returns (replaced, total_now, partitions, parts)."""
    total_now = sum(1 for e in executor if e == "cpu") + len(
        {e for e in executor if e != "cpu"})
    mask = [executor[i] == "cpu" and candidates[i] for i in range(len(executor))]
    parts = _partitions(mask)
    if kernel_limit > 0 and len(parts) > kernel_limit:
        parts = sorted(parts, key=lambda p: -sum(ops[i].macs + ops[i].elems for i in p))
        parts = sorted(parts[:kernel_limit])
    replaced = 0
    for p in parts:
        for i in p:
            executor[i] = name
            replaced += 1
    return replaced, total_now, len(parts), parts


def plan_run(profile: Profile, model: ModelWork, opts: RunOptions, *,
             default_xnnpack: bool = True) -> Plan:
    """Decide delegation exactly as the profile says (pure)."""
    ops = model.ops
    n = len(ops)
    executor = ["cpu"] * n
    reports: list[DelegateReport] = []
    partitions: list[tuple[str, int]] = []
    runtime_lines: list[str] = []
    warnings: list[str] = []
    gpu_init = nnapi_init = 0.0
    for dname in opts.delegates:
        if dname == "GPU":
            gpu = profile.gpu
            if gpu is None:
                reports.append(DelegateReport("GPU", status="unavailable"))
                continue
            if gpu.delegate == "unsupported":
                reports.append(DelegateReport(
                    "GPU", status="failed", error_lines=(
                        "TfLiteGpuDelegate Init: OpenGL ES 3.1 or above is required to use "
                        "OpenGL inference.",
                        "TfLiteGpuDelegate Prepare: delegate is not initialized",
                        f"Node number {n} (TfLiteGpuDelegateV2) failed to prepare.")))
                return Plan(tuple(executor), tuple(reports), tuple(partitions), failed=True)
            backend = "opencl" if gpu.delegate == "opencl" else "opengl"
            if gpu.delegate == "opengl":
                if opts.gpu_backend == "cl":
                    reports.append(DelegateReport(
                        "GPU", status="failed", error_lines=(
                            'Can not open OpenCL library on this device - dlopen failed: '
                            'library "libOpenCL.so" not found',
                            "TfLiteGpuDelegate Init: Can not open OpenCL library on this device",
                            "TfLiteGpuDelegate Prepare: delegate is not initialized",
                            f"Node number {n} (TfLiteGpuDelegateV2) failed to prepare.")))
                    return Plan(tuple(executor), tuple(reports), tuple(partitions), failed=True)
                runtime_lines.append('ERROR: Can not open OpenCL library on this device - '
                                     'dlopen failed: library "libOpenCL.so" not found')
                runtime_lines.append("ERROR: Falling back to OpenGL")
            cand = []
            unsupported: list[str] = []
            quantized = model.dtype in ("int8", "int16x8")
            for o in ops:
                ok = o.op in GPU_OPS
                reason = "Operation is not supported."
                if model.dtype == "int16x8" and o.op != "QUANTIZE":
                    ok, reason = False, "Not supported op version."
                elif quantized and gpu.int8 == "none":
                    ok, reason = False, "Not supported quantized type."
                elif o.dtype == "int8" or o.io_dtype == "int8":
                    if o.op in ("QUANTIZE", "DEQUANTIZE") or (
                            o.io_dtype == "int8" and (o.graph_input or o.graph_output)):
                        ok, reason = False, "Operation is not supported."
                if o.op == "QUANTIZE" and quantized:
                    ok = False
                cand.append(ok)
                if not ok:
                    text = f"{o.op}: {reason}"
                    if text not in unsupported:
                        unsupported.append(text)
            limit = opts.max_delegated_partitions or 1  # the GPU delegate's default is 1
            replaced, total, nparts, parts = _apply("gpu", limit, executor, cand, ops)
            on_cpu = n - replaced
            status = "full" if replaced == n else ("partial" if replaced else "none")
            reports.append(DelegateReport(
                "GPU", status=status, kernels=max(1, nparts), replaced_nodes=replaced or None,
                total_nodes=total if replaced else None, partitions=nparts if replaced else None,
                gpu_ops_on_gpu=replaced if on_cpu else None, gpu_ops_on_cpu=on_cpu or None,
                unsupported_ops=tuple(unsupported) if on_cpu else (), gpu_backend=backend))
            if replaced:
                partitions.append(("gpu", nparts))
                gpu_init = gpu.init_ms * (0.6 + 0.4 * min(3.0, replaced / 40))
            continue
        if dname == "NNAPI":
            nn = profile.nnapi
            if nn.mode == "missing":
                reports.append(DelegateReport("NNAPI", status="unavailable"))
                continue
            accel = opts.nnapi_accelerator
            if accel and accel not in nn.accelerators:
                warnings.append(f"Could not find the specified NNAPI accelerator: {accel}. "
                                "Available accelerators: " + ",".join(nn.accelerators))
                reports.append(DelegateReport("NNAPI", status="unavailable"))
                continue
            reference = (accel == "nnapi-reference" or nn.mode == "reference")
            if reference and opts.disable_nnapi_cpu and accel != "nnapi-reference":
                # only the reference CPU device exists and it is excluded: nothing delegated
                reports.append(DelegateReport("NNAPI", status="none"))
                nnapi_init = 40.0
                continue
            rates = dict(nn.gmacs)
            cand = []
            for o in ops:
                ok = o.op in NNAPI_OPS and o.op not in nn.unsupported_ops
                if not reference and o.dtype not in rates:
                    ok = False
                cand.append(ok)
            if not reference and model.dtype not in rates:
                cand = [False] * n
            limit = opts.max_delegated_partitions or 3
            name = "nnapi-reference" if reference else "nnapi"
            replaced, total, nparts, _ = _apply(name, limit, executor, cand, ops)
            status = "full" if replaced == n else ("partial" if replaced else "none")
            reports.append(DelegateReport(
                "NNAPI", status=status, kernels=max(1, nparts),
                replaced_nodes=replaced or None, total_nodes=total if replaced else None,
                partitions=nparts if replaced else None))
            if replaced:
                partitions.append((name, nparts))
                nnapi_init = nn.init_ms * (0.5 + 0.5 * min(3.0, replaced / 40))
            continue
        if dname == "XNNPACK":
            cand = [_xnnpack_ok(o) for o in ops]
            replaced, total, nparts, _ = _apply("xnnpack", 0, executor, cand, ops)
            status = "full" if replaced == n else ("partial" if replaced else "none")
            reports.append(DelegateReport(
                "XNNPACK", status=status, kernels=max(1, nparts),
                replaced_nodes=replaced or None, total_nodes=total if replaced else None,
                partitions=nparts if replaced else None))
            continue
        # Hexagon, external and other providers cannot be created on a simulated phone
        reports.append(DelegateReport(dname, status="unavailable"))
    explicit_created = [r for r in reports if r.status not in ("unavailable",)]
    if opts.require_full_delegation:
        last = explicit_created[-1] if explicit_created else None
        if last is None or last.status != "full":
            if last is None:
                reports.append(DelegateReport("CPU", status="fallback", explicit=True))
            else:
                reports[reports.index(last)] = replace(last, status="fallback")
            return Plan(tuple(executor), tuple(reports), tuple(partitions), failed=True,
                        runtime_lines=tuple(runtime_lines), warnings=tuple(warnings))
    if default_xnnpack and opts.use_xnnpack is not False and "cpu" in executor:
        cand = [_xnnpack_ok(o) for o in ops]
        replaced, total, nparts, _ = _apply("xnnpack", 0, executor, cand, ops)
        reports.insert(0, DelegateReport(
            "XNNPACK", status="full" if replaced == n else "partial", explicit=False,
            kernels=max(1, nparts), replaced_nodes=replaced if replaced else None,
            total_nodes=total if replaced else None, partitions=nparts if replaced else None))
    return Plan(tuple(executor), tuple(reports), tuple(partitions),
                runtime_lines=tuple(runtime_lines), warnings=tuple(warnings),
                gpu_init_ms=gpu_init, nnapi_init_ms=nnapi_init)


def _xnnpack_ok(o: OpWork) -> bool:
    if o.op not in XNNPACK_OPS:
        return False
    return o.dtype != "int16x8"


# ------------------------------------------------------------------------------- latency


@dataclass(frozen=True, slots=True)
class CostModel:
    """Noise-free latency of one invoke at a given thermal cap, split by backend (µs)."""

    cpu_us: float
    gpu_us: float
    nnapi_us: float
    overhead_us: float

    @property
    def total_us(self) -> float:
        """One invoke."""
        return self.cpu_us + self.gpu_us + self.nnapi_us + self.overhead_us


def invoke_cost(profile: Profile, model: ModelWork, plan: Plan, opts: RunOptions,
                cap: float = 1.0) -> CostModel:
    """The performance model: work / throughput(backend, dtype), thread scaling over the
    allowed clusters, and the thermal frequency cap `cap` (1.0 = none)."""
    perf = profile.perf
    speed = thread_speed(profile.cpu, opts.threads, opts.affinity, cap)
    threads = max(1, opts.threads)
    elem_speed = min(speed, 1.0 + 0.5 * (speed - 1.0)) if speed > 1 else speed
    single = thread_speed(profile.cpu, 1, opts.affinity, cap)
    cpu = gpu = nn = 0.0
    gspec = profile.gpu
    for o, ex in zip(model.ops, plan.executor, strict=True):
        if o.folded:
            continue
        if ex in ("cpu", "xnnpack"):
            rate = perf.cpu_rate(o.dtype)
            if ex == "cpu" and o.dtype in ("fp32", "fp16"):
                rate *= perf.xnnpack_off_factor
            cpu += o.macs / (rate * 1e3 * speed) if o.macs else 0.0
            cpu += o.elems / (perf.elementwise_gelem_s * 1e3 * elem_speed)
            cpu += perf.op_overhead_us / max(single, 1e-3)
            if o.macs and threads > 1:
                cpu += profile.cpu.thread_sync_us * (threads - 1)
        elif ex == "gpu" and gspec is not None:
            rate = gspec.rate("fp16" if opts.gpu_precision_loss_allowed else "fp32") * cap
            gpu += o.macs / (rate * 1e3) + o.elems / (rate * 250.0) + gspec.op_overhead_us
        elif ex == "nnapi":
            rates = dict(profile.nnapi.gmacs)
            rate = rates.get(o.dtype, rates.get("fp32", 1.0))
            nn += o.macs / (rate * 1e3) + o.elems / (rate * 400.0) + profile.nnapi.op_overhead_us
        elif ex == "nnapi-reference":
            rate = perf.cpu_rate("fp32") * 0.12 * max(single, 1e-3)
            nn += o.macs / (rate * 1e3) + o.elems / (perf.elementwise_gelem_s * 300.0) + 45.0
    overhead = 4.0 / max(single, 1e-3)
    for backend, nparts in plan.partitions:
        if backend == "gpu" and gspec is not None:
            overhead += nparts * gspec.partition_overhead_us
        elif backend in ("nnapi", "nnapi-reference"):
            overhead += nparts * profile.nnapi.partition_overhead_us
    return CostModel(cpu, gpu, nn, overhead)


def flags_for_delegate(delegate: str) -> tuple[str, ...]:
    """benchmark_model flags of farm's standard delegates (delegates/*.yaml)."""
    table = {"cpu": ("--use_xnnpack=false",), "xnnpack": ("--use_xnnpack=true",),
             "gpu": ("--use_gpu=true",), "nnapi": ("--use_nnapi=true",)}
    if delegate not in table:
        raise ValueError(f"unknown delegate {delegate!r}; known: {', '.join(table)}")
    return table[delegate]


def expected_latency_us(profile: Profile, model: bytes | ModelWork, *,
                        flags: Sequence[str] = (), delegate: str | None = None,
                        threads: int = 1, cap: float = 1.0, affinity: int | None = None) -> float:
    """The known truth: noise-free latency of one regular invoke (µs) on a cool phone."""
    work = model if isinstance(model, ModelWork) else analyze_model(model)
    argv = list(flags) + list(flags_for_delegate(delegate) if delegate else ())
    argv.append(f"--num_threads={threads}")
    parsed = parse_flags(argv, _version(profile.benchmark_model_tf_version))
    opts = run_options(parsed, profile, affinity)
    plan = plan_run(profile, work, opts,
                    default_xnnpack=_version(profile.benchmark_model_tf_version) >= (2, 6))
    if plan.failed:
        raise ValueError(f"{profile.name}: this run fails (delegate cannot be applied)")
    return invoke_cost(profile, work, plan, opts, cap).total_us


# ------------------------------------------------------------------------------- flags


@dataclass(frozen=True, slots=True)
class FlagSpec:
    """One benchmark_model flag."""

    name: str
    kind: str  # int32, float, bool, string
    default: str
    since: tuple[int, int]
    help: str


def _f(name: str, kind: str, default: str, since: tuple[int, int], text: str) -> FlagSpec:
    return FlagSpec(name, kind, default, since, text)


FLAGS: tuple[FlagSpec, ...] = (
    _f("num_runs", "int32", "50", (1, 12), "expected number of runs, see also min_secs, "
       "max_secs"),
    _f("min_secs", "float", "1", (1, 13), "minimum number of seconds to rerun for, potentially "
       "making the actual number of runs to be greater than num_runs"),
    _f("max_secs", "float", "150", (1, 15), "maximum number of seconds to rerun for, "
       "potentially making the actual number of runs to be less than num_runs. Note if "
       "--max-secs is exceeded in the middle of a run, the benchmark will continue to the end "
       "of the run but will not start the next run."),
    _f("run_delay", "float", "-1", (1, 12), "delay between runs in seconds"),
    _f("run_frequency", "float", "-1", (2, 4), "Execute at a fixed frequency, instead of a "
       "fixed delay.Note if the targeted rate per second cannot be reached, the benchmark "
       "would start the next run immediately, trying its best to catch up. If set, this will "
       "override run_delay."),
    _f("num_threads", "int32", "-1", (1, 12), "number of threads"),
    _f("use_caching", "bool", "false", (2, 4), "Enable caching of prepacked weights matrices "
       "in matrix multiplication routines. Currently implies the use of the Ruy library."),
    _f("benchmark_name", "string", "", (1, 12), "benchmark name"),
    _f("output_prefix", "string", "", (1, 12), "benchmark output prefix"),
    _f("warmup_runs", "int32", "1", (1, 12), "minimum number of runs performed on "
       "initialization, to allow performance characteristics to settle, see also "
       "warmup_min_secs"),
    _f("warmup_min_secs", "float", "0.5", (1, 13), "minimum number of seconds to rerun for, "
       "potentially making the actual number of warm-up runs to be greater than warmup_runs"),
    _f("verbose", "bool", "false", (2, 4), "Whether to log parameters whose values are not set."
       " By default, only log those parameters that are set by parsing their values from the "
       "commandline flags."),
    _f("dry_run", "bool", "false", (2, 6), "Whether to run the tool just with simply loading "
       "the model, allocating tensors etc. but without actually invoking any op kernels."),
    _f("report_peak_memory_footprint", "bool", "false", (2, 5), "Report the peak memory "
       "footprint by periodically checking the memory footprint. Internally, a separate thread "
       " will be spawned for this periodic check. Therefore, the performance benchmark result "
       "could be affected."),
    _f("memory_footprint_check_interval_ms", "int32", "50", (2, 5), "The interval in "
       "millisecond between two consecutive memory footprint checks. This is only used when "
       "--report_peak_memory_footprint is set to true."),
    _f("graph", "string", "", (1, 12), "graph file name"),
    _f("signature_to_run_for", "string", "", (2, 10), "If the model contains multiple "
       "signatures, use this flag to specify the signature to benchmark."),
    _f("list_signatures", "bool", "false", (2, 13), "Displays all signatures present in the "
       "model and then terminates the program."),
    _f("input_layer", "string", "", (1, 12), "input layer names"),
    _f("input_layer_shape", "string", "", (1, 12), "input layer shape"),
    _f("input_layer_value_range", "string", "", (2, 1), "A map-like string representing "
       "value range for *integer* input layers."),
    _f("input_layer_value_files", "string", "", (2, 3), "A map-like string representing "
       "value file."),
    _f("allow_fp16", "bool", "false", (1, 13), "allow fp16"),
    _f("require_full_delegation", "bool", "false", (1, 15), "require delegate to run the "
       "entire graph"),
    _f("enable_op_profiling", "bool", "false", (2, 1), "enable op profiling"),
    _f("max_profiling_buffer_entries", "int32", "1024", (1, 15), "max initial profiling "
       "buffer entries"),
    _f("output_filepath", "string", "", (2, 8), "File path to export outputs layer as binary "
       "data."),
    _f("help", "bool", "false", (1, 12), "Print out all supported flags if true."),
    _f("max_delegated_partitions", "int32", "0", (2, 1), "Max number of partitions to be "
       "delegated."),
    _f("min_nodes_per_partition", "int32", "0", (2, 1), "The minimal number of TFLite graph "
       "nodes of a partition that has to be reached for it to be delegated."),
    _f("delegate_serialize_dir", "string", "", (2, 7), "Directory to be used by delegates "
       "for serializing any model data."),
    _f("delegate_serialize_token", "string", "", (2, 7), "Model-specific token acting as a "
       "namespace for delegate serialization."),
    _f("external_delegate_path", "string", "", (2, 3), "The library path for the underlying "
       "external."),
    _f("external_delegate_options", "string", "", (2, 3), "A list of comma-separated options "
       "to be passed to the external delegate."),
    _f("use_gpu", "bool", "false", (1, 13), "use gpu"),
    _f("gpu_precision_loss_allowed", "bool", "true", (2, 1), "Allow to process computation "
       "in lower precision than FP32 in GPU. By default, it's enabled."),
    _f("gpu_experimental_enable_quant", "bool", "true", (2, 3), "Whether to enable the GPU "
       "delegate to run quantized models or not. By default, it's enabled."),
    _f("gpu_inference_for_sustained_speed", "bool", "false", (2, 6), "Whether to prefer "
       "maximizing the throughput. This mode will help when the same delegate will be used "
       "repeatedly on multiple inputs."),
    _f("gpu_backend", "string", "", (2, 3), "Force the GPU delegate to use a particular "
       "backend for execution, and fail if unsuccessful. Should be one of: cl, gl"),
    _f("use_nnapi", "bool", "false", (1, 12), "use nnapi delegate api"),
    _f("nnapi_execution_preference", "string", "", (2, 0), "execution preference for nnapi "
       "delegate. Should be one of the following: fast_single_answer, sustained_speed, "
       "low_power, undefined"),
    _f("nnapi_execution_priority", "string", "", (2, 4), "The model execution priority in "
       "nnapi, and it should be one of the following: default, low, medium and high. This "
       "requires Android 11+."),
    _f("nnapi_accelerator_name", "string", "", (2, 1), "the name of the nnapi accelerator to "
       "use (requires Android Q+)"),
    _f("disable_nnapi_cpu", "bool", "true", (2, 1), "Disable the NNAPI CPU device"),
    _f("nnapi_allow_fp16", "bool", "false", (2, 3), "Allow fp32 computation to be run in "
       "fp16"),
    _f("nnapi_allow_dynamic_dimensions", "bool", "false", (2, 6), "Whether to allow dynamic "
       "dimension sizes without re-compilation."),
    _f("nnapi_use_burst_mode", "bool", "false", (2, 9), "use NNAPI Burst mode if supported."),
    _f("nnapi_support_library_path", "string", "", (2, 9), "Path from which NNAPI support "
       "library will be loaded to construct the delegate."),
    _f("use_hexagon", "bool", "false", (2, 1), "Use Hexagon delegate"),
    _f("hexagon_lib_path", "string", "/data/local/tmp", (2, 1), "The library path for the "
       "hexagon libraries."),
    _f("hexagon_profiling", "bool", "false", (2, 1), "Enables Hexagon profiling"),
    _f("use_xnnpack", "bool", "false", (2, 3), "explicitly apply the XNNPACK delegate. Note "
       "the XNNPACK delegate could be implicitly applied by the TF Lite runtime regardless "
       "the value of this parameter. To disable this implicit application, set the value to "
       "false explicitly."),
    _f("xnnpack_force_fp16", "bool", "false", (2, 9), "enforce float16 inference."),
)
_FLAG_BY_NAME = {f.name: f for f in FLAGS}
_DELEGATE_FLAGS = {"use_gpu": "GPU", "use_nnapi": "NNAPI", "use_xnnpack": "XNNPACK",
                   "use_hexagon": "Hexagon", "external_delegate_path": "EXTERNAL"}


@dataclass
class ParsedFlags:
    """Result of parsing argv as benchmark_model's Flags::Parse does."""

    values: dict[str, str] = field(default_factory=dict)  # explicitly set, known flags
    order: list[str] = field(default_factory=list)  # set flags in argv order
    unconsumed: list[str] = field(default_factory=list)
    error: str = ""  # "Failed to parse flag ..." (then usage and failure)
    help: bool = False

    def get(self, name: str, version: tuple[int, int] = (9, 9)) -> str:
        """A flag's value (explicit or default)."""
        if name in self.values:
            return self.values[name]
        spec = _FLAG_BY_NAME[name]
        if name == "num_threads" and version < (2, 4):
            return "1"
        if name == "disable_nnapi_cpu" and version < (2, 5):
            return "false"
        return spec.default

    def bool(self, name: str, version: tuple[int, int] = (9, 9)) -> bool:
        """A bool flag's value."""
        return self.get(name, version) in ("true", "1")


def _version(text: str) -> tuple[int, int]:
    parts = text.split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return 2, 19


def era_for(tf_version: str) -> str:
    """The bmformat era of a TF version string."""
    v = _version(tf_version)
    if v < (1, 15):
        return "tf1.12-1.14"
    if v < (2, 2):
        return "tf1.15-2.1"
    if v < (2, 5):
        return "tf2.2-2.4"
    if v < (2, 13):
        return "tf2.5-2.12"
    if v < (2, 19):
        return "tf2.13-2.18"
    return "tf2.19+"


def parse_flags(argv: Sequence[str], version: tuple[int, int]) -> ParsedFlags:
    """`--name=value` only; flags newer than `version` are unknown (silently ignored before
    TF 2.3, reported as unconsumed after)."""
    out = ParsedFlags()
    for arg in argv:
        if arg == "--help":  # documented as working without a value
            out.help = True
            continue
        if not arg.startswith("--") or "=" not in arg:
            out.unconsumed.append(arg)
            continue
        name, _, value = arg[2:].partition("=")
        spec = _FLAG_BY_NAME.get(name)
        if spec is None or spec.since > version:
            out.unconsumed.append(arg)
            continue
        ok = True
        if spec.kind == "bool":
            ok = value in ("true", "false", "1", "0")
        elif spec.kind == "int32":
            try:
                int(value)
            except ValueError:
                ok = False
        elif spec.kind == "float":
            try:
                float(value)
            except ValueError:
                ok = False
        if not ok:
            out.error = f"Failed to parse flag '{name}' against argv '{arg}'"
            return out
        if name == "help":
            out.help = value in ("true", "1")
            continue
        out.values[name] = value
        if name in out.order:
            out.order.remove(name)
        out.order.append(name)
    return out


def usage_text(version: tuple[int, int], argv0: str) -> str:
    """The usage table `--help` prints (one log record, so one ERROR prefix)."""
    lines = [f"usage: {argv0}", "Flags:"]
    for f in FLAGS:
        if f.since <= version:
            default = f.default
            if f.name == "num_threads" and version < (2, 4):
                default = "1"
            lines.append(f"\t--{f.name}={default}\t{f.kind}\toptional\t{f.help}")
    return "\n".join(lines)


def run_options(parsed: ParsedFlags, profile: Profile, affinity: int | None) -> RunOptions:
    """Flags -> the performance model's options."""
    v = _version(profile.benchmark_model_tf_version)
    delegates: list[str] = []
    for name in parsed.order:
        provider = _DELEGATE_FLAGS.get(name)
        if provider is None:
            continue
        if name == "external_delegate_path":
            if parsed.values[name]:
                delegates.append(provider)
        elif parsed.bool(name, v):
            delegates.append(provider)
    threads = int(parsed.get("num_threads", v))
    use_x: bool | None = None
    if "use_xnnpack" in parsed.values:
        use_x = parsed.bool("use_xnnpack", v)
    return RunOptions(
        threads=1 if threads < 1 else threads,
        affinity=affinity if affinity is not None else (1 << profile.cpu.cpu_count) - 1,
        delegates=tuple(delegates),
        use_xnnpack=use_x,
        gpu_precision_loss_allowed=parsed.bool("gpu_precision_loss_allowed", v),
        gpu_backend=parsed.get("gpu_backend", v),
        nnapi_accelerator=parsed.get("nnapi_accelerator_name", v),
        disable_nnapi_cpu=parsed.bool("disable_nnapi_cpu", v),
        require_full_delegation=parsed.bool("require_full_delegation", v),
        max_delegated_partitions=int(parsed.get("max_delegated_partitions", v)),
    )


# ------------------------------------------------------------------------------- the run


class _Out:
    """Writes the rendered text in phases, as the real tool prints it over time."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx

    def write(self, out: str, err: str) -> None:
        if out:
            self.ctx.stdout.write(out.encode())
        if err:
            self.ctx.stderr.write(err.encode())


def _split_lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def _find(lines: list[str], needle: str, start: int = 0) -> int:
    for i in range(start, len(lines)):
        if needle in lines[i]:
            return i
    return -1


def run_benchmark_model(ctx: Ctx, abi: str) -> int:
    """Emulate `benchmark_model ARGS` on the phone; returns the exit status."""
    phone = ctx.phone
    profile = phone.profile
    version = _version(profile.benchmark_model_tf_version)
    era = era_for(profile.benchmark_model_tf_version)
    old = era in ("tf1.12-1.14", "tf1.15-2.1")
    fail_status = 0 if old else 1  # TF <= 2.1 always returned 0
    out = _Out(ctx)
    parsed = parse_flags(ctx.argv[1:], version)
    unconsumed = tuple(parsed.unconsumed) if version >= (2, 3) else ()
    if parsed.error or parsed.help:
        lines = ((parsed.error,) if parsed.error else ()) + (usage_text(version, ctx.argv[0]),)
        o, e = format_output(FormatInput(graph="", fail_stage="flags", error_lines=lines),
                             era=era)
        out.write(o, e)
        return fail_status
    graph = parsed.get("graph", version)
    base = FormatInput(graph=graph, unconsumed_flags=unconsumed, android=True,
                       verbose_params=parsed.bool("verbose", version) if version >= (2, 4)
                       else False)
    if not graph:
        o, e = format_output(replace(
            base, fail_stage="params", error_lines=("Please specify the name of your TF Lite "
                                                    "input file with --graph",)), era=era)
        out.write(o, e)
        return fail_status
    value_files, problem = split_value_files(parsed.get("input_layer_value_files", version))
    layers: list[tuple[str, tuple[int, ...]]] = []
    if not problem:
        layers, problem = input_layer_info(parsed.get("input_layer", version),
                                           parsed.get("input_layer_shape", version),
                                           value_files, strict=True)
    if problem:
        o, e = format_output(replace(base, fail_stage="params", error_lines=(problem,)), era=era)
        out.write(o, e)
        return fail_status
    nn = profile.nnapi
    accels = nn.accelerators if nn.mode != "missing" else ()
    base = replace(base, params=echo_params(era, parsed.values, graph=graph,
                                            nnapi_accelerators=accels))
    try:
        data = phone.fs.read_bytes(graph, ctx.cwd)
    except OSError:
        o, e = format_output(replace(
            base, fail_stage="load", runtime_error_lines=(f"Could not open '{graph}'.",),
            error_lines=(f"Failed to mmap model {graph}",)), era=era)
        out.write(o, e)
        return fail_status
    try:
        work = analyze_model(data)
    except CorruptModel as exc:
        o, e = format_output(replace(
            base, fail_stage="load", runtime_error_lines=(str(exc).rstrip("\n"),),
            error_lines=(f"Failed to mmap model {graph}",)), era=era)
        out.write(o, e)
        return fail_status
    opts = run_options(parsed, profile, ctx.proc.affinity)
    plan = plan_run(profile, work, opts, default_xnnpack=version >= (2, 6))
    proc = ctx.proc
    proc.state = "R"
    proc.threads = opts.threads + 1
    proc.rss_kb = 3_600
    proc.hwm_kb = proc.rss_kb
    rng = phone.random()
    model_mb = work.size_bytes / 1e6
    arena_mb = (work.activation_bytes + work.input_bytes + work.output_bytes) / 1048576
    mem_init = round(model_mb * 1.08 + arena_mb * 0.6 + 1.9 + rng.random() * 0.3, 4)
    on_accel = any(b in ("gpu", "nnapi") for b, _ in plan.partitions)
    mem_overall = round(mem_init + (0.05 if on_accel else arena_mb * 0.4 + 0.4), 4)
    init_us = int((profile.perf.init_ms + model_mb * 1.6 + len(work.ops) * 0.05
                   + plan.gpu_init_ms + plan.nnapi_init_ms) * 1000 * (0.95 + rng.random() * 0.1))
    fi = replace(
        base, model_size_bytes=work.size_bytes, init_us=init_us,
        warmup_runs=int(parsed.get("warmup_runs", version)),
        warmup_min_secs=float(parsed.get("warmup_min_secs", version)),
        num_runs=int(parsed.get("num_runs", version)),
        min_secs=float(parsed.get("min_secs", version)),
        max_secs=float(parsed.get("max_secs", version)),
        delegates=plan.reports, runtime_lines=plan.runtime_lines, warnings=plan.warnings,
        mem_init_mb=mem_init, mem_overall_mb=mem_overall)
    if plan.failed:
        o, e = format_output(fi, era=era)
        _write_failure(out, o, e)
        proc.state = "S"
        return fail_status
    out_path = parsed.get("output_filepath", version) if version >= (2, 8) else ""
    sim_inputs: list[Any] | None = None
    if value_files or out_path:
        try:
            sim_inputs = prepare_inputs(data, layers, value_files,
                                        lambda path: phone.fs.read_bytes(path, ctx.cwd), rng)
        except InputError as exc:
            o, e = format_output(replace(fi, fail_stage="init", error_lines=(str(exc),)),
                                 era=era)
            _write_failure(out, o, e)
            proc.state = "S"
            return fail_status
    if parsed.bool("enable_op_profiling", version) and version >= (2, 1):
        fi = replace(fi, warnings=fi.warnings + (
            "Op profiling is not emulated by farm's simulated phone; no per-op tables.",))
    # --- Init: print the head (params, Loaded model, delegate lines) and take Init's time
    head_o, head_e = format_output(fi, era=era)
    stream_is_err = old
    head = _split_lines(head_e if stream_is_err else head_o)
    loaded = _find(head, "Loaded model")
    running = _find(head, "Running benchmark for")
    if stream_is_err:
        out.write("", "".join(head[: loaded + 1]))
    else:
        out.write("".join(head[: loaded + 1]), head_e)
    loops: _Loops | None = None
    try:
        ctx.sleep(init_us / 1e6)
        proc.rss_kb = int(mem_init * 1024 + 3_600)
        proc.hwm_kb = max(proc.hwm_kb, proc.rss_kb)
        prefix = "".join(head[loaded + 1: running + 1])
        out.write("", prefix) if stream_is_err else out.write(prefix, "")
        faults = phone.faults
        if faults.active("crash"):
            ctx.sleep(0.05)
            from farm.sim.shell import SIGSEGV, Signalled

            raise Signalled(SIGSEGV)
        if faults.active("hang"):
            while True:
                ctx.check()
                proc.event.wait(1.0)
        loops = _Loops(ctx, profile, work, plan, opts, parsed, version, rng)
        warm = loops.loop(fi.warmup_runs, fi.warmup_min_secs, fi.max_secs, first=True)
        fi_w = replace(fi, warmup_us=tuple(warm))
        wo, we = format_output(fi_w, era=era)
        wlines = _split_lines(we if stream_is_err else wo)
        second = _find(wlines, "Running benchmark for", running + 1)
        chunk = "".join(wlines[running + 1: second + 1])
        out.write("", chunk) if stream_is_err else out.write(chunk, "")
        proc.rss_kb = int(mem_overall * 1024 + 3_600)
        proc.hwm_kb = max(proc.hwm_kb, proc.rss_kb)
        regular = loops.loop(fi.num_runs, fi.min_secs, fi.max_secs, first=False)
    except Interrupted:
        ctx.check()
        raise
    finally:
        if loops is not None:
            loops.stop()
        proc.state = "S"
    peak = None
    vm = None
    if parsed.bool("report_peak_memory_footprint", version) and version >= (2, 5):
        peak = round(mem_overall + 5.2 + rng.random() * 0.5, 4)
        rss = int(mem_overall + 9)
        vm = (rss, max(1, int(rss * 0.6)), rss - max(1, int(rss * 0.6)))
    fi_f = replace(fi_w, regular_us=tuple(regular), peak_mem_mb=peak, vmrss_mb=vm)
    fo, fe = format_output(fi_f, era=era)
    flines = _split_lines(fe if stream_is_err else fo)
    second = _find(flines, "Running benchmark for", running + 1)
    rest = "".join(flines[second + 1:])
    out.write("", rest) if stream_is_err else out.write(rest, "")
    if out_path:
        if sim_inputs is not None:
            behaviour, xnnpack = run_numerics(profile, work, plan, opts, parsed, version)
            backends = ",".join(sorted(set(plan.executor)))
            salt = f"{profile.name}|{work.sha256}|{behaviour}|{backends}".encode()
            blob = emulate_outputs(data, sim_inputs, behaviour=behaviour, xnnpack=xnnpack,
                                   salt=salt)
        else:  # LiteRT cannot run this model: keep the right size, say nothing about values
            blob = (bytes(rng.getrandbits(8) for _ in range(min(work.output_bytes, 1 << 16)))
                    + b"\0" * max(0, work.output_bytes - (1 << 16)))
        try:
            with phone.fs.open_write(out_path, ctx.cwd) as f:
                f.write(blob)
        except OSError as exc:
            ctx.err(f"ERROR: Failed to write output to {out_path}: {exc.strerror}\n")
    return 0


# ------------------------------------------------------------------------------- outputs

FP16_REL_ERROR = 2.0 ** -9  # accumulated fp16 error, relative: a ~0.2 % wobble per value
_SEVERITY = {"exact": 0, "fp16": 1, "corrupt": 2}
_BACKEND_OF_EXECUTOR = {"cpu": "cpu", "xnnpack": "xnnpack", "gpu": "gpu", "nnapi": "nnapi",
                        "nnapi-reference": "cpu"}
_RANDOM_RANGES: dict[str, tuple[float, float]] = {  # benchmark_model's random inputs
    "float16": (-0.5, 0.5), "float32": (-0.5, 0.5), "float64": (-0.5, 0.5),
    "int8": (-127, 127), "uint8": (0, 254), "bool": (0, 1)}


class InputError(Exception):
    """An input flag or value file the tool rejects at Init; the message is the tool's."""


def _interpreter(model: bytes, *, xnnpack: bool) -> Any:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = Interpreter(model_content=model, num_threads=1, experimental_op_resolver_type=kind)
    interp.allocate_tensors()
    return interp


def prepare_inputs(model: bytes, layers: Sequence[tuple[str, tuple[int, ...]]],
                   value_files: Sequence[tuple[str, str]], read: Callable[[str], bytes],
                   rng: random.Random) -> list[Any] | None:
    """The input arrays benchmark_model would feed: value files (read with `read`, matched to
    inputs by their position in --input_layer, as the tool does) or random data; None when
    LiteRT cannot load the model; InputError with the tool's message when the flags or files
    are wrong."""
    import numpy as np

    try:
        details = _interpreter(model, xnnpack=False).get_input_details()
    except Exception:  # noqa: BLE001 - the analyzer accepted it; only the values are unknown
        return None
    if layers and len(layers) != len(details):
        raise InputError(f"Inputs mismatch: Model inputs #:{len(layers)} expected: "
                         f"{len(details)}")
    files = dict(value_files)
    np_rng = np.random.default_rng(rng.getrandbits(63))
    arrays: list[Any] = []
    for j, d in enumerate(details):
        dtype = np.dtype(d["dtype"])
        shape = tuple(int(x) for x in d["shape"])
        path = None
        if layers:
            name, want_shape = layers[j]
            if len(want_shape) != len(shape):
                raise InputError(f"Input tensor #{d['index']} should have {len(shape)} "
                                 "dimensions!")
            shape = want_shape
            path = files.get(name)
        nbytes = math.prod(shape) * dtype.itemsize
        if path is not None:
            try:
                blob = read(path)
            except OSError:
                raise InputError(f"Failed to read the input_layer_value_file:{path}") from None
            if len(blob) != nbytes:
                raise InputError(f"The size of {path} is {len(blob)} bytes. It should be "
                                 f"{nbytes} bytes.")
            arrays.append(np.frombuffer(blob, dtype=dtype.newbyteorder("<")).astype(dtype)
                          .reshape(shape))
            continue
        lo, hi = _RANDOM_RANGES.get(dtype.name, (0, 99))
        if dtype.kind == "f":
            arrays.append(np_rng.uniform(lo, hi, shape).astype(dtype))
        else:
            arrays.append(np_rng.integers(int(lo), int(hi), shape, endpoint=True).astype(dtype))
    return arrays


def run_numerics(profile: Profile, work: ModelWork, plan: Plan, opts: RunOptions,
                 parsed: ParsedFlags, version: tuple[int, int]) -> tuple[str, bool]:
    """(numeric behaviour, whether XNNPACK ran) of this run: the worst behaviour among the
    backends that ran nodes of the graph, from the profile's `numerics`."""
    backends = {_BACKEND_OF_EXECUTOR.get(e, "cpu") for e in plan.executor} or {"cpu"}
    worst = "exact"
    for b in sorted(backends):
        if b == "gpu":
            fp16 = opts.gpu_precision_loss_allowed
        elif b == "nnapi":
            fp16 = parsed.bool("nnapi_allow_fp16", version) if version >= (2, 3) else False
        else:
            fp16 = False
        got = profile.numeric_behaviour(b, work.dtype, fp16_allowed=fp16)
        if _SEVERITY[got] > _SEVERITY[worst]:
            worst = got
    return worst, "xnnpack" in backends


def emulate_outputs(model: bytes, inputs: Sequence[Any], *, behaviour: str, xnnpack: bool,
                    salt: bytes) -> bytes:
    """The bytes --output_filepath gets: every output tensor's raw bytes, in order.

    "exact": the LiteRT result (XNNPACK or the builtin kernels, as on the phone's CPU).
    "fp16": float inputs rounded to fp16, each real output value off by a relative
    N(0, FP16_REL_ERROR) and rounded to fp16 (quantized outputs are requantized, so they move by
    a step at most now and then). "corrupt": values drawn over the output's range, as a driver
    that hands back a garbled buffer. Noise is seeded by `salt` and the input bytes.
    """
    import numpy as np

    if behaviour not in _SEVERITY:
        raise ValueError(f"unknown numeric behaviour {behaviour!r}; known: {', '.join(_SEVERITY)}")
    interp = _interpreter(model, xnnpack=xnnpack)
    details = interp.get_input_details()
    resized = False
    for d, a in zip(details, inputs, strict=True):
        if tuple(int(x) for x in d["shape"]) != tuple(a.shape):
            interp.resize_tensor_input(d["index"], list(a.shape))
            resized = True
    if resized:
        interp.allocate_tensors()
    h = hashlib.sha256(salt)
    for d, a in zip(details, inputs, strict=True):
        h.update(a.tobytes())
        if behaviour == "fp16" and a.dtype.kind == "f":
            a = a.astype(np.float16).astype(a.dtype)
        interp.set_tensor(d["index"], a)
    interp.invoke()
    rng = np.random.default_rng(int.from_bytes(h.digest()[:8], "little"))
    blobs = []
    for d in interp.get_output_details():
        y = np.array(interp.get_tensor(d["index"]))
        scale, zero = d.get("quantization", (0.0, 0))
        quantized = scale > 0 and y.dtype.kind in "iu"
        if behaviour == "fp16" and (quantized or y.dtype.kind == "f"):
            real = (y.astype(np.float64) - zero) * scale if quantized else y.astype(np.float64)
            real = real * (1.0 + FP16_REL_ERROR * rng.standard_normal(y.shape))
            if quantized:
                info = np.iinfo(y.dtype)
                y = np.clip(np.rint(real / scale) + zero, info.min, info.max).astype(y.dtype)
            else:
                y = real.astype(np.float16).astype(y.dtype)
        elif behaviour == "corrupt":
            if y.dtype.kind in "iu":
                info = np.iinfo(y.dtype)
                lo_i, hi_i = (info.min, info.max) if quantized else (int(y.min()), int(y.max()))
                y = rng.integers(lo_i, hi_i, y.shape, endpoint=True).astype(y.dtype)
            elif y.dtype.kind == "f":
                finite = y[np.isfinite(y)]
                lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (-1, 1)
                if hi - lo < 1e-6:
                    lo, hi = lo - 1.0, hi + 1.0
                y = rng.uniform(lo, hi, y.shape).astype(y.dtype)
        blobs.append(y.astype(y.dtype.newbyteorder("<"), copy=False).tobytes())
    return b"".join(blobs)


def _write_failure(out: _Out, o: str, e: str) -> None:
    lines = _split_lines(o)
    loaded = _find(lines, "Loaded model")
    if loaded < 0:
        out.write(o, e)
        return
    out.write("".join(lines[: loaded + 1]), e)
    out.write("".join(lines[loaded + 1:]), "")


class _Loops:
    """The warmup and regular loops in simulated time, heating the phone while they run."""

    def __init__(self, ctx: Ctx, profile: Profile, work: ModelWork, plan: Plan,
                 opts: RunOptions, parsed: ParsedFlags, version: tuple[int, int],
                 rng: random.Random) -> None:
        import numpy as np

        self.ctx = ctx
        self.profile = profile
        self.work = work
        self.plan = plan
        self.opts = opts
        self.clock = ctx.phone.clock
        self.thermal = ctx.phone.thermal
        self.np_rng = np.random.default_rng(rng.getrandbits(63))
        self.cv = profile.perf.noise_cv
        self.sigma = math.sqrt(math.log(1 + self.cv ** 2))
        self.run_delay = float(parsed.get("run_delay", version))
        freq = float(parsed.get("run_frequency", version)) if version >= (2, 4) else -1.0
        if freq > 0:
            self.run_delay = -1.0
        self.run_frequency = freq
        self.dry = parsed.bool("dry_run", version) if version >= (2, 6) else False
        self.cursor = self.clock.now_s()
        self._costs: dict[float, CostModel] = {}
        cpus = _busy_cpus(profile, opts)
        gpu_share = npu_share = 0.0
        c = invoke_cost(profile, work, plan, opts)
        if c.total_us > 0:
            gpu_share = c.gpu_us / c.total_us
            npu_share = c.nnapi_us / c.total_us if any(
                b == "nnapi" for b, _ in plan.partitions) else 0.0
        if c.cpu_us < 0.2 * c.total_us:
            cpus = cpus[:1]  # the CPU only feeds the accelerator
        self.load = Load(cpus=cpus, gpu=gpu_share, npu=npu_share)
        self.token: int | None = self.thermal.add_load(self.load)

    def stop(self) -> None:
        if self.token is not None:
            self.thermal.remove_load(self.token)
            self.token = None

    def cost(self, cap: float) -> CostModel:
        key = round(cap, 3)
        c = self._costs.get(key)
        if c is None:
            c = invoke_cost(self.profile, self.work, self.plan, self.opts, cap)
            self._costs[key] = c
        return c

    def loop(self, min_runs: int, min_secs: float, max_secs: float, *, first: bool) -> list[int]:
        """BenchmarkModel::Run: (run < min_runs || now < min_finish) && now <= max_finish."""
        if self.dry:
            return []
        samples: list[int] = []
        start = self.cursor
        min_finish = start + min_secs
        max_finish = start + max_secs
        run = 0
        while (run < min_runs or self.cursor < min_finish) and self.cursor <= max_finish:
            self.ctx.check()
            cap = self.thermal.cap_fraction()
            base = self.cost(cap).total_us
            # how many runs fit before we look at the thermal state again (~50 ms simulated)
            if self.run_delay > 0 or self.run_frequency > 0:
                batch = 1
            else:
                batch = max(1, min(4096, int(0.05e6 / max(base, 1.0))))
                need = max(min_runs - run, 0)
                if self.cursor + batch * base / 1e6 > min_finish and need < batch:
                    batch = max(1, need, int((min_finish - self.cursor) * 1e6 / base) + 1)
            noise = self.np_rng.lognormal(-self.sigma ** 2 / 2, self.sigma, batch)
            if self.cv > 0:
                spikes = self.np_rng.random(batch) < 0.01
                noise = noise * (1 + spikes * self.np_rng.uniform(0.1, 0.4, batch))
            for k in range(batch):
                lat = base * float(noise[k])
                if first and run == 0 and not samples:
                    lat *= self._first_factor()
                samples.append(max(1, int(lat)))
                self.cursor += lat / 1e6
                run += 1
                if not ((run < min_runs or self.cursor < min_finish)
                        and self.cursor <= max_finish):
                    break
            self._sync()
            if self.run_delay > 0 or self.run_frequency > 0:
                delay = self.run_delay if self.run_delay > 0 else max(
                    0.0, 1.0 / self.run_frequency - samples[-1] / 1e6)
                if delay > 0:
                    self.stop()
                    self.cursor += delay
                    self._sync()
                    self.token = self.thermal.add_load(self.load)
        self._sync()
        return samples

    def _first_factor(self) -> float:
        if any(b == "gpu" for b, _ in self.plan.partitions):
            return 2.6
        if any(b.startswith("nnapi") for b, _ in self.plan.partitions):
            return 1.8
        return 1.35

    def _sync(self) -> None:
        """Keep the real clock in step with the simulated cursor."""
        try:
            self.clock.sleep_until(self.cursor, self.ctx.proc.event)
        except Interrupted:
            self.ctx.check()
            raise


def _busy_cpus(profile: Profile, opts: RunOptions) -> tuple[int, ...]:
    allowed = [c for c in range(profile.cpu.cpu_count) if opts.affinity >> c & 1]
    allowed.sort(key=lambda c: (-profile.cpu.cluster_of(c).rel_speed, -c))
    return tuple(allowed[: max(1, opts.threads)])


def describe_truth(profile: Profile, model: bytes | ModelWork, *,
                   delegates: Sequence[str] = ("cpu", "xnnpack", "gpu", "nnapi"),
                   threads: Sequence[int] = (1, 4)) -> Mapping[tuple[str, int], float | None]:
    """Noise-free latency (µs) per (delegate, threads); None where the run fails."""
    out: dict[tuple[str, int], float | None] = {}
    for d in delegates:
        for t in threads:
            try:
                out[(d, t)] = expected_latency_us(profile, model, delegate=d, threads=t)
            except ValueError:
                out[(d, t)] = None
    return out
