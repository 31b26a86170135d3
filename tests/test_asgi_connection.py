"""The ASGI fast path's witness on uvicorn's connection object
(flask_selfhost.asgi_connection.connection_verdict): a real loopback
connection, a real asyncio transport and uvicorn's own request cycle class,
as uvicorn's h11 protocol hands them to the app. The kernel is asked once
per connection; later requests that carry the connection's own ``client``
and ``server`` objects are answered by identity, and any other scope is
compared again, or asked about again."""

from __future__ import annotations

import asyncio
import socket

import pytest

from flask_selfhost import asgi_connection, kernel_witness, peer_socket
from flask_selfhost.asgi import SelfHostASGIMiddleware
from flask_selfhost.facts import Ends

h11_impl = pytest.importorskip("uvicorn.protocols.http.h11_impl", reason="needs uvicorn")


async def hello(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


def curl_scope(client: object, server: object) -> dict:
    return {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "client": client,
        "server": server,
        "headers": [(b"host", b"127.0.0.1:8000"), (b"accept", b"*/*")],
    }


@pytest.fixture
def counted(monkeypatch):
    """The kernel's queries, and connection_object's comparisons on the fast
    path (the full rules call their own import of it)."""
    kernel_witness.ask_kernel(Ends("127.0.0.1", 1, "127.0.0.1", 2), False)  # probed before
    calls: dict[str, int] = {"kernel": 0, "compared": 0}
    check_client, connection_object = peer_socket.check_client, asgi_connection.connection_object

    def counting_check(*ends):
        calls["kernel"] += 1
        return check_client(*ends)

    def counting_object(scope, receive):
        calls["compared"] += 1
        return connection_object(scope, receive)

    monkeypatch.setattr(peer_socket, "check_client", counting_check)
    monkeypatch.setattr(asgi_connection, "connection_object", counting_object)
    return calls


def serve(requests) -> list[int]:
    """Run ``requests(guard, receive, transport, client, server)`` on a real
    loopback connection that uvicorn's h11 cycle holds; the statuses."""
    statuses: list[int] = []

    async def send(message):
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def main():
        listener = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(listener.getsockname())
        accepted, peer = listener.accept()
        transport, _ = await asyncio.get_running_loop().connect_accepted_socket(
            asyncio.Protocol, sock=accepted
        )
        cycle = object.__new__(h11_impl.RequestResponseCycle)
        cycle.transport = transport
        guard = SelfHostASGIMiddleware(hello)
        try:
            # uvicorn builds these once per connection: every request carries them.
            ends = (peer[0], peer[1]), accepted.getsockname()
            for scope in requests(transport, *ends):
                await guard(scope, cycle.receive, send)
        finally:
            transport.close()
            client.close()
            listener.close()

    asyncio.run(main())
    return statuses


def test_a_vouched_connection_is_answered_by_the_ends_its_requests_carry(counted):
    remembered = []

    def requests(transport, client, server):
        scope = curl_scope(client, server)
        yield dict(scope)  # the full rules: the kernel is asked, the grant kept
        yield dict(scope)  # the fast path: compared once, its ends remembered
        remembered.append(kernel_witness.witnessed_connections[id(transport)][2])
        yield dict(scope)  # by identity: neither compared nor asked
        yield dict(scope)

    assert serve(requests) == [200, 200, 200, 200]
    assert counted == {"kernel": 1, "compared": 1}  # the fast path compared once
    [(client, server)] = remembered
    assert type(client) is tuple and type(server) is tuple


def test_another_client_on_a_vouched_connection_is_compared_or_asked_again(counted):
    """A proxy-headers middleware's client is a new object: compared with the
    connection's ends again; when it names someone else, the kernel is asked
    about that someone (no socket here: refused)."""

    def requests(transport, client, server):
        yield curl_scope(client, server)
        yield curl_scope(client, server)  # its ends remembered
        yield curl_scope((client[0], client[1]), server)  # equal, not the same: compared
        yield curl_scope((client[0], 1), server)  # another client: asked about

    assert serve(requests) == [200, 200, 200, 403]
    # The first request; the other client by the fast path, then the full rules.
    assert counted == {"kernel": 3, "compared": 3}


def test_a_client_that_can_change_is_never_remembered_as_the_connections(counted):
    def requests(transport, client, server):
        for _ in range(3):
            yield curl_scope(list(client), server)  # a list: its items may change

    assert serve(requests) == [200, 200, 200]
    assert counted == {"kernel": 1, "compared": 2}  # compared on every fast path


def test_the_vouched_client_tuples_are_those_of_live_connections_only(counted):
    """Each connection keeps one client tuple in the index: a new tuple its
    requests carry replaces the old one, and the connection's end drops it."""
    import gc

    vouched = kernel_witness.vouched_scope_clients
    ends = []

    def kept(client):
        return [entry[0] for entry in list(vouched.values()) if entry[0] == client]

    def requests(transport, client, server):
        ends.append(client)
        yield curl_scope(client, server)
        yield curl_scope(client, server)  # compared: its client tuple kept
        assert vouched[id(client)][:2] == (client, server)
        for _ in range(5):  # equal tuples, new objects: each compared, each replaces the last
            again = (client[0], client[1])
            yield curl_scope(again, server)
            assert kept(client) == [client] and kept(client)[0] is again
        assert id(client) not in vouched

    assert serve(requests) == [200] * 7
    gc.collect()  # the transport freed: its entry and its client tuple go
    assert kept(ends[0]) == []
