"""Parse what TFLite/LiteRT `benchmark_model` prints, and build the argv that runs it.

Pure: never touches a device, a file or a process. `parse_output(text)` turns captured text
(stdout, stderr, both merged, or a logcat dump) into a `BenchmarkOutput`; `build_argv(...)`
returns the argv list that a device layer runs (quoting for a remote shell is that layer's job).

The formats are described in shared/benchmark_model.md (§4-§6, and its "Parsing rules that hold
in every version"). The parser is line based and order tolerant, because the tool's stdout and the
runtime's stderr interleave unreliably. It never raises on odd input: garbage gives
`success=False` with an `error`.

Which printed number wins where two describe the same thing:
- `warmup_avg_us` / `inference_avg_us` come from the `count=` line of their loop. In its
  all-same form (`count=N curr=V`) that is the exact integer V; otherwise `avg=`, which has the
  same 6 significant digits as the summary line. The summary values are used only when the
  `count=` line is missing (e.g. a tail-only excerpt or dropped logcat lines).
- `init_us` and `first_inference_us` come from the summary line (exact integers); `init_us`
  falls back to `Initialized session in X ms` (6 significant digits) when there is no summary.
- `first_inference_us` is None for TF <= 2.1, which does not print it.
- In the all-same form `first_us`, `min_us`, `max_us` and `avg_us` equal `curr_us` and
  `std_us` is 0 (that is what the form means).
"""

from __future__ import annotations

import math
import re
import signal
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from farm.errors import BenchmarkError
from farm.models import RunParams

FORMATS: tuple[str, ...] = (
    "tf1.12-1.14",
    "tf1.15-2.1",
    "tf2.2-2.4",
    "tf2.5-2.12",
    "tf2.13-2.18",
    "tf2.19+",
    "litert-compiled",
    "unknown",
)
DELEGATIONS: tuple[str, ...] = ("full", "partial", "none", "failed", "")


@dataclass(frozen=True, slots=True)
class BenchmarkOutput:
    """Everything one benchmark_model run printed that farm uses. Latencies in µs, memory in MB.

    The first block of fields is the contract with the results store and the report (column
    names); fields after `warnings` are additions.

    `error_lines` are the lines printed at ERROR/FATAL level (an `ERROR: ` prefix or a logcat
    E/F line, normalised to `ERROR: <message>`), as printed; `warnings` are WARN-level lines plus
    the known warnings that older eras print without a prefix ("Unconsumed cmdline flags: ...",
    "Duplicate flags: ..."). `delegate_applied` joins several explicit delegates with "+" in
    the order they were applied, and `delegation` is then the best coverage any of them got
    ("failed" wins over everything, then full, partial, none); `delegate_statuses` keeps each.
    `delegate_kernels` is 1 for a complete delegation and 0 for "none".
    """

    success: bool
    error: str = ""
    format: str = "unknown"
    source: str = "stdout"  # "stdout" | "logcat"
    truncated: bool = False
    init_us: float | None = None
    first_inference_us: float | None = None
    warmup_avg_us: float | None = None
    inference_avg_us: float | None = None
    warmup_count: int | None = None
    count: int | None = None
    first_us: float | None = None
    curr_us: float | None = None
    min_us: float | None = None
    max_us: float | None = None
    avg_us: float | None = None
    std_us: float | None = None
    p5_us: float | None = None
    median_us: float | None = None
    p95_us: float | None = None
    mem_init_mb: float | None = None
    mem_overall_mb: float | None = None
    peak_mem_mb: float | None = None
    vmrss_mb: float | None = None
    model_size_mb: float | None = None
    num_threads: int | None = None
    delegate_applied: str = ""
    delegation: str = ""
    delegate_kernels: int | None = None
    delegated_nodes: int | None = None
    total_nodes: int | None = None
    partitions: int | None = None
    default_xnnpack: bool = False
    gpu_ops_on_gpu: int | None = None
    gpu_ops_on_cpu: int | None = None
    nnapi_accelerators: tuple[str, ...] = ()
    unconsumed_flags: tuple[str, ...] = ()
    error_lines: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    # Additions.
    exit_code: int | None = None
    delegate_statuses: tuple[str, ...] = ()  # one "PROVIDER:status" per explicit delegate
    params: tuple[tuple[str, str], ...] = ()  # echoed "Description: [value]" lines, in order

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple):
                v = [list(x) if isinstance(x, tuple) else x for x in v]
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BenchmarkOutput:
        """Inverse of `to_dict`; unknown keys are ignored, missing ones take their defaults."""
        names = {f.name for f in fields(cls)}
        kw: dict[str, Any] = {}
        for k, v in d.items():
            if k not in names:
                continue
            if isinstance(v, list):
                v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
            kw[k] = v
        kw.setdefault("success", False)
        return cls(**kw)


# --------------------------------------------------------------------------- regexes

_NUM = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|nan|inf)"
_INT = r"-?\d+"

# Prefixes, stripped in this order: logcat header, glog header, severity.
_LOGCAT_THREADTIME = re.compile(
    r"^(?:\d{4}-)?\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+\s+\d+\s+\d+\s+([VDIWEFA])\s+([^:]*?)\s*: ?(.*)$"
)
_LOGCAT_TIME = re.compile(
    r"^(?:\d{4}-)?\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+\s+([VDIWEFA])/([^(]*?)\s*\(\s*\d+\): ?(.*)$"
)
_LOGCAT_BRIEF = re.compile(r"^([VDIWEFA])/([^(]*?)\s*\(\s*\d+\): ?(.*)$")
_GLOG = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+\s+[\w./-]+:\d+\] ?(.*)$")
_SEVERITY = re.compile(r"^(INFO|WARN|WARNING|ERROR|VERBOSE|FATAL|DEBUG): ?(.*)$")
_TFLITE_TAG = re.compile(r"(?i)^(tflite|litert|tfl)")
_FATAL_SIGNAL = re.compile(r"Fatal signal (\d+) \((SIG\w+)\)")
_HEADER_META = re.compile(r"^# [\w.\-]+:")

