"""Output fidelity: does a fast configuration still give the right answers?

Every variant x delegate runs on the same fixed inputs through benchmark_model's own
`--input_layer_value_files`, dumps its outputs with `--output_filepath`, and is compared with the
fp32 variant run on the host by the LiteRT interpreter with the plain CPU kernels (no XNNPACK):
maximum and mean absolute error, cosine similarity, and top-1/top-5 agreement for
classifier-like outputs, judged against the sweep's `fidelity.tolerances`.

Layers:
- pure (no I/O, golden-file tested): `logical_inputs`, `encode`, `decode`, `value_file_bytes`,
  `input_flags`, `parse_output_file`, `compare`, `verdict`, `select_cases`;
- host (reads model files, runs the LiteRT interpreter in this process): `read_model_io`,
  `run_host`, `build_reference`, `build_references`;
- device (through the `Device` protocol only: push, shell, pull): `measure`, `measure_cases`.

"Same logical input": inputs are drawn once per (seed, input number, tensor position) as real
values; a float tensor gets them as float32, a quantized tensor gets them quantized with its own
scale and zero point. So fp32, fp16, dynamic-range and int8 variants all see the same picture,
and the rounding of the int8 input is part of the int8 variant's error, as it is in an app.

A failure is a row (status "failed" or "skipped" with the reason), never an exception.
"""

from __future__ import annotations

import hashlib
import logging
import math
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from farm.benchmark_model import build_argv, parse_output
from farm.devices import Device
from farm.errors import BenchmarkError, DeviceError, FarmError
from farm.models import Case, DelegateSpec, FidelitySpec, ModelVariant, RunParams, Tolerance

log = logging.getLogger(__name__)

# Real-valued inputs are drawn from this range: what an image model sees after the usual
# (x - 127.5) / 127.5 normalisation, and inside the int8 input range of such models.
FLOAT_RANGE: tuple[float, float] = (-1.0, 1.0)
# Integer (not quantized) inputs such as token ids: benchmark_model's own default range.
INT_RANGE: tuple[int, int] = (0, 99)
TOP_K = 5
REMOTE_DIR = "fidelity"
# flags that an old benchmark_model does not know; an unconsumed one means "cannot check"
NEEDED_FLAGS = ("input_layer_value_files", "output_filepath")


class FidelityError(FarmError):
    """A model's inputs or outputs cannot be used for a fidelity check."""


# --------------------------------------------------------------------------- tensors


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One input or output tensor: name, numpy dtype name, shape and affine quantization."""

    name: str
    dtype: str  # numpy dtype name: float32, float16, int8, uint8, int16, int32, int64, bool
    shape: tuple[int, ...]
    scale: float = 0.0  # 0: not quantized
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        """Whether values are stored as `round(x / scale) + zero_point`."""
        return self.scale > 0 and self.dtype in ("int8", "uint8", "int16")

    @property
    def real(self) -> bool:
        """Whether the tensor carries real values (float, or quantized)."""
        return self.dtype.startswith("float") or self.quantized

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(math.prod(self.shape))

    @property
    def nbytes(self) -> int:
        """Bytes of the raw tensor."""
        return self.size * np.dtype(self.dtype).itemsize

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape),
                "scale": self.scale, "zero_point": self.zero_point}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorInfo:
        """Inverse of `to_dict`."""
        return cls(str(d["name"]), str(d["dtype"]), tuple(int(x) for x in d["shape"]),
                   float(d.get("scale", 0.0)), int(d.get("zero_point", 0)))


@dataclass(frozen=True, slots=True)
class ModelIO:
    """A model's input and output tensors, in interpreter order."""

    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelIO:
        """Inverse of `to_dict`."""
        return cls(tuple(TensorInfo.from_dict(t) for t in d["inputs"]),
                   tuple(TensorInfo.from_dict(t) for t in d["outputs"]))


def _info(detail: Mapping[str, Any]) -> TensorInfo:
    scale, zero = detail.get("quantization", (0.0, 0))
    return TensorInfo(str(detail["name"]), np.dtype(detail["dtype"]).name,
                      tuple(int(x) for x in detail["shape"]), float(scale), int(zero))


