"""Orchestration per device: stage artifacts, cooldown gate, run samples, store each one.

One worker thread per device; the samples of one device always run one after another, one
benchmark_model process per sample. Progress goes out through `on_event`; nothing is printed.
Touches devices only through the `Device` protocol and the store only through `Store.append`.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from farm import probes
from farm.benchmark_model import build_argv, parse_output
from farm.devices import Device, DeviceInfo, ShellResult
from farm.errors import BenchmarkError, DeviceError
from farm.models import (
    AdaptiveSpec,
    Case,
    DelegateSpec,
    FidelitySpec,
    ModelVariant,
    RunParams,
    SustainedSpec,
)
from farm.plan import PlannedCase
from farm.sampler import Sampler, SeriesSummary, summarize
from farm.store import SampleRecord, Store, now_iso

log = logging.getLogger(__name__)

# Flags that make a sample unfit for verdicts (excluded by default, shown in the report).
TAINTING_FLAGS = ("throttled", "freq_capped", "started_hot", "charging_changed")
HIGH_VARIANCE_CV = 0.10  # pyperf's threshold: CV >= 10 % within one sample is suspect
MAX_CONSECUTIVE_DEVICE_ERRORS = 3
GATE_POLL_S = 1.0
SMOKE_TIMEOUT_S = 60.0
# A closing reading this recent opens the next sample's gate without another round trip.
FRESH_PROBE_S = 1.0
_USAGE_FLAG = re.compile(r"--([a-z][a-z0-9_]*)=")
BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 30.0


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
    cooldown_mode: str = "closed_loop"  # or "fixed": sleep cooldown_fixed_s, then look
    cooldown_fixed_s: float = 0.0
    cooldown_zones: tuple[str, ...] = ()
    sampler_hz: float = 1.0
    gate_poll_s: float = GATE_POLL_S


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

    def add(self, n: int) -> None:
        """More work than planned (adaptive rounds)."""
        with self.lock:
            self.total += n

    def tick(self) -> tuple[int, float | None]:
        with self.lock:
            self.done += 1
            elapsed = time.monotonic() - self.started
            eta = elapsed / self.done * (self.total - self.done) if self.done else None
            return self.done, eta


FREQ_CAP_MARGIN = 0.01  # a cap counts when it is this much below the device's idle cap


def classify(parsed: Mapping[str, Any], delegate: DelegateSpec, result: ShellResult,
             before: probes.Probe, after: probes.Probe, gate_reason: str,
             series: SeriesSummary | None = None, idle_cap: float | None = None
             ) -> tuple[str, ...]:
    """Suspect-sample flags (pure).

    With `series` (the sampler's summary) throttling, capping and charging changes are judged
    over the whole sample, not only its two ends. A frequency cap counts only when it is below
    the device's idle cap (`idle_cap`), since some devices cap scaling_max_freq at rest.
    """
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
    series = series or summarize(before, after, ())
    if (series.thermal_status_max or 0) >= 1:
        flags.append("throttled")
    reference = 1.0 if idle_cap is None else idle_cap
    if series.freq_cap_min is not None and series.freq_cap_min < reference - FREQ_CAP_MARGIN:
        flags.append("freq_capped")
    if gate_reason and gate_reason not in ("cool", "no sensors", SUSTAINED_GATE):
        flags.append("started_hot")
    if len(series.charging_states) > 1:
        flags.append("charging_changed")
    return tuple(flags)


SUSTAINED_GATE = "sustained window"  # windows after the first run back to back, on purpose


def _env(before: probes.Probe, after: probes.Probe, wait_s: float,
         variant: ModelVariant | None, binary: BinarySpec,
         series: SeriesSummary | None = None, sampler: Sampler | None = None
         ) -> dict[str, Any]:
    series = series or summarize(before, after, ())
    return {
        "variant_sha256": variant.sha256 if variant else "",
        "variant_size_bytes": variant.size_bytes if variant else None,
        "binary_sha256": binary.sha256,
        "temp_before_c": before.max_temp_c, "temp_after_c": after.max_temp_c,
        "temp_max_c": series.temp_max_c,
        "thermal_status_before": before.thermal_status,
        "thermal_status_after": after.thermal_status,
        "thermal_status_max": series.thermal_status_max,
        "battery_level": after.battery_level if after.battery_level is not None
        else before.battery_level,
        "battery_temp_c": after.battery_temp_c,
        "charging": after.charging or before.charging,
        "charging_before": before.charging, "charging_after": after.charging,
        "freq_cap_ratio": series.freq_cap_min,
        "cooldown_wait_s": wait_s,
        "vmhwm_mb": None if series.vmhwm_max_kb is None else series.vmhwm_max_kb / 1024,
        "vmrss_max_mb": None if series.vmrss_max_kb is None else series.vmrss_max_kb / 1024,
        "sampler_points": series.points,
        "sampler_cost_s": None if sampler is None else round(sampler.cost_s, 4),
    }


class DeviceWorker:
    """Runs one device's share of the schedule."""

    def __init__(self, target: DeviceTarget, *, run_id: str, store: Store, params: RunParams,
                 delegates: Mapping[str, DelegateSpec],
                 variants: Mapping[tuple[str, str], ModelVariant], progress: _Progress,
                 stop: threading.Event, sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic,
                 fidelity: FidelitySpec | None = None,
                 references: Mapping[str, Any] | None = None,
                 adaptive: AdaptiveSpec | None = None, seed: int = 0) -> None:
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
        self.fidelity = fidelity or FidelitySpec()
        self.references = references or {}
        self.adaptive = adaptive or AdaptiveSpec()
        self.seed = seed
        self.rounds_run: dict[str, int] = {}
        self.stats = RunStats()
        self.remote_models: dict[str, str] = {}
        self.binary_argv: tuple[str, ...] = ()
        self.binary_flags: frozenset[str] = frozenset()
        self._last_probe: tuple[float, probes.Probe] | None = None
        self.sensors = probes.SensorMap()
        self.baseline = probes.Baseline(temp_c=None)

    @property
    def serial(self) -> str:
        return self.t.device.serial

    def emit(self, **kw: Any) -> None:
        self.progress.on_event(Event(device=self.serial, total=self.progress.total, **kw))

    # -------------------------------------------------------------- staging

    def stage(self, cases: Sequence[Case]) -> None:
        """Lock the device, push the binary (then smoke-check it with --help), the models
        and delegate files (each only if its sha changed), clean up stale files, and learn the
        idle baseline. Raises DeviceError/BenchmarkError; the caller records the cases."""
        dev = self.t.device
        work = getattr(dev, "workdir", "/data/local/tmp/farm")
        binary: tuple[Path, str] | None = None
        if self.t.binary.local_path is not None:
            binary = (self.t.binary.local_path,
                      f"{work}/bin/{self.t.binary.sha256[:16]}/benchmark_model")
        models: dict[str, tuple[Path, str]] = {}
        for case in cases:
            v = self.variants.get((case.model, case.quantization))
            if v is not None and v.status == "ok":
                models.setdefault(v.sha256, (Path(v.path), f"{work}/models/{v.sha256}.tflite"))
        extras = [(Path(f), f"{work}/{Path(f).name}")
                  for name in sorted({c.delegate for c in cases})
                  for f in self.delegates[name].extra_files]
        lock = getattr(dev, "lock", None)
        if callable(lock):  # one round trip on a phone: the lock plus the sha256 of every file
            lock(f"farm pid {os.getpid()} on {socket.gethostname()}, run {self.run_id}",
                 hash_paths=[r for _, r in [*([binary] if binary else []),
                                           *models.values(), *extras]])
        if binary is not None:
            self.stats.bytes_pushed += dev.push(*binary)
            self.binary_argv = (binary[1],)
        else:
            self.binary_argv = self.t.binary.argv_prefix
        android = self.t.info.kind == "adb"
        self.sensors = probes.discover(dev, cpu_count=self.t.info.cpu_count, android=android)
        self.binary_flags, idle = self.smoke_check()
        idle_at = self.monotonic()
        for sha, (local, remote) in models.items():
            self.stats.bytes_pushed += dev.push(local, remote)
            self.remote_models[sha] = remote
        extra = [remote for _, remote in extras]
        for local, remote in extras:
            self.stats.bytes_pushed += dev.push(local, remote)
        cleanup = getattr(dev, "cleanup", None)
        if callable(cleanup):
            keep = [*self.binary_argv[:1], *self.remote_models.values(), *extra]
            removed = cleanup([k for k in keep if k.startswith(work)])
            if removed:
                log.info("%s: removed %d stale files: %s", self.serial, len(removed),
                         ", ".join(removed))
        if idle is None:
            idle = probes.sample(dev, self.sensors)
            idle_at = self.monotonic()
        self.baseline = probes.Baseline(temp_c=idle.max_temp_c, probe=idle)
        self._last_probe = (idle_at, idle)  # the first gate's first reading, if still fresh
        self.emit(kind="device_ready", bytes_pushed=self.stats.bytes_pushed,
                  message=f"{self.t.info.label}: staged, baseline "
                          f"{_fmt_temp(idle.max_temp_c)}")

    def smoke_check(self) -> tuple[frozenset[str], probes.Probe | None]:
        """Run `benchmark_model --help` once; it must print its usage table (it exits 1 by
        design). Returns the flags it knows, and on a phone the idle sensor reading taken in
        the same shell right after it (else None). A binary that cannot run here (wrong ABI,
        missing libraries, not executable) raises BenchmarkError with what it printed."""
        argv = [*self.binary_argv, "--help"]
        shell_then = getattr(self.t.device, "shell_then", None) \
            if self.sensors.has_dumpsys else None
        idle = None
        if callable(shell_then):
            r, after = shell_then(argv, probes.tick_script(self.sensors),
                                  timeout_s=SMOKE_TIMEOUT_S)
            idle = probes.parse_tick(after, self.sensors) if after is not None else None
        else:
            r = self.t.device.shell(argv, timeout_s=SMOKE_TIMEOUT_S)
        flags = frozenset(_USAGE_FLAG.findall(r.output))
        if r.timed_out or "graph" not in flags:
            what = "timed out" if r.timed_out else f"exited {r.returncode}"
            text = " ".join(r.output.strip().splitlines()[:3])[:300] or "no output"
            raise BenchmarkError(f"{self.serial}: benchmark_model --help {what} without "
                                 f"printing its flags: {text}")
        return flags, idle

    # -------------------------------------------------------------- gate

    def wait_cool(self) -> tuple[float, str, probes.Probe]:
        """The cooldown gate; returns (seconds waited, why it opened, the last probe).

        closed_loop: poll sensors until the thermal status is 0 and the gate zones are within
        delta of the idle baseline, or the timeout. fixed (explicit opt-in): sleep, then look;
        a device still hot after the sleep makes the sample `started_hot`.
        """
        start = self.monotonic()
        if self.t.cooldown_mode == "fixed":
            self.emit(kind="gate", message=f"fixed cooldown {self.t.cooldown_fixed_s:g} s")
            self.sleep(self.t.cooldown_fixed_s)
            probe = probes.sample(self.t.device, self.sensors)
            ready, reason = probes.gate_ready(probe, self.baseline, self.t.cooldown_delta_c,
                                              self.t.cooldown_zones)
            waited = self.monotonic() - start
            return waited, reason if ready else f"after a fixed {waited:.0f} s: {reason}", probe
        fresh = self._last_probe
        self._last_probe = None
        while True:
            if fresh is not None and start - fresh[0] <= FRESH_PROBE_S:
                probe = fresh[1]  # the previous sample's closing reading, taken just now
            else:
                probe = probes.sample(self.t.device, self.sensors)
            fresh = None
            ready, reason = probes.gate_ready(probe, self.baseline, self.t.cooldown_delta_c,
                                              self.t.cooldown_zones)
            waited = self.monotonic() - start
            if ready:
                return waited, reason, probe
            if waited >= self.t.cooldown_timeout_s or self.stop.is_set():
                return waited, f"gate timeout after {waited:.0f} s: {reason}", probe
            self.emit(kind="gate", message=f"cooling down: {reason}")
            self.sleep(self.t.gate_poll_s)

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

    def _process_match(self, graph: str) -> str:
        """What identifies the benchmark process for memory readings: its name on a phone,
        the model path on the host (where the runner is an interpreter process)."""
        if self.t.info.kind == "local":
            return graph
        return Path(self.binary_argv[0]).name if self.binary_argv else ""

    def run_sample(self, rnd: int, pos: int, case: Case, *, phase: str = "measure",
                   params: RunParams | None = None,
                   gate: tuple[float, str, probes.Probe] | None = None,
                   window_offset_s: float | None = None) -> SampleRecord:
        """One benchmark_model process, with the gate before it and the sampler during it."""
        params = params or self.params
        delegate = self.delegates[case.delegate]
        variant = self.variants[(case.model, case.quantization)]
        wait_s, gate_reason, before = gate if gate is not None else self.wait_cool()
        mask = self.t.cpu_masks.get(case.threads, "")
        graph = self.remote_models[variant.sha256]
        argv = build_argv(self.binary_argv, graph=graph, threads=case.threads, params=params,
                          delegate_flags=delegate.flags)
        if mask:
            argv = ["taskset", mask, *argv]
        match = self._process_match(graph)
        dev, sensors = self.t.device, self.sensors
        started = now_iso()
        # On a phone the closing probe rides in the benchmark's own shell: one round trip.
        shell_then = getattr(dev, "shell_then", None) if sensors.has_dumpsys else None
        after_text: str | None = None
        with Sampler(lambda: probes.sample(dev, sensors, process_name=match),
                     hz=self.t.sampler_hz if sensors.zones or sensors.cpus or
                     sensors.has_dumpsys or match else 0.0) as sampler:
            if callable(shell_then):
                result, after_text = shell_then(argv, probes.tick_script(sensors),
                                                timeout_s=params.timeout_s)
            else:
                result = dev.shell(argv, timeout_s=params.timeout_s)
        ended = now_iso()
        after = (probes.parse_tick(after_text, sensors) if after_text is not None
                 else probes.sample(dev, sensors))
        self._last_probe = (self.monotonic(), after)
        series = summarize(before, after, sampler.points)
        self.stats.benchmark_s += result.duration_s
        parsed = parse_output(result.output, exit_code=result.returncode).to_dict()
        if result.timed_out:
            status, error = "failed", (f"timed out after {params.timeout_s:g} s; "
                                       "benchmark_model was killed")
        elif parsed.get("success") and result.returncode == 0:
            status, error = "ok", ""
        else:
            status = "failed"
            error = parsed.get("error") or f"benchmark_model exited {result.returncode}"
        flags = classify(parsed, delegate, result, before, after, gate_reason, series,
                         self.baseline.probe.freq_cap_ratio)
        return SampleRecord(
            run_id=self.run_id, case_id=case.case_id, device=case.device, model=case.model,
            quantization=case.quantization, delegate=case.delegate, threads=case.threads,
            repeat=rnd, round=rnd, position=pos, status=status, error=error, flags=flags,
            tainted=phase == "measure" and any(f in TAINTING_FLAGS for f in flags),
            cpu_mask=mask, exit_code=result.returncode, parsed=parsed,
            env=_env(before, after, wait_s, variant, self.t.binary, series, sampler),
            env_series={"before": before.to_dict(), "after": after.to_dict(),
                        "gate": gate_reason, "points": [p.to_dict() for p in sampler.points],
                        "sampler_errors": sampler.errors},
            started_at=started, ended_at=ended, duration_s=result.duration_s,
            argv=tuple(argv), raw_output=result.output, phase=phase,
            window_offset_s=window_offset_s)

    def run_sustained(self, case: Case, spec: SustainedSpec,
                      done: set[tuple[str, int]]) -> None:
        """Sustained mode: after the gate, back-to-back windows for spec.duration_s.

        Each window is its own benchmark_model process running for window_s; it is stored as a
        sample with phase "sustained" and repeat = window index. An interrupted sustained case
        cannot be resumed (the device has cooled since), so its missing windows are recorded
        as skipped with that reason.
        """
        n = windows_of(spec)
        have = sum(1 for w in range(n) if (case.case_id, w) in done)
        if have == n:
            return
        if have:
            self._abandon([(w, 0, case) for w in range(n) if (case.case_id, w) not in done],
                          "sustained run was interrupted; windows cannot be resumed after the "
                          "device cooled down (start a new run)", phase="sustained")
            return
        gate = self.wait_cool()
        start = self.monotonic()
        start_uptime = gate[2].uptime_s
        for w in range(n):
            if self.stop.is_set():
                self.stats.interrupted = True
                return
            params = replace(self.params, num_runs=1, min_secs=spec.window_s,
                             max_secs=max(spec.window_s * 2, spec.window_s + 5),
                             warmup_runs=self.params.warmup_runs if w == 0 else 1,
                             warmup_min_secs=self.params.warmup_min_secs if w == 0 else 0.0,
                             timeout_s=max(self.params.timeout_s, spec.window_s * 3 + 30))
            self.emit(kind="sample_started", case=case,
                      message=f"{case.label()} sustained window {w + 1}/{n}")
            # Offsets in the device's own time (/proc/uptime) where it tells us; else ours.
            now_uptime = gate[2].uptime_s
            offset = (now_uptime - start_uptime
                      if now_uptime is not None and start_uptime is not None
                      else self.monotonic() - start)
            try:
                record = self.run_sample(w, 0, case, phase="sustained", params=params,
                                         gate=gate, window_offset_s=offset)
            except DeviceError as e:
                self.stats.errors.append(str(e))
                self.store.append(self._device_failure(w, 0, case, e, phase="sustained"))
                self._abandon([(x, 0, case) for x in range(w + 1, n)],
                              f"sustained run stopped by a device error: {e}",
                              phase="sustained")
                return
            self._store(record, case)
            # the next window starts at once; its "before" is this window's closing reading
            last, self._last_probe = self._last_probe, None
            gate = (0.0, SUSTAINED_GATE, last[1] if last else gate[2])

    def _store(self, record: SampleRecord, case: Case) -> None:
        self.store.append(record)  # committed before the next sample starts
        if record.status == "ok":
            self.stats.samples_ok += 1
        else:
            self.stats.samples_failed += 1
        n, eta = self.progress.tick()
        self.emit(kind="sample_finished", case=case, index=n, status=record.status,
                  eta_s=eta, message=record.error)

    def _device_failure(self, rnd: int, pos: int, case: Case, e: DeviceError,
                        phase: str = "measure") -> SampleRecord:
        return SampleRecord(
            run_id=self.run_id, case_id=case.case_id, device=case.device,
            model=case.model, quantization=case.quantization, delegate=case.delegate,
            threads=case.threads, repeat=rnd, round=rnd, position=pos, status="failed",
            error=f"device error: {e}", started_at=now_iso(), ended_at=now_iso(), phase=phase)

    def run(self, planned: Sequence[PlannedCase], order: Sequence[tuple[int, int, Case]],
            done: set[tuple[str, int]],
            sustained: Sequence[tuple[Case, SustainedSpec]] = ()) -> RunStats:
        """Stage, then run this device's scheduled samples, then its sustained cases.

        Failures become records. After a device error the worker backs off (1, 2, 4 ... s,
        capped) and reconnects before the next sample; after MAX_CONSECUTIVE_DEVICE_ERRORS in
        a row the device is quarantined and its remaining cases are recorded as skipped.
        """
        for p in planned:
            if p.skip_reason and (p.case.case_id, 0) not in done:
                self.record_unrunnable(p)
                self.progress.tick()
        todo = [(r, pos, c) for r, pos, c in order if (c.case_id, r) not in done]
        sus = [(c, spec) for c, spec in sustained
               if any((c.case_id, w) not in done for w in range(windows_of(spec)))]
        runnable = [p.case for p in planned if not p.skip_reason]
        try:
            self.stage([c for _, _, c in todo] + [c for c, _ in sus] +
                       (runnable if self.fidelity.enabled else []))
        except (DeviceError, BenchmarkError) as e:
            reason = f"could not prepare the device: {e}"
            self._abandon(todo, reason)
            self._abandon_sustained(sus, done, reason)
            self.release()
            return self.stats
        try:
            if self.fidelity.enabled:
                self.check_fidelity(runnable)
            quarantine = self._run_measure(todo)
            if not quarantine and self.adaptive.max_repeats:
                quarantine = self.run_adaptive(runnable)
            if quarantine:
                self._abandon_sustained(sus, done, quarantine)
            else:
                for case, spec in sus:
                    if self.stop.is_set():
                        self.stats.interrupted = True
                        break
                    self.run_sustained(case, spec, done)
        finally:
            self.release()
        return self.stats

    def undecided(self, cases: Sequence[Case]) -> list[Case]:
        """Cases whose speedup over their baseline quantization is still unresolved (both
        sides of each such pair), and that have rounds left in the budget."""
        from farm.analysis import needs_more_samples

        spec = self.adaptive
        lat = self.store.round_latencies(self.run_id, self.serial)
        base_of = {(c.model, c.delegate, c.threads): c for c in cases
                   if c.quantization == spec.baseline}
        out: dict[str, Case] = {}
        for c in cases:
            b = base_of.get((c.model, c.delegate, c.threads))
            if b is None or c.quantization == spec.baseline:
                continue
            rounds = sorted(set(lat.get(c.case_id, {})) | set(lat.get(b.case_id, {})))
            if max(self.rounds_run.get(c.case_id, 0),
                   self.rounds_run.get(b.case_id, 0)) >= spec.max_repeats:
                continue
            bl = [lat.get(b.case_id, {}).get(r, math.nan) for r in rounds]
            vl = [lat.get(c.case_id, {}).get(r, math.nan) for r in rounds]
            if needs_more_samples(bl, vl, spec.level, max_pairs=spec.max_repeats):
                out[c.case_id] = c
                out[b.case_id] = b
        return sorted(out.values(), key=lambda c: c.case_id)

    def run_adaptive(self, cases: Sequence[Case]) -> str:
        """Adaptive repeats: add interleaved rounds of the unresolved pairs until each pair's
        CI excludes 1 or reaches adaptive.max_repeats rounds. Returns a quarantine reason."""
        import random

        done_rounds = self.store.done_keys(self.run_id)
        for c in cases:
            self.rounds_run[c.case_id] = sum(1 for cid, _ in done_rounds if cid == c.case_id)
        rnd = max((r for cid, r in done_rounds if any(c.case_id == cid for c in cases)),
                  default=-1) + 1
        while not self.stop.is_set():
            more = self.undecided(cases)
            if not more:
                return ""
            order = list(more)
            random.Random(self.seed * 1_000_003 + rnd).shuffle(order)
            self.progress.add(len(order))
            self.emit(kind="gate", message=f"adaptive round {rnd + 1}: {len(order)} cases "
                                           "still undecided")
            quarantine = self._run_measure([(rnd, pos, c) for pos, c in enumerate(order)])
            for c in order:
                self.rounds_run[c.case_id] = self.rounds_run.get(c.case_id, 0) + 1
            if quarantine:
                return quarantine
            rnd += 1
        self.stats.interrupted = True
        return ""

    def check_fidelity(self, cases: Sequence[Case]) -> None:
        """Output fidelity of every variant x delegate (farm.fidelity), once per run: cases
        that already have a row (a resumed run) are not measured again."""
        from farm import fidelity

        have = {(r["model"], r["quantization"], r["delegate"])
                for r in self.store.fidelity(self.run_id) if r["device"] == self.serial}
        todo = [c for c in cases if (c.model, c.quantization, c.delegate) not in have]
        if not todo:
            return
        self.emit(kind="gate", message=f"output fidelity: {len(todo)} cases")
        try:
            rows = fidelity.measure_cases(
                self.t.device, self.binary_argv, self.remote_models, todo, self.variants,
                self.delegates, self.fidelity, self.references, run_id=self.run_id,
                timeout_s=self.params.timeout_s, stop=self.stop.is_set)
        except DeviceError as e:
            self.stats.errors.append(f"output fidelity: {e}")
            return
        self.store.add_fidelity(rows)

    def _run_measure(self, todo: Sequence[tuple[int, int, Case]]) -> str:
        """The interleaved samples; returns the quarantine reason if the device was dropped."""
        consecutive = 0
        for i, (rnd, pos, case) in enumerate(todo):
            if self.stop.is_set():
                self.stats.interrupted = True
                return ""
            if consecutive:
                self._recover(consecutive)
            self.emit(kind="sample_started", case=case, message=case.label())
            try:
                record = self.run_sample(rnd, pos, case)
                consecutive = 0
            except DeviceError as e:
                consecutive += 1
                self.stats.errors.append(str(e))
                record = self._device_failure(rnd, pos, case, e)
                self.emit(kind="device_error", case=case, message=str(e))
            except Exception as e:  # noqa: BLE001 - a transport bug must not lose the night
                log.exception("%s: unexpected error in a sample", self.serial)
                consecutive += 1
                err = DeviceError(self.serial, "sample", f"unexpected {type(e).__name__}: {e}")
                self.stats.errors.append(str(err))
                record = self._device_failure(rnd, pos, case, err)
                self.emit(kind="device_error", case=case, message=str(err))
            self._store(record, case)
            if consecutive >= MAX_CONSECUTIVE_DEVICE_ERRORS:
                reason = (f"device quarantined after {consecutive} consecutive device errors: "
                          f"{record.error.removeprefix('device error: ')}")
                self._abandon(todo[i + 1:], reason)
                return reason
        return ""

    def _recover(self, attempt: int) -> None:
        """Back off after a device error, then ask the device to reconnect if it can."""
        delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (attempt - 1))
        self.emit(kind="gate", message=f"device error; retrying in {delay:g} s")
        if self.stop.wait(delay):
            return
        reconnect = getattr(self.t.device, "reconnect", None)
        if callable(reconnect):
            try:
                reconnect()
            except DeviceError as e:
                log.info("%s: reconnect failed: %s", self.serial, e)

    def release(self) -> None:
        """Give the device back (its farm lock), best effort."""
        unlock = getattr(self.t.device, "unlock", None)
        if callable(unlock):
            try:
                unlock()
            except DeviceError as e:
                log.warning("%s: could not release the device lock: %s", self.serial, e)

    def _abandon(self, todo: Sequence[tuple[int, int, Case]], reason: str,
                 phase: str = "measure") -> None:
        self.stats.errors.append(reason)
        for rnd, pos, case in todo:
            self.store.append(SampleRecord(
                run_id=self.run_id, case_id=case.case_id, device=case.device, model=case.model,
                quantization=case.quantization, delegate=case.delegate, threads=case.threads,
                repeat=rnd, round=rnd, position=pos, status="skipped", error=reason,
                started_at=now_iso(), ended_at=now_iso(), phase=phase))
            self.stats.samples_skipped += 1
            self.progress.tick()

    def abandon_rest(self, work: tuple[Any, ...], reason: str) -> None:
        """After this worker crashed: record every sample it did not store as skipped with the
        reason, so nothing planned is silently missing."""
        order, sus = work
        self.stats.errors.append(f"{self.serial}: {reason}")
        done = self.store.done_keys(self.run_id)
        self._abandon([(r, pos, c) for r, pos, c in order if (c.case_id, r) not in done],
                      reason)
        self._abandon_sustained(sus, done, reason)
        self.release()

    def _abandon_sustained(self, sus: Sequence[tuple[Case, SustainedSpec]],
                           done: set[tuple[str, int]], reason: str) -> None:
        for case, spec in sus:
            self._abandon([(w, 0, case) for w in range(windows_of(spec))
                           if (case.case_id, w) not in done], reason, phase="sustained")


