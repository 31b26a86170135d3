"""Every WSGI server in ``tests/server_matrix.py``, for real, from another host.

All servers of the table run at once in one server namespace, each on its
own port (and, where it has one, its own unix socket), so that the whole
matrix costs about one server start. Then each cell is asked:

- (a) from the server namespace to 127.0.0.1 and ::1;
- (b) from the server namespace to its own veth addresses, IPv4 and IPv6
  (client == local);
- (c) from the client namespace;
- (d) over the unix socket (a filesystem path, reachable from here).

A refusal where the table says 403 for (b) must name the server's fix, and
no answer may be a 500. The README's table must be the rendered source.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from .conftest import require_commands
from .netns import (
    http_get,
    kill_processes_in,
    ns_command,
    require_netns,
    two_hosts,
    wait_for_port_in,
)
from .nginx import nginx_command, require_nginx
from .server_matrix import APP, EVENTLET_PYTHON, MODWSGI_HOME, ROWS, UWSGI, Row, render
from .servers import ROOT, stop_process_group, unix_request

pytestmark = [pytest.mark.slow, pytest.mark.root]

FIRST_PORT = 8400
README = ROOT / "README.md"


def fill(command: tuple[str, ...], **values: object) -> list[str]:
    values.setdefault("app", APP)
    return [part.format(root=ROOT, **values) for part in command]


#: Directories made outside pytest's tmp_path (which www-data cannot read),
#: removed when the servers stop.
made_directories: list[Path] = []

APACHE = """\
ServerRoot "{dir}"
PidFile {dir}/httpd.pid
DefaultRuntimeDir {dir}
Mutex file:{dir} default
Listen 0.0.0.0:{port}
Listen [::]:{port}
ServerName localhost
User www-data
Group www-data
ErrorLog {dir}/error.log
LogLevel info
LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
LoadModule wsgi_module /usr/lib/apache2/modules/mod_wsgi.so
WSGISocketPrefix {dir}/wsgi
WSGIDaemonProcess matrix processes=1 threads=2 python-home={home} python-path={dir}
WSGIProcessGroup matrix
WSGIScriptAlias / {dir}/app.wsgi
<Directory {dir}>
    Require all granted
