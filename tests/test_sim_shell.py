"""The simulated phone's shell, commands, filesystem and sync-service interface (no adb)."""

from __future__ import annotations

import errno
import hashlib
import re
import stat
import threading
import time

import pytest

from farm.probes import parse_dumpsys_battery, parse_dumpsys_thermalservice, parse_zone_temp
from farm.sim.benchmark import make_stub_binary
from farm.sim.phone import FAULT_KINDS, FaultState, Phone
from farm.sim.shell import ShellSyntaxError, parse, tokenize
from tests.fixtures_simuser import make_phone, push  # noqa: F401 - fixture

T = "/data/local/tmp"


@pytest.fixture
def phone(make_phone) -> Phone:  # noqa: F811
    return make_phone("flagship", time_scale=50.0)


def sh(phone: Phone, cmd: str, *, pty: bool = False) -> tuple[int | None, str, str]:
    return phone.run(cmd, timeout=30, pty=pty)


# --------------------------------------------------------------------------- grammar


def test_tokenizer_keeps_quotes_and_splits_operators() -> None:
    toks = tokenize("echo 'a b' \"c $X\" d\\ e;ls|wc -l 2>&1 >>f && x || y &")
    words = [t.value for t in toks]
    assert words == ["echo", "'a b'", '"c $X"', "d\\ e", ";", "ls", "|", "wc", "-l", "2",
                     ">&", "1", ">>", "f", "&&", "x", "||", "y", "&"]
    assert toks[9].kind == "IONUM"


def test_parse_errors_are_mksh_style(phone: Phone) -> None:
    with pytest.raises(ShellSyntaxError):
        parse("if true; then echo x")
    rc, out, err = sh(phone, "if true; then echo x")
    assert rc == 1 and out == ""
    assert err == "/system/bin/sh: syntax error: 'if' unmatched\n"
    rc, _, err = sh(phone, "echo 'open")
    assert rc == 1 and err == "/system/bin/sh: no closing quote\n"
    rc, _, err = sh(phone, "echo a ;; echo b")
    assert rc == 1 and "syntax error: ';;' unexpected" in err


@pytest.mark.parametrize(("cmd", "status", "out"), [
    ("true; echo $?", 0, "0\n"),
    ("false; echo $?", 0, "1\n"),
    ("false", 1, ""),
    ("exit 3", 3, ""),
    ("echo a; exit 7; echo b", 7, "a\n"),
    ("false && echo no || echo yes", 0, "yes\n"),
    ("true && echo a && false || echo b", 0, "a\nb\n"),
    ("! true; echo $?", 0, "1\n"),
    ("(exit 4); echo $?", 0, "4\n"),
    ("x=$(exit 5); echo $?", 0, "5\n"),
    ("for i in 1 2 3; do echo -n $i; done; echo", 0, "123\n"),
    ("i=0; while [ $i -lt 3 ]; do i=$((i+1)); done; echo $i", 0, "3\n"),
    ("if [ 2 -gt 1 ]; then echo big; elif true; then echo no; else echo no; fi", 0, "big\n"),
    ("{ echo a; echo b; } | wc -l", 0, "2\n"),
    ("X=1; X=2 sh -c 'echo $X'; echo $X; sh -c 'echo -$X-'", 0, "2\n1\n--\n"),
    ("export X=5; sh -c 'echo $X'", 0, "5\n"),
    ("echo ${UNSET:-dflt} ${#PATH} | cut -d' ' -f1", 0, "dflt\n"),
    ("echo \"$(echo 'a  b')\" $(echo 'a  b')", 0, "a  b a b\n"),
    ("echo 'single $HOME' \"double $HOME\" back\\$slash", 0, "single $HOME double / back$slash\n"),
    ("echo $((7 / 2)) $((2 * (3 + 4))) $((5 % 3))", 0, "3 14 2\n"),
    ("echo 'a\\nb' a\\nb", 0, "a\nb anb\n"),
    ("printf '%s=%d\\n' a 1 b 2", 0, "a=1\nb=2\n"),
])
def test_shell_grammar_and_exit_codes(phone: Phone, cmd: str, status: int, out: str) -> None:
    rc, got, err = sh(phone, cmd)
    assert (rc, got) == (status, out), err


