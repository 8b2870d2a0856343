"""Commands of a simulated phone: mksh builtins, toybox applets, getprop, dumpsys, and the
text of /proc files, in the formats Android prints them.

No host I/O of its own: files go through the phone's `SimFS`. Each command is a function
`(Ctx) -> exit status`. Error texts are toybox's and mksh's ("cat: /x: No such file or
directory", "mkdir: '/system/x': Read-only file system", "chmod: chmod '/sdcard/x' to 0755:
Operation not permitted").
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import re
import shlex
import stat as st
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING

from farm.sim.fs import SimStat, VFile, name_of
from farm.sim.shell import (
    SH,
    SIGTERM,
    Ctx,
    EmptyIn,
    ExitShell,
    FileIn,
    InStream,
    Program,
    ShellState,
    SimProc,
    Streams,
    exec_error,
    signal_name,
    signal_number,
)

if TYPE_CHECKING:
    from farm.sim.phone import Phone


def _err_text(e: OSError) -> str:
    return e.strerror or os.strerror(e.errno or errno.EIO)


def _fmt_time(epoch: float, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return time.strftime(fmt, time.gmtime(epoch))


def _parse_opts(ctx: Ctx, argv: list[str], flags: str, with_arg: str = "") -> tuple[
        set[str], dict[str, str], list[str]] | None:
    """Minimal getopt: combined single-letter flags; options with arguments; '--' ends."""
    opts: set[str] = set()
    vals: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            rest.extend(argv[i + 1:])
            break
        numeric = a[1:].isdigit() and not all(c in flags for c in a[1:])  # e.g. head -5
        if a.startswith("-") and len(a) > 1 and not rest and not numeric:
            j = 1
            while j < len(a):
                c = a[j]
                if c in with_arg:
                    val = a[j + 1:]
                    if not val:
                        i += 1
                        if i >= len(argv):
                            ctx.error(f"Missing argument to -{c}")
                            return None
                        val = argv[i]
                    vals[c] = val
                    break
                if c not in flags:
                    ctx.error(f"Unknown option '{a[j:]}'" if len(a) > 2 else
                              f"Unknown option '{c}'")
                    return None
                opts.add(c)
                j += 1
            i += 1
            continue
        rest.append(a)
        i += 1
    return opts, vals, rest


def _open_inputs(ctx: Ctx, paths: list[str]) -> Iterable[tuple[str, InStream | None]]:
    """Yield (name, stream) for each path ('-' or none = stdin); errors are printed."""
    if not paths:
        yield "-", ctx.stdin
        return
    for p in paths:
        if p == "-":
            yield p, ctx.stdin
            continue
        try:
            f = ctx.phone.fs.open_read(p, ctx.cwd)
        except OSError as e:
            ctx.error(f"{p}: {_err_text(e)}")
            yield p, None
            continue
        try:
            yield p, FileIn(f)
        finally:
            f.close()


# -------------------------------------------------------------------------------------------
# mksh builtins


def b_echo(ctx: Ctx) -> int:
    """mksh echo: -n, -e (default), -E."""
    args = ctx.argv[1:]
    newline = True
    escapes = True
    while args and re.fullmatch(r"-[neE]+", args[0]):
        for c in args[0][1:]:
            if c == "n":
                newline = False
            elif c == "e":
                escapes = True
            else:
                escapes = False
        args = args[1:]
    text = " ".join(args)
    if escapes:
        text, stop = _backslash_escapes(text)
        if stop:
            newline = False
    ctx.out(text + ("\n" if newline else ""))
    return 0


def _backslash_escapes(s: str) -> tuple[str, bool]:
    out: list[str] = []
    i = 0
    while i < len(s):
        c = s[i]
        if c != "\\" or i + 1 >= len(s):
            out.append(c)
            i += 1
            continue
        n = s[i + 1]
        i += 2
        if n == "c":
            return "".join(out), True
        simple = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f",
                  "v": "\v", "\\": "\\", "e": "\x1b"}
        if n in simple:
            out.append(simple[n])
        elif n == "0":
            m = re.match(r"[0-7]{0,3}", s[i:])
            digits = m.group(0) if m else ""
            out.append(chr(int(digits or "0", 8)))
            i += len(digits)
        else:
            out.append("\\" + n)
    return "".join(out), False


def b_true(ctx: Ctx) -> int:
    """true / :"""
    return 0


def b_false(ctx: Ctx) -> int:
    """false"""
    return 1


def b_exit(ctx: Ctx) -> int:
    """exit [N]"""
    status = ctx.shell.state.status
    if len(ctx.argv) > 1:
        try:
            status = int(ctx.argv[1])
        except ValueError:
            ctx.err(f"{SH}: exit: {ctx.argv[1]}: bad number\n")
            status = 1
    raise ExitShell(status & 0xFF)


def b_cd(ctx: Ctx) -> int:
    """cd [DIR]"""
    state = ctx.shell.state
    target = ctx.argv[1] if len(ctx.argv) > 1 else state.vars.get("HOME", "/")
    if target == "-":
        target = state.vars.get("OLDPWD", "/")
    fs = ctx.phone.fs
    try:
        if not fs.stat(target, ctx.cwd).is_dir:
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
    except OSError as e:
        ctx.err(f"{SH}: cd: {target}: {_err_text(e)}\n")
        return 2
    state.vars["OLDPWD"] = state.cwd
    state.cwd = fs.abspath(target, state.cwd)
    state.vars["PWD"] = state.cwd
    return 0


def b_pwd(ctx: Ctx) -> int:
    """pwd"""
    ctx.out(ctx.cwd + "\n")
    return 0


def b_export(ctx: Ctx) -> int:
    """export [NAME[=VALUE]...]"""
    state = ctx.shell.state
    if len(ctx.argv) == 1 or ctx.argv[1] == "-p":
        for k in sorted(state.exported):
            if k in state.vars:
                ctx.out(f"export {k}={shlex.quote(state.vars[k])}\n")
        return 0
    for a in ctx.argv[1:]:
        name, eq, value = a.partition("=")
        if eq:
            state.vars[name] = value
        state.exported.add(name)
    return 0


def b_unset(ctx: Ctx) -> int:
    """unset NAME..."""
    for a in ctx.argv[1:]:
        if a in ("-v", "-f"):
            continue
        ctx.shell.state.vars.pop(a, None)
        ctx.shell.state.exported.discard(a)
    return 0


def b_set(ctx: Ctx) -> int:
    """set [--] ARGS (positional parameters; options are accepted and ignored)."""
    args = ctx.argv[1:]
    if not args:
        for k, v in sorted(ctx.shell.state.vars.items()):
            ctx.out(f"{k}={shlex.quote(v)}\n")
        return 0
    if args[0] == "--":
        ctx.shell.state.positional = args[1:]
    elif not args[0].startswith(("-", "+")):
        ctx.shell.state.positional = args
    return 0


def b_shift(ctx: Ctx) -> int:
    """shift [N]"""
    n = int(ctx.argv[1]) if len(ctx.argv) > 1 and ctx.argv[1].isdigit() else 1
    pos = ctx.shell.state.positional
    if n > len(pos):
        ctx.err(f"{SH}: shift: {n}: bad number\n")
        return 1
    ctx.shell.state.positional = pos[n:]
    return 0


def b_read(ctx: Ctx) -> int:
    """read [-r] NAME..."""
    names = [a for a in ctx.argv[1:] if not a.startswith("-")] or ["REPLY"]
    raw = "-r" in ctx.argv
    line = ctx.stdin.readline()
    if not line:
        return 1
    text = line.decode(errors="replace").rstrip("\n")
    if not raw:
        text = text.replace("\\", "")
    parts = text.split(None, len(names) - 1)
    for i, name in enumerate(names):
        ctx.shell.state.vars[name] = parts[i] if i < len(parts) else ""
    return 0


def b_wait(ctx: Ctx) -> int:
    """wait [PID...]"""
    pids = [int(a) for a in ctx.argv[1:] if a.isdigit()]
    return ctx.shell.wait_jobs(pids or None)


def b_kill(ctx: Ctx) -> int:
    """mksh kill: kill [-s SIG | -SIG] PID..., kill -l"""
    args = ctx.argv[1:]
    sig = SIGTERM
    if args and args[0] == "-l":
        if len(args) > 1 and args[1].isdigit():
            ctx.out(signal_name(int(args[1]) & 0x7F) + "\n")
        else:
            ctx.out("\n".join(f"{n:2d} {name}" for name, n in
                              sorted(_signals().items(), key=lambda kv: kv[1])) + "\n")
        return 0
    if args and args[0] == "-s":
        if len(args) < 2:
            ctx.err(f"{SH}: kill: -s requires an argument\n")
            return 1
        n = signal_number(args[1])
        if n is None:
            ctx.err(f"{SH}: kill: bad signal '{args[1]}'\n")
            return 1
        sig = n
        args = args[2:]
    elif args and args[0].startswith("-") and len(args[0]) > 1:
        n = signal_number(args[0][1:])
        if n is None:
            ctx.err(f"{SH}: kill: bad signal '{args[0][1:]}'\n")
            return 1
        sig = n
        args = args[1:]
    if not args:
        ctx.err(f"{SH}: kill: usage: kill [-s signame | -signum | -signame] {{job | pid | "
                f"pgrp}} ...\n       kill -l [exit_status ...]\n")
        return 1
    status = 0
    for a in args:
        if not re.fullmatch(r"-?\d+", a):
            ctx.err(f"{SH}: kill: {a}: arguments must be jobs or process IDs\n")
            status = 1
            continue
        pid = int(a)
        code = ctx.phone.procs.kill(pid, sig)
        if code:
            ctx.err(f"{SH}: kill: {a}: {os.strerror(code)}\n")
            status = 1
    return status


def _signals() -> dict[str, int]:
    from farm.sim.shell import SIGNALS

    return SIGNALS


def b_test(ctx: Ctx) -> int:
    """test / [ (mksh builtin)."""
    args = ctx.argv[1:]
    if ctx.argv[0] == "[":
        if not args or args[-1] != "]":
            ctx.err(f"{SH}: [: missing ]\n")
            return 2
        args = args[:-1]
    try:
        return 0 if _TestEval(ctx, args).run() else 1
    except _TestError as e:
        ctx.err(f"{SH}: {ctx.argv[0]}: {e}\n")
        return 2


class _TestError(Exception):
    pass


class _TestEval:
    UNARY = set("bcdefghknprstuwxzLOGS")

    def __init__(self, ctx: Ctx, args: list[str]) -> None:
        self.ctx = ctx
        self.args = args
        self.i = 0

    def run(self) -> bool:
        if not self.args:
            return False
        v = self.expr()
        if self.i < len(self.args):
            raise _TestError(f"{self.args[self.i]}: unexpected operator/operand")
        return v

    def peek(self) -> str | None:
        return self.args[self.i] if self.i < len(self.args) else None

    def expr(self) -> bool:
        v = self.and_expr()
        while self.peek() == "-o":
            self.i += 1
            v = self.and_expr() or v
        return v

    def and_expr(self) -> bool:
        v = self.not_expr()
        while self.peek() == "-a":
            self.i += 1
            v = self.not_expr() and v
        return v

    def not_expr(self) -> bool:
        if self.peek() == "!" and self.i + 1 < len(self.args):
            self.i += 1
            return not self.not_expr()
        return self.primary()

    def primary(self) -> bool:
        a = self.peek()
        if a is None:
            raise _TestError("missing argument")
        if a == "(" and ")" in self.args[self.i:]:
            self.i += 1
            v = self.expr()
            if self.peek() != ")":
                raise _TestError("missing )")
            self.i += 1
            return v
        rest = len(self.args) - self.i
        if rest >= 3 and self.args[self.i + 1] in ("=", "==", "!=", "-eq", "-ne", "-lt", "-le",
                                                     "-gt", "-ge", "-nt", "-ot", "<", ">"):
            left, op, right = self.args[self.i:self.i + 3]
            self.i += 3
            return self.binary(left, op, right)
        if len(a) == 2 and a[0] == "-" and a[1] in self.UNARY and rest >= 2:
            self.i += 2
            return self.unary(a[1], self.args[self.i - 1])
        self.i += 1
        return a != ""

    def binary(self, left: str, op: str, right: str) -> bool:
        if op in ("=", "=="):
            return left == right
        if op == "!=":
            return left != right
        if op in ("<", ">"):
            return left < right if op == "<" else left > right
        if op in ("-nt", "-ot"):
            fs = self.ctx.phone.fs
            try:
                lt = fs.stat(left, self.ctx.cwd).mtime
                rt = fs.stat(right, self.ctx.cwd).mtime
            except OSError:
                return False
            return lt > rt if op == "-nt" else lt < rt
        try:
            a, b = int(left.strip()), int(right.strip())
        except ValueError:
            bad = left if not left.strip().lstrip("-").isdigit() else right
            raise _TestError(f"{bad}: bad number") from None
        return {"-eq": a == b, "-ne": a != b, "-lt": a < b, "-le": a <= b, "-gt": a > b,
                "-ge": a >= b}[op]

    def unary(self, op: str, arg: str) -> bool:
        if op == "z":
            return arg == ""
        if op == "n":
            return arg != ""
        if op == "t":
            try:
                fd = int(arg)
            except ValueError:
                raise _TestError(f"{arg}: bad number") from None
            ctx = self.ctx
            if fd == 0:
                return ctx.stdin.isatty
            if fd in (1, 2):
                return (ctx.stdout if fd == 1 else ctx.stderr).isatty
            return False
        fs = self.ctx.phone.fs
        cwd = self.ctx.cwd
        if op in "hL":
            try:
                return fs.stat(arg, cwd, follow=False).is_link
            except OSError:
                return False
        if op in "rwx":
            return fs.access(arg, op, cwd)
        try:
            s = fs.stat(arg, cwd)
        except OSError:
            return False
        if op == "e":
            return True
        if op == "f":
            return s.is_file
        if op == "d":
            return s.is_dir
        if op == "s":
            return s.size > 0
        if op == "c":
            return st.S_ISCHR(s.mode)
        if op == "b":
            return st.S_ISBLK(s.mode)
        if op == "p":
            return st.S_ISFIFO(s.mode)
        if op == "S":
            return st.S_ISSOCK(s.mode)
        if op == "u":
            return bool(s.mode & st.S_ISUID)
        if op == "g":
            return bool(s.mode & st.S_ISGID)
        if op == "k":
            return bool(s.mode & st.S_ISVTX)
        if op == "O":
            return s.uid == 2000
        if op == "G":
            return s.gid == 2000
        return False


def b_type(ctx: Ctx) -> int:
    """type / whence / command -v"""
    args = [a for a in ctx.argv[1:] if not a.startswith("-")]
    status = 0
    for a in args:
        if a in BUILTINS:
            ctx.out(f"{a} is a shell builtin\n" if ctx.argv[0] == "type" else f"{a}\n")
            continue
        found = ctx.shell.find_program(a)
        if found is None:
            if ctx.argv[0] == "type":
                ctx.out(f"{a} not found\n")
            status = 1
        else:
            ctx.out(f"{a} is a tracked alias for {found}\n" if ctx.argv[0] == "type"
                    else f"{found}\n")
    return status


def b_command(ctx: Ctx) -> int:
    """command [-v] NAME [ARGS]"""
    if len(ctx.argv) > 1 and ctx.argv[1] in ("-v", "-V"):
        return b_type(Ctx(ctx.phone, ctx.shell, ["whence", *ctx.argv[2:]], ctx.stdin,
                          ctx.stdout, ctx.stderr, ctx.proc, ctx.env))
    if len(ctx.argv) < 2:
        return 0
    return ctx.shell.execute(ctx.argv[1:], Streams(ctx.stdin, ctx.stdout, ctx.stderr),
                             ctx.env)


def b_eval(ctx: Ctx) -> int:
    """eval ARGS"""
    from farm.sim.shell import parse

    tree = parse(" ".join(ctx.argv[1:]))
    return ctx.shell.run(tree, Streams(ctx.stdin, ctx.stdout, ctx.stderr))


def b_source(ctx: Ctx) -> int:
    """. FILE / source FILE"""
    from farm.sim.shell import parse

    if len(ctx.argv) < 2:
        ctx.err(f"{SH}: {ctx.argv[0]}: missing argument\n")
        return 1
    try:
        text = ctx.phone.fs.read_bytes(ctx.argv[1], ctx.cwd).decode(errors="replace")
    except OSError as e:
        ctx.err(f"{SH}: {ctx.argv[1]}: {_err_text(e)}\n")
        return 1
    return ctx.shell.run(parse(text), Streams(ctx.stdin, ctx.stdout, ctx.stderr))


def b_exec(ctx: Ctx) -> int:
    """exec CMD: run it, then the shell exits with its status."""
    if len(ctx.argv) < 2:
        return 0
    status = ctx.shell.execute(ctx.argv[1:], Streams(ctx.stdin, ctx.stdout, ctx.stderr),
                               ctx.env)
    raise ExitShell(status)


def b_umask(ctx: Ctx) -> int:
    """umask [MASK]"""
    if len(ctx.argv) == 1:
        ctx.out(f"{ctx.shell.state.umask:04o}\n")
        return 0
    try:
        ctx.shell.state.umask = int(ctx.argv[1], 8) & 0o777
    except ValueError:
        ctx.err(f"{SH}: umask: bad number\n")
        return 1
    return 0


def b_ulimit(ctx: Ctx) -> int:
    """ulimit (reports unlimited)."""
    ctx.out("unlimited\n")
    return 0


def b_trap(ctx: Ctx) -> int:
    """trap: accepted and ignored."""
    return 0


def b_time(ctx: Ctx) -> int:
    """time CMD: mksh's report on stderr, in simulated seconds."""
    clock = ctx.phone.clock
    t0 = clock.now_s()
    status = 0
    if len(ctx.argv) > 1:
        status = ctx.shell.execute(ctx.argv[1:], Streams(ctx.stdin, ctx.stdout, ctx.stderr),
                                   ctx.env)
    dt = clock.now_s() - t0
    ctx.err(f"    0m{dt:.2f}s real     0m0.00s user     0m0.00s system\n")
    return status


BUILTINS: dict[str, Program] = {
    "echo": b_echo, "true": b_true, ":": b_true, "false": b_false, "exit": b_exit, "cd": b_cd,
    "pwd": b_pwd, "export": b_export, "unset": b_unset, "set": b_set, "shift": b_shift,
    "read": b_read, "wait": b_wait, "kill": b_kill, "test": b_test, "[": b_test,
    "type": b_type, "whence": b_type, "command": b_command, "eval": b_eval, ".": b_source,
    "source": b_source, "exec": b_exec, "umask": b_umask, "ulimit": b_ulimit, "trap": b_trap,
    "time": b_time, "readonly": b_export,
}


# -------------------------------------------------------------------------------------------
# toybox applets


def t_echo(ctx: Ctx) -> int:
    """toybox echo: escapes only with -e."""
    args = ctx.argv[1:]
    newline, escapes = True, False
    while args and re.fullmatch(r"-[neE]+", args[0]):
        newline = newline and "n" not in args[0]
        escapes = "e" in args[0]
        args = args[1:]
    text = " ".join(args)
    if escapes:
        text, stop = _backslash_escapes(text)
        newline = newline and not stop
    ctx.out(text + ("\n" if newline else ""))
    return 0


def t_cat(ctx: Ctx) -> int:
    """cat [-u] [FILE...]"""
    paths = [a for a in ctx.argv[1:] if a not in ("-u", "-v")]
    status = 0
    for name, stream in _open_inputs(ctx, paths):
        if stream is None:
            status = 1
            continue
        try:
            while True:
                ctx.check()
                chunk = stream.read(65536)
                if not chunk:
                    break
                ctx.stdout.write(chunk)
        except IsADirectoryError:
            ctx.error(f"{name}: Is a directory")
            status = 1
        except OSError as e:
            if e.errno == errno.ENOSPC:
                ctx.error(f"xwrite: {_err_text(e)}")
                return 1
            ctx.error(f"{name}: {_err_text(e)}")
            status = 1
    return status


def _mode_string(mode: int) -> str:
    kind = "d" if st.S_ISDIR(mode) else "l" if st.S_ISLNK(mode) else "c" if st.S_ISCHR(
        mode) else "-"
    out = [kind]
    for shift in (6, 3, 0):
        bits = (mode >> shift) & 7
        out.append("r" if bits & 4 else "-")
        out.append("w" if bits & 2 else "-")
        out.append("x" if bits & 1 else "-")
    if mode & st.S_ISUID:
        out[3] = "s" if out[3] == "x" else "S"
    if mode & st.S_ISGID:
        out[6] = "s" if out[6] == "x" else "S"
    if mode & st.S_ISVTX:
        out[9] = "t" if out[9] == "x" else "T"
    return "".join(out)


def _human(n: float) -> str:
    """toybox human_readable: 1.2K, 45M, 3.4G."""
    units = ["", "K", "M", "G", "T"]
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n /= 1024
        i += 1
    if i == 0:
        return str(int(n))
    return f"{n:.1f}{units[i]}" if n < 10 else f"{round(n)}{units[i]}"


def t_ls(ctx: Ctx) -> int:
    """ls [-1aAdhlnRrStrs] [FILE...]"""
    parsed = _parse_opts(ctx, ctx.argv[1:], "1aAcdFhilnRrStsuZ")
    if parsed is None:
        return 1
    opts, _, paths = parsed
    fs = ctx.phone.fs
    long = "l" in opts or "n" in opts
    status = 0
    files: list[tuple[str, SimStat, str]] = []
    dirs: list[tuple[str, str]] = []
    for p in paths or ["."]:
        try:
            s = fs.stat(p, ctx.cwd, follow=not (long and not p.endswith("/")))
            if s.is_link and not long:
                s = fs.stat(p, ctx.cwd)
            if s.is_link and long:
                try:
                    if fs.stat(p, ctx.cwd).is_dir and p.endswith("/"):
                        s = fs.stat(p, ctx.cwd)
                except OSError:
                    pass
        except OSError as e:
            ctx.error(f"{p}: {_err_text(e)}")
            status = 1
            continue
        if s.is_dir and "d" not in opts:
            dirs.append((p, fs.abspath(p, ctx.cwd)))
        else:
            files.append((p, s, fs.abspath(p, ctx.cwd)))
    multi = len(files) + len(dirs) > 1 or "R" in opts
    if files:
        _ls_print(ctx, files, opts, long, total=False)
    queue = list(dirs)
    first = not files
    while queue:
        shown, real = queue.pop(0)
        try:
            names = fs.listdir(real)
        except OSError as e:
            ctx.error(f"{shown}: {_err_text(e)}")
            status = 1
            continue
        if "a" in opts:
            names += [".", ".."]
        elif "A" not in opts:
            names = [n for n in names if not n.startswith(".")]
        entries = []
        for n in names:
            try:
                s = fs.stat(posixpath.join(real, n), follow=False)
            except OSError:
                continue
            entries.append((n, s, posixpath.join(real, n)))
        if multi:
            ctx.out(("" if first else "\n") + f"{shown}:\n")
        first = False
        _ls_print(ctx, entries, opts, long, total=True)
        if "R" in opts:
            sub = [(posixpath.join(shown, n), p) for n, s, p in _ls_sorted(entries, opts)
                   if s.is_dir and n not in (".", "..")]
            queue[0:0] = sub
    return status


def _ls_sorted(entries: list[tuple[str, SimStat, str]], opts: set[str]) -> list[
        tuple[str, SimStat, str]]:
    if "t" in opts:
        out = sorted(entries, key=lambda e: (-e[1].mtime, e[0]))
    elif "S" in opts:
        out = sorted(entries, key=lambda e: (-e[1].size, e[0]))
    else:
        out = sorted(entries, key=lambda e: e[0])
    return list(reversed(out)) if "r" in opts else out


def _ls_print(ctx: Ctx, entries: list[tuple[str, SimStat, str]], opts: set[str], long: bool,
              *, total: bool) -> None:
    entries = _ls_sorted(entries, opts)
    fs = ctx.phone.fs
    if long:
        rows = []
        blocks = 0
        for name, s, real in entries:
            blocks += (s.size + 4095) // 4096 * 4
            user = str(s.uid) if "n" in opts else name_of(s.uid)
            group = str(s.gid) if "n" in opts else name_of(s.gid)
            size = _human(s.size) if "h" in opts else str(s.size)
            if s.rdev is not None:
                size = f"{s.rdev[0]},{s.rdev[1]:4d}"
            label = name
            if s.is_link:
                try:
                    label += " -> " + fs.readlink(real)
                except OSError:
                    pass
            rows.append((_mode_string(s.mode), str(s.nlink), user, group, size,
                         _fmt_time(s.mtime), label))
        if total:
            ctx.out(f"total {blocks}\n")
        widths = [max((len(r[k]) for r in rows), default=0) for k in range(5)]
        for r in rows:
            ctx.out(f"{r[0]} {r[1]:>{widths[1]}} {r[2]:<{widths[2]}} {r[3]:<{widths[3]}} "
                    f"{r[4]:>{widths[4]}} {r[5]} {r[6]}\n")
        return
    names = [e[0] for e in entries]
    if ctx.stdout.isatty and "1" not in opts and names:
        ctx.out(_columns(names, 80))
    else:
        for n in names:
            ctx.out(n + "\n")


def _columns(names: list[str], width: int) -> str:
    """Column-major layout as toybox ls does on a terminal."""
    for ncols in range(len(names), 0, -1):
        nrows = -(-len(names) // ncols)
        cols = [names[c * nrows:(c + 1) * nrows] for c in range(ncols)]
        cols = [c for c in cols if c]
        widths = [max(len(n) for n in c) + 2 for c in cols]
        if sum(widths) - 2 <= width or ncols == 1:
            lines = []
            for r in range(nrows):
                parts = []
                for c, col in enumerate(cols):
                    if r < len(col):
                        parts.append(col[r].ljust(widths[c]) if c < len(cols) - 1 else col[r])
                lines.append("".join(parts).rstrip())
            return "\n".join(lines) + "\n"
    return "\n".join(names) + "\n"  # pragma: no cover


def t_mkdir(ctx: Ctx) -> int:
    """mkdir [-p] [-m MODE] DIR..."""
    parsed = _parse_opts(ctx, ctx.argv[1:], "pv", "m")
    if parsed is None:
        return 1
    opts, vals, dirs = parsed
    mode = int(vals["m"], 8) if "m" in vals else 0o777
    if not dirs:
        ctx.error("Needs 1 argument")
        return 1
    fs = ctx.phone.fs
    status = 0
    for d in dirs:
        try:
            if "p" in opts:
                fs.makedirs(d, ctx.cwd, mode)
            else:
                fs.mkdir(d, ctx.cwd, mode)
        except OSError as e:
            ctx.error(f"'{d}': {_err_text(e)}")
            status = 1
    return status


def t_rm(ctx: Ctx) -> int:
    """rm [-fir] FILE..."""
    parsed = _parse_opts(ctx, ctx.argv[1:], "fiRrv")
    if parsed is None:
        return 1
    opts, _, paths = parsed
    force = "f" in opts
    recursive = bool(opts & {"r", "R"})
    if not paths:
        if force:
            return 0
        ctx.error("Needs 1 argument")
        return 1
    fs = ctx.phone.fs
    status = 0
    for p in paths:
        try:
            s = fs.stat(p, ctx.cwd, follow=False)
        except OSError as e:
            if not (force and e.errno == errno.ENOENT):
                ctx.error(f"{p}: {_err_text(e)}")
                status = 1
            continue
        if s.is_dir:
            if not recursive:
                ctx.error(f"{p}: Is a directory")
                status = 1
                continue
            if not _rm_tree(ctx, p):
                status = 1
            continue
        try:
            fs.unlink(p, ctx.cwd)
        except OSError as e:
            ctx.error(f"{p}: {_err_text(e)}")
            status = 1
    fs.recount()
    return status


def _rm_tree(ctx: Ctx, path: str) -> bool:
    fs = ctx.phone.fs
    ok = True
    full = fs.abspath(path, ctx.cwd)
    try:
        names = fs.listdir(full)
    except OSError as e:
        ctx.error(f"{path}: {_err_text(e)}")
        return False
    for n in names:
        child = posixpath.join(full, n)
        try:
            s = fs.stat(child, follow=False)
        except OSError:
            continue
        if s.is_dir:
            ok = _rm_tree(ctx, child) and ok
        else:
            try:
                fs.unlink(child)
            except OSError as e:
                ctx.error(f"{child}: {_err_text(e)}")
                ok = False
    try:
        fs.rmdir(full)
    except OSError as e:
        ctx.error(f"{path}: {_err_text(e)}")
        ok = False
    return ok


def t_rmdir(ctx: Ctx) -> int:
    """rmdir DIR..."""
    status = 0
    for d in [a for a in ctx.argv[1:] if not a.startswith("-")]:
        try:
            ctx.phone.fs.rmdir(d, ctx.cwd)
        except OSError as e:
            ctx.error(f"'{d}': {_err_text(e)}")
            status = 1
    return status


_SYM_MODE = re.compile(r"([ugoa]*)([-+=])([rwxXst]*)\Z")


def _apply_mode(spec: str, old: int, is_dir: bool) -> int | None:
    if re.fullmatch(r"[0-7]{1,4}", spec):
        return int(spec, 8)
    mode = old & 0o7777
    for clause in spec.split(","):
        m = _SYM_MODE.match(clause)
        if m is None:
            return None
        who, op, perms = m.groups()
        if not who or "a" in who:
            who = "ugo"
        bits = 0
        for w in who:
            shift = {"u": 6, "g": 3, "o": 0}[w]
            for p in perms:
                if p == "r":
                    bits |= 4 << shift
                elif p == "w":
                    bits |= 2 << shift
                elif p == "x" or (p == "X" and (is_dir or old & 0o111)):
                    bits |= 1 << shift
                elif p == "s" and w in "ug":
                    bits |= st.S_ISUID if w == "u" else st.S_ISGID
                elif p == "t":
                    bits |= st.S_ISVTX
        if op == "+":
            mode |= bits
        elif op == "-":
            mode &= ~bits
        else:
            mask = sum(7 << {"u": 6, "g": 3, "o": 0}[w] for w in who)
            mode = (mode & ~mask) | bits
    return mode


def t_chmod(ctx: Ctx) -> int:
    """chmod [-R] MODE FILE..."""
    args = [a for a in ctx.argv[1:] if a not in ("-R", "-v", "-f")]
    if len(args) < 2:
        ctx.error("Needs 2 arguments")
        return 1
    spec, paths = args[0], args[1:]
    fs = ctx.phone.fs
    status = 0
    for p in paths:
        try:
            s = fs.stat(p, ctx.cwd)
        except OSError as e:
            ctx.error(f"{p}: {_err_text(e)}")
            status = 1
            continue
        mode = _apply_mode(spec, s.mode, s.is_dir)
        if mode is None:
            ctx.error(f"bad mode '{spec}'")
            return 1
        try:
            fs.chmod(p, mode, ctx.cwd)
        except OSError as e:
            ctx.error(f"chmod '{p}' to {mode:04o}: {_err_text(e)}")
            status = 1
    return status


def t_touch(ctx: Ctx) -> int:
    """toybox touch [-c] [-d DATE | -t TIME] FILE...: -c never creates; -d takes @EPOCH or
    'YYYY-MM-DD[ T]hh:mm[:ss]', -t [[CC]YY]MMDDhhmm[.ss] (UTC here)."""
    fs = ctx.phone.fs
    args = ctx.argv[1:]
    create, when, files = True, None, []
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-d", "-t") and i + 1 < len(args):
            when = _touch_time(a, args[i + 1])
            if when is None:
                ctx.error(f"bad '{args[i + 1]}'")
                return 1
            i += 2
            continue
        if a.startswith("-") and len(a) > 1 and a != "--":
            if "c" in a:
                create = False
            i += 1
            continue
        files.append(a)
        i += 1
    if not files:
        ctx.error("Needs 1 argument")
        return 1
    status = 0
    for p in files:
        try:
            if fs.exists(p, ctx.cwd):
                fs.touch_mtime(p, ctx.cwd, when)
            elif create:
                fs.open_write(p, ctx.cwd, append=True).close()
                if when is not None:
                    fs.touch_mtime(p, ctx.cwd, when)
        except OSError as e:
            ctx.error(f"'{p}': {_err_text(e)}")
            status = 1
    return status


def _touch_time(flag: str, text: str) -> float | None:
    import calendar
    import time as _time

    if flag == "-d":
        if text.startswith("@"):
            try:
                return float(text[1:])
            except ValueError:
                return None
        for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M",
                    "%Y-%m-%dT%H:%M", "%Y-%m-%d"):
            try:
                return float(calendar.timegm(_time.strptime(text, fmt)))
            except ValueError:
                continue
        return None
    m = re.fullmatch(r"(\d{2,4})?(\d{2})(\d{2})(\d{2})(\d{2})(?:\.(\d{2}))?", text)
    if not m or (m.group(1) and len(m.group(1)) not in (2, 4)):
        return None
    year = _time.gmtime().tm_year
    if m.group(1):
        year = int(m.group(1)) + (2000 if len(m.group(1)) == 2 else 0)
    try:
        return float(calendar.timegm((year, int(m.group(2)), int(m.group(3)), int(m.group(4)),
                                      int(m.group(5)), int(m.group(6) or 0), 0, 0, 0)))
    except (ValueError, OverflowError):
        return None


def _copy_file(ctx: Ctx, src: str, dst: str) -> None:
    fs = ctx.phone.fs
    with fs.open_read(src, ctx.cwd) as fin:
        try:
            if fs.stat(dst, ctx.cwd).is_dir:
                dst = posixpath.join(dst, posixpath.basename(src))
        except OSError:
            pass
        mode = fs.stat(src, ctx.cwd).mode & 0o777
        with fs.open_write(dst, ctx.cwd, create_mode=mode) as fout:
            while True:
                ctx.check()
                chunk = fin.read(1 << 20)
                if not chunk:
                    break
                fout.write(chunk)


def t_cp(ctx: Ctx) -> int:
    """cp [-fpr] SRC... DEST"""
    parsed = _parse_opts(ctx, ctx.argv[1:], "fpRraivnLPHdlsu")
    if parsed is None:
        return 1
    _, _, args = parsed
    if len(args) < 2:
        ctx.error("Needs 2 arguments")
        return 1
    status = 0
    for src in args[:-1]:
        try:
            if ctx.phone.fs.stat(src, ctx.cwd).is_dir:
                ctx.error(f"Skipped dir '{src}'")
                status = 1
                continue
            _copy_file(ctx, src, args[-1])
        except OSError as e:
            if e.errno == errno.ENOSPC:
                ctx.error(f"xsendfile: {_err_text(e)}")
            else:
                ctx.error(f"'{e.filename or src}': {_err_text(e)}")
            status = 1
    return status


def t_mv(ctx: Ctx) -> int:
    """mv SRC... DEST"""
    args = [a for a in ctx.argv[1:] if a not in ("-f", "-i", "-n", "-v")]
    if len(args) < 2:
        ctx.error("Needs 2 arguments")
        return 1
    status = 0
    for src in args[:-1]:
        try:
            ctx.phone.fs.rename(src, args[-1], ctx.cwd)
        except OSError as e:
            ctx.error(f"'{src}' to '{args[-1]}': {_err_text(e)}")
            status = 1
    return status


def _use_pct(used: int, avail: int) -> str:
    """df's Use%: used / (used + avail), rounded up."""
    return f"{(100 * used + (used + avail) - 1) // max(1, used + avail)}%"


def t_df(ctx: Ctx) -> int:
    """df [-hk] [PATH...]"""
    parsed = _parse_opts(ctx, ctx.argv[1:], "hHkaPi", "t")
    if parsed is None:
        return 1
    opts, _, paths = parsed
    fs = ctx.phone.fs
    rows = []
    status = 0
    if paths:
        for p in paths:
            try:
                rows.append(fs.usage_for(p, ctx.cwd))
            except OSError as e:
                ctx.error(f"{p}: {_err_text(e)}")
                status = 1
    else:
        rows = fs.mount_table()
    if "h" in opts:
        table = [("Filesystem", "Size", "Used", "Avail", "Use%", "Mounted on")]
        for r in rows:
            pct = _use_pct(r.used_kb, r.avail_kb)
            table.append((r.filesystem, _human(r.total_kb * 1024), _human(r.used_kb * 1024),
                          _human(r.avail_kb * 1024), pct, r.mount))
    else:
        table = [("Filesystem", "1K-blocks", "Used", "Available", "Use%", "Mounted on")]
        for r in rows:
            pct = _use_pct(r.used_kb, r.avail_kb)
            table.append((r.filesystem, str(r.total_kb), str(r.used_kb), str(r.avail_kb), pct,
                          r.mount))
    w = [max(len(row[k]) for row in table) for k in range(5)]
    for row in table:
        ctx.out(f"{row[0]:<{w[0]}} {row[1]:>{w[1]}} {row[2]:>{w[2]}} {row[3]:>{w[3]}} "
                f"{row[4]:>{w[4]}} {row[5]}\n")
    return status


def _hash_cmd(algo: str) -> Program:
    def run(ctx: Ctx) -> int:
        paths = [a for a in ctx.argv[1:] if not (a.startswith("-") and a != "-")]
        if "-c" in ctx.argv:
            ctx.error("-c is not supported by this simulator")
            return 1
        status = 0
        for name, stream in _open_inputs(ctx, paths):
            if stream is None:
                status = 1
                continue
            h = hashlib.new(algo)
            try:
                while True:
                    ctx.check()
                    chunk = stream.read(1 << 20)
                    if not chunk:
                        break
                    h.update(chunk)
            except OSError as e:
                ctx.error(f"{name}: {_err_text(e)}")
                status = 1
                continue
            ctx.out(f"{h.hexdigest()}  {name}\n")
        return status

    run.__doc__ = f"{algo}sum [FILE...]"
    return run


def _ps_rows(ctx: Ctx, procs: list[SimProc]) -> list[dict[str, str]]:
    rows = []
    for p in procs:
        rows.append({
            "USER": name_of(p.uid), "PID": str(p.pid), "PPID": str(p.ppid),
            "VSZ": str(p.vsz_kb if not p.system else p.rss_kb * 40 + 1_000_000),
            "RSS": str(p.rss_kb), "WCHAN": "0" if p.state == "R" else "do_sys_poll",
            "ADDR": "0", "S": p.state, "NAME": p.name, "CMD": p.name,
            "ARGS": " ".join(p.argv), "COMM": p.name[:15], "CMDLINE": " ".join(p.argv),
            "TIME": "00:00:00", "%CPU": "0.0" if p.state != "R" else f"{p.threads * 100:.1f}",
            "NI": "0", "PRI": "19", "TID": str(p.pid), "TTY": "?", "UID": str(p.uid),
            "THCNT": str(p.threads), "RES": str(p.rss_kb), "PCY": "fg",
        })
    return rows


def t_ps(ctx: Ctx) -> int:
    """ps [-Aef] [-p PID,...] [-o FIELDS] (toybox; toolbox format on SDK < 26)."""
    phone = ctx.phone
    parsed = _parse_opts(ctx, ctx.argv[1:], "AaeflTtwZMx", "opkOuUs")
    if parsed is None:
        return 1
    opts, vals, rest = parsed
    procs = phone.procs.snapshot()
    legacy = phone.profile.sdk < 26
    if "p" in vals:
        wanted = {int(x) for x in re.split(r"[, ]", vals["p"]) if x.isdigit()}
        procs = [p for p in procs if p.pid in wanted]
    elif rest and all(r.isdigit() for r in rest):
        procs = [p for p in procs if str(p.pid) in rest]
    elif not (opts & {"A", "e"}) and not legacy:
        procs = [p for p in procs if p.uid == 2000]
    rows = _ps_rows(ctx, procs)
    if "o" in vals:
        fields = [f.strip().upper() for f in re.split(r"[, ]", vals["o"]) if f.strip()]
        for f in fields:
            if f not in (rows[0] if rows else _ps_rows(ctx, phone.procs.snapshot()[:1])[0]):
                ctx.error(f"bad -o {f}")
                return 1
    elif legacy:
        fields = ["USER", "PID", "PPID", "VSZ", "RSS", "WCHAN", "ADDR", "S", "NAME"]
    else:
        fields = ["USER", "PID", "PPID", "VSZ", "RSS", "WCHAN", "ADDR", "S", "NAME"]
    headers = {"VSZ": "VSIZE" if legacy else "VSZ", "ADDR": "PC" if legacy else "ADDR"}
    widths = {"USER": 10, "PID": 5, "PPID": 5, "VSZ": 8, "RSS": 6, "WCHAN": 16, "ADDR": 4,
              "S": 1, "UID": 5, "TID": 5, "THCNT": 5}
    left = {"USER", "WCHAN", "NAME", "ARGS", "CMD", "COMM", "CMDLINE", "S", "TTY", "PCY"}
    lines = []
    for row in [None, *rows]:
        cells = []
        for k, f in enumerate(fields):
            text = headers.get(f, f) if row is None else row[f]
            w = widths.get(f, 0)
            if k == len(fields) - 1:
                cells.append(text)
            elif f in left:
                cells.append(text.ljust(w))
            else:
                cells.append(text.rjust(w))
        lines.append(" ".join(cells).rstrip())
    ctx.out("\n".join(lines) + "\n")
    return 0


def t_pidof(ctx: Ctx) -> int:
    """pidof NAME..."""
    names = set(a for a in ctx.argv[1:] if not a.startswith("-"))
    pids = [str(p.pid) for p in reversed(ctx.phone.procs.snapshot()) if p.name in names]
    if pids:
        ctx.out(" ".join(pids) + "\n")
        return 0
    return 1


def t_pgrep(ctx: Ctx) -> int:
    """pgrep [-f] [-l] PATTERN"""
    full = "-f" in ctx.argv
    show = "-l" in ctx.argv
    pats = [a for a in ctx.argv[1:] if not a.startswith("-")]
    if not pats:
        ctx.error("Needs 1 argument")
        return 2
    rx = re.compile(pats[0])
    found = 0
    for p in ctx.phone.procs.snapshot():
        if p.pid == ctx.proc.pid:
            continue
        hay = " ".join(p.argv) if full else p.name
        if rx.search(hay):
            found += 1
            ctx.out(f"{p.pid} {p.name}\n" if show else f"{p.pid}\n")
    return 0 if found else 1


def t_killall(ctx: Ctx) -> int:
    """killall [-SIG] NAME..."""
    args = ctx.argv[1:]
    sig = SIGTERM
    if args and args[0].startswith("-"):
        n = signal_number(args[0][1:])
        if n is None:
            ctx.error(f"Unknown signal '{args[0][1:]}'")
            return 1
        sig = n
        args = args[1:]
    status = 0
    for name in args:
        hits = [p for p in ctx.phone.procs.snapshot() if p.name == name]
        if not hits:
            ctx.error(f"{name}: no process killed")
            status = 1
        for p in hits:
            code = ctx.phone.procs.kill(p.pid, sig)
            if code:
                ctx.error(f"{name}({p.pid}): {os.strerror(code)}")
                status = 1
    return status


def t_kill(ctx: Ctx) -> int:
    """toybox kill (when not the shell builtin)."""
    return b_kill(ctx)


def _parse_mask(text: str, ncpu: int) -> int | None:
    try:
        mask = int(text, 16)
    except ValueError:
        return None
    return mask & ((1 << ncpu) - 1)


def t_taskset(ctx: Ctx) -> int:
    """taskset [-ap] [MASK] [PID | CMD [ARG...]]"""
    args = ctx.argv[1:]
    ncpu = ctx.phone.profile.cpu.cpu_count
    full = (1 << ncpu) - 1
    pid_mode = False
    while args and args[0].startswith("-") and len(args[0]) > 1:
        if "p" in args[0]:
            pid_mode = True
        args = args[1:]
    if pid_mode:
        if not args:
            ctx.error("Needs 1 argument")
            return 1
        if len(args) == 1:
            pid_s, mask_s = args[0], None
        else:
            mask_s, pid_s = args[0], args[1]
        if not pid_s.isdigit():
            ctx.error(f"not a pid '{pid_s}'")
            return 1
        p = ctx.phone.procs.get(int(pid_s))
        if p is None:
            ctx.error(f"failed to get {pid_s}'s affinity: No such process")
            return 1
        ctx.out(f"pid {p.pid}'s current affinity mask: {p.affinity & full:x}\n")
        if mask_s is not None:
            mask = _parse_mask(mask_s, ncpu)
            if not mask:
                ctx.error(f"failed to set {pid_s}'s affinity: Invalid argument")
                return 1
            if p.uid != 2000:
                ctx.error(f"failed to set {pid_s}'s affinity: Operation not permitted")
                return 1
            p.affinity = mask
            ctx.out(f"pid {p.pid}'s new affinity mask: {mask:x}\n")
        return 0
    if len(args) < 2:
        ctx.error("Needs 2 arguments")
        return 1
    mask = _parse_mask(args[0], ncpu)
    if not mask:
        ctx.error("sched_setaffinity: Invalid argument")
        return 1
    return ctx.shell.execute(args[1:], Streams(ctx.stdin, ctx.stdout, ctx.stderr), ctx.env,
                             parent=ctx.proc, affinity=mask)


def t_nproc(ctx: Ctx) -> int:
    """nproc [--all]: CPUs available (honours the affinity mask)."""
    n = ctx.phone.profile.cpu.cpu_count
    if "--all" in ctx.argv:
        ctx.out(f"{n}\n")
    else:
        ctx.out(f"{bin(ctx.proc.affinity & ((1 << n) - 1)).count('1')}\n")
    return 0


def t_uname(ctx: Ctx) -> int:
    """uname [-amnrsvo]"""
    prof = ctx.phone.profile
    flags = "".join(a[1:] for a in ctx.argv[1:] if a.startswith("-"))
    build = _fmt_time(prof.build_date_utc, "%a %b %d %H:%M:%S UTC %Y")
    parts = {"s": "Linux", "n": "localhost", "r": prof.kernel,
             "v": f"#1 SMP PREEMPT {build}", "m": prof.cpu.arch, "o": "Toybox"}
    if "a" in flags:
        flags = "snrvmo"
    if not flags:
        flags = "s"
    ctx.out(" ".join(parts[c] for c in "snrvmo" if c in flags) + "\n")
    return 0


def t_getprop(ctx: Ctx) -> int:
    """getprop [NAME [DEFAULT]]"""
    props = ctx.phone.props
    args = [a for a in ctx.argv[1:] if not a.startswith("-")]
    if not args:
        ctx.out("".join(f"[{k}]: [{v}]\n" for k, v in sorted(props.items())))
        return 0
    value = props.get(args[0])
    if value is None or value == "":
        value = args[1] if len(args) > 1 else ""
    ctx.out(value + "\n")
    return 0


def t_setprop(ctx: Ctx) -> int:
    """setprop NAME VALUE (the shell user may set debug.*, log.*, persist.debug.* ...)."""
    if len(ctx.argv) != 3:
        ctx.error("need 2 arguments")
        return 1
    name, value = ctx.argv[1], ctx.argv[2]
    allowed = name.startswith(("debug.", "log.", "persist.log.", "persist.debug.",
                               "persist.sys.test.", "vendor.debug."))
    if not allowed:
        if ctx.phone.profile.sdk >= 29:
            ctx.err(f"Failed to set property '{name}' to '{value}'.\n"
                    f"See dmesg for error reason.\n")
        else:
            ctx.err(f"setprop: failed to set property '{name}' to '{value}'\n")
        return 1
    ctx.phone.set_prop(name, value)
    return 0


def t_sleep(ctx: Ctx) -> int:
    """sleep SECONDS (simulated time)."""
    if len(ctx.argv) < 2:
        ctx.error("Needs 1 argument")
        return 1
    total = 0.0
    for a in ctx.argv[1:]:
        m = re.fullmatch(r"(\d*\.?\d+)([smhd]?)", a)
        if m is None:
            ctx.error(f"Not a number '{a}'")
            return 1
        total += float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    ctx.sleep(total)
    return 0


def t_date(ctx: Ctx) -> int:
    """date [-u] [+FORMAT] (the phone's simulated wall clock)."""
    now = ctx.phone.clock.epoch_s()
    fmt = next((a[1:] for a in ctx.argv[1:] if a.startswith("+")), "%a %b %e %H:%M:%S %Z %Y")
    fmt = fmt.replace("%Z", "UTC").replace("%N", f"{int((now % 1) * 1e9):09d}")
    fmt = fmt.replace("%s", str(int(now)))
    ctx.out(time.strftime(fmt, time.gmtime(now)) + "\n")
    return 0


def t_uptime(ctx: Ctx) -> int:
    """uptime (toybox format, simulated clock)."""
    clock = ctx.phone.clock
    up = int(clock.uptime_s())
    days, rem = divmod(up, 86400)
    hours, rem = divmod(rem, 3600)
    mins = rem // 60
    when = _fmt_time(clock.epoch_s(), "%H:%M:%S")
    if "-s" in ctx.argv:
        ctx.out(_fmt_time(clock.epoch_s() - up, "%Y-%m-%d %H:%M:%S") + "\n")
        return 0
    load = proc_loadavg(ctx.phone).split()[:3]
    dstr = f"{days} day{'s' if days != 1 else ''}, " if days else ""
    ctx.out(f" {when} up {dstr}{hours:2d}:{mins:02d},  0 users,  load average: "
            f"{load[0]}, {load[1]}, {load[2]}\n")
    return 0


def t_id(ctx: Ctx) -> int:
    """id"""
    from farm.sim.fs import SHELL_GROUPS

    if "-u" in ctx.argv:
        ctx.out("2000\n")
        return 0
    if "-un" in ctx.argv or ("-u" in ctx.argv and "-n" in ctx.argv):
        ctx.out("shell\n")
        return 0
    groups = ",".join(f"{g}({name_of(g)})" for g in SHELL_GROUPS)
    ctx.out(f"uid=2000(shell) gid=2000(shell) groups={groups} context=u:r:shell:s0\n")
    return 0


def t_whoami(ctx: Ctx) -> int:
    """whoami"""
    ctx.out("shell\n")
    return 0


def t_hostname(ctx: Ctx) -> int:
    """hostname"""
    ctx.out("localhost\n")
    return 0


def t_which(ctx: Ctx) -> int:
    """which NAME..."""
    status = 0
    for a in ctx.argv[1:]:
        found = ctx.shell.find_program(a)
        if found is None:
            status = 1
        else:
            ctx.out(found + "\n")
    return status


def t_env(ctx: Ctx) -> int:
    """env [NAME=VALUE...] [CMD...]"""
    env = dict(ctx.env)
    args = ctx.argv[1:]
    if args and args[0] == "-i":
        env = {}
        args = args[1:]
    while args and "=" in args[0]:
        k, _, v = args[0].partition("=")
        env[k] = v
        args = args[1:]
    if not args:
        ctx.out("".join(f"{k}={v}\n" for k, v in env.items()))
        return 0
    return ctx.shell.execute(args, Streams(ctx.stdin, ctx.stdout, ctx.stderr), env,
                             parent=ctx.proc)


def t_printenv(ctx: Ctx) -> int:
    """printenv [NAME...]"""
    if len(ctx.argv) == 1:
        ctx.out("".join(f"{k}={v}\n" for k, v in ctx.env.items()))
        return 0
    status = 0
    for a in ctx.argv[1:]:
        if a in ctx.env:
            ctx.out(ctx.env[a] + "\n")
        else:
            status = 1
    return status


def t_printf(ctx: Ctx) -> int:
    """printf FORMAT [ARG...]"""
    if len(ctx.argv) < 2:
        ctx.error("Needs 1 argument")
        return 1
    fmt, args = ctx.argv[1], list(ctx.argv[2:])
    out: list[str] = []
    while True:
        consumed = False
        i = 0
        while i < len(fmt):
            c = fmt[i]
            if c == "\\":
                text, _ = _backslash_escapes(fmt[i:i + 2])
                out.append(text)
                i += 2
                continue
            if c == "%":
                m = re.match(r"%([-+ #0]*)(\d*)(?:\.(\d+))?([sdifxXoc%])", fmt[i:])
                if m is None:
                    out.append(c)
                    i += 1
                    continue
                flags, width, prec, conv = m.groups()
                i += m.end()
                if conv == "%":
                    out.append("%")
                    continue
                arg = args.pop(0) if args else ""
                consumed = True
                spec = "%" + flags + width + (f".{prec}" if prec else "")
                try:
                    if conv in "di":
                        out.append((spec + "d") % int(arg or 0))
                    elif conv in "xXo":
                        out.append((spec + conv) % int(arg or 0))
                    elif conv == "f":
                        out.append((spec + "f") % float(arg or 0))
                    elif conv == "c":
                        out.append(arg[:1])
                    else:
                        out.append((spec + "s") % arg)
                except ValueError:
                    ctx.error(f"invalid number '{arg}'")
                    out.append("0")
                continue
            out.append(c)
            i += 1
        if not args or not consumed:
            break
    ctx.out("".join(out))
    return 0


def t_seq(ctx: Ctx) -> int:
    """seq [FIRST [INC]] LAST"""
    nums = [a for a in ctx.argv[1:]]
    try:
        vals = [int(x) for x in nums]
    except ValueError:
        ctx.error(f"Not a number '{nums[0] if nums else ''}'")
        return 1
    if len(vals) == 1:
        first, inc, last = 1, 1, vals[0]
    elif len(vals) == 2:
        first, inc, last = vals[0], 1, vals[1]
    elif len(vals) == 3:
        first, inc, last = vals
    else:
        ctx.error("Needs 1 argument")
        return 1
    x = first
    out = []
    while (inc > 0 and x <= last) or (inc < 0 and x >= last):
        out.append(f"{x}\n")
        x += inc
        if len(out) >= 4096:
            ctx.out("".join(out))
            out.clear()
    ctx.out("".join(out))
    return 0


def t_basename(ctx: Ctx) -> int:
    """basename PATH [SUFFIX]"""
    if len(ctx.argv) < 2:
        ctx.error("Needs 1 argument")
        return 1
    b = posixpath.basename(ctx.argv[1].rstrip("/")) or "/"
    if len(ctx.argv) > 2 and b.endswith(ctx.argv[2]) and b != ctx.argv[2]:
        b = b[: -len(ctx.argv[2])]
    ctx.out(b + "\n")
    return 0


def t_dirname(ctx: Ctx) -> int:
    """dirname PATH"""
    if len(ctx.argv) < 2:
        ctx.error("Needs 1 argument")
        return 1
    ctx.out((posixpath.dirname(ctx.argv[1].rstrip("/")) or ".") + "\n")
    return 0


def t_readlink(ctx: Ctx) -> int:
    """readlink [-f] PATH"""
    follow = any(a in ("-f", "-e", "-m") for a in ctx.argv[1:])
    paths = [a for a in ctx.argv[1:] if not a.startswith("-")]
    status = 0
    for p in paths:
        try:
            ctx.out((ctx.phone.fs.realpath(p, ctx.cwd) if follow
                     else ctx.phone.fs.readlink(p, ctx.cwd)) + "\n")
        except OSError:
            status = 1
    return status


def t_realpath(ctx: Ctx) -> int:
    """realpath PATH..."""
    status = 0
    for p in ctx.argv[1:]:
        try:
            ctx.out(ctx.phone.fs.realpath(p, ctx.cwd) + "\n")
        except OSError as e:
            ctx.error(f"{p}: {_err_text(e)}")
            status = 1
    return status


def _read_text_inputs(ctx: Ctx, paths: list[str]) -> tuple[list[tuple[str, bytes]], int]:
    out = []
    status = 0
    for name, stream in _open_inputs(ctx, paths):
        if stream is None:
            status = 1
            continue
        try:
            out.append((name, stream.read()))
        except OSError as e:
            ctx.error(f"{name}: {_err_text(e)}")
            status = 1
    return out, status


def t_head(ctx: Ctx) -> int:
    """head [-n N] [-c N] [FILE...]"""
    args = ctx.argv[1:]
    n, c = 10, None
    paths: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-n", "-c") and i + 1 < len(args):
            if a == "-n":
                n = int(args[i + 1])
            else:
                c = int(args[i + 1])
            i += 2
            continue
        if re.fullmatch(r"-n?\d+", a):
            n = int(a.lstrip("-n"))
        elif re.fullmatch(r"-c\d+", a):
            c = int(a[2:])
        else:
            paths.append(a)
        i += 1
    status = 0
    for name, stream in _open_inputs(ctx, paths):
        if stream is None:
            status = 1
            continue
        if len(paths) > 1:
            ctx.out(f"==> {name} <==\n")
        if c is not None:
            ctx.stdout.write(stream.read(c))
            continue
        for _ in range(n):
            line = stream.readline()
            if not line:
                break
            ctx.stdout.write(line)
    return status


def t_tail(ctx: Ctx) -> int:
    """tail [-n N] [FILE...]"""
    args = ctx.argv[1:]
    n = 10
    paths = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "-n" and i + 1 < len(args):
            n = int(args[i + 1].lstrip("+-"))
            i += 2
            continue
        if re.fullmatch(r"-n?\d+", a):
            n = int(a.lstrip("-n"))
        elif a.startswith("-"):
            pass
        else:
            paths.append(a)
        i += 1
    data, status = _read_text_inputs(ctx, paths)
    for name, blob in data:
        if len(data) > 1:
            ctx.out(f"==> {name} <==\n")
        lines = blob.splitlines(keepends=True)
        ctx.stdout.write(b"".join(lines[-n:] if n else []))
    return status


def t_wc(ctx: Ctx) -> int:
    """wc [-lwc] [FILE...]"""
    flags = "".join(a[1:] for a in ctx.argv[1:] if a.startswith("-") and a != "-")
    paths = [a for a in ctx.argv[1:] if not a.startswith("-") or a == "-"]
    data, status = _read_text_inputs(ctx, paths)
    for name, blob in data:
        counts = {"l": blob.count(b"\n"), "w": len(blob.split()), "c": len(blob)}
        sel = [k for k in "lwc" if k in flags] or ["l", "w", "c"]
        cells = [str(counts[k]) for k in sel]
        if len(sel) > 1:
            cells = [x.rjust(7) for x in cells]
        line = " ".join(cells)
        ctx.out(line + (f" {name}" if paths else "") + "\n")
    return status


def t_grep(ctx: Ctx) -> int:
    """grep [-cEFhiHlnoqsvw] [-e PATTERN] PATTERN [FILE...]"""
    parsed = _parse_opts(ctx, ctx.argv[1:], "cEFhHilnoqsvwrxZ", "em")
    if parsed is None:
        return 2
    opts, vals, rest = parsed
    if ctx.argv[0].endswith("egrep"):
        opts.add("E")
    if "e" in vals:
        patterns = [vals["e"]]
    elif rest:
        patterns, rest = [rest[0]], rest[1:]
    else:
        ctx.error("No PATTERN")
        return 2
    flags = re.I if "i" in opts else 0
    regexes = []
    for pat in patterns:
        if "F" in opts:
            src = re.escape(pat)
        elif "E" in opts:
            src = pat
        else:  # basic regex: \( \) \| \{ \} are the special ones
            src = (pat.replace(r"\(", "\0(").replace(r"\)", "\0)").replace(r"\|", "\0|")
                   .replace("(", r"\(").replace(")", r"\)").replace("|", r"\|")
                   .replace("\0(", "(").replace("\0)", ")").replace("\0|", "|")
                   .replace("+", r"\+").replace("?", r"\?"))
        if "w" in opts:
            src = rf"\b(?:{src})\b"
        if "x" in opts:
            src = rf"^(?:{src})$"
        try:
            regexes.append(re.compile(src, flags))
        except re.error:
            ctx.error(f"bad regex '{pat}'")
            return 2
    data, status = _read_text_inputs(ctx, rest)
    matched_any = False
    show_name = (len(rest) > 1 or "H" in opts) and "h" not in opts
    for name, blob in data:
        count = 0
        for lineno, raw in enumerate(blob.decode(errors="replace").splitlines(), 1):
            hit = any(r.search(raw) for r in regexes)
            if hit == ("v" in opts):
                continue
            count += 1
            matched_any = True
            if "q" in opts:
                return 0
            if "c" in opts or "l" in opts:
                continue
            prefix = (f"{name}:" if show_name else "") + (f"{lineno}:" if "n" in opts else "")
            if "o" in opts:
                for r in regexes:
                    for m in r.finditer(raw):
                        ctx.out(prefix + m.group(0) + "\n")
            else:
                ctx.out(prefix + raw + "\n")
        if "c" in opts:
            ctx.out((f"{name}:" if show_name else "") + f"{count}\n")
        if "l" in opts and count:
            ctx.out(name + "\n")
    if status and "s" not in opts:
        return 2
    return 0 if matched_any else 1


def t_sort(ctx: Ctx) -> int:
    """sort [-nru] [FILE...]"""
    flags = "".join(a[1:] for a in ctx.argv[1:] if a.startswith("-") and a != "-")
    paths = [a for a in ctx.argv[1:] if not a.startswith("-") or a == "-"]
    data, status = _read_text_inputs(ctx, paths)
    lines = [ln for _, b in data for ln in b.decode(errors="replace").splitlines()]

    def numkey(s: str) -> float:
        m = re.match(r"\s*-?\d+(\.\d+)?", s)
        return float(m.group(0)) if m else 0.0

    lines.sort(key=numkey if "n" in flags else None, reverse="r" in flags)
    if "u" in flags:
        seen: list[str] = []
        for ln in lines:
            if not seen or seen[-1] != ln:
                seen.append(ln)
        lines = seen
    ctx.out("".join(ln + "\n" for ln in lines))
    return status


def t_uniq(ctx: Ctx) -> int:
    """uniq [-c] [FILE]"""
    count = "-c" in ctx.argv
    paths = [a for a in ctx.argv[1:] if not a.startswith("-")]
    data, status = _read_text_inputs(ctx, paths[:1])
    lines = [ln for _, b in data for ln in b.decode(errors="replace").splitlines()]
    out: list[tuple[str, int]] = []
    for ln in lines:
        if out and out[-1][0] == ln:
            out[-1] = (ln, out[-1][1] + 1)
        else:
            out.append((ln, 1))
    ctx.out("".join((f"{n:7d} {ln}\n" if count else f"{ln}\n") for ln, n in out))
    return status


def t_cut(ctx: Ctx) -> int:
    """cut -d DELIM -f FIELDS | -c CHARS [FILE...]"""
    parsed = _parse_opts(ctx, ctx.argv[1:], "sn", "dfcb")
    if parsed is None:
        return 1
    opts, vals, paths = parsed
    delim = vals.get("d", "\t")
    spec = vals.get("f") or vals.get("c") or vals.get("b")
    if spec is None:
        ctx.error("Needs -fcb")
        return 1
    picks: list[tuple[int, int]] = []
    for part in spec.split(","):
        a, dash, b = part.partition("-")
        lo = int(a) if a else 1
        hi = int(b) if b else (10**9 if dash else lo)
        picks.append((lo, hi))
    data, status = _read_text_inputs(ctx, paths)
    for _, blob in data:
        for ln in blob.decode(errors="replace").splitlines():
            if "f" in vals:
                if delim not in ln:
                    if "s" not in opts:
                        ctx.out(ln + "\n")
                    continue
                items = ln.split(delim)
                sel = [items[i - 1] for i in range(1, len(items) + 1)
                       if any(lo <= i <= hi for lo, hi in picks)]
                ctx.out(delim.join(sel) + "\n")
            else:
                ctx.out("".join(ch for i, ch in enumerate(ln, 1)
                                if any(lo <= i <= hi for lo, hi in picks)) + "\n")
    return status


def _tr_set(s: str) -> str:
    s, _ = _backslash_escapes(s)
    classes = {"[:upper:]": "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "[:lower:]": "abcdefghijklmnopqrstuvwxyz",
               "[:digit:]": "0123456789", "[:space:]": " \t\n\r\f\v"}
    for k, v in classes.items():
        s = s.replace(k, v)
    out: list[str] = []
    i = 0
    while i < len(s):
        if i + 2 < len(s) and s[i + 1] == "-":
            out.extend(chr(c) for c in range(ord(s[i]), ord(s[i + 2]) + 1))
            i += 3
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def t_tr(ctx: Ctx) -> int:
    """tr [-d] SET1 [SET2]"""
    args = ctx.argv[1:]
    delete = False
    if args and args[0] == "-d":
        delete = True
        args = args[1:]
    if not args:
        ctx.error("Needs 1 argument")
        return 1
    data = ctx.stdin.read().decode(errors="replace")
    s1 = _tr_set(args[0])
    if delete:
        ctx.out("".join(c for c in data if c not in s1))
        return 0
    s2 = _tr_set(args[1]) if len(args) > 1 else ""
    if not s2:
        ctx.out(data)
        return 0
    s2 = s2 + s2[-1] * max(0, len(s1) - len(s2))
    ctx.out(data.translate(str.maketrans(s1, s2[: len(s1)])))
    return 0


def t_tee(ctx: Ctx) -> int:
    """tee [-a] FILE..."""
    append = "-a" in ctx.argv
    paths = [a for a in ctx.argv[1:] if not a.startswith("-")]
    outs = []
    status = 0
    for p in paths:
        try:
            outs.append(ctx.phone.fs.open_write(p, ctx.cwd, append=append))
        except OSError as e:
            ctx.error(f"{p}: {_err_text(e)}")
            status = 1
    try:
        while True:
            chunk = ctx.stdin.read(65536)
            if not chunk:
                break
            ctx.stdout.write(chunk)
            for f in outs:
                f.write(chunk)
    except OSError as e:
        ctx.error(f"xwrite: {_err_text(e)}")
        status = 1
    finally:
        for f in outs:
            f.close()
    return status


def t_stat(ctx: Ctx) -> int:
    """stat [-c FORMAT] [-L] FILE..."""
    parsed = _parse_opts(ctx, ctx.argv[1:], "Lft", "c")
    if parsed is None:
        return 1
    opts, vals, paths = parsed
    fs = ctx.phone.fs
    status = 0
    for p in paths:
        try:
            s = fs.stat(p, ctx.cwd, follow="L" in opts)
        except OSError as e:
            ctx.error(f"{p}: {_err_text(e)}")
            status = 1
            continue
        kind = ("directory" if s.is_dir else "symbolic link" if s.is_link else
                "character special file" if st.S_ISCHR(s.mode) else
                "regular empty file" if s.size == 0 else "regular file")
        if "c" in vals:
            subs = {"n": p, "s": str(s.size), "a": f"{s.mode & 0o7777:o}",
                    "A": _mode_string(s.mode), "U": name_of(s.uid), "G": name_of(s.gid),
                    "u": str(s.uid), "g": str(s.gid), "Y": str(int(s.mtime)),
                    "y": _fmt_time(s.mtime, "%Y-%m-%d %H:%M:%S.000000000 +0000"),
                    "F": kind, "i": str(s.ino), "h": str(s.nlink), "b": str(
                        (s.size + 511) // 512), "B": "512", "f": f"{s.mode:x}"}
            ctx.out(re.sub(r"%(.)", partial(_stat_field, subs), vals["c"]) + "\n")
            continue
        t = _fmt_time(s.mtime, "%Y-%m-%d %H:%M:%S.000000000 +0000")
        ctx.out(f"  File: {p}\n  Size: {s.size}\t Blocks: {(s.size + 511) // 512}\t "
                f"IO Blocks: 4096\t{kind}\nDevice: {s.dev:x}h/{s.dev}d\t Inode: {s.ino}\t "
                f"Links: {s.nlink}\nAccess: ({s.mode & 0o7777:04o}/{_mode_string(s.mode)})\t"
                f"Uid: ({s.uid:5d}/{name_of(s.uid):>8})\tGid: ({s.gid:5d}/"
                f"{name_of(s.gid):>8})\nAccess: {t}\nModify: {t}\nChange: {t}\n")
    return status


def _stat_field(subs: dict[str, str], m: re.Match[str]) -> str:
    return subs.get(m.group(1), m.group(0))


def t_du(ctx: Ctx) -> int:
    """du [-sk] [-h] [PATH...]: totals per argument."""
    flags = "".join(a[1:] for a in ctx.argv[1:] if a.startswith("-"))
    paths = [a for a in ctx.argv[1:] if not a.startswith("-")] or ["."]
    fs = ctx.phone.fs
    status = 0
    for p in paths:
        total = 0
        try:
            for _, s in fs.walk(p, ctx.cwd):
                total += (s.size + 4095) // 4096 * 4
        except OSError as e:
            ctx.error(f"{p}: {_err_text(e)}")
            status = 1
            continue
        size = _human(total * 1024) if "h" in flags else str(total)
        ctx.out(f"{size}\t{p}\n")
    return status


def t_free(ctx: Ctx) -> int:
    """free [-bkmgh]"""
    mem = _meminfo(ctx.phone)
    div = 1
    flags = "".join(a[1:] for a in ctx.argv[1:] if a.startswith("-"))
    if "m" in flags:
        div = 1024
    elif "g" in flags:
        div = 1024 * 1024
    unit_b = "b" in flags

    def f(kb: int) -> str:
        if "h" in flags:
            return _human(kb * 1024)
        return str(kb * 1024 if unit_b else kb // div)

    total, free, avail = mem["MemTotal"], mem["MemFree"], mem["MemAvailable"]
    buffers, cached = mem["Buffers"], mem["Cached"]
    used = total - free - buffers - cached
    ctx.out("\t\ttotal        used        free      shared     buffers\n")
    ctx.out(f"Mem:  {f(total):>12}{f(used):>12}{f(free):>12}{f(mem['Shmem']):>12}"
            f"{f(buffers):>12}\n-/+ buffers/cache:{f(used):>12}{f(avail):>12}\n"
            f"Swap: {f(mem['SwapTotal']):>12}{f(mem['SwapTotal'] - mem['SwapFree']):>12}"
            f"{f(mem['SwapFree']):>12}\n")
    return 0


def t_nohup(ctx: Ctx) -> int:
    """nohup CMD [ARG...]"""
    from farm.sim.shell import FileOut

    if len(ctx.argv) < 2:
        ctx.error("Needs 1 argument")
        return 127
    out, err = ctx.stdout, ctx.stderr
    opened = None
    if ctx.stdout.isatty:
        try:
            f = ctx.phone.fs.open_write("nohup.out", ctx.cwd, append=True, create_mode=0o600)
        except OSError:
            f = ctx.phone.fs.open_write("/data/local/tmp/nohup.out", append=True,
                                        create_mode=0o600)
        opened = FileOut(f)
        ctx.err("nohup: appending output to 'nohup.out'\n")
        out = opened
        if err.isatty:
            err = opened
    try:
        return ctx.shell.execute(ctx.argv[1:], Streams(ctx.stdin, out, err), ctx.env,
                                 parent=ctx.proc, ignore_hup=True)
    finally:
        if opened is not None:
            opened.close()


def t_setsid(ctx: Ctx) -> int:
    """setsid CMD [ARG...]: detaches from the session (no SIGHUP on hangup)."""
    if len(ctx.argv) < 2:
        ctx.error("Needs 1 argument")
        return 1
    return ctx.shell.execute(ctx.argv[1:], Streams(ctx.stdin, ctx.stdout, ctx.stderr),
                             ctx.env, parent=ctx.proc, ignore_hup=True)


def t_timeout(ctx: Ctx) -> int:
    """timeout [-s SIG] DURATION CMD [ARG...] (simulated seconds); 124 on timeout."""
    import threading

    args = ctx.argv[1:]
    sig = SIGTERM
    if len(args) >= 2 and args[0] == "-s":
        n = signal_number(args[1])
        if n is None:
            ctx.error(f"Unknown signal '{args[1]}'")
            return 125
        sig = n
        args = args[2:]
    if len(args) < 2:
        ctx.error("Needs 2 arguments")
        return 125
    try:
        dur = float(args[0].rstrip("s"))
    except ValueError:
        ctx.error(f"Not a number '{args[0]}'")
        return 125
    fired = threading.Event()
    done = threading.Event()
    clock = ctx.phone.clock
    target = clock.now_s() + dur
    me = ctx.proc

    def watchdog() -> None:
        while not done.is_set():
            if clock.now_s() >= target:
                fired.set()
                child = me.fg
                if child is not None:
                    child.signal(sig)
                return
            done.wait(min(0.05, max(0.001, clock.to_real_s(target - clock.now_s()))))

    t = threading.Thread(target=watchdog, daemon=True, name="sim-timeout")
    t.start()
    try:
        status = ctx.shell.execute(args[1:], Streams(ctx.stdin, ctx.stdout, ctx.stderr),
                                   ctx.env, parent=me, quiet_signal=True)
    finally:
        done.set()
    return 124 if fired.is_set() else status


def t_yes(ctx: Ctx) -> int:
    """yes [TEXT]"""
    line = ((" ".join(ctx.argv[1:]) or "y") + "\n").encode() * 512
    while True:
        ctx.check()
        ctx.stdout.write(line)


def t_xargs(ctx: Ctx) -> int:
    """xargs [CMD [ARG...]]"""
    words = ctx.stdin.read().decode(errors="replace").split()
    cmd = ctx.argv[1:] or ["echo"]
    if not words:
        return 0
    return ctx.shell.execute(cmd + words, Streams(EmptyIn(), ctx.stdout, ctx.stderr), ctx.env,
                             parent=ctx.proc)


def t_true(ctx: Ctx) -> int:
    """true"""
    return 0


def t_false(ctx: Ctx) -> int:
    """false"""
    return 1


def t_test(ctx: Ctx) -> int:
    """toybox test / [."""
    return b_test(ctx)


def t_clear(ctx: Ctx) -> int:
    """clear"""
    ctx.out("\x1b[2J\x1b[H")
    return 0


def t_base64(ctx: Ctx) -> int:
    """base64 [-d] [FILE]"""
    import base64

    paths = [a for a in ctx.argv[1:] if not a.startswith("-")]
    data, status = _read_text_inputs(ctx, paths[:1])
    blob = b"".join(b for _, b in data)
    if "-d" in ctx.argv:
        ctx.stdout.write(base64.b64decode(blob))
    else:
        enc = base64.b64encode(blob).decode()
        ctx.out("".join(enc[i:i + 76] + "\n" for i in range(0, len(enc), 76)))
    return status


def t_file(ctx: Ctx) -> int:
    """file PATH..."""
    from farm.sim.benchmark import elf_info

    fs = ctx.phone.fs
    for p in ctx.argv[1:]:
        try:
            s = fs.stat(p, ctx.cwd)
            if s.is_dir:
                ctx.out(f"{p}: directory\n")
                continue
            head = fs.read_bytes(p, ctx.cwd)[:4096]
        except OSError as e:
            ctx.out(f"{p}: cannot open: {_err_text(e)}\n")
            continue
        info = elf_info(head)
        if info is not None:
            bits, machine = info
            name = {183: "arm64", 40: "arm", 62: "x86-64", 3: "i386"}.get(machine, "unknown")
            ctx.out(f"{p}: ELF executable, {bits}-bit LSB {name}, dynamic (/system/bin/linker"
                    f"{'64' if bits == 64 else ''})\n")
        elif head[4:8] == b"TFL3":
            ctx.out(f"{p}: data\n")
        elif not head:
            ctx.out(f"{p}: empty\n")
        else:
            ctx.out(f"{p}: ASCII text\n" if head.isascii() else f"{p}: data\n")
    return 0


def t_toybox(ctx: Ctx) -> int:
    """toybox [APPLET ARGS]: multiplexer."""
    if len(ctx.argv) < 2:
        ctx.out(" ".join(sorted(APPLETS_TOYBOX)) + "\n")
        return 0
    name = ctx.argv[1]
    fn = APPLETS_TOYBOX.get(name)
    if fn is None:
        ctx.err(f"toybox: Unknown command {name}\n")
        return 1
    ctx.argv = ctx.argv[1:]
    return fn(ctx)


APPLETS_TOYBOX: dict[str, Program] = {
    "basename": t_basename, "base64": t_base64, "cat": t_cat, "chmod": t_chmod,
    "clear": t_clear, "cp": t_cp, "cut": t_cut, "date": t_date, "df": t_df,
    "dirname": t_dirname, "du": t_du, "echo": t_echo, "egrep": t_grep, "env": t_env,
    "false": t_false, "fgrep": t_grep, "file": t_file, "free": t_free, "getprop": t_getprop,
    "grep": t_grep, "head": t_head, "hostname": t_hostname, "id": t_id, "kill": t_kill,
    "killall": t_killall, "ls": t_ls, "md5sum": _hash_cmd("md5"), "mkdir": t_mkdir,
    "mv": t_mv, "nohup": t_nohup, "nproc": t_nproc, "pgrep": t_pgrep, "pidof": t_pidof,
    "printenv": t_printenv, "printf": t_printf, "ps": t_ps, "pwd": b_pwd,
    "readlink": t_readlink, "realpath": t_realpath, "rm": t_rm, "rmdir": t_rmdir,
    "seq": t_seq, "setprop": t_setprop, "setsid": t_setsid, "sha1sum": _hash_cmd("sha1"),
    "sha256sum": _hash_cmd("sha256"), "sha512sum": _hash_cmd("sha512"), "sleep": t_sleep,
    "sort": t_sort, "stat": t_stat, "tail": t_tail, "taskset": t_taskset, "tee": t_tee,
    "test": t_test, "[": t_test, "timeout": t_timeout, "touch": t_touch, "tr": t_tr,
    "true": t_true, "uname": t_uname, "uniq": t_uniq, "uptime": t_uptime, "wc": t_wc,
    "which": t_which, "whoami": t_whoami, "xargs": t_xargs, "yes": t_yes,
}


# -------------------------------------------------------------------------------------------
# Android tools: sh, dumpsys, logcat, cmd


def a_sh(ctx: Ctx) -> int:
    """sh [-c CMD | FILE] [ARGS]: a nested mksh."""
    from farm.sim.shell import Shell

    args = ctx.argv[1:]
    state = ShellState(dict(ctx.env), set(ctx.env), ctx.cwd, 0, [], None, ctx.proc.affinity,
                       ctx.shell.state.umask)
    sub = Shell(ctx.phone, ctx.proc, Streams(ctx.stdin, ctx.stdout, ctx.stderr), state,
                tty=ctx.shell.tty)
    if args and args[0] == "-c":
        if len(args) < 2:
            ctx.err(f"{SH}: -c: option requires an argument\n")
            return 1
        state.positional = args[3:] if len(args) > 3 else []
        return sub.run_script(args[1])
    if args:
        try:
            text = ctx.phone.fs.read_bytes(args[0], ctx.cwd).decode(errors="replace")
        except OSError as e:
            ctx.err(f"{SH}: {args[0]}: {_err_text(e)}\n")
            return 127
        state.positional = args[1:]
        return sub.run_script(text)
    return sub.run_script(ctx.stdin.read().decode(errors="replace"))


def a_logcat(ctx: Ctx) -> int:
    """logcat -d: the buffers are empty on a simulated phone."""
    if "-c" in ctx.argv:
        return 0
    ctx.out("--------- beginning of main\n--------- beginning of system\n")
    if "-d" in ctx.argv:
        return 0
    while True:
        ctx.sleep(3600)


def a_cmd(ctx: Ctx) -> int:
    """cmd SERVICE ...: only `cmd -l`."""
    if len(ctx.argv) > 1 and ctx.argv[1] == "-l":
        ctx.out("Currently running services:\n" + "".join(f"  {s}\n" for s in DUMPSYS_SERVICES))
        return 0
    name = ctx.argv[1] if len(ctx.argv) > 1 else ""
    ctx.err(f"cmd: Can't find service: {name}\n")
    return 20


DUMPSYS_SERVICES = ("activity", "battery", "cpuinfo", "meminfo", "package", "power",
                    "thermalservice", "window")


def a_dumpsys(ctx: Ctx) -> int:
    """dumpsys [-l] SERVICE [ARGS]: battery, thermalservice, cpuinfo, meminfo."""
    phone = ctx.phone
    args = ctx.argv[1:]
    services = [s for s in DUMPSYS_SERVICES if s != "thermalservice" or phone.profile.sdk >= 29]
    if not args:
        for s in services:
            ctx.out("-------------------------------------------------------------------------"
                    f"------\nDUMP OF SERVICE {s}:\n")
            fn = _DUMPERS.get(s)
            if fn is not None:
                ctx.out(fn(phone, []))
        return 0
    if args[0] == "-l":
        ctx.out("Currently running services:\n" + "".join(f"  {s}\n" for s in services))
        return 0
    name = args[0]
    if name not in services:
        ctx.err(f"Can't find service: {name}\n")
        return 0
    fn = _DUMPERS.get(name)
    if fn is None:
        return 0
    ctx.out(fn(phone, args[1:]))
    return 0


def dumpsys_battery(phone: Phone, args: list[str]) -> str:
    """`dumpsys battery` as BatteryService prints it."""
    b = phone.profile.battery
    snap = phone.thermal.snapshot()
    temp = round(snap.battery_c * 10)
    status = 2 if b.plugged != "none" and b.level_pct < 100 else (5 if b.plugged != "none"
                                                                    else 3)
    lines = ["Current Battery Service state:",
             f"  AC powered: {str(b.plugged == 'ac').lower()}",
             f"  USB powered: {str(b.plugged == 'usb').lower()}",
             "  Wireless powered: false"]
    if phone.profile.sdk >= 33:
        lines.append("  Dock powered: false")
    lines += [f"  Max charging current: {500000 if b.plugged == 'usb' else 0}",
              f"  Max charging voltage: {5000000 if b.plugged != 'none' else 0}",
              f"  Charge counter: {b.capacity_mah * b.level_pct * 10}",
              f"  status: {status}", "  health: 2", "  present: true",
              f"  level: {b.level_pct}", "  scale: 100", f"  voltage: {b.voltage_mv}",
              f"  temperature: {temp}", f"  technology: {b.technology}"]
    if phone.profile.sdk >= 34:
        lines += ["  Charging state: 1", "  Charging policy: 1", "  Capacity level: -1"]
    return "\n".join(lines) + "\n"


def dumpsys_thermalservice(phone: Phone, args: list[str]) -> str:
    """`dumpsys thermalservice` (Android 10+ ThermalManagerService)."""
    snap = phone.thermal.snapshot()
    spec = phone.profile.thermal

    def temp_line(name: str, hal_type: int, value: float) -> str:
        status = 0
        for i, th in enumerate(spec.status_thresholds_c):
            if snap.soc_c >= th and hal_type in (0, 3):
                status = i + 1
        return (f"\tTemperature{{mValue={value:.1f}, mType={hal_type}, mName={name}, "
                f"mStatus={status}}}")

    temps = [temp_line(n, t, v) for n, t, v in snap.zones]
    lines = ["IsStatusOverride: false", "ThermalEventListeners:", "\tcallbacks: 2",
             "\tkilled: false", "\tbroadcasts count: -1", "ThermalStatusListeners:",
             "\tcallbacks: 1", "\tkilled: false", "\tbroadcasts count: -1",
             f"Thermal Status: {snap.status}", "Cached temperatures:", *temps,
             "HAL Ready: true", "HAL connection:",
             "\tThermalHAL AIDL 1  connected: yes" if phone.profile.sdk >= 33
             else "\tThermalHAL 2.0 connected: yes",
             "Current temperatures from HAL:", *temps, "Current cooling devices from HAL:"]
    for i, cl in enumerate(phone.profile.cpu.clusters):
        capped = phone.thermal.scaling_max_freq_khz(cl.cpus[0])
        state = len(cl.freqs_khz) - 1 - list(cl.freqs_khz).index(capped)
        lines.append(f"\tCoolingDevice{{mValue={state}, mType=2, mName=thermal-cpufreq-{i}}}")
    lines.append("Temperature static thresholds from HAL:")
    sev = spec.status_thresholds_c
    hot = ", ".join(["NaN"] + [f"{t:.1f}" for t in sev])
    for name, hal_type, _ in snap.zones:
        if hal_type in (0, 3):
            lines.append(f"\tTemperatureThreshold{{mType={hal_type}, mName={name}, "
                         f"mHotThrottlingThresholds=[{hot}], mColdThrottlingThresholds=[NaN, "
                         f"NaN, NaN, NaN, NaN, NaN, NaN]}}")
    return "\n".join(lines) + "\n"


def dumpsys_cpuinfo(phone: Phone, args: list[str]) -> str:
    """`dumpsys cpuinfo` (ProcessCpuTracker)."""
    load = proc_loadavg(phone).split()[:3]
    snap = phone.thermal.snapshot()
    ncpu = phone.profile.cpu.cpu_count
    busy = len(snap.busy_cpus) + (1 if snap.gpu_busy or snap.npu_busy else 0)
    now_ms = int(phone.clock.uptime_s() * 1000)
    lines = [f"Load: {load[0]} / {load[1]} / {load[2]}",
             f"CPU usage from {min(now_ms, 28000)}ms to {min(now_ms, 28000) - 20000}ms ago "
             f"({_fmt_time(phone.clock.epoch_s() - 28, '%Y-%m-%d %H:%M:%S.000')} to "
             f"{_fmt_time(phone.clock.epoch_s() - 8, '%Y-%m-%d %H:%M:%S.000')}):"]
    rows = []
    for p in phone.procs.snapshot():
        if p.state == "R":
            pct = 100.0 * p.threads
            rows.append((pct, f"  {pct:.0f}% {p.pid}/{p.name}: {pct * 0.97:.0f}% user + "
                              f"{pct * 0.03:.1f}% kernel / faults: 1520 minor"))
    rows.append((2.1, "  2.1% 1205/system_server: 1.3% user + 0.8% kernel / faults: 2231 minor"))
    rows.append((0.9, "  0.9% 480/surfaceflinger: 0.5% user + 0.4% kernel"))
    rows.append((0.3, "  0.3% 702/adbd: 0.1% user + 0.2% kernel / faults: 18 minor"))
    lines += [r[1] for r in sorted(rows, key=lambda r: -r[0])]
    total = min(100.0, 100.0 * busy / ncpu + 3.3)
    lines.append(f"{total:.1f}% TOTAL: {total * 0.9:.1f}% user + {total * 0.1:.1f}% kernel + "
                 f"0.1% iowait + 0.1% irq + 0.0% softirq")
    return "\n".join(lines) + "\n"


def _fmt_k(kb: int) -> str:
    return f"{kb:,}K"


def dumpsys_meminfo(phone: Phone, args: list[str]) -> str:
    """`dumpsys meminfo` summary (or a process's if a pid/name is given)."""
    mem = _meminfo(phone)
    procs = phone.procs.snapshot()
    if args and not args[0].startswith("-"):
        target = [p for p in procs if str(p.pid) == args[0] or p.name == args[0]]
        if not target:
            return f"No process found for: {args[0]}\n"
        p = target[0]
        return (f"Applications Memory Usage (in Kilobytes):\nUptime: "
                f"{int(phone.clock.uptime_s() * 1000)} Realtime: "
                f"{int(phone.clock.uptime_s() * 1000)}\n\n** MEMINFO in pid {p.pid} "
                f"[{p.name}] **\n                   Pss  Private  Private  SwapPss      Rss\n"
                f"                 Total    Dirty    Clean    Dirty    Total\n"
                f"        TOTAL {p.rss_kb * 9 // 10:8d} {p.rss_kb * 8 // 10:8d} "
                f"{p.rss_kb // 20:8d} {0:8d} {p.rss_kb:8d}\n")
    up_ms = int(phone.clock.uptime_s() * 1000)
    lines = ["Applications Memory Usage (in Kilobytes):", f"Uptime: {up_ms} Realtime: {up_ms}",
             "", "Total PSS by process:"]
    for p in sorted(procs, key=lambda p: -p.rss_kb):
        if p.rss_kb:
            lines.append(f"{_fmt_k(p.rss_kb * 9 // 10):>12}: {p.name} (pid {p.pid})")
    total_pss = sum(p.rss_kb * 9 // 10 for p in procs)
    lines += ["", "Total PSS by OOM adjustment:",
              f"{_fmt_k(total_pss // 3):>12}: Native",
              f"{_fmt_k(total_pss // 3):>12}: System",
              f"{_fmt_k(total_pss // 3):>12}: Persistent", ""]
    total = mem["MemTotal"]
    free = mem["MemFree"]
    cached = mem["Cached"]
    used_kernel = total - free - cached - total_pss
    lines += [f"Total RAM: {_fmt_k(total)} (status normal)",
              f" Free RAM: {_fmt_k(free + cached)} ({_fmt_k(cached // 4)} cached pss + "
              f"{_fmt_k(cached - cached // 4)} cached kernel + {_fmt_k(free)} free)",
              f" Used RAM: {_fmt_k(total_pss + max(0, used_kernel))} ({_fmt_k(total_pss)} "
              f"used pss + {_fmt_k(max(0, used_kernel))} kernel)",
              f" Lost RAM: {_fmt_k(total // 100)}",
              f"     ZRAM: {_fmt_k(mem['SwapTotal'] // 40)} physical used for "
              f"{_fmt_k(mem['SwapTotal'] // 10)} in swap ({_fmt_k(mem['SwapTotal'])} total swap)",
              f"   Tuning: 256 (large 512), oom {_fmt_k(322560)}, restore limit "
              f"{_fmt_k(107520)} (high-end-gfx)"]
    return "\n".join(lines) + "\n"


_DUMPERS: dict[str, Callable[[Phone, list[str]], str]] = {
    "battery": dumpsys_battery, "thermalservice": dumpsys_thermalservice,
    "cpuinfo": dumpsys_cpuinfo, "meminfo": dumpsys_meminfo,
}

APPLETS_ANDROID: dict[str, Program] = {
    "sh": a_sh, "dumpsys": a_dumpsys, "logcat": a_logcat, "cmd": a_cmd,
}


# -------------------------------------------------------------------------------------------
# /proc text


def _meminfo(phone: Phone) -> dict[str, int]:
    total = phone.profile.ram_mb * 1024
    user_rss = sum(p.rss_kb for p in phone.procs.snapshot() if not p.system)
    free = max(total // 50, total * 12 // 100 - user_rss)
    cached = total * 30 // 100
    avail = max(free, total * 42 // 100 - user_rss)
    swap = min(4 * 1024 * 1024, total // 2)
    return {
        "MemTotal": total, "MemFree": free, "MemAvailable": avail, "Buffers": total // 400,
        "Cached": cached, "SwapCached": swap // 200, "Active": total * 25 // 100,
        "Inactive": total * 22 // 100, "Unevictable": total // 60, "SwapTotal": swap,
        "SwapFree": swap * 7 // 10, "Dirty": 208, "AnonPages": total * 20 // 100 + user_rss,
        "Mapped": total * 15 // 100, "Shmem": total // 100, "Slab": total * 3 // 100,
        "KernelStack": 52_000, "PageTables": 98_000, "VmallocTotal": 263_061_440,
    }


def proc_meminfo(phone: Phone) -> str:
    """/proc/meminfo."""
    return "".join(f"{(k + ':'):<16}{v:>8} kB\n" for k, v in _meminfo(phone).items())


def proc_cpuinfo(phone: Phone) -> str:
    """/proc/cpuinfo in the arm64 or armv7 layout."""
    cpu = phone.profile.cpu
    feats = " ".join(cpu.features)
    blocks = []
    arm32 = cpu.arch in ("armv7l", "armv8l")
    for cl in cpu.clusters:
        for c in cl.cpus:
            rows = [f"processor\t: {c}"]
            if arm32:
                rows.append("model name\t: ARMv7 Processor rev 0 (v7l)")
            rows += ["BogoMIPS\t: 38.40", f"Features\t: {feats}",
                     "CPU implementer\t: 0x41",
                     f"CPU architecture: {7 if arm32 else 8}", "CPU variant\t: 0x0",
                     f"CPU part\t: {cl.part}", "CPU revision\t: 0"]
            blocks.append("\n".join(rows))
    tail = f"Hardware\t: {cpu.hardware}\n"
    if arm32:
        tail += "Revision\t: 0000\nSerial\t\t: 0000000000000000\n"
    return "\n\n".join(blocks) + "\n\n" + tail


def proc_uptime(phone: Phone) -> str:
    """/proc/uptime: uptime and summed idle time, in simulated seconds."""
    up = phone.clock.uptime_s()
    idle = up * phone.profile.cpu.cpu_count * 0.8
    return f"{up:.2f} {idle:.2f}\n"


def proc_version(phone: Phone) -> str:
    """/proc/version."""
    build = _fmt_time(phone.profile.build_date_utc, "%a %b %d %H:%M:%S UTC %Y")
    return (f"Linux version {phone.profile.kernel} (build-user@build-host) (Android (8508608, "
            f"based on r450784e) clang version 14.0.7) #1 SMP PREEMPT {build}\n")


def proc_loadavg(phone: Phone) -> str:
    """/proc/loadavg: load follows how many CPUs are busy."""
    snap = phone.thermal.snapshot()
    busy = len(snap.busy_cpus)
    running = sum(1 for p in phone.procs.snapshot() if p.state == "R") + 1
    total = len(phone.procs.snapshot()) + 900
    last = max((p.pid for p in phone.procs.snapshot()), default=1)
    return (f"{1.2 + busy:.2f} {1.1 + busy * 0.7:.2f} {1.0 + busy * 0.3:.2f} "
            f"{running}/{total} {last}\n")


def proc_mounts(phone: Phone) -> str:
    """/proc/mounts."""
    rows = [("/dev/block/dm-0", "/", "ext4", "ro,seclabel,relatime"),
            ("tmpfs", "/dev", "tmpfs", "rw,seclabel,nosuid,relatime,mode=755"),
            ("proc", "/proc", "proc", "rw,relatime,gid=3009,hidepid=invisible"),
            ("sysfs", "/sys", "sysfs", "rw,seclabel,relatime"),
            ("/dev/block/dm-1", "/system", "ext4", "ro,seclabel,relatime"),
            ("/dev/block/dm-3", "/vendor", "ext4", "ro,seclabel,relatime"),
            (phone.fs.data_fs, "/data", "f2fs", "rw,lazytime,seclabel,nosuid,nodev,noatime"),
            ("/dev/fuse", "/storage/emulated", "fuse",
             "rw,lazytime,nosuid,nodev,noexec,noatime,user_id=0,group_id=0")]
    return "".join(f"{a} {b} {c} {d} 0 0\n" for a, b, c, d in rows)


def proc_stat_global(phone: Phone) -> str:
    """/proc/stat (enough for CPU-usage probes)."""
    up = int(phone.clock.uptime_s() * 100)
    n = phone.profile.cpu.cpu_count
    lines = [f"cpu  {up * n // 10} 1200 {up * n // 30} {up * n * 8 // 10} 900 0 300 0 0 0"]
    for c in range(n):
        lines.append(f"cpu{c} {up // 10} 150 {up // 30} {up * 8 // 10} 110 0 40 0 0 0")
    lines.append(f"btime {int(phone.clock.epoch_s() - phone.clock.uptime_s())}")
    return "\n".join(lines) + "\n"


def proc_status(phone: Phone, p: SimProc) -> str:
    """/proc/<pid>/status (VmRSS/VmHWM follow the emulated benchmark_model's memory)."""
    state = {"R": "R (running)", "S": "S (sleeping)", "D": "D (disk sleep)"}.get(
        p.state, "S (sleeping)")
    return (f"Name:\t{p.name[:15]}\nUmask:\t0000\nState:\t{state}\nTgid:\t{p.pid}\n"
            f"Ngid:\t0\nPid:\t{p.pid}\nPPid:\t{p.ppid}\nTracerPid:\t0\n"
            f"Uid:\t{p.uid}\t{p.uid}\t{p.uid}\t{p.uid}\nGid:\t{p.uid}\t{p.uid}\t{p.uid}\t"
            f"{p.uid}\nFDSize:\t64\nGroups:\t1004 1007 1011 1015 1028 3001 3002 3003 3006\n"
            f"VmPeak:\t{p.vsz_kb + 4096:8d} kB\nVmSize:\t{p.vsz_kb:8d} kB\nVmLck:\t       0 kB\n"
            f"VmPin:\t       0 kB\nVmHWM:\t{max(p.hwm_kb, p.rss_kb):8d} kB\n"
            f"VmRSS:\t{p.rss_kb:8d} kB\nRssAnon:\t{p.rss_kb * 6 // 10:8d} kB\n"
            f"RssFile:\t{p.rss_kb * 4 // 10:8d} kB\nRssShmem:\t       0 kB\n"
            f"VmData:\t{p.rss_kb * 2:8d} kB\nVmStk:\t     132 kB\nVmExe:\t     400 kB\n"
            f"VmLib:\t    3360 kB\nVmPTE:\t      84 kB\nVmSwap:\t       0 kB\n"
            f"Threads:\t{p.threads}\nSigQ:\t0/29841\nSigPnd:\t0000000000000000\n"
            f"Cpus_allowed:\t{p.affinity:x}\n"
            f"Cpus_allowed_list:\t{_cpu_list(p.affinity)}\n"
            f"voluntary_ctxt_switches:\t12\nnonvoluntary_ctxt_switches:\t3\n")


def _cpu_list(mask: int) -> str:
    cpus = [i for i in range(64) if mask >> i & 1]
    ranges: list[str] = []
    start = prev = None
    for c in cpus:
        if start is None:
            start = prev = c
        elif prev is not None and c == prev + 1:
            prev = c
        else:
            ranges.append(f"{start}-{prev}" if start != prev else f"{start}")
            start = prev = c
    if start is not None:
        ranges.append(f"{start}-{prev}" if start != prev else f"{start}")
    return ",".join(ranges)


def proc_stat(phone: Phone, p: SimProc) -> str:
    """/proc/<pid>/stat."""
    start = int(p.start_uptime_s * 100)
    return (f"{p.pid} ({p.name[:15]}) {p.state} {p.ppid} {p.pid} 0 0 -1 4194560 100 0 0 0 "
            f"10 5 0 0 20 0 {p.threads} 0 {start} {p.vsz_kb * 1024} {p.rss_kb // 4} "
            f"18446744073709551615 1 1 0 0 0 0 0 4612 1073775864 0 0 0 17 0 0 0 0 0 0\n")


# -------------------------------------------------------------------------------------------
# executing files


def exec_file(ctx: Ctx, path: str) -> int:
    """Run the file at `path` (already found): an applet, benchmark_model, or a script."""
    from farm.sim import benchmark

    fs = ctx.phone.fs
    try:
        r = fs.resolve(path, ctx.cwd)
        s = fs.stat_resolved(r)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            raise exec_error("not found", 127) from None
        raise exec_error(f"can't execute: {_err_text(e)}", 126) from None
    if s.is_dir:
        raise exec_error("can't execute: Is a directory", 126)
    if not fs.access(path, "x", ctx.cwd):
        raise exec_error("can't execute: Permission denied", 126)
    node = r.node
    if isinstance(node, VFile) and node.applet:
        name = posixpath.basename(ctx.argv[0])
        if node.applet == "toybox":
            if name == "toybox":
                return t_toybox(ctx)
            fn = APPLETS_TOYBOX.get(name)
            if fn is None:
                ctx.err(f"toybox: Unknown command {name}\n")
                return 1
            return fn(ctx)
        tool = APPLETS_ANDROID.get(node.applet)
        if tool is None:
            ctx.err(f"{node.applet}: not available on this simulated phone\n")
            return 1
        return tool(ctx)
    try:
        data = fs.read_bytes(path, ctx.cwd)
    except OSError as e:
        raise exec_error(f"can't execute: {_err_text(e)}", 126) from None
    info = benchmark.elf_info(data)
    if info is not None:
        bits, machine = info
        abi = benchmark.ABI_OF_MACHINE.get(machine)
        if abi is None or abi not in ctx.phone.profile.abis:
            raise exec_error(f"not executable: {bits}-bit ELF file", 126)
        if benchmark.is_benchmark_binary(data):
            return benchmark.run_benchmark_model(ctx, abi)
        ctx.err(f'CANNOT LINK EXECUTABLE "{ctx.argv[0]}": this simulated phone only emulates '
                f"benchmark_model\n")
        return 1
    if data.startswith(b"\x7fELF"):
        raise exec_error("not executable: corrupt ELF file", 126)
    # not ELF: the kernel says ENOEXEC and mksh runs it as a script
    from farm.sim.shell import Shell

    state = ShellState(dict(ctx.env), set(ctx.env), ctx.cwd, 0, list(ctx.argv[1:]), None,
                       ctx.proc.affinity, ctx.shell.state.umask)
    sub = Shell(ctx.phone, ctx.proc, Streams(ctx.stdin, ctx.stdout, ctx.stderr), state,
                tty=ctx.shell.tty, name=ctx.argv[0])
    return sub.run_script(data.decode(errors="replace"))


APPLET_NAMES: tuple[str, ...] = tuple(sorted(APPLETS_TOYBOX))
ANDROID_TOOL_NAMES: tuple[str, ...] = tuple(sorted(APPLETS_ANDROID))
