"""`farm vendor fetch|add|list`: thin click commands over `farm.vendor`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from farm import vendor


def _dir() -> Path:
    from farm.api import project_root

    return project_root() / "vendor" / "benchmark_model"


@click.group("vendor")
def vendor_group() -> None:
    """benchmark_model binaries per ABI (vendor/benchmark_model)."""


@vendor_group.command("fetch")
@click.option("--abi", "abis", multiple=True, help="Only these ABIs (repeatable).")
@click.option("--base-url", help="A mirror to download from (or $FARM_VENDOR_BASE_URL).")
@click.option("--trust-on-first-use", is_flag=True,
              help="Accept and lock the sha256 of an unpinned nightly on first download.")
@click.option("--relock", is_flag=True, help="Accept a changed unpinned nightly.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(1, 3600), default=60.0,
              show_default=True, help="Seconds per connect/read.")
def fetch(abis: tuple[str, ...], base_url: str | None, trust_on_first_use: bool,
          relock: bool, timeout_s: float) -> None:
    """Download the official prebuilt binaries, verify them and install atomically."""
    d = _dir()
    manifest = vendor.load_manifest(d / "MANIFEST.yaml")
    results = vendor.fetch(manifest, abis=abis or None, vendor_dir=d, base_url=base_url,
                           timeout_s=timeout_s, trust_on_first_use=trust_on_first_use,
                           relock=relock)
    failed = 0
    for r in results:
        if r.ok:
            click.echo(f"{r.abi:14} {r.status:10} {r.sha256}  {r.path}")
        else:
            failed += 1
            click.echo(f"{r.abi:14} FAILED     {r.error}", err=True)
    if failed:
        raise click.ClickException(f"{failed} of {len(results)} binaries not installed")


@vendor_group.command("add")
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--abi", required=True, help="The ABI the binary is built for.")
@click.option("--version", "version", default="local build", show_default=True)
def add(file: Path, abi: str, version: str) -> None:
    """Register a local build of benchmark_model for an ABI."""
    b = vendor.add_local(file, abi, vendor_dir=_dir(), version=version)
    click.echo(f"{b.abi}: {b.path} ({b.sha256})")


@vendor_group.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_cmd(as_json: bool) -> None:
    """Installed binaries with their provenance and integrity."""
    found = vendor.installed(_dir())
    if as_json:
        click.echo(json.dumps({k: v.to_dict() for k, v in found.items()}, indent=2))
        return
    if not found:
        click.echo("no binaries installed; `farm vendor fetch` or `farm vendor add FILE --abi`")
    for abi, b in sorted(found.items()):
        click.echo(f"{abi:14} {b.status:12} {b.version:20} {b.sha256}  {b.source}")

