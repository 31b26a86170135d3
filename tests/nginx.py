"""A real nginx in front of gunicorn, for the reverse-proxy tests.

:func:`nginx` writes a configuration into a temporary directory (its own pid,
logs and temp paths, so it touches nothing of the system's nginx), starts
``nginx -g 'daemon off;'`` in the foreground, optionally inside a network
namespace, waits until it listens and stops it afterwards, even when the test
fails. :func:`guarded_app` is the app gunicorn serves behind it.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from flask_selfhost import SelfHostMiddleware

from .conftest import require_commands
from .servers import stop_process_group, wait_for_port

#: What nginx adds on the way to the app. ``$proxy_add_x_forwarded_for``
#: appends the client's address to whatever X-Forwarded-For the client sent.
X_FORWARDED_FOR = "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;"
#: RFC 7239, IPv4 clients only (nginx has no variable that brackets IPv6).
FORWARDED = 'proxy_set_header Forwarded "for=$remote_addr";'
#: A proxy that says nothing about its client: the unsafe configuration.
NO_HEADERS = ""

CONFIG = """\
user {user};
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
{http}
    server {{
{listens}
        {server}
        location / {{
            {location}
        }}
    }}
}}
"""


@dataclass
class Nginx:
    process: subprocess.Popen
    directory: Path

    def log(self) -> str:
        return (self.directory / "error.log").read_text(errors="replace")


def nginx_command(
    listen: Sequence[tuple[str, int]],
    location: str,
    directory: Path,
    http: str = "",
    server: str = "",
    user: str = "root",
) -> list[str]:
    """Write a configuration with ``location`` as the body of ``location /``
    (``http`` in the ``http`` block: a ``proxy_cache_path``, say; ``server``
    as directives of the server block; ``user`` running the workers) into
    ``directory``; the command that runs nginx on it, in the foreground."""
    directory.mkdir(parents=True, exist_ok=True)
    listens = "\n".join(
        f"        listen [{host}]:{port};" if ":" in host else f"        listen {host}:{port};"
        for host, port in listen
    )
    config = directory / "nginx.conf"
    config.write_text(
        CONFIG.format(
            dir=directory, listens=listens, location=location, http=http, server=server, user=user
        )
    )
    # -e: errors from before the config is read go to our log too, not to /var/log.
    return ["nginx", "-p", str(directory), "-c", str(config), "-e", "stderr"]


def require_nginx() -> None:
    require_commands("nginx")


@contextlib.contextmanager
def nginx(
    listen: Sequence[tuple[str, int]],
    upstream: str,
    headers: str,
    directory: Path,
    prefix: Sequence[str] = (),
    wait=None,
    http: str = "",
    server: str = "",
    user: str = "root",
) -> Iterator[Nginx]:
    """Run nginx listening on ``listen`` (address, port pairs), proxying to
    ``upstream`` (``http://127.0.0.1:PORT`` or ``http://unix:/path:``) with
    the ``headers`` directives.

    ``prefix`` runs it under another command (``ip netns exec NAME``); then
    ``wait`` (called with the process) replaces the wait for the first
    listen address, which this process cannot reach. ``http`` goes into the
    ``http`` block, ``server`` into the server block (``underscores_in_headers on;``);
    ``user`` runs the workers (``www-data``, as Debian's nginx does).
    """
    location = f"proxy_pass {upstream};\n            {headers}"
    command = nginx_command(listen, location, directory, http, server, user)
    with open(directory / "stderr.log", "wb") as stderr:
        process = subprocess.Popen(
            [*prefix, *command, "-g", "daemon off;"],
            stdout=stderr,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: master and worker stop together
        )
    try:
        try:
            if wait is not None:
                wait(process)
            else:
                wait_for_port(*listen[0], process=process)
        except (RuntimeError, TimeoutError) as error:
            output = (directory / "stderr.log").read_text(errors="replace")
            raise RuntimeError(f"nginx did not start: {error}\n{output}") from error
        yield Nginx(process, directory)
    finally:
        stop_process_group(process)


def report(environ, start_response):
    """What the app behind the guard answers: the addresses it was given."""
    body = json.dumps(
        {
            "remote": environ.get("REMOTE_ADDR"),
            "x_forwarded_for": environ.get("HTTP_X_FORWARDED_FOR"),
            "forwarded": environ.get("HTTP_FORWARDED"),
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def guarded_app(**options) -> SelfHostMiddleware:
    """The app gunicorn serves: ``tests.nginx:guarded_app(trusted_proxies='127.0.0.1')``."""
    return SelfHostMiddleware(report, **options)
