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
    from rich.markup import escape as esc  # device text is data, never rich markup
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
                bar.update(task, total=event.total, description=f"run {esc(event.message)}")
            elif kind == "sample_started" and event.case:
                bar.update(task, description=esc(f"{event.device} {event.case.label()}"))
            elif kind == "sample_finished":
                bar.update(task, completed=event.index)
                if event.status != "ok":
                    label = event.case.label() if event.case else ""
                    bar.console.print(f"[yellow]{esc(f'{event.device} {label}: {event.status}')}"
                                      f"[/] {esc(event.message)}", markup=True,
                                      highlight=False)
            elif kind in ("device_ready", "gate", "device_error"):
                bar.update(task, description=esc(f"{event.device}: {event.message}"))
            else:
                msg = getattr(event, "message", None)
                if msg:
                    bar.update(task, description=esc(f"variants: {msg}"))
        yield live


def _gate_options(default_outputs: str = "") -> Callable[[Any], Any]:
    """The regression-gate options `farm run --baseline` and `farm compare` share."""
    extra = f" {default_outputs}" if default_outputs else ""

    def apply(f: Any) -> Any:
        for option in reversed((
            click.option("--fail-on-regression", "fail_pct", type=click.FloatRange(min=0),
                         metavar="PCT", help="Exit 1 when a case regressed by more than PCT % "
                         "or broke."),
            click.option("--threshold-pct", type=click.FloatRange(min=0), default=5.0,
                         show_default=True, help="Smallest change called a regression (raised "
                         "per case by learned noise)."),
            click.option("--junit", type=click.Path(path_type=Path, dir_okay=False),
                         help="Write JUnit XML, one testcase per case" + extra + "."),
            click.option("--markdown", "markdown_file",
                         type=click.Path(path_type=Path, dir_okay=False),
                         help="Write a Markdown summary" + extra + "."),
        )):
            f = option(f)
        return f

    return apply


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
@click.option("--baseline", metavar="RUN",
              help="Compare with this run afterwards ('last': the newest finished run before "
                   "this one).")
@_gate_options(default_outputs="(default: <out>/<run>/compare.*)")
@click.pass_context
def run(ctx: click.Context, matrix: Path, device_patterns: tuple[str, ...],
        devices_file: Path | None, repeats: int | None, db: Path | None, out: Path,
        resume: str | None, quiet: bool, as_json: bool, baseline: str | None,
        fail_pct: float | None, threshold_pct: float, junit: Path | None,
        markdown_file: Path | None) -> None:
    """Run a sweep and write its report (and, with --baseline, gate on regressions)."""
    if baseline is None and (fail_pct is not None or junit or markdown_file):
        raise click.BadParameter("needs --baseline RUN (or 'last')",
                                 param_hint="--fail-on-regression/--junit/--markdown")
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
    if not as_json:
        click.echo(f"run {result.run_id}: {s.samples_ok} ok, {s.samples_failed} failed, "
                   f"{s.samples_skipped} skipped on {len(result.devices)} device(s) "
                   f"in {s.wall_s:.0f} s")
        if result.report:
            click.echo(f"report: {result.report}")
    gate = None
    if baseline is not None:
        gate = _run_gate(_db(ctx, db), result.run_id, baseline, threshold_pct=threshold_pct,
                         fail_pct=fail_pct,
                         junit=junit or out / result.run_id / "compare.junit.xml",
                         markdown_file=markdown_file or out / result.run_id / "compare.md",
                         echo=not as_json)
    if as_json:
        click.echo(json.dumps({"run_id": result.run_id, "report": str(result.report),
                               "ok": s.samples_ok, "failed": s.samples_failed,
                               "skipped": s.samples_skipped, "bytes_pushed": s.bytes_pushed,
                               "wall_s": round(s.wall_s, 3),
                               **({"compare": gate[0]} if gate else {})}))
    if gate and gate[1]:
        ctx.exit(1)


