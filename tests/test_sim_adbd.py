"""The simulated adbd: packet codecs (pure), the wire protocol against a raw socket (things the adb
server hides: flow control, ids, checksums, refusals), and the real adb server (the binary in the
adbutils wheel) driving real `farm.sim.phone.Phone`s through adbutils and the adb CLI."""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import adbutils
import pytest

from farm.sim import adbd
from farm.sim.adbd import (
    A_AUTH,
    A_CLSE,
    A_CNXN,
    A_OKAY,
    A_OPEN,
    A_WRTE,
    AdbdServer,
    ProtocolError,
    ShellMode,
    ShellPacketDecoder,
)
from farm.sim.phone import Phone
from farm.sim.profiles import load_profile
from tests import fixtures_sim
from tests.fixtures_sim import SimHandle

# pytest fixtures (pytest_plugins is only allowed in the root conftest)
adb_server = fixtures_sim.adb_server
adb_servers = fixtures_sim.adb_servers
sim_fleet = fixtures_sim.sim_fleet

pytestmark = pytest.mark.timeout(120)

T = "/data/local/tmp"
HOST_FEATURES = b"host::features=shell_v2,cmd,stat_v2,ls_v2,fixed_push_mkdir,apex,abb,sendrecv_v2"

# --- pure codecs ---------------------------------------------------------------------------


def test_packet_roundtrip_little_endian_and_magic() -> None:
    raw = adbd.encode_packet(A_WRTE, 7, 9, b"hello")
    assert raw[:4] == b"WRTE"  # commands are ASCII when read little-endian
    h = adbd.decode_header(raw[:24])
    assert (h.name, h.arg0, h.arg1, h.data_length) == ("WRTE", 7, 9, 5)
    assert h.magic == A_WRTE ^ 0xFFFFFFFF
    assert h.data_check == 0  # modern adbd never checksums
    assert raw[24:] == b"hello"


def test_checksum_is_the_byte_sum_for_old_versions() -> None:
    raw = adbd.encode_packet(A_WRTE, 1, 2, b"\xff\x01\x02", with_checksum=True)
    assert adbd.decode_header(raw[:24]).data_check == 0xFF + 1 + 2


def test_bad_magic_is_a_protocol_error() -> None:
    raw = bytearray(adbd.encode_packet(A_OKAY, 1, 2))
    raw[20] ^= 0x01
    with pytest.raises(ProtocolError, match="bad magic"):
        adbd.decode_header(bytes(raw))


def test_banner_parse_and_build() -> None:
    kind, props, features = adbd.parse_banner(
        b"device::ro.product.name=x;ro.product.model=M 1;ro.product.device=z;features=a,b\0"
    )
    assert kind == "device"
    assert props == {"ro.product.name": "x", "ro.product.model": "M 1", "ro.product.device": "z"}
    assert features == ["a", "b"]
    assert adbd.parse_banner(adbd.build_banner(kind, props, features)) == (kind, props, features)
    assert adbd.parse_banner(b"device::ro.product.name=x;")[2] == []


def test_shell_packet_decoder_reassembles_split_packets() -> None:
    stream = adbd.encode_shell_packet(1, b"out") + adbd.encode_shell_packet(3, b"\x07")
    dec = ShellPacketDecoder()
    got = []
    for i in range(len(stream)):  # one byte at a time
        got += dec.feed(stream[i : i + 1])
    assert got == [(1, b"out"), (3, b"\x07")]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("/data/local/tmp/bm,33261", ("/data/local/tmp/bm", 0o100755)),  # adbutils: decimal
        ("/sdcard/a,b.txt,0644", ("/sdcard/a,b.txt", 0o644)),  # C strtoul base 0: octal
        ("/x,0x1ed", ("/x", 0o755)),
        ("/nomode", ("/nomode", 0)),
    ],
)
def test_send_spec_mode_parses_like_strtoul_base_0(spec: str, expected: tuple[str, int]) -> None:
    assert adbd.parse_send_spec(spec) == expected


