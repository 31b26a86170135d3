"""refuse_forwarders (flask_selfhost.forwarders): a client whose socket a known
forwarder holds is refused and named, on real connections whose client end is
held by a real process. First the WSGI and ASGI middleware on an accepted
socket (a child process named socat or nginx holds the client's end), then
real servers: gunicorn run as a user the test makes, behind a real socat of
that user; Docker's own docker-proxy; ``ssh -R`` through a real sshd."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flask_selfhost import Options, SelfHostMiddleware, forwarders, peer_process
from flask_selfhost.asgi import SelfHostASGIMiddleware
from flask_selfhost.decision import FORWARDER, PUBLIC_REASONS
from flask_selfhost.peer_process import ProcessFinder

from .conftest import require_commands
from .servers import (
    free_port,
    gunicorn,
    last_refusal,
    logs_in,
    request,
    unix_request,
    wait_for_port,
    werkzeug_server,
)
from .test_peer_process import held_by_child
from .users import User

# On an accepted socket ------------------------------------------------------


def whoami(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello\n"]


async def asgi_whoami(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello\n"})


@contextlib.contextmanager
def accepted_from(holder: str | None) -> Iterator[socket.socket]:
    """A real loopback connection whose client end is held by a child process
    run as ``holder`` (its argv[0]), or by this process when ``None``;
    yields the accepted end, as a server's environ holds it."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
        with accepted, contextlib.ExitStack() as stack:
            if holder is None:
                stack.enter_context(client)
            else:
                stack.enter_context(held_by_child(client, holder))
                client.close()
            yield accepted


def environ_for(accepted: socket.socket, **headers: str) -> dict:
    """What gunicorn puts in the environ of ``curl`` on this connection."""
    peer, local = accepted.getpeername(), accepted.getsockname()
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_SOFTWARE": "gunicorn/27.0.1",
        "REMOTE_ADDR": peer[0],
        "REMOTE_PORT": str(peer[1]),
        "HTTP_HOST": f"127.0.0.1:{local[1]}",
        "wsgi.url_scheme": "http",
        "gunicorn.socket": accepted,
        **{f"HTTP_{name.upper()}": value for name, value in headers.items()},
    }


def status_of(app, environ: dict) -> int:
    statuses = []
    body = b"".join(app(environ, lambda status, headers, *_: statuses.append(status)))
    assert body
    return int(statuses[0].split()[0])


def refusals(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("selfhost=refused")]


def test_a_forwarders_connection_is_refused_and_named(caplog):
    guarded = SelfHostMiddleware(whoami, refuse_forwarders=True)
    unguarded = SelfHostMiddleware(whoami)
    with caplog.at_level(logging.WARNING, "flask_selfhost"), accepted_from("socat") as accepted:
        assert status_of(guarded, environ_for(accepted)) == 403
        (line,) = refusals(caplog)
        assert " rule=forwarder " in line and " peer_process=socat " in line
        assert "held by socat (pid " in line
        # Refused again on the same connection: nothing is remembered of a refusal.
        assert status_of(guarded, environ_for(accepted)) == 403
        # Without the option the forwarder's clients pass: the limit it removes.
        assert status_of(unguarded, environ_for(accepted)) == 200


def test_the_refusal_body_is_the_rules_short_text():
    app = SelfHostMiddleware(whoami, refuse_forwarders=True)
    with accepted_from("socat") as accepted:
        body = b"".join(app(environ_for(accepted), lambda *_: None)).decode()
    assert PUBLIC_REASONS[FORWARDER] in body and "socat" not in body


