"""Synthetic runs for the analysis and report tests: a samples frame shaped like the store's.

Pure and deterministic (seeded numpy); writes nothing. Latencies follow a simple multiplicative
model (model × device × quantization × delegate × threads × per-round drift × lognormal noise), so
the tests know which configuration should come out fastest without reading the code under test.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from farm.devices import CpuCluster, DeviceInfo
from farm.report import ReportData

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
    return {**info.to_dict(), "tier": tier, "simulated": info.simulated}


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
                    repeat=repeats, round=rnd, position=position, status="ok", error="",
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
                                   thermal_status_after=2, temp_after_c=48.0)
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
        "format": "", "default_xnnpack": False,
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
    }
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
