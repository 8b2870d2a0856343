"""Model variants: each source x quantization as a .tflite, converted once and cached by content.

I/O: reads model sources and calibration data from the local disk, reads and writes the variant
cache (`cache_dir/<key>.tflite` + `<key>.json`, each written to a temp file and renamed), and
starts `python -m farm.convert_worker` child processes. Never touches a device.

TensorFlow is imported only inside that worker: conversion needs about 1 GB of RAM and several
seconds of import, so neither this module nor anything else in the parent process imports it.
All conversions of one `build_variants` call go to one worker, so TF is imported once; if it
crashes or times out, the job it was on fails with the stderr tail and the remaining jobs go on
in a fresh worker. When every variant is cached, no worker starts at all: the converter version
in the cache key comes from the installed package metadata, not from importing TF.

Cache key = sha256 over: the source content (file sha256; for a SavedModel directory a hash over
sorted relative paths and file hashes; for a Keras architecture its arch, input shape, seed,
options and the Keras version), the converter version, the quantization, the calibration content
fingerprint (int8 and int16x8 only; see `farm.calibration.calibration_fingerprint`) and
`RECIPE_VERSION`. Failed conversions are not cached: a rerun tries them again.

A `.tflite` source is used as is and never converted. Its tensors say what it is ("fp32",
"fp16", "dynamic", "int8" or "int16x8", see `detect_quantization`); the requested quantization
equal to that gets the file (copied into the cache under its own sha256), and every other
requested quantization becomes a failed variant saying that a .tflite cannot be re-quantized.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import queue
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from farm.calibration import calibration_fingerprint, calibration_label
from farm.errors import ConfigError, ConversionError
from farm.hashing import file_sha256
from farm.models import MODEL_KINDS, QUANTIZATIONS, CalibrationSpec, ModelSource, ModelVariant

log = logging.getLogger(__name__)

# Bump when the conversion recipe changes (converter flags, Keras init, calibration feeding):
# every cached variant then converts again.
RECIPE_VERSION = 1
CACHE_SCHEMA_VERSION = 1
# Quantizations that run a representative dataset through the model.
CALIBRATED: frozenset[str] = frozenset({"int8", "int16x8"})
KERAS_KINDS: frozenset[str] = frozenset({"keras_file", "keras_app"})
TF_DISTRIBUTIONS: tuple[str, ...] = (
    "tensorflow", "tensorflow-cpu", "tensorflow-macos", "tf-nightly",
)
_STDERR_TAIL_CHARS = 2000
_ERROR_CHARS = 4000


@dataclass(frozen=True, slots=True)
class VariantEvent:
    """Progress of `build_variants`, for the CLI to render.

    kind: "cached" (served from the cache), "worker_started", "loading" (worker reads a source),
    "converting", "converted", "failed", "worker_lost" (crash or timeout; detail says which).
    """

    kind: str
    model: str = ""
    quantization: str = ""
    detail: str = ""
    conversion_s: float = 0.0


# --------------------------------------------------------------------------------------------
# Content hashes


def sha256_tree(root: Path) -> str:
    """A deterministic hash of a directory: sorted relative POSIX paths and their files' sha256.

    Timestamps and permissions do not enter, so a copied SavedModel hashes the same.
    """
    h = hashlib.sha256()
    files = sorted(
        (p for p in root.rglob("*") if p.is_file()),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    for p in files:
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + file_sha256(p).encode() + b"\n")
    return h.hexdigest()


def _canonical_sha256(material: object) -> str:
    blob = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def _installed_version(*distributions: str) -> str | None:
    for name in distributions:
        with suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(name)
    return None


def installed_converter_version() -> str | None:
    """The installed TensorFlow version from package metadata (no import), or None."""
    return _installed_version(*TF_DISTRIBUTIONS)


def source_fingerprint(source: ModelSource) -> str:
    """The source's content sha256 (see module docstring); raises ConfigError if it is missing."""
    if source.kind not in MODEL_KINDS:
        raise ConfigError(
            f"model {source.name!r}: kind {source.kind!r}; allowed: {', '.join(MODEL_KINDS)}"
        )
    if source.kind == "keras_app":
        if not source.arch:
            raise ConfigError(f"model {source.name!r}: keras_app needs an arch, e.g. MobileNetV2")
        if len(source.input_shape) != 3:
            raise ConfigError(
                f"model {source.name!r}: keras_app needs input_shape (H, W, C), got "
                f"{tuple(source.input_shape)}"
            )
        return _canonical_sha256({
            "arch": _arch_name(source.arch),
            "input_shape": list(source.input_shape),
            "seed": source.seed,
            "options": sorted(([str(k), v] for k, v in source.options), key=lambda kv: kv[0]),
            "keras": _installed_version("keras"),
            "recipe": RECIPE_VERSION,
        })
    path = Path(source.path)
    if source.kind == "saved_model":
        if not path.is_dir():
            raise ConfigError(f"model {source.name!r}: {path}: SavedModel directory not found")
        if not any((path / n).is_file() for n in ("saved_model.pb", "saved_model.pbtxt")):
            raise ConfigError(
                f"model {source.name!r}: {path}: not a SavedModel directory (no saved_model.pb)"
            )
        return sha256_tree(path)
    # .keras content is the converter's to judge (config.py checks the zip signature up front)
    problem = model_file_problem(path, "tflite" if source.kind == "tflite" else "")
    if problem:
        raise ConfigError(f"model {source.name!r}: {path}: {problem}")
    return file_sha256(path)


