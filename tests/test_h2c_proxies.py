"""Cleartext HTTP/2 (h2c) through real front proxies, from another host.

The other host is a network namespace (:mod:`tests.netns`); this host runs
a proxy on its address and hypercorn on 127.0.0.1 behind it: HAProxy
(``mode http``, ``option forwardfor``), nginx with the usual WebSocket
lines, Varnish with its built-in VCL. hypercorn serves Starlette with
``SelfHostASGIMiddleware``, Flask's ``SelfHost`` in hypercorn's WSGI mode,
or Quart's ``SelfHost``, with default options or the proxy in
``trusted_proxies``.

The attack: ``Upgrade: h2c`` through the proxy. hypercorn answers 101 before
the app runs, and the proxy relays raw bytes from then on, so the other
host's own HTTP/2 streams reach the app from 127.0.0.1 with no forwarding
header (or one it wrote): those streams got 200. Each test says what it
proves; the rule's own table is in tests/test_h2c.py.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from .conftest import require_commands
from .haproxy import haproxy_command
from .netns import ns_command, ns_run, require_netns, server_in, two_hosts, wait_for_port_in
from .servers import ROOT, last_refusal, stop_process_group

pytestmark = [pytest.mark.slow, pytest.mark.root]

TRUSTED = {"trusted_proxies": ["127.0.0.1", "::1"]}


APP_PORT, PROXY_PORT = 8000, 8100

#: The three fronts hypercorn serves, each with /admin (a private view); the
#: options come from GUARD_OPTIONS (JSON).
APPS = """
import json
import os

OPTIONS = json.loads(os.environ["GUARD_OPTIONS"])


def starlette_app():
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from flask_selfhost.asgi import SelfHostASGIMiddleware

    async def admin(request):
        return JSONResponse({"admin": True})

    routes = [Route("/admin", admin, methods=["GET", "FOO"])]
    return SelfHostASGIMiddleware(Starlette(routes=routes), **OPTIONS)


def flask_app():
    from flask import Flask

    from flask_selfhost import SelfHost

    app = Flask("h2c_flask")
    app.add_url_rule("/admin", "admin", lambda: {"admin": True}, methods=["GET", "FOO"])
    SelfHost(app, **OPTIONS)
    return app


def quart_app():
    from quart import Quart

    from flask_selfhost.quart import SelfHost

    app = Quart("h2c_quart")
    app.config.update({"SELFHOST_" + key.upper(): value for key, value in OPTIONS.items()})

    @app.route("/admin", methods=["GET", "FOO"])
    async def admin():
        return {"admin": True}

    SelfHost(app)
    return app


app = {"starlette": starlette_app, "flask": flask_app, "quart": quart_app}[os.environ["FRONT"]]()
"""

#: HAProxy as the issue found it: mode http, option forwardfor.
HAPROXY_PLAIN = """\
frontend web
    bind :80
    mode http
    option forwardfor
    default_backend app

backend app
    mode http
    server app 127.0.0.1:8000
