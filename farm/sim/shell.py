"""A small mksh: the shell a simulated phone runs for `adb shell`, plus its process table.

No host I/O of its own (files go through `SimFS`). It tokenizes with POSIX quoting, expands
parameters (`$?`, `$$`, `$!`, `${x:-y}`), command substitution, arithmetic, globs against the
phone's filesystem, and runs `;`, `&&`, `||`, `|`, `&`, redirections (`>`, `>>`, `<`, `2>&1`),
`if`, `for`, `while`, `{ }` and `( )`. Error texts are mksh's ("/system/bin/sh: x: inaccessible
or not found", "can't create ...: Read-only file system", "Segmentation fault"). Commands run in
threads; a simulated process gets signals as flags checked at every blocking point.
"""

from __future__ import annotations

import ast
import errno
import os
import posixpath
import re
import signal as _signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

from farm.sim.thermal import Interrupted

if TYPE_CHECKING:
    from farm.sim.phone import Phone

SH = "/system/bin/sh"
SIGHUP, SIGINT, SIGKILL, SIGSEGV, SIGPIPE, SIGTERM, SIGABRT = 1, 2, 9, 11, 13, 15, 6
SIGNALS: dict[str, int] = {
    "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "BUS": 7, "FPE": 8,
    "KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15,
    "STKFLT": 16, "CHLD": 17, "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21, "TTOU": 22,
    "URG": 23, "XCPU": 24, "XFSZ": 25, "VTALRM": 26, "PROF": 27, "WINCH": 28, "IO": 29,
    "PWR": 30, "SYS": 31,
}
# what mksh prints when a foreground job dies of a signal (SIGINT and SIGPIPE: nothing)
SIGNAL_MESSAGES: dict[int, str] = {
    1: "Hangup", 3: "Quit", 4: "Illegal instruction", 6: "Aborted", 7: "Bus error",
    8: "Floating point exception", 9: "Killed", 11: "Segmentation fault", 15: "Terminated",
    24: "CPU time limit exceeded", 31: "Bad system call",
}
PATH = ("/product/bin:/apex/com.android.runtime/bin:/apex/com.android.art/bin:"
        "/system_ext/bin:/system/bin:/system/xbin:/odm/bin:/vendor/bin:/vendor/xbin")


class Signalled(Exception):  # noqa: N818 - models a delivered signal, not an error
    """The current simulated process received a fatal signal."""

    def __init__(self, sig: int) -> None:
        super().__init__(sig)
        self.sig = sig


class ExitShell(Exception):  # noqa: N818
    """`exit N` unwinds the interpreter."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class ShellSyntaxError(Exception):
    """A parse error; the message is mksh's wording after the 'syntax error: ' prefix."""


# -------------------------------------------------------------------------------------------
# processes


@dataclass(eq=False)
class SimProc:
    """One simulated process (the shell, a command, benchmark_model, or a system daemon)."""

    pid: int
    ppid: int
    uid: int
    name: str
    argv: tuple[str, ...]
    start_uptime_s: float
    session: int = 0
    rss_kb: int = 2400
    vsz_kb: int = 10_860_000
    hwm_kb: int = 2400
    threads: int = 1
    state: str = "S"
    affinity: int = 0xFF
    system: bool = False
    background: bool = False
    ignore_hup: bool = False
    pending: int | None = None
    event: threading.Event = field(default_factory=threading.Event)
    fg: SimProc | None = None  # the foreground child a shell is waiting for

    def signal(self, sig: int) -> None:
        """Deliver a signal (the first fatal one wins)."""
        if sig in (0, 17, 18, 28):  # 0 probes; CHLD, CONT, WINCH are ignored by default
            return
        if sig == SIGHUP and self.ignore_hup:
            return
        if self.pending is None:
            self.pending = sig
        self.event.set()

    def check(self) -> None:
        """Raise Signalled if a signal is pending."""
        if self.pending is not None:
            raise Signalled(self.pending)


_tls = threading.local()


def current_proc() -> SimProc | None:
    """The simulated process the calling thread is running."""
    return getattr(_tls, "proc", None)


def check_signals() -> None:
    """Raise Signalled if the current simulated process has a pending signal."""
    p = current_proc()
    if p is not None:
        p.check()


class _Current:
    """Context manager: make `proc` the calling thread's current process."""

    def __init__(self, proc: SimProc) -> None:
        self.proc = proc
        self.prev: SimProc | None = None

    def __enter__(self) -> SimProc:
        self.prev = current_proc()
        _tls.proc = self.proc
        return self.proc

    def __exit__(self, *exc: object) -> None:
        _tls.proc = self.prev


# system processes a phone shows in `ps -A` (pid, ppid, uid, name, rss_kb)
_SYSTEM_PROCS: tuple[tuple[int, int, int, str, int], ...] = (
    (1, 0, 0, "init", 10_252), (2, 0, 0, "kthreadd", 0), (3, 2, 0, "rcu_gp", 0),
    (150, 1, 0, "ueventd", 3_400), (310, 1, 1036, "logd", 9_800),
    (318, 1, 1000, "servicemanager", 4_100), (320, 1, 1000, "hwservicemanager", 5_200),
    (480, 1, 1000, "surfaceflinger", 41_500), (520, 1, 0, "zygote64", 121_300),
    (521, 1, 0, "zygote", 99_800), (612, 1, 1041, "audioserver", 22_100),
    (640, 1, 0, "thermal-engine", 5_900), (702, 1, 2000, "adbd", 8_600),
    (1205, 520, 1000, "system_server", 391_000), (1680, 520, 10123, "com.android.systemui",
                                                   210_000),
    (2010, 520, 1001, "com.android.phone", 98_000),
    (2455, 520, 10087, "com.google.android.gms.persistent", 121_000),
)