</Directory>
"""


def apache_command(port: int) -> list[str]:
    """Apache with mod_wsgi in daemon mode, serving the matrix app. Its files
    go to a directory that Apache's user (www-data) can read, with a copy of
    the package and of the app, so that nothing depends on the checkout's
    permissions."""
    require_commands("/usr/sbin/apache2")
    directory = Path(tempfile.mkdtemp(prefix="selfhost-apache-"))
    directory.chmod(0o755)
    made_directories.append(directory)
    shutil.copytree(ROOT / "flask_selfhost", directory / "flask_selfhost")
    shutil.copy(ROOT / "tests" / "apps.py", directory / "matrix_apps.py")
    (directory / "app.wsgi").write_text("from matrix_apps import unix_local_app as application\n")
    config = directory / "httpd.conf"
    config.write_text(APACHE.format(dir=directory, port=port, home=MODWSGI_HOME))
    return ["/usr/sbin/apache2", "-f", str(config), "-DFOREGROUND"]


def stack_commands(row: Row, port: int, tmp_path: Path) -> list[list[str]]:
    """The processes of a row: its server, and nginx in front where it has one."""
    if row.stack == "apache":
        return [apache_command(port)]
    upstream = port + 100
    commands = [fill(row.tcp, port=port, upstream=upstream, app=row.app)]
    if row.stack.startswith("nginx-uwsgi"):
        require_nginx()
        location = "include /etc/nginx/uwsgi_params;\n"
        if row.stack.endswith("-addr"):
            location += "uwsgi_param SERVER_ADDR $server_addr;\n"
        location += f"uwsgi_pass 127.0.0.1:{upstream};"
        listen = [("0.0.0.0", port), ("::", port)]
        command = nginx_command(listen, location, tmp_path / f"nginx-{port}")
        commands.append([*command, "-g", "daemon off;"])
    return commands


#: What the matrix needs besides root, and what provides each: Python
#: modules the test extra installs, then Debian packages (as .ci/run names them).
MODULES = ("gevent", "waitress", "cheroot", "granian", "bjoern", "uvicorn", "hypercorn", "daphne")
PACKAGES = {
    "ip": ("iproute2", "ip"),
    "nginx": ("nginx", "nginx"),
    "apache2": ("apache2", "/usr/sbin/apache2"),
    "mod_wsgi": ("libapache2-mod-wsgi-py3", "/usr/lib/apache2/modules/mod_wsgi.so"),
}  # name: (Debian package, command or file)
EXTRA = "pip install -e '.[test]'"
EVENTLET_VENV = (
    "python -m venv /tmp/selfhost-eventlet && /tmp/selfhost-eventlet/bin/pip install "
    "'gunicorn<24' 'eventlet>=0.40' flask && "
    "export SELFHOST_EVENTLET_PYTHON=/tmp/selfhost-eventlet/bin/python"
)
MODWSGI_VENV = (
    "/usr/bin/python3 -m venv /tmp/selfhost-modwsgi && /tmp/selfhost-modwsgi/bin/pip install "
    "flask && export SELFHOST_MODWSGI_HOME=/tmp/selfhost-modwsgi"
)


def installed(path: str) -> bool:
    return Path(path).exists() if path.startswith("/") else shutil.which(path) is not None


def missing_prerequisites() -> list[str]:
    """Every prerequisite of the matrix that this machine lacks, each with
    the command that provides it: one skip names them all, not the first."""
    missing = [] if os.geteuid() == 0 else ["root (network namespaces): sudo, or .ci/run as root"]
    absent = [name for name in MODULES if importlib.util.find_spec(name) is None]
    if not Path(UWSGI).exists():
        absent.append("uWSGI")
    if absent:
        missing.append(
            f"{', '.join(absent)}: {EXTRA} (uWSGI and bjoern build with a C compiler, "
            "Python's headers and libev-dev)"
        )
    packages = [package for package, path in PACKAGES.values() if not installed(path)]
    if packages:
        missing.append(f"{', '.join(packages)}: apt-get install {' '.join(packages)}")
    if not EVENTLET_PYTHON or not Path(EVENTLET_PYTHON).exists():
        missing.append(f"SELFHOST_EVENTLET_PYTHON (gunicorn 23 with eventlet): {EVENTLET_VENV}")
    if not MODWSGI_HOME or not Path(MODWSGI_HOME).exists():
        missing.append(f"SELFHOST_MODWSGI_HOME (Debian's python3 with Flask): {MODWSGI_VENV}")
    return missing


def require_servers() -> None:
    missing = missing_prerequisites()
    if missing:
        pytest.skip("the server matrix needs: " + "; ".join(missing) + " (.ci/run does all this)")


@contextlib.contextmanager
def running(ns: str, tmp_path: Path):
    """Start every row's TCP and unix servers; yield {row: (port, path)}."""
    processes: list[subprocess.Popen] = []
    started: dict[Row, tuple[int, Path | None]] = {}
    env = {"PYTHONPATH": str(ROOT)}
    try:
        for number, row in enumerate(ROWS):
            port, path = FIRST_PORT + number, tmp_path / f"row{number}.sock"
            commands = stack_commands(row, port, tmp_path)
            if row.unix is not None:
                commands.append(fill(row.unix, path=path, app=row.app))
            for command in commands:
                log = open(tmp_path / f"row{number}-{len(processes)}.log", "wb")  # noqa: SIM115
                processes.append(
                    subprocess.Popen(
                        [
                            "env",
                            *(f"{k}={v}" for k, v in env.items()),
                            *ns_command(ns, *command),
                        ],
                        cwd=ROOT,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
                log.close()
            started[row] = (port, path if row.unix is not None else None)
        for port, path in started.values():
            wait_for_port_in(ns, "127.0.0.1", port)
            if path is not None:
                for _ in range(200):
                    if path.exists():
                        break
                    subprocess.run(["sleep", "0.05"], check=True)
        yield started
    finally:
        for process in processes:
            stop_process_group(process)
        kill_processes_in(ns)
        while made_directories:
            shutil.rmtree(made_directories.pop(), ignore_errors=True)


def status_of(ns: str, address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    status, body = http_get(ns, address, port, "/", {"Host": f"{host}:{port}"})
    assert status != 500, body
    return f"{status}" if status is not None else body


def row_log(tmp_path: Path, row: Row) -> str:
    return "".join(
        log.read_text(errors="replace") for log in tmp_path.glob(f"row{ROWS.index(row)}-*.log")
    )


def row_refusal(tmp_path: Path, row: Row) -> str:
    """The row's latest refusal line: the full reason (the client sees a fixed text)."""
    refusals = [line for line in row_log(tmp_path, row).splitlines() if "refused" in line]
    return refusals[-1] if refusals else ""


def assert_said_once(tmp_path: Path, row: Row, refusal: str) -> None:
    """The server's log holds the refusal's reason as a start-up warning."""
    logs = row_log(tmp_path, row)
    warnings = [
        line.split("flask_selfhost: ", 1)[1]
        for line in logs.splitlines()
        if "flask_selfhost: " in line
    ]
    assert any(warning.strip() and warning.strip() in refusal for warning in warnings), (
        refusal,
        logs[-2000:],
    )


def test_the_server_matrix(tmp_path):
    require_servers()
    require_netns()
    with two_hosts() as hosts, running(hosts.server_ns, tmp_path) as started:
        seen: dict[str, dict[str, list[str]]] = {}
        for row, (port, path) in started.items():
            ns = hosts.server_ns
            families = ("127.0.0.1", "::1") if row.ipv6 else ("127.0.0.1",)
            own = (hosts.server_ip4, hosts.server_ip6) if row.ipv6 else (hosts.server_ip4,)
            cells = {
                "loopback": [status_of(ns, address, port) for address in families],
                "own": [status_of(ns, address, port) for address in own],
                "other": [status_of(hosts.client_ns, address, port) for address in own],
                "socket": [str(unix_request(str(path)).status)] if path else ["n/a"],
            }
            seen[f"{row.server} {row.mode}"] = cells
            for column, answers in cells.items():
                assert set(answers) == {getattr(row, column)}, (row.server, row.mode, cells)
            if row.own == "403":
                # The refusal names what to change, and the server said so once.
                status, body = http_get(ns, hosts.server_ip4, port, "/")
                refusal = row_refusal(tmp_path, row)
                assert status == 403 and any(
                    fix in refusal for fix in ("bind", "--http-socket", "uwsgi_param")
                ), (body, refusal)
                assert_said_once(tmp_path, row, refusal)
            if row.socket == "403":
                unix_request(str(path))
                refusal = row_refusal(tmp_path, row)
                assert "unix_socket_is_local cannot work" in refusal, refusal
                assert_said_once(tmp_path, row, refusal)
    print(json.dumps(seen, indent=1))


def test_the_readme_table_is_the_tested_one():
    text = README.read_text()
    block = re.search(
        r"<!-- server-table:start -->\n(.*?)<!-- server-table:end -->", text, re.DOTALL
    )
    assert block is not None, "the README has no server table markers"
    # The docs render the same table from the same source (docs/conf.py).
    assert block.group(1) == render()