_STATS = re.compile(
    rf"^count=(\d+)(?:\s+first=({_INT}))?(?:\s+curr=({_INT}))?(\(all same\))?"
    rf"(?:\s+min=({_INT})\s+max=({_INT})\s+avg=({_NUM})\s+std=({_INT}))?"
    rf"(?:\s+p5=({_INT})\s+median=({_INT})\s+p95=({_INT}))?"
)
# Pre-1.12 stat_summarizer order ("curr=V count=N ..."), accepted for tolerance.
_STATS_ANCIENT = re.compile(
    rf"^curr=({_INT})\s+count=(\d+)(\(all same\))?"
    rf"(?:\s+min=({_INT})\s+max=({_INT})\s+avg=({_NUM})\s+std=({_INT}))?"
)
_RUNNING = re.compile(r"^Running benchmark for (?:at least )?(\d+) iterations")
_SUMMARY_NEW = re.compile(r"^Inference timings in us:\s*(.*)$")
_SUMMARY_OLD = re.compile(r"^Average inference timings in us:\s*(.*)$")
_KV = re.compile(rf"([A-Za-z][A-Za-z ()]*?):\s*({_NUM})(?=,|\s|$)")
_INIT_SESSION = re.compile(rf"^Initialized session in ({_NUM}) ?ms")
_MODEL_SIZE = re.compile(rf"^The input model file size \(MB\): ({_NUM})")
_MEMORY = re.compile(
    rf"^(Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): "
    rf"init=({_NUM}) overall=({_NUM})"
)
_PEAK = re.compile(rf"^Overall peak memory footprint \(MB\) via periodic monitoring: ({_NUM})")
_VMRSS = re.compile(rf"^- VmRSS\s*: ({_NUM}) MB")
_MEMORY_STATUS = re.compile(r"^Memory status at the end of exe[a-z]*ution:")
_PARAM = re.compile(r"^([^\[\]=:][^\[\]=]*?)\s*:\s*\[([^\]]*)\]\s*$")

_XNN_RUNTIME = re.compile(r"^Created TensorFlow Lite XNNPACK delegate for CPU\.")
_RUNTIME_CREATED = re.compile(r"^Created TensorFlow Lite delegate for (\w+)\.")
_TOOL_CREATED = re.compile(r"^(\w+) delegate created\.")
_EXPLICIT = re.compile(
    r"^(?:Explicitly a|A)pplied (\S+) delegate, and the model graph will be "
    r"(completely|partially) executed(?: (?:by|w/) the delegate)?(?: w/ (\d+) delegate kernels)?"
)
_APPLIED_OLD = re.compile(r"^Applied (\S+) delegate\.$")
_NOT_EXECUTED = re.compile(
    r"^Though (\S+) delegate is explicitly applied, the model graph will not be executed"
)
_FAILED_APPLY = re.compile(r"^Failed to apply (\S+) delegate\.?")
_REPLACING = re.compile(
    r"^Replacing (\d+)(?: out of (\d+))? node\(s\) with delegate \(([^)]*)\) node"
    r"(?:, yielding (\d+) partitions?)?(.*)$"
)
_HEXAGON_NODES = re.compile(
    r"^(?:TfLiteHexagonDelegate delegate|Hexagon delegate): (\d+) nodes delegated out of "
    r"(\d+) nodes(?: with (\d+) partitions)?"
)
_GPU_OPS = re.compile(
    r"^(\d+) operations will run on the GPU, and the remaining (\d+) operations will run on the CPU"
)
_GPU_OPS_NONE = re.compile(r"^No operations will run on the GPU, and all (\d+) operations")
_GPU_OPS_OLD = re.compile(
    r"^First (\d+) operations will run on the GPU, and the remaining (\d+) on the CPU"
)
_GPU_KERNELS = re.compile(r"^Created (\d+) GPU delegate kernels\.")
_UNCONSUMED = re.compile(r"^Unconsumed cmdline flags: ?(.*)$")
_BENCH_FAILED = re.compile(r"^Benchmarking failed\.?")
_STARTING = re.compile(r"^STARTING!")
_LOADED = re.compile(r"^Loaded model ")

# LiteRT CompiledModel results block (values in ms).
_LITERT_BEGIN = re.compile(r"^=+ BENCHMARK RESULTS =+")
_LITERT_END = re.compile(r"^=+\s*$")
_LITERT_FIELDS: dict[str, re.Pattern[str]] = {
    "init_ms": re.compile(rf"^Model initialization:\s+({_NUM}) ms"),
    "first_ms": re.compile(rf"^(?:Warmup \(first\)|First inference):\s+({_NUM}) ms"),
    "warmup_avg_ms": re.compile(rf"^Warmup \(avg\):\s+({_NUM}) ms(?: \((\d+) runs\))?"),
    "avg_ms": re.compile(rf"^Inference \(avg\):\s+({_NUM}) ms(?: \((\d+) runs\))?"),
    "min_ms": re.compile(rf"^Inference \(min\):\s+({_NUM}) ms"),
    "max_ms": re.compile(rf"^Inference \(max\):\s+({_NUM}) ms"),
    "std_ms": re.compile(rf"^Inference \(std\):\s+({_NUM})"),
    "init_mb": re.compile(rf"^Init footprint:\s+({_NUM}) MB"),
    "overall_mb": re.compile(rf"^Overall footprint:\s+({_NUM}) MB"),
    "peak_mb": re.compile(rf"^Peak memory:\s+({_NUM}) MB"),
}

# Op-profile tables.
_PROFILE_REGULAR = re.compile(r"^Operator-wise Profiling Info for Regular Benchmark Runs:")
_PROFILE_INIT = re.compile(r"^Profiling Info for Benchmark Initialization:")
_RUN_ORDER = re.compile(r"^=+ Run Order =+")
_NODES_OBSERVED = re.compile(r"^\d+ nodes observed")
_DELEGATE_KERNEL = re.compile(r"^(?:TfLite\w*Delegate\w*|DELEGATE)$")

