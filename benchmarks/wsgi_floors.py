"""What any WSGI guard's common path costs at least, for instructions.py.

- :func:`pass_through`: a closure that only calls the app, the floor under
  any WSGI middleware.
- :func:`with_absence_tests`: the same, after the ``"KEY" in environ`` and
  ``"KEY" not in environ`` tests of SelfHostMiddleware's common path,
  written out as it writes them, run as it runs them (for a browser's
  request too, which the guard tests for forwarding headers as well). The
  keys are read from that path's source, so the two cannot drift apart.
  Each test is there for a rule (a browser's header, a forwarding header,
  a PROXY mark); what the guard adds above this row is the memory lookups,
  the HTTP/1.1 check, the witness's lookup and the DEBUG check.
- :func:`with_vary`: the same in one closure, and the ``Vary`` header added
  to the answer as a browser's grant adds it
  (:func:`flask_selfhost.respond.start_response_with`): the floor under a
  browser's request, which the guard answers with ``Vary``.
"""

from __future__ import annotations

import ast
import inspect

from flask_selfhost import middleware
from flask_selfhost.crosssite import VARY
from flask_selfhost.respond import start_response_with


def tested_keys(test: type[ast.cmpop]) -> list[str]:
    """The environ keys that the WSGI common path tests with ``test``
    (``ast.In`` or ``ast.NotIn``)."""
    tree = ast.parse(inspect.getsource(middleware.guard_wsgi_app).lstrip())
    return [
        node.left.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Compare)
        and isinstance(node.ops[0], test)
        and isinstance(node.left, ast.Constant)
    ]


def absent_keys() -> list[str]:
    """Every environ key whose presence the WSGI common path tests."""
    return tested_keys(ast.In) + tested_keys(ast.NotIn)


def pass_through(app):  # type: ignore[no-untyped-def]
    def passed(environ, start_response):  # type: ignore[no-untyped-def]
        return app(environ, start_response)

    return passed


def with_absence_tests(app, vary: bool = False):  # type: ignore[no-untyped-def]
    """:func:`pass_through` after the absence tests; with ``vary``, the
    answer also gets ``Vary`` (:func:`with_vary`), in the same closure."""
    # Generated, because a loop over the keys costs more per key than the
    # guard's written-out chain (measured: any(map(...)) and set operations).
    browser = " or ".join(f"{key!r} in environ" for key in tested_keys(ast.In))
    absent = " and ".join(f"{key!r} not in environ" for key in tested_keys(ast.NotIn))
    answer = "start_response_with(start_response, VARY)" if vary else "start_response"
    source = (
        "def make(app):\n"
        "    def tested(environ, start_response):\n"
        f"        browser = {browser}\n"
        f"        if {absent}:\n"
        f"            return app(environ, {answer})\n"
        "        return app(environ, start_response)\n"
        "    return tested\n"
    )
    namespace: dict = {"start_response_with": start_response_with, "VARY": VARY}
    exec(source, namespace)
    return namespace["make"](app)


def with_vary(app):  # type: ignore[no-untyped-def]
    return with_absence_tests(app, vary=True)