def windows_of(spec: SustainedSpec) -> int:
    """How many windows a sustained case runs."""
    return max(1, math.ceil(spec.duration_s / spec.window_s - 1e-9))


def _fmt_temp(t: float | None) -> str:
    return "no sensors" if t is None else f"{t:.1f} °C"


def run(targets: Sequence[DeviceTarget], planned: Sequence[PlannedCase],
        order: Sequence[tuple[int, int, Case]], *, run_id: str, store: Store,
        params: RunParams, delegates: Mapping[str, DelegateSpec],
        variants: Mapping[tuple[str, str], ModelVariant],
        on_event: Callable[[Event], None] | None = None,
        stop: threading.Event | None = None,
        sustained: Sequence[tuple[Case, SustainedSpec]] = (),
        fidelity: FidelitySpec | None = None,
        references: Mapping[str, Any] | None = None,
        adaptive: AdaptiveSpec | None = None, seed: int = 0) -> RunStats:
    """Run every device in parallel (one thread each); return the combined stats.

    A bug in one device's worker is logged and recorded in the stats; the other devices go
    on (the missing samples can be run with --resume).
    """
    on_event = on_event or (lambda e: None)
    stop = stop or threading.Event()
    done = store.done_keys(run_id)
    total = sum(1 for r, _, c in order if (c.case_id, r) not in done) + sum(
        1 for p in planned if p.skip_reason and (p.case.case_id, 0) not in done) + sum(
        1 for c, spec in sustained for w in range(windows_of(spec))
        if (c.case_id, w) not in done)
    progress = _Progress(total, on_event)
    on_event(Event(kind="run_started", total=total, message=run_id))
    start = time.monotonic()
    workers = [DeviceWorker(t, run_id=run_id, store=store, params=params, delegates=delegates,
                            variants=variants, progress=progress, stop=stop, fidelity=fidelity,
                            references=references, adaptive=adaptive, seed=seed)
               for t in targets]
    stats = RunStats()
    try:
        with ThreadPoolExecutor(max_workers=max(1, len(workers)),
                                thread_name_prefix="farm-device") as pool:
            futures = []
            my_work: dict[str, tuple[Any, ...]] = {}
            for w in workers:
                mine = [p for p in planned if p.case.device == w.serial]
                my_order = [o for o in order if o[2].device == w.serial]
                my_sus = [(c, spec) for c, spec in sustained if c.device == w.serial]
                my_work[w.serial] = (my_order, my_sus)
                futures.append(pool.submit(w.run, mine, my_order, done, my_sus))
            try:
                for w, f in zip(workers, futures, strict=True):
                    while True:
                        try:
                            f.result(timeout=0.5)
                            break
                        except TimeoutError:
                            continue
                        except Exception as e:  # noqa: BLE001 - one device's bug stops only it
                            log.exception("%s: worker failed", w.serial)
                            w.abandon_rest(my_work[w.serial], f"internal error: {e!r}")
                            break
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
    total = progress.total  # adaptive rounds may have added work
    on_event(Event(kind="run_finished", total=total, index=total,
                   message=f"{stats.samples_ok} ok, {stats.samples_failed} failed, "
                           f"{stats.samples_skipped} skipped"))
    return stats
