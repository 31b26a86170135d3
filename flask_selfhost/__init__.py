"""Keep a Flask or any WSGI app answering only clients on its own host.

Fronts: :class:`SelfHostMiddleware` (any WSGI app), :class:`SelfHost` (Flask
extension), :func:`allow_remote` and :func:`local_only` (view decorators).
All of them call :func:`evaluate`, which turns a WSGI environ into a
:class:`Decision`. ASGI apps: :mod:`flask_selfhost.asgi` (Starlette,
FastAPI, any ASGI app) and :mod:`flask_selfhost.quart`; ``allow_remote``
marks an endpoint for every front. ``SelfHost`` and ``local_only`` need
Flask and import it when first asked for; the rest of the package needs no
framework.
"""

from typing import TYPE_CHECKING, Any

from .addresses import judge_source
from .connection import local_address
from .decision import Decision
from .environ import evaluate
from .exempt import allow_remote
from .middleware import SelfHostMiddleware
from .options import Options

if TYPE_CHECKING:
    from .extension import SelfHost, local_only

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

#: The Flask front's names, imported with Flask when first asked for, so that
#: a WSGI or ASGI app guarded without Flask never loads it.
_FLASK_FRONT_NAMES = frozenset({"SelfHost", "local_only"})


def __getattr__(name: str) -> Any:
    if name in _FLASK_FRONT_NAMES:
        from . import extension

        value = getattr(extension, name)
        globals()[name] = value  # looked up here from now on
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
