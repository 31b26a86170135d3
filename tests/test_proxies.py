"""Trusted proxies, unix sockets, ProxyFix and the PROXY protocol.

Pure parts first (header parsers, the judgement, this host's addresses),
then ``environ.evaluate`` with real sockets, then real servers on loopback.
The proof behind a real nginx, from another host, is in ``test_nginx.py``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import struct

import pytest
from flask import Flask, request
from hypothesis import given
from hypothesis import strategies as st
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_selfhost import Options, SelfHost, SelfHostMiddleware, evaluate
from flask_selfhost import forwarded as fw
from flask_selfhost.forwarded import UNIX, judge_forwarded
from flask_selfhost.forwarding_syntax import MalformedHeader, parse_forwarded, parse_x_forwarded_for
from flask_selfhost.hidden_relays import PROXY_WITHOUT_HEADERS
from flask_selfhost.host_addresses import (
    HostAddresses,
    parse_fib_trie,
    parse_if_inet6,
    read_host_addresses,
)
from flask_selfhost.proxies import TrustedProxies

from .nginx import report
from .servers import free_port, gunicorn, last_refusal, unix_request, werkzeug_server

LAN = "192.168.0.13"  # "this host's" address in the pure tests
HOST = frozenset({ipaddress.ip_address(LAN), ipaddress.ip_address("2001:db8::13")})
LOCAL_PROXY = TrustedProxies(["127.0.0.1", "::1"])


# X-Forwarded-For --------------------------------------------------------

XFF_VALID = [
    ("127.0.0.1", ("127.0.0.1",)),
    ("203.0.113.9, 127.0.0.1", ("203.0.113.9", "127.0.0.1")),
    ("203.0.113.9,127.0.0.1", ("203.0.113.9", "127.0.0.1")),
    ("  10.0.0.2 \t", ("10.0.0.2",)),
    ("2001:db8::1", ("2001:db8::1",)),
    ("::ffff:127.0.0.1", ("::ffff:127.0.0.1",)),
    ("[2001:db8::1]", ("2001:db8::1",)),
    ("[2001:db8::1]:4711", ("2001:db8::1",)),
    ("192.0.2.1:8080", ("192.0.2.1",)),
    ("unknown, 10.0.0.2", ("unknown", "10.0.0.2")),
    ("UNKNOWN", ("unknown",)),
    ("_hidden", ("_hidden",)),
]

XFF_MALFORMED = [
    "",
    " ",
    "127.0.0.1,",
    ",127.0.0.1",
    "127.0.0.1,,10.0.0.2",
    "localhost",
    "example.com",
    "127.1",
    "0127.0.0.1",
    "127.0.0.1 10.0.0.2",
    "127.0.0.1;10.0.0.2",
    "for=127.0.0.1",
    '"127.0.0.1"',
    "[127.0.0.1]",
    "[::1",
    "::1]",
    "fe80::1%eth0",
    "1.2.3.4:99999",
    "1.2.3.4:",
    "unix:",
    "\x00",
]


@pytest.mark.parametrize(("value", "nodes"), XFF_VALID)
def test_x_forwarded_for_parses(value, nodes):
    assert parse_x_forwarded_for(value) == nodes


@pytest.mark.parametrize("value", XFF_MALFORMED)
def test_x_forwarded_for_malformed(value):
    with pytest.raises(MalformedHeader):
        parse_x_forwarded_for(value)


# Forwarded (RFC 7239) ---------------------------------------------------

FORWARDED_VALID = [
    ("for=127.0.0.1", ("127.0.0.1",)),
    ('for="127.0.0.1"', ("127.0.0.1",)),
    ('for="[2001:db8::1]:4711"', ("2001:db8::1",)),
    ('for="[2001:db8:cafe::17]"', ("2001:db8:cafe::17",)),
    ('For="_gazonk"', ("_gazonk",)),
    ("for=unknown", ("unknown",)),
    ('for="192.0.2.60:_port"', ("192.0.2.60",)),
    ("for=192.0.2.43, for=198.51.100.17", ("192.0.2.43", "198.51.100.17")),
    ("for=192.0.2.60;proto=http;by=203.0.113.43", ("192.0.2.60",)),
    ("proto=https;for=10.0.0.2 ; host=example.com", ("10.0.0.2",)),
    ('for=10.0.0.2;host="a,b"', ("10.0.0.2",)),
    ('for="\\1\\2\\7.0.0.1"', ("127.0.0.1",)),  # quoted-pair: each \x is x
    # An element without for= is a hop that did not say: unknown.
    ("for=10.0.0.2, proto=https", ("10.0.0.2", "unknown")),
]

FORWARDED_MALFORMED = [
    "",
    "for",
    "for=",
    "=127.0.0.1",
    "for=127.0.0.1,",
    ",for=127.0.0.1",
    "for=127.0.0.1,,for=10.0.0.2",
    "for=127.0.0.1;",
    "for=127.0.0.1;for=10.0.0.2",  # a parameter twice in one element
    "for=[::1]",  # IPv6 must be quoted: ':' and '[' are not token characters
    "for=::1",
    'for="::1"',  # and bracketed
    'for="[::1"',
    'for="127.0.0.1',  # an unbalanced quote
    'for="127.0.0.1"x',
    "for=localhost",
    "for=127.1",
    'for="[fe80::1%eth0]"',
    "for=127.0.0.1 for=10.0.0.2",
    "for=127.0.0.1\x00",
    'for="unix:"',
]


@pytest.mark.parametrize(("value", "nodes"), FORWARDED_VALID)
def test_forwarded_parses(value, nodes):
    assert parse_forwarded(value) == nodes


@pytest.mark.parametrize("value", FORWARDED_MALFORMED)
def test_forwarded_malformed(value):
    with pytest.raises(MalformedHeader):
        parse_forwarded(value)


def test_forwarded_without_for_names_no_client():
    assert parse_forwarded("proto=https;host=example.com") is None


# The judgement ----------------------------------------------------------

# (peer, Forwarded, X-Forwarded-For, trusted, hops, allowed, reason)
JUDGEMENTS = [
    # The peer decides whether the headers are read at all.
    ("127.0.0.1", None, "127.0.0.1", LOCAL_PROXY, 1, True, fw.LOOPBACK_CLIENT),
    ("::1", None, "::1", LOCAL_PROXY, 1, True, fw.LOOPBACK_CLIENT),
    ("::ffff:127.0.0.1", None, "127.0.0.1", LOCAL_PROXY, 1, True, fw.LOOPBACK_CLIENT),
    ("127.0.0.2", None, "127.0.0.1", LOCAL_PROXY, 1, False, fw.UNTRUSTED),
    ("10.0.0.2", None, "127.0.0.1", LOCAL_PROXY, 1, False, fw.UNTRUSTED),
    ("", None, "127.0.0.1", LOCAL_PROXY, 1, False, fw.NO_PEER),
    (None, None, "127.0.0.1", LOCAL_PROXY, 1, False, fw.NO_PEER),
    (UNIX, None, "127.0.0.1", LOCAL_PROXY, 1, False, fw.UNTRUSTED),
    (UNIX, None, "127.0.0.1", TrustedProxies("unix"), 1, True, fw.LOOPBACK_CLIENT),
    ("127.0.0.1", None, "127.0.0.1", TrustedProxies("unix"), 1, False, fw.UNTRUSTED),
    # The client nginx recorded.
    ("127.0.0.1", None, "10.0.0.2", LOCAL_PROXY, 1, False, fw.OTHER_HOST_CLIENT),
    ("127.0.0.1", None, LAN, LOCAL_PROXY, 1, True, fw.OWN_ADDRESS_CLIENT),
    ("127.0.0.1", None, "2001:db8::13", LOCAL_PROXY, 1, True, fw.OWN_ADDRESS_CLIENT),
    ("127.0.0.1", None, "unknown", LOCAL_PROXY, 1, False, fw.UNKNOWN_CLIENT),
    ("127.0.0.1", "for=_hidden", None, LOCAL_PROXY, 1, False, fw.UNKNOWN_CLIENT),
    ("127.0.0.1", 'for="[::1]:4711"', None, LOCAL_PROXY, 1, True, fw.LOOPBACK_CLIENT),
    # Spoofed entries on the left are never read with one hop.
    ("127.0.0.1", None, "127.0.0.1, 10.0.0.2", LOCAL_PROXY, 1, False, fw.OTHER_HOST_CLIENT),
    ("127.0.0.1", None, f"{LAN}, 10.0.0.2", LOCAL_PROXY, 1, False, fw.OTHER_HOST_CLIENT),
    ("127.0.0.1", None, "10.0.0.2, 127.0.0.1", LOCAL_PROXY, 1, True, fw.LOOPBACK_CLIENT),
    # Two proxies on this host: the second-to-right entry is read only when
    # the right-most is a trusted proxy and proxy_hops allows it.
    ("127.0.0.1", None, "10.0.0.2, 127.0.0.1", LOCAL_PROXY, 2, False, fw.OTHER_HOST_CLIENT),
    ("127.0.0.1", None, "127.0.0.1, 127.0.0.1", LOCAL_PROXY, 2, True, fw.LOOPBACK_CLIENT),
    ("127.0.0.1", None, "127.0.0.1, 10.0.0.2", LOCAL_PROXY, 2, False, fw.OTHER_HOST_CLIENT),
    ("127.0.0.1", None, "127.0.0.1", LOCAL_PROXY, 5, True, fw.LOOPBACK_CLIENT),
    # A trusted proxy on another host: its "loopback" client is that host.
    ("10.0.0.5", None, "127.0.0.1", TrustedProxies("10.0.0.5"), 1, False, fw.FOREIGN_LOOPBACK),
    # ...and its client with one of this host's addresses may be another
    # machine that shares a private address (docker0's 172.17.0.1 is on every
    # Docker host): only a proxy on this host can vouch for that.
    ("10.0.0.5", None, LAN, TrustedProxies("10.0.0.5"), 1, False, fw.FOREIGN_OWN_ADDRESS),
    (
        "127.0.0.1",
        None,
        f"{LAN}, 10.0.0.5",
        TrustedProxies("127.0.0.1, 10.0.0.5"),
        2,
        False,
        fw.FOREIGN_OWN_ADDRESS,
    ),
    (
        "127.0.0.1",
        None,
        f"{LAN}, {LAN}",
        TrustedProxies(f"127.0.0.1, {LAN}"),
        2,
        True,
        fw.OWN_ADDRESS_CLIENT,
    ),
    (
        "127.0.0.1",
        None,
        "127.0.0.1, 10.0.0.5",
        TrustedProxies("127.0.0.1, 10.0.0.5"),
        2,
        False,
        fw.FOREIGN_LOOPBACK,
    ),
    # Over-broad trust: the hop count still bounds what a client can inject.
    (
        "127.0.0.1",
        None,
        f"{LAN}, 10.0.0.2",
        TrustedProxies("127.0.0.1, 10.0.0.0/8"),
        1,
        False,
        fw.OTHER_HOST_CLIENT,
    ),
    # Both headers: they must agree.
    ("127.0.0.1", "for=127.0.0.1", "127.0.0.1", LOCAL_PROXY, 1, True, fw.LOOPBACK_CLIENT),
    (
        "127.0.0.1",
        'for="[::ffff:127.0.0.1]"',
        "127.0.0.1",
        LOCAL_PROXY,
        1,
        True,
        fw.LOOPBACK_CLIENT,
    ),
    ("127.0.0.1", "for=127.0.0.1", "10.0.0.2", LOCAL_PROXY, 1, False, fw.CONFLICT),
    ("127.0.0.1", "for=10.0.0.2", "127.0.0.1", LOCAL_PROXY, 1, False, fw.CONFLICT),
    ("127.0.0.1", "proto=https", "127.0.0.1", LOCAL_PROXY, 1, True, fw.LOOPBACK_CLIENT),
    # No client named, or nonsense.
    ("127.0.0.1", None, None, LOCAL_PROXY, 1, False, fw.NO_CLIENT_HEADER),
    ("127.0.0.1", "proto=https", None, LOCAL_PROXY, 1, False, fw.NO_CLIENT_HEADER),
    ("127.0.0.1", None, "localhost", LOCAL_PROXY, 1, False, None),
    ("127.0.0.1", "for=127.0.0.1;for=1.2.3.4", None, LOCAL_PROXY, 1, False, None),
]


@pytest.mark.parametrize(
    ("peer", "forwarded", "xff", "trusted", "hops", "allowed", "reason"), JUDGEMENTS
)
def test_judge_forwarded(peer, forwarded, xff, trusted, hops, allowed, reason):
    decision = judge_forwarded(peer, forwarded, xff, trusted, hops, HOST)
    assert decision.allowed is allowed
    assert decision.rule == "forwarded"
    assert decision.peer_addr == peer
    if reason is None:
        assert decision.reason.startswith("a forwarding header is malformed")
    else:
        assert decision.reason == reason


def test_reasons_name_no_address():
    for peer, forwarded, xff, trusted, hops, _, _ in JUDGEMENTS:
        reason = judge_forwarded(peer, forwarded, xff, trusted, hops, HOST).reason
        for address in ("127.0.0.1", "10.0.0.2", LAN, "::1"):
            assert address not in reason


#: Header-like text: the grammar's own characters and words, and anything else.
header_text = st.lists(
    st.sampled_from([*'0123456789abcdef.:[]_,; ="\\\t', "for=", "unknown", "127.0.0.1", "::1"]),
    max_size=20,
).map("".join) | st.text(max_size=20)


@given(header_text, header_text)
def test_no_header_value_raises(forwarded, xff):
    for peer in ("127.0.0.1", UNIX, "10.0.0.2"):
        decision = judge_forwarded(peer, forwarded, xff, TrustedProxies("127.0.0.1, unix"), 2, HOST)
        assert decision.rule == "forwarded"
    for value in (forwarded, xff):  # the parsers raise MalformedHeader or nothing
        for parse in (parse_forwarded, parse_x_forwarded_for):
            with contextlib.suppress(MalformedHeader):
                parse(value)


def is_another_host(address) -> bool:
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_loopback and address not in HOST


@given(
    st.lists(header_text | st.sampled_from(["127.0.0.1", "::1", LAN]), max_size=4),
    st.ip_addresses().filter(is_another_host),
)
def test_a_spoofed_left_entry_never_grants_access(spoof, client):
    """Whatever a client on another host sends, the trusted proxy appends the
    client's real address on the right; nothing to its left may grant."""
    real = f"[{client}]" if client.version == 6 else str(client)
    xff = ", ".join([*spoof, real])
    trusted = TrustedProxies("127.0.0.1, ::1, unix")
    for peer in ("127.0.0.1", UNIX):
        for hops in (1, 2, 3):
            decision = judge_forwarded(peer, None, xff, trusted, hops, HOST)
            assert not decision.allowed, decision
            elements = [*(f'for="{entry}"' for entry in spoof), f'for="{real}"']
            decision = judge_forwarded(peer, ", ".join(elements), None, trusted, hops, HOST)
            assert not decision.allowed, decision


