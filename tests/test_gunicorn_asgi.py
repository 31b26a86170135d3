"""The ASGI front on gunicorn's own ASGI worker (``gunicorn -k asgi``), from another host.

gunicorn runs in one network namespace, the other host in another
(:mod:`tests.netns`). What gunicorn 27's ASGI worker puts in the scope:

- TCP: ``client`` and ``server`` are the connection's own addresses, per
  connection; a unix socket gives ``client = None`` and ``server`` = the
  first two characters of the socket's path (``("/", "t")`` for
  ``/tmp/...``): gunicorn slices the path as if it were an address tuple.
- ``--proxy-protocol``: every HTTP/1.1 request of the connection (keep-alive,
  pipelined) carries the PROXY header's client, with nothing that says so.
- ``X-Forwarded-For`` never changes ``client``, whatever
  ``--forwarded-allow-ips`` says (it sets ``scheme`` only).
- cleartext HTTP/2 (h2c; only from peers in ``--forwarded-allow-ips``): an
  ``Upgrade: h2c`` through a PROXY protocol relay on this host gives every
  stream the relay's address (loopback) as ``client``: the PROXY header is
  dropped, and such a peer may also claim ``:scheme https``. The other host
  got 200 there; the guard now refuses every HTTP/2 request under this
  worker (the scope cannot tell h2c from TLS). With prior knowledge, a
  PROXY header ends the connection instead.

- ``--protocol uwsgi`` behind nginx's ``uwsgi_pass``: ``client`` is nginx's
  connection, and nginx's ``REMOTE_ADDR`` is dropped: a forwarder on this
  host that names no client, which no guard can tell from a local client
  (docs/threat-model.md). With default options the other host gets 200 with
  ``Host: localhost``; with nginx in ``trusted_proxies`` its header-less
  requests are refused, and nginx sending X-Forwarded-For lets this host in.

The guard's answers: (a) loopback 200, (b) own address 200, (c) another
host 403, (d) unix socket 200; the other host 403 through the relay,
over HTTP/1.1 or HTTP/2, and with any forwarding header.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import types

import pytest

from flask_selfhost.asgi import SelfHostASGIMiddleware
from flask_selfhost.hidden_relays import GUNICORN_ASGI_HTTP2
from flask_selfhost.scope import GUNICORN_ASGI

from .apps import asgi_whoami
from .netns import (
    http_get,
    ns_command,
    ns_run,
    proxy_protocol_relay,
    raw_exchange,
    require_netns,
    server_in,
    two_hosts,
    wait_for_port_in,
)
from .nginx import nginx_command, require_nginx
from .servers import gunicorn_command, last_refusal, logs_in, stop_process_group, unix_request
from .test_asgi import run, scope, status


def real(test):
    """A test against real servers in network namespaces."""
    return pytest.mark.slow(pytest.mark.root(test))


PORT, PORT6, RELAY_PORT = 8000, 8001, 8100
ANOTHER_HOST = "the client is another host"
REFUSED = "Forbidden: only clients on this server's own host"
#: What the refusal of gunicorn's HTTP/2 names: the setting to change.
H2_SETTING = "--http-protocols h1"


def guarded(**options):
    """The app gunicorn loads (``tests.test_gunicorn_asgi:guarded(...)``)."""
    return SelfHostASGIMiddleware(asgi_whoami, **options)


@pytest.fixture
def hosts():
    require_netns()
    with two_hosts() as made:
        yield made


def asgi_gunicorn(*args: str, app: str = "guarded()") -> list[str]:
    return gunicorn_command("--worker-class", "asgi", *args, f"tests.test_gunicorn_asgi:{app}")


def client_of(body: str) -> list | None:
    """The scope's client, as asgi_whoami reports it."""
    return json.loads(body)["client"]


# 0. The rule, without a server ------------------------------------------------


