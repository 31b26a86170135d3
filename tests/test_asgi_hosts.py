"""The ASGI front against another host, on real servers in network namespaces.

For uvicorn, hypercorn, daphne and granian (and the proxy-header layers of
hypercorn and granian), the server runs in one namespace and the attacker in
another (tests/netns.py):

- another host is refused whatever it claims: no header, ``X-Forwarded-For``,
  ``Forwarded``, ``X-Real-IP`` naming loopback or the server's own address,
  or ``Host: localhost``; with default options and with ``trusted_proxies``;
- the DNAT trap (a PREROUTING DNAT to 127.0.0.1 plus ``route_localnet=1``)
  lets the other host reach a server bound to loopback: the unguarded app
  answers it (the trap is real), the guarded one refuses it;
- the ASGI demo's two uvicorn configurations, as a user starts them.

The cases (a)-(d) of each server (loopback, own address, other host, unix
socket) are in tests/test_server_matrix.py.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from .conftest import require_commands
from .netns import (
    dnat_to_loopback,
    http_get,
    ns_command,
    require_netns,
    server_in,
    two_hosts,
    wait_for_port_in,
)
from .nginx import X_FORWARDED_FOR, nginx, require_nginx
from .servers import last_refusal

pytestmark = [pytest.mark.slow, pytest.mark.root]

PORT, OTHER_PORT = 8000, 8001
PY = sys.executable


@pytest.fixture
def hosts():
    require_netns()
    with two_hosts() as made:
        yield made


def command(server: str, host: str, port: int, app: str) -> list[str]:
    """The server's own command line for ``app`` on ``host:port``."""
    if server == "uvicorn":  # proxy headers on, as by default (trusts 127.0.0.1)
        return [PY, "-m", "uvicorn", "--host", host, "--port", str(port), app]
    if server == "hypercorn":
        return [PY, "-m", "hypercorn", "-b", f"{host}:{port}", app]
    if server == "daphne":
        return [PY, "-m", "daphne", "-b", host, "-p", str(port), app]
    return [PY, "-m", "granian", "--interface", "asgi", "--host", host, "--port", str(port), app]


def write_app(tmp_path: Path, name: str, source: str, tail: str = "") -> str:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source) + tail + "\n")
    return f"{name}:app"


#: How each case wraps the guarded app: the server's own proxy-header layer
#: outside the guard, where a user puts it.
LAYERS = {
    "uvicorn": "app = guarded",
    "hypercorn": "app = guarded",
    "daphne": "app = guarded",
    "granian": "app = guarded",
    "hypercorn-proxyfix-legacy": (
        "from hypercorn.middleware import ProxyFixMiddleware\n"
        "app = ProxyFixMiddleware(guarded, mode='legacy', trusted_hops=1)"
    ),
    "hypercorn-proxyfix-modern": (
        "from hypercorn.middleware import ProxyFixMiddleware\n"
        "app = ProxyFixMiddleware(guarded, mode='modern', trusted_hops=1)"
    ),
    "granian-proxy-headers": (
        "from granian.utils.proxies import wrap_asgi_with_proxy_headers\n"
        "app = wrap_asgi_with_proxy_headers(guarded, trusted_hosts='*')"
    ),
}


def claims(own: str) -> list[dict[str, str]]:
    """What another host may say to look local."""
    return [
        {},
        {"Host": "localhost"},
        {"X-Forwarded-For": "127.0.0.1"},
        {"X-Forwarded-For": "::1", "Host": "localhost"},
        {"X-Forwarded-For": own},
        {"Forwarded": "for=127.0.0.1"},
        {"Forwarded": 'for="[::1]"'},
        {"X-Real-IP": "127.0.0.1"},
        {"X-Forwarded-For": "127.0.0.1", "Forwarded": "for=127.0.0.1", "X-Real-IP": "127.0.0.1"},
    ]


