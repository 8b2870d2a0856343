"""Per-tier delegate policy: which delegate, threads, quantization and CPU mask to ship, per tier.

`make_policy` is pure (samples frame, device rows and fidelity rows in, a frozen `Policy` out);
`diff_policies` compares two policies as plain dicts. The few helpers at the end
(`read_policy_file`, `write_policy_file`, `policy_for_run`) read the store and read/write one
policy file; nothing here touches a device.

How a choice is made, per tier (devices sharing `tier`; an untiered device is its own tier,
named after its label) and per model:

1. Candidates are the configurations (quantization × delegate × threads) measured on every
   device of the tier. A candidate is excluded, with its reasons, when on any device of the
   tier: a sample failed; the delegate did not fully apply (partial, CPU fallback: the latency
   is not that delegate's); fewer than 3 usable samples; the median peak memory
   (`peak_mem_mb`, or `vmhwm_mb` when larger) exceeds `max_memory_mb`; or its outputs are
   outside tolerance ("fast but wrong": a fidelity row with `within_tolerance == 0`), when
   fidelity is checked.
2. Each candidate gets a score per device: the median (p50) or 90th percentile (p90) of the
   per-sample inference averages, or, for `sustained`, the median of the last `tail_windows`
   sustained-mode windows. The tier score is the geometric mean over the tier's devices.
3. The fastest candidate wins outright only if it is significantly faster than every
   other candidate it is compared with, on every device of the tier: the CI of the latency
   ratio excludes 1 and the ratio is at least 1 + `min_effect` (the rule the quantization
   verdicts use). Candidates it cannot be told from form a pool, and the *simplest* member of
   that pool is chosen: CPU paths before GPU before NNAPI and other accelerators (availability
   risk), then fewer threads (contention, energy), then fp32 before fp16, dynamic, int16x8 and
   int8 (accuracy risk). The `why` says which happened.
4. The fallback chain starts with the choice and adds, per other delegate, that delegate's own
   pick (the same rule within its candidates), fastest first. Accelerator delegates are only
   added before the first CPU-path entry, and the chain ends with the plain CPU kernels when
   they were measured, because only they are certain to run.

Statistics: p50 comparisons are paired by round (the interleaved schedule runs every case of a
device once per round) with `analysis.ratio_ci`; p90 uses a paired percentile bootstrap of
the ratio of p90s (no CI below 5 pairs: a p90 of 4 values is their maximum); sustained uses a
Welch t-interval on log window latencies (windows of different cases are not paired).
Sustained windows run hot on purpose, so tainted windows are *kept* for that objective.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from farm import analysis
from farm.errors import FarmError
from farm.models import QUANTIZATIONS

POLICY_SCHEMA_VERSION = 1
OBJECTIVES: tuple[str, ...] = ("p50", "p90", "sustained")
#: Delegates that run on the CPU: always available, so a fallback chain may end with them.
CPU_PATH_DELEGATES: frozenset[str] = frozenset({"cpu", "xnnpack"})
#: The delegate that runs anywhere: the last link of a fallback chain when it was measured.
PLAIN_CPU = "cpu"
#: Simplicity ranks (lower is simpler). XNNPACK is the interpreter's default CPU path; the
#: plain kernels need it switched off; accelerators may be missing or fail on a device.
DELEGATE_COST: Mapping[str, int] = {"xnnpack": 0, "cpu": 1, "gpu": 2, "nnapi": 3}
OTHER_DELEGATE_COST = 4
QUANT_COST: Mapping[str, int] = {q: i for i, q in enumerate(("fp32", "fp16", "dynamic",
                                                             "int16x8", "int8"))}
#: Sustained objective: median of this many last windows unless the sweep says otherwise.
DEFAULT_TAIL_WINDOWS = 3
#: p90 CIs need at least this many paired rounds.
MIN_PAIRS_FOR_P90 = 5

_STATISTIC = {
    "p50": "median of the per-sample inference averages",
    "p90": "90th percentile of the per-sample inference averages",
    "sustained": "median latency of the last sustained-mode windows",
}


# --- values ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigChoice:
    """One shippable configuration, with its tier score (µs) and per-device CPU masks."""

    delegate: str
    quantization: str
    threads: int
    cpu_mask: str = ""  # the tier's mask when every device used the same one, else ""
    cpu_mask_by_device: tuple[tuple[str, str], ...] = ()
    value_us: float = math.nan

    def label(self) -> str:
        """quantization/delegate/t<threads>, as Case.label spells it (without the model)."""
        return config_label(self.quantization, self.delegate, self.threads)

    def to_dict(self) -> dict[str, Any]:
        return {"delegate": self.delegate, "quantization": self.quantization,
                "threads": self.threads, "cpu_mask": self.cpu_mask,
                "cpu_mask_by_device": dict(self.cpu_mask_by_device),
                "value_us": _r(self.value_us, 1)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConfigChoice:
        return cls(delegate=str(d["delegate"]), quantization=str(d["quantization"]),
                   threads=int(d["threads"]), cpu_mask=str(d.get("cpu_mask") or ""),
                   cpu_mask_by_device=tuple(sorted((str(k), str(v)) for k, v in
                                                   dict(d.get("cpu_mask_by_device") or {})
                                                   .items())),
                   value_us=_f(d.get("value_us")))


@dataclass(frozen=True, slots=True)
class DeviceEvidence:
    """The choice on one device: its statistic, and the ratio runner-up / choice with a CI."""

    device: str
    label: str
    value_us: float
    n: int
    ci_low_us: float
    ci_high_us: float
    ci_level: float
    ratio: float = math.nan  # runner-up latency / choice latency (> 1: the choice is faster)
    ratio_ci_low: float = math.nan
    ratio_ci_high: float = math.nan
    ratio_ci_level: float = math.nan
    ratio_method: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "label": self.label, "value_us": _r(self.value_us, 1),
                "n": self.n, "ci_low_us": _r(self.ci_low_us, 1),
                "ci_high_us": _r(self.ci_high_us, 1), "ci_level": _r(self.ci_level, 4),
                "ratio_vs_runner_up": _r(self.ratio, 4), "ratio_ci_low": _r(self.ratio_ci_low, 4),
                "ratio_ci_high": _r(self.ratio_ci_high, 4),
                "ratio_ci_level": _r(self.ratio_ci_level, 4), "ratio_method": self.ratio_method}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DeviceEvidence:
        return cls(device=str(d["device"]), label=str(d.get("label", "")),
                   value_us=_f(d.get("value_us")), n=int(d.get("n") or 0),
                   ci_low_us=_f(d.get("ci_low_us")), ci_high_us=_f(d.get("ci_high_us")),
                   ci_level=_f(d.get("ci_level")), ratio=_f(d.get("ratio_vs_runner_up")),
                   ratio_ci_low=_f(d.get("ratio_ci_low")),
                   ratio_ci_high=_f(d.get("ratio_ci_high")),
                   ratio_ci_level=_f(d.get("ratio_ci_level")),
                   ratio_method=str(d.get("ratio_method", "")))


@dataclass(frozen=True, slots=True)
class Evidence:
    """Why the choice: its statistic, n, and the margin over the runner-up with a CI.

    `margin` = runner-up score / choice score - 1 (> 0: the choice is faster). With several
    devices the margin CI shown is the weakest device's (the one with the lowest CI bound).
    """

    statistic: str
    value_us: float
    n: int
    runner_up: str
    runner_up_value_us: float
    margin: float
    margin_ci_low: float
    margin_ci_high: float
    margin_ci_level: float
    significant: bool
    why: str
    devices: tuple[DeviceEvidence, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"statistic": self.statistic, "value_us": _r(self.value_us, 1), "n": self.n,
                "runner_up": self.runner_up,
                "runner_up_value_us": _r(self.runner_up_value_us, 1),
                "margin": _r(self.margin, 4), "margin_ci_low": _r(self.margin_ci_low, 4),
                "margin_ci_high": _r(self.margin_ci_high, 4),
                "margin_ci_level": _r(self.margin_ci_level, 4),
                "significant": self.significant, "why": self.why,
                "devices": [d.to_dict() for d in self.devices]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Evidence:
        return cls(statistic=str(d.get("statistic", "")), value_us=_f(d.get("value_us")),
                   n=int(d.get("n") or 0), runner_up=str(d.get("runner_up", "")),
                   runner_up_value_us=_f(d.get("runner_up_value_us")),
                   margin=_f(d.get("margin")), margin_ci_low=_f(d.get("margin_ci_low")),
                   margin_ci_high=_f(d.get("margin_ci_high")),
                   margin_ci_level=_f(d.get("margin_ci_level")),
                   significant=bool(d.get("significant")), why=str(d.get("why", "")),
                   devices=tuple(DeviceEvidence.from_dict(x) for x in d.get("devices") or ()))


@dataclass(frozen=True, slots=True)
class Exclusion:
    """A configuration that may not be recommended on a tier, and why."""

    config: str
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "reasons": list(self.reasons)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Exclusion:
        return cls(config=str(d["config"]), reasons=tuple(str(r) for r in d.get("reasons", ())))


@dataclass(frozen=True, slots=True)
class ModelPolicy:
    """The choice for one model on one tier; `choice` is None when nothing is eligible."""

    model: str
    choice: ConfigChoice | None
    fallback: tuple[ConfigChoice, ...]  # the whole chain, starting with the choice
    evidence: Evidence | None
    why: str
    excluded: tuple[Exclusion, ...] = ()
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model,
                "choice": self.choice.to_dict() if self.choice else None,
                "fallback": [c.to_dict() for c in self.fallback],
                "evidence": self.evidence.to_dict() if self.evidence else None,
                "why": self.why, "excluded": [e.to_dict() for e in self.excluded],
                "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelPolicy:
        return cls(model=str(d["model"]),
                   choice=ConfigChoice.from_dict(d["choice"]) if d.get("choice") else None,
                   fallback=tuple(ConfigChoice.from_dict(c) for c in d.get("fallback") or ()),
                   evidence=Evidence.from_dict(d["evidence"]) if d.get("evidence") else None,
                   why=str(d.get("why", "")),
                   excluded=tuple(Exclusion.from_dict(e) for e in d.get("excluded") or ()),
                   notes=tuple(str(n) for n in d.get("notes") or ()))


@dataclass(frozen=True, slots=True)
class TierPolicy:
    """One tier: its devices and a policy per model."""

    tier: str
    devices: tuple[str, ...]
    device_labels: tuple[str, ...]
    simulated: bool
    models: tuple[ModelPolicy, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"tier": self.tier, "devices": list(self.devices),
                "device_labels": list(self.device_labels), "simulated": self.simulated,
                "models": [m.to_dict() for m in self.models]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TierPolicy:
        return cls(tier=str(d["tier"]), devices=tuple(str(x) for x in d.get("devices", ())),
                   device_labels=tuple(str(x) for x in d.get("device_labels", ())),
                   simulated=bool(d.get("simulated")),
                   models=tuple(ModelPolicy.from_dict(m) for m in d.get("models", ())))


@dataclass(frozen=True, slots=True)
class Policy:
    """A whole policy file: settings it was made with, and one entry per tier."""

    run_id: str
    objective: str
    level: float
    min_effect: float
    max_memory_mb: float | None
    fidelity_checked: bool
    include_tainted: bool
    tiers: tuple[TierPolicy, ...]
    schema_version: int = POLICY_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, "kind": "farm-policy",
                "run_id": self.run_id, "objective": self.objective,
                "level": self.level, "min_effect": self.min_effect,
                "max_memory_mb": self.max_memory_mb, "fidelity_checked": self.fidelity_checked,
                "include_tainted": self.include_tainted,
                "tiers": [t.to_dict() for t in self.tiers]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Policy:
        version = d.get("schema_version")
        if version != POLICY_SCHEMA_VERSION:
            raise FarmError(f"policy schema_version {version!r} is not supported; allowed: "
                            f"{POLICY_SCHEMA_VERSION}")
        mem = d.get("max_memory_mb")
        return cls(run_id=str(d.get("run_id", "")), objective=str(d.get("objective", "p50")),
                   level=float(d.get("level", 0.95)), min_effect=float(d.get("min_effect", 0.0)),
                   max_memory_mb=None if mem is None else float(mem),
                   fidelity_checked=bool(d.get("fidelity_checked")),
                   include_tainted=bool(d.get("include_tainted")),
                   tiers=tuple(TierPolicy.from_dict(t) for t in d.get("tiers", ())))


@dataclass(frozen=True, slots=True)
class PolicyChange:
    """How one tier × model changed between two policies."""

    tier: str
    model: str
    kind: str  # "added" | "removed" | "choice" | "fallback"
    before: str
    after: str

    def describe(self) -> str:
        """One human line."""
        where = f"{self.tier} / {self.model}" if self.model else self.tier
        if self.kind == "added":
            return f"{where}: new: {self.after}"
        if self.kind == "removed":
            return f"{where}: gone (was {self.before})"
        return f"{where}: {self.kind} {self.before} -> {self.after}"

    def to_dict(self) -> dict[str, Any]:
        return {"tier": self.tier, "model": self.model, "kind": self.kind,
                "before": self.before, "after": self.after}


# --- the policy --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Measured:
    """One configuration on one device: what the objective uses, and what excludes it."""

    device: str
    values: np.ndarray  # objective input: latency per round (p50/p90) or per window (sustained)
    rounds: np.ndarray  # the round of each value (ascending); window order for sustained
    value_us: float
    ci: analysis.MedianCI
    reasons: tuple[str, ...]
    cpu_mask: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Candidate:
    quantization: str
    delegate: str
    threads: int
    per_device: tuple[_Measured, ...] = field(default=())

    @property
    def label(self) -> str:
        return config_label(self.quantization, self.delegate, self.threads)

    @property
    def score(self) -> float:
        values = [m.value_us for m in self.per_device]
        if not values or any(not v > 0 for v in values):
            return math.nan
        return float(np.exp(np.mean(np.log(values))))

    @property
    def cost(self) -> tuple[int, int, int, str]:
        return (DELEGATE_COST.get(self.delegate, OTHER_DELEGATE_COST), self.threads,
                QUANT_COST.get(self.quantization, len(QUANT_COST)), self.label)


@dataclass(frozen=True, slots=True)
class _Comparison:
    device: str
    ci: analysis.RatioCI  # ratio = other latency / this latency
    significant: bool


def config_label(quantization: str, delegate: str, threads: int) -> str:
    """quantization/delegate/t<threads>."""
    return f"{quantization}/{delegate}/t{threads}"


def tier_name(device: Mapping[str, Any]) -> str:
    """A device's tier, or (untiered) its label, or its serial."""
    return str(device.get("tier") or device.get("label") or device.get("serial") or "")