@pytest.mark.parametrize("in_gunicorn", [True, False], ids=["gunicorn", "hypercorn"])
@pytest.mark.parametrize(
    ("options", "headers"),
    [({}, {}), ({"trusted_proxies": ["127.0.0.1"]}, {"x_forwarded_for": "127.0.0.2"})],
    ids=["default", "trusted"],
)
def test_gunicorns_http2_is_refused_even_after_a_loopback_grant(
    monkeypatch, in_gunicorn, options, headers, logged
):
    """The relay's HTTP/2 stream, as gunicorn's ASGI worker gives it:
    refused by the full rules and not taken by the common path, which a
    loopback HTTP/1.1 request has just taught, even with
    allow_cleartext_http2 and a claimed ``https`` scheme. Without gunicorn's
    worker (hypercorn's scheme is the connection's) the same scope is
    refused as cleartext HTTP/2 by default, and passes over TLS or with
    allow_cleartext_http2."""
    if in_gunicorn:
        monkeypatch.setitem(sys.modules, GUNICORN_ASGI, types.ModuleType(GUNICORN_ASGI))
    else:
        monkeypatch.delitem(sys.modules, GUNICORN_ASGI, raising=False)
    warm = scope(host="localhost", **({"x_forwarded_for": "127.0.0.2"} if options else {}))
    relayed = {**scope(host="localhost", **headers), "http_version": "2"}
    for allow in (False, True):
        guard = SelfHostASGIMiddleware(asgi_whoami, allow_cleartext_http2=allow, **options)
        assert status(run(guard, warm)) == 200  # HTTP/1.1: never affected
        for claimed in ("http", "https"):
            sent = run(guard, {**relayed, "scheme": claimed})
            if in_gunicorn:
                assert status(sent) == 403
                assert GUNICORN_ASGI_HTTP2 in logged()
                assert H2_SETTING in GUNICORN_ASGI_HTTP2
            else:
                assert status(sent) == (200 if allow or claimed == "https" else 403), claimed


# 1. The four ways in -----------------------------------------------------------


@real
def test_the_four_ways_in(hosts, tmp_path):
    """(a) loopback, (b) this host's own address, (c) another host, (d) a
    unix socket (unix_socket_is_local=True): 200, 200, 403, 200, on IPv4
    and IPv6."""
    sock = tmp_path / "app.sock"
    command = asgi_gunicorn(
        "--bind", f"0.0.0.0:{PORT}", "--bind", f"[::]:{PORT6}", "--bind", f"unix:{sock}",
        app="guarded(unix_socket_is_local=True)",
    )  # fmt: skip
    with server_in(hosts.server_ns, command, tmp_path, "gunicorn-asgi", port=PORT):
        for own, loopback, other, port in (
            (hosts.server_ip4, "127.0.0.1", hosts.server_ip4, PORT),
            (hosts.server_ip6, "::1", hosts.server_ip6, PORT6),
        ):
            status, body = http_get(hosts.server_ns, loopback, port)
            assert status == 200, body
            assert json.loads(body)["server"] == [loopback, port]
            status, body = http_get(hosts.server_ns, own, port)
            assert status == 200, body
            assert client_of(body)[0] == own == json.loads(body)["server"][0]
            status, body = http_get(hosts.client_ns, other, port)
            assert (status, ANOTHER_HOST in last_refusal(tmp_path)) == (403, True), body
        reply = unix_request(str(sock))
        assert reply.status == 200, reply.body
        assert client_of(reply.body) is None
        assert json.loads(reply.body)["server"] == list(str(sock)[:2])  # gunicorn's slice


# 2. PROXY protocol over HTTP/1.1 -----------------------------------------------


#: A WebSocket handshake's headers (RFC 6455 section 4.1).
WEBSOCKET = (
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
)


def get(*headers: str) -> bytes:
    lines = ("GET / HTTP/1.1", "Host: localhost", *headers, "")
    return "".join(f"{line}\r\n" for line in lines).encode()