class ProcessTable:
    """Every simulated process of one phone (thread-safe)."""

    def __init__(self, uptime: Callable[[], float], *, sdk: int = 34) -> None:
        self._uptime = uptime
        self._lock = threading.Lock()
        self._procs: dict[int, SimProc] = {}
        self._next = 5000 + (sdk * 37) % 900
        for pid, ppid, uid, name, rss in _SYSTEM_PROCS:
            if name == "zygote" and sdk < 21:
                continue
            self._procs[pid] = SimProc(pid=pid, ppid=ppid, uid=uid, name=name, argv=(name,),
                                       start_uptime_s=1.0 + pid / 100, rss_kb=rss,
                                       hwm_kb=rss, system=True)

    def spawn(self, *, ppid: int, name: str, argv: tuple[str, ...], uid: int = 2000,
              session: int = 0, affinity: int = 0xFF, background: bool = False,
              ignore_hup: bool = False) -> SimProc:
        """Create a process entry."""
        with self._lock:
            pid = self._next
            self._next += 1 + (pid % 3 == 0)
            p = SimProc(pid=pid, ppid=ppid, uid=uid, name=name, argv=argv,
                        start_uptime_s=self._uptime(), session=session or pid,
                        affinity=affinity, background=background, ignore_hup=ignore_hup)
            self._procs[pid] = p
            return p

    def exit(self, pid: int) -> None:
        """Remove a process."""
        with self._lock:
            p = self._procs.get(pid)
            if p is not None and not p.system:
                del self._procs[pid]

    def get(self, pid: int) -> SimProc | None:
        """A process by pid."""
        with self._lock:
            return self._procs.get(pid)

    def snapshot(self) -> list[SimProc]:
        """All processes, by pid."""
        with self._lock:
            return sorted(self._procs.values(), key=lambda p: p.pid)

    def session_members(self, session: int) -> list[SimProc]:
        """Processes of one adb shell session."""
        with self._lock:
            return [p for p in self._procs.values() if p.session == session and not p.system]

    def kill(self, pid: int, sig: int) -> int:
        """kill(2) as the shell user: 0, ESRCH or EPERM."""
        p = self.get(pid)
        if p is None:
            return errno.ESRCH
        if p.uid != 2000:
            return errno.EPERM
        p.signal(sig)
        return 0

    def current_pid(self) -> int:
        """Pid of the calling thread's process (for /proc/self)."""
        p = current_proc()
        return p.pid if p is not None else 1


# -------------------------------------------------------------------------------------------
# streams


class BrokenPipe(Exception):  # noqa: N818
    """Writing to a pipe nobody reads."""


class OutStream:
    """Where a command writes. Subclasses implement `_write`."""

    isatty = False

    def write(self, data: bytes) -> None:
        """Write bytes (may block; raises Signalled(SIGPIPE) when the reader is gone)."""
        if data:
            self._write(data)

    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release (end of this writer)."""

    def flush(self) -> None:
        """Nothing is buffered."""


class CallbackOut(OutStream):
    """The adb stream: bytes go to the transport's callback (which may block)."""

    def __init__(self, cb: Callable[[bytes], None], tty: bool, lock: threading.Lock) -> None:
        self._cb = cb
        self.isatty = tty
        self._lock = lock
        self.broken = False

    def _write(self, data: bytes) -> None:
        if self.broken:
            raise Signalled(SIGPIPE)
        try:
            with self._lock:
                self._cb(data)
        except (OSError, BrokenPipe, ConnectionError):
            self.broken = True
            raise Signalled(SIGPIPE) from None


class NullOut(OutStream):
    """Discards."""

    def _write(self, data: bytes) -> None:
        return


class CaptureOut(OutStream):
    """Collects bytes (command substitution, tests)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self._lock = threading.Lock()

    def _write(self, data: bytes) -> None:
        with self._lock:
            self.buf += data


class FileOut(OutStream):
    """A file opened by a redirection."""

    def __init__(self, f: BinaryIO, on_close: Callable[[], None] | None = None) -> None:
        self._f = f
        self._on_close = on_close
        self.closed = False

    def _write(self, data: bytes) -> None:
        self._f.write(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._f.close()
            if self._on_close is not None:
                self._on_close()


class Pipe:
    """A bounded in-memory pipe between two simulated processes."""

    CAPACITY = 65536

    def __init__(self) -> None:
        self._buf = bytearray()
        self._cond = threading.Condition()
        self.writers_closed = False
        self.reader_closed = False

    def write(self, data: bytes) -> None:
        """Blocks while full; Signalled(SIGPIPE) when the reader closed."""
        view = memoryview(data)
        while view:
            with self._cond:
                while len(self._buf) >= self.CAPACITY and not self.reader_closed:
                    check_signals()
                    self._cond.wait(0.05)
                if self.reader_closed:
                    raise Signalled(SIGPIPE)
                n = min(len(view), self.CAPACITY - len(self._buf))
                self._buf += view[:n]
                view = view[n:]
                self._cond.notify_all()

    def write_nowait(self, data: bytes) -> None:
        """Append without waiting for room (the adb transport does its own flow control)."""
        with self._cond:
            if not self.reader_closed and not self.writers_closed:
                self._buf += data
                self._cond.notify_all()

    def read(self, n: int = -1) -> bytes:
        """Blocks until data or EOF; returns b'' at EOF."""
        with self._cond:
            while not self._buf and not self.writers_closed:
                check_signals()
                self._cond.wait(0.05)
            if n < 0 or n >= len(self._buf):
                out = bytes(self._buf)
                self._buf.clear()
            else:
                out = bytes(self._buf[:n])
                del self._buf[:n]
            self._cond.notify_all()
            return out

    def close_write(self) -> None:
        """EOF for the reader."""
        with self._cond:
            self.writers_closed = True
            self._cond.notify_all()

    def close_read(self) -> None:
        """The reader went away."""
        with self._cond:
            self.reader_closed = True
            self._buf.clear()
            self._cond.notify_all()


class PipeOut(OutStream):
    """Writing end of a Pipe."""

    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe

    def _write(self, data: bytes) -> None:
        self.pipe.write(data)

    def close(self) -> None:
        self.pipe.close_write()


class InStream:
    """Where a command reads from."""

    isatty = False

    def __init__(self) -> None:
        self._pending = bytearray()
        self._eof = False

    def _read_chunk(self) -> bytes:
        return b""

    def read(self, n: int = -1) -> bytes:
        """Up to n bytes (all until EOF with n < 0); b'' at EOF."""
        if n < 0:
            acc = bytearray(self._pending)
            self._pending.clear()
            while not self._eof:
                chunk = self._read_chunk()
                if not chunk:
                    self._eof = True
                    break
                acc += chunk
            return bytes(acc)
        if not self._pending and not self._eof:
            chunk = self._read_chunk()
            if not chunk:
                self._eof = True
            self._pending += chunk
        out = bytes(self._pending[:n])
        del self._pending[:n]
        return out

    def readline(self) -> bytes:
        """One line including its newline; b'' at EOF."""
        while b"\n" not in self._pending and not self._eof:
            chunk = self._read_chunk()
            if not chunk:
                self._eof = True
                break
            self._pending += chunk
        i = self._pending.find(b"\n")
        if i < 0:
            out = bytes(self._pending)
            self._pending.clear()
            return out
        out = bytes(self._pending[: i + 1])
        del self._pending[: i + 1]
        return out

    def lines(self) -> Iterator[bytes]:
        """Iterate lines."""
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    def close(self) -> None:
        """Done reading."""


class BytesIn(InStream):
    """Fixed bytes (a file read by `<`, a here-string)."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._pending += data
        self._eof = True


class EmptyIn(BytesIn):
    """Immediate EOF."""

    def __init__(self) -> None:
        super().__init__(b"")