def _interpreter(path: Path, *, xnnpack: bool = False) -> Any:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = (OpResolverType.AUTO if xnnpack
            else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp = Interpreter(model_path=str(path), num_threads=1,
                         experimental_op_resolver_type=kind)
    interp.allocate_tensors()
    return interp


def read_model_io(path: Path) -> ModelIO:
    """The input and output tensors of a .tflite (loads it in LiteRT); FidelityError if it
    cannot be loaded or has tensors farm cannot feed or read (strings)."""
    try:
        interp = _interpreter(Path(path))
        io = ModelIO(tuple(_info(d) for d in interp.get_input_details()),
                     tuple(_info(d) for d in interp.get_output_details()))
    except Exception as exc:  # noqa: BLE001 - any loader failure is reported as data
        raise FidelityError(f"{path}: cannot load the model in LiteRT: {exc}") from None
    for kind, tensors in (("input", io.inputs), ("output", io.outputs)):
        for t in tensors:
            if np.dtype(t.dtype).kind not in "fiub":
                raise FidelityError(f"{path}: {kind} {t.name!r} is of type {t.dtype}; only "
                                    "numeric tensors can be checked")
    return io


# --------------------------------------------------------------------------- inputs (pure)


def logical_inputs(io: ModelIO, *, num_inputs: int, seed: int,
                   float_range: tuple[float, float] = FLOAT_RANGE
                   ) -> tuple[tuple[np.ndarray, ...], ...]:
    """`num_inputs` fixed inputs as real values (float64), one array per input tensor.

    Each array depends only on (seed, input number, tensor position, shape, real-or-integer),
    never on the dtype or quantization, so every variant of a model gets the same values.
    """
    out = []
    for k in range(num_inputs):
        row = []
        for j, t in enumerate(io.inputs):
            rng = np.random.default_rng([seed, k, j])
            if t.real:
                lo, hi = float_range
                row.append(rng.uniform(lo, hi, t.shape))
            elif t.dtype == "bool":
                row.append(rng.integers(0, 1, t.shape, endpoint=True).astype(np.float64))
            else:
                row.append(rng.integers(INT_RANGE[0], INT_RANGE[1], t.shape,
                                        endpoint=True).astype(np.float64))
        out.append(tuple(row))
    return tuple(out)


def encode(t: TensorInfo, values: np.ndarray) -> np.ndarray:
    """Real values as the tensor stores them: cast, or quantized with its scale/zero point."""
    dtype = np.dtype(t.dtype)
    v = np.asarray(values, dtype=np.float64).reshape(t.shape)
    if t.quantized:
        info = np.iinfo(dtype)
        q: np.ndarray = np.clip(np.rint(v / t.scale) + t.zero_point, info.min, info.max)
        return q.astype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(v), info.min, info.max).astype(dtype)
    return v.astype(dtype)


def decode(t: TensorInfo, raw: np.ndarray) -> np.ndarray:
    """Stored values as real values (float64): dequantized when the tensor is quantized."""
    v = np.asarray(raw).astype(np.float64)
    if t.quantized:
        return (v - t.zero_point) * t.scale
    return v


def value_file_bytes(t: TensorInfo, values: np.ndarray) -> bytes:
    """An input value file for benchmark_model: the tensor's raw little-endian bytes."""
    arr = encode(t, values)
    return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


def _escape(name: str) -> str:
    return name.replace(":", "::")


def input_flags(io: ModelIO, remote_paths: Sequence[str]) -> list[str]:
    """`--input_layer`, `--input_layer_shape` and `--input_layer_value_files` for one input.

    benchmark_model matches value files to tensors by the position of their name in
    --input_layer (which must list every input, in interpreter order, with its shape).
    """
    if len(remote_paths) != len(io.inputs):
        raise FidelityError(f"{len(remote_paths)} value files for {len(io.inputs)} inputs")
    for t in io.inputs:
        if not t.name or "," in t.name:
            raise FidelityError(f"input tensor name {t.name!r} cannot be passed to "
                                "--input_layer (empty or contains ',')")
        if not t.shape or any(d < 1 for d in t.shape):
            raise FidelityError(f"input {t.name!r} has a dynamic shape {list(t.shape)}")
    names = ",".join(t.name for t in io.inputs)
    shapes = ":".join(",".join(str(d) for d in t.shape) for t in io.inputs)
    files = ",".join(f"{_escape(t.name)}:{p}" for t, p in zip(io.inputs, remote_paths,
                                                              strict=True))
    return [f"--input_layer={names}", f"--input_layer_shape={shapes}",
            f"--input_layer_value_files={files}"]