def _arch_name(arch: str) -> str:
    return arch.removeprefix("keras:")


def variant_key(source: ModelSource, source_sha256: str, quantization: str,
                converter_version: str, calibration_sha256: str | None) -> str:
    """The cache key of one variant (sha256 hex)."""
    return _canonical_sha256({
        "recipe": RECIPE_VERSION,
        "kind": source.kind,
        "source_sha256": source_sha256,
        "input_shape": list(source.input_shape),
        "keras": _installed_version("keras") if source.kind in KERAS_KINDS else None,
        "converter": converter_version,
        "quantization": quantization,
        "calibration": calibration_sha256 if quantization in CALIBRATED else None,
    })


# --------------------------------------------------------------------------------------------
# Model file checks: cheap, before anything reads a whole file or starts TensorFlow

TFLITE_IDENTIFIER = b"TFL3"  # the flatbuffer file_identifier of schema.fbs, at bytes 4..8
# The header alone: root table offset and file identifier (a real model is hundreds of bytes;
# anything this short is refused here, anything longer but corrupt by `read_tflite`).
MIN_TFLITE_BYTES = 8
# Flatbuffers address 2 GiB; larger models keep weights outside the file's flatbuffer and are
# not what a phone benchmark farm is for. farm reads a .tflite whole, so this bounds memory.
MAX_TFLITE_BYTES = 2 * 1024 * 1024 * 1024
ZIP_MAGIC = b"PK"  # a .keras file is a zip archive (an HDF5 .h5 starts b"\x89HDF")


def _head(path: Path, n: int) -> tuple[bytes, int]:
    """The first `n` bytes and the size of a regular file; OSError as from open()."""
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        return f.read(n), size


def model_file_problem(path: Path, kind: str) -> str:
    """Why a `.tflite` or `.keras` model file cannot be used ("" when it looks right).

    Checks, in order: it exists, is a regular file and can be opened; its size is sane; and
    its first bytes identify the format (the "TFL3" flatbuffer identifier at bytes 4..8 of a
    .tflite, the zip signature of a .keras). Reads at most 8 bytes.
    """
    try:
        if not path.exists():
            return "file not found"
        if path.is_dir():
            return "is a directory, not a file"
        if not path.is_file():
            return "is not a regular file"
        head, size = _head(path, 8)
    except OSError as e:
        return f"cannot read: {e.strerror or e}"
    if kind == "tflite":
        if size < MIN_TFLITE_BYTES:
            return f"not a .tflite model: only {size} bytes"
        if size > MAX_TFLITE_BYTES:
            return (f"{size / 2**30:.1f} GiB is larger than the "
                    f"{MAX_TFLITE_BYTES // 2**30} GiB farm reads")
        if head[4:8] != TFLITE_IDENTIFIER:
            return ("not a .tflite model: no 'TFL3' flatbuffer identifier at bytes 4..8 "
                    f"(found {head[4:8]!r})")
    elif kind == "keras_file" and head[:2] != ZIP_MAGIC:
        return "not a .keras model: a .keras file is a zip archive and this one is not"
    return ""


