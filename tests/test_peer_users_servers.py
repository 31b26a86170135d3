"""``allowed_users`` and proxies trusted by their user, under real servers.

The server runs as a user made by the test: a server run as root with
``"self"`` would allow root, and prove nothing. Clients are real processes
of the server's user and of two more users (:mod:`tests.users`), in a
network namespace of the test's own (:mod:`tests.netns`), over
``127.0.0.1``, ``::1`` and the namespace's own address, and on unix
sockets. Each client sends two requests on one connection where the server
keeps it open, so that a keep-alive request is judged too, and the users
take turns, so that a grant on one connection is seen not to grant another.
"""

from __future__ import annotations

import json
import pwd
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from flask_selfhost.decision import FORWARDED, USER
from flask_selfhost.forwarded import UNTRUSTED
from flask_selfhost.peer_users import UNIX_UNKNOWN

from .netns import ns_command, ns_run, require_netns, server_in, two_hosts, wait_for_port_in
from .nginx import X_FORWARDED_FOR, nginx, require_nginx
from .servers import gunicorn_command, last_refusal, logs_in
from .test_kernel_witness import uvicorn
from .users import User, made_users, require_users, socket_directory

PORT = 8000
WSGI, ASGI = "tests.user_apps:wsgi_app", "tests.user_apps:asgi_app"


def gunicorn(worker: str, bind: str) -> list[str]:
    threads = ["--threads", "2"] if worker == "gthread" else []  # sync would become gthread
    return gunicorn_command("-w", "1", "-k", worker, *threads, "-b", bind, WSGI)


def werkzeug(host: str, port: int) -> list[str]:
    script = (
        "import sys\nfrom werkzeug.serving import run_simple\n"
        f"from tests.user_apps import wsgi_app\nrun_simple({host!r}, {port}, wsgi_app)\n"
    )
    return [sys.executable, "-c", script]


#: name: the command that serves on every address of the namespace, port PORT.
TCP = {
    "gunicorn sync": gunicorn("sync", f"[::]:{PORT}"),
    "gunicorn gthread": gunicorn("gthread", f"[::]:{PORT}"),
    "gunicorn gevent": gunicorn("gevent", f"[::]:{PORT}"),
    "werkzeug": werkzeug("::", PORT),
    # waitress's [::] listener is IPv6 only: a second one takes IPv4.
    "waitress": [
        *(sys.executable, "-m", "waitress", f"--listen=[::]:{PORT}"),
        *(f"--listen=0.0.0.0:{PORT}", WSGI),
    ],
    "uvicorn": uvicorn("::", ASGI),
    "hypercorn": [sys.executable, "-m", "hypercorn", "--bind", f"[::]:{PORT}", ASGI],
}

#: name: the command that serves on the unix socket {path}.
UNIX = {
    "gunicorn sync": gunicorn("sync", "unix:{path}"),
    "gunicorn gthread": gunicorn("gthread", "unix:{path}"),
    "gunicorn gevent": gunicorn("gevent", "unix:{path}"),
    "werkzeug": werkzeug("unix://{path}", 0),
    "waitress": [
        *(sys.executable, "-m", "waitress", "--unix-socket={path}"),
        *("--unix-socket-perms=666", WSGI),
    ],
    "uvicorn": [sys.executable, "-m", "uvicorn", "--uds", "{path}", ASGI],
    "hypercorn": [sys.executable, "-m", "hypercorn", "--bind", "unix:{path}", ASGI],
}
#: Servers that hand the app no socket object for a unix-socket connection.
NO_UNIX_PEER = ("uvicorn", "hypercorn")
#: Servers that close the connection after every answer.
ONE_REQUEST_PER_CONNECTION = ("gunicorn sync", "werkzeug")


def as_user(user: User, command: Sequence[str]) -> list[str]:
    """``command`` run by ``user``, making its unix sockets connectable by all."""
    return user.command("sh", "-c", 'umask 000 && exec "$@"', "sh", *command)