def _run_gate(db: Path, run_id: str, baseline: str, *, threshold_pct: float,
              fail_pct: float | None, junit: Path, markdown_file: Path, echo: bool
              ) -> tuple[dict[str, Any], bool]:
    """Compare a finished run with its baseline; (summary for --json, gate failed)."""
    from farm import compare

    base = compare.baseline_for(db, run_id, baseline)
    if base is None:
        if echo:
            click.echo("baseline: no finished run before this one; nothing to compare")
        return {"baseline": None, "failing": 0}, False
    result = compare.compare_runs(db, base, run_id, threshold_pct=threshold_pct)
    written = compare.write_outputs(result, junit=junit, markdown_file=markdown_file,
                                    fail_pct=fail_pct)
    failing = result.failing(fail_pct) if fail_pct is not None else ()
    if echo:
        for line in compare.summary_lines(result, fail_pct=fail_pct):
            click.echo(line)
        click.echo("wrote " + ", ".join(str(p) for p in written))
        if failing:
            click.echo(f"FAIL: {len(failing)} case(s) regressed by more than {fail_pct:g} % "
                       "or broke", err=True)
    return ({"baseline": base, "counts": result.counts(), "failing": len(failing),
             "junit": str(junit), "markdown": str(markdown_file)}, bool(failing))


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


# ----------------------------------------------------------------------------- answers


def _columns(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """Plain aligned columns (stable in logs and tests; no colour, no box drawing)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:{w}}}" for w in widths[:-1]) + "  {}"
    return [fmt.format(*headers).rstrip()] + [fmt.format(*r).rstrip() for r in rows]


def _pct(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "-"
    return "-" if f != f else f"{f:.0%}"


@main.group()
def verdict() -> None:
    """Verdicts from a run's samples."""


@verdict.command("quantization")
@click.argument("run_id", default="last")
@click.option("--db", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@click.option("--include-tainted", is_flag=True, help="Keep tainted samples (excluded by "
              "default).")
@click.pass_context
def verdict_quantization(ctx: click.Context, run_id: str, db: Path | None, as_json: bool,
                         include_tainted: bool) -> None:
    """Each quantization against fp32, per device × model × delegate × threads, with a CI."""
    from farm import analysis

    with api.open_store(_db(ctx, db)) as store:
        rid = store.resolve_run(run_id)
        frame = analysis.quantization_verdicts(store.load_samples(rid),
                                               include_tainted=include_tainted)
    if as_json:
        rows = json.loads(frame.to_json(orient="records"))
        click.echo(json.dumps({"run_id": rid, "include_tainted": include_tainted,
                               "rows": rows}, indent=2))
        return
    click.echo(f"run {rid}: speedup = fp32 latency / variant latency (> 1: faster); tainted "
               f"samples {'kept' if include_tainted else 'excluded'}")
    rows = []
    for _, r in frame.iterrows():
        ci = ("-" if r["ci_low"] != r["ci_low"] else
              f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}] {_pct(r['ci_level'])}")
        rows.append((str(r["device_label"]), str(r["model"]), str(r["delegate"]),
                     str(r["threads"]), str(r["quantization"]),
                     "-" if r["ratio"] != r["ratio"] else f"{r['ratio']:.2f}x", ci,
                     str(r["verdict"]), str(r["n_pairs"]),
                     f"{_pct(r['baseline_cv'])}/{_pct(r['variant_cv'])}",
                     f"{r['baseline_tainted_excluded']}/{r['variant_tainted_excluded']}",
                     f"{r['baseline_coverage']}/{r['variant_coverage']}",
                     str(r["reason"]) or "-"))
    for line in _columns(("device", "model", "delegate", "t", "quant", "speedup", "95% CI",
                          "verdict", "pairs", "CV fp32/q", "tainted fp32/q",
                          "delegation fp32/q", "why"), rows):
        click.echo(line)
    if not rows:
        click.echo("(no quantization to compare with fp32 in this run)")


@main.command("policy")
@click.argument("run_id", default="last")
@click.option("--db", type=click.Path(path_type=Path))
@click.option("--objective", type=click.Choice(["p50", "p90", "sustained"]), default="p50",
              show_default=True, help="What to minimise.")
@click.option("--max-memory-mb", type=click.FloatRange(min=0, min_open=True),
              help="Exclude configurations whose peak memory exceeds this.")
@click.option("--fidelity/--no-fidelity", default=None,
              help="Exclude 'fast but wrong' configurations (default: on when the run has "
                   "fidelity results).")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False),
              help="Write policy.json or policy.yaml (and show what changed if it exists).")
