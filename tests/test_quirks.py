"""Servers that hide from the app that a request was relayed, for real.

The other host is a network namespace (:mod:`tests.netns`); the proxies
and servers are the real ones, started inside the server namespace.

1. **Folded header names.** Behind a proxy that passes header names with
   underscores (nginx with ``underscores_in_headers on``, Apache's
   ``ProxyPass`` as it comes), the client sends ``X_Forwarded_For:
   127.0.0.1``. Some servers give it the environ key of ``X-Forwarded-For``
   (joined after the proxy's line, or instead of it): the client then
   writes the entry the guard reads. Every server is asked here: those that
   keep the spellings apart serve this host behind the proxy, those that
   fold them refuse relayed requests unless ``proxy_drops_underscore_headers``
   says that the proxy drops such names, and no spelling lets the other
   host in anywhere.
2. **waitress deletes forwarding headers** from the environ (not from its
   parsed request) unless its own ``trusted_proxy`` is set: nginx in front
   of waitress, with default options everywhere, must not pass the other
   host as a loopback client, on the fast path, kept alive, pipelined, and
   with ``channel_request_lookahead``.

Refusals are checked by status and by the server's log (the reason that
names the fix), never by the body.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from .conftest import require_commands
from .netns import (
    http_get,
    ns_command,
    raw_exchange,
    require_netns,
    server_in,
    two_hosts,
    wait_for_port_in,
)
from .nginx import FORWARDED, X_FORWARDED_FOR, nginx, require_nginx
from .server_matrix import UWSGI
from .servers import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.root]

APP_PORT, PROXY_PORT = 8000, 8200
PY = sys.executable
MODULE = "quirk_app"


@pytest.fixture
def hosts():
    require_netns()
    with two_hosts() as made:
        yield made


def request(*lines: str, host: str = "localhost", path: str = "/admin") -> bytes:
    extra = "".join(f"{line}\r\n" for line in lines)
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


#: Every spelling and order of a folded name that the other host tries; each
#: names loopback, which a proxy on this host would let in.
FOLDED = [
    request("X_Forwarded_For: 127.0.0.1"),
    request("X-Forwarded_For: 127.0.0.1"),
    request("x_forwarded-for: 127.0.0.1"),
    request("X-FORWARDED_FOR: 127.0.0.1"),
    request("x_forwarded_for: 127.0.0.1", "x_forwarded_for: 127.0.0.1"),
    request("X-Forwarded-For: 192.0.2.7", "X_Forwarded_For: 127.0.0.1"),
    request("X_Forwarded_For: 127.0.0.1", "X-Forwarded-For: 127.0.0.1"),
    request("Forwarded: for=127.0.0.1", "X_Forwarded_For: 127.0.0.1"),
    request("X-Real_IP: 127.0.0.1", "X_Forwarded_For: 127.0.0.1"),
    request("X_Forwarded_For: ::1"),
]


def write_app(tmp_path: Path, options: str, asgi: bool = False) -> str:
    """The guarded app, as ``quirk_app:app``."""
    if asgi:
        source = f"""
        from flask_selfhost.asgi import SelfHostASGIMiddleware
        from tests.apps import asgi_whoami
        app = SelfHostASGIMiddleware(asgi_whoami, {options})
        """
    else:
        source = f"""
        from tests.nginx import guarded_app
        app = guarded_app({options})
        """
    (tmp_path / f"{MODULE}.py").write_text(textwrap.dedent(source))
    return f"{MODULE}:app"


def run(script: str) -> list[str]:
    return [PY, "-c", f"from {MODULE} import app; {script}"]


#: Each server, serving ``quirk_app:app`` on 127.0.0.1:APP_PORT.
SERVERS = {
    "gunicorn": [PY, "-m", "gunicorn", "--no-control-socket", "-w", "1",
                 "-b", f"127.0.0.1:{APP_PORT}", f"{MODULE}:app"],
    "waitress": [PY, "-m", "waitress", f"--listen=127.0.0.1:{APP_PORT}",
                 "--no-clear-untrusted-proxy-headers", f"{MODULE}:app"],
    "werkzeug": run("from werkzeug.serving import run_simple; "
                    f"run_simple('127.0.0.1', {APP_PORT}, app)"),
    "bjoern": run(f"import bjoern; bjoern.run(app, '127.0.0.1', {APP_PORT})"),
    "cheroot": run("from cheroot import wsgi; "
                   f"wsgi.Server(('127.0.0.1', {APP_PORT}), app).safe_start()"),
    "uwsgi": [UWSGI, "--master", "--processes", "1", "--need-app", "--http-socket",
              f"127.0.0.1:{APP_PORT}", "--module", f"{MODULE}:app"],
    "hypercorn": [PY, "-m", "hypercorn", "-b", f"127.0.0.1:{APP_PORT}", f"{MODULE}:app"],
    "uvicorn": [PY, "-m", "uvicorn", "--interface", "wsgi", "--port", str(APP_PORT),
                f"{MODULE}:app"],
    "uvicorn-no-proxy-headers": [PY, "-m", "uvicorn", "--interface", "wsgi", "--no-proxy-headers",
                                 "--port", str(APP_PORT), f"{MODULE}:app"],
    "granian": [PY, "-m", "granian", "--interface", "wsgi", "--host", "127.0.0.1",
                "--port", str(APP_PORT), f"{MODULE}:app"],
    "hypercorn-asgi": [PY, "-m", "hypercorn", "-b", f"127.0.0.1:{APP_PORT}", f"{MODULE}:app"],
}  # fmt: skip
#: The servers that give every spelling one environ key (measured here).
FOLDING = {"cheroot", "uwsgi", "hypercorn", "uvicorn", "uvicorn-no-proxy-headers", "granian"}
#: The Python package each server needs.
PACKAGES = {"uvicorn-no-proxy-headers": "uvicorn", "hypercorn-asgi": "hypercorn"}


def require_server(name: str) -> None:
    if name == "uwsgi":
        if not Path(UWSGI).exists():
            pytest.skip("needs uWSGI (the test extra builds it)")
    elif name != "werkzeug":
        package = PACKAGES.get(name, name)
        pytest.importorskip(package, reason=f"needs {package} (the test extra installs it)")


def nginx_in(hosts, tmp_path: Path, location: str, server: str = ""):
    ns = hosts.server_ns
    return nginx(
        [("127.0.0.1", PROXY_PORT), (hosts.server_ip4, PROXY_PORT)],
        f"http://127.0.0.1:{APP_PORT}",
        location,
        tmp_path / "nginx",
        prefix=ns_command(ns),
        wait=lambda process: wait_for_port_in(ns, "127.0.0.1", PROXY_PORT, process=process),
        server=server,
    )


def attack(hosts, port: int, payloads) -> None:
    """The other host sends every payload, kept alive and pipelined: all refused."""
    for pipelined in (False, True):
        statuses, text = raw_exchange(
            hosts.client_ns, hosts.server_ip4, port, payloads, pipelined=pipelined, pause=0.5
        )
        assert statuses == [403] * len(payloads), (pipelined, text)


def this_host(hosts) -> tuple[int | None, str]:
    """A client on this host, through the proxy, on the host's own address."""
    return http_get(hosts.server_ns, hosts.server_ip4, PROXY_PORT, "/admin")


