"""YAML text -> validated, frozen config values (`Sweep`, `Fleet`, `DelegateSpec`).

Reads files, nothing else. Every error is a `ConfigError` that names the file, the key path,
the bad value and what is allowed; unknown keys are rejected.
"""

from __future__ import annotations

import hashlib
import math
import re
import reprlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from farm.errors import ConfigError
from farm.models import (
    AFFINITIES,
    CALIBRATION_KINDS,
    CHANNEL_ORDERS,
    COOLDOWN_MODES,
    QUANTIZATIONS,
    RESIZE_METHODS,
    AdaptiveSpec,
    CalibrationSpec,
    DelegateSpec,
    FidelitySpec,
    ModelSource,
    Preprocess,
    Rule,
    RunParams,
    SustainedSpec,
    Sweep,
    Tolerance,
)

SCHEMA_VERSION = 1
MAX_THREADS = 64
MAX_REPEATS = 1000
PROVIDERS = ("", "XNNPACK", "GPU", "NNAPI", "Hexagon", "EXTERNAL", "COREML", "STABLE_DELEGATE")
CAPABILITIES = ("gpu", "nnapi", "hexagon")
KNOWN_ABIS = ("arm64-v8a", "armeabi-v7a", "x86_64", "x86")
_MISSING = object()


class _Ctx:
    """Where we are in a file, for error messages."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, path: str, problem: str, allowed: str = "") -> ConfigError:
        where = f"{self.file}: {path}: " if path else f"{self.file}: "
        return ConfigError(where + problem + (f"; allowed: {allowed}" if allowed else ""))


# Limits on what a config file may be: a sweep.yaml is a few KiB, so these only stop files
# that would exhaust memory or time while being read (a FIFO, a YAML alias bomb, a 20,000-deep
# nesting) before validation could name the problem.
MAX_CONFIG_BYTES = 8 * 1024 * 1024
MAX_YAML_DEPTH = 64
MAX_YAML_ALIASES = 256
MAX_YAML_NODES = 200_000  # counted with multiplicity: an alias counts as a copy of its target


class _YamlLimit(Exception):
    """A document that breaks one of the limits above (turned into a ConfigError)."""


class _Loader(yaml.SafeLoader):  # type: ignore[misc]  # yaml has no stubs here
    """yaml.SafeLoader with a nesting-depth and alias-count limit and no duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                raise _YamlLimit(f"{_where(self.peek_event().start_mark)}more than "
                                 f"{MAX_YAML_ALIASES} aliases (*name)")
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _YamlLimit(f"{_where(self.peek_event().start_mark)}nested deeper than "
                                 f"{MAX_YAML_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_yaml_int(self, node: Any) -> Any:
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # int() refuses more than 4300 digits: say where
            raise _YamlLimit(f"{_where(node.start_mark)}integer of {len(node.value)} digits "
                             "is too large") from None

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    key = (key_node.tag, key_node.value)
                    if key in seen:
                        raise _YamlLimit(f"{_where(key_node.start_mark)}duplicate key "
                                         f"{_show(key_node.value)}")
                    seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


def _where(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""


def _count_nodes(data: Any, limit: int) -> int:
    """Nodes of the loaded document with aliases expanded, stopping once over `limit`."""
    count = 0
    stack = [data]
    while stack:
        item = stack.pop()
        count += 1
        if count > limit:
            break
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set):
            stack.extend(item)
    return count


def _read_yaml(path: Path) -> tuple[Any, str]:
    try:
        with path.open("rb") as f:
            # read one byte past the limit: enough to know, and safe on /dev/zero or a FIFO
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a YAML file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB; "
                          "not a farm config file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    loader = _Loader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML: {_where(mark)}{problem}") from None
    except _YamlLimit as e:
        raise ConfigError(f"{path}: malformed YAML: {e}") from None
    except (ValueError, OverflowError, RecursionError, MemoryError) as e:
        # PyYAML's constructors call int()/float() on scalars: an integer of more than 4300
        # digits raises ValueError, not a YAMLError
        problem = ("a number with too many digits" if "digits" in str(e)
                   else f"{type(e).__name__}: {_show(str(e))}")
        raise ConfigError(f"{path}: malformed YAML: {problem}") from None
    finally:
        loader.dispose()
    if _count_nodes(data, MAX_YAML_NODES) > MAX_YAML_NODES:
        raise ConfigError(f"{path}: malformed YAML: more than {MAX_YAML_NODES} values once "
                          "aliases are expanded (an alias bomb?)")
    return data, hashlib.sha256(raw).hexdigest()


