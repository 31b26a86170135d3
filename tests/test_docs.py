"""Every code block of the README and the docs runs, or is checked, here.

The convention (docs/development.md, "Every code block runs"): a fenced
block is checked by the rule for its language, and a block or command that
no rule covers fails. Python blocks run as pasted in a fresh interpreter;
shell commands run when they can run here (CLI, servers on a free port,
firewall commands inside a network namespace made for them) and are checked
against setup.cfg or .ci/run otherwise; nginx, HAProxy and systemd blocks are loaded;
output samples are produced again by the code that prints them.
"""

from __future__ import annotations

import configparser
import contextlib
import importlib
import inspect
import itertools
import logging
import os
import py_compile
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import logfmtkv as logfmt
import pytest
from flask import Flask
from werkzeug.test import Client

from flask_selfhost import SelfHostMiddleware, judge_source
from flask_selfhost.doctor import (
    MAKES_REMOTE_LOCAL,
    REFUSED_BY_GUARD,
    SNAT_BYPASS,
    Listener,
    Process,
    Question,
    app_findings,
    nat_findings,
    parse_iptables_save,
    render_text,
    route_localnet_findings,
    served_findings,
)
from flask_selfhost.gunicorn import classify_listener, describe_listener
from flask_selfhost.log import log_decision

from . import test_architecture, test_logging
from .apps import APACHE
from .conftest import require_commands, require_root
from .haproxy import haproxy_command
from .nginx import nginx, require_nginx
from .servers import (
    ROOT,
    free_port,
    gunicorn,
    request,
    server_process,
    stop_process_group,
    wait_for_port,
)

BIN = Path(sys.executable).parent  # this venv's scripts: flask-selfhost, flask, gunicorn
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CI = (ROOT / ".ci" / "run").read_text()
FENCE = re.compile(
    r"^(?P<fence>`{3,})(?P<lang>[^\n`]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.M | re.S
)


@dataclass(frozen=True)
class Block:
    where: str  # file:line
    lang: str
    text: str


def fenced_blocks(path: Path) -> Iterator[Block]:
    text = path.read_text()
    for match in FENCE.finditer(text):
        lang = match["lang"].strip()
        line = text.count("\n", 0, match.start()) + 1
        if lang.startswith("{"):  # a MyST directive (toctree, include, eval-rst): not code
            continue
        yield Block(f"{path.relative_to(ROOT)}:{line}", lang, match["body"])


def docstring_blocks() -> Iterator[Block]:
    """``.. code-block::`` in the docstrings of what docs/api.md documents."""
    api = (ROOT / "docs" / "api.md").read_text()
    for name in re.findall(r"\.\. auto(?:function|class|module|data):: ([\w.]+)", api):
        module_name, _, attribute = name.rpartition(".")
        try:
            target = importlib.import_module(name)
        except ImportError:
            target = getattr(importlib.import_module(module_name), attribute)
        doc = inspect.getdoc(target) or ""
        for match in re.finditer(r"\.\. code-block:: (\w+)\n\n((?:[ ]{4}.*\n|\n)+)", doc + "\n"):
            body = "\n".join(line[4:] for line in match[2].splitlines()) + "\n"
            yield Block(f"docstring of {name}", match[1], body)


BLOCKS = [block for path in DOCS for block in fenced_blocks(path)] + list(docstring_blocks())


def by_language(lang: str) -> list[Block]:
    return [block for block in BLOCKS if block.lang == lang]


def ids(blocks: list[Block]) -> list[str]:
    return [block.where for block in blocks]


CHECKED = {"python", "sh", "nginx", "haproxy", "ini", "text"}


def test_every_block_has_a_checked_language():
    unchecked = [f"{b.where} ({b.lang or 'no language'})" for b in BLOCKS if b.lang not in CHECKED]
    assert unchecked == [], "blocks no rule checks: give them one of " + ", ".join(CHECKED)


def test_the_docs_have_blocks_of_each_kind():
    assert {block.lang for block in BLOCKS} == CHECKED
    assert len(by_language("python")) >= 15


