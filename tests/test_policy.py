"""Tests for farm.policy: synthetic runs with known answers, a golden policy file, diffs."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from farm import policy
from farm.errors import FarmError

GOLDEN = Path(__file__).parent / "data" / "golden" / "answers"

# (quantization, delegate, threads) -> true latency (µs), per device
Truth = Mapping[tuple[str, str, int], float]


def synthetic(devices: Mapping[str, tuple[str, str, Truth]], *, rounds: int = 8,
              noise: float = 0.02, seed: int = 0, model: str = "mobilenet",
              delegation: Mapping[tuple[str, str, str, int], str] | None = None,
              memory_mb: Mapping[tuple[str, str, str, int], float] | None = None,
              failed: Sequence[tuple[str, str, str, int]] = (),
              masks: Mapping[tuple[str, int], str] | None = None) -> pd.DataFrame:
    """Interleaved rounds of every config on every device, lognormal noise around the truth.

    devices: serial -> (label, tier, truth). delegation: (serial, quant, delegate, threads) ->
    the samples' delegation column (default "full" for accelerators and XNNPACK, "" for cpu).
    """
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for serial, (label, tier, truth) in devices.items():
        for rnd in range(1, rounds + 1):
            drift = float(rng.lognormal(0.0, noise / 2))  # shared by the round
            for (quant, delegate, threads), true_us in truth.items():
                key = (serial, quant, delegate, threads)
                status = "failed" if key in failed else "ok"
                default = "" if delegate == "cpu" else "full"
                rows.append({
                    "run_id": "r1", "device": serial, "device_label": label, "tier": tier,
                    "simulated": True, "model": model, "quantization": quant,
                    "delegate": delegate, "threads": threads, "repeat": rnd - 1, "round": rnd,
                    "phase": "measure", "status": status,
                    "error": "Failed to apply delegate" if status == "failed" else "",
                    "flags": "", "tainted": False,
                    "inference_avg_us": (true_us * drift * float(rng.lognormal(0.0, noise))
                                         if status == "ok" else math.nan),
                    "delegation": (delegation or {}).get(key, default),
                    "peak_mem_mb": (memory_mb or {}).get(key, 20.0),
                    "cpu_mask": (masks or {}).get((serial, threads), ""),
                })
    return pd.DataFrame(rows)


HIGH = {("fp32", "xnnpack", 1): 10_000.0, ("fp32", "xnnpack", 4): 4_000.0,
        ("int8", "xnnpack", 4): 2_000.0, ("fp16", "gpu", 1): 1_000.0,
        ("int8", "gpu", 1): 800.0, ("int8", "nnapi", 1): 700.0, ("fp32", "cpu", 1): 14_000.0,
        ("fp32", "cpu", 4): 5_000.0}
MID = {("int8", "xnnpack", 4): 3_000.0, ("int8", "xnnpack", 2): 3_030.0,
       ("fp32", "xnnpack", 2): 6_000.0, ("fp32", "gpu", 1): 2_950.0,
       ("fp32", "cpu", 2): 8_000.0}
OLD = {("fp32", "xnnpack", 1): 100_000.0, ("int8", "xnnpack", 1): 150_000.0,
       ("fp32", "cpu", 1): 101_000.0}

DEVICES = [
    {"serial": "H1", "label": "Flagship [SIMULATED]", "tier": "high", "simulated": True},
    {"serial": "M1", "label": "Mid A [SIMULATED]", "tier": "mid", "simulated": True},
    {"serial": "M2", "label": "Mid B [SIMULATED]", "tier": "mid", "simulated": True},
    {"serial": "O1", "label": "Old phone [SIMULATED]", "tier": "", "simulated": True},
]
FIDELITY = [
    {"device": "H1", "model": "mobilenet", "quantization": "int8", "delegate": "nnapi",
     "threads": 1, "status": "ok", "within_tolerance": 0, "max_abs_error": 0.8,
     "cosine_min": 0.62, "top1_agreement": 0.25},
    {"device": "H1", "model": "mobilenet", "quantization": "fp16", "delegate": "gpu",
     "threads": 1, "status": "ok", "within_tolerance": 1, "max_abs_error": 0.002,
     "cosine_min": 0.9999, "top1_agreement": 1.0},
]


def lab_run() -> pd.DataFrame:
    mid_b = {**MID, ("fp32", "gpu", 1): 3_100.0}
    return synthetic(
        {"H1": ("Flagship [SIMULATED]", "high", HIGH), "M1": ("Mid A [SIMULATED]", "mid", MID),
         "M2": ("Mid B [SIMULATED]", "mid", mid_b), "O1": ("Old phone [SIMULATED]", "", OLD)},
        delegation={("H1", "int8", "gpu", 1): "partial"},
        masks={("H1", 4): "f0", ("M1", 2): "c0", ("M2", 2): "30", ("M1", 4): "f0",
               ("M2", 4): "f0"})


def lab_policy(**kw: Any) -> policy.Policy:
    return policy.make_policy(lab_run(), DEVICES, FIDELITY, "p50", run_id="r1", **kw)


def entry(p: policy.Policy, tier: str, model: str = "mobilenet") -> policy.ModelPolicy:
    t = next(t for t in p.tiers if t.tier == tier)
    return next(m for m in t.models if m.model == model)


# --- known answers -----------------------------------------------------------------------------


def test_high_tier_picks_the_gpu_and_never_the_fast_but_wrong_or_partial_configs() -> None:
    high = entry(lab_policy(), "high")
    assert high.choice is not None
    assert high.choice.label() == "fp16/gpu/t1"
    excluded = {e.config: " ".join(e.reasons) for e in high.excluded}
    assert "fast but wrong" in excluded["int8/nnapi/t1"]
    assert "partial" in excluded["int8/gpu/t1"]
    assert high.evidence is not None and high.evidence.significant
    assert high.evidence.runner_up == "int8/xnnpack/t4"
    assert high.evidence.margin == pytest.approx(1.0, rel=0.1)  # 2000 / 1000 - 1
    assert high.evidence.margin_ci_low > 0
    # gpu -> the best CPU path -> plain CPU kernels, which always run
    assert [c.label() for c in high.fallback] == ["fp16/gpu/t1", "int8/xnnpack/t4",
                                                  "fp32/cpu/t4"]
    assert high.fallback[1].cpu_mask == "f0"


def test_indistinguishable_configs_resolve_to_the_simplest() -> None:
    mid = entry(lab_policy(), "mid")
    assert mid.choice is not None
    # gpu fp32 (2950/3100) ~ xnnpack int8 t4 (3000) ~ xnnpack int8 t2 (3030): within noise and
    # below the 5 % minimum effect, so the CPU path with fewer threads wins
    assert mid.choice.label() == "int8/xnnpack/t2"
    assert mid.evidence is not None and not mid.evidence.significant
    assert "not significant" in mid.why or "cannot be told apart" in mid.why
    # the two mid devices use different masks for 2 threads: no tier-wide mask
    assert mid.choice.cpu_mask == ""
    assert dict(mid.choice.cpu_mask_by_device) == {"M1": "c0", "M2": "30"}
    assert len(mid.evidence.devices) == 2


def test_untiered_device_forms_a_tier_named_after_its_label_and_int8_slower_is_not_chosen(
) -> None:
    p = lab_policy()
    assert [t.tier for t in p.tiers] == ["Old phone [SIMULATED]", "high", "mid"]
    old = entry(p, "Old phone [SIMULATED]")
    assert old.choice is not None and old.choice.quantization == "fp32"
    # fp32 xnnpack (100 ms) vs plain cpu (101 ms): indistinguishable; XNNPACK is the default
    assert old.choice.label() == "fp32/xnnpack/t1"


def test_memory_limit_excludes_configs() -> None:
    frame = synthetic({"O1": ("Old", "", OLD)},
                      memory_mb={("O1", "fp32", "xnnpack", 1): 90.0,
                                 ("O1", "fp32", "cpu", 1): 85.0})
    p = policy.make_policy(frame, (), (), "p50", max_memory_mb=60)
    old = entry(p, "Old")
    assert old.choice is not None and old.choice.label() == "int8/xnnpack/t1"
    reasons = {e.config: e.reasons for e in old.excluded}
    assert any("90.0 MB > 60 MB" in r for r in reasons["fp32/xnnpack/t1"])
    assert old.why.endswith("is the only eligible configuration")


def test_failed_configs_are_excluded() -> None:
    frame = synthetic({"H1": ("Flagship", "high", HIGH)}, failed=[("H1", "fp16", "gpu", 1)])
    high = entry(policy.make_policy(frame, (), (), "p50"), "high")
    assert high.choice is not None and high.choice.label() == "int8/nnapi/t1"
    assert any("failed" in r for e in high.excluded if e.config == "fp16/gpu/t1"
               for r in e.reasons)


def test_fidelity_can_be_switched_off_and_defaults_to_on_when_rows_exist() -> None:
    on = lab_policy()
    assert on.fidelity_checked
    off = lab_policy(fidelity=False)
    assert not off.fidelity_checked
    high = entry(off, "high")
    assert high.choice is not None and high.choice.label() == "int8/nnapi/t1"
    none = policy.make_policy(lab_run(), DEVICES, (), "p50")
    assert not none.fidelity_checked


def test_fidelity_rows_of_other_thread_counts_still_exclude() -> None:
    rows = [{**FIDELITY[0], "threads": 4}]
    high = entry(policy.make_policy(lab_run(), DEVICES, rows, "p50"), "high")
    assert high.choice is not None and high.choice.label() == "fp16/gpu/t1"


def test_no_significant_winner_prefers_simpler_and_says_why() -> None:
    truth = {("fp32", "xnnpack", 1): 1000.0, ("fp32", "xnnpack", 4): 990.0,
             ("fp32", "gpu", 1): 985.0}
    frame = synthetic({"D": ("D", "t", truth)}, noise=0.05)
    e = entry(policy.make_policy(frame, (), (), "p50"), "t")
    assert e.choice is not None and e.choice.label() == "fp32/xnnpack/t1"
    assert "simpler" in e.why or "simplest" in e.why


def test_a_significantly_faster_accelerator_wins() -> None:
    truth = {("fp32", "xnnpack", 1): 1000.0, ("fp32", "gpu", 1): 700.0}
    e = entry(policy.make_policy(synthetic({"D": ("D", "t", truth)}), (), (), "p50"), "t")
    assert e.choice is not None and e.choice.label() == "fp32/gpu/t1"
    assert e.evidence is not None and e.evidence.significant
    assert "significantly faster" in e.why


def test_p90_objective_needs_enough_pairs() -> None:
    truth = {("fp32", "xnnpack", 1): 1000.0, ("fp32", "gpu", 1): 700.0}
    few = entry(policy.make_policy(synthetic({"D": ("D", "t", truth)}, rounds=4), (), (),
                                   "p90"), "t")
    assert few.choice is not None and few.choice.delegate == "xnnpack"  # no p90 CI at n=4
    assert few.evidence is not None and "none (n=4" in few.evidence.devices[0].ratio_method
    many = entry(policy.make_policy(synthetic({"D": ("D", "t", truth)}, rounds=12), (), (),
                                    "p90"), "t")
    assert many.choice is not None and many.choice.delegate == "gpu"
    assert many.evidence is not None and many.evidence.statistic.startswith("90th percentile")


def _sustained(frame: pd.DataFrame, serial: str, config: tuple[str, str, int],
               windows: Sequence[float]) -> pd.DataFrame:
    quant, delegate, threads = config
    rows = [{"run_id": "r1", "device": serial, "device_label": serial, "tier": "t",
             "model": "mobilenet", "quantization": quant, "delegate": delegate,
             "threads": threads, "repeat": i, "round": 0, "phase": "sustained", "status": "ok",
             "flags": "throttled" if i > 2 else "", "tainted": i > 2,  # hot on purpose
             "inference_avg_us": w, "delegation": "full", "window_offset_s": 10.0 * i}
            for i, w in enumerate(windows)]
    return pd.concat([frame, pd.DataFrame(rows)], ignore_index=True)


def test_sustained_objective_ranks_by_the_last_windows() -> None:
    truth = {("fp32", "xnnpack", 4): 1000.0, ("fp32", "gpu", 1): 800.0}
    frame = synthetic({"D": ("D", "t", truth)})
    # the GPU is faster at peak but throttles to 2x; XNNPACK holds steady
    frame = _sustained(frame, "D", ("fp32", "gpu", 1), [800, 900, 1400, 1600, 1610, 1590])
    frame = _sustained(frame, "D", ("fp32", "xnnpack", 4), [1000, 1010, 1020, 1030, 1025, 1035])
    p50 = entry(policy.make_policy(frame, (), (), "p50"), "t")
    assert p50.choice is not None and p50.choice.delegate == "gpu"
    sus = entry(policy.make_policy(frame, (), (), "sustained"), "t")
    assert sus.choice is not None and sus.choice.delegate == "xnnpack"
    assert sus.evidence is not None
    assert sus.evidence.value_us == pytest.approx(1030.0)  # median of the last 3 windows
    assert sus.evidence.runner_up_value_us == pytest.approx(1600.0)
    assert sus.evidence.significant
    assert "Welch" in sus.evidence.devices[0].ratio_method


def test_sustained_objective_without_windows_falls_back_to_p50_and_says_so() -> None:
    truth = {("fp32", "xnnpack", 4): 1000.0, ("fp32", "gpu", 1): 700.0}
    e = entry(policy.make_policy(synthetic({"D": ("D", "t", truth)}), (), (), "sustained"), "t")
    assert e.choice is not None and e.choice.delegate == "gpu"
    assert any("no sustained-mode windows" in n for n in e.notes)


def test_sustained_objective_excludes_configs_without_windows() -> None:
    truth = {("fp32", "xnnpack", 4): 1000.0, ("fp32", "gpu", 1): 700.0}
    frame = _sustained(synthetic({"D": ("D", "t", truth)}), "D", ("fp32", "xnnpack", 4),
                       [1000, 1000, 1010, 1005])
    e = entry(policy.make_policy(frame, (), (), "sustained"), "t")
    assert e.choice is not None and e.choice.delegate == "xnnpack"
    assert any("no sustained-mode windows" in r for x in e.excluded for r in x.reasons)


def test_nothing_eligible() -> None:
    frame = synthetic({"D": ("D", "t", {("fp32", "gpu", 1): 1000.0})},
                      delegation={("D", "fp32", "gpu", 1): "none"})
    e = entry(policy.make_policy(frame, (), (), "p50"), "t")
    assert e.choice is None and e.fallback == () and e.evidence is None
    assert e.why.startswith("no eligible configuration")


def test_unknown_objective_is_a_farm_error() -> None:
    with pytest.raises(FarmError, match="allowed: p50, p90, sustained"):
        policy.make_policy(lab_run(), DEVICES, (), "p99")


# --- golden file, round trip, diff -------------------------------------------------------------


def test_policy_matches_golden_file() -> None:
    got = lab_policy().to_dict()
    path = GOLDEN / "policy.expected.json"
    if os.environ.get("FARM_UPDATE_GOLDEN"):
        path.write_text(json.dumps(got, indent=2, ensure_ascii=False) + "\n")
    assert got == json.loads(path.read_text())


def test_round_trip_through_json_and_yaml(tmp_path: Path) -> None:
    p = lab_policy(max_memory_mb=500)
    for name in ("policy.json", "policy.yaml"):
        path = tmp_path / name
        policy.write_policy_file(p, path)
        data = policy.read_policy_file(path)
        assert data == json.loads(json.dumps(p.to_dict()))
        assert policy.Policy.from_dict(data).to_dict() == p.to_dict()
        assert policy.diff_policies(data, p) == ()


def test_read_policy_file_rejects_other_files(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text('{"hello": 1}')
    with pytest.raises(FarmError, match="not a farm policy file"):
        policy.read_policy_file(bad)
    bad.write_text("{")
    with pytest.raises(FarmError, match="not a policy file"):
        policy.read_policy_file(bad)
    with pytest.raises(FarmError, match="cannot read"):
        policy.read_policy_file(tmp_path / "missing.yaml")


def test_diff_reports_choice_and_fallback_changes_per_tier() -> None:
    old = lab_policy(fidelity=False).to_dict()
    new = lab_policy()
    changes = {(c.tier, c.kind): c for c in policy.diff_policies(old, new)}
    assert set(changes) == {("high", "choice")}
    c = changes[("high", "choice")]
    assert (c.before, c.after) == ("int8/nnapi/t1", "fp16/gpu/t1")
    assert "high / mobilenet: choice int8/nnapi/t1 -> fp16/gpu/t1" == c.describe()
    # a tier that disappears and one that appears
    fewer = policy.make_policy(lab_run()[lab_run()["device"] != "O1"], DEVICES, FIDELITY)
    kinds = {(c.tier, c.kind) for c in policy.diff_policies(new, fewer)}
    assert kinds == {("Old phone [SIMULATED]", "removed")}
    kinds = {(c.tier, c.kind) for c in policy.diff_policies(fewer, new)}
    assert kinds == {("Old phone [SIMULATED]", "added")}
