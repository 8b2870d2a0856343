"""Frozen value types shared across farm: sweep config, model sources, variants, delegates, cases.

Pure data: no I/O. Units are in field names. Each type has `to_dict()` and `from_dict()`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

QUANTIZATIONS: tuple[str, ...] = ("fp32", "fp16", "dynamic", "int8", "int16x8")
MODEL_KINDS: tuple[str, ...] = ("tflite", "saved_model", "keras_file", "keras_app")
RESIZE_METHODS: tuple[str, ...] = ("bilinear", "nearest", "bicubic", "area")
CHANNEL_ORDERS: tuple[str, ...] = ("RGB", "BGR")
CALIBRATION_KINDS: tuple[str, ...] = ("images", "npy", "random")

T = TypeVar("T")


def _tuplify(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuplify(v) for v in value)
    return value


class _Dictable:
    """Shared to_dict/from_dict for flat frozen dataclasses (tuples <-> lists)."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, _Dictable):
                out[f.name] = v.to_dict()
            elif isinstance(v, tuple):
                out[f.name] = [x.to_dict() if isinstance(x, _Dictable) else x for x in v]
            else:
                out[f.name] = v
        return out

    @classmethod
    def from_dict(cls: type[T], d: dict[str, Any]) -> T:
        """Inverse of `to_dict` for flat types; nested types override this."""
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: _tuplify(v) for k, v in d.items() if k in names})


@dataclass(frozen=True, slots=True)
class RunParams(_Dictable):
    """benchmark_model loop parameters (see shared/benchmark_model.md §2.1)."""

    warmup_runs: int = 1
    warmup_min_secs: float = 0.5
    num_runs: int = 50
    min_secs: float = 1.0
    max_secs: float = 150.0
    run_delay_s: float = -1.0
    report_peak_memory: bool = True
    timeout_s: float = 600.0
    require_full_delegation: bool = False  # a partially applied delegate fails the sample


@dataclass(frozen=True, slots=True)
class Preprocess(_Dictable):
    """How calibration images become model input; each field is a classic PC-vs-phone trap."""

    resize: str = "bilinear"
    center_crop: float = 1.0  # fraction of the shorter side kept before resizing; 1.0 = no crop
    channel_order: str = "RGB"
    mean: tuple[float, ...] = (127.5, 127.5, 127.5)
    std: tuple[float, ...] = (127.5, 127.5, 127.5)


@dataclass(frozen=True, slots=True)
class CalibrationSpec(_Dictable):
    """Representative data for full-integer quantization."""

    kind: str  # one of CALIBRATION_KINDS; "random" only when asked for explicitly
    path: str = ""
    num_samples: int = 100
    preprocess: Preprocess = Preprocess()
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CalibrationSpec:
        d = dict(d)
        if isinstance(d.get("preprocess"), dict):
            d["preprocess"] = Preprocess.from_dict(d["preprocess"])
        return cls(**{k: _tuplify(v) for k, v in d.items()})


@dataclass(frozen=True, slots=True)
class ModelSource(_Dictable):
    """Where a model comes from: .tflite, SavedModel dir, .keras file or Keras architecture."""

    name: str
    kind: str  # one of MODEL_KINDS
    path: str = ""  # file or directory (tflite, saved_model, keras_file)
    arch: str = ""  # keras_app: e.g. "MobileNetV2"
    input_shape: tuple[int, ...] = ()  # keras_app: without batch, e.g. (224, 224, 3)
    seed: int = 0
    options: tuple[tuple[str, Any], ...] = ()  # extra keras_app kwargs, e.g. (("alpha", 0.35),)


@dataclass(frozen=True, slots=True)
class ModelVariant(_Dictable):
    """One converted .tflite (or the failure to convert it). Failures are data."""

    model: str
    quantization: str
    status: str  # "ok" | "failed"
    path: str = ""
    sha256: str = ""
    size_bytes: int = 0
    source_sha256: str = ""
    converter_version: str = ""
    conversion_s: float = 0.0
    cached: bool = False
    calibration: str = ""  # "images:<path>", "npy:<path>", "random (explicit)", "" if none used
    error: str = ""


@dataclass(frozen=True, slots=True)
class DelegateSpec(_Dictable):
    """A delegate as data: benchmark_model flags plus where it applies."""

    name: str
    # provider: the name benchmark_model prints (XNNPACK, GPU, NNAPI, Hexagon, EXTERNAL); "" = CPU
    provider: str
    description: str = ""
    flags: tuple[str, ...] = ()
    quantizations: tuple[str, ...] = QUANTIZATIONS
    abis: tuple[str, ...] = ()  # empty: any ABI
    requires: tuple[str, ...] = ()  # device capabilities: "gpu", "nnapi", "hexagon"
    extra_files: tuple[str, ...] = ()
    source_file: str = ""


@dataclass(frozen=True, slots=True)
class Rule(_Dictable):
    """An include/exclude rule: every given key must match (lists mean any of)."""

    model: tuple[str, ...] = ()
    quantization: tuple[str, ...] = ()
    delegate: tuple[str, ...] = ()
    threads: tuple[int, ...] = ()
    device: tuple[str, ...] = ()

    def matches(self, *, model: str, quantization: str, delegate: str, threads: int,
                device: str) -> bool:
        """True when every non-empty field contains the case's value (device: fnmatch)."""
        from fnmatch import fnmatchcase

        return (
            (not self.model or model in self.model)
            and (not self.quantization or quantization in self.quantization)
            and (not self.delegate or delegate in self.delegate)
            and (not self.threads or threads in self.threads)
            and (not self.device or any(fnmatchcase(device, p) for p in self.device))
        )