def test_stat_v2_struct_is_72_bytes_and_zero_on_error() -> None:
    ok = adbd.stat_v2_bytes(b"STA2", {"mode": 0o100644, "size": 5, "mtime": 7, "nlink": 1})
    assert len(ok) == 72 and ok[:4] == b"STA2"
    fields = struct.unpack("<4sIQQIIIIQqqq", ok)
    assert fields[1] == 0 and fields[4] == 0o100644 and fields[8] == 5 and fields[10] == 7
    err = adbd.stat_v2_bytes(b"LST2", {"error": 2, "mode": 0o100644, "size": 5})
    assert struct.unpack("<4sI", err[:8]) == (b"LST2", 2) and err[8:] == bytes(64)


@pytest.mark.parametrize(
    ("service", "sdk", "mode"),
    [
        # Android >= 7: shell: and exec: without the shell protocol run in a raw-mode PTY
        ("shell:ls", 34, ShellMode("ls", v2=False, pty=True, cooked=False)),
        ("exec:cat f", 34, ShellMode("cat f", v2=False, pty=True, cooked=False)),
        ("shell:", 34, ShellMode("", v2=False, pty=True, cooked=True)),
        ("shell,v2:ls", 34, ShellMode("ls", v2=True, pty=False, cooked=False)),
        (
            "shell,v2,TERM=xterm-256color,raw:a:b,c",
            34,
            ShellMode("a:b,c", v2=True, pty=False, cooked=False, terminal="xterm-256color"),
        ),
        (
            "shell,v2,TERM=xterm,pty:",
            34,
            ShellMode("", v2=True, pty=True, cooked=True, terminal="xterm"),
        ),
        # Android 6: shell: is a cooked PTY, exec: a pipe, and shell,v2: does not exist
        ("shell:ls", 23, ShellMode("ls", v2=False, pty=True, cooked=True)),
        ("exec:ls", 23, ShellMode("ls", v2=False, pty=False, cooked=False)),
        ("shell,v2:ls", 23, None),
        ("sync:", 34, None),
        ("shellfoo:x", 34, None),
    ],
)
def test_shell_service_modes(service: str, sdk: int, mode: ShellMode | None) -> None:
    assert adbd.parse_shell_service(service, sdk) == mode


def test_adbd_limits_follow_the_android_release() -> None:
    assert adbd.adbd_limits(34) == (0x01000001, 1024 * 1024)
    assert adbd.adbd_limits(26) == (0x01000000, 256 * 1024)
    assert adbd.adbd_limits(23) == (0x01000000, 4096)


# --- raw wire protocol (no adb server) -----------------------------------------------------------


class RawHost:
    """Plays the adb server's side of one TCP connection, packet by packet."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)

    def send(self, cmd: int, a0: int, a1: int, data: bytes = b"", check: int | None = None) -> None:
        raw = bytearray(adbd.encode_packet(cmd, a0, a1, data))
        if check is not None:
            struct.pack_into("<I", raw, 16, check)
        self.sock.sendall(raw)

    def recv(self, timeout: float = 10.0) -> tuple[adbd.PacketHeader, bytes] | None:
        """The next packet, or None when nothing comes within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            head = self._exact(24)
        except TimeoutError:
            return None
        h = adbd.decode_header(head)
        return h, self._exact(h.data_length)

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("EOF")
            buf += chunk
        return buf

    def handshake(self, version: int = 0x01000001, max_payload: int = 1024 * 1024) -> bytes:
        self.send(A_CNXN, version, max_payload, HOST_FEATURES)
        got = self.recv()
        assert got is not None and got[0].command == A_CNXN
        return got[1]

    def open(self, local_id: int, service: str) -> int:
        self.send(A_OPEN, local_id, 0, service.encode() + b"\0")
        got = self.recv()
        assert got is not None
        h, _ = got
        assert (h.command, h.arg1) == (A_OKAY, local_id), h
        assert h.arg0 != 0
        return h.arg0

    def close(self) -> None:
        self.sock.close()


