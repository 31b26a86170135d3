"""Proof behind a real nginx: trusted forwarders, over TCP and a unix socket.

nginx and gunicorn run in the *server* network namespace (``tests.netns``);
"this host" is a client run in that namespace (to loopback, or to the
server's own veth address), "another host" a client in the *client*
namespace, over a real veth link. Every request goes through nginx, so the
guard's immediate peer is always nginx: 127.0.0.1, or the unix socket.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .netns import (
    Hosts,
    gunicorn_in,
    http_get,
    ns_command,
    require_netns,
    two_hosts,
    wait_for_port_in,
)
from .nginx import FORWARDED, NO_HEADERS, X_FORWARDED_FOR, nginx, require_nginx
from .servers import last_refusal

pytestmark = [pytest.mark.root, pytest.mark.slow]

NGINX_PORT = 8080  # fresh namespaces for each test: any port is free there
APP_PORT = 8000


@pytest.fixture
def hosts():
    require_netns()
    require_nginx()
    with two_hosts() as pair:
        yield pair


@dataclass
class Stack:
    hosts: Hosts
    log_dir: Path

    def this_host(self, address: str = "127.0.0.1", **headers: str) -> tuple[int | None, str]:
        return http_get(self.hosts.server_ns, address, NGINX_PORT, "/", headers=headers)

    def other_host(self, address: str | None = None, **headers: str) -> tuple[int | None, str]:
        address = address or self.hosts.server_ip4
        return http_get(self.hosts.client_ns, address, NGINX_PORT, "/", headers=headers)

    def refusal(self) -> str:
        """The app server's latest refusal line, with the full reason."""
        return last_refusal(self.log_dir)


def server_addresses(hosts: Hosts) -> list[str]:
    return [hosts.server_ip4, hosts.server_ip6]


@contextlib.contextmanager
def behind_nginx(
    hosts: Hosts, tmp_path: Path, headers: str, options: str, via: str = "tcp"
) -> Iterator[Stack]:
    """gunicorn serving ``tests.nginx:guarded_app(OPTIONS)``, nginx in front,
    proxying over loopback TCP or a unix socket; both in the server namespace."""
    app = f"tests.nginx:guarded_app({options})"
    bind = ["--bind", f"127.0.0.1:{APP_PORT}"]  # also what gunicorn_in waits on
    upstream = f"http://127.0.0.1:{APP_PORT}"
    if via == "unix":
        socket_path = tmp_path / "app.sock"
        bind += ["--bind", f"unix:{socket_path}"]
        upstream = f"http://unix:{socket_path}:"
    listen = [(address, NGINX_PORT) for address in ("127.0.0.1", "::1", *server_addresses(hosts))]
    with (
        gunicorn_in(hosts.server_ns, [*bind, "--workers", "1", app], APP_PORT, tmp_path),
        nginx(
            listen,
            upstream,
            headers,
            tmp_path / "nginx",
            prefix=ns_command(hosts.server_ns),
            wait=lambda process: wait_for_port_in(
                hosts.server_ns, "127.0.0.1", NGINX_PORT, process=process
            ),
        ),
    ):
        yield Stack(hosts, tmp_path)


def reported(body: str) -> dict:
    return json.loads(body)


# nginx adds X-Forwarded-For and the guard trusts it -----------------------


@pytest.mark.parametrize(
    ("via", "options"), [("tcp", "trusted_proxies='127.0.0.1'"), ("unix", "trusted_proxies='unix'")]
)
def test_trusted_nginx_serves_this_host_and_refuses_another(hosts, tmp_path, via, options):
    with behind_nginx(hosts, tmp_path, X_FORWARDED_FOR, options, via) as stack:
        status, body = stack.this_host("127.0.0.1")
        assert status == 200, body
        assert reported(body)["x_forwarded_for"] == "127.0.0.1"
        # A client on this host that dials the host's own LAN address: nginx
        # records that address, which the guard finds among the host's own.
        status, body = stack.this_host(hosts.server_ip4)
        assert status == 200, body
        assert reported(body)["x_forwarded_for"] == hosts.server_ip4

        status, body = stack.other_host()
        assert status == 403, body
        assert "a trusted proxy relayed a client on another host" in stack.refusal()


@pytest.mark.parametrize(
    ("via", "options"), [("tcp", "trusted_proxies='127.0.0.1'"), ("unix", "trusted_proxies='unix'")]
)
def test_spoofed_headers_through_trusted_nginx_are_refused(hosts, tmp_path, via, options):
    with behind_nginx(hosts, tmp_path, X_FORWARDED_FOR, options, via) as stack:
        # nginx appends the real address: "127.0.0.1, 10.213.x.2"; the guard
        # reads only the entry nginx wrote.
        status, body = stack.other_host(**{"X-Forwarded-For": "127.0.0.1"})
        assert status == 403, body
        assert "another host" in stack.refusal()
        # A Forwarded header that nginx passes through untouched contradicts
        # the X-Forwarded-For that nginx wrote.
        status, body = stack.other_host(Forwarded="for=127.0.0.1")
        assert status == 403, body
        assert "name different clients" in stack.refusal()
        status, body = stack.other_host(**{"X-Forwarded-For": "for=127.0.0.1, ::1"})
        assert status == 403, body
        assert "malformed" in stack.refusal()