# Tool lines (TFLITE_LOG): an INFO:/WARN:/ERROR: prefix on one of them means TF >= 2.13.
_TOOL_LINES: tuple[re.Pattern[str], ...] = (
    _STARTING, _STATS, _RUNNING, _SUMMARY_NEW, _INIT_SESSION, _MODEL_SIZE, _MEMORY, _PEAK,
    _TOOL_CREATED, _EXPLICIT, _NOT_EXECUTED, _FAILED_APPLY, _BENCH_FAILED, _UNCONSUMED, _LOADED,
    re.compile(r"^Log parameter values verbosely"), re.compile(r"^Note: as the benchmark tool"),
    re.compile(r"^Please specify the name of your TF Lite input file"),
)

# Lines that decide a failure (the first one found becomes `error`).
_DECISIVE: tuple[re.Pattern[str], ...] = (
    _FAILED_APPLY,
    re.compile(r"^Disallowed CPU fallback detected\."),
    re.compile(r"^Please specify the name of your TF Lite input file with --graph"),
    re.compile(r"^Failed to parse flag .*"),
    re.compile(r"^Required flag not provided: .*"),
    re.compile(r"^Failed to (?:load model|initialize model loader|mmap model|read model)\b.*"),
    re.compile(r"^Failed to initialize the interpreter.*"),
    re.compile(r"^Failed to (?:allocate tensors|invoke|set thread number)\b.*"),
    re.compile(r"^Signature not specified or incorrect\..*"),
    re.compile(r"^Signature key is specified, but the model does not have any signatures\."),
    re.compile(r"^The number of items in --input_layer_shape .*"),
    re.compile(r"^Any unknown sizes in the shapes .*"),
    re.compile(r"^Input tensor #\d+ should have \d+ dimensions!"),
    re.compile(r"^Wrong (?:input value|low and high value).*"),
    re.compile(r"^Cannot find the corresponding input_layer name.*"),
    re.compile(r"^The size of .* bytes\. It should be \d+ bytes\."),
    re.compile(r"^Failed to read the input_layer_value_file.*"),
    re.compile(r"^Output mode.* is not supported.*"),
    re.compile(r"^Could not build the model\b.*"),
    re.compile(r"^usage: \S+"),
)
# ERROR lines that accompany a failure without explaining it; never chosen as the root cause.
_AUXILIARY_ERRORS: tuple[re.Pattern[str], ...] = (
    re.compile(r"^Node number \d+ \(.*\) failed to (?:prepare|invoke)\.?"),
    re.compile(r"^Restored original execution plan after delegate application failure\."),
    re.compile(r"^Benchmarking failed\."),
    re.compile(r"^Following operations are not supported by GPU delegate:"),
    re.compile(r"^Next operations are not supported by GPU delegate:"),
    re.compile(r"^\d+ operations will run on the GPU"),
    re.compile(r"^No operations will run on the GPU"),
    re.compile(r"^First \d+ operations will run on the GPU"),
    re.compile(r"^[A-Z0-9_]+: Operation is not supported\."),
    re.compile(r"^[A-Z0-9_]+: .*(?:Max version supported|not supported)"),
    re.compile(r"^Flags:"),
)
# Recognised warnings in eras that print no WARN: prefix.
_KNOWN_WARNINGS: tuple[re.Pattern[str], ...] = (
    _UNCONSUMED,
    re.compile(r"^Duplicate flags: "),
    re.compile(r"^GPU acceleration is unsupported on this platform\."),
    re.compile(r"^NNAPI acceleration is unsupported on this platform\."),
    re.compile(r"^Could not create Hexagon delegate"),
    re.compile(r"^Failed to get the input model file size\."),
    re.compile(r"^Tensor # \d+ is named .* but flags call it "),
    re.compile(r"^The GPU delegate compile options are only supported"),
    re.compile(r"^--memory_footprint_check_interval_ms is set to"),
)

_PROVIDER_BY_KERNEL: tuple[tuple[str, str], ...] = (
    ("nnapi", "NNAPI"), ("gpu", "GPU"), ("xnnpack", "XNNPACK"), ("hexagon", "Hexagon"),
    ("coreml", "COREML"), ("ynnpack", "YNNPACK"),
)
_SIGNAL_VERB = {"SIGSEGV": "crashed", "SIGABRT": "crashed", "SIGBUS": "crashed",
                "SIGILL": "crashed", "SIGFPE": "crashed", "SIGTRAP": "crashed"}


# --------------------------------------------------------------------------- line model


@dataclass(slots=True)
class _Line:
    index: int
    msg: str  # message without logcat/glog header and severity prefix, trailing space stripped
    level: str  # "V", "D", "I", "W", "E", "F" or "" when nothing said
    prefixed: bool  # had an INFO:/WARN:/... prefix on a native stream
    logcat: bool
    text: str  # the line as printed, minus any logcat header (severity kept or normalised)


@dataclass(slots=True)
class _Stats:
    index: int
    header_iters: int | None
    count: int
    first: int | None = None
    curr: int | None = None
    min: int | None = None
    max: int | None = None
    avg: float | None = None
    std: int | None = None
    p5: int | None = None
    median: int | None = None
    p95: int | None = None


@dataclass(slots=True)
class _Status:
    provider: str
    status: str  # full | partial | none | failed | ""
    kernels: int | None


def _num(s: str | None) -> float | None:
    if s is None:
        return None
    try:
        v = float(s)
    except ValueError:
        return None
    return None if math.isnan(v) or math.isinf(v) else v


def _int(s: str | None) -> int | None:
    if s is None:
        return None
    try:
        return int(s)
    except ValueError:
        return None


_LEVEL_NAMES = {"I": "INFO", "W": "WARN", "E": "ERROR", "F": "FATAL", "V": "VERBOSE", "D": "DEBUG"}
_SEVERITY_LETTER = {"INFO": "I", "WARN": "W", "WARNING": "W", "ERROR": "E", "VERBOSE": "V",
                    "FATAL": "F", "DEBUG": "D"}


