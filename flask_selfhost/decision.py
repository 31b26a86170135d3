"""
What a rule says about a request
================================

Every rule in this package, pure functions of strings, returns a
:class:`Decision`; :func:`flask_selfhost.environ.evaluate` returns the first
refusal or the source rule's grant. Decisions for common inputs are cached
and shared, so a decision is immutable.

A decision speaks twice. Its :attr:`~Decision.reason` is for the operator:
the log, ``flask-selfhost check`` and the doctor. It may name the server, a
proxy line or an option to change. The client is told only
:attr:`~Decision.public_reason`, one fixed text per rule, which names no
server, flag or setting: how the host is configured is no business of a
client that is refused (Go's CrossOriginProtection and Starlette's
TrustedHostMiddleware answer with a fixed text too).
"""

from __future__ import annotations

from typing import NamedTuple

from .facts import PeerOwner

#: Response headers as (name, value) pairs, in WSGI's form.
Headers = tuple[tuple[str, str], ...]

#: The rules' names, as decisions and log lines carry them.
SOURCE = "source"
FORWARDED = "forwarded"
HOST = "host"
CROSS_SITE = "cross-site"
PREFLIGHT = "preflight"
#: The kernel finds no socket of this host behind a client that claims to be
#: this host (see :mod:`flask_selfhost.kernel_witness`).
KERNEL = "kernel"
#: The peer's socket belongs to a user not in ``allowed_users``, or to
#: nobody the kernel can name (see :mod:`flask_selfhost.peer_users`).
USER = "user"

#: What a refused client is told, per rule: short, and the same whatever the
#: server or the options (the operator's reason goes to the log).
PUBLIC_REASONS = {
    SOURCE: "not from this host",
    FORWARDED: "relayed request not accepted",
    HOST: "Host not allowed",
    CROSS_SITE: "cross-site request",
    PREFLIGHT: "cross-site request",
    KERNEL: "not from this host",
    USER: "user not allowed",
}
#: For a rule without a text of its own.
PUBLIC_REASON = "not from this host"


class Decision(NamedTuple):
    """The outcome of :func:`~flask_selfhost.guard.judge`.

    ``rule`` names the rule that decided (``"source"``, ``"forwarded"``,
    ``"host"``, ``"cross-site"``, ``"preflight"``, ``"kernel"`` or ``"user"``);
    ``reason`` is a sentence for the operator (the log, the CLI, the
    doctor) that names no address but may name the server and the setting
    to change; the client sees :attr:`public_reason` only. ``remote_addr``
    and ``local_addr`` are the raw addresses the rule used (``local_addr`` is
    ``None`` when it was not needed or not known; a refusal always asks the
    connection for it, for the log). For a request relayed by a proxy,
    ``remote_addr`` is the client address judged and ``peer_addr`` the
    immediate peer (the proxy's address as the server reported it, or
    ``"unix"``); otherwise ``peer_addr`` is ``None``.
    """

    allowed: bool
    rule: str
    reason: str
    remote_addr: str | None
    local_addr: str | None
    peer_addr: str | None = None
    #: Response headers the front adds, whatever answers the request: ``Vary``
    #: for answers that depend on ``Origin``/``Sec-Fetch-Site``, CORS headers
    #: for a trusted origin (see :mod:`flask_selfhost.crosssite`), and for a
    #: relayed grant a ``Cache-Control`` that overrides the app's, so that no
    #: shared cache stores the answer (see :mod:`flask_selfhost.caching`).
    #: Usually empty.
    headers: Headers = ()
    #: Who holds the client's end of the connection, where the kernel was
    #: asked (:func:`flask_selfhost.kernel_witness.client_socket_of`): the
    #: immediate peer's, a proxy's for a relayed request. Logged as
    #: ``peer_uid=``; ``None`` when not asked or not known.
    peer_owner: PeerOwner | None = None

    @property
    def public_reason(self) -> str:
        """What the client is told: a fixed text per rule (:data:`PUBLIC_REASONS`)."""
        return PUBLIC_REASONS.get(self.rule, PUBLIC_REASON)

    @property
    def answers_preflight(self) -> bool:
        """A granted CORS preflight: the front answers it itself (204 with
        :attr:`headers`) and does not call the app."""
        return self.allowed and self.rule == PREFLIGHT

    def __bool__(self) -> bool:
        # A tuple is always truthy: ``if evaluate(...)`` would let everyone in.
        raise TypeError("test decision.allowed, not the decision itself")
