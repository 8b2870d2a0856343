"""`farm-benchmark-model`: a benchmark_model-compatible runner on the host, on LiteRT's interpreter.

Console script `farm-benchmark-model` and `python -m farm.hostbench`. I/O: reads the model file
and any --input_layer_value_files, writes --output_filepath, reads /proc/self/status and
getrusage for memory, and writes benchmark_model's TF 2.19+ output (rendered by farm.bmformat) to
stdout and stderr; the exit status is 0 on success and 1 on failure ("Benchmarking failed.").
It imports ai_edge_litert lazily and never TensorFlow (which costs ~1 GB and seconds to import).

Semantics follow shared/benchmark_model.md §3: Init is the wall time of loading the model,
building the interpreter, applying delegates and allocating tensors; the warmup loop is
Run(warmup_runs, warmup_min_secs, max_secs) and the regular loop Run(num_runs, min_secs,
max_secs), each running while `(run < min_runs || now < min_finish) && now <= max_finish`. Each
run copies the input data into the input tensors (untimed) and then times `invoke()` alone with
`time.perf_counter_ns`. The first inference is the first warmup run.

XNNPACK: without --use_xnnpack the interpreter's default op resolver applies the default XNNPACK
delegate (runtime line only); --use_xnnpack=false uses the resolver without default delegates;
--use_xnnpack=true applies XNNPACK (through the same default path, which is the only XNNPACK the
Python package ships) and reports it as an explicit delegate, with the status computed from the
delegated graph. GPU and NNAPI do not exist here: --use_gpu/--use_nnapi print the desktop tool's
"... acceleration is unsupported on this platform." warning and the run continues.

Deviations from the C++ tool, all deliberate:
- the output is printed when the run ends, not line by line;
- the runtime's VERBOSE "Replacing n out of N node(s) ..." line (which Linux release builds hide
  and Android shows) is printed, so the delegated node count is known on the host too;
- --enable_op_profiling is accepted but prints a warning and no op profile;
- with --input_layer (and --input_layer_shape, as the C++ tool requires), value files go to the
  inputs by the position of their name in --input_layer, as in the C++ tool; without it (which
  the C++ tool rejects) their names are matched against the model's input tensor names. A bad
  value file is an ERROR plus "Benchmarking failed." (exit 1) rather than a FATAL abort.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from farm.bmformat import DelegateReport, FormatInput, echo_params, format_output

ERA = "tf2.19+"
PROG = "farm-benchmark-model"
DEFAULT_INTERVAL_MS = 50


@dataclass(frozen=True, slots=True)
class Flag:
    """One command-line flag as benchmark_model's usage table shows it."""

    name: str
    kind: str  # int32 | float | bool | string
    default: str  # as the usage table displays it
    usage: str


