"""Synthetic runs for the analysis and report tests: a samples frame shaped like the store's.

Pure and deterministic (seeded numpy); writes nothing. Latencies follow a simple multiplicative
model (model × device × quantization × delegate × threads × per-round drift × lognormal noise), so
the tests know which configuration should come out fastest without reading the code under test.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from farm.devices import CpuCluster, DeviceInfo
from farm.report import ReportData
from farm.sim.profiles import load_profile, thread_speed
from farm.sim.thermal import Load, ManualClock, ThermalModel
from farm.store import ENV_COLUMNS, PARSED_COLUMNS, SampleRecord, Store

SAMPLE_COLUMNS: tuple[str, ...] = (
    "run_id", "sample_id", "case_id", "device", "device_label", "simulated", "tier", "model",
    "quantization", "delegate", "threads", "repeat", "round", "position", "status", "error",
    "flags", "tainted", "cpu_mask",
    "success", "format", "init_us", "first_inference_us", "warmup_avg_us", "warmup_count",
    "inference_avg_us", "count", "first_us", "curr_us", "min_us", "max_us", "avg_us", "std_us",
    "p5_us", "median_us", "p95_us", "mem_init_mb", "mem_overall_mb", "peak_mem_mb", "vmrss_mb",
    "model_size_mb", "delegate_applied", "delegation", "delegate_kernels", "delegated_nodes",
    "total_nodes", "partitions", "default_xnnpack",
    "variant_sha256", "variant_size_bytes", "binary_sha256", "temp_before_c", "temp_after_c",
    "temp_max_c", "thermal_status_before", "thermal_status_after", "battery_level", "charging",
    "freq_cap_ratio", "cooldown_wait_s", "started_at", "ended_at", "duration_s",
    # schema v2
    "phase", "window_offset_s", "thermal_status_max", "charging_before", "charging_after",
    "vmhwm_mb", "vmrss_max_mb", "sampler_points", "sampler_cost_s", "battery_temp_c",
)

EVIL = "<script>alert(1)</script>"

REAL_DEVICE = DeviceInfo(
    serial="R58M40ABCDE", kind="adb", simulated=False, manufacturer="samsung", model="SM-G991B",
    soc="exynos2100", abis=("arm64-v8a", "armeabi-v7a"), android_release="14", sdk=34,
    fingerprint="samsung/o1sxeea/o1s:14/UP1A.231005.007/G991BXXSHGXA1:user/release-keys",
    cpu_name="ARMv8 Processor", cpu_count=8,
    clusters=(CpuCluster((0, 1, 2, 3), 2_208_000), CpuCluster((4, 5, 6), 2_803_200),
              CpuCluster((7,), 2_912_000)),
    ram_mb=7_680, thermal_zones=("AP", "BAT", "SKIN"), has_gpu=True, has_nnapi=True,
)

SIM_DEVICE = DeviceInfo(
    serial="emulator-5554", kind="adb", simulated=True, manufacturer="Simcorp",
    model=f"Phone {EVIL}", soc="sim-soc", abis=("arm64-v8a",), android_release="13", sdk=33,
    fingerprint=f"sim/phone/{EVIL}:13/TQ3A/1:user/test-keys", cpu_name="simulated",
    cpu_count=4, clusters=(CpuCluster((0, 1, 2, 3), 1_800_000),), ram_mb=4_096,
    thermal_zones=("cpu-0",), has_gpu=True, has_nnapi=False,
)

MODEL_BASE_US = {"mobilenet": 20_000.0, "tiny": 2_000.0}
DEVICE_FACTOR = {REAL_DEVICE.serial: 1.0, SIM_DEVICE.serial: 1.8}
QUANT_FACTOR = {"xnnpack": {"fp32": 1.0, "fp16": 0.97, "int8": 0.5, "dynamic": 0.8},
                "gpu": {"fp32": 0.4, "fp16": 0.3, "int8": 0.4, "dynamic": 0.4},
                "cpu": {"fp32": 1.3, "fp16": 1.3, "int8": 0.7, "dynamic": 1.0}}
THREAD_FACTOR = {1: 1.0, 2: 0.6, 4: 0.4}


def device_dict(info: DeviceInfo, tier: str) -> dict[str, Any]:
    """A devices row as the store gives it: DeviceInfo.to_dict() + tier + simulated."""
    return {**info.to_dict(), "tier": tier, "simulated": info.simulated, "label": info.label}


def make_samples(
    *,
    devices: Sequence[tuple[DeviceInfo, str]] = ((REAL_DEVICE, "high"), (SIM_DEVICE, "mid")),
    models: Sequence[str] = ("mobilenet", "tiny"),
    quantizations: Sequence[str] = ("fp32", "fp16", "int8"),
    delegates: Sequence[str] = ("xnnpack", "gpu"),
    threads: Sequence[int] = (1, 4),
    repeats: int = 4,
    seed: int = 0,
    not_applied: Sequence[tuple[str, str]] = ((SIM_DEVICE.serial, "gpu"),),
    failed: Mapping[tuple[str, str, str], str] | None = None,
    skipped_rounds: Mapping[str, int] | None = None,
    tainted_rounds: Mapping[str, int] | None = None,
    noise: float = 0.03,
    run_id: str = "20260101-000000-abcd",
) -> pd.DataFrame:
    """A samples frame for a whole synthetic run.

    not_applied: (serial, delegate) pairs whose delegate silently did not apply (CPU latency).
    failed: (serial, delegate, quantization) → error; every sample of those cases fails.
    skipped_rounds: serial → first round from which that device's samples are skipped (lost).
    tainted_rounds: serial → a round whose samples are all throttled and tainted.
    """
    if failed is None:
        failed = {(REAL_DEVICE.serial, "gpu", "int8"):
                  "Failed to apply GPU delegate: Node number 3 (CONV_2D) failed to prepare."}
    skipped_rounds = ({SIM_DEVICE.serial: repeats} if skipped_rounds is None
                      else dict(skipped_rounds))
    tainted_rounds = {REAL_DEVICE.serial: 2} if tainted_rounds is None else dict(tainted_rounds)
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    sample_id = 0
    for info, tier in devices:
        cases = [(m, q, d, t) for m in models for q in quantizations for d in delegates
                 for t in threads]
        label = info.label
        for rnd in range(1, repeats + 1):
            drift = float(rng.lognormal(0.0, noise))  # shared by every case in the round
            order = rng.permutation(len(cases))
            for position, idx in enumerate(order):
                model, quant, delegate, nthreads = cases[idx]
                sample_id += 1
                applied = (info.serial, delegate) not in not_applied
                factor_delegate = delegate if applied else "cpu"
                latency = (MODEL_BASE_US[model] * DEVICE_FACTOR.get(info.serial, 1.0)
                           * QUANT_FACTOR[factor_delegate][quant]
                           * (THREAD_FACTOR[nthreads] if factor_delegate != "gpu" else 1.0)
                           * drift * float(rng.lognormal(0.0, noise)))
                row = _blank_row()
                row.update(
                    run_id=run_id, sample_id=sample_id,
                    case_id=f"{info.serial}:{model}:{quant}:{delegate}:{nthreads}",
                    device=info.serial, device_label=label, simulated=info.simulated, tier=tier,
                    model=model, quantization=quant, delegate=delegate, threads=nthreads,
                    repeat=rnd, round=rnd, position=position, status="ok", error="",
                    flags="", tainted=False, cpu_mask="f0", success=True, format="2.x",
                    variant_sha256=f"sha-{model}-{quant}",
                    variant_size_bytes=int(MODEL_BASE_US[model] * 700
                                           * (0.25 if quant == "int8" else
                                              0.5 if quant == "fp16" else 1.0)),
                    binary_sha256="bin-sha", started_at=f"2026-01-01T00:{rnd:02d}:00",
                    ended_at=f"2026-01-01T00:{rnd:02d}:30", duration_s=30.0,
                )
                key = (info.serial, delegate, quant)
                if rnd >= skipped_rounds.get(info.serial, repeats + 1):
                    row.update(status="skipped", error="device lost: adb connection reset",
                               success=False)
                elif key in failed:
                    row.update(status="failed", error=failed[key], success=False,
                               delegation="failed", flags="delegate_failed")
                else:
                    row.update(_measurement(latency, model, quant, delegate, applied, rng))
                    if rnd == tainted_rounds.get(info.serial):
                        row.update(flags=_join(row["flags"], "throttled"), tainted=True,
                                   thermal_status_after=2, temp_after_c=48.0,
                                   thermal_status_max=2, freq_cap_ratio=0.7)
                rows.append(row)
    return pd.DataFrame(rows, columns=list(SAMPLE_COLUMNS))


def make_variants(models: Sequence[str] = ("mobilenet", "tiny"),
                  quantizations: Sequence[str] = ("fp32", "fp16", "int8"),
                  *, random_calibration: bool = True) -> pd.DataFrame:
    """The variants frame: every (model, quantization) converted, plus one failed conversion."""
    rows = []
    for model in models:
        for quant in quantizations:
            calibration = ""
            if quant == "int8":
                calibration = "random (explicit)" if random_calibration else "images:/data/cal"
            rows.append({"model": model, "quantization": quant, "status": "ok",
                         "sha256": f"sha-{model}-{quant}",
                         "size_bytes": int(MODEL_BASE_US[model] * 700),
                         "conversion_s": 1.5, "cached": quant == "fp32",
                         "calibration": calibration, "error": ""})
    rows.append({"model": models[0], "quantization": "int16x8", "status": "failed", "sha256": "",
                 "size_bytes": 0, "conversion_s": 0.2, "cached": False, "calibration": "",
                 "error": "ConversionError: int16x8 needs a representative dataset"})
    return pd.DataFrame(rows)


def make_report_data(samples: pd.DataFrame | None = None, *, random_calibration: bool = True,
                     status: str = "finished",
                     devices: Sequence[tuple[DeviceInfo, str]] = ((REAL_DEVICE, "high"),
                                                                  (SIM_DEVICE, "mid")),
                     ) -> ReportData:
    """A whole ReportData for the synthetic run (or for the given samples)."""
    if samples is None:
        samples = make_samples(devices=devices)
    run = {
        "run_id": "20260101-000000-abcd", "sweep_file": "examples/sweep.yaml",
        "sweep_sha256": "5" * 64, "started_at": "2026-01-01T00:00:00",
        "ended_at": "2026-01-01T00:10:00", "farm_version": "0.1.0", "tf_version": "2.21.0",
        "litert_version": "2.3.0", "host": "lab-host-1", "git_sha": "bbe22c3",
        "calibration": "random (explicit)" if random_calibration else
        "images:/data/cal (RGB, bilinear, crop 0.875, mean/std 127.5)",
        "status": status,
    }
    return ReportData(run=run, devices=[device_dict(i, t) for i, t in devices],
                      variants=make_variants(random_calibration=random_calibration),
                      samples=samples)


def empty_samples() -> pd.DataFrame:
    """A samples frame with every column and no rows (a run that measured nothing yet)."""
    return pd.DataFrame({c: pd.Series(dtype=object) for c in SAMPLE_COLUMNS})


def _blank_row() -> dict[str, Any]:
    return dict.fromkeys(SAMPLE_COLUMNS, math.nan) | {
        "error": "", "flags": "", "delegate_applied": "", "delegation": "", "cpu_mask": "",
        "format": "", "default_xnnpack": False, "phase": "measure",
    }


def _join(flags: str, flag: str) -> str:
    return f"{flags},{flag}" if flags else flag


def _measurement(latency: float, model: str, quant: str, delegate: str, applied: bool,
                 rng: np.random.Generator) -> dict[str, Any]:
    """The parser's fields for one successful process."""
    total = 64 if model == "mobilenet" else 12
    out: dict[str, Any] = {
        "inference_avg_us": latency, "avg_us": latency, "count": 50,
        "init_us": latency * (40 if delegate == "gpu" else 3), "first_inference_us": latency * 1.6,
        "warmup_avg_us": latency * 1.1, "warmup_count": 3, "std_us": latency * 0.05,
        "min_us": latency * 0.9, "max_us": latency * 1.3, "median_us": latency,
        "p5_us": latency * 0.92, "p95_us": latency * 1.2, "first_us": latency * 1.4,
        "curr_us": latency,
        "mem_init_mb": 10.0, "mem_overall_mb": 30.0 + rng.uniform(0, 2),
        "peak_mem_mb": 40.0 + rng.uniform(0, 2), "vmrss_mb": 45.0,
        "model_size_mb": MODEL_BASE_US[model] * 700 / 1e6, "total_nodes": total,
        "temp_before_c": 31.0, "temp_after_c": 34.0, "temp_max_c": 34.5,
        "thermal_status_before": 0, "thermal_status_after": 0, "battery_level": 80,
        "charging": False, "freq_cap_ratio": 1.0, "cooldown_wait_s": 2.0,
        "thermal_status_max": 0, "charging_before": "discharging",
        "charging_after": "discharging", "battery_temp_c": 29.0,
        "sampler_points": 30, "sampler_cost_s": 0.3,
    }
    out["vmhwm_mb"] = out["peak_mem_mb"] + 6.0
    out["vmrss_max_mb"] = out["peak_mem_mb"] + 4.0
    provider = {"xnnpack": "XNNPACK", "gpu": "GPU"}.get(delegate, "")
    if not provider:
        return out
    if applied:
        out.update(delegate_applied=provider, delegation="full", delegate_kernels=1,
                   delegated_nodes=total, partitions=1)
    else:
        out.update(delegate_applied="", delegation="none", delegate_kernels=0,
                   delegated_nodes=0, partitions=0, flags="delegate_not_applied")
    return out


