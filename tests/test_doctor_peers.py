"""The doctor's view of who is behind the app's port (flask_selfhost.doctor.peers
and .relays): its parsers and findings on sample input, then a real socat in
a network namespace relaying another host to the app's port: flagged risky
with its owner, and named as the process behind the connection it relays."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest

from flask_selfhost import Options
from flask_selfhost.doctor import NOTE, REFUSED_BY_GUARD, RISKY, Question
from flask_selfhost.doctor.peers import TcpSocket, connected_findings, parse_sockets
from flask_selfhost.doctor.relays import (
    Forwarder,
    command_targets,
    forwarder_target_findings,
    socket_targets,
)

from .conftest import require_commands
from .netns import ns_command, ns_run, require_netns, two_hosts
from .test_doctor import PROC_NET_TCP, doctor_command

# Parsers and findings on sample input ------------------------------------


def test_parse_sockets_keeps_every_socket_with_its_uid_and_inode():
    sockets = parse_sockets(PROC_NET_TCP, "little")
    assert len(sockets) == 5
    assert sockets[3] == TcpSocket("127.0.0.2", 8006, "127.0.0.1", 50304, "01", 0, 70160)
    assert sockets[4] == TcpSocket("127.0.0.1", 50304, "127.0.0.2", 8006, "01", 0, 70159)


CONTAINER = ["-container-ip", "172.17.0.2", "-container-port", "80"]


@pytest.mark.parametrize(
    ("name", "argv", "targets"),
    [
        ("socat", ["socat", "TCP-LISTEN:9000,fork", "TCP:127.0.0.1:8000"], [("127.0.0.1", 8000)]),
        ("socat", ["socat", "tcp-l:9000", "TCP4:localhost:8000,nodelay"], [("localhost", 8000)]),
        ("socat", ["socat", "TCP6-LISTEN:9000", "TCP6:[::1]:8000"], [("::1", 8000)]),
        ("socat", ["socat", "TCP-LISTEN:9000", "EXEC:/bin/cat"], []),
        ("ssh", ["ssh", "-N", "-R", "9000:127.0.0.1:8000", "host"], [("127.0.0.1", 8000)]),
        ("ssh", ["ssh", "-R0.0.0.0:9000:localhost:8000", "host"], [("localhost", 8000)]),
        ("ssh", ["ssh", "-L", "9000:127.0.0.1:8000", "host"], []),
        (
            "docker-proxy",
            ["docker-proxy", "-proto", "tcp", "-host-port", "9000", *CONTAINER],
            [("172.17.0.2", 80)],
        ),
        ("docker-proxy", ["docker-proxy", "-container-port=8000"], [("?", 8000)]),
        ("nginx", ["nginx: worker process"], []),
    ],
)
def test_command_targets(name, argv, targets):
    assert command_targets(name, argv) == targets


def test_socket_targets_are_the_listening_ports_a_process_dials():
    sockets = parse_sockets(PROC_NET_TCP, "little")
    # 70159 dials 127.0.0.2:8006, where a socket listens; 70160 is the
    # accepted end, whose other end is a client's port.
    assert socket_targets({70159}, sockets) == [("127.0.0.2", 8006)]
    assert socket_targets({70160}, sockets) == []


SOCAT = Forwarder((41, 42), "socat", 1001, (("127.0.0.1", 8000),))
ELSEWHERE = Forwarder((43,), "socat", 1001, (("127.0.0.1", 9999),))
NGINX = Forwarder((44,), "nginx", 33, (("127.0.0.1", 8000),))


@pytest.mark.parametrize(
    ("forwarder", "scope", "options", "server_uids", "severity", "refused"),
    [
        (SOCAT, Question(8000), None, frozenset(), RISKY, False),
        (SOCAT, Question(), None, frozenset(), NOTE, False),
        (ELSEWHERE, Question(8000), None, frozenset(), NOTE, False),
        # The guard refuses it: it has refuse_forwarders and runs as the
        # forwarder's user, or as root.
        (SOCAT, Question(8000, "app", True), Options(refuse_forwarders=True), {1001}, NOTE, True),
        (SOCAT, Question(8000, "app", True), Options(refuse_forwarders=True), {0}, NOTE, True),
        # ...but not when it cannot read the forwarder, nor without the option.
        (SOCAT, Question(8000, "app", True), Options(refuse_forwarders=True), {1002}, RISKY, False),
        (SOCAT, Question(8000, "app", True), Options(), {1001}, RISKY, False),
        (NGINX, Question(8000, "app", True), Options(refuse_forwarders=True), {33}, NOTE, True),
        (
            NGINX,
            Question(8000, "app", True),
            Options(refuse_forwarders=True, trusted_proxies=["127.0.0.1"]),
            {33},
            RISKY,
            False,
        ),
    ],
)
def test_forwarder_target_findings(forwarder, scope, options, server_uids, severity, refused):
    (finding,) = forwarder_target_findings([forwarder], scope, set(), options, server_uids)
    assert finding.severity == severity
    assert bool(finding.details.get(REFUSED_BY_GUARD)) == refused
    assert finding.topic == "relay"
    assert f"{forwarder.name} (pid " in finding.message
    assert "uid" in finding.message
    if severity == RISKY:
        assert finding.fix
        if forwarder.name == "socat":
            assert "kill 41 42" in finding.fix and "refuse_forwarders=True" in finding.fix
        else:
            assert "trusted_proxies" in finding.fix


def test_a_forwarder_with_no_target_seen_is_left_to_the_listener_findings():
    assert forwarder_target_findings([Forwarder((5,), "socat", 0, ())], Question(8000), set()) == []


def test_connected_findings_name_the_client_socket_and_its_process():
    sockets = parse_sockets(PROC_NET_TCP, "little")
    (finding,) = connected_findings(8006, sockets, {70159: {1}})
    assert finding.severity == NOTE and finding.topic == "connected"
    assert "127.0.0.1 port 50304: root (uid 0)" in finding.message
    assert finding.details["connections"][0]["processes"][0][0] == 1
    # The server's end alone, as another host's connection leaves it.
    (finding,) = connected_findings(8006, sockets[:4], {})
    assert "no socket here (another host or network namespace)" in finding.message
    assert connected_findings(9999, sockets, {}) == []


# A real socat ---------------------------------------------------------------

APP_PORT, SOCAT_PORT = 8000, 9000


@pytest.mark.root
def test_socat_relaying_to_the_port_is_risky_and_named_behind_its_connection(tmp_path):
    require_netns()
    require_commands("socat")
    with two_hosts() as hosts:
        app = subprocess.Popen(
            ns_command(
                hosts.server_ns,
                sys.executable,
                "-c",
                f"import socket,time; s=socket.create_server(('127.0.0.1', {APP_PORT})); "
                "print(1, flush=True); c=s.accept(); time.sleep(60)",
            ),
            stdout=subprocess.PIPE,
            text=True,
        )
        socat = subprocess.Popen(
            ns_command(
                hosts.server_ns,
                shutil.which("socat") or "socat",
                f"TCP-LISTEN:{SOCAT_PORT},fork,reuseaddr",
                f"TCP:127.0.0.1:{APP_PORT}",
            )
        )
        client = None
        try:
            assert app.stdout is not None and app.stdout.readline().strip() == "1"
            # Another host connects to socat, which dials the app.
            client = subprocess.Popen(
                ns_command(
                    hosts.client_ns,
                    sys.executable,
                    "-c",
                    "import socket,sys,time; c=socket.create_connection((sys.argv[1], "
                    f"{SOCAT_PORT})); print(1, flush=True); time.sleep(60)",
                    hosts.server_ip4,
                ),
                stdout=subprocess.PIPE,
                text=True,
            )
            assert _connected(app, client)
            done = ns_run(hosts.server_ns, *doctor_command("--port", str(APP_PORT), "--json"))
            report = json.loads(done.stdout)
            assert done.returncode == 1, report
            (relay,) = [f for f in report["findings"] if f["topic"] == "relay"]
            assert relay["severity"] == RISKY
            assert relay["details"]["name"] == "socat" and relay["details"]["uid"] == 0
            assert ["127.0.0.1", APP_PORT] in relay["details"]["targets"]
            assert "user root (uid 0)" in relay["message"] and "refuse_forwarders" in relay["fix"]
            (connected,) = [f for f in report["findings"] if f["topic"] == "connected"]
            assert "root (uid 0), socat (pid" in connected["message"], connected
            text = ns_run(hosts.server_ns, *doctor_command("--port", str(APP_PORT))).stdout
            assert "RISKY    relay: socat (pid" in text
            assert "         fix: stop it (kill" in text
        finally:
            for process in (client, socat, app):
                if process is not None:
                    process.kill()
                    process.wait()


def _connected(app: subprocess.Popen, client: subprocess.Popen) -> bool:
    """The client said it connected, and socat's connection to the app is up
    (read in the app's namespace: ``/proc/PID/net`` is its process's)."""
    assert client.stdout is not None and client.stdout.readline().strip() == "1"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(f"/proc/{app.pid}/net/tcp") as file:
            sockets = parse_sockets(file.read())
        if any(item.remote_port == APP_PORT and item.state == "01" for item in sockets):
            return True
        time.sleep(0.05)
    return False
