"""The vendored `benchmark_model` binaries: manifest, verified fetch, local builds, ABI choice.

Owns `vendor/benchmark_model/`: reads `MANIFEST.yaml`, reads and writes `MANIFEST.lock.yaml`,
downloads over HTTP(S) with urllib (explicit timeouts, bounded retries), and installs files
atomically under `<vendor_dir>/<abi>/benchmark_model` with a `benchmark_model.json` provenance
record beside each. Reads `FARM_VENDOR_BASE_URL` from the environment when no base URL is given.
Never touches a device. See `vendor/benchmark_model/README.md` for the trust model.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import platform
import re
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from farm import __version__
from farm.errors import BenchmarkError, ConfigError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
BINARY_NAME = "benchmark_model"
PROVENANCE_NAME = "benchmark_model.json"
MANIFEST_NAME = "MANIFEST.yaml"
LOCK_NAME = "MANIFEST.lock.yaml"
DEFAULT_VENDOR_DIR = Path("vendor") / "benchmark_model"
ENV_BASE_URL = "FARM_VENDOR_BASE_URL"
LOCAL_SOURCE = "local build"

# ABI -> (ELF class, ELF e_machine). Android ABIs use Android's names; host ABIs are prefixed
# with "linux-" because a glibc Linux binary does not run on an Android device of the same CPU
# (and vice versa), so "x86_64" alone would be ambiguous.
ELF_CLASS_32, ELF_CLASS_64 = 1, 2
EM_386, EM_ARM, EM_X86_64, EM_AARCH64 = 3, 40, 62, 183
ABI_ELF: Mapping[str, tuple[int, int]] = {
    "arm64-v8a": (ELF_CLASS_64, EM_AARCH64),
    "armeabi-v7a": (ELF_CLASS_32, EM_ARM),
    "x86_64": (ELF_CLASS_64, EM_X86_64),
    "x86": (ELF_CLASS_32, EM_386),
    "linux-x86_64": (ELF_CLASS_64, EM_X86_64),
    "linux-aarch64": (ELF_CLASS_64, EM_AARCH64),
    "linux-arm": (ELF_CLASS_32, EM_ARM),
}
KNOWN_ABIS: tuple[str, ...] = tuple(ABI_ELF)

# The official TFLite nightly artifact for each ABI (shared/benchmark_model.md §1.1). Android
# x86/x86_64 have no official prebuilt: those need a local build (`farm vendor add`).
OFFICIAL_FILES: Mapping[str, str] = {
    "arm64-v8a": "android_aarch64_benchmark_model",
    "armeabi-v7a": "android_arm_benchmark_model",
    "linux-x86_64": "linux_x86-64_benchmark_model",
    "linux-aarch64": "linux_aarch64_benchmark_model",
    "linux-arm": "linux_arm_benchmark_model",
}

# platform.machine() spellings -> host ABI.
_HOST_MACHINES: Mapping[str, str] = {
    "x86_64": "linux-x86_64",
    "amd64": "linux-x86_64",
    "aarch64": "linux-aarch64",
    "arm64": "linux-aarch64",
    "armv7l": "linux-arm",
    "armv8l": "linux-arm",
}

# InstalledBinary.status values. The first three mean "usable".
STATUS_INSTALLED = "installed"  # fetch/add put it there just now
STATUS_UNCHANGED = "unchanged"  # fetch found the expected file already installed
STATUS_OK = "ok"  # installed() found it and it matches its provenance record
STATUS_FAILED = "failed"  # fetch could not install it (see error); any old install is untouched
STATUS_CORRUPT = "corrupt"  # installed() found it but it no longer matches its record
STATUS_UNREGISTERED = "unregistered"  # a binary with no provenance record
STATUSES: tuple[str, ...] = (
    STATUS_INSTALLED,
    STATUS_UNCHANGED,
    STATUS_OK,
    STATUS_FAILED,
    STATUS_CORRUPT,
    STATUS_UNREGISTERED,
)
_USABLE = frozenset({STATUS_INSTALLED, STATUS_UNCHANGED, STATUS_OK})

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_URL_SCHEMES = ("http", "https", "file")
_CHUNK_BYTES = 64 * 1024
_PROGRESS_EVERY_BYTES = 1024 * 1024
_MANIFEST_KEYS = ("schema_version", "description", "binaries")
_ENTRY_KEYS = ("file", "url", "version", "sha256", "pin")
_LOCK_ENTRY_KEYS = ("url", "sha256", "size_bytes", "fetched_at")


# --------------------------------------------------------------------------------------------
# Values


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One ABI's official binary: where it comes from and, when pinned, its exact sha256."""

    abi: str
    file: str
    url: str
    version: str
    sha256: str | None
    pin: bool

    def to_dict(self) -> dict[str, Any]:
        """A YAML/JSON-ready dict (the ABI is the key it lives under, so it is left out)."""
        return {
            "file": self.file,
            "url": self.url,
            "version": self.version,
            "sha256": self.sha256,
            "pin": self.pin,
        }

    @classmethod
    def from_dict(cls, abi: str, d: Mapping[str, Any]) -> ManifestEntry:
        """Inverse of `to_dict` (no validation: `load_manifest` validates)."""
        return cls(
            abi=abi,
            file=str(d["file"]),
            url=str(d["url"]),
            version=str(d["version"]),
            sha256=d.get("sha256"),
            pin=bool(d.get("pin", False)),
        )

    def url_for(self, base_url: str | None) -> str:
        """The download URL: the manifest's own, or `file` under a mirror's base URL."""
        if not base_url:
            return self.url
        return base_url.rstrip("/") + "/" + urllib.parse.quote(self.file)


