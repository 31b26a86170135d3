"""Keep a Flask or any WSGI app answering only clients on its own host.

Fronts: :class:`SelfHostMiddleware` (any WSGI app), :class:`SelfHost` (Flask
extension), :func:`allow_remote` and :func:`local_only` (view decorators).
All of them call :func:`evaluate`, which turns a WSGI environ into a
:class:`Decision`. ASGI apps: :mod:`flask_selfhost.asgi` (Starlette,
FastAPI, any ASGI app) and :mod:`flask_selfhost.quart`; ``allow_remote``
marks an endpoint for every front.
"""

from .addresses import judge_source
from .connection import local_address
from .decision import Decision
from .extension import SelfHost, allow_remote, local_only
from .guard import evaluate
from .middleware import SelfHostMiddleware
from .options import Options

__all__ = [
    "Decision",
    "Options",
    "SelfHost",
    "SelfHostMiddleware",
    "allow_remote",
    "evaluate",
    "judge_source",
    "local_address",
    "local_only",
]
__version__ = "0.1.0"  # the only copy: setup.cfg reads it (attr:)