@real
@pytest.mark.parametrize("options", ["", "trusted_proxies='127.0.0.1'"], ids=["default", "trusted"])
@pytest.mark.parametrize("version", [1, 2])
def test_a_proxy_protocol_relay_keeps_the_other_host_out(hosts, tmp_path, version, options):
    """A relay on this host that sends a PROXY header (HAProxy's send-proxy):
    every request of the other host's connection, one after the other or
    pipelined, with or without an X-Forwarded-For naming loopback, and a
    WebSocket handshake after a request, shows the other host as the
    client and is refused."""
    command = asgi_gunicorn(
        "--bind", f"127.0.0.1:{PORT}", "--proxy-protocol", f"v{version}",
        "--proxy-allow-from", "127.0.0.1", app=f"guarded({options})",
    )  # fmt: skip
    listen = (hosts.server_ip4, RELAY_PORT)
    forwarded = "X-Forwarded-For: 127.0.0.1"
    websocket = get(*WEBSOCKET)
    with (
        server_in(hosts.server_ns, command, tmp_path, "gunicorn-asgi", port=PORT),
        proxy_protocol_relay(hosts.server_ns, listen, ("127.0.0.1", PORT), version),
    ):
        for payloads in (
            [get(), get(), get()],
            [get(forwarded), get()],
            [get(), get(forwarded)],
            [get(), websocket],
        ):
            for pipelined in (False, True):
                statuses, text = raw_exchange(hosts.client_ns, *listen, payloads, pipelined, 0.3)
                assert statuses == [403] * len(payloads), (payloads, text)
                assert '"client"' not in text, text
    log = (tmp_path / "gunicorn-asgi.log").read_text()
    assert f"remote={hosts.client_ip4} " in log, log  # the PROXY header's client


# 3. Cleartext HTTP/2 -----------------------------------------------------------

#: An HTTP/2 client run inside a namespace, with the h2 package: over an
#: ``Upgrade: h2c`` (the first request is the upgrade, answered as stream 1)
#: or with prior knowledge. Prints the first HTTP/1.1 answer's head and each
#: stream's status and body, as JSON.
_H2_CLIENT = r"""
import json, socket, sys
import h2.config, h2.connection, h2.events, h2.exceptions
host, port, mode, requests = json.loads(sys.argv[1])
sock = socket.create_connection((host, port), timeout=5)
conn = h2.connection.H2Connection(h2.config.H2Configuration(header_encoding="utf-8"))
out, data = {"head": "", "streams": {}}, b""
if mode == "upgrade":
    path, scheme, headers = requests[0]
    settings = conn.initiate_upgrade_connection().decode()
    lines = [f"GET {path} HTTP/1.1", "Host: localhost", "Connection: Upgrade, HTTP2-Settings",
             "Upgrade: h2c", f"HTTP2-Settings: {settings}", *(f"{k}: {v}" for k, v in headers)]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
        data += chunk
    head, _, data = data.partition(b"\r\n\r\n")
    out["head"] = head.decode("latin-1")
    if not head.startswith(b"HTTP/1.1 101"):
        out["rest"] = data.decode("latin-1")
        print(json.dumps(out))
        sys.exit()
    later, stream = requests[1:], 3
else:
    conn.initiate_connection()
    later, stream = requests, 1
for path, scheme, headers in later:
    pseudo = [(":method", "GET"), (":path", path), (":scheme", scheme), (":authority", "localhost")]
    conn.send_headers(stream, pseudo + [tuple(h) for h in headers], end_stream=True)
    stream += 2
sock.sendall(conn.data_to_send())
ended = 0
while ended < len(requests):
    if not data:
        try:
            data = sock.recv(65536)
        except OSError as error:
            out["error"] = repr(error)
            break
        if not data:
            out["closed"] = True
            break
    try:
        events, data = conn.receive_data(data), b""
    except h2.exceptions.ProtocolError as error:  # an HTTP/1.1 answer, say
        out["error"] = repr(error)
        break
    for event in events:
        if isinstance(event, (h2.events.ResponseReceived, h2.events.DataReceived)):
            entry = out["streams"].setdefault(str(event.stream_id), {})
        if isinstance(event, h2.events.ResponseReceived):
            entry["status"] = int(dict(event.headers)[":status"])
        elif isinstance(event, h2.events.DataReceived):
            entry["body"] = entry.get("body", "") + event.data.decode("utf-8", "replace")
            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
            ended += 1
        elif isinstance(event, h2.events.ConnectionTerminated):
            ended = len(requests)
    sock.sendall(conn.data_to_send())
print(json.dumps(out))
"""