# python ----------------------------------------------------------------------


def run_python(code: str, **kw) -> subprocess.CompletedProcess:
    # -c: a fresh interpreter with the repository's root as the current
    # directory and first on sys.path, as a reader runs it in a checkout.
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, **kw
    )


GUNICORN_CONFIG = "# gunicorn.conf.py\n"
#: A block whose first line names a file (``# myadmin.py``) is that file:
#: a module runs as pasted, a test file (``# test_myadmin.py``) under pytest.
FILE_NAME = re.compile(r"# (\w+\.py)\b")


def file_name(block: Block) -> str | None:
    match = FILE_NAME.match(block.text)
    return None if match is None or block.text.startswith(GUNICORN_CONFIG) else match[1]


PYTHON = [
    block
    for block in by_language("python")
    if not block.text.startswith(GUNICORN_CONFIG)
    and not (file_name(block) or "").startswith("test_")
]
GUNICORN_CONFIGS = [
    block for block in by_language("python") if block.text.startswith(GUNICORN_CONFIG)
]
MODULES = [block for block in PYTHON if file_name(block)]
TEST_FILES = [
    block for block in by_language("python") if (file_name(block) or "").startswith("test_")
]


def files_beside(block: Block) -> dict[str, str]:
    """The file blocks of ``block``'s document, by file name."""
    document = block.where.rsplit(":", 1)[0]
    return {
        file_name(other): other.text
        for other in by_language("python")
        if file_name(other) and other.where.rsplit(":", 1)[0] == document
    }


@pytest.mark.parametrize("block", PYTHON, ids=ids(PYTHON))
def test_python_block_runs_as_pasted(block):
    done = run_python(block.text)
    assert done.returncode == 0, f"{block.where}\n{done.stderr}"


@pytest.mark.parametrize("block", MODULES, ids=ids(MODULES))
def test_a_module_a_server_imports_logs_nothing(block):
    """A server imports the module: a request it makes at import (an assert
    through the test client) would start the server's log with a refusal."""
    done = run_python(block.text)
    assert done.returncode == 0 and "selfhost=" not in done.stdout + done.stderr, done.stderr


@pytest.mark.parametrize("block", TEST_FILES, ids=ids(TEST_FILES))
def test_a_test_file_block_passes_under_pytest(block, tmp_path):
    for name, text in files_beside(block).items():
        (tmp_path / name).write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", file_name(block)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0 and " passed" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("block", GUNICORN_CONFIGS, ids=ids(GUNICORN_CONFIGS))