def test_pipes_and_redirections(phone: Phone) -> None:
    rc, out, err = sh(phone, f"cd {T} && echo one > f && echo two >> f && cat < f | wc -l")
    assert (rc, out, err) == (0, "2\n", "")
    rc, out, err = sh(phone, f"cat {T}/nope 2>&1 | grep -c 'No such file'")
    assert (rc, out) == (0, "1\n")
    rc, out, err = sh(phone, "cat /nope 2>/dev/null; echo rc=$?")
    assert (out, err) == ("rc=1\n", "")
    rc, out, err = sh(phone, f"ls /nope {T} > {T}/o 2> {T}/e; cat {T}/e; cat {T}/o")
    assert "ls: /nope: No such file or directory" in out and "f" in out.split()
    rc, out, _ = sh(phone, "echo x >&2")
    assert out == ""
    rc, out, err = sh(phone, "echo to_err 1>&2")
    assert err == "to_err\n"


def test_glob_expands_against_the_phone(phone: Phone) -> None:
    rc, out, _ = sh(phone, "echo /sys/class/thermal/thermal_zone*/type | wc -w")
    assert int(out) == len(phone.profile.thermal.zones)
    rc, out, _ = sh(phone, "echo /nothing/here*")
    assert out == "/nothing/here*\n"
    rc, out, _ = sh(phone, "echo '/sys/class/thermal/thermal_zone*'")
    assert out == "/sys/class/thermal/thermal_zone*\n"


def test_background_jobs_and_wait(phone: Phone) -> None:
    rc, out, _ = sh(phone, "sleep 1 & p=$!; echo started; wait $p; echo done $?")
    assert (rc, out) == (0, "started\ndone 0\n")


# --------------------------------------------------------------------------- errors


def test_not_found_and_not_executable_errors(phone: Phone) -> None:
    rc, _, err = sh(phone, "frobnicate")
    assert (rc, err) == (127, "/system/bin/sh: frobnicate: inaccessible or not found\n")
    rc, _, err = sh(phone, "./missing_binary")
    assert (rc, err) == (127, "/system/bin/sh: ./missing_binary: not found\n")
    push(phone, b"#!/system/bin/sh\necho hi\n", f"{T}/script.sh", 0o644)  # pushed 0644: 0666
    rc, _, err = sh(phone, f"{T}/script.sh")
    assert (rc, err) == (126, f"/system/bin/sh: {T}/script.sh: can't execute: Permission denied\n")
    rc, out, _ = sh(phone, f"chmod +x {T}/script.sh && {T}/script.sh arg")
    assert (rc, out) == (0, "hi\n")
    rc, _, err = sh(phone, "/data/local/tmp")
    assert rc == 126 and "Is a directory" in err


def test_sdcard_is_noexec_and_refuses_chmod(phone: Phone) -> None:
    push(phone, make_stub_binary("arm64-v8a"), "/sdcard/Download/benchmark_model", 0o755)
    rc, _, err = sh(phone, "/sdcard/Download/benchmark_model --help")
    assert rc == 126 and err.endswith("can't execute: Permission denied\n")
    rc, _, err = sh(phone, "chmod 755 /sdcard/Download/benchmark_model")
    assert rc == 1
    assert err == ("chmod: chmod '/sdcard/Download/benchmark_model' to 0755: "
                   "Operation not permitted\n")
    rc, out, _ = sh(phone, "ls -l /sdcard/Download/benchmark_model")
    assert out.startswith("-rw-rw---- 1 shell everybody ")


def test_64bit_binary_on_32bit_phone(make_phone) -> None:  # noqa: F811
    old = make_phone("old_armv7")
    push(old, make_stub_binary("arm64-v8a"), f"{T}/benchmark_model", 0o755)
    rc, _, err = sh(old, f"cd {T} && ./benchmark_model --graph=x")
    assert (rc, err) == (126, "/system/bin/sh: ./benchmark_model: not executable: 64-bit ELF "
                              "file\n")
    push(old, make_stub_binary("x86"), f"{T}/bm86", 0o755)
    rc, _, err = sh(old, f"{T}/bm86")
    assert rc == 126 and "not executable: 32-bit ELF file" in err


