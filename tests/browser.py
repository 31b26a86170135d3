"""Three real browser engines, one interface, and the servers around them.

- :func:`engine` starts Chromium (chromedriver), Firefox ESR (its own
  Marionette protocol: Debian has no geckodriver) or WebKitGTK
  (WebKitWebDriver, under a private Xvfb) with a fresh profile. Each is an
  :class:`Engine`: ``open(url)`` and ``run(script)``, nothing else, so that
  every case runs the same way in every engine.
- Every engine's proxy is :func:`refusing_proxy`, a loopback port that
  refuses all it gets; only :data:`NAMES` and the addresses a test passes
  bypass it, so no engine reaches any address but the test's own, and
  background networking is switched off besides.
- :func:`hosts_entries` puts the test's names in ``/etc/hosts`` (all three
  engines read it) and takes exactly those lines out again, whatever happens.
- :func:`demo_server` serves the demo (WSGI under gunicorn, ASGI under
  uvicorn), guarded or not, wrapped in a recorder that prints each tagged
  request's headers and the answer's status to the server's log: the app's
  side is the only trustworthy witness of what an engine sent.
- :func:`attacker_site` serves the pages a test writes, and 307 redirects.
- :class:`RebindingSwitch` is DNS rebinding at the TCP level.

Everything is a context manager that stops what it started.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from .servers import Server, free_port, request, server_process, stop_process_group, werkzeug_server

ATTACKER_NAME = "evil.test"  # the hostile site
TRUSTED_NAME = "trusted.test"  # the same server, under a name in trusted_origins
REBINDING_NAME = "rebind.test"  # the rebinding attacker's name
ALLOWED_NAME = "mybox.test"  # a name in allowed_hosts
NAMES = (ATTACKER_NAME, TRUSTED_NAME, REBINDING_NAME, ALLOWED_NAME)
HOSTS_FILE = Path("/etc/hosts")
HOSTS_MARK = "# selfhost browser tests"

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FIREFOX = "/usr/bin/firefox-esr"
WEBKITDRIVER = "/usr/bin/WebKitWebDriver"
MINIBROWSER = "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser"
#: What each engine needs, for a skip that says so.
NEEDS = {
    "chromium": (CHROMIUM, CHROMEDRIVER),
    "firefox": (FIREFOX,),
    "webkit": (WEBKITDRIVER, MINIBROWSER, "Xvfb"),
}
ENGINES = tuple(NEEDS)
#: Chromium's flags for a Playwright launch inside a namespace (the LAN test):
#: no background networking, and names other than the test's fail.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    f"--host-resolver-rules=MAP {ATTACKER_NAME} 127.0.0.1, MAP * ~NOTFOUND, "
    "EXCLUDE localhost, EXCLUDE 127.0.0.1",
]
STARTUP = 30.0


# ------------------------------------------------------------ confinement


@contextlib.contextmanager
def refusing_proxy() -> Iterator[tuple[int, list[bytes]]]:
    """A loopback proxy that answers 403 to everything; yields its port and the
    first line of each request (what an engine tried to reach elsewhere)."""
    seen: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with client:
                client.settimeout(2)
                with contextlib.suppress(OSError):
                    seen.append(client.recv(4096).split(b"\r\n", 1)[0])
                    client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], seen
    finally:
        listener.close()
        thread.join(5)


_entries = itertools.count()


def hosts_writable() -> bool:
    return os.access(HOSTS_FILE, os.W_OK)


@contextlib.contextmanager
def hosts_entries(address: str = "127.0.0.1") -> Iterator[None]:
    """:data:`NAMES` resolve to ``address`` through ``/etc/hosts`` while inside.
    Only our own marked line is added and removed (the file is shared with
    whatever else runs on this machine), also when the test fails."""
    line = f"{address} {' '.join(NAMES)} {HOSTS_MARK} {os.getpid()}-{next(_entries)}\n"

    def without_ours(text: str) -> str:
        return "".join(kept for kept in text.splitlines(True) if kept != line)

    original = HOSTS_FILE.read_text()
    HOSTS_FILE.write_text(without_ours(original).rstrip("\n") + "\n" + line)
    try:
        yield
    finally:
        HOSTS_FILE.write_text(without_ours(HOSTS_FILE.read_text()))


# ---------------------------------------------------------------- engines


class Engine:
    """One browser window: ``open`` a URL (returns once it has loaded) and
    ``run`` the body of an async JavaScript function (its ``return`` value
    comes back as JSON; ``args`` are its ``arguments``)."""

    name = ""

    def open(self, url: str) -> None:
        raise NotImplementedError

    def run(self, body: str, *args: object) -> object:
        reply = self._execute_async(ASYNC_WRAPPER % body, list(args))
        assert isinstance(reply, dict), reply
        if "error" in reply:
            raise RuntimeError(f"{self.name}: {reply['error']}")
        return reply.get("value")

    def _execute_async(self, script: str, args: list[object]) -> object:
        raise NotImplementedError


#: Runs a body as an async function; the WebDriver callback gets its value or error.
ASYNC_WRAPPER = """
const done = arguments[arguments.length - 1];
const args = Array.prototype.slice.call(arguments, 0, -1);
(async function () { %s }).apply(null, args).then(
  (value) => done({value: value === undefined ? null : value}),
  (error) => done({error: String(error)}));