# --------------------------------------------------------------------------- outputs (pure)


def parse_output_file(data: bytes, outputs: Sequence[TensorInfo]) -> tuple[np.ndarray, ...]:
    """The bytes `--output_filepath` wrote (every output tensor's raw bytes, in interpreter
    order) as real values (float64, dequantized); FidelityError if the size is wrong."""
    want = sum(t.nbytes for t in outputs)
    if len(data) != want:
        shown = ", ".join(f"{t.name} {t.dtype}{list(t.shape)}" for t in outputs)
        raise FidelityError(f"the output file has {len(data)} bytes; the model's outputs "
                            f"({shown}) take {want}")
    arrays = []
    pos = 0
    for t in outputs:
        dtype = np.dtype(t.dtype).newbyteorder("<")
        raw = np.frombuffer(data, dtype=dtype, count=t.size, offset=pos).reshape(t.shape)
        arrays.append(decode(t, raw))
        pos += t.nbytes
    return tuple(arrays)


@dataclass(frozen=True, slots=True)
class Comparison:
    """How far a candidate's outputs are from the reference's, over every fixed input.

    Errors are absolute, in the outputs' real units (dequantized). Cosine similarity is taken
    per input over all outputs flattened together; top-k agreement is over the rows of the
    classifier-like outputs (rank 2, last dimension > 1); top-5 only where there are more
    than 5 classes.
    """

    n_inputs: int
    max_abs_error: float
    mean_abs_error: float
    cosine_min: float
    cosine_mean: float
    top1_agreement: float | None
    top5_agreement: float | None
    nonfinite: int  # candidate values that are NaN/inf where the reference is finite
    cosines: tuple[float, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"n_inputs": self.n_inputs, "max_abs_error": self.max_abs_error,
                "mean_abs_error": self.mean_abs_error, "cosine_min": self.cosine_min,
                "cosine_mean": self.cosine_mean, "top1_agreement": self.top1_agreement,
                "top5_agreement": self.top5_agreement, "nonfinite": self.nonfinite,
                "cosines": list(self.cosines)}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.clip(np.dot(a, b) / (na * nb), -1.0, 1.0))


def _topk_rows(ref: np.ndarray, cand: np.ndarray) -> tuple[list[float], list[float]]:
    """Per row: top-1 hit (0/1) and top-5 overlap (fraction), counting ties as hits.

    Quantized outputs often tie (a softmax at 1/256 steps): the reference's top class counts as
    found when the candidate gives it the candidate's maximum, and a candidate top-5 includes
    every class tied with its 5th value, so tie-breaking order is never scored as an error.
    """
    top1: list[float] = []
    top5: list[float] = []
    classes = ref.shape[-1]
    for r, c in zip(ref, cand, strict=True):
        best = int(np.argmax(r))
        top1.append(1.0 if c[best] >= np.max(c) else 0.0)
        if classes > TOP_K:
            ref_top = set(np.argsort(-r, kind="stable")[:TOP_K].tolist())
            fifth = np.sort(c)[::-1][TOP_K - 1]
            cand_top = set(np.nonzero(c >= fifth)[0].tolist())
            top5.append(len(ref_top & cand_top) / TOP_K)
    return top1, top5


