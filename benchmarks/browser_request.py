"""The browser-like request of the benchmarks: what Chrome 131 sends for a
same-origin ``fetch()`` from a page of the app at ``http://127.0.0.1:8000``
(``Origin``, ``Sec-Fetch-Site: same-origin``, ``-Mode: cors``,
``-Dest: empty``, its client hints, a cookie: fifteen headers), written once
and given to each interface in its own spelling.

Chrome sends ``Origin`` with a same-origin fetch whose method is not GET or
HEAD (the browser test pages' ``own-ip-fetch`` step, see docs/browsers.md);
the hello apps here answer GET, so the request is a GET with the headers
of that POST, whose rules read the same strings.
"""

from __future__ import annotations

#: (name, value) as Chrome orders them on the wire.
CHROME_SAME_ORIGIN_FETCH: tuple[tuple[str, str], ...] = (
    ("Host", "127.0.0.1:8000"),
    ("Connection", "keep-alive"),
    ("sec-ch-ua-platform", '"Linux"'),
    (
        "User-Agent",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36",
    ),
    ("sec-ch-ua", '"Google Chrome";v="131", "Chromium";v="131", "Not_A Brand";v="24"'),
    ("sec-ch-ua-mobile", "?0"),
    ("Accept", "*/*"),
    ("Origin", "http://127.0.0.1:8000"),
    ("Sec-Fetch-Site", "same-origin"),
    ("Sec-Fetch-Mode", "cors"),
    ("Sec-Fetch-Dest", "empty"),
    ("Referer", "http://127.0.0.1:8000/"),
    ("Accept-Encoding", "gzip, deflate, br, zstd"),
    ("Accept-Language", "en-US,en;q=0.9"),
    ("Cookie", "session=eyJ1c2VyIjoiYWRtaW4ifQ.Z1MxYg.c2lnbmF0dXJl"),
)


def environ_headers() -> dict[str, str]:
    """The headers as a WSGI server puts them in the environ."""
    return {
        "HTTP_" + name.upper().replace("-", "_"): value for name, value in CHROME_SAME_ORIGIN_FETCH
    }


def asgi_headers() -> list[tuple[bytes, bytes]]:
    """The headers as an ASGI server puts them in the scope."""
    return [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in CHROME_SAME_ORIGIN_FETCH
    ]
