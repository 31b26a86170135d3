"""The guard's log lines: logfmt fields that no client can forge, and, with
no logging set up, in the error log of the server that runs the app.

The servers are started as docs/logging.md starts them, with no
configuration file and no hook; a request from loopback with another
host's name in ``Host`` is refused by the host rule.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import logfmtkv as logfmt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from werkzeug.test import Client

from flask_selfhost import SelfHostMiddleware, log
from flask_selfhost.decision import Decision

from .apps import APACHE
from .servers import ROOT, free_port, request, server_process

BIN = Path(sys.executable).parent  # this venv's scripts: gunicorn, uvicorn, flask...
FIELDS = ["selfhost", "method", "path", "remote", "local", "peer_uid", "rule", "reason"]

# The line, read back ---------------------------------------------------------


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def lines() -> Iterator[list[str]]:
    handler, level = Lines(), log.logger.level
    log.logger.addHandler(handler)
    log.logger.setLevel(logging.DEBUG)
    yield handler.lines
    log.logger.removeHandler(handler)
    log.logger.setLevel(level)


def test_a_refusal_is_logfmt_fields(lines):
    def app(environ, start_response):
        start_response("200 OK", [])
        return [b""]

    other_host = {**APACHE, "REMOTE_ADDR": "10.0.0.2", "SERVER_ADDR": "127.0.0.1"}
    Client(SelfHostMiddleware(app)).get("/admin", environ_base=other_host)
    (line,) = lines
    assert line == (
        "selfhost=refused method=GET path=/admin remote=10.0.0.2 local=127.0.0.1"
        ' rule=source reason="the client is another host"'
    )
    assert logfmt.parse(line, strict=True) == {
        "selfhost": "refused",
        "method": "GET",
        "path": "/admin",
        "remote": "10.0.0.2",
        "local": "127.0.0.1",
        "rule": "source",
        "reason": "the client is another host",
    }


#: What a client may put in a value: anything, the line's own syntax first.
hostile = st.one_of(
    st.text(),
    st.text(alphabet='"\\= \n\r\t\x00\x1b\x7f\x85\u2028\u202e-'),
    st.sampled_from(['x" rule=source reason="forged', "a\\", "-", "", "null"]),
)


@given(
    allowed=st.booleans(),
    method=hostile,
    path=hostile,
    remote=st.one_of(st.none(), hostile),
    local=st.one_of(st.none(), hostile),
    peer=st.one_of(st.none(), hostile),
    reason=hostile,
)
def test_every_value_reads_back_from_one_printable_line(
    allowed, method, path, remote, local, peer, reason
):
    handler = Lines()
    log.logger.addHandler(handler)
    level = log.logger.level
    log.logger.setLevel(logging.DEBUG)
    try:
        decision = Decision(allowed, "source", reason, remote, local, peer)
        log.log_decision(decision, method, path)
    finally:
        log.logger.removeHandler(handler)
        log.logger.setLevel(level)
    (line,) = handler.lines
    assert line.isascii() and line.isprintable(), line
    expected = {
        "selfhost": "allowed" if allowed else "refused",
        "method": method,
        "path": path,
        "remote": "-" if remote is None else remote,
        "local": "-" if local is None else local,
        **({} if peer is None else {"peer": peer}),
        "rule": "source",
        "reason": reason,
    }
    assert logfmt.parse(line, strict=True, duplicates="error") == expected


def test_absent_and_dash_differ():
    assert (log.log_field(None), log.log_field("-")) == ("-", '"-"')


# Where the lines go, in this process ----------------------------------------


@pytest.fixture
def unplaced() -> Iterator[None]:
    """The guard's logger as in a new process: no handler, none chosen yet;
    and the root logger and the servers' loggers put back after. (pytest
    puts its own handler on the root logger while the test runs: each test
    takes it off with :func:`bare_root`.)"""
    logger, root, loggers = log.logger, logging.root, logging.root.manager.loggerDict
    kept = (logger.handlers[:], logger.propagate, logger.level, root.handlers[:], log._placed)
    servers = {
        name: loggers.pop(name) for name in [*log.SERVER_ERROR_LOGS, "uvicorn"] if name in loggers
    }
    logger.handlers, root.handlers, log._placed = [], [], False
    logger.setLevel(logging.NOTSET)
    yield
    for name in [*log.SERVER_ERROR_LOGS, "uvicorn"]:
        loggers.pop(name, None)
    loggers.update(servers)
    logger.handlers, logger.propagate, _, root.handlers, log._placed = kept
    logger.setLevel(kept[2])


def bare_root() -> None:
    logging.root.handlers = []


def refuse() -> None:
    log.log_decision(Decision(False, "host", "a reason", "127.0.0.1", "127.0.0.1"), "GET", "/")


TIMED = re.compile(
    r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] \[WARNING\] selfhost=refused .*\n"
)


def test_with_nothing_set_up_refusals_reach_stderr_timed(unplaced, capsys):
    bare_root()
    refuse()
    refuse()
    assert TIMED.fullmatch(capsys.readouterr().err.split("\n", 1)[1])
    assert [type(h) for h in log.logger.handlers] == [log.StderrHandler]  # chosen once


def test_a_handler_the_app_set_up_wins(unplaced, capsys):
    bare_root()
    handler = Lines()
    logging.root.addHandler(handler)
    refuse()
    assert log.logger.handlers == [] and capsys.readouterr().err == ""
    assert [line.split()[0] for line in handler.lines] == ["selfhost=refused"]


def test_waitress_basic_config_is_not_the_apps(unplaced, capsys, monkeypatch):
    bare_root()
    monkeypatch.setitem(sys.modules, "waitress", sys.modules.get("waitress", sys))
    logging.basicConfig()  # what waitress.serve() does: no time
    refuse()
    assert TIMED.fullmatch(capsys.readouterr().err)  # once, timed, and not also bare
    assert log.logger.propagate is False


def test_gunicorns_error_log_at_its_level(unplaced, capsys):
    bare_root()
    error_log = logging.getLogger("gunicorn.error")
    lines = Lines()
    lines.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    error_log.addHandler(lines)
    error_log.setLevel(logging.INFO)
    refuse()
    error_log.setLevel(logging.ERROR)  # --log-level error
    refuse()
    assert [line.split()[0] for line in lines.lines] == ["selfhost=refused"]
    assert capsys.readouterr().err == ""


def test_uvicorns_untimed_log_leaves_stderr_with_time(unplaced, capsys):
    bare_root()
    untimed = Lines()
    untimed.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logging.getLogger("uvicorn").addHandler(untimed)
    logging.getLogger("uvicorn.error")
    refuse()
    assert untimed.lines == [] and TIMED.fullmatch(capsys.readouterr().err)


def test_uvicorns_log_config_with_a_time_takes_the_line(unplaced, capsys):
    bare_root()
    timed = Lines()
    timed.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.getLogger("uvicorn").addHandler(timed)
    logging.getLogger("uvicorn.error")
    refuse()
    assert len(timed.lines) == 1 and capsys.readouterr().err == ""


def test_the_common_path_never_looks(unplaced):
    bare_root()

    def app(environ, start_response):
        start_response("200 OK", [])
        return [b""]

    client = Client(SelfHostMiddleware(app))
    for _ in range(3):
        assert client.get("/", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 200
    assert log._placed is False and log.logger.handlers == []


# Where the lines go, under real servers ---------------------------------------

MYADMIN = """\
from flask import Flask