def compare(reference: Sequence[Sequence[np.ndarray]],
            candidate: Sequence[Sequence[np.ndarray]]) -> Comparison:
    """Compare outputs (per input, per output tensor; real values) with the reference's."""
    if len(reference) != len(candidate) or not reference:
        raise FidelityError(f"{len(candidate)} candidate inputs for {len(reference)} "
                            "reference inputs")
    max_err = 0.0
    err_sum = 0.0
    n_elems = 0
    nonfinite = 0
    cosines: list[float] = []
    top1: list[float] = []
    top5: list[float] = []
    for ref_row, cand_row in zip(reference, candidate, strict=True):
        if len(ref_row) != len(cand_row):
            raise FidelityError(f"{len(cand_row)} candidate outputs for {len(ref_row)}")
        flat_r, flat_c = [], []
        for r, c in zip(ref_row, cand_row, strict=True):
            r = np.asarray(r, dtype=np.float64)
            c = np.asarray(c, dtype=np.float64)
            if r.shape != c.shape:
                raise FidelityError(f"output shape {list(c.shape)} differs from the "
                                    f"reference's {list(r.shape)}")
            flat_r.append(r.ravel())
            flat_c.append(c.ravel())
            if r.ndim == 2 and r.shape[-1] > 1:
                t1, t5 = _topk_rows(np.nan_to_num(r), np.nan_to_num(c, nan=-np.inf))
                top1 += t1
                top5 += t5
        fr, fc = np.concatenate(flat_r), np.concatenate(flat_c)
        finite = np.isfinite(fr)
        bad = finite & ~np.isfinite(fc)
        nonfinite += int(bad.sum())
        ok = finite & np.isfinite(fc)
        diff = np.abs(fr[ok] - fc[ok])
        if diff.size:
            max_err = max(max_err, float(diff.max()))
            err_sum += float(diff.sum())
        n_elems += int(ok.sum())
        cosines.append(_cosine(fr[ok], fc[ok]) if not bad.any() else 0.0)
    if nonfinite:
        max_err = math.inf
    return Comparison(
        n_inputs=len(reference), max_abs_error=max_err,
        mean_abs_error=err_sum / n_elems if n_elems else 0.0,
        cosine_min=min(cosines), cosine_mean=sum(cosines) / len(cosines),
        top1_agreement=sum(top1) / len(top1) if top1 else None,
        top5_agreement=sum(top5) / len(top5) if top5 else None,
        nonfinite=nonfinite, cosines=tuple(cosines))


def verdict(c: Comparison, tol: Tolerance) -> tuple[bool, str]:
    """Whether a comparison is within a tolerance, and why not ("" when it is).

    A bound the outputs cannot be judged on (top-k for a non-classifier) is not applied.
    """
    reasons: list[str] = []
    if c.nonfinite:
        reasons.append(f"{c.nonfinite} non-finite output values (NaN/inf)")
    if tol.max_abs_error is not None and not c.max_abs_error <= tol.max_abs_error:
        reasons.append(f"max abs error {c.max_abs_error:.4g} > {tol.max_abs_error:g}")
    if tol.min_cosine is not None and not c.cosine_min >= tol.min_cosine:
        reasons.append(f"min cosine {c.cosine_min:.4f} < {tol.min_cosine:g}")
    if (tol.min_top1_agreement is not None and c.top1_agreement is not None
            and c.top1_agreement < tol.min_top1_agreement):
        reasons.append(f"top-1 agreement {c.top1_agreement:.0%} < "
                       f"{tol.min_top1_agreement:.0%}")
    if (tol.min_top5_agreement is not None and c.top5_agreement is not None
            and c.top5_agreement < tol.min_top5_agreement):
        reasons.append(f"top-5 agreement {c.top5_agreement:.0%} < "
                       f"{tol.min_top5_agreement:.0%}")
    return not reasons, "; ".join(reasons)


def select_cases(cases: Iterable[Case]) -> list[Case]:
    """One case per device x model x quantization x delegate: the smallest thread count
    (fewer threads never change the arithmetic of a correct kernel, and cost the least)."""
    best: dict[tuple[str, str, str, str], Case] = {}
    for c in cases:
        key = (c.device, c.model, c.quantization, c.delegate)
        if key not in best or c.threads < best[key].threads:
            best[key] = c
    return sorted(best.values(), key=lambda c: (c.device, c.model, c.quantization, c.delegate))


# --------------------------------------------------------------------------- reference (host)


