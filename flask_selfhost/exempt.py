"""
``allow_remote``: one mark for every front
==========================================

A guarded app may have a view that must answer anyone (a public health
check). :func:`allow_remote` marks that view; each front, when its guard
refuses a request, asks the app's own router which view the request would
run and serves it only if that view carries the mark. The same decorator
works for Flask, Quart and Starlette/FastAPI endpoints, so it lives here,
with no framework imported.

.. code-block:: python

    from flask_selfhost import allow_remote

    @app.get("/healthz")
    @allow_remote
    def healthz(): ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

#: The attribute the mark sets on a view function (or endpoint class).
ALLOW_REMOTE = "_selfhost_allow_remote"

View = TypeVar("View", bound=Callable[..., Any])


def allow_remote(view: View) -> View:
    """Exempt one view from the guard: it answers clients on any host.

    Only that view: a refused request that the app would route anywhere else
    (another view, a 404, a 405, a redirect) is still refused.
    """
    setattr(view, ALLOW_REMOTE, True)
    return view


def is_exempt(view: object) -> bool:
    """True for a view marked by :func:`allow_remote` (exactly ``True``: a
    mock or a proxy that answers every attribute is not exempt)."""
    if isinstance(view, type):
        # An endpoint class (Starlette's HTTPEndpoint): its own mark only, so
        # that a subclass of an exempt class is not exempt unawares.
        return vars(view).get(ALLOW_REMOTE) is True
    return getattr(view, ALLOW_REMOTE, False) is True