# trusted_proxies, proxy_hops, unix_socket_is_local ----------------------


def test_trusted_proxies_accepts_lists_strings_and_objects():
    a = Options(trusted_proxies="127.0.0.1, ::1 ,unix").trusted_proxies
    b = Options(trusted_proxies=[ipaddress.ip_network("::1/128"), "127.0.0.1/32", "unix"])
    assert a == b.trusted_proxies and hash(a) == hash(b.trusted_proxies)
    assert a.unix and len(a.networks) == 2
    assert hash(Options(trusted_proxies=["10.0.0.0/8"]))  # hashable: keys caches
    assert not Options().trusted_proxies and not Options(trusted_proxies=[]).trusted_proxies
    # A mapped network is the IPv4 network, as the guard unwraps mapped clients.
    assert TrustedProxies("::ffff:127.0.0.0/104") == TrustedProxies("127.0.0.0/8")


@pytest.mark.parametrize(
    "options",
    [
        {"trusted_proxies": "10.0.0.1/8"},  # host bits set: a typo
        {"trusted_proxies": "localhost"},  # names are never resolved
        {"trusted_proxies": "*"},
        {"trusted_proxies": 2130706433},
        {"trusted_proxies": [True]},
        {"trusted_proxies": {"127.0.0.1": 1}},
        {"proxy_hops": 0},
        {"proxy_hops": "1"},
        {"proxy_hops": True},
        {"unix_socket_is_local": "yes"},
    ],
)
def test_bad_proxy_options_raise_at_construction(options):
    with pytest.raises((TypeError, ValueError), match="flask_selfhost"):
        Options.from_mapping(options)


