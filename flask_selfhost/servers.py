"""
Which server built the request, and what it does to headers
===========================================================

Servers differ in what they do to a request before the app sees it, and
some of those differences open a way in (a folded header name, a deleted
forwarding header). Each such fact is written here once, measured on the
real server (``tests/test_quirks.py``, ``tests/test_server_matrix.py``),
and every rule and front that needs it reads it from here. Where each
server keeps the accepted connection is :mod:`flask_selfhost.connection`.

A server is named only from what a server writes and no client can: keys
without ``HTTP_``, ``SERVER_SOFTWARE``, value types.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

WAITRESS, CHEROOT, GRANIAN, BJOERN, UWSGI = "waitress", "cheroot", "granian", "bjoern", "uwsgi"
HYPERCORN, UVICORN = "hypercorn", "uvicorn"

#: The servers that name themselves at the start of ``SERVER_SOFTWARE``.
NAMED_BY_SOFTWARE = (WAITRESS, CHEROOT, GRANIAN)

#: ``SERVER_SOFTWARE`` values seen, with the server each names. A server
#: writes the same value into every environ it builds, so after its first
#: request naming it is one dict lookup; the bound keeps odd environs (a
#: test's, a middleware's) from growing it.
_software_names: dict[str, str] = {}
SOFTWARE_NAMES_LIMIT = 32


def server_name(environ: Mapping[str, Any]) -> str:
    """The server that built ``environ``, named as this module's constants
    do, or ``""`` for the others. Read only from what a server writes and no
    client can: keys without ``HTTP_``, ``SERVER_SOFTWARE``, value types.

    hypercorn and uvicorn serve WSGI through the same kind of adapter, with
    no ``SERVER_SOFTWARE`` and an int ``SERVER_PORT`` (a WSGI server writes
    a string); which of the two is loaded only names it.
    """
    if "waitress.client_disconnected" in environ:  # whatever --ident says
        return WAITRESS
    if type(environ.get("uwsgi.version")) is bytes:
        return UWSGI
    software = environ.get("SERVER_SOFTWARE")
    if type(software) is str and software:
        name = _software_names.get(software)
        if name is None:
            lowered = software.lower()
            name = next((n for n in NAMED_BY_SOFTWARE if lowered.startswith(n)), "")
            if len(_software_names) < SOFTWARE_NAMES_LIMIT:
                _software_names[software] = name
        return name
    if type(environ.get("SERVER_PORT")) is int:
        return HYPERCORN if HYPERCORN in sys.modules else UVICORN
    if "_bjoern" in sys.modules:  # bjoern names itself nowhere else
        return BJOERN
    return ""


#: Servers that give ``X_Forwarded_For``, ``X-Forwarded_For`` and
#: ``X-Forwarded-For`` the one environ key ``HTTP_X_FORWARDED_FOR`` (joined,
#: or the last one kept), so that behind a proxy that passes names with
#: underscores the client writes part of what the app reads as the proxy's
#: header. Measured (``tests/test_quirks.py``); gunicorn, waitress, Werkzeug
#: and bjoern drop such names, and the ASGI fronts read exact names.
FOLDS_UNDERSCORE_NAMES = frozenset({HYPERCORN, UVICORN, GRANIAN, CHEROOT, UWSGI})

#: What waitress deletes from the environ unless its own ``trusted_proxy``
#: names the peer (``clear_untrusted_proxy_headers``, on by default), as its
#: parser keys them (``waitress/proxy_headers.py``).
WAITRESS_DELETES = (
    "X_FORWARDED_FOR",
    "X_FORWARDED_HOST",
    "X_FORWARDED_PROTO",
    "X_FORWARDED_PORT",
    "X_FORWARDED_BY",
    "FORWARDED",
)
