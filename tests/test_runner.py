"""The runner with scripted devices: interleaved samples, flags, failures as data, resume."""

from __future__ import annotations

import threading
from pathlib import Path

from farm import config, plan, runner
from farm.devices import DeviceInfo, ShellResult
from farm.devices.fake import FakeDevice
from farm.models import ModelVariant
from farm.store import Store

ROOT = Path(__file__).resolve().parent.parent
DELEGATES = config.load_delegates(ROOT / "delegates")
DATA = ROOT / "tests" / "data" / "benchmark_model"


def transcript(name: str) -> str:
    """A real transcript body (header stripped)."""
    text = next(DATA.glob(f"{name}*.txt")).read_text()
    return text.split("# ---\n", 1)[1] if "# ---\n" in text else text


OK_XNNPACK = transcript("19_")       # explicit XNNPACK, partial
OK_CPU = transcript("18_")           # --use_xnnpack=false, percentiles
FAILED = transcript("08_")           # NNAPI failed to apply


def sweep(tmp_path: Path, **over: object):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"\0\0\0\0TFL3" + b"\0" * 100)
    data = {"schema_version": 1, "models": [str(model)], "quantizations": ["fp32"],
            "delegates": ["cpu", "xnnpack"], "threads": [1, 2], "repeats": 3,
            "cooldown": {"delta_c": 2.0, "timeout_s": 5}}
    data.update(over)
    return config.parse_sweep(data, file="s.yaml", sha256="0" * 64, base=tmp_path,
                              delegates=DELEGATES)


def setup(tmp_path: Path, script, files=None, repeats=3):
    s = sweep(tmp_path, repeats=repeats)
    info = DeviceInfo(serial="fake1", kind="adb", simulated=True, cpu_count=4,
                      abis=("arm64-v8a",))
    dev = FakeDevice(info, script, files=files)
    v = ModelVariant(model="m", quantization="fp32", status="ok", path=s.models[0].path,
                     sha256="a" * 64, size_bytes=110)
    vmap = {("m", "fp32"): v}
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF" + b"\0" * 60)
    target = runner.DeviceTarget(device=dev, info=info,
                                 binary=runner.BinarySpec(sha256="b" * 64, label="bm",
                                                          local_path=binary),
                                 cooldown_delta_c=2.0, cooldown_timeout_s=5)
    planned = plan.expand(s, [info], DELEGATES, vmap)
    order = plan.schedule([p.case for p in planned if not p.skip_reason], s.repeats, 0)
    return s, dev, vmap, target, planned, order


def script_by_delegate(argv: tuple[str, ...]) -> ShellResult:
    if argv[0] == "dumpsys":
        return ShellResult(argv, 0, "Thermal Status: 0\n" if argv[1] == "thermalservice" else
                           "  AC powered: false\n  USB powered: true\n  level: 80\n"
                           "  temperature: 290\n")
    out = OK_CPU if "--use_xnnpack=false" in argv else OK_XNNPACK
    return ShellResult(argv, 0, out, duration_s=0.01)