# 1. Folded header names ---------------------------------------------------------

UNDERSCORES_ON = "underscores_in_headers on;"


@pytest.mark.parametrize("name", list(SERVERS))
def test_folded_names_never_let_the_other_host_in(hosts, tmp_path, name):
    """nginx with ``underscores_in_headers on``, trusted_proxies set: no
    spelling gets through; this host is served where the server keeps the
    spellings apart, and refused, with the proxy line in the log, where it
    folds them."""
    require_nginx()
    require_server(name)
    write_app(tmp_path, "trusted_proxies='127.0.0.1'", asgi=name == "hypercorn-asgi")
    with (
        server_in(hosts.server_ns, SERVERS[name], tmp_path, name, APP_PORT),
        nginx_in(hosts, tmp_path, X_FORWARDED_FOR, server=UNDERSCORES_ON),
    ):
        attack(hosts, PROXY_PORT, FOLDED)
        # This host, by its own address: nginx names a client that no ASGI
        # server's own proxy-header rewrite could have put in the scope.
        status, body = this_host(hosts)
        log = (tmp_path / f"{name}.log").read_text(errors="replace")
        if name in FOLDING:
            assert status == 403, body
            assert "underscores_in_headers off" in log and "RequestHeader unset" in log, log
            assert "proxy_drops_underscore_headers=True" in log, log
        else:
            assert status == 200, (body, log)


# Not uvicorn as it comes: its own --proxy-headers rewrite makes nginx's
# client the peer, which no trusted_proxies names (docs/asgi.md: use
# --no-proxy-headers).
@pytest.mark.parametrize("name", sorted(FOLDING - {"uvicorn"}))
def test_a_proxy_that_drops_underscore_names_serves_this_host(hosts, tmp_path, name):
    """nginx as it comes (``underscores_in_headers off``) and the option
    that says so: this host is served again, and no spelling gets through."""
    require_nginx()
    require_server(name)
    write_app(tmp_path, "trusted_proxies='127.0.0.1', proxy_drops_underscore_headers=True")
    with (
        server_in(hosts.server_ns, SERVERS[name], tmp_path, name, APP_PORT),
        nginx_in(hosts, tmp_path, X_FORWARDED_FOR),
    ):
        attack(hosts, PROXY_PORT, FOLDED)
        status, body = this_host(hosts)
        assert status == 200, body