# --------------------------------------------------------------------------------------------
# Reading .tflite flatbuffers (pure; enough of schema.fbs to see tensor types)

# TensorType enum of tensorflow/compiler/mlir/lite/schema/schema.fbs
TENSOR_TYPES: dict[int, str] = {
    0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool",
    7: "int16", 8: "complex64", 9: "int8", 10: "float64", 11: "complex128", 12: "uint64",
    13: "resource", 14: "variant", 15: "uint32", 16: "uint16", 17: "int4", 18: "bfloat16",
}


@dataclass(frozen=True, slots=True)
class TfliteTensor:
    """One tensor of a .tflite subgraph."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    is_constant: bool  # backed by a non-empty buffer: a weight, not an activation
    scale: float | None = None  # first quantization scale, if quantized


@dataclass(frozen=True, slots=True)
class TfliteInfo:
    """What farm needs to know of a .tflite: schema version and the main subgraph's tensors."""

    version: int
    num_subgraphs: int
    tensors: tuple[TfliteTensor, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]

    @property
    def input_dtypes(self) -> tuple[str, ...]:
        """dtypes of the main subgraph's inputs."""
        return tuple(self.tensors[i].dtype for i in self.inputs)

    @property
    def output_dtypes(self) -> tuple[str, ...]:
        """dtypes of the main subgraph's outputs."""
        return tuple(self.tensors[i].dtype for i in self.outputs)

    def dtypes(self, *, constant: bool) -> set[str]:
        """dtypes of the weights (constant=True) or of the activations (constant=False)."""
        return {t.dtype for t in self.tensors if t.is_constant == constant}


class _Table:
    """A flatbuffer table: a position plus its vtable, read with bounds-checked struct calls."""

    __slots__ = ("buf", "pos", "vtable", "vtable_len")

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf = buf
        self.pos = pos
        self.vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        if not 0 <= self.vtable < len(buf):  # struct would read a negative offset from the end
            raise struct.error(f"vtable at {self.vtable} is outside the buffer")
        self.vtable_len = struct.unpack_from("<H", buf, self.vtable)[0]

    def _field(self, index: int) -> int:
        slot = 4 + 2 * index
        if slot + 2 > self.vtable_len:
            return 0
        off: int = struct.unpack_from("<H", self.buf, self.vtable + slot)[0]
        return self.pos + off if off else 0

    def _deref(self, at: int) -> int:
        return at + int(struct.unpack_from("<I", self.buf, at)[0])

    def scalar(self, index: int, fmt: str, default: int = 0) -> int:
        at = self._field(index)
        return int(struct.unpack_from(fmt, self.buf, at)[0]) if at else default

    def vector(self, index: int, item_size: int = 1) -> tuple[int, int]:
        """(start, length) of a vector field; (0, 0) when absent. A vector that would run past
        the end of the buffer is corrupt (checked here, so no loop runs over a bogus length)."""
        at = self._field(index)
        if not at:
            return 0, 0
        vec = self._deref(at)
        n = int(struct.unpack_from("<I", self.buf, vec)[0])
        if n * item_size > len(self.buf) - (vec + 4):
            raise struct.error(f"vector of {n} items at {vec} runs past the end of the file")
        return vec + 4, n

    def numbers(self, index: int, fmt: str, limit: int | None = None) -> tuple[float, ...]:
        size = struct.calcsize(fmt)
        start, n = self.vector(index, size)
        n = n if limit is None else min(n, limit)
        return tuple(struct.unpack_from(fmt, self.buf, start + size * i)[0] for i in range(n))

    def tables(self, index: int) -> list[_Table]:
        start, n = self.vector(index, 4)
        return [_Table(self.buf, self._deref(start + 4 * i)) for i in range(n)]

    def table(self, index: int) -> _Table | None:
        at = self._field(index)
        return _Table(self.buf, self._deref(at)) if at else None

    def string(self, index: int) -> str:
        start, n = self.vector(index)
        return self.buf[start:start + n].decode("utf-8", "replace")