def make_policy(samples: pd.DataFrame, devices: Sequence[Mapping[str, Any]] = (),
                fidelity_rows: Sequence[Mapping[str, Any]] = (), objective: str = "p50", *,
                run_id: str = "", max_memory_mb: float | None = None,
                fidelity: bool | None = None, level: float = 0.95,
                min_effect: float = analysis.MIN_EFFECT, include_tainted: bool = False,
                tail_windows: int = DEFAULT_TAIL_WINDOWS, seed: int = 0) -> Policy:
    """Pick a configuration and a fallback chain per tier × model (see the module docstring).

    `devices` are the store's device rows (serial, label, tier, simulated); devices that only
    appear in `samples` are taken from its device/device_label/tier columns. `fidelity` None
    means: check fidelity when there are fidelity rows.
    """
    if objective not in OBJECTIVES:
        raise FarmError(f"objective {objective!r} is unknown; allowed: {', '.join(OBJECTIVES)}")
    df = analysis.normalize_samples(samples)
    check_fidelity = bool(fidelity_rows) if fidelity is None else fidelity
    wrong = _fidelity_index(fidelity_rows) if check_fidelity else {}
    tiers = _tiers(df, devices)
    # every sample grouped by device x configuration once; each tier x model x configuration
    # x device below is a dict lookup and numpy work on its rows, not a frame filter
    cases = analysis.Cases(df, phase=None, normalized=True)
    out: list[TierPolicy] = []
    for name, members in tiers:
        serials = tuple(m["serial"] for m in members)
        in_tier = [i for i, k in enumerate(cases.keys) if k[0] in serials]
        models = tuple(_model_policy(str(model), cases,
                                     [i for i in in_tier if cases.keys[i][1] == model], members,
                                     objective, wrong, check_fidelity, max_memory_mb, level,
                                     min_effect, include_tainted, tail_windows, seed)
                       for model in sorted({cases.keys[i][1] for i in in_tier
                                            if not _nan_or_none_key(cases.keys[i][1])},
                                           key=str))
        out.append(TierPolicy(tier=name, devices=serials,
                              device_labels=tuple(m["label"] for m in members),
                              simulated=any(m["simulated"] for m in members), models=models))
    return Policy(run_id=run_id, objective=objective, level=level, min_effect=min_effect,
                  max_memory_mb=max_memory_mb, fidelity_checked=check_fidelity,
                  include_tainted=include_tainted, tiers=tuple(out))