def _phone(tmp_path: Path, profile: str = "flagship") -> Phone:
    return Phone(load_profile(profile), root_dir=tmp_path, serial=f"sim-{profile}-raw")


@pytest.fixture
def raw_flagship(tmp_path: Path) -> Iterator[tuple[AdbdServer, RawHost]]:
    server = AdbdServer(_phone(tmp_path)).start()
    host = RawHost(server.port)
    try:
        yield server, host
    finally:
        host.close()
        server.stop()


def test_cnxn_answer_carries_banner_version_and_max_payload(
    raw_flagship: tuple[AdbdServer, RawHost],
) -> None:
    server, host = raw_flagship
    # the server checksums its CNXN (it has not seen our version yet): never rejected for that
    host.send(A_CNXN, 0x01000001, 1024 * 1024, HOST_FEATURES, check=12345)
    got = host.recv()
    assert got is not None
    h, banner = got
    assert (h.command, h.arg0, h.arg1, h.data_check) == (A_CNXN, 0x01000001, 1024 * 1024, 0)
    kind, props, features = adbd.parse_banner(banner)
    profile = load_profile("flagship")
    assert kind == "device"
    assert props["ro.product.model"] == profile.model
    assert props["ro.product.name"] == profile.product
    assert props["ro.product.device"] == profile.device
    assert "shell_v2" in features and "stat_v2" in features and "sendrecv_v2" in features
    assert not set(features) & adbd.UNSUPPORTED_FEATURES  # no compressed sync, no delayed acks


def test_old_phone_negotiates_checksums_and_4k_payload(tmp_path: Path) -> None:
    with AdbdServer(_phone(tmp_path, "old_armv7")) as server:
        host = RawHost(server.port)
        host.send(A_CNXN, 0x01000001, 1024 * 1024, HOST_FEATURES)
        got = host.recv()
        host.close()
    assert got is not None
    h, banner = got
    assert (h.arg0, h.arg1) == (0x01000000, 4096)
    assert h.data_check == adbd.checksum(banner) != 0
    assert "shell_v2" not in adbd.parse_banner(banner)[2]


def test_unknown_service_is_refused_with_clse_0(raw_flagship: tuple[AdbdServer, RawHost]) -> None:
    _, host = raw_flagship
    host.handshake()
    host.send(A_OPEN, 5, 0, b"jdwp:1234\0")
    got = host.recv()
    assert got is not None
    assert (got[0].command, got[0].arg0, got[0].arg1) == (A_CLSE, 0, 5)


def test_one_wrte_in_flight_until_the_host_okays_it(
    raw_flagship: tuple[AdbdServer, RawHost],
) -> None:
    server, host = raw_flagship
    expected = "".join(f"{i}\n" for i in range(1, 3001)).encode()  # ~14 KB
    host.handshake(max_payload=4096)  # the negotiated payload is min(host, device)
    dev_id = host.open(11, "exec:seq 1 3000")
    received = b""
    while True:
        got = host.recv()
        assert got is not None
        h, data = got
        if h.command == A_CLSE:
            assert (h.arg0, h.arg1) == (dev_id, 11)
            break
        assert (h.command, h.arg0, h.arg1) == (A_WRTE, dev_id, 11)
        assert 0 < len(data) <= 4096
        received += data
        if len(received) < len(expected):
            # classic flow control: nothing more until we acknowledge this WRTE
            assert host.recv(timeout=0.3) is None
        host.send(A_OKAY, 11, dev_id)
    assert received == expected  # raw-mode PTY: no CRLF translation on Android >= 7