MAX_TENSOR_RANK = 64  # TFLite kernels handle rank <= 6; more is a corrupt file, not a model


def read_tflite(data: bytes) -> TfliteInfo:
    """Parse a .tflite flatbuffer; raises ConversionError if it is not one.

    Every read is bounds-checked and every vector length is checked against the file size, so a
    corrupt or hostile file costs at most a pass over its bytes and ends in ConversionError.
    """
    if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
        raise ConversionError("not a .tflite flatbuffer (file identifier 'TFL3' missing)")
    try:
        model = _Table(data, struct.unpack_from("<I", data, 0)[0])
        buffers = model.tables(4)
        constant = []
        for b in buffers:
            _, data_len = b.vector(0)
            # Models over 2 GB keep weights after the flatbuffer: offset (1) and size (2).
            constant.append(data_len > 0 or b.scalar(2, "<Q") > 0)
        subgraphs = model.tables(2)
        if not subgraphs:
            raise ConversionError("the .tflite has no subgraph")
        main = subgraphs[0]
        tensors = []
        for t in main.tables(0):
            buffer_index = t.scalar(2, "<I")
            quant = t.table(4)
            scales = quant.numbers(2, "<f", limit=1) if quant is not None else ()
            shape = t.numbers(0, "<i")
            if len(shape) > MAX_TENSOR_RANK:
                raise ConversionError(f"corrupt .tflite flatbuffer: a tensor of rank {len(shape)}")
            tensors.append(TfliteTensor(
                name=t.string(3),
                dtype=TENSOR_TYPES.get(t.scalar(1, "<b"), f"type{t.scalar(1, '<b')}"),
                shape=tuple(int(d) for d in shape),
                is_constant=0 < buffer_index < len(constant) and constant[buffer_index],
                scale=float(scales[0]) if scales else None,
            ))
        inputs = tuple(int(i) for i in main.numbers(1, "<i"))
        outputs = tuple(int(i) for i in main.numbers(2, "<i"))
        if any(not 0 <= i < len(tensors) for i in inputs + outputs):
            raise ConversionError("corrupt .tflite flatbuffer: an input or output names a "
                                  f"tensor beyond the {len(tensors)} of the subgraph")
        return TfliteInfo(
            version=model.scalar(0, "<I"),
            num_subgraphs=len(subgraphs),
            tensors=tuple(tensors),
            inputs=inputs,
            outputs=outputs,
        )
    except (struct.error, IndexError, UnicodeDecodeError) as e:
        raise ConversionError(f"corrupt .tflite flatbuffer: {e}") from e


def detect_quantization(info: TfliteInfo) -> str:
    """Which of QUANTIZATIONS a .tflite's tensor types show.

    int16 activations with int8 weights: int16x8. Integer inputs, or mostly int8/uint8
    activations: int8 (full integer). int8 weights with float activations: dynamic. float16
    weights: fp16. Otherwise fp32.
    """
    activations = [t.dtype for t in info.tensors if not t.is_constant]
    weights = info.dtypes(constant=True)
    if "int16" in activations and "int8" in weights:
        return "int16x8"
    integer = sum(d in ("int8", "uint8") for d in activations)
    floating = sum(d == "float32" for d in activations)
    if set(info.input_dtypes) & {"int8", "uint8"} or integer > floating:
        return "int8"
    if weights & {"int8", "uint8"}:
        return "dynamic"
    if "float16" in weights:
        return "fp16"
    return "fp32"