@pytest.mark.parametrize(("cmd", "err"), [
    ("echo x > /system/foo", "/system/bin/sh: can't create /system/foo: Read-only file system\n"),
    ("mkdir /system/foo", "mkdir: '/system/foo': Read-only file system\n"),
    ("touch /vendor/x", "touch: '/vendor/x': Read-only file system\n"),
    ("rm /system/bin/sh", "rm: /system/bin/sh: Read-only file system\n"),
    ("cat /nonexistent", "cat: /nonexistent: No such file or directory\n"),
    ("ls /data", "ls: /data: Permission denied\n"),
    ("echo x > /data/foo", "/system/bin/sh: can't create /data/foo: Permission denied\n"),
    ("echo 1 > /sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq",
     "/system/bin/sh: can't create /sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq: "
     "Permission denied\n"),
    ("cat /data/local/tmp/nope/x", "cat: /data/local/tmp/nope/x: No such file or directory\n"),
    ("mkdir /data/local/tmp/a/b", "mkdir: '/data/local/tmp/a/b': No such file or directory\n"),
    ("cd /nowhere", "/system/bin/sh: cd: /nowhere: No such file or directory\n"),
    ("rmdir /data/local/tmp", "rmdir: '/data/local/tmp': Device or resource busy\n"),
])
def test_real_error_texts(phone: Phone, cmd: str, err: str) -> None:
    rc, out, got = sh(phone, cmd)
    assert rc != 0 and out == ""
    assert got == err


def test_storage_full_fault(phone: Phone) -> None:
    rc, out, _ = sh(phone, "df /data | tail -1")
    assert int(out.split()[3]) > 0
    phone.faults.set("storage_full")
    rc, out, _ = sh(phone, "df /data | tail -1")
    assert out.split()[3] == "0" and out.split()[4] == "100%"
    rc, _, err = sh(phone, f"echo data > {T}/full.txt")
    assert rc == 1
    assert "No space left on device" in err
    rc, _, err = sh(phone, f"yes | head -c 100000 > {T}/x; cp {T}/x {T}/y")
    assert "No space left on device" in err
    with pytest.raises(OSError) as exc:
        f = phone.sync_open_write(f"{T}/pushed.bin", 0o644)
        try:
            f.write(b"x" * 4096)
        finally:
            phone.sync_finish_write(f"{T}/pushed.bin", f, 0, False)
    assert exc.value.errno == errno.ENOSPC
    assert phone.sync_stat(f"{T}/pushed.bin") is None  # the partial file was removed
    phone.faults.clear("storage_full")
    rc, _, _ = sh(phone, f"echo data > {T}/ok.txt")
    assert rc == 0


def test_quota_from_profile(make_phone) -> None:  # noqa: F811
    phone = make_phone("lowend")
    phone.fs.quota_bytes = phone.fs.data_usage().avail_kb * 1024  # already the profile's free
    phone.fs.quota_bytes = 10_000
    rc, _, err = sh(phone, f"yes | head -c 20000 > {T}/big")
    assert "No space left on device" in err


# --------------------------------------------------------------------------- commands


def test_getprop_formats(phone: Phone) -> None:
    rc, out, _ = sh(phone, "getprop")
    lines = out.splitlines()
    assert rc == 0 and len(lines) > 30
    assert all(re.fullmatch(r"\[[^\]]+\]: \[[^\]]*\]", ln) for ln in lines)
    keys = [ln[1:ln.index("]")] for ln in lines]
    assert keys == sorted(keys)
    props = dict(re.findall(r"\[([^\]]+)\]: \[([^\]]*)\]", out))
    assert props["ro.farm.simulated"] == "1"
    assert props["ro.product.model"] == "SM-S928B"
    assert props["ro.product.cpu.abilist"] == "arm64-v8a,armeabi-v7a,armeabi"
    assert props["ro.build.version.sdk"] == "34"
    rc, out, _ = sh(phone, "getprop ro.product.manufacturer; getprop no.such.prop; "
                    "getprop no.such.prop fallback")
    assert out == "samsung\n\nfallback\n"
    rc, _, err = sh(phone, "setprop ro.product.model X")
    assert rc == 1 and "Failed to set property 'ro.product.model' to 'X'" in err
    rc, out, _ = sh(phone, "setprop debug.farm.x 1 && getprop debug.farm.x")
    assert out == "1\n"


