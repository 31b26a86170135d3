"""Proof from another host: both strategies, the DNAT trap, spoofed headers.

Every case is a real HTTP request over a real veth link between two network
namespaces (``tests.netns``): the *server* namespace runs gunicorn, the
*client* namespace is another host. "This host" means a request made inside
the server namespace, to loopback or to the server's own veth address.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from .conftest import require_commands
from .netns import (
    Hosts,
    dnat_to_loopback,
    gunicorn_in,
    http_get,
    ns_run,
    require_netns,
    two_hosts,
)
from .servers import ROOT, last_refusal

pytestmark = [pytest.mark.root, pytest.mark.slow]

PORT = 8000  # each test has fresh namespaces, so any port is free there
REFUSED = "connection refused"
ALL_INTERFACES = ["-b", f"[::]:{PORT}"]  # dual-stack on Linux: IPv4 too
LOOPBACK = ["-b", f"127.0.0.1:{PORT}", "-b", f"[::1]:{PORT}"]

#: gunicorn's own logging, with level and logger name on each line, so that a
#: test can see that a refusal is a WARNING of the ``flask_selfhost`` logger.
LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"generic": {"format": "[%(levelname)s] %(name)s: %(message)s"}},
}


@pytest.fixture
def hosts():
    require_netns()
    with two_hosts() as pair:
        yield pair


def server_addresses(hosts: Hosts) -> list[str]:
    return [hosts.server_ip4, hosts.server_ip6]


# Strategy 3: every interface, guarded ------------------------------------

#: ``[::]`` is dual-stack on Linux (IPv4 arrives as ``::ffff:a.b.c.d``);
#: ``0.0.0.0`` is IPv4 only, with plain IPv4 addresses in the environ.
EVERY_INTERFACE = {
    "[::]": (["-b", f"[::]:{PORT}"], [4, 6]),
    "0.0.0.0": (["-b", f"0.0.0.0:{PORT}"], [4]),
}


def addresses_of(hosts: Hosts, versions: list[int]) -> list[str]:
    return [{4: hosts.server_ip4, 6: hosts.server_ip6}[version] for version in versions]


@pytest.mark.parametrize("bind", EVERY_INTERFACE)
def test_all_interfaces_guarded_refuses_the_other_host(hosts, tmp_path, bind):
    args, versions = EVERY_INTERFACE[bind]
    with gunicorn_in(hosts.server_ns, [*args, "demo_app:app"], PORT, tmp_path) as server:
        for address in addresses_of(hosts, versions):
            status, body = http_get(hosts.client_ns, address, PORT, "/admin")
            assert status == 403, (address, body)
            assert "another host" in last_refusal(tmp_path)
            # The link works and the app answers: the public page is public.
            assert http_get(hosts.client_ns, address, PORT, "/")[0] == 200, address
    if bind == "0.0.0.0":
        assert f"remote={hosts.client_ip4} local={hosts.server_ip4}" in server.log()


@pytest.mark.parametrize("bind", EVERY_INTERFACE)
def test_all_interfaces_guarded_serves_this_host(hosts, tmp_path, bind):
    args, versions = EVERY_INTERFACE[bind]
    loopbacks = [{4: "127.0.0.1", 6: "::1"}[version] for version in versions]
    with gunicorn_in(hosts.server_ns, [*args, "demo_app:app"], PORT, tmp_path):
        # Loopback, and the host's own veth address (client == local).
        for address in [*loopbacks, *addresses_of(hosts, versions)]:
            status, body = http_get(hosts.server_ns, address, PORT, "/admin")
            assert status == 200, (address, body)
            assert "<h1>Admin</h1>" in body


@pytest.mark.parametrize(
    "spoof",
    [{"X-Forwarded-For": "127.0.0.1"}, {"Forwarded": "for=127.0.0.1"}, {"X-Real-IP": "::1"}],
)
def test_spoofed_forwarding_header_from_the_other_host_is_refused(hosts, tmp_path, spoof):
    with gunicorn_in(hosts.server_ns, [*ALL_INTERFACES, "demo_app:app"], PORT, tmp_path):
        for address in server_addresses(hosts):
            status, body = http_get(hosts.client_ns, address, PORT, "/admin", headers=spoof)
            assert status == 403, (address, body)


# Strategy 1: loopback binding, unguarded ---------------------------------


def test_loopback_binding_refuses_connections_from_the_other_host(hosts, tmp_path):
    with gunicorn_in(hosts.server_ns, [*LOOPBACK, "demo_app:unguarded_app"], PORT, tmp_path):
        assert http_get(hosts.server_ns, "127.0.0.1", PORT, "/admin")[0] == 200
        assert http_get(hosts.server_ns, "::1", PORT, "/admin")[0] == 200
        for address in server_addresses(hosts):
            assert http_get(hosts.client_ns, address, PORT, "/admin") == (None, REFUSED)


# The DNAT trap -----------------------------------------------------------


def test_dnat_trap_exposes_a_loopback_binding(hosts, tmp_path):
    require_commands("iptables", "sysctl")
    with gunicorn_in(hosts.server_ns, [*LOOPBACK, "demo_app:unguarded_app"], PORT, tmp_path):
        assert http_get(hosts.client_ns, hosts.server_ip4, PORT, "/admin") == (None, REFUSED)
        dnat_to_loopback(hosts, PORT)
        status, body = http_get(hosts.client_ns, hosts.server_ip4, PORT, "/admin")
        # The trap is real: another host reads the admin page, and the app is
        # told that the connection arrived on 127.0.0.1.
        assert status == 200, body
        assert f"You are {hosts.client_ip4}" in body
        assert "connection is 127.0.0.1" in body


def test_dnat_trap_guarded_refuses_and_logs(hosts, tmp_path):
    require_commands("iptables", "sysctl")
    log_config = tmp_path / "log.json"
    log_config.write_text(json.dumps(LOG_CONFIG))
    args = [*LOOPBACK, "--log-config-json", str(log_config), "demo_app:app"]
    with gunicorn_in(hosts.server_ns, args, PORT, tmp_path) as server:
        dnat_to_loopback(hosts, PORT)
        status, body = http_get(hosts.client_ns, hosts.server_ip4, PORT, "/admin")
        assert status == 403, body
        assert http_get(hosts.client_ns, hosts.server_ip4, PORT, "/")[0] == 200
        assert http_get(hosts.server_ns, "127.0.0.1", PORT, "/admin")[0] == 200
    expected = (
        "[WARNING] flask_selfhost: selfhost=refused method=GET path=/admin "
        f'remote={hosts.client_ip4} local=127.0.0.1 rule=source reason="the client is another host"'
    )
    assert expected in server.log(), server.log()


def snmp6(ns: str, counter: str) -> int:
    """One counter of the namespace's IPv6 statistics (``/proc/net/snmp6``)."""
    for line in ns_run(ns, "cat", "/proc/net/snmp6").stdout.splitlines():
        name, _, value = line.partition("\t")
        if name.strip() == counter:
            return int(value)
    raise KeyError(counter)