"""


class WebDriver(Engine):
    """The W3C WebDriver protocol over HTTP (chromedriver, WebKitWebDriver)."""

    def __init__(self, name: str, port: int, capabilities: dict) -> None:
        self.name, self.base = name, f"http://127.0.0.1:{port}"
        self.session = self._call("POST", "/session", {"capabilities": capabilities})["sessionId"]
        self._call("POST", self._path("/timeouts"), {"script": 30_000, "pageLoad": 30_000})

    def _path(self, tail: str) -> str:
        return f"/session/{self.session}{tail}"

    def _call(self, method: str, path: str, body: object = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        sent = urllib.request.Request(self.base + path, data=data, method=method)
        sent.add_header("Content-Type", "application/json")
        # A direct connection: the test's own proxy settings must not apply.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(sent, timeout=60) as reply:
                return json.loads(reply.read())["value"]
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"{self.name}: {error.read()[:2000]!r}") from None

    def open(self, url: str) -> None:
        self._call("POST", self._path("/url"), {"url": url})

    def _execute_async(self, script: str, args: list[object]) -> object:
        return self._call("POST", self._path("/execute/async"), {"script": script, "args": args})

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call("DELETE", self._path(""))


class Marionette(Engine):
    """Firefox's own remote protocol: ``LENGTH:JSON`` frames over TCP, each
    command ``[0, id, name, params]``, each answer ``[1, id, error, result]``."""

    name = "firefox"

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.buffer, self.ids = b"", 0
        self._read()  # the greeting
        self._command("WebDriver:NewSession", {"capabilities": {"pageLoadStrategy": "normal"}})
        self._command("WebDriver:SetTimeouts", {"script": 30_000, "pageLoad": 30_000})

    def _read(self) -> object:
        while b":" not in self.buffer:
            self.buffer += self._recv()
        length, _, self.buffer = self.buffer.partition(b":")
        while len(self.buffer) < int(length):
            self.buffer += self._recv()
        frame, self.buffer = self.buffer[: int(length)], self.buffer[int(length) :]
        return json.loads(frame)

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("firefox closed the Marionette connection")
        return data

    def _command(self, name: str, params: dict) -> dict:
        self.ids += 1
        frame = json.dumps([0, self.ids, name, params]).encode()
        self.sock.sendall(str(len(frame)).encode() + b":" + frame)
        while True:
            kind, number, error, result = self._read()  # type: ignore[misc]
            if kind == 1 and number == self.ids:
                break
        if error:
            raise RuntimeError(f"firefox: {name}: {error}")
        return result if isinstance(result, dict) else {"value": result}

    def open(self, url: str) -> None:
        self._command("WebDriver:Navigate", {"url": url})

    def _execute_async(self, script: str, args: list[object]) -> object:
        return self._command("WebDriver:ExecuteAsyncScript", {"script": script, "args": args})[
            "value"
        ]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._command("WebDriver:DeleteSession", {})
        self.sock.close()


def missing(name: str) -> list[str]:
    """What engine ``name`` needs that this machine lacks."""
    return [need for need in NEEDS[name] if shutil.which(need) is None and not Path(need).exists()]


@contextlib.contextmanager
def _process(command: list[str], log: Path, env: dict[str, str] | None = None):
    """A process in its own group, its output in ``log``; killed (group and all) after."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop_process_group(process, timeout=5)


def _wait_for_port(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited {process.returncode}: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def _xvfb(directory: Path) -> Iterator[str]:
    """A private X display (WebKitGTK's MiniBrowser has no headless mode)."""
    read, write = os.pipe()
    with open(directory / "xvfb.log", "wb") as out:
        process = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write), "-nolisten", "tcp", "-screen", "0", "1280x900x24"],
            pass_fds=(write,),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    os.close(write)
    try:
        with os.fdopen(read) as pipe:
            number = pipe.readline().strip()
        if not number:
            raise RuntimeError(f"Xvfb: {(directory / 'xvfb.log').read_text()[-2000:]}")
        yield f":{number}"
    finally:
        stop_process_group(process, timeout=5)


