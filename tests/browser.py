"""Three real browser engines, one interface, and their confinement.

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

The servers around them: the recorded demo apps in tests/recorded_demo.py,
the attacker's site and DNS rebinding in tests/attacker.py. The cases are
tests/engine_cases.py. Longer than most modules: three engines' start-up
and their two protocols (WebDriver, Marionette) belong together behind the
one interface.

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
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .servers import free_port, stop_process_group

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