from flask_selfhost import SelfHost


def create_app():
    app = Flask(__name__)
    SelfHost(app)

    @app.get("/admin")
    def admin():
        return "only this host sees this"

    return app
"""

MYASGI = """\
from flask_selfhost.asgi import SelfHostASGIMiddleware


async def hello(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"only this host sees this"})


app = SelfHostASGIMiddleware(hello)
"""

#: Logging the app sets up itself, at import: it takes the guard's lines.
APP_LOGGING = """\
import logging

logging.basicConfig(filename="app.log", format="app %(levelname)s %(message)s")
"""

#: Each server as docs/logging.md starts it (a free port for ``{port}``).
SERVERS = {
    "gunicorn": "gunicorn -b 127.0.0.1:{port} --error-logfile error.log myadmin:create_app()",
    "uvicorn": "uvicorn --host 127.0.0.1 --port {port} myasgi:app",
    "hypercorn": "hypercorn -b 127.0.0.1:{port} --error-logfile error.log myasgi:app",
    "waitress": "waitress-serve --listen=127.0.0.1:{port} --call myadmin:create_app",
    "flask run": "flask --app myadmin:create_app run --port {port}",
}


def serve_and_refuse(command: str, directory: Path, modules: dict[str, str]) -> tuple[str, str]:
    """Run ``command`` in ``directory`` beside ``modules`` (file name: source);
    refuse one request (loopback, with another host's name as ``Host``).

    Returns what the server printed, and its error log: the file named by
    ``--error-logfile``, else what it printed.
    """
    for name, source in modules.items():
        (directory / name).write_text(source)
    port = free_port()
    words = command.format(port=port).split()
    if words[0] == "gunicorn":  # gunicorn 27 instances would otherwise share one path
        words.append("--no-control-socket")
    env = {"PYTHONPATH": str(ROOT)}  # this checkout's flask_selfhost
    with server_process(
        [str(BIN / words[0]), *words[1:]], ("127.0.0.1", port), directory, env=env, cwd=directory
    ) as server:
        refused = request("127.0.0.1", port, "/admin", headers={"Host": "evil.example"})
        assert refused.status == 403, server.log()
        time.sleep(0.3)  # the worker writes its line after answering
    printed = server.log()
    if "--error-logfile" in words:
        return printed, (directory / words[words.index("--error-logfile") + 1]).read_text()
    return printed, printed


def assert_one_timed_refusal(printed: str, error_log: str) -> None:
    """The refusal is one line of the error log, with a time, a pid and a
    level, whose fields a logfmt parser reads; and nowhere else."""
    (line,) = error_log_lines(error_log)
    assert TIMED.fullmatch(line + "\n"), line
    fields = logfmt.parse(line[line.index("selfhost=") :], strict=True)
    assert list(fields) == FIELDS and fields["rule"] == "host", line
    if error_log is not printed:
        assert "selfhost=" not in printed  # not also on stderr
    assert "Traceback" not in printed, printed


def error_log_lines(text: str) -> list[str]:
    """The guard's lines of a server's error log: each with a time, a pid and
    a level before its fields."""
    return [line for line in text.splitlines() if "selfhost=" in line]


@pytest.mark.slow
@pytest.mark.parametrize("name", SERVERS)
def test_with_no_wiring_a_refusal_reaches_the_servers_error_log(name, tmp_path):
    modules = {"myadmin.py": MYADMIN, "myasgi.py": MYASGI}
    assert_one_timed_refusal(*serve_and_refuse(SERVERS[name], tmp_path, modules))


@pytest.mark.slow
@pytest.mark.parametrize("name", SERVERS)
def test_logging_the_app_set_up_takes_the_line(name, tmp_path):
    modules = {"myadmin.py": APP_LOGGING + MYADMIN, "myasgi.py": APP_LOGGING + MYASGI}
    printed, error_log = serve_and_refuse(SERVERS[name], tmp_path, modules)
    (line,) = error_log_lines((tmp_path / "app.log").read_text())
    assert line.startswith("app WARNING selfhost=refused method=GET path=/admin "), line
    assert "selfhost=" not in printed + error_log
