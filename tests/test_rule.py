"""The source rule (``Require local``), table-driven, mirroring its ordered list
in flask_selfhost/addresses.py, plus properties that must hold for any input."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flask_selfhost.addresses import (
    BAD_LOCAL,
    LOOPBACK,
    NO_CLIENT,
    NO_LOCAL,
    OTHER_HOST,
    OWN_ADDRESS,
    judge_source,
    parse_ip,
)
from flask_selfhost.decision import SOURCE

# (remote, local, allowed, reason) - grouped by the step of the rule that decides.
CASES = [
    # 1. the client address must parse
    (None, "127.0.0.1", False, NO_CLIENT),
    ("", "127.0.0.1", False, NO_CLIENT),  # gunicorn on a unix socket
    ("<local>", None, False, NO_CLIENT),  # Werkzeug on a unix socket
    ("localhost", None, False, NO_CLIENT),  # waitress on a unix socket; never resolved
    ("unix:", None, False, NO_CLIENT),  # nginx's $remote_addr for a unix client
    (" 127.0.0.1", None, False, NO_CLIENT),
    ("127.0.0.1 ", None, False, NO_CLIENT),
    ("127.1", None, False, NO_CLIENT),
    ("0127.0.0.1", None, False, NO_CLIENT),
    ("127.0.0.1:8000", None, False, NO_CLIENT),
    ("[::1]", None, False, NO_CLIENT),
    ("::1/128", None, False, NO_CLIENT),
    ("2130706433", None, False, NO_CLIENT),  # an integer spelling of 127.0.0.1
    ("127.0.0.1\x00", None, False, NO_CLIENT),
    # 2. loopback: all of 127/8, ::1, and the IPv4-mapped forms
    ("127.0.0.1", None, True, LOOPBACK),
    ("127.0.0.2", None, True, LOOPBACK),
    ("127.255.255.254", None, True, LOOPBACK),
    ("127.0.0.1", "127.0.0.2", True, LOOPBACK),  # seed: 127.0.0.1 -> 127.0.0.2
    ("::1", None, True, LOOPBACK),
    ("0:0:0:0:0:0:0:1", None, True, LOOPBACK),
    ("::ffff:127.0.0.1", None, True, LOOPBACK),  # a dual-stack [::] listener's loopback client
    ("::FFFF:127.0.0.5", "::ffff:127.0.0.1", True, LOOPBACK),
    ("::ffff:7f00:1", None, True, LOOPBACK),
    ("127.0.0.1", "garbage", True, LOOPBACK),  # loopback never needs the local address
    # 3. not loopback and no local address known
    ("192.168.0.13", None, False, NO_LOCAL),
    ("::ffff:10.0.0.2", None, False, NO_LOCAL),
    # 4. the local address must be a usable address
    ("192.168.0.13", "", False, BAD_LOCAL),
    ("192.168.0.13", "0.0.0.0", False, BAD_LOCAL),  # a bind address, not a connection's
    ("::", "::", False, BAD_LOCAL),
    ("224.0.0.1", "224.0.0.1", False, BAD_LOCAL),
    ("192.168.0.13", "host.example", False, BAD_LOCAL),
    # 5. the client is the address it connected to
    ("192.168.0.13", "192.168.0.13", True, OWN_ADDRESS),  # seed: dialled its own LAN address
    ("::ffff:192.168.0.13", "192.168.0.13", True, OWN_ADDRESS),  # mapped == plain
    ("192.168.0.13", "::ffff:192.168.0.13", True, OWN_ADDRESS),
    ("2001:db8::7", "2001:db8::7", True, OWN_ADDRESS),
    ("2001:DB8::7", "2001:db8:0::7", True, OWN_ADDRESS),  # parsed, not string, comparison
    ("fe80::1%eth0", "fe80::1%eth0", True, OWN_ADDRESS),
    ("fe80::1", "fe80::1", True, OWN_ADDRESS),  # peers arrive without a scope
    # 6. everything else is another host
    ("192.168.0.128", "192.168.0.13", False, OTHER_HOST),  # seed: another LAN host
    ("10.0.0.2", "127.0.0.1", False, OTHER_HOST),  # seed: DNAT'd to loopback
    ("::ffff:10.0.0.2", "::ffff:127.0.0.1", False, OTHER_HOST),
    ("fd42::2", "::1", False, OTHER_HOST),  # IPv6 other host, local loopback
    ("fd42::2", "fd42::1", False, OTHER_HOST),
    ("fe80::1%eth0", "fe80::1%eth1", False, OTHER_HOST),  # scopes must match
    ("fe80::1%eth0", "fe80::1", False, OTHER_HOST),
    ("192.168.0.13", "::ffff:192.168.0.14", False, OTHER_HOST),
    ("0.0.0.0", "127.0.0.1", False, OTHER_HOST),
]


@pytest.mark.parametrize(("remote", "local", "allowed", "reason"), CASES)
def test_rule_table(remote, local, allowed, reason):
    decision = judge_source(remote, local)
    assert (decision.allowed, decision.reason) == (allowed, reason)
    assert decision.rule == SOURCE
    assert (decision.remote_addr, decision.local_addr) == (remote, local)


def test_decision_refuses_to_be_used_as_a_boolean():
    # A NamedTuple is always truthy, so `if decision:` would let everyone in.
    with pytest.raises(TypeError, match=r"decision\.allowed"):
        bool(judge_source("10.0.0.2", None))


def test_parse_ip_accepts_only_exact_text():
    assert parse_ip("127.0.0.1") == ipaddress.IPv4Address("127.0.0.1")
    assert parse_ip("::ffff:127.0.0.1") == ipaddress.IPv4Address("127.0.0.1")
    for not_text in (2130706433, b"\x7f\x00\x00\x01", None):
        assert parse_ip(not_text) is None  # type: ignore[arg-type]


ipv4 = st.ip_addresses(v=4)
ipv6 = st.ip_addresses(v=6)
any_ip = st.one_of(ipv4, ipv6)


def spelled(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> st.SearchStrategy[str]:
    """An address as a server could report it: plain, or IPv4 as IPv4-mapped IPv6."""
    options = [st.just(str(address))]
    if address.version == 4:
        options.append(st.just(f"::ffff:{address}"))
    return st.one_of(options)


def _unmapped(address):
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@given(remote=any_ip, local=any_ip, data=st.data())
def test_any_client_neither_loopback_nor_local_is_refused(remote, local, data):
    client, server = _unmapped(remote), _unmapped(local)
    decision = judge_source(data.draw(spelled(remote)), data.draw(spelled(local)))
    if client.is_loopback or (
        client == server and not (server.is_unspecified or server.is_multicast)
    ):
        assert decision.allowed
    else:
        assert not decision.allowed


@given(remote=any_ip, data=st.data())
def test_a_client_is_always_allowed_on_its_own_address(remote, data):
    if _unmapped(remote).is_unspecified or _unmapped(remote).is_multicast:
        return
    text = data.draw(spelled(remote))
    assert judge_source(text, str(remote)).allowed


@given(remote=st.one_of(st.none(), st.text()), local=st.one_of(st.none(), st.text()))
def test_any_strings_give_a_decision_never_an_error(remote, local):
    decision = judge_source(remote, local)
    assert decision.rule == SOURCE
    if decision.allowed:  # only two ways in
        assert decision.reason in (LOOPBACK, OWN_ADDRESS)
        assert parse_ip(remote) is not None
