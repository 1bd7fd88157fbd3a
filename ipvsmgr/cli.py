"""The `ipvsmgr` command line (typer; classic Option defaults for Debian 12's typer 0.7)."""

from __future__ import annotations

import contextlib
import enum
import gc
import json
import os
import re
import sys
from typing import TYPE_CHECKING, Any, NoReturn, Optional

import click
import typer

from ipvsmgr import __version__

if TYPE_CHECKING:
    from ipvsmgr.config import Config
    from ipvsmgr.reconcile.engine import Round

DEFAULT_CONFIG = "/etc/ipvsmgr/ipvsmgr.yaml"
# `reload` waits for the loader (its budget: 120 s, config/worker.py) and the reconcile after it
RELOAD_TIMEOUT = 180.0

# Exit statuses (ipvsmgr(8), EXIT STATUS): `plan` owns 2 for "changes pending",
# so a usage error (click's default 2) gets sysexits' EX_USAGE instead, and a
# CI job never reads a typo as pending changes.
EXIT_OK, EXIT_ERROR, EXIT_CHANGES, EXIT_USAGE = 0, 1, 2, 64
click.exceptions.UsageError.exit_code = EXIT_USAGE


class _Choice(str, enum.Enum):
    """An option's fixed values: help and completion list them, others are usage errors."""

    def __str__(self) -> str:  # help's [default: info], not LogLevel.info
        return str(self.value)


class LogLevel(_Choice):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class LogFormat(_Choice):
    text = "text"
    json = "json"


LOG_LEVEL_OPTION = typer.Option(LogLevel.info, "--log-level", help="How much to log.")
LOG_FORMAT_OPTION = typer.Option(LogFormat.text, "--log-format", help="text, or json (one object per line).")

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def _duration_option(name: str, text: str) -> float:
    """A positive duration with its unit (100ms, 10s, 1.5m, 1h), or a one-line usage error."""
    m = _DURATION.fullmatch(text.strip())
    if m is None:
        hint = f"; write {text.strip()}s for seconds" if re.fullmatch(r"\d+(\.\d+)?", text.strip()) else ""
        _fail(f"{name}: {text!r} is not a duration such as 100ms, 10s, 1.5m or 1h{hint}", EXIT_USAGE)
    from ipvsmgr.config.durations import parse_duration

    seconds = parse_duration(text.strip())
    if seconds <= 0:
        _fail(f"{name}: {text!r} must be longer than 0", EXIT_USAGE)
    return seconds


app = typer.Typer(
    add_completion=True,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Declarative IPVS load balancer manager: one YAML file in, kernel IPVS state out.",
)

CONFIG_OPTION = typer.Option(
    None, "--config", "-c", envvar="IPVSMGR_CONFIG", metavar="FILE",
    help=f"Configuration file [default: {DEFAULT_CONFIG}].",
)  # fmt: skip
STATE_OPTION = typer.Option(
    "/var/lib/ipvsmgr", "--state-dir", envvar="IPVSMGR_STATE_DIR", metavar="DIR",
    help="Where ipvsmgr remembers which IPVS services it owns and which reals are draining.",
)  # fmt: skip