@pytest.mark.parametrize("options", ["", "trusted_proxies=['127.0.0.1', '::1']"])
@pytest.mark.parametrize("case", list(LAYERS))
def test_another_host_is_refused_whatever_it_claims(hosts, tmp_path, case, options):
    server = case.split("-")[0]
    pytest.importorskip(server, reason=f"needs {server} (the test extra installs it)")
    app = write_app(
        tmp_path,
        "claimed",
        f"""
        from flask_selfhost.asgi import SelfHostASGIMiddleware
        from tests.apps import asgi_whoami
        guarded = SelfHostASGIMiddleware(asgi_whoami, {options})
        """,
        LAYERS[case],
    )
    with server_in(hosts.server_ns, command(server, "0.0.0.0", PORT, app), tmp_path, case):
        for headers in claims(hosts.server_ip4):
            status, body = http_get(hosts.client_ns, hosts.server_ip4, PORT, "/", headers)
            assert status == 403, (headers, body)
        # The control: this host, directly, passes (from another loopback
        # address than the trusted proxy's, which must send forwarding headers).
        status, body = http_get(hosts.server_ns, "127.0.0.1", PORT, "/", source="127.0.0.2")
        assert status == 200, body


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn", "daphne", "granian"])
def test_the_dnat_trap_reaches_a_loopback_server_and_the_guard_refuses(hosts, tmp_path, server):
    pytest.importorskip(server, reason=f"needs {server} (the test extra installs it)")
    require_commands("iptables", "sysctl")
    app = write_app(
        tmp_path,
        "trapped",
        """
        from flask_selfhost.asgi import SelfHostASGIMiddleware
        from tests.apps import asgi_whoami
        app = SelfHostASGIMiddleware(asgi_whoami)
        unguarded = asgi_whoami
        """,
    )
    unguarded = app.replace(":app", ":unguarded")
    dnat_to_loopback(hosts, PORT)
    dnat_to_loopback(hosts, OTHER_PORT)
    ns = hosts.server_ns
    with (
        server_in(ns, command(server, "127.0.0.1", PORT, app), tmp_path, "guarded"),
        server_in(
            ns, command(server, "127.0.0.1", OTHER_PORT, unguarded), tmp_path, "open", OTHER_PORT
        ),
    ):
        status, body = http_get(hosts.client_ns, hosts.server_ip4, OTHER_PORT, "/")
        assert status == 200 and hosts.client_ip4 in body, body  # the trap is real
        status, body = http_get(hosts.client_ns, hosts.server_ip4, PORT, "/")
        assert status == 403, body
        status, body = http_get(ns, "127.0.0.1", PORT, "/")
        assert status == 200, body


def test_the_asgi_demo_configurations(hosts, tmp_path):
    """``python -m demo_app.uvicorn_guarded`` and ``... uvicorn_loopback``,
    as the docs start them: each says at start-up what protects it; the
    guarded one refuses the other host, the loopback one is out of its reach
    until the DNAT trap, which then reaches it unguarded."""
    pytest.importorskip("fastapi", reason="needs FastAPI (the asgi extra)")
    ns, env = hosts.server_ns, {"DEMO_PORT": str(PORT)}
    guarded = [PY, "-m", "demo_app.uvicorn_guarded"]
    with server_in(ns, guarded, tmp_path, "demo-guarded", PORT, **env):
        assert http_get(hosts.client_ns, hosts.server_ip4, PORT, "/admin")[0] == 403
        assert http_get(hosts.client_ns, hosts.server_ip6, PORT, "/api/status")[0] == 403
        assert http_get(ns, hosts.server_ip4, PORT, "/admin")[0] == 200  # own address
        assert http_get(ns, "::1", PORT, "/api/status")[0] == 200
    log = (tmp_path / "demo-guarded.log").read_text()
    assert f"listening on 0.0.0.0:{PORT}: every interface (strategy 3)" in log
    assert f"listening on [::]:{PORT}: every interface (strategy 3)" in log
    refusal = f"method=GET path=/admin remote={hosts.client_ip4} local={hosts.server_ip4}"
    assert f"selfhost=refused {refusal}" in log

    loopback = [PY, "-m", "demo_app.uvicorn_loopback"]
    with server_in(ns, loopback, tmp_path, "demo-loopback", PORT, **env):
        status, error = http_get(hosts.client_ns, hosts.server_ip4, PORT, "/admin")
        assert status is None and "refused" in error
        dnat_to_loopback(hosts, PORT)
        assert http_get(hosts.client_ns, hosts.server_ip4, PORT, "/admin")[0] == 200
    log = (tmp_path / "demo-loopback.log").read_text()
    assert f"listening on 127.0.0.1:{PORT}: loopback binding (strategy 1)" in log
    assert "the app is not guarded: a web page in a browser on this host" in log


# nginx in front of uvicorn: each proxy-header setting x trusted_proxies ------

NGINX_PORT = 8200
NGINX_HEADERS = X_FORWARDED_FOR + "\n            proxy_set_header Host $host:$server_port;"
TRUSTED = "trusted_proxies=['127.0.0.1']"
NAMES_TRUSTED_PROXIES = "not in trusted_proxies"
NAMES_UVICORN_SETTING = "uvicorn: --no-proxy-headers"