def run_host(path: Path, io: ModelIO, inputs: Sequence[Sequence[np.ndarray]], *,
             xnnpack: bool = False) -> tuple[tuple[np.ndarray, ...], ...]:
    """Run a model on the host LiteRT interpreter (plain CPU kernels unless `xnnpack`) on
    logical inputs; the outputs as real values."""
    interp = _interpreter(Path(path), xnnpack=xnnpack)
    ins = interp.get_input_details()
    outs = interp.get_output_details()
    results = []
    for row in inputs:
        for detail, t, values in zip(ins, io.inputs, row, strict=True):
            interp.set_tensor(detail["index"], encode(t, values))
        interp.invoke()
        results.append(tuple(decode(t, interp.get_tensor(d["index"]))
                             for t, d in zip(io.outputs, outs, strict=True)))
    return tuple(results)


@dataclass(frozen=True, eq=False)
class Reference:
    """The fp32 variant's outputs on the fixed inputs, from the host interpreter (no XNNPACK)."""

    model: str
    variant_sha256: str
    io: ModelIO
    seed: int
    inputs: tuple[tuple[np.ndarray, ...], ...]  # logical (real) values per input, per tensor
    outputs: tuple[tuple[np.ndarray, ...], ...]  # real values per input, per output tensor


def build_reference(model: str, fp32: ModelVariant, spec: FidelitySpec) -> Reference:
    """Run the fp32 variant on the host; FidelityError if it cannot be used."""
    if fp32.status != "ok" or not fp32.path:
        raise FidelityError(f"{model}: no fp32 variant to compare with"
                            + (f" ({fp32.error})" if fp32.error else ""))
    io = read_model_io(Path(fp32.path))
    if spec.num_inputs < 1:
        raise FidelityError(f"fidelity.num_inputs must be >= 1, got {spec.num_inputs}")
    inputs = logical_inputs(io, num_inputs=spec.num_inputs, seed=spec.seed)
    try:
        outputs = run_host(Path(fp32.path), io, inputs)
    except Exception as exc:  # noqa: BLE001 - the interpreter's failure becomes the reason
        raise FidelityError(f"{model}: the fp32 reference run failed: {exc}") from None
    return Reference(model, fp32.sha256, io, spec.seed, inputs, outputs)


def build_references(variants: Mapping[tuple[str, str], ModelVariant],
                     spec: FidelitySpec) -> dict[str, Reference | str]:
    """A reference per model (keyed by model name), or the reason there is none."""
    out: dict[str, Reference | str] = {}
    for model in sorted({m for m, _ in variants}):
        fp32 = variants.get((model, "fp32"))
        if fp32 is None:
            out[model] = f"{model}: no fp32 variant in this sweep to compare with"
            continue
        try:
            out[model] = build_reference(model, fp32, spec)
        except FidelityError as exc:
            out[model] = str(exc)
    return out


# --------------------------------------------------------------------------- device driver


def fidelity_params(timeout_s: float) -> RunParams:
    """One timed run, no warm-up: only the outputs matter here."""
    return RunParams(warmup_runs=0, warmup_min_secs=0.0, num_runs=1, min_secs=0.0,
                     max_secs=max(1.0, timeout_s), report_peak_memory=False,
                     timeout_s=timeout_s, require_full_delegation=False)


def _row(run_id: str, device: str, variant: ModelVariant, delegate: str, threads: int,
         tol: Tolerance) -> dict[str, Any]:
    return {"run_id": run_id, "device": device, "model": variant.model,
            "quantization": variant.quantization, "delegate": delegate, "threads": threads,
            "variant_sha256": variant.sha256, "status": "failed", "error": "",
            "n_inputs": 0, "max_abs_error": None, "mean_abs_error": None, "cosine_min": None,
            "cosine_mean": None, "top1_agreement": None, "top5_agreement": None,
            "within_tolerance": None, "tolerance_json": tol.to_dict(), "details_json": {}}


def _compatible(io: ModelIO, ref: ModelIO) -> str:
    if len(io.inputs) != len(ref.inputs) or len(io.outputs) != len(ref.outputs):
        return (f"{len(io.inputs)} inputs / {len(io.outputs)} outputs, the fp32 reference has "
                f"{len(ref.inputs)} / {len(ref.outputs)}")
    for kind, mine, theirs in (("input", io.inputs, ref.inputs),
                               ("output", io.outputs, ref.outputs)):
        for a, b in zip(mine, theirs, strict=True):
            if a.shape != b.shape:
                return (f"{kind} {a.name!r} has shape {list(a.shape)}, the fp32 reference's "
                        f"{b.name!r} has {list(b.shape)}")
    return ""