def test_a_clients_own_process_is_granted_and_remembered_on_its_connection(caplog):
    app = SelfHostMiddleware(whoami, refuse_forwarders=True)
    with caplog.at_level(logging.DEBUG, "flask_selfhost"), accepted_from(None) as accepted:
        scans = peer_process.finder.scans
        assert status_of(app, environ_for(accepted)) == 200
        assert id(accepted) in forwarders.cleared_connections
        for _ in range(5):  # keep-alive: no scan, no lookup
            assert status_of(app, environ_for(accepted)) == 200
        assert peer_process.finder.scans <= scans + 1
    grants = [r.getMessage() for r in caplog.records if "selfhost=allowed" in r.getMessage()]
    name = peer_process.process_name(os.getpid())
    assert all(f" peer_process={name} " in line for line in grants), grants
    key = id(accepted)
    del accepted
    assert key not in forwarders.cleared_connections  # gone with its socket object


def test_a_grant_names_no_process_unless_the_option_looked(caplog):
    app = SelfHostMiddleware(whoami)
    with caplog.at_level(logging.DEBUG, "flask_selfhost"), accepted_from(None) as accepted:
        assert status_of(app, environ_for(accepted)) == 200
    (line,) = [r.getMessage() for r in caplog.records if "selfhost=allowed" in r.getMessage()]
    assert "peer_process=" not in line


def test_a_refusal_by_another_rule_names_the_process(caplog):
    # The Host rule refuses; the log line still says who holds the socket.
    app = SelfHostMiddleware(whoami)
    with caplog.at_level(logging.WARNING, "flask_selfhost"), accepted_from("socat") as accepted:
        assert status_of(app, environ_for(accepted, host="evil.example")) == 403
    (line,) = refusals(caplog)
    assert " rule=host " in line and " peer_process=socat " in line


def test_the_common_request_memory_never_skips_the_rule():
    # A direct client teaches the memory of the common request; a forwarder's
    # connection from the same address, with the same Host, is still refused.
    app = SelfHostMiddleware(whoami, refuse_forwarders=True)
    plain = SelfHostMiddleware(whoami)
    with accepted_from(None) as direct, accepted_from("socat") as relayed:
        for guard in (app, plain):
            assert status_of(guard, environ_for(direct)) == 200
        assert app.options.accepted.remotes == {}
        assert plain.options.accepted.remotes  # the memory the option turns off
        assert status_of(app, environ_for(relayed)) == 403
        assert status_of(plain, environ_for(relayed)) == 200


def test_a_trusted_proxys_grant_never_skips_the_rule():
    # socat is no proxy: a header it carries, believed from a trusted address,
    # does not make its connection acceptable.
    app = SelfHostMiddleware(whoami, refuse_forwarders=True, trusted_proxies=["127.0.0.1"])
    relayed = {"x_forwarded_for": "127.0.0.1"}
    with accepted_from("socat") as accepted:
        assert status_of(app, environ_for(accepted, **relayed)) == 403
    # nginx, trusted and relaying with the header, is the proxy it is meant to be...
    with accepted_from("nginx") as accepted:
        assert status_of(app, environ_for(accepted, **relayed)) == 200
    # ...and a forwarder like any other when nothing trusts it.
    untrusted = SelfHostMiddleware(whoami, refuse_forwarders=True)
    with accepted_from("nginx") as accepted:
        assert status_of(untrusted, environ_for(accepted)) == 403


def test_asgi_refuses_a_forwarders_connection():
    app = SelfHostASGIMiddleware(asgi_whoami, refuse_forwarders=True)

    def status(accepted: socket.socket) -> int:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "server": accepted.getsockname(),
            "client": accepted.getpeername(),
            "scheme": "http",
            "method": "GET",
            "path": "/",
            "raw_path": b"/",
            "query_string": b"",
            "headers": [(b"host", f"127.0.0.1:{accepted.getsockname()[1]}".encode())],
        }
        sent: list[dict] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        asyncio.run(app(scope, receive, send))
        return sent[0]["status"]

    with accepted_from("socat") as relayed, accepted_from(None) as direct:
        assert status(relayed) == 403
        assert status(direct) == status(direct) == 200