def diff_policies(old: Mapping[str, Any] | Policy, new: Mapping[str, Any] | Policy
                  ) -> tuple[PolicyChange, ...]:
    """What changed per tier × model: added/removed entries, a new choice, a new chain."""
    before, after = _entries(old), _entries(new)
    changes: list[PolicyChange] = []
    for key in sorted(set(before) | set(after)):
        tier, model = key
        b, a = before.get(key), after.get(key)
        if b is None and a is not None:
            changes.append(PolicyChange(tier, model, "added", "", a[0]))
        elif a is None and b is not None:
            changes.append(PolicyChange(tier, model, "removed", b[0], ""))
        elif a is not None and b is not None:
            if a[0] != b[0]:
                changes.append(PolicyChange(tier, model, "choice", b[0], a[0]))
            elif a[1] != b[1]:
                changes.append(PolicyChange(tier, model, "fallback", b[1], a[1]))
    return tuple(changes)


def _entries(policy: Mapping[str, Any] | Policy) -> dict[tuple[str, str], tuple[str, str]]:
    d = policy.to_dict() if isinstance(policy, Policy) else policy
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for t in d.get("tiers", ()):
        for m in t.get("models", ()):
            choice = m.get("choice")
            label = (_label_of(choice) if choice else "(none)")
            chain = " -> ".join(_label_of(c) for c in m.get("fallback") or ()) or "(none)"
            out[(str(t["tier"]), str(m["model"]))] = (label, chain)
    return out


