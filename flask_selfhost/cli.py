"""
The ``flask-selfhost`` command
==============================

``flask-selfhost check REMOTE [LOCAL] [--app module:name]`` applies the rule
to a pair of addresses, with the options of that app's guard, and says what
the guard would do (exit 0 allowed, 1 refused, 2 the app cannot be loaded or
is not guarded), for reading a log line or a firewall plan. ``flask selfhost status`` says whether
the app that ``flask`` loads is guarded, and how.

``flask-selfhost doctor [--port N] [--app module:name] [--json]`` (or
``flask selfhost doctor``) audits this host for ways other hosts can reach
what should be local: see :mod:`flask_selfhost.doctor`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup, NoAppException, ScriptInfo

from . import __version__, doctor
from .connection import FOLDS_UNDERSCORE_NAMES
from .extension import EXTENSION_NAME, exempt_views
from .facts import KnownConnection, RequestFacts
from .forwarded import DROP_UNDERSCORE_NAMES, TrustedProxies
from .guard import judge
from .middleware import log_field
from .options import Options

CHECK_HELP = """\
Apply the guard's source rule to a client address and the local address the
connection arrived on, as the guard would for a request without forwarding
headers, and print the decision and its reason.

With --app, the options of that app's guard apply (trusted_proxies,
unix_socket_is_local...): a Flask app with SelfHost or SelfHostMiddleware, a
WSGI app wrapped by SelfHostMiddleware, an ASGI app with
SelfHostASGIMiddleware (Starlette's add_middleware too), a Quart app with
flask_selfhost.quart.SelfHost.

exit status:
  0  allowed: the client is on this host (loopback, or client == local)
  1  refused: another host, or no usable client address
  2  --app could not be imported, or is not guarded by flask_selfhost
"""

DOCTOR_HELP = """\
Audit this host (this network namespace) for ways other hosts can reach what
should be local: listeners, forwarders (ssh, socat, nginx, docker-proxy...),
route_localnet=1, NAT rules that DNAT to loopback, and whether --app is
guarded. Root reads every process and the NAT rules; from a venv, keep the
venv's script under sudo:  sudo "$(command -v flask-selfhost)" doctor

exit status:
  0  nothing risky (other hosts that reach a guarded app are refused by it)
  1  something risky: other hosts can reach what should be local
  2  nothing risky found, but something could not be inspected
With --port, the status is about that port: NAT rules and unreadable
listeners of other ports are notes; forwarders count on any port.
"""


def check(remote: str, local: str | None, app_spec: str | None = None) -> int:
    """Judge one address pair, with the options of ``app_spec``'s guard if
    given; print the decision; the exit status (0 allowed, 1 refused, 2 the
    app cannot say)."""
    options, whose = Options(), ""
    if app_spec is not None:
        try:
            app = doctor.load_app(app_spec)
        except Exception as error:  # any import-time failure of the user's app
            print(f"flask-selfhost: could not import {app_spec}: {error!r}", file=sys.stderr)
            return 2
        found = doctor.guard_of(app)
        if found is None:
            print(
                f"flask-selfhost: {app_spec} is not guarded by flask_selfhost: it refuses "
                "no one, so there are no options to apply",
                file=sys.stderr,
            )
            return 2
        options, whose = found, f", options of {app_spec}"
    facts = RequestFacts(remote, KnownConnection(local=local, peer=remote))
    decision = judge(facts, options)
    verdict = "allowed" if decision.allowed else "refused"
    answer = "" if decision.allowed or not whose else f"; it answers {options.refuse_status}"
    pair = f"remote={log_field(remote)}, local={log_field(local)}"  # as the log writes them
    print(f"{verdict}: {decision.reason} ({pair}{whose}){answer}")
    return 0 if decision.allowed else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="flask-selfhost",
        description="Tools for the flask_selfhost guard: check an address pair, "
        "audit this host (doctor).",
        epilog="Inside a Flask project, 'flask selfhost status' says whether the app is guarded.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check_parser = commands.add_parser(
        "check",
        help="say whether a client address and local address pass the rule",
        description=CHECK_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples: flask-selfhost check 10.0.0.2 127.0.0.1   (refused, exit 1)\n"
        "          flask-selfhost check 127.0.0.1 --app demo_app:app",
    )
    check_parser.add_argument("remote", help="the client address (REMOTE_ADDR)")
    check_parser.add_argument(
        "local", nargs="?", help="the local address the connection arrived on (SERVER_ADDR)"
    )
    check_parser.add_argument(
        "--app",
        metavar="MODULE:NAME",
        help="apply the options of this app's guard: demo_app:app, a factory "
        "demo_app:create_app, or an ASGI app (FastAPI, Starlette, Quart)",
    )
    doctor_parser = commands.add_parser(
        "doctor",
        help="audit this host for ways other hosts can reach local apps",
        description=DOCTOR_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    doctor_parser.add_argument(
        "--port", type=int, help="only the listeners on this TCP port; the exit status is about it"
    )
    doctor_parser.add_argument(
        "--app",
        metavar="MODULE:NAME",
        help="the app to check: demo_app:app, or a factory: demo_app:create_app, "
        "demo_app:create_app(guarded=False)",
    )
    doctor_parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    args = parser.parse_args(argv)
    if args.command == "doctor":
        return doctor.run(args.port, args.app, as_json=args.json)
    return check(args.remote, args.local, args.app)


# flask selfhost ... -------------------------------------------------------

flask_group = AppGroup("selfhost", help="The flask_selfhost guard of this app.")


def app_name(app: Flask) -> str:
    """``module:attr`` as the user gave it to ``flask --app``, else the import name."""
    info = click.get_current_context().find_object(ScriptInfo)
    path = getattr(info, "app_import_path", None)
    return path or app.import_name


def shown_value(value: Any) -> str:
    """An option's value as a person writes it in a config, not a repr."""
    if isinstance(value, TrustedProxies):
        entries = sorted(str(network) for network in value.networks) + (
            ["unix"] if value.unix else []
        )
        return ", ".join(entries) or "(none)"
    if isinstance(value, frozenset):
        return ", ".join(sorted(value)) or "(none)"
    if value is None:
        return "(default)"
    return str(value)


def option_lines(options: Options) -> list[str]:
    """One ``name  value`` line per option, in the order of the docs' table."""
    names = [option.name for option in fields(options) if option.init]
    width = max(map(len, names))
    return [f"  {name:<{width}}  {shown_value(getattr(options, name))}" for name in names]


def underscore_line(options: Options) -> str:
    """What ``proxy_drops_underscore_headers`` means for a proxied app."""
    if options.proxy_drops_underscore_headers:
        return (
            "proxy_drops_underscore_headers: the proxy must drop header names with "
            f"underscores ({DROP_UNDERSCORE_NAMES}); 'selfhost doctor' checks nginx"
        )
    servers = ", ".join(sorted(FOLDS_UNDERSCORE_NAMES))
    return (
        "relayed requests with X-Forwarded-For are refused under servers that give "
        f"X_Forwarded_For the same environ key ({servers}; WSGI) until "
        "proxy_drops_underscore_headers=True"
    )


@flask_group.command("status")
def status() -> None:
    """Say whether this app is guarded by flask_selfhost, and how.

    Prints the guard (the SelfHost extension, or SelfHostMiddleware around
    the app), its options, and the views that answer anyone (allow_remote).

    Exit status: 0 guarded, 1 not guarded.
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    name = app_name(app)
    options = doctor.guard_of(app)
    if options is None:
        click.echo(
            f"{name}: NOT guarded by flask_selfhost (neither SelfHost nor SelfHostMiddleware)"
        )
        sys.exit(1)
    how = (
        "the SelfHost extension"
        if EXTENSION_NAME in app.extensions
        else "SelfHostMiddleware around the app"
    )
    click.echo(f"{name}: guarded by flask_selfhost ({how}), with these options:")
    click.echo("\n".join(option_lines(options)))
    if options.trusted_proxies:
        click.echo(underscore_line(options))
    public = exempt_views(app)
    click.echo(
        "views that answer anyone (allow_remote): " + (", ".join(public) if public else "none")
    )


@flask_group.command("doctor", with_appcontext=False)
@click.option(
    "--port", type=int, help="Only the listeners on this TCP port; the exit status is about it."
)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def doctor_command(port: int | None, as_json: bool) -> None:
    """Audit this host for ways other hosts can reach this app.

    Checks the app that flask loads (flask --app) too, when there is one.
    Run it as root to see every process and the NAT rules; from a venv:
    sudo env "PATH=$PATH" flask --app module:app selfhost doctor

    \b
    Exit status:
      0  nothing risky
      1  something risky: other hosts can reach what should be local
      2  nothing risky found, but something could not be inspected
    """
    info = click.get_current_context().ensure_object(ScriptInfo)
    findings: list[doctor.Finding] = []
    spec: str | None = None
    guarded: bool | None = None
    drops = False
    try:
        app = info.load_app()
    except NoAppException:
        pass  # no app to check: audit the host only
    else:
        spec = info.app_import_path or app.import_name
        guarded = doctor.is_guarded(app)
        drops = doctor.drops_underscores(app)
        findings += doctor.app_findings(spec, app)
    findings += doctor.audit(doctor.Scope(port, spec, guarded, drops))
    click.echo(doctor.render(findings, as_json))
    sys.exit(doctor.exit_status(findings))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