def _split_lines(text: str) -> list[str]:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    # Skip the "# key: value" header of a golden file (up to and including "# ---").
    i = 0
    while i < len(lines) and not lines[i].strip():
        i += 1
    if i < len(lines) and lines[i].startswith("#"):
        j = i
        while j < len(lines) and lines[j].startswith("#"):
            if lines[j].strip() == "# ---":
                return lines[j + 1:]
            j += 1
        if all(_HEADER_META.match(x) for x in lines[i:j]):
            return lines[j:]
    return lines


def _classify(raw: str, index: int) -> tuple[_Line | None, str | None]:
    """One raw line → a `_Line` (None for foreign logcat tags) and a crash signal name if seen."""
    line = raw.rstrip()
    level = ""
    logcat = False
    for rx in (_LOGCAT_THREADTIME, _LOGCAT_TIME, _LOGCAT_BRIEF):
        m = rx.match(line)
        if m:
            letter, tag, rest = m.group(1), m.group(2).strip(), m.group(3)
            sig = _FATAL_SIGNAL.search(rest)
            if not _TFLITE_TAG.match(tag):
                return None, (sig.group(2) if sig else None)
            level, logcat, line = ("I" if letter == "V" else letter), True, rest
            break
    else:
        g = _GLOG.match(line)
        if g:
            level, line = g.group(1), g.group(2)
    prefixed = False
    s = _SEVERITY.match(line)
    if s:
        level, line, prefixed = _SEVERITY_LETTER[s.group(1)], s.group(2), not logcat
    msg = line.rstrip()
    if logcat and level in ("W", "E", "F"):
        text = f"{_LEVEL_NAMES[level]}: {msg}"
    else:
        text = raw.rstrip() if not logcat else msg
    return _Line(index, msg, level, prefixed, logcat, text), None


def _signal_name(code: int) -> str | None:
    """The signal behind an exit status (128+N from a shell, -N from subprocess), else None."""
    n = -code if code < 0 else code - 128 if code > 128 else 0
    if not 0 < n <= 64:
        return None
    try:
        return signal.Signals(n).name
    except ValueError:
        return f"signal {n}"


# --------------------------------------------------------------------------- parser