def test_host_wrte_is_acknowledged_and_shell_v2_frames_stdin_and_exit(
    raw_flagship: tuple[AdbdServer, RawHost],
) -> None:
    _, host = raw_flagship
    host.handshake()
    dev_id = host.open(3, "shell,v2,raw:cat; echo bye >&2; exit 5")
    host.send(
        A_WRTE,
        3,
        dev_id,
        adbd.encode_shell_packet(adbd.SHELL_STDIN, b"abc\n")
        + adbd.encode_shell_packet(adbd.SHELL_CLOSE_STDIN, b""),
    )
    packets: list[tuple[int, bytes]] = []
    dec = ShellPacketDecoder()
    saw_ack = False
    while True:
        got = host.recv()
        assert got is not None
        h, data = got
        if h.command == A_OKAY:
            assert (h.arg0, h.arg1) == (dev_id, 3)
            saw_ack = True
        elif h.command == A_WRTE:
            packets += dec.feed(data)
            host.send(A_OKAY, 3, dev_id)
        else:
            assert h.command == A_CLSE
            break
    assert saw_ack
    out = b"".join(d for i, d in packets if i == adbd.SHELL_STDOUT)
    err = b"".join(d for i, d in packets if i == adbd.SHELL_STDERR)
    assert (out, err) == (b"abc\n", b"bye\n")
    assert packets[-1] == (adbd.SHELL_EXIT, bytes([5]))  # exit comes last, after both streams


def test_interactive_pty_echoes_and_translates_newlines(
    raw_flagship: tuple[AdbdServer, RawHost],
) -> None:
    _, host = raw_flagship
    host.handshake()
    dev_id = host.open(4, "shell,v2,TERM=xterm-256color,pty:")  # `adb shell` at a terminal
    keys = adbd.encode_shell_packet(adbd.SHELL_STDIN, b"echo hi\rexit 4\r")  # Enter sends CR
    host.send(A_WRTE, 4, dev_id, keys)
    dec = ShellPacketDecoder()
    packets: list[tuple[int, bytes]] = []
    while True:
        got = host.recv()
        assert got is not None
        h, data = got
        if h.command == A_CLSE:
            break
        if h.command == A_WRTE:
            packets += dec.feed(data)
            host.send(A_OKAY, 4, dev_id)
    screen = b"".join(d for i, d in packets if i == adbd.SHELL_STDOUT)
    assert b"echo hi\r\n" in screen  # the line discipline echoes what was typed
    assert b"\r\nhi\r\n" in screen  # and turns the command's LF into CRLF
    assert packets[-1] == (adbd.SHELL_EXIT, bytes([4]))


def test_unauthorized_answers_auth_tokens_and_never_accepts(
    raw_flagship: tuple[AdbdServer, RawHost],
) -> None:
    server, _ = raw_flagship
    server.inject("unauthorized")  # drops live connections: the server must reconnect
    host = RawHost(server.port)
    host.send(A_CNXN, 0x01000001, 1024 * 1024, HOST_FEATURES)
    got = host.recv()
    assert got is not None
    assert (got[0].command, got[0].arg0, len(got[1])) == (A_AUTH, adbd.AUTH_TOKEN, 20)
    host.send(A_AUTH, adbd.AUTH_SIGNATURE, 0, b"\x01" * 256)
    again = host.recv()
    assert again is not None and again[0].arg0 == adbd.AUTH_TOKEN and again[1] != got[1]
    host.send(A_AUTH, adbd.AUTH_RSAPUBLICKEY, 0, b"QAAAA... user@host\0")
    assert host.recv(timeout=0.5) is None  # waiting for a dialog nobody answers
    host.send(A_OPEN, 1, 0, b"shell:echo hi\0")
    assert host.recv(timeout=0.5) is None  # no service before authentication
    host.close()


def test_offline_never_answers_cnxn(raw_flagship: tuple[AdbdServer, RawHost]) -> None:
    server, _ = raw_flagship
    server.inject("offline")
    host = RawHost(server.port)
    host.send(A_CNXN, 0x01000001, 1024 * 1024, HOST_FEATURES)
    assert host.recv(timeout=0.5) is None
    server.clear("offline")  # drops the silent connection; a new one is answered
    with pytest.raises(ConnectionError):
        host.recv()
    host = RawHost(server.port)
    assert adbd.parse_banner(host.handshake())[0] == "device"
    host.close()


