"""Headless Chromium through Playwright, for the page-level browser tests
(Chromium only: the engine matrix is in tests/browser.py), and the servers
around it.

- :func:`chromium` starts Debian's ``/usr/bin/chromium`` through Playwright
  (never a downloaded build) with a fresh profile, and a resolver that maps
  the attacker's name ``evil.test`` to 127.0.0.1 and every other name to
  "not found", so that the browser can reach loopback only.
- :func:`demo_server` serves the demo app (guarded or not) under gunicorn on a
  free loopback port, with its access log, and reads its action counter.
- :func:`attacker_site` serves pages that a test writes, on another port:
  ``http://evil.test:PORT/...`` in the browser.
- :class:`RebindingSwitch` stands for DNS rebinding: the name
  ``rebind.test`` resolves to 127.0.0.2, where the switch forwards each new
  connection first to the attacker's server and, once flipped, to the app's
  port: the attacker's page, loaded from ``http://rebind.test:PORT``, then
  reaches the app under its own origin, as after a real rebinding.

Everything here is a context manager that stops what it started.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .browser import RebindingSwitch
from .browser import rebinding_switch as browser_rebinding_switch
from .servers import Server, free_port, gunicorn, request, server_process, werkzeug_server

CHROMIUM = "/usr/bin/chromium"
ATTACKER_NAME = "evil.test"
REBINDING_NAME = "rebind.test"
REBINDING_ADDRESS = "127.0.0.2"
#: A name of this host that is neither localhost nor an address, as a LAN
#: name or an allowed_hosts entry is: the browser finds it at 127.0.0.1 but
#: treats its plain-http URLs as not potentially trustworthy.
OWN_NAME = "mybox.test"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    # evil.test is the attacker's site (on loopback, another port); rebind.test
    # the rebinding attacker's name (see RebindingSwitch); mybox.test a name
    # of this host. Any other name fails, so that nothing leaves this host.
    f"--host-resolver-rules=MAP {ATTACKER_NAME} 127.0.0.1, MAP {OWN_NAME} 127.0.0.1, "
    f"MAP {REBINDING_NAME} {REBINDING_ADDRESS}, MAP * ~NOTFOUND, "
    "EXCLUDE localhost, EXCLUDE 127.0.0.1",
]


@contextlib.contextmanager
def chromium() -> Iterator[object]:
    """A Playwright browser context on Debian's Chromium, with a fresh profile."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="selfhost-chromium-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_ARGS,
            )
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@dataclass
class DemoServer:
    """The demo app (WSGI under gunicorn, or ASGI under uvicorn) on a
    loopback port: one worker, so that one counter counts."""

    port: int
    guarded: bool
    server: Server

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def actions(self) -> int:
        """The action counter, read as this host's own script would (no Origin)."""
        reply = request("127.0.0.1", self.port, "/api/status")
        assert reply.status == 200, reply
        return int(json.loads(reply.body)["actions"])

    def log(self) -> str:
        return self.server.log()

    def access(self, method: str, path: str) -> list[int]:
        """Statuses the access log shows for ``METHOD PATH`` (any Host), in order."""
        pattern = re.compile(rf'"{method} {re.escape(path)} HTTP/1\.1" (\d{{3}})')
        return [int(status) for status in pattern.findall(self.log())]


@contextlib.contextmanager
def demo_server(
    guarded: bool, log_dir: Path, env: dict[str, str] | None = None
) -> Iterator[DemoServer]:
    """``env`` may set the guard's options, e.g. ``DEMO_SELFHOST_TRUSTED_ORIGINS``."""
    port = free_port()
    target = "demo_app:app" if guarded else "demo_app:unguarded_app"
    args = [
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--threads",
        "8",
        "--access-logfile",
        "-",
        target,
    ]
    with gunicorn(args, wait_on=("127.0.0.1", port), log_dir=log_dir, env=env) as server:
        yield DemoServer(port, guarded, server)


@contextlib.contextmanager
def asgi_demo_server(guarded: bool, log_dir: Path) -> Iterator[DemoServer]:
    """The ASGI demo (``demo_app.asgi``) under uvicorn on a loopback port,
    with uvicorn's own proxy-header rewriting off (the guard judges them)."""
    port = free_port()
    target = "demo_app.asgi:app" if guarded else "demo_app.asgi:unguarded_app"
    command = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--no-proxy-headers", "--ws", "wsproto", target]
    with server_process(command, ("127.0.0.1", port), log_dir, name="uvicorn") as server:
        yield DemoServer(port, guarded, server)


@dataclass
class AttackerSite:
    """Pages served at ``http://evil.test:PORT/NAME``; ``pages`` maps paths to HTML."""

    port: int
    pages: dict[str, str] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://{ATTACKER_NAME}:{self.port}{path}"


@contextlib.contextmanager
def attacker_site() -> Iterator[AttackerSite]:
    site = AttackerSite(0)

    def serve(environ, start_response):  # type: ignore[no-untyped-def]
        page = site.pages.get(environ.get("PATH_INFO", ""))
        if page is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found"]
        start_response("200 OK", [("Content-Type", "text/html"), ("Cache-Control", "no-store")])
        return [page.encode()]

    with werkzeug_server(serve) as port:
        site.port = port
        yield site


def rebinding_switch(port: int, target: int) -> contextlib.AbstractContextManager[RebindingSwitch]:
    """The rebinding name on ``REBINDING_ADDRESS:port`` (the app's own port, so
    that the rebound page is same-origin with it), first spliced to ``target``."""
    return browser_rebinding_switch(target, REBINDING_ADDRESS, port)
