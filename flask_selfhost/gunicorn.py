"""
gunicorn helpers: what listens, what protects it, and where refusals are logged
===============================================================================

A gunicorn configuration file picks the binding strategy; this module makes
it visible, and puts every line of the guard, allowed requests included, in
gunicorn's error log. In a config file (``gunicorn -c gunicorn.conf.py``):

.. code-block:: python

    from flask_selfhost.gunicorn import ALL_INTERFACE_BINDS, announce, log_to_error_log

    bind = ALL_INTERFACE_BINDS          # strategy 3: every interface, the app refuses others
    wsgi_app = "demo_app:app"
    when_ready = announce(guarded=True)
    post_worker_init = log_to_error_log

:func:`announce` logs one line per listener, from the real sockets (not the
config strings), with the strategy that protects it, and a warning when other
hosts can connect and nothing in the app refuses them.
:func:`log_to_error_log` makes the guard's level gunicorn's ``--log-level``, so
that ``--log-level debug`` shows allowed requests too (refusals reach
``--error-logfile`` without it).
"""

from __future__ import annotations

import ipaddress
import logging
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


def log_to_error_log(worker: Any) -> None:
    """A ``post_worker_init`` hook: the ``flask_selfhost`` logger writes to
    gunicorn's error log, in its format and at its ``--log-level``, the
    allowed requests (DEBUG) included at ``--log-level debug``.

    Without it, refusals reach the error log all the same (see
    :mod:`flask_selfhost.log`), but the guard's level stays WARNING: the
    common path never pays for a DEBUG line nobody asked for. The handlers
    are gunicorn's own objects, so ``--error-logfile``, ``kill -USR1``
    (reopen) and ``--log-syslog`` apply. With ``--log-config`` and no handler
    on ``gunicorn.error``, records propagate to whatever that config set up.
    Each record keeps ``extra={"selfhost_decision": ...}`` for structured
    handlers.
    """
    error_log = worker.log.error_log  # the logging.Logger "gunicorn.error"
    logger = logging.getLogger("flask_selfhost")
    logger.setLevel(error_log.level or logging.INFO)
    if not error_log.handlers:
        return
    for handler in list(logger.handlers):  # a worker set up again: no duplicates
        if getattr(handler, "_gunicorn", False):
            logger.removeHandler(handler)
    for handler in error_log.handlers:
        logger.addHandler(handler)
    # The app may have configured the root logger too: one line per record.
    logger.propagate = False
