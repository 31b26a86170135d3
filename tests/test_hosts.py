"""The host rule (flask_selfhost.hosts), table-driven in the order of its docstring,
then through environ.evaluate (local address, addresses in the refusal)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flask_selfhost import evaluate
from flask_selfhost.decision import HOST
from flask_selfhost.hosts import (
    IP_LOCAL_UNKNOWN,
    IP_NOT_LOCAL,
    MALFORMED,
    NOT_ALLOWED,
    judge_host,
    normalise_allowed_hosts,
    parse_host,
)
from flask_selfhost.options import Options

from .apps import APACHE

NONE: frozenset[str] = frozenset()
MINE = normalise_allowed_hosts(["mybox", ".example.internal", "192.0.2.50", "2001:db8::5"])

# (Host header, allowed_hosts, local address, expected reason or None for allowed)
HOST_CASES = [
    # 2. strict parsing: malformed, empty or ambiguous is refused
    ("", NONE, None, MALFORMED),
    (" ", NONE, None, MALFORMED),
    (":8000", NONE, None, MALFORMED),  # Ollama's bypass
    ("localhost:", NONE, None, MALFORMED),
    ("localhost:0", NONE, None, MALFORMED),
    ("localhost:65536", NONE, None, MALFORMED),
    ("localhost:123456", NONE, None, MALFORMED),
    ("localhost:+80", NONE, None, MALFORMED),
    ("localhost:8000:8000", NONE, None, MALFORMED),
    ("localhost:5000@evil.example", NONE, None, MALFORMED),
    ("user@localhost", NONE, None, MALFORMED),
    ("localhost/evil", NONE, None, MALFORMED),
    ("localhost ", NONE, None, MALFORMED),
    ("localhost\r\n", NONE, None, MALFORMED),
    ("local host", NONE, None, MALFORMED),
    ("localhost..", NONE, None, MALFORMED),
    (".localhost", NONE, None, MALFORMED),
    ("a..localhost", NONE, None, MALFORMED),
    ("[::1", NONE, None, MALFORMED),
    ("::1", NONE, None, MALFORMED),  # IPv6 must be bracketed
    ("[::1]8000", NONE, None, MALFORMED),
    ("[::1%eth0]", NONE, None, MALFORMED),  # no zone ids
    ("[fe80::1%25eth0]:8000", NONE, None, MALFORMED),
    ("[127.0.0.1]", NONE, None, MALFORMED),
    ("[]", NONE, None, MALFORMED),
    ("127.1", NONE, None, MALFORMED),  # resolvers disagree on these
    ("0127.0.0.1", NONE, None, MALFORMED),
    ("127.0.0.1.", NONE, None, MALFORMED),
    ("127.0.0.256", NONE, None, MALFORMED),
    ("2130706433", NONE, None, MALFORMED),
    ("\u212aocalhost", NONE, None, MALFORMED),  # Kelvin sign lowercases to "k"
    ("l\u043ecalhost", NONE, None, MALFORMED),  # Cyrillic o
    ("x" * 64 + ".localhost", NONE, None, MALFORMED),  # label over 63
    ("*", ("*",), None, MALFORMED),  # "*" allows any well-formed Host, not garbage
    # 3. "*" turns the check off
    ("evil.example:8000", frozenset({"*"}), None, None),
    ("192.0.2.99", frozenset({"*"}), None, None),
    # 4. localhost and *.localhost
    ("localhost", NONE, None, None),
    ("localhost:8000", NONE, None, None),
    ("LocalHost.:8000", NONE, None, None),
    ("app.localhost:8000", NONE, None, None),
    ("a.b.localhost", NONE, None, None),
    ("localhost:1", NONE, None, None),
    ("localhost:65535", NONE, None, None),
    ("localhost.evil.example", NONE, None, NOT_ALLOWED),
    ("evillocalhost", NONE, None, NOT_ALLOWED),
    # 5. IP literals
    ("127.0.0.1", NONE, None, None),
    ("127.0.0.1:8000", NONE, None, None),
    ("127.255.0.7:8000", NONE, None, None),
    ("[::1]", NONE, None, None),
    ("[::1]:8000", NONE, None, None),
    ("[0:0:0:0:0:0:0:1]:8000", NONE, None, None),
    ("[::ffff:127.0.0.1]:8000", NONE, None, None),
    ("[::ffff:7f00:1]:8000", NONE, None, None),
    ("192.168.0.13:8000", NONE, None, IP_LOCAL_UNKNOWN),
    ("192.168.0.13:8000", NONE, "192.168.0.13", None),
    ("192.168.0.13:8000", NONE, "::ffff:192.168.0.13", None),
    ("192.168.0.13:8000", NONE, "192.168.0.14", IP_NOT_LOCAL),
    ("192.168.0.13:8000", NONE, "not an address", IP_NOT_LOCAL),
    ("[fe80::1]:8000", NONE, "fe80::1%eth0", None),  # the local side may carry a zone
    ("[2001:db8::1]:8000", NONE, "2001:db8::1", None),
    ("[2001:db8::1]:8000", NONE, "2001:db8::2", IP_NOT_LOCAL),
    ("[2001:db8::1]:8000", NONE, "192.168.0.13", IP_NOT_LOCAL),
    ("0.0.0.0:8000", NONE, "127.0.0.1", IP_NOT_LOCAL),
    ("192.0.2.50:8000", MINE, None, None),
    ("[2001:db8::5]", MINE, None, None),
    # 6. names in allowed_hosts
    ("mybox:8000", MINE, None, None),
    ("MyBox.:8000", MINE, None, None),
    ("mybox.evil.example", MINE, None, NOT_ALLOWED),
    ("example.internal", MINE, None, None),
    ("db.example.internal:8000", MINE, None, None),
    ("a.b.example.internal", MINE, None, None),
    ("evilexample.internal", MINE, None, NOT_ALLOWED),
    # 7. anything else
    ("evil.example", NONE, None, NOT_ALLOWED),
    ("evil.example:8000", NONE, None, NOT_ALLOWED),
    ("mybox", NONE, None, NOT_ALLOWED),
    ("0x7f000001", NONE, None, NOT_ALLOWED),  # a name to us, never an address
]


@pytest.mark.parametrize(("host", "allowed", "local", "expected"), HOST_CASES)
def test_judge_host(host, allowed, local, expected):
    decision = judge_host(host, frozenset(allowed), local)
    if expected is None:
        assert decision is None
    else:
        assert decision is not None
        assert (decision.allowed, decision.rule, decision.reason) == (False, HOST, expected)


def test_parse_host_keeps_the_origin_form():
    assert parse_host("LocalHost.:8000") == ("localhost.", "localhost", 8000, None)
    parsed = parse_host("[::FFFF:127.0.0.1]")
    assert parsed is not None
    assert (parsed.origin_form, parsed.name, parsed.port, str(parsed.ip)) == (
        "[::ffff:127.0.0.1]",
        "127.0.0.1",
        None,
        "127.0.0.1",
    )


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        (["MyBox."], {"mybox"}),
        ([".Example.Internal"], {".example.internal"}),
        (["::1", "[2001:DB8::1]", "::ffff:192.0.2.1"], {"::1", "2001:db8::1", "192.0.2.1"}),
        (["*"], {"*"}),
    ],
)
def test_allowed_hosts_are_normalised(entries, expected):
    assert normalise_allowed_hosts(entries) == frozenset(expected)


@pytest.mark.parametrize(
    "entry", ["", ".", "mybox:8000", "http://mybox", ".192.0.2.1", "my box", "[::1", "*.example"]
)
def test_bad_allowed_hosts_raise_at_construction(entry):
    with pytest.raises(ValueError, match="allowed_hosts"):
        Options(allowed_hosts=[entry])


def test_allowed_hosts_option_forms():
    assert Options(allowed_hosts="a.test, b.test").allowed_hosts == {"a.test", "b.test"}
    assert Options(allowed_hosts=("a.test",)).allowed_hosts == {"a.test"}
    with pytest.raises(TypeError):
        Options(allowed_hosts=5)
    with pytest.raises(TypeError):
        Options(allowed_hosts=[b"a.test"])
    hash(Options(allowed_hosts=["a.test"]))


def environ(host=None, remote="127.0.0.1", **extra):
    env = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "REMOTE_ADDR": remote}
    if host is not None:
        env["HTTP_HOST"] = host
    env.update(extra)
    return env


def test_guard_no_host_is_allowed():
    assert evaluate(environ()).allowed


def test_guard_refusal_names_the_rule_and_addresses():
    decision = evaluate(environ("evil.example:8000"))
    assert (decision.allowed, decision.rule, decision.remote_addr) == (False, HOST, "127.0.0.1")
    assert "allowed_hosts" in decision.reason


def test_guard_host_equal_to_server_addr():
    """A client on this host that dials the LAN address: source and host both pass."""
    env = environ("192.0.2.7:8000", remote="192.0.2.7", SERVER_ADDR="192.0.2.7", **APACHE)
    assert evaluate(env).allowed
    env = environ("192.0.2.8:8000", remote="192.0.2.7", SERVER_ADDR="192.0.2.7", **APACHE)
    decision = evaluate(env)
    assert (decision.rule, decision.reason, decision.local_addr) == (
        "host",
        IP_NOT_LOCAL,
        "192.0.2.7",
    )


def test_guard_loopback_client_with_lan_host_reads_the_local_address():
    """Loopback source, Host the LAN address: the local address is fetched only now."""
    assert evaluate(environ("192.0.2.7:8000", SERVER_ADDR="192.0.2.7", **APACHE)).allowed
    decision = evaluate(environ("192.0.2.7:8000"))  # no local address known
    assert (decision.allowed, decision.reason) == (False, IP_LOCAL_UNKNOWN)


def test_guard_non_string_host_is_refused():
    decision = evaluate(environ(b"localhost"))
    assert (decision.allowed, decision.rule, decision.reason) == (False, HOST, MALFORMED)


def test_guard_options_relax_the_host_rule():
    assert evaluate(environ("mybox:8000"), Options(allowed_hosts=["mybox"])).allowed
    assert evaluate(environ("evil.example"), Options(allowed_hosts=["*"])).allowed
    assert not evaluate(environ("evil.example"), Options(allowed_hosts=["mybox"])).allowed


@given(st.text(max_size=80), st.sampled_from([None, "127.0.0.1", "192.0.2.7", "fe80::1%eth0"]))
def test_any_host_yields_a_decision(host, local):
    decision = judge_host(host, MINE, local)
    assert decision is None or (decision.allowed is False and decision.rule == HOST)
    env = environ(host)
    if local is not None:
        env["SERVER_ADDR"] = local
        env.update(APACHE)
    assert evaluate(env).allowed in (True, False)


@given(st.from_regex(r"[a-z0-9.\[\]:@%-]{0,30}", fullmatch=True))
def test_host_like_text_yields_a_decision(host):
    decision = judge_host(host, NONE)
    assert decision is None or decision.rule == HOST