FLAGS: tuple[Flag, ...] = (
    Flag("num_runs", "int32", "50", "expected number of runs, see also min_secs, max_secs"),
    Flag("min_secs", "float", "1", "minimum number of seconds to rerun for, potentially making "
         "the actual number of runs to be greater than num_runs"),
    Flag("max_secs", "float", "150", "maximum number of seconds to rerun for, potentially making "
         "the actual number of runs to be less than num_runs. Note if --max-secs is exceeded in "
         "the middle of a run, the benchmark will continue to the end of the run but will not "
         "start the next run."),
    Flag("run_delay", "float", "-1", "delay between runs in seconds"),
    Flag("run_frequency", "float", "-1", "Execute at a fixed frequency, instead of a fixed "
         "delay.Note if the targeted rate per second cannot be reached, the benchmark would "
         "start the next run immediately, trying its best to catch up. If set, this will "
         "override run_delay."),
    Flag("num_threads", "int32", "-1", "number of threads"),
    Flag("benchmark_name", "string", "", "benchmark name"),
    Flag("output_prefix", "string", "", "benchmark output prefix"),
    Flag("warmup_runs", "int32", "1", "minimum number of runs performed on initialization, to "
         "allow performance characteristics to settle, see also warmup_min_secs"),
    Flag("warmup_min_secs", "float", "0.5", "minimum number of seconds to rerun for, potentially "
         "making the actual number of warm-up runs to be greater than warmup_runs"),
    Flag("verbose", "bool", "false", "Whether to log parameters whose values are not set. By "
         "default, only log those parameters that are set by parsing their values from the "
         "commandline flags."),
    Flag("report_peak_memory_footprint", "bool", "false", "Report the peak memory footprint by "
         "periodically checking the memory footprint. Internally, a separate thread will be "
         "spawned for this periodic check. Therefore, the performance benchmark result could be "
         "affected."),
    Flag("memory_footprint_check_interval_ms", "int32", "50", "The interval in millisecond "
         "between two consecutive memory footprint checks. This is only used when "
         "--report_peak_memory_footprint is set to true."),
    Flag("graph", "string", "", "graph file name"),
    Flag("input_layer", "string", "", "input layer names"),
    Flag("input_layer_shape", "string", "", "input layer shape"),
    Flag("input_layer_value_files", "string", "", "A map-like string representing value file. "
         "Each item is separated by ',', and the item value consists of input layer name and "
         "value file path separated by ':', e.g. input1:file_path1,input2:file_path2. In case "
         "the input layer name contains ':' e.g. \"input:0\", escape it with \"\\:\". The file "
         "format is binary and it should be array format."),
    Flag("require_full_delegation", "bool", "false", "require delegate to run the entire graph"),
    Flag("enable_op_profiling", "bool", "false", "enable op profiling (not supported by "
         f"{PROG}: prints a warning)"),
    Flag("output_filepath", "string", "", "File path to export outputs layer as binary data."),
    Flag("help", "bool", "false", "Print out all supported flags if true."),
    Flag("use_gpu", "bool", "false", "use gpu (unsupported on this platform)"),
    Flag("use_nnapi", "bool", "false", "use nnapi delegate api (unsupported on this platform)"),
    Flag("use_xnnpack", "bool", "false", "explicitly apply the XNNPACK delegate. Note the XNNPACK "
         "delegate could be implicitly applied by the TF Lite runtime regardless the value of "
         "this parameter. To disable this implicit application, set the value to false "
         "explicitly."),
)
_BY_NAME = {f.name: f for f in FLAGS}
_INT = re.compile(r"\s*[+-]?\d+")
_FLOAT = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


@dataclass(slots=True)
class ParsedFlags:
    """The outcome of flag parsing, as benchmark_model's Flags::Parse would leave it."""

    values: dict[str, Any]
    raw: dict[str, str]  # explicitly set flags, as given
    order: list[str]  # explicitly set flags in argv order (delegate rank)
    unconsumed: list[str]
    errors: list[str]
    help: bool


def _parse_value(kind: str, text: str) -> tuple[bool, Any]:
    # Mirrors istringstream >> T: a number prefix is enough ("5x" reads 5); nothing is an error.
    if kind == "bool":
        if text not in ("true", "false", "1", "0"):
            return False, None
        return True, text in ("true", "1")
    if kind == "int32":
        m = _INT.match(text)
        if not m or not -(2**31) <= int(m.group()) < 2**31:
            return False, None
        return True, int(m.group())
    if kind == "float":
        m = _FLOAT.match(text)
        return (True, float(m.group())) if m else (False, None)
    return True, text


def parse_flags(args: Sequence[str]) -> ParsedFlags:
    """Flags::Parse semantics: `--name=value` only, first match wins, the rest is unconsumed."""
    values: dict[str, Any] = {}
    for f in FLAGS:
        values[f.name] = _parse_value(f.kind, f.default)[1] if f.default else (
            "" if f.kind == "string" else 0)
    raw: dict[str, str] = {}
    positions: dict[str, int] = {}
    consumed = [False] * len(args)
    errors: list[str] = []
    for f in FLAGS:
        prefix = f"--{f.name}="
        for i, arg in enumerate(args):
            if consumed[i] or not arg.startswith(prefix):
                continue
            consumed[i] = True
            ok, value = _parse_value(f.kind, arg[len(prefix):])
            if ok:
                values[f.name], raw[f.name], positions[f.name] = value, arg[len(prefix):], i
            else:
                errors.append(f"Failed to parse flag '{f.name}' against argv '{arg}'")
            break
    unconsumed = [a for i, a in enumerate(args) if not consumed[i]]
    wants_help = bool(values["help"]) or (bool(unconsumed) and unconsumed[0] == "--help")
    order = sorted(raw, key=lambda name: positions[name])
    return ParsedFlags(values, raw, order, unconsumed, errors, wants_help)