def _unsupported(unconsumed: Sequence[str]) -> str:
    for flag in unconsumed:
        name = flag.lstrip("-").partition("=")[0]
        if name in NEEDED_FLAGS:
            return (f"this benchmark_model does not know --{name} (unconsumed flag; "
                    "--output_filepath needs TF 2.8 or newer): outputs cannot be checked")
    return ""


def measure(device: Device, binary_argv: Sequence[str], remote_model_path: str,
            variant: ModelVariant, delegate: DelegateSpec, threads: int, spec: FidelitySpec,
            reference: Reference | str, workdir: Path | None = None, *, run_id: str = "",
            device_name: str | None = None, timeout_s: float = 120.0) -> list[dict[str, Any]]:
    """Run one variant x delegate on the fixed inputs and compare it with the reference.

    Returns one row (a dict keyed by store.FIDELITY_COLUMNS) in a list. Pushes the input value
    files (content-addressed, so variants with the same input dtype share them), runs
    benchmark_model once per input (`--num_runs=1 --warmup_runs=0`, the delegate's flags,
    `--output_filepath`), pulls each output file and compares. Never raises for one bad config.
    """
    tol = spec.tolerance(variant.quantization)
    row = _row(run_id, device_name or device.serial, variant, delegate.name, threads, tol)
    if isinstance(reference, str):
        row["error"] = f"no fp32 reference: {reference}"
        return [row]
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="farm-fidelity-") as tmp:
            return _measure(device, binary_argv, remote_model_path, variant, delegate, threads,
                            tol, reference, Path(tmp), row, timeout_s)
    Path(workdir).mkdir(parents=True, exist_ok=True)
    return _measure(device, binary_argv, remote_model_path, variant, delegate, threads, tol,
                    reference, Path(workdir), row, timeout_s)