def test_ipv6_dnat_to_loopback_does_not_reach_the_app(hosts, tmp_path):
    """Measured, not assumed: Linux has no ``route_localnet`` for IPv6. A
    packet DNAT'd to ``::1`` matches the rule, then the server finds no route
    for it (``Ip6InNoRoutes``) and answers ICMPv6 destination unreachable, so
    the client sees "network unreachable", not a refusal from a socket."""
    require_commands("ip6tables")
    with gunicorn_in(hosts.server_ns, [*LOOPBACK, "demo_app:unguarded_app"], PORT, tmp_path):
        ns_run(
            hosts.server_ns,
            *["ip6tables", "-t", "nat", "-A", "PREROUTING", "-i", hosts.server_if],
            *["-p", "tcp", "--dport", str(PORT), "-j", "DNAT", "--to-destination"],
            f"[::1]:{PORT}",
            check=True,
        )
        no_routes = snmp6(hosts.server_ns, "Ip6InNoRoutes")
        unreachable = snmp6(hosts.client_ns, "Icmp6InDestUnreachs")
        status, error = http_get(hosts.client_ns, hosts.server_ip6, PORT, "/admin", timeout=5)
        assert status is None, error
        assert "Network is unreachable" in error
        assert snmp6(hosts.server_ns, "Ip6InNoRoutes") > no_routes
        assert snmp6(hosts.client_ns, "Icmp6InDestUnreachs") > unreachable
        counters = ns_run(
            hosts.server_ns, "ip6tables", "-t", "nat", "-L", "PREROUTING", "-v", "-x", "-n"
        ).stdout
        packets = re.search(r"^\s*(\d+)\s+\d+\s+DNAT", counters, re.MULTILINE)
        assert packets and int(packets.group(1)) > 0, counters  # the rule did match
        # The app itself is up, for this host.
        assert http_get(hosts.server_ns, "::1", PORT, "/admin")[0] == 200