def _label_of(c: Mapping[str, Any]) -> str:
    mask = f" mask {c['cpu_mask']}" if c.get("cpu_mask") else ""
    return config_label(str(c["quantization"]), str(c["delegate"]), int(c["threads"])) + mask


def _tiers(df: pd.DataFrame, devices: Sequence[Mapping[str, Any]]
           ) -> list[tuple[str, list[dict[str, Any]]]]:
    """(tier name, member devices) for every device with samples, in name order."""
    known: dict[str, dict[str, Any]] = {}
    for d in devices:
        serial = str(d.get("serial", ""))
        if serial:
            known[serial] = {"serial": serial, "label": str(d.get("label") or serial),
                             "tier": str(d.get("tier") or ""),
                             "simulated": bool(d.get("simulated"))}
    for serial, group in df.groupby("device", sort=True):
        if str(serial) not in known:
            first = group.iloc[0]
            known[str(serial)] = {"serial": str(serial),
                                  "label": str(first["device_label"] or serial),
                                  "tier": str(first["tier"] or ""),
                                  "simulated": bool(group["simulated"].any())}
    present = set(df["device"].astype(str))
    groups: dict[str, list[dict[str, Any]]] = {}
    for serial in sorted(known):
        if serial in present:
            d = known[serial]
            groups.setdefault(tier_name(d), []).append(d)
    return sorted(groups.items())


def _fidelity_index(rows: Sequence[Mapping[str, Any]]
                    ) -> dict[tuple[str, str, str, str], list[Mapping[str, Any]]]:
    index: dict[tuple[str, str, str, str], list[Mapping[str, Any]]] = {}
    for r in rows:
        key = (str(r.get("device")), str(r.get("model")), str(r.get("quantization")),
               str(r.get("delegate")))
        index.setdefault(key, []).append(r)
    return index