#: A client: ``count`` requests on one connection (a new one only where the
#: server closed it), to a host and port or a unix socket path; one JSON line.
_CLIENT = r"""
import http.client, json, socket, sys
target, port, count, headers = json.loads(sys.argv[1])

class UnixConnection(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(10)
        self.sock.connect(target)

if target.startswith("/"):
    connection = UnixConnection("localhost", timeout=10)
else:
    connection = http.client.HTTPConnection(target, port, timeout=10)
statuses, connections = [], 0
for _ in range(count):
    for attempt in (1, 2):
        if connection.sock is None:
            connections += 1
        try:
            connection.request("GET", "/", headers=headers)
            reply = connection.getresponse()
            reply.read()
            break
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            connection.close()  # closed by the server without saying so: a new connection
    statuses.append(reply.status)
print(json.dumps({"statuses": statuses, "connections": connections}))
"""


def requests(
    ns: str, user: User, target: str, port: int = PORT, headers: dict | None = None
) -> tuple[list[int], int]:
    """Two requests by a process of ``user``: (statuses, connections used)."""
    arguments = json.dumps([target, port, 2, headers or {}])
    command = user.command(sys.executable, "-c", _CLIENT, arguments)
    done = ns_run(ns, *command, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    return result["statuses"], result["connections"]


ROOT_USER = User("root", 0, 0)


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.parametrize("server", list(TCP))
def test_over_tcp_the_servers_user_passes_and_another_is_refused(server):
    require_netns()
    require_users()
    if server in ("waitress", "uvicorn", "hypercorn"):
        pytest.importorskip(server, reason=f"needs {server} (the test extra installs it)")
    with made_users(3) as (owner, friend, stranger), two_hosts() as hosts:
        ns = hosts.server_ns
        options = json.dumps({"allowed_users": ["self", friend.name]})
        with (
            socket_directory(owner) as log_dir,
            server_in(
                ns, as_user(owner, TCP[server]), log_dir, server.replace(" ", "-"),
                SELFHOST_TEST_OPTIONS=options,
            ),
        ):  # fmt: skip
            one = 2 if server in ONE_REQUEST_PER_CONNECTION else 1
            for address in ("127.0.0.1", "::1", hosts.server_ip4):
                for user, status in (
                    (owner, 200),
                    (stranger, 403),  # after a grant for the same address
                    (friend, 200),
                    (ROOT_USER, 403),
                    (owner, 200),  # after a refusal for the same address
                ):
                    statuses, connections = requests(ns, user, address)
                    assert statuses == [status, status], (address, user, logs_in(log_dir))
                    assert connections == one, (address, user, connections)
            refusal = last_refusal(log_dir)
            assert f"rule={USER}" in refusal and "peer_uid=0" in refusal, refusal
            assert f"peer_uid={stranger.uid}" in logs_in(log_dir)


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.parametrize("server", list(UNIX))
def test_on_a_unix_socket_the_servers_user_passes_where_the_server_gives_the_socket(server):
    require_netns()
    require_users()
    if server in ("waitress", "uvicorn", "hypercorn"):
        pytest.importorskip(server, reason=f"needs {server} (the test extra installs it)")
    with made_users(3) as (owner, friend, stranger), two_hosts() as hosts:
        ns = hosts.server_ns
        options = {"allowed_users": ["self", friend.name], "unix_socket_is_local": True}
        with socket_directory(owner) as directory:
            path = directory / "app.sock"
            command = [part.replace("{path}", str(path)) for part in UNIX[server]]
            with server_in(
                ns, as_user(owner, command), directory, server.replace(" ", "-"),
                unix_socket=path, SELFHOST_TEST_OPTIONS=json.dumps(options),
            ):  # fmt: skip
                wait_until_listening(path)
                if server in NO_UNIX_PEER:
                    statuses, _ = requests(ns, owner, str(path))
                    assert statuses == [403, 403], logs_in(directory)
                    refusal = last_refusal(directory)
                    assert "gunicorn, Werkzeug or waitress" in refusal, refusal
                    if server == "uvicorn":
                        assert f"rule={USER}" in refusal and UNIX_UNKNOWN in json_reason(refusal)
                    return
                one = 2 if server in ONE_REQUEST_PER_CONNECTION else 1
                for user, status in (
                    (owner, 200),
                    (stranger, 403),
                    (friend, 200),
                    (ROOT_USER, 403),
                    (owner, 200),
                ):
                    statuses, connections = requests(ns, user, str(path))
                    assert statuses == [status, status], (user, logs_in(directory))
                    assert connections == one, (user, connections)
                refusal = last_refusal(directory)
                assert f"rule={USER}" in refusal and "peer_uid=0" in refusal, refusal


def wait_until_listening(path: Path) -> None:
    """Some servers (hypercorn) make the socket file before they listen on it."""
    deadline = time.monotonic() + 10
    while True:
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(path))
                return
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
        time.sleep(0.05)


