"""The `farm` command line: parses options, calls `farm.api`, renders results.

The only module that echoes. Every `FarmError` becomes one line on stderr and exit 1;
bad options exit 2 (click); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from farm import __version__, api
from farm.errors import FarmError


class _Group(click.Group):
    """Turns FarmError into a one-line message instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FarmError as e:
            raise click.ClickException(str(e)) from None


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="farm")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.option("--db", type=click.Path(path_type=Path), default=api.DEFAULT_DB, show_default=True,
              help="Results database.")
@click.pass_context
def main(ctx: click.Context, verbose: int, db: Path) -> None:
    """farm: benchmark TensorFlow Lite models on a lab of phones (or this host)."""
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = {"db": db}


def _db(ctx: click.Context, db: Path | None) -> Path:
    return db or ctx.obj["db"]


@contextmanager
def _progress(quiet: bool) -> Iterator[Callable[[Any], None]]:
    """A live display: case n of N, device, configuration, ETA (rich)."""
    if quiet or not sys.stderr.isatty():
        def plain(event: Any) -> None:
            kind = getattr(event, "kind", "")
            if quiet:
                return
            if kind == "sample_finished":
                eta = f", ETA {event.eta_s:.0f} s" if event.eta_s is not None else ""
                case = event.case.label() if event.case else ""
                status = event.status + (f" ({event.message})" if event.message else "")
                click.echo(f"[{event.index}/{event.total}] {event.device} {case}: "
                           f"{status}{eta}", err=True)
            elif kind in ("device_ready", "run_started", "device_error"):
                click.echo(f"{event.device or 'farm'}: {event.message}", err=True)
            elif kind and kind.startswith("variant"):
                click.echo(f"variants: {getattr(event, 'message', event)}", err=True)
        yield plain
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), transient=False) as bar:
        task = bar.add_task("preparing", total=None)

        def live(event: Any) -> None:
            kind = getattr(event, "kind", "")
            if kind == "run_started":
                bar.update(task, total=event.total, description=f"run {event.message}")
            elif kind == "sample_started" and event.case:
                bar.update(task, description=f"{event.device} {event.case.label()}")
            elif kind == "sample_finished":
                bar.update(task, completed=event.index)
                if event.status != "ok":
                    bar.console.print(f"[yellow]{event.device} "
                                      f"{event.case.label() if event.case else ''}: "
                                      f"{event.status}[/] {event.message}", markup=True,
                                      highlight=False)
            elif kind in ("device_ready", "gate", "device_error"):
                bar.update(task, description=f"{event.device}: {event.message}")
            else:
                msg = getattr(event, "message", None)
                if msg:
                    bar.update(task, description=f"variants: {msg}")
        yield live


@main.command()
@click.option("--matrix", "-m", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              required=True, help="The sweep file (sweep.yaml).")
@click.option("--devices", "device_patterns", multiple=True,
              help="Only devices whose serial or model matches (fnmatch; repeatable).")
@click.option("--devices-file", type=click.Path(path_type=Path, dir_okay=False),
              help="The fleet file (default: devices.yaml).")
@click.option("--repeats", type=click.IntRange(1, 1000), help="Override the sweep's repeats.")
@click.option("--db", type=click.Path(path_type=Path), help="Results database.")
@click.option("--out", type=click.Path(path_type=Path), default=api.DEFAULT_REPORTS,
              show_default=True, help="Reports directory.")
@click.option("--resume", metavar="RUN", help="Continue an interrupted run (id, prefix, last).")
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def run(ctx: click.Context, matrix: Path, device_patterns: tuple[str, ...],
        devices_file: Path | None, repeats: int | None, db: Path | None, out: Path,
        resume: str | None, quiet: bool, as_json: bool) -> None:
    """Run a sweep and write its report."""
    plan = api.load_plan(matrix, devices_file=devices_file)
    with _progress(quiet or as_json) as on_event:
        try:
            result = api.run_plan(plan, db=_db(ctx, db), out_dir=out, repeats=repeats,
                                  device_patterns=device_patterns, resume=resume,
                                  on_event=on_event)
        except KeyboardInterrupt:
            raise click.ClickException("interrupted; finished samples are stored — continue "
                                       "with `farm run --resume last --matrix ...`") from None
    s = result.stats
    if as_json:
        click.echo(json.dumps({"run_id": result.run_id, "report": str(result.report),
                               "ok": s.samples_ok, "failed": s.samples_failed,
                               "skipped": s.samples_skipped, "bytes_pushed": s.bytes_pushed,
                               "wall_s": round(s.wall_s, 3)}))
        return
    click.echo(f"run {result.run_id}: {s.samples_ok} ok, {s.samples_failed} failed, "
               f"{s.samples_skipped} skipped on {len(result.devices)} device(s) "
               f"in {s.wall_s:.0f} s")
    if result.report:
        click.echo(f"report: {result.report}")