class FileIn(InStream):
    """A file opened by `<`."""

    def __init__(self, f: BinaryIO) -> None:
        super().__init__()
        self._f = f

    def _read_chunk(self) -> bytes:
        check_signals()
        return self._f.read(65536)

    def close(self) -> None:
        self._f.close()


class PipeIn(InStream):
    """Reading end of a Pipe (the host's stdin is one too)."""

    def __init__(self, pipe: Pipe, tty: bool = False) -> None:
        super().__init__()
        self.pipe = pipe
        self.isatty = tty

    def _read_chunk(self) -> bytes:
        return self.pipe.read(65536)

    def close(self) -> None:
        self.pipe.close_read()


# -------------------------------------------------------------------------------------------
# lexer and parser

_OPERATORS = ("&&", "||", ";;", ">>", "<<", ">&", "<&", ">|", "<>", ";", "&", "|", "(", ")",
              "<", ">")
_META = set(" \t\n;&|()<>")
_RESERVED = {"if", "then", "elif", "else", "fi", "for", "in", "do", "done", "while", "until",
             "{", "}", "!", "case", "esac"}
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_ASSIGN_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)\Z", re.S)


@dataclass(frozen=True, slots=True)
class Tok:
    """A token: kind WORD, OP, IONUM or NEWLINE."""

    kind: str
    value: str


def _skip_quoted(src: str, i: int) -> int:
    """Index after the construct starting at src[i] (quote, $(), ${}, backquote)."""
    c = src[i]
    n = len(src)
    if c == "'":
        j = src.find("'", i + 1)
        if j < 0:
            raise ShellSyntaxError("no closing quote")
        return j + 1
    if c == '"':
        j = i + 1
        while j < n:
            if src[j] == "\\":
                j += 2
                continue
            if src[j] == '"':
                return j + 1
            if src[j] == "$" and j + 1 < n and src[j + 1] in "({":
                j = _skip_quoted(src, j)
                continue
            if src[j] == "`":
                j = _skip_quoted(src, j)
                continue
            j += 1
        raise ShellSyntaxError("no closing quote")
    if c == "`":
        j = i + 1
        while j < n:
            if src[j] == "\\":
                j += 2
                continue
            if src[j] == "`":
                return j + 1
            j += 1
        raise ShellSyntaxError("no closing quote")
    if c == "$" and src.startswith("$((", i):
        depth = 0
        j = i + 1
        while j < n:
            if src[j] == "(":
                depth += 1
            elif src[j] == ")":
                depth -= 1
                if depth == 0:
                    return j + 1
            j += 1
        raise ShellSyntaxError("'((' unmatched")
    if c == "$" and src.startswith("$(", i):
        depth = 1
        j = i + 2
        while j < n:
            ch = src[j]
            if ch in "'\"`":
                j = _skip_quoted(src, j)
                continue
            if ch == "\\":
                j += 2
                continue
            if ch == "$" and j + 1 < n and src[j + 1] in "({":
                j = _skip_quoted(src, j)
                continue
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
                if depth == 0:
                    return j + 1
            j += 1
        raise ShellSyntaxError("'(' unmatched")
    if c == "$" and src.startswith("${", i):
        j = src.find("}", i + 2)
        if j < 0:
            raise ShellSyntaxError("missing '}'")
        return j + 1
    return i + 1


def tokenize(src: str) -> list[Tok]:
    """Split a command line into tokens (words keep their quotes for expansion)."""
    toks: list[Tok] = []
    i = 0
    n = len(src)
    while i < n:
        c = src[i]
        if c in " \t\r":
            i += 1
            continue
        if c == "\\" and i + 1 < n and src[i + 1] == "\n":
            i += 2
            continue
        if c == "\n":
            toks.append(Tok("NEWLINE", "\n"))
            i += 1
            continue
        if c == "#":
            while i < n and src[i] != "\n":
                i += 1
            continue
        op = next((o for o in _OPERATORS if src.startswith(o, i)), None)
        if op is not None:
            toks.append(Tok("OP", op))
            i += len(op)
            continue
        j = i
        while j < n and src[j] not in _META:
            ch = src[j]
            if ch == "\\":
                j += 2
                continue
            if ch in "'\"`" or (ch == "$" and j + 1 < n and src[j + 1] in "({"):
                j = _skip_quoted(src, j)
                continue
            j += 1
        word = src[i:min(j, n)]
        if word.isdigit() and j < n and src[j] in "<>":
            toks.append(Tok("IONUM", word))
        else:
            toks.append(Tok("WORD", word))
        i = j
    return toks


@dataclass
class Redir:
    """A redirection: fd, operator, target word."""

    fd: int
    op: str
    target: str


@dataclass
class Simple:
    """A simple command."""

    words: list[str]
    assigns: list[tuple[str, str]]
    redirs: list[Redir]


@dataclass
class Pipeline:
    """cmd | cmd ..."""

    cmds: list[Node]
    negate: bool = False


@dataclass
class AndOr:
    """a && b || c"""

    first: Node
    rest: list[tuple[str, Node]]


@dataclass
class Seq:
    """A list of commands, each maybe in the background."""

    items: list[tuple[Node, bool]]


@dataclass
class If:
    """if/elif/else."""

    branches: list[tuple[Node, Node]]
    else_body: Node | None
    redirs: list[Redir] = field(default_factory=list)


@dataclass
class For:
    """for NAME in words; do body; done"""

    var: str
    words: list[str] | None
    body: Node
    redirs: list[Redir] = field(default_factory=list)


@dataclass
class While:
    """while/until."""

    cond: Node
    body: Node
    until: bool = False
    redirs: list[Redir] = field(default_factory=list)


@dataclass
class Group:
    """{ list; } or ( list )."""

    body: Node
    subshell: bool
    redirs: list[Redir] = field(default_factory=list)


Node = Simple | Pipeline | AndOr | Seq | If | For | While | Group


