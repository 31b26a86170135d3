"""A request's strings as a server hands them over: new objects for every
request, as its parser makes them.

A benchmark that passes the same ``str`` and ``bytes`` objects with every
request measures a guard that hashes them (a set or dict lookup by header
name or value) too cheaply: each object computes its hash once and keeps
it, so from the second request on the hash is free. A server's parser makes
new objects for every request, whose hashes are computed again. These
helpers copy what a server parses per request (header names and values, the
method, the protocol version, the path) into new objects, and leave what it
keeps per connection or per process (the client and server addresses, the
scheme, WSGI's constant keys) as they are.
"""

from __future__ import annotations

from typing import Any

#: Environ keys whose values gunicorn parses anew for every request.
PARSED_KEYS = frozenset(
    {"REQUEST_METHOD", "QUERY_STRING", "RAW_URI", "SERVER_PROTOCOL", "PATH_INFO"}
)


def new_str(text: str) -> str:
    """An equal string that is a new object, its hash not yet computed."""
    return (text + " ")[:-1]


def new_bytes(data: bytes) -> bytes:
    """Equal bytes that are a new object, their hash not yet computed."""
    return (data + b" ")[:-1]


def parsed_environ(environ: dict[str, Any]) -> dict[str, Any]:
    """``environ`` as gunicorn builds it for a new request: the ``HTTP_*``
    keys (``"HTTP_" + name``) and their values, and the parsed values of
    :data:`PARSED_KEYS`, new objects."""
    return {
        (new_str(key) if key.startswith("HTTP_") else key): (
            new_str(value) if key.startswith("HTTP_") or key in PARSED_KEYS else value
        )
        for key, value in environ.items()
    }


def parsed_scope(scope: dict[str, Any]) -> dict[str, Any]:
    """``scope`` as uvicorn builds it for a new request on a kept-alive
    connection: new header names (lowered) and values, method, HTTP version
    and path; the same ``client``, ``server`` and ``scheme``, which it
    keeps per connection."""
    return dict(
        scope,
        headers=[(new_bytes(name), new_bytes(value)) for name, value in scope["headers"]],
        method=new_str(scope["method"]),
        http_version=new_str(scope["http_version"]),
        path=new_str(scope["path"]),
        state={},
    )
