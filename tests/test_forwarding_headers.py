"""One list of forwarding headers, and every front refuses each of them.

The threat: a header that one front counts as forwarding and another does
not is a way in through the other front. A proxy on this host that names
its client in that header relays every client as a loopback request, and
the front that does not know the header grants it as local.

So the list is written once (:data:`flask_selfhost.forwarding_syntax.FORWARDING_HEADERS`)
and every front derives its spelling from it. These tests send each header
of the list from loopback to every front, with its memory of grants cold
and warm (after a plain local request, so that the fast paths are asked),
and check the refusal's rule. The WSGI fast path writes its keys out (a set
test measured slower), so they are held to the list exactly. The ASGI fast
path passes only headers no rule reads, none of them on the list. A copy
of the package with a made-up header added to the list shows that
everything but the written-out fast path follows the list by itself.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("quart", reason="needs quart (the test extra installs it)")
pytest.importorskip("fastapi", reason="needs fastapi (the test extra installs it)")

from werkzeug.test import EnvironBuilder

import flask_selfhost
from flask_selfhost import forwarded
from flask_selfhost.asgi import UNJUDGED_HEADERS
from flask_selfhost.forwarding_syntax import (
    ASGI_CLIENT_NAMES,
    ASGI_NAMES,
    CLIENT_HEADERS,
    ENVIRON_KEYS,
    FORWARDING_HEADERS,
)
from flask_selfhost.scope import JUDGED_HEADERS, facts_from_scope

from .forwarding_fronts import OTHER_FRONTS, REMEMBERING_FRONTS, outcome, scope

#: Scopes written by hand name connections that do not exist (see the fixture).
pytestmark = pytest.mark.usefixtures("made_up_connections")

REPOSITORY = Path(__file__).resolve().parent.parent
PACKAGE = Path(flask_selfhost.__file__).resolve().parent

REFUSED = {"status": 403, "allowed": False, "rule": "forwarded", "reason": forwarded.UNTRUSTED}


# Every front, every header ------------------------------------------------


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
@pytest.mark.parametrize("front", REMEMBERING_FRONTS)
@pytest.mark.parametrize("header", FORWARDING_HEADERS)
def test_every_front_refuses_every_forwarding_header_from_loopback(header, front, warm):
    result = outcome(front, header, warm)
    if warm:  # the plain request was granted and remembered: the fast path is asked
        assert (result.pop("warm_status"), result.pop("remembered")) == (200, True)
    assert result == REFUSED


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
@pytest.mark.parametrize("header", FORWARDING_HEADERS)
def test_the_fastapi_dependency_refuses_every_forwarding_header(header, warm):
    result = outcome("fastapi", header, warm)
    if warm:
        assert (result.pop("warm_status"), result.pop("remembered")) == (200, None)
    assert result == REFUSED


@pytest.mark.parametrize("front", [f for f in OTHER_FRONTS if f != "fastapi"])
@pytest.mark.parametrize("header", FORWARDING_HEADERS)
def test_the_rules_refuse_every_forwarding_header(header, front):
    result = outcome(front, header, warm=False)
    assert result == {key: value for key, value in REFUSED.items() if key != "status"}


# The derived spellings ------------------------------------------------------


def test_the_environ_keys_are_the_keys_a_wsgi_server_makes():
    assert len(ENVIRON_KEYS) == len(FORWARDING_HEADERS)
    for name, key in zip(FORWARDING_HEADERS, ENVIRON_KEYS, strict=True):
        environ = EnvironBuilder("/", headers={name: "127.0.0.1"}).get_environ()
        assert [k for k in environ if k.startswith("HTTP_") and k != "HTTP_HOST"] == [key]


def test_the_asgi_names_are_the_names_a_server_sends():
    """ASGI servers send header names lowercased (the spec requires it)."""
    assert {name.lower().encode("ascii") for name in FORWARDING_HEADERS} == ASGI_NAMES
    assert {name.lower().encode("ascii") for name in CLIENT_HEADERS} == ASGI_CLIENT_NAMES
    assert ASGI_CLIENT_NAMES < ASGI_NAMES
    assert set(CLIENT_HEADERS) == {"X-Real-IP", "CF-Connecting-IP", "True-Client-IP"} | {
        "X-Client-IP",
        "X-Cluster-Client-IP",
        "Fastly-Client-IP",
    }


def test_the_threat_model_names_every_forwarding_header():
    text = (REPOSITORY / "docs" / "threat-model.md").read_text()
    paragraph = text[text.index("- a request that carries a forwarding header") :]
    paragraph = " ".join(paragraph[: paragraph.index("\n- ")].split())
    for name in FORWARDING_HEADERS:
        suffix = name.removeprefix("X-Forwarded-")
        assert f"`{name}`" in paragraph or f"`-{suffix}`" in paragraph, name


# The WSGI fast path's written-out keys ---------------------------------------

#: What the WSGI fast path tests besides the forwarding headers.
FAST_PATH_ALSO = {"PROXY_PROTOCOL"}


def fast_path_keys(middleware_source: str) -> set[str]:
    """The keys of every ``"KEY" not in environ`` test in the guarded
    callable that ``guard_wsgi_app`` builds."""
    tree = ast.parse(middleware_source)
    builder = next(
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name == "guard_wsgi_app"
    )
    guarded = next(
        node
        for node in ast.walk(builder)
        if isinstance(node, ast.FunctionDef) and node.name == "guarded"
    )
    keys = set()
    for node in ast.walk(guarded):
        if (
            isinstance(node, ast.Compare)
            and len(node.ops) == 1
            and isinstance(node.ops[0], ast.NotIn)
            and isinstance(node.comparators[0], ast.Name)
            and node.comparators[0].id == "environ"
        ):
            assert isinstance(node.left, ast.Constant) and type(node.left.value) is str
            keys.add(node.left.value)
    return keys


def fast_path_mismatch(middleware_source: str, environ_keys: list[str]) -> tuple[set, set]:
    """``(missing, extra)``: keys the WSGI fast path should test and does
    not, and keys it tests that are neither forwarding headers nor
    :data:`FAST_PATH_ALSO`."""
    written = fast_path_keys(middleware_source)
    expected = set(environ_keys) | FAST_PATH_ALSO
    return expected - written, written - expected


MIDDLEWARE = PACKAGE / "middleware.py"


def test_the_wsgi_fast_path_tests_exactly_the_forwarding_headers():
    assert fast_path_mismatch(MIDDLEWARE.read_text(), list(ENVIRON_KEYS)) == (set(), set())


def test_the_fast_path_check_sees_a_missing_or_an_extra_key():
    source = MIDDLEWARE.read_text()
    line = '            and "HTTP_X_REAL_IP" not in environ\n'
    assert source.count(line) == 1
    without = source.replace(line, "")
    assert fast_path_mismatch(without, list(ENVIRON_KEYS)) == ({"HTTP_X_REAL_IP"}, set())
    extra = source.replace(line, line + '            and "HTTP_X_OTHER" not in environ\n')
    assert fast_path_mismatch(extra, list(ENVIRON_KEYS)) == (set(), {"HTTP_X_OTHER"})


# The ASGI fast path's allowlist -----------------------------------------------

#: The headers the rules read besides the forwarding headers (lowercase).
JUDGED = {
    b"host",
    b"origin",
    b"sec-fetch-site",
    b"sec-fetch-mode",
    b"sec-fetch-dest",
    b"access-control-request-method",
    b"access-control-request-headers",
    b"access-control-request-private-network",
}


def what_the_rules_see(headers: list[tuple[bytes, bytes]]):
    request = scope(None)
    request["headers"] = [*request["headers"], *headers]
    return facts_from_scope(request)._replace(connection=None)


BROWSER = [(b"origin", b"http://localhost:8000"), (b"sec-fetch-site", b"same-origin")]
VALUES = [b"127.0.0.1", b"for=127.0.0.1", b"http://evil.example", b"cross-site", b"GET"]


def test_the_asgi_fast_path_passes_no_header_a_rule_reads():
    # What the ASGI adapter keeps (and its fast path looks at) is what the rules read.
    assert JUDGED | ASGI_NAMES == JUDGED_HEADERS
    assert UNJUDGED_HEADERS.isdisjoint(ASGI_NAMES)
    assert UNJUDGED_HEADERS.isdisjoint(JUDGED)
    for base in ([], BROWSER):
        seen = what_the_rules_see(base)
        for name in UNJUDGED_HEADERS:
            for value in VALUES:
                assert what_the_rules_see([*base, (name, value)]) == seen, name
        # The judged names, read from what the rules see: each one shows.
        for name in JUDGED | ASGI_NAMES:
            if any(existing == name for existing, _ in base):
                continue
            changed = [what_the_rules_see([*base, (name, value)]) != seen for value in VALUES]
            assert any(changed), name


# A header added to the list ------------------------------------------------------

MADE_UP = "X-Made-Up-Client"
MADE_UP_KEY = "HTTP_X_MADE_UP_CLIENT"

#: Run on the changed copy: every front's answer to a request carrying MADE_UP.
ON_THE_COPY = f"""
import json
import os
import flask_selfhost
from flask_selfhost import peer_socket