class Parser:
    """Recursive descent over tokens."""

    def __init__(self, toks: list[Tok]) -> None:
        self.toks = toks
        self.i = 0

    def peek(self) -> Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def next(self) -> Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def at_word(self, *words: str) -> bool:
        t = self.peek()
        return t is not None and t.kind == "WORD" and t.value in words

    def at_op(self, *ops: str) -> bool:
        t = self.peek()
        return t is not None and t.kind == "OP" and t.value in ops

    def skip_newlines(self) -> None:
        while (t := self.peek()) is not None and t.kind == "NEWLINE":
            self.i += 1

    def unexpected(self) -> ShellSyntaxError:
        t = self.peek()
        if t is None:
            return ShellSyntaxError("unexpected EOF")
        v = "newline" if t.kind == "NEWLINE" else t.value
        return ShellSyntaxError(f"'{v}' unexpected")

    def parse(self) -> Seq:
        seq = self.parse_list(())
        if self.peek() is not None:
            raise self.unexpected()
        return seq

    def parse_list(self, terminators: tuple[str, ...]) -> Seq:
        items: list[tuple[Node, bool]] = []
        self.skip_newlines()
        while True:
            t = self.peek()
            if t is None or (t.kind == "WORD" and t.value in terminators) or (
                    t.kind == "OP" and t.value in (")",) and ")" in terminators):
                break
            node = self.parse_and_or()
            bg = False
            t = self.peek()
            if t is not None and t.kind == "OP" and t.value in (";", "&"):
                bg = t.value == "&"
                self.i += 1
            elif t is not None and t.kind == "NEWLINE":
                pass
            elif t is not None and not ((t.kind == "WORD" and t.value in terminators)
                                        or (t.kind == "OP" and t.value == ")"
                                            and ")" in terminators)):
                raise self.unexpected()
            items.append((node, bg))
            self.skip_newlines()
        return Seq(items)

    def parse_and_or(self) -> Node:
        first = self.parse_pipeline()
        rest: list[tuple[str, Node]] = []
        while self.at_op("&&", "||"):
            op = self.next().value
            self.skip_newlines()
            rest.append((op, self.parse_pipeline()))
        return AndOr(first, rest) if rest else first

    def parse_pipeline(self) -> Node:
        negate = False
        if self.at_word("!"):
            self.i += 1
            negate = True
        cmds = [self.parse_command()]
        while self.at_op("|"):
            self.i += 1
            self.skip_newlines()
            cmds.append(self.parse_command())
        if len(cmds) == 1 and not negate:
            return cmds[0]
        return Pipeline(cmds, negate)

    def parse_redirs(self) -> list[Redir]:
        out: list[Redir] = []
        while True:
            r = self.try_redir()
            if r is None:
                return out
            out.append(r)

    def try_redir(self) -> Redir | None:
        t = self.peek()
        if t is None:
            return None
        fd: int | None = None
        if t.kind == "IONUM":
            fd = int(t.value)
            self.i += 1
            t = self.peek()
            if t is None:
                raise self.unexpected()
        if t.kind == "OP" and t.value in (">", ">>", "<", ">&", "<&", ">|", "<>"):
            self.i += 1
            target = self.peek()
            if target is None or target.kind != "WORD":
                raise self.unexpected()
            self.i += 1
            op = t.value
            if fd is None:
                fd = 0 if op in ("<", "<&", "<>") else 1
            return Redir(fd, op, target.value)
        if t.kind == "OP" and t.value == "<<":
            raise ShellSyntaxError("here documents are not supported by this simulator")
        if fd is not None:
            raise self.unexpected()
        return None

    def parse_command(self) -> Node:
        t = self.peek()
        if t is None:
            raise self.unexpected()
        if t.kind == "WORD":
            if t.value == "if":
                return self.parse_if()
            if t.value == "for":
                return self.parse_for()
            if t.value in ("while", "until"):
                return self.parse_while()
            if t.value == "{":
                self.i += 1
                body = self.parse_list(("}",))
                self.expect_word("}", "{")
                return Group(body, False, self.parse_redirs())
            if t.value in ("then", "elif", "else", "fi", "do", "done", "}", "in", "esac"):
                raise self.unexpected()
        if t.kind == "OP" and t.value == "(":
            self.i += 1
            body = self.parse_list((")",))
            if not self.at_op(")"):
                raise ShellSyntaxError("'(' unmatched")
            self.i += 1
            return Group(body, True, self.parse_redirs())
        return self.parse_simple()

    def expect_word(self, word: str, opener: str) -> None:
        if not self.at_word(word):
            if self.peek() is None:
                raise ShellSyntaxError(f"'{opener}' unmatched")
            raise self.unexpected()
        self.i += 1

    def parse_if(self) -> If:
        self.i += 1
        branches: list[tuple[Node, Node]] = []
        cond = self.parse_list(("then",))
        self.expect_word("then", "if")
        body = self.parse_list(("elif", "else", "fi"))
        branches.append((cond, body))
        else_body: Node | None = None
        while True:
            if self.at_word("elif"):
                self.i += 1
                c = self.parse_list(("then",))
                self.expect_word("then", "elif")
                b = self.parse_list(("elif", "else", "fi"))
                branches.append((c, b))
                continue
            if self.at_word("else"):
                self.i += 1
                else_body = self.parse_list(("fi",))
            self.expect_word("fi", "if")
            break
        for branch_cond, _ in branches:
            if isinstance(branch_cond, Seq) and not branch_cond.items:
                raise ShellSyntaxError("'then' unexpected")
        return If(branches, else_body, self.parse_redirs())

    def parse_for(self) -> For:
        self.i += 1
        t = self.peek()
        if t is None or t.kind != "WORD" or not _NAME_RE.match(t.value):
            raise self.unexpected()
        var = self.next().value
        words: list[str] | None = None
        self.skip_newlines()
        if self.at_word("in"):
            self.i += 1
            words = []
            while (t := self.peek()) is not None and t.kind == "WORD":
                if t.value == "do":
                    break
                words.append(self.next().value)
        if self.at_op(";"):
            self.i += 1
        self.skip_newlines()
        self.expect_word("do", "for")
        body = self.parse_list(("done",))
        self.expect_word("done", "do")
        return For(var, words, body, self.parse_redirs())

    def parse_while(self) -> While:
        until = self.next().value == "until"
        cond = self.parse_list(("do",))
        self.expect_word("do", "while")
        body = self.parse_list(("done",))
        self.expect_word("done", "do")
        return While(cond, body, until, self.parse_redirs())

    def parse_simple(self) -> Simple:
        words: list[str] = []
        assigns: list[tuple[str, str]] = []
        redirs: list[Redir] = []
        while True:
            r = self.try_redir()
            if r is not None:
                redirs.append(r)
                continue
            t = self.peek()
            if t is None or t.kind != "WORD":
                break
            if not words and (m := _ASSIGN_RE.match(t.value)):
                assigns.append((m.group(1), m.group(2)))
                self.i += 1
                continue
            if words or t.value not in _RESERVED or t.value in ("in",):
                words.append(t.value)
                self.i += 1
                continue
            break
        if not words and not assigns and not redirs:
            raise self.unexpected()
        return Simple(words, assigns, redirs)


def parse(src: str) -> Seq:
    """Parse a script."""
    return Parser(tokenize(src)).parse()


# -------------------------------------------------------------------------------------------
# expansion


@dataclass
class _Piece:
    text: str
    quoted: bool
    split: bool  # the result of an unquoted expansion: subject to field splitting
    field_break: bool = False  # "$@" boundary


def _glob_escape(s: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", s)


_ARITH_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Compare, ast.BoolOp,
                ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.USub, ast.UAdd,
                ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq, ast.And, ast.Or, ast.Not,
                ast.BitAnd, ast.BitOr, ast.BitXor, ast.LShift, ast.RShift, ast.Invert,
                ast.IfExp)