# --- through the real adb server -----------------------------------------------------------------


def _devices_l(handle: SimHandle) -> dict[str, str]:
    r = handle.adb("devices", "-l")
    lines = {}
    for line in r.stdout.decode().splitlines()[1:]:
        if line.strip():
            serial, rest = line.split(None, 1)
            lines[serial] = rest
    return lines


def test_adb_devices_lists_phones_with_banner_fields(sim_fleet) -> None:
    fleet = sim_fleet(["flagship", "old_armv7"])
    listing = _devices_l(fleet[0])
    for handle in fleet:
        profile = load_profile(handle.profile)
        line = listing[handle.serial]
        assert line.startswith("device ")
        # `adb devices -l` turns every non-alphanumeric character of the model into `_`
        assert f"model:{profile.model.replace('-', '_').replace(' ', '_')}" in line
        assert f"product:{profile.product}" in line
        assert f"device:{profile.device}" in line


def test_properties_through_adbutils_and_cli(sim_fleet) -> None:
    (handle,) = sim_fleet(["midrange"])
    d = handle.device()
    profile = load_profile("midrange")
    assert d.prop.get("ro.farm.simulated") == "1"
    assert d.prop.model == profile.model
    assert d.getprop("ro.build.version.sdk") == str(profile.sdk)
    everything = handle.adb("shell", "getprop").stdout.decode()
    assert "[ro.farm.simulated]: [1]" in everything
    assert f"[ro.product.manufacturer]: [{profile.manufacturer}]" in everything


def test_shell_exit_codes_v1_and_v2(sim_fleet) -> None:
    (handle,) = sim_fleet(["flagship"])
    d = handle.device()
    v1 = d.shell2("ls /nonexistent")  # legacy shell: adbutils appends `; echo X4EXIT:$?`
    assert v1.returncode == 1
    assert "No such file or directory" in v1.output  # stderr merged into the PTY
    assert d.shell2("true && echo ok").returncode == 0
    v2 = d.shell2("echo out; ls /nonexistent; exit 7", v2=True)
    assert v2.returncode == 7
    assert v2.stdout == "out\n"
    assert v2.stderr == "ls: /nonexistent: No such file or directory\n"
    cli = handle.adb("shell", "exit 42")  # the CLI uses shell,v2,TERM=...,raw:
    assert cli.returncode == 42
    assert handle.adb("shell", "echo to-stderr >&2").stderr == b"to-stderr\n"


def test_tty_semantics_of_each_service(sim_fleet) -> None:
    (handle,) = sim_fleet(["flagship"])
    d = handle.device()
    probe = "[ -t 1 ] && echo tty || echo pipe"
    assert d.shell2(probe).output == "tty\n"  # legacy shell: raw-mode PTY
    assert d.shell2(probe, v2=True).output == "pipe\n"
    assert handle.adb("exec-out", probe).stdout == b"tty\n"


def test_legacy_only_phone_falls_back_and_uses_a_cooked_pty(sim_fleet) -> None:
    (handle,) = sim_fleet(["old_armv7"])
    d = handle.device()
    assert "shell_v2" not in d.get_features()
    r = d.shell2("ls /nonexistent", v2=True)  # adbutils falls back to the legacy shell
    assert r.returncode == 1
    assert r.output == "ls: /nonexistent: No such file or directory\r\n"  # Android 6: onlcr
    # no shell protocol: the CLI cannot know the exit status and reports 0
    assert handle.adb("shell", "exit 3").returncode == 0
    assert handle.adb("shell", "echo a").stdout == b"a\r\n"
    assert handle.adb("exec-out", "echo a").stdout == b"a\n"  # exec: is a plain pipe there


def test_stdin_reaches_shell_v2_commands(sim_fleet) -> None:
    (handle,) = sim_fleet(["flagship"])
    r = handle.adb(
        "shell",
        "cat > /data/local/tmp/in.txt; wc -l < /data/local/tmp/in.txt",
        input=b"one\ntwo\nthree\n",
    )
    assert r.returncode == 0
    assert r.stdout.strip() == b"3"
    assert handle.device().sync.read_text("/data/local/tmp/in.txt") == "one\ntwo\nthree\n"