def _measure(device: Device, binary_argv: Sequence[str], remote_model_path: str,
             variant: ModelVariant, delegate: DelegateSpec, threads: int, tol: Tolerance,
             ref: Reference, workdir: Path, row: dict[str, Any],
             timeout_s: float) -> list[dict[str, Any]]:
    details: dict[str, Any] = {"seed": ref.seed, "float_range": list(FLOAT_RANGE),
                               "reference_sha256": ref.variant_sha256,
                               "reference": "host LiteRT interpreter, fp32, CPU kernels "
                                            "(no XNNPACK)"}
    row["details_json"] = details
    if variant.status != "ok" or not variant.path:
        row["error"] = f"variant not available: {variant.error or variant.status}"
        return [row]
    try:
        io = read_model_io(Path(variant.path))
    except FidelityError as exc:
        row["error"] = str(exc)
        return [row]
    problem = _compatible(io, ref.io)
    if problem:
        row["error"] = f"outputs not comparable with the fp32 reference: {problem}"
        return [row]
    details["io"] = io.to_dict()
    remote_dir = f"{device.workdir}/{REMOTE_DIR}"
    out_remote = (f"{remote_dir}/out_{variant.sha256[:16] or 'model'}_{delegate.name}"
                  f"_t{threads}.bin")
    candidate: list[tuple[np.ndarray, ...]] = []
    delegations: list[str] = []
    for k, logical in enumerate(ref.inputs):
        try:
            remotes = []
            for t, values in zip(io.inputs, logical, strict=True):
                blob = value_file_bytes(t, values)
                name = f"in_{hashlib.sha256(blob).hexdigest()[:24]}.bin"
                local = workdir / name
                if not local.exists():
                    local.write_bytes(blob)
                device.push(local, f"{remote_dir}/{name}")
                remotes.append(f"{remote_dir}/{name}")
            argv = build_argv(binary_argv, graph=remote_model_path, threads=threads,
                              params=fidelity_params(timeout_s),
                              delegate_flags=delegate.flags,
                              extra=[*input_flags(io, remotes), f"--output_filepath={out_remote}"])
            device.shell(["rm", "-f", out_remote], timeout_s=30.0)  # never read a stale file
            result = device.shell(argv, timeout_s=timeout_s)
        except (DeviceError, BenchmarkError, FidelityError) as exc:
            row["error"] = f"input {k}: {exc}"
            return [row]
        parsed = parse_output(result.output, exit_code=result.returncode)
        if k == 0:
            details["argv"] = list(argv)
        unsupported = _unsupported(parsed.unconsumed_flags)
        if unsupported:
            row["status"], row["error"] = "skipped", unsupported
            return [row]
        if result.timed_out:
            row["error"] = f"input {k}: timed out after {timeout_s:g} s"
            return [row]
        if not parsed.success or result.returncode not in (0, None):
            reason = parsed.error or f"benchmark_model exited {result.returncode}"
            row["error"] = f"input {k}: {reason}"
            details["output_tail"] = result.output[-2000:]
            return [row]
        delegations.append(parsed.delegation or "")
        local_out = workdir / f"out_{k}.bin"
        missing = ""
        try:
            device.pull(out_remote, local_out)
        except DeviceError as exc:
            missing = exc.cause
        if not missing and not local_out.is_file():
            # adbutils' sync pull of a path that does not exist makes an empty local directory
            missing = "No such file or directory"
        if missing:
            # A successful run that wrote nothing: binaries before TF 2.8 (and TF < 2.3,
            # which ignore unknown flags silently) do not know --output_filepath.
            row["status"] = "skipped"
            row["error"] = ("benchmark_model wrote no --output_filepath file (binaries before "
                            f"TF 2.8 do not support it): {missing}")
            return [row]
        try:
            candidate.append(parse_output_file(local_out.read_bytes(), io.outputs))
        except (FidelityError, OSError) as exc:
            row["error"] = f"input {k}: {exc}"
            return [row]
    cmp = compare(ref.outputs, candidate)
    within, reason = verdict(cmp, tol)
    details["delegation"] = delegations
    details["cosines"] = list(cmp.cosines)
    details["nonfinite"] = cmp.nonfinite
    row.update(status="ok", error=reason, n_inputs=cmp.n_inputs,
               max_abs_error=_finite_or_none(cmp.max_abs_error),
               mean_abs_error=cmp.mean_abs_error, cosine_min=cmp.cosine_min,
               cosine_mean=cmp.cosine_mean, top1_agreement=cmp.top1_agreement,
               top5_agreement=cmp.top5_agreement, within_tolerance=int(within))
    if not math.isfinite(cmp.max_abs_error):
        details["max_abs_error"] = "inf"
    return [row]


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def measure_cases(device: Device, binary_argv: Sequence[str], remote_models: Mapping[str, str],
                  cases: Sequence[Case], variants: Mapping[tuple[str, str], ModelVariant],
                  delegates: Mapping[str, DelegateSpec], spec: FidelitySpec,
                  references: Mapping[str, Reference | str], *, run_id: str,
                  timeout_s: float = 120.0, workdir: Path | None = None,
                  stop: Callable[[], bool] | None = None) -> list[dict[str, Any]]:
    """Fidelity rows for one device's cases (one per model x quantization x delegate, at the
    smallest thread count); `remote_models` maps variant sha256 to its path on the device."""
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="farm-fidelity-") as tmp:
        scratch = Path(workdir) if workdir is not None else Path(tmp)
        for case in select_cases(cases):
            if stop is not None and stop():
                break
            variant = variants.get((case.model, case.quantization))
            delegate = delegates.get(case.delegate)
            if variant is None or delegate is None:
                continue
            remote = remote_models.get(variant.sha256, "")
            reference = references.get(case.model, f"{case.model}: no reference built")
            if not remote and variant.status == "ok":
                rows += [_row(run_id, case.device, variant, case.delegate, case.threads,
                              spec.tolerance(case.quantization)) | {
                    "error": "the variant was not staged on the device"}]
                continue
            rows += measure(device, binary_argv, remote, variant, delegate, case.threads,
                            spec, reference, scratch / case.case_id, run_id=run_id,
                            device_name=case.device, timeout_s=timeout_s)
            log.info("fidelity %s: %s", case.label(), rows[-1]["status"])
    return rows
