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


class Decision(NamedTuple):
    """The outcome of :func:`evaluate`.

    ``rule`` names the rule that decided (``"source"`` or ``"forwarded"``);
    ``reason`` is a short sentence that names no address, so it may be shown
    to the client; ``remote_addr`` and ``local_addr`` are the raw addresses
    the rule used (``local_addr`` is ``None`` when it was not needed or not
    known).
    """

    allowed: bool
    rule: str
    reason: str
    remote_addr: str | None
    local_addr: str | None

    def __bool__(self) -> bool:
        # A tuple is always truthy: ``if evaluate(...)`` would let everyone in.
        raise TypeError("test decision.allowed, not the decision itself")
