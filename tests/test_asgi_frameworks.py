"""Against real servers: exempt routes and the Quart extension, from
another host.

The threat: an exemption (``allow_remote``) that lets another host reach
more than the exempted route, or a Quart app whose guard ignores its
``SELFHOST_*`` config. Each test runs a real ASGI server in one network
namespace (:mod:`tests.netns`) and sends requests and WebSocket handshakes
from another: the exempt routes answer it, every other route refuses it (and
its endpoint never runs: the app counts what ran, read from this host at the
end), and this host reaches everything.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from .netns import http_get, raw_exchange, require_netns, server_in, two_hosts
from .servers import last_refusal

pytestmark = [pytest.mark.slow, pytest.mark.root]

APP_PORT = 8000  # each test has fresh namespaces

#: Paths another host may use, and paths it must be refused (403).
EXEMPT = ["/healthz"]
GUARDED = ["/admin", "/ran", "/nothing"]


@pytest.fixture
def hosts():
    require_netns()
    with two_hosts() as made:
        yield made


def handshake(path: str, host: str, origin: str | None = None, **extra: str) -> bytes:
    """A WebSocket opening handshake, as a browser sends it."""
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        *([f"Origin: {origin}"] if origin else []),
        *(f"{name}: {value}" for name, value in extra.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def socket_status(ns: str, address: str, payload: bytes) -> int | None:
    """The HTTP status that answered a handshake (101: the WebSocket opened)."""
    statuses, _ = raw_exchange(ns, address, APP_PORT, [payload], pipelined=False, pause=1.0)
    return statuses[0] if statuses else None


def check_another_host(hosts, guarded: list[str], log_dir: Path) -> None:
    """From the client namespace: the exempt routes answer, the rest refuse."""
    other, server = hosts.client_ns, hosts.server_ip4
    for path in EXEMPT:
        status, body = http_get(other, server, APP_PORT, path)
        assert status == 200, (path, body)
    for path in guarded:
        status, body = http_get(other, server, APP_PORT, path)
        assert status == 403 and "another host" in last_refusal(log_dir), (path, status, body)
    status, body = http_get(other, server, APP_PORT, "/admin/act", method="POST")
    assert status == 403, body
    status, body = http_get(other, server, APP_PORT, "/healthz", method="POST")
    assert status == 403, body  # the exempt path, but a 405: not the exempt endpoint
    host = f"{server}:{APP_PORT}"
    assert socket_status(other, server, handshake("/ws/public", host)) == 101
    assert socket_status(other, server, handshake("/ws/private", host)) == 403


def test_fastapi_exempt_routes_under_uvicorn(hosts, tmp_path):
    """FastAPI, add_middleware(SelfHostASGIMiddleware), allow_remote on a
    route, an included APIRouter's route and a WebSocket route."""
    pytest.importorskip("uvicorn", reason="needs uvicorn (the test extra installs it)")
    pytest.importorskip("fastapi", reason="needs fastapi (the test extra installs it)")
    command = [sys.executable, "-m", "uvicorn", "--host", "0.0.0.0", "--port", str(APP_PORT)]
    command += ["--no-proxy-headers", "tests.fastapi_app:app"]
    with server_in(hosts.server_ns, command, tmp_path, "uvicorn"):
        check_another_host(hosts, [*GUARDED, "/pub/secret"], tmp_path)
        status, body = http_get(hosts.client_ns, hosts.server_ip4, APP_PORT, "/pub/health")
        assert status == 200, body
        # This host, by its own address and by loopback: everything.
        this, server = hosts.server_ns, hosts.server_ip4
        for address in (server, "127.0.0.1"):
            for path in ("/healthz", "/pub/health", "/pub/secret"):
                status, body = http_get(this, address, APP_PORT, path)
                assert status == 200, (address, path, body)
        status, body = http_get(this, server, APP_PORT, "/admin")
        assert status == 200, body
        assert socket_status(this, server, handshake("/ws/private", f"{server}:{APP_PORT}")) == 101
        # Only this host's requests ran a guarded endpoint.
        status, body = http_get(this, server, APP_PORT, "/ran")
        assert json.loads(body) == {"ran": ["secret", "secret", "admin", "private socket"]}


def test_quart_extension_under_hypercorn(hosts, tmp_path):
    """Quart with flask_selfhost.quart.SelfHost, SELFHOST_TRUSTED_PROXIES set
    in app.config, allow_remote views (HTTP and WebSocket)."""
    pytest.importorskip("hypercorn", reason="needs hypercorn (the test extra installs it)")
    pytest.importorskip("quart", reason="needs quart (the test extra installs it)")
    command = [sys.executable, "-m", "hypercorn", "--bind", f"0.0.0.0:{APP_PORT}"]
    command += ["tests.quart_app:app"]
    with server_in(hosts.server_ns, command, tmp_path, "hypercorn"):
        check_another_host(hosts, GUARDED, tmp_path)
        this, other, server = hosts.server_ns, hosts.client_ns, hosts.server_ip4
        # Another host that claims to relay this host's client: not the proxy.
        status, body = http_get(other, server, APP_PORT, "/admin", {"X-Forwarded-For": "::1"})
        assert status == 403, body
        # This host: by its own address, and from loopback addresses other
        # than the configured proxy's.
        status, body = http_get(this, server, APP_PORT, "/admin")
        assert status == 200, body
        status, body = http_get(this, "127.0.0.1", APP_PORT, "/admin", source="127.0.0.2")
        assert status == 200, body
        # SELFHOST_TRUSTED_PROXIES=127.0.0.1: the proxy must name its client...
        status, body = http_get(this, "127.0.0.1", APP_PORT, "/admin")
        assert status == 403 and "trusted proxy" in last_refusal(tmp_path), body
        relayed = {"X-Forwarded-For": "::1"}
        status, body = http_get(this, "127.0.0.1", APP_PORT, "/admin", relayed)
        assert status == 200, body
        # ... and a client it names on another host is refused.
        relayed = {"X-Forwarded-For": hosts.client_ip4}
        status, body = http_get(this, "127.0.0.1", APP_PORT, "/admin", relayed)
        assert status == 403 and "another host" in last_refusal(tmp_path), body
        # A WebSocket opened by another site's page, on this host: refused.
        own = f"http://{server}:{APP_PORT}"
        host = f"{server}:{APP_PORT}"
        evil = handshake("/ws/private", host, origin="http://evil.example")
        assert socket_status(this, server, evil) == 403
        assert socket_status(this, server, handshake("/ws/private", host, origin=own)) == 101
        status, body = http_get(this, server, APP_PORT, "/ran")
        assert json.loads(body) == {"ran": ["admin", "admin", "admin", "private socket"]}