def _fidelity_verdict(index: Mapping[tuple[str, str, str, str], list[Mapping[str, Any]]],
                      device: str, label: str, model: str, quant: str, delegate: str,
                      threads: int) -> tuple[str | None, str | None]:
    """(exclusion reason, note). Rows for other thread counts count when none match exactly:
    a wrong answer at any thread count is reason enough not to ship the variant × delegate."""
    rows = index.get((device, model, quant, delegate), [])
    exact = [r for r in rows if _int(r.get("threads")) == threads]
    use = exact or rows
    if not use:
        return None, f"fidelity not checked on {label}"
    bad = [r for r in use if r.get("within_tolerance") is not None
           and not _nan_or_none(r.get("within_tolerance")) and int(r["within_tolerance"]) == 0]
    if bad:
        r = bad[0]
        detail = ", ".join(f"{k} {float(r[k]):.4g}" for k in ("max_abs_error", "cosine_min",
                                                              "top1_agreement")
                           if r.get(k) is not None and not _nan_or_none(r.get(k)))
        return (f"fast but wrong on {label}: outputs outside tolerance"
                + (f" ({detail})" if detail else "")), None
    if all(r.get("within_tolerance") is None or _nan_or_none(r.get("within_tolerance"))
           for r in use):
        status = ", ".join(sorted({str(r.get("status") or "?") for r in use}))
        return None, f"fidelity unknown on {label} (status {status})"
    return None, None


def _model_policy(model: str, cases: analysis.Cases, groups: Sequence[int],
                  members: Sequence[Mapping[str, Any]],
                  objective: str, wrong: Mapping[tuple[str, str, str, str],
                                                 list[Mapping[str, Any]]],
                  check_fidelity: bool, max_memory_mb: float | None, level: float,
                  min_effect: float, include_tainted: bool, tail_windows: int,
                  seed: int) -> ModelPolicy:
    """One model on one tier; `groups` are the tier's cases of this model (`cases` indices)."""
    serials = [str(m["serial"]) for m in members]
    labels = {str(m["serial"]): str(m["label"]) for m in members}
    notes: list[str] = []
    used_objective = objective
    if objective == "sustained":
        phase, status = cases.col("phase"), cases.col("status")
        if not any(((phase[cases.positions[i]] == "sustained")
                    & (status[cases.positions[i]] == "ok")).any() for i in groups):
            used_objective = "p50"
            notes.append("objective sustained: no sustained-mode windows in this run for this "
                         "model; ranked by p50 of the interleaved samples instead")
    configs = sorted({(str(cases.keys[i][2]), str(cases.keys[i][3]), int(cases.keys[i][4]))
                      for i in groups},
                     key=lambda c: (QUANTIZATIONS.index(c[0]) if c[0] in QUANTIZATIONS else 99,
                                    c[1], c[2]))
    # (device, quantization, delegate, threads) -> case; a key that is not text matches no
    # configuration (a frame filter on `quantization == "nan"` finds no missing value either)
    by_config = {(k[0], k[2], k[3], k[4]): i for i in groups for k in (cases.keys[i],)
                 if isinstance(k[2], str) and isinstance(k[3], str)}
    eligible: list[_Candidate] = []
    excluded: list[Exclusion] = []
    for quant, delegate, threads in configs:
        per_device: list[_Measured] = []
        reasons: list[str] = []
        for serial in serials:
            i = by_config.get((serial, quant, delegate, threads))
            if i is None:
                reasons.append(f"not measured on {labels[serial]}")
                continue
            m = _measure(serial, labels[serial], cases, cases.positions[i], used_objective,
                         model, quant, delegate, threads, wrong, check_fidelity, max_memory_mb,
                         include_tainted, tail_windows)
            per_device.append(m)
            reasons.extend(m.reasons)
        label = config_label(quant, delegate, threads)
        if reasons:
            excluded.append(Exclusion(label, tuple(dict.fromkeys(reasons))))
        else:
            eligible.append(_Candidate(quant, delegate, threads, tuple(per_device)))
    if not eligible:
        why = ("no eligible configuration" + (": every measured configuration was excluded"
                                               if excluded else ": nothing was measured"))
        return ModelPolicy(model, None, (), None, why, tuple(excluded),
                           tuple(dict.fromkeys(notes)))
    chooser = _Chooser(used_objective, level, min_effect, seed)
    pick, evidence = chooser.pick(eligible, labels)
    chain = _fallback_chain(pick, eligible, chooser, labels)
    for c in chain:  # caveats of what is shipped (unchecked fidelity, unmeasured memory)
        for m in c.per_device:
            notes.extend(f"{c.label}: {n}" for n in m.notes)
    return ModelPolicy(model, _choice(pick), tuple(_choice(c) for c in chain), evidence,
                       evidence.why, tuple(excluded), tuple(dict.fromkeys(notes)))


