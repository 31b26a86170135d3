"""
gunicorn helpers: say at start-up what listens and what protects it
===================================================================

A gunicorn configuration file picks the binding strategy; this module makes
it visible. In a config file:

.. code-block:: python

    from flask_selfhost.gunicorn import announce, LOOPBACK_BINDS

    bind = LOOPBACK_BINDS            # strategy 1: 127.0.0.1 and [::1] only
    when_ready = announce(guarded=False)

    # or strategy 3: every interface, flask_selfhost refuses other hosts
    bind = ["0.0.0.0:8000", "[::]:8000"]
    wsgi_app = "demo_app:app"
    when_ready = announce(guarded=True)

``announce`` logs one line per listener, from the real sockets (not the
config strings), with the strategy that protects it, and a warning when other
hosts can connect and nothing in the app refuses them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

DEFAULT_PORT = 8000
LOOPBACK_BINDS = [f"127.0.0.1:{DEFAULT_PORT}", f"[::1]:{DEFAULT_PORT}"]
ALL_INTERFACE_BINDS = [f"0.0.0.0:{DEFAULT_PORT}", f"[::]:{DEFAULT_PORT}"]


def classify_listener(sockname: Any) -> tuple[str, str]:
    """``(kind, shown)`` for a listening socket's ``getsockname()``.

    ``kind`` is ``"loopback"``, ``"wildcard"``, ``"address"`` (one specific
    non-loopback address) or ``"unix"``.
    """
    if isinstance(sockname, (str, bytes)):
        path = sockname.decode() if isinstance(sockname, bytes) else sockname
        return "unix", f"unix:{path}"
    host, port = sockname[0], sockname[1]
    address = ipaddress.ip_address(host)
    shown = f"[{host}]:{port}" if address.version == 6 else f"{host}:{port}"
    if address.is_loopback:
        return "loopback", shown
    if address.is_unspecified:
        return "wildcard", shown
    return "address", shown


def describe_listener(kind: str, guarded: bool) -> tuple[bool, str]:
    """``(exposed, sentence)``: whether other hosts can get answers, and why."""
    if kind == "loopback":
        text = "loopback binding (strategy 1): other hosts cannot connect"
        if guarded:
            return False, text + ", and flask_selfhost also checks each request"
        return (
            False,
            text + " unless a DNAT rule forwards to loopback (see 'flask-selfhost doctor')",
        )
    if kind == "unix":
        text = "unix socket: reachable by local processes and by any proxy that forwards to it"
        return not guarded, text + ("; flask_selfhost judges each request" if guarded else "")
    where = "every interface" if kind == "wildcard" else "a non-loopback address"
    if guarded:
        return False, f"{where} (strategy 3): other hosts can connect; flask_selfhost refuses them"
    return True, f"{where}: other hosts can connect and NOTHING in the app refuses them"


def announce(guarded: bool) -> Callable[[Any], None]:
    """A ``when_ready`` hook that logs each listener and its protection."""

    def when_ready(server: Any) -> None:
        for listener in server.LISTENERS:
            kind, shown = classify_listener(listener.getsockname())
            exposed, sentence = describe_listener(kind, guarded)
            log = server.log.warning if exposed else server.log.info
            log("flask_selfhost: listening on %s: %s", shown, sentence)

    return when_ready
