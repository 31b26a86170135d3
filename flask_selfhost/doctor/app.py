"""The app: load ``module:name`` (app factories included) and say whether
flask_selfhost guards it."""

from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import os
import sys
from collections.abc import Mapping
from typing import Any

from ..asgi import asgi_guard_options
from ..middleware import guard_options
from ..options import Options
from ..views import EXTENSION_NAME
from .report import NOTE, OK, Finding

#: Looked up, in order, when the spec names a module only (as ``flask`` does).
DEFAULT_NAMES = ("app", "application", "create_app", "make_app")


def guard_of(app: Any, depth: int = 6) -> Options | None:
    """The options of the flask_selfhost guard of ``app``, else ``None``.

    Found: the ``SelfHost`` extension of a Flask or Quart app
    (``app.extensions["selfhost"]``); a WSGI callable that a flask_selfhost
    front built (``SelfHostMiddleware``, also as a Flask app's ``wsgi_app``);
    an ASGI app guarded by ``SelfHostASGIMiddleware`` (Starlette's
    ``add_middleware`` and a Quart app's ``asgi_app`` included). Other
    middleware is looked through: its ``.wsgi_app``, ``.asgi_app`` and
    ``.app`` attributes are followed ``depth`` levels.
    """
    seen: set[int] = set()
    layer = [app]
    for _ in range(depth + 1):
        following = []
        for candidate in layer:
            if candidate is None or id(candidate) in seen:
                continue
            seen.add(id(candidate))
            options = guard_options(candidate) or asgi_guard_options(candidate)
            if options is not None:
                return options
            extensions = getattr(candidate, "extensions", None)
            if isinstance(extensions, Mapping) and EXTENSION_NAME in extensions:
                state_options = getattr(extensions[EXTENSION_NAME], "options", None)
                return state_options if isinstance(state_options, Options) else Options()
            for name in ("wsgi_app", "asgi_app", "app"):
                with contextlib.suppress(Exception):  # a property that raises: not followed
                    following.append(getattr(candidate, name, None))
        layer = following
    return None


def is_guarded(app: Any, depth: int = 6) -> bool:
    """True when ``app`` is guarded by flask_selfhost (see :func:`guard_of`)."""
    return guard_of(app, depth) is not None


def app_findings(spec: str, app: Any) -> list[Finding]:
    if is_guarded(app):
        return [Finding(OK, "app", f"{spec} is guarded by flask_selfhost.", {"app": spec})]
    return [
        Finding(
            NOTE,
            "app",
            f"{spec} is NOT guarded by flask_selfhost: only its binding keeps other hosts "
            "out, so the listener, NAT and forwarder findings decide whether it is exposed.",
            {"app": spec},
        )
    ]


def parse_spec(spec: str) -> tuple[str, str | None, tuple[Any, ...], dict[str, Any] | None]:
    """``module:name``, ``module:obj.attr``, ``module:factory(args)`` ->
    ``(module, name, args, kwargs)``; ``kwargs`` is ``None`` when not a call.

    Arguments must be Python literals, as ``flask --app`` requires.
    """
    module, _, expression = spec.partition(":")
    if not expression:
        return module, None, (), None
    try:
        node = ast.parse(expression.strip(), mode="eval").body
    except SyntaxError:
        raise ValueError(f"{spec!r}: not module:name or module:factory(...)") from None
    if isinstance(node, ast.Call):
        args = tuple(ast.literal_eval(arg) for arg in node.args)
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg}
        return module, ast.unparse(node.func), args, kwargs
    if not isinstance(node, (ast.Name, ast.Attribute)):
        raise ValueError(f"{spec!r}: not module:name or module:factory(...)")
    return module, ast.unparse(node), (), None


def is_factory(candidate: Any) -> bool:
    """A plain function callable with no argument: an app factory.

    A WSGI app needs two arguments and an ASGI app three, so neither is
    mistaken for a factory.
    """
    if not inspect.isfunction(candidate):
        return False
    try:
        inspect.signature(candidate).bind()
    except TypeError:
        return False
    return True


def load_app(spec: str) -> Any:
    """Import ``module:name`` and return the app it names.

    ``name`` may be dotted, or a factory call ``create_app()`` /
    ``create_app("production")``; a factory named without parentheses
    (``module:create_app``) is called with no argument. A spec with no name
    looks for ``app``, ``application``, then ``create_app``/``make_app``.
    """
    module_name, name, args, kwargs = parse_spec(spec)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as gunicorn and flask do
    module = importlib.import_module(module_name)
    if name is None:
        found = [candidate for candidate in DEFAULT_NAMES if hasattr(module, candidate)]
        if not found:
            raise LookupError(f"{module_name} has none of {', '.join(DEFAULT_NAMES)}")
        name = found[0]
    target: Any = module
    for part in name.split("."):
        target = getattr(target, part)
    if kwargs is not None:
        return target(*args, **kwargs)
    return target() if is_factory(target) else target
