"""
The ``flask-selfhost`` command
==============================

``flask-selfhost check REMOTE [LOCAL] [--app module:name]`` applies the rule
to a pair of addresses, with the options of that app's guard, and says what
the guard would do (exit 0 allowed, 1 refused, 2 an argument that is not an
IP address, or an app that cannot be loaded or is not guarded), for reading
a log line or a firewall plan.

``flask-selfhost doctor [--port N] [--app module:name] [--json]`` audits
this host for ways other hosts can reach what should be local: see
:mod:`flask_selfhost.doctor`.

Needs no framework (argparse, not click): it judges a WSGI or ASGI app's
guard without loading Flask unless the app does. The ``flask selfhost``
commands are in :mod:`flask_selfhost.flask_cli`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__, doctor
from .addresses import parse_ip
from .facts import KnownConnection, RequestFacts
from .guard import judge
from .log import log_field
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
  1  refused: another host
  2  usage: an address that is not an IP address, or --app could not be
     imported, or is not guarded by flask_selfhost
"""

DOCTOR_HELP = """\
Audit this host (this network namespace) for ways other hosts can reach what
should be local: listeners, forwarders (ssh, socat, nginx, docker-proxy...),
route_localnet=1, NAT rules that DNAT to loopback or SNAT other hosts to this
host's own address, and whether --app is guarded and is what --port serves.
Every risky finding comes with a fix line. Root reads every process and the
NAT rules; from a venv, keep the venv's script under sudo:
  sudo "$(command -v flask-selfhost)" doctor

exit status:
  0  nothing risky (other hosts that reach a guarded app are refused by it)
  1  something risky: other hosts can reach what should be local
  2  nothing risky found, but something could not be inspected (or --app
     could not be checked against the process on --port)
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


def ip_address(text: str) -> str:
    """An argument that must be an IP address, as a server reports one: a
    typo is a usage error (exit 2), not a client that the guard refuses."""
    if parse_ip(text) is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an IP address (such as 10.0.0.2, 127.0.0.1 or ::1)"
        )
    return text


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
    check_parser.add_argument("remote", type=ip_address, help="the client address (REMOTE_ADDR)")
    check_parser.add_argument(
        "local",
        nargs="?",
        type=ip_address,
        help="the local address the connection arrived on (SERVER_ADDR)",
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
