"""A simulated phone's filesystem, as the adb `shell` user (uid 2000) sees it.

Does file I/O: writable areas (/data/local/tmp and the emulated /sdcard) live on the host disk
under the phone's own root directory; everything else is a virtual tree: read-only /system,
/vendor and rootfs (EROFS), /dev/null and friends, and synthetic /proc and /sys whose contents
come from the phone's state at read time. Permissions follow Android: /data is not listable,
/sdcard is noexec and refuses chmod, /proc and /sys refuse writes, and /data has a quota from
the profile (ENOSPC, also forced by the storage_full fault). Errors are `OSError`s with the
errno and strerror the phone's libc gives.
"""

from __future__ import annotations

import errno
import fnmatch
import io
import os
import posixpath
import stat as st
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO, cast

if TYPE_CHECKING:
    from farm.sim.phone import Phone
    from farm.sim.profiles import ClusterSpec
    from farm.sim.shell import SimProc

SHELL_UID = 2000
SHELL_GID = 2000
AID_SYSTEM = 1000
AID_SDCARD_RW = 1015
AID_EVERYBODY = 9997
# groups of the adb shell user (`id` on a phone)
SHELL_GROUPS: tuple[int, ...] = (2000, 1004, 1007, 1011, 1015, 1028, 1078, 1079, 3001, 3002,
                                 3003, 3006, 3009, 3011, 9997)
USER_NAMES: dict[int, str] = {
    0: "root", 1000: "system", 1004: "input", 1007: "log", 1011: "adb", 1015: "sdcard_rw",
    1023: "media_rw", 1028: "sdcard_r", 1036: "logd", 1041: "audioserver", 1047: "cameraserver",
    1068: "secure_element", 1078: "ext_data_rw", 1079: "ext_obb_rw", 2000: "shell",
    3001: "net_bt_admin", 3002: "net_bt", 3003: "inet", 3006: "net_bw_stats", 3009: "readproc",
    3011: "uhid", 9997: "everybody", 10123: "u0_a123", 10087: "u0_a87",
}
FIXED_MTIME = 1230768000.0  # 2009-01-01 00:00 UTC: what /system files show on Android


def name_of(uid: int) -> str:
    """The Android name of a uid/gid (numeric if unknown)."""
    return USER_NAMES.get(uid, str(uid))


def fs_error(code: int, path: str) -> OSError:
    """An OSError with the libc message for `code` (bionic and glibc agree on these)."""
    return OSError(code, os.strerror(code), path)


@dataclass(frozen=True, slots=True)
class SimStat:
    """What stat(2) reports for a simulated path."""

    mode: int  # type and permission bits
    size: int
    mtime: float
    uid: int
    gid: int
    nlink: int = 1
    ino: int = 0
    dev: int = 0
    rdev: tuple[int, int] | None = None  # (major, minor) for device nodes

    @property
    def is_dir(self) -> bool:
        """A directory."""
        return st.S_ISDIR(self.mode)

    @property
    def is_file(self) -> bool:
        """A regular file."""
        return st.S_ISREG(self.mode)

    @property
    def is_link(self) -> bool:
        """A symbolic link (lstat only)."""
        return st.S_ISLNK(self.mode)


@dataclass(frozen=True, slots=True)
class FsUsage:
    """One `df` row."""

    filesystem: str
    mount: str
    total_kb: int
    used_kb: int
    avail_kb: int


# -------------------------------------------------------------------------------------------
# virtual nodes


@dataclass(eq=False)
class VNode:
    """Base of virtual (non-disk) nodes."""

    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    mtime: float | Callable[[], float] = FIXED_MTIME

    def mtime_s(self) -> float:
        """Modification time (some files, e.g. in /proc, show 'now')."""
        return self.mtime() if callable(self.mtime) else self.mtime


@dataclass(eq=False)
class VDir(VNode):
    """A virtual directory, static or generated."""

    children: dict[str, VNode] = field(default_factory=dict)
    generate: Callable[[], dict[str, VNode]] | None = None
    rofs: bool = True  # creating an entry here: EROFS (rootfs, /system) or EACCES (proc/sys)

    def entries(self) -> dict[str, VNode]:
        """Children, generated ones included."""
        if self.generate is None:
            return self.children
        out = dict(self.children)
        out.update(self.generate())
        return out

    def get(self, name: str) -> VNode | None:
        """One child or None."""
        return self.entries().get(name)


@dataclass(eq=False)
class VFile(VNode):
    """A virtual file: static bytes or generated at read time; may accept writes."""

    mode: int = 0o444
    content: bytes | Callable[[], bytes] = b""
    on_write: Callable[[bytes], None] | None = None
    applet: str = ""  # for /system/bin executables: the implementation to run
    size_hint: int | None = None  # what stat shows (procfs and sysfs show 0 or 4096)
    char_dev: tuple[int, int] | None = None

    def read(self) -> bytes:
        """The file's bytes now."""
        return self.content() if callable(self.content) else self.content


@dataclass(eq=False)
class VLink(VNode):
    """A symbolic link."""

    mode: int = 0o777
    target: str | Callable[[], str] = "/"

    def target_path(self) -> str:
        """The link text."""
        return self.target() if callable(self.target) else self.target


@dataclass(eq=False)
class Mount(VNode):
    """Where a host directory is mounted: `kind` 'data' (/data/local/tmp) or 'sdcard'."""

    host: Path = Path("/nonexistent")
    kind: str = "data"


@dataclass(frozen=True, slots=True)
class Resolved:
    """A resolved path: a virtual node, or a host path inside a mount."""

    path: str  # canonical simulated path
    node: VNode | None  # None for disk entries
    mount: Mount | None = None
    host: Path | None = None  # for disk entries (may not exist yet)

    @property
    def on_disk(self) -> bool:
        """Backed by the host disk."""
        return self.mount is not None


# -------------------------------------------------------------------------------------------