def _measure(serial: str, label: str, cases: analysis.Cases, positions: np.ndarray,
             objective: str, model: str, quant: str, delegate: str, threads: int,
             wrong: Mapping[tuple[str, str, str, str], list[Mapping[str, Any]]],
             check_fidelity: bool, max_memory_mb: float | None, include_tainted: bool,
             tail_windows: int) -> _Measured:
    """One configuration on one device, from its rows (`positions` into `cases.frame`)."""
    reasons: list[str] = []
    notes: list[str] = []
    # judge a config on the samples its objective uses
    idx = positions[cases.col("phase")[positions] == ("sustained" if objective == "sustained"
                                                      else analysis.MEASURE_PHASE)]
    status = cases.col("status")[idx]
    failed = status == "failed"
    if failed.any():
        errors = sorted({str(e) for e in cases.col("error")[idx][failed] if str(e)})
        reasons.append(f"{int(failed.sum())} of {len(idx)} sample(s) failed on {label}"
                       + (f": {errors[0]}" if errors else ""))
    coverage, detail = cases.coverage_at(idx)
    if coverage not in analysis.COMPARABLE_COVERAGES and coverage != analysis.COVERAGE_UNKNOWN:
        reasons.append(f"{delegate} delegate {coverage} on {label} ({detail})")
    if objective == "sustained":
        rows = cases.frame.iloc[idx]
        windows = rows[(rows["phase"] == "sustained") & (rows["status"] == "ok")
                       & rows["inference_avg_us"].notna()]
        order = windows.sort_values(["repeat", "window_offset_s"] if "window_offset_s"
                                    in windows.columns else ["repeat"])
        series = order["inference_avg_us"].astype(float).reset_index(drop=True)
        series = series.iloc[-tail_windows:] if tail_windows > 0 else series
        values = series.to_numpy(dtype=float)
        rounds = np.arange(len(values), dtype=float)
        need = 2  # a Welch interval needs two windows
        if not len(values):
            reasons.append(f"no sustained-mode windows on {label} (objective sustained)")
            need = 0
    else:
        usable = ((status == "ok") & ~np.isnan(cases.col("inference_avg_us")[idx]))
        if not include_tainted:
            usable &= ~cases.col("tainted")[idx]
        used = idx[np.asarray(usable, dtype=bool)]
        rounds, values = analysis.round_medians(cases.col("round")[used],
                                                cases.col("inference_avg_us")[used])
        need = analysis.MIN_N_FOR_VERDICT
    if len(values) < need:
        reasons.append(f"only {len(values)} usable sample(s) on {label}; at least {need} needed")
    ok = idx[status == "ok"]
    mem = [v for v in (_nanmedian(cases.col("peak_mem_mb")[ok]),
                       _nanmedian(cases.col("vmhwm_mb", numeric=True)[ok])
                       if "vmhwm_mb" in cases.frame.columns else math.nan)
           if not math.isnan(v)]
    if max_memory_mb is not None:
        if mem and max(mem) > max_memory_mb:
            reasons.append(f"memory {max(mem):.1f} MB > {max_memory_mb:g} MB on {label}")
        elif not mem:
            notes.append(f"memory not measured on {label}")
    if check_fidelity:
        why, note = _fidelity_verdict(wrong, serial, label, model, quant, delegate, threads)
        if why:
            reasons.append(why)
        if note:
            notes.append(note)
    masks = ([m for m in cases.col("cpu_mask", as_str=True)[ok] if m]
             if "cpu_mask" in cases.frame.columns else [])
    mask = max(sorted(set(masks)), key=masks.count) if masks else ""
    value = _statistic(values, objective)
    return _Measured(serial, values, rounds, value, analysis.median_ci(values), tuple(reasons),
                     mask, tuple(notes))


def _statistic(values: np.ndarray, objective: str) -> float:
    if len(values) == 0:
        return math.nan
    if objective == "p90":
        return float(np.percentile(values, 90))
    return float(np.median(values))


