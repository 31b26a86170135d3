"""The attacker's side of the browser tests: its site, and DNS rebinding.

- :func:`attacker_site` serves the pages a test writes at
  ``http://evil.test:PORT``, and 307 redirects.
- :class:`RebindingSwitch` is DNS rebinding at the TCP level: the rebinding
  name first reaches the attacker's server, then the app.

Both are context managers that stop what they started.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qs, quote

from .browser import ATTACKER_NAME, REBINDING_NAME
from .servers import werkzeug_server


@dataclass
class AttackerSite:
    """Pages served at ``http://evil.test:PORT/NAME``; ``pages`` maps paths to
    HTML. ``/307?to=URL`` answers any method with a 307 to ``URL``."""

    port: int
    pages: dict[str, str] = field(default_factory=dict)

    def url(self, path: str, name: str = ATTACKER_NAME) -> str:
        return f"http://{name}:{self.port}{path}"

    def redirect(self, url: str) -> str:
        return self.url("/307?to=" + quote(url, safe=""))


@contextlib.contextmanager
def attacker_site() -> Iterator[AttackerSite]:
    site = AttackerSite(0)

    def serve(environ, start_response):  # type: ignore[no-untyped-def]
        path = environ.get("PATH_INFO", "")
        if path == "/307":
            target = parse_qs(environ.get("QUERY_STRING", ""))["to"][0]
            start_response("307 Temporary Redirect", [("Location", target)])
            return [b""]
        page = site.pages.get(path)
        if page is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found"]
        start_response("200 OK", [("Content-Type", "text/html"), ("Cache-Control", "no-store")])
        return [page.encode()]

    with werkzeug_server(serve) as port:
        site.port = port
        yield site


class RebindingSwitch:
    """DNS rebinding, at the TCP level: listens on ``127.0.0.1:port`` (where
    ``rebind.test`` resolves) and splices each new connection to ``target``,
    a loopback port. The test loads the attacker's page while ``target`` is
    the attacker's server, then calls :meth:`rebind` to point it at the app:
    from then on the page's requests reach the app, as when the attacker's
    DNS answer changes to 127.0.0.1. The app sees a loopback client and
    ``Host: rebind.test:PORT``, exactly what the browser itself would send.
    """

    def __init__(self, target: int, address: str = "127.0.0.1", port: int = 0) -> None:
        self.target = target
        self.listener = socket.create_server((address, port))
        self.port = self.listener.getsockname()[1]
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://{REBINDING_NAME}:{self.port}{path}"

    def rebind(self, target: int) -> None:
        """Point the name at ``target``; connections to the old one are closed,
        so that the browser cannot keep talking to the attacker's server."""
        with self.lock:
            self.target = target
            for sock in list(self.open):
                self._close(sock)

    def close(self) -> None:
        self._close(self.listener)
        self.thread.join(5)
        with self.lock:
            for sock in list(self.open):
                self._close(sock)

    def _close(self, sock: socket.socket) -> None:
        self.open.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            with self.lock:
                try:
                    upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                except OSError:
                    client.close()
                    continue
                upstream.settimeout(None)
                self.open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        with self.lock:
            self._close(source)
            self._close(sink)


@contextlib.contextmanager
def rebinding_switch(
    target: int, address: str = "127.0.0.1", port: int = 0
) -> Iterator[RebindingSwitch]:
    """A :class:`RebindingSwitch` on ``address:port`` (any free port by default)."""
    switch = RebindingSwitch(target, address, port)
    try:
        yield switch
    finally:
        switch.close()