def test_when_the_scans_budget_is_spent_the_client_is_refused(monkeypatch, caplog):
    # Fail closed: a lookup the budget did not allow cannot clear a client.
    spent = ProcessFinder(share=1e-9)
    with accepted_from(None) as first:
        spent.find(os.fstat(first.fileno()).st_ino)  # the first scan overdraws it
    monkeypatch.setattr(peer_process, "finder", spent)
    app = SelfHostMiddleware(whoami, refuse_forwarders=True)
    with caplog.at_level(logging.WARNING, "flask_selfhost"), accepted_from(None) as accepted:
        assert status_of(app, environ_for(accepted)) == 403
    (line,) = refusals(caplog)
    assert "not looked up" in line and "peer_process=" not in line


def test_socat_to_a_unix_socket_is_named_by_its_pid(tmp_path, caplog):
    # socat relays TCP clients to the app's unix socket: SO_PEERCRED names
    # the process that connected, socat.
    require_commands("socat")
    path = tmp_path / "app.sock"
    app = SelfHostMiddleware(whoami, unix_socket_is_local=True, refuse_forwarders=True)
    relay = free_port()
    with (
        caplog.at_level(logging.WARNING, "flask_selfhost"),
        werkzeug_server(app, f"unix://{path}"),
        forwarder(
            ["socat", f"TCP-LISTEN:{relay},fork,reuseaddr,bind=127.0.0.1", f"UNIX-CONNECT:{path}"],
            relay,
        ),
    ):
        assert unix_request(str(path)).status == 200
        assert request("127.0.0.1", relay).status == 403
    (line,) = refusals(caplog)
    assert " rule=forwarder " in line and " peer_process=socat " in line, line