@dataclass(frozen=True, slots=True)
class SustainedSpec(_Dictable):
    """Sustained mode for the cases `match` selects: back-to-back windows, no cooldown between.

    Each window is one benchmark_model process running for `window_s`; the case runs for
    `duration_s` in all. Throttle onset is the first window slower than the peak (first
    window) by more than `onset_threshold`; sustained latency is the median of the last
    `tail_windows` windows.
    """

    match: Rule = Rule()
    duration_s: float = 300.0
    window_s: float = 10.0
    onset_threshold: float = 0.10
    tail_windows: int = 3

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SustainedSpec:
        d = dict(d)
        if isinstance(d.get("match"), dict):
            d["match"] = Rule.from_dict(d["match"])
        return cls(**{k: _tuplify(v) for k, v in d.items()})


@dataclass(frozen=True, slots=True)
class AdaptiveSpec(_Dictable):
    """Adaptive repeats: keep sampling a (variant, `baseline`) pair until its speedup CI
    excludes 1 or the case has `max_repeats` samples. `max_repeats` 0 turns it off."""

    max_repeats: int = 0
    baseline: str = "fp32"
    level: float = 0.95


@dataclass(frozen=True, slots=True)
class Tolerance(_Dictable):
    """How close a config's outputs must be to the fp32 CPU reference (None: not checked)."""

    max_abs_error: float | None = None
    min_cosine: float | None = 0.99
    min_top1_agreement: float | None = None
    min_top5_agreement: float | None = None


@dataclass(frozen=True, slots=True)
class FidelitySpec(_Dictable):
    """Output fidelity: run every variant x delegate on `num_inputs` fixed inputs.

    `tolerances` maps a quantization to its Tolerance; "default" applies to the rest.
    """

    enabled: bool = False
    num_inputs: int = 4
    seed: int = 0
    tolerances: tuple[tuple[str, Tolerance], ...] = (("default", Tolerance()),)

    def tolerance(self, quantization: str) -> Tolerance:
        """The tolerance for one quantization."""
        table = dict(self.tolerances)
        return table.get(quantization) or table.get("default") or Tolerance()

    def to_dict(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "num_inputs": self.num_inputs, "seed": self.seed,
                "tolerances": {q: t.to_dict() for q, t in self.tolerances}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FidelitySpec:
        tol = d.get("tolerances", {"default": {}})
        return cls(enabled=bool(d.get("enabled", False)), num_inputs=int(d.get("num_inputs", 4)),
                   seed=int(d.get("seed", 0)),
                   tolerances=tuple((q, Tolerance.from_dict(t)) for q, t in tol.items()))


COOLDOWN_MODES: tuple[str, ...] = ("closed_loop", "fixed")
AFFINITIES: tuple[str, ...] = ("none", "big_cores")


@dataclass(frozen=True, slots=True)
class Sweep(_Dictable):
    """A validated sweep.yaml."""

    source_file: str
    source_sha256: str
    models: tuple[ModelSource, ...]
    quantizations: tuple[str, ...]
    delegates: tuple[str, ...]
    threads: tuple[int, ...]
    repeats: int
    params: RunParams
    devices: tuple[str, ...] = ()  # fnmatch patterns over serial/model; empty = all
    include: tuple[Rule, ...] = ()
    exclude: tuple[Rule, ...] = ()
    calibration: CalibrationSpec | None = None
    seed: int = 0
    cooldown_delta_c: float = 3.0
    cooldown_timeout_s: float = 120.0
    # "closed_loop": wait for thermal status 0 and the gate zones within delta of the idle
    # baseline; "fixed": sleep cooldown_fixed_s before each sample (explicit opt-in only).
    cooldown_mode: str = "closed_loop"
    cooldown_fixed_s: float = 0.0
    cooldown_zones: tuple[str, ...] = ()  # fnmatch over zone types for the gate; empty = all
    sampler_hz: float = 1.0  # environment sampling while a sample runs; 0 = off
    # "none": the OS schedules; "big_cores": taskset each sample onto the fastest cores
    # (a mask per thread count, from the device's CPU clusters; devices.yaml cpu_masks win)
    affinity: str = "none"
    sustained: tuple[SustainedSpec, ...] = ()
    adaptive: AdaptiveSpec = AdaptiveSpec()
    fidelity: FidelitySpec = FidelitySpec()

    def sustained_for(self, case: Case) -> SustainedSpec | None:
        """The first sustained rule matching a case, if any."""
        for s in self.sustained:
            if s.match.matches(model=case.model, quantization=case.quantization,
                               delegate=case.delegate, threads=case.threads,
                               device=case.device):
                return s
        return None


@dataclass(frozen=True, slots=True)
class Case(_Dictable):
    """One point of the matrix on one device; `case_id` is stable across runs."""

    case_id: str
    device: str
    model: str
    quantization: str
    delegate: str
    threads: int
    variant_sha256: str = ""

    def label(self) -> str:
        """A short human label."""
        return f"{self.model}/{self.quantization}/{self.delegate}/t{self.threads}"


def as_plain(obj: Any) -> Any:
    """Any dataclass in this module as plain JSON-ready data."""
    if isinstance(obj, _Dictable):
        return obj.to_dict()
    return asdict(obj)