def test_forwarded_alone_is_read_on_a_folding_server(hosts, tmp_path):
    """``Forwarded`` has no ``-`` to fold: a proxy that names its client
    there alone is judged as usual under hypercorn's WSGI mode, with default
    options, and a client's ``X_Forwarded_For`` beside it is refused."""
    require_nginx()
    require_server("hypercorn")
    write_app(tmp_path, "trusted_proxies='127.0.0.1'")
    with (
        server_in(hosts.server_ns, SERVERS["hypercorn"], tmp_path, "hypercorn", APP_PORT),
        nginx_in(hosts, tmp_path, FORWARDED, server=UNDERSCORES_ON),
    ):
        attack(hosts, PROXY_PORT, FOLDED)
        status, body = this_host(hosts)
        assert status == 200, body
        status, body = http_get(
            hosts.server_ns, hosts.server_ip4, PROXY_PORT, "/admin", {"X_Forwarded_For": "::1"}
        )
        assert status == 403, body


APACHE = """\
ServerRoot "{dir}"
PidFile {dir}/httpd.pid
DefaultRuntimeDir {dir}
Mutex file:{dir} default
Listen 0.0.0.0:{port}
ServerName localhost
User www-data
Group www-data
ErrorLog {dir}/error.log
LogLevel info
LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
LoadModule headers_module /usr/lib/apache2/modules/mod_headers.so
LoadModule proxy_module /usr/lib/apache2/modules/mod_proxy.so
LoadModule proxy_http_module /usr/lib/apache2/modules/mod_proxy_http.so
{lines}
ProxyPass / http://127.0.0.1:{upstream}/
"""

#: The lines the log names for Apache: every spelling of the name with an
#: underscore (mod_headers compares names without regard to case).
APACHE_DROPS = "\n".join(
    f"RequestHeader unset {spelling}"
    for spelling in ("X_Forwarded_For", "X-Forwarded_For", "X_Forwarded-For")
)


@pytest.mark.parametrize("drops", [False, True], ids=["as-it-comes", "unset-lines"])
def test_apache_proxypass_in_front_of_a_folding_server(hosts, tmp_path, drops):
    """Apache's ProxyPass passes underscore names and merges its own entry
    into the client's first X-Forwarded-For line, so the client's
    ``X_Forwarded_For`` comes last. Refused by default, with the lines in the
    log; with the lines the log names (and the option), this host is served
    and the other host still refused."""
    require_commands("/usr/sbin/apache2")
    if not Path("/usr/lib/apache2/modules/mod_proxy_http.so").exists():
        pytest.skip("needs Apache's mod_proxy_http (Debian's apache2)")
    require_server("hypercorn")
    options = "trusted_proxies='127.0.0.1'"
    write_app(tmp_path, options + (", proxy_drops_underscore_headers=True" if drops else ""))
    directory = Path(tempfile.mkdtemp(prefix="selfhost-apache-"))
    try:
        directory.chmod(0o755)
        config = directory / "httpd.conf"
        lines = APACHE_DROPS if drops else ""
        config.write_text(
            APACHE.format(dir=directory, port=PROXY_PORT, upstream=APP_PORT, lines=lines)
        )
        apache = ["/usr/sbin/apache2", "-f", str(config), "-DFOREGROUND"]
        with (
            server_in(hosts.server_ns, SERVERS["hypercorn"], tmp_path, "hypercorn", APP_PORT),
            server_in(hosts.server_ns, apache, tmp_path, "apache", PROXY_PORT),
        ):
            attack(hosts, PROXY_PORT, FOLDED)
            status, body = http_get(hosts.server_ns, "127.0.0.1", PROXY_PORT, "/admin")
            log = (tmp_path / "hypercorn.log").read_text(errors="replace")
            if drops:
                assert status == 200, (body, log)
                # The lines tested here are the ones the log names.
                from flask_selfhost.hidden_relays import DROP_UNDERSCORE_NAMES

                assert all(line in DROP_UNDERSCORE_NAMES for line in APACHE_DROPS.splitlines())
            else:
                assert status == 403, body
                assert "RequestHeader unset X_Forwarded-For" in log, log
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# 2. nginx in front of waitress, default options -------------------------------

NGINX_TO_WAITRESS = "\n            ".join(
    [X_FORWARDED_FOR, "proxy_set_header Host $host:$server_port;", "proxy_http_version 1.1;"]
)
RECIPE = "--no-clear-untrusted-proxy-headers"