def json_reason(line: str) -> str:
    """The reason field of a log line, unquoted."""
    return json.loads(line.split("reason=", 1)[1])


@pytest.mark.root
@pytest.mark.slow
def test_self_is_the_workers_user_under_gunicorn_user(tmp_path):
    """gunicorn started as root with ``--user``: the guard is built in the
    master (``--preload``), as root, and the worker that serves moves to
    the user. "self" is the worker's user, so root's client is refused."""
    require_netns()
    require_users()
    with made_users(2) as (owner, stranger), two_hosts() as hosts:
        ns = hosts.server_ns
        command = gunicorn_command(
            *("-w", "1", "-k", "sync", "--preload", "--user", owner.name, "--group", owner.name),
            *("-b", f"127.0.0.1:{PORT}", WSGI),
        )
        options = json.dumps({"allowed_users": ["self"]})
        with (
            socket_directory(owner) as log_dir,
            server_in(ns, command, log_dir, "gunicorn", SELFHOST_TEST_OPTIONS=options),
        ):
            assert requests(ns, owner, "127.0.0.1")[0] == [200, 200], logs_in(log_dir)
            assert requests(ns, ROOT_USER, "127.0.0.1")[0] == [403, 403], logs_in(log_dir)
            assert requests(ns, stranger, "127.0.0.1")[0] == [403, 403], logs_in(log_dir)
            assert "peer_uid=0" in logs_in(log_dir)


@pytest.mark.root
@pytest.mark.slow
def test_nginx_trusted_by_its_user_and_no_other_user(tmp_path):
    """nginx's workers run as www-data: with ``trusted_proxies=["user:www-data"]``
    its requests pass, and another user's process that writes the same
    ``X-Forwarded-For: 127.0.0.1`` straight to the app is refused. With
    ``127.0.0.1`` trusted instead (the control), that process passes."""
    require_netns()
    require_users()
    require_nginx()
    forged = {"X-Forwarded-For": "127.0.0.1"}
    with made_users(2) as (owner, stranger), two_hosts() as hosts:
        ns = hosts.server_ns
        for trusted, forged_status in (("user:www-data", 403), ("127.0.0.1", 200)):
            options = json.dumps({"trusted_proxies": [trusted]})
            with (
                socket_directory(owner) as log_dir,
                server_in(
                    ns, as_user(owner, TCP["gunicorn sync"]), log_dir, "gunicorn",
                    SELFHOST_TEST_OPTIONS=options,
                ),
                nginx(
                    [("127.0.0.1", 8080)], f"http://127.0.0.1:{PORT}", X_FORWARDED_FOR,
                    tmp_path / trusted.replace(":", "-"), prefix=ns_command(ns),
                    wait=lambda process: wait_for_port_in(ns, "127.0.0.1", 8080, process=process),
                    user="www-data",
                ),
            ):  # fmt: skip
                for user in (owner, stranger, ROOT_USER):
                    statuses, _ = requests(ns, user, "127.0.0.1", 8080)
                    assert statuses == [200, 200], (trusted, user, logs_in(log_dir))
                statuses, _ = requests(ns, stranger, "127.0.0.1", PORT, forged)
                assert statuses == [forged_status] * 2, (trusted, logs_in(log_dir))
                if forged_status == 403:
                    refusal = last_refusal(log_dir)
                    assert f"rule={FORWARDED}" in refusal and UNTRUSTED in json_reason(refusal)
                    # nginx's own request without its header: a proxy hiding its client.
                    www_data = pwd.getpwnam("www-data")
                    proxy_user = User("www-data", www_data.pw_uid, www_data.pw_gid)
                    statuses, _ = requests(ns, proxy_user, "127.0.0.1", PORT)
                    assert statuses == [403, 403], logs_in(log_dir)