@pytest.mark.parametrize(
    "entry",
    [
        "0.0.0.0/0",
        "::/0",
        "10.0.0.0/7",  # wider than /8
        "2001:db8::/31",  # wider than /32
        "::ffff:0:0/96",  # every IPv4 address, as IPv6 writes it: /0
        "::ffff:10.0.0.0/103",  # 10.0.0.0/7
        "::/80",  # holds ::ffff:0:0/96: every IPv4 address
    ],
)
def test_a_network_too_wide_to_be_proxies_is_refused(entry):
    with pytest.raises(ValueError, match=r"too wide.*at most /8 \(IPv4.*/32 \(IPv6\)"):
        Options(trusted_proxies=[entry])


@pytest.mark.parametrize("entry", ["10.0.0.0/8", "::ffff:10.0.0.0/104", "2001:db8::/32"])
def test_the_widest_networks_taken(entry):
    assert Options(trusted_proxies=[entry]).trusted_proxies


@pytest.mark.parametrize(
    ("entry", "address"),
    [("127.0.0.1:8000", "'127.0.0.1'"), ("[::1]:8000", "'::1'"), ("[::1]", "'::1'")],
)
def test_an_address_with_a_port_is_refused_with_the_address_to_write(entry, address):
    with pytest.raises(ValueError, match=f"write {address}: a proxy is trusted by its address"):
        Options(trusted_proxies=f"{entry}, unix")