def test_shell_without_a_command_reads_commands_from_stdin(sim_fleet) -> None:
    (handle,) = sim_fleet(["flagship"])
    r = handle.adb("shell", input=b"echo first\ngetprop ro.farm.simulated\n")
    assert r.returncode == 0
    assert r.stdout == b"first\n1\n"


def test_push_and_pull_50mb_with_sha256_on_the_phone(
    sim_fleet,
    tmp_path: Path,
) -> None:
    (handle,) = sim_fleet(["flagship"])
    payload = os.urandom(50 * 1024 * 1024)
    digest = hashlib.sha256(payload).hexdigest()
    d = handle.device()
    assert d.sync.push(payload, "/data/local/tmp/big.bin") == len(payload)
    remote = d.shell2("sha256sum /data/local/tmp/big.bin", v2=True, timeout=60)
    assert remote.returncode == 0
    assert remote.stdout.split()[0] == digest
    assert d.sync.stat("/data/local/tmp/big.bin").size == len(payload)
    pulled = tmp_path / "big.bin"
    r = handle.adb("pull", "/data/local/tmp/big.bin", str(pulled), timeout_s=120)
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(pulled.read_bytes()).hexdigest() == digest
    # and back with the CLI (SND2 on this phone), checked on the phone again
    r = handle.adb("push", str(pulled), "/data/local/tmp/again.bin", timeout_s=120)
    assert r.returncode == 0, r.stderr
    again = d.shell2("sha256sum /data/local/tmp/again.bin", v2=True, timeout=60)
    assert again.stdout.split()[0] == digest


def test_push_errors_carry_adbds_messages(sim_fleet, tmp_path: Path) -> None:
    (handle,) = sim_fleet(["flagship"])
    local = tmp_path / "f.txt"
    local.write_bytes(b"x" * 1000)
    r = handle.adb("push", str(local), "/system/bin/f.txt")
    assert r.returncode == 1
    assert b"remote couldn't create file: Read-only file system" in r.stderr
    with pytest.raises(adbutils.AdbError):
        handle.device().sync.push(b"x", "/system/bin/f.txt")
    r = handle.adb("pull", "/data/local/tmp/missing", str(tmp_path / "m"))
    assert r.returncode == 1
    assert b"No such file or directory" in r.stderr
    d = handle.device()  # adbutils reads the FAIL message of RECV
    with pytest.raises(adbutils.AdbError, match="open failed: No such file or directory"):
        d.sync.read_bytes(f"{T}/missing")
    with pytest.raises(adbutils.AdbError, match="read failed: Is a directory"):
        d.sync.read_bytes(T)


def test_push_creates_directories_and_copies_user_bits(
    sim_fleet,
    tmp_path: Path,
) -> None:
    (handle,) = sim_fleet(["flagship"])
    d = handle.device()
    d.sync.push(b"#!/system/bin/sh\necho hi\n", "/data/local/tmp/a/b/run.sh", mode=0o755)
    local = tmp_path / "plain.txt"
    local.write_bytes(b"text")
    local.chmod(0o644)
    assert handle.adb("push", str(local), "/data/local/tmp/a/plain.txt").returncode == 0
    listing = d.shell2("ls -l /data/local/tmp/a/b/run.sh /data/local/tmp/a/plain.txt", v2=True)
    lines = listing.stdout.splitlines()
    assert lines[0].startswith("-rwxrwxrwx")  # 0755 -> 0777
    assert lines[1].startswith("-rw-rw-rw-")  # 0644 -> 0666: not executable
    assert d.shell2("/data/local/tmp/a/b/run.sh", v2=True).stdout == "hi\n"


