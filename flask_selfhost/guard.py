"""
One decision per request
========================

:func:`evaluate` reads a WSGI environ and says whether the request comes
from this host. Every front (the WSGI middleware, the Flask extension and
decorators, the CLI) calls it, so they cannot disagree. It has no side
effects, writes nothing into the environ and never raises for any environ.

The algorithm, in order; the first rule that refuses decides:

1. **forwarded** - a request that carries a forwarding header
   (``Forwarded``, ``X-Forwarded-*``, ``X-Real-IP``) or came through
   gunicorn's PROXY protocol is a proxy relaying someone else's request. It
   is refused, even from loopback, unless the immediate peer is in
   ``trusted_proxies``; then the client that the proxy names is judged
   instead of the peer (see :mod:`flask_selfhost.forwarded`). A unix-socket
   connection without such headers has no client address: refused unless
   ``unix_socket_is_local``.
2. **source** - ``REMOTE_ADDR`` is loopback, or equals the local address the
   connection arrived on (see :mod:`flask_selfhost.addresses`). The local
   address is ``SERVER_ADDR`` when the server sets it (Apache/mod_wsgi),
   else ``getsockname()`` of the connection socket that gunicorn
   (``gunicorn.socket``) and Werkzeug (``werkzeug.socket``) put in the
   environ. ``SERVER_NAME`` is the bind address or the Host header, never the
   local address, so it is not used.
3. **host** - the Host header names this host: absent, ``localhost``,
   ``*.localhost``, a loopback or local-address IP literal, or a name in
   ``allowed_hosts``; parsed strictly (see :mod:`flask_selfhost.hosts`).
   This is what stops DNS rebinding.
4. **cross-site** and **preflight** - a browser says, in ``Sec-Fetch-Site``
   or ``Origin``, that a page of another site made it send the request:
   refused unless it is a top-level navigation or comes from one of
   ``trusted_origins``; CORS preflights are granted to trusted origins only
   (see :mod:`flask_selfhost.crosssite`). Its decisions carry ``Vary`` (and
   CORS) headers that every front adds to the response; a granted preflight
   (``decision.answers_preflight``) is answered by the front itself.

Speed: this runs before every request. The common case (a loopback client,
no forwarding header, Host ``localhost:PORT`` or ``127.0.0.1:PORT``, no
``Origin`` or ``Sec-Fetch-*``) costs a few dict lookups and two cache hits,
allocates nothing and makes no system call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import forwarded, hosts
from .addresses import judge_source
from .connection import local_address
from .crosssite import judge_cross_site
from .decision import Decision
from .forwarded import judge_relayed, judge_unix_socket
from .host_addresses import host_addresses
from .options import Options

DEFAULT_OPTIONS = Options()

#: Environ keys of the headers that say "a proxy forwarded this". Checked by
#: exact key (a scan of the environ for every ``HTTP_X_FORWARDED_*`` would cost
#: a microsecond a request); these are the ones proxies set.
FORWARDING_HEADERS = (
    "HTTP_FORWARDED",
    "HTTP_X_FORWARDED_FOR",
    "HTTP_X_FORWARDED_HOST",
    "HTTP_X_FORWARDED_PROTO",
    "HTTP_X_FORWARDED_PORT",
    "HTTP_X_FORWARDED_PREFIX",
    "HTTP_X_FORWARDED_SERVER",
    "HTTP_X_FORWARDED_SCHEME",
    "HTTP_X_FORWARDED_SSL",
    "HTTP_X_REAL_IP",
)

FORWARDED_REFUSAL = forwarded.UNTRUSTED  # names trusted_proxies


def evaluate(environ: Mapping[str, Any], options: Options | None = None) -> Decision:
    """Decide whether the request in ``environ`` comes from this host.

    ``options`` (default ``Options()``) say which proxies may name the client,
    whether a unix socket is local, and what the later rules accept.
    """
    if options is None:
        options = DEFAULT_OPTIONS
    remote = environ.get("REMOTE_ADDR")
    if type(remote) is not str:
        remote = None  # None, bytes or anything else counts as missing

    # 1. forwarded. Spelled out, not a set operation: plain lookups are the
    # cheapest test (150 ns against 200 ns here); a test checks the list.
    if (
        "HTTP_X_FORWARDED_FOR" in environ
        or "HTTP_FORWARDED" in environ
        or "HTTP_X_REAL_IP" in environ
        or "HTTP_X_FORWARDED_HOST" in environ
        or "HTTP_X_FORWARDED_PROTO" in environ
        or "HTTP_X_FORWARDED_PORT" in environ
        or "HTTP_X_FORWARDED_PREFIX" in environ
        or "HTTP_X_FORWARDED_SERVER" in environ
        or "HTTP_X_FORWARDED_SCHEME" in environ
        or "HTTP_X_FORWARDED_SSL" in environ
        or "PROXY_PROTOCOL" in environ  # gunicorn's proxy_protocol rewrote REMOTE_ADDR
    ):
        decision = _judge_forwarded(environ, remote, options)
        environ = _as_sent(environ)  # for steps 3 and 4
    else:
        # 2. source. A loopback client needs no local address, and
        # getsockname() is a system call: ask for it only after a "no".
        decision = judge_source(remote, None)
        if not decision.allowed:
            decision = _judge_direct(environ, remote, options)
    if not decision.allowed:
        return decision

    # 3. host: one cache hit on the raw header in the common case.
    host = environ.get("HTTP_HOST")
    if host is not None:
        refusal = (
            hosts.judge_host(host, options.allowed_hosts)
            if type(host) is str and len(host) <= hosts.MAX_LENGTH
            else hosts.MALFORMED_REFUSAL
        )
        if refusal is not None:
            return _refuse_host(environ, host, options, decision, refusal)

    # 4. cross-site: only browsers send these headers; two lookups for the rest.
    if ("HTTP_SEC_FETCH_SITE" in environ or "HTTP_ORIGIN" in environ) and options.check_cross_site:
        return judge_cross_site(environ, options.trusted_origins, decision)
    return decision


def _judge_forwarded(environ: Mapping[str, Any], remote: str | None, options: Options) -> Decision:
    """Step 1: a relayed request is judged by the client its trusted proxy names."""
    if options.trusted_proxies:
        return judge_relayed(environ, remote, options.trusted_proxies, options.proxy_hops)
    reason = forwarded.PROXY_UNTRUSTED if "PROXY_PROTOCOL" in environ else FORWARDED_REFUSAL
    return Decision(False, forwarded.RULE, reason, remote, local_address(environ))


def _as_sent(environ: Mapping[str, Any]) -> Mapping[str, Any]:
    """The environ with Host and scheme as the client sent them.

    Werkzeug's ``ProxyFix``, run before the guard, rewrites them from
    ``X-Forwarded-Host``/``-Proto``, which a DNS-rebinding page (same-origin,
    so free to set headers) can send; it keeps the originals.
    """
    original = environ.get("werkzeug.proxy_fix.orig")
    if not isinstance(original, Mapping):
        return environ
    return {
        **environ,
        "HTTP_HOST": original.get("HTTP_HOST"),
        "wsgi.url_scheme": original.get("wsgi.url_scheme"),
    }


def _judge_direct(environ: Mapping[str, Any], remote: str | None, options: Options) -> Decision:
    """Step 2 for a client that is not loopback: compare it with the local
    address, or, on a unix socket (no address at all), ask the option."""
    local = local_address(environ)
    if local is not None:
        return judge_source(remote, local)
    unix = judge_unix_socket(environ, remote, options.unix_socket_is_local)
    return unix if unix is not None else judge_source(remote, None)


def _refuse_host(
    environ: Mapping[str, Any],
    host: str,
    options: Options,
    source: Decision,
    refusal: Decision,
) -> Decision:
    """Step 3 off the common path: an IP literal that is not loopback may be
    the local address (a system call to learn it); fill in the addresses.

    Behind a trusted proxy, the local address is the proxy's connection to
    the app, not the one the browser dialled: any of this host's addresses
    is then an acceptable literal (no DNS answer can make an IP point here).
    """
    local = source.local_addr
    if refusal.reason is hosts.IP_LOCAL_UNKNOWN:
        if local is None:
            local = local_address(environ)
        if local is not None:
            again = hosts.judge_host(host, options.allowed_hosts, local)
            if again is None:
                return source
            refusal = again
        if source.peer_addr is not None:
            parsed = hosts.parse_host(host)
            if parsed is not None and parsed.ip in host_addresses.current():
                return source
    return refusal._replace(
        remote_addr=source.remote_addr, local_addr=local, peer_addr=source.peer_addr
    )