def h2_exchange(ns: str, host: str, port: int, mode: str, requests: list) -> dict:
    """``requests`` (``[path, scheme, [[name, value], ...]]`` each) on one
    HTTP/2 connection from inside ``ns``."""
    arguments = json.dumps([host, port, mode, requests])
    done = ns_run(ns, sys.executable, "-c", _H2_CLIENT, arguments, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"the HTTP/2 client in {ns} failed: {done.stderr}")
    return json.loads(done.stdout)


def streams(claim: str) -> list:
    """What the other host sends over HTTP/2: nothing, a loopback
    X-Forwarded-For (``claim``), a claimed ``https`` scheme."""
    return [
        ["/one", "http", []],
        ["/two", "http", [["x-forwarded-for", claim]]],
        ["/three", "https", []],
    ]


@real
@pytest.mark.parametrize(
    ("options", "claim"),
    [("", "127.0.0.1"), ("trusted_proxies='127.0.0.1'", "127.0.0.2")],
    ids=["default", "trusted"],
)
def test_h2c_through_a_proxy_protocol_relay_is_refused(hosts, tmp_path, options, claim):
    """HAProxy-style ``send-proxy`` relay on this host, gunicorn's ASGI
    worker with ``--proxy-protocol`` and h2c: the other host upgrades its
    connection to HTTP/2, and every stream's scope names the relay
    (127.0.0.1) as the client. It got 200, as loopback (or, with
    trusted_proxies, as the loopback client its own X-Forwarded-For names),
    even after a loopback HTTP/1.1 request had warmed the common path.
    With prior knowledge, gunicorn reads no PROXY header and gives up."""
    pytest.importorskip("h2", reason="gunicorn's HTTP/2 needs the h2 package")
    command = asgi_gunicorn(
        "--bind", f"127.0.0.1:{PORT}", "--proxy-protocol", "v1",
        "--proxy-allow-from", "127.0.0.1",
        "--http-protocols", "h2,h1", "--http2-cleartext", "both", app=f"guarded({options})",
    )  # fmt: skip
    listen = (hosts.server_ip4, RELAY_PORT)
    with (
        server_in(hosts.server_ns, command, tmp_path, "gunicorn-asgi", port=PORT),
        proxy_protocol_relay(hosts.server_ns, listen, ("127.0.0.1", PORT), 1),
    ):
        # A loopback HTTP/1.1 request: the common path now knows 127.0.0.1.
        status, body = http_get(hosts.server_ns, "127.0.0.1", PORT)
        assert status == (403 if options else 200), body
        answer = h2_exchange(hosts.client_ns, *listen, "upgrade", streams(claim))
        assert answer["head"].startswith("HTTP/1.1 101"), answer  # gunicorn switched
        statuses = [stream.get("status") for stream in answer["streams"].values()]
        assert statuses == [403, 403, 403], answer
        assert logs_in(tmp_path).count(H2_SETTING) >= 3, answer  # in the log, not the body
        answer = h2_exchange(hosts.client_ns, *listen, "prior", streams(claim))
        assert not answer["streams"], answer  # no answer at all


