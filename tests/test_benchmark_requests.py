"""The benchmarks' requests are what a server hands an app: new strings for
every request (docs/speed.md), and their floors answer as the guard does."""

from __future__ import annotations

import asyncio
import io

import pytest

from .servers import ROOT


@pytest.fixture(autouse=True)
def benchmarks_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))


def test_each_asgi_request_carries_new_header_objects():
    """uvicorn parses every request anew: equal names and values, new
    objects (whose hashes are not computed yet); the connection's ``client``
    and ``server`` are the same objects on every request."""
    from asgi_apps import serve

    seen = []

    async def app(scope, receive, send):
        seen.append(scope)

    asyncio.run(serve(app, 2, browser=True))
    first, second = seen
    assert first["headers"] == second["headers"]
    pairs = zip(first["headers"], second["headers"], strict=True)
    for (name, value), (name_again, value_again) in pairs:
        assert type(name_again) is bytes and type(value_again) is bytes
        assert name is not name_again and value is not value_again
    assert first["method"] == second["method"] and first["method"] is not second["method"]
    assert first["client"] is second["client"] and first["server"] is second["server"]


def test_each_wsgi_request_carries_new_header_strings():
    from as_parsed import parsed_environ
    from browser_request import environ_headers
    from overhead import gunicorn_like_environ

    environ = {**gunicorn_like_environ("127.0.0.1", None), **environ_headers()}
    parsed = parsed_environ(environ)
    assert parsed == environ
    same_key = {key: key for key in environ}
    for key in ("HTTP_HOST", "HTTP_ORIGIN", "HTTP_SEC_FETCH_SITE", "HTTP_COOKIE"):
        assert next(k for k in parsed if k == key) is not same_key[key]
    for key in ("HTTP_HOST", "HTTP_ORIGIN", "HTTP_COOKIE", "REQUEST_METHOD", "SERVER_PROTOCOL"):
        assert parsed[key] is not environ[key], key
    for key in ("REMOTE_ADDR", "wsgi.url_scheme", "gunicorn.socket"):
        assert parsed[key] is environ[key], key


@pytest.mark.parametrize("browser", [False, True], ids=["curl", "browser"])
def test_the_asgi_memory_floor_answers_from_memory_with_vary_for_a_browser(browser):
    """The floor under a remembered grant learns the first request, answers
    the next from its memory, and adds ``Vary`` to a browser's answer only."""
    from asgi_apps import Remembering, serve

    answers = []

    async def app(scope, receive, send):
        start = {"type": "http.response.start", "status": 200, "headers": []}
        await send(start)
        answers.append(start["headers"])

    floor = Remembering(app)
    asyncio.run(serve(floor, 3, browser))
    assert len(floor.browsers if browser else floor.remotes) == 1
    assert [any(name == b"vary" for name, _ in headers) for headers in answers] == [browser] * 3


@pytest.mark.parametrize("browser", [False, True], ids=["curl", "browser"])
def test_the_wsgi_memory_floor_adds_vary_to_a_browsers_answer_only(browser):
    import wsgi_floors
    from as_parsed import parsed_environ
    from browser_request import environ_headers
    from overhead import gunicorn_like_environ

    answers = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b""]

    environ = gunicorn_like_environ("127.0.0.1", None)
    if browser:
        environ = {key: value for key, value in environ.items() if not key.startswith("HTTP_")}
        environ.update(environ_headers())
    floor = wsgi_floors.with_memory(app)
    for _ in range(3):
        request = dict(parsed_environ(environ), **{"wsgi.input": io.BytesIO()})
        floor(request, lambda status, headers, exc_info=None: answers.append(headers))
    assert all(("Vary" in dict(headers)) is browser for headers in answers)
    assert len(answers) == 3