def test_list_stat_and_the_v2_requests(sim_fleet, tmp_path: Path) -> None:
    fleet = sim_fleet(["flagship", "old_armv7"])  # sync v2 on one, v1 only on the other
    for handle in fleet:
        d = handle.device()
        d.sync.push(b"12345", f"{T}/five.txt")
        entries = {e.path: e for e in d.sync.list(T)}
        assert {".", "..", "five.txt"} <= set(entries)
        assert entries["five.txt"].size == 5
        assert not d.sync.exists("/data/local/tmp/nothing-here")  # STAT: all zeros
        assert d.sync.stat("/data/local/tmp/five.txt").size == 5
        listing = handle.adb("ls", "/data/local/tmp").stdout.decode()
        row = next(line for line in listing.splitlines() if line.endswith(" five.txt"))
        mode, size = row.split()[:2]
        assert int(mode, 16) & 0o170000 == 0o100000 and int(size, 16) == 5
        local = tmp_path / handle.profile
        assert handle.adb("pull", f"{T}/five.txt", str(local)).returncode == 0
        assert handle.adb("push", str(local), f"{T}/six.txt").returncode == 0
        assert local.read_bytes() == b"12345"
    flagship = fleet[0]
    dry = flagship.adb("push", "-n", str(tmp_path / "flagship"), f"{T}/dry.txt")
    assert dry.returncode == 0, dry.stderr  # SND2 with the dry-run flag: nothing written
    assert not flagship.device().sync.exists(f"{T}/dry.txt")
    modern, old = (set(h.running.adbd.stats.sync_requests) for h in fleet)
    # the adb CLI uses the v2 requests a phone advertises, and only those
    assert {"STA2", "LIS2", "RCV2", "SND2"} <= modern
    assert {"STAT", "LIST", "RECV", "SEND"} <= old and not {"STA2", "LIS2", "RCV2", "SND2"} & old


def test_phones_on_two_adb_servers(sim_fleet) -> None:
    fleet = sim_fleet(["flagship", "midrange", "lowend"], servers=2)
    a, b = fleet.servers
    assert a.port != b.port
    assert [h.profile for h in fleet.on_server(a)] == ["flagship", "lowend"]
    for handle in fleet:
        other = b if handle.server is a else a
        assert handle.server.state(handle.serial) == "device"
        assert other.state(handle.serial) == "absent"
        assert handle.device().shell2("getprop ro.farm.profile", v2=True).stdout.strip() == (
            handle.profile
        )


def test_one_phone_serves_two_adb_servers_at_once(sim_fleet) -> None:
    fleet = sim_fleet(["flagship", "midrange"], servers=2)
    phone, other = fleet[0], fleet.servers[1]
    fleet.fleet.connect(other, [phone.running])
    assert phone.running.adbd.connection_count == 2
    out = adbutils.AdbClient(port=other.port).device(phone.serial).shell2("echo both", v2=True)
    assert out.stdout == "both\n"
    assert phone.device().shell2("echo first", v2=True).stdout == "first\n"


def test_concurrent_streams_on_one_phone(sim_fleet) -> None:
    (handle,) = sim_fleet(["flagship"], time_scale=20)
    d = handle.device()
    errors: list[str] = []

    def long_shell() -> None:
        r = d.shell2("sleep 20; echo slept", v2=True, timeout=30)  # 1 s of real time
        if r.stdout != "slept\n":
            errors.append(f"long: {r!r}")

    def reader() -> None:
        for _ in range(5):
            r = d.shell2("cat /sys/class/thermal/thermal_zone0/temp", v2=True, timeout=30)
            if r.returncode != 0 or not r.stdout.strip().lstrip("-").isdigit():
                errors.append(f"reader: {r!r}")

    threads = [threading.Thread(target=long_shell)] + [
        threading.Thread(target=reader) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []


def test_root_is_refused_like_a_production_build(sim_fleet) -> None:
    (handle,) = sim_fleet(["lowend"])
    r = handle.adb("root")
    assert b"adbd cannot run as root in production builds" in r.stdout + r.stderr