# Scopes written by hand name connections that do not exist: the kernel
# vouches for them here, as tests/conftest.py's made_up_connections does.
from flask_selfhost.facts import PeerOwner
peer_socket.check_client = lambda peer, peer_port, local, local_port: peer_socket.Verdict(
    True, peer_socket.HELD, "", PeerOwner(os.geteuid(), 1)
)
from flask_selfhost.forwarding_syntax import ENVIRON_KEYS
from tests.forwarding_fronts import FRONTS, REMEMBERING_FRONTS, outcome

outcomes = {{}}
for front in FRONTS:
    for warm in (False, True) if front in REMEMBERING_FRONTS + ("fastapi",) else (False,):
        outcomes[f"{{front}} {{'warm' if warm else 'cold'}}"] = outcome(front, {MADE_UP!r}, warm)
found = {{"package": flask_selfhost.__file__, "keys": ENVIRON_KEYS, "outcomes": outcomes}}
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def changed_copy(tmp_path_factory) -> Path:
    """This package, with MADE_UP added to the one list and nothing else changed."""
    root = tmp_path_factory.mktemp("changed-list")
    shutil.copytree(PACKAGE, root / "flask_selfhost", ignore=shutil.ignore_patterns("__pycache__"))
    syntax = root / "flask_selfhost" / "forwarding_syntax.py"
    text = syntax.read_text()
    last = '    "Fastly-Client-IP": True,\n'
    assert text.count(last) == 1
    syntax.write_text(text.replace(last, f'{last}    "{MADE_UP}": True,\n'))
    return root


def test_a_header_added_to_the_list_is_refused_by_every_front(changed_copy):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(changed_copy), str(REPOSITORY)])}
    run = subprocess.run(
        [sys.executable, "-c", ON_THE_COPY],
        cwd=changed_copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    assert Path(found["package"]).resolve().parent == (changed_copy / "flask_selfhost").resolve()
    assert MADE_UP_KEY in found["keys"]
    outcomes = found["outcomes"]
    assert len(outcomes) == 2 * len(REMEMBERING_FRONTS) + 2 + 2
    for name, result in outcomes.items():
        if name.endswith("warm"):
            assert result.pop("warm_status") == 200, name
            result.pop("remembered")
        if name in ("wsgi warm", "flask warm"):
            # The written-out fast path alone does not follow the list: the
            # check below is what catches it.
            assert (result["allowed"], result["rule"]) == (True, "source"), name
        elif name in ("evaluate cold", "judge cold"):
            assert result == {k: v for k, v in REFUSED.items() if k != "status"}, name
        else:
            assert result == REFUSED, name
    middleware = (changed_copy / "flask_selfhost" / "middleware.py").read_text()
    assert fast_path_mismatch(middleware, found["keys"]) == ({MADE_UP_KEY}, set())
