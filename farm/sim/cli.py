"""`farm sim up|down|status|fault`: the click group for the phone simulator.

Thin over `farm.sim.control`: parses options, calls it, echoes the result. The main CLI mounts it
with `main.add_command(sim)`; `python -m farm.sim.cli` runs it alone. Every `FarmError` becomes a
one-line message and exit 1.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from farm.errors import FarmError
from farm.sim import control

F = TypeVar("F", bound=Callable[..., Any])


def _farm_errors(fn: F) -> F:
    """Map FarmError to ClickException (also when the group runs outside `farm.cli`)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FarmError as e:
            raise click.ClickException(str(e)) from None

    return cast(F, wrapper)


def _state_dir(ctx: click.Context) -> Path:
    return Path(ctx.meta["farm.sim.state_dir"])


def _parse_param(text: str) -> tuple[str, Any]:
    key, eq, value = text.partition("=")
    if not eq or not key:
        raise click.BadParameter(f"{text!r} is not KEY=VALUE", param_hint="--param")
    for convert in (int, float):
        try:
            return key, convert(value)
        except ValueError:
            pass
    return key, value


def _phone_line(p: dict[str, Any]) -> str:
    faults = ",".join(p.get("faults") or {}) or "-"
    state = p.get("adb_state", "")
    temp = f"{p['temp_c']:.1f}C" if p.get("temp_c") is not None else ""
    return (
        f"{p['serial']:<22} {p['name']:<22} {p['profile']:<12} "
        f"{(p.get('manufacturer', '') + ' ' + p.get('model', '')).strip():<28} "
        f"SDK {p.get('sdk', '?'):<3} {state:<13} {temp:>6} faults: {faults}  [SIMULATED]"
    )


@click.group("sim")
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where the simulator daemon keeps its state and phone files "
    "(default: $FARM_SIM_STATE_DIR or ~/.cache/farm/sim).",
)
@click.pass_context
def sim(ctx: click.Context, state_dir: Path | None) -> None:
    """Simulated Android phones that a real adb server connects to (results say SIMULATED)."""
    ctx.meta["farm.sim.state_dir"] = state_dir or control.default_state_dir()


@sim.command()
@click.option(
    "--adb-port",
    type=click.IntRange(1, 65535),
    default=5037,
    show_default=True,
    help="Port of the adb server to start (or reuse) and connect the phones to.",
)
@click.option(
    "--profile",
    "profiles",
    multiple=True,
    metavar="NAME|PATH",
    help="A phone to start (repeatable; default: one of each shipped profile).",
)
@click.option(
    "--time-scale",
    type=click.FloatRange(min=0.001),
    default=1.0,
    show_default=True,
    help="How much faster than real time the phones' clocks run.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Noise seed.")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=1),
    default=90.0,
    show_default=True,
    help="Seconds to wait for the phones to be online.",
)
@click.pass_context
@_farm_errors
def up(
    ctx: click.Context,
    adb_port: int,
    profiles: tuple[str, ...],
    time_scale: float,
    seed: int,
    timeout_s: float,
) -> None:
    """Start the phones in a background daemon and `adb connect` each one."""
    state = control.start_daemon(
        _state_dir(ctx),
        adb_port=adb_port,
        profiles=profiles,
        time_scale=time_scale,
        seed=seed,
        timeout_s=timeout_s,
    )
    click.echo(
        f"simulator running (pid {state.pid}), {len(state.phones)} phone(s) on adb server "
        f"port {state.adb_port}:"
    )
    for p in state.phones:
        click.echo(_phone_line(dict(p, adb_state="device")))
    click.echo(f"try: adb -P {state.adb_port} devices -l")


@sim.command()
@click.pass_context
@_farm_errors
def down(ctx: click.Context) -> None:
    """Disconnect and stop the phones (and the adb server, if `up` started it)."""
    state = control.stop_daemon(_state_dir(ctx))
    click.echo(f"simulator stopped (pid {state.pid}, {len(state.phones)} phone(s))")


@sim.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@_farm_errors
def status(ctx: click.Context, as_json: bool) -> None:
    """Show the running phones, their adb state and active faults."""
    result = control.daemon_status(_state_dir(ctx))
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(
        f"simulator pid {result['pid']}, adb server port {result['adb_port']}, "
        f"time scale {result['time_scale']:g}"
    )
    for p in result["phones"]:
        click.echo(_phone_line(p))


@sim.command()
@click.argument("serial")
@click.argument("kind", type=click.Choice([*control.FAULT_KINDS, "all"]))
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Fault parameter (repeatable): disconnect after_bytes=N times=N (0: for good); "
    "slow delay_s=S.",
)
@click.option("--clear", is_flag=True, help="Turn the fault off (KIND `all`: every fault).")
@click.pass_context
@_farm_errors
def fault(ctx: click.Context, serial: str, kind: str, params: tuple[str, ...], clear: bool) -> None:
    """Inject a fault into phone SERIAL (its adb serial or its name)."""
    if kind == "all" and not clear:
        raise click.BadParameter("`all` only goes with --clear", param_hint="KIND")
    parsed = dict(_parse_param(p) for p in params)
    result = control.daemon_fault(
        _state_dir(ctx), serial, None if kind == "all" else kind, parsed, clear=clear
    )
    verb = "cleared" if clear else "injected"
    click.echo(f"{verb} {kind} on {result['serial']} ({result['name']}); now:")
    click.echo(_phone_line(result))


if __name__ == "__main__":
    sim()