@click.option("--previous", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="An earlier policy file to show the changes against.")
@click.option("--json", "as_json", is_flag=True, help="Print the policy and changes as JSON.")
@click.pass_context
def policy_cmd(ctx: click.Context, run_id: str, db: Path | None, objective: str,
               max_memory_mb: float | None, fidelity: bool | None, out: Path | None,
               previous: Path | None, as_json: bool) -> None:
    """Per tier: the delegate, threads, quantization and CPU mask to ship, with a fallback."""
    from farm import policy

    if out is not None and out.suffix not in (".json", ".yaml", ".yml"):
        raise click.BadParameter(f"{out}: use a .json, .yaml or .yml file", param_hint="--out")
    result = policy.policy_for_run(_db(ctx, db), run_id, objective=objective,
                                   max_memory_mb=max_memory_mb, fidelity=fidelity)
    before_file = previous or (out if out is not None and out.exists() else None)
    changes = (policy.diff_policies(policy.read_policy_file(before_file), result)
               if before_file else None)
    if out is not None:
        policy.write_policy_file(result, out)
    if as_json:
        click.echo(json.dumps({"policy": result.to_dict(), "previous": str(before_file or ""),
                               "changes": [c.to_dict() for c in changes or ()]}, indent=2))
        return
    click.echo(f"policy for run {result.run_id} (objective {result.objective}, fidelity "
               f"{'checked' if result.fidelity_checked else 'not checked'})")
    for tier in result.tiers:
        for m in tier.models:
            chain = " -> ".join(c.label() for c in m.fallback) or "-"
            pick = m.choice.label() if m.choice else "(none)"
            click.echo(f"{tier.tier} / {m.model}: {pick}  [fallback: {chain}]")
            click.echo(f"    {m.why}")
    if before_file is not None:
        click.echo(f"changes since {before_file}:" if changes else
                   f"no change since {before_file}")
        for c in changes or ():
            click.echo(f"  {c.describe()}")
    if out is not None:
        click.echo(f"wrote {out}")


@main.command("compare")
@click.argument("base")
@click.argument("new", default="last")
@click.option("--db", type=click.Path(path_type=Path))
@_gate_options()
@click.option("--noise-k", type=click.FloatRange(min=0), default=3.0, show_default=True,
              help="Learned threshold = k × the case's night-to-night noise.")
@click.option("--json", "as_json", is_flag=True, help="Print every case as JSON.")
@click.pass_context
def compare_cmd(ctx: click.Context, base: str, new: str, db: Path | None, threshold_pct: float,
                noise_k: float, junit: Path | None, markdown_file: Path | None,
                fail_pct: float | None, as_json: bool) -> None:
    """Regressions from BASE to NEW (ids, prefixes or 'last'), matched by device × case."""
    from farm import compare

    result = compare.compare_runs(_db(ctx, db), base, new, threshold_pct=threshold_pct,
                                  noise_k=noise_k)
    written = compare.write_outputs(result, junit=junit, markdown_file=markdown_file,
                                    fail_pct=fail_pct)
    failing = result.failing(fail_pct) if fail_pct is not None else ()
    if as_json:
        click.echo(json.dumps({**result.to_dict(), "failing": len(failing)}, indent=2))
    else:
        for line in compare.summary_lines(result, fail_pct=fail_pct):
            click.echo(line)
        if written:
            click.echo("wrote " + ", ".join(str(p) for p in written))
    if failing:
        click.echo(f"FAIL: {len(failing)} case(s) regressed by more than {fail_pct:g} % or "
                   "broke", err=True)
        ctx.exit(1)


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