class _Chooser:
    """Compares candidates on each device and applies the significance/simplicity rule."""

    def __init__(self, objective: str, level: float, min_effect: float, seed: int) -> None:
        self.objective = objective
        self.level = level
        self.min_effect = min_effect
        self.seed = seed

    def compare(self, a: _Candidate, b: _Candidate) -> list[_Comparison]:
        """Per device: latency ratio b / a with a CI; significant when a is clearly faster."""
        out = []
        for ma, mb in zip(a.per_device, b.per_device, strict=True):
            ci = self._ratio_ci(mb, ma)
            sig = (not math.isnan(ci.low) and ci.low > 1.0
                   and ci.ratio >= 1.0 + self.min_effect)
            out.append(_Comparison(ma.device, ci, sig))
        return out

    def _ratio_ci(self, slow: _Measured, fast: _Measured) -> analysis.RatioCI:
        if self.objective == "sustained":
            return analysis.ratio_ci_independent(slow.values, fast.values, level=self.level,
                                                 seed=self.seed)
        # paired by round: the rounds both have, in round order
        _, i_s, i_f = np.intersect1d(slow.rounds, fast.rounds, assume_unique=True,
                                     return_indices=True)
        s, f = slow.values[i_s], fast.values[i_f]
        if self.objective == "p50":
            if len(s) < 2:
                return analysis.ratio_ci_independent(slow.values, fast.values,
                                                     level=self.level, seed=self.seed)
            return analysis.ratio_ci(s, f, level=self.level, seed=self.seed)
        return _p90_ratio_ci(s, f, self.level, self.seed)

    def pick(self, candidates: Sequence[_Candidate], labels: Mapping[str, str]
             ) -> tuple[_Candidate, Evidence]:
        """The choice among `candidates` and the evidence for it."""
        ranked = sorted(candidates, key=lambda c: (c.score, c.cost))
        best = ranked[0]
        pool = [best]
        for other in ranked[1:]:
            if not all(c.significant for c in self.compare(best, other)):
                pool.append(other)
        choice = min(pool, key=lambda c: c.cost)
        runner: _Candidate | None = best if choice is not best else (
            ranked[1] if len(ranked) > 1 else None)
        comps = self.compare(choice, runner) if runner is not None else []
        significant = bool(comps) and all(c.significant for c in comps)
        stat = _STATISTIC[self.objective]
        margin = (runner.score / choice.score - 1.0) if runner is not None else math.nan
        weakest = min(comps, key=lambda c: (c.ci.low if not math.isnan(c.ci.low)
                                            else -math.inf)) if comps else None
        why = self._why(choice, best, runner, pool, comps, significant, margin)
        devices = []
        for m in choice.per_device:
            comp = next((c for c in comps if c.device == m.device), None)
            devices.append(DeviceEvidence(
                device=m.device, label=labels.get(m.device, m.device), value_us=m.value_us,
                n=len(m.values), ci_low_us=m.ci.low, ci_high_us=m.ci.high, ci_level=m.ci.level,
                ratio=comp.ci.ratio if comp else math.nan,
                ratio_ci_low=comp.ci.low if comp else math.nan,
                ratio_ci_high=comp.ci.high if comp else math.nan,
                ratio_ci_level=comp.ci.level if comp else math.nan,
                ratio_method=comp.ci.method if comp else ""))
        evidence = Evidence(
            statistic=stat + (" (geometric mean over the tier's devices)"
                              if len(choice.per_device) > 1 else ""),
            value_us=choice.score, n=sum(len(m.values) for m in choice.per_device),
            runner_up=runner.label if runner is not None else "",
            runner_up_value_us=runner.score if runner is not None else math.nan,
            margin=margin,
            margin_ci_low=weakest.ci.low - 1.0 if weakest else math.nan,
            margin_ci_high=weakest.ci.high - 1.0 if weakest else math.nan,
            margin_ci_level=weakest.ci.level if weakest else math.nan,
            significant=significant, why=why, devices=tuple(devices))
        return choice, evidence

    def _why(self, choice: _Candidate, best: _Candidate, runner: _Candidate | None,
             pool: Sequence[_Candidate], comps: Sequence[_Comparison], significant: bool,
             margin: float) -> str:
        if runner is None:
            return f"{choice.label} is the only eligible configuration"
        cis = "; ".join(f"{c.device}: ratio {c.ci.ratio:.3f}, {c.ci.level:.0%} CI "
                        f"[{c.ci.low:.3f}, {c.ci.high:.3f}]" for c in comps)
        if choice is best and significant:
            return (f"{choice.label} is the fastest and significantly faster than the runner-up "
                    f"{runner.label} by {margin:+.1%} ({cis})")
        if choice is best:
            others = ", ".join(c.label for c in pool if c is not choice)
            return (f"{choice.label} is the fastest; it cannot be told apart from {others} "
                    f"(runner-up {runner.label}: {margin:+.1%}; {cis}) and is also the "
                    "simplest of them")
        return (f"{best.label} is the fastest, but {choice.label} is only "
                f"{-margin / (1.0 + margin):.1%} slower and the difference is not significant "
                f"({cis}); chose the simpler {choice.label} (simplicity: CPU path over "
                "accelerators, then fewer threads, then fp32 over quantized)")


def _p90_ratio_ci(slow: np.ndarray, fast: np.ndarray, level: float, seed: int
                  ) -> analysis.RatioCI:
    n = len(slow)
    if n == 0:
        return analysis.RatioCI(math.nan, math.nan, math.nan, math.nan, "none (no pairs)",
                                math.nan)
    ratio = float(np.percentile(slow, 90) / np.percentile(fast, 90))
    geomean = float(np.exp(np.mean(np.log(slow) - np.log(fast))))
    if n < MIN_PAIRS_FOR_P90:
        return analysis.RatioCI(ratio, math.nan, math.nan, math.nan,
                                f"none (n={n} < {MIN_PAIRS_FOR_P90} pairs for a p90 CI)",
                                geomean)
    if np.allclose(slow / fast, (slow / fast)[0]):
        return analysis.RatioCI(ratio, ratio, ratio, level, "degenerate (identical ratios)",
                                geomean)

    def statistic(s: np.ndarray, f: np.ndarray, axis: int) -> np.ndarray:
        return np.asarray(np.percentile(s, 90, axis=axis) / np.percentile(f, 90, axis=axis))

    res = stats.bootstrap((slow, fast), statistic, paired=True, vectorized=True,
                          n_resamples=analysis.BOOTSTRAP_RESAMPLES, confidence_level=level,
                          method="percentile", rng=np.random.default_rng(seed))
    return analysis.RatioCI(ratio, float(res.confidence_interval.low),
                            float(res.confidence_interval.high), level,
                            f"paired percentile bootstrap of the p90 ratio (n={n}, seed {seed})",
                            geomean)