def test_banner_and_features(make_phone) -> None:  # noqa: F811
    new = make_phone("flagship").banner().decode()
    old = make_phone("old_armv7").banner().decode()
    assert new.startswith("device::ro.product.name=e3qxeea;ro.product.model=SM-S928B;"
                          "ro.product.device=e3q;features=")
    assert "shell_v2" in new.split("features=")[1].split(",")
    assert "shell_v2" not in old and "ro.product.model=SM-J510FN" in old


def test_ls_formats(phone: Phone) -> None:
    sh(phone, f"cd {T} && touch b a c && mkdir d")
    rc, out, _ = sh(phone, f"ls {T}")
    assert out == "a\nb\nc\nd\n"
    rc, out, _ = sh(phone, f"ls {T}", pty=True)  # a terminal gets columns
    assert out == "a  b  c  d\n"
    rc, out, _ = sh(phone, f"ls -l {T}")
    rows = out.splitlines()
    assert rows[0].startswith("total ")
    assert re.fullmatch(r"-rw-rw-rw- 1 shell shell +0 \d{4}-\d\d-\d\d \d\d:\d\d a", rows[1])
    assert rows[4].startswith("drwxrwxrwx ")
    rc, out, _ = sh(phone, "ls -l /system/bin/cat")
    assert out.endswith(" /system/bin/cat -> toybox\n") and out.startswith("lrwxrwxrwx")


def test_pty_merges_stderr_and_is_a_tty(phone: Phone) -> None:
    rc, out, err = sh(phone, "[ -t 1 ] && echo tty; cat /nope", pty=True)
    assert err == "" and out == "tty\ncat: /nope: No such file or directory\n"
    rc, out, _ = sh(phone, "[ -t 1 ] && echo tty || echo pipe")
    assert out == "pipe\n"


def test_file_commands(phone: Phone) -> None:
    payload = bytes(range(256)) * 1000
    push(phone, payload, f"{T}/blob.bin")
    rc, out, _ = sh(phone, f"sha256sum {T}/blob.bin; md5sum {T}/blob.bin")
    assert out.splitlines() == [f"{hashlib.sha256(payload).hexdigest()}  {T}/blob.bin",
                                f"{hashlib.md5(payload).hexdigest()}  {T}/blob.bin"]
    rc, out, _ = sh(phone, f"cd {T} && mkdir -p x/y/z && cp blob.bin x/y/z/ && "
                           f"mv x/y/z/blob.bin x/b2 && ls x && rm -r x && ls -A x; echo $?")
    assert out == "b2\ny\n1\n"
    rc, out, _ = sh(phone, f"stat -c '%s %a %U' {T}/blob.bin")
    assert out == "256000 666 shell\n"
    rc, out, _ = sh(phone, "echo hello world | tr a-z A-Z | sed_missing 2>/dev/null; echo $?")
    assert out == "127\n"
    rc, out, _ = sh(phone, "seq 3 | sort -r | head -n 2 | tail -n 1")
    assert out == "2\n"


def test_df_format(phone: Phone) -> None:
    rc, out, _ = sh(phone, "df")
    head, *rows = out.splitlines()
    assert head.split() == ["Filesystem", "1K-blocks", "Used", "Available", "Use%", "Mounted",
                            "on"]
    mounts = [r.split()[-1] for r in rows]
    assert "/data" in mounts and "/" in mounts
    data = next(r.split() for r in rows if r.split()[-1] == "/data")
    total, used, avail = int(data[1]), int(data[2]), int(data[3])
    assert total == phone.profile.storage_total_mb * 1024
    assert abs(avail - phone.profile.storage_free_mb * 1024) < 1024
    assert used + avail <= total
    rc, out, _ = sh(phone, "df -h /sdcard")
    assert re.search(r"/dev/fuse\s+\d+G\s+\d+G\s+\d+G\s+\d+% /storage/emulated", out)