@contextlib.contextmanager
def engine(name: str, proxy_port: int, bypass: tuple[str, ...] = ()) -> Iterator[Engine]:
    """Engine ``name`` with a fresh profile, its proxy at ``proxy_port`` and
    only :data:`NAMES`, loopback, 0.0.0.0 and ``bypass`` going direct."""
    direct = [*NAMES, "localhost", "127.0.0.1", "0.0.0.0", *bypass]
    directory = Path(tempfile.mkdtemp(prefix=f"selfhost-{name}-"))
    try:
        with contextlib.ExitStack() as stack:
            if name == "chromium":
                yield stack.enter_context(_chromium(directory, proxy_port, direct))
            elif name == "firefox":
                yield stack.enter_context(_firefox(directory, proxy_port, direct))
            else:
                yield stack.enter_context(_webkit(directory, proxy_port, direct))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def _chromium(directory: Path, proxy: int, direct: list[str]) -> Iterator[Engine]:
    args = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--disable-default-apps",
        f"--user-data-dir={directory / 'profile'}",
        f"--proxy-server=http://127.0.0.1:{proxy}",
        f"--proxy-bypass-list={';'.join(direct)}",
    ]
    port = free_port()
    log = directory / "chromedriver.log"
    with _process([CHROMEDRIVER, f"--port={port}"], log) as process:
        _wait_for_port(port, process, log)
        options = {"binary": CHROMIUM, "args": args}
        driver = WebDriver("chromium", port, {"alwaysMatch": {"goog:chromeOptions": options}})
        try:
            yield driver
        finally:
            driver.close()


FIREFOX_PREFS = {
    "marionette.port": 0,  # set per run
    "network.proxy.type": 1,
    "network.proxy.http": "127.0.0.1",
    "network.proxy.ssl": "127.0.0.1",
    "network.proxy.share_proxy_settings": True,
    "network.proxy.allow_hijacking_localhost": True,
    "network.proxy.no_proxies_on": "",  # set per run
    "app.update.enabled": False,
    "app.normandy.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "extensions.update.enabled": False,
    "services.settings.server": "http://127.0.0.1:1/",
}


@contextlib.contextmanager
def _firefox(directory: Path, proxy: int, direct: list[str]) -> Iterator[Engine]:
    port = free_port()
    prefs = {**FIREFOX_PREFS, "marionette.port": port, "network.proxy.http_port": proxy}
    prefs["network.proxy.ssl_port"] = proxy
    prefs["network.proxy.no_proxies_on"] = ", ".join(direct)
    profile = directory / "profile"
    profile.mkdir()
    (profile / "user.js").write_text(
        "".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in prefs.items())
    )
    command = [FIREFOX, "--headless", "--no-remote", "--marionette", "-remote-allow-system-access"]
    command += ["--profile", str(profile), "about:blank"]
    log = directory / "firefox.log"
    with _process(command, log, {"HOME": str(directory), "MOZ_CRASHREPORTER_DISABLE": "1"}) as p:
        _wait_for_port(port, p, log)
        driver = Marionette(port)
        try:
            yield driver
        finally:
            driver.close()


@contextlib.contextmanager
def _webkit(directory: Path, proxy: int, direct: list[str]) -> Iterator[Engine]:
    port = free_port()
    log = directory / "webkitdriver.log"
    env = {"HOME": str(directory), "XDG_CACHE_HOME": str(directory / "cache")}
    env["XDG_DATA_HOME"] = str(directory / "data")
    env["XDG_CONFIG_HOME"] = str(directory / "config")
    with _xvfb(directory) as display:
        env["DISPLAY"] = display
        with _process([WEBKITDRIVER, f"--port={port}"], log, env) as process:
            _wait_for_port(port, process, log)
            args = [
                f"--proxy=http://127.0.0.1:{proxy}",
                *(f"--ignore-host={name}" for name in direct),
            ]
            args.append("--enable-hyperlink-auditing=true")  # Safari's default: pings on
            options = {"binary": MINIBROWSER, "args": ["--automation", *args]}
            capabilities = {"alwaysMatch": {"webkitgtk:browserOptions": options}}
            driver = WebDriver("webkit", port, capabilities)
            try:
                yield driver
            finally:
                driver.close()


# ------------------------------------------------------------ the app side


def recorded_wsgi(guarded: bool = True):  # type: ignore[no-untyped-def]
    """The Flask demo (its options from ``DEMO_SELFHOST_*``), recorded."""
    from demo_app import create_app

    app = create_app(guarded)
    inner = app.wsgi_app

    def record(environ, start_response):  # type: ignore[no-untyped-def]
        def start(status, headers, *rest):  # type: ignore[no-untyped-def]
            _print_seen(environ.get("QUERY_STRING", ""), environ, int(status.split()[0]))
            return start_response(status, headers, *rest)

        return inner(
            environ, start if "case=" in environ.get("QUERY_STRING", "") else start_response
        )

    app.wsgi_app = record  # outside the guard (init_app wraps wsgi_app first)
    return app


