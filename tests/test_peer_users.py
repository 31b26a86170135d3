"""Who is behind the connection: ``allowed_users`` and proxies trusted by
their user.

The pure rule first (table-driven, with the owner given), the options,
then the fronts with real loopback and unix-socket connections of this
process (whose owner the kernel names), then real servers run as a user
made by the test, with clients run as two more users (root only).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import socket

import pytest

from flask_selfhost import Options, SelfHostMiddleware, kernel_witness
from flask_selfhost import forwarded as fw
from flask_selfhost.asgi import SelfHostASGIMiddleware
from flask_selfhost.decision import PUBLIC_REASONS, SOURCE, USER, Decision
from flask_selfhost.facts import Ends, KnownConnection, PeerOwner, RequestFacts
from flask_selfhost.guard import judge
from flask_selfhost.hidden_relays import PROXY_WITHOUT_HEADERS
from flask_selfhost.peer_users import (
    ANOTHER_HOST,
    NOT_HELD,
    NOT_WITNESSED,
    UNIX_UNKNOWN,
    AllowedUsers,
    judge_peer_user,
)
from flask_selfhost.proxies import TrustedProxies

ME = os.geteuid()
OTHER = 54321  # a uid no socket of this test has
GRANT = Decision(True, SOURCE, "the client is loopback", "127.0.0.1", None)


# The pure rule ---------------------------------------------------------------------

LOOPBACK = KnownConnection(peer="127.0.0.1")
#: A connection whose ends name no socket: the kernel finds nothing.
MADE_UP = KnownConnection(peer="127.0.0.1", ends=Ends("127.0.0.1", 1, "127.0.0.1", 2))
ELSEWHERE = KnownConnection(peer="10.0.0.2", ends=Ends("10.0.0.2", 40000, "10.0.0.1", 8000))
UNIX_GIVEN = KnownConnection(peer="unix", unix=True, unix_peer=PeerOwner(ME, 0, 42))
UNIX_HIDDEN = KnownConnection(peer="unix", unix=True)

#: (the owner a grant carries, the connection, allowed_users, allowed, reason or None)
CASES = [
    (PeerOwner(ME, 7), LOOPBACK, [ME], True, None),
    (PeerOwner(ME, 7), LOOPBACK, ["self"], True, None),
    (PeerOwner(OTHER, 7), LOOPBACK, ["self"], False, f"(uid {OTHER})"),
    (PeerOwner(OTHER, 7), LOOPBACK, [ME], False, "not in allowed_users"),
    (PeerOwner(0, 7), LOOPBACK, [OTHER], False, "(uid 0)"),
    (PeerOwner(OTHER, 7), LOOPBACK, [ME, OTHER], True, None),
    (None, UNIX_GIVEN, ["self"], True, None),
    (None, UNIX_GIVEN, [OTHER], False, f"(uid {ME})"),
    (None, UNIX_HIDDEN, ["self"], False, UNIX_UNKNOWN),
    (None, LOOPBACK, ["self"], False, NOT_WITNESSED),
    (None, ELSEWHERE, ["self"], False, ANOTHER_HOST),
    (None, MADE_UP, ["self"], False, NOT_HELD),
]


@pytest.mark.parametrize(("owner", "connection", "users", "allowed", "reason"), CASES)
def test_the_rule(owner, connection, users, allowed, reason):
    facts = RequestFacts("127.0.0.1", connection)
    decision = judge_peer_user(facts, AllowedUsers(users), GRANT._replace(peer_owner=owner))
    assert decision.allowed is allowed, decision
    if allowed:
        assert decision._replace(peer_owner=None) == GRANT
        assert decision.peer_owner in (owner, connection.unix_peer())
    else:
        assert decision.rule == USER and reason in decision.reason, decision
        assert decision.public_reason == PUBLIC_REASONS[USER] == "user not allowed"


def test_self_is_the_effective_uid_when_asked(monkeypatch):
    """A worker forked as root that moves to another user (gunicorn --user)
    allows its own user: read at the request, not when the guard is built."""
    users = AllowedUsers(["self"])
    assert users.allows(ME)
    monkeypatch.setattr(os, "geteuid", lambda: OTHER)
    assert users.allows(OTHER) and not users.allows(ME)


def test_a_grant_of_an_earlier_rule_never_skips_it():
    facts = RequestFacts("127.0.0.1", LOOPBACK, host="localhost")
    assert judge(facts, Options(check_client_socket=False)).allowed
    decision = judge(facts, Options(check_client_socket=False, allowed_users=["self"]))
    assert not decision.allowed and decision.rule == USER and NOT_WITNESSED in decision.reason


# The options ------------------------------------------------------------------------


def test_allowed_users_takes_names_uids_and_self():
    root = pwd.getpwuid(0).pw_name
    users = Options(allowed_users=f"self, {root}, 33").allowed_users
    assert users == AllowedUsers([0, "33", "self"]) and users.uids == {0, 33} and users.itself
    assert hash(users) == hash(AllowedUsers(["self", 33, root]))
    assert Options().allowed_users is None  # off by default
    assert Options(allowed_users=users).allowed_users is users


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (["no-such-user-here"], ValueError, "'no-such-user-here', which this host does not have"),
        ([], ValueError, "would refuse everyone"),
        ("", ValueError, "would refuse everyone"),
        ([-1], ValueError, "negative"),
        ([True], TypeError, "user names or uids"),
        ([1.5], TypeError, "user names or uids"),
        (33, TypeError, "allowed_users must be a list"),
    ],
)
def test_allowed_users_refuses_what_it_cannot_resolve(value, error, match):
    with pytest.raises(error, match=match):
        Options(allowed_users=value)


def test_trusted_proxies_take_users():
    trusted = TrustedProxies(["user:root", "user:33", "127.0.0.1"])
    assert trusted.users == {0, 33} and trusted and TrustedProxies("user:root")
    assert trusted == TrustedProxies("127.0.0.1, user:0, user:33")
    assert "user:33" in repr(trusted)
    with pytest.raises(ValueError, match="'nobody-here', which this host does not have"):
        TrustedProxies(["user:nobody-here"])
    # A proxy trusted by its user is never remembered as a plain loopback client.
    assert Options(trusted_proxies=["user:root"]).accepted.remembering is False
    assert Options(trusted_proxies=["127.0.0.1"]).accepted.remembering is True


# The fronts, with this process's own connections --------------------------------------


def loopback_pair() -> tuple[socket.socket, socket.socket, socket.socket]:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    return listener, client, accepted


def environ_of(accepted: socket.socket, **headers: str) -> dict:
    peer = accepted.getpeername()
    local = accepted.getsockname()
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": peer[0] if isinstance(peer, tuple) else "",
        "HTTP_HOST": f"127.0.0.1:{local[1]}" if isinstance(local, tuple) else "localhost",
        "wsgi.url_scheme": "http",
        "gunicorn.socket": accepted,
        **headers,
    }


def hello(environ, start_response):
    start_response("200 OK", [])
    return [b"hello"]


def status_of(app, environ) -> int:
    statuses: list[str] = []
    b"".join(app(environ, lambda status, headers, exc_info=None: statuses.append(status)))
    return int(statuses[0].split()[0])


def test_wsgi_the_owner_of_the_clients_socket_decides(logged):
    allowed = SelfHostMiddleware(hello, allowed_users=["self"])
    refused = SelfHostMiddleware(hello, allowed_users=[OTHER])
    listener, client, accepted = loopback_pair()
    with listener, client, accepted:
        for _ in range(3):  # the first request takes the full rules, the rest the fast path
            assert status_of(allowed, environ_of(accepted)) == 200
            assert status_of(refused, environ_of(accepted)) == 403
        assert f"rule={USER}" in logged() and f"peer_uid={ME}" in logged()
        owner = kernel_witness.witnessed_connections[id(accepted)][1]
        assert owner == PeerOwner(ME, os.fstat(client.fileno()).st_ino)


def test_wsgi_the_fast_path_asks_the_rule_on_every_request(monkeypatch, logged):
    """The memory of the common request is primed by a granted request;
    the same connection, once its owner is no longer allowed ("self" is
    another uid now, as in a worker that changed its user), is refused on
    the fast path too, and a grant on one connection never grants another."""
    app = SelfHostMiddleware(hello, allowed_users=["self"])
    listener, client, accepted = loopback_pair()
    with listener, client, accepted:
        assert status_of(app, environ_of(accepted)) == 200  # primes the memory
        assert app.options.accepted.remotes  # remembered by address, as ever
        monkeypatch.setattr(os, "geteuid", lambda: OTHER)
        for _ in range(2):
            assert status_of(app, environ_of(accepted)) == 403
        _, client2, accepted2 = other = loopback_pair()
        with other[0], client2, accepted2:
            assert status_of(app, environ_of(accepted2)) == 403
        monkeypatch.undo()
        assert status_of(app, environ_of(accepted)) == 200


def test_wsgi_with_the_witness_off_the_rule_still_asks_the_kernel():
    app = SelfHostMiddleware(hello, allowed_users=[OTHER], check_client_socket=False)
    listener, client, accepted = loopback_pair()
    with listener, client, accepted:
        for _ in range(2):
            assert status_of(app, environ_of(accepted)) == 403
    granted = SelfHostMiddleware(hello, allowed_users=["self"], check_client_socket=False)
    listener, client, accepted = loopback_pair()
    with listener, client, accepted:
        for _ in range(2):
            assert status_of(granted, environ_of(accepted)) == 200


def test_wsgi_a_unix_socket_peer_is_judged_by_so_peercred(logged):
    server_end, client_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with server_end, client_end:
        environ = environ_of(server_end)
        assert status_of(SelfHostMiddleware(hello, unix_socket_is_local=True), environ) == 200
        users = SelfHostMiddleware(hello, unix_socket_is_local=True, allowed_users=["self"])
        assert status_of(users, environ) == 200
        others = SelfHostMiddleware(hello, unix_socket_is_local=True, allowed_users=[OTHER])
        assert status_of(others, environ) == 403
        assert f"(uid {ME})" in logged() and f"peer_uid={ME}" in logged()


async def hello_asgi(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


def run_asgi(guard: SelfHostASGIMiddleware, scope: dict) -> int:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(guard(scope, receive, send))
    return next(m["status"] for m in sent if m["type"] == "http.response.start")


def scope_of(accepted: socket.socket) -> dict:
    local = accepted.getsockname()
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", f"127.0.0.1:{local[1]}".encode())],
        "client": accepted.getpeername(),
        "server": local,
    }


def test_asgi_the_owner_decides_on_every_request(monkeypatch):
    guard = SelfHostASGIMiddleware(hello_asgi, allowed_users=["self"])
    listener, client, accepted = loopback_pair()
    with listener, client, accepted:
        assert run_asgi(guard, scope_of(accepted)) == 200  # primes the memory
        assert guard.options.accepted.remotes
        assert run_asgi(guard, scope_of(accepted)) == 200  # the common path
        monkeypatch.setattr(os, "geteuid", lambda: OTHER)
        assert run_asgi(guard, scope_of(accepted)) == 403  # the common path asks too
    monkeypatch.undo()
    for check in (True, False):  # with the witness off, the rule asks the kernel itself
        refusing = SelfHostASGIMiddleware(
            hello_asgi, allowed_users=[OTHER], check_client_socket=check
        )
        listener, client, accepted = loopback_pair()
        with listener, client, accepted:
            for _ in range(2):
                assert run_asgi(refusing, scope_of(accepted)) == 403


def test_a_unix_socket_under_an_asgi_server_is_refused_naming_what_works(logged):
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "headers": [(b"host", b"localhost")],
        "client": None,
        "server": ("/run/app.sock", None),  # uvicorn --uds
    }
    guard = SelfHostASGIMiddleware(hello_asgi, unix_socket_is_local=True)
    assert run_asgi(guard, scope) == 200
    guard = SelfHostASGIMiddleware(hello_asgi, unix_socket_is_local=True, allowed_users=["self"])
    assert run_asgi(guard, scope) == 403
    assert UNIX_UNKNOWN in logged() and "gunicorn, Werkzeug or waitress" in UNIX_UNKNOWN


# Proxies trusted by their user ------------------------------------------------------------


def test_a_proxy_trusted_by_its_user_is_believed_and_no_one_else(logged):
    relayed = {"HTTP_X_FORWARDED_FOR": "127.0.0.1"}
    by_me = SelfHostMiddleware(hello, trusted_proxies=[f"user:{ME}"])
    by_other = SelfHostMiddleware(hello, trusted_proxies=[f"user:{OTHER}"])
    listener, client, accepted = loopback_pair()
    with listener, client, accepted:
        for _ in range(2):
            assert status_of(by_me, environ_of(accepted, **relayed)) == 200
            # Another user's process writing the same header: not a trusted proxy.
            assert status_of(by_other, environ_of(accepted, **relayed)) == 403
        assert fw.UNTRUSTED in logged()
        # The trusted user's request without a forwarding header: a proxy
        # that relays its clients as itself, refused every time.
        for _ in range(2):
            assert status_of(by_me, environ_of(accepted)) == 403
        assert PROXY_WITHOUT_HEADERS in logged()
        # A plain client of another user is judged as a client, not a proxy.
        assert status_of(by_other, environ_of(accepted)) == 200


def test_a_proxy_trusted_by_its_user_on_a_unix_socket():
    relayed = {"HTTP_X_FORWARDED_FOR": "127.0.0.1"}
    server_end, client_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with server_end, client_end:
        trusted = SelfHostMiddleware(hello, trusted_proxies=[f"user:{ME}"])
        assert status_of(trusted, environ_of(server_end, **relayed)) == 200
        untrusted = SelfHostMiddleware(hello, trusted_proxies=[f"user:{OTHER}"])
        assert status_of(untrusted, environ_of(server_end, **relayed)) == 403


def test_flask_selfhost_status_shows_users_as_written():
    from flask_selfhost.flask_cli import option_lines

    root = pwd.getpwuid(0).pw_name
    options = Options(allowed_users=["self", 0], trusted_proxies=["127.0.0.1", "user:0"])
    lines = {line.split()[0]: line.split(None, 1)[1] for line in option_lines(options)}
    assert lines["allowed_users"] == f"{root}, self"
    assert lines["trusted_proxies"] == f"127.0.0.1/32, user:{root}"