def test_ps_kill_and_taskset(phone: Phone) -> None:
    done = threading.Event()
    result: list[tuple[int | None, str, str]] = []

    def long() -> None:
        result.append(sh(phone, "sleep 100000"))
        done.set()

    t = threading.Thread(target=long)
    t.start()
    try:
        for _ in range(100):
            rc, out, _ = sh(phone, "ps -A -o PID,NAME")
            if " sleep" in out:
                break
            time.sleep(0.02)
        pid = next(int(line.split()[0]) for line in out.splitlines() if line.endswith(" sleep"))
        rc, out, _ = sh(phone, "ps")
        assert out.splitlines()[0].split() == ["USER", "PID", "PPID", "VSZ", "RSS", "WCHAN",
                                               "ADDR", "S", "NAME"]
        assert any(line.split()[1] == str(pid) for line in out.splitlines()[1:])
        rc, out, err = sh(phone, f"kill {pid}; echo $?")
        assert out == "0\n"
        assert done.wait(10)
        assert result[0][0] == 143 and result[0][2] == "Terminated\n"
    finally:
        done.wait(10)
        t.join(10)
    rc, _, err = sh(phone, "kill 1")
    assert (rc, err) == (1, "/system/bin/sh: kill: 1: Operation not permitted\n")
    rc, _, err = sh(phone, "kill 99999")
    assert (rc, err) == (1, "/system/bin/sh: kill: 99999: No such process\n")
    rc, out, _ = sh(phone, "nproc; taskset 80 nproc; taskset f0 sh -c 'taskset -p $$'")
    lines = out.splitlines()
    assert lines[:2] == ["8", "1"]
    assert re.fullmatch(r"pid \d+'s current affinity mask: f0", lines[2])
    rc, _, err = sh(phone, "taskset 100 nproc")
    assert rc == 1 and "sched_setaffinity: Invalid argument" in err


@pytest.mark.parametrize(("profile", "machine", "cpus"), [
    ("flagship", "aarch64", 8), ("midrange", "aarch64", 8), ("lowend", "aarch64", 8),
    ("old_armv7", "armv7l", 4)])
def test_uname_and_cpuinfo(make_phone, profile: str, machine: str, cpus: int) -> None:  # noqa: F811
    phone = make_phone(profile)
    rc, out, _ = sh(phone, "uname -m; uname -a; nproc")
    m, full, n = out.splitlines()
    assert m == machine and full.startswith("Linux localhost ") and full.endswith(" Toybox")
    assert int(n) == cpus
    rc, out, _ = sh(phone, "grep -c ^processor /proc/cpuinfo; grep Hardware /proc/cpuinfo")
    assert out.splitlines()[0] == str(cpus)
    assert phone.profile.cpu.hardware in out
    rc, out, _ = sh(phone, "grep -c asimddp /proc/cpuinfo")
    assert (int(out) > 0) == phone.profile.cpu.dotprod


def test_sysfs_thermal_and_cpufreq(phone: Phone) -> None:
    rc, out, _ = sh(phone, "for z in /sys/class/thermal/thermal_zone*; do "
                           "echo $(cat $z/type) $(cat $z/temp); done")
    rows = [ln.split() for ln in out.splitlines()]
    assert [r[0] for r in rows] == [z.type for z in phone.profile.thermal.zones]
    for _, milli in rows:
        assert 20.0 < (parse_zone_temp(milli) or 0) < 40.0
        assert milli.isdigit() and int(milli) > 1000
    for cl in phone.profile.cpu.clusters:
        c = cl.cpus[-1]
        base = f"/sys/devices/system/cpu/cpu{c}/cpufreq"
        rc, out, _ = sh(phone, f"cat {base}/cpuinfo_max_freq {base}/scaling_max_freq "
                               f"{base}/scaling_cur_freq")
        mx, smax, cur = (int(x) for x in out.split())
        assert mx == smax == cl.max_freq_khz
        assert cur in cl.freqs_khz and cur <= smax


def test_proc_files(phone: Phone) -> None:
    rc, out, _ = sh(phone, "cat /proc/meminfo")
    mem = dict(re.findall(r"^(\w+):\s+(\d+) kB$", out, re.M))
    assert int(mem["MemTotal"]) == phone.profile.ram_mb * 1024
    assert int(mem["MemAvailable"]) < int(mem["MemTotal"])
    rc, out, _ = sh(phone, "cat /proc/uptime; sleep 10; cat /proc/uptime")
    a, b = (float(line.split()[0]) for line in out.splitlines())
    assert 9.9 <= b - a < 40  # simulated seconds: 10 s of sleep took 0.2 s at time_scale 50
    rc, out, _ = sh(phone, "cat /proc/self/status | grep -E '^(Name|VmRSS|Cpus_allowed_list)'")
    assert out.splitlines()[0] == "Name:\tcat"
    assert "VmRSS:" in out and "Cpus_allowed_list:\t0-7" in out