def recorded_asgi(guarded: bool = True):  # type: ignore[no-untyped-def]
    """The FastAPI demo, guarded by the ASGI middleware with the options in
    ``SELFHOST_TEST_OPTIONS`` (JSON), recorded."""
    from demo_app.asgi import create_app
    from flask_selfhost.asgi import SelfHostASGIMiddleware

    app = create_app(guarded=False)
    if guarded:
        app = SelfHostASGIMiddleware(
            app, **json.loads(os.environ.get("SELFHOST_TEST_OPTIONS", "{}"))
        )

    async def record(scope, receive, send):  # type: ignore[no-untyped-def]
        query = scope.get("query_string", b"").decode("latin-1")
        if scope["type"] not in ("http", "websocket") or "case=" not in query:
            return await app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        environ = {"REQUEST_METHOD": scope.get("method", "GET"), "PATH_INFO": scope["path"]}
        environ.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()})
        printed = []

        async def watch(message):  # type: ignore[no-untyped-def]
            status = {"http.response.start": message.get("status"), "websocket.accept": 101}
            status["websocket.close"] = 403
            status["websocket.http.response.start"] = message.get("status")
            if not printed and message["type"] in status:
                printed.append(1)
                _print_seen(query, environ, status[message["type"]])
            await send(message)

        return await app(scope, receive, watch)

    return record


def _print_seen(query: str, environ: dict, status: int) -> None:
    headers = {
        key[5:].replace("_", "-").lower(): value
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    case = parse_qs(query).get("case", [""])[0]
    line = {"case": case, "method": environ["REQUEST_METHOD"], "status": status}
    line.update(path=environ.get("PATH_INFO", ""), headers=headers)
    # One write per record: gunicorn's threads share the log.
    os.write(2, ("\nSEEN " + json.dumps(line) + "\n").encode())


@dataclass
class DemoServer:
    """A recorded demo on a loopback port (one worker: one counter)."""

    port: int
    guarded: bool
    asgi: bool
    server: Server
    host: str = "127.0.0.1"

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    def actions(self) -> int:
        """The action counter, read as this host's own script would (no Origin)."""
        reply = request(self.host, self.port, "/api/status")
        assert reply.status == 200, reply
        return int(json.loads(reply.body)["actions"])

    def log(self) -> str:
        return self.server.log()

    def seen(self, mark: int = 0) -> list[dict]:
        """The tagged requests the app got since ``mark`` (a log length)."""
        lines = self.log()[mark:].splitlines()
        return [json.loads(line[5:]) for line in lines if line.startswith("SEEN ")]

    def wait_for(self, mark: int, cases: set[str], timeout: float = 6.0) -> dict[str, list[dict]]:
        """The requests of each case since ``mark``, once every case in ``cases``
        has one, or after ``timeout`` (an engine may never send some)."""
        deadline = time.monotonic() + timeout
        while True:
            by_case: dict[str, list[dict]] = {}
            for seen in self.seen(mark):
                by_case.setdefault(seen["case"], []).append(seen)
            if cases <= by_case.keys() or time.monotonic() > deadline:
                return by_case
            time.sleep(0.1)


@contextlib.contextmanager
def demo_server(
    guarded: bool, asgi: bool, log_dir: Path, options: dict | None = None
) -> Iterator[DemoServer]:
    """The recorded demo, WSGI under gunicorn or ASGI under uvicorn; ``options``
    are the guard's (``allowed_hosts``, ``trusted_origins``)."""
    port = free_port()
    flag = "guarded" if guarded else "unguarded"
    env = {f"DEMO_SELFHOST_{k.upper()}": json.dumps(v) for k, v in (options or {}).items()}
    env["SELFHOST_TEST_OPTIONS"] = json.dumps(options or {})
    if asgi:
        command = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port)]
        command += ["--no-proxy-headers", "--ws", "wsproto", "--no-access-log", "--factory"]
        command.append(f"tests.browser:{'recorded_asgi' if guarded else 'unguarded_asgi'}")
    else:
        command = [sys.executable, "-m", "gunicorn", "--no-control-socket", "--bind"]
        command += [f"127.0.0.1:{port}", "--workers", "1", "--threads", "8"]
        command.append(f"tests.browser:recorded_wsgi({guarded})")
    name = f"{'uvicorn' if asgi else 'gunicorn'}-{flag}"
    with server_process(command, ("127.0.0.1", port), log_dir, env=env, name=name) as server:
        yield DemoServer(port, guarded, asgi, server)


def unguarded_asgi():  # type: ignore[no-untyped-def]
    return recorded_asgi(guarded=False)


# --------------------------------------------------------- the attacker side


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
