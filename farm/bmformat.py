"""Render the text TFLite's `benchmark_model` of a given era prints for a given run.

Pure: no I/O. `format_output(FormatInput, era=...)` returns `(stdout, stderr)` as the tool would
write them; `stat_line` reproduces `tsl::Stat`/`StatWithPercentiles::OutputToStream`; and
`echo_params` builds the parameter echo block of an era. The phone simulator renders any era with
it, the host runner (`farm.hostbench`) era "tf2.19+".

Stream placement follows shared/benchmark_model.md §6: the tool's own lines (TFLITE_LOG) go to
stderr without a prefix up to TF 2.1, then INFO/WARN to stdout and ERROR to stderr (unprefixed
until 2.12, `INFO: `/`WARN: `/`ERROR: ` from 2.13); runtime and delegate lines (minimal_logging)
always go to stderr with their `INFO: `/`ERROR: `/`VERBOSE: ` prefix. Each era is rendered as its
last version prints it (e.g. "tf2.2-2.4" as TF 2.4: it already logs only explicitly set params
and says "Explicitly applied ...").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

ERAS: tuple[str, ...] = ("tf1.12-1.14", "tf1.15-2.1", "tf2.2-2.4", "tf2.5-2.12", "tf2.13-2.18",
                         "tf2.19+")
DELEGATE_STATUSES: tuple[str, ...] = ("full", "partial", "none", "failed", "unavailable",
                                      "fallback")
FAIL_STAGES: tuple[str, ...] = ("", "flags", "params", "load", "init", "warmup", "regular")

_KERNEL_NAMES = {
    "XNNPACK": "TfLiteXNNPackDelegate",
    "GPU": "TfLiteGpuDelegateV2",
    "NNAPI": "TfLiteNnapiDelegate",
    "Hexagon": "TfLiteHexagonDelegate",
    "COREML": "TfLiteCoreMlDelegate",
}
_UNAVAILABLE = {
    "GPU": "GPU acceleration is unsupported on this platform.",
    "NNAPI": "NNAPI acceleration is unsupported on this platform.",
    "Hexagon": "Could not create Hexagon delegate: platform may not support delegate or required "
               "libraries are missing",
}
_OLD_ERAS = ("tf1.12-1.14", "tf1.15-2.1")


@dataclass(frozen=True, slots=True)
class DelegateReport:
    """What one delegate did during Init, in the words the tool and the runtime use.

    `explicit=False` is the runtime's default XNNPACK delegate: it prints runtime lines only,
    never a tool status line. `status="unavailable"` means the provider could not create the
    delegate (a WARN) and the run continues without it; `status="fallback"` means it applied
    but did not take the whole graph while --require_full_delegation was set ("Disallowed CPU
    fallback detected.", and Init fails). A "fallback" report with provider "" or "CPU" stands
    for --require_full_delegation with no delegate created at all: only that error is printed.
    """

    provider: str  # as printed: XNNPACK, GPU, NNAPI, Hexagon, EXTERNAL, COREML, ...
    status: str = "full"  # one of DELEGATE_STATUSES
    explicit: bool = True
    kernels: int = 1  # delegate kernels (= partitions) for "partial"
    replaced_nodes: int | None = None  # for the runtime's "Replacing n out of N node(s)" line
    total_nodes: int | None = None
    partitions: int | None = None
    kernel_name: str = ""  # default from the provider (TfLiteGpuDelegateV2, ...)
    gpu_ops_on_gpu: int | None = None  # GPU: "K operations will run on the GPU, ..."
    gpu_ops_on_cpu: int | None = None
    unsupported_ops: tuple[str, ...] = ()  # GPU: "UNPACK: Operation is not supported."
    gpu_backend: str = "opencl"  # GPU: "opencl", "opengl" or "" (no backend lines)
    error_lines: tuple[str, ...] = ()  # runtime ERROR messages printed before a failure


@dataclass(frozen=True, slots=True)
class FormatInput:
    """One benchmark_model run, as data. Latencies in µs, memory in MB, model size in bytes.

    `fail_stage` says where a failing run stopped: "flags" (bad flag or --help, before any
    parameter echo), "params" (parameter validation, e.g. no --graph), "load" (model not loaded),
    "init" (interpreter, delegate or tensor allocation), "warmup" or "regular" (an invoke
    failed; after the regular loop the summary is still printed). `error_lines` are the tool's
    ERROR messages and `runtime_error_lines` the runtime's, both without prefix; a failed
    delegate (status "failed") implies stage "init".
    """

    graph: str
    params: tuple[tuple[str, str], ...] = ()
    model_size_bytes: int | None = None
    init_us: int = 0
    warmup_us: tuple[int, ...] = ()
    regular_us: tuple[int, ...] = ()
    warmup_runs: int = 1
    warmup_min_secs: float = 0.5
    num_runs: int = 50
    min_secs: float = 1.0
    max_secs: float = 150.0
    mem_init_mb: float | None = None
    mem_overall_mb: float | None = None
    peak_mem_mb: float | None = None
    vmrss_mb: tuple[int, int, int] | None = None  # (VmRSS, RssAnon, RssFile + RssShmem)
    delegates: tuple[DelegateReport, ...] = ()
    android: bool = False
    show_verbose: bool | None = None  # VERBOSE runtime lines (Replacing ...); None: android
    verbose_params: bool = False  # --verbose=true: "Log parameter values verbosely: [1]"
    unconsumed_flags: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()  # extra tool WARN messages, printed after flag parsing
    runtime_lines: tuple[str, ...] = ()  # extra runtime lines for Init, verbatim (prefixed)
    fail_stage: str = ""
    error_lines: tuple[str, ...] = ()
    runtime_error_lines: tuple[str, ...] = ()
    extra_stdout: tuple[str, ...] = ()  # tool INFO messages after the summary


def _g(x: float) -> str:
    """A double as C++ `ostream <<` prints it by default (6 significant digits)."""
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.6g}"


def percentile(samples: Sequence[int], p: int) -> int:
    """`StatWithPercentiles::percentile`: nth_element at index size*p/100, 0 when empty."""
    if not samples or not 0 <= p <= 100:
        return 0
    if p == 100:
        return samples[-1]
    return sorted(samples)[len(samples) * p // 100]


def stat_line(samples: Sequence[int], *, percentiles: bool) -> str:
    """The `count=...` line exactly as tsl::Stat prints it (see benchmark_model.md §4.1)."""
    n = len(samples)
    if n == 0:
        out = "count=0"
    elif min(samples) == max(samples):
        out = f"count={n} curr={samples[-1]}" + ("(all same)" if n > 1 else "")
    else:
        avg = sum(samples) / n
        squared = 0.0
        for v in samples:
            squared += float(v) * v
        # variance() returns ValueType (int64), so it is truncated before the sqrt, and the
        # sqrt is truncated again: a population std in whole microseconds.
        variance = int(squared / n - avg * avg)
        std = int(math.sqrt(variance)) if variance > 0 else 0
        out = (f"count={n} first={samples[0]} curr={samples[-1]} min={min(samples)} "
               f"max={max(samples)} avg={_g(avg)} std={std}")
    if percentiles:
        out += (f" p5={percentile(samples, 5)} median={percentile(samples, 50)} "
                f"p95={percentile(samples, 95)}")
    return out


# --------------------------------------------------------------------------- parameter echo

# (flag, description, type) in LogParams order: BenchmarkModel, BenchmarkTfLiteModel, then the
# delegate providers (default, external, gpu, hexagon, nnapi, xnnpack).
_PARAMS: tuple[tuple[str, str, str], ...] = (
    ("num_runs", "Min num runs", "int"),
    ("min_secs", "Min runs duration (seconds)", "float"),
    ("max_secs", "Max runs duration (seconds)", "float"),
    ("run_delay", "Inter-run delay (seconds)", "float"),
    ("run_frequency", "Number of prorated runs per second", "float"),
    ("num_threads", "Num threads", "int"),
    ("use_caching", "Use caching", "bool"),
    ("benchmark_name", "Benchmark name", "str"),
    ("output_prefix", "Output prefix", "str"),
    ("warmup_runs", "Min warmup runs", "int"),
    ("warmup_min_secs", "Min warmup runs duration (seconds)", "float"),
    ("dry_run", "Run w/o invoking kernels", "bool"),
    ("report_peak_memory_footprint", "Report the peak memory footprint", "bool"),
    ("memory_footprint_check_interval_ms", "Memory footprint check interval (ms)", "int"),
    ("graph", "Graph", "str"),
    ("signature_to_run_for", "Signature to run", "str"),
    ("input_layer", "Input layers", "str"),
    ("input_layer_shape", "Input shapes", "str"),
    ("input_layer_value_range", "Input value ranges", "str"),
    ("input_layer_value_files", "Input value files", "str"),
    ("allow_fp16", "Allow fp16", "bool"),
    ("require_full_delegation", "Require full delegation", "bool"),
    ("enable_op_profiling", "Enable op profiling", "bool"),
    ("max_profiling_buffer_entries", "Max initial profiling buffer entries", "int"),
    ("output_filepath", "File path to export outputs layer to", "str"),
    ("result_file_path", "File path to save the benchmark result in binary proto format", "str"),
    ("#num_threads", "#threads used for CPU inference", "int"),
    ("max_delegated_partitions", "Max number of delegated partitions", "int"),
    ("min_nodes_per_partition", "Min nodes per partition", "int"),
    ("external_delegate_path", "External delegate path", "str"),
    ("external_delegate_options", "External delegate options", "str"),
    ("use_gpu", "Use gpu", "bool"),
    ("gpu_precision_loss_allowed", "Allow lower precision in gpu", "bool"),
    ("gpu_experimental_enable_quant", "Enable running quant models in gpu", "bool"),
    ("gpu_backend", "GPU backend", "str"),
    ("use_hexagon", "Use Hexagon", "bool"),
    ("hexagon_lib_path", "Hexagon lib path", "str"),
    ("hexagon_profiling", "Hexagon profiling", "bool"),
    ("use_nnapi", "Use NNAPI", "bool"),
    ("nnapi_execution_preference", "NNAPI execution preference", "str"),
    ("nnapi_execution_priority", "Model execution priority in nnapi", "str"),
    ("nnapi_accelerator_name", "NNAPI accelerator name", "str"),
    ("#nnapi_accelerators", "NNAPI accelerators available", "str"),
    ("disable_nnapi_cpu", "Disable NNAPI cpu", "bool"),
    ("nnapi_allow_fp16", "Allow fp16 in NNAPI", "bool"),
    ("use_xnnpack", "Use xnnpack", "bool"),
    ("xnnpack_force_fp16", "Force fp16 in XNNPACK", "bool"),
)

# TF <= 2.1 printed every parameter (no --verbose); the lists are those of transcripts 01 and 03.
_OLD_PARAMS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "tf1.12-1.14": (
        ("num_runs", "Num runs", "50"), ("run_delay", "Inter-run delay (seconds)", "-1"),
        ("num_threads", "Num threads", "1"), ("benchmark_name", "Benchmark name", ""),
        ("output_prefix", "Output prefix", ""), ("warmup_runs", "Warmup runs", "1"),
        ("graph", "Graph", ""), ("input_layer", "Input layers", ""),
        ("input_layer_shape", "Input shapes", ""), ("use_nnapi", "Use nnapi ", "0"),
    ),
    "tf1.15-2.1": (
        ("num_runs", "Min num runs", "50"), ("min_secs", "Min runs duration (seconds)", "1"),
        ("max_secs", "Max runs duration (seconds)", "150"),
        ("run_delay", "Inter-run delay (seconds)", "-1"), ("num_threads", "Num threads", "1"),
        ("benchmark_name", "Benchmark name", ""), ("output_prefix", "Output prefix", ""),
        ("warmup_runs", "Min warmup runs", "1"),
        ("warmup_min_secs", "Min warmup runs duration (seconds)", "0.5"),
        ("graph", "Graph", ""), ("input_layer", "Input layers", ""),
        ("input_layer_shape", "Input shapes", ""), ("use_gpu", "Use gpu ", "0"),
        ("allow_fp16", "Allow fp16 ", "0"),
        ("require_full_delegation", "Require full delegation ", "0"),
        ("enable_op_profiling", "Enable op profiling", "0"),
        ("max_profiling_buffer_entries", "Max profiling buffer entries", "1024"),
    ),
}
_TYPES = {flag: kind for flag, _, kind in _PARAMS}


def _param_value(kind: str, value: str) -> str:
    """A flag value as LogParams prints it: bools as 0/1, floats with 6 significant digits."""
    if kind == "bool":
        return "1" if value in ("true", "1") else "0"
    if kind == "float":
        try:
            return _g(float(value))
        except ValueError:
            return value
    if kind == "int":
        try:
            return str(int(value))
        except ValueError:
            return value
    return value


def echo_params(
    era: str,
    flags: Mapping[str, str],
    *,
    graph: str,
    nnapi_accelerators: Sequence[str] = (),
) -> tuple[tuple[str, str], ...]:
    """The (description, value) lines an era echoes for these explicitly set flags.

    TF <= 2.1 prints every parameter (with its default); later eras print only the flags that
    were set, plus the graph (and from 2.13 the signature) always. Unknown flags are left out
    (the tool reports them as unconsumed instead).
    """
    if era in _OLD_PARAMS:
        return tuple(
            (desc, graph if flag == "graph" else _param_value(_TYPES.get(flag, "str"),
                                                               flags.get(flag, default)))
            for flag, desc, default in _OLD_PARAMS[era]
        )
    out: list[tuple[str, str]] = []
    for flag, desc, kind in _PARAMS:
        if flag == "graph":
            out.append((desc, graph))
        elif flag == "signature_to_run_for":
            if era in ("tf2.13-2.18", "tf2.19+") or flag in flags:
                out.append((desc, flags.get(flag, "")))
        elif flag == "#num_threads":
            if "num_threads" in flags:
                out.append((desc, _param_value(kind, flags["num_threads"])))
        elif flag == "#nnapi_accelerators":
            if _param_value("bool", flags.get("use_nnapi", "false")) == "1" and nnapi_accelerators:
                out.append((desc, ",".join(nnapi_accelerators)))
        elif flag in flags:
            out.append((desc, _param_value(kind, flags[flag])))
    return tuple(out)


# --------------------------------------------------------------------------- rendering


class _Writer:
    """Collects lines on the two streams with an era's prefixes."""

    def __init__(self, era: str) -> None:
        self.era = era
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.prefixed = era in ("tf2.13-2.18", "tf2.19+")
        self.old = era in _OLD_ERAS

    def tool(self, level: str, msg: str) -> None:
        """A TFLITE_LOG line of the benchmark tool (level INFO, WARN or ERROR)."""
        text = f"{level}: {msg}" if self.prefixed else msg
        if self.old or level in ("ERROR", "FATAL"):
            self.stderr.append(text)
        else:
            self.stdout.append(text)

    def runtime(self, level: str, msg: str) -> None:
        """A minimal_logging line of the runtime or a delegate (always stderr, prefixed)."""
        self.stderr.append(f"{level}: {msg}")

    def raw_stderr(self, text: str) -> None:
        self.stderr.append(text)

    @staticmethod
    def join(lines: list[str]) -> str:
        return "".join(line + "\n" for line in lines)


def _replacing_line(era: str, d: DelegateReport) -> str | None:
    if d.replaced_nodes is None:
        return None
    kernel = d.kernel_name or _KERNEL_NAMES.get(d.provider, f"TfLite{d.provider}Delegate")
    parts = d.partitions if d.partitions is not None else (d.kernels if d.status != "full" else 1)
    if era in _OLD_ERAS:
        return (f"Replacing {d.replaced_nodes} node(s) with delegate ({kernel}) node, "
                f"yielding {parts} partitions.")
    total = d.total_nodes if d.total_nodes is not None else d.replaced_nodes
    where = "for subgraph 0." if era == "tf2.19+" else "for the whole graph."
    return (f"Replacing {d.replaced_nodes} out of {total} node(s) with delegate ({kernel}) node, "
            f"yielding {parts} partitions {where}")


def _status_line(era: str, d: DelegateReport) -> str:
    if era in _OLD_ERAS:
        return f"Applied {d.provider} delegate."
    if d.status == "full":
        return (f"Explicitly applied {d.provider} delegate, and the model graph will be "
                "completely executed by the delegate.")
    if d.status == "partial":
        return (f"Explicitly applied {d.provider} delegate, and the model graph will be "
                f"partially executed by the delegate w/ {d.kernels} delegate kernels.")
    return (f"Though {d.provider} delegate is explicitly applied, the model graph will not be "
            "executed by the delegate.")


def _render_delegates(w: _Writer, inp: FormatInput, verbose: bool) -> bool:
    """Init's delegate lines; returns False when a delegate failed to apply."""
    era = w.era
    xnn_logged = False
    for d in inp.delegates:
        if not d.explicit:
            w.runtime("INFO", "Created TensorFlow Lite XNNPACK delegate for CPU.")
            xnn_logged = True
            line = _replacing_line(era, d)
            if line and (verbose or w.old):
                w.runtime("INFO" if w.old else "VERBOSE", line)
    explicit = [d for d in inp.delegates if d.explicit]
    for d in explicit:
        if d.status == "unavailable":
            w.tool("WARN", _UNAVAILABLE.get(d.provider, f"Could not create {d.provider} delegate."))
    if any(d.status == "fallback" and d.provider in ("", "CPU") for d in explicit):
        # --require_full_delegation with no delegate created: the tool refuses before applying.
        w.tool("ERROR", "Disallowed CPU fallback detected.")
        return False
    created = [d for d in explicit if d.status != "unavailable"]
    for i, d in enumerate(created):
        if d.provider == "XNNPACK":
            if not xnn_logged:
                w.runtime("INFO", "Created TensorFlow Lite XNNPACK delegate for CPU.")
                xnn_logged = True
        elif d.provider in ("GPU", "NNAPI", "Hexagon"):
            w.runtime("INFO", f"Created TensorFlow Lite delegate for {d.provider}.")
        if i == 0 and not w.old:
            w.tool("INFO", f"{d.provider} delegate created.")
    if len(created) >= 2 and not w.old:
        w.tool("INFO", f"Going to apply {len(created)} delegates one after another.")
    for d in created:
        if d.provider == "GPU" and d.status != "failed":
            _render_gpu(w, d)
        line = _replacing_line(era, d)
        if line and d.status != "failed" and (verbose or w.old):
            w.runtime("INFO" if w.old else "VERBOSE", line)
        if d.provider == "GPU" and d.status in ("full", "partial"):
            w.runtime("INFO", f"Created {d.kernels if d.status == 'partial' else 1} "
                              "GPU delegate kernels.")
        if d.provider == "Hexagon" and d.replaced_nodes is not None and d.status != "failed":
            w.runtime("INFO", f"TfLiteHexagonDelegate delegate: {d.replaced_nodes} nodes "
                              f"delegated out of {d.total_nodes or d.replaced_nodes} nodes with "
                              f"{d.partitions or d.kernels} partitions.")
        if d.status == "failed":
            for msg in d.error_lines:
                w.runtime("ERROR", msg)
            if not w.old:
                w.runtime("ERROR", "Restored original execution plan after delegate application "
                                   "failure.")
            w.tool("ERROR", f"Failed to apply {d.provider} delegate.")
            return False
        if d.status == "fallback":
            w.tool("ERROR", "Disallowed CPU fallback detected.")
            return False
        w.tool("INFO", _status_line(era, d))
    return True


def _render_gpu(w: _Writer, d: DelegateReport) -> None:
    on_gpu, on_cpu = d.gpu_ops_on_gpu, d.gpu_ops_on_cpu
    if d.unsupported_ops or (on_cpu is not None and on_cpu > 0):
        header = ("Next operations are not supported by GPU delegate:" if w.old
                  else "Following operations are not supported by GPU delegate:")
        w.runtime("ERROR", header)
        for op in d.unsupported_ops:
            w.runtime("ERROR", op)
        if on_gpu is not None and on_cpu is not None:
            if w.old:
                w.runtime("ERROR", f"First {on_gpu} operations will run on the GPU, and the "
                                   f"remaining {on_cpu} on the CPU.")
            elif on_gpu == 0:
                w.runtime("ERROR", f"No operations will run on the GPU, and all {on_cpu} "
                                   "operations will run on the CPU.")
            else:
                w.runtime("ERROR", f"{on_gpu} operations will run on the GPU, and the remaining "
                                   f"{on_cpu} operations will run on the CPU.")
    if d.gpu_backend == "opencl":
        w.runtime("INFO", "Loaded OpenCL library with dlopen.")
        w.runtime("INFO", "Initialized OpenCL-based API.")
    elif d.gpu_backend == "opengl":
        w.runtime("INFO", "Initialized OpenGL-based API.")


def _fail(w: _Writer, inp: FormatInput) -> tuple[str, str]:
    for msg in inp.runtime_error_lines:
        w.runtime("ERROR", msg)
    for msg in inp.error_lines:
        w.tool("ERROR", msg)
    if not w.old:
        w.tool("ERROR", "Benchmarking failed.")
    return w.join(w.stdout), w.join(w.stderr)


def format_output(result: FormatInput, *, era: str) -> tuple[str, str]:
    """(stdout, stderr) exactly as benchmark_model of `era` prints them for this run."""
    if era not in ERAS:
        msg = f"unknown benchmark_model era {era!r}; known: {', '.join(ERAS)}"
        raise ValueError(msg)
    if result.fail_stage not in FAIL_STAGES:
        msg = f"unknown fail_stage {result.fail_stage!r}; known: {', '.join(FAIL_STAGES)}"
        raise ValueError(msg)
    inp = result
    w = _Writer(era)
    verbose = inp.android if inp.show_verbose is None else inp.show_verbose
    stage = inp.fail_stage
    w.tool("INFO", "STARTING!")
    if stage == "flags":
        return _fail(w, inp)
    if inp.unconsumed_flags and not w.old:
        w.tool("WARN", "Unconsumed cmdline flags: " + " ".join(inp.unconsumed_flags))
    for msg in inp.warnings:
        w.tool("WARN", msg)
    if stage == "params":
        return _fail(w, inp)
    if era not in _OLD_ERAS:
        w.tool("INFO", f"Log parameter values verbosely: [{int(inp.verbose_params)}]")
    for desc, value in inp.params:
        w.tool("INFO", f"{desc}: [{value}]")
    if stage == "load":
        return _fail(w, inp)
    w.tool("INFO", f"Loaded model {inp.graph}")
    if w.old:
        w.tool("INFO", "resolved reporter")
    if inp.android:
        w.runtime("INFO", "Initialized TensorFlow Lite runtime.")
    for line in inp.runtime_lines:
        w.raw_stderr(line)
    if not _render_delegates(w, inp, verbose) or stage == "init":
        return _fail(w, inp)
    if not w.old:
        if inp.model_size_bytes is not None and inp.model_size_bytes > 0:
            w.tool("INFO", f"The input model file size (MB): {_g(inp.model_size_bytes / 1e6)}")
        else:
            w.tool("WARN", "Failed to get the input model file size.")
    w.tool("INFO", f"Initialized session in {_g(inp.init_us / 1e3)}ms" + ("" if w.old else "."))
    percentiles = era == "tf2.19+"
    loops = ((inp.warmup_runs, inp.warmup_min_secs, inp.warmup_us),
             (inp.num_runs, inp.min_secs, inp.regular_us))
    for loop, (iters, secs, samples) in enumerate(loops):
        if era == "tf1.12-1.14":
            w.tool("INFO", f"Running benchmark for {iters} iterations")
        else:
            w.tool("INFO", f"Running benchmark for at least {iters} iterations and at least "
                           f"{_g(secs)} seconds but terminate if exceeding {_g(inp.max_secs)} "
                           "seconds.")
        # The stats message ends with std::endl, so the logger's own newline adds a blank line.
        w.tool("INFO", stat_line(samples, percentiles=percentiles) + "\n")
        if stage == "warmup" and loop == 0:
            return _fail(w, inp)
    warmup_avg = sum(inp.warmup_us) / len(inp.warmup_us) if inp.warmup_us else math.nan
    avg = sum(inp.regular_us) / len(inp.regular_us) if inp.regular_us else math.nan
    first = inp.warmup_us[0] if inp.warmup_us else 0
    if w.old:
        w.tool("INFO", f"Average inference timings in us: Warmup: {_g(warmup_avg)}, "
                       f"Init: {inp.init_us}, no stats: {_g(avg)}")
    else:
        w.tool("INFO", f"Inference timings in us: Init: {inp.init_us}, First inference: {first}, "
                       f"Warmup (avg): {_g(warmup_avg)}, Inference (avg): {_g(avg)}")
    if not w.old and inp.mem_init_mb is not None and inp.mem_overall_mb is not None:
        _render_memory(w, inp)
    for msg in inp.extra_stdout:
        w.tool("INFO", msg)
    if stage == "regular":
        return _fail(w, inp)
    return w.join(w.stdout), w.join(w.stderr)


def _render_memory(w: _Writer, inp: FormatInput) -> None:
    assert inp.mem_init_mb is not None and inp.mem_overall_mb is not None
    w.tool("INFO", "Note: as the benchmark tool itself affects memory footprint, the following "
                   "is only APPROXIMATE to the actual memory footprint of the model at runtime. "
                   "Take the information at your discretion.")
    label = ("Peak memory footprint (MB)" if w.era == "tf2.2-2.4"
             else "Memory footprint delta from the start of the tool (MB)")
    w.tool("INFO", f"{label}: init={_g(inp.mem_init_mb)} overall={_g(inp.mem_overall_mb)}")
    if w.era == "tf2.2-2.4" or inp.peak_mem_mb is None or inp.peak_mem_mb <= 0:
        return
    w.tool("INFO", f"Overall peak memory footprint (MB) via periodic monitoring: "
                   f"{_g(inp.peak_mem_mb)}")
    if w.era == "tf2.19+" and inp.vmrss_mb is not None:
        rss, anon, shared = inp.vmrss_mb
        w.tool("INFO", "Memory status at the end of exeution:")
        w.tool("INFO", f"- VmRSS              : {rss} MB")
        w.tool("INFO", f"+ RssAnnon           : {anon} MB")
        w.tool("INFO", f"+ RssFile + RssShmem : {shared} MB")