SOCKET_OPTION = typer.Option(
    "/run/ipvsmgr/control.sock", "--socket", envvar="IPVSMGR_SOCKET", metavar="PATH",
    help="The daemon's control socket.",
)  # fmt: skip


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ipvsmgr {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Declarative IPVS load balancer manager."""


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"ipvsmgr: {message}", err=True)
    raise typer.Exit(code)


def _load(path: str, isolated: bool = False) -> Config:
    """The file loaded and checked, or every problem printed and exit 1. Isolated:
    in a worker process (config/worker.py), so the parse's garbage never lands in
    this process: what the daemon starts with."""
    from ipvsmgr.config import ConfigError, load

    try:
        if isolated:
            from ipvsmgr.config.worker import load_isolated

            cfg = load_isolated(path)
        else:
            cfg = load(path)
    except ConfigError as e:
        for p in sorted([*e.problems, *e.warnings]):
            typer.echo(str(p), err=True)
        n, shown = e.total, len(e.problems)
        if n > shown:
            typer.echo(f"... and {n - shown} more (`ipvsmgr check {path}` lists them all)", err=True)
        typer.echo(f"{n} problem{'s' if n != 1 else ''} in {path}; nothing was applied.", err=True)
        raise typer.Exit(1) from None
    for w in cfg.warnings:  # worth a look; the file is valid
        typer.echo(str(w), err=True)
    return cfg


FILE_ARGUMENT = typer.Argument(None, metavar="[FILE]", help="The configuration (or -c FILE).")


def _config_path(file: str | None, config: str | None) -> str:
    """FILE or -c FILE, the same for every command; both, naming two files, is a usage error."""
    if file and config and os.path.abspath(file) != os.path.abspath(config):
        _fail(f"two configurations given: {file} and -c {config}; give one", EXIT_USAGE)
    return file or config or DEFAULT_CONFIG


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


@app.command()
def check(
    file: Optional[str] = FILE_ARGUMENT,  # noqa: UP007
    config: Optional[str] = CONFIG_OPTION,  # noqa: UP007
    as_json: bool = typer.Option(False, "--json", help="Print the verdict and every problem as JSON."),
) -> None:
    """Validate a configuration: schema and semantic checks, every problem as FILE:LINE:COL.

    Exit status 0 when valid, 1 otherwise. Nothing is applied.

    Examples:

      ipvsmgr check

      ipvsmgr check /etc/ipvsmgr/ipvsmgr.yaml

      ipvsmgr check --json lb.yaml | jq '.problems[]'
    """
    path = _config_path(file, config)
    if as_json:
        from ipvsmgr.config import ConfigError, load

        def rows(ps: Any) -> list[dict[str, Any]]:
            return [{"file": p.file, "line": p.line, "column": p.col, "message": p.message} for p in ps]

        try:
            warnings = rows(load(path).warnings)
        except ConfigError as e:
            out = {"file": path, "valid": False, "problems": rows(e.problems), "warnings": rows(e.warnings)}
            typer.echo(json.dumps(out, indent=2))
            raise typer.Exit(EXIT_ERROR) from None
        typer.echo(json.dumps({"file": path, "valid": True, "problems": [], "warnings": warnings}, indent=2))
        return
    cfg = _load(path)
    reals = sum(len(v.reals) for v in cfg.virtual_servers)
    vrrp = f", {_n(len(cfg.vrrp.instances), 'VRRP instance')}" if cfg.vrrp.instances else ""
    bgp = ""
    if cfg.bgp is not None:
        bgp = f", {_n(len(cfg.bgp.peers), 'BGP peer')}, {_n(len(cfg.bgp.announcements), 'BGP prefix')}"
        bgp = bgp.replace("prefixs", "prefixes")
    xdp = f", XDP guard on {', '.join(cfg.xdp.interfaces)}" if cfg.xdp is not None else ""
    counts = f"{_n(len(cfg.virtual_servers), 'virtual server')}, {_n(reals, 'real server')}{vrrp}{bgp}{xdp}"
    typer.echo(f"{path}: OK ({counts})")


@app.command()
def schema() -> None:
    """Print the JSON Schema of the configuration file (for editors and CI).

    Example:

      ipvsmgr schema > ipvsmgr.schema.json
    """
    from ipvsmgr.config.schema import schema_text

    typer.echo(schema_text(), nl=False)


def _client() -> Any:
    from ipvsmgr.ipvs.client import IPVSClient, IPVSUnavailable

    try:
        return IPVSClient()
    except IPVSUnavailable as e:
        _fail(str(e))
    except PermissionError:
        _fail("talking to IPVS needs root (CAP_NET_ADMIN)")


def _round(config_path: str, state_dir: str, apply: bool = False, force: bool = False) -> tuple[Round, int]:
    """Plan (and with `apply`, run) one round; returns it and the netlink writes.

    The removal guard compares the file with what the kernel holds of ours:
    `apply` stops before any write when it objects (unless forced), `plan`
    says that apply would."""
    from ipvsmgr.reconcile import engine, guard
    from ipvsmgr.reconcile.desired import desired_state
    from ipvsmgr.reconcile.state import StateStore

    # A one-shot command builds hundreds of thousands of objects and no
    # cycles: the cyclic collector would only rescan them (a third of load time).
    gc.disable()
    cfg = _load(config_path)
    desired, drain_timeout = desired_state(cfg), cfg.drain_timeout
    empty, share = cfg.empty, cfg.max_removed_reals
    del cfg  # the typed config is not needed past this point: free it before the dump
    if apply:
        from ipvsmgr import statefile

        try:
            statefile.check_directory(state_dir)
        except statefile.StateFileError as e:
            _fail(f"cannot apply: {e}")
    store = StateStore(state_dir)
    client = _client()
    try:
        with store.locked() if apply else contextlib.nullcontext():
            rnd = engine.plan_desired(desired, drain_timeout, client, store)
            owned = store.load().owned
            removed = guard.removal(guard.kernel_reals(rnd.kernel, owned), desired.dests)
            why = guard.EMPTY_FILE if empty and removed.services else guard.refusal(removed, share)
            if why is not None and (not force or empty):  # an empty file is never forced through
                if apply:
                    _fail(f"{config_path}: nothing applied: {why}")
                typer.echo(f"ipvsmgr: apply would refuse this: {why}", err=True)
            if apply:
                engine.apply(rnd, client, store)
            return rnd, rnd.writes
    except OSError as e:  # netlink errors, an unwritable state directory
        _fail(f"{'applying' if apply else 'reading the IPVS table'} failed: {e}")
    finally:
        client.close()


def _print_json(rnd: Round, applied: bool) -> None:
    """JSON written operation by operation: a 100,000-real plan never sits in memory as text."""
    write = sys.stdout.write
    ops = rnd.plan.operations
    write(f'{{\n  "changes": {len(ops)},\n  "operations": [')
    for i, op in enumerate(ops):
        write(("," if i else "") + "\n    " + json.dumps(op.json()))
    write('\n  ],\n  "draining": ')
    draining = [
        {"service": str(d.service), "real": str(d.real), "connections": d.connections,
         "since": d.since, "deadline": d.deadline}
        for d in rnd.plan.draining
    ]  # fmt: skip
    write(json.dumps(draining))
    if applied:
        failures = [{"operation": op.json(), "error": str(f)} for op, f in rnd.failures]
        write(f',\n  "writes": {rnd.writes},\n  "failures": {json.dumps(failures)}')
    write("\n}\n")


def _print_round(rnd: Round, as_json: bool, applied: bool, quiet: bool = False) -> None:
    if as_json:
        _print_json(rnd, applied)
        return
    ops = rnd.plan.operations
    if not quiet:
        for op in ops:
            typer.echo(op.text())
    for d in rnd.plan.draining:
        typer.echo(f"  draining {d.real} of {d.service}: {d.connections} connections")
    if not ops:
        typer.echo("No changes: the kernel matches the configuration.")
    elif applied:
        ok = len(ops) - len(rnd.failures)
        typer.echo(f"Applied {ok} of {len(ops)} operations ({rnd.writes} netlink writes).")
    else:
        typer.echo(f"{len(ops)} operation{'s' if len(ops) != 1 else ''} to apply.")


@app.command()
def plan(
    file: Optional[str] = FILE_ARGUMENT,  # noqa: UP007
    config: Optional[str] = CONFIG_OPTION,  # noqa: UP007
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the summary line."),
    state_dir: str = STATE_OPTION,
) -> None:
    """Show the IPVS operations `apply` would run, without changing anything.

    Exit status: 0 when the kernel already matches, 2 when there are changes, 1 on error.

    Examples:

      ipvsmgr plan

      ipvsmgr plan -c lb.yaml --json | jq '.operations[].op'
    """
    rnd, _ = _round(_config_path(file, config), state_dir)
    _print_round(rnd, as_json, applied=False, quiet=quiet)
    raise typer.Exit(EXIT_CHANGES if rnd.plan.changes else EXIT_OK)


@app.command()
def apply(
    file: Optional[str] = FILE_ARGUMENT,  # noqa: UP007
    config: Optional[str] = CONFIG_OPTION,  # noqa: UP007
    as_json: bool = typer.Option(False, "--json", help="Print what was done as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the summary line."),
    state_dir: str = STATE_OPTION,
    force: bool = typer.Option(
        False, "--force", help="Pass the removal guard: apply a file that removes most of what runs."
    ),
) -> None:
    """Reconcile the kernel with the configuration once (add, edit, drain, delete).

    Only services the configuration declares (or that ipvsmgr created earlier)
    are touched. Reals removed from the configuration are drained: weight 0
    first, deleted once idle or after ipvs.drain_timeout; run apply again (or
    the daemon) to finish a drain. A file that removes every owned virtual
    server or more than ipvs.max_removed_reals of the owned reals is refused
    before any write unless --force (a file with no settings always is).
    Exit status 0 on success, 1 on any error or refusal.

    Examples:

      ipvsmgr apply

      ipvsmgr apply -c lb.yaml --json
    """
    rnd, _ = _round(_config_path(file, config), state_dir, apply=True, force=force)
    _print_round(rnd, as_json, applied=True, quiet=quiet)
    if rnd.failures:
        if not as_json:
            for _op, f in rnd.failures:
                typer.echo(f"ipvsmgr: kernel refused: {f}", err=True)
        raise typer.Exit(1)


FLEET_ETCD_OPTION = typer.Option(
    [], "--fleet-etcd", metavar="URL", help="An etcd member with the fleet's configuration (repeatable)."
)
FLEET_PREFIX_OPTION = typer.Option(
    "/ipvsmgr/fleet/",
    "--fleet-prefix",
    metavar="PREFIX",
    help="The fleet's keys: PREFIXconfig, PREFIXnodes/.",
)


def _compat_option(value: str) -> tuple[str, ...]:
    from ipvsmgr.compat import KINDS

    names = tuple(n.strip() for n in value.split(",") if n.strip())
    if names in ((), ("none",)):
        return ()
    unknown = [n for n in names if n not in KINDS]
    if unknown:
        _fail(f"--metrics-compat: unknown {', '.join(unknown)} (known: {', '.join(KINDS)}, none)", EXIT_USAGE)
    return names


@app.command()
def run(
    config: Optional[str] = CONFIG_OPTION,  # noqa: UP007
    state_dir: str = STATE_OPTION,
    resync: str = typer.Option(
        "10s", "--resync", metavar="DURATION", help="Full reconcile at least this often."
    ),
    log_level: LogLevel = LOG_LEVEL_OPTION,
    log_format: LogFormat = LOG_FORMAT_OPTION,
    socket_path: str = SOCKET_OPTION,
    socket_group: Optional[str] = typer.Option(  # noqa: UP007
        None,
        "--socket-group",
        metavar="GROUP",
        help="Let this group use the control socket too (default: root only).",
    ),  # fmt: skip
    metrics: str = typer.Option(
        "127.0.0.1:9474",
        "--metrics",
        envvar="IPVSMGR_METRICS",
        metavar="ADDRESS:PORT",
        help="Serve Prometheus metrics at http://ADDRESS:PORT/metrics and the live status page at / "
        "('off': neither).",
    ),  # fmt: skip
    metrics_compat: str = typer.Option(
        "node_ipvs,keepalived",
        "--metrics-compat",
        envvar="IPVSMGR_METRICS_COMPAT",
        metavar="LIST",
        help="Also serve these existing dashboards' series: node_ipvs (node_exporter's IPVS collector), "
        "keepalived (the keepalived exporter's VRRP series); 'none': only ipvsmgr_*.",
    ),  # fmt: skip
    status_auth: Optional[str] = typer.Option(  # noqa: UP007
        None,
        "--status-auth",
        envvar="IPVSMGR_STATUS_AUTH",
        metavar="FILE",
        help="A token (the file's first line) the status page and metrics then require, as a Bearer "
        "token or a basic-auth password. Needed for the page on a non-loopback --metrics address.",
    ),  # fmt: skip
    remove_on_stop: bool = typer.Option(
        False,
        "--remove-on-stop",
        help="Delete our IPVS services on SIGTERM (default: leave them, so a restart is hitless).",
    ),  # fmt: skip
    force: bool = typer.Option(
        False, "--force", help="Start even if the file removes most of what the kernel holds of ours."
    ),
    fleet_etcd: list[str] = FLEET_ETCD_OPTION,
    fleet_prefix: str = FLEET_PREFIX_OPTION,
    node: Optional[str] = typer.Option(  # noqa: UP007
        None, "--node", help="This node's name in the fleet (default: the host name)."
    ),
) -> None:
    """Run the health checks and keep IPVS in step with them, until stopped.

    Reals failing their checks get weight 0 (or are removed), a virtual server
    that loses its quorum switches to its sorry server. SIGHUP reloads the
    configuration (an invalid one is refused and the running one kept);
    SIGTERM stops and leaves the IPVS table in place for a hitless restart.
    Speaks systemd's notify protocol when started as a Type=notify service,
    and serves `ipvsmgr status`, `reload`, `drain` ... on the control socket.

    With --fleet-etcd, the configuration comes from etcd (KEY PREFIX + config):
    each new revision is checked, written over the file and reloaded, or
    refused with its problems; the node reports under PREFIX + nodes/NAME.

    Examples:

      ipvsmgr run -c /etc/ipvsmgr/ipvsmgr.yaml
      ipvsmgr run --fleet-etcd http://198.18.0.5:2379 --node lb1
    """
    import asyncio

    from ipvsmgr import logsetup
    from ipvsmgr.ipvs.client import IPVSUnavailable
    from ipvsmgr.runtime import Daemon, StartupError
    from ipvsmgr.sdnotify import Notifier

    every = _duration_option("--resync", resync)
    logsetup.setup(log_level.value, log_format.value)
    path = config or DEFAULT_CONFIG
    fleet = _fleet_spec(fleet_etcd, fleet_prefix, node) if fleet_etcd else None
    if fleet is not None and not os.path.exists(path):
        _fleet_bootstrap(fleet, path)  # a new node: the fleet's configuration first
    loaded = _load(path, isolated=True)  # refuse to start on an invalid file, with every problem listed
    listen = None
    if metrics != "off":
        from ipvsmgr.lookup import NotFound, parse_endpoint

        try:
            host, port = parse_endpoint(metrics)
        except NotFound as e:
            _fail(f"--metrics: {e}", EXIT_USAGE)
        if port is None:
            _fail("--metrics needs ADDRESS:PORT (or off)", EXIT_USAGE)
        listen = (host, port)
    compat_kinds = _compat_option(metrics_compat)
    token = None
    if status_auth:
        from ipvsmgr.statuspage import AuthFileError, read_token

        try:
            token = read_token(status_auth)
        except AuthFileError as e:
            _fail(f"--status-auth: {e}", EXIT_USAGE)
    from ipvsmgr import statefile

    try:  # before anything reads or writes there
        statefile.check_directory(state_dir)
    except statefile.StateFileError as e:
        _fail(f"cannot start: {e}")
    notifier = Notifier.from_env()
    daemon = Daemon(
        path, state_dir, every, control_socket=socket_path or None,
        control_group=socket_group, notifier=notifier, metrics=listen, remove_on_stop=remove_on_stop,
        force=force, log_level=log_level.value, log_format=log_format.value, config=loaded, fleet=fleet,
        metrics_compat=compat_kinds, status_token=token,
    )  # fmt: skip
    try:
        asyncio.run(daemon.run())
    except (IPVSUnavailable, StartupError) as e:
        _fail(str(e))
    finally:
        notifier.close()


# ------------------------------------------------------------------ control socket clients


def _call(socket_path: str, command: str, timeout: float = 30.0, **args: str) -> Any:
    from ipvsmgr.control import ControlError, call

    try:
        return call(socket_path, command, args, timeout=timeout)
    except ControlError as e:
        _fail(str(e))


@app.command()
def show(
    file: Optional[str] = FILE_ARGUMENT,  # noqa: UP007
    config: Optional[str] = CONFIG_OPTION,  # noqa: UP007
    as_json: bool = typer.Option(False, "--json", help="Print the table as JSON."),
    socket_path: str = SOCKET_OPTION,
) -> None:
    """The kernel's IPVS table with rates, named by the configuration (no daemon needed).

    Like `ipvsadm -Ln --rate`, with each service's name from the file and, when
    the daemon answers on its socket, each real's health. Services the file does
    not declare are shown too, marked as not ipvsmgr's. Reads only.

    Examples:

      ipvsmgr show
      ipvsmgr show --json | jq '.services[] | select(.name == "web")'
    """
    from ipvsmgr import showview
    from ipvsmgr.config import ConfigError, load
    from ipvsmgr.reconcile.desired import service_key

    notes: list[str] = []
    names: dict[Any, str] = {}
    path = _config_path(file, config)
    try:
        names = {service_key(vs): vs.name for vs in load(path).virtual_servers}
    except ConfigError as e:
        notes.append(f"{path}: not used for names ({len(e.problems)} problems: ipvsmgr check {path})")
    health: dict[tuple[str, str], str] | None = None
    origins: dict[tuple[str, str], str] | None = None
    try:
        from ipvsmgr.control import ControlError, call

        st = call(socket_path, "status", timeout=5.0)
        health = {
            (vs["service"], r["address"]): r["health"] for vs in st["virtual_servers"] for r in vs["reals"]
        }
        origins = {
            (vs["service"], r["address"]): r.get("origin", "file")
            for vs in st["virtual_servers"] for r in vs["reals"]
        }  # fmt: skip
    except (ControlError, OSError, KeyError, TypeError):
        notes.append(f"no daemon on {socket_path}: health not shown")
    client = _client()
    try:
        table = client.table(stats=True)
    except OSError as e:
        _fail(f"reading the IPVS table failed: {e}")
    finally:
        client.close()
    services = showview.rows(table, names, health, origins)
    if as_json:
        typer.echo(json.dumps({"notes": notes, "services": services}, indent=2))
        return
    typer.echo(showview.render(services, notes))


@app.command()
def status(
    socket_path: str = SOCKET_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print the daemon's answer as JSON."),
) -> None:
    """Show the virtual servers, their reals (weight, health, connections) and VRRP state.

    Example:

      ipvsmgr status
      ipvsmgr status --json | jq '.virtual_servers[].reals[] | select(.health == "down")'
    """
    result = _call(socket_path, "status")
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    from ipvsmgr.statusview import render

    typer.echo(render(result))


@app.command()
def top(
    socket_path: str = SOCKET_OPTION,
    interval: float = typer.Option(1.0, "--interval", "-n", min=0.1, help="Seconds between refreshes."),
    count: int = typer.Option(0, "--count", min=0, help="Stop after this many refreshes (0: until Ctrl-C)."),
) -> None:
    """A live view of the status: connection rates per virtual server and real, health, VRRP.

    Example:

      ipvsmgr top -n 2
    """
    import time

    from ipvsmgr.statusview import render_top

    before: dict[str, Any] | None = None
    t0 = time.monotonic()
    n = 0
    try:
        while True:
            now = _call(socket_path, "status")
            t1 = time.monotonic()
            screen = render_top(now, before, t1 - t0)
            if sys.stdout.isatty():
                typer.echo("\x1b[H\x1b[2J", nl=False)
            typer.echo(screen)
            n += 1
            if count and n >= count:
                return
            before, t0 = now, t1
            time.sleep(interval)
    except KeyboardInterrupt:
        return


@app.command()
def reload(
    socket_path: str = SOCKET_OPTION,
    force: bool = typer.Option(
        False, "--force", help="Pass the removal guard: apply a file that removes most of what runs."
    ),
) -> None:
    """Make the daemon read its configuration again; print every problem if it is invalid.

    An invalid file changes nothing (exit status 1); a valid one is applied as a
    difference: unchanged reals keep their health, unchanged VRRP instances their state.
    A file with no settings is always refused; one that removes every virtual
    server, every VIP or more than ipvs.max_removed_reals of the reals is
    refused unless --force.

    Example:

      ipvsmgr check && ipvsmgr reload
    """
    _call(socket_path, "reload", RELOAD_TIMEOUT, **({"force": "yes"} if force else {}))
    typer.echo("reloaded")


@app.command()
def drain(
    virtual_server: str = typer.Argument(..., help="The virtual server's name."),
    real: str = typer.Argument(..., help="The real as ADDRESS or ADDRESS:PORT ([v6]:PORT)."),
    socket_path: str = SOCKET_OPTION,
) -> None:
    """Give a real weight 0: no new connections, existing ones go on.

    Kept until `undrain`, across reloads and restarts.

    Example:

      ipvsmgr drain web 198.18.1.11:8080
    """
    r = _call(socket_path, "drain", virtual_server=virtual_server, real=real)
    typer.echo(f"{r['real']} of {r['virtual_server']}: drained" + ("" if r["changed"] else " (already)"))


@app.command()
def undrain(
    virtual_server: str = typer.Argument(..., help="The virtual server's name."),
    real: str = typer.Argument(..., help="The real as ADDRESS or ADDRESS:PORT ([v6]:PORT)."),
    socket_path: str = SOCKET_OPTION,
) -> None:
    """Undo `drain`: the real's health decides its weight again.

    Example:

      ipvsmgr undrain web 198.18.1.11:8080
    """
    r = _call(socket_path, "undrain", virtual_server=virtual_server, real=real)
    typer.echo(
        f"{r['real']} of {r['virtual_server']}: back in rotation"
        + ("" if r["changed"] else " (was not drained)")
    )


@app.command()
def disable(
    virtual_server: str = typer.Argument(..., help="The virtual server's name."),
    socket_path: str = SOCKET_OPTION,
) -> None:
    """Give every real of a virtual server weight 0 (the service stays; connections go on).

    Kept until `enable`, across reloads and restarts.

    Example:

      ipvsmgr disable web
    """
    r = _call(socket_path, "disable", virtual_server=virtual_server)
    typer.echo(f"{r['virtual_server']}: disabled" + ("" if r["changed"] else " (already)"))


@app.command()
def enable(
    virtual_server: str = typer.Argument(..., help="The virtual server's name."),
    socket_path: str = SOCKET_OPTION,
) -> None:
    """Undo `disable`.

    Example:

      ipvsmgr enable web
    """
    r = _call(socket_path, "enable", virtual_server=virtual_server)
    typer.echo(f"{r['virtual_server']}: enabled" + ("" if r["changed"] else " (was not disabled)"))


@app.command("drain-node")
def drain_node(socket_path: str = SOCKET_OPTION) -> None:
    """Withdraw every BGP route of this node for maintenance; established flows keep being served.

    The routers move new flows to the other nodes. Kept until `undrain-node`,
    across reloads and restarts.

    Example:

      ipvsmgr drain-node && sleep 300 && systemctl stop ipvsmgr
    """
    r = _call(socket_path, "drain_node")
    typer.echo("node drained: every route withdrawn" + ("" if r["changed"] else " (already)"))


@app.command("undrain-node")
def undrain_node(socket_path: str = SOCKET_OPTION) -> None:
    """Undo `drain-node`: announce the routes again as health and VRRP decide.

    Example:

      ipvsmgr undrain-node
    """
    r = _call(socket_path, "undrain_node")
    announced = ", ".join(r["announced"]) or "none yet"
    typer.echo(
        "node back in service; announced: " + announced + ("" if r["changed"] else " (was not drained)")
    )


import_app = typer.Typer(
    help="Convert another load balancer's configuration to ipvsmgr's YAML.", no_args_is_help=True
)
app.add_typer(import_app, name="import")
IMPORT_OUT = typer.Option(
    None, "--output", "-o", metavar="OUT", help="Write the YAML here [default: stdout]."
)


@import_app.command("keepalived")
def import_keepalived(
    file: str = typer.Argument("/etc/keepalived/keepalived.conf", metavar="[FILE]"),
    out: Optional[str] = IMPORT_OUT,  # noqa: UP007
    config_id: Optional[str] = typer.Option(  # noqa: UP007
        None, "--config-id", "-i", help="keepalived's -i: which @ID lines apply [default: the host name]."
    ),
) -> None:
    """Convert a keepalived.conf (and what it includes) to ipvsmgr YAML.

    Every setting with no ipvsmgr equivalent is listed with its FILE:LINE and
    the reason, on stderr and in the YAML's header. Exit status 0: complete;
    1: written, but something has no equivalent; 2: refused (a file keepalived
    -t refuses, or a result `ipvsmgr check` refuses), nothing written.

    Examples:

      ipvsmgr import keepalived -o /etc/ipvsmgr/ipvsmgr.yaml

      ipvsmgr import keepalived /etc/keepalived/keepalived.conf --config-id lb2
    """
    from ipvsmgr.migrate import command

    outcome = command.import_keepalived(file, config_id)
    raise typer.Exit(command.emit(outcome, out, typer.echo, lambda t: typer.echo(t, err=True)))


@import_app.command("ipvsadm")
def import_ipvsadm(
    file: Optional[str] = typer.Argument(None, metavar="[FILE]", help="ipvsadm -Sn output; - for stdin."),  # noqa: UP007
    out: Optional[str] = IMPORT_OUT,  # noqa: UP007
    live: bool = typer.Option(False, "--live", help="Read the kernel's IPVS table instead of a file."),
) -> None:
    """Convert `ipvsadm -Sn` output, or the live IPVS table, to ipvsmgr YAML.

    Exit status as for `import keepalived`.

    Examples:

      ipvsadm -Sn | ipvsmgr import ipvsadm - -o ipvsmgr.yaml

      ipvsmgr import ipvsadm --live
    """
    from ipvsmgr.migrate import command

    if live == (file is not None):
        _fail("give FILE (- for stdin) or --live", EXIT_USAGE)
    if live:
        from ipvsmgr.ipvs.client import IPVSClient
        from ipvsmgr.migrate.ipvsadm import save_lines

        try:
            with IPVSClient() as client:
                text = save_lines(client.table())
        except OSError as e:
            _fail(f"cannot read the IPVS table: {e}", EXIT_ERROR)
        what = "the live IPVS table"
    elif file == "-":
        text, what = sys.stdin.read(), "<stdin>"
    else:
        try:
            with open(str(file)) as f:
                text, what = f.read(), str(file)
        except OSError as e:
            _fail(f"cannot read {file}: {e.strerror}", EXIT_ERROR)
    outcome = command.import_ipvsadm(text, what)
    raise typer.Exit(command.emit(outcome, out, typer.echo, lambda t: typer.echo(t, err=True)))


realserver_app = typer.Typer(
    help="Prepare a real server for direct routing or tunnel forwarding (run on the real).",
    no_args_is_help=True,
)
app.add_typer(realserver_app, name="realserver")

VIP_OPTION = typer.Option(..., "--vip", help="A VIP this real serves (repeat for more).")


class RealForwarding(_Choice):
    dr = "dr"
    tunnel = "tunnel"


class TunnelType(_Choice):
    ipip = "ipip"
    gre = "gre"
    gue = "gue"


# Choices: help and shell completion list the values, a wrong one is a usage error.
FORWARDING_OPTION = typer.Option(
    RealForwarding.dr, "--forwarding", help="How the balancer sends to this real (nat needs nothing here)."
)
TUNNEL_OPTION = typer.Option(TunnelType.ipip, "--tunnel", help="With --forwarding tunnel: the encapsulation.")
GUE_PORT_OPTION = typer.Option(0, "--gue-port", help="With --tunnel gue: the UDP port (e.g. 6080).")


def _realserver_items(
    vips: list[str], fwd: RealForwarding, tun: TunnelType, gue_port: int
) -> tuple[Any, list[Any]]:
    import ipaddress

    from ipvsmgr import realserver
    from vrrp.netlink import Host

    forwarding, tunnel = fwd.value, tun.value
    if forwarding == "tunnel" and tunnel == "gue" and not 0 < gue_port < 65536:
        _fail("--tunnel gue needs --gue-port (the port the balancer's GUE tunnel sends to, e.g. 6080)")
    try:
        addresses = [ipaddress.ip_address(v) for v in vips]
    except ValueError as e:
        _fail(str(e))
    host = Host()
    return host, realserver.items(host, addresses, forwarding, tunnel, gue_port)


@realserver_app.command("check")
def realserver_check(
    vip: list[str] = VIP_OPTION,
    forwarding: RealForwarding = FORWARDING_OPTION,
    tunnel: TunnelType = TUNNEL_OPTION,
    gue_port: int = GUE_PORT_OPTION,
) -> None:
    """List what this host needs to be a real server, and what is missing (exit 1 if anything is).

    Example:

      ipvsmgr realserver check --vip 198.18.100.1 --forwarding tunnel --tunnel gre
    """
    host, items = _realserver_items(vip, forwarding, tunnel, gue_port)
    host.close()
    for item in items:
        typer.echo(f"{'ok     ' if item.ok else 'MISSING'}  {item.what}")
    missing = sum(1 for i in items if not i.ok)
    if missing:
        typer.echo(f"{missing} missing: run `ipvsmgr realserver setup` with the same options", err=True)
        raise typer.Exit(1)


@realserver_app.command("setup")
def realserver_setup(
    vip: list[str] = VIP_OPTION,
    forwarding: RealForwarding = FORWARDING_OPTION,
    tunnel: TunnelType = TUNNEL_OPTION,
    gue_port: int = GUE_PORT_OPTION,
) -> None:
    """Put the VIPs on lo, restrict ARP, and for tunnels bring up decapsulation (idempotent).

    Not persistent across reboots: put the same command in the real's boot
    sequence (or its network configuration).

    Example:

      ipvsmgr realserver setup --vip 198.18.100.1 --vip 2001:db8::100
    """
    import subprocess

    host, items = _realserver_items(vip, forwarding, tunnel, gue_port)
    try:
        for item in items:
            if item.ok:
                continue
            try:
                item.fix()
            except (OSError, subprocess.CalledProcessError) as e:
                _fail(f"{item.what}: {e}")
            typer.echo(f"done     {item.what}")
        still = [i for i in _realserver_items(vip, forwarding, tunnel, gue_port)[1] if not i.ok]
    finally:
        host.close()
    if still:
        _fail("still missing after setup: " + "; ".join(i.what for i in still))
    typer.echo(f"real server ready for {forwarding}" + (f" ({tunnel})" if forwarding == "tunnel" else ""))


def _fleet_spec(urls: list[str], prefix: str, node: str | None) -> Any:
    import socket as socket_module

    from ipvsmgr.fleet import FleetSpec

    members = []
    for url in urls:
        hostport = url.removeprefix("http://").rstrip("/")
        host, _, port = hostport.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            _fail(f"--fleet-etcd {url!r}: expected HOST:PORT or http://HOST:PORT", EXIT_USAGE)
        members.append((host.strip("[]"), int(port)))
    if not prefix.startswith("/") or not prefix.endswith("/"):
        _fail(f"--fleet-prefix {prefix!r}: a key prefix starts and ends with /", EXIT_USAGE)
    return FleetSpec(tuple(members), prefix, node or socket_module.gethostname())


def _fleet_bootstrap(spec: Any, path: str) -> None:
    """No local file yet: the fleet's current configuration, checked, becomes it."""
    import asyncio

    from ipvsmgr import statefile
    from ipvsmgr.config import ConfigError, load_text
    from ipvsmgr.etcdclient import Client, EtcdError

    try:
        kvs, _ = asyncio.run(Client(spec.endpoints).range(spec.config_key))
    except (EtcdError, OSError, TimeoutError) as e:
        _fail(f"cannot start: no {path}, and the fleet's etcd does not answer: {e}")
    if not kvs:
        _fail(f"cannot start: no {path}, and etcd holds no {spec.config_key} yet (ipvsmgr fleet push)")
    text = kvs[0].value.decode("utf-8", errors="replace")
    try:
        load_text(text, spec.label(kvs[0].mod_revision))
    except ConfigError as e:
        _fail(f"cannot start: revision {kvs[0].mod_revision} of {spec.config_key} is refused:\n{e}")
    statefile.write_text(path, text)


fleet_app = typer.Typer(help="A fleet of nodes on one configuration in etcd.", no_args_is_help=True)
app.add_typer(fleet_app, name="fleet")


@fleet_app.command("status")
def fleet_status(
    etcd: list[str] = FLEET_ETCD_OPTION,
    prefix: str = FLEET_PREFIX_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print the reports as JSON."),
) -> None:
    """Every node of the fleet: the revision it runs, and what it refused with its problems.

    Example:

      ipvsmgr fleet status --fleet-etcd http://198.18.0.5:2379
    """
    import asyncio
    import time

    from ipvsmgr.etcdclient import Client, EtcdError
    from ipvsmgr.fleet import parse_report, render

    if not etcd:
        _fail("--fleet-etcd is needed (the etcd holding the fleet)", EXIT_USAGE)
    spec = _fleet_spec(etcd, prefix, "-")
    client = Client(spec.endpoints)

    async def read() -> tuple[int, list[Any]]:
        config, _ = await client.range(spec.config_key)
        nodes, _ = await client.range(spec.nodes_prefix, prefix=True)
        return (config[0].mod_revision if config else 0), nodes

    try:
        revision, nodes = asyncio.run(read())
    except (EtcdError, OSError, TimeoutError) as e:
        _fail(str(e))
    reports = [parse_report(kv.key, kv.value) for kv in nodes]
    if as_json:
        typer.echo(json.dumps({"revision": revision, "nodes": reports}, indent=2))
        return
    typer.echo(render(revision, reports, time.time()))


@fleet_app.command("push")
def fleet_push(
    file: str = typer.Argument(..., help="The configuration every node is to run."),
    etcd: list[str] = FLEET_ETCD_OPTION,
    prefix: str = FLEET_PREFIX_OPTION,
) -> None:
    """Check a configuration here, then put it as the fleet's new revision.

    Each node checks it again (its kernel, its files) and applies or refuses it.

    Example:

      ipvsmgr fleet push lb.yaml --fleet-etcd http://198.18.0.5:2379
    """
    import asyncio

    from ipvsmgr.etcdclient import Client, EtcdError

    if not etcd:
        _fail("--fleet-etcd is needed (the etcd holding the fleet)", EXIT_USAGE)
    spec = _fleet_spec(etcd, prefix, "-")
    _load(file)  # every problem, here first
    with open(file, encoding="utf-8") as f:
        text = f.read()
    try:
        revision = asyncio.run(Client(spec.endpoints).put(spec.config_key, text))
    except (EtcdError, OSError, TimeoutError) as e:
        _fail(str(e))
    typer.echo(f"{spec.config_key}: revision {revision}")


real_app = typer.Typer(
    help="Add, remove and weigh reals of a running daemon, without a reload.", no_args_is_help=True
)
app.add_typer(real_app, name="real")
REAL_ARG = typer.Argument(..., help="The real as ADDRESS or ADDRESS:PORT ([v6]:PORT).")
VS_ARG = typer.Argument(..., help="The virtual server's name.")
WEIGHT_OPTION = typer.Option(
    None, "--weight", "-w", min=0, max=65535, help="Its weight (default: the virtual server's)."
)


@real_app.command("add")
def real_add(
    virtual_server: str = VS_ARG,
    real: str = REAL_ARG,
    weight: Optional[int] = WEIGHT_OPTION,  # noqa: UP007
    socket_path: str = SOCKET_OPTION,
) -> None:
    """Add a real now: health-checked like the file's reals, kept across reloads and restarts.

    It takes the virtual server's forwarding, tunnel and health check. A
    real the file lists later replaces it. Without a port it gets the
    virtual port.

    Example:

      ipvsmgr real add web 198.18.1.14:8080 --weight 2
    """
    args = {"virtual_server": virtual_server, "real": real}
    if weight is not None:
        args["weight"] = str(weight)
    r = _call(socket_path, "real_add", 30.0, **args)
    what = "added" if r["added"] else "weight set" if r["changed"] else "already there"
    checked = ", health-checked" if r["checked"] else ""
    typer.echo(f"{r['real']} of {r['virtual_server']}: {what} (weight {r['weight']}{checked})")


@real_app.command("remove")
def real_remove(virtual_server: str = VS_ARG, real: str = REAL_ARG, socket_path: str = SOCKET_OPTION) -> None:
    """Remove a real added with `real add`: drained first, as when the file drops one.

    Its connections go on until they end or drain_timeout passes.

    Example:

      ipvsmgr real remove web 198.18.1.14:8080
    """
    r = _call(socket_path, "real_remove", virtual_server=virtual_server, real=real)
    typer.echo(f"{r['real']} of {r['virtual_server']}: removed (draining)")


@real_app.command("weight")
def real_weight(
    virtual_server: str = VS_ARG,
    real: str = REAL_ARG,
    weight: int = typer.Argument(..., min=0, max=65535, help="The new weight."),
    socket_path: str = SOCKET_OPTION,
) -> None:
    """Set a real's weight now, for any real, file or `real add`.

    On a real of the file it lasts across reloads and restarts until the
    file changes that real's weight (the file wins, with a log line).

    Example:

      ipvsmgr real weight web 198.18.1.11:8080 5
    """
    r = _call(socket_path, "real_weight", virtual_server=virtual_server, real=real, weight=str(weight))
    note = "" if r["changed"] else " (already)"
    typer.echo(f"{r['real']} of {r['virtual_server']}: weight {r['was']} -> {r['weight']}{note}")


vrrp_app = typer.Typer(help="VRRP instances: hand mastership over and take it back.", no_args_is_help=True)
app.add_typer(vrrp_app, name="vrrp")


@vrrp_app.command("release")
def vrrp_release(
    instance: str = typer.Argument(..., help="The VRRP instance's name."),
    socket_path: str = SOCKET_OPTION,
) -> None:
    """Hand mastership to the peer without a gap and stay backup (priority 1) until `reclaim`.

    Kept across reloads and restarts.

    Example:

      ipvsmgr vrrp release outside
    """
    r = _call(socket_path, "vrrp_release", instance=instance)
    typer.echo(f"{r['instance']}: released, now {r['state']}")


@vrrp_app.command("reclaim")
def vrrp_reclaim(
    instance: str = typer.Argument(..., help="The VRRP instance's name."),
    socket_path: str = SOCKET_OPTION,
) -> None:
    """Undo `release`: the configured priority again (with preempt, mastership comes back).

    Example:

      ipvsmgr vrrp reclaim outside
    """
    r = _call(socket_path, "vrrp_reclaim", instance=instance)
    typer.echo(f"{r['instance']}: configured priority restored, now {r['state']}")


def _lab_vm_tools(python: str) -> tuple[str | None, str | None, list[str]]:
    """(vng, kernel, what is missing) for running the lab in a VM.

    scripts/lab.sh installs virtme-ng into the venv whose python runs this,
    and a clean environment (`env -i`, sudo's secure_path) does not have that
    venv on PATH: look beside the interpreter too."""
    import glob
    import shutil

    kernels = sorted(glob.glob("/boot/vmlinuz-*"))
    vng = shutil.which("vng") or shutil.which("vng", path=os.path.dirname(python))
    missing = [
        what
        for what, ok in (
            ("virtme-ng (vng: pip install virtme-ng)", vng),
            ("qemu (apt-get install qemu-system-x86)", shutil.which("qemu-system-x86_64")),
            ("a kernel with IPVS (apt-get install linux-image-amd64)", kernels),
        )
        if not ok
    ]
    return vng, (kernels[-1] if kernels else None), missing


def _lab_in_vm(why: str, work_dir: str | None) -> NoReturn:
    """This kernel has no IPVS: run the same command inside a virtme-ng VM booted
    from the newest /boot/vmlinuz (Debian's has IPVS), sharing this filesystem."""
    import shlex

    vng, kernel, missing = _lab_vm_tools(sys.executable)
    if os.environ.get("IPVSMGR_IN_VM") == "1":
        _fail(f"{why}, and this is already the lab's VM")
    if missing or vng is None or kernel is None:
        _fail(f"{why}; no VM to run the lab in: missing {', '.join(missing)} (scripts/lab.sh installs them)")
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    inner = [sys.executable, "-m", "ipvsmgr", "lab"] + (["--work-dir", work_dir] if work_dir else [])
    command = (
        f"cd {shlex.quote(os.getcwd())} && IPVSMGR_IN_VM=1 PYTHONPATH={shlex.quote(package_root)} "
        + shlex.join(inner)
    )
    typer.echo(f"this kernel has no IPVS ({why}): running the lab inside a VM ({kernel}) ...")
    sys.stdout.flush()
    argv = [vng, "--run", kernel, "--user", "root", "--disable-kvm", "--memory", "2G", "--cpus", "2"]
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join((os.path.dirname(sys.executable), env.get("PATH", os.defpath)))
    os.execve(vng, [*argv, "--exec", command], env)


@app.command()
def lab(
    work_dir: Optional[str] = typer.Option(  # noqa: UP007
        None,
        "--work-dir",
        metavar="DIR",
        help="Keep configurations and logs here (default: a temp dir).",
    ),
) -> None:
    """Show ipvsmgr at work in network namespaces, then remove them.

    Builds a client, a VRRP pair of load balancers running `ipvsmgr run` (IPVS
    direct routing, connection sync) and three real servers on one bridge;
    shows requests balanced by weight, a real failing and coming back, and the
    master crashing while a connection stays up. Needs root; on a kernel
    without IPVS it runs itself inside a virtme-ng VM booted from the newest
    /boot/vmlinuz (Debian's kernel has IPVS).

    Example:

      sudo ipvsmgr lab
    """
    import tempfile
    from pathlib import Path

    from ipvsmgr.ipvs.client import IPVSClient, IPVSUnavailable
    from ipvsmgr.lab import run_demo

    if os.geteuid() != 0:
        _fail("ipvsmgr lab needs root (network namespaces, IPVS)")
    try:
        IPVSClient().close()
    except IPVSUnavailable as e:
        _lab_in_vm(str(e), work_dir)
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="ipvsmgr-lab-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        res = run_demo(work, typer.echo)
    except (RuntimeError, TimeoutError, OSError) as e:
        _fail(f"the lab failed: {e} (daemon logs in {work})")
    gap = res["connection_gap_s"]
    typer.echo("")
    typer.echo("summary")
    typer.echo(f"  balanced 1:2:3      {dict(sorted(res['balanced'].items()))}")
    typer.echo(f"  rs2 down            {dict(sorted(res['without_rs2'].items()))}")
    typer.echo(f"  failover            VIP on lb2 after {res['failover_s']:.2f}s")
    kept = "kept" if res["connection_error"] is None else f"lost: {res['connection_error']}"
    typer.echo(f"  open connection     {kept}, longest silence {gap or 0:.2f}s")
    typer.echo(f"  after failover      {dict(sorted(res['after_failover'].items()))}")
    if res["connection_error"] is not None:
        raise typer.Exit(1)


def main() -> None:
    try:
        app(prog_name="ipvsmgr")
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


xdp_app = typer.Typer(help="The XDP guard: status, run-time allow/block lists, detach.", no_args_is_help=True)
app.add_typer(xdp_app, name="xdp")


@xdp_app.command("status")
def xdp_status(
    socket_path: str = SOCKET_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print the daemon's answer as JSON."),
) -> None:
    """Where the guard is attached, its counters per verdict and reason, attack state, recent drops.

    Example:

      ipvsmgr xdp status
      ipvsmgr xdp status --json | jq '.counters | map_values(.packets)'
    """
    result = _call(socket_path, "xdp_status")
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    from ipvsmgr.statusview import render_xdp

    typer.echo(render_xdp(result))


@xdp_app.command("block")
def xdp_block(
    prefix: str = typer.Argument(..., help="Source address or prefix (198.18.7.0/24, 2001:db8::/48)."),
    tarpit: bool = typer.Option(False, "--tarpit", help="Answer its SYNs with a zero-window SYN-ACK."),
    remove: bool = typer.Option(False, "--remove", help="Take the prefix off the run-time blocklist."),
    socket_path: str = SOCKET_OPTION,
) -> None:
    """Block a source at run time (kept across reloads and restarts until removed).

    Example:

      ipvsmgr xdp block 198.18.7.0/24
      ipvsmgr xdp block 198.18.9.9 --tarpit
      ipvsmgr xdp block 198.18.7.0/24 --remove
    """
    action = "remove" if remove else ("tarpit" if tarpit else "drop")
    r = _call(socket_path, "xdp_block", prefix=prefix, action=action)
    _echo_list_change(r)


@xdp_app.command("allow")
def xdp_allow(
    prefix: str = typer.Argument(..., help="Source address or prefix that skips every check."),
    remove: bool = typer.Option(False, "--remove", help="Take the prefix off the run-time allowlist."),
    socket_path: str = SOCKET_OPTION,
) -> None:
    """Allow a source at run time: its traffic to the VIPs skips every check.

    Example:

      ipvsmgr xdp allow 198.18.5.0/24
    """
    r = _call(socket_path, "xdp_allow", prefix=prefix, action="remove" if remove else "add")
    _echo_list_change(r)


def _echo_list_change(r: dict[str, Any]) -> None:
    verb = {"remove": "removed from", "add": "added to", "drop": "added to", "tarpit": "added (tarpit) to"}
    text = f"{r['prefix']} {verb[r['action']]} the run-time {r['list']}"
    if not r["changed"]:
        text += " (no change)"
    if r["also_in_config"]:
        text += "; the configuration file lists it too"
    if r["guard"] != "active":
        text += f"; note: the guard is {r['guard']}"
    typer.echo(text)


@xdp_app.command("detach")
def xdp_detach(
    interface: list[str] = typer.Argument(..., help="Interfaces to take the guard off."),  # noqa: B008
    unpin: bool = typer.Option(False, "--unpin", help="Also delete the pinned maps (counters, lists)."),
    pin_path: str = typer.Option("/sys/fs/bpf/ipvsmgr", "--pin-path", help="Where the maps are pinned."),
) -> None:
    """Take the guard off interfaces without a daemon (the daemon leaves it attached on stop,
    so that a restart keeps the VIPs guarded).

    Example:

      ipvsmgr xdp detach eth0 eth1 --unpin
    """
    import socket

    from bpf_offload import guard

    unknown = []
    for ifname in interface:
        try:
            socket.if_nametoindex(ifname)
        except OSError:
            unknown.append(ifname)
    if unknown:
        _fail(f"no interface named {', '.join(unknown)}; nothing detached")
    for ifname in interface:
        try:
            done = guard.detach(ifname)
        except OSError as e:
            _fail(f"detaching from {ifname} failed: {e}")
        typer.echo(f"{ifname}: " + ("detached" if done else "no ipvsmgr XDP program attached"))
    if unpin:
        guard.unpin(pin_path)
        typer.echo(f"{pin_path}: maps unpinned")


_EXAMPLES = re.compile(r"^(\s*)Examples?:\s*$", re.M)


def _examples_verbatim(t: typer.Typer) -> None:
    """Help shows each example on its own line: click rewraps paragraphs, which ran
    consecutive examples together; a paragraph opened by \\b is kept as written."""
    for info in t.registered_commands:
        fn = info.callback
        doc = fn.__doc__ if fn is not None else None
        m = _EXAMPLES.search(doc or "")
        if fn is None or doc is None or m is None:
            continue
        head, tail = doc[: m.end()], doc[m.end() :]
        lines = [line for line in tail.splitlines() if line.strip()]
        fn.__doc__ = head + "\n\n" + m.group(1) + "\b\n" + "\n".join(lines) + "\n"
    for group in t.registered_groups:
        if group.typer_instance is not None:
            _examples_verbatim(group.typer_instance)


_examples_verbatim(app)