def test_options():
    assert Options().refuse_forwarders is False
    with pytest.raises(TypeError, match="refuse_forwarders"):
        Options(refuse_forwarders="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="refuse_forwarders needs check_client_socket"):
        Options(refuse_forwarders=True, check_client_socket=False)


# Real servers and real forwarders ------------------------------------------

SERVED = """
from flask_selfhost import SelfHostMiddleware

def whoami(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello\\n"]

refusing = SelfHostMiddleware(whoami, refuse_forwarders=True)
plain = SelfHostMiddleware(whoami)
own_user = SelfHostMiddleware(whoami, allowed_users=["self"], refuse_forwarders=True)
"""


def served_args(port: int, directory: Path, app: str) -> list[str]:
    """gunicorn's arguments for an app of :data:`SERVED` on 127.0.0.1:``port``."""
    return [
        "-w",
        "1",
        "-b",
        f"127.0.0.1:{port}",
        "--chdir",
        str(directory),
        f"served_forwarders:{app}",
    ]


@contextlib.contextmanager
def forwarder(command: list[str], port: int) -> Iterator[subprocess.Popen]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port("127.0.0.1", port, process=process)
        yield process
    finally:
        process.kill()
        process.wait()


def served_module(tmp_path: Path) -> Path:
    """A directory every user may read, with the app module in it."""
    directory = tmp_path / "served"
    directory.mkdir()
    (directory / "served_forwarders.py").write_text(SERVED)
    for path in (tmp_path, directory, directory / "served_forwarders.py"):
        path.chmod(0o755)
    return directory


@contextlib.contextmanager
def socat_in_front(
    tmp_path: Path, app: str, server_user: User, socat_user: User
) -> Iterator[tuple[int, int, Path]]:
    """gunicorn serving ``app`` as ``server_user``, and socat relaying to it
    on 127.0.0.1 as ``socat_user``: yields the server's port, the relay's
    port and the server's log directory."""
    port, relay = free_port(), free_port()
    directory = served_module(tmp_path)
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    with (
        gunicorn(
            served_args(port, directory, app),
            ("127.0.0.1", port),
            log_dir,
            prefix=server_user.command(),
            wait=lambda process: wait_for_port("127.0.0.1", port, process=process),
        ),
        forwarder(
            socat_user.command(
                shutil.which("socat") or "socat",
                f"TCP-LISTEN:{relay},fork,reuseaddr,bind=127.0.0.1",
                f"TCP:127.0.0.1:{port}",
            ),
            relay,
        ),
    ):
        yield port, relay, log_dir


@pytest.mark.root
@pytest.mark.parametrize("app", ["refusing", "plain"])
def test_socat_of_the_servers_own_user(tmp_path, app):
    # The server runs as a user of its own; so does socat, which relays to it.
    # refuse_forwarders refuses its clients and names it; without the option
    # they pass (the limit it removes). A direct client of that user passes.
    from .users import made_users

    require_commands("socat")
    with (
        made_users(1) as (owner,),
        socat_in_front(tmp_path, app, owner, owner) as (port, relay, log_dir),
    ):
        assert request("127.0.0.1", port).status == 200
        relayed = request("127.0.0.1", relay)
        if app == "refusing":
            assert relayed.status == 403, logs_in(log_dir)
            line = last_refusal(log_dir)
            assert " rule=forwarder " in line and " peer_process=socat " in line, line
            assert f" peer_uid={owner.uid} " in line
        else:
            assert relayed.status == 200
            assert "refused" not in logs_in(log_dir)


@pytest.mark.root
def test_socat_of_another_user_is_refused_by_allowed_users(tmp_path):
    # The same socat run by another user: allowed_users refuses it first. The
    # server's user may not read that user's /proc/PID/fd, so the log names
    # the socket's owner, not its process (what a server not run as root
    # cannot see).
    from .users import made_users

    require_commands("socat")
    with (
        made_users(2) as (owner, other),
        socat_in_front(tmp_path, "own_user", owner, other) as (_, relay, log_dir),
    ):
        assert request("127.0.0.1", relay).status == 403
        line = last_refusal(log_dir)
        assert " rule=user " in line and f" peer_uid={other.uid} " in line, line
        assert "peer_process=" not in line


def docker_proxy() -> str | None:
    """Debian's docker-proxy (package docker.io), or the one .ci/run unpacks."""
    for path in (
        os.environ.get("SELFHOST_DOCKER_PROXY", ""),
        "/usr/sbin/docker-proxy",
        "/usr/bin/docker-proxy",
    ):
        if path and os.access(path, os.X_OK):
            return path
    return shutil.which("docker-proxy")


@pytest.mark.root
def test_docker_proxy_is_named_and_refused(tmp_path):
    # Docker's userland proxy for a published port, run alone (no dockerd):
    # its clients reach the app as 127.0.0.1.
    binary = docker_proxy()
    if binary is None:
        pytest.skip("needs docker-proxy (Debian's docker.io; .ci/run unpacks it)")
    port, published = free_port(), free_port()
    directory = served_module(tmp_path)
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    read, write = os.pipe()  # docker-proxy reports its start on fd 3
    command = [
        binary,
        *("-proto", "tcp", "-host-ip", "127.0.0.1", "-host-port", str(published)),
        *("-container-ip", "127.0.0.1", "-container-port", str(port)),
    ]
    with gunicorn(
        served_args(port, directory, "refusing"),
        ("127.0.0.1", port),
        log_dir,
    ):
        process = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3>&{write}', *command],  # dash: fds 0-9 only
            pass_fds=(write,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(write)
        try:
            with os.fdopen(read) as started:
                assert started.readline().strip() == "0"
            assert request("127.0.0.1", port).status == 200
            assert request("127.0.0.1", published).status == 403
            line = last_refusal(log_dir)
            assert " rule=forwarder " in line and " peer_process=docker-proxy " in line, line
        finally:
            process.kill()
            process.wait()


# ssh tunnels through a real sshd, between two network namespaces ------------

SSH_PORT, TUNNEL_PORT = 2222, 9000

SSHD_CONFIG = """\
Port {port}
ListenAddress {address}
HostKey {directory}/host_key
PidFile {directory}/sshd.pid
AuthorizedKeysFile {directory}/authorized_keys
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowTcpForwarding yes
LogLevel ERROR
"""


@contextlib.contextmanager
def sshd_in(ns: str, address: str, directory: Path) -> Iterator[Path]:
    """A real sshd of Debian's openssh-server inside ``ns`` on
    ``address:SSH_PORT``, letting root in with a key made here; yields the
    client's key. Stopped after."""
    from .netns import ns_command, wait_for_port_in

    for name in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(directory / name)],
            check=True,
        )
    (directory / "authorized_keys").write_text((directory / "client_key.pub").read_text())
    config = directory / "sshd_config"
    config.write_text(SSHD_CONFIG.format(port=SSH_PORT, address=address, directory=directory))
    made_run_dir = not Path("/run/sshd").exists()  # its privilege separation directory
    if made_run_dir:
        Path("/run/sshd").mkdir(mode=0o755)
    sshd = subprocess.Popen(
        ns_command(ns, "/usr/sbin/sshd", "-D", "-e", "-f", str(config)), stderr=subprocess.PIPE
    )
    try:
        wait_for_port_in(ns, address, SSH_PORT, process=sshd)
        yield directory / "client_key"
    finally:
        sshd.kill()
        sshd.wait()
        if made_run_dir:
            shutil.rmtree("/run/sshd", ignore_errors=True)