# The demo's gunicorn configuration files, started as a user would ---------


def test_demo_guarded_config(hosts, tmp_path):
    args = ["-c", "demo_app/gunicorn_guarded.py"]
    env = {"DEMO_PORT": str(PORT)}
    with gunicorn_in(hosts.server_ns, args, PORT, tmp_path, env=env) as server:
        for address in server_addresses(hosts):
            assert http_get(hosts.client_ns, address, PORT, "/admin")[0] == 403, address
            assert http_get(hosts.client_ns, address, PORT, "/api/status")[0] == 403, address
            assert http_get(hosts.client_ns, address, PORT, "/healthz")[0] == 200, address
            assert http_get(hosts.server_ns, address, PORT, "/admin")[0] == 200, address
        assert http_get(hosts.server_ns, "127.0.0.1", PORT, "/api/status")[0] == 200
    log = server.log()
    assert (
        f"[INFO] flask_selfhost: listening on [::]:{PORT}: every interface (strategy 3): "
        "other hosts can connect; flask_selfhost refuses them"
    ) in log, log
    assert f"remote=::ffff:{hosts.client_ip4} local=::ffff:{hosts.server_ip4}" in log, log
    assert f"remote={hosts.client_ip6} local={hosts.server_ip6}" in log, log


def test_demo_loopback_config(hosts, tmp_path):
    args = ["-c", "demo_app/gunicorn_loopback.py"]
    env = {"DEMO_PORT": str(PORT)}
    with gunicorn_in(hosts.server_ns, args, PORT, tmp_path, env=env) as server:
        for address in server_addresses(hosts):
            assert http_get(hosts.client_ns, address, PORT, "/admin") == (None, REFUSED)
        for address in ["127.0.0.1", "::1"]:
            assert http_get(hosts.server_ns, address, PORT, "/admin")[0] == 200, address
    log = server.log()
    for shown in [f"127.0.0.1:{PORT}", f"[::1]:{PORT}"]:
        assert (
            f"[INFO] flask_selfhost: listening on {shown}: loopback binding (strategy 1): "
            "other hosts cannot connect unless a DNAT rule forwards to loopback"
        ) in log, log


# Load: correctness under concurrency (speed is for benchmarks/load.py) -----


def test_short_load_from_both_hosts():
    require_netns()
    done = subprocess.run(
        [sys.executable, "benchmarks/load.py", "--seconds", "2", "--quick", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr + done.stdout
    report = json.loads(done.stdout)
    for mode in ("guarded", "unguarded"):
        run = report[mode]
        for side in ("this_host", "other_host"):
            counts = run[side]
            assert counts["total"] > 0, (mode, side, counts)
            assert counts["errors"] == {}, (mode, side, counts)
            assert set(counts["statuses"]) <= {"200", "403"}, (mode, side, counts)
    guarded = report["guarded"]
    assert guarded["this_host"]["statuses"] == {"200": guarded["this_host"]["total"]}
    assert guarded["other_host"]["statuses"] == {"403": guarded["other_host"]["total"]}
    unguarded = report["unguarded"]
    assert unguarded["other_host"]["statuses"] == {"200": unguarded["other_host"]["total"]}