def test_gunicorn_configuration_block_starts_gunicorn(block, tmp_path):
    config = tmp_path / "gunicorn.conf.py"
    config.write_text(block.text)
    port = free_port()
    # Command-line settings win over the file's: a free port instead of 8000.
    args = ["-c", str(config), "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    with gunicorn(args, ("127.0.0.1", port), tmp_path) as server:
        assert request("127.0.0.1", port, "/healthz").status == 200, server.log()
        refused = request("127.0.0.1", port, "/admin", headers={"X-Forwarded-For": "10.0.0.2"})
        assert refused.status == 403
    # log_to_error_log, errorlog "-"
    assert "[WARNING] selfhost=refused method=GET path=/admin" in server.log()


# sh -----------------------------------------------------------------------


def commands(block: Block) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments dropped."""
    text = block.text.replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        line = re.sub(r"(^|\s+)#\s.*$", "", line).strip()
        if line:
            found.append(line)
    return found


def shell(line: str, cwd: Path = ROOT, **kw) -> subprocess.CompletedProcess:
    """``line`` run by bash with this venv's scripts first on PATH."""
    env = {
        **os.environ,
        "PATH": f"{BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    }
    return subprocess.run(
        ["bash", "-c", line], cwd=cwd, capture_output=True, text=True, timeout=120, env=env, **kw
    )


def extras() -> set[str]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return set(config["options.extras_require"])


def check_install(line: str, tmp_path: Path) -> None:
    install, _, then = line.partition(" && ")
    # From a checkout only: the package is not on PyPI, so no doc may
    # promise `pip install flask-selfhost`.
    named = re.fullmatch(r"pip install (?:-e )?(?:'\.(?:\[([\w,]+)\])?'|\.)", install)
    assert named, f"an install this test does not know (from a checkout only): {install}"
    for extra in (named[1] or "").split(","):
        assert not extra or extra in extras(), f"no extra {extra!r} in setup.cfg"
    if then:
        check_command(then, tmp_path)


def check_ci_runs_it(line: str, tmp_path: Path) -> None:
    assert line in CI.splitlines() or any(line in ci_line for ci_line in CI.splitlines()), (
        f".ci/run does not run {line!r}"
    )


def check_pytest(line: str, tmp_path: Path) -> None:
    # This very suite: not run again from inside itself; CI runs the line.
    check_ci_runs_it("pip install -e '.[test]' && python -m pytest", tmp_path)


def check_fast_subset(line: str, tmp_path: Path) -> None:
    """The subset's markers are the suite's own, and it leaves out every test
    marked with them while keeping most of the suite."""
    expression = shlex.split(line)[-1]
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    markers = {m.split(":")[0] for m in config["tool:pytest"]["markers"].split("\n") if m}
    assert set(re.findall(r"not (\w+)", expression)) == markers, (expression, markers)

    def collected(*args: str) -> int:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
             *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        return int(re.search(r"(\d+)(?:/\d+)? tests? (?:collected|selected)", done.stdout)[1])

    subset, marked = collected("-m", expression), collected("-m", " or ".join(sorted(markers)))
    assert marked > 0 and subset > marked, (subset, marked)


def check_demo_gunicorn(line: str, tmp_path: Path) -> None:
    port = free_port("::")
    env = {"DEMO_PORT": str(port), "DEMO_WORKERS": "1"}
    args = shlex.split(line)[1:]
    with gunicorn(args, ("127.0.0.1", port), tmp_path, env=env) as server:
        assert request("127.0.0.1", port, "/healthz").status == 200, server.log()
        assert request("127.0.0.1", port, "/admin").status == 200


def check_demo_uvicorn(line: str, tmp_path: Path) -> None:
    port = free_port("::")
    command = [sys.executable, *shlex.split(line)[1:]]
    with server_process(command, ("127.0.0.1", port), tmp_path, env={"DEMO_PORT": str(port)}):
        assert request("127.0.0.1", port, "/admin").status == 200
        assert request("::1", port, "/api/status").status == 200


#: The app that shell lines naming ``myapp:app`` serve: a guarded app behind
#: a proxy on this host, as docs/deployment.md describes.
MYAPP = """\
from flask import Flask
from flask_selfhost import SelfHost

app = Flask(__name__)
SelfHost(app, trusted_proxies=["127.0.0.1"])

@app.get("/")
def home():
    return "ok"
"""


def check_waitress(line: str, tmp_path: Path) -> None:
    require_commands("waitress-serve")
    port = free_port()
    (tmp_path / "myapp.py").write_text(MYAPP)
    words = [word.replace(":8000", f":{port}") for word in shlex.split(line)]
    process = subprocess.Popen(
        [str(BIN / words[0]), *words[1:]],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port("127.0.0.1", port, process=process)
        # As nginx relays a client on this host: the header is kept, and judged.
        relayed = request("127.0.0.1", port, "/", headers={"X-Forwarded-For": "127.0.0.1"})
        assert relayed.status == 200, relayed.body
    finally:
        stop_process_group(process)


def check_logged_refusal(line: str, tmp_path: Path) -> None:
    """A server started as the docs start it, serving the README's
    ``myadmin.py`` or tests/test_logging.py's ``myasgi.py``: a refusal is one
    timed line of its error log, and the only line of the guard there."""
    readme_module = next(b for b in MODULES if b.where.startswith("README.md"))
    modules = {"myadmin.py": readme_module.text, "myasgi.py": test_logging.MYASGI}
    command = re.sub(r"\b8000\b", "{port}", line)
    test_logging.assert_one_timed_refusal(
        *test_logging.serve_and_refuse(command, tmp_path, modules)
    )


def check_cli(line: str, tmp_path: Path) -> None:
    done = shell(line)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    assert done.stdout.strip(), done.stderr


def check_doctor(line: str, tmp_path: Path) -> None:
    if line.startswith("sudo"):
        require_commands("sudo")
    done = shell(line)
    assert done.returncode in (0, 1, 2), done.stdout + done.stderr
    assert "Result:" in done.stdout or '"exit_status"' in done.stdout, done.stdout + done.stderr


@contextlib.contextmanager
def namespace_with_eth0() -> Iterator[str]:
    """A fresh network namespace with an ``eth0``: firewall and sysctl
    lines of the docs run there, never on this machine's own tables."""
    require_root()
    require_commands("ip", "iptables", "sysctl")
    name = f"shdocs{os.getpid()}-{next(_namespaces)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        # A veth pair, both ends inside: an eth0 that touches nothing outside.
        link = ["link", "add", "eth0", "type", "veth", "peer", "name", "eth1"]
        subprocess.run(["ip", "-n", name, *link], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


_namespaces = itertools.count()


def check_in_namespace(line: str, tmp_path: Path) -> None:
    with namespace_with_eth0() as name:
        done = subprocess.run(
            ["ip", "netns", "exec", name, "bash", "-c", line], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr


def check_tox(line: str, tmp_path: Path) -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "tox.ini")
    assert config["tox"]["envlist"], "tox.ini names no environments"
    assert "tox" in (ROOT / "setup.cfg").read_text().split("dev =")[1].split("\n\n")[0]


def check_benchmark(line: str, tmp_path: Path) -> None:
    script = ROOT / next(word for word in shlex.split(line) if word.startswith("benchmarks/"))
    py_compile.compile(str(script), cfile=str(tmp_path / "compiled.pyc"), doraise=True)


#: A shell command is checked by the first rule whose pattern matches it.
COMMANDS: list[tuple[str, Callable[[str, Path], None]]] = [
    (r"pip install .*", check_install),
    (r"python -m pytest", check_pytest),
    (r'python -m pytest -m "not slow and not root and not browser"', check_fast_subset),
    (r"gunicorn -c demo_app/gunicorn_\w+\.py", check_demo_gunicorn),
    (r"python -m demo_app\.uvicorn_\w+", check_demo_uvicorn),
    (r"waitress-serve --listen=127\.0\.0\.1:8000 .* myapp:app", check_waitress),
    (r"(gunicorn|uvicorn|hypercorn) .*127\.0\.0\.1.* my(admin|asgi):app", check_logged_refusal),
    (
        r'(sudo "\$\(command -v flask-selfhost\)"|flask-selfhost|flask --app \S+ selfhost)'
        r" doctor.*",
        check_doctor,
    ),
    (r'sudo env "PATH=\$PATH" flask --app \S+ selfhost doctor.*', check_doctor),
    (r"flask-selfhost (check .*|--version)", check_cli),
    (r"flask --app \S+ selfhost status", check_cli),
    (r"(iptables|ip6tables|sysctl) .*", check_in_namespace),
    (r"(sphinx-build|python -m build|twine check) .*|python -m build", check_ci_runs_it),
    (r"tox", check_tox),
    (r'(sudo "\$\(command -v python\)" |python )benchmarks/\w+\.py', check_benchmark),
]


def check_command(line: str, tmp_path: Path) -> None:
    for pattern, check in COMMANDS:
        if re.fullmatch(pattern, line):
            check(line, tmp_path)
            return
    pytest.fail(f"no rule in tests/test_docs.py checks the command {line!r}")


SHELL_COMMANDS = [(block, line) for block in by_language("sh") for line in commands(block)]


@pytest.mark.parametrize(
    ("block", "line"), SHELL_COMMANDS, ids=[f"{b.where}:{line}" for b, line in SHELL_COMMANDS]
)
def test_shell_command(block, line, tmp_path):
    check_command(line, tmp_path)


# nginx ----------------------------------------------------------------------


@pytest.mark.parametrize("block", by_language("nginx"), ids=ids(by_language("nginx")))
def test_nginx_block_serves_the_guarded_app(block, tmp_path):
    require_nginx()
    body = re.fullmatch(r"\s*location / \{\n(.*)\}\s*", block.text, re.S)
    assert body, "an nginx block is one `location / { ... }`"
    app_port, proxy_port = free_port(), free_port()
    location = body[1].replace("127.0.0.1:8000", f"127.0.0.1:{app_port}")
    # A block for nginx's workers as www-data goes with the guard that trusts that user.
    user = "www-data" if '"user www-data;"' in location else "root"
    trusted = "user:www-data" if user == "www-data" else "127.0.0.1"
    app = f"tests.nginx:guarded_app(trusted_proxies={trusted!r})"
    args = ["-b", f"127.0.0.1:{app_port}", "--workers", "1", app]
    with (
        gunicorn(args, ("127.0.0.1", app_port), tmp_path),
        nginx_with(location, proxy_port, tmp_path, user),
    ):
        assert request("127.0.0.1", proxy_port, "/").status == 200
        # The Host line passes the browser's Host on: a rebinding name is refused.
        assert request("127.0.0.1", proxy_port, "/", headers={"Host": "evil.example"}).status == 403
        if user == "www-data":  # this process (root) writing nginx's header is not nginx
            forged = {"X-Forwarded-For": "127.0.0.1"}
            assert request("127.0.0.1", app_port, "/", headers=forged).status == 403


@contextlib.contextmanager
def nginx_with(location: str, port: int, tmp_path: Path, user: str = "root") -> Iterator[None]:
    # tests.nginx writes `proxy_pass UPSTREAM; HEADERS`: the block's own lines
    # already hold its proxy_pass, so it is passed as the headers part.
    upstream = re.search(r"proxy_pass (\S+);", location)[1]
    headers = re.sub(r"\s*proxy_pass \S+;[^\n]*", "", location)
    with nginx([("127.0.0.1", port)], upstream, headers, tmp_path / "nginx", user=user):
        yield


# haproxy ----------------------------------------------------------------------


@pytest.mark.parametrize("block", by_language("haproxy"), ids=ids(by_language("haproxy")))
def test_haproxy_block_serves_the_guarded_app(block, tmp_path):
    """An HAProxy block is its sections (``bind :80``, upstream
    ``127.0.0.1:8000``): run in front of a guarded gunicorn, it relays this
    host's request, and the Host it passes on keeps the rebinding defence."""
    require_commands("haproxy")
    app_port, proxy_port = free_port(), free_port()
    command = haproxy_command(block.text, [("127.0.0.1", proxy_port)], app_port, tmp_path)
    app = "tests.nginx:guarded_app(trusted_proxies='127.0.0.1')"
    args = ["-b", f"127.0.0.1:{app_port}", "--workers", "1", app]
    with (
        gunicorn(args, ("127.0.0.1", app_port), tmp_path),
        server_process(command, ("127.0.0.1", proxy_port), tmp_path, name="haproxy"),
    ):
        assert request("127.0.0.1", proxy_port, "/").status == 200
        assert request("127.0.0.1", proxy_port, "/", headers={"Host": "evil.example"}).status == 403


# ini (systemd units) ----------------------------------------------------------------


@pytest.mark.parametrize("block", by_language("ini"), ids=ids(by_language("ini")))
def test_systemd_unit_block(block):
    unit = configparser.ConfigParser(strict=True, interpolation=None)
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read_string(block.text)
    assert {"Unit", "Service", "Install"} <= set(unit.sections())
    command = shlex.split(unit["Service"]["ExecStart"])
    assert command[0].startswith(unit["Service"]["WorkingDirectory"]), "ExecStart by full path"
    for word in command[1:]:
        if word.endswith(".py"):  # a file named relative to WorkingDirectory: one of ours
            assert (ROOT / word).exists(), word


# text (output samples) -------------------------------------------------------------


def log_fields(line: str) -> dict[str, str | bool] | None:
    """The logfmt fields of a guard's line, from ``selfhost=`` on (a server's
    format may put a time, pid and level before it); ``None`` for another line."""
    start = line.find("selfhost=")
    return None if start < 0 else logfmt.parse(line[start:], strict=True, duplicates="error")


def logged(decision, method: str, path: str) -> str:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("flask_selfhost")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        log_decision(decision, method, path)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    return records[0].getMessage()


def check_log_line(line: str) -> None:
    fields = log_fields(line)
    assert fields, line
    remote, local, method, path = (
        str(fields[key]) for key in ("remote", "local", "method", "path")
    )
    environ = {
        **APACHE,  # a server that reports the local address: SERVER_ADDR is read
        "REMOTE_ADDR": remote,
        "SERVER_ADDR": local,
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
    }
    candidates = [judge_source(remote, local)]
    from flask_selfhost import evaluate

    candidates.append(evaluate({**environ, "HTTP_X_FORWARDED_FOR": "10.0.0.2"}))
    produced = [logged(decision, method, path) for decision in candidates]
    assert line[line.find("selfhost=") :] in produced, f"{line!r} is not what the guard logs"


def refusal_bodies() -> list[str]:
    def app(environ, start_response):
        start_response("200 OK", [])
        return [b""]

    client = Client(SelfHostMiddleware(app))
    requests = [  # (client address, headers)
        ("10.0.0.2", {}),
        ("127.0.0.1", {"Host": "evil.example:8000"}),
        ("127.0.0.1", {"X-Forwarded-For": "127.0.0.1"}),
        ("127.0.0.1", {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}),
    ]
    return [
        client.get("/", environ_base={"REMOTE_ADDR": remote}, headers=headers).text.strip()
        for remote, headers in requests
    ]


def check_announce(line: str) -> None:
    match = re.search(r"flask_selfhost: listening on (\[[^\]]+\]|[^:]+):(\d+): (.*)$", line)
    assert match, line
    host = match[1].strip("[]")
    kind, _ = classify_listener((host, int(match[2])))
    assert match[3] in {describe_listener(kind, guarded)[1] for guarded in (True, False)}, line


def check_doctor_sample(text: str) -> None:
    """Every line but the listener's, with its fix, and the result, is what
    the doctor prints for the rules, app and processes that the sample
    names; the listener line has its shape."""
    lines = text.splitlines()
    app = re.search(r"(demo_app:\w+)", text)[1]
    guarded = f"app: {app} is guarded by flask_selfhost." in text
    findings = []
    for line in lines:
        served = re.search(
            r"served by gunicorn \(pid ([\d, ]+)\)|gunicorn \(pid (\d+)\) was started with (\S+)\.",
            line,
        )
        if " app: " in line and served:
            pids = [int(pid) for pid in (served[1] or served[2]).split(", ")]
            argv = ("gunicorn", served[3] or app)
            listener = Listener(
                "127.0.0.1", 8000, 4, 1, "loopback", tuple((pid, "gunicorn") for pid in pids)
            )
            processes = {pid: Process(pid, "gunicorn", argv) for pid in pids}
            findings += served_findings(app, 8000, [listener], processes)[0]
    served_elsewhere = any(f.severity == "risky" for f in findings)
    scope = Question(8000, app, None if served_elsewhere else guarded)
    rules = [
        re.search(r"(-A (?:PREROUTING|INPUT) .*)$", line)[1]
        for line in lines
        if " nat: -A" not in line and " nat: " in line
    ]
    nat = nat_findings(
        parse_iptables_save("*nat\n" + "\n".join(rules) + "\nCOMMIT\n", 4), scope=scope
    )
    if any(finding.details.get(MAKES_REMOTE_LOCAL) for finding in nat):
        scope = replace(scope, bypass=SNAT_BYPASS)
    findings += nat
    for line in lines:
        if " route_localnet: " in line:
            interface = re.search(r"on interface (\S+):", line)[1]
            findings += route_localnet_findings({interface: "1\n"}, scope)
        elif re.search(r" app: demo_app:\w+ is (NOT )?guarded", line):
            wrapped = SelfHostMiddleware(Flask(app)) if guarded else Flask(app)
            findings += app_findings(app, wrapped)
    printed = render_text(findings).splitlines()
    for line in printed[:-1]:
        assert line in lines, f"the doctor prints {line!r}"
    for line in lines[:-1]:
        assert line in printed or " listener: " in line, f"the doctor does not print {line!r}"
    sample_result = lines[-1]
    assert sample_result == printed[-1] or (
        not any(f.details.get(REFUSED_BY_GUARD) for f in findings)
        and sample_result.split(" (exit")[0] == printed[-1].split(" (exit")[0]
    ), f"{sample_result!r} != {printed[-1]!r}"
    listener = [line for line in lines if " listener: " in line]
    for line in listener:
        shape = (
            r"ok {7}listener: 127\.0\.0\.1:8000 \(gunicorn, pid [\d, ]+\) listens on loopback .*"
        )
        assert re.fullmatch(shape, line), line


@pytest.mark.parametrize("block", by_language("text"), ids=ids(by_language("text")))
def test_output_sample_is_what_the_code_prints(block):
    text = block.text.strip()
    if text.startswith("Forbidden:"):
        assert text in refusal_bodies()
    elif "flask_selfhost: listening on" in text:
        for line in text.splitlines():
            check_announce(line)
    elif text.splitlines()[-1].startswith("Result: "):
        check_doctor_sample(text)
    elif text.startswith(test_architecture.HEADER):
        assert test_architecture.floors_from_page(text)  # its imports: test_architecture
    else:
        lines = text.splitlines()
        assert lines and all(log_fields(line) for line in lines), (
            f"{block.where}: an output sample no rule checks"
        )
        for line in lines:
            check_log_line(line)


# What the README says about running the tests ------------------------------------


def test_the_readme_names_what_the_tests_need_besides_root_and_packages():
    """The environment variables .ci/run exports for the server matrix, and
    what the test extra's source builds need."""
    readme = (ROOT / "README.md").read_text()
    exported = set(re.findall(r"^export (SELFHOST_\w+)=", CI, re.M)) - {"SELFHOST_NO_SKIP"}
    assert exported == {"SELFHOST_EVENTLET_PYTHON", "SELFHOST_MODWSGI_HOME"}
    assert all(f"`{name}`" in readme for name in exported), exported
    test_extra = configparser.ConfigParser()
    test_extra.read(ROOT / "setup.cfg")
    needs = test_extra["options.extras_require"]["test"]
    assert "uwsgi" in needs and "bjoern" in needs
    assert "C compiler" in readme and "`libev-dev`" in readme and " libev-dev" in CI


def test_the_server_matrix_skip_names_every_missing_prerequisite_at_once():
    """Without the two interpreters, one skip names both, each with the
    commands that make it: .ci/run's own."""
    unset = ("SELFHOST_NO_SKIP", "SELFHOST_EVENTLET_PYTHON", "SELFHOST_MODWSGI_HOME")
    env = {name: value for name, value in os.environ.items() if name not in unset}
    test = "tests/test_server_matrix.py::test_the_server_matrix"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", test],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")]
    for name in unset[1:]:
        assert f"export {name}=" in line, line
    assert "'gunicorn<24' 'eventlet>=0.40' flask" in line and "pip install flask" in line
    assert "'gunicorn<24' 'eventlet>=0.40' flask" in CI and '/bin/pip" install -q flask' in CI


def test_the_development_page_lists_the_packages_ci_installs():
    page = (ROOT / "docs" / "development.md").read_text()
    listed = re.search(r"- Debian packages: ([^;]+);", page)[1].replace("\n", " ")
    installed = re.search(r"apt-get install -y -qq ([^>]+)>", CI.replace("\\\n", " "))[1]
    assert set(listed.replace(",", " ").split()) == set(installed.split())