@real
@pytest.mark.parametrize("allowed", ["127.0.0.1,::1", "*"])
def test_h2c_directly_from_the_other_host_is_refused(hosts, tmp_path, allowed):
    """No relay: gunicorn speaks h2c only to the peers in
    ``--forwarded-allow-ips``. By default the other host stays on HTTP/1.1
    (refused there); with '*' it gets HTTP/2 and is refused on every stream."""
    pytest.importorskip("h2", reason="gunicorn's HTTP/2 needs the h2 package")
    command = asgi_gunicorn(
        "--bind", f"0.0.0.0:{PORT}", "--forwarded-allow-ips", allowed,
        "--http-protocols", "h2,h1", "--http2-cleartext", "both",
    )  # fmt: skip
    with server_in(hosts.server_ns, command, tmp_path, "gunicorn-asgi", port=PORT):
        upgraded = h2_exchange(hosts.client_ns, hosts.server_ip4, PORT, "upgrade", streams("::1"))
        prior = h2_exchange(hosts.client_ns, hosts.server_ip4, PORT, "prior", streams("::1"))
    if allowed == "*":
        for answer in (upgraded, prior):
            assert len(answer["streams"]) == 3, answer
            assert {s.get("status") for s in answer["streams"].values()} == {403}, answer
            assert '"client"' not in json.dumps(answer), answer
    else:
        assert upgraded["head"].startswith("HTTP/1.1 403"), upgraded
        assert ANOTHER_HOST in last_refusal(tmp_path), upgraded
        assert not prior["streams"], prior


@real
def test_h2c_from_this_host_is_refused_with_the_setting(hosts, tmp_path):
    """The price of the fix: the scope cannot tell h2c from HTTP/2 over TLS,
    nor a relayed stream from a local one, so gunicorn's HTTP/2 is refused
    even from loopback, with the setting to change; HTTP/1.1 still passes."""
    pytest.importorskip("h2", reason="gunicorn's HTTP/2 needs the h2 package")
    command = asgi_gunicorn(
        "--bind", f"127.0.0.1:{PORT}", "--http-protocols", "h2,h1", "--http2-cleartext", "both"
    )
    with server_in(hosts.server_ns, command, tmp_path, "gunicorn-asgi", port=PORT):
        assert http_get(hosts.server_ns, "127.0.0.1", PORT)[0] == 200
        for mode in ("upgrade", "prior"):
            answer = h2_exchange(hosts.server_ns, "127.0.0.1", PORT, mode, streams("127.0.0.1"))
            statuses = [stream.get("status") for stream in answer["streams"].values()]
            assert statuses == [403, 403, 403], answer
            assert H2_SETTING in last_refusal(tmp_path), answer


# 4. Forwarding headers ---------------------------------------------------------


@real
@pytest.mark.parametrize("allowed", ["127.0.0.1,::1", "*"])
def test_forwarding_headers_never_rewrite_the_client(hosts, tmp_path, allowed):
    """The other host sends X-Forwarded-For (and Forwarded, X-Real-IP)
    naming loopback: gunicorn's ASGI worker keeps the connection's client
    in the scope, whatever ``--forwarded-allow-ips`` says; refused."""
    command = asgi_gunicorn("--bind", f"0.0.0.0:{PORT}", "--forwarded-allow-ips", allowed)
    claims = [
        {"X-Forwarded-For": "127.0.0.1"},
        {"X-Forwarded-For": "127.0.0.1", "Host": "localhost"},
        {"Forwarded": "for=127.0.0.1", "X-Real-IP": "127.0.0.1", "X-Forwarded-Proto": "https"},
        {"X_Forwarded_For": "127.0.0.1"},  # gunicorn drops it
    ]
    with server_in(hosts.server_ns, command, tmp_path, "gunicorn-asgi", port=PORT):
        for headers in claims:
            status, body = http_get(hosts.client_ns, hosts.server_ip4, PORT, headers=headers)
            assert (status, REFUSED in body) == (403, True), (headers, body)
    log = (tmp_path / "gunicorn-asgi.log").read_text()
    assert log.count(f"remote={hosts.client_ip4} ") == len(claims), log