def _arith(expr: str) -> int:
    e = expr.replace("&&", " and ").replace("||", " or ").replace("/", "//")
    e = re.sub(r"!(?!=)", " not ", e)
    try:
        tree = ast.parse(e.strip() or "0", mode="eval")
    except SyntaxError:
        raise ShellSyntaxError(f"{expr.strip()}: unexpected end of expression") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ARITH_NODES):
            raise ShellSyntaxError(f"{expr.strip()}: unexpected '{type(node).__name__}'")
        if isinstance(node, ast.Constant) and not isinstance(node.value, int):
            raise ShellSyntaxError(f"{expr.strip()}: bad number")
    try:
        v = eval(compile(tree, "<arith>", "eval"), {"__builtins__": {}}, {})  # noqa: S307
    except ZeroDivisionError:
        raise ShellSyntaxError(f"{expr.strip()}: divide by zero") from None
    return int(v)


# -------------------------------------------------------------------------------------------
# interpreter


@dataclass
class ShellState:
    """Variables, cwd and the rest of one shell's state (copied for subshells)."""

    vars: dict[str, str]
    exported: set[str]
    cwd: str = "/"
    status: int = 0
    positional: list[str] = field(default_factory=list)
    last_bg: int | None = None
    affinity: int = 0xFF
    umask: int = 0

    def copy(self) -> ShellState:
        return ShellState(dict(self.vars), set(self.exported), self.cwd, self.status,
                          list(self.positional), self.last_bg, self.affinity, self.umask)

    def env(self) -> dict[str, str]:
        """Exported variables."""
        return {k: v for k, v in self.vars.items() if k in self.exported}


@dataclass
class Streams:
    """stdin, stdout, stderr of a command."""

    stdin: InStream
    stdout: OutStream
    stderr: OutStream
    to_close: list[OutStream | InStream] = field(default_factory=list)

    def close_opened(self) -> None:
        for s in self.to_close:
            try:
                s.close()
            except OSError:
                pass


@dataclass
class Ctx:
    """What a command implementation gets."""

    phone: Phone
    shell: Shell
    argv: list[str]
    stdin: InStream
    stdout: OutStream
    stderr: OutStream
    proc: SimProc
    env: dict[str, str]

    @property
    def cwd(self) -> str:
        """Working directory."""
        return self.shell.state.cwd

    @property
    def name(self) -> str:
        """The command name as toybox prints it in errors."""
        return posixpath.basename(self.argv[0]) if self.argv else "sh"

    def out(self, text: str) -> None:
        """Write text to stdout."""
        self.stdout.write(text.encode())

    def err(self, text: str) -> None:
        """Write text to stderr."""
        self.stderr.write(text.encode())

    def error(self, msg: str) -> None:
        """toybox-style 'name: msg' on stderr."""
        self.err(f"{self.name}: {msg}\n")

    def check(self) -> None:
        """Raise if this process got a signal."""
        self.proc.check()

    def sleep(self, sim_s: float) -> None:
        """Sleep in simulated time; interruptible by signals."""
        try:
            self.phone.clock.sleep(sim_s, self.proc.event)
        except Interrupted:
            self.proc.check()


Program = Callable[[Ctx], int]


def _oserror_text(e: OSError) -> str:
    return e.strerror or os.strerror(e.errno or errno.EIO)


