"""Orchestration per device: stage artifacts, cooldown gate, run samples, store each one.

One worker thread per device; the samples of one device always run one after another, one
benchmark_model process per sample. Progress goes out through `on_event`; nothing is printed.
Touches devices only through the `Device` protocol and the store only through `Store.append`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from farm import probes
from farm.benchmark_model import build_argv, parse_output
from farm.devices import Device, DeviceInfo, ShellResult
from farm.errors import BenchmarkError, DeviceError
from farm.models import Case, DelegateSpec, ModelVariant, RunParams
from farm.plan import PlannedCase
from farm.store import SampleRecord, Store, now_iso

log = logging.getLogger(__name__)

# Flags that make a sample unfit for verdicts (excluded by default, shown in the report).
TAINTING_FLAGS = ("throttled", "freq_capped", "started_hot", "charging_changed")
HIGH_VARIANCE_CV = 0.10  # pyperf's threshold: CV >= 10 % within one sample is suspect
MAX_CONSECUTIVE_DEVICE_ERRORS = 3
GATE_POLL_S = 1.0


@dataclass(frozen=True, slots=True)
class BinarySpec:
    """The benchmark_model to run on a device: pushed from `local_path`, or run as `argv_prefix`."""

    sha256: str
    label: str
    local_path: Path | None = None
    argv_prefix: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Event:
    """Progress, rendered by the CLI (or ignored)."""

    # run_started|device_ready|gate|sample_started|sample_finished|device_error|run_finished
    kind: str
    device: str = ""
    case: Case | None = None
    index: int = 0
    total: int = 0
    status: str = ""
    message: str = ""
    eta_s: float | None = None
    bytes_pushed: int = 0


@dataclass
class DeviceTarget:
    """A device plus everything needed to run its cases."""

    device: Device
    info: DeviceInfo
    binary: BinarySpec
    tier: str = ""
    cpu_masks: Mapping[int, str] = field(default_factory=dict)
    cooldown_delta_c: float = 3.0
    cooldown_timeout_s: float = 120.0


@dataclass
class RunStats:
    """What a run did, for the caller and the closing summary."""

    samples_ok: int = 0
    samples_failed: int = 0
    samples_skipped: int = 0
    bytes_pushed: int = 0
    benchmark_s: float = 0.0
    wall_s: float = 0.0
    interrupted: bool = False
    errors: list[str] = field(default_factory=list)


class _Progress:
    """Thread-safe counters for n of N and the ETA."""

    def __init__(self, total: int, on_event: Callable[[Event], None]) -> None:
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.on_event = on_event

    def tick(self) -> tuple[int, float | None]:
        with self.lock:
            self.done += 1
            elapsed = time.monotonic() - self.started
            eta = elapsed / self.done * (self.total - self.done) if self.done else None
            return self.done, eta


def classify(parsed: Mapping[str, Any], delegate: DelegateSpec, result: ShellResult,
             before: probes.Probe, after: probes.Probe, gate_reason: str) -> tuple[str, ...]:
    """Suspect-sample flags (pure)."""
    flags: list[str] = []
    if delegate.provider:
        delegation = parsed.get("delegation") or ""
        if delegation == "partial":
            flags.append("partial_delegation")
        elif delegation == "failed":
            flags.append("delegate_failed")
        elif delegation in ("none", "") and parsed.get("success"):
            # The latency was measured on the CPU: never present it as this delegate's number.
            flags.append("delegate_not_applied")
    avg, std = parsed.get("avg_us"), parsed.get("std_us")
    if avg and std is not None and avg > 0 and std / avg >= HIGH_VARIANCE_CV:
        flags.append("high_variance")
    if not before.has_sensors and not after.has_sensors:
        flags.append("no_sensors")
    if (after.thermal_status or 0) >= 1 or (before.thermal_status or 0) >= 1:
        flags.append("throttled")
    caps = [r for r in (before.freq_cap_ratio, after.freq_cap_ratio) if r is not None]
    if caps and min(caps) < 0.999:
        flags.append("freq_capped")
    if gate_reason and gate_reason not in ("cool", "no sensors"):
        flags.append("started_hot")
    if before.charging and after.charging and before.charging != after.charging:
        flags.append("charging_changed")
    return tuple(flags)


def _env(before: probes.Probe, after: probes.Probe, wait_s: float,
         variant: ModelVariant | None, binary: BinarySpec) -> dict[str, Any]:
    temps = [t for t in (before.max_temp_c, after.max_temp_c) if t is not None]
    caps = [r for r in (before.freq_cap_ratio, after.freq_cap_ratio) if r is not None]
    return {
        "variant_sha256": variant.sha256 if variant else "",
        "variant_size_bytes": variant.size_bytes if variant else None,
        "binary_sha256": binary.sha256,
        "temp_before_c": before.max_temp_c, "temp_after_c": after.max_temp_c,
        "temp_max_c": max(temps) if temps else None,
        "thermal_status_before": before.thermal_status,
        "thermal_status_after": after.thermal_status,
        "battery_level": after.battery_level if after.battery_level is not None
        else before.battery_level,
        "battery_temp_c": after.battery_temp_c,
        "charging": after.charging or before.charging,
        "freq_cap_ratio": min(caps) if caps else None,
        "cooldown_wait_s": wait_s,
    }


class DeviceWorker:
    """Runs one device's share of the schedule."""

    def __init__(self, target: DeviceTarget, *, run_id: str, store: Store, params: RunParams,
                 delegates: Mapping[str, DelegateSpec],
                 variants: Mapping[tuple[str, str], ModelVariant], progress: _Progress,
                 stop: threading.Event, sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.t = target
        self.run_id = run_id
        self.store = store
        self.params = params
        self.delegates = delegates
        self.variants = variants
        self.progress = progress
        self.stop = stop
        self.sleep = sleep
        self.monotonic = monotonic
        self.stats = RunStats()
        self.remote_models: dict[str, str] = {}
        self.binary_argv: tuple[str, ...] = ()
        self.sensors = probes.SensorMap()
        self.baseline = probes.Baseline(temp_c=None)

    @property
    def serial(self) -> str:
        return self.t.device.serial

    def emit(self, **kw: Any) -> None:
        self.progress.on_event(Event(device=self.serial, total=self.progress.total, **kw))

    # -------------------------------------------------------------- staging

    def stage(self, cases: Sequence[Case]) -> None:
        """Push the binary, the models and delegate files (each only if its sha changed)."""
        dev = self.t.device
        work = getattr(dev, "workdir", "/data/local/tmp/farm")
        if self.t.binary.local_path is not None:
            remote = f"{work}/bin/{self.t.binary.sha256[:16]}/benchmark_model"
            self.stats.bytes_pushed += dev.push(self.t.binary.local_path, remote)
            self.binary_argv = (remote,)
        else:
            self.binary_argv = self.t.binary.argv_prefix
        for case in cases:
            v = self.variants.get((case.model, case.quantization))
            if v is None or v.status != "ok" or v.sha256 in self.remote_models:
                continue
            remote = f"{work}/models/{v.sha256}.tflite"
            self.stats.bytes_pushed += dev.push(Path(v.path), remote)
            self.remote_models[v.sha256] = remote
        for name in sorted({c.delegate for c in cases}):
            for f in self.delegates[name].extra_files:
                self.stats.bytes_pushed += dev.push(Path(f), f"{work}/{Path(f).name}")
        android = self.t.info.kind == "adb"
        self.sensors = probes.discover(dev, cpu_count=self.t.info.cpu_count, android=android)
        idle = probes.sample(dev, self.sensors)
        self.baseline = probes.Baseline(temp_c=idle.max_temp_c, probe=idle)
        self.emit(kind="device_ready", bytes_pushed=self.stats.bytes_pushed,
                  message=f"{self.t.info.label}: staged, baseline "
                          f"{_fmt_temp(idle.max_temp_c)}")

    # -------------------------------------------------------------- gate

    def wait_cool(self) -> tuple[float, str, probes.Probe]:
        """Closed-loop cooldown: poll sensors until cool or the timeout; return the wait."""
        start = self.monotonic()
        while True:
            probe = probes.sample(self.t.device, self.sensors)
            ready, reason = probes.gate_ready(probe, self.baseline, self.t.cooldown_delta_c)
            waited = self.monotonic() - start
            if ready:
                return waited, reason, probe
            if waited >= self.t.cooldown_timeout_s or self.stop.is_set():
                return waited, f"gate timeout after {waited:.0f} s: {reason}", probe
            self.emit(kind="gate", message=f"cooling down: {reason}")
            self.sleep(GATE_POLL_S)

    # -------------------------------------------------------------- samples

    def record_unrunnable(self, planned: PlannedCase) -> None:
        c = planned.case
        v = self.variants.get((c.model, c.quantization))
        self.store.append(SampleRecord(
            run_id=self.run_id, case_id=c.case_id, device=c.device, model=c.model,
            quantization=c.quantization, delegate=c.delegate, threads=c.threads, repeat=0,
            status=planned.skip_status, error=planned.skip_reason, started_at=now_iso(),
            ended_at=now_iso(), env={"variant_sha256": v.sha256 if v else "",
                                     "binary_sha256": self.t.binary.sha256}))
        if planned.skip_status == "failed":
            self.stats.samples_failed += 1
        else:
            self.stats.samples_skipped += 1

    def run_sample(self, rnd: int, pos: int, case: Case) -> SampleRecord:
        delegate = self.delegates[case.delegate]
        variant = self.variants[(case.model, case.quantization)]
        wait_s, gate_reason, before = self.wait_cool()
        mask = self.t.cpu_masks.get(case.threads, "")
        argv = build_argv(self.binary_argv, graph=self.remote_models[variant.sha256],
                          threads=case.threads, params=self.params,
                          delegate_flags=delegate.flags)
        if mask:
            argv = ["taskset", mask, *argv]
        started = now_iso()
        result = self.t.device.shell(argv, timeout_s=self.params.timeout_s)
        ended = now_iso()
        after = probes.sample(self.t.device, self.sensors)
        self.stats.benchmark_s += result.duration_s
        parsed = parse_output(result.output, exit_code=result.returncode).to_dict()
        if result.timed_out:
            status, error = "failed", (f"timed out after {self.params.timeout_s:g} s; "
                                       "benchmark_model was killed")
        elif parsed.get("success") and result.returncode == 0:
            status, error = "ok", ""
        else:
            status = "failed"
            error = parsed.get("error") or f"benchmark_model exited {result.returncode}"
        flags = classify(parsed, delegate, result, before, after, gate_reason)
        return SampleRecord(
            run_id=self.run_id, case_id=case.case_id, device=case.device, model=case.model,
            quantization=case.quantization, delegate=case.delegate, threads=case.threads,
            repeat=rnd, round=rnd, position=pos, status=status, error=error, flags=flags,
            tainted=any(f in TAINTING_FLAGS for f in flags), cpu_mask=mask,
            exit_code=result.returncode, parsed=parsed,
            env=_env(before, after, wait_s, variant, self.t.binary),
            env_series={"before": before.to_dict(), "after": after.to_dict(),
                        "gate": gate_reason},
            started_at=started, ended_at=ended, duration_s=result.duration_s,
            argv=tuple(argv), raw_output=result.output)

    def run(self, planned: Sequence[PlannedCase], order: Sequence[tuple[int, int, Case]],
            done: set[tuple[str, int]]) -> RunStats:
        """Stage, then run this device's scheduled samples; failures become records."""
        for p in planned:
            if p.skip_reason and (p.case.case_id, 0) not in done:
                self.record_unrunnable(p)
                self.progress.tick()
        todo = [(r, pos, c) for r, pos, c in order if (c.case_id, r) not in done]
        try:
            self.stage([c for _, _, c in todo])
        except (DeviceError, BenchmarkError) as e:
            self._abandon(todo, f"could not prepare the device: {e}")
            return self.stats
        consecutive = 0
        last_error = ""
        for i, (rnd, pos, case) in enumerate(todo):
            if self.stop.is_set():
                self.stats.interrupted = True
                break
            self.emit(kind="sample_started", case=case, message=case.label())
            try:
                record = self.run_sample(rnd, pos, case)
                consecutive = 0
            except DeviceError as e:
                consecutive += 1
                last_error = str(e)
                self.stats.errors.append(last_error)
                record = SampleRecord(
                    run_id=self.run_id, case_id=case.case_id, device=case.device,
                    model=case.model, quantization=case.quantization, delegate=case.delegate,
                    threads=case.threads, repeat=rnd, round=rnd, position=pos, status="failed",
                    error=f"device error: {e}", started_at=now_iso(), ended_at=now_iso())
                self.emit(kind="device_error", case=case, message=str(e))
            self.store.append(record)  # committed before the next sample starts
            if record.status == "ok":
                self.stats.samples_ok += 1
            else:
                self.stats.samples_failed += 1
            n, eta = self.progress.tick()
            self.emit(kind="sample_finished", case=case, index=n, status=record.status,
                      eta_s=eta, message=record.error)
            if consecutive >= MAX_CONSECUTIVE_DEVICE_ERRORS:
                self._abandon(todo[i + 1:], f"device quarantined after {consecutive} "
                                            f"consecutive device errors: {last_error}")
                break
        return self.stats

    def _abandon(self, todo: Sequence[tuple[int, int, Case]], reason: str) -> None:
        self.stats.errors.append(reason)
        for rnd, pos, case in todo:
            self.store.append(SampleRecord(
                run_id=self.run_id, case_id=case.case_id, device=case.device, model=case.model,
                quantization=case.quantization, delegate=case.delegate, threads=case.threads,
                repeat=rnd, round=rnd, position=pos, status="skipped", error=reason,
                started_at=now_iso(), ended_at=now_iso()))
            self.stats.samples_skipped += 1
            self.progress.tick()


def _fmt_temp(t: float | None) -> str:
    return "no sensors" if t is None else f"{t:.1f} °C"


def run(targets: Sequence[DeviceTarget], planned: Sequence[PlannedCase],
        order: Sequence[tuple[int, int, Case]], *, run_id: str, store: Store,
        params: RunParams, delegates: Mapping[str, DelegateSpec],
        variants: Mapping[tuple[str, str], ModelVariant],
        on_event: Callable[[Event], None] | None = None,
        stop: threading.Event | None = None) -> RunStats:
    """Run every device in parallel (one thread each); return the combined stats."""
    on_event = on_event or (lambda e: None)
    stop = stop or threading.Event()
    done = store.done_keys(run_id)
    total = sum(1 for r, _, c in order if (c.case_id, r) not in done) + sum(
        1 for p in planned if p.skip_reason and (p.case.case_id, 0) not in done)
    progress = _Progress(total, on_event)
    on_event(Event(kind="run_started", total=total, message=run_id))
    start = time.monotonic()
    workers = [DeviceWorker(t, run_id=run_id, store=store, params=params, delegates=delegates,
                            variants=variants, progress=progress, stop=stop) for t in targets]
    stats = RunStats()
    try:
        with ThreadPoolExecutor(max_workers=max(1, len(workers)),
                                thread_name_prefix="farm-device") as pool:
            futures = []
            for w in workers:
                mine = [p for p in planned if p.case.device == w.serial]
                my_order = [o for o in order if o[2].device == w.serial]
                futures.append(pool.submit(w.run, mine, my_order, done))
            try:
                for f in futures:
                    while True:
                        try:
                            f.result(timeout=0.5)
                            break
                        except TimeoutError:
                            continue
            except KeyboardInterrupt:
                stop.set()
                stats.interrupted = True
                raise
    finally:
        for w in workers:
            s = w.stats
            stats.samples_ok += s.samples_ok
            stats.samples_failed += s.samples_failed
            stats.samples_skipped += s.samples_skipped
            stats.bytes_pushed += s.bytes_pushed
            stats.benchmark_s += s.benchmark_s
            stats.errors.extend(s.errors)
            stats.interrupted = stats.interrupted or s.interrupted
        stats.wall_s = time.monotonic() - start
    on_event(Event(kind="run_finished", total=total, index=total,
                   message=f"{stats.samples_ok} ok, {stats.samples_failed} failed, "
                           f"{stats.samples_skipped} skipped"))
    return stats
