"""The adbd side of the adb transport protocol for simulated phones, over loopback TCP.

`AdbdServer` listens on one 127.0.0.1 port per phone and answers the real adb server exactly as a
phone's adbd does: the CNXN handshake with the phone's banner (or AUTH, or silence, when a fault
says so), OPEN/OKAY/WRTE/CLSE streams with one WRTE in flight per stream, the negotiated maximum
payload, and the services `shell:` (raw-mode PTY, no exit status), `shell,v2,...:` (framed stdin,
stdout, stderr, exit), `exec:` and `sync:` (v1 and the v2 requests the banner advertises).

I/O: TCP sockets (one listener, one thread per connection and per stream). Files and processes
are reached only through the `SimPhone` protocol below (implemented by `farm.sim.phone.Phone`);
this module never touches the host filesystem and never starts an adb server.

The packet codecs at the top (`encode_packet`, `decode_header`, shell v2 and sync framing) are
pure functions, unit-tested without sockets.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

logger = logging.getLogger(__name__)

# --- packet layer -------------------------------------------------------------------------------

A_SYNC = 0x434E5953
A_CNXN = 0x4E584E43
A_OPEN = 0x4E45504F
A_OKAY = 0x59414B4F
A_CLSE = 0x45534C43
A_WRTE = 0x45545257
A_AUTH = 0x48545541
A_STLS = 0x534C5453

COMMAND_NAMES: Mapping[int, str] = {
    A_SYNC: "SYNC",
    A_CNXN: "CNXN",
    A_OPEN: "OPEN",
    A_OKAY: "OKAY",
    A_CLSE: "CLSE",
    A_WRTE: "WRTE",
    A_AUTH: "AUTH",
    A_STLS: "STLS",
}

AUTH_TOKEN = 1
AUTH_SIGNATURE = 2
AUTH_RSAPUBLICKEY = 3

# Protocol versions: Android 9 (P) introduced 0x01000001 and with it "no checksums".
VERSION_MIN = 0x01000000
VERSION_SKIP_CHECKSUM = 0x01000001

# adbd's MAX_PAYLOAD by Android release: 4 KiB up to 6.0, 256 KiB in 7.x/8.x, 1 MiB from 9.
MAX_PAYLOAD_V1 = 4 * 1024
MAX_PAYLOAD_V2 = 256 * 1024
MAX_PAYLOAD = 1024 * 1024

HEADER = struct.Struct("<6I")
HEADER_SIZE = HEADER.size  # 24

# Features a phone's banner may list that this transport cannot serve: compressed sync needs
# brotli/lz4/zstd (not in the stdlib) and delayed acks are a different flow-control mode.
UNSUPPORTED_FEATURES = frozenset(
    {"sendrecv_v2_brotli", "sendrecv_v2_lz4", "sendrecv_v2_zstd", "delayed_ack"}
)


class ProtocolError(Exception):
    """The peer broke the adb protocol; adbd drops the connection."""


@dataclass(frozen=True, slots=True)
class PacketHeader:
    """The 24-byte little-endian header of an adb transport packet."""

    command: int
    arg0: int
    arg1: int
    data_length: int
    data_check: int
    magic: int

    @property
    def name(self) -> str:
        """The command as its four ASCII letters (or hex when unknown)."""
        return COMMAND_NAMES.get(self.command, f"0x{self.command:08x}")


def checksum(data: bytes) -> int:
    """The pre-Android-9 payload checksum: the byte sum modulo 2**32."""
    return sum(data) & 0xFFFFFFFF


def encode_packet(
    command: int, arg0: int, arg1: int, data: bytes = b"", *, with_checksum: bool = False
) -> bytes:
    """One packet: header (magic = command ^ 0xffffffff) followed by the payload."""
    check = checksum(data) if with_checksum else 0
    header = HEADER.pack(command, arg0, arg1, len(data), check, command ^ 0xFFFFFFFF)
    return header + data


def decode_header(raw: bytes) -> PacketHeader:
    """Parse a header; raises ProtocolError on a bad magic. Checksums are never verified
    (the server checksums what it sends before it has seen the device's version)."""
    if len(raw) != HEADER_SIZE:
        raise ProtocolError(f"short header: {len(raw)} bytes")
    h = PacketHeader(*HEADER.unpack(raw))
    if h.magic != h.command ^ 0xFFFFFFFF:
        raise ProtocolError(f"bad magic 0x{h.magic:08x} for command 0x{h.command:08x}")
    return h


def parse_banner(banner: bytes) -> tuple[str, dict[str, str], list[str]]:
    """Split `kind::k=v;k=v;features=a,b` into (kind, props, features)."""
    text = banner.rstrip(b"\0").decode("utf-8", errors="replace")
    kind, _, rest = text.partition(":")
    rest = rest[1:] if rest.startswith(":") else rest
    props: dict[str, str] = {}
    features: list[str] = []
    for item in rest.split(";"):
        if not item:
            continue
        key, _, value = item.partition("=")
        if key == "features":
            features = [f for f in value.split(",") if f]
        else:
            props[key] = value
    return kind, props, features


def build_banner(kind: str, props: Mapping[str, str], features: list[str]) -> bytes:
    """Inverse of `parse_banner`."""
    items = [f"{k}={v}" for k, v in props.items()]
    items.append("features=" + ",".join(features))
    return f"{kind}::{';'.join(items)}".encode()


# --- shell protocol v2 ----------------------------------------------------------------------------

SHELL_STDIN = 0
SHELL_STDOUT = 1
SHELL_STDERR = 2
SHELL_EXIT = 3
SHELL_CLOSE_STDIN = 4
SHELL_WINDOW_SIZE = 5
_SHELL_HEADER = struct.Struct("<BI")


def encode_shell_packet(packet_id: int, data: bytes) -> bytes:
    """`[id:1][len:4 LE][data]`."""
    return _SHELL_HEADER.pack(packet_id, len(data)) + data


class ShellPacketDecoder:
    """Incremental decoder of shell v2 packets (a packet may span several WRTEs)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Add bytes; return the packets that are now complete."""
        self._buf += data
        out: list[tuple[int, bytes]] = []
        while len(self._buf) >= _SHELL_HEADER.size:
            packet_id, length = _SHELL_HEADER.unpack_from(self._buf)
            end = _SHELL_HEADER.size + length
            if len(self._buf) < end:
                break
            out.append((packet_id, bytes(self._buf[_SHELL_HEADER.size : end])))
            del self._buf[:end]
        return out


# --- sync protocol -------------------------------------------------------------------------------

SYNC_DATA_MAX = 64 * 1024
SYNC_PATH_MAX = 1024
SYNC_FLAG_BROTLI = 1
SYNC_FLAG_LZ4 = 2
SYNC_FLAG_ZSTD = 4
SYNC_FLAG_DRY_RUN = 0x80000000
_SYNC_REQ = struct.Struct("<4sI")
# id, error, dev, ino, mode, nlink, uid, gid, size, atime, mtime, ctime
_STAT_V2 = struct.Struct("<4sIQQIIIIQqqq")
_DENT_V1 = struct.Struct("<4sIIII")  # id, mode, size, mtime, namelen
_DENT_V2 = struct.Struct("<4sIQQIIIIQqqqI")  # stat_v2 fields then namelen
assert _STAT_V2.size == 72 and _DENT_V1.size == 20 and _DENT_V2.size == 76


def sync_fail(message: str) -> bytes:
    """`FAIL` + length + message, as adbd's SendSyncFail writes it."""
    data = message.encode()
    return _SYNC_REQ.pack(b"FAIL", len(data)) + data


def sync_fail_errno(reason: str, err: OSError) -> bytes:
    """`reason: strerror(errno)`, as adbd's SendSyncFailErrno writes it."""
    detail = os.strerror(err.errno) if err.errno else str(err)
    return sync_fail(f"{reason}: {detail}")


def strtoul0(text: str) -> int:
    """C `strtoul(text, nullptr, 0)`: 0x-hex, 0-octal or decimal; stops at the first bad digit."""
    s = text.strip()
    base, digits = 10, "0123456789"
    if s[:2].lower() == "0x":
        base, digits, s = 16, "0123456789abcdef", s[2:]
    elif s.startswith("0"):
        base, digits = 8, "01234567"
    n = 0
    for ch in s.lower():
        if ch not in digits:
            break
        n = n * base + digits.index(ch)
    return n & 0xFFFFFFFF


def parse_send_spec(spec: str) -> tuple[str, int]:
    """`SEND`'s `"path,mode"` (mode in any C base); a spec without a comma has mode 0."""
    path, comma, mode = spec.rpartition(",")
    if not comma:
        return spec, 0
    return path, strtoul0(mode)


def stat_v2_bytes(ident: bytes, st: Mapping[str, Any]) -> bytes:
    """A 72-byte `sync_stat_v2`; an error leaves every other field zero, as adbd does."""
    err = int(st.get("error", st.get("errno", 0)) or 0)
    if err:
        return _STAT_V2.pack(ident, err, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    return _STAT_V2.pack(
        ident,
        0,
        int(st.get("dev", 0)),
        int(st.get("ino", 0)),
        int(st.get("mode", 0)),
        int(st.get("nlink", 1)),
        int(st.get("uid", 0)),
        int(st.get("gid", 0)),
        int(st.get("size", 0)),
        int(st.get("atime", st.get("mtime", 0))),
        int(st.get("mtime", 0)),
        int(st.get("ctime", st.get("mtime", 0))),
    )


# --- what the transport needs from a phone ---------------------------------------------------


class SimProcess(Protocol):
    """A running shell command (implemented by `farm.sim.phone.Process`)."""

    def write_stdin(self, data: bytes) -> None: ...
    def close_stdin(self) -> None: ...
    def wait(self, timeout: float | None = None) -> int | None: ...
    def hangup(self) -> None: ...


class SimFaults(Protocol):
    """The phone's thread-safe set of active faults."""

    def set(self, kind: str, **params: Any) -> None: ...
    def clear(self, kind: str | None = None) -> None: ...
    def active(self, kind: str) -> bool: ...
    def params(self, kind: str) -> dict[str, Any]: ...


class SimPhone(Protocol):
    """What the transport needs from a phone (implemented by `farm.sim.phone.Phone`)."""

    @property
    def serial(self) -> str: ...
    @property
    def props(self) -> Mapping[str, str]: ...
    @property
    def faults(self) -> SimFaults: ...

    def banner(self) -> bytes: ...

    def spawn(
        self,
        command: str,
        *,
        pty: bool,
        on_stdout: Callable[[bytes], None],
        on_stderr: Callable[[bytes], None],
    ) -> SimProcess: ...

    def sync_stat(self, path: str) -> tuple[int, int, int] | None: ...
    def sync_stat_v2(self, path: str, *, follow: bool = True) -> dict[str, Any]: ...
    def sync_list(self, path: str) -> list[tuple[str, int, int, int]]: ...
    def sync_open_write(self, path: str, mode: int) -> BinaryIO: ...
    def sync_finish_write(self, path: str, f: BinaryIO, mtime: int, ok: bool) -> None: ...
    def sync_open_read(self, path: str) -> BinaryIO: ...


def phone_sdk(phone: SimPhone) -> int:
    """The phone's API level from `ro.build.version.sdk` (a modern one when absent)."""
    try:
        return int(phone.props.get("ro.build.version.sdk", "34"))
    except ValueError:
        return 34


def adbd_limits(sdk: int) -> tuple[int, int]:
    """(protocol version, max payload) of the adbd shipped with an Android API level."""
    if sdk >= 28:
        return VERSION_SKIP_CHECKSUM, MAX_PAYLOAD
    if sdk >= 24:
        return VERSION_MIN, MAX_PAYLOAD_V2
    return VERSION_MIN, MAX_PAYLOAD_V1


# --- streams -------------------------------------------------------------------------------------


class _Stream:
    """One OPENed service: device-side id, host-side id, and classic one-WRTE-in-flight flow."""

    def __init__(self, conn: _Connection, local_id: int, remote_id: int, service: str) -> None:
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self.service = service
        self._cv = threading.Condition()
        self._awaiting_ack = False
        self._closed = False
        self._inbox: deque[bytes] = deque()
        self._write_lock = threading.Lock()
        self.on_hangup: Callable[[], None] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    # host -> device
    def deliver(self, data: bytes) -> None:
        with self._cv:
            if self._closed:
                return
            self._inbox.append(data)
            self._cv.notify_all()

    def recv(self, timeout: float | None = None) -> bytes | None:
        """The next WRTE payload from the host, or None at close. Call `ack()` once consumed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while not self._inbox and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return b""
                self._cv.wait(remaining)
            if self._inbox:
                return self._inbox.popleft()
            return None

    def ack(self) -> None:
        """OKAY the host's last WRTE: it may send the next one."""
        if not self._closed:
            self.conn.send_packet(A_OKAY, self.local_id, self.remote_id)

    # device -> host
    def acked(self) -> None:
        with self._cv:
            self._awaiting_ack = False
            self._cv.notify_all()

    def write(self, data: bytes) -> bool:
        """Send bytes as WRTEs of at most the negotiated payload, each after the previous
        one's OKAY. Blocks (flow control); returns False once the stream is closed."""
        view = memoryview(data)
        with self._write_lock:
            while len(view):
                with self._cv:
                    while self._awaiting_ack and not self._closed:
                        self._cv.wait()
                    if self._closed:
                        return False
                    self._awaiting_ack = True
                chunk = bytes(view[: self.conn.max_payload])
                view = view[len(chunk) :]
                if not self.conn.send_packet(A_WRTE, self.local_id, self.remote_id, chunk):
                    self.host_closed()
                    return False
        return True

    def drain(self, timeout: float = 30.0) -> None:
        """Wait until the host acknowledged the last WRTE (adbd only then sees EOF)."""
        deadline = time.monotonic() + timeout
        with self._write_lock, self._cv:
            while self._awaiting_ack and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._cv.wait(remaining)

    def close(self) -> None:
        """Device-side end of the service: wait for the last ack, then CLSE."""
        self.drain()
        with self._cv:
            already = self._closed
            self._closed = True
            self._cv.notify_all()
        if not already:
            self.conn.send_packet(A_CLSE, self.local_id, self.remote_id)
        self.conn.forget(self.local_id)

    def host_closed(self) -> None:
        """The host sent CLSE, or the connection died: wake everyone, hang up the service."""
        with self._cv:
            if self._closed:
                return
            self._closed = True
            self._cv.notify_all()
        self.conn.forget(self.local_id)
        hook = self.on_hangup
        if hook is not None:
            try:
                hook()
            except Exception:  # noqa: BLE001 - a failing hangup must not kill the reader thread
                logger.exception("hangup of %r failed", self.service)


class _HostReader:
    """Byte-exact reads over a stream's WRTE chunks (for sync), acking each chunk as taken."""

    def __init__(self, stream: _Stream) -> None:
        self._stream = stream
        self._buf = bytearray()

    def read_exact(self, n: int) -> bytes | None:
        while len(self._buf) < n:
            chunk = self._stream.recv()
            if chunk is None:
                return None
            self._buf += chunk
            self._stream.ack()
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out


class _BufferedWriter:
    """Collects service output and sends it in WRTEs as large as the negotiated payload."""

    def __init__(self, stream: _Stream) -> None:
        self._stream = stream
        self._buf = bytearray()

    def write(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) >= self._stream.conn.max_payload:
            self.flush()

    def flush(self) -> bool:
        if not self._buf:
            return not self._stream.closed
        data = bytes(self._buf)
        self._buf.clear()
        return self._stream.write(data)


# --- services ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShellMode:
    """How adbd runs a shell service: protocol, PTY or pipes, and PTY line discipline."""

    command: str
    v2: bool
    pty: bool
    cooked: bool  # PTY with the default termios: LF -> CRLF on output, echo, CR -> LF on input
    terminal: str = "dumb"


def parse_shell_service(name: str, sdk: int) -> ShellMode | None:
    """`shell[,arg...]:[command]` or `exec:command` -> ShellMode; None for other services.

    Since Android 7, a non-interactive `shell:` without the shell protocol runs in a *raw-mode*
    PTY (adbd needs a PTY to close the child), so stderr is merged and `[ -t 1 ]` is true but
    there is no LF -> CRLF translation; `exec:` is the same. Before 7, `shell:` was a cooked
    PTY and `exec:` a pipe.
    """
    if name.startswith("exec:"):
        command = name[len("exec:") :]
        if sdk < 24:
            return ShellMode(command, v2=False, pty=False, cooked=False)
        return ShellMode(command, v2=False, pty=True, cooked=False)
    if not name.startswith("shell") or name[5:6] not in (",", ":"):
        return None
    args, _, command = name[5:].partition(":")
    if sdk < 24:
        if args:  # pre-7 adbd knows only `shell:`; `shell,v2:` is an unknown service there
            return None
        return ShellMode(command, v2=False, pty=True, cooked=True)
    v2 = False
    kind = "pty" if not command else "raw"
    terminal = "dumb"
    for arg in args.split(","):
        if arg == "raw":
            kind = "raw"
        elif arg == "pty":
            kind = "pty"
        elif arg == "v2":
            v2 = True
        elif arg.startswith("TERM="):
            terminal = arg[len("TERM=") :]
    if kind == "pty":
        return ShellMode(command, v2=v2, pty=True, cooked=True, terminal=terminal)
    if not v2:
        return ShellMode(command, v2=False, pty=True, cooked=False, terminal=terminal)
    return ShellMode(command, v2=True, pty=False, cooked=False, terminal=terminal)


def _onlcr(data: bytes) -> bytes:
    return data.replace(b"\n", b"\r\n")


class _ShellService:
    """Runs one command through `Phone.spawn` and relays it over a stream."""

    def __init__(self, stream: _Stream, phone: SimPhone, mode: ShellMode) -> None:
        self.stream = stream
        self.phone = phone
        self.mode = mode
        self.process: SimProcess | None = None
        self._line = bytearray()

    def _emit(self, packet_id: int, data: bytes) -> None:
        if not data:
            return
        if self.mode.cooked:
            data = _onlcr(data)
        if not self.mode.v2:
            self.stream.write(data)
            return
        room = max(1, self.stream.conn.max_payload - _SHELL_HEADER.size)
        for i in range(0, len(data), room):
            self.stream.write(encode_shell_packet(packet_id, data[i : i + room]))

    def _on_stdout(self, data: bytes) -> None:
        self._emit(SHELL_STDOUT, data)

    def _on_stderr(self, data: bytes) -> None:
        # Without the shell protocol (or in a PTY) stderr shares the stdout channel.
        self._emit(SHELL_STDERR if self.mode.v2 and not self.mode.pty else SHELL_STDOUT, data)

    def _hangup(self) -> None:
        process = self.process
        if process is not None:
            process.hangup()

    def run(self) -> None:
        self.stream.on_hangup = self._hangup
        try:
            self.process = self.phone.spawn(
                self.mode.command,
                pty=self.mode.pty,
                on_stdout=self._on_stdout,
                on_stderr=self._on_stderr,
            )
        except Exception as e:  # noqa: BLE001 - adbd reports a spawn failure, then exit 126
            logger.exception("spawn failed on %s", self.phone.serial)
            if self.mode.v2:
                self.stream.write(encode_shell_packet(SHELL_STDERR, f"error: {e}\n".encode()))
                self.stream.write(encode_shell_packet(SHELL_EXIT, bytes([126])))
            self.stream.close()
            return
        if self.stream.closed:  # the host went away while we were spawning
            self.process.hangup()
        pump = threading.Thread(
            target=self._pump_stdin, name=f"adbd-stdin-{self.stream.local_id}", daemon=True
        )
        pump.start()
        status = self.process.wait()
        while status is None:  # wait(None) should not return None; be robust anyway
            status = self.process.wait(1.0)
        if self.mode.v2 and not self.stream.closed:
            self.stream.write(encode_shell_packet(SHELL_EXIT, bytes([status & 0xFF])))
        self.stream.close()

    def _pump_stdin(self) -> None:
        decoder = ShellPacketDecoder()
        process = self.process
        assert process is not None
        while True:
            chunk = self.stream.recv()
            if chunk is None:
                return
            try:
                if self.mode.v2:
                    for packet_id, data in decoder.feed(chunk):
                        if packet_id == SHELL_STDIN:
                            self._stdin(process, data)
                        elif packet_id == SHELL_CLOSE_STDIN and not self.mode.pty:
                            process.close_stdin()  # a PTY "can't close just input"
                else:
                    self._stdin(process, chunk)
            except OSError:
                logger.debug("stdin of a finished process on %s", self.phone.serial)
            self.stream.ack()

    def _stdin(self, process: SimProcess, data: bytes) -> None:
        if not self.mode.cooked:
            process.write_stdin(data)
            return
        # A cooked PTY (ICANON, ECHO, ICRNL, ONLCR): echo as typed, hand over whole lines.
        echo = bytearray()
        for byte in data:
            if byte in (0x0D, 0x0A):
                self._line.append(0x0A)
                echo += b"\r\n"
                # A tty echoes as it receives, so the echo reaches the screen before the
                # shell can read the line and answer it.
                self._send_raw(bytes(echo))
                echo.clear()
                process.write_stdin(bytes(self._line))
                self._line.clear()
            elif byte in (0x7F, 0x08):  # VERASE
                if self._line:
                    self._line.pop()
                    echo += b"\b \b"
            elif byte == 0x04:  # VEOF: EOF on an empty line, else hand over the partial line
                if echo:
                    self._send_raw(bytes(echo))
                    echo.clear()
                if self._line:
                    process.write_stdin(bytes(self._line))
                    self._line.clear()
                else:
                    process.close_stdin()
            elif byte == 0x03:  # VINTR: the simulator has no job control; drop the line
                self._line.clear()
                echo += b"^C\r\n"
            else:
                self._line.append(byte)
                echo.append(byte)
        if echo:
            self._send_raw(bytes(echo))

    def _send_raw(self, data: bytes) -> None:
        """Bytes for the terminal that the line discipline itself produces (no ONLCR)."""
        if self.mode.v2:
            self.stream.write(encode_shell_packet(SHELL_STDOUT, data))
        else:
            self.stream.write(data)


class _SyncService:
    """The `sync:` file transfer service (v1 and the advertised v2 requests)."""

    def __init__(self, stream: _Stream, phone: SimPhone, features: frozenset[str]) -> None:
        self.stream = stream
        self.phone = phone
        self.features = features
        self.reader = _HostReader(stream)
        self.out = _BufferedWriter(stream)

    def run(self) -> None:
        try:
            while self._one_request():
                if not self.out.flush():
                    break
        except Exception:  # noqa: BLE001 - a broken request ends the service as adbd's does
            logger.exception("sync service failed on %s", self.phone.serial)
        self.out.flush()
        self.stream.close()

    def _one_request(self) -> bool:
        header = self.reader.read_exact(_SYNC_REQ.size)
        if header is None:
            return False
        ident, length = _SYNC_REQ.unpack(header)
        self.stream.conn.server.count_sync_request(ident)
        if ident == b"QUIT":
            return False
        if length > SYNC_PATH_MAX:
            self._fail(sync_fail("path too long"))
            return False
        raw = self.reader.read_exact(length)
        if raw is None:
            return False
        path = raw.decode("utf-8", errors="surrogateescape")
        v2_ok = {
            b"STA2": "stat_v2",
            b"LST2": "stat_v2",
            b"LIS2": "ls_v2",
            b"SND2": "sendrecv_v2",
            b"RCV2": "sendrecv_v2",
        }
        if ident in v2_ok and v2_ok[ident] not in self.features:
            self._fail(sync_fail(f"unknown command {int.from_bytes(ident, 'little'):08x}"))
            return False
        if ident == b"STAT":
            st = self.phone.sync_stat(path)
            mode, size, mtime = st if st is not None else (0, 0, 0)
            self.out.write(struct.pack("<4sIII", b"STAT", mode, size & 0xFFFFFFFF, mtime))
            return True
        if ident in (b"STA2", b"LST2"):
            self.out.write(stat_v2_bytes(ident, self._stat_v2(path, follow=ident == b"STA2")))
            return True
        if ident in (b"LIST", b"LIS2"):
            self._list(path, v2=ident == b"LIS2")
            return True
        if ident in (b"SEND", b"SND2"):
            return self._send(path, v2=ident == b"SND2")
        if ident in (b"RECV", b"RCV2"):
            return self._recv(path, v2=ident == b"RCV2")
        self._fail(sync_fail(f"unknown command {int.from_bytes(ident, 'little'):08x}"))
        return False

    def _fail(self, message: bytes) -> None:
        logger.info("%s: sync: %s", self.phone.serial, message[8:].decode(errors="replace"))
        self.out.write(message)

    def _stat_v2(self, path: str, *, follow: bool) -> dict[str, Any]:
        try:
            return dict(self.phone.sync_stat_v2(path, follow=follow))
        except OSError as e:
            return {"error": e.errno or errno.EIO}

    def _list(self, path: str, *, v2: bool) -> None:
        try:
            entries = self.phone.sync_list(path)
        except OSError:
            entries = []  # adbd sends just DONE when opendir fails
        base = path.rstrip("/") or ""
        for name, mode, size, mtime in entries:
            raw = name.encode("utf-8", errors="surrogateescape")
            if not v2:
                self.out.write(_DENT_V1.pack(b"DENT", mode, size & 0xFFFFFFFF, mtime, len(raw)))
            else:
                st = {"mode": mode, "size": size, "mtime": mtime}
                if name not in (".", ".."):
                    full = self._stat_v2(f"{base}/{name}", follow=False)
                    if not full.get("error", full.get("errno", 0)):
                        st = full
                fields = stat_v2_bytes(b"DNT2", st)
                self.out.write(fields + struct.pack("<I", len(raw)))
            self.out.write(raw)
        if v2:
            self.out.write(b"DONE" + bytes(_DENT_V2.size - 4))
        else:
            self.out.write(b"DONE" + bytes(_DENT_V1.size - 4))

    def _send(self, spec: str, *, v2: bool) -> bool:
        flags = 0
        if v2:
            setup = self.reader.read_exact(12)
            if setup is None:
                return False
            _, mode, flags = struct.unpack("<4sII", setup)
            path = spec
        else:
            path, mode = parse_send_spec(spec)
        dry_run = bool(flags & SYNC_FLAG_DRY_RUN)
        if flags & ~SYNC_FLAG_DRY_RUN or (
            dry_run and "sendrecv_v2_dry_run_send" not in self.features
        ):
            self._fail(sync_fail(f"unknown flags: {flags}"))
            return False
        f: BinaryIO | None = None
        failure: bytes | None = None
        if not dry_run:
            try:
                f = self.phone.sync_open_write(path, mode & 0o7777)
            except OSError as e:
                failure = sync_fail_errno("couldn't create file", e)
        while True:
            head = self.reader.read_exact(8)
            if head is None:
                self._finish(path, f, 0, ok=False)
                return False
            ident, size = _SYNC_REQ.unpack(head)
            if ident == b"DATA":
                data = self.reader.read_exact(size)
                if data is None:
                    self._finish(path, f, 0, ok=False)
                    return False
                if f is not None and failure is None:
                    try:
                        f.write(data)
                    except OSError as e:
                        failure = sync_fail_errno("write failed", e)
            elif ident == b"DONE":
                if failure is not None:
                    self._finish(path, f, size, ok=False)
                    self._fail(failure)
                    return False
                try:
                    self._finish(path, f, size, ok=True)
                except OSError as e:
                    self._fail(sync_fail_errno("write failed", e))
                    return False
                self.out.write(b"OKAY" + bytes(4))
                return True
            else:
                self._finish(path, f, 0, ok=False)
                self._fail(sync_fail("invalid data message"))
                return False

    def _finish(self, path: str, f: BinaryIO | None, mtime: int, *, ok: bool) -> None:
        if f is not None:
            self.phone.sync_finish_write(path, f, mtime, ok)

    def _recv(self, path: str, *, v2: bool) -> bool:
        if v2:
            setup = self.reader.read_exact(8)
            if setup is None:
                return False
            _, flags = struct.unpack("<4sI", setup)
            if flags:
                self._fail(sync_fail(f"unknown flags: {flags}"))
                return False
        try:
            f = self.phone.sync_open_read(path)
        except OSError as e:
            # open(2) of a directory succeeds on a phone; the first read(2) is what fails
            reason = "read failed" if e.errno == errno.EISDIR else "open failed"
            self._fail(sync_fail_errno(reason, e))
            return False
        try:
            while True:
                try:
                    data = f.read(SYNC_DATA_MAX)
                except OSError as e:
                    self._fail(sync_fail_errno("read failed", e))
                    return False
                if not data:
                    break
                self.out.write(_SYNC_REQ.pack(b"DATA", len(data)) + data)
                if self.stream.closed:
                    return False
        finally:
            f.close()
        self.out.write(b"DONE" + bytes(4))
        return True


def _text_service(stream: _Stream, text: str) -> None:
    stream.write(text.encode())
    stream.close()


# --- connections ---------------------------------------------------------------------------------


@dataclass
class _DisconnectPlan:
    """An armed "disconnect" fault: drop once `threshold` WRTE bytes were sent, `remaining` times
    (0 = every connection, at once)."""

    threshold: int
    remaining: int


class _Connection:
    """One TCP connection from an adb server: handshake, packet dispatch, streams."""

    def __init__(self, server: AdbdServer, sock: socket.socket, peer: str) -> None:
        self.server = server
        self.phone = server.phone
        self.sock = sock
        self.peer = peer
        self.version = server.version
        self.max_payload = server.max_payload
        self.online = False
        self.host_features: list[str] = []
        self._send_lock = threading.Lock()
        self._streams: dict[int, _Stream] = {}
        self._streams_lock = threading.Lock()
        self._next_id = 1
        self._dead = False
        self.thread = threading.Thread(
            target=self._run, name=f"adbd-{server.port}-{peer}", daemon=True
        )

    # sending
    def send_packet(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> bool:
        """Send one packet; False when the connection is gone."""
        raw = encode_packet(
            command, arg0, arg1, data, with_checksum=self.version < VERSION_SKIP_CHECKSUM
        )
        faults = self.phone.faults
        with self._send_lock:
            if self._dead:
                return False
            if faults.active("slow"):
                time.sleep(float(faults.params("slow").get("delay_s", 0.05)))
            if command == A_WRTE and self.server.count_and_check_drop(len(data)):
                self.abort("disconnect fault")
                return False
            try:
                self.sock.sendall(raw)
            except OSError:
                self._dead = True
                return False
        return True

    def abort(self, why: str) -> None:
        """Drop the TCP connection at once (the adb server sees EOF/RST and retries)."""
        logger.info("%s: dropping connection from %s: %s", self.server.serial, self.peer, why)
        self._dead = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def forget(self, local_id: int) -> None:
        with self._streams_lock:
            self._streams.pop(local_id, None)

    # receiving
    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("EOF")
            buf += chunk
        return bytes(buf)

    def _run(self) -> None:
        try:
            while True:
                header = decode_header(self._recv_exact(HEADER_SIZE))
                if header.data_length > max(self.max_payload, MAX_PAYLOAD):
                    raise ProtocolError(f"payload of {header.data_length} bytes")
                data = self._recv_exact(header.data_length) if header.data_length else b""
                self._dispatch(header, data)
        except (OSError, ConnectionError, ProtocolError) as e:
            logger.debug("%s: connection from %s ended: %s", self.server.serial, self.peer, e)
        finally:
            self._dead = True
            with contextlib.suppress(OSError):
                self.sock.close()
            self._close_all_streams()
            self.server.connection_ended(self)

    def _close_all_streams(self) -> None:
        with self._streams_lock:
            streams = list(self._streams.values())
            self._streams.clear()
        for s in streams:
            s.host_closed()

    def _dispatch(self, h: PacketHeader, data: bytes) -> None:
        faults = self.phone.faults
        if h.command == A_CNXN:
            self._close_all_streams()  # a (re)CNXN resets the transport
            self.online = False
            _, _, self.host_features = parse_banner(data)
            if faults.active("offline"):
                return  # never answer: the server keeps the device `offline`
            if faults.active("unauthorized"):
                self._send_auth_token()
                return
            self._accept_cnxn(h)
            return
        if h.command == A_AUTH:
            if h.arg0 == AUTH_SIGNATURE and not self.online:
                self._send_auth_token()  # the signature never verifies: ask for the next key
            # AUTH_RSAPUBLICKEY would show the "Allow USB debugging?" dialog; nobody answers.
            return
        if not self.online:
            return
        if h.command == A_OPEN:
            self._open(h.arg0, data)
        elif h.command == A_OKAY:
            stream = self._stream(h.arg1)
            if stream is not None and stream.remote_id == h.arg0:
                stream.acked()
        elif h.command == A_WRTE:
            stream = self._stream(h.arg1)
            if stream is not None:
                stream.deliver(data)
        elif h.command == A_CLSE:
            stream = self._stream(h.arg1)
            if stream is not None and (h.arg0 == 0 or h.arg0 == stream.remote_id):
                stream.host_closed()
        # A_SYNC is obsolete and A_STLS is only sent by devices that want TLS: ignore both.

    def _send_auth_token(self) -> None:
        self.send_packet(A_AUTH, AUTH_TOKEN, 0, secrets.token_bytes(20))

    def _accept_cnxn(self, h: PacketHeader) -> None:
        self.version = min(h.arg0, self.server.version)
        self.max_payload = min(h.arg1, self.server.max_payload) if h.arg1 else MAX_PAYLOAD_V1
        # The CNXN itself is checksummed according to the version we announce.
        self.send_packet(A_CNXN, self.version, self.server.max_payload, self.server.banner())
        self.online = True

    def _stream(self, local_id: int) -> _Stream | None:
        with self._streams_lock:
            return self._streams.get(local_id)

    def _open(self, remote_id: int, data: bytes) -> None:
        name = data.rstrip(b"\0").decode("utf-8", errors="surrogateescape")
        runner = self.server.service_for(name)
        if runner is None or remote_id == 0:
            logger.info("%s: refusing service %r", self.server.serial, name)
            self.send_packet(A_CLSE, 0, remote_id)
            return
        with self._streams_lock:
            local_id = self._next_id
            self._next_id += 1
            stream = _Stream(self, local_id, remote_id, name)
            self._streams[local_id] = stream
        self.send_packet(A_OKAY, local_id, remote_id)
        threading.Thread(
            target=runner, args=(stream,), name=f"adbd-svc-{name[:24]}", daemon=True
        ).start()


# --- the server ----------------------------------------------------------------------------------


@dataclass
class TransportStats:
    """Counters for tests and `farm sim status`."""

    connections_accepted: int = 0
    connections_dropped: int = 0
    wrte_bytes_sent: int = 0
    services_opened: dict[str, int] = field(default_factory=dict)
    sync_requests: dict[str, int] = field(default_factory=dict)


class AdbdServer:
    """A phone's adbd: a loopback TCP listener plus transport-level fault injection."""

    def __init__(
        self,
        phone: SimPhone,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        version: int | None = None,
        max_payload: int | None = None,
    ) -> None:
        self.phone = phone
        self.host = host
        sdk = phone_sdk(phone)
        default_version, default_payload = adbd_limits(sdk)
        self.sdk = sdk
        self.version = version if version is not None else default_version
        self.max_payload = max_payload if max_payload is not None else default_payload
        self._listener = socket.create_server((host, port))
        self.port: int = self._listener.getsockname()[1]
        self._connections: set[_Connection] = set()
        self._lock = threading.Lock()
        self._drop: _DisconnectPlan | None = None
        self._stopped = threading.Event()
        self._accept_thread: threading.Thread | None = None
        self.stats = TransportStats()

    @property
    def serial(self) -> str:
        """The serial the adb server gives this phone after `adb connect`."""
        return f"{self.host}:{self.port}"

    def banner(self) -> bytes:
        """The phone's banner minus the features this transport cannot serve."""
        kind, props, features = parse_banner(self.phone.banner())
        kept = [f for f in features if f not in UNSUPPORTED_FEATURES]
        return build_banner(kind, props, kept)

    def features(self) -> frozenset[str]:
        """The features this adbd advertises."""
        return frozenset(parse_banner(self.banner())[2])

    # lifecycle
    def start(self) -> AdbdServer:
        """Start accepting connections (in a daemon thread)."""
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"adbd-accept-{self.port}", daemon=True
        )
        self._accept_thread.start()
        return self

    def stop(self) -> None:
        """Close the listener and every connection; running shells get SIGHUP."""
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        with contextlib.suppress(OSError):
            self._listener.close()
        self.drop_connections("adbd stopped")
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)

    def __enter__(self) -> AdbdServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                sock, addr = self._listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, sock, f"{addr[0]}:{addr[1]}")
            with self._lock:
                self.stats.connections_accepted += 1
                refuse = self._drop is not None and self._drop.remaining == 0
                if not refuse:
                    self._connections.add(conn)
            if refuse:  # a sticky "disconnect": the phone is gone for good
                with contextlib.suppress(OSError):
                    sock.close()
                continue
            conn.thread.start()

    def connection_ended(self, conn: _Connection) -> None:
        with self._lock:
            self._connections.discard(conn)

    @property
    def connection_count(self) -> int:
        """Live transport connections (one per adb server that connected)."""
        with self._lock:
            return len(self._connections)

    def online_count(self) -> int:
        """Connections that completed the CNXN handshake."""
        with self._lock:
            return sum(1 for c in self._connections if c.online)

    def drop_connections(self, why: str = "dropped") -> int:
        """Abort every live connection; return how many."""
        with self._lock:
            conns = list(self._connections)
        for c in conns:
            c.abort(why)
        with self._lock:
            self.stats.connections_dropped += len(conns)
        return len(conns)

    # services
    def service_for(self, name: str) -> Callable[[_Stream], None] | None:
        """The runner for an OPENed service name, or None to refuse it with CLSE."""
        with self._lock:
            key = name.split(":", 1)[0].split(",", 1)[0] + ":"
            self.stats.services_opened[key] = self.stats.services_opened.get(key, 0) + 1
        mode = parse_shell_service(name, self.sdk)
        if mode is not None:
            if mode.v2 and "shell_v2" not in self.features():
                return None
            return lambda stream: _ShellService(stream, self.phone, mode).run()
        if name == "sync:":
            features = self.features()
            return lambda stream: _SyncService(stream, self.phone, features).run()
        if name == "root:":
            return lambda stream: _text_service(
                stream, "adbd cannot run as root in production builds\n"
            )
        if name == "unroot:":
            return lambda stream: _text_service(stream, "adbd not running as root\n")
        return None

    def count_sync_request(self, ident: bytes) -> None:
        """Count one sync request by its id (STAT, STA2, SND2, ...)."""
        name = ident.decode("ascii", errors="replace")
        with self._lock:
            self.stats.sync_requests[name] = self.stats.sync_requests.get(name, 0) + 1

    # faults
    def inject(self, kind: str, **params: Any) -> None:
        """Turn on a fault. Transport faults act here; the others only set the phone's flag.

        - `disconnect`: drop the connection once at least `after_bytes` more WRTE payload bytes
          were sent to the host (0: now); `times` drops in all (default 1; 0: for good, every
          reconnection is dropped too).
        - `unauthorized` / `offline`: the next handshakes get AUTH / no answer; live connections
          are dropped so that the adb server reconnects and sees it.
        - `slow`: every packet sent waits `delay_s` seconds.
        """
        self.phone.faults.set(kind, **params)
        if kind == "disconnect":
            after = int(params.get("after_bytes", 0))
            times = int(params.get("times", 1))
            with self._lock:
                self._drop = _DisconnectPlan(self.stats.wrte_bytes_sent + after, times)
            if after == 0:
                self._fire_drop()
        elif kind in ("unauthorized", "offline"):
            self.drop_connections(f"{kind} fault")

    def clear(self, kind: str | None = None) -> None:
        """Turn off one fault (or all); a cleared handshake fault drops connections again."""
        was_handshake = any(
            self.phone.faults.active(k)
            for k in ("unauthorized", "offline")
            if kind is None or k == kind
        )
        self.phone.faults.clear(kind)
        if kind in (None, "disconnect"):
            with self._lock:
                self._drop = None
        if was_handshake:
            self.drop_connections("handshake fault cleared")

    def count_and_check_drop(self, nbytes: int) -> bool:
        """Called before each WRTE: True when an armed disconnect fault fires now (at least
        `after_bytes` were sent since it was armed), else count the bytes about to go."""
        with self._lock:
            plan = self._drop
            fire = plan is not None and self.stats.wrte_bytes_sent >= plan.threshold
            if fire:
                self.stats.connections_dropped += 1
            else:
                self.stats.wrte_bytes_sent += nbytes
        if fire:
            self._consume_drop()
        return fire

    def _consume_drop(self) -> None:
        with self._lock:
            plan = self._drop
            if plan is None or plan.remaining == 0:
                return  # sticky: stays armed
            plan.remaining -= 1
            done = plan.remaining == 0
            if done:
                self._drop = None
        if done:
            self.phone.faults.clear("disconnect")

    def _fire_drop(self) -> None:
        self.drop_connections("disconnect fault")
        self._consume_drop()
