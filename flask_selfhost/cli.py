"""
The ``flask-selfhost`` command
==============================

``flask-selfhost check REMOTE [LOCAL]`` applies the rule to a pair of
addresses and says what the guard would do (exit 0 allowed, 1 refused), for
reading a log line or a firewall plan. With the extension registered,
``flask selfhost status`` says whether the current Flask app is guarded.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import click
from flask import current_app
from flask.cli import AppGroup

from .extension import EXTENSION_NAME
from .guard import evaluate
from .options import Options


def check(remote: str, local: str | None) -> int:
    environ = {"REMOTE_ADDR": remote}
    if local is not None:
        environ["SERVER_ADDR"] = local
    decision = evaluate(environ, Options())
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
    args = parser.parse_args(argv)
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