@dataclass(frozen=True, slots=True)
class Manifest:
    """The validated contents of `MANIFEST.yaml`."""

    schema_version: int
    path: Path
    entries: tuple[ManifestEntry, ...]
    description: str = ""

    @property
    def abis(self) -> tuple[str, ...]:
        """The ABIs the manifest has an entry for, in file order."""
        return tuple(e.abi for e in self.entries)

    def entry(self, abi: str) -> ManifestEntry | None:
        """The entry for `abi`, or None."""
        for e in self.entries:
            if e.abi == abi:
                return e
        return None

    def to_dict(self) -> dict[str, Any]:
        """A YAML-ready dict in the on-disk shape."""
        out: dict[str, Any] = {"schema_version": self.schema_version}
        if self.description:
            out["description"] = self.description
        out["binaries"] = {e.abi: e.to_dict() for e in self.entries}
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: Path = Path(MANIFEST_NAME)) -> Manifest:
        """Validate an on-disk-shaped dict (as `load_manifest` does for a file)."""
        return parse_manifest(d, path)


@dataclass(frozen=True, slots=True)
class LockEntry:
    """What `fetch` observed for an unpinned entry the first time it trusted it."""

    abi: str
    url: str
    sha256: str
    size_bytes: int
    fetched_at: str

    def to_dict(self) -> dict[str, Any]:
        """A YAML-ready dict (without the ABI, which is its key)."""
        return {
            "url": self.url,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "fetched_at": self.fetched_at,
        }

    @classmethod
    def from_dict(cls, abi: str, d: Mapping[str, Any]) -> LockEntry:
        """Inverse of `to_dict`."""
        return cls(
            abi=abi,
            url=str(d["url"]),
            sha256=str(d["sha256"]),
            size_bytes=int(d["size_bytes"]),
            fetched_at=str(d["fetched_at"]),
        )


@dataclass(frozen=True, slots=True)
class InstalledBinary:
    """A benchmark_model for one ABI: where it is, what it is, and whether it can be used.

    `fetch` returns one per requested ABI with status installed/unchanged/failed; `installed()`
    reports ok/corrupt/unregistered. `source` is the URL it was downloaded from or "local build".
    """

    abi: str
    path: Path
    sha256: str | None
    size_bytes: int | None
    version: str
    source: str
    status: str
    error: str | None = None
    fetched_at: str | None = None

    @property
    def ok(self) -> bool:
        """True when the binary is there and verified."""
        return self.status in _USABLE

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "abi": self.abi,
            "path": str(self.path),
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "version": self.version,
            "source": self.source,
            "status": self.status,
            "error": self.error,
            "fetched_at": self.fetched_at,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InstalledBinary:
        """Inverse of `to_dict`."""
        return cls(
            abi=str(d["abi"]),
            path=Path(d["path"]),
            sha256=d.get("sha256"),
            size_bytes=d.get("size_bytes"),
            version=str(d.get("version", "")),
            source=str(d.get("source", "")),
            status=str(d["status"]),
            error=d.get("error"),
            fetched_at=d.get("fetched_at"),
        )