def usage(prog: str) -> str:
    """The usage table benchmark_model prints for --help (Flags::Usage layout)."""
    names = [f"--{f.name}={f.default}" for f in FLAGS]
    width = max(len(n) for n in names)
    rows = [f"\t{n.ljust(width)}\t{f.kind}\toptional\t{f.usage}" for n, f in zip(names, FLAGS,
                                                                                 strict=True)]
    return f"usage: {prog} <flags>\nFlags:\n" + "\n".join(rows)


# --------------------------------------------------------------------------- measurement helpers


def run_loop(
    invoke: Callable[[], None],
    reset: Callable[[], None],
    *,
    min_runs: int,
    min_secs: float,
    max_secs: float,
    run_delay: float = -1.0,
    run_frequency: float = -1.0,
    clock_ns: Callable[[], int] = time.perf_counter_ns,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[list[int], list[str]]:
    """BenchmarkModel::Run: (per-run µs of invoke() alone, invoke error messages)."""
    samples: list[int] = []
    errors: list[str] = []
    now_us = clock_ns() // 1000
    min_finish_us = now_us + int(min_secs * 1e6)
    max_finish_us = now_us + int(max_secs * 1e6)
    gap = 1.0 / run_frequency if run_frequency > 0 else 0.0
    next_finish_s = now_us * 1e-6 + gap
    run = 0
    while (run < min_runs or now_us < min_finish_us) and now_us <= max_finish_us:
        reset()  # copies the input data; deliberately outside the timed region, as the tool does
        start = clock_ns()
        try:
            invoke()
        except Exception as exc:  # noqa: BLE001 - an invoke failure is data, the loop goes on
            if str(exc) not in errors:
                errors.append(str(exc))
        end = clock_ns()
        samples.append(end // 1000 - start // 1000)  # µs timestamps, as the C++ tool takes
        pause = run_delay
        if run_frequency > 0:
            pause = next_finish_s - clock_ns() * 1e-9
            next_finish_s += gap
        if pause > 0:
            sleep(pause)
        now_us = clock_ns() // 1000
        run += 1
    return samples, errors


def _maxrss_kb() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KB on Linux


class PeakMemoryMonitor:
    """MemoryUsageMonitor: samples the process's peak RSS every interval on its own thread."""

    def __init__(self, interval_ms: int) -> None:
        self._interval_s = max(interval_ms, 1) / 1000.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-memory", daemon=True)
        self.peak_kb = 0

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.peak_kb = max(self.peak_kb, _maxrss_kb())

    def start(self) -> None:
        """Take the first sample and start the sampling thread."""
        self.peak_kb = _maxrss_kb()
        self._thread.start()

    def stop(self) -> float:
        """Stop sampling; the peak in MB."""
        self._stop.set()
        self._thread.join(timeout=5.0)
        self.peak_kb = max(self.peak_kb, _maxrss_kb())
        return self.peak_kb / 1024.0


def _proc_status_mb() -> tuple[int, int, int] | None:
    """(VmRSS, RssAnon, RssFile + RssShmem) in whole MB, from /proc/self/status."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None
    kb: dict[str, int] = {}
    for key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
        m = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
        kb[key] = int(m.group(1)) if m else 0
    if not kb["VmRSS"]:
        return None
    return kb["VmRSS"] >> 10, kb["RssAnon"] >> 10, (kb["RssFile"] + kb["RssShmem"]) >> 10


@contextlib.contextmanager
def _capture_stderr_fd(sink: list[str]) -> Iterator[None]:
    """Collect what native code writes to fd 2 (the LiteRT runtime logs there directly)."""
    if sys.stderr is not None:
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 at all: nothing to capture
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            sink.extend(x for x in tmp.read().decode("utf-8", "replace").splitlines() if x)


@dataclass(frozen=True, slots=True)
class Delegation:
    """How the delegated graph looks after AllocateTensors (subgraph 0)."""

    kernels: int  # delegate nodes in the execution plan
    replaced_nodes: int  # original nodes those kernels took over
    total_nodes: int  # original nodes
    cpu_nodes: int  # original nodes still executed by the interpreter


def delegation_of(ops: Sequence[dict[str, Any]]) -> Delegation:
    """Work out the delegation from `Interpreter._get_ops_details()`.

    After delegation the op list holds the original nodes followed by one "DELEGATE" node per
    partition; a delegate node replaced the original nodes that produce its outputs, walking
    back until its own inputs.
    """
    delegate_ops = [op for op in ops if _is_delegate(str(op.get("op_name", "")))]
    original = [op for op in ops if not _is_delegate(str(op.get("op_name", "")))]
    producer: dict[int, int] = {}
    for op in original:
        for t in op.get("outputs", ()):
            producer[int(t)] = int(op["index"])
    by_index = {int(op["index"]): op for op in original}
    replaced: set[int] = set()
    for d in delegate_ops:
        boundary = {int(t) for t in d.get("inputs", ())}
        stack = [int(t) for t in d.get("outputs", ())]
        while stack:
            node = producer.get(stack.pop())
            if node is None or node in replaced:
                continue
            replaced.add(node)
            stack.extend(int(t) for t in by_index[node].get("inputs", ())
                         if int(t) >= 0 and int(t) not in boundary)
    return Delegation(len(delegate_ops), len(replaced), len(original),
                      len(original) - len(replaced))


def _is_delegate(name: str) -> bool:
    return name == "DELEGATE" or (name.startswith("TfLite") and "Delegate" in name)


_RANDOM_RANGES: dict[str, tuple[float, float]] = {
    # utils::GetDataRangesForType
    "float16": (-0.5, 0.5), "float32": (-0.5, 0.5), "float64": (-0.5, 0.5),
    "int8": (-127, 127), "uint8": (0, 254), "int16": (0, 99), "int32": (0, 99),
    "uint32": (0, 99), "int64": (0, 99), "uint64": (0, 99), "bool": (0, 1),
}


def split_value_files(spec: str) -> tuple[list[tuple[str, str]], str]:
    """`name:path,name2:path2` (with `::` escaping a colon) → pairs, or an error message."""
    pairs: list[tuple[str, str]] = []
    for item in (spec.split(",") if spec else []):
        delim = -1
        i = 0
        while i < len(item) - 1:
            if item[i] == ":":
                if item[i + 1] == ":":
                    i += 2
                    continue
                if delim != -1:
                    return [], f"Wrong input value file item specified: {item}"
                delim = i
            i += 1
        if delim == -1:
            return [], f"Wrong input value file item specified: {item}"
        pairs.append((item[:delim].replace("::", ":"), item[delim + 1:].replace("::", ":")))
    return pairs, ""


# --------------------------------------------------------------------------- the run


@dataclass(slots=True)
class _Run:
    """What one run gathered; becomes a FormatInput at the end."""

    flags: ParsedFlags
    graph: str = ""
    warnings: list[str] = field(default_factory=list)
    delegates: list[DelegateReport] = field(default_factory=list)
    runtime_lines: list[str] = field(default_factory=list)
    runtime_errors: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stage: str = ""
    model_size: int | None = None
    init_us: int = 0
    warmup: list[int] = field(default_factory=list)
    regular: list[int] = field(default_factory=list)
    mem_init_mb: float | None = None
    mem_overall_mb: float | None = None
    peak_mb: float | None = None
    vmrss: tuple[int, int, int] | None = None

    def fail(self, stage: str, *errors: str) -> None:
        self.stage = stage
        self.errors.extend(errors)


def _params(flags: ParsedFlags, graph: str) -> tuple[tuple[str, str], ...]:
    shown = dict(flags.raw)
    if flags.values["verbose"]:
        for f in FLAGS:
            if f.name not in ("help", "verbose"):
                shown.setdefault(f.name, f.default)
    return echo_params(ERA, shown, graph=graph)


def run(args: Sequence[str], *, prog: str = PROG) -> tuple[int, str, str]:
    """Run the benchmark for these arguments; (exit status, stdout text, stderr text)."""
    flags = parse_flags(args)
    r = _Run(flags)
    if flags.errors or flags.help:
        r.fail("flags", *flags.errors, usage(prog))
        return _finish(r)
    v = flags.values
    r.graph = str(v["graph"])
    if v["report_peak_memory_footprint"] and int(v["memory_footprint_check_interval_ms"]) <= 0:
        r.warnings.append(
            f"--memory_footprint_check_interval_ms is set to "
            f"{v['memory_footprint_check_interval_ms']} (ms), This value is invalid, and it will "
            f"be set to the default value {DEFAULT_INTERVAL_MS} (ms).")
        v["memory_footprint_check_interval_ms"] = DEFAULT_INTERVAL_MS
    if v["enable_op_profiling"]:
        r.warnings.append(f"{PROG} does not support --enable_op_profiling; no op profile will "
                          "be printed.")
    if not r.graph:
        r.fail("params", "Please specify the name of your TF Lite input file with --graph")
        return _finish(r)
    value_files, problem = split_value_files(str(v["input_layer_value_files"]))
    layers: list[tuple[str, tuple[int, ...]]] = []
    if not problem:
        layers, problem = input_layer_info(str(v["input_layer"]), str(v["input_layer_shape"]),
                                           value_files)
    if problem:
        r.fail("params", problem)
        return _finish(r)
    _benchmark(r, value_files, layers)
    return _finish(r)


def input_layer_info(names_string: str, shapes_string: str,
                     value_files: Sequence[tuple[str, str]], *, strict: bool = False
                     ) -> tuple[list[tuple[str, tuple[int, ...]]], str]:
    """PopulateInputLayerInfo: --input_layer/--input_layer_shape as (name, shape) pairs, or
    the tool's error message. Value file names must be listed in --input_layer when it is set
    (always, when `strict`: the C++ tool has no other way to place a value file)."""
    names = names_string.split(",") if names_string else []
    shapes = shapes_string.split(":") if shapes_string else []
    if len(names) != len(shapes):
        return [], (f"The number of items in --input_layer_shape ({shapes_string}, with "
                    f"{len(shapes)} items) must match the number of items in --input_layer "
                    f"({names_string}, with {len(names)} items). For example "
                    "--input_layer=input1,input2 --input_layer_shape=1,224,224,4:1,20")
    layers: list[tuple[str, tuple[int, ...]]] = []
    for name, text in zip(names, shapes, strict=True):
        try:
            shape = tuple(int(x) for x in text.split(","))
        except ValueError:
            return [], f"Incorrect size string specified: {text}"
        if -1 in shape:
            return [], ("Any unknown sizes in the shapes (-1's) must be replaced with the size "
                        "you want to benchmark with.")
        layers.append((name, shape))
    if layers or strict:
        for name, _ in value_files:
            if name not in names:
                return [], (f"Cannot find the corresponding input_layer name({name}) in "
                            f"--input_layer as {names_string}")
    return layers, ""


def _finish(r: _Run) -> tuple[int, str, str]:
    v = r.flags.values
    inp = FormatInput(
        graph=r.graph,
        params=_params(r.flags, r.graph) if r.stage not in ("flags", "params") else (),
        model_size_bytes=r.model_size,
        init_us=r.init_us,
        warmup_us=tuple(r.warmup),
        regular_us=tuple(r.regular),
        warmup_runs=int(v["warmup_runs"]),
        warmup_min_secs=float(v["warmup_min_secs"]),
        num_runs=int(v["num_runs"]),
        min_secs=float(v["min_secs"]),
        max_secs=float(v["max_secs"]),
        mem_init_mb=r.mem_init_mb,
        mem_overall_mb=r.mem_overall_mb,
        peak_mem_mb=r.peak_mb,
        vmrss_mb=r.vmrss,
        delegates=tuple(r.delegates),
        show_verbose=True,
        verbose_params=bool(v["verbose"]),
        unconsumed_flags=tuple(r.flags.unconsumed) if r.stage != "flags" else (),
        warnings=tuple(r.warnings),
        runtime_lines=tuple(r.runtime_lines),
        fail_stage=r.stage,
        error_lines=tuple(r.errors),
        runtime_error_lines=tuple(r.runtime_errors),
    )
    out, err = format_output(inp, era=ERA)
    failed = bool(r.stage) or any(d.status in ("failed", "fallback") for d in r.delegates)
    return (1 if failed else 0), out, err


def _benchmark(r: _Run, value_files: list[tuple[str, str]],
               layers: list[tuple[str, tuple[int, ...]]]) -> None:
    v = r.flags.values
    # Imported here, not at module load: --help and flag errors stay instant, and the runtime's
    # own import cost is not part of the tool-start memory baseline.
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    monitor = None
    if v["report_peak_memory_footprint"]:
        monitor = PeakMemoryMonitor(int(v["memory_footprint_check_interval_ms"]))
        monitor.start()
    try:
        _measure(r, value_files, layers, monitor, np, Interpreter, OpResolverType)
    finally:
        if monitor is not None and r.peak_mb is None:
            monitor.stop()


def _measure(r: _Run, value_files: list[tuple[str, str]],
             layers: list[tuple[str, tuple[int, ...]]], monitor: PeakMemoryMonitor | None,
             np: Any, Interpreter: Any, OpResolverType: Any) -> None:  # noqa: N803
    """Load, init, run both loops and save outputs, recording everything in `r`."""
    v = r.flags.values
    try:
        r.model_size = os.path.getsize(r.graph)
    except OSError:
        r.model_size = None
    start_kb = _maxrss_kb()
    t0 = time.perf_counter_ns()
    try:
        with open(r.graph, "rb") as fh:
            head = fh.read(8)
    except OSError:
        r.runtime_errors += [f"Could not open '{r.graph}'.", "The model allocation is null/empty"]
        r.fail("load", f"Failed to load model {r.graph}")
        return
    if len(head) < 8 or head[4:8] != b"TFL3":
        r.runtime_errors.append("The model is not a valid Flatbuffer buffer")
        r.fail("load", f"Failed to load model {r.graph}")
        return

    xnn = r.flags.raw.get("use_xnnpack")
    explicit_xnn = xnn is not None and bool(v["use_xnnpack"])
    resolver = (OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
                if xnn is not None and not v["use_xnnpack"] else OpResolverType.AUTO)
    threads = int(v["num_threads"])
    native: list[str] = []
    interp: Any = None
    with _capture_stderr_fd(native):
        if threads < -1:
            r.fail("init", "Failed to set thread number")
        else:
            try:
                interp = Interpreter(model_path=r.graph, num_threads=None if threads == -1
                                     else threads, experimental_op_resolver_type=resolver)
            except Exception as exc:  # noqa: BLE001 - reported like the tool's failures
                r.runtime_errors.append(str(exc))
                # The Python constructor both verifies the flatbuffer (the tool's LoadModel) and
                # builds the interpreter (InitInterpreter); tell the two apart by the message.
                if "Flatbuffer" in str(exc) or "Could not open" in str(exc):
                    r.fail("load", f"Failed to load model {r.graph}")
                else:
                    r.fail("init", "Failed to initialize the interpreter")
        if interp is not None:
            try:
                interp.allocate_tensors()
            except Exception as exc:  # noqa: BLE001
                r.runtime_errors.append(str(exc))
                r.fail("init", "Failed to allocate tensors!")
    xnn_line = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
    native = [x for x in native if x != xnn_line]
    if r.stage:
        # The runtime's own ERROR lines explain the failure; keep each message once.
        bare = [re.sub(r"^(?:INFO|WARNING|ERROR|VERBOSE): ", "", x) for x in native]
        r.runtime_errors[:0] = [b for b in bare if b not in r.runtime_errors]
    else:
        r.runtime_lines += native
    for name in r.flags.order:  # explicit delegates, in argv order (their rank)
        if name in ("use_gpu", "use_nnapi") and v[name]:
            r.delegates.append(DelegateReport("GPU" if name == "use_gpu" else "NNAPI",
                                              status="unavailable"))
    if r.stage:
        return
    d = delegation_of(interp._get_ops_details())
    if resolver == OpResolverType.AUTO:
        status = ("full" if d.kernels == 1 and d.cpu_nodes == 0
                  else "partial" if d.kernels else "none")
        if explicit_xnn and v["require_full_delegation"] and status != "full":
            status = "fallback"
        report = DelegateReport(
            "XNNPACK", status=status, explicit=explicit_xnn, kernels=max(d.kernels, 1),
            replaced_nodes=d.replaced_nodes if d.kernels else None, total_nodes=d.total_nodes,
            partitions=d.kernels)
        r.delegates.insert(0, report)
        if status == "fallback":
            return
    if v["require_full_delegation"] and not explicit_xnn:
        r.fail("init", "Disallowed CPU fallback detected.")
        return
    r.init_us = (time.perf_counter_ns() - t0) // 1000
    r.mem_init_mb = (_maxrss_kb() - start_kb) / 1024.0

    inputs = interp.get_input_details()
    names = [str(x["name"]) for x in inputs]
    data: list[Any] = []
    files = dict(value_files)
    if layers:
        if not _apply_layers(r, interp, inputs, layers):
            return
        inputs = interp.get_input_details()
        # as in the tool: the value file of --input_layer's j-th name feeds the j-th input
        by_position = [files.get(name) for name, _ in layers]
    else:
        for name in files:
            if name not in names:
                r.fail("init", f"Cannot find the corresponding input_layer name({name}) among "
                               f"the model inputs ({','.join(names)})")
                return
        by_position = [files.get(n) for n in names]
    rng = np.random.default_rng()
    for detail, path in zip(inputs, by_position, strict=True):
        dtype = np.dtype(detail["dtype"])
        shape = tuple(int(x) for x in detail["shape"])
        want = int(np.prod(shape)) * dtype.itemsize
        if path is not None:
            try:
                with open(path, "rb") as fh:
                    blob = fh.read()
            except OSError:
                r.fail("init", f"Failed to read the input_layer_value_file:{path}")
                return
            if len(blob) != want:
                r.fail("init", f"The size of {path} is {len(blob)} bytes. It should be "
                               f"{want} bytes.")
                return
            data.append(np.frombuffer(blob, dtype=dtype).reshape(shape))
            continue
        low, high = _RANDOM_RANGES.get(dtype.name, (0, 99))
        if dtype.kind == "f":
            data.append(rng.uniform(low, high, shape).astype(dtype))
        elif dtype.kind in "iub":
            data.append(rng.integers(int(low), int(high), shape, endpoint=True).astype(dtype))
        else:
            r.fail("init", f"{PROG} cannot fill input tensor {detail['name']} of type {dtype}")
            return

    def reset() -> None:
        for detail, array in zip(inputs, data, strict=True):
            interp.set_tensor(detail["index"], array)

    loop_native: list[str] = []
    with _capture_stderr_fd(loop_native):
        r.warmup, errors = run_loop(
            interp.invoke, reset, min_runs=int(v["warmup_runs"]),
            min_secs=float(v["warmup_min_secs"]), max_secs=float(v["max_secs"]),
            run_delay=float(v["run_delay"]), run_frequency=float(v["run_frequency"]))
        if not errors:
            r.regular, errors = run_loop(
                interp.invoke, reset, min_runs=int(v["num_runs"]),
                min_secs=float(v["min_secs"]), max_secs=float(v["max_secs"]),
                run_delay=float(v["run_delay"]), run_frequency=float(v["run_frequency"]))
            stage = "regular"
        else:
            stage = "warmup"
    if errors:
        r.runtime_errors += loop_native + [line for e in errors for line in e.splitlines()]
        r.stage = stage
    else:
        r.runtime_lines += loop_native
    if stage == "warmup" and errors:
        return
    r.mem_overall_mb = (_maxrss_kb() - start_kb) / 1024.0
    if monitor is not None:
        r.peak_mb = monitor.stop()
        r.vmrss = _proc_status_mb()
    out_path = str(v["output_filepath"])
    if out_path:
        try:
            with open(out_path, "wb") as out_fh:
                for detail in interp.get_output_details():
                    out_fh.write(interp.get_tensor(detail["index"]).tobytes())
        except OSError as exc:
            r.warnings.append(f"Failed to write the outputs to {out_path}: {exc}")


def _apply_layers(r: _Run, interp: Any, inputs: Sequence[dict[str, Any]],
                  layers: Sequence[tuple[str, tuple[int, ...]]]) -> bool:
    """The tool's input checks at Init: count, names (a warning) and ranks; then resize."""
    if len(layers) != len(inputs):
        r.fail("init", f"Inputs mismatch: Model inputs #:{len(layers)} expected: {len(inputs)}")
        return False
    resized = False
    for (name, shape), detail in zip(layers, inputs, strict=True):
        if name != detail["name"]:
            r.warnings.append(f"Tensor # {detail['index']} is named {detail['name']} but flags "
                              f"call it {name}")
        have = tuple(int(x) for x in detail["shape"])
        if len(shape) != len(have):
            r.fail("init", f"Input tensor #{detail['index']} should have {len(have)} "
                           "dimensions!")
            return False
        if shape != have:
            interp.resize_tensor_input(detail["index"], list(shape))
            resized = True
    if resized:
        try:
            interp.allocate_tensors()
        except Exception as exc:  # noqa: BLE001
            r.runtime_errors.append(str(exc))
            r.fail("init", "Failed to allocate tensors!")
            return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: run with argv (default sys.argv[1:]) and print like benchmark_model."""
    prog = sys.argv[0] if argv is None and sys.argv and sys.argv[0] else PROG
    code, out, err = run(sys.argv[1:] if argv is None else list(argv), prog=prog)
    sys.stdout.write(out)
    sys.stdout.flush()
    sys.stderr.write(err)
    sys.stderr.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