def _fallback_chain(choice: _Candidate, eligible: Sequence[_Candidate], chooser: _Chooser,
                    labels: Mapping[str, str]) -> list[_Candidate]:
    by_delegate: dict[str, list[_Candidate]] = {}
    for c in eligible:
        by_delegate.setdefault(c.delegate, []).append(c)
    reps = [chooser.pick(group, labels)[0] for d, group in by_delegate.items()
            if d != choice.delegate]
    reps.sort(key=lambda c: (c.score, c.cost))
    chain = [choice]
    on_cpu = choice.delegate in CPU_PATH_DELEGATES
    for rep in reps:
        if chain[-1].delegate == PLAIN_CPU:
            break
        if on_cpu and rep.delegate not in CPU_PATH_DELEGATES:
            continue  # an accelerator after a CPU path would never be reached usefully
        chain.append(rep)
        on_cpu = on_cpu or rep.delegate in CPU_PATH_DELEGATES
    return chain


def _choice(c: _Candidate) -> ConfigChoice:
    masks = tuple(sorted((m.device, m.cpu_mask) for m in c.per_device))
    distinct = {m for _, m in masks}
    return ConfigChoice(delegate=c.delegate, quantization=c.quantization, threads=c.threads,
                        cpu_mask=distinct.pop() if len(distinct) == 1 else "",
                        cpu_mask_by_device=masks, value_us=c.score)


# --- small helpers -----------------------------------------------------------------------------


def _nanmedian(values: np.ndarray) -> float:
    """`_median` of a float array: the median of its non-NaN values, NaN when there are none."""
    x = values[~np.isnan(values)]
    return float(np.median(x)) if len(x) else math.nan


def _nan_or_none_key(v: Any) -> bool:
    """A missing group key (what `dropna()` drops)."""
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _nan_or_none(v: Any) -> bool:
    try:
        return v is None or math.isnan(float(v))
    except (TypeError, ValueError):
        return True


def _int(v: Any) -> int | None:
    return None if _nan_or_none(v) else int(v)


def _f(v: Any) -> float:
    return math.nan if v is None else float(v)


def _r(v: float | None, digits: int) -> float | None:
    """Rounded for a stable, readable file; NaN becomes null."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return round(float(v), digits)


# --- files and the store (used by the CLI) -----------------------------------------------------


def policy_text(policy: Policy, path: Path) -> str:
    """The policy as JSON, or YAML when `path` ends in .yaml/.yml."""
    data = policy.to_dict()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def write_policy_file(policy: Policy, path: Path) -> None:
    """Write the policy (JSON or YAML by suffix) atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(policy_text(policy, path), encoding="utf-8")
        tmp.replace(path)
    except OSError as e:
        raise FarmError(f"{path}: cannot write the policy: {e.strerror}") from None


def read_policy_file(path: Path) -> dict[str, Any]:
    """A policy file (JSON or YAML) as a dict; FarmError naming the file when unusable."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise FarmError(f"{path}: cannot read the previous policy: {e.strerror}") from None
    import yaml

    try:
        data = (yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text))
    except (ValueError, yaml.YAMLError) as e:
        raise FarmError(f"{path}: not a policy file: {e}") from None
    if not isinstance(data, dict) or data.get("kind") != "farm-policy":
        raise FarmError(f"{path}: not a farm policy file (no 'kind: farm-policy')")
    if data.get("schema_version") != POLICY_SCHEMA_VERSION:
        raise FarmError(f"{path}: schema_version {data.get('schema_version')!r} is not "
                        f"supported; allowed: {POLICY_SCHEMA_VERSION}")
    return data


def policy_for_run(db: Path, run_ref: str, *, objective: str = "p50",
                   max_memory_mb: float | None = None, fidelity: bool | None = None,
                   level: float = 0.95, include_tainted: bool = False) -> Policy:
    """Read one run from the store and make its policy (`run_ref`: id, prefix or 'last')."""
    from farm.errors import StoreError
    from farm.store import Store

    if not Path(db).exists():
        raise StoreError(f"{db}: no results database yet; run `farm run --matrix sweep.yaml` "
                         "first or pass --db")
    with Store(db) as store:
        run_id = store.resolve_run(run_ref)
        run = store.run(run_id)
        samples = store.load_samples(run_id)
        devices = store.devices(run_id)
        rows = store.fidelity(run_id)
    return make_policy(samples, devices, rows, objective, run_id=run_id,
                       max_memory_mb=max_memory_mb, fidelity=fidelity, level=level,
                       include_tainted=include_tainted,
                       tail_windows=_tail_windows(run.get("sweep_json")))


def _tail_windows(sweep_json: Any) -> int:
    """The sweep's sustained tail_windows (the first rule's), else the default."""
    try:
        sweep = json.loads(sweep_json) if isinstance(sweep_json, str) else {}
        rules = sweep.get("sustained") or []
        return int(rules[0].get("tail_windows", DEFAULT_TAIL_WINDOWS)) if rules else \
            DEFAULT_TAIL_WINDOWS
    except (ValueError, TypeError, AttributeError, IndexError):
        return DEFAULT_TAIL_WINDOWS
