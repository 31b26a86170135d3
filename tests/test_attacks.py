"""Against real servers: the ways in that an attack found, closed.

Each test here let another host in, forged the log, or let a page of another
site act, on the code before its fix; the pure forms of the
same attacks are in ``test_ways_in.py``. The other host is a real network
namespace joined by a veth pair (:mod:`tests.netns`); requests are raw
sockets, so keep-alive, pipelining and odd headers are what a client sends.

1. the cross-site rule on this host's own LAN URL (client == local);
2. gunicorn's PROXY protocol: the second request on a kept-alive or
   pipelined connection, for sync, gthread and gevent workers, v1 and v2;
3. nginx in front of waitress, which deletes forwarding headers;
4. two ProxyFix layers on gunicorn's gevent_pywsgi worker (no socket);
5. log lines forged through ProxyFix's rewritten client address;
6. a client's own ``Forwarded`` value logged as the client.
"""

from __future__ import annotations

import contextlib
import re
import sys
import textwrap
from pathlib import Path

import logfmtkv as logfmt
import pytest

from .netns import (
    gunicorn_in,
    http_get,
    ns_command,
    proxy_protocol_relay,
    raw_exchange,
    require_netns,
    server_in,
    two_hosts,
    wait_for_port_in,
)
from .nginx import X_FORWARDED_FOR, nginx, require_nginx
from .servers import ROOT, last_refusal

pytestmark = [pytest.mark.slow, pytest.mark.root]

APP_PORT, RELAY_PORT, NGINX_PORT = 8000, 8100, 8200


@pytest.fixture
def hosts():
    require_netns()
    with two_hosts() as made:
        yield made


def get(path: str, host: str | None = "localhost", version: str = "1.1") -> bytes:
    host_line = f"Host: {host}\r\n" if host is not None else ""
    return f"GET {path} HTTP/{version}\r\n{host_line}\r\n".encode()


def app_module(tmp_path: Path, source: str) -> str:
    """Write an app module into ``tmp_path``; its name, for gunicorn --chdir."""
    (tmp_path / "attacked_app.py").write_text(textwrap.dedent(source))
    return "attacked_app:app"


LOG_TO_FILE = """
import logging
handler = logging.FileHandler({log!r})
handler.setFormatter(logging.Formatter("%(message)s"))
logging.getLogger("flask_selfhost").addHandler(handler)
logging.getLogger("flask_selfhost").setLevel(logging.DEBUG)
"""


# 1. The cross-site rule on this host's LAN URL --------------------------------


