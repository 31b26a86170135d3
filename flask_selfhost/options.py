"""
The guard's options, checked when the guard is built
====================================================

A typo or a wrong type raises at start-up with the list of known options,
never on the first request. Every field is hashable, so that an
:class:`Options` can key a cache.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from difflib import get_close_matches
from http import HTTPStatus
from typing import Any

from .accepted import AcceptedRequests
from .crosssite import normalise_trusted_origins
from .decision import Decision
from .hosts import normalise_allowed_hosts
from .peer_users import AllowedUsers
from .proxies import NO_PROXIES, TrustedProxies

#: The statuses a refusal may have: the 4xx and 5xx that Werkzeug has an
#: error class for (``werkzeug.exceptions.default_exceptions``, 3.x), since the
#: Flask and Quart fronts raise that class. Written out so that a guard
#: without Flask needs no Werkzeug; tests/test_imports.py holds the two equal.
REFUSE_STATUSES = frozenset(
    {
        *(400, 401, 403, 404, 405, 406, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417),
        *(418, 421, 422, 423, 424, 428, 429, 431, 451),
        *(500, 501, 502, 503, 504, 505),
    }
)


@dataclass(frozen=True)
class Options:
    """The guard's settings, validated once when the guard is built.

    :param refuse_status: HTTP status of a refusal, 403 by default. Use 404
        to hide that the endpoint exists; any 4xx or 5xx that Werkzeug has
        an error class for (:data:`REFUSE_STATUSES`).
    :param refuse_body: Plain-text body of a refusal. By default a 403 says
        which rule refused, in a fixed text that names no address, server or
        setting (:attr:`Decision.public_reason`; the full reason goes to the
        log), and any other status says only its name, so that a 404 looks
        like any other 404.
    :param trusted_proxies: Reverse proxies allowed to name the client:
        addresses or networks (``"127.0.0.1"``, ``"::1"``, ``"10.0.0.0/8"``),
        the word ``"unix"`` for a unix-socket peer, and ``"user:NAME"`` or
        ``"user:UID"`` for a peer on this host whose socket that user owns
        (``"user:www-data"`` for nginx's workers: another user's process
        that writes the same header is not believed); a list, or one
        comma-separated string. A network wider than /8 (IPv4, and
        ``::ffff:a.b.c.d`` networks at their IPv4 width) or /32 (IPv6) is
        refused, and so is an address with a port. Empty by default: a
        request with forwarding headers is refused. Only when the immediate
        peer is trusted is the client named in ``Forwarded`` /
        ``X-Forwarded-For`` read and judged (see :mod:`flask_selfhost.forwarded`).
    :param proxy_hops: How many proxies stand in front of the app, 1 by
        default (nginx alone). At most this many entries, from the right, are
        read from a forwarding header, so a client's own entries further left
        never count even if ``trusted_proxies`` is broader than it should be.
    :param proxy_drops_underscore_headers: Say that the proxy in front drops
        header names with underscores (``X_Forwarded_For``), as nginx does
        by default. False by default: on a server that gives such a name the
        environ key of ``X-Forwarded-For`` (hypercorn's, uvicorn's and
        granian's WSGI modes, cheroot, uWSGI), a client could write part of
        the header the guard reads, so a request relayed with
        ``X-Forwarded-For`` is refused there. Other servers drop such names
        themselves and ignore this option.
    :param unix_socket_is_local: Treat a unix-socket connection without
        forwarding headers as a client on this host (a local tool talking to
        the socket). False by default: such a request is refused, because a
        proxy that adds no headers looks the same.
    :param allow_cleartext_http2: Judge cleartext HTTP/2 (h2c: HTTP/2
        without TLS) like any request. False by default: it is refused,
        because no browser speaks it and a proxy that relayed an
        ``Upgrade: h2c`` (or piped a request) becomes a tunnel whose streams
        all come from the proxy's address, with headers the proxy's client
        wrote. Set it only for a server that no proxy reaches (a local tool
        that speaks h2c on purpose). gunicorn's HTTP/2 stays refused: its
        client may be a PROXY protocol relay.
    :param allowed_hosts: Host header names to accept besides ``localhost``,
        ``*.localhost`` and this host's IP literals: exact names
        (``"mybox"``), ``".example.internal"`` for a domain and its
        subdomains, IP addresses; a list, or one comma-separated string.
        ``["*"]`` accepts any well-formed Host (turns off the DNS-rebinding
        defence). See :mod:`flask_selfhost.hosts`.
    :param trusted_origins: Origins (``"http://localhost:3000"``) whose pages
        may send any request here, read responses (CORS) and have their
        preflights granted; exact, ``scheme://host[:port]``.
    :param check_cross_site: False turns off the cross-site rule (Fetch
        Metadata, Origin and preflights; see :mod:`flask_selfhost.crosssite`):
        any page the user visits can then make the browser act here.
    :param check_client_socket: Ask the kernel for the client's own socket
        when a TCP client claims to be this host (loopback or one of this
        host's addresses), and refuse it when no socket of this host holds
        that connection: address translation on this host (an ``SNAT`` to
        its own address, the DNAT trap with an ``SNAT`` to ``127.0.0.1``)
        cannot then pass another host off as this one (see
        :mod:`flask_selfhost.kernel_witness`). True by default. Set it to
        False only where this host's own clients reach the app through
        translation that hides their socket: an OUTPUT ``REDIRECT`` or
        ``DNAT`` on this host (port 80 redirected to 8000), or rootless
        container networking (pasta, slirp4netns) that relays clients into
        the app's network namespace; their requests are refused otherwise.
        Where netlink cannot be used at all (not Linux, ``AF_NETLINK``
        blocked), the log says so once and the guard goes on without it.
    :param require_client_socket: Refuse every client that claims to be
        this host unless the kernel vouches for it: where netlink cannot be
        used, or the server does not say which addresses and ports a
        connection joins (granian on a wildcard address, bjoern, mod_wsgi).
        False by default.
    :param refuse_forwarders: Refuse a TCP client on this host whose socket
        is held by a known forwarder
        (:data:`flask_selfhost.peer_process.FORWARDERS`: sshd, ssh, socat,
        docker-proxy, tailscaled, ngrok, cloudflared and others, and nginx
        or haproxy unless they relay through ``trusted_proxies``), even
        when every other rule grants it: such a process relays clients
        from elsewhere, who then look local. False by default. It needs the
        kernel witness (``check_client_socket``) for the client's socket,
        and costs a scan of ``/proc`` per new connection (milliseconds;
        bounded, see :mod:`flask_selfhost.peer_process`). It sees only
        processes the server's user may read (its own, or every one as
        root), in its PID namespace, under a known name (the
        threat model lists what it cannot see). It fails closed: where the
        client's socket cannot be named (a server that gives no ports, such
        as granian on a wildcard address, bjoern, mod_wsgi or a test
        client; netlink blocked), or the scans' time budget is spent, a
        client on this host is refused.
    :param allowed_users: Users of this host whose sockets may connect:
        user names, uids, and ``"self"`` (the effective uid of the process
        that serves the request); a list, or one comma-separated string.
        The owner of the peer's socket (the kernel's answer:
        :mod:`flask_selfhost.peer_users`) must be one of them, whatever the
        other rules grant; with ``unix_socket_is_local``, a unix-socket
        client must be one of them too. Where the owner cannot be known
        (granian, bjoern, mod_wsgi; a unix socket under uvicorn or
        hypercorn), every request is refused. Behind a proxy on this host,
        the proxy's socket is the peer's: name its user. Names are looked
        up when the guard is built; an unknown one raises. Do not name root
        where other tools started as root run: their sockets read as
        root's. ``None`` (the default) turns the rule off.
    """

    refuse_status: int = 403
    refuse_body: str | None = None
    trusted_proxies: TrustedProxies = NO_PROXIES
    proxy_hops: int = 1
    proxy_drops_underscore_headers: bool = False
    unix_socket_is_local: bool = False
    allow_cleartext_http2: bool = False
    allowed_hosts: frozenset[str] = frozenset()
    trusted_origins: frozenset[str] = frozenset()
    check_cross_site: bool = True
    check_client_socket: bool = True
    require_client_socket: bool = False
    refuse_forwarders: bool = False
    allowed_users: AllowedUsers | None = None
    #: Grants remembered for the common request (see :mod:`flask_selfhost.accepted`).
    accepted: AcceptedRequests = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        status = self.refuse_status
        if type(status) is not int or status not in REFUSE_STATUSES:
            known = ", ".join(str(code) for code in sorted(REFUSE_STATUSES))
            # A string from an environment variable or a config file is the
            # usual mistake: say what type is wanted before which values.
            kind = "" if type(status) is int else f" (a {type(status).__name__}, not an int)"
            raise ValueError(
                f"flask_selfhost: refuse_status must be an int, an HTTP error status "
                f"({known}), got {status!r}{kind}"
            )
        if self.refuse_body is not None and not isinstance(self.refuse_body, str):
            raise TypeError(
                f"flask_selfhost: refuse_body must be a string or None, got {self.refuse_body!r}"
            )
        for option in fields(self):  # every switch: a bool default makes it one
            if isinstance(option.default, bool):
                value = getattr(self, option.name)
                if type(value) is not bool:
                    raise TypeError(
                        f"flask_selfhost: {option.name} must be True or False, got {value!r}"
                    )
        self._check_proxy_options()
        self._check_browser_options()
        self._check_allowed_users()
        # A proxy trusted by its user is told from a plain client only by
        # asking who owns the peer's socket, which the remembered grants do not.
        remembering = not self.trusted_proxies.users
        # Nor is the process that holds a client's socket a fact of its address.
        remembering = remembering and not self.refuse_forwarders
        object.__setattr__(
            self, "accepted", AcceptedRequests(self.allowed_hosts, remembering=remembering)
        )

    def _check_allowed_users(self) -> None:
        users: Any = self.allowed_users
        if users is None or isinstance(users, AllowedUsers):
            return
        if not isinstance(users, (str, list, tuple, set, frozenset)):
            raise TypeError(
                "flask_selfhost: allowed_users must be a list of user names, uids and 'self', "
                f"or a comma-separated string, got {users!r}"
            )
        object.__setattr__(self, "allowed_users", AllowedUsers(users))

    def _check_proxy_options(self) -> None:
        trusted: Any = self.trusted_proxies
        if trusted is None:
            trusted = ()
        if not isinstance(trusted, TrustedProxies):
            if not isinstance(trusted, (str, list, tuple, set, frozenset)):
                raise TypeError(
                    "flask_selfhost: trusted_proxies must be a list of addresses, networks, "
                    f"'unix' and 'user:NAME', or a comma-separated string, got {trusted!r}"
                )
            # Normalised once, so that the field is hashable and cheap to test.
            object.__setattr__(self, "trusted_proxies", TrustedProxies(trusted))
        hops = self.proxy_hops
        if type(hops) is not int or hops < 1:
            raise ValueError(f"flask_selfhost: proxy_hops must be an int >= 1, got {hops!r}")

    def _check_browser_options(self) -> None:
        # Normalised once, to frozensets: hashable (a cache key) with a cached hash.
        for name, normalise in (
            ("allowed_hosts", normalise_allowed_hosts),
            ("trusted_origins", normalise_trusted_origins),
        ):
            value: Any = getattr(self, name)
            if isinstance(value, str):
                value = [entry for entry in value.replace(",", " ").split()]
            elif not isinstance(value, (list, tuple, set, frozenset)):
                raise TypeError(f"flask_selfhost: {name} must be a list of strings, got {value!r}")
            object.__setattr__(self, name, normalise(value))
        if self.require_client_socket and not self.check_client_socket:
            raise ValueError(
                "flask_selfhost: require_client_socket needs check_client_socket "
                "(the check it requires)"
            )
        if self.refuse_forwarders and not self.check_client_socket:
            raise ValueError(
                "flask_selfhost: refuse_forwarders needs check_client_socket "
                "(the kernel's answer names the client's socket)"
            )

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> Options:
        """Build from keyword options, naming any unknown key."""
        known = sorted(option.name for option in fields(cls) if option.init)
        unknown = sorted(set(options) - set(known))
        if unknown:
            named = []
            for name in unknown:
                close = get_close_matches(name, known, n=1)
                named.append(f"{name} (did you mean {close[0]}?)" if close else name)
            raise TypeError(
                f"flask_selfhost: unknown option(s) {', '.join(named)}; "
                f"known options are {', '.join(known)}"
            )
        return cls(**options)

    def body_for(self, decision: Decision) -> str:
        """The plain-text body of a refusal."""
        if self.refuse_body is not None:
            return self.refuse_body
        name = HTTPStatus(self.refuse_status).phrase
        if self.refuse_status == 403:
            return (
                f"{name}: only clients on this server's own host may use it "
                f"({decision.public_reason}).\n"
            )
        return f"{name}\n"