@dataclass(frozen=True, slots=True)
class VendorEvent:
    """Progress from `fetch`, for the CLI to render. kind: start|progress|retry|done|failed."""

    kind: str
    abi: str
    message: str = ""
    bytes_done: int = 0
    bytes_total: int | None = None


OnEvent = Callable[[VendorEvent], None]


# --------------------------------------------------------------------------------------------
# Manifest and lock file


def load_manifest(path: Path) -> Manifest:
    """Read and validate MANIFEST.yaml; every problem is a ConfigError naming file and key."""
    data = _read_yaml(path)
    return parse_manifest(data, path)


def parse_manifest(data: Any, path: Path) -> Manifest:
    """Validate manifest data already parsed from YAML (pure; `path` is only for messages)."""
    where = str(path)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping at the top level, got {_kind(data)}")
    _reject_unknown(data, _MANIFEST_KEYS, where, "")
    sv = data.get("schema_version")
    if sv != SCHEMA_VERSION or isinstance(sv, bool):
        raise ConfigError(
            f"{where}: schema_version: {sv!r} is not supported; allowed: {SCHEMA_VERSION}"
        )
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{where}: description: expected a string, got {_kind(description)}")
    binaries = data.get("binaries")
    if not isinstance(binaries, Mapping) or not binaries:
        raise ConfigError(
            f"{where}: binaries: expected a non-empty mapping of ABI to entry, "
            f"got {_kind(binaries)}; allowed ABIs: {', '.join(KNOWN_ABIS)}"
        )
    entries = []
    for abi, raw in binaries.items():
        key = f"binaries.{abi}"
        if abi not in ABI_ELF:
            raise ConfigError(
                f"{where}: {key}: unknown ABI {abi!r}; allowed: {', '.join(KNOWN_ABIS)}"
            )
        entries.append(_parse_entry(str(abi), raw, where, key))
    return Manifest(
        schema_version=SCHEMA_VERSION,
        path=path,
        entries=tuple(entries),
        description=description,
    )


def _parse_entry(abi: str, raw: Any, where: str, key: str) -> ManifestEntry:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: {key}: expected a mapping, got {_kind(raw)}")
    _reject_unknown(raw, _ENTRY_KEYS, where, key + ".")
    for name in ("file", "url", "version"):
        value = raw.get(name)
        if not isinstance(value, str) or not value.strip():
            hint = ' (quote numbers, e.g. version: "2.19")' if name == "version" else ""
            raise ConfigError(
                f"{where}: {key}.{name}: expected a non-empty string, got {_kind(value)}{hint}"
            )
    file = raw["file"]
    if "/" in file or "\\" in file or file in (".", ".."):
        raise ConfigError(f"{where}: {key}.file: {file!r} must be a bare file name, not a path")
    url = raw["url"]
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in _URL_SCHEMES:
        raise ConfigError(
            f"{where}: {key}.url: {url!r} has scheme {scheme!r}; allowed: {', '.join(_URL_SCHEMES)}"
        )
    if "pin" not in raw or not isinstance(raw["pin"], bool):
        raise ConfigError(
            f"{where}: {key}.pin: expected true or false, got {_kind(raw.get('pin'))}; "
            "say pin: false (with sha256: null) for an artifact that changes upstream"
        )
    if "sha256" not in raw:
        raise ConfigError(
            f"{where}: {key}.sha256: missing; allowed: 64 lowercase hex digits, or null when "
            "the artifact cannot be pinned"
        )
    sha = raw["sha256"]
    if sha is not None:
        if not isinstance(sha, str) or not _SHA256_RE.match(sha.lower()):
            raise ConfigError(
                f"{where}: {key}.sha256: {sha!r} is not a sha256; allowed: 64 hex digits, or null"
            )
        sha = sha.lower()
    pin = raw["pin"]
    if pin and sha is None:
        raise ConfigError(f"{where}: {key}: pin: true needs a sha256; allowed: 64 hex digits")
    if not pin and sha is not None:
        raise ConfigError(
            f"{where}: {key}: sha256 is given but pin is false; set pin: true to verify it, "
            "or sha256: null for an artifact that changes upstream"
        )
    return ManifestEntry(abi=abi, file=file, url=url, version=raw["version"], sha256=sha, pin=pin)