"""

#: nginx with the WebSocket lines that copy the client's Upgrade header.
NGINX = """\
user root;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        '' close;
    }}
    server {{
        listen {listen};
{location}
    }}
}}
"""
NGINX_PLAIN = """\
location / {
    proxy_pass http://127.0.0.1:8000;
    proxy_http_version 1.1;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection $connection_upgrade;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header Host $host:$server_port;
}
"""


#: The line docs/deployment.md gives for Varnish, in a VCL whose vcl_recv
#: then falls through to the built-in one (which pipes unknown methods).
VCL_DROP = 'if (req.http.upgrade ~ "(?i)h2c") { unset req.http.upgrade; }'
VCL = """\
vcl 4.1;
backend default { .host = "127.0.0.1"; .port = "8000"; }
sub vcl_recv {
    %s
}
"""


def doc_block(language: str, marker: str) -> str:
    """The block of ``language`` in docs/deployment.md that contains ``marker``:
    the configuration the docs give is the one tested here."""
    text = (ROOT / "docs" / "deployment.md").read_text()
    blocks = re.findall(rf"^```{language}\n(.*?)^```", text, re.M | re.S)
    found = [block for block in blocks if marker in block]
    assert len(found) == 1, f"one {language} block with {marker!r} in docs/deployment.md"
    return found[0]


def require_proxy(name: str) -> None:
    require_commands({"haproxy": "haproxy", "nginx": "nginx", "varnish": "varnishd"}[name])


@contextlib.contextmanager
def proxy_in(ns: str, name: str, config: str | None, listen: tuple[str, int], directory: Path):
    """Run ``name`` (haproxy, nginx, varnish) in ``ns`` on ``listen``, relaying
    to hypercorn on 127.0.0.1:APP_PORT; ``config`` is HAProxy's sections,
    nginx's location, or Varnish's VCL (``None``: the built-in VCL)."""
    directory.mkdir(parents=True, exist_ok=True)
    host, port = listen
    stack = contextlib.ExitStack()
    if name == "haproxy":
        command = haproxy_command(config, [listen], APP_PORT, directory)
    elif name == "nginx":
        location = textwrap.indent(
            config.replace("127.0.0.1:8000", f"127.0.0.1:{APP_PORT}"), " " * 8
        )
        conf = NGINX.format(dir=directory, listen=f"{host}:{port}", location=location)
        (directory / "nginx.conf").write_text(conf)
        command = ["nginx", "-p", str(directory), "-c", str(directory / "nginx.conf")]
        command += ["-e", "stderr", "-g", "daemon off;"]
    else:
        # Its own working directory (-n), in the foreground (-F); -b: the built-in VCL.
        workdir = directory / "varnish"
        command = ["varnishd", "-F", "-n", str(workdir), "-a", f"{host}:{port}"]
        command += ["-s", "malloc,16m", "-p", "feature=-http2"]
        if config is None:
            command += ["-b", f"127.0.0.1:{APP_PORT}"]
        else:
            # Varnish compiles the VCL as its own user, who cannot enter
            # pytest's directories: the file goes where that user may read it.
            readable = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="shs-vcl-")))
            readable.chmod(0o755)
            (readable / "default.vcl").write_text(config.replace("8000", str(APP_PORT)))
            (readable / "default.vcl").chmod(0o644)
            command += ["-f", str(readable / "default.vcl")]
    with stack:
        with open(directory / "output.log", "wb") as log:
            process = subprocess.Popen(
                ns_command(ns, *command),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            try:
                wait_for_port_in(ns, host, port, process=process)
            except (RuntimeError, TimeoutError) as error:
                output = (directory / "output.log").read_text(errors="replace")
                raise RuntimeError(f"{name} did not start: {error}\n{output}") from error
            yield
        finally:
            stop_process_group(process)


#: The other host's client (the h2 package, in its own namespace): on ONE
#: connection, each HTTP/1.1 request of ``before`` and its answer, then an
#: ``Upgrade: h2c`` (METHOD /admin, with or without a Connection header) whose
#: 101 makes it stream 1, or the HTTP/2 preface (prior knowledge); then the
#: HTTP/2 streams (or, with ``["none"]``, nothing more). Prints every status
#: and body, as JSON.
_CLIENT = r"""
import json, re, socket, sys
import h2.config, h2.connection, h2.events, h2.exceptions
host, port, before, switch, streams = json.loads(sys.argv[1])
sock = socket.create_connection((host, port), timeout=5)
buffer, out = b"", {"before": [], "head": None, "streams": {}}
def more():
    global buffer
    chunk = sock.recv(65536)
    if not chunk:
        raise EOFError
    buffer += chunk
def answer():
    global buffer
    while b"\r\n\r\n" not in buffer:
        more()
    head, _, buffer = buffer.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    if status == 101:
        return head.decode("latin-1"), b""
    if length:
        while len(buffer) < int(length[1]):
            more()
        body, buffer = buffer[: int(length[1])], buffer[int(length[1]) :]
    elif re.search(rb"(?im)^transfer-encoding:.*chunked", head):
        while b"0\r\n\r\n" not in buffer:
            more()
        body, _, buffer = buffer.partition(b"0\r\n\r\n")
    else:
        body = b""
    return head.decode("latin-1"), body
try:
    for request in before:
        sock.sendall(request.encode("latin-1"))
        head, body = answer()
        out["before"].append(int(head.split()[1]))
    if switch[0] == "none":
        print(json.dumps(out))
        sys.exit()
    conn = h2.connection.H2Connection(h2.config.H2Configuration(header_encoding="utf-8"))
    if switch[0] == "upgrade":
        method, connection = switch[1], switch[2]
        settings = conn.initiate_upgrade_connection().decode()
        lines = [f"{method} /admin HTTP/1.1", "Host: localhost", "Upgrade: h2c",
                 f"HTTP2-Settings: {settings}"]
        if connection:
            lines.append(f"Connection: {connection}")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head, body = answer()
        out["head"] = head
        if not head.startswith("HTTP/1.1 101"):
            out["body"] = body.decode("latin-1")
            print(json.dumps(out))
            sys.exit()
        expected, stream = 1 + len(streams), 3
    else:
        conn.initiate_connection()
        expected, stream = len(streams), 1
    for headers in streams:
        pseudo = [(":method", "GET"), (":path", "/admin"), (":scheme", "http"),
                  (":authority", "localhost")]
        conn.send_headers(stream, pseudo + [tuple(h) for h in headers], end_stream=True)
        stream += 2
    sock.sendall(conn.data_to_send())
    ended, data = 0, buffer
    while ended < expected:
        if not data:
            data = sock.recv(65536)
            if not data:
                out["closed"] = True
                break
        events, data = conn.receive_data(data), b""
        for event in events:
            if isinstance(event, (h2.events.ResponseReceived, h2.events.DataReceived)):
                entry = out["streams"].setdefault(str(event.stream_id), {"body": ""})
            if isinstance(event, h2.events.ResponseReceived):
                entry["status"] = int(dict(event.headers)[":status"])
            elif isinstance(event, h2.events.DataReceived):
                entry["body"] += event.data.decode("utf-8", "replace")
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                ended += 1
            elif isinstance(event, h2.events.ConnectionTerminated):
                ended = expected
        sock.sendall(conn.data_to_send())
