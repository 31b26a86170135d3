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
- :func:`with_memory`: the same (``Vary`` for a browser's request only),
  after the guard's memory lookups as it writes them (the client and the
  Host for curl's request, the browser's eight strings for a browser's)
  and logging's level check for the DEBUG line: the least a guard that
  answers from memory does. The guard adds the HTTP/1.1 check, the
  witness's lookup and the options it reads.
"""

from __future__ import annotations

import ast
import inspect

from flask_selfhost import middleware
from flask_selfhost.crosssite import VARY
from flask_selfhost.log import DEBUG, is_enabled_for
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


def with_absence_tests(app, vary: bool = False, memory: bool = False):  # type: ignore[no-untyped-def]
    """:func:`pass_through` after the absence tests; with ``vary``, the
    answer also gets ``Vary`` (:func:`with_vary`), in the same closure; with
    ``memory``, the memories are read first (:func:`with_memory`)."""
    # Generated, because a loop over the keys costs more per key than the
    # guard's written-out chain (measured: any(map(...)) and set operations).
    browser = " or ".join(f"{key!r} in environ" for key in tested_keys(ast.In))
    absent = " and ".join(f"{key!r} not in environ" for key in tested_keys(ast.NotIn))
    answer = "start_response_with(start_response, VARY)" if vary else "start_response"
    if memory:
        answer = "(start_response_with(start_response, VARY) if browser else start_response)"
    source = (
        "def make(app):\n"
        "    def tested(environ, start_response):\n"
        f"        browser = {browser}\n"
        + (MEMORY if memory else "")
        + f"        if {absent}:\n"
        + ("            is_enabled_for(DEBUG)\n" if memory else "")
        + f"            return app(environ, {answer})\n"
        "        return app(environ, start_response)\n"
        "    return tested\n"
    )
    namespace: dict = {
        "start_response_with": start_response_with,
        "VARY": VARY,
        "is_enabled_for": is_enabled_for,
        "DEBUG": DEBUG,
        "remotes": {},
        "hosts": {},
        "browsers": {},
    }
    exec(source, namespace)
    return namespace["make"](app)


def browser_key() -> str:
    """The source of the key the WSGI common path looks a browser's grant up
    by (the argument of ``browsers.get``), read from that path's source."""
    tree = ast.parse(inspect.getsource(middleware.guard_wsgi_app).lstrip())
    (key,) = (
        node.args[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "browsers"
    )
    return ast.unparse(key)


#: The guard's memory lookups, its browser's key read from its source; what
#: the first request misses is learnt, as the guard's full rules would grant it.
MEMORY = f"""\
        if browser:
            key = {browser_key()}
            if browsers.get(key) is None:
                browsers[key] = VARY
        elif hosts.get(environ["HTTP_HOST"]) is not str or not remotes.get(environ["REMOTE_ADDR"]):
            hosts[environ["HTTP_HOST"]], remotes[environ["REMOTE_ADDR"]] = str, True
"""


def with_vary(app):  # type: ignore[no-untyped-def]
    return with_absence_tests(app, vary=True)


def with_memory(app):  # type: ignore[no-untyped-def]
    return with_absence_tests(app, memory=True)