def waitress(lookahead: int) -> list[str]:
    """waitress as it comes; with lookahead, also under another name
    (``--ident``), which the guard does not go by."""
    return [
        PY, "-m", "waitress", f"--listen=127.0.0.1:{APP_PORT}",
        f"--channel-request-lookahead={lookahead}", *(["--ident=app"] if lookahead else []),
        f"{MODULE}:app",
    ]  # fmt: skip


@pytest.mark.parametrize("lookahead", [0, 5])
@pytest.mark.parametrize("options", ["", "trusted_proxies='127.0.0.1'"], ids=["default", "trusted"])
def test_nginx_in_front_of_waitress_as_they_come(hosts, tmp_path, lookahead, options):
    """waitress deletes X-Forwarded-For: the app sees a loopback client with
    no forwarding header. A local request first (so that the fast path has
    granted 127.0.0.1 and this Host before), then the other host through
    nginx, kept alive and pipelined: refused, with the recipe in the log."""
    pytest.importorskip("waitress", reason="needs waitress (the test extra installs it)")
    require_nginx()
    write_app(tmp_path, options)
    ns, host = hosts.server_ns, f"localhost:{PROXY_PORT}"
    with (
        server_in(ns, waitress(lookahead), tmp_path, "waitress", APP_PORT),
        nginx_in(hosts, tmp_path, NGINX_TO_WAITRESS),
    ):
        for _ in range(2):  # the fast path remembers after the first grant
            status, body = http_get(ns, "127.0.0.1", APP_PORT, "/admin", {"Host": host})
            assert status == (403 if options else 200), body
        attack(hosts, PROXY_PORT, [request(host=host), request(host="localhost")] * 2)
        status, _ = http_get(ns, "127.0.0.1", PROXY_PORT, "/admin")
        assert status == 403  # this host through nginx: no client to judge either
        log = (tmp_path / "waitress.log").read_text(errors="replace")
        assert "waitress deleted before the app ran" in log and RECIPE in log, log


@pytest.mark.parametrize("lookahead", [0, 5])
def test_waitress_judges_the_request_it_serves(hosts, tmp_path, lookahead):
    """Straight to waitress on one connection, pipelined or kept alive:
    requests with and without a deleted header alternate, and each gets its
    own answer (the channel's next request, parsed ahead, never counts)."""
    pytest.importorskip("waitress", reason="needs waitress (the test extra installs it)")
    write_app(tmp_path, "")
    plain = request(host=f"localhost:{APP_PORT}")
    relayed = [
        request("X-Forwarded-For: 127.0.0.1", host=f"localhost:{APP_PORT}"),
        request("Forwarded: for=127.0.0.1", host=f"localhost:{APP_PORT}"),
        request("X-Forwarded-Proto: http", host=f"localhost:{APP_PORT}"),
    ]
    payloads = [plain, relayed[0], plain, relayed[1], plain, relayed[2], plain]
    with server_in(hosts.server_ns, waitress(lookahead), tmp_path, "waitress", APP_PORT):
        for pipelined in (False, True):
            statuses, text = raw_exchange(
                hosts.server_ns, "127.0.0.1", APP_PORT, payloads, pipelined=pipelined, pause=0.5
            )
            assert statuses == [200, 403, 200, 403, 200, 403, 200], (pipelined, text)


# 3. The doctor checks the promise ----------------------------------------------


@pytest.mark.parametrize("drops", [True, False], ids=["promised", "not-promised"])
def test_the_doctor_finds_an_nginx_that_passes_underscore_names(hosts, tmp_path, drops):
    """``underscores_in_headers on`` in the nginx of this network namespace,
    and an app that says its proxy drops such names: RISKY, exit 1. Without
    that promise the guard refuses what the names could forge: no finding."""
    require_nginx()
    write_app(tmp_path, f"trusted_proxies='127.0.0.1', proxy_drops_underscore_headers={drops}")
    doctor = [PY, "-m", "flask_selfhost.cli", "doctor", "--app", f"{MODULE}:app", "--json"]
    with nginx_in(hosts, tmp_path, X_FORWARDED_FOR, server=UNDERSCORES_ON):
        done = subprocess.run(
            ["env", f"PYTHONPATH={tmp_path}:{ROOT}", *ns_command(hosts.server_ns, *doctor)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    findings = [f for f in json.loads(done.stdout)["findings"] if f["topic"] == "proxy"]
    if drops:
        assert [f["severity"] for f in findings] == ["risky"], done.stdout
        assert "underscores_in_headers on" in findings[0]["message"]
        assert done.returncode == 1
    else:
        assert findings == [], done.stdout