def ssh_command(key: Path, forward: str, spec: str, address: str) -> list[str]:
    return [
        *("ssh", "-N", "-i", str(key), "-p", str(SSH_PORT)),
        *("-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"),
        *("-o", "UserKnownHostsFile=/dev/null", "-o", "ExitOnForwardFailure=yes"),
        *("-o", "LogLevel=ERROR", forward, spec, f"root@{address}"),
    ]


@pytest.mark.root
@pytest.mark.parametrize(
    ("forward", "holder"),
    [
        # ssh -R from the app's host to the other host's sshd: the other
        # host's clients reach the app through the app host's ssh.
        ("-R", "ssh"),
        # ssh -L from the other host to the app host's sshd: sshd dials the app
        # (sshd-session from OpenSSH 9.8, which the prefix also matches).
        ("-L", "sshd"),
    ],
)
def test_an_ssh_tunnel_is_named_and_refused(tmp_path, forward, holder):
    from .netns import gunicorn_in, http_get, ns_command, require_netns, two_hosts

    require_netns()
    if not Path("/usr/sbin/sshd").exists():
        pytest.skip("needs sshd (Debian's openssh-server; .ci/run installs it)")
    require_commands("ssh", "ssh-keygen")
    directory = served_module(tmp_path)
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    keys = tmp_path / "keys"
    keys.mkdir()
    app_port = 8000
    with two_hosts() as hosts:
        # -R: sshd on the other host, ssh on the app's; -L: the reverse.
        sshd_ns, sshd_ip, ssh_ns = (
            (hosts.client_ns, hosts.client_ip4, hosts.server_ns)
            if forward == "-R"
            else (hosts.server_ns, hosts.server_ip4, hosts.client_ns)
        )
        spec = f"{TUNNEL_PORT}:127.0.0.1:{app_port}"
        with (
            gunicorn_in(
                hosts.server_ns,
                served_args(app_port, directory, "refusing"),
                app_port,
                log_dir,
            ),
            sshd_in(sshd_ns, sshd_ip, keys) as key,
        ):
            tunnel = subprocess.Popen(
                ns_command(ssh_ns, *ssh_command(key, forward, spec, sshd_ip)),
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                # The other host's client dials the tunnel on its own loopback.
                deadline = time.monotonic() + 20
                status, body = None, ""
                while status is None and time.monotonic() < deadline:
                    assert tunnel.poll() is None, tunnel.communicate()
                    status, body = http_get(hosts.client_ns, "127.0.0.1", TUNNEL_PORT, timeout=5)
                    if status is None:
                        time.sleep(0.2)
                assert status == 403, (status, body, logs_in(log_dir))
                line = last_refusal(log_dir)
                assert " rule=forwarder " in line and f" peer_process={holder}" in line, line
            finally:
                tunnel.kill()
                tunnel.wait()
