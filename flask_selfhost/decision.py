"""
What a rule says about a request
================================

Every rule in this package, pure functions of strings, returns a
:class:`Decision`; :func:`flask_selfhost.guard.evaluate` returns the first
refusal or the source rule's grant. Decisions for common inputs are cached
and shared, so a decision is immutable.
"""

from __future__ import annotations

from typing import NamedTuple

#: Response headers as (name, value) pairs, in WSGI's form.
Headers = tuple[tuple[str, str], ...]


class Decision(NamedTuple):
    """The outcome of :func:`evaluate`.

    ``rule`` names the rule that decided (``"source"``, ``"forwarded"``,
    ``"host"``, ``"cross-site"`` or ``"preflight"``);
    ``reason`` is a short sentence that names no address, so it may be shown
    to the client; ``remote_addr`` and ``local_addr`` are the raw addresses
    the rule used (``local_addr`` is ``None`` when it was not needed or not
    known; a refusal always asks the connection for it, for the log). For a
    request relayed by a proxy, ``remote_addr`` is the client address judged
    and ``peer_addr`` the immediate peer (the proxy's address as the server
    reported it, or ``"unix"``); otherwise ``peer_addr`` is ``None``.
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

    @property
    def answers_preflight(self) -> bool:
        """A granted CORS preflight: the front answers it itself (204 with
        :attr:`headers`) and does not call the app."""
        return self.allowed and self.rule == "preflight"

    def __bool__(self) -> bool:
        # A tuple is always truthy: ``if evaluate(...)`` would let everyone in.
        raise TypeError("test decision.allowed, not the decision itself")