def lock_path(vendor_dir: Path) -> Path:
    """Where the lock file for `vendor_dir` lives."""
    return vendor_dir / LOCK_NAME


def load_lock(path: Path) -> dict[str, LockEntry]:
    """Read MANIFEST.lock.yaml (missing file: empty); a malformed one is a ConfigError."""
    if not path.exists():
        return {}
    data = _read_yaml(path)
    where = str(path)
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping at the top level, got {_kind(data)}")
    _reject_unknown(data, ("schema_version", "binaries"), where, "")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ConfigError(
            f"{where}: schema_version: {data.get('schema_version')!r} is not supported; "
            f"allowed: {SCHEMA_VERSION}"
        )
    binaries = data.get("binaries") or {}
    if not isinstance(binaries, Mapping):
        raise ConfigError(f"{where}: binaries: expected a mapping, got {_kind(binaries)}")
    out: dict[str, LockEntry] = {}
    for abi, raw in binaries.items():
        key = f"binaries.{abi}"
        if abi not in ABI_ELF:
            raise ConfigError(
                f"{where}: {key}: unknown ABI {abi!r}; allowed: {', '.join(KNOWN_ABIS)}"
            )
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where}: {key}: expected a mapping, got {_kind(raw)}")
        _reject_unknown(raw, _LOCK_ENTRY_KEYS, where, key + ".")
        missing = [k for k in _LOCK_ENTRY_KEYS if k not in raw]
        if missing:
            raise ConfigError(f"{where}: {key}: missing {', '.join(missing)}")
        sha = raw["sha256"]
        if not isinstance(sha, str) or not _SHA256_RE.match(sha):
            raise ConfigError(f"{where}: {key}.sha256: {sha!r} is not a sha256 (64 hex digits)")
        if not isinstance(raw["size_bytes"], int) or raw["size_bytes"] < 0:
            raise ConfigError(f"{where}: {key}.size_bytes: expected a non-negative integer")
        out[str(abi)] = LockEntry.from_dict(str(abi), raw)
    return out


def write_lock(path: Path, entries: Mapping[str, LockEntry]) -> None:
    """Write MANIFEST.lock.yaml atomically."""
    body = {
        "schema_version": SCHEMA_VERSION,
        "binaries": {abi: entries[abi].to_dict() for abi in sorted(entries)},
    }
    header = (
        "# Written by `farm vendor fetch`: the sha256 observed for each manifest entry that is\n"
        "# not pinned (pin: false), trusted on first use. Later fetches verify against it.\n"
        "# Commit it so every machine of the lab runs the same binaries.\n"
    )
    text = header + yaml.safe_dump(body, sort_keys=False)
    _atomic_write_bytes(path, text.encode())


# --------------------------------------------------------------------------------------------
# Installed binaries


def host_abi(machine: str | None = None, system: str | None = None) -> str:
    """The ABI name of this host (from platform.machine()), e.g. "linux-x86_64"."""
    system = platform.system() if system is None else system
    machine = platform.machine() if machine is None else machine
    abi = _HOST_MACHINES.get(machine.lower()) if system == "Linux" else None
    if abi is None:
        raise BenchmarkError(
            f"no benchmark_model ABI for host {system} {machine}; "
            f"supported hosts: Linux {', '.join(sorted(set(_HOST_MACHINES)))}"
        )
    return abi


def installed(vendor_dir: Path) -> dict[str, InstalledBinary]:
    """Every binary under vendor_dir, keyed by ABI, re-hashed and checked against its record."""
    out: dict[str, InstalledBinary] = {}
    if not vendor_dir.is_dir():
        return out
    for abi_dir in sorted(p for p in vendor_dir.iterdir() if p.is_dir()):
        abi = abi_dir.name
        if abi not in ABI_ELF:
            logger.debug("ignoring %s: not a known ABI directory", abi_dir)
            continue
        binary = abi_dir / BINARY_NAME
        record = abi_dir / PROVENANCE_NAME
        if not binary.exists() and not record.exists():
            continue
        out[abi] = _inspect(abi, binary, record)
    return out


