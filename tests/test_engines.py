"""Hostile pages and the app's own pages, in Chromium, Firefox and WebKit.

Every case of tests/engine_cases.py runs in every engine (tests/browser.py),
against both fronts (the Flask demo under gunicorn, the FastAPI demo under
uvicorn, and its own WebSocket under daphne), guarded and, as the control,
unguarded: a refused case must get through to the unguarded app, or the
test could not fail. Each request carries ``?case=NAME``; the app's
recorder (tests/recorded_demo.py) prints its headers, the answer and the
guard's refusal lines, and that record is the verdict (the browser hides
cross-site answers anyway). A failing case prints what the engine sent.

The docs' engine table (docs/browsers.md) is rendered from these records and
checked against them by the last test; ``SELFHOST_WRITE_ENGINE_TABLE=1``
rewrites it from the run.
"""

from __future__ import annotations

import json
import os
import re

import pytest

from flask_selfhost.decision import PUBLIC_REASONS

from .attacker import attacker_site
from .browser import (
    ALLOWED_NAME,
    ENGINES,
    TRUSTED_NAME,
    engine,
    hosts_entries,
    hosts_writable,
    missing,
    refusing_proxy,
)
from .engine_cases import (
    CASES,
    CONTROL,
    NOT_SENT,
    POLICIES,
    WEBSOCKET,
    WORKS,
    applies,
    expected,
    run_cases,
    run_daphne_cases,
)
from .recorded_demo import demo_server
from .servers import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DOCS = ROOT / "docs" / "browsers.md"
FRONTS = ("wsgi", "asgi")
#: Option names a refusal's body must not show (they go to the log only).
OPTIONS = ("allowed_hosts", "trusted_origins", "check_cross_site")

RESULTS: dict[tuple[str, str], dict[str, dict[str, list[dict]]]] = {}


@pytest.fixture(scope="session")
def confined():
    """The test's names in /etc/hosts, and the proxy every engine must use."""
    if not hosts_writable():
        pytest.skip("needs to write /etc/hosts (root): the engines resolve the test's names there")
    with hosts_entries(), refusing_proxy() as proxy, attacker_site() as evil:
        yield proxy[0], evil


@pytest.fixture(scope="module", params=ENGINES)
def browser(request, confined):
    lacking = missing(request.param)
    if lacking:
        pytest.skip(f"{request.param} needs {', '.join(lacking)} (.ci/run installs them)")
    with engine(request.param, confined[0]) as driven:
        yield driven


@pytest.fixture(scope="module", params=FRONTS)
def results(request, browser, confined, tmp_path_factory):
    """Both apps of a front through every case, once per engine (and, for
    ASGI, the own page's WebSocket under daphne)."""
    evil = confined[1]
    options = {"allowed_hosts": [ALLOWED_NAME], "trusted_origins": [evil.url("", TRUSTED_NAME)]}
    tmp = tmp_path_factory.mktemp(f"{browser.name}-{request.param}")
    asgi = request.param == "asgi"
    done: dict[str, dict[str, list[dict]]] = {}
    for guarded in (True, False):
        with demo_server(guarded, "uvicorn" if asgi else "gunicorn", tmp, options) as app:
            done["guarded" if guarded else "unguarded"] = run_cases(browser, evil, app, tmp)
    if asgi:
        with demo_server(True, "daphne", tmp, options) as app:
            done["guarded"].update(run_daphne_cases(browser, app))
    RESULTS[browser.name, request.param] = done
    return done


def shown(records: list[dict]) -> str:
    """What the engine sent, for a failing case's message."""
    return json.dumps(records, indent=1)


def refused_as(seen: dict, rule: str) -> list[str]:
    """What is wrong with ``seen`` as a refusal by ``rule`` (empty: nothing)."""
    wrong = []
    if seen["status"] != 403:
        wrong.append(f"status {seen['status']}")
    line = f"selfhost=refused method={seen['method']} path={seen['path']} remote=127.0.0.1 "
    if not any(text.startswith(line) and f" rule={rule} " in text for text in seen["refusals"]):
        wrong.append(f"no log line {line}... rule={rule}")
    if "body" in seen and seen["answer"]:  # an HTTP refusal (a WebSocket's may have none)
        if f"({PUBLIC_REASONS[rule]})" not in seen["body"] or any(
            option in seen["body"] for option in OPTIONS
        ):
            wrong.append("body is not the fixed text of the rule")
        if seen["answer"].get("cache-control") != "no-store":
            wrong.append("no Cache-Control: no-store")
        if any(name.startswith("access-control-") for name in seen["answer"]):
            wrong.append("a CORS header on a refusal")
    return wrong


def varies_rightly(seen: dict) -> bool:
    """An answer decided from ``Origin`` or ``Sec-Fetch-Site`` says so in
    ``Vary`` (a granted preflight: ``Origin`` and the requested method and
    headers); one to a request with neither carries no ``Vary: Origin``."""
    vary = seen["answer"].get("vary", "")
    if "origin" not in seen["headers"] and "sec-fetch-site" not in seen["headers"]:
        return "Origin" not in vary
    if seen["method"] == "OPTIONS":
        return "Origin" in vary and "Access-Control-Request-Method" in vary
    return "Origin, Sec-Fetch-Site" in vary


