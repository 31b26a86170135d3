"""The ASGI adapter's facts (flask_selfhost.scope) that only ASGI servers
make necessary: a client the server may have taken from the request's own
forwarding headers, judged by the client rule like every other fact."""

from __future__ import annotations

import pytest

from flask_selfhost.decision import FORWARDED
from flask_selfhost.forwarded import REWRITTEN_CLIENT, UNTRUSTED
from flask_selfhost.guard import judge
from flask_selfhost.options import Options
from flask_selfhost.scope import facts_from_scope


def scope(client, *headers):
    return {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "path": "/",
        "client": (client, 50000),
        "server": ("127.0.0.2", 8000),
        "headers": [(b"host", b"localhost"), *headers],
    }


@pytest.mark.parametrize(
    ("client", "header", "named"),
    [
        ("127.0.0.1", (b"x-forwarded-for", b"127.0.0.1"), True),
        ("127.0.0.1", (b"x-forwarded-for", b"127.0.0.1, 10.0.0.2"), True),
        ("10.0.0.2", (b"x-forwarded-for", b"127.0.0.1, 10.0.0.2"), True),
        ("::1", (b"forwarded", b'for="[::1]"'), True),
        ("::1", (b"x-forwarded-for", b"0:0:0:0:0:0:0:1"), True),  # the same address
        ("10.0.0.2", (b"x-real-ip", b"10.0.0.2"), True),
        ("10.0.0.2", (b"cf-connecting-ip", b"192.0.2.9, 10.0.0.2"), True),
        ("127.0.0.1", (b"x-forwarded-for", b"10.0.0.2"), False),  # a proxy's own address
        ("127.0.0.1", (b"x-forwarded-proto", b"https"), False),  # no entry
        ("127.0.0.1", (b"x-forwarded-for", b"127.0.0.1, ,"), False),  # malformed: refused anyway
    ],
)
def test_a_client_named_by_its_own_forwarding_headers(client, header, named):
    assert facts_from_scope(scope(client, header)).remote_in_headers is named


def test_only_a_relayed_request_is_compared():
    # No forwarding header: nothing to compare, whatever else it carries.
    assert (
        facts_from_scope(scope("127.0.0.1", (b"x-whatever", b"127.0.0.1"))).remote_in_headers
        is False
    )


def test_the_client_rule_refuses_it_with_the_local_address():
    facts = facts_from_scope(scope("127.0.0.1", (b"x-forwarded-for", b"127.0.0.1")))
    decision = judge(facts, Options(trusted_proxies=["127.0.0.1"]))
    assert (decision.allowed, decision.rule, decision.reason) == (
        False,
        FORWARDED,
        REWRITTEN_CLIENT,
    )
    assert (decision.remote_addr, decision.local_addr) == ("127.0.0.1", "127.0.0.2")
    # Without trusted_proxies a relayed request is refused as untrusted.
    assert judge(facts, Options()).reason == UNTRUSTED