def test_no_port_hint_for_what_is_no_address():
    with pytest.raises(ValueError) as error:
        Options(trusted_proxies="localhost:8000")
    assert "write" not in str(error.value)


# This host's addresses ---------------------------------------------------

FIB_TRIE = """\
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
     +-- 192.168.0.0/24 2 0 2
           |-- 192.168.0.0
              /24 link UNICAST
           |-- 192.168.0.13
              /32 host LOCAL
           |-- 192.168.0.14
              /32 host LOCAL
        |-- 192.168.0.255
           /32 link BROADCAST
"""

IF_INET6 = """\
00000000000000000000000000000001 01 80 10 80       lo
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
20010db8000000000000000000000013 04 40 00 80     eth0
"""


def test_fib_trie_gives_every_local_ipv4_address():
    assert parse_fib_trie(FIB_TRIE) == {
        ipaddress.ip_address(a) for a in ("127.0.0.1", "192.168.0.13", "192.168.0.14")
    }


def test_if_inet6_gives_every_ipv6_address():
    assert parse_if_inet6(IF_INET6) == {
        ipaddress.ip_address(a) for a in ("::1", "fe80::fc:ff:fe00:1", "2001:db8::13")
    }


def test_this_hosts_addresses_leave_out_loopback_and_link_local():
    addresses = read_host_addresses()
    assert not any(a.is_loopback or a.is_link_local for a in addresses)
    with open("/proc/net/fib_trie") as trie:
        local = parse_fib_trie(trie.read())
    assert {a for a in local if not a.is_loopback} <= addresses


