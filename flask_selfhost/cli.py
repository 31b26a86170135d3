"""
The ``flask-selfhost`` command
==============================

``flask-selfhost check REMOTE [LOCAL]`` applies the rule to a pair of
addresses and says what the guard would do (exit 0 allowed, 1 refused), for
reading a log line or a firewall plan. With the extension registered,
``flask selfhost status`` says whether the current Flask app is guarded.

``flask-selfhost doctor [--port N] [--app module:name] [--json]`` (or
``flask selfhost doctor``) audits this host for ways other hosts can reach
what should be local: see :mod:`flask_selfhost.doctor`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import click
from flask import current_app
from flask.cli import AppGroup, NoAppException, ScriptInfo

from . import doctor
from .extension import EXTENSION_NAME
from .facts import KnownConnection, RequestFacts
from .guard import judge
from .options import Options


def check(remote: str, local: str | None) -> int:
    facts = RequestFacts(remote, KnownConnection(local=local, peer=remote))
    decision = judge(facts, Options())
    verdict = "allowed" if decision.allowed else "refused"
    print(f"{verdict}: {decision.reason} (remote={remote}, local={local})")
    return 0 if decision.allowed else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="flask-selfhost", description="Tools for the flask_selfhost guard."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check_parser = commands.add_parser(
        "check", help="say whether a client address and local address pass the rule"
    )
    check_parser.add_argument("remote", help="the client address (REMOTE_ADDR)")
    check_parser.add_argument(
        "local", nargs="?", help="the local address the connection arrived on"
    )
    doctor_parser = commands.add_parser(
        "doctor",
        help="audit this host for ways other hosts can reach local apps",
        description="Audit this host (this network namespace): listeners, forwarders, "
        "route_localnet, NAT rules to loopback, and whether an app is guarded. "
        "Exit 0 nothing risky, 1 something risky, 2 could not inspect.",
    )
    doctor_parser.add_argument("--port", type=int, help="only the listeners on this TCP port")
    doctor_parser.add_argument(
        "--app", metavar="MODULE:NAME", help="the app to check, e.g. demo_app:app"
    )
    doctor_parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    args = parser.parse_args(argv)
    if args.command == "doctor":
        return doctor.run(args.port, args.app, as_json=args.json)
    return check(args.remote, args.local)


flask_group = AppGroup("selfhost", help="The flask_selfhost guard of this app.")


@flask_group.command("status")
def status() -> None:
    """Say whether this app is guarded by the SelfHost extension."""
    state = current_app.extensions.get(EXTENSION_NAME)
    if state is None:
        click.echo(f"{current_app.name}: NOT guarded by the SelfHost extension")
        sys.exit(1)
    click.echo(f"{current_app.name}: guarded by SelfHost with {state.options}")


@flask_group.command("doctor", with_appcontext=False)
@click.option("--port", type=int, help="Only the listeners on this TCP port.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def doctor_command(port: int | None, as_json: bool) -> None:
    """Audit this host for ways other hosts can reach this app.

    Checks the app that ``flask`` loads (``--app``) too, when there is one.
    Exit 0 nothing risky, 1 something risky, 2 could not inspect.
    """
    info = click.get_current_context().ensure_object(ScriptInfo)
    findings: list[doctor.Finding] = []
    spec: str | None = None
    guarded: bool | None = None
    try:
        app = info.load_app()
    except NoAppException:
        pass  # no app to check: audit the host only
    else:
        spec = app.import_name if info.app_import_path is None else info.app_import_path
        guarded = doctor.is_guarded(app)
        findings += doctor.app_findings(spec, app)
    findings += doctor.audit(port, spec, guarded)
    click.echo(doctor.render(findings, as_json))
    sys.exit(doctor.exit_status(findings))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