def _inspect(abi: str, binary: Path, record: Path) -> InstalledBinary:
    if not record.exists():
        sha, size = _hash_file(binary)
        return InstalledBinary(
            abi=abi,
            path=binary,
            sha256=sha,
            size_bytes=size,
            version="unknown",
            source="unknown",
            status=STATUS_UNREGISTERED,
            error=(
                f"{binary} has no provenance record {PROVENANCE_NAME}; register it with "
                f"`farm vendor add {binary} --abi {abi}`"
            ),
        )
    try:
        prov = json.loads(record.read_text())
        expected_sha = str(prov["sha256"])
        expected_size = int(prov["size_bytes"])
        version = str(prov.get("version", "unknown"))
        source = str(prov.get("source", "unknown"))
        fetched_at = prov.get("fetched_at")
    except (OSError, ValueError, KeyError, TypeError) as e:
        return InstalledBinary(
            abi,
            binary,
            None,
            None,
            "unknown",
            "unknown",
            STATUS_CORRUPT,
            f"{record}: unreadable provenance record ({e}); reinstall with "
            f"`farm vendor fetch --abi {abi}` or `farm vendor add PATH --abi {abi}`",
        )

    def result(
        status: str, error: str | None, sha: str | None, size: int | None
    ) -> InstalledBinary:
        return InstalledBinary(abi, binary, sha, size, version, source, status, error, fetched_at)

    if not binary.exists():
        return result(STATUS_CORRUPT, f"{binary} is missing (its record is there)", None, None)
    sha, size = _hash_file(binary)
    if sha != expected_sha or size != expected_size:
        return result(
            STATUS_CORRUPT,
            f"{binary} changed since it was installed: sha256 {sha} ({size} bytes), "
            f"recorded {expected_sha} ({expected_size} bytes)",
            sha,
            size,
        )
    if not os.access(binary, os.X_OK):
        return result(STATUS_CORRUPT, f"{binary} is not executable", sha, size)
    return result(STATUS_OK, None, sha, size)


def pick_binary(abis: Sequence[str], vendor_dir: Path) -> InstalledBinary:
    """The installed binary for the first ABI in the device's preference order that has one."""
    found = installed(vendor_dir)
    for abi in abis:
        binary = found.get(abi)
        if binary is not None and binary.ok:
            return binary
    if not abis:
        raise BenchmarkError("the device reports no ABIs, so no benchmark_model can be chosen")
    problems = [
        f"{abi}: {found[abi].status} ({found[abi].error})"
        for abi in abis
        if abi in found and not found[abi].ok
    ]
    fetchable = next((abi for abi in abis if abi in OFFICIAL_FILES), None)
    how = []
    if fetchable is not None:
        how.append(f"`farm vendor fetch --abi {fetchable}`")
    how.append(f"`farm vendor add PATH --abi {abis[0]}`")
    msg = (
        f"no benchmark_model for ABIs {', '.join(abis)} in {vendor_dir}; "
        f"install one with {' or '.join(how)}"
    )
    if fetchable is None:
        msg += " (there is no official prebuilt for these ABIs; build it from source)"
    if problems:
        msg += "; unusable: " + "; ".join(problems)
    raise BenchmarkError(msg)


def add_local(
    file: Path, abi: str, *, vendor_dir: Path, version: str = LOCAL_SOURCE
) -> InstalledBinary:
    """Register a locally built benchmark_model for `abi` (copied in, atomically)."""
    if abi not in ABI_ELF:
        raise BenchmarkError(f"unknown ABI {abi!r}; allowed: {', '.join(KNOWN_ABIS)}")
    if not file.is_file():
        raise BenchmarkError(f"{file}: no such file")
    with file.open("rb") as f:
        problem = elf_problem(f.read(64), abi)
    if problem:
        raise BenchmarkError(f"{file}: {problem}")
    abi_dir = vendor_dir / abi
    abi_dir.mkdir(parents=True, exist_ok=True)
    with _temp_in(abi_dir) as tmp:
        h = hashlib.sha256()
        size = 0
        with file.open("rb") as src, tmp.open("wb") as dst:
            while chunk := src.read(_CHUNK_BYTES):
                h.update(chunk)
                size += len(chunk)
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        result = InstalledBinary(
            abi=abi,
            path=abi_dir / BINARY_NAME,
            sha256=h.hexdigest(),
            size_bytes=size,
            version=version,
            source=LOCAL_SOURCE,
            status=STATUS_INSTALLED,
            fetched_at=_now(),
        )
        _install(tmp, result, extra={"local_path": str(file.resolve())})
    logger.info("registered local build %s for %s (sha256 %s)", file, abi, result.sha256)
    return result