def test_host_addresses_are_cached_and_refreshed():
    reads = []

    def reader():
        reads.append(1)
        return frozenset({ipaddress.ip_address(f"10.0.0.{len(reads)}")})

    cached = HostAddresses(refresh_seconds=3600, reader=reader)
    first = cached.current()
    assert cached.current() is first and len(reads) == 1  # not per call
    stale = HostAddresses(refresh_seconds=0, reader=reader)
    assert stale.current() != stale.current()  # re-read once stale


# environ.evaluate: the environ front-----------------------------------------


@pytest.fixture
def tcp_peer():
    """The server side of a real loopback connection from 127.0.0.5."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.socket()
        client.bind(("127.0.0.5", 0))
        with client:
            client.connect(listener.getsockname())
            server_side, _ = listener.accept()
            with server_side:
                yield server_side


@pytest.fixture
def unix_peer():
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        yield left


def test_without_trusted_proxies_forwarding_headers_are_refused():
    environ = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "127.0.0.1"}
    decision = evaluate(environ, Options())
    assert not decision.allowed and decision.rule == "forwarded"
    assert "trusted_proxies" in decision.reason


def test_trusted_proxy_without_forwarding_headers_is_refused():
    """A trusted proxy whose headers are missing (forgotten,
    or deleted by waitress) would pass everyone it relays as itself."""
    options = Options(trusted_proxies="127.0.0.1")
    decision = evaluate({"REMOTE_ADDR": "127.0.0.1"}, options)
    assert not decision.allowed and decision.reason == PROXY_WITHOUT_HEADERS
    waitress = {"REMOTE_ADDR": "127.0.0.1", "SERVER_SOFTWARE": "waitress"}
    decision = evaluate(waitress, options)
    assert not decision.allowed and "clear_untrusted_proxy_headers=False" in decision.reason
    # Local tools use another loopback address than the proxy's.
    assert evaluate({"REMOTE_ADDR": "127.0.0.2"}, options).allowed
    assert not evaluate(
        {"REMOTE_ADDR": "127.0.0.2"}, Options(trusted_proxies="127.0.0.0/8")
    ).allowed


def test_a_header_less_proxy_request_is_logged_with_what_works_for_a_local_tool(caplog):
    """The tool shares the proxy's address: the logged reason names the two
    ways that pass, and both do."""
    guarded = SelfHostMiddleware(report, trusted_proxies="127.0.0.1")
    environ = {"REMOTE_ADDR": "127.0.0.1", "REQUEST_METHOD": "GET", "PATH_INFO": "/"}
    with caplog.at_level("WARNING", logger="flask_selfhost"):
        guarded(environ, lambda status, headers: None)
    (line,) = [record.getMessage() for record in caplog.records]
    assert "curl --interface 127.0.0.2 when only 127.0.0.1 is trusted" in line, line
    assert "over TCP when the proxy uses a unix socket (trusted_proxies=['unix'])" in line
    assert evaluate({"REMOTE_ADDR": "127.0.0.2"}, Options(trusted_proxies="127.0.0.1")).allowed
    assert evaluate({"REMOTE_ADDR": "127.0.0.1"}, Options(trusted_proxies="unix")).allowed


def test_host_names_never_count():
    options = Options(trusted_proxies="127.0.0.1")
    environ = {
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_X_FORWARDED_HOST": "localhost",
        "HTTP_FORWARDED": "host=localhost;proto=http",
    }
    decision = evaluate(environ, options)
    assert not decision.allowed and decision.reason == fw.NO_CLIENT_HEADER


@pytest.mark.parametrize("value", [b"127.0.0.1", 2130706433, ["127.0.0.1"], None])
def test_a_header_that_is_not_a_string_is_refused(value):
    environ = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": value}
    assert not evaluate(environ, Options(trusted_proxies="127.0.0.1")).allowed


@pytest.mark.parametrize(
    ("remote", "key"), [("", "gunicorn.socket"), ("<local>", "werkzeug.socket")]
)
def test_unix_socket_is_refused_unless_declared_local(unix_peer, remote, key):
    environ = {"REMOTE_ADDR": remote, key: unix_peer}
    refused = evaluate(environ, Options())
    assert not refused.allowed
    assert "unix_socket_is_local" in refused.reason and "trusted_proxies" in refused.reason
    assert refused.peer_addr == UNIX
    assert evaluate(environ, Options(unix_socket_is_local=True)).allowed
    # Trusting "unix" is for proxies that name the client, not for requests
    # that name nobody.
    assert not evaluate(environ, Options(trusted_proxies="unix")).allowed


def test_waitress_unix_marker_counts_only_from_waitress():
    options = Options(unix_socket_is_local=True)
    waitress = {"REMOTE_ADDR": "localhost", "SERVER_SOFTWARE": "waitress"}
    assert evaluate(waitress, options).allowed
    assert not evaluate({"REMOTE_ADDR": "localhost"}, options).allowed


def test_an_empty_remote_addr_on_a_tcp_socket_is_not_a_unix_socket(tcp_peer):
    options = Options(unix_socket_is_local=True, trusted_proxies="unix")
    assert not evaluate({"REMOTE_ADDR": "", "gunicorn.socket": tcp_peer}, options).allowed
    assert not evaluate({"REMOTE_ADDR": ""}, options).allowed  # no socket: no proof
    relayed = {"REMOTE_ADDR": "", "gunicorn.socket": tcp_peer, "HTTP_X_FORWARDED_FOR": "::1"}
    assert not evaluate(relayed, options).allowed


def test_unix_socket_trusted_as_a_proxy(unix_peer):
    environ = {"REMOTE_ADDR": "", "gunicorn.socket": unix_peer, "HTTP_X_FORWARDED_FOR": "::1"}
    decision = evaluate(environ, Options(trusted_proxies="unix"))
    assert decision.allowed and decision.peer_addr == UNIX
    refused = evaluate(environ, Options(trusted_proxies="127.0.0.1"))
    assert not refused.allowed and "trusted_proxies" in refused.reason
    environ["HTTP_X_FORWARDED_FOR"] = "10.0.0.2"
    assert not evaluate(environ, Options(trusted_proxies="unix")).allowed


# ProxyFix -----------------------------------------------------------------


def through(app, environ):
    """Call a WSGI app; return (status, body)."""
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"] = int(status.split()[0])

    body = b"".join(app(environ, start_response)).decode()
    return seen["status"], body


def test_proxyfix_before_the_guard_is_judged_on_the_original_peer(tcp_peer):
    # ProxyFix first (outer), the guard inside it: the guard sees REMOTE_ADDR
    # rewritten from X-Forwarded-For, and the original in proxy_fix.orig.
    trusted = SelfHostMiddleware(report, trusted_proxies="127.0.0.5")
    untrusted = SelfHostMiddleware(report)
    for guard, xff, expected in [
        (trusted, "127.0.0.1", 200),
        (trusted, "10.0.0.2", 403),
        (untrusted, "127.0.0.1", 403),  # the rewrite alone never grants
    ]:
        environ = {
            "REMOTE_ADDR": "127.0.0.5",
            "gunicorn.socket": tcp_peer,
            "HTTP_X_FORWARDED_FOR": xff,
        }
        status, _ = through(ProxyFix(guard, x_for=1), environ)
        assert status == expected, (xff, guard.options)


def test_proxyfix_cannot_launder_an_untrusted_peer(tcp_peer, logged):
    # The client at 127.0.0.5 is not trusted. Two ProxyFix layers: the second
    # overwrites the saved original with the first one's rewrite (127.0.0.1,
    # trusted). The connection socket tells the truth.
    guard = SelfHostMiddleware(report, trusted_proxies="127.0.0.1")
    stacked = ProxyFix(ProxyFix(guard, x_for=1), x_for=1)
    environ = {
        "REMOTE_ADDR": "127.0.0.5",
        "gunicorn.socket": tcp_peer,
        "HTTP_X_FORWARDED_FOR": "127.0.0.1, 127.0.0.1",
    }
    status, _ = through(stacked, environ)
    assert status == 403 and "ProxyFix" in logged()


def test_guard_outside_proxyfix_sees_the_server_environ():
    # The documented order: the guard first, ProxyFix inside it.
    app = SelfHostMiddleware(ProxyFix(report, x_for=1), trusted_proxies="127.0.0.1")
    status, body = through(app, {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "::1"})
    assert status == 200 and json.loads(body)["remote"] == "::1"  # ProxyFix still ran
    status, _ = through(app, {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "10.0.0.2"})
    assert status == 403


def test_proxyfix_in_front_of_werkzeugs_server():
    app = ProxyFix(SelfHostMiddleware(report, trusted_proxies="127.0.0.1"), x_for=1)
    with werkzeug_server(app) as port:
        assert http("127.0.0.1", port, {"X-Forwarded-For": "127.0.0.1"})[0] == 200
        assert http("127.0.0.1", port, {"X-Forwarded-For": "10.0.0.2"})[0] == 403


# gunicorn's PROXY protocol, for real ---------------------------------------


def http(host: str, port: int, headers: dict[str, str], preamble: bytes = b"") -> tuple[int, str]:
    """One HTTP/1.0 request over a raw socket, after ``preamble`` (a PROXY header)."""
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    with socket.create_connection((host, port), timeout=10) as client:
        client.sendall(preamble + f"GET / HTTP/1.0\r\nHost: localhost\r\n{lines}\r\n".encode())
        reply = b""
        while chunk := client.recv(4096):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def proxy_v1(client: str, destination: str) -> bytes:
    family = "TCP6" if ":" in client else "TCP4"
    return f"PROXY {family} {client} {destination} 40000 8000\r\n".encode()


PROXY_V2_LOCAL = b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20, 0x00]) + struct.pack(">H", 0)


@pytest.mark.slow
def test_gunicorn_proxy_protocol(tmp_path):
    port = free_port()
    app = "tests.nginx:guarded_app(trusted_proxies='127.0.0.1')"
    args = ["--bind", f"127.0.0.1:{port}", "--proxy-protocol", "auto", app]
    with gunicorn(args, ("127.0.0.1", port), tmp_path):
        status, body = http("127.0.0.1", port, {}, proxy_v1("127.0.0.1", "127.0.0.1"))
        assert status == 200 and json.loads(body)["remote"] == "127.0.0.1"
        status, body = http("127.0.0.1", port, {}, proxy_v1("10.0.0.2", "127.0.0.1"))
        assert status == 403 and "another host" in last_refusal(tmp_path)
        status, body = http("127.0.0.1", port, {}, PROXY_V2_LOCAL)
        assert status == 403 and "no client address" in last_refusal(tmp_path)
        # One source of truth at a time.
        headers = {"X-Forwarded-For": "127.0.0.1"}
        status, body = http("127.0.0.1", port, headers, proxy_v1("127.0.0.1", "127.0.0.1"))
        assert status == 403 and "both" in last_refusal(tmp_path)
        # No PROXY header at all, from the trusted proxy's own address: its
        # client is unknown.
        status, body = http("127.0.0.1", port, {})
        assert status == 403 and "no forwarding header" in last_refusal(tmp_path)


@pytest.mark.slow
def test_gunicorn_proxy_protocol_without_trust_is_refused(tmp_path):
    port = free_port()
    args = ["--bind", f"127.0.0.1:{port}", "--proxy-protocol", "v1", "tests.nginx:guarded_app()"]
    with gunicorn(args, ("127.0.0.1", port), tmp_path):
        # A forged header claiming loopback: REMOTE_ADDR says 127.0.0.1, but
        # nobody trusted the sender to say so.
        status, _ = http("127.0.0.1", port, {}, proxy_v1("127.0.0.1", "127.0.0.1"))
        refusal = last_refusal(tmp_path)
        assert status == 403 and "PROXY protocol" in refusal and "trusted_proxies" in refusal


# gunicorn on a unix socket, for real -----------------------------------------


def unix_http(path: str, headers: dict[str, str]) -> tuple[int, str]:
    response = unix_request(path, headers=headers)
    return response.status, response.body


@pytest.mark.slow
@pytest.mark.parametrize(
    ("options", "headers", "expected"),
    [
        ("", {}, 403),
        ("unix_socket_is_local=True", {}, 200),
        ("trusted_proxies='unix'", {}, 403),
        ("trusted_proxies='unix'", {"X-Forwarded-For": "127.0.0.1"}, 200),
        ("trusted_proxies='unix'", {"X-Forwarded-For": "10.0.0.2"}, 403),
        ("unix_socket_is_local=True", {"X-Forwarded-For": "127.0.0.1"}, 403),
    ],
)
def test_gunicorn_unix_socket(tmp_path, options, headers, expected):
    port, path = free_port(), tmp_path / "app.sock"
    args = ["--bind", f"unix:{path}", "--bind", f"127.0.0.1:{port}"]
    with gunicorn([*args, f"tests.nginx:guarded_app({options})"], ("127.0.0.1", port), tmp_path):
        status, body = unix_http(str(path), headers)
        assert status == expected, body


@pytest.mark.slow
def test_werkzeug_unix_socket(tmp_path):
    path = tmp_path / "app.sock"
    local = SelfHostMiddleware(report, unix_socket_is_local=True)
    with werkzeug_server(local, f"unix://{path}"):
        status, body = unix_http(str(path), {})
        assert status == 200 and '"remote": "<local>"' in body  # (a chunked body)
    proxied = SelfHostMiddleware(report, trusted_proxies="unix")
    with werkzeug_server(proxied, f"unix://{path}"):
        assert unix_http(str(path), {"X-Forwarded-For": "127.0.0.1"})[0] == 200
        assert unix_http(str(path), {"X-Forwarded-For": "10.0.0.2"})[0] == 403
        assert unix_http(str(path), {})[0] == 403


def test_flask_extension_wraps_outside_proxyfix():
    """The documented order: ProxyFix on app.wsgi_app first, then SelfHost."""
    app = Flask(__name__)

    @app.get("/")
    def index():
        return {"remote": request.remote_addr, "orig": "werkzeug.proxy_fix.orig" in request.environ}

    seen = []

    @app.errorhandler(403)
    def refused(error):
        seen.append(error.selfhost_decision)
        return "refused", 403

    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)
    SelfHost(app, trusted_proxies="127.0.0.1")
    client = app.test_client()
    base = {"REMOTE_ADDR": "127.0.0.1"}
    reply = client.get("/", environ_base=base, headers={"X-Forwarded-For": "::1"})
    assert reply.status_code == 200
    assert reply.json == {"remote": "::1", "orig": True}  # ProxyFix ran, after the guard
    reply = client.get("/", environ_base=base, headers={"X-Forwarded-For": "10.0.0.2"})
    assert reply.status_code == 403
    assert (seen[-1].remote_addr, seen[-1].peer_addr) == ("10.0.0.2", "127.0.0.1")


odd = st.one_of(st.none(), header_text, st.binary(max_size=8), st.integers(), st.just(object()))
relay_keys = st.sampled_from(
    [
        "REMOTE_ADDR",
        "HTTP_FORWARDED",
        "HTTP_X_FORWARDED_FOR",
        "HTTP_X_FORWARDED_HOST",
        "PROXY_PROTOCOL",
        "PROXY_ADDR",
        "werkzeug.proxy_fix.orig",
        "gunicorn.socket",
        "SERVER_SOFTWARE",
    ]
)
TRUSTING = Options(trusted_proxies="127.0.0.1, ::1, unix", proxy_hops=2, unix_socket_is_local=True)


@given(st.dictionaries(relay_keys, odd | st.dictionaries(st.just("REMOTE_ADDR"), odd), max_size=6))
def test_no_relayed_environ_raises_or_grants_a_stranger(environ):
    decision = evaluate(environ, TRUSTING)
    if decision.allowed and decision.rule == "forwarded":
        address = ipaddress.ip_address(decision.remote_addr)
        assert address.is_loopback or address in read_host_addresses()


def test_an_overlong_forwarding_header_is_refused_before_parsing():
    options = Options(trusted_proxies="127.0.0.1")
    padding = ", ".join(["10.0.0.2"] * 200)  # about 2 kB: no real chain is that long
    environ = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": f"{padding}, 127.0.0.1"}
    decision = evaluate(environ, options)
    assert not decision.allowed and decision.reason == fw.TOO_LONG
    environ["HTTP_X_FORWARDED_FOR"] = "10.0.0.2, " * 20 + "127.0.0.1"
    assert evaluate(environ, options).allowed  # a long but plausible one is read
