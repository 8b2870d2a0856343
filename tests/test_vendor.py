"""Tests for farm.vendor: manifest validation, fetch against a local HTTP server, add_local,
installed(), pick_binary and host_abi.

The server runs on 127.0.0.1 (port 0) in a thread and serves generated fake binaries (an ELF
header for the right ABI followed by random bytes). Each URL prefix selects a behaviour:
/ok/, /truncate/, /404/, /slow/, /flaky/ (503 once, then the file), /html/.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import stat
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from farm import vendor
from farm.errors import BenchmarkError, ConfigError
from farm.vendor import (
    InstalledBinary,
    Manifest,
    VendorEvent,
    add_local,
    elf_problem,
    fetch,
    host_abi,
    installed,
    load_lock,
    load_manifest,
    parse_manifest,
    pick_binary,
)

REPO = Path(__file__).resolve().parent.parent
FILES = {
    "arm64-v8a": "android_aarch64_benchmark_model",
    "armeabi-v7a": "android_arm_benchmark_model",
    "linux-x86_64": "linux_x86-64_benchmark_model",
}


def fake_elf(abi: str, size_bytes: int = 200_000) -> bytes:
    """A file that passes the ELF check for `abi`: real header fields, random body."""
    elf_class, machine = vendor.ABI_ELF[abi]
    header = bytearray(64)
    header[:4] = b"\x7fELF"
    header[4] = elf_class
    header[5] = 1  # little endian
    header[6] = 1  # EV_CURRENT
    header[16:18] = (3).to_bytes(2, "little")  # ET_DYN (PIE)
    header[18:20] = machine.to_bytes(2, "little")
    return bytes(header) + os.urandom(size_bytes - 64)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------
# The local HTTP server


@dataclass
class FakeMirror:
    """State shared with the request handler; tests change `files` between fetches."""

    files: dict[str, bytes] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    release: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    def base(self, mode: str) -> str:
        return f"http://127.0.0.1:{self.port}/{mode}"


class _Handler(http.server.BaseHTTPRequestHandler):
    mirror: FakeMirror  # set on a subclass per server

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        _, mode, name = self.path.split("/", 2)
        self.mirror.hits[self.path] += 1
        body = self.mirror.files.get(name)
        if mode == "404" or body is None:
            self.send_error(404, "Not Found")
            return
        if mode == "slow":
            # Hold the response past the client's timeout; released at teardown.
            self.mirror.release.wait(10)
            return
        if mode == "flaky" and self.mirror.hits[self.path] == 1:
            self.send_error(503, "Service Unavailable")
            return
        if mode == "html":
            body = b"<html><body>Sign in to the guest Wi-Fi</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if mode == "truncate":
            # Promise more than is sent, then close the connection.
            self.send_header("Content-Length", str(len(body) + 4096))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def mirror() -> Iterator[FakeMirror]:
    state = FakeMirror()
    handler = type("Handler", (_Handler,), {"mirror": state})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(autouse=True)
def _no_env_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(vendor.ENV_BASE_URL, raising=False)


def manifest_for(entries: dict[str, str | None], *, path: Path | None = None) -> Manifest:
    """A manifest whose entries point at the real upstream file names; `entries` maps ABI to
    a pinned sha256, or None for an unpinned entry."""
    data = {
        "schema_version": 1,
        "binaries": {
            abi: {
                "file": FILES[abi],
                "url": f"https://example.invalid/nightly/{FILES[abi]}",
                "version": "test",
                "sha256": digest,
                "pin": digest is not None,
            }
            for abi, digest in entries.items()
        },
    }
    return parse_manifest(data, path or Path("MANIFEST.yaml"))


def leftovers(vendor_dir: Path) -> list[Path]:
    return sorted(p for p in vendor_dir.rglob("*") if p.name.endswith(".part"))


def run_fetch(manifest: Manifest, vendor_dir: Path, base_url: str, **kw: Any) -> InstalledBinary:
    kw.setdefault("timeout_s", 5.0)
    kw.setdefault("backoff_s", 0.0)
    (result,) = fetch(
        manifest, abis=kw.pop("abis", None), vendor_dir=vendor_dir, base_url=base_url, **kw
    )
    return result


# --------------------------------------------------------------------------------------------
# fetch


def test_fetch_pinned_installs_verified_executable_with_provenance(
    mirror: FakeMirror, tmp_path: Path
) -> None:
    body = fake_elf("arm64-v8a")
    mirror.files[FILES["arm64-v8a"]] = body
    events: list[VendorEvent] = []

    result = run_fetch(
        manifest_for({"arm64-v8a": sha(body)}),
        tmp_path,
        mirror.base("ok"),
        on_event=events.append,
    )

    assert result.status == "installed", result.error
    assert result.ok and result.error is None
    assert result.path == tmp_path / "arm64-v8a" / "benchmark_model"
    assert result.path.read_bytes() == body
    assert stat.S_IMODE(result.path.stat().st_mode) == 0o755
    assert (result.sha256, result.size_bytes) == (sha(body), len(body))
    assert result.source == f"{mirror.base('ok')}/{FILES['arm64-v8a']}"
    record = json.loads((tmp_path / "arm64-v8a" / "benchmark_model.json").read_text())
    assert record["sha256"] == sha(body)
    assert record["size_bytes"] == len(body)
    assert record["source"] == result.source
    assert record["version"] == "test"
    assert record["fetched_at"].endswith("Z")
    assert [e.kind for e in events] == ["start", "done"]
    assert leftovers(tmp_path) == []
    # A pinned entry never touches the lock file.
    assert not (tmp_path / "MANIFEST.lock.yaml").exists()


def test_fetch_again_is_unchanged_without_downloading(mirror: FakeMirror, tmp_path: Path) -> None:
    body = fake_elf("arm64-v8a")
    mirror.files[FILES["arm64-v8a"]] = body
    manifest = manifest_for({"arm64-v8a": sha(body)})
    assert run_fetch(manifest, tmp_path, mirror.base("ok")).status == "installed"

    again = run_fetch(manifest, tmp_path, mirror.base("ok"))

    assert again.status == "unchanged"
    assert again.ok
    assert sum(mirror.hits.values()) == 1


def test_bad_checksum_installs_nothing_and_keeps_previous(
    mirror: FakeMirror, tmp_path: Path
) -> None:
    old = fake_elf("arm64-v8a")
    mirror.files[FILES["arm64-v8a"]] = old
    assert run_fetch(manifest_for({"arm64-v8a": sha(old)}), tmp_path, mirror.base("ok")).ok
    new = fake_elf("arm64-v8a")
    mirror.files[FILES["arm64-v8a"]] = new
    pinned_elsewhere = "ab" * 32

    result = run_fetch(manifest_for({"arm64-v8a": pinned_elsewhere}), tmp_path, mirror.base("ok"))

    assert result.status == "failed"
    assert not result.ok
    assert result.error is not None
    assert "sha256 mismatch" in result.error
    assert sha(new) in result.error and pinned_elsewhere in result.error
    assert "pinned in MANIFEST.yaml" in result.error
    assert "nothing installed" in result.error
    assert (tmp_path / "arm64-v8a" / "benchmark_model").read_bytes() == old
    assert installed(tmp_path)["arm64-v8a"].status == "ok"
    assert leftovers(tmp_path) == []
    # A checksum mismatch is not transient: no retry.
    assert sum(mirror.hits.values()) == 2


def test_truncated_download_is_retried_then_fails_cleanly(
    mirror: FakeMirror, tmp_path: Path
) -> None:
    body = fake_elf("arm64-v8a")
    mirror.files[FILES["arm64-v8a"]] = body
    events: list[VendorEvent] = []

    result = run_fetch(
        manifest_for({"arm64-v8a": sha(body)}),
        tmp_path,
        mirror.base("truncate"),
        attempts=2,
        on_event=events.append,
    )

    assert result.status == "failed"
    assert result.error is not None
    assert "truncated download" in result.error
    assert "after 2 attempts" in result.error
    assert f"{len(body) // 2}" in result.error
    assert mirror.hits[f"/truncate/{FILES['arm64-v8a']}"] == 2
    assert [e.kind for e in events] == ["start", "retry", "failed"]
    assert not (tmp_path / "arm64-v8a").exists()  # nothing installed, no empty dir left
    assert leftovers(tmp_path) == []
    assert installed(tmp_path) == {}


def test_truncated_download_of_unpinned_entry_is_not_trusted(
    mirror: FakeMirror, tmp_path: Path
) -> None:
    # Without a pin the Content-Length check is the only thing that catches truncation.
    mirror.files[FILES["arm64-v8a"]] = fake_elf("arm64-v8a")

    result = run_fetch(
        manifest_for({"arm64-v8a": None}),
        tmp_path,
        mirror.base("truncate"),
        attempts=1,
        trust_on_first_use=True,
    )

    assert result.status == "failed"
    assert result.error is not None and "truncated download" in result.error
    assert not (tmp_path / "MANIFEST.lock.yaml").exists()
    assert leftovers(tmp_path) == []


def test_404_fails_without_retry(mirror: FakeMirror, tmp_path: Path) -> None:
    result = run_fetch(
        manifest_for({"arm64-v8a": "cd" * 32}), tmp_path, mirror.base("404"), attempts=3
    )

    assert result.status == "failed"
    assert result.error is not None
    assert "HTTP 404" in result.error
    assert f"/404/{FILES['arm64-v8a']}" in result.error
    assert sum(mirror.hits.values()) == 1
    assert not (tmp_path / "arm64-v8a").exists()


def test_slow_server_times_out(mirror: FakeMirror, tmp_path: Path) -> None:
    body = fake_elf("arm64-v8a")
    mirror.files[FILES["arm64-v8a"]] = body

    result = run_fetch(
        manifest_for({"arm64-v8a": sha(body)}),
        tmp_path,
        mirror.base("slow"),
        timeout_s=0.3,
        attempts=1,
    )

    assert result.status == "failed"
    assert result.error is not None and "timed out after 0.3s" in result.error
    assert not (tmp_path / "arm64-v8a").exists()
    assert leftovers(tmp_path) == []


def test_transient_503_is_retried(mirror: FakeMirror, tmp_path: Path) -> None:
    body = fake_elf("arm64-v8a")
    mirror.files[FILES["arm64-v8a"]] = body
    events: list[VendorEvent] = []

    result = run_fetch(
        manifest_for({"arm64-v8a": sha(body)}),
        tmp_path,
        mirror.base("flaky"),
        attempts=3,
        on_event=events.append,
    )

    assert result.status == "installed", result.error
    assert mirror.hits[f"/flaky/{FILES['arm64-v8a']}"] == 2
    assert [e.kind for e in events] == ["start", "retry", "done"]
    assert "HTTP 503" in events[1].message


def test_failures_are_per_abi_and_the_others_continue(mirror: FakeMirror, tmp_path: Path) -> None:
    arm64 = fake_elf("arm64-v8a")
    mirror.files[FILES["arm64-v8a"]] = arm64  # armeabi-v7a is not on the mirror: 404
    manifest = manifest_for({"armeabi-v7a": "ef" * 32, "arm64-v8a": sha(arm64)})

    results = fetch(
        manifest,
        abis=None,
        vendor_dir=tmp_path,
        base_url=mirror.base("ok"),
        timeout_s=5,
        backoff_s=0,
    )

    assert [(r.abi, r.status) for r in results] == [
        ("armeabi-v7a", "failed"),
        ("arm64-v8a", "installed"),
    ]
    assert set(installed(tmp_path)) == {"arm64-v8a"}


def test_fetch_unknown_abi_is_a_failed_record(mirror: FakeMirror, tmp_path: Path) -> None:
    result = run_fetch(
        manifest_for({"arm64-v8a": "ab" * 32}), tmp_path, mirror.base("ok"), abis=["x86_64"]
    )

    assert result.status == "failed"
    assert result.error is not None
    assert "no entry for ABI 'x86_64'" in result.error
    assert "it has: arm64-v8a" in result.error
    assert "farm vendor add PATH --abi x86_64" in result.error
    assert sum(mirror.hits.values()) == 0


def test_unpinned_without_lock_is_refused_before_downloading(
    mirror: FakeMirror, tmp_path: Path
) -> None:
    mirror.files[FILES["arm64-v8a"]] = fake_elf("arm64-v8a")

    result = run_fetch(manifest_for({"arm64-v8a": None}), tmp_path, mirror.base("ok"))

    assert result.status == "failed"
    assert result.error is not None
    assert "not pinned" in result.error
    assert "--trust-on-first-use" in result.error
    assert sum(mirror.hits.values()) == 0
    assert not (tmp_path / "arm64-v8a").exists()


def test_trust_on_first_use_then_lock_then_relock(mirror: FakeMirror, tmp_path: Path) -> None:
    first = fake_elf("arm64-v8a")
    mirror.files[FILES["arm64-v8a"]] = first
    manifest = manifest_for({"arm64-v8a": None})

    # First use: accepted and recorded.
    got = run_fetch(manifest, tmp_path, mirror.base("ok"), trust_on_first_use=True)
    assert got.status == "installed", got.error
    lock = load_lock(tmp_path / "MANIFEST.lock.yaml")
    assert lock["arm64-v8a"].sha256 == sha(first)
    assert lock["arm64-v8a"].size_bytes == len(first)
    assert lock["arm64-v8a"].url == f"{mirror.base('ok')}/{FILES['arm64-v8a']}"

    # Same upstream: the lock is satisfied by the installed file, nothing downloaded.
    hits = sum(mirror.hits.values())
    assert run_fetch(manifest, tmp_path, mirror.base("ok")).status == "unchanged"
    assert sum(mirror.hits.values()) == hits

    # Upstream nightly changes; a fresh checkout (no install) verifies against the lock.
    second = fake_elf("arm64-v8a")
    mirror.files[FILES["arm64-v8a"]] = second
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "MANIFEST.lock.yaml").write_bytes((tmp_path / "MANIFEST.lock.yaml").read_bytes())
    refused = run_fetch(manifest, fresh, mirror.base("ok"), trust_on_first_use=True)
    assert refused.status == "failed"
    assert refused.error is not None
    assert "sha256 mismatch" in refused.error and "--relock" in refused.error
    assert "MANIFEST.lock.yaml" in refused.error
    assert not (fresh / "arm64-v8a").exists()

    # --relock accepts the new binary and rewrites the lock.
    relocked = run_fetch(manifest, tmp_path, mirror.base("ok"), relock=True)
    assert relocked.status == "installed", relocked.error
    assert relocked.path.read_bytes() == second
    assert load_lock(tmp_path / "MANIFEST.lock.yaml")["arm64-v8a"].sha256 == sha(second)


def test_html_page_instead_of_binary_is_rejected(mirror: FakeMirror, tmp_path: Path) -> None:
    mirror.files[FILES["arm64-v8a"]] = fake_elf("arm64-v8a")

    result = run_fetch(
        manifest_for({"arm64-v8a": None}), tmp_path, mirror.base("html"), trust_on_first_use=True
    )

    assert result.status == "failed"
    assert result.error is not None and "not an ELF executable" in result.error
    assert not (tmp_path / "MANIFEST.lock.yaml").exists()
    assert not (tmp_path / "arm64-v8a").exists()


def test_base_url_from_environment(
    mirror: FakeMirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = fake_elf("linux-x86_64")
    mirror.files[FILES["linux-x86_64"]] = body
    monkeypatch.setenv("FARM_VENDOR_BASE_URL", mirror.base("ok") + "/")

    result = fetch(
        manifest_for({"linux-x86_64": sha(body)}),
        abis=["linux-x86_64"],
        vendor_dir=tmp_path,
        base_url=None,
        timeout_s=5,
    )[0]

    assert result.status == "installed", result.error
    assert result.source == f"{mirror.base('ok')}/{FILES['linux-x86_64']}"


def test_malformed_lock_file_is_a_failed_record(mirror: FakeMirror, tmp_path: Path) -> None:
    (tmp_path / "MANIFEST.lock.yaml").write_text(
        "schema_version: 1\nbinaries:\n  arm64-v8a: {url: x, sha256: nope}\n"
    )

    result = run_fetch(
        manifest_for({"arm64-v8a": None}), tmp_path, mirror.base("ok"), trust_on_first_use=True
    )

    assert result.status == "failed"
    assert result.error is not None
    assert "MANIFEST.lock.yaml: binaries.arm64-v8a: missing size_bytes, fetched_at" in result.error


# --------------------------------------------------------------------------------------------
# add_local, installed, pick_binary


def test_add_local_registers_a_copy(tmp_path: Path) -> None:
    built = tmp_path / "build" / "benchmark_model"
    built.parent.mkdir()
    body = fake_elf("armeabi-v7a", 5000)
    built.write_bytes(body)
    vendor_dir = tmp_path / "vendor"

    result = add_local(built, "armeabi-v7a", vendor_dir=vendor_dir)

    assert result.status == "installed"
    assert result.source == "local build"
    assert result.version == "local build"
    assert (result.sha256, result.size_bytes) == (sha(body), len(body))
    assert result.path == vendor_dir / "armeabi-v7a" / "benchmark_model"
    assert result.path.read_bytes() == body
    assert stat.S_IMODE(result.path.stat().st_mode) == 0o755
    record = json.loads(result.path.with_name("benchmark_model.json").read_text())
    assert record["source"] == "local build"
    assert record["local_path"] == str(built.resolve())
    assert leftovers(vendor_dir) == []
    seen = installed(vendor_dir)["armeabi-v7a"]
    assert (seen.status, seen.sha256, seen.version) == ("ok", sha(body), "local build")


def test_add_local_with_version_replaces_previous(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.write_bytes(fake_elf("x86_64", 1000))
    two.write_bytes(fake_elf("x86_64", 2000))
    add_local(one, "x86_64", vendor_dir=tmp_path / "v")

    result = add_local(two, "x86_64", vendor_dir=tmp_path / "v", version="v2.19.0 local")

    assert result.path.read_bytes() == two.read_bytes()
    assert installed(tmp_path / "v")["x86_64"].version == "v2.19.0 local"


@pytest.mark.parametrize(
    ("content", "abi", "message"),
    [
        (fake_elf("linux-x86_64", 1000), "arm64-v8a", "is for x86_64, linux-x86_64, not arm64-v8a"),
        (b"#!/bin/sh\necho hi\n", "arm64-v8a", "not an ELF executable"),
        (fake_elf("armeabi-v7a", 1000), "nope", "unknown ABI 'nope'; allowed: arm64-v8a"),
    ],
)
def test_add_local_rejects_wrong_files(
    tmp_path: Path, content: bytes, abi: str, message: str
) -> None:
    f = tmp_path / "bm"
    f.write_bytes(content)

    with pytest.raises(BenchmarkError) as info:
        add_local(f, abi, vendor_dir=tmp_path / "v")

    assert message in str(info.value)
    assert installed(tmp_path / "v") == {}


def test_add_local_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkError, match="no such file"):
        add_local(tmp_path / "absent", "arm64-v8a", vendor_dir=tmp_path)


def test_installed_reports_corrupt_and_unregistered(tmp_path: Path) -> None:
    for abi in ("arm64-v8a", "armeabi-v7a"):
        src = tmp_path / abi
        src.write_bytes(fake_elf(abi, 1000))
        add_local(src, abi, vendor_dir=tmp_path / "v")
    tampered = tmp_path / "v" / "arm64-v8a" / "benchmark_model"
    tampered.write_bytes(tampered.read_bytes() + b"x")
    stray = tmp_path / "v" / "linux-x86_64"
    stray.mkdir()
    (stray / "benchmark_model").write_bytes(fake_elf("linux-x86_64", 1000))
    (tmp_path / "v" / "not-an-abi").mkdir()

    found = installed(tmp_path / "v")

    assert set(found) == {"arm64-v8a", "armeabi-v7a", "linux-x86_64"}
    assert found["armeabi-v7a"].status == "ok"
    assert found["arm64-v8a"].status == "corrupt"
    assert found["arm64-v8a"].error is not None
    assert "changed since it was installed" in found["arm64-v8a"].error
    assert found["linux-x86_64"].status == "unregistered"
    assert found["linux-x86_64"].error is not None
    assert "farm vendor add" in found["linux-x86_64"].error


def test_installed_of_missing_dir_is_empty(tmp_path: Path) -> None:
    assert installed(tmp_path / "nowhere") == {}


def _install_locals(vendor_dir: Path, *abis: str) -> None:
    for abi in abis:
        src = vendor_dir.parent / f"src-{abi}"
        src.write_bytes(fake_elf(abi, 1000))
        add_local(src, abi, vendor_dir=vendor_dir)


def test_pick_binary_follows_device_preference_order(tmp_path: Path) -> None:
    vendor_dir = tmp_path / "v"
    _install_locals(vendor_dir, "arm64-v8a", "armeabi-v7a")

    assert pick_binary(["arm64-v8a", "armeabi-v7a"], vendor_dir).abi == "arm64-v8a"
    assert pick_binary(["armeabi-v7a", "arm64-v8a"], vendor_dir).abi == "armeabi-v7a"
    assert pick_binary(("x86", "armeabi-v7a"), vendor_dir).abi == "armeabi-v7a"


def test_pick_binary_skips_a_corrupt_binary(tmp_path: Path) -> None:
    vendor_dir = tmp_path / "v"
    _install_locals(vendor_dir, "arm64-v8a", "armeabi-v7a")
    (vendor_dir / "arm64-v8a" / "benchmark_model").write_bytes(b"garbage")

    picked = pick_binary(["arm64-v8a", "armeabi-v7a"], vendor_dir)

    assert picked.abi == "armeabi-v7a"
    assert picked.ok


def test_pick_binary_missing_names_abis_and_remedy(tmp_path: Path) -> None:
    _install_locals(tmp_path / "v", "linux-x86_64")

    with pytest.raises(BenchmarkError) as info:
        pick_binary(["arm64-v8a", "armeabi-v7a"], tmp_path / "v")

    assert str(info.value) == (
        f"no benchmark_model for ABIs arm64-v8a, armeabi-v7a in {tmp_path / 'v'}; "
        "install one with `farm vendor fetch --abi arm64-v8a` or "
        "`farm vendor add PATH --abi arm64-v8a`"
    )


def test_pick_binary_missing_without_official_prebuilt(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkError) as info:
        pick_binary(["x86_64", "x86"], tmp_path)

    message = str(info.value)
    assert "no benchmark_model for ABIs x86_64, x86" in message
    assert "farm vendor fetch" not in message
    assert "`farm vendor add PATH --abi x86_64`" in message
    assert "build it from source" in message


def test_pick_binary_mentions_unusable_binaries(tmp_path: Path) -> None:
    vendor_dir = tmp_path / "v"
    _install_locals(vendor_dir, "arm64-v8a")
    (vendor_dir / "arm64-v8a" / "benchmark_model").unlink()

    with pytest.raises(BenchmarkError, match=r"unusable: arm64-v8a: corrupt \(.*is missing"):
        pick_binary(["arm64-v8a"], vendor_dir)


def test_pick_binary_no_abis(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkError, match="reports no ABIs"):
        pick_binary([], tmp_path)


@pytest.mark.parametrize(
    ("machine", "abi"),
    [
        ("x86_64", "linux-x86_64"),
        ("AMD64", "linux-x86_64"),
        ("aarch64", "linux-aarch64"),
        ("armv7l", "linux-arm"),
    ],
)
def test_host_abi(machine: str, abi: str) -> None:
    assert host_abi(machine, "Linux") == abi


def test_host_abi_unsupported() -> None:
    with pytest.raises(BenchmarkError, match="no benchmark_model ABI for host Darwin arm64"):
        host_abi("arm64", "Darwin")


def test_host_abi_of_this_machine_is_known() -> None:
    assert host_abi() in vendor.KNOWN_ABIS


def test_elf_problem() -> None:
    assert elf_problem(fake_elf("arm64-v8a", 100), "arm64-v8a") is None
    assert elf_problem(fake_elf("arm64-v8a", 100), "linux-aarch64") is None
    assert elf_problem(b"\x7fELF", "arm64-v8a") is not None
    problem = elf_problem(fake_elf("armeabi-v7a", 100), "arm64-v8a")
    assert problem is not None and "armeabi-v7a" in problem


# --------------------------------------------------------------------------------------------
# Manifest


def test_shipped_manifest_is_valid_and_honest() -> None:
    manifest = load_manifest(REPO / "vendor" / "benchmark_model" / "MANIFEST.yaml")

    assert manifest.schema_version == 1
    assert {"arm64-v8a", "armeabi-v7a", "linux-x86_64", "linux-aarch64"} <= set(manifest.abis)
    for entry in manifest.entries:
        # Nightlies change upstream: the manifest must not pretend to know their sha256.
        assert (entry.sha256, entry.pin) == (None, False)
        assert entry.file == vendor.OFFICIAL_FILES[entry.abi]
        assert entry.url == (
            "https://storage.googleapis.com/tensorflow-nightly-public/prod/tensorflow/"
            f"release/lite/tools/nightly/latest/{entry.file}"
        )


def test_manifest_round_trips() -> None:
    manifest = manifest_for({"arm64-v8a": "AB" * 32, "armeabi-v7a": None})

    assert manifest.entry("arm64-v8a") is not None
    assert manifest.entry("arm64-v8a").sha256 == "ab" * 32  # type: ignore[union-attr]
    assert manifest.entry("x86") is None
    again = Manifest.from_dict(manifest.to_dict())
    assert again.entries == manifest.entries


def test_installed_binary_round_trips(tmp_path: Path) -> None:
    b = InstalledBinary("x86", tmp_path / "x", "ab" * 32, 12, "v", "local build", "ok", None, "t")
    assert InstalledBinary.from_dict(json.loads(json.dumps(b.to_dict()))) == b


def _good_entry(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "file": "android_aarch64_benchmark_model",
        "url": "https://example.invalid/android_aarch64_benchmark_model",
        "version": "2.19",
        "sha256": None,
        "pin": False,
    }
    entry.update(changes)
    return {k: v for k, v in entry.items() if v != "<drop>"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"schema_version": 1, "binaries": {"arm64-v8a": _good_entry()}, "extra": 1},
            "M.yaml: extra: unknown key; allowed: schema_version, description, binaries",
        ),
        (
            {"schema_version": 1, "binaries": {"arm64-v8a": _good_entry(sha512=None)}},
            "M.yaml: binaries.arm64-v8a.sha512: unknown key; allowed: file, url, version, "
            "sha256, pin",
        ),
        (
            {"schema_version": 1, "binaries": {"arm64": _good_entry()}},
            "M.yaml: binaries.arm64: unknown ABI 'arm64'; allowed: arm64-v8a, armeabi-v7a, "
            "x86_64, x86, linux-x86_64, linux-aarch64, linux-arm",
        ),
        (
            {"schema_version": 1, "binaries": {"arm64-v8a": _good_entry(sha256="abc", pin=True)}},
            "M.yaml: binaries.arm64-v8a.sha256: 'abc' is not a sha256; allowed: 64 hex digits, "
            "or null",
        ),
        (
            {"schema_version": 1, "binaries": {"arm64-v8a": _good_entry(sha256="g" * 64)}},
            "binaries.arm64-v8a.sha256: 'gggg",
        ),
        (
            {"schema_version": 1, "binaries": {"arm64-v8a": _good_entry(pin=True)}},
            "M.yaml: binaries.arm64-v8a: pin: true needs a sha256",
        ),
        (
            {"schema_version": 1, "binaries": {"arm64-v8a": _good_entry(sha256="a" * 64)}},
            "M.yaml: binaries.arm64-v8a: sha256 is given but pin is false",
        ),
        (
            {"schema_version": 1, "binaries": {"arm64-v8a": _good_entry(pin="<drop>")}},
            "M.yaml: binaries.arm64-v8a.pin: expected true or false",
        ),
        (
            {"schema_version": 1, "binaries": {"arm64-v8a": _good_entry(sha256="<drop>")}},
            "M.yaml: binaries.arm64-v8a.sha256: missing",
        ),
        (
            {"schema_version": 1, "binaries": {"arm64-v8a": _good_entry(version=2.19)}},
            "binaries.arm64-v8a.version: expected a non-empty string, got float 2.19 (quote",
        ),
        (
            {"schema_version": 1, "binaries": {"arm64-v8a": _good_entry(url="ftp://x/y")}},
            "binaries.arm64-v8a.url: 'ftp://x/y' has scheme 'ftp'; allowed: http, https, file",
        ),
        (
            {"schema_version": 1, "binaries": {"arm64-v8a": _good_entry(file="a/b")}},
            "binaries.arm64-v8a.file: 'a/b' must be a bare file name",
        ),
        (
            {"schema_version": 2, "binaries": {"arm64-v8a": _good_entry()}},
            "M.yaml: schema_version: 2 is not supported; allowed: 1",
        ),
        ({"schema_version": 1, "binaries": {}}, "M.yaml: binaries: expected a non-empty mapping"),
        ({"schema_version": 1, "binaries": {"x86": "url"}}, "binaries.x86: expected a mapping"),
        (["schema_version"], "M.yaml: expected a mapping at the top level"),
    ],
)
def test_manifest_validation_errors(tmp_path: Path, data: Any, message: str) -> None:
    path = tmp_path / "M.yaml"
    path.write_text(yaml.safe_dump(data))

    with pytest.raises(ConfigError) as info:
        load_manifest(path)

    assert message in str(info.value)
    assert str(info.value).startswith(str(path))


def test_manifest_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "M.yaml"
    path.write_text("schema_version: 1\nbinaries: [unclosed\n")

    with pytest.raises(ConfigError, match=r"M\.yaml:\d+: not valid YAML"):
        load_manifest(path)


def test_manifest_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="M.yaml: cannot read"):
        load_manifest(tmp_path / "M.yaml")