class Shell:
    """One mksh process (`sh -c CMD`), running in the calling thread."""

    def __init__(self, phone: Phone, proc: SimProc, streams: Streams, state: ShellState,
                 *, tty: bool = False, name: str = SH) -> None:
        self.phone = phone
        self.proc = proc
        self.streams = streams
        self.state = state
        self.tty = tty
        self.name = name
        self.jobs: dict[int, tuple[threading.Thread, list[int]]] = {}
        self._subst_status: int | None = None

    # -- entry points ------------------------------------------------------------------------

    def run_script(self, src: str) -> int:
        """Parse and run; returns the exit status (128+N when killed by signal N)."""
        with _Current(self.proc):
            try:
                tree = parse(src)
            except ShellSyntaxError as e:
                msg = str(e)
                if msg == "no closing quote":
                    self.err(f"{self.name}: no closing quote\n")
                else:
                    self.err(f"{self.name}: syntax error: {msg}\n")
                return 1
            try:
                return self.run(tree, self.streams)
            except ExitShell as e:
                return e.status & 0xFF
            except Signalled as e:
                return 128 + e.sig
            except ShellSyntaxError as e:
                self.err(f"{self.name}: {e}\n")
                return 1

    def run_interactive(self, hostname: str) -> int:
        """An interactive mksh on a terminal (`adb shell` with no command): prompt, read a
        line, run it, until `exit` or EOF. The prompt is Android's PS1: `[N|]host:/path $ `."""
        with _Current(self.proc):
            buf = ""
            while True:
                status = self.state.status
                prompt = "> " if buf else (f"{status}|" if status else "") + (
                    f"{hostname}:{self.state.cwd} $ ")
                try:
                    if self.tty:  # mksh prompts only when it is interactive (a terminal)
                        self.streams.stderr.write(prompt.encode())
                    line = self.streams.stdin.readline()
                except Signalled as e:
                    return 128 + e.sig
                if not line:
                    return status
                buf += line.decode(errors="replace")
                try:
                    tree = parse(buf)
                except ShellSyntaxError as e:
                    msg = str(e)
                    if any(k in msg for k in ("unmatched", "unexpected EOF", "no closing quote",
                                              "missing '}'")):
                        continue  # keep reading: PS2
                    self.err(f"{self.name}: syntax error: {msg}\n")
                    self.state.status = 1
                    buf = ""
                    continue
                buf = ""
                try:
                    self.run(tree, self.streams)
                except ExitShell as e:
                    return e.status & 0xFF
                except Signalled as e:
                    return 128 + e.sig
                except ShellSyntaxError as e:
                    self.err(f"{self.name}: {e}\n")
                    self.state.status = 1

    def err(self, text: str) -> None:
        """Write to the shell's stderr, ignoring a vanished reader."""
        try:
            self.streams.stderr.write(text.encode())
        except Signalled:
            pass

    # -- nodes -------------------------------------------------------------------------------

    def run(self, node: Node, io: Streams) -> int:
        """Run a node; sets and returns $?."""
        self.proc.check()
        status = self._run(node, io)
        self.state.status = status
        return status

    def _run(self, node: Node, io: Streams) -> int:
        if isinstance(node, Seq):
            status = 0
            for item, bg in node.items:
                if bg:
                    status = self.background(item, io)
                else:
                    status = self.run(item, io)
            return status
        if isinstance(node, AndOr):
            status = self.run(node.first, io)
            for op, nxt in node.rest:
                if (op == "&&" and status == 0) or (op == "||" and status != 0):
                    status = self.run(nxt, io)
            return status
        if isinstance(node, Pipeline):
            status = self.pipeline(node.cmds, io)
            return (0 if status else 1) if node.negate else status
        if isinstance(node, Simple):
            return self.simple(node, io)
        return self.compound(node, io)

    def compound(self, node: If | For | While | Group, io: Streams) -> int:
        """Compound commands, with their redirections."""
        try:
            rio = self.redirect(node.redirs, io)
        except _RedirError as e:
            self.err(str(e))
            return 1
        try:
            if isinstance(node, If):
                for cond, body in node.branches:
                    if self.run(cond, rio) == 0:
                        return self.run(body, rio)
                return self.run(node.else_body, rio) if node.else_body is not None else 0
            if isinstance(node, For):
                words = (self.expand_words(node.words) if node.words is not None
                         else list(self.state.positional))
                status = 0
                for w in words:
                    self.state.vars[node.var] = w
                    status = self.run(node.body, rio)
                return status
            if isinstance(node, While):
                status = 0
                while True:
                    c = self.run(node.cond, rio)
                    if (c == 0) == node.until:
                        return status
                    status = self.run(node.body, rio)
            if node.subshell:
                sub = Shell(self.phone, self.proc, rio, self.state.copy(), tty=self.tty,
                            name=self.name)
                try:
                    return sub.run(node.body, rio)
                except ExitShell as e:
                    return e.status & 0xFF
            return self.run(node.body, rio)
        finally:
            rio.close_opened()

    def background(self, node: Node, io: Streams) -> int:
        """`node &`: run it in a thread with a copy of the state."""
        child_state = self.state.copy()
        pids: list[int] = []
        bg_proc = self.phone.procs.spawn(ppid=self.proc.pid, name="sh", argv=(self.name,),
                                         session=self.proc.session, background=True,
                                         affinity=self.state.affinity,
                                         ignore_hup=self.proc.ignore_hup)
        sub = Shell(self.phone, bg_proc, Streams(EmptyIn() if not self.tty else io.stdin,
                                                 io.stdout, io.stderr), child_state,
                    tty=self.tty, name=self.name)
        result: list[int] = []

        def body() -> None:
            with _Current(bg_proc):
                try:
                    result.append(sub.run(node, sub.streams))
                except ExitShell as e:
                    result.append(e.status & 0xFF)
                except Signalled as e:
                    result.append(128 + e.sig)
                finally:
                    self.phone.procs.exit(bg_proc.pid)

        t = threading.Thread(target=body, name=f"sim-bg-{bg_proc.pid}", daemon=True)
        pids.append(bg_proc.pid)
        self.jobs[bg_proc.pid] = (t, result)
        self.state.last_bg = bg_proc.pid
        t.start()
        return 0

    def wait_jobs(self, pids: list[int] | None = None) -> int:
        """`wait`: join background jobs; status of the last one waited for."""
        status = 0
        targets = list(self.jobs) if not pids else pids
        for pid in targets:
            job = self.jobs.get(pid)
            if job is None:
                self.err(f"{self.name}: wait: {pid}: unknown job\n")
                status = 127
                continue
            t, result = job
            while t.is_alive():
                self.proc.check()
                t.join(0.05)
            status = result[0] if result else 0
            del self.jobs[pid]
        return status

    def pipeline(self, cmds: list[Node], io: Streams) -> int:
        """cmd1 | cmd2 | ...: every stage but the last in its own thread."""
        if len(cmds) == 1:
            return self.run(cmds[0], io)
        pipes = [Pipe() for _ in cmds[:-1]]
        threads: list[threading.Thread] = []
        results: dict[int, int] = {}
        for idx, cmd in enumerate(cmds[:-1]):
            stage_in: InStream = io.stdin if idx == 0 else PipeIn(pipes[idx - 1])
            stage_out = PipeOut(pipes[idx])
            stage_io = Streams(stage_in, stage_out, io.stderr)
            sub = Shell(self.phone, self.proc, stage_io, self.state.copy(), tty=self.tty,
                        name=self.name)

            def body(sub: Shell = sub, cmd: Node = cmd, idx: int = idx,
                     out: PipeOut = stage_out, sin: InStream = stage_in) -> None:
                with _Current(self.proc):
                    try:
                        results[idx] = sub.run(cmd, sub.streams)
                    except ExitShell as e:
                        results[idx] = e.status & 0xFF
                    except Signalled as e:
                        results[idx] = 128 + e.sig
                    finally:
                        out.close()
                        if idx > 0:
                            sin.close()

            t = threading.Thread(target=body, name="sim-pipe", daemon=True)
            threads.append(t)
            t.start()
        last_in = PipeIn(pipes[-1])
        try:
            status = self.run(cmds[-1], Streams(last_in, io.stdout, io.stderr))
        finally:
            last_in.close()
            for t in threads:
                while t.is_alive():
                    t.join(0.05)
                    if self.proc.pending is not None:
                        break
        return status

    # -- simple commands ---------------------------------------------------------------------

    def simple(self, node: Simple, io: Streams) -> int:
        """Expand, redirect, and run a builtin or a program."""
        self._subst_status = None
        argv = self.expand_words(node.words)
        assigns = [(k, self.expand_word(v, split=False, glob=False)[0] if v else "")
                   for k, v in node.assigns]
        try:
            rio = self.redirect(node.redirs, io)
        except _RedirError as e:
            self.err(str(e))
            return 1
        try:
            if not argv:
                for k, v in assigns:
                    self.state.vars[k] = v
                return self._subst_status or 0
            from farm.sim.commands import BUILTINS

            builtin = BUILTINS.get(argv[0])
            if builtin is not None:
                saved = {k: self.state.vars.get(k) for k, _ in assigns}
                for k, v in assigns:
                    self.state.vars[k] = v
                ctx = Ctx(self.phone, self, argv, rio.stdin, rio.stdout, rio.stderr, self.proc,
                          self.state.env())
                try:
                    return builtin(ctx)
                except OSError as e:  # e.g. ENOSPC writing a redirected file
                    self.err(f"{self.name}: {argv[0]}: write error: {_oserror_text(e)}\n")
                    return 1
                finally:
                    if argv[0] not in ("export", "readonly", "unset", "cd", "read"):
                        for k, old in saved.items():
                            if old is None:
                                self.state.vars.pop(k, None)
                            else:
                                self.state.vars[k] = old
            env = self.state.env()
            env.update(dict(assigns))
            return self.execute(argv, rio, env)
        finally:
            rio.close_opened()

    def find_program(self, name: str) -> str | None:
        """PATH lookup (only for names without a slash)."""
        fs = self.phone.fs
        for d in self.state.vars.get("PATH", PATH).split(":"):
            cand = posixpath.join(d or ".", name)
            try:
                s = fs.stat(cand, self.state.cwd)
            except OSError:
                continue
            if s.is_file:
                return cand
        return None

    def execute(self, argv: list[str], io: Streams, env: dict[str, str],
                *, parent: SimProc | None = None, affinity: int | None = None,
                ignore_hup: bool | None = None, quiet_signal: bool = False) -> int:
        """Run a program file as a child of `parent` (default: this shell).

        Prints mksh's messages when it cannot run, and the signal a foreground child died of.
        Wrappers such as taskset, nohup and timeout pass themselves as `parent`.
        """
        from farm.sim.commands import exec_file

        owner = parent or self.proc
        if parent is None:
            self.proc.affinity = self.state.affinity

        name = argv[0]
        if "/" in name:
            path = name
        else:
            found = self.find_program(name)
            if found is None:
                self.err(f"{self.name}: {name}: inaccessible or not found\n")
                return 127
            path = found
        child = self.phone.procs.spawn(
            ppid=owner.pid, name=posixpath.basename(name), argv=tuple(argv),
            session=owner.session,
            affinity=owner.affinity if affinity is None else affinity,
            background=owner.background,
            ignore_hup=owner.ignore_hup if ignore_hup is None else ignore_hup)
        try:
            if owner.pending is not None:
                child.signal(owner.pending)
            ctx = Ctx(self.phone, self, argv, io.stdin, io.stdout, io.stderr, child, env)
            owner.fg = child
            with _Current(child):
                try:
                    status = exec_file(ctx, path)
                except Signalled as e:
                    status = 128 + e.sig
                except Interrupted:
                    status = 128 + (child.pending or SIGTERM)
                except _ExecError as e:
                    self.err(f"{self.name}: {name}: {e}\n")
                    return e.status
                except OSError as e:  # toybox's xwrite()/xread() die with perror_exit
                    ctx.err(f"{posixpath.basename(name)}: xwrite: {_oserror_text(e)}\n")
                    status = 1
        finally:
            owner.fg = None
            self.phone.procs.exit(child.pid)
        if status > 128 and (status - 128) in SIGNAL_MESSAGES and not quiet_signal:
            sig = status - 128
            if sig != SIGHUP and not isinstance(io.stderr, NullOut):
                self.err(f"{SIGNAL_MESSAGES[sig]}\n")
        return status

    # -- redirections ------------------------------------------------------------------------

    def redirect(self, redirs: list[Redir], io: Streams) -> Streams:
        """Apply redirections; returns new Streams (files opened are closed by the caller)."""
        if not redirs:
            return Streams(io.stdin, io.stdout, io.stderr)
        fds: dict[int, InStream | OutStream] = {0: io.stdin, 1: io.stdout, 2: io.stderr}
        opened: list[OutStream | InStream] = []
        fs = self.phone.fs
        try:
            for r in redirs:
                target = self.expand_word(r.target, split=False, glob=False)[0]
                if r.op in (">&", "<&"):
                    if target == "-":
                        fds[r.fd] = NullOut() if r.op == ">&" else EmptyIn()
                        continue
                    if not target.isdigit():
                        if r.op == ">&" and r.fd == 1:  # `>& file`: both streams to a file
                            f = self._open_out(target, False)
                            opened.append(f)
                            fds[1] = fds[2] = f
                            continue
                        raise _RedirError(f"{self.name}: {target}: illegal file descriptor "
                                          f"name\n")
                    src = int(target)
                    if src not in fds:
                        raise _RedirError(f"{self.name}: {src}: bad file descriptor\n")
                    fds[r.fd] = fds[src]
                    continue
                if r.op in (">", ">>", ">|"):
                    f = self._open_out(target, r.op == ">>")
                    opened.append(f)
                    fds[r.fd] = f
                    continue
                if r.op in ("<", "<>"):
                    try:
                        fin = FileIn(fs.open_read(target, self.state.cwd))
                    except OSError as e:
                        raise _RedirError(f"{self.name}: can't open {target}: "
                                          f"{_oserror_text(e)}\n") from None
                    opened.append(fin)
                    fds[r.fd] = fin
        except _RedirError:
            for s in opened:
                s.close()
            raise
        stdin = fds[0] if isinstance(fds[0], InStream) else EmptyIn()
        stdout = fds[1] if isinstance(fds[1], OutStream) else NullOut()
        stderr = fds[2] if isinstance(fds[2], OutStream) else NullOut()
        return Streams(stdin, stdout, stderr, opened)

    def _open_out(self, target: str, append: bool) -> FileOut:
        fs = self.phone.fs
        try:
            f = fs.open_write(target, self.state.cwd, append=append,
                              create_mode=0o666 & ~self.state.umask)
        except OSError as e:
            raise _RedirError(f"{self.name}: can't create {target}: {_oserror_text(e)}\n"
                              ) from None
        return FileOut(f)

    # -- expansion ---------------------------------------------------------------------------

    def expand_words(self, words: list[str]) -> list[str]:
        """Expand a list of words into fields."""
        out: list[str] = []
        for w in words:
            out.extend(self.expand_word(w))
        return out

    def expand_word(self, word: str, *, split: bool = True, glob: bool = True) -> list[str]:
        """Tilde, parameter, command and arithmetic expansion, splitting, globbing, quotes."""
        pieces = self._pieces(word, in_dquote=False)
        if not split:
            return ["".join(p.text for p in pieces)]
        fields: list[list[_Piece]] = [[]]
        started = False
        for p in pieces:
            if p.field_break:
                fields.append([])
                continue
            if p.split and not p.quoted:
                parts = re.split(r"[ \t\n]+", p.text)
                for k, part in enumerate(parts):
                    if k > 0 and (fields[-1] or started):
                        fields.append([])
                    if part:
                        fields[-1].append(_Piece(part, False, False))
                started = True
            else:
                fields[-1].append(p)
                started = True
        result: list[str] = []
        for f in fields:
            if not f:
                continue
            text = "".join(p.text for p in f)
            has_glob = glob and any(not p.quoted and any(c in p.text for c in "*?[") for p in f)
            if has_glob:
                pattern = "".join(p.text if not p.quoted else _glob_escape(p.text) for p in f)
                matches = self.phone.fs.glob(pattern, self.state.cwd)
                if matches:
                    result.extend(matches)
                    continue
            if text == "" and not any(p.quoted for p in f):
                continue
            result.append(text)
        if not result and any(p.quoted for p in pieces) and not any(
                p.field_break for p in pieces):
            return [""]
        return result

    def _pieces(self, word: str, *, in_dquote: bool) -> list[_Piece]:
        out: list[_Piece] = []
        lit: list[str] = []

        def flush(quoted: bool) -> None:
            if lit:
                out.append(_Piece("".join(lit), quoted, False))
                lit.clear()

        i = 0
        n = len(word)
        if not in_dquote and word.startswith("~") and (n == 1 or word[1] == "/"):
            out.append(_Piece(self.state.vars.get("HOME", "/"), True, False))
            i = 1
        while i < n:
            c = word[i]
            if c == "'" and not in_dquote:
                flush(False)
                j = word.index("'", i + 1)
                out.append(_Piece(word[i + 1:j], True, False))
                i = j + 1
                continue
            if c == '"' and not in_dquote:
                flush(False)
                j = _skip_quoted(word, i)
                inner = self._pieces(word[i + 1:j - 1], in_dquote=True)
                if not inner:
                    out.append(_Piece("", True, False))
                for p in inner:
                    p.quoted = True
                    out.append(p)
                i = j
                continue
            if c == "\\":
                if i + 1 >= n:
                    lit.append("\\")
                    i += 1
                    continue
                nxt = word[i + 1]
                if in_dquote and nxt not in '$`"\\\n':
                    lit.append("\\" + nxt)
                else:
                    flush(in_dquote)
                    if nxt != "\n":
                        out.append(_Piece(nxt, True, False))
                i += 2
                continue
            if c == "`":
                flush(in_dquote)
                j = _skip_quoted(word, i)
                inner_src = re.sub(r"\\([$`\\])", r"\1", word[i + 1:j - 1])
                out.append(_Piece(self.command_subst(inner_src), in_dquote, True))
                i = j
                continue
            if c == "$" and i + 1 < n:
                flush(in_dquote)
                i = self._dollar(word, i, in_dquote, out)
                continue
            lit.append(c)
            i += 1
        flush(in_dquote)
        return out

    def _dollar(self, word: str, i: int, in_dquote: bool, out: list[_Piece]) -> int:
        n = len(word)
        nxt = word[i + 1]
        if word.startswith("$((", i):
            j = _skip_quoted(word, i)
            expr = word[i + 3:j - 2]
            expanded = "".join(p.text for p in self._pieces(expr, in_dquote=True))
            expanded = re.sub(r"\b([A-Za-z_][A-Za-z0-9_]*)\b",
                              lambda m: self.state.vars.get(m.group(1), "0") or "0", expanded)
            out.append(_Piece(str(_arith(expanded)), in_dquote, True))
            return j
        if nxt == "(":
            j = _skip_quoted(word, i)
            out.append(_Piece(self.command_subst(word[i + 2:j - 1]), in_dquote, True))
            return j
        if nxt == "{":
            j = _skip_quoted(word, i)
            out.extend(self._brace(word[i + 2:j - 1], in_dquote))
            return j
        if nxt == "@" and in_dquote:
            for k, arg in enumerate(self.state.positional):
                if k:
                    out.append(_Piece("", True, False, field_break=True))
                out.append(_Piece(arg, True, False))
            return i + 2
        if nxt in "?$!#@*-0123456789":
            out.append(_Piece(self._special(nxt), in_dquote, True))
            return i + 2
        m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", word[i + 1:])
        if m is None:
            out.append(_Piece("$", in_dquote, False))
            return i + 1
        name = m.group(0)
        out.append(_Piece(self.state.vars.get(name, ""), in_dquote, True))
        _ = n
        return i + 1 + len(name)

    def _special(self, c: str) -> str:
        s = self.state
        if c == "?":
            return str(s.status)
        if c == "$":
            return str(self.proc.pid if not self.proc.background else self.proc.ppid)
        if c == "!":
            return "" if s.last_bg is None else str(s.last_bg)
        if c == "#":
            return str(len(s.positional))
        if c in "@*":
            return " ".join(s.positional)
        if c == "-":
            return "h" if not self.tty else "hi"
        if c == "0":
            return self.name
        k = int(c)
        return s.positional[k - 1] if k <= len(s.positional) else ""

    def _brace(self, body: str, in_dquote: bool) -> list[_Piece]:
        if body.startswith("#") and len(body) > 1:
            val = self.state.vars.get(body[1:], "")
            return [_Piece(str(len(val)), in_dquote, True)]
        m = re.match(r"([A-Za-z_][A-Za-z0-9_]*|[?$!#@*0-9])(:?[-=+?])?(.*)\Z", body, re.S)
        if m is None:
            raise ShellSyntaxError(f"${{{body}}}: bad substitution")
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if len(name) == 1 and not name.isalpha() and name != "_":
            value: str | None = self._special(name)
        else:
            value = self.state.vars.get(name)
        if op is None:
            if arg:
                raise ShellSyntaxError(f"${{{body}}}: bad substitution")
            return [_Piece(value or "", in_dquote, True)]
        colon = op.startswith(":")
        kind = op[-1]
        unset = value is None or (colon and value == "")
        if kind == "-":
            return (self._pieces(arg, in_dquote=in_dquote) if unset
                    else [_Piece(value or "", in_dquote, True)])
        if kind == "=":
            if unset:
                value = "".join(p.text for p in self._pieces(arg, in_dquote=True))
                self.state.vars[name] = value
            return [_Piece(value or "", in_dquote, True)]
        if kind == "+":
            return [] if unset else self._pieces(arg, in_dquote=in_dquote)
        if unset:
            msg = "".join(p.text for p in self._pieces(arg, in_dquote=True)) or (
                "parameter null or not set")
            self.err(f"{self.name}: {name}: {msg}\n")
            raise ExitShell(1)
        return [_Piece(value or "", in_dquote, True)]

    def command_subst(self, src: str) -> str:
        """$(...): run in a sub-shell, capture stdout, strip trailing newlines."""
        cap = CaptureOut()
        sub = Shell(self.phone, self.proc, Streams(self.streams.stdin, cap, self.streams.stderr),
                    self.state.copy(), tty=False, name=self.name)
        try:
            tree = parse(src)
            status = sub.run(tree, sub.streams)
        except ExitShell as e:
            status = e.status
        except ShellSyntaxError as e:
            self.err(f"{self.name}: syntax error: {e}\n")
            status = 1
        self._subst_status = status
        return cap.buf.decode(errors="replace").rstrip("\n")


class _RedirError(Exception):
    """A redirection failed; the message is what mksh prints."""


class _ExecError(Exception):
    """The shell could not execute a file (mksh prints '<sh>: <name>: <message>')."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def exec_error(message: str, status: int) -> _ExecError:
    """Raise this from a program loader when the shell must report it cannot execute."""
    return _ExecError(message, status)


def signal_number(spec: str) -> int | None:
    """'9', 'KILL', 'SIGKILL' -> 9; None if unknown."""
    s = spec.upper()
    if s.isdigit():
        n = int(s)
        return n if 0 <= n <= 64 else None
    if s.startswith("SIG"):
        s = s[3:]
    return SIGNALS.get(s)


def signal_name(sig: int) -> str:
    """9 -> 'KILL'."""
    for k, v in SIGNALS.items():
        if v == sig:
            return k
    try:
        return _signal.Signals(sig).name[3:]
    except ValueError:
        return str(sig)