def test_time_scale_applies_to_every_clock(make_phone) -> None:  # noqa: F811
    phone = make_phone("midrange", time_scale=100.0)
    rc, out, _ = sh(phone, "date +%s; cat /proc/uptime")
    d0, u0 = int(out.split()[0]), float(out.split()[1])
    t0 = time.monotonic()
    time.sleep(0.3)
    rc, out, _ = sh(phone, "date +%s; cat /proc/uptime")
    real = time.monotonic() - t0
    d1, u1 = int(out.split()[0]), float(out.split()[1])
    assert 0.8 * real * 100 <= u1 - u0 <= 1.5 * real * 100 + 2
    assert 0.8 * real * 100 - 2 <= d1 - d0 <= 1.5 * real * 100 + 2
    t0 = time.monotonic()
    rc, _, _ = sh(phone, "sleep 30")
    assert time.monotonic() - t0 < 2.0  # 30 simulated seconds are 0.3 s of real time


# --------------------------------------------------------------------------- dumpsys


def test_dumpsys_battery_parsed_back(phone: Phone) -> None:
    rc, out, _ = sh(phone, "dumpsys battery")
    assert out.startswith("Current Battery Service state:\n")
    parsed = parse_dumpsys_battery(out)
    assert parsed["level"] == phone.profile.battery.level_pct
    assert parsed["charging"] == "usb"
    assert 20.0 < parsed["temp_c"] < 40.0
    rc, out, _ = sh(phone, "cat /sys/class/power_supply/battery/temp")
    assert abs(int(out) / 10 - parsed["temp_c"]) < 0.5


def test_dumpsys_thermalservice_parsed_back(phone: Phone) -> None:
    rc, out, _ = sh(phone, "dumpsys thermalservice")
    parsed = parse_dumpsys_thermalservice(out)
    assert parsed["status"] == 0
    assert set(parsed["temps_c"]) == {z.type for z in phone.profile.thermal.zones}
    assert re.search(r"Temperature\{mValue=\d+\.\d, mType=2, mName=battery, mStatus=0\}", out)
    phone.thermal.set_temperature(phone.profile.thermal.status_thresholds_c[2] + 0.5)
    rc, out, _ = sh(phone, "dumpsys thermalservice | grep 'Thermal Status'")
    assert out == "Thermal Status: 3\n"


def test_dumpsys_on_old_phone_has_no_thermalservice(make_phone) -> None:  # noqa: F811
    phone = make_phone("old_armv7")
    rc, out, err = sh(phone, "dumpsys thermalservice")
    assert out == "" and err == "Can't find service: thermalservice\n"


def test_dumpsys_cpuinfo_and_meminfo(phone: Phone) -> None:
    rc, out, _ = sh(phone, "dumpsys cpuinfo")
    assert re.match(r"Load: [\d.]+ / [\d.]+ / [\d.]+\nCPU usage from \d+ms to \d+ms ago", out)
    assert re.search(r"^[\d.]+% TOTAL: ", out, re.M)
    rc, out, _ = sh(phone, "dumpsys meminfo")
    m = re.search(r"^Total RAM: ([\d,]+)K \(status normal\)$", out, re.M)
    assert m and int(m.group(1).replace(",", "")) == phone.profile.ram_mb * 1024
    assert re.search(r"^\s+[\d,]+K: system_server \(pid \d+\)$", out, re.M)


# --------------------------------------------------------------------------- sessions


def test_hangup_ends_the_session(phone: Phone) -> None:
    out = bytearray()
    proc = phone.spawn("echo start; sleep 100000; echo never", pty=False,
                       on_stdout=out.extend, on_stderr=out.extend)
    for _ in range(200):
        if b"start" in out:
            break
        time.sleep(0.01)
    assert proc.wait(0.05) is None
    proc.hangup()
    assert proc.wait(5) == 129
    assert b"never" not in out