class _Parser:
    """Collects facts line by line; `result()` decides what they mean."""

    def __init__(self, text: str) -> None:
        self.lines: list[_Line] = []
        self.crash_signal: str | None = None
        for i, raw in enumerate(_split_lines(text)):
            line, sig = _classify(raw, i)
            if sig and not self.crash_signal:
                self.crash_signal = sig
            if line is not None:
                self.lines.append(line)
        self.recognised = False
        self.stats: list[_Stats] = []
        self.run_headers: list[tuple[int, int]] = []  # (line index, iterations)
        self.summary_index: int | None = None
        self.summary: dict[str, float | None] = {}
        self.summary_old = False
        self.summary_complete = False
        self.init_session_us: float | None = None
        self.model_size_mb: float | None = None
        self.mem: tuple[float | None, float | None] | None = None
        self.mem_label = ""
        self.peak: float | None = None
        self.vmrss: float | None = None
        self.memory_status = False
        self.params: list[tuple[str, str]] = []
        self.statuses: list[_Status] = []
        self.tool_created: list[str] = []
        self.runtime_created: list[str] = []
        self.xnn_runtime = False
        self.replacing: list[tuple[int, int | None, int | None, str]] = []
        self.replacing_subgraph = False
        self.hexagon_nodes: tuple[int, int, int | None] | None = None
        self.gpu_ops: tuple[int, int] | None = None
        self.gpu_kernels: int | None = None
        self.unconsumed: list[str] = []
        self.bench_failed = False
        self.decisive: _Line | None = None
        self.error_lines: list[_Line] = []
        self.warnings: list[str] = []
        self.prefixed_tool = False
        self.old_markers = False
        self.new_era_markers = False
        self.delta_label = False
        self.terminate_seen = False
        self.running_without_at_least = False
        self.litert: dict[str, tuple[float | None, int | None]] = {}
        self.litert_index: int | None = None
        self.profile_regular_index: int | None = None
        self.profile_complete = False
        self.profile_headers = False
        self.profile_start_column = False
        self.profile_seen = False
        self.profile_kernels: list[str] = []
        self.profile_cpu_nodes = 0
        self.logcat_lines = 0

    # ---------------------------------------------------------------- scanning

    def scan(self) -> None:
        in_litert = False
        run_order_rows: list[list[str]] = []
        table: list[list[str]] | None = None
        pending_header: int | None = None
        for ln in self.lines:
            msg = ln.msg
            if ln.logcat:
                self.logcat_lines += 1
            if table is not None:
                if msg.startswith("\t") or (not msg and not table):
                    if msg.startswith("\t"):
                        table.append(msg.split("\t"))
                    continue
                if not run_order_rows and self._is_regular_table():
                    run_order_rows = table
                table = None
            if ln.prefixed and any(rx.match(msg) for rx in _TOOL_LINES):
                self.prefixed_tool = True
            if in_litert:
                if _LITERT_END.match(msg):
                    in_litert = False
                    continue
                for key, rx in _LITERT_FIELDS.items():
                    m = rx.match(msg)
                    if m:
                        runs = _int(m.group(2)) if rx.groups >= 2 else None
                        self.litert[key] = (_num(m.group(1)), runs)
                        self.recognised = True
                continue
            if _LITERT_BEGIN.match(msg):
                in_litert, self.litert_index, self.recognised = True, ln.index, True
                continue
            if _RUN_ORDER.match(msg):
                self.profile_seen = True
                table = []
                continue
            if self._scan_stats(ln, pending_header):
                pending_header = None
                continue
            m = _RUNNING.match(msg)
            if m:
                self.recognised = True
                pending_header = int(m.group(1))
                self.run_headers.append((ln.index, pending_header))
                if "terminate if exceeding" in msg:
                    self.terminate_seen = True
                elif " at least " not in msg:
                    self.running_without_at_least = True
                continue
            self._scan_other(ln)
        if table is not None and not run_order_rows and self._is_regular_table():
            run_order_rows = table
        for row in run_order_rows:
            if len(row) < 2:
                continue
            node_type = row[1].strip()
            if not node_type or node_type.startswith("["):
                continue
            if _DELEGATE_KERNEL.match(node_type):
                self.profile_kernels.append(node_type)
            else:
                self.profile_cpu_nodes += 1
        if any("[start]" in x.msg for x in self.lines if x.msg.startswith("\t")):
            self.profile_start_column = True

    def _is_regular_table(self) -> bool:
        # The regular-run Run Order table follows "Operator-wise Profiling Info ..."; TF <= 2.1
        # prints only that one table, without any header.
        return self.profile_regular_index is not None or not self.profile_headers

    def _scan_stats(self, ln: _Line, pending_header: int | None) -> bool:
        m = _STATS.match(ln.msg)
        if m:
            count = int(m.group(1))
            st = _Stats(ln.index, pending_header, count)
            st.first, st.curr = _int(m.group(2)), _int(m.group(3))
            if m.group(5) is not None:
                st.min, st.max = _int(m.group(5)), _int(m.group(6))
                st.avg, st.std = _num(m.group(7)), _int(m.group(8))
            elif count > 0 and st.curr is not None:
                st.first = st.min = st.max = st.curr
                st.avg, st.std = float(st.curr), 0
            if m.group(9) is not None:
                st.p5, st.median, st.p95 = _int(m.group(9)), _int(m.group(10)), _int(m.group(11))
                self.new_era_markers = True
            self.stats.append(st)
            self.recognised = True
            return True
        m = _STATS_ANCIENT.match(ln.msg)
        if m:
            st = _Stats(ln.index, pending_header, int(m.group(2)), curr=_int(m.group(1)))
            if m.group(4) is not None:
                st.min, st.max = _int(m.group(4)), _int(m.group(5))
                st.avg, st.std = _num(m.group(6)), _int(m.group(7))
            elif st.count > 0:
                st.first = st.min = st.max = st.curr
                st.avg, st.std = (float(st.curr) if st.curr is not None else None), 0
            self.stats.append(st)
            self.recognised = self.old_markers = True
            return True
        return False

    def _scan_other(self, ln: _Line) -> None:
        msg = ln.msg
        m = _SUMMARY_NEW.match(msg) or _SUMMARY_OLD.match(msg)
        if m:
            if self.summary_index is None:
                self._scan_summary(ln, m.group(1), old=m.re is _SUMMARY_OLD)
            return
        error_level = ln.level in ("E", "F")
        for rx in _DECISIVE:
            if rx.match(msg):
                self.recognised = True
                if self.decisive is None:
                    self.decisive = ln
                break
        if error_level:
            self.error_lines.append(ln)
        elif ln.level == "W" or any(rx.match(msg) for rx in _KNOWN_WARNINGS):
            self.warnings.append(ln.text if ln.level == "W" else msg)
        if _BENCH_FAILED.match(msg):
            self.bench_failed = self.recognised = True
            return
        if _STARTING.match(msg) or _LOADED.match(msg):
            self.recognised = True
            return
        if msg == "resolved reporter":
            self.recognised = self.old_markers = True
            return
        m = _UNCONSUMED.match(msg)
        if m:
            self.unconsumed.extend(m.group(1).split())
            self.recognised = True
            return
        m = _INIT_SESSION.match(msg)
        if m:
            v = _num(m.group(1))
            self.init_session_us = round(v * 1000.0, 3) if v is not None else None
            self.recognised = True
            if not msg.endswith("."):
                self.old_markers = True
            return
        m = _MODEL_SIZE.match(msg)
        if m:
            self.model_size_mb, self.recognised = _num(m.group(1)), True
            return
        m = _MEMORY.match(msg)
        if m:
            self.mem = (_num(m.group(2)), _num(m.group(3)))
            self.delta_label = m.group(1).startswith("Memory footprint delta")
            self.recognised = True
            return
        m = _PEAK.match(msg)
        if m:
            self.peak, self.delta_label, self.recognised = _num(m.group(1)), True, True
            return
        if _MEMORY_STATUS.match(msg):
            self.memory_status = self.recognised = True
            return
        m = _VMRSS.match(msg)
        if m:
            self.vmrss = _num(m.group(1))
            return
        if _PROFILE_REGULAR.match(msg):
            self.profile_regular_index, self.profile_headers = ln.index, True
            self.profile_seen = self.recognised = True
            return
        if _PROFILE_INIT.match(msg):
            self.profile_headers = self.profile_seen = self.recognised = True
            return
        if _NODES_OBSERVED.match(msg):
            if self.profile_regular_index is not None:
                self.profile_complete = True
            return
        if self._scan_delegate(msg):
            self.recognised = True
            return
        m = _PARAM.match(msg)
        if m and not msg.startswith(("count=", "\t")):
            desc, val = m.group(1).strip(), m.group(2)
            self.params.append((desc, val))
            if desc in ("Num runs", "Warmup runs"):
                self.old_markers = True
            if desc == "Use nnapi" and "Use nnapi :" in msg:
                self.old_markers = True
            self.recognised = True

    def _scan_summary(self, ln: _Line, rest: str, *, old: bool) -> None:
        self.recognised = True
        values: dict[str, float | None] = {}
        for kv in _KV.finditer(rest):
            values[kv.group(1).strip()] = _num(kv.group(2))
        keys = (("Warmup", "Init") if old else ("Init", "First inference", "Warmup (avg)",
                                                "Inference (avg)"))
        last_key = "Inference (avg)"
        if old:
            last_key = next((k for k in ("no stats", "Inference", "with stats") if k in values), "")
        complete = all(k in values for k in keys) and bool(last_key) and last_key in values
        if not complete:
            return
        self.summary_index, self.summary_old, self.summary = ln.index, old, values
        self.summary["__avg__"] = values.get(last_key)
        self.summary_complete = True
        if old:
            self.old_markers = True
        else:
            self.new_era_markers = True

    def _scan_delegate(self, msg: str) -> bool:
        m = _EXPLICIT.match(msg)
        if m:
            status = "full" if m.group(2) == "completely" else "partial"
            kernels = 1 if status == "full" else _int(m.group(3))
            self.statuses.append(_Status(m.group(1), status, kernels))
            return True
        m = _NOT_EXECUTED.match(msg)
        if m:
            self.statuses.append(_Status(m.group(1), "none", 0))
            return True
        m = _FAILED_APPLY.match(msg)
        if m:
            self.statuses.append(_Status(m.group(1), "failed", None))
            return True
        m = _APPLIED_OLD.match(msg)
        if m:
            self.statuses.append(_Status(m.group(1), "", None))
            self.old_markers = True
            return True
        if _XNN_RUNTIME.match(msg):
            self.xnn_runtime = True
            return True
        m = _RUNTIME_CREATED.match(msg)
        if m:
            self.runtime_created.append(m.group(1))
            return True
        m = _TOOL_CREATED.match(msg)
        if m:
            self.tool_created.append(m.group(1))
            return True
        m = _REPLACING.match(msg)
        if m:
            self.replacing.append((int(m.group(1)), _int(m.group(2)), _int(m.group(4)),
                                   m.group(3)))
            if "for subgraph" in (m.group(5) or ""):
                self.replacing_subgraph = True
            return True
        m = _HEXAGON_NODES.match(msg)
        if m:
            self.hexagon_nodes = (int(m.group(1)), int(m.group(2)), _int(m.group(3)))
            return True
        m = _GPU_OPS.match(msg) or _GPU_OPS_OLD.match(msg)
        if m:
            self.gpu_ops = (int(m.group(1)), int(m.group(2)))
            return True
        m = _GPU_OPS_NONE.match(msg)
        if m:
            self.gpu_ops = (0, int(m.group(1)))
            return True
        m = _GPU_KERNELS.match(msg)
        if m:
            self.gpu_kernels = int(m.group(1))
            return True
        return False

    # ---------------------------------------------------------------- deciding

    def _loops(self) -> tuple[_Stats | None, _Stats | None]:
        """(warmup, regular) stats lines; see the module docstring for the rules."""
        stats = self.stats
        end = self.summary_index if self.summary_index is not None else self.litert_index
        if end is not None:
            before = [s for s in stats if s.index < end]
            if len(before) >= 2:
                return before[-2], before[-1]
            if len(before) == 1:
                return None, before[0]
            return None, None
        if len(stats) >= 2:
            return stats[0], stats[1]
        if len(stats) == 1:
            st = stats[0]
            headers = [i for i, _ in self.run_headers]
            warmup_param = self._param_int("Min warmup runs", "Warmup runs")
            if len(headers) >= 2 and st.index > headers[1]:
                return None, st
            if (st.header_iters is not None and warmup_param is not None
                    and st.header_iters != warmup_param
                    and st.header_iters == self._param_int("Min num runs", "Num runs")):
                return None, st
            return st, None
        return None, None

    def _param(self, *names: str) -> str | None:
        for desc, val in self.params:
            if desc in names:
                return val
        return None

    def _param_int(self, *names: str) -> int | None:
        return _int(self._param(*names))

    def _param_true(self, *names: str) -> bool:
        return self._param(*names) in ("1", "true")

    def _format(self) -> str:
        if self.litert_index is not None:
            return "litert-compiled"
        if self.new_era_markers and any(s.p5 is not None for s in self.stats):
            return "tf2.19+"
        if self.memory_status or self.replacing_subgraph:
            return "tf2.19+"
        if (self.summary_complete and self.summary_old) or self.old_markers:
            apk = self.summary_complete and "Inference" in self.summary
            newer = self.terminate_seen or apk or self._param("Min num runs") is not None
            if newer and not self.running_without_at_least:
                return "tf1.15-2.1"
            if self.recognised:
                return "tf1.12-1.14"
        if self.prefixed_tool:
            return "tf2.13-2.18"
        if self._param("Signature to run") is not None:
            return "tf2.13-2.18"
        if self.profile_seen and not self.profile_start_column and self.profile_headers:
            return "tf2.13-2.18"
        if self.delta_label:
            return "tf2.5-2.12"
        era22 = (
            self.summary_complete or self.mem is not None or self.model_size_mb is not None
            or self._param("Log parameter values verbosely") is not None
            or any(w.startswith("Duplicate flags") for w in self.warnings)
            or bool(self.statuses) or self.profile_headers
            or (self.init_session_us is not None and not self.old_markers)
        )
        if era22:
            return "tf2.2-2.4"
        if self.profile_seen:
            return "tf1.15-2.1"
        return "unknown"

    def _delegates(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        statuses = list(self.statuses)
        gpu = self.gpu_ops
        for st in statuses:
            # TF <= 2.1 "Applied GPU delegate." says nothing about coverage; the GPU op split does.
            if st.status == "" and st.provider == "GPU" and gpu is not None:
                st.status = "partial" if gpu[1] > 0 else "full"
        explicit_xnn = (any(s.provider == "XNNPACK" for s in statuses)
                        or "XNNPACK" in self.tool_created or self._param_true("Use xnnpack"))
        out["default_xnnpack"] = self.xnn_runtime and not explicit_xnn
        providers: list[str] = []
        for s in statuses:
            if s.provider not in providers:
                providers.append(s.provider)
        kernels: int | None = None
        delegation = ""
        if statuses:
            kinds = {s.status for s in statuses}
            for want in ("failed", "full", "partial", "none"):
                if want in kinds:
                    delegation = want
                    break
            ks = [s.kernels for s in statuses if s.kernels is not None]
            kernels = sum(ks) if ks else None
        elif self.tool_created or self.runtime_created:
            providers = [p for p in dict.fromkeys(self.tool_created + self.runtime_created)
                         if p != "XNNPACK" or explicit_xnn]
        elif self.profile_kernels:
            provider = ""
            low = self.profile_kernels[0].lower()
            for key, name in _PROVIDER_BY_KERNEL:
                if key in low:
                    provider = name
            if provider and (provider != "XNNPACK" or explicit_xnn):
                providers = [provider]
                kernels = len(self.profile_kernels)
                delegation = "full" if kernels == 1 and self.profile_cpu_nodes == 0 else "partial"
        if gpu is not None:
            out["gpu_ops_on_gpu"], out["gpu_ops_on_cpu"] = gpu
        if kernels is None and self.gpu_kernels is not None and "GPU" in providers:
            kernels = self.gpu_kernels
        out["delegate_applied"] = "+".join(providers)
        out["delegation"] = delegation
        out["delegate_kernels"] = kernels
        out["delegate_statuses"] = tuple(f"{s.provider}:{s.status}" for s in statuses)
        if self.replacing:
            out["delegated_nodes"] = sum(r[0] for r in self.replacing)
            totals = [r[1] for r in self.replacing if r[1] is not None]
            out["total_nodes"] = max(totals) if totals else None
            parts = [r[2] for r in self.replacing if r[2] is not None]
            out["partitions"] = sum(parts) if parts else None
        elif self.hexagon_nodes is not None:
            out["delegated_nodes"], out["total_nodes"], out["partitions"] = self.hexagon_nodes
        return out

    def _error(self, *, truncated: bool, regular: _Stats | None, warmup: _Stats | None,
               exit_code: int | None) -> str:
        parts: list[str] = []
        sig = self.crash_signal
        if exit_code is not None and exit_code != 0:
            sig = _signal_name(exit_code) or sig
        if sig:
            verb = _SIGNAL_VERB.get(sig, "killed")
            code = f", exit {exit_code}" if exit_code else ""
            parts.append(f"{verb} ({sig}{code})")
        reason = ""
        if self.decisive is not None:
            reason = self.decisive.msg
            cause = self._root_cause(exclude=self.decisive)
            if cause and cause not in reason:
                reason = f"{reason} ({cause})"
        elif self.bench_failed:
            cause = self._root_cause(exclude=None)
            reason = f"Benchmarking failed. ({cause})" if cause else "Benchmarking failed."
        elif truncated:
            if regular is not None:
                stage = "stopped after the regular loop"
            elif warmup is not None:
                stage = "stopped in the regular loop"
            else:
                stage = "stopped before the timed runs"
            reason = f"output truncated: no summary line ({stage})"
        elif not self.recognised:
            reason = "empty output" if not any(x.msg for x in self.lines) else (
                "no benchmark_model output recognised")
        elif self.error_lines and not self.summary_complete:
            reason = self.error_lines[0].msg
        if reason and not (sig and reason.startswith("output truncated")):
            parts.append(reason)
        if exit_code not in (None, 0) and not sig:
            parts.append(f"exit status {exit_code}")
        return "; ".join(parts)

    def _root_cause(self, exclude: _Line | None) -> str:
        for ln in self.error_lines:
            if ln is exclude or any(rx.match(ln.msg) for rx in _AUXILIARY_ERRORS):
                continue
            if any(rx.match(ln.msg) for rx in _DECISIVE):
                continue
            return ln.msg
        return ""

    def result(self, exit_code: int | None) -> BenchmarkOutput:
        warmup, regular = self._loops()
        s = self.summary if self.summary_complete else {}
        summary_ok = bool(s)
        # A cut summary line still matches but its last number differs from the count= avg.
        if summary_ok and regular is not None and regular.avg is not None:
            printed = s.get("__avg__")
            if printed is None or abs(printed - regular.avg) > 1e-5 * max(abs(regular.avg), 1.0):
                summary_ok = False
        litert_ok = "avg_ms" in self.litert
        failed = self.bench_failed or self.decisive is not None
        crashed = self.crash_signal is not None or (
            exit_code is not None and _signal_name(exit_code) is not None)
        complete = summary_ok or litert_ok or (self.profile_complete and not self.stats)
        truncated = self.recognised and not complete and not failed
        success = complete and not failed and not crashed and exit_code in (None, 0)

        def lit(key: str, scale: float) -> float | None:
            v = self.litert.get(key, (None, None))[0]
            return None if v is None else round(v * scale, 6)

        vals: dict[str, Any] = {}
        if regular is not None:
            vals.update(count=regular.count, first_us=regular.first, curr_us=regular.curr,
                        min_us=regular.min, max_us=regular.max, avg_us=regular.avg,
                        std_us=regular.std, p5_us=regular.p5, median_us=regular.median,
                        p95_us=regular.p95)
        elif litert_ok:
            vals.update(count=self.litert["avg_ms"][1], min_us=lit("min_ms", 1000),
                        max_us=lit("max_ms", 1000), avg_us=lit("avg_ms", 1000),
                        std_us=lit("std_ms", 1000))
        vals = {k: (float(v) if isinstance(v, int) and k != "count" else v)
                for k, v in vals.items()}
        init_us = s.get("Init") if summary_ok else None
        if init_us is None:
            init_us = lit("init_ms", 1000) if litert_ok else None
        if init_us is None:
            init_us = self.init_session_us
        first_inf = s.get("First inference") if summary_ok else None
        if first_inf is None and litert_ok:
            first_inf = lit("first_ms", 1000)
        warmup_avg = warmup.avg if warmup is not None else None
        if warmup_avg is None and summary_ok:
            warmup_avg = s.get("Warmup (avg)", s.get("Warmup"))
        if warmup_avg is None and litert_ok:
            warmup_avg = lit("warmup_avg_ms", 1000)
        warmup_count = warmup.count if warmup is not None else None
        if warmup_count is None and litert_ok:
            warmup_count = self.litert.get("warmup_avg_ms", (None, None))[1]
        inference_avg = regular.avg if regular is not None else None
        if inference_avg is None and summary_ok:
            inference_avg = s.get("__avg__")
        if inference_avg is None and litert_ok:
            inference_avg = lit("avg_ms", 1000)
        mem_init = self.mem[0] if self.mem else lit("init_mb", 1)
        mem_overall = self.mem[1] if self.mem else lit("overall_mb", 1)
        peak = self.peak if self.peak is not None else lit("peak_mb", 1)
        threads = self._param_int("Num threads")
        if threads is None:
            threads = self._param_int("#threads used for CPU inference")
        accelerators = self._param("NNAPI accelerators available")
        error = "" if success else self._error(
            truncated=truncated, regular=regular, warmup=warmup, exit_code=exit_code)
        if not success and not error:
            error = "benchmark_model did not report success"
        error_lines = tuple(ln.text for ln in self.error_lines)
        return BenchmarkOutput(
            success=success,
            error=error,
            format=self._format(),
            source="logcat" if self.logcat_lines and self.logcat_lines * 2 >= len(
                [x for x in self.lines if x.msg]) else "stdout",
            truncated=truncated,
            init_us=init_us,
            first_inference_us=first_inf,
            warmup_avg_us=warmup_avg,
            inference_avg_us=inference_avg,
            warmup_count=warmup_count,
            mem_init_mb=mem_init,
            mem_overall_mb=mem_overall,
            peak_mem_mb=peak,
            vmrss_mb=self.vmrss,
            model_size_mb=self.model_size_mb,
            num_threads=threads,
            nnapi_accelerators=tuple(a.strip() for a in accelerators.split(",") if a.strip())
            if accelerators else (),
            unconsumed_flags=tuple(self.unconsumed),
            error_lines=error_lines,
            warnings=tuple(self.warnings),
            exit_code=exit_code,
            params=tuple(self.params),
            **vals,
            **self._delegates(),
        )


def parse_output(text: str | bytes, exit_code: int | None = None) -> BenchmarkOutput:
    """Parse benchmark_model output (any era, stdout/stderr/logcat); never raises on bad input.

    `exit_code`, when given, is the process status (128+N or -N for signal N): a non-zero value
    makes the run a failure whose `error` names it (139 gives "crashed (SIGSEGV, exit 139)").
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str):
        return BenchmarkOutput(success=False, error=f"not text: {type(text).__name__}",
                               exit_code=exit_code)
    parser = _Parser(text)
    parser.scan()
    return parser.result(exit_code)


# --------------------------------------------------------------------------- argv

_FLAG = re.compile(r"^--([A-Za-z0-9_\-]+)=(.*)$", re.DOTALL)


def _fmt_float(name: str, x: float) -> str:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise BenchmarkError(f"benchmark_model argv: {name} must be a finite number, got {x!r}")
    x = float(x)
    return str(int(x)) if x.is_integer() else repr(x)


def _fmt_int(name: str, x: int) -> str:
    if isinstance(x, bool) or not isinstance(x, int):
        raise BenchmarkError(f"benchmark_model argv: {name} must be an integer, got {x!r}")
    return str(x)


def build_argv(
    binary: Sequence[str],
    *,
    graph: str,
    threads: int,
    params: RunParams,
    delegate_flags: Sequence[str] = (),
    extra: Sequence[str] = (),
) -> list[str]:
    """The benchmark_model argv for one case, `--name=value` flags only; raises BenchmarkError."""
    if isinstance(binary, str) or not binary:
        raise BenchmarkError(
            f"benchmark_model argv: binary must be a non-empty list of strings, got {binary!r}")
    for i, part in enumerate(binary):
        if not isinstance(part, str) or not part:
            raise BenchmarkError(f"benchmark_model argv: binary[{i}] must be a non-empty string, "
                                 f"got {part!r}")
    if not isinstance(graph, str) or not graph:
        raise BenchmarkError(f"benchmark_model argv: graph must be a non-empty path, got {graph!r}")
    argv = [
        f"--graph={graph}",
        f"--num_threads={_fmt_int('threads', threads)}",
        f"--warmup_runs={_fmt_int('warmup_runs', params.warmup_runs)}",
        f"--warmup_min_secs={_fmt_float('warmup_min_secs', params.warmup_min_secs)}",
        f"--num_runs={_fmt_int('num_runs', params.num_runs)}",
        f"--min_secs={_fmt_float('min_secs', params.min_secs)}",
        f"--max_secs={_fmt_float('max_secs', params.max_secs)}",
    ]
    run_delay = _fmt_float("run_delay_s", params.run_delay_s)
    if params.run_delay_s > 0:
        argv.append(f"--run_delay={run_delay}")
    if params.report_peak_memory:
        argv.append("--report_peak_memory_footprint=true")
    if params.require_full_delegation:
        argv.append("--require_full_delegation=true")
    taken = {"graph", "num_threads", "warmup_runs", "warmup_min_secs", "num_runs", "min_secs",
             "max_secs", "run_delay", "report_peak_memory_footprint", "require_full_delegation"}
    for label, group in (("delegate_flags", delegate_flags), ("extra", extra)):
        if isinstance(group, str):
            raise BenchmarkError(f"benchmark_model argv: {label} must be a list of flags, "
                                 f"not the string {group!r}")
        for i, flag in enumerate(group):
            if not isinstance(flag, str):
                raise BenchmarkError(f"benchmark_model argv: {label}[{i}] must be a string, "
                                     f"got {flag!r}")
            m = _FLAG.match(flag)
            if not m:
                raise BenchmarkError(
                    f"benchmark_model argv: {label}[{i}] {flag!r} is not of the form "
                    "--name=value (benchmark_model accepts no other syntax)")
            if m.group(1) in taken:
                raise BenchmarkError(
                    f"benchmark_model argv: {label}[{i}] {flag!r} repeats --{m.group(1)}; "
                    "benchmark_model would use the first one and ignore this")
            taken.add(m.group(1))
            argv.append(flag)
    return [*binary, *argv]