@pytest.mark.parametrize("case", CASES)
def test_each_case_gets_the_answer_of_its_engine(results, browser, case, request):
    """A refused case: 403 from the guarded app, by the expected rule, its
    log line and fixed body; and, the control, through to the unguarded app.
    A working case: through, with the right ``Vary`` and no refusal line."""
    front = request.node.callspec.params["results"]
    if not applies(case, front):
        return  # the WSGI demo has no WebSocket
    guarded, unguarded = results["guarded"].get(case, []), results["unguarded"].get(case, [])
    sent = f"guarded: {shown(guarded)}\nunguarded: {shown(unguarded)}"
    outcome = expected(browser.name, case)
    if outcome == NOT_SENT:
        assert guarded == unguarded == [], sent
        return
    assert guarded, sent
    if outcome == WORKS:
        for seen in guarded:
            assert seen["status"] < 400 and seen["refusals"] == [], sent
            assert seen["answer"] == {} or varies_rightly(seen), sent  # a WebSocket's: none
        return
    for seen in guarded:
        assert refused_as(seen, outcome) == [], sent
    control = CONTROL.get((case, front))
    assert unguarded, sent
    if control is None:
        assert any(seen["status"] < 400 for seen in unguarded), sent
    else:
        assert {seen["status"] for seen in unguarded} == control, sent


def test_a_link_from_another_site_opens_the_app_with_its_referrer(results, confined):
    (seen, *_) = results["guarded"]["link"]
    assert seen["status"] == 200, shown([seen])
    assert seen["headers"].get("referer") == confined[1].url("/"), shown([seen])


@pytest.mark.parametrize("tag", POLICIES)
def test_a_referrer_policy_decides_the_own_forms_origin(results, tag):
    """``no-referrer`` makes the own form send ``Origin: null`` (what a
    sandboxed page sends) on every URL, while the same page's fetch sends its
    own origin; only a loopback URL adds ``Sec-Fetch-Site: same-origin``.
    The refusal's log names the fix."""
    host, policy, _ = POLICIES[tag]
    form, fetch = (results["guarded"][f"{tag}-{step}"][0] for step in ("form", "fetch"))
    records = [form, fetch]
    own = "http://" + form["headers"]["host"]
    origin = "null" if policy == "no-referrer" else own
    assert form["headers"].get("origin") == origin, shown(records)
    assert fetch["headers"].get("origin") == own, shown(records)
    loopback = host != ALLOWED_NAME
    site = "same-origin" if loopback else None
    assert form["headers"].get("sec-fetch-site") == site, shown(records)
    assert fetch["headers"].get("sec-fetch-site") == site, shown(records)
    if policy == "no-referrer" and not loopback:
        (line,) = form["refusals"]
        assert "Referrer-Policy: no-referrer" in line and "strict-origin-when-cross-origin" in line


def test_only_the_requests_let_through_acted(results):
    """The guarded app's counter moved by exactly the actions it let through
    (each POST to an action, each WebSocket's one "act"); the unguarded
    app's by more: the hostile pages acted there."""
    through = [
        seen
        for case, records in results["guarded"].items()
        if case != "actions" and not case.startswith("daphne-")
        for seen in records
        if seen["status"] < 400
    ]
    acted = sum(
        (seen["method"] == "POST" and seen["path"] in ("/api/act", "/admin/act"))
        or seen["status"] == 101
        for seen in through
    )
    assert acted >= 10, shown(through)
    assert results["guarded"]["actions"] == [{"count": acted}], shown(through)
    assert results["unguarded"]["actions"][0]["count"] > acted


# ------------------------------------------------------------ the docs' table


def origin_kind(headers: dict[str, str]) -> str:
    origin = headers.get("origin")
    if origin is None:
        return "-"
    if origin == "null":
        return "null"
    match = re.match(r"http://([^:/]+)", origin)
    return match.group(1) if match else origin


def cell(records: list[dict]) -> str:
    """What an engine sent for a case, and the guard's answer."""
    if not records:
        return "not sent"
    seen = records[0]
    headers = seen["headers"]
    fetch = "/".join(headers.get(f"sec-fetch-{k}", "-") for k in ("site", "mode", "dest"))
    return f"{seen['method']} {origin_kind(headers)} {fetch} → {seen['status']}"


def render() -> str:
    lines = [
        "| case | " + " | ".join(ENGINES) + " |",
        "| --- |" + " --- |" * len(ENGINES),
    ]
    for case in CASES:
        front = "asgi" if case in WEBSOCKET else "wsgi"
        cells = [cell(RESULTS[name, front]["guarded"].get(case, [])) for name in ENGINES]
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def test_z_the_docs_table_is_this_run():
    """Last: every engine and front has run (a skip above skips this too)."""
    ran = {(name, front) for name in ENGINES for front in FRONTS}
    if not ran <= RESULTS.keys():
        pytest.skip(f"the table needs every engine and front; ran {sorted(RESULTS)}")
    table = render()
    text = DOCS.read_text()
    pattern = r"(<!-- engine-table:start -->\n)(.*?)(<!-- engine-table:end -->)"
    if os.environ.get("SELFHOST_WRITE_ENGINE_TABLE") == "1":
        DOCS.write_text(re.sub(pattern, lambda m: m[1] + table + m[3], text, flags=re.DOTALL))
        text = DOCS.read_text()
    block = re.search(pattern, text, re.DOTALL)
    assert block is not None, "docs/browsers.md has no engine-table markers"
    assert block[2] == table, table