def elf_problem(header: bytes, abi: str) -> str | None:
    """Why `header` (a file's first bytes) is not an ELF executable for `abi`; None if it is."""
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return "not an ELF executable (got an HTML page, a script or a truncated file?)"
    want_class, want_machine = ABI_ELF[abi]
    elf_class = header[4]
    machine = int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")
    if (elf_class, machine) != (want_class, want_machine):
        got = _abis_for(elf_class, machine)
        return f"ELF class {elf_class}, machine {machine} is for {got or 'no known ABI'}, not {abi}"
    return None


def _abis_for(elf_class: int, machine: int) -> str:
    return ", ".join(a for a, spec in ABI_ELF.items() if spec == (elf_class, machine))


# --------------------------------------------------------------------------------------------
# Fetch


class _DownloadError(Exception):
    """One failed download attempt; `transient` ones are retried."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True, slots=True)
class _Downloaded:
    path: Path
    sha256: str
    size_bytes: int
    header: bytes


def fetch(
    manifest: Manifest,
    *,
    abis: Sequence[str] | None,
    vendor_dir: Path,
    base_url: str | None,
    timeout_s: float,
    on_event: OnEvent | None = None,
    trust_on_first_use: bool = False,
    relock: bool = False,
    attempts: int = 3,
    backoff_s: float = 1.0,
) -> list[InstalledBinary]:
    """Download, verify and install the manifest's binaries; one result per ABI, never raises
    for a per-ABI failure.

    `abis=None` means every manifest entry. `base_url=None` falls back to $FARM_VENDOR_BASE_URL,
    then to each entry's own URL. `timeout_s` bounds each connect and each socket read.
    Unpinned entries verify against MANIFEST.lock.yaml; with no lock entry they are refused
    unless `trust_on_first_use`; `relock` accepts a changed upstream binary and rewrites the lock.
    Transient errors are retried `attempts` times in all, sleeping backoff_s, 2*backoff_s, ...
    """
    if attempts < 1:
        raise ValueError("attempts must be >= 1")
    if base_url is None:
        base_url = os.environ.get(ENV_BASE_URL) or None
    emit: OnEvent = on_event or (lambda _e: None)
    wanted = list(dict.fromkeys(manifest.abis if abis is None else abis))
    lock_file = lock_path(vendor_dir)
    results = []
    for abi in wanted:
        entry = manifest.entry(abi)
        if entry is None:
            result = _failed(
                abi,
                vendor_dir,
                "",
                "",
                f"{manifest.path} has no entry for ABI {abi!r}; it has: "
                f"{', '.join(manifest.abis)} (use `farm vendor add PATH --abi {abi}` "
                "for a local build)",
            )
        else:
            result = _fetch_one(
                entry,
                manifest_path=manifest.path,
                vendor_dir=vendor_dir,
                lock_file=lock_file,
                url=entry.url_for(base_url),
                timeout_s=timeout_s,
                emit=emit,
                trust_on_first_use=trust_on_first_use,
                relock=relock,
                attempts=attempts,
                backoff_s=backoff_s,
            )
        if result.ok:
            emit(VendorEvent("done", abi, f"{result.status}: {result.path}"))
        else:
            logger.warning("%s: %s", abi, result.error)
            emit(VendorEvent("failed", abi, result.error or ""))
        results.append(result)
    return results


def _fetch_one(
    entry: ManifestEntry,
    *,
    manifest_path: Path,
    vendor_dir: Path,
    lock_file: Path,
    url: str,
    timeout_s: float,
    emit: OnEvent,
    trust_on_first_use: bool,
    relock: bool,
    attempts: int,
    backoff_s: float,
) -> InstalledBinary:
    abi = entry.abi

    def fail(message: str) -> InstalledBinary:
        return _failed(abi, vendor_dir, url, entry.version, message)

    # Decide what the download must hash to before fetching anything.
    try:
        lock = {} if entry.pin else load_lock(lock_file)
    except ConfigError as e:
        return fail(str(e))
    locked = lock.get(abi)
    if entry.pin:
        expected, why = entry.sha256, f"pinned in {manifest_path}"
    elif locked is not None and not relock:
        expected = locked.sha256
        why = f"recorded in {lock_file} on {locked.fetched_at}"
    elif trust_on_first_use or relock:
        expected, why = None, ""
    else:
        return fail(
            f"{manifest_path}: binaries.{abi} is not pinned (sha256: null, the upstream nightly "
            f"changes without notice) and {lock_file} has no sha256 for it, so the download "
            "could not be verified; rerun with --trust-on-first-use to accept what is "
            "downloaded now and record its sha256, or pin a sha256 in the manifest"
        )

    current = _current(vendor_dir / abi)
    if expected is not None and current is not None and current.sha256 == expected:
        return _replace_status(current, STATUS_UNCHANGED)

    abi_dir = vendor_dir / abi
    created_dir = not abi_dir.exists()
    abi_dir.mkdir(parents=True, exist_ok=True)
    try:
        emit(VendorEvent("start", abi, url))
        try:
            got = _download_with_retries(
                url,
                abi,
                abi_dir,
                timeout_s=timeout_s,
                emit=emit,
                attempts=attempts,
                backoff_s=backoff_s,
            )
        except _DownloadError as e:
            return fail(f"{url}: {e}; nothing installed")
        try:
            if expected is not None and got.sha256 != expected:
                hint = ""
                if not entry.pin:
                    hint = (
                        "; the upstream nightly has probably changed: rerun with --relock "
                        "to accept the new binary and update the lock file"
                    )
                return fail(
                    f"{url}: sha256 mismatch: got {got.sha256}, expected {expected} ({why})"
                    f"; nothing installed{hint}"
                )
            problem = elf_problem(got.header, abi)
            if problem:
                return fail(f"{url}: {problem}; nothing installed")
            result = InstalledBinary(
                abi=abi,
                path=abi_dir / BINARY_NAME,
                sha256=got.sha256,
                size_bytes=got.size_bytes,
                version=entry.version,
                source=url,
                status=STATUS_INSTALLED,
                fetched_at=_now(),
            )
            _install(got.path, result, extra={"upstream_file": entry.file, "pinned": entry.pin})
        finally:
            with contextlib.suppress(FileNotFoundError):
                got.path.unlink()
        if not entry.pin:
            try:
                lock = load_lock(lock_file)
            except ConfigError as e:
                return _replace_status(result, STATUS_INSTALLED, f"installed, but {e}")
            lock[abi] = LockEntry(abi, url, got.sha256, got.size_bytes, result.fetched_at or _now())
            write_lock(lock_file, lock)
        logger.info("installed %s from %s (sha256 %s)", result.path, url, result.sha256)
        return result
    finally:
        if created_dir:
            with contextlib.suppress(OSError):
                abi_dir.rmdir()  # only succeeds if nothing was installed


def _download_with_retries(
    url: str,
    abi: str,
    dest_dir: Path,
    *,
    timeout_s: float,
    emit: OnEvent,
    attempts: int,
    backoff_s: float,
) -> _Downloaded:
    for attempt in range(1, attempts + 1):
        try:
            return _download(url, abi, dest_dir, timeout_s=timeout_s, emit=emit)
        except _DownloadError as e:
            if not e.transient or attempt == attempts:
                if attempt > 1:
                    raise _DownloadError(
                        f"{e} (after {attempt} attempts)", transient=e.transient
                    ) from e
                raise
            delay_s = backoff_s * 2 ** (attempt - 1)
            logger.info("%s: attempt %d failed (%s); retrying in %.1fs", url, attempt, e, delay_s)
            emit(VendorEvent("retry", abi, f"attempt {attempt} failed: {e}"))
            time.sleep(delay_s)
    raise AssertionError("unreachable")  # pragma: no cover


def _download(
    url: str, abi: str, dest_dir: Path, *, timeout_s: float, emit: OnEvent
) -> _Downloaded:
    """One attempt: stream `url` into a temp file in dest_dir, hashing as it goes."""
    request = urllib.request.Request(url, headers={"User-Agent": f"farm/{__version__}"})
    h = hashlib.sha256()
    size = 0
    header = b""
    with _temp_in(dest_dir, keep=True) as tmp:
        try:
            try:
                with (
                    urllib.request.urlopen(request, timeout=timeout_s) as resp,
                    tmp.open("wb") as out,
                ):
                    declared = _content_length(resp.headers.get("Content-Length"))
                    next_report = _PROGRESS_EVERY_BYTES
                    while chunk := resp.read(_CHUNK_BYTES):
                        h.update(chunk)
                        if len(header) < 64:
                            header += chunk[: 64 - len(header)]
                        out.write(chunk)
                        size += len(chunk)
                        if size >= next_report:
                            next_report += _PROGRESS_EVERY_BYTES
                            emit(VendorEvent("progress", abi, "", size, declared))
                    out.flush()
                    os.fsync(out.fileno())
            except urllib.error.HTTPError as e:
                transient = e.code >= 500 or e.code in (408, 429)
                raise _DownloadError(f"HTTP {e.code} {e.reason}", transient=transient) from e
            except http.client.IncompleteRead as e:
                raise _DownloadError(
                    f"truncated download: got {size + len(e.partial)} bytes, "
                    f"{e.expected} more expected",
                    transient=True,
                ) from e
            except (TimeoutError, urllib.error.URLError, http.client.HTTPException, OSError) as e:
                raise _DownloadError(_describe(e, timeout_s), transient=True) from e
            except ValueError as e:  # malformed URL
                raise _DownloadError(str(e), transient=False) from e
            if declared is not None and size != declared:
                raise _DownloadError(
                    f"truncated download: got {size} of {declared} bytes (Content-Length)",
                    transient=True,
                )
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
    return _Downloaded(tmp, h.hexdigest(), size, header)


def _describe(e: BaseException, timeout_s: float) -> str:
    reason: object = e.reason if isinstance(e, urllib.error.URLError) else e
    if isinstance(reason, TimeoutError):
        return f"timed out after {timeout_s:g}s"
    return str(reason) or type(reason).__name__


def _content_length(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        return None
    return n if n >= 0 else None


# --------------------------------------------------------------------------------------------
# Helpers


def _install(tmp: Path, binary: InstalledBinary, *, extra: Mapping[str, Any]) -> None:
    """chmod 755 and rename the verified temp file into place, then write its record.

    The binary goes first so that a crash in between leaves a binary whose old record no longer
    matches, which `installed()` reports as corrupt rather than trusting it.
    """
    os.chmod(tmp, 0o755)
    os.replace(tmp, binary.path)
    record = {
        "schema_version": SCHEMA_VERSION,
        "abi": binary.abi,
        "source": binary.source,
        "version": binary.version,
        "sha256": binary.sha256,
        "size_bytes": binary.size_bytes,
        "fetched_at": binary.fetched_at,
        **extra,
    }
    _atomic_write_bytes(
        binary.path.with_name(PROVENANCE_NAME), (json.dumps(record, indent=2) + "\n").encode()
    )


def _current(abi_dir: Path) -> InstalledBinary | None:
    binary = abi_dir / BINARY_NAME
    if not binary.exists():
        return None
    found = _inspect(abi_dir.name, binary, abi_dir / PROVENANCE_NAME)
    return found if found.ok else None


def _failed(abi: str, vendor_dir: Path, source: str, version: str, error: str) -> InstalledBinary:
    return InstalledBinary(
        abi=abi,
        path=vendor_dir / abi / BINARY_NAME,
        sha256=None,
        size_bytes=None,
        version=version,
        source=source,
        status=STATUS_FAILED,
        error=error,
    )


def _replace_status(b: InstalledBinary, status: str, error: str | None = None) -> InstalledBinary:
    return InstalledBinary(
        b.abi, b.path, b.sha256, b.size_bytes, b.version, b.source, status, error, b.fetched_at
    )


@contextlib.contextmanager
def _temp_in(directory: Path, *, keep: bool = False) -> Iterator[Path]:
    """A temp file path in `directory` (same filesystem, so os.replace is atomic).

    Removed on exit unless it was renamed away or `keep` is set.
    """
    fd, name = tempfile.mkstemp(prefix=f".{BINARY_NAME}.", suffix=".part", dir=directory)
    os.close(fd)
    path = Path(name)
    try:
        yield path
    finally:
        if not keep:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(name, 0o644)
        os.replace(name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        raise


def _hash_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from e
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from e


def _reject_unknown(d: Mapping[str, Any], allowed: Sequence[str], where: str, prefix: str) -> None:
    for key in d:
        if key not in allowed:
            raise ConfigError(f"{where}: {prefix}{key}: unknown key; allowed: {', '.join(allowed)}")


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}"


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