def _mapping(ctx: _Ctx, path: str, value: Any, allowed: Sequence[str],
             required: Sequence[str] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ctx.fail(path, f"expected a mapping, got {_show(value)}")
    for key in value:
        if not isinstance(key, str) or key not in allowed:
            raise ctx.fail(_join(path, key), "unknown key", ", ".join(allowed))
    for key in required:
        if key not in value:
            raise ctx.fail(f"{path}.{key}" if path else key, "missing required key")
    return value


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 60
_REPR.maxlevel = 3


def _show(value: Any) -> str:
    """A short repr for messages; bounded for huge strings, numbers and nested values."""
    text = _REPR.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _join(path: str, key: Any) -> str:
    """`path.key`, with an over-long or non-string key shown briefly."""
    k = key if isinstance(key, str) and len(key) <= 60 else _show(key)
    return f"{path}.{k}" if path else str(k)


def _int(ctx: _Ctx, path: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ctx.fail(path, f"expected an integer, got {_show(value)}", f"{lo}..{hi}")
    if not lo <= value <= hi:
        raise ctx.fail(path, f"{_show(value)} is out of range", f"{lo}..{hi}")
    return value


def _float(ctx: _Ctx, path: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ctx.fail(path, f"expected a number, got {_show(value)}", f"{lo:g}..{hi:g}")
    try:
        f = float(value)
    except OverflowError:  # an integer beyond the float range (10**400)
        f = math.inf
    if not math.isfinite(f) or not lo <= f <= hi:
        raise ctx.fail(path, f"{_show(value)} is out of range", f"{lo:g}..{hi:g}")
    return f


def _bool(ctx: _Ctx, path: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ctx.fail(path, f"expected true or false, got {_show(value)}", "true, false")
    return value


def _str(ctx: _Ctx, path: str, value: Any, *, choices: Sequence[str] = (),
         max_len: int = 4096) -> str:
    if not isinstance(value, str) or not value:
        raise ctx.fail(path, f"expected a non-empty string, got {_show(value)}",
                       ", ".join(choices))
    if len(value) > max_len:
        raise ctx.fail(path, f"string longer than {max_len} characters")
    if "\x00" in value:
        raise ctx.fail(path, "string contains a NUL byte")
    if choices and value not in choices:
        raise ctx.fail(path, f"unknown value {_show(value)}", ", ".join(choices))
    return value


def _list(ctx: _Ctx, path: str, value: Any, item: Callable[[str, Any], Any], *,
          allow_scalar: bool = True, min_len: int = 0, max_len: int = 10_000) -> tuple[Any, ...]:
    if allow_scalar and not isinstance(value, list):
        value = [value]
    if not isinstance(value, list):
        raise ctx.fail(path, f"expected a list, got {_show(value)}")
    if not min_len <= len(value) <= max_len:
        raise ctx.fail(path, f"expected {min_len}..{max_len} items, got {len(value)}")
    out = tuple(item(f"{path}[{i}]", v) for i, v in enumerate(value))
    return out


def _unique(ctx: _Ctx, path: str, items: Sequence[Any]) -> None:
    seen: set[Any] = set()
    for i, v in enumerate(items):
        if v in seen:
            raise ctx.fail(f"{path}[{i}]", f"duplicate value {_show(v)}")
        seen.add(v)


def _is_file(p: Path) -> bool:
    try:
        return p.is_file()
    except OSError:  # a name too long, a loop of symlinks: not a usable file either way
        return False


def _is_dir(p: Path) -> bool:
    try:
        return p.is_dir()
    except OSError:
        return False


def _exists(p: Path) -> bool:
    try:
        return p.exists()
    except OSError:
        return False


def _check_schema(ctx: _Ctx, data: dict[str, Any]) -> None:
    version = data.get("schema_version", _MISSING)
    if version is _MISSING:
        raise ctx.fail("schema_version", "missing required key", str(SCHEMA_VERSION))
    if version != SCHEMA_VERSION:
        raise ctx.fail("schema_version", f"unsupported version {_show(version)}",
                       str(SCHEMA_VERSION))


# --------------------------------------------------------------------------- delegates

_FLAG_RE = re.compile(r"--([A-Za-z][A-Za-z0-9_]*)=")
# benchmark_model flags farm sets from sweep.yaml (farm.benchmark_model.build_argv): a delegate
# repeating one would be refused there, mid-run, so it is refused here.
RESERVED_FLAGS = ("graph", "num_threads", "warmup_runs", "warmup_min_secs", "num_runs",
                  "min_secs", "max_secs", "run_delay", "report_peak_memory_footprint",
                  "require_full_delegation")
_DELEGATE_KEYS = ("schema_version", "name", "provider", "description", "flags",
                  "quantizations", "abis", "requires", "extra_files")


def load_delegate(path: Path) -> DelegateSpec:
    """Parse one delegates/<name>.yaml."""
    ctx = _Ctx(str(path))
    data, _ = _read_yaml(path)
    data = _mapping(ctx, "", data, _DELEGATE_KEYS, required=("schema_version", "name", "flags"))
    _check_schema(ctx, data)
    name = _str(ctx, "name", data["name"], max_len=64)
    if name != path.stem:
        raise ctx.fail("name", f"{name!r} differs from the file name", path.stem)
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ctx.fail("name", f"{name!r} has characters other than letters, digits, - and _")
    provider = data.get("provider", "")
    if provider != "":
        provider = _str(ctx, "provider", provider, choices=PROVIDERS[1:])

    seen_flags: set[str] = set()

    def flag(p: str, v: Any) -> str:
        s = _str(ctx, p, v, max_len=1024)
        m = _FLAG_RE.match(s)
        if not m:
            raise ctx.fail(p, f"{_show(s)} is not a benchmark_model flag",
                           "--name=value, name of letters, digits and _")
        if m.group(1) in RESERVED_FLAGS:
            raise ctx.fail(p, f"--{m.group(1)} is set by farm from sweep.yaml",
                           "delegate flags other than " + ", ".join(RESERVED_FLAGS))
        if m.group(1) in seen_flags:
            raise ctx.fail(p, f"--{m.group(1)} is given twice")
        seen_flags.add(m.group(1))
        if any(c in s for c in "\n\r"):
            raise ctx.fail(p, "flag contains a line break")
        return s

    flags = _list(ctx, "flags", data["flags"], flag, allow_scalar=False)
    quants = _list(ctx, "quantizations", data.get("quantizations", list(QUANTIZATIONS)),
                   lambda p, v: _str(ctx, p, v, choices=QUANTIZATIONS))
    abis = _list(ctx, "abis", data.get("abis", []),
                 lambda p, v: _str(ctx, p, v, choices=KNOWN_ABIS))
    requires = _list(ctx, "requires", data.get("requires", []),
                     lambda p, v: _str(ctx, p, v, choices=CAPABILITIES))

    def extra(p: str, v: Any) -> str:
        s = _str(ctx, p, v)
        f = (path.parent / s).resolve()
        if not _is_file(f):
            raise ctx.fail(p, f"file {_show(s)} not found (relative to {path.parent})")
        return str(f)

    extra_files = _list(ctx, "extra_files", data.get("extra_files", []), extra)
    description = data.get("description", "")
    if description:
        description = _str(ctx, "description", description)
    return DelegateSpec(name=name, provider=provider, description=description, flags=flags,
                        quantizations=quants, abis=abis, requires=requires,
                        extra_files=extra_files, source_file=str(path))


def load_delegates(directory: Path) -> dict[str, DelegateSpec]:
    """Every delegates/*.yaml, by name."""
    if not directory.is_dir():
        raise ConfigError(f"{directory}: delegates directory not found")
    out = {}
    for p in sorted(directory.glob("*.yaml")):
        spec = load_delegate(p)
        out[spec.name] = spec
    if not out:
        raise ConfigError(f"{directory}: no delegate files (*.yaml)")
    return out


# --------------------------------------------------------------------------- sweep

_SWEEP_KEYS = ("schema_version", "name", "models", "quantizations", "delegates", "threads",
               "repeats", "run", "devices", "include", "exclude", "calibration", "cooldown",
               "seed", "sampler", "sustained", "adaptive", "fidelity", "affinity")
_MODEL_KEYS = ("name", "source", "input_shape", "seed", "options")
_RUN_KEYS = tuple(RunParams.__dataclass_fields__)
_RULE_KEYS = tuple(Rule.__dataclass_fields__)
_CAL_KEYS = ("images", "npy", "random", "num_samples", "preprocess", "seed")
_PRE_KEYS = tuple(Preprocess.__dataclass_fields__)
_COOLDOWN_KEYS = ("mode", "delta_c", "timeout_s", "fixed_sleep_s", "zones")
_SAMPLER_KEYS = ("hz",)
_SUSTAINED_KEYS = ("match", "duration_s", "window_s", "onset_threshold", "tail_windows")
_ADAPTIVE_KEYS = ("max_repeats", "baseline", "level")
_FIDELITY_KEYS = ("enabled", "num_inputs", "seed", "tolerances")
_TOLERANCE_KEYS = tuple(Tolerance.__dataclass_fields__)


def _model(ctx: _Ctx, path: str, value: Any, base: Path) -> ModelSource:
    if isinstance(value, str):
        value = {"source": value}
    d = _mapping(ctx, path, value, _MODEL_KEYS, required=("source",))
    source = _str(ctx, f"{path}.source", d["source"])
    seed = _int(ctx, f"{path}.seed", d.get("seed", 0), 0, 2**31 - 1)
    options: tuple[tuple[str, Any], ...] = ()
    if "options" in d:
        opts = d["options"]
        if not isinstance(opts, dict) or not all(isinstance(k, str) for k in opts):
            raise ctx.fail(f"{path}.options", f"expected a mapping, got {_show(opts)}")
        for k, v in opts.items():
            if not isinstance(v, str | int | float | bool) or v is None:
                raise ctx.fail(f"{path}.options.{k}", f"expected a scalar, got {_show(v)}")
        options = tuple(sorted(opts.items()))
    input_shape: tuple[int, ...] = ()
    if "input_shape" in d:
        input_shape = _list(ctx, f"{path}.input_shape", d["input_shape"],
                            lambda p, v: _int(ctx, p, v, 1, 16384), allow_scalar=False,
                            min_len=1, max_len=6)
    if source.startswith("keras:"):
        arch = source.split(":", 1)[1]
        if not arch.isidentifier():
            raise ctx.fail(f"{path}.source", f"{arch!r} is not a Keras application name",
                           "e.g. keras:MobileNetV2, keras:MobileNetV3Small, keras:ResNet50")
        if not input_shape:
            raise ctx.fail(f"{path}.input_shape", "required for a keras: architecture",
                           "e.g. [224, 224, 3]")
        name = d.get("name", arch)
        return ModelSource(name=_str(ctx, f"{path}.name", name, max_len=128), kind="keras_app",
                           arch=arch, input_shape=input_shape, seed=seed, options=options)
    file = (base / source).resolve() if not Path(source).is_absolute() else Path(source)
    if source.endswith(".tflite"):
        kind = "tflite"
    elif source.endswith(".keras"):
        kind = "keras_file"
    elif _is_dir(file):
        kind = "saved_model"
    else:
        raise ctx.fail(f"{path}.source", f"cannot tell what {_show(source)} is",
                       "a .tflite file, a .keras file, a SavedModel directory, keras:<Arch>")
    if not _exists(file):
        raise ctx.fail(f"{path}.source", f"{kind} {_show(source)} not found (relative to {base})")
    if kind == "saved_model" and not _is_file(file / "saved_model.pb"):
        raise ctx.fail(f"{path}.source", f"{_show(source)} is a directory without "
                       "saved_model.pb")
    if kind in ("tflite", "keras_file"):
        from farm.variants import model_file_problem

        problem = model_file_problem(file, kind)
        if problem:
            raise ctx.fail(f"{path}.source", f"{_show(source)}: {problem}")
    default_name = file.stem if kind != "saved_model" else file.name
    name = _str(ctx, f"{path}.name", d.get("name", default_name), max_len=128)
    return ModelSource(name=name, kind=kind, path=str(file), input_shape=input_shape, seed=seed,
                       options=options)


def _rule(ctx: _Ctx, path: str, value: Any, delegates: Sequence[str],
          models: Sequence[str]) -> Rule:
    d = _mapping(ctx, path, value, _RULE_KEYS)
    if not d:
        raise ctx.fail(path, "empty rule matches everything", ", ".join(_RULE_KEYS))

    def strs(key: str, choices: Sequence[str] = ()) -> tuple[str, ...]:
        return _list(ctx, f"{path}.{key}", d.get(key, []),
                     lambda p, v: _str(ctx, p, v, choices=choices))

    return Rule(model=strs("model", models), quantization=strs("quantization", QUANTIZATIONS),
                delegate=strs("delegate", delegates),
                threads=_list(ctx, f"{path}.threads", d.get("threads", []),
                              lambda p, v: _int(ctx, p, v, 1, MAX_THREADS)),
                device=strs("device"))


def _calibration(ctx: _Ctx, value: Any, base: Path) -> CalibrationSpec:
    d = _mapping(ctx, "calibration", value, _CAL_KEYS)
    sources = [k for k in ("images", "npy", "random") if k in d]
    if len(sources) != 1:
        raise ctx.fail("calibration", "give exactly one data source",
                       "images: <dir>, npy: <file.npy>, random: true")
    kind = sources[0]
    assert kind in CALIBRATION_KINDS
    num = _int(ctx, "calibration.num_samples", d.get("num_samples", 100), 1, 100_000)
    seed = _int(ctx, "calibration.seed", d.get("seed", 0), 0, 2**31 - 1)
    pre = Preprocess()
    if "preprocess" in d:
        if kind != "images":
            raise ctx.fail("calibration.preprocess", "only applies to images")
        p = _mapping(ctx, "calibration.preprocess", d["preprocess"], _PRE_KEYS)

        def triple(key: str, lo: float, hi: float) -> tuple[float, ...]:
            return _list(ctx, f"calibration.preprocess.{key}", p[key],
                         lambda q, v: _float(ctx, q, v, lo, hi), allow_scalar=False,
                         min_len=1, max_len=4)

        pre = Preprocess(
            resize=_str(ctx, "calibration.preprocess.resize", p.get("resize", pre.resize),
                        choices=RESIZE_METHODS),
            center_crop=_float(ctx, "calibration.preprocess.center_crop",
                               p.get("center_crop", pre.center_crop), 0.05, 1.0),
            channel_order=_str(ctx, "calibration.preprocess.channel_order",
                               p.get("channel_order", pre.channel_order), choices=CHANNEL_ORDERS),
            mean=triple("mean", -1e6, 1e6) if "mean" in p else pre.mean,
            std=triple("std", 1e-9, 1e6) if "std" in p else pre.std,
        )
        if len(pre.mean) != len(pre.std):
            raise ctx.fail("calibration.preprocess", "mean and std need the same length")
    if kind == "random":
        if d["random"] is not True:
            raise ctx.fail("calibration.random", "random calibration must be asked for "
                           "explicitly with `random: true`", "true")
        return CalibrationSpec(kind="random", num_samples=num, seed=seed)
    raw = _str(ctx, f"calibration.{kind}", d[kind])
    target = (base / raw).resolve() if not Path(raw).is_absolute() else Path(raw)
    if kind == "images" and not _is_dir(target):
        raise ctx.fail("calibration.images", f"directory {_show(raw)} not found (relative to "
                       f"{base})")
    if kind == "npy" and not _is_file(target):
        raise ctx.fail("calibration.npy", f"file {_show(raw)} not found (relative to {base})")
    return CalibrationSpec(kind=kind, path=str(target), num_samples=num, preprocess=pre,
                           seed=seed)


def parse_sweep(data: Any, *, file: str, sha256: str, base: Path,
                delegates: Mapping[str, DelegateSpec]) -> Sweep:
    """Validate sweep data already read from YAML (pure; `base` resolves relative paths)."""
    ctx = _Ctx(file)
    d = _mapping(ctx, "", data, _SWEEP_KEYS, required=("schema_version", "models"))
    _check_schema(ctx, d)
    if "name" in d:  # a label only, but a label that reaches the report and the store
        _str(ctx, "name", d["name"], max_len=128)
    models = _list(ctx, "models", d["models"], lambda p, v: _model(ctx, p, v, base),
                   allow_scalar=False, min_len=1, max_len=1000)
    names = [m.name for m in models]
    for i, n in enumerate(names):
        if names.index(n) != i:
            raise ctx.fail(f"models[{i}].name", f"duplicate model name {n!r}",
                           "give each model a distinct `name`")
    quants = _list(ctx, "quantizations", d.get("quantizations", ["fp32"]),
                   lambda p, v: _str(ctx, p, v, choices=QUANTIZATIONS), min_len=1)
    _unique(ctx, "quantizations", quants)
    known = sorted(delegates)
    dels = _list(ctx, "delegates", d.get("delegates", ["xnnpack"]),
                 lambda p, v: _str(ctx, p, v, choices=known), min_len=1)
    _unique(ctx, "delegates", dels)
    threads = _list(ctx, "threads", d.get("threads", [1]),
                    lambda p, v: _int(ctx, p, v, 1, MAX_THREADS), min_len=1)
    _unique(ctx, "threads", threads)
    repeats = _int(ctx, "repeats", d.get("repeats", 3), 1, MAX_REPEATS)
    run = _mapping(ctx, "run", d.get("run", {}), _RUN_KEYS)
    dflt = RunParams()
    params = RunParams(
        warmup_runs=_int(ctx, "run.warmup_runs", run.get("warmup_runs", dflt.warmup_runs), 0,
                         100_000),
        warmup_min_secs=_float(ctx, "run.warmup_min_secs",
                               run.get("warmup_min_secs", dflt.warmup_min_secs), 0, 3600),
        num_runs=_int(ctx, "run.num_runs", run.get("num_runs", dflt.num_runs), 1, 1_000_000),
        min_secs=_float(ctx, "run.min_secs", run.get("min_secs", dflt.min_secs), 0, 3600),
        max_secs=_float(ctx, "run.max_secs", run.get("max_secs", dflt.max_secs), 0.001, 36000),
        run_delay_s=_float(ctx, "run.run_delay_s", run.get("run_delay_s", dflt.run_delay_s),
                           -1, 3600),
        report_peak_memory=_bool(ctx, "run.report_peak_memory",
                                 run.get("report_peak_memory", dflt.report_peak_memory)),
        timeout_s=_float(ctx, "run.timeout_s", run.get("timeout_s", dflt.timeout_s), 1, 86400),
        require_full_delegation=_bool(ctx, "run.require_full_delegation",
                                      run.get("require_full_delegation",
                                              dflt.require_full_delegation)),
    )
    if params.min_secs > params.max_secs:
        raise ctx.fail("run.min_secs", f"{params.min_secs:g} exceeds run.max_secs "
                       f"{params.max_secs:g}")
    devices = _list(ctx, "devices", d.get("devices", []), lambda p, v: _str(ctx, p, v))
    include = _list(ctx, "include", d.get("include", []),
                    lambda p, v: _rule(ctx, p, v, known, names), allow_scalar=False)
    exclude = _list(ctx, "exclude", d.get("exclude", []),
                    lambda p, v: _rule(ctx, p, v, known, names), allow_scalar=False)
    calibration = _calibration(ctx, d["calibration"], base) if "calibration" in d else None
    cool = _mapping(ctx, "cooldown", d.get("cooldown", {}), _COOLDOWN_KEYS)
    mode = _str(ctx, "cooldown.mode", cool.get("mode", "closed_loop"), choices=COOLDOWN_MODES)
    fixed_s = _float(ctx, "cooldown.fixed_sleep_s", cool.get("fixed_sleep_s", 0.0), 0, 86400)
    if mode == "fixed" and "fixed_sleep_s" not in cool:
        raise ctx.fail("cooldown.fixed_sleep_s", "cooldown.mode fixed needs an explicit "
                       "fixed_sleep_s", "0..86400 seconds")
    if mode == "closed_loop" and "fixed_sleep_s" in cool:
        raise ctx.fail("cooldown.fixed_sleep_s", "only used with cooldown.mode: fixed",
                       "remove it, or set mode: fixed")
    sampler = _mapping(ctx, "sampler", d.get("sampler", {}), _SAMPLER_KEYS)
    sustained = _list(ctx, "sustained", d.get("sustained", []),
                      lambda p, v: _sustained(ctx, p, v, known, names), allow_scalar=False,
                      max_len=100)
    return Sweep(
        source_file=file, source_sha256=sha256, models=models, quantizations=quants,
        delegates=dels, threads=threads, repeats=repeats, params=params, devices=devices,
        include=include, exclude=exclude, calibration=calibration,
        seed=_int(ctx, "seed", d.get("seed", 0), 0, 2**31 - 1),
        cooldown_delta_c=_float(ctx, "cooldown.delta_c", cool.get("delta_c", 3.0), 0.1, 50),
        cooldown_timeout_s=_float(ctx, "cooldown.timeout_s", cool.get("timeout_s", 120.0), 0,
                                  86400),
        cooldown_mode=mode, cooldown_fixed_s=fixed_s,
        cooldown_zones=_list(ctx, "cooldown.zones", cool.get("zones", []),
                             lambda p, v: _str(ctx, p, v, max_len=128)),
        sampler_hz=_float(ctx, "sampler.hz", sampler.get("hz", 1.0), 0, 20),
        affinity=_str(ctx, "affinity", d.get("affinity", "none"), choices=AFFINITIES),
        sustained=sustained,
        adaptive=_adaptive(ctx, d.get("adaptive", {}), quants, repeats),
        fidelity=_fidelity(ctx, d.get("fidelity", {"enabled": False})),
    )


def _sustained(ctx: _Ctx, path: str, value: Any, delegates: Sequence[str],
               models: Sequence[str]) -> SustainedSpec:
    d = _mapping(ctx, path, value, _SUSTAINED_KEYS, required=("duration_s",))
    match = _rule(ctx, f"{path}.match", d["match"], delegates, models) if "match" in d else Rule()
    duration = _float(ctx, f"{path}.duration_s", d["duration_s"], 1, 86400)
    window = _float(ctx, f"{path}.window_s", d.get("window_s", min(10.0, duration)), 0.1,
                    3600)
    if window > duration:
        raise ctx.fail(f"{path}.window_s", f"{window:g} exceeds duration_s {duration:g}")
    if duration / window > 10_000:
        raise ctx.fail(f"{path}.window_s", f"{duration / window:.0f} windows is too many",
                       "at most 10000 windows per case")
    return SustainedSpec(
        match=match, duration_s=duration, window_s=window,
        onset_threshold=_float(ctx, f"{path}.onset_threshold", d.get("onset_threshold", 0.10),
                               0.001, 10),
        tail_windows=_int(ctx, f"{path}.tail_windows", d.get("tail_windows", 3), 1, 1000))


def _adaptive(ctx: _Ctx, value: Any, quants: Sequence[str], repeats: int) -> AdaptiveSpec:
    d = _mapping(ctx, "adaptive", value, _ADAPTIVE_KEYS)
    if not d:
        return AdaptiveSpec()
    max_repeats = _int(ctx, "adaptive.max_repeats", d.get("max_repeats", 0), 0, MAX_REPEATS)
    if max_repeats and max_repeats < repeats:
        raise ctx.fail("adaptive.max_repeats", f"{max_repeats} is below repeats ({repeats})",
                       f"0 (off) or {repeats}..{MAX_REPEATS}")
    baseline = _str(ctx, "adaptive.baseline", d.get("baseline", "fp32"), choices=quants)
    return AdaptiveSpec(max_repeats=max_repeats, baseline=baseline,
                        level=_float(ctx, "adaptive.level", d.get("level", 0.95), 0.5, 0.999))


def _fidelity(ctx: _Ctx, value: Any) -> FidelitySpec:
    if value is True or value is False:
        return FidelitySpec(enabled=value)
    d = _mapping(ctx, "fidelity", value, _FIDELITY_KEYS)
    tol_in = _mapping(ctx, "fidelity.tolerances", d.get("tolerances", {}),
                      ("default", *QUANTIZATIONS))
    tolerances: list[tuple[str, Tolerance]] = []
    for q in ("default", *QUANTIZATIONS):
        if q not in tol_in:
            continue
        t = _mapping(ctx, f"fidelity.tolerances.{q}", tol_in[q], _TOLERANCE_KEYS)
        vals: dict[str, float | None] = {}
        for key, (lo, hi) in (("max_abs_error", (0.0, 1e30)), ("min_cosine", (-1.0, 1.0)),
                              ("min_top1_agreement", (0.0, 1.0)),
                              ("min_top5_agreement", (0.0, 1.0))):
            if key in t:
                raw = t[key]
                vals[key] = None if raw is None else _float(
                    ctx, f"fidelity.tolerances.{q}.{key}", raw, lo, hi)
        tolerances.append((q, Tolerance(**vals)))
    if not any(q == "default" for q, _ in tolerances):
        tolerances.insert(0, ("default", Tolerance()))
    return FidelitySpec(
        enabled=_bool(ctx, "fidelity.enabled", d.get("enabled", True)),
        num_inputs=_int(ctx, "fidelity.num_inputs", d.get("num_inputs", 4), 1, 1000),
        seed=_int(ctx, "fidelity.seed", d.get("seed", 0), 0, 2**31 - 1),
        tolerances=tuple(tolerances))


def load_sweep(path: Path, delegates: Mapping[str, DelegateSpec]) -> Sweep:
    """Read and validate a sweep.yaml."""
    data, sha = _read_yaml(path)
    return parse_sweep(data, file=str(path), sha256=sha, base=path.parent.resolve(),
                       delegates=delegates)


# --------------------------------------------------------------------------- fleet

@dataclass(frozen=True, slots=True)
class TierRule:
    """A device belongs to the tier when every given condition holds (or its serial is listed)."""

    name: str
    serials: tuple[str, ...] = ()
    models: tuple[str, ...] = ()  # fnmatch over ro.product.model
    socs: tuple[str, ...] = ()  # fnmatch over the SoC name
    min_ram_mb: int | None = None
    max_ram_mb: int | None = None
    min_sdk: int | None = None
    max_sdk: int | None = None


@dataclass(frozen=True, slots=True)
class DeviceOverride:
    """Per-device settings (matched by serial pattern)."""

    pattern: str
    max_threads: int | None = None
    cpu_masks: tuple[tuple[int, str], ...] = ()  # (threads, hex mask)
    cooldown_delta_c: float | None = None
    cooldown_timeout_s: float | None = None
    skip_delegates: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Fleet:
    """A validated devices.yaml."""

    source_file: str
    # "auto": the host when no phone is usable; "always": the host too; "never"; "only": no adb
    host: str = "auto"
    adb_servers: tuple[str, ...] = ()  # "host:port"
    serials: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    tiers: tuple[TierRule, ...] = ()
    overrides: tuple[DeviceOverride, ...] = field(default=())


_FLEET_KEYS = ("schema_version", "host", "adb_servers", "select", "tiers", "overrides")
_SELECT_KEYS = ("serials", "patterns", "models")
_TIER_KEYS = ("serials", "models", "socs", "min_ram_mb", "max_ram_mb", "min_sdk", "max_sdk")
_OVERRIDE_KEYS = ("max_threads", "cpu_masks", "cooldown_delta_c", "cooldown_timeout_s",
                  "skip_delegates")


_HOST_RE = re.compile(r"[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]")


def _server(ctx: _Ctx, path: str, value: Any) -> str:
    s = _str(ctx, path, value, max_len=300)
    host, sep, port = s.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ctx.fail(path, f"{s!r} is not host:port", "e.g. 127.0.0.1:5037")
    if not _HOST_RE.fullmatch(host):
        raise ctx.fail(path, f"{_show(s)}: {_show(host)} is not a host name or IP address",
                       "letters, digits, '.', '-', '_', or [IPv6]")
    return s


def parse_fleet(data: Any, *, file: str, delegates: Sequence[str] = ()) -> Fleet:
    """Validate devices.yaml data (pure)."""
    ctx = _Ctx(file)
    d = _mapping(ctx, "", data, _FLEET_KEYS, required=("schema_version",))
    _check_schema(ctx, d)
    host = d.get("host", "auto")
    if host is True:
        host = "always"
    elif host is False:
        host = "never"
    host = _str(ctx, "host", host, choices=("auto", "always", "never", "only"))
    servers = _list(ctx, "adb_servers", d.get("adb_servers", []),
                    lambda p, v: _server(ctx, p, v))
    sel = _mapping(ctx, "select", d.get("select", {}), _SELECT_KEYS)

    def strs(p: str, v: Any) -> tuple[str, ...]:
        return _list(ctx, p, v, lambda q, x: _str(ctx, q, x, max_len=256))

    tiers_raw = d.get("tiers", {})
    if not isinstance(tiers_raw, dict):
        raise ctx.fail("tiers", f"expected a mapping of tier name to rule, got {_show(tiers_raw)}")
    tiers = []
    for name, rule in tiers_raw.items():
        p = f"tiers.{name}"
        r = _mapping(ctx, p, rule, _TIER_KEYS)

        def opt_int(key: str, lo: int, hi: int, r: dict[str, Any] = r, p: str = p) -> int | None:
            return _int(ctx, f"{p}.{key}", r[key], lo, hi) if key in r else None

        tiers.append(TierRule(
            name=_str(ctx, p, str(name), max_len=64),
            serials=strs(f"{p}.serials", r.get("serials", [])),
            models=strs(f"{p}.models", r.get("models", [])),
            socs=strs(f"{p}.socs", r.get("socs", [])),
            min_ram_mb=opt_int("min_ram_mb", 0, 10**7), max_ram_mb=opt_int("max_ram_mb", 0, 10**7),
            min_sdk=opt_int("min_sdk", 1, 1000), max_sdk=opt_int("max_sdk", 1, 1000)))
    over_raw = d.get("overrides", {})
    if not isinstance(over_raw, dict):
        raise ctx.fail("overrides", f"expected a mapping of serial pattern to settings, "
                       f"got {_show(over_raw)}")
    overrides = []
    for pattern, o in over_raw.items():
        p = f"overrides.{pattern}"
        o = _mapping(ctx, p, o, _OVERRIDE_KEYS)
        masks_raw = o.get("cpu_masks", {})
        if not isinstance(masks_raw, dict):
            raise ctx.fail(f"{p}.cpu_masks", "expected a mapping of threads to hex mask")
        masks = []
        for t, m in masks_raw.items():
            _int(ctx, f"{p}.cpu_masks.{t}", t, 1, MAX_THREADS)
            ms = _str(ctx, f"{p}.cpu_masks.{t}", m, max_len=32)
            try:
                int(ms, 16)
            except ValueError:
                raise ctx.fail(f"{p}.cpu_masks.{t}", f"{ms!r} is not a hex CPU mask",
                               "e.g. f0") from None
            masks.append((t, ms))
        overrides.append(DeviceOverride(
            pattern=str(pattern),
            max_threads=(_int(ctx, f"{p}.max_threads", o["max_threads"], 1, MAX_THREADS)
                         if "max_threads" in o else None),
            cpu_masks=tuple(masks),
            cooldown_delta_c=(_float(ctx, f"{p}.cooldown_delta_c", o["cooldown_delta_c"], 0.1, 50)
                              if "cooldown_delta_c" in o else None),
            cooldown_timeout_s=(_float(ctx, f"{p}.cooldown_timeout_s", o["cooldown_timeout_s"],
                                       0, 86400) if "cooldown_timeout_s" in o else None),
            skip_delegates=_list(ctx, f"{p}.skip_delegates", o.get("skip_delegates", []),
                                 lambda q, v: _str(ctx, q, v, choices=list(delegates) or ()))))
    return Fleet(source_file=file, host=host, adb_servers=servers,
                 serials=strs("select.serials", sel.get("serials", [])),
                 patterns=strs("select.patterns", sel.get("patterns", [])),
                 models=strs("select.models", sel.get("models", [])),
                 tiers=tuple(tiers), overrides=tuple(overrides))


def load_fleet(path: Path, delegates: Sequence[str] = ()) -> Fleet:
    """Read and validate devices.yaml."""
    data, _ = _read_yaml(path)
    return parse_fleet(data, file=str(path), delegates=delegates)
