"""More attacks on the WSGI fronts, against real servers from another host.

The other host is a real network namespace joined by a veth pair
(:mod:`tests.netns`); requests are raw sockets.

1. gunicorn's cleartext HTTP/2 (h2c) behind a PROXY protocol relay: gunicorn
   drops the PROXY header's client on HTTP/2 requests, so the relay itself
   (loopback) looked like the client.
"""

from __future__ import annotations

import pytest

from .netns import proxy_protocol_relay, raw_exchange, require_netns, server_in, two_hosts
from .servers import gunicorn_command

pytestmark = [pytest.mark.slow, pytest.mark.root]

APP_PORT, RELAY_PORT = 8000, 8100


@pytest.fixture
def hosts():
    require_netns()
    with two_hosts() as made:
        yield made


# 1. h2c behind a PROXY protocol relay -----------------------------------------

#: An HTTP/1.1 request that asks to continue as HTTP/2 (RFC 7540 section 3.2);
#: gunicorn answers it, as stream 1, on the upgraded connection.
H2C_UPGRADE = (
    "GET /admin HTTP/1.1\r\nHost: localhost\r\n"
    "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
    "HTTP2-Settings: AAMAAABkAAQAAP__\r\n{extra}\r\n"
)


@pytest.mark.parametrize("options", ["trusted_proxies='127.0.0.1'", ""], ids=["trusted", "default"])
@pytest.mark.parametrize("worker", ["gthread", "gevent"])
def test_h2c_through_a_proxy_protocol_relay_is_refused(hosts, tmp_path, worker, options):
    """HAProxy-style ``send-proxy`` relay on this host, gunicorn with
    ``--proxy-protocol`` and h2c upgrades on: the other host upgrades its
    connection to HTTP/2. gunicorn's HTTP/2 requests carry no PROXY_PROTOCOL
    and name the relay (127.0.0.1) as the client, so the guard saw a
    loopback client, or a trusted proxy vouching for an X-Forwarded-For the
    other host wrote itself."""
    if worker == "gevent":
        pytest.importorskip("gevent", reason="needs gevent (the test extra installs it)")
    pytest.importorskip("h2", reason="gunicorn's HTTP/2 needs the h2 package")
    command = gunicorn_command(
        "--bind", f"127.0.0.1:{APP_PORT}", "--worker-class", worker,
        *(["--threads", "2"] if worker == "gthread" else []),
        "--proxy-protocol", "v1", "--proxy-allow-from", "127.0.0.1",
        "--http-protocols", "h2,h1", "--http2-cleartext", "upgrade",
        f"tests.nginx:guarded_app({options})",
    )  # fmt: skip
    listen = (hosts.server_ip4, RELAY_PORT)
    with (
        server_in(hosts.server_ns, command, tmp_path, f"gunicorn-{worker}", port=APP_PORT),
        proxy_protocol_relay(hosts.server_ns, listen, ("127.0.0.1", APP_PORT), 1),
    ):
        for extra in ("", "X-Forwarded-For: 127.0.0.1\r\n"):
            upgrade = H2C_UPGRADE.format(extra=extra).encode()
            statuses, text = raw_exchange(hosts.client_ns, *listen, [upgrade], False, 2.0)
            assert statuses == [101], text  # gunicorn did switch to HTTP/2
            # The app (tests.nginx.report) answers with JSON naming the client.
            assert '"remote"' not in text, (extra, text)
            assert "Forbidden: only clients on this server's own host" in text, (extra, text)
