"""
The ``flask selfhost`` commands
===============================

``flask --app module:app selfhost status`` says whether the app that
``flask`` loads is guarded, and how: the guard, its options, the views that
answer anyone. It takes the same apps as ``flask-selfhost check --app``
(Flask, any WSGI or ASGI callable, Quart), so that the two commands agree.
``flask selfhost doctor`` is ``flask-selfhost doctor`` with the app that
``flask`` loads (:func:`flask_selfhost.doctor.run`).

Registered through the ``flask.commands`` entry point; needs Flask and click,
which the framework-free ``flask-selfhost`` script (:mod:`flask_selfhost.cli`)
does not load.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

import click
from flask.cli import AppGroup, NoAppException, ScriptInfo

from . import doctor
from .asgi import asgi_guard_options
from .flask_routes import find_flask_app
from .hidden_relays import DROP_UNDERSCORE_NAMES
from .options import Options
from .peer_users import SELF, AllowedUsers, user_name
from .proxies import USER_PREFIX, TrustedProxies
from .servers import FOLDS_UNDERSCORE_NAMES
from .views import EXTENSION_NAME, exempt_views

flask_group = AppGroup("selfhost", help="The flask_selfhost guard of this app.")


def load_for_status() -> tuple[str, Any]:
    """The app ``flask`` names and how to call it: a Flask app as ``flask``
    loads it, else what ``--app`` names, loaded as ``flask-selfhost check
    --app`` loads it (a WSGI or ASGI callable, a Quart app), so that the two
    commands agree on which apps they can judge."""
    info = click.get_current_context().ensure_object(ScriptInfo)
    try:
        app = info.load_app()
    except NoAppException as error:
        if not info.app_import_path:
            raise
        try:
            return info.app_import_path, doctor.load_app(info.app_import_path)
        except Exception:  # not importable either way: flask's own message says why
            raise error from None
    return info.app_import_path or app.import_name, app


def guard_kind(app: Any) -> str:
    """Which front guards ``app``, as its docs name it."""
    extensions = getattr(app, "extensions", None)
    if isinstance(extensions, Mapping) and EXTENSION_NAME in extensions:
        return "the SelfHost extension"
    if asgi_guard_options(app) or asgi_guard_options(getattr(app, "asgi_app", None)):
        return "SelfHostASGIMiddleware around the app"
    return "SelfHostMiddleware around the app"


def shown_value(value: Any) -> str:
    """An option's value as a person writes it in a config, not a repr."""
    if isinstance(value, TrustedProxies):
        entries = sorted(str(network) for network in value.networks) + (
            ["unix"] if value.unix else []
        )
        entries += [f"{USER_PREFIX}{user_name(uid)}" for uid in sorted(value.users)]
        return ", ".join(entries) or "(none)"
    if isinstance(value, AllowedUsers):
        names = [user_name(uid) for uid in sorted(value.uids)]
        return ", ".join(names + ([SELF] if value.itself else []))
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


@flask_group.command("status", with_appcontext=False)
def status() -> None:
    """Say whether this app is guarded by flask_selfhost, and how.

    Prints the guard (the SelfHost extension, or the middleware around the
    app), its options and, for a Flask or Quart app, the views that answer
    anyone (allow_remote). Any app that flask-selfhost check --app takes
    works here too: a Flask app, a WSGI or ASGI callable, a Quart app.

    Exit status: 0 guarded, 1 not guarded.
    """
    name, app = load_for_status()
    options = doctor.guard_of(app)
    if options is None:
        click.echo(
            f"{name}: NOT guarded by flask_selfhost "
            "(no SelfHost extension, no flask_selfhost middleware)"
        )
        sys.exit(1)
    click.echo(f"{name}: guarded by flask_selfhost ({guard_kind(app)}), with these options:")
    click.echo("\n".join(option_lines(options)))
    if options.trusted_proxies:
        click.echo(underscore_line(options))
    views = find_flask_app(app) or app
    if isinstance(getattr(views, "view_functions", None), Mapping):
        public = exempt_views(views)
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
    try:
        app = info.load_app()
    except NoAppException:
        app = None  # no app to check: audit the host only
    if app is None:
        sys.exit(doctor.run(port, None, as_json))
    spec = info.app_import_path or app.import_name
    sys.exit(doctor.run(port, spec, as_json, load=lambda _spec: app))