# --- schema v2: sustained windows, fidelity, history, scale ----------------------------------


@dataclass(frozen=True, slots=True)
class ThermalTrace:
    """Sustained windows computed from the simulator's thermal model, with the fine-step truth.

    windows: one dict per window (offset_s, latency_us, temps, statuses, freq_cap_ratio, the
    sampler `points`); steps: (t_s, latency_us) every `step_s`, the continuous truth.
    """

    windows: tuple[dict[str, Any], ...]
    steps: tuple[tuple[float, float], ...]

    def series(self, first_sample_id: int = 100_000) -> dict[int, dict[str, Any]]:
        """sample_id -> env_json["series"], numbered as sustained_frame numbers the windows."""
        return {first_sample_id + w["window"]: {"points": w["points"]} for w in self.windows}

    def truth_onset_s(self, threshold: float) -> float | None:
        """The first instant the latency exceeds the cool latency by more than `threshold`."""
        peak = self.steps[0][1]
        return next((t for t, lat in self.steps if lat > peak * (1.0 + threshold)), None)


def thermal_windows(profile: str = "flagship", *, threads: int | None = None,
                    duration_s: float = 120.0, window_s: float = 5.0, base_us: float = 10_000.0,
                    step_s: float = 0.5, start_temp_c: float | None = None) -> ThermalTrace:
    """Back-to-back windows of a workload keeping `threads` of the fastest cores busy (all when
    None) on a simulated profile. Latency scales as the simulator's performance model does
    (`thread_speed` under the thermal cap).
    """
    prof = load_profile(profile)
    clock = ManualClock()
    model = ThermalModel(prof, clock, start_temp_c=start_temp_c)
    n = prof.cpu.cpu_count if threads is None else threads
    speeds = sorted(range(prof.cpu.cpu_count),
                    key=lambda c: -prof.cpu.cluster_of(c).rel_speed
                    * prof.cpu.cluster_of(c).max_freq_khz)
    model.add_load(Load(cpus=tuple(speeds[:n])))
    cool_speed = thread_speed(prof.cpu, n)
    firsts = [c.cpus[0] for c in prof.cpu.clusters]
    steps: list[tuple[float, float]] = []
    windows: list[dict[str, Any]] = []
    per_window = max(1, round(window_s / step_s))
    for w in range(int(duration_s // window_s)):
        snap = model.snapshot()
        start = {"t": snap.t_s, "temp": snap.soc_c, "status": snap.status}
        lats, temps, statuses, caps, points = [], [], [], [], []
        for i in range(per_window):
            snap = model.snapshot()
            lat = base_us * cool_speed / thread_speed(prof.cpu, n, cap=snap.cap_fraction)
            steps.append((round(snap.t_s, 6), lat))
            lats.append(lat)
            temps.append(snap.soc_c)
            statuses.append(snap.status)
            caps.append(snap.cap_fraction)
            if i % max(1, round(1.0 / step_s)) == 0:  # the sampler's 1 Hz points
                points.append({
                    "t_s": round(snap.t_s - start["t"], 6),
                    "temps_c": {z: round(t, 3) for z, _, t in snap.zones},
                    "thermal_status": snap.status,
                    "cur_freq_khz": [model.scaling_cur_freq_khz(c) for c in firsts],
                    "max_freq_khz": [prof.cpu.cluster_of(c).max_freq_khz for c in firsts],
                })
            clock.advance(step_s)
        end = model.snapshot()
        windows.append({
            "window": w, "offset_s": round(start["t"], 6), "latency_us": float(np.mean(lats)),
            "temp_before_c": start["temp"], "temp_after_c": end.soc_c,
            "temp_max_c": max(temps + [end.soc_c]), "thermal_status_before": start["status"],
            "thermal_status_after": end.status, "thermal_status_max": max(statuses),
            "freq_cap_ratio": min(caps), "duration_s": window_s, "points": points,
        })
    return ThermalTrace(tuple(windows), tuple(steps))


def sustained_frame(trace: ThermalTrace, *, info: DeviceInfo = REAL_DEVICE, tier: str = "high",
                    model: str = "mobilenet", quantization: str = "fp32",
                    delegate: str = "xnnpack", threads: int = 4, first_sample_id: int = 100_000,
                    run_id: str = "20260101-000000-abcd",
                    failed_windows: Sequence[int] = ()) -> pd.DataFrame:
    """The sustained rows of one device x configuration, shaped like the store's samples."""
    rows = []
    for w in trace.windows:
        row = _blank_row()
        failed = w["window"] in failed_windows
        row.update(
            run_id=run_id, sample_id=first_sample_id + w["window"],
            case_id=f"sustained:{info.serial}:{model}:{quantization}:{delegate}:{threads}",
            device=info.serial, device_label=info.label, simulated=info.simulated, tier=tier,
            model=model, quantization=quantization, delegate=delegate, threads=threads,
            repeat=w["window"], round=0, position=0, phase="sustained",
            window_offset_s=w["offset_s"], status="failed" if failed else "ok",
            error="Benchmarking failed." if failed else "", success=not failed,
            tainted=False, flags="throttled" if w["thermal_status_max"] >= 1 else "",
            duration_s=w["duration_s"], sampler_points=len(w["points"]),
            sampler_cost_s=0.01 * len(w["points"]),
            **{k: w[k] for k in ("temp_before_c", "temp_after_c", "temp_max_c",
                                 "thermal_status_before", "thermal_status_after",
                                 "thermal_status_max", "freq_cap_ratio")},
        )
        if not failed:
            lat = w["latency_us"]
            row.update(avg_us=lat, inference_avg_us=lat, median_us=lat, count=100,
                       peak_mem_mb=41.0, vmhwm_mb=47.0, vmrss_max_mb=45.0)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(SAMPLE_COLUMNS))


def sustained_sweep_json(*, duration_s: float = 120.0, window_s: float = 5.0,
                         onset_threshold: float = 0.10, tail_windows: int = 3) -> str:
    """A sweep_json whose one sustained rule matches every case."""
    return json.dumps({"sustained": [{
        "match": {}, "duration_s": duration_s, "window_s": window_s,
        "onset_threshold": onset_threshold, "tail_windows": tail_windows}],
        "cooldown_mode": "closed_loop", "cooldown_delta_c": 3.0, "cooldown_timeout_s": 120.0})


def make_fidelity(samples: pd.DataFrame, *,
                  wrong: Sequence[tuple[str, str, str, str, int]] = (
                      (REAL_DEVICE.serial, "tiny", "int8", "xnnpack", 4),),
                  run_id: str = "20260101-000000-abcd") -> pd.DataFrame:
    """Fidelity rows (the store's table) for every measured case; `wrong` keys are outside
    tolerance (device, model, quantization, delegate, threads)."""
    keys = samples.loc[samples["phase"].fillna("measure") == "measure",
                       ["device", "model", "quantization", "delegate", "threads"]]
    rows = []
    for device, model, quant, delegate, threads in keys.drop_duplicates().itertuples(
            index=False):
        bad = (device, model, quant, delegate, int(threads)) in set(wrong)
        exact = quant == "fp32"
        rows.append({
            "run_id": run_id, "device": device, "model": model, "quantization": quant,
            "delegate": delegate, "threads": int(threads), "variant_sha256": f"sha-{model}-{quant}",
            "status": "ok", "error": "", "n_inputs": 4,
            "max_abs_error": 0.0 if exact else (0.9 if bad else 0.02),
            "mean_abs_error": 0.0 if exact else (0.3 if bad else 0.004),
            "cosine_min": 1.0 if exact else (0.61 if bad else 0.998),
            "cosine_mean": 1.0 if exact else (0.7 if bad else 0.999),
            "top1_agreement": 1.0 if not bad else 0.25,
            "top5_agreement": 1.0 if not bad else 0.5,
            "within_tolerance": 0 if bad else 1,
            "tolerance_json": json.dumps({"min_cosine": 0.99}), "details_json": "{}",
            "created_at": "2026-01-01T00:11:00"})
    return pd.DataFrame(rows)


def make_history(runs: int = 4, *, seed: int = 7, **kwargs: Any) -> pd.DataFrame:
    """Samples of `runs` nights of the same sweep (one run a day from 2025-12-01)."""
    frames = []
    for i in range(runs):
        day = date(2025, 12, 1) + timedelta(days=i)
        run_id = f"{day:%Y%m%d}-000000-hist"
        frame = make_samples(seed=seed + i, run_id=run_id, **kwargs)
        frame["started_at"] = f"{day.isoformat()}T00:00:00"
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def make_scale_samples(n_samples: int = 100_000, *, n_devices: int = 8,
                       models: Sequence[str] = ("mobilenet", "tiny"),
                       quantizations: Sequence[str] = ("fp32", "fp16", "dynamic", "int8"),
                       delegates: Sequence[str] = ("xnnpack", "cpu"),
                       threads: Sequence[int] = (1, 4), tainted_fraction: float = 0.03,
                       failed_fraction: float = 0.01, seed: int = 0,
                       run_id: str = "20260101-000000-scale") -> pd.DataFrame:
    """A large measure-phase samples frame, built column-wise (seconds, not minutes, at 100k):
    n_devices x models x quantizations x delegates x threads cases, repeats to reach n_samples,
    some tainted (throttled) and some failed samples. Latencies follow the make_samples model."""
    rng = np.random.default_rng(seed)
    cases = [(d, m, q, g, t) for d in range(n_devices) for m in models for q in quantizations
             for g in delegates for t in threads]
    repeats = max(1, -(-n_samples // len(cases)))
    idx = np.repeat(np.arange(len(cases)), repeats)[:n_samples]
    rnd = np.tile(np.arange(1, repeats + 1), len(cases))[:n_samples]
    dev = np.array([c[0] for c in cases])[idx]
    model = np.array([c[1] for c in cases], dtype=object)[idx]
    quant = np.array([c[2] for c in cases], dtype=object)[idx]
    deleg = np.array([c[3] for c in cases], dtype=object)[idx]
    thr = np.array([c[4] for c in cases])[idx]
    base = np.array([MODEL_BASE_US[c[1]] * (1 + 0.15 * c[0])
                     * QUANT_FACTOR[c[3]][c[2] if c[2] in QUANT_FACTOR[c[3]] else "fp32"]
                     * THREAD_FACTOR[c[4]] for c in cases])[idx]
    lat = base * rng.lognormal(0.0, 0.03, n_samples)
    n = n_samples
    tainted = rng.random(n) < tainted_fraction
    failed = rng.random(n) < failed_fraction
    serial = np.array([f"scale-{d:02d}" for d in range(n_devices)], dtype=object)[dev]
    frame = pd.DataFrame({
        "run_id": run_id, "sample_id": np.arange(1, n + 1), "device": serial,
        "device_label": np.array([f"Scale phone {d}" for d in range(n_devices)],
                                 dtype=object)[dev],
        "simulated": True, "tier": np.array(["high", "mid", "low"], dtype=object)[dev % 3],
        "model": model, "quantization": quant, "delegate": deleg, "threads": thr,
        "repeat": rnd, "round": rnd, "position": 0,
        "status": np.where(failed, "failed", "ok"),
        "error": np.where(failed, "Benchmarking failed.", ""),
        "flags": np.where(tainted & ~failed, "throttled", ""), "tainted": tainted & ~failed,
        "cpu_mask": "", "success": ~failed, "format": "2.x",
        "case_id": pd.Series(serial).str.cat([pd.Series(model), pd.Series(quant),
                                              pd.Series(deleg), pd.Series(thr).astype(str)],
                                             sep=":").to_numpy(),
    })
    ok_lat = np.where(failed, np.nan, lat)
    for col, factor in (("inference_avg_us", 1.0), ("avg_us", 1.0), ("median_us", 1.0),
                        ("min_us", 0.9), ("max_us", 1.3), ("std_us", 0.05), ("p5_us", 0.92),
                        ("p95_us", 1.2), ("first_us", 1.4), ("curr_us", 1.0),
                        ("init_us", 3.0), ("first_inference_us", 1.6), ("warmup_avg_us", 1.1)):
        frame[col] = ok_lat * factor
    frame["count"] = 50
    frame["warmup_count"] = 3
    mem = 40.0 + 2.0 * rng.random(n)
    frame["peak_mem_mb"] = np.where(failed, np.nan, mem)
    frame["mem_overall_mb"] = np.where(failed, np.nan, mem - 10.0)
    frame["vmhwm_mb"] = frame["peak_mem_mb"] + 6.0
    frame["vmrss_max_mb"] = frame["peak_mem_mb"] + 4.0
    frame["model_size_mb"] = np.array([MODEL_BASE_US[c[1]] * 700 / 1e6 for c in cases])[idx]
    frame["delegation"] = np.where(deleg == "xnnpack", "full", "")
    frame["delegate_applied"] = np.where(deleg == "xnnpack", "XNNPACK", "")
    frame["total_nodes"] = np.where(model == "mobilenet", 64, 12)
    frame["delegated_nodes"] = np.where(deleg == "xnnpack", frame["total_nodes"], 0)
    frame["partitions"] = np.where(deleg == "xnnpack", 1, 0)
    frame["default_xnnpack"] = False
    frame["variant_sha256"] = "sha-" + frame["model"] + "-" + frame["quantization"]
    frame["variant_size_bytes"] = (frame["model_size_mb"] * 1e6).astype(int)
    frame["binary_sha256"] = "bin-sha"
    frame["temp_before_c"] = 30.0 + 4.0 * rng.random(n) + np.where(tainted, 12.0, 0.0)
    frame["temp_after_c"] = frame["temp_before_c"] + 3.0
    frame["temp_max_c"] = frame["temp_after_c"] + 0.5
    frame["thermal_status_before"] = np.where(tainted, 1, 0)
    frame["thermal_status_after"] = np.where(tainted, 2, 0)
    frame["thermal_status_max"] = np.where(tainted, 2, 0)
    frame["battery_level"] = 80.0
    frame["battery_temp_c"] = 29.0
    frame["charging"] = False
    frame["charging_before"] = "discharging"
    frame["charging_after"] = "discharging"
    frame["freq_cap_ratio"] = np.where(tainted, 0.7, 1.0)
    frame["cooldown_wait_s"] = np.round(rng.exponential(8.0, n), 2)
    frame["sampler_points"] = 3
    frame["sampler_cost_s"] = 0.012
    frame["started_at"] = "2026-01-01T00:00:00"
    frame["ended_at"] = "2026-01-01T00:00:03"
    frame["duration_s"] = 3.0
    frame["phase"] = "measure"
    frame["window_offset_s"] = np.nan
    return frame[[c for c in SAMPLE_COLUMNS if c in frame.columns]]


def scale_devices(n_devices: int = 8) -> list[dict[str, Any]]:
    """The devices rows that go with make_scale_samples."""
    return [{"serial": f"scale-{d:02d}", "kind": "adb", "simulated": True,
             "manufacturer": "Scale", "model": f"phone {d}", "tier": ["high", "mid", "low"][d % 3]}
            for d in range(n_devices)]


def write_store(store: Store, data: ReportData,
                series: Mapping[int, Mapping[str, Any]] | None = None) -> None:
    """Write a ReportData into a Store the way the runner does (one append per sample, `series`
    by sample_id into env_json), so a test can load it back with the store's own readers."""
    run = dict(data.run)
    run_id = str(run.pop("run_id"))
    known = {"sweep_file", "sweep_sha256", "sweep_json", "started_at", "ended_at", "status",
             "farm_version",
             "tf_version", "litert_version", "host", "git_sha", "calibration", "seed", "repeats"}
    store.start_run(run_id, **{k: v for k, v in run.items() if k in known})
    for d in data.devices:
        store.add_device(run_id, d, tier=str(d.get("tier", "")))
    parsed_names = {n for n, _ in PARSED_COLUMNS}
    env_names = {n for n, _ in ENV_COLUMNS}
    for r in data.samples.to_dict("records"):
        def val(k: str, r: dict[str, Any] = r) -> Any:
            v = r.get(k)
            return None if v is None or (isinstance(v, float) and math.isnan(v)) else v
        store.append(SampleRecord(
            run_id=run_id, case_id=str(r["case_id"]), device=str(r["device"]),
            model=str(r["model"]), quantization=str(r["quantization"]),
            delegate=str(r["delegate"]), threads=int(r["threads"]), repeat=int(r["repeat"]),
            status=str(r["status"]), round=int(val("round") or 0),
            position=int(val("position") or 0), error=str(r.get("error") or ""),
            flags=tuple(f for f in str(r.get("flags") or "").split(",") if f),
            tainted=bool(val("tainted")), phase=str(val("phase") or "measure"),
            window_offset_s=val("window_offset_s"),
            parsed={k: val(k) for k in parsed_names if val(k) is not None},
            env={k: val(k) for k in env_names if val(k) is not None},
            env_series=dict((series or {}).get(int(r["sample_id"])) or {}),
            duration_s=val("duration_s"),
            started_at=str(r.get("started_at") or ""), ended_at=str(r.get("ended_at") or "")))
    if data.fidelity is not None and not data.fidelity.empty:
        store.add_fidelity(data.fidelity.to_dict("records"))


def make_v2_report_data(*, history_runs: int = 3
                        ) -> tuple[ReportData, dict[int, dict[str, Any]]]:
    """The default synthetic run plus what schema v2 adds: sustained windows (a flagship that
    throttles and a mid-range phone that stays cool), fidelity rows (one "fast but wrong"
    configuration), earlier nights in `history`; and the sustained windows' sampler series."""
    measure = make_samples()
    hot = thermal_windows("flagship", duration_s=120.0, window_s=5.0, base_us=10_000.0)
    cool = thermal_windows("midrange", threads=1, duration_s=120.0, window_s=5.0,
                           base_us=12_000.0)  # slower than the flagship at peak, not once warm
    hot_int8 = thermal_windows("flagship", duration_s=120.0, window_s=5.0, base_us=6_000.0)
    frames = [measure,
              sustained_frame(hot, first_sample_id=100_000),
              sustained_frame(cool, info=SIM_DEVICE, tier="mid", first_sample_id=200_000),
              sustained_frame(hot_int8, quantization="int8", first_sample_id=300_000,
                              failed_windows=(23,))]
    samples = pd.concat(frames, ignore_index=True)
    series = {**hot.series(100_000), **cool.series(200_000), **hot_int8.series(300_000)}
    base = make_report_data(samples)
    run = {**base.run, "sweep_json": sustained_sweep_json(duration_s=120.0, window_s=5.0)}
    history = (make_history(history_runs) if history_runs
               else None)
    data = ReportData(run=run, devices=base.devices, variants=base.variants, samples=samples,
                      fidelity=make_fidelity(measure), history=history, series=series)
    return data, series


def make_scale_report_data(n_samples: int = 100_000, *, n_devices: int = 8,
                           sustained_configs: int = 2, sustained_s: float = 600.0,
                           window_s: float = 5.0, seed: int = 0) -> ReportData:
    """A large run for scale tests and bench/: `n_samples` measure samples
    (make_scale_samples), plus `sustained_configs` sustained cases per device (simulated
    thermal profiles in turn, `sustained_s` of `window_s` windows each) and fidelity rows."""
    samples = make_scale_samples(n_samples, n_devices=n_devices, seed=seed)
    devices = scale_devices(n_devices)
    profiles = ("flagship", "midrange", "lowend", "old_armv7")
    frames = [samples]
    traces = {p: thermal_windows(p, duration_s=sustained_s, window_s=window_s, step_s=1.0)
              for p in profiles}
    next_id = int(samples["sample_id"].max()) + 1
    for d, dev in enumerate(devices):
        info = DeviceInfo(serial=dev["serial"], kind="adb", simulated=True,
                          manufacturer="Scale", model=f"phone {d}")
        for c in range(sustained_configs):
            quant = ("fp32", "int8")[c % 2]
            frames.append(sustained_frame(traces[profiles[d % len(profiles)]], info=info,
                                          tier=dev["tier"], model="mobilenet",
                                          quantization=quant, delegate="xnnpack", threads=4,
                                          first_sample_id=next_id,
                                          run_id=str(samples["run_id"].iloc[0])))
            next_id += len(frames[-1])
    frame = pd.concat(frames, ignore_index=True)
    run = {"run_id": str(samples["run_id"].iloc[0]), "status": "finished",
           "started_at": "2026-01-01T00:00:00",
           "sweep_json": sustained_sweep_json(duration_s=sustained_s, window_s=window_s)}
    return ReportData(run=run, devices=devices, variants=pd.DataFrame(), samples=frame,
                      fidelity=make_fidelity(samples, wrong=(), run_id=run["run_id"]))


def stored_v2_run(db: Path, *, earlier_runs: Sequence[str] = ()) -> tuple[str, ReportData]:
    """`make_v2_report_data` written into a new store at `db` (with its sustained series),
    after the same samples as earlier runs with these ids (started a day apart, before it);
    (run_id, the data)."""
    data, series = make_v2_report_data(history_runs=0)
    with Store(db) as store:
        for i, rid in enumerate(earlier_runs):
            day = date(2025, 12, 1) + timedelta(days=i)
            write_store(store, replace(data, run={**data.run, "run_id": rid,
                                                  "started_at": f"{day.isoformat()}T00:00:00"}),
                        series=series)
        write_store(store, data, series=series)
    return str(data.run["run_id"]), data
