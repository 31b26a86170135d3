"""The server support table: one source for the README and for the tests.

Each :class:`Row` is a WSGI server in one mode, how to start it inside a
network namespace, and what the guard answers there:

- (a) this host via loopback (``127.0.0.1`` and ``::1``);
- (b) this host via its own non-loopback address (client == local),
  IPv4 and IPv6;
- (c) another host;
- (d) a unix socket, with ``unix_socket_is_local=True``.

``tests/test_server_matrix.py`` starts every row and checks each cell, and
checks that the README's table is :func:`render` of these rows.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

APP = "tests.apps:unix_local_app"
ASGI_APP = "tests.apps:asgi_app"
PY = sys.executable


@dataclass(frozen=True)
class Row:
    server: str
    mode: str
    #: The command, with ``{port}`` and ``{app}`` to fill in; ``None``: not run here.
    tcp: tuple[str, ...]
    #: The same on a unix socket at ``{path}``; ``None`` when the server has none.
    unix: tuple[str, ...] | None
    loopback: str  # (a)
    own: str  # (b)
    other: str  # (c)
    socket: str  # (d)
    note: str = ""
    #: A server stack that the test builds itself (``nginx-uwsgi``: nginx in
    #: front, ``uwsgi_pass`` to ``tcp`` on the next port; ``-addr``: with the
    #: ``uwsgi_param SERVER_ADDR $server_addr;`` line).
    stack: str = ""
    #: False for a server that listens on IPv4 only: its IPv6 cells are not asked.
    ipv6: bool = True
    #: The guarded app, WSGI or ASGI.
    app: str = APP


def gunicorn(*worker: str, bind: str = "[::]:{port}") -> tuple[str, ...]:
    return (PY, "-m", "gunicorn", "--no-control-socket", "--workers", "1", "--bind", bind,
            *worker, "{app}")  # fmt: skip


WERKZEUG = (
    PY, "-c", "import sys; from werkzeug.serving import run_simple; from tests.apps import "
    "unix_local_app; run_simple(sys.argv[1], int(sys.argv[2]), unix_local_app)",
)  # fmt: skip
CHEROOT = (
    PY, "-c", "import sys; from cheroot import wsgi; from tests.apps import unix_local_app; "
    "bind = sys.argv[1] if sys.argv[2] == '0' else (sys.argv[1], int(sys.argv[2])); "
    "wsgi.Server(bind, unix_local_app).safe_start()",
)  # fmt: skip
BJOERN = (
    PY, "-c", "import sys, bjoern; from tests.apps import unix_local_app; "
    "bjoern.run(unix_local_app, sys.argv[1], int(sys.argv[2]))",
)  # fmt: skip

#: gunicorn 27 dropped the eventlet worker; .ci/run makes a venv with
#: gunicorn 23 and eventlet, and names its interpreter here.
EVENTLET_PYTHON = os.environ.get("SELFHOST_EVENTLET_PYTHON", "")

#: Apache's mod_wsgi runs Debian's python3; .ci/run makes a venv of it with
#: Flask for the daemon process's python-home, and names it here.
MODWSGI_HOME = os.environ.get("SELFHOST_MODWSGI_HOME", "")

#: uWSGI is a binary that pip puts beside the interpreter.
UWSGI = str(Path(sys.executable).parent / "uwsgi")


def uwsgi(*mode: str) -> tuple[str, ...]:
    return (UWSGI, "--master", "--processes", "1", "--module", "{app}", "--need-app",
            "--pythonpath", "{root}", *mode)  # fmt: skip


ROWS = [
    Row("gunicorn 27", "sync", gunicorn(), gunicorn(bind="unix:{path}"),
        "200", "200", "403", "200"),
    Row("gunicorn 27", "gthread", gunicorn("--worker-class", "gthread", "--threads", "2"),
        gunicorn("--worker-class", "gthread", bind="unix:{path}"), "200", "200", "403", "200"),
    Row("gunicorn 27", "gevent", gunicorn("--worker-class", "gevent"),
        gunicorn("--worker-class", "gevent", bind="unix:{path}"), "200", "200", "403", "200"),
    Row("gunicorn 27", "gevent --preload", gunicorn("--worker-class", "gevent", "--preload"),
        gunicorn("--worker-class", "gevent", "--preload", bind="unix:{path}"),
        "200", "200", "403", "200"),
    Row("gunicorn 27", "gevent_pywsgi", gunicorn("--worker-class", "gevent_pywsgi"),
        gunicorn("--worker-class", "gevent_pywsgi", bind="unix:{path}"),
        "200", "200", "403", "200"),
    Row("gunicorn 27 (ASGI)", "-k asgi", gunicorn("--worker-class", "asgi"),
        gunicorn("--worker-class", "asgi", bind="unix:{path}"), "200", "200", "403", "200",
        "HTTP/2 refused: its streams may name a PROXY relay as the client", app=ASGI_APP),
    Row("gunicorn 23", "eventlet",
        (EVENTLET_PYTHON, "-m", "gunicorn", "--workers", "1", "--bind", "[::]:{port}",
         "--worker-class", "eventlet", "{app}"),
        (EVENTLET_PYTHON, "-m", "gunicorn", "--workers", "1", "--bind", "unix:{path}",
         "--worker-class", "eventlet", "{app}"), "200", "200", "403", "200",
        stack="eventlet"),
    Row("Werkzeug 3.1", "dev server (flask run)", (*WERKZEUG, "::", "{port}"),
        (*WERKZEUG, "unix://{path}", "0"), "200", "200", "403", "200"),
    Row("waitress 3", "--listen 0.0.0.0 and [::]",
        (PY, "-m", "waitress", "--listen=0.0.0.0:{port}", "--listen=[::]:{port}", "{app}"),
        (PY, "-m", "waitress", "--unix-socket={path}", "{app}"), "200", "200", "403", "200"),
    Row("cheroot 11", "wsgi.Server", (*CHEROOT, "::", "{port}"), (*CHEROOT, "{path}", "0"),
        "200", "200", "403", "200"),
    Row("bjoern 3.2", "bjoern.run", (*BJOERN, "0.0.0.0", "{port}"), (*BJOERN, "unix:{path}", "0"),
        "200", "403", "403", "403",
        "IPv4 only; no witness of the local address: the log names the fix",
        ipv6=False),
    Row("granian 2", "--interface wsgi",
        (PY, "-m", "granian", "--interface", "wsgi", "--host", "::", "--port", "{port}", "{app}"),
        (PY, "-m", "granian", "--interface", "wsgi", "--uds", "{path}", "{app}"),
        "200", "403", "403", "403",
        "no witness of the local address: the log names the fix (bind to loopback)"),
    Row("uWSGI 2.0", "--http-socket", uwsgi("--http-socket", "[::]:{port}"),
        uwsgi("--http-socket", "{path}"), "200", "200", "403", "200"),
    Row("uWSGI 2.0", "--http (router)", uwsgi("--http", "[::]:{port}"), None,
        "200", "403", "403", "n/a",
        "the worker sees the router's link: the log names --http-socket"),
    Row("Apache 2.4 + mod_wsgi 4.9", "daemon mode", ("/usr/sbin/apache2",), None,
        "200", "200", "403", "n/a", "SERVER_ADDR, set per connection", stack="apache"),
    Row("uvicorn 0.54 (ASGI)", "--host 0.0.0.0",
        (PY, "-m", "uvicorn", "--host", "0.0.0.0", "--port", "{port}", "{app}"),
        (PY, "-m", "uvicorn", "--uds", "{path}", "{app}"), "200", "200", "403", "200",
        "IPv4 here: uvicorn's --host :: is IPv6-only", ipv6=False, app=ASGI_APP),
    Row("hypercorn 0.18 (ASGI)", "-b [::]",
        (PY, "-m", "hypercorn", "-b", "[::]:{port}", "{app}"),
        (PY, "-m", "hypercorn", "-b", "unix:{path}", "{app}"), "200", "200", "403", "403",
        "on a unix socket it gives no address at all: the log says so", app=ASGI_APP),
    Row("daphne 4.2 (ASGI)", "-b ::",
        (PY, "-m", "daphne", "-b", "::", "-p", "{port}", "{app}"),
        (PY, "-m", "daphne", "-u", "{path}", "{app}"), "200", "200", "403", "403",
        "on a unix socket it gives no address at all: the log says so", app=ASGI_APP),
    Row("granian 2 (ASGI)", "--interface asgi",
        (PY, "-m", "granian", "--interface", "asgi", "--host", "::", "--port", "{port}", "{app}"),
        (PY, "-m", "granian", "--interface", "asgi", "--uds", "{path}", "{app}"),
        "200", "403", "403", "200",
        "scope['server'] is the bind address: the log names the fix", app=ASGI_APP),
    Row("nginx + uWSGI 2.0", "uwsgi_pass, Debian's uwsgi_params",
        uwsgi("--socket", "127.0.0.1:{upstream}"), None, "200", "403", "403", "n/a",
        "nginx sends no SERVER_ADDR: the log names the uwsgi_param line",
        stack="nginx-uwsgi"),
    Row("nginx + uWSGI 2.0", "uwsgi_pass, + uwsgi_param SERVER_ADDR",
        uwsgi("--socket", "127.0.0.1:{upstream}"), None, "200", "200", "403", "n/a",
        stack="nginx-uwsgi-addr"),
]  # fmt: skip

HEADER = (
    "| server | mode | (a) loopback | (b) own address | (c) other host | (d) unix socket | note |\n"
    "| --- | --- | --- | --- | --- | --- | --- |\n"
)


def render() -> str:
    """The README's table."""
    return HEADER + "".join(
        f"| {row.server} | {row.mode} | {row.loopback} | {row.own} | {row.other} "
        f"| {row.socket} | {row.note} |\n"
        for row in ROWS
    )