# 5. nginx's uwsgi_pass to the worker's --protocol uwsgi ------------------------

#: gunicorn's own recipe for ``--protocol uwsgi`` (its settings' docs).
UWSGI_PASS = f"uwsgi_pass 127.0.0.1:{PORT};\n            include /etc/nginx/uwsgi_params;"
#: What makes nginx name its client to the app: an X-Forwarded-For header.
UWSGI_FORWARDED_FOR = "uwsgi_param HTTP_X_FORWARDED_FOR $proxy_add_x_forwarded_for;"


@contextlib.contextmanager
def nginx_uwsgi_in(ns: str, listen: tuple[str, int], location: str, directory):
    """nginx in ``ns`` on ``listen``, with ``location`` as its only location."""
    command = nginx_command([listen], location, directory)
    with open(directory / "stderr.log", "wb") as log:
        process = subprocess.Popen(
            ns_command(ns, *command, "-g", "daemon off;"),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port_in(ns, *listen, process=process)
        yield
    finally:
        stop_process_group(process)


@real
@real
@pytest.mark.parametrize(
    ("options", "expected"),
    [("", 200), ("trusted_proxies='127.0.0.1'", 403)],
    ids=["default: the known limit", "nginx trusted"],
)
def test_nginx_uwsgi_pass_names_no_client(hosts, tmp_path, options, expected):
    """nginx on this host relays the other host to ``gunicorn -k asgi
    --protocol uwsgi`` as gunicorn's docs show (``include uwsgi_params``):
    the scope's client is nginx's connection (127.0.0.1). With default
    options that is a local client, as the threat model says of any
    forwarder that adds no header; with nginx in ``trusted_proxies`` the
    guard refuses a relay that names no client (rule 1b)."""
    require_nginx()
    command = asgi_gunicorn(
        "--bind", f"127.0.0.1:{PORT}", "--protocol", "uwsgi", app=f"guarded({options})"
    )  # fmt: skip
    listen = (hosts.server_ip4, RELAY_PORT)
    with (
        server_in(hosts.server_ns, command, tmp_path, "gunicorn-asgi", port=PORT),
        nginx_uwsgi_in(hosts.server_ns, listen, UWSGI_PASS, tmp_path / "nginx"),
    ):
        status, body = http_get(hosts.client_ns, *listen, headers={"Host": "localhost"})
    assert status == expected, body


@real
def test_nginx_uwsgi_pass_with_forwarded_for_and_trusted_proxies(hosts, tmp_path):
    """The recipe that works: nginx sends X-Forwarded-For as a uwsgi_param,
    the guard trusts 127.0.0.1. The other host is refused whatever it
    claims; this host through nginx's own address passes."""
    require_nginx()
    command = asgi_gunicorn(
        "--bind", f"127.0.0.1:{PORT}", "--protocol", "uwsgi",
        app="guarded(trusted_proxies='127.0.0.1')",
    )  # fmt: skip
    listen = (hosts.server_ip4, RELAY_PORT)
    location = f"{UWSGI_PASS}\n            {UWSGI_FORWARDED_FOR}"
    with (
        server_in(hosts.server_ns, command, tmp_path, "gunicorn-asgi", port=PORT),
        nginx_uwsgi_in(hosts.server_ns, listen, location, tmp_path / "nginx"),
    ):
        for headers in ({}, {"Host": "localhost"}, {"X-Forwarded-For": "127.0.0.1"}):
            status, body = http_get(hosts.client_ns, *listen, headers=headers)
            assert (status, REFUSED in body) == (403, True), (headers, body)
        status, body = http_get(hosts.server_ns, *listen)
        assert status == 200, body
        assert client_of(body)[0] == "127.0.0.1"  # nginx's link: the header named the client
