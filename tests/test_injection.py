"""Injection: nothing from a config file, a model file name or a device runs as code.

Shell metacharacters in delegate flags, model names and file names reach the phone only as
quoted argv elements: the simulated phone runs every command through its own mksh-like shell,
so an unquoted `;touch /data/local/tmp/pwned` would create that file there (the canary test
shows it would). Device-provided strings are escaped in the HTML report, remote paths cannot
leave farm's directory, and the host runs argv lists with no shell at all.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from farm import api
from farm.devices.adb import WORKDIR, AdbDevice, check_remote_path
from farm.devices.local import LocalDevice
from farm.errors import DeviceError
from tests import fixtures_sim
from tests.fixtures_sim import SimHandle

adb_servers = fixtures_sim.adb_servers
sim_fleet = fixtures_sim.sim_fleet

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "data" / "models" / "tiny_fp32.tflite"
T = "/data/local/tmp"

# Each would create /data/local/tmp/pwned_<tag> if a shell ever interpreted it.
HOSTILE: dict[str, str] = {
    "semicolon": f"a;touch {T}/pwned_semicolon",
    "subst": f"$(touch {T}/pwned_subst)",
    "backtick": f"`touch {T}/pwned_backtick`",
    "squote": f"x' ; touch {T}/pwned_squote ; echo '",
    "dquote": f'x" ; touch {T}/pwned_dquote ; echo "',
    "and": f"false&&touch {T}/pwned_and",
    "or": f"false||touch {T}/pwned_or",
    "pipe": f"x|touch {T}/pwned_pipe",
    "amp": f"x&touch {T}/pwned_amp",
    "redirect": f"x>{T}/pwned_redirect",
    "newline": f"x\ntouch {T}/pwned_newline",
    "glob": "*",
    "dash": "-rf",
    "dashdash": "--help",
    "brace": f"{{touch,{T}/pwned_brace}}",
    "tilde": "~root",
    "dollar": "$HOME $PATH ${IFS}",
}


def pwned_files(handle: SimHandle) -> list[str]:
    """pwned* files anywhere the tests aim them, seen through `adb shell ls` and the sim's fs."""
    out = handle.device().shell2(f"ls {T}", timeout=30).output
    listed = [n for n in out.split() if "pwned" in n]
    fs = handle.phone.fs
    direct = [n for n in fs.listdir(T) if "pwned" in n] if fs.exists(T) else []
    return sorted(set(listed) | set(direct))


def adb_device(handle: SimHandle) -> AdbDevice:
    return handle.farm_device()  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- the device layer

def test_the_sim_would_run_an_unquoted_injection(sim_fleet) -> None:  # noqa: F811
    """The canary: the same strings, unquoted, do run on the simulated phone."""
    (h,) = sim_fleet(["flagship"], time_scale=50)
    h.device().shell2(f"echo {HOSTILE['semicolon']}", timeout=30)
    h.device().shell2(f"echo {HOSTILE['subst']}", timeout=30)
    assert pwned_files(h) == ["pwned_semicolon", "pwned_subst"]


@pytest.mark.parametrize("profile", ["flagship", "old_armv7"])  # shell v2, and legacy shell
def test_adb_shell_passes_every_argv_element_literally(sim_fleet, profile: str) -> None:  # noqa: F811
    (h,) = sim_fleet([profile], time_scale=50)
    dev = adb_device(h)

    def out(r: Any) -> str:  # the legacy shell runs on a pty, which writes \n as \r\n
        return str(r.stdout).replace("\r\n", "\n") if profile == "old_armv7" else str(r.stdout)

    for tag, s in HOSTILE.items():
        r = dev.shell(["printf", "%s", s], timeout_s=30)
        assert r.returncode == 0, (tag, r)
        assert out(r) == s, (tag, r.stdout)
    r = dev.shell(["printf", "%s|", *HOSTILE.values()], timeout_s=30)
    assert out(r) == "|".join(HOSTILE.values()) + "|"
    assert pwned_files(h) == []


# --------------------------------------------------------------------------- a sweep