def test_interactive_shell(phone: Phone) -> None:
    out = bytearray()
    proc = phone.spawn("", pty=True, on_stdout=out.extend, on_stderr=out.extend)
    for line in (b"cd /data/local/tmp\n", b"false\n", b"for i in 1 2\n", b"do echo $i; done\n",
                 b"exit 5\n"):
        proc.write_stdin(line)
    assert proc.wait(5) == 5
    assert out.decode() == ("e3q:/ $ e3q:/data/local/tmp $ 1|e3q:/data/local/tmp $ > 1\n2\n"
                            "e3q:/data/local/tmp $ ")
    out.clear()
    proc = phone.spawn("", pty=False, on_stdout=out.extend, on_stderr=out.extend)
    proc.write_stdin(b"echo piped\n")
    proc.close_stdin()
    assert proc.wait(5) == 0 and out == b"piped\n"  # no terminal: no prompts


def test_stdin_from_the_host(phone: Phone) -> None:
    out = bytearray()
    proc = phone.spawn(f"cat > {T}/in.txt; wc -c < {T}/in.txt", pty=False,
                       on_stdout=out.extend, on_stderr=out.extend)
    proc.write_stdin(b"hello ")
    proc.write_stdin(b"phone\n")
    proc.close_stdin()
    assert proc.wait(5) == 0
    assert out == b"12\n"


def test_concurrent_sessions(phone: Phone) -> None:
    results: list[str] = []

    def worker(i: int) -> None:
        rc, out, _ = sh(phone, f"echo {i} > {T}/c{i}; cat {T}/c{i}; "
                               "cat /sys/class/thermal/thermal_zone0/temp > /dev/null")
        results.append(out)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(results) == sorted(f"{i}\n" for i in range(8))


# --------------------------------------------------------------------------- sync interface


def test_sync_interface(phone: Phone) -> None:
    f = phone.sync_open_write(f"{T}/new/dir/bm", 0o100755)
    f.write(b"abc")
    phone.sync_finish_write(f"{T}/new/dir/bm", f, 1_600_000_000, True)
    mode, size, mtime = phone.sync_stat(f"{T}/new/dir/bm") or (0, 0, 0)
    assert stat.S_ISREG(mode) and stat.S_IMODE(mode) == 0o777 and size == 3
    assert mtime == 1_600_000_000
    push(phone, b"x", f"{T}/plain", 0o100644)
    assert stat.S_IMODE(phone.sync_stat(f"{T}/plain")[0]) == 0o666  # type: ignore[index]
    names = [e[0] for e in phone.sync_list(f"{T}/new/dir")]
    assert names == [".", "..", "bm"]
    assert phone.sync_stat("/nope") is None
    v2 = phone.sync_stat_v2("/nope")
    assert v2["error"] == errno.ENOENT and v2["mode"] == 0
    v2 = phone.sync_stat_v2("/sdcard")
    assert v2["error"] == 0 and stat.S_ISDIR(v2["mode"])
    assert stat.S_ISLNK(phone.sync_stat_v2("/sdcard", follow=False)["mode"])
    assert stat.S_ISLNK(phone.sync_stat("/sdcard")[0])  # type: ignore[index]
    with phone.sync_open_read(f"{T}/new/dir/bm") as r:
        assert r.read() == b"abc"
    for path, code in (("/system/x", errno.EROFS), ("/data/x", errno.EACCES)):
        with pytest.raises(OSError) as exc:
            phone.sync_open_write(path, 0o644)
        assert exc.value.errno == code
    with pytest.raises(OSError) as exc:
        phone.sync_open_read("/nope")
    assert exc.value.errno == errno.ENOENT
    with pytest.raises(OSError) as exc:
        phone.sync_open_read(T)
    assert exc.value.errno == errno.EISDIR
    f = phone.sync_open_write(f"{T}/partial", 0o644)
    f.write(b"half")
    phone.sync_finish_write(f"{T}/partial", f, 0, False)
    assert phone.sync_stat(f"{T}/partial") is None


def test_fault_state() -> None:
    fs = FaultState()
    assert not fs.active("hang")
    fs.set("slow", delay_s=0.5)
    fs.set("crash")
    assert fs.active("slow") and fs.params("slow") == {"delay_s": 0.5}
    assert fs.kinds() == ("crash", "slow")
    fs.clear("slow")
    assert not fs.active("slow") and fs.active("crash")
    fs.clear()
    assert fs.kinds() == ()
    with pytest.raises(ValueError, match="unknown fault kind 'melt'"):
        fs.set("melt")
    assert set(FAULT_KINDS) == {"disconnect", "unauthorized", "offline", "storage_full",
                                "crash", "hang", "slow"}