@main.command("plan")
@click.option("--matrix", "-m", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              required=True)
@click.option("--devices-file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def plan_cmd(matrix: Path, devices_file: Path | None, as_json: bool) -> None:
    """Show the cases a run would execute (converts variants; benchmarks nothing)."""
    cases = api.plan_cases(api.load_plan(matrix, devices_file=devices_file))
    if as_json:
        click.echo(json.dumps([{**c.case.to_dict(), "skip_reason": c.skip_reason}
                               for c in cases], indent=2))
        return
    for c in cases:
        note = f"  [{c.skip_status}: {c.skip_reason}]" if c.skip_reason else ""
        click.echo(f"{c.case.case_id}  {c.case.device}  {c.case.label()}{note}")
    click.echo(f"{sum(not c.skip_reason for c in cases)} runnable of {len(cases)} cases")


@main.group()
def variants() -> None:
    """Model variants (fp32, fp16, dynamic, int8, int16x8)."""


@variants.command("build")
@click.option("--matrix", "-m", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              required=True)
@click.option("--json", "as_json", is_flag=True)
def variants_build(matrix: Path, as_json: bool) -> None:
    """Convert every model × quantization of a sweep (cached by content hash)."""
    plan = api.load_plan(matrix)
    built = api.build_variants(plan.sweep, cache_dir=api.default_cache_dir())
    if as_json:
        click.echo(json.dumps([v.to_dict() for v in built], indent=2))
        return
    for v in built:
        if v.status == "ok":
            tag = "cached" if v.cached else f"{v.conversion_s:.1f} s"
            click.echo(f"{v.model:24} {v.quantization:8} {v.size_bytes / 1e6:8.2f} MB  "
                       f"{v.sha256[:12]}  {tag}")
        else:
            click.echo(f"{v.model:24} {v.quantization:8} FAILED: {v.error}")


@main.command()
@click.option("--devices-file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def devices(devices_file: Path | None, as_json: bool) -> None:
    """Every device farm can see, with its state, facts and tier."""
    rows = api.device_report(devices_file)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        state = r["state"] + (f" ({r['reason']})" if r.get("reason") else "")
        tier = f" tier={r['tier']}" if r.get("tier") else ""
        click.echo(f"{r['serial']:24} {state:12} {r.get('label', '')}{tier}")
        facts = r.get("facts")
        if facts:
            click.echo(f"{'':24} {facts}")


@main.command()
@click.option("--db", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def runs(ctx: click.Context, db: Path | None, as_json: bool) -> None:
    """List runs in the store, newest first."""
    rows = api.list_runs(_db(ctx, db))
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo("no runs yet")
    for r in rows:
        click.echo(f"{r['run_id']}  {r['status']:11} {r['n_ok']:5} ok {r['n_failed']:4} failed "
                   f"{r['n_skipped']:4} skipped  {r['n_devices']} device(s)  {r['sweep_file']}")


@main.command()
@click.argument("run_id", default="last")
@click.option("--db", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=api.DEFAULT_REPORTS,
              show_default=True)
@click.pass_context
def report(ctx: click.Context, run_id: str, db: Path | None, out: Path) -> None:
    """Regenerate a run's HTML report from the store (RUN_ID: id, prefix or 'last')."""
    click.echo(str(api.render_report(_db(ctx, db), run_id, out)))


@main.command()
@click.argument("files", nargs=-1, required=True,
                type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def parse(files: tuple[Path, ...], as_json: bool) -> None:
    """Parse saved benchmark_model output (stdout, stderr or logcat)."""
    results = api.parse_files(files)
    if as_json:
        click.echo(json.dumps(results if len(results) > 1 else results[0], indent=2))
        return
    for r in results:
        click.echo(f"== {r.pop('file')}")
        for k, v in r.items():
            if v not in (None, "", [], ()):
                click.echo(f"{k}: {v}")


def _mount_optional() -> None:
    """Sub-command groups that live with their feature (sim, vendor)."""
    try:
        from farm.sim.cli import sim
    except ImportError:
        pass
    else:
        main.add_command(sim)
    try:
        from farm.vendor_cli import vendor_group
    except ImportError:
        pass
    else:
        main.add_command(vendor_group)


_mount_optional()
