"""Is ``--app`` the app that ``--port`` serves? The guard of ``--app`` is only
worth crediting when it is: checked against the command line (and
``FLASK_APP``) of the processes that listen on the port.

``gunicorn demo_app:app``, ``uvicorn``, ``hypercorn``, ``waitress-serve``,
``granian`` and ``flask --app`` all name the app there; ``gunicorn -c
conf.py`` names it in the file's ``wsgi_app = "..."``. A server that names
none (``python -m package``) cannot be checked: the doctor then says what it
assumes, and does not call the port safe. The parsers are pure;
:func:`read_commands` reads ``/proc``.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .app import DEFAULT_NAMES, parse_spec
from .listeners import Listener
from .report import ASSUMED, OK, RISKY, UNKNOWN, Finding

#: ``module:name``, ``module:obj.attr``, ``module:factory(...)``: a name that
#: starts with a letter, so that ``localhost:8000`` is not taken for an app.
SPEC = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_][\w.]*(?:\(.*\))?")
#: Options whose value is not the app, even when it looks like ``a:b``
#: (gunicorn's ``-c python:module``, a worker class).
NOT_THE_APP = frozenset({"-c", "--config", "-k", "--worker-class"})
#: Options whose value is the app, even as a bare module (``flask --app demo_app``).
THE_APP = frozenset({"--app", "-A", "--call", "--factory"})


@dataclass(frozen=True)
class Process:
    pid: int
    name: str
    argv: tuple[str, ...]
    flask_app: str | None = None  # FLASK_APP from its environment
    config_app: str | None = None  # wsgi_app of its gunicorn configuration file


def app_specs_in(
    argv: Sequence[str], flask_app: str | None = None, config_app: str | None = None
) -> list[str]:
    """The app specs a server command line (and ``FLASK_APP``, and its
    gunicorn configuration's ``wsgi_app``) names, in order."""
    specs: list[str] = []
    previous = ""
    for word in argv[1:]:
        option, equals, value = word.partition("=")
        if equals and option in THE_APP:
            specs.append(value)
        elif (previous in THE_APP and not word.startswith("-")) or (
            previous not in NOT_THE_APP and SPEC.fullmatch(word)
        ):
            specs.append(word)
        previous = word
    specs += [spec for spec in (flask_app, config_app) if spec]
    return list(dict.fromkeys(specs))


def config_wsgi_app(source: str) -> str | None:
    """``wsgi_app = "module:name"`` at the top of a gunicorn configuration
    file, else ``None`` (the file is read, never run)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "wsgi_app" for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    return None


def config_path(argv: Sequence[str]) -> str | None:
    """The gunicorn configuration file a command line uses: ``-c FILE``,
    ``--config=FILE``, else ``gunicorn.conf.py`` for gunicorn (its default);
    ``None`` for a ``python:module`` configuration or another server."""
    for index, word in enumerate(argv):
        if word in ("-c", "--config") and index + 1 < len(argv):
            value = argv[index + 1]
        elif word.startswith("--config="):
            value = word.partition("=")[2]
        else:
            continue
        return None if value.startswith("python:") else value
    if any(os.path.basename(word).startswith("gunicorn") for word in argv[:3]):
        return "gunicorn.conf.py"
    return None


def same_app(claimed: str, served: str) -> bool:
    """True when two specs name the same app as :func:`~.app.load_app` reads
    them: ``m:create_app`` is ``m:create_app()``, and ``m`` is ``m:app`` when
    ``app`` is the first of the default names that module (already imported)
    has."""
    try:
        one, other = _key(claimed), _key(served)
    except (ValueError, SyntaxError):
        return claimed.strip() == served.strip()
    return one == other


def _key(spec: str) -> tuple[object, ...]:
    module, name, args, kwargs = parse_spec(spec.strip())
    if name is None:
        # Only a module already imported (the one --app loaded) is looked
        # into: a name read from another process's command line is never
        # imported, as root, from here.
        imported = sys.modules.get(module)
        name = next((each for each in DEFAULT_NAMES if hasattr(imported, each)), None)
    return module, name, args, tuple(sorted((kwargs or {}).items()))


def served_findings(
    spec: str, port: int, listeners: Iterable[Listener], processes: Mapping[int, Process]
) -> tuple[list[Finding], bool | None]:
    """Check that the listeners on ``port`` serve ``spec``.

    Returns the findings and the answer: True (every listening process names
    ``spec``), False (one names other apps only: ``spec``'s guard is not
    credited), None (nothing names an app, or nothing could be read: the
    guard is credited on an assumption that an unknown finding states).
    """
    on_port = [item for item in listeners if item.port == port]
    pids = sorted({pid for item in on_port for pid, _ in item.processes})
    details: dict[str, object] = {"app": spec, "port": port}
    named = {
        pid: app_specs_in(processes[pid].argv, processes[pid].flask_app, processes[pid].config_app)
        for pid in pids
        if pid in processes
    }
    others = {
        pid: specs
        for pid, specs in named.items()
        if specs and not any(same_app(spec, served) for served in specs)
    }
    if others:
        pid, specs = next(iter(others.items()))
        served = " / ".join(specs)
        details.update({"served": specs, "pid": pid})
        return [
            Finding(
                RISKY,
                "app",
                f"--app {spec} is not what port {port} serves: {processes[pid].name} (pid "
                f"{pid}) was started with {served}. Nothing here is put down to the guard of "
                f"{spec}.",
                details,
                f"run the doctor with --app {specs[0]}, or serve {spec} on port {port}",
            )
        ], False
    unchecked = [pid for pid in pids if not named.get(pid)]
    unidentified = [item.shown for item in on_port if not item.processes]
    if on_port and not unidentified and not unchecked:
        names = "/".join(sorted({processes[pid].name for pid in pids}))
        shown = f"{names} (pid {', '.join(map(str, pids[:4]))}{', ...' if len(pids) > 4 else ''})"
        return [
            Finding(
                OK,
                "app",
                f"port {port} is served by {shown}, whose command line (or gunicorn "
                f"configuration) names {spec}.",
                details,
            )
        ], True
    if not on_port:
        why = "nothing listens on it now"
    elif unidentified:
        why = f"the process that listens on {unidentified[0]} could not be identified"
    else:
        pid = unchecked[0]
        name = processes[pid].name if pid in processes else "?"
        why = (
            f"the command line of {name} (pid {pid}) names no app"
            if pid in processes
            else f"the command line of pid {pid} could not be read"
        )
    details[ASSUMED] = True
    return [
        Finding(
            UNKNOWN,
            "app",
            f"assuming port {port} serves {spec}: {why}, so this was not checked.",
            details,
            f"name {spec} on the server's command line (gunicorn -b ... {spec}) or as "
            "wsgi_app in its gunicorn configuration, and run the doctor as root",
        )
    ], None


def read_commands(listeners: Iterable[Listener]) -> dict[int, Process]:
    """The command line and ``FLASK_APP`` of each process that owns a
    listener, where ``/proc`` lets us read them."""
    found = {}
    for listener in listeners:
        for pid, name in listener.processes:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as file:
                    argv = tuple(
                        part.decode(errors="replace") for part in file.read().split(b"\0") if part
                    )
            except OSError:
                continue
            flask_app = None
            with contextlib.suppress(OSError), open(f"/proc/{pid}/environ", "rb") as file:
                for entry in file.read().split(b"\0"):
                    if entry.startswith(b"FLASK_APP="):
                        flask_app = entry[len(b"FLASK_APP=") :].decode(errors="replace")
            found[pid] = Process(pid, name, argv, flask_app, read_config_app(pid, argv))
    return found


def read_config_app(pid: int, argv: Sequence[str]) -> str | None:
    """The ``wsgi_app`` of the gunicorn configuration file that ``pid`` was
    started with, read relative to that process's working directory."""
    path = config_path(argv)
    if path is None:
        return None
    with contextlib.suppress(OSError), open(os.path.join(f"/proc/{pid}/cwd", path)) as file:
        return config_wsgi_app(file.read())
    return None