class _QuotaWriter(io.RawIOBase):
    """A host file opened for writing whose bytes count against the phone's /data quota."""

    def __init__(self, fs: SimFS, f: IO[bytes], path: str, start_size: int) -> None:
        super().__init__()
        self._fs = fs
        self._f = f
        self.path = path
        self._pos_end = start_size

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        data = bytes(b)
        if not data:
            return 0
        self._fs.reserve(len(data), self.path)
        try:
            self._f.write(data)
        except OSError:
            self._fs.release(len(data))
            raise
        return len(data)

    def flush(self) -> None:
        if not self._f.closed:
            self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()
        super().close()


class _NullWriter(io.RawIOBase):
    """/dev/null, or a virtual file's write hook."""

    def __init__(self, sink: Callable[[bytes], None] | None = None) -> None:
        super().__init__()
        self._sink = sink

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if self._sink is not None:
            self._sink(bytes(b))
        return len(b)


class SimFS:
    """The phone's namespace. Thread-safe; paths are simulated absolute or cwd-relative."""

    def __init__(self, host_root: Path, *, quota_bytes: int, total_bytes: int,
                 now: Callable[[], float], storage_full: Callable[[], bool],
                 data_fs: str = "/dev/block/dm-46") -> None:
        self.host_root = host_root
        self.quota_bytes = quota_bytes
        self.total_bytes = total_bytes
        self._now = now
        self._storage_full = storage_full
        self.data_fs = data_fs
        self._lock = threading.RLock()
        # Android ownership and permission bits of disk entries: sim path -> (mode, uid, gid)
        self._meta: dict[str, tuple[int, int, int]] = {}
        tmp_host = host_root / "data_local_tmp"
        sd_host = host_root / "sdcard"
        tmp_host.mkdir(parents=True, exist_ok=True)
        sd_host.mkdir(parents=True, exist_ok=True)
        for sub in ("Download", "DCIM", "Android", "Music", "Pictures", "Documents"):
            (sd_host / sub).mkdir(exist_ok=True)
        self.tmp_mount = Mount(mode=0o771, uid=SHELL_UID, gid=SHELL_GID, host=tmp_host,
                               kind="data", mtime=now)
        self.sd_mount = Mount(mode=0o770, uid=SHELL_UID, gid=AID_EVERYBODY, host=sd_host,
                              kind="sdcard", mtime=now)
        self.root = VDir(mode=0o755)
        self._used = self._disk_usage()

    # -- construction helpers ----------------------------------------------------------------

    def add(self, path: str, node: VNode) -> VNode:
        """Place a virtual node at an absolute path (parents are created as plain dirs)."""
        parts = [p for p in path.split("/") if p]
        d = self.root
        for name in parts[:-1]:
            child = d.children.get(name)
            if child is None:
                child = VDir(mode=0o755)
                d.children[name] = child
            if not isinstance(child, VDir):
                raise ValueError(f"{path}: {name} is not a directory")
            d = child
        d.children[parts[-1]] = node
        return node

    # -- path resolution ---------------------------------------------------------------------

    @staticmethod
    def abspath(path: str, cwd: str = "/") -> str:
        """Absolute, normalized (lexically) simulated path."""
        if not path.startswith("/"):
            path = posixpath.join(cwd, path)
        norm = posixpath.normpath(path)
        return "/" if norm in ("//", "/.") else norm.replace("//", "/")

    def resolve(self, path: str, cwd: str = "/", *, follow: bool = True,
                _depth: int = 0) -> Resolved:
        """Walk the path as the kernel does (search permission, symlinks); raise OSError."""
        if _depth > 16:
            raise fs_error(errno.ELOOP, path)
        if path == "":
            raise fs_error(errno.ENOENT, path)
        full = path if path.startswith("/") else posixpath.join(cwd, path)
        parts = [p for p in full.split("/") if p and p != "."]
        node: VNode = self.root
        cur = "/"
        i = 0
        while i < len(parts):
            name = parts[i]
            last = i == len(parts) - 1
            if name == "..":
                cur = posixpath.dirname(cur) or "/"
                return self.resolve("/".join([cur] + parts[i + 1:]) or "/", follow=follow,
                                    _depth=_depth + 1)
            if isinstance(node, Mount):
                rel = [p for p in parts[i:]]
                if ".." in rel:
                    # lexical normalisation is fine inside a mount (no symlinks on disk)
                    joined = posixpath.normpath("/".join(rel))
                    rel = [p for p in joined.split("/") if p and p != "."]
                    if rel and rel[0] == "..":
                        up = posixpath.dirname(cur) or "/"
                        return self.resolve("/".join([up] + rel[1:]) or "/", follow=follow,
                                            _depth=_depth + 1)
                return self._resolve_disk(node, cur, rel)
            if isinstance(node, VFile):
                raise fs_error(errno.ENOTDIR, full)
            if not isinstance(node, VDir):
                raise fs_error(errno.ENOTDIR, full)
            if not self._allowed(node.mode, node.uid, node.gid, 1):
                raise fs_error(errno.EACCES, full)
            child = node.get(name)
            if child is None:
                raise fs_error(errno.ENOENT, full)
            child_path = posixpath.join(cur, name)
            if isinstance(child, VLink) and (follow or not last):
                target = child.target_path()
                if not target.startswith("/"):
                    target = posixpath.join(cur, target)
                rest = parts[i + 1:]
                return self.resolve("/".join([target.rstrip("/")] + rest) or "/", follow=follow,
                                    _depth=_depth + 1)
            node = child
            cur = child_path
            i += 1
        if isinstance(node, Mount):
            return self._resolve_disk(node, cur, [])
        return Resolved(path=cur, node=node)

    def _resolve_disk(self, mount: Mount, mount_path: str, rel: list[str]) -> Resolved:
        host = mount.host
        cur = mount_path
        for j, name in enumerate(rel):
            parent_is_dir = host.is_dir()
            if not parent_is_dir:
                if host.exists():
                    raise fs_error(errno.ENOTDIR, posixpath.join(cur, *rel[j:]))
                raise fs_error(errno.ENOENT, posixpath.join(cur, *rel[j:]))
            mode, uid, gid = self._disk_meta(mount, cur, True)
            if not self._allowed(mode, uid, gid, 1):
                raise fs_error(errno.EACCES, posixpath.join(cur, *rel[j:]))
            host = host / name
            cur = posixpath.join(cur, name)
        return Resolved(path=cur, node=None, mount=mount, host=host)

    def _mount_of(self, path: str) -> Mount | None:
        try:
            r = self.resolve(path)
        except OSError:
            return None
        return r.mount

    # -- permissions -------------------------------------------------------------------------

    @staticmethod
    def _allowed(mode: int, uid: int, gid: int, want: int) -> bool:
        if uid == SHELL_UID:
            bits = (mode >> 6) & 7
        elif gid in SHELL_GROUPS:
            bits = (mode >> 3) & 7
        else:
            bits = mode & 7
        return bits & want == want

    def _disk_meta(self, mount: Mount, path: str, is_dir: bool) -> tuple[int, int, int]:
        with self._lock:
            m = self._meta.get(path)
        if m is not None:
            return m
        if path == self._mount_path(mount):
            return (mount.mode, mount.uid, mount.gid)
        if mount.kind == "sdcard":
            return (0o770 if is_dir else 0o660, SHELL_UID, AID_EVERYBODY)
        return (0o777 if is_dir else 0o666, SHELL_UID, SHELL_GID)

    def _mount_path(self, mount: Mount) -> str:
        return "/data/local/tmp" if mount is self.tmp_mount else "/storage/emulated/0"

    # -- queries -----------------------------------------------------------------------------

    def stat(self, path: str, cwd: str = "/", *, follow: bool = True) -> SimStat:
        """stat(2) (or lstat(2) with follow=False)."""
        r = self.resolve(path, cwd, follow=follow)
        return self.stat_resolved(r)

    def stat_resolved(self, r: Resolved) -> SimStat:
        """stat of a resolved path."""
        ino = (hash(r.path) & 0xFFFFFF) + 2
        if r.on_disk:
            assert r.host is not None and r.mount is not None
            try:
                hs = os.lstat(r.host)
            except FileNotFoundError:
                raise fs_error(errno.ENOENT, r.path) from None
            except NotADirectoryError:
                raise fs_error(errno.ENOTDIR, r.path) from None
            is_dir = st.S_ISDIR(hs.st_mode)
            mode, uid, gid = self._disk_meta(r.mount, r.path, is_dir)
            kind = st.S_IFDIR if is_dir else st.S_IFREG
            size = 3452 if is_dir else hs.st_size
            return SimStat(mode=kind | mode, size=size, mtime=hs.st_mtime, uid=uid, gid=gid,
                           nlink=2 if is_dir else 1, ino=hs.st_ino & 0xFFFFFFFF, dev=0xFD2E)
        node = r.node
        assert node is not None
        if isinstance(node, Mount):  # pragma: no cover - resolve() turns mounts into disk refs
            raise fs_error(errno.EIO, r.path)
        if isinstance(node, VDir):
            return SimStat(mode=st.S_IFDIR | node.mode, size=0 if r.path.startswith(("/proc",
                           "/sys")) else 4096, mtime=node.mtime_s(), uid=node.uid,
                           gid=node.gid, nlink=2, ino=ino, dev=0xFD00)
        if isinstance(node, VLink):
            target = node.target_path()
            return SimStat(mode=st.S_IFLNK | 0o777, size=len(target), mtime=node.mtime_s(),
                           uid=node.uid, gid=node.gid, ino=ino, dev=0xFD00)
        assert isinstance(node, VFile)
        if node.char_dev is not None:
            return SimStat(mode=st.S_IFCHR | node.mode, size=0, mtime=node.mtime_s(),
                           uid=node.uid, gid=node.gid, ino=ino, dev=0x11, rdev=node.char_dev)
        if node.size_hint is not None:
            size = node.size_hint
        else:
            size = len(node.read())
        return SimStat(mode=st.S_IFREG | node.mode, size=size, mtime=node.mtime_s(),
                       uid=node.uid, gid=node.gid, ino=ino, dev=0xFD00)

    def exists(self, path: str, cwd: str = "/") -> bool:
        """Whether stat succeeds."""
        try:
            self.stat(path, cwd)
        except OSError:
            return False
        return True

    def access(self, path: str, want: str, cwd: str = "/") -> bool:
        """access(2) for 'r', 'w' or 'x' (noexec and read-only mounts included)."""
        try:
            r = self.resolve(path, cwd)
            s = self.stat_resolved(r)
        except OSError:
            return False
        bit = {"r": 4, "w": 2, "x": 1}[want]
        if want == "w" and not r.on_disk and not (isinstance(r.node, VFile)
                                                  and r.node.on_write is not None):
            return False
        if want == "x" and r.mount is not None and r.mount.kind == "sdcard":
            return False
        return self._allowed(s.mode, s.uid, s.gid, bit)

    def listdir(self, path: str, cwd: str = "/") -> list[str]:
        """Names in a directory (no . or ..), unsorted."""
        r = self.resolve(path, cwd)
        s = self.stat_resolved(r)
        if not s.is_dir:
            raise fs_error(errno.ENOTDIR, r.path)
        if not self._allowed(s.mode, s.uid, s.gid, 4):
            raise fs_error(errno.EACCES, r.path)
        if r.on_disk:
            assert r.host is not None
            return os.listdir(r.host)
        assert isinstance(r.node, VDir)
        return list(r.node.entries())

    def readlink(self, path: str, cwd: str = "/") -> str:
        """The target of a symbolic link."""
        r = self.resolve(path, cwd, follow=False)
        if not isinstance(r.node, VLink):
            raise fs_error(errno.EINVAL, r.path)
        return r.node.target_path()

    def realpath(self, path: str, cwd: str = "/") -> str:
        """Canonical path with every symlink resolved."""
        return self.resolve(path, cwd).path

    # -- reading -----------------------------------------------------------------------------

    def open_read(self, path: str, cwd: str = "/") -> BinaryIO:
        """Open for reading, with permission checks."""
        r = self.resolve(path, cwd)
        s = self.stat_resolved(r)
        if s.is_dir:
            raise fs_error(errno.EISDIR, r.path)
        if not self._allowed(s.mode, s.uid, s.gid, 4):
            raise fs_error(errno.EACCES, r.path)
        if r.on_disk:
            assert r.host is not None
            return open(r.host, "rb")  # noqa: SIM115 - the caller closes it
        assert isinstance(r.node, VFile)
        if r.node.char_dev == (1, 3):  # /dev/null
            return io.BytesIO(b"")
        return io.BytesIO(r.node.read())

    def read_bytes(self, path: str, cwd: str = "/") -> bytes:
        """Whole file."""
        with self.open_read(path, cwd) as f:
            return f.read()

    # -- writing -----------------------------------------------------------------------------

    def _check_create(self, path: str, cwd: str) -> tuple[Resolved, Resolved]:
        """Resolve the parent of a new entry and check we may create in it."""
        full = self.abspath(path, cwd)
        parent_path, name = posixpath.split(full)
        if not name:
            raise fs_error(errno.EISDIR, full)
        parent = self.resolve(parent_path)
        ps = self.stat_resolved(parent)
        if not ps.is_dir:
            raise fs_error(errno.ENOTDIR, full)
        target = (Resolved(path=posixpath.join(parent.path, name), node=None,
                           mount=parent.mount, host=parent.host / name)
                  if parent.on_disk and parent.host is not None else
                  Resolved(path=posixpath.join(parent.path, name), node=None))
        if not parent.on_disk:
            d = parent.node
            if isinstance(d, VDir) and d.rofs:
                raise fs_error(errno.EROFS, full)
            raise fs_error(errno.EACCES, full)
        if not self._allowed(ps.mode, ps.uid, ps.gid, 2):
            raise fs_error(errno.EACCES, full)
        return parent, target

    def open_write(self, path: str, cwd: str = "/", *, append: bool = False,
                   create_mode: int = 0o666, truncate: bool = True) -> BinaryIO:
        """Open for writing (creating with `create_mode`); writes count against the quota."""
        try:
            r = self.resolve(path, cwd)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise
            _, r = self._check_create(path, cwd)
            return self._create(r, create_mode, append)
        if not r.on_disk:
            node = r.node
            if isinstance(node, VDir):
                raise fs_error(errno.EISDIR, r.path)
            if isinstance(node, VFile):
                if node.char_dev is not None or node.on_write is not None:
                    if not self._allowed(node.mode, node.uid, node.gid, 2):
                        raise fs_error(errno.EACCES, r.path)
                    return cast(BinaryIO, _NullWriter(node.on_write))
                if r.path.startswith(("/proc", "/sys")):
                    raise fs_error(errno.EACCES, r.path)
            raise fs_error(errno.EROFS, r.path)
        assert r.host is not None and r.mount is not None
        if not r.host.exists():
            self._check_create(r.path, "/")
            return self._create(r, create_mode, append)
        s = self.stat_resolved(r)
        if s.is_dir:
            raise fs_error(errno.EISDIR, r.path)
        if not self._allowed(s.mode, s.uid, s.gid, 2):
            raise fs_error(errno.EACCES, r.path)
        if truncate and not append:
            self.release(s.size)
            f = open(r.host, "wb")  # noqa: SIM115
            start = 0
        else:
            f = open(r.host, "ab")  # noqa: SIM115
            start = s.size
        return cast(BinaryIO, _QuotaWriter(self, f, r.path, start))

    def _create(self, r: Resolved, create_mode: int, append: bool) -> BinaryIO:
        assert r.host is not None and r.mount is not None
        f = open(r.host, "ab" if append else "wb")  # noqa: SIM115
        self._set_meta_new(r, create_mode & 0o7777, is_dir=False)
        try:
            os.utime(r.host, (self._now(), self._now()))
        except OSError:
            pass
        return cast(BinaryIO, _QuotaWriter(self, f, r.path, 0))

    def _set_meta_new(self, r: Resolved, mode: int, *, is_dir: bool) -> None:
        assert r.mount is not None
        with self._lock:
            if r.mount.kind == "sdcard":
                self._meta[r.path] = (0o770 if is_dir else 0o660, SHELL_UID, AID_EVERYBODY)
            else:
                self._meta[r.path] = (mode, SHELL_UID, SHELL_GID)

    def touch_mtime(self, path: str, cwd: str = "/", mtime: float | None = None) -> None:
        """Set a disk entry's mtime (default: the phone's now)."""
        r = self.resolve(path, cwd)
        if not r.on_disk:
            raise fs_error(errno.EROFS, r.path)
        assert r.host is not None
        t = self._now() if mtime is None else mtime
        os.utime(r.host, (t, t))

    def mkdir(self, path: str, cwd: str = "/", mode: int = 0o777) -> None:
        """mkdir(2)."""
        full = self.abspath(path, cwd)
        try:
            self.stat(full, follow=False)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise
        else:
            raise fs_error(errno.EEXIST, full)
        _, r = self._check_create(full, "/")
        assert r.host is not None
        self.reserve(0, full)
        r.host.mkdir()
        self._set_meta_new(r, mode & 0o7777, is_dir=True)
        os.utime(r.host, (self._now(), self._now()))

    def makedirs(self, path: str, cwd: str = "/", mode: int = 0o777) -> None:
        """mkdir -p."""
        full = self.abspath(path, cwd)
        cur = ""
        for name in [p for p in full.split("/") if p]:
            cur = f"{cur}/{name}"
            try:
                s = self.stat(cur)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise
                self.mkdir(cur, mode=mode)
                continue
            if not s.is_dir:
                raise fs_error(errno.ENOTDIR, cur)

    def _check_remove(self, path: str, cwd: str) -> Resolved:
        full = self.abspath(path, cwd)
        r = self.resolve(full, follow=False)
        parent = self.resolve(posixpath.dirname(r.path) or "/")
        is_mount_point = r.mount is not None and r.path == self._mount_path(r.mount)
        if not r.on_disk or is_mount_point:
            if is_mount_point:
                raise fs_error(errno.EBUSY, full)
            d = parent.node
            if isinstance(d, VDir) and d.rofs:
                raise fs_error(errno.EROFS, full)
            raise fs_error(errno.EACCES, full)
        ps = self.stat_resolved(parent)
        if not self._allowed(ps.mode, ps.uid, ps.gid, 3):
            raise fs_error(errno.EACCES, full)
        return r

    def unlink(self, path: str, cwd: str = "/") -> None:
        """unlink(2)."""
        r = self._check_remove(path, cwd)
        assert r.host is not None
        if not r.host.exists():
            raise fs_error(errno.ENOENT, r.path)
        if r.host.is_dir():
            raise fs_error(errno.EISDIR, r.path)
        size = r.host.stat().st_size
        r.host.unlink()
        self.release(size)
        self._forget(r.path)

    def rmdir(self, path: str, cwd: str = "/") -> None:
        """rmdir(2)."""
        r = self._check_remove(path, cwd)
        assert r.host is not None
        if not r.host.exists():
            raise fs_error(errno.ENOENT, r.path)
        if not r.host.is_dir():
            raise fs_error(errno.ENOTDIR, r.path)
        if any(r.host.iterdir()):
            raise fs_error(errno.ENOTEMPTY, r.path)
        r.host.rmdir()
        self._forget(r.path)

    def rename(self, src: str, dst: str, cwd: str = "/") -> None:
        """rename(2) within the writable disk areas."""
        rs = self._check_remove(src, cwd)
        try:
            rd = self.resolve(dst, cwd)
            if rd.on_disk and rd.host is not None and rd.host.is_dir():
                dst = posixpath.join(rd.path, posixpath.basename(rs.path))
        except OSError:
            pass
        _, rt = self._check_create(dst, cwd)
        assert rs.host is not None and rt.host is not None
        if not rs.host.exists():
            raise fs_error(errno.ENOENT, rs.path)
        if rs.mount is not rt.mount:
            raise fs_error(errno.EXDEV, rt.path)
        if rt.host.exists() and not rt.host.is_dir():
            self.release(rt.host.stat().st_size)
        os.replace(rs.host, rt.host)
        with self._lock:
            moved = {k: v for k, v in self._meta.items()
                     if k == rs.path or k.startswith(rs.path + "/")}
            for k, v in moved.items():
                del self._meta[k]
                self._meta[rt.path + k[len(rs.path):]] = v

    def _forget(self, path: str) -> None:
        with self._lock:
            for k in [k for k in self._meta if k == path or k.startswith(path + "/")]:
                del self._meta[k]

    def chmod(self, path: str, mode: int, cwd: str = "/") -> None:
        """chmod(2): only the owner, never on /sdcard, never on read-only trees."""
        r = self.resolve(path, cwd)
        s = self.stat_resolved(r)
        if not r.on_disk:
            if s.uid == SHELL_UID:
                raise fs_error(errno.EROFS, r.path)
            if r.path.startswith(("/proc", "/sys", "/dev")):
                raise fs_error(errno.EPERM, r.path)
            raise fs_error(errno.EROFS, r.path)
        assert r.mount is not None
        if r.mount.kind == "sdcard" or s.uid != SHELL_UID:
            raise fs_error(errno.EPERM, r.path)
        with self._lock:
            self._meta[r.path] = (mode & 0o7777, s.uid, s.gid)

    def set_mode(self, path: str, mode: int) -> None:
        """Record permission bits for a disk entry (used by sync pushes, as adbd's chmod)."""
        r = self.resolve(path)
        if r.on_disk and r.mount is not None and r.mount.kind != "sdcard":
            s = self.stat_resolved(r)
            with self._lock:
                self._meta[r.path] = (mode & 0o7777, s.uid, s.gid)

    # -- quota -------------------------------------------------------------------------------

    def _disk_usage(self) -> int:
        total = 0
        for mount in (self.tmp_mount, self.sd_mount):
            for dirpath, _dirs, files in os.walk(mount.host):
                for name in files:
                    try:
                        total += os.lstat(os.path.join(dirpath, name)).st_size
                    except OSError:
                        pass
        return total

    def recount(self) -> None:
        """Recompute the bytes used by the writable areas (after bulk removals)."""
        used = self._disk_usage()
        with self._lock:
            self._used = used

    def reserve(self, nbytes: int, path: str) -> None:
        """Claim space for a write, or raise ENOSPC."""
        with self._lock:
            if self._storage_full() or self._used + nbytes > self.quota_bytes:
                if nbytes > 0 or self._storage_full():
                    raise fs_error(errno.ENOSPC, path)
            self._used += nbytes

    def release(self, nbytes: int) -> None:
        """Give space back (unlink, truncate)."""
        with self._lock:
            self._used = max(0, self._used - nbytes)

    def data_usage(self) -> FsUsage:
        """The /data partition as `df` reports it."""
        with self._lock:
            used_extra = self._used
        total_kb = self.total_bytes // 1024
        if self._storage_full():
            avail_kb = 0
        else:
            avail_kb = max(0, (self.quota_bytes - used_extra) // 1024)
        used_kb = total_kb - avail_kb - min(total_kb // 100, 50 * 1024)  # reserved blocks
        return FsUsage(self.data_fs, "/data", total_kb, max(0, used_kb), avail_kb)

    def usage_for(self, path: str, cwd: str = "/") -> FsUsage:
        """The `df` row of the filesystem holding `path`."""
        r = self.resolve(path, cwd)
        if r.on_disk:
            u = self.data_usage()
            if r.mount is self.sd_mount:
                return FsUsage("/dev/fuse", "/storage/emulated", u.total_kb, u.used_kb,
                               u.avail_kb)
            return u
        for row in self.mount_table():
            if row.mount != "/" and (r.path == row.mount or r.path.startswith(row.mount + "/")):
                return row
        return self.mount_table()[0]

    def mount_table(self) -> list[FsUsage]:
        """What plain `df` lists."""
        data = self.data_usage()
        return [
            FsUsage("/dev/block/dm-0", "/", 4_194_304 // 4, 4_165_120 // 4, 0),
            FsUsage("tmpfs", "/dev", 3_772_836, 1_576, 3_771_260),
            FsUsage("tmpfs", "/mnt", 3_772_836, 0, 3_772_836),
            FsUsage("/dev/block/dm-1", "/system", 2_539_512, 2_530_000, 0),
            FsUsage("/dev/block/dm-3", "/vendor", 1_048_576, 1_040_000, 0),
            data,
            FsUsage("/dev/fuse", "/storage/emulated", data.total_kb, data.used_kb, data.avail_kb),
        ]

    # -- globbing ----------------------------------------------------------------------------

    def glob(self, pattern: str, cwd: str = "/") -> list[str]:
        """Expand a shell pattern (sorted); [] if nothing matches."""
        absolute = pattern.startswith("/")
        parts = [p for p in pattern.split("/") if p]
        results = [("/" if absolute else "", "/" if absolute else cwd)]
        for i, part in enumerate(parts):
            nxt: list[tuple[str, str]] = []
            last = i == len(parts) - 1
            for shown, real in results:
                if any(c in part for c in "*?["):
                    try:
                        names = self.listdir(real)
                    except OSError:
                        continue
                    for n in sorted(names):
                        if n.startswith(".") and not part.startswith("."):
                            continue
                        if fnmatch.fnmatchcase(n, part):
                            cand = (shown + n if shown.endswith("/") or not shown
                                    else shown + "/" + n)
                            nxt.append((cand, posixpath.join(real, n)))
                else:
                    cand = shown + part if shown.endswith("/") or not shown else (
                        shown + "/" + part)
                    nxt.append((cand, posixpath.join(real, part)))
            results = nxt
            if not last:
                results = [(s, r) for s, r in results if self._is_dir(r)]
        return sorted(s for s, r in results if self.exists(r, "/") or self._is_link(r))

    def _is_dir(self, path: str) -> bool:
        try:
            return self.stat(path).is_dir
        except OSError:
            return False

    def _is_link(self, path: str) -> bool:
        try:
            return self.stat(path, follow=False).is_link
        except OSError:
            return False

    def walk(self, path: str, cwd: str = "/") -> Iterator[tuple[str, SimStat]]:
        """Depth-first (pre-order) walk of a tree without following symlinks."""
        full = self.abspath(path, cwd)
        s = self.stat(full, follow=False)
        yield full, s
        if s.is_dir:
            try:
                names = sorted(self.listdir(full))
            except OSError:
                return
            for n in names:
                yield from self.walk(posixpath.join(full, n))

    def host_path(self, path: str, cwd: str = "/") -> Path | None:
        """The host file behind a simulated path, if it is on disk."""
        try:
            r = self.resolve(path, cwd)
        except OSError:
            return None
        return r.host if r.on_disk else None


# -------------------------------------------------------------------------------------------
# the standard Android tree, /proc and /sys


TOYBOX_APPLETS: tuple[str, ...] = (
    "basename", "cat", "chmod", "chown", "cmp", "cp", "cut", "date", "dd", "df", "dirname",
    "du", "echo", "env", "expr", "false", "find", "free", "getprop", "grep", "head", "hostname",
    "id", "kill", "ln", "ls", "md5sum", "mkdir", "mv", "nohup", "nproc", "printenv", "printf",
    "ps", "pwd", "readlink", "realpath", "rm", "rmdir", "sed", "seq", "setprop", "setsid",
    "sha1sum", "sha256sum", "sleep", "sort", "stat", "tail", "taskset", "tee", "test", "time",
    "timeout", "top", "touch", "tr", "true", "uname", "uniq", "uptime", "wc", "which", "whoami",
    "xargs", "yes", "egrep", "fgrep", "killall", "pidof", "pgrep", "sha512sum", "base64",
    "start", "stop", "clear", "file", "[",
)
ANDROID_TOOLS: tuple[str, ...] = ("sh", "dumpsys", "logcat", "cmd", "service", "am", "pm",
                                  "settings", "input", "wm", "log", "app_process",
                                  "linker", "linker64", "toolbox", "reboot", "screencap")


def build_tree(fs: SimFS, phone: Phone) -> None:
    """Populate the standard Android directory layout, /dev, /system/bin, /proc and /sys."""
    prof = phone.profile
    root = fs.root
    root.mode = 0o755
    for name in ("acct", "config", "mnt", "odm", "oem", "product", "system_ext", "metadata",
                 "linkerconfig", "debug_ramdisk", "second_stage_resources", "postinstall"):
        fs.add(f"/{name}", VDir(mode=0o755))
    fs.add("/cache", VDir(mode=0o770, uid=AID_SYSTEM, gid=2001))
    fs.add("/bin", VLink(target="/system/bin"))
    fs.add("/etc", VLink(target="/system/etc"))
    fs.add("/d", VLink(target="/sys/kernel/debug"))
    fs.add("/sdcard", VLink(target="/storage/self/primary"))
    fs.add("/init", VFile(mode=0o750, content=b"\x7fELF"))
    data = VDir(mode=0o771, uid=AID_SYSTEM, gid=AID_SYSTEM, rofs=False)
    fs.add("/data", data)
    local = VDir(mode=0o751, uid=0, gid=0, rofs=False)
    data.children["local"] = local
    local.children["tmp"] = fs.tmp_mount
    for name in ("app", "user", "misc", "system", "vendor", "media"):
        data.children[name] = VDir(mode=0o771, uid=AID_SYSTEM, gid=AID_SYSTEM, rofs=False)
    storage = VDir(mode=0o755, uid=0, gid=0)
    fs.add("/storage", storage)
    emulated = VDir(mode=0o751, uid=0, gid=AID_EVERYBODY, rofs=False)
    storage.children["emulated"] = emulated
    emulated.children["0"] = fs.sd_mount
    self_dir = VDir(mode=0o755)
    storage.children["self"] = self_dir
    self_dir.children["primary"] = VLink(target="/storage/emulated/0")
    fs.add("/dev", VDir(mode=0o755, rofs=False))
    fs.add("/dev/null", VFile(mode=0o666, char_dev=(1, 3), on_write=lambda b: None))
    fs.add("/dev/zero", VFile(mode=0o666, char_dev=(1, 5), content=b"\0" * 65536,
                              on_write=lambda b: None))
    fs.add("/dev/urandom", VFile(mode=0o666, char_dev=(1, 9),
                                 content=lambda: os.urandom(65536), on_write=lambda b: None))
    fs.add("/dev/random", VFile(mode=0o666, char_dev=(1, 8), content=lambda: os.urandom(65536),
                                on_write=lambda b: None))
    fs.add("/dev/block", VDir(mode=0o755))
    fs.add("/apex", VDir(mode=0o755))
    fs.add("/apex/com.android.runtime/bin", VDir(mode=0o755))
    fs.add("/vendor", VDir(mode=0o755))
    fs.add("/vendor/bin", VDir(mode=0o751, gid=SHELL_GID))
    lib = "lib64" if prof.is_64bit else "lib"
    fs.add(f"/vendor/{lib}", VDir(mode=0o755))
    fs.add("/vendor/etc", VDir(mode=0o755))
    # /system
    fs.add("/system", VDir(mode=0o755))
    sysbin = VDir(mode=0o751, uid=0, gid=SHELL_GID)
    fs.add("/system/bin", sysbin)
    sysbin.children["toybox"] = VFile(mode=0o755, gid=SHELL_GID, applet="toybox",
                                      content=b"\x7fELF toybox", size_hint=1_201_000)
    for applet in TOYBOX_APPLETS:
        sysbin.children[applet] = VLink(target="toybox", gid=SHELL_GID)
    for tool in ANDROID_TOOLS:
        sysbin.children[tool] = VFile(mode=0o755, gid=SHELL_GID, applet=tool,
                                      content=b"\x7fELF " + tool.encode(), size_hint=280_000)
    fs.add("/system/xbin", VDir(mode=0o755))
    fs.add(f"/system/{lib}", VDir(mode=0o755))
    if prof.is_64bit:
        fs.add("/system/lib", VDir(mode=0o755))
    fs.add("/system/etc", VDir(mode=0o755))
    fs.add("/system/etc/hosts", VFile(mode=0o644, content=b"127.0.0.1       localhost\n"
                                                       b"::1             ip6-localhost\n"))
    fs.add("/system/framework", VDir(mode=0o755))
    fs.add("/system/build.prop", VFile(mode=0o600 if prof.sdk >= 28 else 0o644,
                                       content=lambda: _build_prop(phone)))
    fs.add("/proc", build_proc(phone))
    fs.add("/sys", build_sys(phone))


def _build_prop(phone: Phone) -> bytes:
    lines = ["", "# begin build properties", "# autogenerated by buildinfo.sh"]
    for k, v in sorted(phone.profile.props().items()):
        if k.startswith("ro.build") or k.startswith("ro.product"):
            lines.append(f"{k}={v}")
    lines.append("# end build properties")
    return ("\n".join(lines) + "\n").encode()


def _text(fn: Callable[[], str]) -> Callable[[], bytes]:
    return lambda: fn().encode()


def const(text: str) -> Callable[[], str]:
    """A generator that always returns `text`."""
    return lambda: text


def _str_of(fn: Callable[[int], int], arg: int) -> str:
    return str(fn(arg))


def _cmdline(p: SimProc) -> bytes:
    return b"".join(a.encode() + b"\0" for a in p.argv)


def _comm(p: SimProc) -> bytes:
    return (p.name[:15] + "\n").encode()


def build_proc(phone: Phone) -> VDir:
    """The synthetic /proc: cpuinfo, meminfo, uptime, version, loadavg, mounts, <pid>/..."""
    from farm.sim import commands  # the text generators live with the commands that print them

    proc = VDir(mode=0o555, rofs=False, mtime=phone.clock.epoch_s)

    def pid_dirs() -> dict[str, VNode]:
        out: dict[str, VNode] = {}
        for p in phone.procs.snapshot():
            d = VDir(mode=0o555, uid=p.uid, gid=p.uid, mtime=phone.clock.epoch_s)
            d.children["status"] = VFile(mode=0o444, uid=p.uid, gid=p.uid, size_hint=0,
                                         content=_text(partial(commands.proc_status, phone,
                                                               p)), mtime=phone.clock.epoch_s)
            d.children["cmdline"] = VFile(mode=0o444, uid=p.uid, gid=p.uid, size_hint=0,
                                          content=partial(_cmdline, p),
                                          mtime=phone.clock.epoch_s)
            d.children["comm"] = VFile(mode=0o644, uid=p.uid, gid=p.uid, size_hint=0,
                                       content=partial(_comm, p),
                                       mtime=phone.clock.epoch_s)
            d.children["stat"] = VFile(mode=0o444, uid=p.uid, gid=p.uid, size_hint=0,
                                       content=_text(partial(commands.proc_stat, phone, p)),
                                       mtime=phone.clock.epoch_s)
            out[str(p.pid)] = d
        return out

    proc.generate = pid_dirs

    def files(name: str, fn: Callable[[], str]) -> None:
        proc.children[name] = VFile(mode=0o444, size_hint=0, content=_text(fn),
                                    mtime=phone.clock.epoch_s)

    files("cpuinfo", lambda: commands.proc_cpuinfo(phone))
    files("meminfo", lambda: commands.proc_meminfo(phone))
    files("uptime", lambda: commands.proc_uptime(phone))
    files("version", lambda: commands.proc_version(phone))
    files("loadavg", lambda: commands.proc_loadavg(phone))
    files("mounts", lambda: commands.proc_mounts(phone))
    files("stat", lambda: commands.proc_stat_global(phone))
    proc.children["self"] = VLink(target=lambda: str(phone.procs.current_pid()))
    return proc


def build_sys(phone: Phone) -> VDir:
    """The synthetic /sys: thermal zones, cpufreq, power_supply/battery."""
    prof = phone.profile
    th = phone.thermal
    sysd = VDir(mode=0o755, rofs=False)

    def ro(fn: Callable[[], str], mode: int = 0o444, uid: int = 0) -> VFile:
        return VFile(mode=mode, uid=uid, gid=uid, size_hint=4096,
                     content=lambda: (fn() + "\n").encode(), mtime=phone.clock.epoch_s)

    thermal = VDir(mode=0o755)
    for i, z in enumerate(prof.thermal.zones):
        zd = VDir(mode=0o755)
        zd.children["type"] = ro(const(z.type))

        def temp(i: int = i) -> str:
            return str(round(th.snapshot().zones[i][2] * 1000))

        zd.children["temp"] = ro(temp)
        zd.children["mode"] = ro(lambda: "enabled", 0o644)
        zd.children["policy"] = ro(lambda: "step_wise", 0o644)
        zd.children["available_policies"] = ro(lambda: "step_wise user_space power_allocator")
        thermal.children[f"thermal_zone{i}"] = zd
    for i, cl in enumerate(prof.cpu.clusters):
        cd = VDir(mode=0o755)
        cd.children["type"] = ro(const(f"thermal-cpufreq-{cl.cpus[0]}"))
        cd.children["max_state"] = ro(const(str(len(cl.freqs_khz) - 1)))

        def cur_state(i: int = i) -> str:
            c = prof.cpu.clusters[i]
            capped = th.scaling_max_freq_khz(c.cpus[0])
            return str(len(c.freqs_khz) - 1 - list(c.freqs_khz).index(capped))

        cd.children["cur_state"] = ro(cur_state, 0o644)
        thermal.children[f"cooling_device{i}"] = cd
    sysd.children["class"] = VDir(mode=0o755, children={
        "thermal": thermal,
        "power_supply": VDir(mode=0o755, children={"battery": _battery_dir(phone, ro)}),
    })
    cpu_root = VDir(mode=0o755)
    n = prof.cpu.cpu_count
    cpu_root.children["possible"] = ro(lambda: f"0-{n - 1}")
    cpu_root.children["present"] = ro(lambda: f"0-{n - 1}")
    cpu_root.children["online"] = ro(lambda: f"0-{n - 1}")
    cpu_root.children["kernel_max"] = ro(lambda: "31")
    policies = VDir(mode=0o755)
    cpu_root.children["cpufreq"] = policies
    for cl in prof.cpu.clusters:
        pol = VDir(mode=0o755)
        first = cl.cpus[0]
        policies.children[f"policy{first}"] = pol
        freqs = " ".join(str(f) for f in cl.freqs_khz)
        related = " ".join(str(c) for c in cl.cpus)
        pol.children["cpuinfo_max_freq"] = ro(const(str(cl.max_freq_khz)))
        pol.children["cpuinfo_min_freq"] = ro(const(str(cl.min_freq_khz)))
        pol.children["cpuinfo_cur_freq"] = ro(partial(_str_of, th.scaling_cur_freq_khz, first),
                                              0o400)
        pol.children["scaling_cur_freq"] = ro(partial(_str_of, th.scaling_cur_freq_khz, first))
        pol.children["scaling_max_freq"] = ro(partial(_str_of, th.scaling_max_freq_khz, first),
                                              0o664, AID_SYSTEM)
        pol.children["scaling_min_freq"] = ro(const(str(cl.min_freq_khz)), 0o664,
                                              AID_SYSTEM)
        pol.children["scaling_available_frequencies"] = ro(const(freqs))
        pol.children["scaling_governor"] = ro(lambda: "schedutil" if prof.sdk >= 28
                                              else "interactive", 0o664, AID_SYSTEM)
        pol.children["scaling_available_governors"] = ro(
            lambda: "schedutil performance powersave" if prof.sdk >= 28
            else "interactive ondemand userspace powersave performance")
        pol.children["scaling_driver"] = ro(lambda: "qcom-cpufreq-hw"
                                            if prof.soc_manufacturer.startswith("Q")
                                            else "mtk-cpufreq")
        pol.children["related_cpus"] = ro(const(related))
        pol.children["affected_cpus"] = ro(const(related))
        stats = VDir(mode=0o755)
        stats.children["time_in_state"] = ro(partial(_time_in_state, phone, cl, first))
        pol.children["stats"] = stats
        for c in cl.cpus:
            cd = VDir(mode=0o755)
            cd.children["cpufreq"] = VLink(target=f"../cpufreq/policy{first}")
            cd.children["online"] = ro(lambda: "1", 0o644)
            topo = VDir(mode=0o755)
            topo.children["physical_package_id"] = ro(lambda: "0")
            topo.children["core_id"] = ro(const(str(c)))
            cd.children["topology"] = topo
            cpu_root.children[f"cpu{c}"] = cd
    sysd.children["devices"] = VDir(mode=0o755, children={
        "system": VDir(mode=0o755, children={"cpu": cpu_root}),
    })
    sysd.children["kernel"] = VDir(mode=0o755, children={"debug": VDir(mode=0o700)})
    sysd.children["fs"] = VDir(mode=0o755)
    sysd.children["module"] = VDir(mode=0o755)
    return sysd


def _time_in_state(phone: Phone, cl: ClusterSpec, first: int) -> str:
    uptime_cs = int(phone.clock.uptime_s() * 100)
    lines = []
    share = [0.55] + [0.45 / max(1, len(cl.freqs_khz) - 1)] * (len(cl.freqs_khz) - 1)
    for f, s in zip(cl.freqs_khz, share, strict=True):
        lines.append(f"{f} {int(uptime_cs * s)}")
    return "\n".join(lines)


def _battery_dir(phone: Phone, ro: Callable[..., VFile]) -> VDir:
    b = phone.profile.battery
    d = VDir(mode=0o755)
    d.children["capacity"] = ro(lambda: str(b.level_pct))
    d.children["temp"] = ro(lambda: str(round(phone.thermal.snapshot().battery_c * 10)))
    d.children["status"] = ro(lambda: "Charging" if b.plugged != "none" and b.level_pct < 100
                              else ("Full" if b.plugged != "none" else "Discharging"))
    d.children["health"] = ro(lambda: "Good")
    d.children["present"] = ro(lambda: "1")
    d.children["technology"] = ro(lambda: b.technology)
    d.children["voltage_now"] = ro(lambda: str(b.voltage_mv * 1000))
    d.children["charge_full_design"] = ro(lambda: str(b.capacity_mah * 1000))
    return d
