"""
Relays a request does not show
==============================

A proxy that names its client in a forwarding header is judged by
:mod:`flask_selfhost.forwarded`. Some relays leave no such header to judge,
or one a client wrote part of, and would pass every client they relay as
the proxy itself (loopback, most often):

- a cleartext HTTP/2 (h2c) connection may be a proxy's tunnel: a proxy that
  relays an ``Upgrade: h2c`` or a piped request relays raw bytes from then
  on, and every later stream arrives from the proxy with headers its client
  wrote. gunicorn's HTTP/2 drops a PROXY protocol header's client as well;
- a trusted proxy that sends no forwarding header, or a server that deletes
  them (waitress, by default), leaves the proxy's own address as the client;
- a server that folds ``X_Forwarded_For`` into ``X-Forwarded-For`` lets a
  client behind a proxy write part of the header the guard reads.

Each is refused with a reason that names the setting to change.
"""

from __future__ import annotations

from .addresses import parse_ip
from .decision import FORWARDED, Decision
from .facts import H2C, H2C_GUNICORN, HTTP2_GUNICORN_ASGI, RequestFacts
from .proxies import TrustedProxies, trusted_user_proxy
from .servers import WAITRESS

H2C_CLIENT_UNKNOWN = (
    "gunicorn serves cleartext HTTP/2 (h2c) to proxies only and does not pass on a PROXY "
    "protocol header's client with it, so the client is unknown; let the proxy speak "
    "HTTP/1.1 or TLS to gunicorn"
)
GUNICORN_ASGI_HTTP2 = (
    "gunicorn's ASGI worker gives HTTP/2 requests the connection's peer, not a PROXY protocol "
    "header's client (behind a relay on this host, cleartext h2c names the relay), and the "
    "request cannot tell h2c from TLS, so the client is unknown; serve HTTP/1.1 only "
    "(--http-protocols h1, gunicorn's default)"
)
CLEARTEXT_HTTP2 = (
    "the request came over cleartext HTTP/2 (h2c), which no browser sends: a proxy that "
    "relays an 'Upgrade: h2c' or a piped request becomes a tunnel, and every later stream "
    "arrives from the proxy's address with headers its client wrote, so the client is "
    "unknown; drop the Upgrade header at the proxy (or let it speak HTTP/1.1 without "
    "upgrades), and set allow_cleartext_http2 only when no proxy can reach this server"
)
#: Why each kind of HTTP/2 (:attr:`RequestFacts.http2`) is refused.
HTTP2_REASONS = {
    H2C: CLEARTEXT_HTTP2,
    H2C_GUNICORN: H2C_CLIENT_UNKNOWN,
    HTTP2_GUNICORN_ASGI: GUNICORN_ASGI_HTTP2,
}
#: Names example addresses, never the request's: a tool on this host that
#: shares the proxy's address reads here what does work.
PROXY_WITHOUT_HEADERS = (
    "the request comes from a trusted proxy but carries no forwarding header, so its "
    "client is unknown; make the proxy send X-Forwarded-For. A tool on this host passes "
    "from an address outside trusted_proxies (curl --interface 127.0.0.2 when only "
    "127.0.0.1 is trusted), or over TCP when the proxy uses a unix socket "
    "(trusted_proxies=['unix'])"
)
#: The recipe for waitress behind a proxy: its headers kept, the guard judging them.
WAITRESS_RECIPE = (
    "run waitress with its forwarding headers kept (waitress-serve "
    "--no-clear-untrusted-proxy-headers, or clear_untrusted_proxy_headers=False; not its "
    "trusted_proxy, which rewrites the client) and put the proxy's address in trusted_proxies"
)
WAITRESS_HID_HEADERS = (
    "the request carried forwarding headers that waitress deleted before the app ran, so a "
    f"proxy relayed it for a client nobody can name; {WAITRESS_RECIPE}"
)
WAITRESS_DELETED_HEADERS = (
    f"{PROXY_WITHOUT_HEADERS} (waitress deletes X-Forwarded-For and Forwarded: {WAITRESS_RECIPE})"
)
#: What drops every spelling of a forwarding header name with an underscore.
DROP_UNDERSCORE_NAMES = (
    "nginx's default 'underscores_in_headers off;' (remove any 'underscores_in_headers on;'), "
    "or in Apache, before ProxyPass, 'RequestHeader unset X_Forwarded_For', "
    "'RequestHeader unset X-Forwarded_For' and 'RequestHeader unset X_Forwarded-For'"
)


def folded_names_reason(server: str | None) -> str:
    """Why a relayed request is refused on a server that folds header names."""
    return (
        f"{server} gives X_Forwarded_For and X-Forwarded-For the same environ key, so a client "
        "behind a proxy that passes header names with underscores writes part of the "
        f"X-Forwarded-For that the guard reads; make the proxy drop such names "
        f"({DROP_UNDERSCORE_NAMES}) and set proxy_drops_underscore_headers=True, or serve "
        "the app with gunicorn or waitress, which drop them"
    )


def judge_http2(facts: RequestFacts, allow_cleartext_http2: bool) -> Decision | None:
    """A refusal for an HTTP/2 request whose connection may be a tunnel, or
    ``None`` when it is not one (or is cleartext HTTP/2 the operator allowed).

    Judged before anything the request says: through a tunnel, every header
    of a stream (a forwarding header included) is the other host's own, and
    the peer is the proxy. gunicorn's HTTP/2 stays refused whatever the
    options, because its client may be a PROXY protocol relay's address.
    """
    kind = facts.http2
    if kind is None or (kind == H2C and allow_cleartext_http2):
        return None
    reason = HTTP2_REASONS.get(kind, CLEARTEXT_HTTP2)  # an unknown kind: refused all the same
    return Decision(False, FORWARDED, reason, facts.remote, None)


def judge_unrelayed_peer(facts: RequestFacts, trusted: TrustedProxies) -> Decision | None:
    """A refusal when a trusted proxy sent a request without forwarding headers.

    Such a request looks like the proxy's own: a proxy that forgot its
    headers, or a server that deleted them (waitress does, by default), would
    otherwise pass every client it relays as the proxy itself (loopback).
    """
    address = parse_ip(facts.remote)  # a unix socket's client has no address
    owner = None
    if address is None or not trusted.trusts(address):
        owner = trusted_user_proxy(facts, trusted)  # a proxy trusted by who runs it
        if owner is None:
            return None
    reason = WAITRESS_DELETED_HEADERS if facts.server == WAITRESS else PROXY_WITHOUT_HEADERS
    return Decision(False, FORWARDED, reason, facts.remote, None, facts.remote, (), owner)
