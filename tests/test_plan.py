"""Matrix expansion and scheduling (pure)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from farm import config, plan
from farm.devices import DeviceInfo
from farm.models import ModelVariant, Rule

ROOT = Path(__file__).resolve().parent.parent
DELEGATES = config.load_delegates(ROOT / "delegates")


def sweep(**over: object):
    data = {"schema_version": 1,
            "models": [{"name": "m", "source": "keras:MobileNetV2", "input_shape": [8, 8, 3]}],
            "quantizations": ["fp32", "int8"], "delegates": ["cpu", "xnnpack", "gpu"],
            "threads": [1, 4], "repeats": 3}
    data.update(over)
    return config.parse_sweep(data, file="s.yaml", sha256="0" * 64, base=ROOT,
                              delegates=DELEGATES)


HOST = DeviceInfo(serial="host", kind="local", simulated=False, abis=("x86_64",), cpu_count=2)
PHONE = DeviceInfo(serial="127.0.0.1:7001", kind="adb", simulated=True, model="SM-S921B",
                   abis=("arm64-v8a",), cpu_count=8, has_gpu=True)


def variants(ok: bool = True) -> dict:
    return {("m", q): ModelVariant(model="m", quantization=q, status="ok" if ok else "failed",
                                   sha256=q * 8, error="" if ok else "boom") for q in
            ("fp32", "int8")}


def test_expand_product_and_skips() -> None:
    cases = plan.expand(sweep(), [HOST, PHONE], DELEGATES, variants())
    assert len(cases) == 2 * 2 * 3 * 2
    host = [c for c in cases if c.case.device == "host"]
    skipped = {c.case.label(): c.skip_reason for c in host if c.skip_reason}
    # GPU needs a GPU; 4 threads exceed the host's 2 CPUs.
    assert skipped["m/fp32/gpu/t1"] == "gpu needs gpu, which the host does not have"
    assert skipped["m/fp32/cpu/t4"] == "4 threads exceed the device's limit of 2"
    phone = {c.case.label(): c.skip_reason for c in cases if c.case.device == PHONE.serial}
    assert phone["m/int8/gpu/t4"] == ""
    assert all(not r for r in phone.values())


def test_case_ids_are_stable_and_distinct() -> None:
    a = plan.expand(sweep(), [HOST, PHONE], DELEGATES, variants())
    b = plan.expand(sweep(), [PHONE, HOST], DELEGATES, variants())
    assert [c.case.case_id for c in a] == [c.case.case_id for c in b]
    assert len({c.case.case_id for c in a}) == len(a)
    other = plan.expand(sweep(), [HOST], DELEGATES, variants(), binary_sha256={"host": "ff"})
    assert {c.case.case_id for c in other}.isdisjoint({c.case.case_id for c in a})


def test_failed_conversion_becomes_failed_cases() -> None:
    cases = plan.expand(sweep(), [HOST], DELEGATES, variants(ok=False))
    assert {c.skip_status for c in cases} == {"failed"}
    assert all(c.skip_reason == "conversion failed: boom" for c in cases)


def test_include_exclude_and_device_filter() -> None:
    s = sweep(exclude=[{"delegate": ["gpu"]}], include=[{"quantization": ["int8"]}])
    cases = plan.expand(s, [HOST, PHONE], DELEGATES, variants())
    assert {c.case.delegate for c in cases} == {"cpu", "xnnpack"}
    assert {c.case.quantization for c in cases} == {"int8"}
    only_phone = plan.expand(sweep(devices=["SM-*"]), [HOST, PHONE], DELEGATES, variants())
    assert {c.case.device for c in only_phone} == {PHONE.serial}
    assert Rule(device=("127.*",)).matches(model="m", quantization="fp32", delegate="cpu",
                                           threads=1, device=PHONE.serial)


def test_schedule_interleaves_rounds() -> None:
    cases = [c.case for c in plan.expand(sweep(), [PHONE], DELEGATES, variants())]
    order = plan.schedule(cases, 4, seed=7)
    assert len(order) == 4 * len(cases)
    # every round holds every case exactly once
    for r in range(4):
        assert Counter(c.case_id for rr, _, c in order if rr == r) == Counter(
            c.case_id for c in cases)
    rounds = [[c.case_id for rr, _, c in order if rr == r] for r in range(4)]
    assert len({tuple(r) for r in rounds}) > 1  # shuffled differently per round
    assert order == plan.schedule(list(reversed(cases)), 4, seed=7)  # deterministic