def test_pages_of_other_sites_cannot_act_through_the_lan_url(hosts, tmp_path):
    """A browser on the server host, at http://<own veth address>:PORT/:
    client == local, so the source and host rules grant; the cross-site rule
    must still run."""
    ns, own = hosts.server_ns, hosts.server_ip4
    args = ["--bind", f"0.0.0.0:{APP_PORT}", "--workers", "1", "demo_app:app"]
    with gunicorn_in(ns, args, APP_PORT, tmp_path):

        def count() -> int:
            status, body = http_get(ns, own, APP_PORT, "/api/status", {"Host": f"{own}:{APP_PORT}"})
            assert status == 200, body
            return int(re.search(r'"actions":\s*(\d+)', body).group(1))

        site = {"Host": f"{own}:{APP_PORT}"}
        before = count()
        attacks = [
            ("POST", {"Origin": "http://evil.example"}),
            ("POST", {"Origin": "null"}),
            ("POST", {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}),
            ("GET", {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Dest": "iframe"}),
        ]
        for method, headers in attacks:
            path = "/admin/act" if method == "POST" else "/admin"
            status, body = http_get(ns, own, APP_PORT, path, {**site, **headers}, method=method)
            assert status == 403, (headers, body)
        preflight = {
            **site,
            "Origin": "http://evil.example",
            "Access-Control-Request-Method": "POST",
        }
        status, _ = http_get(ns, own, APP_PORT, "/api/act", preflight, method="OPTIONS")
        assert status == 403
        assert count() == before
        # The app's own pages on that URL still work.
        same_origin = {**site, "Origin": f"http://{own}:{APP_PORT}"}
        assert http_get(ns, own, APP_PORT, "/admin/act", same_origin, method="POST")[0] == 302
        assert count() == before + 1


# 2. gunicorn's PROXY protocol, every request of a connection -----------------


@pytest.mark.parametrize("options", ["trusted_proxies='127.0.0.1'", ""], ids=["trusted", "default"])
@pytest.mark.parametrize("worker", ["sync", "gthread", "gevent"])
def test_every_request_on_a_proxy_protocol_connection_is_relayed(hosts, tmp_path, worker, options):
    """Another host behind a relay that sends PROXY headers (HAProxy
    ``send-proxy``), over IPv4 and IPv6, v1 and v2: no request on its
    connection reaches /admin, whether kept alive or pipelined, HTTP/1.1 or
    an HTTP/1.0 without Host."""
    if worker == "gevent":
        pytest.importorskip("gevent", reason="needs gevent (the test extra installs it)")
    ns = hosts.server_ns
    args = [
        "--bind", f"127.0.0.1:{APP_PORT}", "--worker-class", worker,
        # More than one thread turns gunicorn's sync worker into gthread.
        *(["--threads", "2"] if worker == "gthread" else []),
        "--proxy-protocol", "auto", "--proxy-allow-from", "127.0.0.1", "--keep-alive", "5",
        f"tests.nginx:guarded_app({options})",
    ]  # fmt: skip
    requests = [get("/admin"), get("/admin", host=None, version="1.0")]
    with gunicorn_in(ns, args, APP_PORT, tmp_path):
        for version in (1, 2):
            for number, address in enumerate((hosts.server_ip4, hosts.server_ip6)):
                listen = (address, RELAY_PORT + 10 * number + version)
                with proxy_protocol_relay(ns, listen, ("127.0.0.1", APP_PORT), version):
                    for pipelined in (False, True):
                        statuses, text = raw_exchange(
                            hosts.client_ns, *listen, requests, pipelined=pipelined
                        )
                        assert statuses and set(statuses) <= {403, 400}, (listen, version, text)
                    if options:
                        # This host through the same relay: its client is one of
                        # the host's own addresses, relayed by a trusted sender.
                        statuses, text = raw_exchange(ns, *listen, requests[:1], pipelined=False)
                        assert statuses == [200], text


@pytest.mark.parametrize("options", ["trusted_proxies='127.0.0.1'", ""], ids=["trusted", "default"])
def test_a_proxy_header_forged_by_another_host(hosts, tmp_path, options):
    """gunicorn misconfigured with ``--proxy-allow-from '*'``: the other host
    writes its own PROXY header naming 127.0.0.1; the guard reads the
    socket's peer, which is not a trusted proxy."""
    args = [
        "--bind", f"0.0.0.0:{APP_PORT}", "--worker-class", "sync",
        "--proxy-protocol", "v1", "--proxy-allow-from", "*",
        f"tests.nginx:guarded_app({options})",
    ]  # fmt: skip
    header = f"PROXY TCP4 127.0.0.1 127.0.0.1 40000 {APP_PORT}\r\n".encode()
    requests = [header + get("/admin"), get("/admin", host=None, version="1.0")]
    with gunicorn_in(hosts.server_ns, args, APP_PORT, tmp_path):
        for pipelined in (False, True):
            statuses, text = raw_exchange(
                hosts.client_ns, hosts.server_ip4, APP_PORT, requests, pipelined=pipelined
            )
            assert statuses and 200 not in statuses, (pipelined, text)


# 3. nginx in front of waitress ----------------------------------------------

NGINX_HEADERS = X_FORWARDED_FOR + "\n            proxy_set_header Host $host:$server_port;"
WITH_REAL_IP = NGINX_HEADERS + "\n            proxy_set_header X-Real-IP $remote_addr;"


@contextlib.contextmanager
def waitress_behind_nginx(hosts, tmp_path: Path, options: str, headers: str, clear: bool):
    pytest.importorskip("waitress", reason="needs waitress (the test extra installs it)")
    require_nginx()
    ns = hosts.server_ns
    module = app_module(
        tmp_path,
        f"""
        from tests.nginx import guarded_app
        app = guarded_app({options})
        """,
    )
    command = [
        sys.executable, "-m", "waitress", f"--listen=127.0.0.1:{APP_PORT}",
        *([] if clear else ["--no-clear-untrusted-proxy-headers"]), module,
    ]  # fmt: skip
    with server_in(ns, command, tmp_path, "waitress"):
        listen = [(address, NGINX_PORT) for address in ("127.0.0.1", hosts.server_ip4)]
        with nginx(
            listen,
            f"http://127.0.0.1:{APP_PORT}",
            headers,
            tmp_path / "nginx",
            prefix=ns_command(ns),
            wait=lambda p: wait_for_port_in(ns, "127.0.0.1", NGINX_PORT, process=p),
        ):
            yield


@pytest.mark.parametrize(
    ("options", "headers", "clear", "this_host"),
    [
        ("", WITH_REAL_IP, True, None),  # the docs' nginx block, waitress as it comes
        ("trusted_proxies='127.0.0.1'", NGINX_HEADERS, True, None),  # the old README block
        ("trusted_proxies='127.0.0.1'", WITH_REAL_IP, True, None),
        ("trusted_proxies='127.0.0.1'", WITH_REAL_IP, False, 200),  # the recipe
    ],
    ids=["default-options", "trusted-old-block", "trusted", "recipe"],
)
def test_nginx_in_front_of_waitress_never_lets_another_host_in(
    hosts, tmp_path, options, headers, clear, this_host
):
    with waitress_behind_nginx(hosts, tmp_path, options, headers, clear):
        # The attacker names the Host the guard accepts; only its address is its own.
        for host in ("localhost", f"{hosts.server_ip4}:{NGINX_PORT}"):
            status, body = http_get(
                hosts.client_ns, hosts.server_ip4, NGINX_PORT, "/", {"Host": host}
            )
            assert status == 403, (host, body)
        if this_host is not None:
            for address in ("127.0.0.1", hosts.server_ip4):
                status, body = http_get(hosts.server_ns, address, NGINX_PORT, "/")
                assert status == this_host, (address, body)


# 4. Two ProxyFix layers where the server keeps no socket in the environ ------


def test_two_proxyfix_layers_on_gevent_pywsgi(hosts, tmp_path):
    pytest.importorskip("gevent", reason="needs gevent (the test extra installs it)")
    module = app_module(
        tmp_path,
        """
        from werkzeug.middleware.proxy_fix import ProxyFix
        from tests.nginx import guarded_app
        app = ProxyFix(ProxyFix(guarded_app(trusted_proxies="127.0.0.1"), x_for=1), x_for=1)
        """,
    )
    args = ["--chdir", str(tmp_path), "--pythonpath", str(ROOT)]
    args += ["--bind", f"0.0.0.0:{APP_PORT}", "--worker-class", "gevent_pywsgi", module]
    with gunicorn_in(hosts.server_ns, args, APP_PORT, tmp_path):
        for spoof in ("127.0.0.1, 127.0.0.1", "127.0.0.1"):
            status, body = http_get(
                hosts.client_ns, hosts.server_ip4, APP_PORT, "/", {"X-Forwarded-For": spoof}
            )
            assert status == 403, (spoof, body)


# 5. Forged log lines -----------------------------------------------------------

FORGED = '127.0.0.1 local=127.0.0.1 rule=source reason="the client is loopback"'


FIELDS = ["selfhost", "method", "path", "remote", "local", "rule", "reason"]


def assert_log_is_honest(log: str, refusals: int) -> list[str]:
    """Each refusal is one line whose fields a logfmt parser reads; the
    remote fields, read back."""
    lines = log.splitlines()
    assert len(lines) == refusals, log
    remotes = []
    for line in lines:
        assert line.isascii() and line.isprintable(), line
        fields = logfmt.parse(line, strict=True, duplicates="error")
        assert [key for key in fields if key != "peer"] == FIELDS, line
        assert fields["selfhost"] == "refused", line
        remotes.append(fields["remote"])
    return remotes


@pytest.mark.parametrize("server", ["werkzeug", "gunicorn"])
def test_a_client_cannot_forge_log_lines(hosts, tmp_path, server):
    log = tmp_path / "selfhost.log"
    module = app_module(
        tmp_path,
        LOG_TO_FILE.format(log=str(log))
        + """
from werkzeug.middleware.proxy_fix import ProxyFix
from tests.nginx import guarded_app
app = ProxyFix(guarded_app(), x_for=1)
""",
    )
    attacks = [
        f"X-Forwarded-For: {FORGED}\r\n",
        "X-Forwarded-For: 10.0.0.2\x1b[2K\x1b[1Aallowed\r\n",
    ]
    if server == "werkzeug":  # its parser folds a continuation after a bare LF
        attacks.append("X-Forwarded-For: 10.0.0.2\n selfhost=allowed remote=127.0.0.1\r\n")
    payloads = [
        f"GET /admin HTTP/1.0\r\nHost: localhost\r\n{attack}\r\n".encode("latin-1")
        for attack in attacks
    ]
    if server == "gunicorn":
        args = ["--chdir", str(tmp_path), "--pythonpath", str(ROOT)]
        args += ["--bind", f"0.0.0.0:{APP_PORT}", module]
        running = gunicorn_in(hosts.server_ns, args, APP_PORT, tmp_path)
    else:
        running = werkzeug_in(hosts.server_ns, tmp_path, module)
    with running:
        refused = 0
        for payload in payloads:
            statuses, text = raw_exchange(
                hosts.client_ns, hosts.server_ip4, APP_PORT, [payload], pipelined=False
            )
            if statuses:  # gunicorn may answer 400 itself to a header it rejects
                assert statuses == [403] or statuses == [400], text
                refused += statuses == [403]
    assert refused >= 1
    remotes = assert_log_is_honest(log.read_text(encoding="latin-1"), refused)
    assert any(FORGED in remote for remote in remotes), remotes  # kept, inside its field


@contextlib.contextmanager
def werkzeug_in(ns: str, tmp_path: Path, module: str):
    script = (
        f"import sys; sys.path[:0] = [{str(tmp_path)!r}, {str(ROOT)!r}]\n"
        "from werkzeug.serving import run_simple\n"
        "from attacked_app import app\n"
        f"run_simple('0.0.0.0', {APP_PORT}, app)\n"
    )
    with server_in(ns, [sys.executable, "-c", script], tmp_path, "werkzeug"):
        yield


# 6. A client's own Forwarded value is never logged as the client -------------


def test_conflicting_forwarding_headers_frame_no_one(hosts, tmp_path):
    require_nginx()
    log = tmp_path / "selfhost.log"
    module = app_module(
        tmp_path,
        LOG_TO_FILE.format(log=str(log))
        + """
from tests.nginx import guarded_app
app = guarded_app(trusted_proxies="127.0.0.1")
""",
    )
    ns = hosts.server_ns
    args = ["--chdir", str(tmp_path), "--pythonpath", str(ROOT)]
    args += ["--bind", f"127.0.0.1:{APP_PORT}", module]
    with (
        gunicorn_in(ns, args, APP_PORT, tmp_path),
        nginx(
            [(hosts.server_ip4, NGINX_PORT), ("127.0.0.1", NGINX_PORT)],
            f"http://127.0.0.1:{APP_PORT}",
            NGINX_HEADERS,
            tmp_path / "nginx",
            prefix=ns_command(ns),
            wait=lambda p: wait_for_port_in(ns, "127.0.0.1", NGINX_PORT, process=p),
        ),
    ):
        framed = {"Forwarded": "for=203.0.113.77"}
        status, body = http_get(hosts.client_ns, hosts.server_ip4, NGINX_PORT, "/", framed)
        assert status == 403 and "different clients" in last_refusal(tmp_path), body
    line = log.read_text()
    assert "203.0.113.77" not in line and "remote=- " in line, line
    assert "peer=127.0.0.1" in line, line


# 7. SERVER_ADDR from the process environment (granian) -----------------------


def test_server_addr_exported_in_the_shell_is_not_a_witness(hosts, tmp_path):
    """granian copies the process environment into every WSGI environ: a
    ``SERVER_ADDR`` exported in the shell must not become the local address
    of every request (another host whose address equals it would pass)."""
    pytest.importorskip("granian", reason="needs granian (the test extra installs it)")
    module = app_module(
        tmp_path,
        """
        from tests.nginx import guarded_app
        app = guarded_app()
        """,
    )
    granian = [
        sys.executable, "-m", "granian", "--interface", "wsgi",
        "--host", "0.0.0.0", "--port", str(APP_PORT), "--workers", "1", module,
    ]  # fmt: skip
    with server_in(hosts.server_ns, granian, tmp_path, "granian", SERVER_ADDR=hosts.client_ip4):
        status, body = http_get(
            hosts.client_ns, hosts.server_ip4, APP_PORT, "/admin", {"Host": "localhost"}
        )
        assert status == 403, body
        # This host over loopback still passes.
        assert http_get(hosts.server_ns, "127.0.0.1", APP_PORT, "/")[0] == 200


# The ASGI front: servers that rewrite the client from X-Forwarded-For ------


@pytest.mark.parametrize(
    "server",
    [
        ["uvicorn", "--forwarded-allow-ips", "*"],
        ["uvicorn"],  # its default: trusts 127.0.0.1 and ::1
        ["daphne", "--proxy-headers"],
    ],
    ids=["uvicorn-allow-all", "uvicorn-default", "daphne-proxy-headers"],
)
def test_an_asgi_server_that_believes_x_forwarded_for_lets_no_one_in(hosts, tmp_path, server):
    """uvicorn (``--forwarded-allow-ips='*'``) and daphne (``--proxy-headers``)
    overwrite the client with X-Forwarded-For from any peer and keep no
    original: another host that claims 127.0.0.1 must still be refused, with
    and without trusted_proxies."""
    name = server[0]
    pytest.importorskip(name, reason=f"needs {name} (the test extra installs it)")
    for options in ("", "trusted_proxies='127.0.0.1'"):
        module = app_module(
            tmp_path,
            f"""
            from flask_selfhost.asgi import SelfHostASGIMiddleware
            from tests.apps import asgi_whoami
            app = SelfHostASGIMiddleware(asgi_whoami, {options})
            """,
        )
        bind = ["--host", "0.0.0.0", "--port"] if name == "uvicorn" else ["-b", "0.0.0.0", "-p"]
        command = [sys.executable, "-m", name, *bind, str(APP_PORT), *server[1:], module]
        with server_in(hosts.server_ns, command, tmp_path, name):
            for spoof in ("127.0.0.1", "::1", f"{hosts.server_ip4}"):
                status, body = http_get(
                    hosts.client_ns,
                    hosts.server_ip4,
                    APP_PORT,
                    "/",
                    {"X-Forwarded-For": spoof, "Host": "localhost"},
                )
                assert status == 403, (options, spoof, body)
            # This host, directly, still passes (from another loopback address
            # than the trusted proxy's, which must send forwarding headers).
            status, body = http_get(hosts.server_ns, "127.0.0.1", APP_PORT, "/", source="127.0.0.2")
            assert status == 200, (options, body)