except (OSError, EOFError, h2.exceptions.ProtocolError) as error:
    out["error"] = repr(error)
print(json.dumps(out))
"""


def attack(ns: str, listen: tuple[str, int], before: list[str], switch: list, streams: list):
    arguments = json.dumps([*listen, before, switch, streams])
    done = ns_run(ns, sys.executable, "-c", _CLIENT, arguments, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"the HTTP/2 client in {ns} failed: {done.stderr}")
    return json.loads(done.stdout)


def get(path: str = "/admin") -> str:
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"


#: The upgrade as each proxy relays it: nginx and HAProxy as a browser-like
#: client writes it; Varnish pipes an unknown method, and strips the headers
#: named in Connection, so Connection is left out.
UPGRADE = {
    "haproxy": ["upgrade", "GET", "Upgrade, HTTP2-Settings"],
    "nginx": ["upgrade", "GET", "Upgrade, HTTP2-Settings"],
    "varnish": ["upgrade", "FOO", None],
}
#: What the other host's own stream writes: nothing by default; with
#: trusted_proxies, the forwarding header a trusted proxy would.
CLAIMS = {"default": [], "trusted": [["x-forwarded-for", "127.0.0.2"]]}
OPTIONS = {"default": {}, "trusted": TRUSTED}


@pytest.fixture
def hosts():
    require_netns()
    pytest.importorskip("hypercorn", reason="needs hypercorn (the test extra installs it)")
    pytest.importorskip("h2", reason="needs h2 (hypercorn's dependency)")
    with two_hosts() as made:
        yield made


@contextlib.contextmanager
def hypercorn_in(hosts, tmp_path: Path, front: str, options: dict):
    """hypercorn on 127.0.0.1:APP_PORT in the server namespace, serving ``front``;
    warmed by a loopback HTTP/1.1 request, so that the common path knows 127.0.0.1."""
    pytest.importorskip(front, reason=f"needs {front} (the test extra installs it)")
    (tmp_path / "h2c_apps.py").write_text(APPS)
    command = [sys.executable, "-m", "hypercorn", "--bind", f"127.0.0.1:{APP_PORT}"]
    command.append("h2c_apps:app")
    env = {"FRONT": front, "GUARD_OPTIONS": json.dumps(options), "PYTHONUNBUFFERED": "1"}
    with server_in(hosts.server_ns, command, tmp_path, "hypercorn", port=APP_PORT, **env):
        warm = attack(hosts.server_ns, ("127.0.0.1", APP_PORT), [get()], ["none"], [])
        assert warm["before"] == [403 if "trusted_proxies" in options else 200], warm
        yield tmp_path / "hypercorn.log"


def statuses(answer: dict) -> list:
    return [answer["streams"][key].get("status") for key in sorted(answer["streams"], key=int)]


FRONTS = ["starlette", "flask", "quart"]
PROXIES = ["haproxy", "nginx", "varnish"]
PLAIN = {"haproxy": HAPROXY_PLAIN, "nginx": NGINX_PLAIN, "varnish": None}


@pytest.mark.parametrize("options", ["default", "trusted"])
@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("proxy", PROXIES)
def test_an_h2c_upgrade_through_the_proxy_is_refused(hosts, tmp_path, proxy, front, options):
    """The other host upgrades through the proxy; hypercorn answers 101 and
    the proxy relays raw bytes. Stream 1 (the upgrade, which the proxy
    marked) and stream 3 (the other host's own, from 127.0.0.1, with no
    forwarding header or one it wrote) are refused; the log says why."""
    require_proxy(proxy)
    listen = (hosts.server_ip4, PROXY_PORT)
    with (
        hypercorn_in(hosts, tmp_path, front, OPTIONS[options]) as log,
        proxy_in(hosts.server_ns, proxy, PLAIN[proxy], listen, tmp_path / proxy),
    ):
        answer = attack(hosts.client_ns, listen, [], UPGRADE[proxy], [CLAIMS[options]])
        assert answer["head"].startswith("HTTP/1.1 101"), answer  # the tunnel is open
        assert statuses(answer) == [403, 403], answer
        assert '"admin"' not in json.dumps(answer), answer
        assert log.read_text().count("cleartext HTTP/2 (h2c)") >= 1, log.read_text()


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("proxy", ["haproxy", "nginx"])
def test_a_second_upgrade_on_a_kept_alive_connection_is_refused(hosts, tmp_path, proxy, front):
    """A plain request first (refused, the connection kept alive), then the
    upgrade on the same connection: the proxy opens the tunnel all the same,
    and every stream is refused."""
    require_proxy(proxy)
    listen = (hosts.server_ip4, PROXY_PORT)
    with (
        hypercorn_in(hosts, tmp_path, front, {}),
        proxy_in(hosts.server_ns, proxy, PLAIN[proxy], listen, tmp_path / proxy),
    ):
        answer = attack(hosts.client_ns, listen, [get(), get()], UPGRADE[proxy], [[], []])
        assert answer["before"] == [403, 403], answer
        assert answer["head"].startswith("HTTP/1.1 101"), answer
        assert statuses(answer) == [403, 403, 403], answer


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("proxy", PROXIES)
def test_prior_knowledge_on_a_relayed_connection_is_refused(hosts, tmp_path, proxy, front):
    """After one relayed request (Varnish pipes an unknown method and then
    relays bytes), the other host sends the HTTP/2 preface on the same
    connection: prior knowledge, which hypercorn takes on any HTTP/1.1
    connection. Whatever the proxy and hypercorn make of it, no stream is
    granted."""
    require_proxy(proxy)
    listen = (hosts.server_ip4, PROXY_PORT)
    method = "FOO" if proxy == "varnish" else "GET"
    first = f"{method} /admin HTTP/1.1\r\nHost: localhost\r\n\r\n"
    with (
        hypercorn_in(hosts, tmp_path, front, {}),
        proxy_in(hosts.server_ns, proxy, PLAIN[proxy], listen, tmp_path / proxy),
    ):
        answer = attack(hosts.client_ns, listen, [first], ["prior"], [[], []])
    assert answer["before"] == [403], answer
    assert 200 not in statuses(answer), answer
    assert '"admin"' not in json.dumps(answer), answer


@pytest.mark.parametrize("front", FRONTS)
def test_prior_knowledge_from_this_host_is_refused_unless_allowed(hosts, tmp_path, front):
    """hypercorn takes the HTTP/2 preface with no upgrade at all: from
    loopback too, cleartext HTTP/2 is refused by default (the price: a local
    h2c tool needs the option), and granted with allow_cleartext_http2."""
    for allow in (False, True):
        with hypercorn_in(
            hosts, tmp_path, front, {"allow_cleartext_http2": allow} if allow else {}
        ):
            answer = attack(hosts.server_ns, ("127.0.0.1", APP_PORT), [], ["prior"], [[], []])
            assert statuses(answer) == ([200, 200] if allow else [403, 403]), answer


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("proxy", PROXIES)
def test_the_documented_proxy_configurations_drop_the_upgrade(hosts, tmp_path, proxy, front):
    """The HAProxy, nginx and Varnish configurations of docs/deployment.md:
    the upgrade is never relayed (no 101), the request is answered over
    HTTP/1.1 with the proxy's forwarding header (refused, as the other
    host's, on a fresh or a kept-alive connection), and this host's own
    request through the proxy passes, even with allow_cleartext_http2, which
    a server behind such a proxy could then use."""
    require_proxy(proxy)
    if proxy == "varnish":
        assert VCL_DROP in (ROOT / "docs" / "deployment.md").read_text()
        config = VCL % VCL_DROP
    else:
        config = doc_block(proxy, "h2c")
    listen = (hosts.server_ip4, PROXY_PORT)
    options = {**TRUSTED, "allow_cleartext_http2": True}
    # hypercorn's WSGI mode gives X_Forwarded_For the key of X-Forwarded-For:
    # nginx drops such names as it comes, HAProxy and Varnish pass them, so
    # there a relayed X-Forwarded-For is refused with the fix in the log.
    folds = front == "flask"
    if folds and proxy == "nginx":
        options["proxy_drops_underscore_headers"] = True
    with (
        hypercorn_in(hosts, tmp_path, front, options),
        proxy_in(hosts.server_ns, proxy, config, listen, tmp_path / proxy),
    ):
        for before in ([], [get()]):
            answer = attack(hosts.client_ns, listen, before, UPGRADE[proxy], [[]])
            assert answer["before"] == [403] * len(before), answer
            assert answer["head"].startswith("HTTP/1.1 403"), answer
        answer = attack(hosts.server_ns, listen, [], UPGRADE[proxy], [[]])
        if folds and proxy != "nginx":
            assert answer["head"].startswith("HTTP/1.1 403"), answer
            assert "the same environ key" in last_refusal(tmp_path), answer
        else:
            assert answer["head"].startswith("HTTP/1.1 200"), answer