# --------------------------------------------------------------------------------------------
# The cache


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


def _store(cache_dir: Path, key: str, produced: Path,
           meta: dict[str, Any]) -> tuple[Path, str, int]:
    """Move a produced .tflite into the cache under `key` and write its metadata last."""
    dest = cache_dir / f"{key}.tflite"
    sha = file_sha256(produced)
    size = produced.stat().st_size
    os.replace(produced, dest)  # same filesystem: the work dir lives inside cache_dir
    meta = {**meta, "schema_version": CACHE_SCHEMA_VERSION, "key": key, "sha256": sha,
            "size_bytes": size}
    _write_atomic(cache_dir / f"{key}.json", json.dumps(meta, indent=1, sort_keys=True).encode())
    return dest, sha, size


def _lookup(cache_dir: Path, key: str) -> dict[str, Any] | None:
    """The metadata of a complete, intact cache entry, or None."""
    meta_path, tfl = cache_dir / f"{key}.json", cache_dir / f"{key}.tflite"
    try:
        meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if meta.get("schema_version") != CACHE_SCHEMA_VERSION or meta.get("key") != key:
        return None
    try:
        intact = tfl.stat().st_size == meta.get("size_bytes") and file_sha256(tfl) == meta["sha256"]
    except (OSError, KeyError):
        intact = False
    if not intact:
        log.warning("cache entry %s is damaged; converting again", tfl)
        return None
    return meta


# --------------------------------------------------------------------------------------------
# The worker


@dataclass(slots=True)
class _Job:
    id: str
    index: int  # position in the result list
    source: ModelSource
    source_sha256: str
    quantization: str
    out: Path
    calibration: CalibrationSpec | None
    calibration_sha256: str | None

    def payload(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source.to_dict(),
            "source_sha256": self.source_sha256,
            "quantization": self.quantization,
            "calibration": self.calibration.to_dict() if self.calibration else None,
            "out": str(self.out),
        }


@dataclass(slots=True)
class _WorkerRun:
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    converter_version: str = ""


def _worker_command() -> list[str]:
    """argv of the conversion worker (tests replace it with a fake worker)."""
    return [sys.executable, "-m", "farm.convert_worker"]


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep the stderr tail about the failure
    # Conversion gains nothing from a GPU, and the Keras init pass must give the same weights
    # on every machine, so the worker always runs on the CPU.
    env["CUDA_VISIBLE_DEVICES"] = "-1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextmanager
def _killing(proc: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """Kill the worker if anything (including KeyboardInterrupt) leaves the block early."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)


def _tail(f: IO[bytes]) -> str:
    f.seek(0, os.SEEK_END)
    f.seek(max(0, f.tell() - 4 * _STDERR_TAIL_CHARS))
    text = f.read().decode("utf-8", "replace").strip()
    return text[-_STDERR_TAIL_CHARS:] if text else "(stderr empty)"


def _describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "did not exit"
    if returncode < 0:
        import signal

        with suppress(ValueError):
            return f"was killed by {signal.Signals(-returncode).name}"
        return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _read_lines(stream: IO[bytes], sink: queue.Queue[bytes | None]) -> None:
    for line in iter(stream.readline, b""):
        sink.put(line)
    sink.put(None)


def _run_worker(jobs: Sequence[_Job], timeout_s: float,
                emit: Callable[[VariantEvent], None]) -> _WorkerRun:
    """Run one worker over `jobs` until it finishes, crashes or times out.

    Always resolves at least one job, so a loop of runs ends: a job the worker was on when it
    died (or the first unresolved job) fails with the stderr tail; if it died while loading a
    source, every job of that source fails with it; if it died before its hello, every job.
    """
    run = _WorkerRun()
    by_id = {j.id: j for j in jobs}
    emit(VariantEvent("worker_started", detail=f"{len(jobs)} conversion(s)"))
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            _worker_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
            env=_worker_env(), start_new_session=True,
        )
        with _killing(proc):
            assert proc.stdin is not None and proc.stdout is not None
            lines: queue.Queue[bytes | None] = queue.Queue()
            reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True)
            reader.start()
            doc = {"protocol": 1, "jobs": [j.payload() for j in jobs]}
            with suppress(BrokenPipeError):
                proc.stdin.write(json.dumps(doc).encode())
                proc.stdin.close()
            current: _Job | None = None
            loading = False
            clock = time.monotonic()
            timed_out = greeted = False
            while True:
                try:
                    raw = lines.get(timeout=max(0.0, clock + timeout_s - time.monotonic()))
                except queue.Empty:
                    timed_out = True
                    proc.kill()
                    break
                if raw is None:
                    break
                try:
                    msg = json.loads(raw)
                except ValueError:
                    log.debug("worker: %s", raw.decode("utf-8", "replace").rstrip())
                    continue
                event = msg.get("event")
                job = by_id.get(str(msg.get("id", "")))
                if event == "hello":
                    greeted = True
                    run.converter_version = str(msg.get("converter_version", ""))
                elif event in ("loading", "start") and job is not None:
                    current, loading, clock = job, event == "loading", time.monotonic()
                    emit(VariantEvent("loading" if loading else "converting", job.source.name,
                                      job.quantization))
                elif event == "done" and job is not None:
                    run.results[job.id] = msg
                    current, loading, clock = None, False, time.monotonic()
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
            reader.join(timeout=5)
        unresolved = [j for j in jobs if j.id not in run.results]
        if not unresolved:
            return run
        blamed = current or unresolved[0]
        how = (f"timed out after {timeout_s:g} s and was killed" if timed_out
               else _describe_exit(proc.returncode))
        if not greeted and not timed_out:
            # It died before saying hello (TF failed to import, say): nothing job-specific, and
            # a fresh worker would die the same way, so every remaining job fails with it.
            victims = unresolved
            doing = "before it was ready"
        else:
            victims = [j for j in unresolved if j.source_sha256 == blamed.source_sha256
                       and j.source.name == blamed.source.name] if loading else [blamed]
            doing = (f"while {'loading' if loading else 'converting'} "
                     f"{blamed.source.name}/{blamed.quantization}")
        reason = f"converter process {how} {doing}; stderr tail:\n{_tail(err)}"
    emit(VariantEvent("worker_lost", blamed.source.name, blamed.quantization, detail=how))
    for j in victims:
        run.results[j.id] = {"event": "done", "id": j.id, "status": "failed", "error": reason}
    return run


# --------------------------------------------------------------------------------------------
# build_variants


def _failed(source: ModelSource, quantization: str, error: str, *, source_sha256: str = "",
            calibration: str = "") -> ModelVariant:
    return ModelVariant(model=source.name, quantization=quantization, status="failed",
                        source_sha256=source_sha256, calibration=calibration, error=error)


def _tflite_variants(source: ModelSource, quantizations: Sequence[str], cache_dir: Path,
                     emit: Callable[[VariantEvent], None]) -> list[ModelVariant]:
    """A .tflite used as is: cached under its own sha256, reported as what its tensors show."""
    path = Path(source.path)
    try:
        data = path.read_bytes()
    except OSError as e:  # removed or made unreadable since it was fingerprinted
        return [_failed(source, q, f"model {source.name!r}: {path}: cannot read: "
                        f"{e.strerror or e}") for q in quantizations]
    sha = hashlib.sha256(data).hexdigest()
    try:
        detected = detect_quantization(read_tflite(data))
    except ConversionError as e:
        out = [_failed(source, q, f"model {source.name!r}: {path}: {e}", source_sha256=sha)
               for q in quantizations]
        for v in out:
            emit(VariantEvent("failed", source.name, v.quantization, detail=v.error))
        return out
    dest = cache_dir / f"{sha}.tflite"
    meta = _lookup(cache_dir, sha)
    cached = meta is not None
    if not cached:
        _write_atomic(dest, data)
        meta = {"schema_version": CACHE_SCHEMA_VERSION, "key": sha, "sha256": sha,
                "size_bytes": len(data), "source_sha256": sha, "source_kind": "tflite",
                "quantization": detected, "converter_version": "", "conversion_s": 0.0}
        _write_atomic(cache_dir / f"{sha}.json",
                      json.dumps(meta, indent=1, sort_keys=True).encode())
    out = []
    for q in quantizations:
        if q == detected:
            out.append(ModelVariant(model=source.name, quantization=q, status="ok", path=str(dest),
                                    sha256=sha, size_bytes=len(data), source_sha256=sha,
                                    cached=cached))
            emit(VariantEvent("cached" if cached else "converted", source.name, q,
                              detail="tflite used as is"))
            continue
        hint = "" if detected in quantizations else f", or add {detected!r} to the quantizations"
        out.append(_failed(
            source, q,
            f"{path} is used as is and its tensors are {detected}; cannot re-quantize a .tflite "
            f"to {q}: provide a SavedModel or .keras source{hint}",
            source_sha256=sha,
        ))
        emit(VariantEvent("failed", source.name, q, detail=out[-1].error))
    return out


def build_variants(
    sources: Sequence[ModelSource],
    quantizations: Sequence[str],
    *,
    calibration: CalibrationSpec | None,
    cache_dir: Path,
    on_event: Callable[[VariantEvent], None] | None = None,
    timeout_s: float = 900,
) -> list[ModelVariant]:
    """One ModelVariant per source x quantization (source-major), ok or failed, never raising
    for a model that will not convert. `timeout_s` bounds each conversion (model load included).
    """
    unknown = [q for q in quantizations if q not in QUANTIZATIONS]
    if unknown:
        raise ConfigError(
            f"quantization {unknown[0]!r}: unknown; allowed: {', '.join(QUANTIZATIONS)}"
        )
    quants = list(dict.fromkeys(quantizations))
    emit = on_event or (lambda _e: None)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    version = installed_converter_version()
    results: list[ModelVariant | None] = [None] * (len(sources) * len(quants))
    jobs: list[_Job] = []

    cal_sha: str | None = None
    cal_error = ""
    cal_label = calibration_label(calibration) if calibration else ""
    if calibration is not None and CALIBRATED & set(quants):
        try:
            cal_sha = calibration_fingerprint(calibration)
        except ConfigError as e:
            cal_error = f"calibration data: {e}"

    def settle(index: int, variant: ModelVariant) -> None:
        results[index] = variant
        if variant.status == "failed":
            log.warning("%s/%s failed: %s", variant.model, variant.quantization,
                        variant.error.splitlines()[0] if variant.error else "")
            emit(VariantEvent("failed", variant.model, variant.quantization, variant.error))

    for s, source in enumerate(sources):
        base = s * len(quants)
        try:
            src_sha = source_fingerprint(source)
        except ConfigError as e:
            for k, q in enumerate(quants):
                settle(base + k, _failed(source, q, str(e)))
            continue
        except OSError as e:  # unreadable file: this source fails, the others go on
            for k, q in enumerate(quants):
                settle(base + k, _failed(source, q, f"model {source.name!r}: cannot read: {e}"))
            continue
        if source.kind == "tflite":
            results[base:base + len(quants)] = _tflite_variants(source, quants, cache_dir, emit)
            continue
        for k, q in enumerate(quants):
            label = cal_label if q in CALIBRATED else ""
            if q in CALIBRATED and calibration is None:
                settle(base + k, _failed(
                    source, q,
                    f"{q} needs calibration data and none was given: set calibration with kind "
                    "'images' or 'npy' (or kind 'random' to calibrate on random data, which the "
                    "report will say)", source_sha256=src_sha))
                continue
            if q in CALIBRATED and cal_error:
                settle(base + k, _failed(source, q, cal_error, source_sha256=src_sha,
                                         calibration=label))
                continue
            if version is not None:
                key = variant_key(source, src_sha, q, version, cal_sha)
                meta = _lookup(cache_dir, key)
                if meta is not None:
                    results[base + k] = ModelVariant(
                        model=source.name, quantization=q, status="ok",
                        path=str(cache_dir / f"{key}.tflite"), sha256=meta["sha256"],
                        size_bytes=int(meta["size_bytes"]), source_sha256=src_sha,
                        converter_version=str(meta.get("converter_version", version)),
                        conversion_s=float(meta.get("conversion_s", 0.0)), cached=True,
                        calibration=label)
                    emit(VariantEvent("cached", source.name, q,
                                      conversion_s=float(meta.get("conversion_s", 0.0))))
                    continue
            jobs.append(_Job(id=str(len(jobs)), index=base + k, source=source,
                             source_sha256=src_sha, quantization=q, out=Path(),
                             calibration=calibration if q in CALIBRATED else None,
                             calibration_sha256=cal_sha if q in CALIBRATED else None))

    if jobs:
        _convert(jobs, cache_dir, version, timeout_s, emit, settle)
    assert all(v is not None for v in results)
    return [v for v in results if v is not None]


def _convert(jobs: list[_Job], cache_dir: Path, version: str | None, timeout_s: float,
             emit: Callable[[VariantEvent], None],
             settle: Callable[[int, ModelVariant], None]) -> None:
    """Convert `jobs` in as few workers as crashes allow, storing each success in the cache."""
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".convert-") as work:
        for job in jobs:
            job.out = Path(work) / f"{job.id}.tflite"
        pending = list(jobs)
        while pending:
            run = _run_worker(pending, timeout_s, emit)
            worker_version = run.converter_version or version or ""
            if version and worker_version != version:
                log.warning("installed TensorFlow metadata says %s but the worker runs %s; "
                            "the cache will not hit", version, worker_version)
            for job in pending:
                msg = run.results.get(job.id)
                if msg is not None:
                    settle(job.index, _finish(job, msg, cache_dir, worker_version, emit))
            pending = [j for j in pending if j.id not in run.results]


def _finish(job: _Job, msg: dict[str, Any], cache_dir: Path, converter_version: str,
            emit: Callable[[VariantEvent], None]) -> ModelVariant:
    """Turn one worker result into a ModelVariant, caching the .tflite if it converted."""
    label = calibration_label(job.calibration) if job.calibration else ""
    conversion_s = float(msg.get("conversion_s", 0.0))
    if msg.get("status") != "ok":
        return _failed(job.source, job.quantization, str(msg.get("error", ""))[:_ERROR_CHARS]
                       or "converter failed without a message", source_sha256=job.source_sha256,
                       calibration=label)
    try:
        info = read_tflite(job.out.read_bytes())
    except (OSError, ConversionError) as e:
        return _failed(job.source, job.quantization, f"converter output unusable: {e}",
                       source_sha256=job.source_sha256, calibration=label)
    detected = detect_quantization(info)
    if detected != job.quantization:
        # e.g. dynamic-range quantization leaves tensors under 1024 elements in float, so a tiny
        # model's "dynamic" variant can be all float: keep it, but say so.
        log.warning("%s/%s: the converted tensors look like %s", job.source.name,
                    job.quantization, detected)
    key = variant_key(job.source, job.source_sha256, job.quantization, converter_version,
                      job.calibration_sha256)
    meta = {
        "source_kind": job.source.kind, "source_sha256": job.source_sha256,
        "quantization": job.quantization, "tensor_quantization": detected,
        "converter_version": converter_version, "conversion_s": conversion_s,
        "calibration": label, "calibration_sha256": job.calibration_sha256,
        "recipe_version": RECIPE_VERSION, "details": msg.get("details", {}),
        "created_unix_s": time.time(),
    }
    path, sha, size = _store(cache_dir, key, job.out, meta)
    emit(VariantEvent("converted", job.source.name, job.quantization, conversion_s=conversion_s))
    return ModelVariant(model=job.source.name, quantization=job.quantization, status="ok",
                        path=str(path), sha256=sha, size_bytes=size,
                        source_sha256=job.source_sha256, converter_version=converter_version,
                        conversion_s=conversion_s, cached=False, calibration=label)
