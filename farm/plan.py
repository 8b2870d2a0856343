"""Pure matrix expansion: sweep × devices × delegates × variants -> cases with stable ids.

Never touches a device or a file. `expand` returns the runnable cases and, as data, the cases
that cannot run with the reason (capability missing, conversion failed, excluded by a rule).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase

from farm.devices import DeviceInfo
from farm.models import Case, DelegateSpec, ModelVariant, Rule, SustainedSpec, Sweep


@dataclass(frozen=True, slots=True)
class PlannedCase:
    """A case plus why it cannot run ("" when it can) and the status it gets if it cannot."""

    case: Case
    skip_reason: str = ""
    skip_status: str = "skipped"  # "skipped" (not applicable) or "failed" (e.g. conversion)


def case_id(*, serial: str, model_sha256: str, delegate: str, threads: int, quantization: str,
            binary_sha256: str, model: str = "") -> str:
    """Stable id: the same inputs give the same id in every run (resume is a set difference)."""
    key = "\x1f".join((serial, model, model_sha256, delegate, str(threads), quantization,
                       binary_sha256))
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def device_matches(info: DeviceInfo, patterns: Sequence[str]) -> bool:
    """True when no pattern is given or one matches the serial or the model name."""
    return not patterns or any(
        fnmatchcase(info.serial, p) or (info.model and fnmatchcase(info.model, p))
        for p in patterns
    )


def capabilities(info: DeviceInfo) -> set[str]:
    """What a device offers to delegates."""
    caps = set()
    if info.has_gpu:
        caps.add("gpu")
    if info.has_nnapi:
        caps.add("nnapi")
    if dict(info.extra).get("hexagon") == "1":
        caps.add("hexagon")
    return caps


def _applicability(spec: DelegateSpec, info: DeviceInfo, quantization: str,
                   skip_delegates: Sequence[str]) -> str:
    if spec.name in skip_delegates:
        return f"delegate {spec.name} is skipped for this device in devices.yaml"
    missing = [r for r in spec.requires if r not in capabilities(info)]
    if missing:
        where = "the host" if info.kind == "local" else "this device"
        return f"{spec.name} needs {', '.join(missing)}, which {where} does not have"
    if spec.abis and info.abis and not set(spec.abis) & set(info.abis):
        return (f"{spec.name} supports ABIs {', '.join(spec.abis)}; the device has "
                f"{', '.join(info.abis)}")
    if quantization not in spec.quantizations:
        return (f"{spec.name} does not apply to {quantization} models "
                f"(declared: {', '.join(spec.quantizations)})")
    return ""



def _wanted(sweep: Sweep, *, model: str, quantization: str, delegate: str, threads: int,
            device: str) -> bool:
    """The sweep's include/exclude rules: no exclude rule matches, and an include rule does
    (when there are any)."""
    def hit(rule: Rule) -> bool:
        return rule.matches(model=model, quantization=quantization, delegate=delegate,
                            threads=threads, device=device)

    return not any(hit(r) for r in sweep.exclude) and \
        (not sweep.include or any(hit(r) for r in sweep.include))

def expand(sweep: Sweep, devices: Sequence[DeviceInfo], delegates: Mapping[str, DelegateSpec],
           variants: Mapping[tuple[str, str], ModelVariant], *,
           binary_sha256: Mapping[str, str] | None = None,
           max_threads: Mapping[str, int] | None = None,
           skip_delegates: Mapping[str, Sequence[str]] | None = None) -> list[PlannedCase]:
    """Every (device, model, quantization, delegate, threads) in a deterministic order."""
    out: list[PlannedCase] = []
    for info in sorted(devices, key=lambda d: d.serial):
        if not device_matches(info, sweep.devices):
            continue
        bin_sha = (binary_sha256 or {}).get(info.serial, "")
        limit = (max_threads or {}).get(info.serial) or info.cpu_count or 10**6
        skips = (skip_delegates or {}).get(info.serial, ())
        for model in sweep.models:
            for quant in sweep.quantizations:
                variant = variants.get((model.name, quant))
                for dname in sweep.delegates:
                    for threads in sweep.threads:
                        if not _wanted(sweep, model=model.name, quantization=quant,
                                       delegate=dname, threads=threads, device=info.serial):
                            continue
                        sha = variant.sha256 if variant else ""
                        case = Case(
                            case_id=case_id(serial=info.serial, model=model.name,
                                            model_sha256=sha or f"unbuilt:{quant}",
                                            delegate=dname, threads=threads, quantization=quant,
                                            binary_sha256=bin_sha),
                            device=info.serial, model=model.name, quantization=quant,
                            delegate=dname, threads=threads, variant_sha256=sha)
                        if variant is None or variant.status != "ok":
                            error = variant.error if variant else "variant was not built"
                            out.append(PlannedCase(case, f"conversion failed: {error}",
                                                   "failed"))
                            continue
                        reason = _applicability(delegates[dname], info, quant, skips)
                        if not reason and threads > limit:
                            reason = (f"{threads} threads exceed the device's limit of "
                                      f"{limit}")
                        out.append(PlannedCase(case, reason))
    return out


def sustained_cases(sweep: Sweep, planned: Sequence[PlannedCase]
                    ) -> list[tuple[Case, SustainedSpec]]:
    """The runnable cases a `sustained:` rule selects, as sustained cases with their own ids."""
    out = []
    for p in planned:
        if p.skip_reason:
            continue
        spec = sweep.sustained_for(p.case)
        if spec is None:
            continue
        key = "\x1f".join((p.case.case_id, "sustained", f"{spec.duration_s:g}",
                           f"{spec.window_s:g}"))
        out.append((replace(p.case, case_id=hashlib.sha256(key.encode()).hexdigest()[:16]),
                    spec))
    return out


def schedule(cases: Sequence[Case], repeats: int, seed: int) -> list[tuple[int, int, Case]]:
    """Randomized interleaved rounds: every case once per round, shuffled per round.

    Returns (round, position, case). Interleaving spreads slow drifts (heat, background load)
    over all cases instead of biasing whichever case happened to run last.
    """
    rng = random.Random(seed)
    order: list[tuple[int, int, Case]] = []
    base = sorted(cases, key=lambda c: c.case_id)
    for r in range(repeats):
        shuffled = list(base)
        rng.shuffle(shuffled)
        order.extend((r, pos, c) for pos, c in enumerate(shuffled))
    return order