def test_run_stores_interleaved_flagged_samples(tmp_path: Path) -> None:
    s, dev, vmap, target, planned, order = setup(tmp_path, script_by_delegate, files={
        "/sys/class/thermal/thermal_zone0/type": "cpu-0\n",
        "/sys/class/thermal/thermal_zone0/temp": "31000\n"})
    events: list[runner.Event] = []
    with Store(tmp_path / "db.sqlite") as store:
        store.start_run("r1")
        stats = runner.run([target], planned, order, run_id="r1", store=store,
                           params=s.params, delegates=DELEGATES, variants=vmap,
                           on_event=events.append)
        frame = store.load_samples("r1")
    assert stats.samples_ok == 12 and stats.samples_failed == 0
    assert len(frame) == 12 and set(frame["repeat"]) == {0, 1, 2}
    # one benchmark_model process per sample, each with its own argv
    bench_calls = [c for c in dev.calls if c[0].endswith("benchmark_model")]
    assert bench_calls[0][1:] == ("--help",)  # the smoke check, once, before any sample
    bench_calls = bench_calls[1:]
    assert len(bench_calls) == 12 and all("--help" not in c for c in bench_calls)
    assert all(f"--graph={dev.workdir}/models/{'a' * 64}.tflite" in c for c in bench_calls)
    # interleaved: within each round every case runs once
    for r in range(3):
        assert frame[frame["round"] == r]["case_id"].nunique() == 4
    x = frame[frame["delegate"] == "xnnpack"].iloc[0]
    assert x["delegation"] == "partial" and "partial_delegation" in x["flags"]
    assert x["inference_avg_us"] == 899641
    c = frame[frame["delegate"] == "cpu"].iloc[0]
    assert c["flags"] == "" and c["temp_before_c"] == 31.0 and c["thermal_status_before"] == 0
    assert c["charging"] == "usb" and c["battery_level"] == 80
    assert c["binary_sha256"] == "b" * 64 and c["variant_sha256"] == "a" * 64
    assert stats.bytes_pushed == 108 + 64
    kinds = [e.kind for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    finished = [e for e in events if e.kind == "sample_finished"]
    assert [e.index for e in finished] == list(range(1, 13)) and finished[-1].total == 12


def test_failures_are_data_and_resume_runs_only_missing(tmp_path: Path) -> None:
    calls = {"n": 0}

    def flaky(argv: tuple[str, ...]) -> ShellResult:
        if argv[0] == "dumpsys":
            return ShellResult(argv, 1, "")
        calls["n"] += 1
        if calls["n"] == 2:
            return ShellResult(argv, 1, FAILED)
        if calls["n"] == 3:
            return ShellResult(argv, 139, "INFO: STARTING!\n", "Segmentation fault\n")
        if calls["n"] == 4:
            return ShellResult(argv, None, "", timed_out=True)
        return ShellResult(argv, 0, OK_CPU)

    s, dev, vmap, target, planned, order = setup(tmp_path, flaky)
    stop = threading.Event()
    with Store(tmp_path / "db.sqlite") as store:
        store.start_run("r1")
        first = runner.run([target], planned, order[:6], run_id="r1", store=store,
                           params=s.params, delegates=DELEGATES, variants=vmap, stop=stop)
        assert first.samples_ok == 3 and first.samples_failed == 3
        frame = store.load_samples("r1")
        errors = list(frame[frame["status"] == "failed"]["error"])
        assert any("NNAPI" in e or "Failed to apply" in e for e in errors), errors
        assert any("139" in e for e in errors), errors
        assert any("timed out" in e for e in errors), errors
        assert set(frame["flags"]) >= {"no_sensors"}
        # resume: the same schedule again only runs what is missing
        second = runner.run([target], planned, order, run_id="r1", store=store,
                            params=s.params, delegates=DELEGATES, variants=vmap)
        frame = store.load_samples("r1")
    assert second.samples_ok + second.samples_failed == len(order) - 6
    assert len(frame) == len(order)
    assert not frame.duplicated(["case_id", "repeat"]).any()


def test_device_errors_quarantine_the_device(tmp_path: Path) -> None:
    from farm.errors import DeviceError

    def dead(argv: tuple[str, ...]) -> ShellResult:
        if argv[0] == "dumpsys":
            return ShellResult(argv, 1, "")
        raise DeviceError("fake1", "shell", "device 'fake1' not found")

    s, dev, vmap, target, planned, order = setup(tmp_path, dead)
    with Store(tmp_path / "db.sqlite") as store:
        store.start_run("r1")
        stats = runner.run([target], planned, order, run_id="r1", store=store,
                           params=s.params, delegates=DELEGATES, variants=vmap)
        frame = store.load_samples("r1")
    assert stats.samples_failed == runner.MAX_CONSECUTIVE_DEVICE_ERRORS
    assert stats.samples_skipped == len(order) - runner.MAX_CONSECUTIVE_DEVICE_ERRORS
    skipped = frame[frame["status"] == "skipped"]
    assert skipped["error"].str.contains("quarantined after 3 consecutive").all()
    assert len(frame) == len(order)


def test_cooldown_gate_waits_for_temperature(tmp_path: Path) -> None:
    temps = iter([30000, 45000, 44000, 31000] + [30500] * 100)
    files: dict[str, str] = {"/sys/class/thermal/thermal_zone0/type": "cpu\n"}

    class Zone(dict):
        def __contains__(self, k: object) -> bool:
            return k in files or k == "/sys/class/thermal/thermal_zone0/temp"

        def __iter__(self):
            return iter([*files, "/sys/class/thermal/thermal_zone0/temp"])

        def __getitem__(self, k: str) -> str:
            if k.endswith("/temp"):
                return f"{next(temps)}\n"
            return files[k]

    s, dev, vmap, target, planned, order = setup(tmp_path, script_by_delegate, repeats=1)
    dev.files = Zone()
    clock = {"t": 0.0}
    store = Store(tmp_path / "db.sqlite")
    store.start_run("r1")
    progress = runner._Progress(1, lambda e: None)
    w = runner.DeviceWorker(target, run_id="r1", store=store, params=s.params,
                            delegates=DELEGATES, variants=vmap, progress=progress,
                            stop=threading.Event(),
                            sleep=lambda d: clock.__setitem__("t", clock["t"] + d),
                            monotonic=lambda: clock["t"])
    w.stage([p.case for p in planned])  # baseline 30 °C
    probes_before = len(dev.calls)
    waited, reason, probe = w.wait_cool()
    # the idle reading staging just took opens the first gate: no second probe
    assert (reason, waited, probe.max_temp_c, len(dev.calls)) == ("cool", 0.0, 30.0,
                                                                   probes_before)
    clock["t"] += runner.FRESH_PROBE_S + 1  # later, the gate reads the sensors itself
    waited, reason, probe = w.wait_cool()
    assert reason == "cool" and probe.max_temp_c == 31.0
    assert waited == 2.0  # 45 and 44 °C were over baseline + 2: two polls, then cool
    store.close()


def test_a_crashed_worker_loses_nothing(tmp_path: Path) -> None:
    """A bug outside any sample (here: the device answers --help with an exception farm does not
    expect) stops that device only; every planned sample is still recorded, with the reason."""
    def broken(argv: tuple[str, ...]) -> ShellResult:
        if argv[-1:] == ("--help",):
            raise RuntimeError("transport exploded")
        return script_by_delegate(argv)

    s, dev, vmap, target, planned, order = setup(tmp_path, broken)
    dev.answer_help = False
    with Store(tmp_path / "db.sqlite") as store:
        store.start_run("r1")
        stats = runner.run([target], planned, order, run_id="r1", store=store,
                           params=s.params, delegates=DELEGATES, variants=vmap)
        frame = store.load_samples("r1")
    assert len(frame) == len(order) == 12 and (frame["status"] == "skipped").all()
    assert frame["error"].str.contains("internal error: RuntimeError").all()
    assert stats.samples_skipped == 12