def test_trusted_nginx_over_ipv6(hosts, tmp_path):
    options = "trusted_proxies='127.0.0.1, ::1'"
    with behind_nginx(hosts, tmp_path, X_FORWARDED_FOR, options) as stack:
        for address in ("::1", hosts.server_ip6):
            status, body = stack.this_host(address)
            assert status == 200, (address, body)
            assert reported(body)["x_forwarded_for"] == address
        status, body = stack.other_host(hosts.server_ip6)
        assert status == 403, body
        assert "a trusted proxy relayed a client on another host" in stack.refusal()
        status, body = stack.other_host(hosts.server_ip6, **{"X-Forwarded-For": "::1"})
        assert status == 403, body


def test_trusted_nginx_with_forwarded_and_x_forwarded_for(hosts, tmp_path):
    headers = f"{X_FORWARDED_FOR}\n            {FORWARDED}"
    with behind_nginx(hosts, tmp_path, headers, "trusted_proxies='127.0.0.1'") as stack:
        status, body = stack.this_host()
        assert status == 200, body
        assert reported(body)["forwarded"] == "for=127.0.0.1"
        status, body = stack.other_host()
        assert status == 403, body
        assert "another host" in stack.refusal()


# The Host header through the proxy: what the host rule sees ---------------

PASS_HOST = "proxy_set_header Host $host:$server_port;"


def test_nginx_passing_the_host_keeps_the_dns_rebinding_defence(hosts, tmp_path):
    headers = f"{X_FORWARDED_FOR}\n            {PASS_HOST}"
    with behind_nginx(hosts, tmp_path, headers, "trusted_proxies='127.0.0.1, ::1'") as stack:
        for address in ("127.0.0.1", hosts.server_ip4, hosts.server_ip6):
            status, body = stack.this_host(address)  # Host: that address, one of this host's
            assert status == 200, (address, body)
        # A page on this host after DNS rebinding: loopback client, its own Host.
        status, body = stack.this_host(Host=f"evil.test:{NGINX_PORT}")
        assert status == 403, body
        assert "allowed_hosts" in stack.refusal()
        status, body = stack.other_host()
        assert status == 403, body


def test_nginx_hiding_the_host_lets_dns_rebinding_through(hosts, tmp_path):
    """Documented (README, Reverse proxies): without `proxy_set_header Host`,
    nginx sends its upstream (127.0.0.1:8000) as the Host, whatever the
    browser asked for, and the host rule has nothing to judge."""
    with behind_nginx(hosts, tmp_path, X_FORWARDED_FOR, "trusted_proxies='127.0.0.1'") as stack:
        status, body = stack.this_host(Host=f"evil.test:{NGINX_PORT}")
        assert status == 200, body


# The same nginx, not trusted ----------------------------------------------


@pytest.mark.parametrize("via", ["tcp", "unix"])
def test_untrusted_nginx_is_refused_for_everyone(hosts, tmp_path, via):
    with behind_nginx(hosts, tmp_path, X_FORWARDED_FOR, "", via) as stack:
        for status, body in (stack.this_host(), stack.other_host()):
            assert status == 403, body
            assert "trusted_proxies" in stack.refusal()


def test_trusting_another_proxy_is_not_trusting_this_one(hosts, tmp_path):
    with behind_nginx(hosts, tmp_path, X_FORWARDED_FOR, "trusted_proxies='10.9.9.9'") as stack:
        status, body = stack.this_host()
        assert status == 403, body
        assert "trusted_proxies" in stack.refusal()


# nginx without forwarding headers: what no guard can see ------------------


def test_trusted_nginx_without_forwarding_headers_is_refused(hosts, tmp_path):
    """A trusted proxy that sends no forwarding header names no client: its
    requests are refused, not taken for its own."""
    with behind_nginx(hosts, tmp_path, NO_HEADERS, "trusted_proxies='127.0.0.1'") as stack:
        status, body = stack.other_host()
        assert status == 403 and "no forwarding header" in stack.refusal(), body


def test_untrusted_nginx_without_forwarding_headers_lets_every_client_in(hosts, tmp_path):
    """Documented as unsafe ("What no guard can see"): with no option naming
    the proxy, a same-host forwarder that adds no header makes every client
    look like loopback."""
    with behind_nginx(hosts, tmp_path, NO_HEADERS, "") as stack:
        status, body = stack.other_host()
        assert status == 200, body
        assert reported(body)["remote"] == "127.0.0.1"
        assert reported(body)["x_forwarded_for"] is None


def test_unix_socket_without_headers_is_refused_unless_declared_local(hosts, tmp_path):
    # Trusting "unix" is about proxies that name their client: a request over
    # the socket that names nobody is still refused.
    with behind_nginx(hosts, tmp_path, NO_HEADERS, "trusted_proxies='unix'", "unix") as stack:
        status, body = stack.other_host()
        assert status == 403, body
        assert "unix_socket_is_local" in stack.refusal()


def test_unix_socket_is_local_with_a_headerless_proxy_lets_every_client_in(hosts, tmp_path):
    options = "unix_socket_is_local=True"
    with behind_nginx(hosts, tmp_path, NO_HEADERS, options, "unix") as stack:
        status, body = stack.other_host()
        assert status == 200, body
        assert reported(body)["remote"] == ""  # gunicorn's REMOTE_ADDR for a unix socket