def _evil_delegates(tmp: Path) -> Path:
    d = tmp / "delegates"
    d.mkdir()
    shutil.copyfile(ROOT / "delegates" / "cpu.yaml", d / "cpu.yaml")
    flags = [f"--external_delegate_options={HOSTILE['semicolon']}",
             f"--hexagon_lib_path={HOSTILE['subst']}",
             f"--nnapi_accelerator_name={HOSTILE['backtick']}",
             f"--gpu_backend={HOSTILE['squote']}",
             f"--delegate_serialize_dir={HOSTILE['dquote']}",
             f"--use_gpu={HOSTILE['and']}",
             f"--nnapi_execution_preference={HOSTILE['pipe']}",
             f"--gpu_experimental_enable_quant={HOSTILE['amp']}",
             f"--delegate_serialize_token={HOSTILE['redirect']}",
             f"--enable_op_profiling={HOSTILE['brace']}",
             "--print_preinvoke_state=*"]
    (d / "evil.yaml").write_text(yaml.safe_dump({
        "schema_version": 1, "name": "evil", "flags": flags, "description": HOSTILE["subst"]}))
    return d


HOSTILE_MODEL_NAME = "<b>m</b>'); DROP TABLE samples; -- $(touch /data/local/tmp/pwned_name)"
HOSTILE_LABEL = "<script>alert(1)</script>"
HOSTILE_MAKER = '"><img src=x onerror=alert(2)>$x^$'


def test_sweep_with_hostile_flags_names_and_device_strings(sim_fleet, tmp_path: Path  # noqa: F811
                                                           ) -> None:
    fleet = sim_fleet(["flagship", "old_armv7"], time_scale=50)
    victim = fleet[0]
    victim.phone.set_prop("ro.product.model", HOSTILE_LABEL + HOSTILE["subst"])
    victim.phone.set_prop("ro.product.manufacturer", HOSTILE_MAKER)
    victim.phone.set_prop("ro.soc.model", "x'); DROP TABLE devices; --")
    model = tmp_path / "m;touch pwned;$(touch pwned2);`id`.tflite"
    shutil.copyfile(TINY, model)
    sweep = {
        "schema_version": 1,
        "models": [{"name": HOSTILE_MODEL_NAME, "source": str(model)}],
        "quantizations": ["fp32"], "delegates": ["cpu", "evil"], "threads": [1], "repeats": 2,
        "run": {"warmup_runs": 1, "warmup_min_secs": 0, "num_runs": 3, "min_secs": 0,
                "max_secs": 5, "timeout_s": 30},
        "cooldown": {"delta_c": 50, "timeout_s": 1},
    }
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    (tmp_path / "devices.yaml").write_text(yaml.safe_dump({
        "schema_version": 1, "host": "never",
        "adb_servers": [f"127.0.0.1:{fleet[0].adb_port}"]}))
    p = api.load_plan(tmp_path / "sweep.yaml", devices_file=tmp_path / "devices.yaml",
                      delegates_dir=_evil_delegates(tmp_path))
    result = api.run_plan(p, db=tmp_path / "db.sqlite", out_dir=tmp_path / "reports",
                          cache_dir=tmp_path / "cache", vendor_dir=tmp_path / "no-vendor")
    for h in fleet:
        assert pwned_files(h) == [], h.profile
    assert not list(tmp_path.glob("pwned*")) and not list(Path.cwd().glob("pwned*"))

    df = api.load_samples(tmp_path / "db.sqlite", result.run_id)
    assert set(df["model"]) == {HOSTILE_MODEL_NAME}  # stored and read back verbatim
    assert len(df) == 2 * 2 * 2
    assert (df[df["delegate"] == "cpu"]["status"] == "ok").all()
    # the hostile flags reached benchmark_model as literal argv elements
    with sqlite3.connect(tmp_path / "db.sqlite") as c:
        argvs = [json.loads(a) for (a,) in c.execute(
            "SELECT argv FROM samples WHERE delegate='evil' AND argv != '[]'")]
        assert c.execute("SELECT COUNT(*) FROM devices").fetchone()[0] == 2
    assert argvs
    for argv in argvs:
        assert f"--external_delegate_options={HOSTILE['semicolon']}" in argv
        assert f"--hexagon_lib_path={HOSTILE['subst']}" in argv

    html = Path(result.report or "").read_text()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html
    assert "<b>m</b>" not in html and "&lt;b&gt;m&lt;/b&gt;" in html


# --------------------------------------------------------------------------- remote paths

