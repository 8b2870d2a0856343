"""The few `sh -c` scripts a phone run is made of: their parsers against golden output captured
from the phone simulator through a real adb server (tests/data/adb/), and how many adb round
trips staging and a sample cost on simulated phones with and without shell v2."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import yaml

from farm import api, probes
from farm.devices import adb
from farm.store import Store
from tests.fixtures_sim import adb_servers, sim_fleet  # noqa: F401 - pytest fixtures

DATA = Path(__file__).resolve().parent / "data" / "adb"
MODEL = Path(__file__).resolve().parent / "data" / "models" / "tiny_fp32.tflite"
W = adb.WORKDIR
PROFILES = ("flagship", "old_armv7")  # shell v2 / legacy shell on a pty (CRLF)
EPOCH = {"flagship": 1795261944, "old_armv7": 1795261947
}  # the phones' clocks at capture


def golden(name: str) -> str:
    """A capture without its two header lines (source, then ---), bytes as captured."""
    return (DATA / f"{name}.txt").read_bytes().decode().split("# ---\n", 1)[1]


@pytest.mark.parametrize("profile", PROFILES)
def test_lock_replies(profile: str) -> None:
    now, taken, held, shas = adb.parse_lock_reply(golden(f"sim_{profile}_lock_taken"))
    assert (now, taken, held) == (EPOCH[profile], True, "")
    # the empty file's sha256; the missing file is simply absent
    assert shas == {f"{W}/models/a.tflite":
                    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}
    now, taken, held, shas = adb.parse_lock_reply(golden(f"sim_{profile}_lock_held"))
    assert (now, taken, held, shas) == (EPOCH[profile], False,
                                        f"{EPOCH[profile]} farm pid 7 on lab, run r1", {})


@pytest.mark.parametrize("profile", PROFILES)
def test_cleanup_listing_and_what_is_stale(profile: str) -> None:
    now, entries = adb.parse_stat_listing(golden(f"sim_{profile}_cleanup"))
    assert now == EPOCH[profile]
    assert sorted(p for _, p in entries) == [f"{W}/bin/abc", f"{W}/models/a.tflite",
                                            f"{W}/models/old.tflite", f"{W}/tmp/out.bin"]
    stale = adb.stale_entries(entries, [f"{W}/models/a.tflite"], now)
    # old and unused, or in tmp/; the recent binary directory and the file in use stay
    assert sorted(stale) == [f"{W}/models/old.tflite", f"{W}/tmp/out.bin"]
    # a kept file inside a directory keeps the directory; without a clock nothing is "old"
    assert adb.stale_entries([(0, f"{W}/bin/abc")], [f"{W}/bin/abc/benchmark_model"], now) == []
    assert adb.stale_entries([(0, f"{W}/models/x.tflite")], [], None) == []
    # names farm never writes, and paths outside its directories, are never removed
    assert adb.stale_entries([(0, f"{W}/models/a b"), (0, "/data/local/tmp/other")], [],
                             now) == []
    # a phone that lists ".." (or "." ) never gets farm's own directory removed
    assert adb.stale_entries([(0, f"{W}/models/.."), (0, f"{W}/tmp/."),
                              (0, f"{W}/tmp//x")], [], now) == []


@pytest.mark.parametrize("profile", PROFILES)
def test_closing_probe_splits_from_the_command_output(profile: str) -> None:
    text = golden(f"sim_{profile}_closing_probe")
    own, after = adb.split_closing_probe(text, "@@farm-after-0123456789ab")
    assert own.replace("\r\n", "\n") == ("benchmark out\noops\n" if profile == "old_armv7"
                                         else "benchmark out\n")
    assert after is not None and "\r" not in after
    probe = probes.parse_tick(after, probes.SensorMap(
        zones=(("cpu", "/sys/class/thermal/thermal_zone1/temp"),), cpus=(0,),
        has_dumpsys=True))
    assert probe.temps_c and probe.temps_c[0][0] == "cpu" and probe.cur_freq_khz
    assert probe.uptime_s is not None and probe.battery_level is not None
    # no marker (the command was killed before it): no probe, output untouched
    assert adb.split_closing_probe("partial output\n", "@@farm-after-0") == (
        "partial output\n", None)
    # a marker the command itself printed earlier does not cut its output short
    own2, after2 = adb.split_closing_probe("x\n@@m\ny\n\n@@m\nprobe\n", "@@m")
    assert (own2, after2) == ("x\n@@m\ny\n", "probe\n")


def test_sections_keep_marker_words_and_normalise_crlf() -> None:
    sec = adb.split_sections("a\r\n@@now 12\r\n@@lock held\r\nowner x\r\n@@sha256\r\n",
                             ("now", "lock", "sha256"))
    assert sec == {"": "a\n", "now": "12\n", "lock": "held\nowner x\n", "sha256": ""}


def test_a_holder_line_cannot_pose_as_a_lock_or_a_checksum() -> None:
    """The lock file is writable by anything on the phone; what it says is only the holder."""
    fake = ("@@now 100\n@@sha256\n@@lock held\n90 farm pid 1\n@@lock taken\n@@sha256\n"
            + "a" * 64 + "  /data/local/tmp/farm/bin/x/benchmark_model\n")
    now, taken, held, shas = adb.parse_lock_reply(fake)
    assert (now, taken, shas) == (100, False, {})
    assert held.startswith("90 farm pid 1")


def test_closing_probe_argv_passes_the_command_as_arguments() -> None:
    argv = adb.closing_probe_argv(["bm", "--graph=/x; rm -rf /", "$(reboot)"], "true", "@@m")
    assert argv[:2] == ["sh", "-c"] and argv[3:] == ["farm-sample", "bm", "--graph=/x; rm -rf /",
                                                     "$(reboot)"]
    assert "rm" not in argv[2] and "reboot" not in argv[2]


def _count_shells(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[str, ...]]]:
    calls: list[tuple[str, tuple[str, ...]]] = []
    real = adb.AdbDevice.shell

    def shell(self: adb.AdbDevice, argv, *, timeout_s):  # type: ignore[no-untyped-def]
        calls.append((threading.current_thread().name, tuple(str(a) for a in argv)))
        return real(self, argv, timeout_s=timeout_s)

    monkeypatch.setattr(adb.AdbDevice, "shell", shell)
    return calls


@pytest.mark.parametrize("profile", PROFILES)
def test_a_warm_run_costs_few_round_trips(profile: str, sim_fleet, tmp_path: Path,  # noqa: F811
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Rerun on a phone that holds the files: discovery 1 shell, staging 3 (lock and hashes;
    --help with the idle reading after it; cleanup), 1 per sample (the closing probe rides
    along), release 1.
    The stored sample still has a closing reading, and its argv is benchmark_model's own."""
    [h] = sim_fleet(profiles=(profile,), time_scale=20.0)

    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({
        "schema_version": 1, "models": [{"name": "tiny", "source": str(MODEL)}],
        "quantizations": ["fp32"], "delegates": ["cpu"], "threads": [1], "repeats": 3,
        "sampler": {"hz": 0.01},
        "run": {"warmup_runs": 0, "warmup_min_secs": 0, "num_runs": 3, "min_secs": 0,
                "max_secs": 2, "timeout_s": 30}}))
    (tmp_path / "devices.yaml").write_text(yaml.safe_dump(
        {"schema_version": 1, "host": "never", "adb_servers": [f"127.0.0.1:{h.adb_port}"]}))
    plan = api.load_plan(tmp_path / "sweep.yaml", devices_file=tmp_path / "devices.yaml")
    kw = dict(db=tmp_path / "db.sqlite", out_dir=tmp_path / "r", cache_dir=tmp_path / "c",
              vendor_dir=tmp_path / "none", report=False)
    api.run_plan(plan, **kw)  # type: ignore[arg-type]
    calls = _count_shells(monkeypatch)
    second = api.run_plan(plan, **kw)  # type: ignore[arg-type]
    assert second.stats.samples_ok == 3 and second.stats.bytes_pushed == 0
    mine = [argv for thread, argv in calls if not thread.startswith("farm-sampler")]
    benchmark = [a for a in mine if any(x.startswith("--graph=") for x in a)]
    assert len(benchmark) == 3 and all(a[:2] == ("sh", "-c") for a in benchmark)
    assert len(mine) == 1 + 3 + 3 + 1, [a[:3] for a in mine]
    with Store(tmp_path / "db.sqlite") as store:
        df = store.load_samples(second.run_id, raw=True)
    assert (df["status"] == "ok").all() and len(df) == 3
    assert df["temp_after_c"].notna().all()  # the closing reading, parsed from the same shell
    for argv_json, env_json, raw in zip(df["argv"], df["env_json"], df["raw_output"],
                                        strict=True):
        argv = json.loads(argv_json)
        assert argv[0].endswith("/benchmark_model") and "farm-sample" not in argv
        after = json.loads(env_json)["series"]["after"]
        assert after["uptime_s"] is not None and after["temps_c"]
        assert "@@farm-after" not in raw and "==> /proc/uptime" not in raw


def test_a_shell_is_one_connection_to_the_adb_server(sim_fleet,  # noqa: F811
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """adbutils asks the server's version before every shell (a second connection, closed
    with a 10 ms sleep); farm's client asks once."""
    [h] = sim_fleet(profiles=("midrange",))
    server = f"127.0.0.1:{h.adb_port}"
    client = adb._client(server)
    dev = adb.AdbDevice(client, h.serial, server=server)
    dev.shell(["true"], timeout_s=10)  # features and the version, once
    made: list[int] = []
    real = type(client).make_connection

    def counting(self, *a, **k):  # type: ignore[no-untyped-def]
        made.append(1)
        return real(self, *a, **k)

    monkeypatch.setattr(type(client), "make_connection", counting)
    for _ in range(3):
        assert dev.shell(["echo", "x"], timeout_s=10).stdout.strip() == "x"
    assert len(made) == 3
