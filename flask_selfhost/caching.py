"""
Relayed answers that no shared cache may keep
=============================================

A request that a trusted proxy relays is granted for the client the proxy
names. A shared cache in front of the app (Varnish, nginx's
``proxy_cache``, a CDN) is such a proxy, and it answers later requests for
the same URL from what it stored, without asking the app: the page granted
to a user on this host would be replayed to any host that asks. So the
answer to every relayed grant tells shared caches not to store it, whatever
the app said about caching. An app's own ``max-age=60``, or an ``Expires``
alone, is enough for a shared cache to store an answer, so adding
``Cache-Control: private`` only where the app set nothing would not do.

:func:`make_private` rewrites the response headers:

- ``Cache-Control`` becomes one field that starts with ``private``, keeps
  the app's other directives (a browser's own cache may still follow its
  ``max-age``, and ``no-store`` stays), and drops ``public``, ``s-maxage``
  and a ``private`` that names fields (which leaves the rest of the answer
  shareable). A value that cannot be read as directives becomes
  ``private, no-store``: nothing of it may be assumed.
- Fields that some caches obey instead of ``Cache-Control`` are removed,
  so that those caches read ``Cache-Control`` too: ``Surrogate-Control``
  (Varnish's built-in VCL ignores ``Cache-Control`` when it is present),
  ``CDN-Cache-Control`` and every other ``*-Cache-Control`` (RFC 9213),
  Akamai's ``Edge-Control``, and nginx's ``X-Accel-Expires`` (sent before
  ``Cache-Control``, it makes nginx cache an answer that says ``private``).
- ``Expires`` stays: a cache that implements ``Cache-Control`` stores no
  ``private`` answer whatever its ``Expires``, and a browser may use it.
- ``Vary`` stays: it tells a cache which stored answer fits which request,
  and cannot stop a cache from storing one.

Answers to requests that no proxy relayed are left as the app made them: a
cache that adds no forwarding header makes every client look local, which
no header of the answer can undo (see the threat model), and the common
path stays free of a response wrapper.
"""

from __future__ import annotations

import re

from .decision import Headers

#: What a relayed grant carries in :attr:`Decision.headers`. A front's merge
#: (:func:`flask_selfhost.respond.merge_headers`) reads a ``Cache-Control``
#: there as "make the answer private" and calls :func:`make_private`; a front
#: that writes the headers as they are (a CORS preflight's answer) writes this.
PRIVATE: Headers = (("Cache-Control", "private"),)

#: What replaces a ``Cache-Control`` value that cannot be read as directives.
UNREADABLE = "private, no-store"

#: Directives dropped from the app's (lowercase names): those that let a shared
#: cache store the answer, and the app's own ``private``, which may name fields
#: and leave the rest shareable (an unqualified ``private`` comes first instead).
SHARING = frozenset({"public", "s-maxage", "private"})

#: Fields that some shared caches read instead of ``Cache-Control``
#: (lowercase names), besides any name that ends in ``-cache-control``.
TARGETED = frozenset({"surrogate-control", "edge-control", "x-accel-expires"})

# RFC 9110: directive = token [ "=" ( token / quoted-string ) ]. One element
# of the comma-separated list, with its comma; an empty element counts for
# nothing. Group 1 is the directive, group 2 its name.
_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_ELEMENT = re.compile(
    rf"[ \t]*(?:(({_TCHARS})(?:[ \t]*=[ \t]*(?:{_TCHARS}|{_QUOTED}))?)[ \t]*)?(?:,|\Z)"
)


def private_cache_control(value: str) -> str:
    """``value`` (an app's ``Cache-Control``, its fields joined by commas)
    with ``private`` first and no directive that lets a shared cache store
    the answer; :data:`UNREADABLE` when it is not a list of directives."""
    kept = ["private"]
    position = 0
    while position < len(value):
        element = _ELEMENT.match(value, position)
        if element is None:
            return UNREADABLE
        name = element.group(2)
        if name is not None and name.lower() not in SHARING:
            kept.append(element.group(1))
        position = element.end()
    return ", ".join(kept)


def is_targeted(name: str) -> bool:
    """Whether a response field named ``name`` is one that some cache obeys
    instead of ``Cache-Control`` (see the module's doc)."""
    lowered = name.lower()
    return lowered in TARGETED or (
        lowered.endswith("-cache-control") and lowered != "cache-control"
    )


def make_private(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``headers`` (an answer's, as WSGI pairs) that no shared cache stores:
    one ``Cache-Control`` made private where the first one was (else at the
    end), and no field that a cache would obey instead. Applying it twice
    changes nothing more."""
    values = [value for name, value in headers if name.lower() == "cache-control"]
    field: tuple[str, str] | None = ("Cache-Control", private_cache_control(", ".join(values)))
    result: list[tuple[str, str]] = []
    for name, value in headers:
        lowered = name.lower()
        if lowered == "cache-control":
            if field is not None:
                result.append(field)
                field = None
        elif not is_targeted(lowered):
            result.append((name, value))
    if field is not None:
        result.append(field)
    return result
