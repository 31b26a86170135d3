"""Proxies that pass header names with underscores, when the app says its
proxy drops them.

With ``proxy_drops_underscore_headers=True`` the guard reads ``X-Forwarded-For``
on servers that give ``X_Forwarded_For`` the same environ key (see
:data:`flask_selfhost.servers.FOLDS_UNDERSCORE_NAMES`): the option is a
promise about the proxy, and this module checks it where it can. An nginx
listening in this network namespace is asked for its whole configuration
(``nginx -T``, with the ``-p``/``-c`` its master process was started with);
``underscores_in_headers on`` breaks the promise. Apache's configuration is
not read: its finding names the lines to look for.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Iterable

from ..hidden_relays import DROP_UNDERSCORE_NAMES
from .listeners import Listener
from .report import NOTE, RISKY, UNKNOWN, Finding

#: ``underscores_in_headers on;`` outside a comment, in ``nginx -T`` output.
UNDERSCORES_ON = re.compile(r"^[^#\n]*\bunderscores_in_headers\s+on\s*;", re.MULTILINE)
APACHES = frozenset({"apache2", "httpd"})


def passes_underscores(config: str) -> bool:
    """True when an nginx configuration (``nginx -T``) lets such names through."""
    return UNDERSCORES_ON.search(config) is not None


def master_pid(pid: int) -> int:
    """nginx's master: the process itself, or the parent of a worker."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            if b"master process" in file.read():
                return pid
        with open(f"/proc/{pid}/status") as file:
            for line in file:
                if line.startswith("PPid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return pid


def nginx_config(pid: int) -> str | None:
    """The configuration of the nginx whose master is ``pid``, or ``None``."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            words = file.read().decode(errors="replace").replace("\0", " ")
    except OSError:
        return None
    _, _, arguments = words.partition("master process ")
    try:
        argv = shlex.split(arguments)
    except ValueError:
        return None
    nginx = shutil.which(argv[0]) if argv else shutil.which("nginx")
    if nginx is None:
        return None
    chosen = []
    for flag in ("-p", "-c"):
        if flag in argv[:-1]:
            chosen += [flag, argv[argv.index(flag) + 1]]
    try:
        done = subprocess.run(
            [nginx, *chosen, "-e", "stderr", "-T"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def underscore_findings(listeners: Iterable[Listener]) -> list[Finding]:
    """For an app with ``proxy_drops_underscore_headers=True``: the proxies
    here that may break that promise."""
    findings = []
    masters: set[int] = set()
    apaches: set[int] = set()
    for listener in listeners:
        for pid, name in listener.processes:
            if name == "nginx":
                masters.add(master_pid(pid))
            elif name in APACHES:
                apaches.add(pid)
    for pid in sorted(masters):
        config = nginx_config(pid)
        if config is None:
            message = (
                f"nginx (pid {pid}): its configuration could not be read (nginx -T); the app "
                "says its proxy drops header names with underscores "
                "(proxy_drops_underscore_headers=True): check that nginx has no "
                "'underscores_in_headers on;'."
            )
            findings.append(Finding(UNKNOWN, "proxy", message, {"pid": pid}))
        elif passes_underscores(config):
            message = (
                f"nginx (pid {pid}) passes header names with underscores "
                "('underscores_in_headers on;'), but the app says its proxy drops them "
                "(proxy_drops_underscore_headers=True): under a server that folds X_Forwarded_For "
                "into X-Forwarded-For, a client behind nginx names itself. Remove that line."
            )
            findings.append(Finding(RISKY, "proxy", message, {"pid": pid}))
    if apaches:
        message = (
            f"Apache (pid {', '.join(map(str, sorted(apaches)))}) passes header names with "
            "underscores unless told otherwise, and the app says its proxy drops them "
            "(proxy_drops_underscore_headers=True): check its configuration has "
            f"{DROP_UNDERSCORE_NAMES.split('in Apache, ', 1)[-1]}."
        )
        findings.append(Finding(NOTE, "proxy", message, {"pids": sorted(apaches)}))
    return findings