@pytest.mark.parametrize("path", [
    f"{WORKDIR}/models/../../../../system/bin/sh",
    f"{WORKDIR}/..",
    f"{WORKDIR}/../farm2/x",
    f"{WORKDIR}/./x",
    f"{WORKDIR}//x",
    f"{WORKDIR}/",
    WORKDIR,
    f"{WORKDIR}x/models/a.tflite",
    "/data/local/tmp/x.tflite",
    "/system/bin/sh",
    "/sdcard/farm/x",
    f"/{WORKDIR}/x",
    "data/local/tmp/farm/x",
    f"{WORKDIR}/models/a.tflite\n",
    f"{WORKDIR}/models/a\ntouch /data/local/tmp/pwned",
    f"{WORKDIR}/a b",
    f"{WORKDIR}/a;rm -rf /",
    f"{WORKDIR}/$(id)",
    f"{WORKDIR}/`id`",
    f"{WORKDIR}/a*",
    f"{WORKDIR}/a'b",
    f"{WORKDIR}/\x00x",
    f"{WORKDIR}/m\u2044x",  # a fraction slash, not '/'
    f"{WORKDIR}/\uff0e\uff0e/x",  # fullwidth dots
])
def test_check_remote_path_refuses(path: str) -> None:
    with pytest.raises(DeviceError):
        check_remote_path(path)


@pytest.mark.parametrize("path", [
    f"{WORKDIR}/models/{'a' * 64}.tflite",
    f"{WORKDIR}/bin/0123456789abcdef/benchmark_model",
    f"{WORKDIR}/libQnnTFLiteDelegate.so",
    f"{WORKDIR}/-rf",  # a file name, never an option: it starts with the directory
])
def test_check_remote_path_accepts(path: str) -> None:
    assert check_remote_path(path) == path


def test_push_and_pull_refuse_paths_outside_farm(sim_fleet, tmp_path: Path) -> None:  # noqa: F811
    (h,) = sim_fleet(["midrange"], time_scale=50)
    dev = adb_device(h)
    local = tmp_path / "x.bin"
    local.write_bytes(b"payload")
    for remote in (f"{T}/escaped", f"{WORKDIR}/../escaped", "/sdcard/escaped",
                   f"{WORKDIR}/a;touch {T}/pwned_push"):
        with pytest.raises(DeviceError):
            dev.push(local, remote)
        with pytest.raises(DeviceError):
            dev.pull(remote, tmp_path / "out.bin")
    assert "escaped" not in h.device().shell2(f"ls {T} /sdcard", timeout=30).output
    assert pwned_files(h) == []


# --------------------------------------------------------------------------- the host

def test_local_device_runs_argv_without_a_shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    monkeypatch.chdir(tmp_path)
    dev = LocalDevice(tmp_path / "work")
    host_hostile = {k: v.replace(T, str(tmp_path)) for k, v in HOSTILE.items()}
    for tag, s in host_hostile.items():
        r = dev.shell(["printf", "%s", s], timeout_s=30)
        assert (r.returncode, r.stdout) == (0, s), tag
    weird = tmp_path / "a;touch pwned_cat;$(touch pwned_x).txt"
    weird.write_text("literal\n")
    r = dev.shell(["cat", str(weird)], timeout_s=30)
    assert (r.returncode, r.stdout) == (0, "literal\n")
    assert not list(tmp_path.rglob("pwned*"))


@pytest.mark.slow
def test_host_sweep_with_metacharacters_in_every_path(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Model file, cache and work directories named with shell syntax: the host sweep runs
    (the paths are literal argv elements) and nothing else happens."""
    monkeypatch.chdir(tmp_path)
    base = tmp_path / "d;touch pwned_dir;$(touch pwned_subst)"
    base.mkdir()
    model = base / "m`touch pwned_tick`.tflite"
    shutil.copyfile(TINY, model)
    sweep: dict[str, Any] = {
        "schema_version": 1, "models": [{"name": "m", "source": str(model)}],
        "quantizations": ["fp32"], "delegates": ["cpu"], "threads": [1], "repeats": 1,
        "run": {"warmup_runs": 1, "warmup_min_secs": 0, "num_runs": 3, "min_secs": 0,
                "max_secs": 5, "timeout_s": 120},
    }
    (base / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    (base / "devices.yaml").write_text("schema_version: 1\nhost: only\n")
    p = api.load_plan(base / "sweep.yaml", devices_file=base / "devices.yaml")
    host = LocalDevice(base / "host; rm -rf pwned")
    result = api.run_plan(p, db=base / "db.sqlite", out_dir=base / "reports",
                          cache_dir=base / "cache&&touch pwned_cache", report=False,
                          devices=[(host, host.info())])
    df = api.load_samples(base / "db.sqlite", result.run_id)
    assert list(df["status"]) == ["ok"], df["error"].tolist()
    assert not [p for p in tmp_path.rglob("pwned*") if p.name.startswith("pwned")]
