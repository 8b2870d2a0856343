"""Public entry points. The CLI and the tests both call these; nothing here prints.

`load_plan` reads and validates the configs, `run_plan` builds variants, plans, runs and
reports, `render_report` regenerates a report from the store.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import logging
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from farm import __version__, config, plan
from farm.devices import Device, DeviceInfo
from farm.devices.local import LocalDevice, host_abi
from farm.errors import ConfigError, FarmError, StoreError
from farm.models import Case, DelegateSpec, ModelVariant, Sweep
from farm.store import Store

if TYPE_CHECKING:
    import pandas as pd

    from farm.runner import BinarySpec, Event

log = logging.getLogger(__name__)

DEFAULT_DB = Path("reports/farm.sqlite")
DEFAULT_REPORTS = Path("reports")


def default_cache_dir() -> Path:
    """Where converted variants and the host work dir live ($FARM_CACHE or ~/.cache/farm)."""
    env = os.environ.get("FARM_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "farm"


def project_root() -> Path:
    """The directory holding delegates/ and vendor/ (the checkout, or the current directory)."""
    here = Path(__file__).resolve().parent.parent
    if (here / "delegates").is_dir():
        return here
    return Path.cwd()


@dataclass(frozen=True)
class Plan:
    """Validated configuration, ready to run."""

    sweep: Sweep
    fleet: config.Fleet
    delegates: Mapping[str, DelegateSpec]


def load_plan(matrix: Path, *, devices_file: Path | None = None,
              delegates_dir: Path | None = None) -> Plan:
    """Read and validate sweep.yaml, devices.yaml and delegates/*.yaml."""
    root = project_root()
    delegates = config.load_delegates(delegates_dir or root / "delegates")
    sweep = config.load_sweep(Path(matrix), delegates)
    dev_file = devices_file or root / "devices.yaml"
    fleet = (config.load_fleet(dev_file, list(delegates)) if dev_file.exists()
             else config.Fleet(source_file="(default)"))
    return Plan(sweep=sweep, fleet=fleet, delegates=delegates)


# ----------------------------------------------------------------------------- devices

def host_binary(vendor_dir: Path | None = None) -> BinarySpec:
    """A real benchmark_model for the host if one is installed, else farm's LiteRT runner."""
    from farm import vendor
    from farm.errors import BenchmarkError
    from farm.runner import BinarySpec

    vendor_dir = vendor_dir or project_root() / "vendor" / "benchmark_model"
    try:
        real = vendor.pick_binary([host_abi()], vendor_dir)
    except BenchmarkError:
        real = None
    if real is not None and real.sha256:
        return BinarySpec(sha256=real.sha256, label=f"benchmark_model {real.version} "
                          f"({real.path})", argv_prefix=(str(real.path),))
    import farm.bmformat
    import farm.hostbench

    h = hashlib.sha256()
    for mod in (farm.hostbench, farm.bmformat):
        h.update(Path(str(mod.__file__)).read_bytes())
    h.update(_version("ai-edge-litert").encode())
    return BinarySpec(sha256=h.hexdigest(),
                      label=f"farm hostbench (LiteRT {_version('ai-edge-litert')})",
                      argv_prefix=(sys.executable, "-m", "farm.hostbench"))


def discover_devices(fleet: config.Fleet, *, workdir: Path) -> list[tuple[Device, DeviceInfo]]:
    """Devices to benchmark on: phones over adb, and the host when configured or none found."""
    found: list[tuple[Device, DeviceInfo]] = []
    try:
        from farm.devices import adb
    except ImportError:
        adb = None  # type: ignore[assignment]
    if adb is not None and fleet.host != "only":
        found.extend(adb.discover(fleet))
    if fleet.host in ("always", "only") or (fleet.host == "auto" and not found):
        local = LocalDevice(workdir / "host")
        found.append((local, local.info()))
    return found


def tier_of(info: DeviceInfo, fleet: config.Fleet) -> str:
    """The first tier whose rule the device satisfies ("" if none)."""
    from fnmatch import fnmatchcase

    for t in fleet.tiers:
        if info.serial in t.serials:
            return t.name
        if t.serials and not (t.models or t.socs or t.min_ram_mb or t.max_ram_mb
                              or t.min_sdk or t.max_sdk):
            continue
        if t.models and not any(fnmatchcase(info.model, p) for p in t.models):
            continue
        if t.socs and not any(fnmatchcase(info.soc, p) for p in t.socs):
            continue
        ram, sdk = info.ram_mb, info.sdk
        if t.min_ram_mb is not None and (ram is None or ram < t.min_ram_mb):
            continue
        if t.max_ram_mb is not None and (ram is None or ram > t.max_ram_mb):
            continue
        if t.min_sdk is not None and (sdk is None or sdk < t.min_sdk):
            continue
        if t.max_sdk is not None and (sdk is None or sdk > t.max_sdk):
            continue
        if info.kind == "local" and not (t.models or t.socs or t.serials):
            continue  # tiers describe phones; the host only joins one by name
        return t.name
    return ""


# ----------------------------------------------------------------------------- variants

def build_variants(sweep: Sweep, *, cache_dir: Path,
                   on_event: Callable[[Any], None] | None = None) -> list[ModelVariant]:
    """Convert every model × quantization (cached; TF runs in a child process only)."""
    from farm.variants import build_variants as _build

    return _build(sweep.models, sweep.quantizations, calibration=sweep.calibration,
                  cache_dir=cache_dir / "variants", on_event=on_event)


# ----------------------------------------------------------------------------- runs

@dataclass
class RunResult:
    """The outcome of `run_plan`."""

    run_id: str
    db: Path
    report: Path | None
    stats: Any  # farm.runner.RunStats
    cases: int = 0
    devices: list[DeviceInfo] = field(default_factory=list)


def new_run_id() -> str:
    """Sortable and unique: 20261121-093012-1a2b."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def _git_sha(where: Path) -> str:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                           text=True, timeout=5, check=False)
        return r.stdout.strip() if r.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def run_plan(p: Plan, *, db: Path = DEFAULT_DB, out_dir: Path = DEFAULT_REPORTS,
             repeats: int | None = None, device_patterns: Sequence[str] = (),
             resume: str | None = None, cache_dir: Path | None = None,
             on_event: Callable[[Event], None] | None = None, report: bool = True,
             stop: threading.Event | None = None,
             devices: Sequence[tuple[Device, DeviceInfo]] | None = None,
             vendor_dir: Path | None = None) -> RunResult:
    """Build variants, plan the matrix, run it on every device, store and report."""
    from farm import runner
    from farm.calibration import calibration_description
    from farm.runner import DeviceTarget

    on_event = on_event or (lambda e: None)
    cache_dir = cache_dir or default_cache_dir()
    sweep = p.sweep
    if repeats is not None:
        if not 1 <= repeats <= config.MAX_REPEATS:
            raise ConfigError(f"--repeats: {repeats} is out of range; allowed: 1.."
                              f"{config.MAX_REPEATS}")
        sweep = replace(sweep, repeats=repeats)
    if device_patterns:
        sweep = replace(sweep, devices=tuple(device_patterns))
    store = Store(db)
    try:
        if resume:
            run_id = store.resolve_run(resume)
            old = store.run(run_id)
            if old["sweep_sha256"] != sweep.source_sha256:
                raise StoreError(f"run {run_id} was made from a different {sweep.source_file} "
                                 f"(sha256 {str(old['sweep_sha256'])[:12]}…); resume needs the "
                                 "same sweep file")
            sweep = replace(sweep, repeats=int(old["repeats"]), seed=int(old["seed"]))
            store.update_run(run_id, status="running", ended_at=None)
        else:
            run_id = new_run_id()
        found = list(devices) if devices is not None else discover_devices(
            p.fleet, workdir=cache_dir)
        found = [(d, i) for d, i in found if plan.device_matches(i, sweep.devices)]
        if not found:
            raise FarmError("no device matches the sweep's device filter "
                            f"{list(sweep.devices)}; see `farm devices`")
        if not resume:
            store.start_run(
                run_id, sweep_file=str(sweep.source_file), sweep_sha256=sweep.source_sha256,
                sweep_json=_json(sweep.to_dict()), farm_version=__version__,
                tf_version=_version("tensorflow"), litert_version=_version("ai-edge-litert"),
                host=f"{socket.gethostname()} ({platform.platform()})",
                git_sha=_git_sha(Path(sweep.source_file).resolve().parent),
                calibration=calibration_description(sweep.calibration), seed=sweep.seed,
                repeats=sweep.repeats)
        with _sigterm_as_interrupt():
            try:
                variants = build_variants(sweep, cache_dir=cache_dir, on_event=on_event)
                for v in variants:
                    store.add_variant(run_id, v.to_dict())
                vmap = {(v.model, v.quantization): v for v in variants}
                targets = []
                unusable: list[tuple[DeviceInfo, str]] = []
                for dev, info in found:
                    try:
                        binary = (host_binary(vendor_dir) if info.kind == "local" else
                                  phone_binary(info, vendor_dir=vendor_dir, cache_dir=cache_dir))
                    except FarmError as e:
                        unusable.append((info, str(e)))
                        continue
                    tier = tier_of(info, p.fleet)
                    ov = override_for(p.fleet, info.serial)
                    masks = cpu_masks(info, sweep.threads, sweep.affinity, ov.cpu_masks)
                    store.add_device(run_id, {**info.to_dict(), "label": info.label,
                                              "cpu_masks": {str(k): v for k, v in masks.items()}},
                                     tier=tier)
                    targets.append(DeviceTarget(
                        device=dev, info=info, binary=binary, tier=tier, cpu_masks=masks,
                        cooldown_delta_c=ov.cooldown_delta_c or sweep.cooldown_delta_c,
                        cooldown_timeout_s=_first(ov.cooldown_timeout_s,
                                                  sweep.cooldown_timeout_s),
                        cooldown_mode=sweep.cooldown_mode,
                        cooldown_fixed_s=sweep.cooldown_fixed_s,
                        cooldown_zones=sweep.cooldown_zones, sampler_hz=sweep.sampler_hz))
                if unusable and not targets:
                    raise FarmError("no device can run: " + "; ".join(
                        f"{i.serial}: {why}" for i, why in unusable))
                _record_unusable(store, run_id, sweep, p, vmap, unusable)
                overrides = {t.info.serial: override_for(p.fleet, t.info.serial)
                             for t in targets}
                planned = plan.expand(
                    sweep, [t.info for t in targets], p.delegates, vmap,
                    binary_sha256={t.info.serial: t.binary.sha256 for t in targets},
                    max_threads={s: o.max_threads for s, o in overrides.items() if o.max_threads},
                    skip_delegates={s: o.skip_delegates for s, o in overrides.items()})
                sustained = plan.sustained_cases(sweep, planned)
                store.add_cases(run_id, [{**pc.case.to_dict(), "skip_reason": pc.skip_reason}
                                         for pc in planned] + [c.to_dict() for c, _ in sustained])
                runnable: list[Case] = [pc.case for pc in planned if not pc.skip_reason]
                order = plan.schedule(runnable, sweep.repeats, sweep.seed)
                references: dict[str, Any] = {}
                if sweep.fidelity.enabled:
                    from farm import fidelity

                    references = fidelity.build_references(vmap, sweep.fidelity)
                stats = runner.run(targets, planned, order, run_id=run_id, store=store,
                                   params=sweep.params, delegates=p.delegates, variants=vmap,
                                   on_event=on_event, stop=stop, sustained=sustained,
                                   fidelity=sweep.fidelity, references=references,
                                   adaptive=sweep.adaptive, seed=sweep.seed)
                store.update_run(run_id, status="interrupted" if stats.interrupted else "finished",
                                 ended_at=_now())
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM: every finished sample is committed
                store.update_run(run_id, status="interrupted", ended_at=_now())
                raise
            except BaseException as e:
                store.update_run(run_id, status="failed", ended_at=_now(),
                                 notes=f"{type(e).__name__}: {e}"[:2000])
                raise
        report_path = render_report(store, run_id, out_dir) if report else None
        return RunResult(run_id=run_id, db=Path(db), report=report_path, stats=stats,
                         cases=len(planned), devices=[t.info for t in targets])
    finally:
        store.close()


def _first(*values: Any) -> Any:
    """The first value that is not None."""
    return next((v for v in values if v is not None), None)


def _record_unusable(store: Store, run_id: str, sweep: Sweep, p: Plan,
                     vmap: Mapping[tuple[str, str], ModelVariant],
                     unusable: Sequence[tuple[DeviceInfo, str]]) -> None:
    """A device farm cannot run on (no benchmark_model for its ABI): its cases are recorded
    as skipped with the reason, and the sweep goes on with the other devices."""
    from farm.store import SampleRecord, now_iso

    for info, why in unusable:
        store.add_device(run_id, {**info.to_dict(), "label": info.label},
                         tier=tier_of(info, p.fleet))
        cases = plan.expand(sweep, [info], p.delegates, vmap)
        store.add_cases(run_id, [{**pc.case.to_dict(), "skip_reason": why} for pc in cases])
        for pc in cases:
            c = pc.case
            store.append(SampleRecord(
                run_id=run_id, case_id=c.case_id, device=c.device, model=c.model,
                quantization=c.quantization, delegate=c.delegate, threads=c.threads, repeat=0,
                status="skipped", error=f"device unusable: {why}", started_at=now_iso(),
                ended_at=now_iso()))


def override_for(fleet: config.Fleet, serial: str) -> config.DeviceOverride:
    """devices.yaml overrides whose pattern matches the serial, merged in file order (a later
    match wins field by field) (pure)."""
    from fnmatch import fnmatchcase

    merged = config.DeviceOverride(pattern=serial)
    for o in fleet.overrides:
        if not fnmatchcase(serial, o.pattern):
            continue
        merged = replace(
            merged,
            max_threads=o.max_threads if o.max_threads is not None else merged.max_threads,
            cpu_masks=tuple({**dict(merged.cpu_masks), **dict(o.cpu_masks)}.items()),
            cooldown_delta_c=(o.cooldown_delta_c if o.cooldown_delta_c is not None
                              else merged.cooldown_delta_c),
            cooldown_timeout_s=(o.cooldown_timeout_s if o.cooldown_timeout_s is not None
                                else merged.cooldown_timeout_s),
            skip_delegates=tuple(dict.fromkeys(merged.skip_delegates + o.skip_delegates)))
    return merged


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While a run is going, SIGTERM stops it like Ctrl-C: finished samples are committed,
    the run is marked interrupted, and `--resume` picks it up. (SIGKILL cannot be caught;
    every finished sample is committed anyway.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cpu_masks(info: DeviceInfo, threads: Sequence[int], affinity: str,
              configured: Sequence[tuple[int, str]] = ()) -> dict[int, str]:
    """taskset masks per thread count: devices.yaml's cpu_masks first, then (affinity
    big_cores) the fastest cores from the device's clusters; none otherwise (pure)."""
    from farm.probes import big_core_mask

    masks = dict(configured)
    if affinity == "big_cores" and info.clusters:
        clusters = [(c.cpus, c.max_freq_khz) for c in info.clusters]
        for t in threads:
            if t not in masks:
                mask = big_core_mask(clusters, t)
                if mask:
                    masks[t] = mask
    return masks


def default_vendor_dir() -> Path:
    """vendor/benchmark_model of the checkout (or the current directory)."""
    return project_root() / "vendor" / "benchmark_model"


def phone_binary(info: DeviceInfo, *, vendor_dir: Path | None = None,
                 cache_dir: Path | None = None) -> BinarySpec:
    """The benchmark_model for a phone's ABI list.

    A simulated phone without a vendor binary gets the simulator's stub executable, which the
    simulated phone runs as benchmark_model; it is labelled as such in every result.
    """
    from farm.errors import BenchmarkError
    from farm.runner import BinarySpec
    from farm.vendor import pick_binary

    try:
        b = pick_binary(info.abis, vendor_dir or default_vendor_dir())
    except BenchmarkError:
        if not info.simulated:
            raise
        return _sim_stub(info, (cache_dir or default_cache_dir()) / "sim-binaries")
    assert b.sha256, "pick_binary returns verified binaries only"
    return BinarySpec(sha256=b.sha256, label=f"benchmark_model {b.version} ({b.abi})",
                      local_path=Path(b.path))


def _sim_stub(info: DeviceInfo, directory: Path) -> BinarySpec:
    from farm.runner import BinarySpec
    from farm.sim.benchmark import MACHINE_OF_ABI, make_stub_binary

    abi = next((a for a in info.abis if a in MACHINE_OF_ABI), "")
    if not abi:
        raise FarmError(f"{info.serial}: no simulated benchmark_model for ABIs "
                        f"{', '.join(info.abis)}")
    data = make_stub_binary(abi)
    path = directory / abi / "benchmark_model"
    if not path.exists() or path.read_bytes() != data:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(".benchmark_model.part")
        tmp.write_bytes(data)
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    return BinarySpec(sha256=hashlib.sha256(data).hexdigest(),
                      label=f"SIMULATED benchmark_model stub ({abi})", local_path=path)


def _now() -> str:
    from farm.store import now_iso

    return now_iso()


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, sort_keys=True, default=str)


# ----------------------------------------------------------------------------- reading

def open_store(db: Path, *, must_exist: bool = True) -> Store:
    """Open the results database; a clear error if it is missing."""
    if must_exist and not Path(db).exists():
        raise StoreError(f"{db}: no results database yet; run `farm run --matrix sweep.yaml` "
                         "first or pass --db")
    return Store(db)


def render_report(store_or_db: Store | Path, run_ref: str, out_dir: Path = DEFAULT_REPORTS
                  ) -> Path:
    """(Re)generate reports/<run-id>/index.html, summary.csv and samples.csv from the store.

    A big run's report workers (farm.workers, see `plots.report_workers`) start before its
    samples are read, so that their imports overlap the reading; one of them writes
    samples.csv straight from the store."""
    from farm.report import ReportData
    from farm.report import render_report as _render
    from farm.report.plots import report_workers
    from farm.store import write_samples_csv
    from farm.workers import Workers

    store = store_or_db if isinstance(store_or_db, Store) else open_store(store_or_db)
    pool = None
    try:
        run_id = store.resolve_run(run_ref)
        n_workers = report_workers(store.count_samples(run_id))
        pool = Workers(n_workers) if n_workers else None
        target = Path(out_dir) / run_id
        samples_csv = None
        if pool is not None:
            try:
                target.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise FarmError(f"{target}: cannot write the report: {e}") from e
            samples_csv = pool.submit(write_samples_csv, store.path, run_id,
                                      target / "samples.csv")
        data = ReportData(run=store.run(run_id), devices=store.devices(run_id),
                          variants=store.variants_frame(run_id),
                          samples=store.load_samples(run_id), fidelity=store.fidelity(run_id),
                          # earlier runs only: this run's samples are loaded above
                          history=store.history_samples(until_run=run_id, max_runs=29,
                                                        include_until=False))
        return Path(_render(data, target, pool=pool, samples_csv=samples_csv))
    finally:
        if pool is not None:
            pool.close()
        if store is not store_or_db:
            store.close()


def list_runs(db: Path) -> list[dict[str, Any]]:
    """Every run in the store, newest first."""
    with open_store(db) as store:
        return store.runs()


def load_samples(db: Path = DEFAULT_DB, run_id: str | None = None) -> pd.DataFrame:
    """Samples as a pandas DataFrame (every run, or one run by id/prefix/'last')."""
    from farm.store import load_samples as _load

    return _load(db, run_id)


def parse_files(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Parse benchmark_model output files; one dict per file with the store's key names."""
    from farm.benchmark_model import parse_output

    out = []
    for path in paths:
        try:
            text = Path(path).read_text(errors="replace")
        except OSError as e:
            raise FarmError(f"{path}: cannot read: {e.strerror}") from None
        out.append({"file": str(path), **parse_output(text).to_dict()})
    return out


def plan_cases(p: Plan, *, cache_dir: Path | None = None,
               devices: Sequence[tuple[Device, DeviceInfo]] | None = None
               ) -> list[plan.PlannedCase]:
    """The cases a run would execute (builds/looks up variants; runs nothing)."""
    cache_dir = cache_dir or default_cache_dir()
    found = list(devices) if devices is not None else discover_devices(p.fleet,
                                                                       workdir=cache_dir)
    infos = [i for _, i in found]
    variants = build_variants(p.sweep, cache_dir=cache_dir)
    vmap = {(v.model, v.quantization): v for v in variants}
    return plan.expand(p.sweep, infos, p.delegates, vmap)


def device_report(devices_file: Path | None = None) -> list[dict[str, Any]]:
    """Every device on every configured adb server (and the host), with state and reasons."""
    root = project_root()
    dev_file = devices_file or root / "devices.yaml"
    delegates = config.load_delegates(root / "delegates")
    fleet = (config.load_fleet(dev_file, list(delegates)) if dev_file.exists()
             else config.Fleet(source_file="(default)"))
    rows: list[dict[str, Any]] = []
    try:
        from farm.devices import adb
    except ImportError:
        adb = None  # type: ignore[assignment]
    if adb is not None and fleet.host != "only":
        rows.extend(adb.doctor(fleet))
    usable_phones = any(r["state"] == "device" and not r.get("reason") for r in rows)
    local = LocalDevice(default_cache_dir() / "host")
    info = local.info()
    use_host = fleet.host in ("always", "only") or (fleet.host == "auto" and not usable_phones)
    rows.append({
        "serial": info.serial, "state": "device" if use_host else "standby",
        "reason": "" if use_host else (f"devices.yaml host: {fleet.host}" if fleet.host == "never"
                                       else "phones present and devices.yaml host: auto"),
        "label": info.label, "tier": tier_of(info, fleet), "simulated": False,
        "facts": f"{info.cpu_name}, {info.cpu_count} CPUs, {info.ram_mb} MB RAM, "
                 f"ABI {host_abi()}, sensors: "
                 f"{', '.join(info.thermal_zones) or 'none'}",
        "info": info.to_dict(), "binary": host_binary().label})
    return rows