UVICORN_SETTINGS = {
    "default": [],  # believes X-Forwarded-For from 127.0.0.1 (forwarded_allow_ips)
    "allow-all": ["--forwarded-allow-ips", "*"],
    "off": ["--no-proxy-headers"],
}
UNIX = "trusted_proxies=['unix']"
REFUSED_UNTRUSTED = (403, "not in trusted_proxies")
REFUSED_SETTING = (403, "uvicorn: --no-proxy-headers")  # and the unix-socket recipe
GRANTED = (200, None)

#: (upstream, uvicorn setting, guard options) -> what this host gets through
#: nginx on 127.0.0.1 and on its own address. The other host: always 403.
#: uvicorn rewrites the client over TCP when it believes nginx (default,
#: allow-all), and over a unix socket only with allow-all (the client is
#: None there, which its default does not trust); the guard then cannot know
#: the peer. Over TCP with rewriting off, a client of this host dialling
#: 127.0.0.1 is named 127.0.0.1 by nginx, as a rewritten client would be.
NGINX_UVICORN = {
    **{
        (up, setting, ""): (REFUSED_UNTRUSTED,) * 2
        for up in ("tcp", "uds")
        for setting in UVICORN_SETTINGS
    },
    ("tcp", "default", TRUSTED): (REFUSED_SETTING,) * 2,
    ("tcp", "default", UNIX): (REFUSED_SETTING,) * 2,
    ("tcp", "allow-all", TRUSTED): (REFUSED_SETTING,) * 2,
    ("tcp", "allow-all", UNIX): (REFUSED_SETTING,) * 2,
    ("tcp", "off", TRUSTED): (REFUSED_SETTING, GRANTED),
    ("tcp", "off", UNIX): (REFUSED_SETTING, REFUSED_UNTRUSTED),
    ("uds", "default", TRUSTED): (REFUSED_UNTRUSTED,) * 2,
    ("uds", "default", UNIX): (GRANTED,) * 2,  # the recipe
    ("uds", "allow-all", TRUSTED): (REFUSED_SETTING,) * 2,
    ("uds", "allow-all", UNIX): (REFUSED_SETTING,) * 2,
    ("uds", "off", TRUSTED): (REFUSED_UNTRUSTED,) * 2,
    ("uds", "off", UNIX): (GRANTED,) * 2,  # the recipe
}


@pytest.mark.parametrize(("upstream", "setting", "options"), list(NGINX_UVICORN))
def test_nginx_in_front_of_uvicorn(hosts, tmp_path, upstream, setting, options):
    """Another host never gets in; this host gets in only where the truth is
    knowable; every other refusal names what to change."""
    pytest.importorskip("uvicorn", reason="needs uvicorn (the test extra installs it)")
    require_nginx()
    ns = hosts.server_ns
    app = write_app(
        tmp_path,
        "proxied",
        f"""
        from flask_selfhost.asgi import SelfHostASGIMiddleware
        from tests.apps import asgi_whoami
        app = SelfHostASGIMiddleware(asgi_whoami, {options})
        """,
    )
    sock = tmp_path / "uvicorn.sock"
    bind = ["--port", str(PORT)] if upstream == "tcp" else ["--uds", str(sock)]
    command = [PY, "-m", "uvicorn", "--host", "127.0.0.1", *bind, *UVICORN_SETTINGS[setting], app]
    target = f"http://127.0.0.1:{PORT}" if upstream == "tcp" else f"http://unix:{sock}:"
    listen = [(address, NGINX_PORT) for address in ("127.0.0.1", hosts.server_ip4)]
    with (
        server_in(ns, command, tmp_path, "uvicorn", PORT, sock if upstream == "uds" else None),
        nginx(
            listen,
            target,
            NGINX_HEADERS,
            tmp_path / "nginx",
            prefix=ns_command(ns),
            wait=lambda process: wait_for_port_in(ns, "127.0.0.1", NGINX_PORT, process=process),
        ),
    ):
        for headers in claims(hosts.server_ip4):
            status, body = http_get(hosts.client_ns, hosts.server_ip4, NGINX_PORT, "/", headers)
            assert status == 403, (headers, body)
        expected = NGINX_UVICORN[upstream, setting, options]
        for address, (status, reason) in zip(
            ("127.0.0.1", hosts.server_ip4), expected, strict=True
        ):
            got, body = http_get(ns, address, NGINX_PORT, "/")
            logged = last_refusal(tmp_path)
            assert got == status and (reason is None or reason in logged), (address, body, logged)
