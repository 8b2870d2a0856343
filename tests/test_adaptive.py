"""Adaptive repeats: rounds are added for a (variant, fp32) pair only while its speedup CI
includes 1, and never beyond the budget. The device is scripted with benchmark_model output
rendered by farm.bmformat from lognormal latencies around known means."""

from __future__ import annotations

import random
from pathlib import Path

from farm import config, plan, runner
from farm.bmformat import FormatInput, format_output
from farm.devices import DeviceInfo, ShellResult
from farm.devices.fake import FakeDevice
from farm.models import ModelVariant
from farm.store import Store

ROOT = Path(__file__).resolve().parent.parent
DELEGATES = config.load_delegates(ROOT / "delegates")


def run_sweep(tmp_path: Path, means_us: dict[str, float], cv: float, *, max_repeats: int,
              repeats: int = 3) -> tuple[Store, list[runner.Event]]:
    model = tmp_path / "m.tflite"
    model.write_bytes(b"\0\0\0\0TFL3" + b"\0" * 100)
    data = {"schema_version": 1, "models": [{"name": "m", "source": str(model)}],
            "quantizations": list(means_us), "delegates": ["cpu"], "threads": [1],
            "repeats": repeats, "adaptive": {"max_repeats": max_repeats},
            "sampler": {"hz": 0}}
    sweep = config.parse_sweep(data, file="s.yaml", sha256="0" * 64, base=tmp_path,
                               delegates=DELEGATES)
    rng = random.Random(7)
    sha = {q: f"{i:064x}" for i, q in enumerate(means_us, start=1)}
    by_sha = {sha[q]: q for q in means_us}

    def script(argv: tuple[str, ...]) -> ShellResult:
        if argv[0] == "dumpsys":  # a phone with no thermal service and no battery
            return ShellResult(argv, 0, "")
        graph = next(a for a in argv if a.startswith("--graph="))
        mean = means_us[by_sha[Path(graph).stem]]
        lat = tuple(int(mean * rng.lognormvariate(0, cv)) for _ in range(20))
        out, err = format_output(FormatInput(graph=graph[8:], regular_us=lat, init_us=1000,
                                             warmup_us=(lat[0],)), era="tf2.19+")
        return ShellResult(argv, 0, out, err, duration_s=0.01)

    info = DeviceInfo(serial="fake1", kind="adb", simulated=True, cpu_count=4,
                      abis=("arm64-v8a",))
    dev = FakeDevice(info, script)
    vmap = {("m", q): ModelVariant(model="m", quantization=q, status="ok", path=str(model),
                                   sha256=sha[q], size_bytes=110) for q in means_us}
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF" + b"\0" * 60)
    target = runner.DeviceTarget(device=dev, info=info, binary=runner.BinarySpec(
        sha256="b" * 64, label="bm", local_path=binary), sampler_hz=0)
    planned = plan.expand(sweep, [info], DELEGATES, vmap)
    order = plan.schedule([p.case for p in planned], sweep.repeats, 0)
    store = Store(tmp_path / "db.sqlite")
    store.start_run("r1")
    events: list[runner.Event] = []
    runner.run([target], planned, order, run_id="r1", store=store, params=sweep.params,
               delegates=DELEGATES, variants=vmap, on_event=events.append,
               adaptive=sweep.adaptive, seed=0)
    return store, events


def rounds(store: Store) -> dict[str, int]:
    df = store.load_samples("r1")
    return df.groupby("quantization")["repeat"].nunique().to_dict()


def test_a_clear_difference_needs_no_extra_rounds(tmp_path: Path) -> None:
    store, _ = run_sweep(tmp_path, {"fp32": 1000.0, "int8": 500.0}, cv=0.01, max_repeats=12)
    assert rounds(store) == {"fp32": 3, "int8": 3}


def test_an_unresolved_pair_gets_rounds_until_the_budget(tmp_path: Path) -> None:
    # identical means: the CI keeps straddling 1, so the pair runs to the budget and no further
    store, events = run_sweep(tmp_path, {"fp32": 1000.0, "int8": 1000.0}, cv=0.05,
                              max_repeats=8)
    assert rounds(store) == {"fp32": 8, "int8": 8}
    df = store.load_samples("r1")
    assert df.groupby(["case_id", "repeat"]).size().max() == 1  # no duplicates
    # the extra rounds are interleaved: both sides in every round
    assert (df.groupby("repeat")["quantization"].nunique() == 2).all()
    done = [e for e in events if e.kind == "run_finished"]
    assert done and done[0].total == 16


def test_only_undecided_pairs_grow(tmp_path: Path) -> None:
    # int8 is clearly faster, fp16 is not distinguishable from fp32
    store, _ = run_sweep(tmp_path, {"fp32": 1000.0, "fp16": 1000.0, "int8": 400.0},
                         cv=0.05, max_repeats=6)
    got = rounds(store)
    assert got["fp16"] == 6 and got["fp32"] == 6 and got["int8"] == 3
