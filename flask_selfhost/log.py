"""
The guard's log lines, and where they go
========================================

Every decision is one line on the ``flask_selfhost`` logger, refusals at
WARNING and allowed requests at DEBUG, in logfmt: ``key=value`` fields only,
so that a logfmt parser (go-logfmt, Loki's ``| logfmt``) reads the same
fields as a person::

    selfhost=refused method=GET path=/admin remote=10.0.0.2 local=127.0.0.1 rule=source
    reason="the client is another host"

(one line, broken here to fit).

Where the lines go: logging the app (or a logging config) set up wins.
When nothing is set up, Python would print refusals through its last-resort
handler, bare on stderr, never in ``--error-logfile``. So at the first line
it logs, the guard looks once (per process) at the logging set up then, and
if no handler would take its lines it adds one: to the error log of
gunicorn or hypercorn when the process has one, in that server's format and
at its level, and else to stderr with a time, pid and level (uvicorn's
error log, waitress, ``flask run``, uWSGI, mod_wsgi: stderr is their log).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading

from .decision import Decision

logger = logging.getLogger("flask_selfhost")
DEBUG = logging.DEBUG
is_enabled_for = logger.isEnabledFor  # bound once: the common path asks on every request


#: A value printed as it is: an IP address, ``unix``, a rule name, a path of
#: plain characters. Anything else is quoted (see :func:`log_field`).
_PLAIN_FIELD = re.compile(r"[0-9A-Za-z.:%_/\[\]-]+")


def log_field(value: object) -> str:
    """One logfmt value: ``-`` when absent, bare when plain, else in double
    quotes with JSON's escapes (``\\"``, ``\\\\``, ``\\n``, ``\\uXXXX`` for
    every other control and every non-ASCII character, DEL included).

    Escaped because the client chooses many values (the request line, an
    address a proxy middleware took from a header): the line stays one line
    of printable ASCII, and no value can end its field or start another.
    """
    if value is None:
        return "-"
    text = value if type(value) is str else repr(value)
    if text != "-" and _PLAIN_FIELD.fullmatch(text):
        return text
    return json.dumps(text).replace("\x7f", "\\u007f")  # json leaves DEL as it is


def log_decision(decision: Decision, method: object, path: object) -> None:
    """Log one decision as a logfmt line: a refusal at WARNING, a grant at
    DEBUG (nothing when that level is off); ``peer=`` only for a request a
    trusted proxy relayed (the proxy, where ``remote=`` is its client), and
    ``peer_uid=`` where the kernel named the owner of the peer's socket
    (:attr:`Decision.peer_owner`).

    Every front calls this, once per judged request, whatever the verdict;
    only the common paths ask :data:`is_enabled_for` first, to skip the call."""
    level = logging.DEBUG if decision.allowed else logging.WARNING
    if logger.isEnabledFor(level):
        if not _placed:
            place_lines()
        relayed = "" if decision.peer_addr is None else f" peer={log_field(decision.peer_addr)}"
        owner = decision.peer_owner
        if owner is not None:
            relayed += f" peer_uid={log_field(owner.uid)}"
        logger.log(
            level,
            "selfhost=%s method=%s path=%s remote=%s local=%s%s rule=%s reason=%s",
            "allowed" if decision.allowed else "refused",
            log_field(method),
            log_field(path),
            log_field(decision.remote_addr),
            log_field(decision.local_addr),
            relayed,
            log_field(decision.rule),
            log_field(decision.reason),
            extra={"selfhost_decision": decision},
        )


def log_warning(text: str) -> None:
    """A warning about the set-up (not a decision), where the decisions go."""
    if not _placed:
        place_lines()
    logger.warning("flask_selfhost: %s", text)


#: The error loggers of the servers that have one, first found first.
SERVER_ERROR_LOGS = ("gunicorn.error", "hypercorn.error", "uvicorn.error")
#: The format of the stderr handler: gunicorn's and hypercorn's, so that one
#: grep reads the guard's lines under every server.
STDERR_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(message)s"
STDERR_DATE_FORMAT = "[%Y-%m-%d %H:%M:%S %z]"

_placed = False
_placing = threading.Lock()


def place_lines() -> None:
    """Once per process: give the guard's lines a handler if nothing else would.

    Called at the first line logged, not at import, so that the app has set
    up its logging by then; never on the common path (a grant logs only
    when DEBUG is on).
    """
    global _placed
    with _placing:
        if _placed:
            return
        if not _set_up_by_app():
            server_log = _server_error_log()
            if server_log is not None:
                logger.addHandler(ToServerLog(server_log))
            else:
                handler = StderrHandler()
                handler.setFormatter(logging.Formatter(STDERR_FORMAT, STDERR_DATE_FORMAT))
                logger.addHandler(handler)
            if any(_is_waitress_default(root_handler) for root_handler in logging.root.handlers):
                logger.propagate = False  # one line per record, and that one timed
        _placed = True


def _set_up_by_app() -> bool:
    """Whether a handler on the way from ``flask_selfhost`` to the root takes
    its lines, as Flask's ``has_level_handler`` asks for Flask's logger.

    The handler ``waitress.serve()`` adds (``logging.basicConfig()``: no time)
    does not count: the app did not choose it.
    """
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if handler.level <= logging.WARNING and not _is_waitress_default(handler):
                return True
        if not current.propagate:
            return False
        current = current.parent
    return False


def _is_waitress_default(handler: logging.Handler) -> bool:
    """Whether ``handler`` is what ``logging.basicConfig()``, with no argument,
    put on the root logger in a process that runs waitress."""
    formatter = handler.formatter
    return (
        "waitress" in sys.modules
        and handler in logging.root.handlers
        and type(handler) is logging.StreamHandler
        and formatter is not None
        and formatter._fmt == logging.BASIC_FORMAT
        and formatter.datefmt is None
    )


def _server_error_log() -> logging.Logger | None:
    """The error logger of the server running this process, when its lines
    carry a time (uvicorn's, by default, do not: stderr is its log)."""
    for name in SERVER_ERROR_LOGS:
        if name not in logging.root.manager.loggerDict:  # never created: not this server
            continue
        server_log: logging.Logger | None = logging.getLogger(name)
        found = server_log
        while server_log is not None and server_log is not logging.root:
            if any(_is_timed(handler) for handler in server_log.handlers):
                return found
            server_log = server_log.parent if server_log.propagate else None
    return None


def _is_timed(handler: logging.Handler) -> bool:
    formatter = handler.formatter
    return formatter is not None and formatter.usesTime()


class ToServerLog(logging.Handler):
    """Hands each record to a server's error logger, so that its handlers,
    format, ``--log-level``, ``--error-logfile`` (reopened on ``USR1``) and
    syslog apply, as to the server's own lines."""

    def __init__(self, server_log: logging.Logger) -> None:
        super().__init__()
        self.server_log = server_log

    def emit(self, record: logging.LogRecord) -> None:
        if self.server_log.isEnabledFor(record.levelno):
            self.server_log.handle(record)


class StderrHandler(logging.Handler):
    """Writes to ``sys.stderr`` as it is at each record (a server or a test
    may replace it after the handler is made)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)
