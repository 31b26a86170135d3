"""Hostile pages and the app's own pages, in Chromium, Firefox and WebKit.

Every case runs in every engine (tests/browser.py), against both fronts (the
Flask demo under gunicorn, the FastAPI demo under uvicorn), guarded and, as
the control, unguarded: a hostile case must get through to the unguarded
app, or the test could not fail. Each request carries ``?case=NAME``; the
app's recorder prints its headers and the answer's status, and that record
is the verdict (the browser hides cross-site answers anyway). A failing case
prints what the engine sent.

The docs' engine table (docs/browsers.md) is rendered from these records and
checked against them by the last test; ``SELFHOST_WRITE_ENGINE_TABLE=1``
rewrites it from the run.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from .browser import (
    ALLOWED_NAME,
    ENGINES,
    TRUSTED_NAME,
    attacker_site,
    demo_server,
    engine,
    hosts_entries,
    hosts_writable,
    missing,
    rebinding_switch,
    refusing_proxy,
)
from .servers import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DOCS = ROOT / "docs" / "browsers.md"
FRONTS = ("wsgi", "asgi")

#: Opens a WebSocket, sends "act" once open; says whether it opened.
SOCKET = """
function drive(url) {
  return new Promise((resolve) => {
    const out = {opened: false, messages: []};
    let socket;
    try { socket = new WebSocket(url); } catch (error) { resolve({error: String(error)}); return; }
    socket.onopen = () => { out.opened = true; socket.send("act"); };
    socket.onmessage = (event) => {
      out.messages.push(JSON.parse(event.data).actions);
      if (out.messages.length === 2) { socket.close(); resolve(out); }
    };
    socket.onclose = (event) => { out.closed = event.code; resolve(out); };
    setTimeout(() => resolve(out), 5000);
  });
}
"""

#: The hostile page on another site: every subresource kind at once, each
#: tagged. ``$app`` is the app's origin.
ATTACK = """<!doctype html><title>free prizes</title>
<img src="$app/admin?case=img">
<script src="$app/api/status?case=script"></script>
<iframe src="$app/admin?case=iframe"></iframe>
<object data="$app/admin?case=object" type="text/html"></object>
<embed src="$app/admin?case=embed" type="text/html">
<iframe sandbox="allow-scripts" srcdoc="<script>fetch('$app/api/act?case=sandboxed',
  {method: 'POST', mode: 'no-cors', body: '{&quot;n&quot;: 1}'})</script>"></iframe>
<iframe name="sink"></iframe>
<a id="ping" href="/blank" target="sink" ping="$app/admin/act?case=ping">prize</a>
<script>
$socket
async function attack(ws) {
  const out = {};
  const quiet = (promise) => promise.then((r) => r.type, (e) => String(e));
  out.nocorsGet = await quiet(fetch("$app/api/status?case=nocors-get", {mode: "no-cors"}));
  out.nocorsPost = await quiet(fetch("$app/api/act?case=nocors-post",
    {method: "POST", mode: "no-cors", body: '{"n": 1}'}));
  out.corsGet = await quiet(fetch("$app/api/status?case=cors-get"));
  out.corsPost = await quiet(fetch("$app/api/act?case=cors-post",
    {method: "POST", body: '{"n": 1}'}));
  out.beacon = navigator.sendBeacon("$app/api/act?case=beacon", '{"n": 1}');
  new EventSource("$app/api/status?case=eventsource");
  document.getElementById("ping").click();
  if (ws) out.socket = await drive(ws + "/ws?case=websocket");
  return out;
}
</script>"""

FORM = """<!doctype html><form id="f" method="post" action="$action">
<input name="x" value="1"></form><script>document.getElementById("f").submit()</script>"""

FETCH_POST = """<!doctype html><script>fetch("$url", {method: "POST", mode: "no-cors",
  body: '{"n": 1}'})</script>"""

#: The own page's steps (and the rebinding page's, same-origin to the browser).
OWN = """
const tag = arguments[0];
const out = {};
try {
  const status = await fetch("/api/status?case=" + tag + "-read");
  out.read = status.status;
  const act = await fetch("/api/act?case=" + tag + "-fetch", {method: "POST",
    headers: {"Content-Type": "application/json"}, body: '{"n": 1}'});
  out.act = act.status;
} catch (error) { out.error = String(error); }
const ws = location.origin.replace(/^http/, "ws");
if (arguments[1]) out.socket = await drive(ws + "/ws?case=" + tag + "-ws");
const form = document.createElement("form");
form.method = "post"; form.action = "/admin/act?case=" + tag + "-form";
document.body.appendChild(form);
setTimeout(() => form.submit(), 0);
return out;
"""

HOSTILE = [
    "nocors-get", "nocors-post", "cors-get", "cors-post", "img", "script", "iframe",
    "object", "embed", "sandboxed", "beacon", "ping", "eventsource", "websocket",
    "form", "form307", "file", "zero",
    "rebind-read", "rebind-fetch", "rebind-ws", "rebind-form",
]  # fmt: skip
OWN_HOSTS = {"own-ip": "127.0.0.1", "own-localhost": "localhost", "own-name": ALLOWED_NAME}
WORKING = [f"{tag}-{step}" for tag in OWN_HOSTS for step in ("read", "fetch", "ws", "form")]
WORKING += ["trusted-fetch", "trusted-ws", "link"]
WEBSOCKET = {case for case in HOSTILE + WORKING if case.endswith(("ws", "websocket"))}

#: What an engine never sends (measured; the docs' table says so too).
NOT_SENT = {
    ("firefox", "ping"),
    ("firefox", "zero"),
    ("webkit", "zero"),
}

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


def substitute(template: str, **values: str) -> str:
    for key, value in values.items():
        template = template.replace(f"${key}", value)
    return template


def run_cases(browser, evil, app, tmp: Path) -> dict[str, list[dict]]:
    """Every case against ``app``; the requests it got, by case."""
    ws = app.origin.replace("http", "ws", 1) if app.asgi else ""
    mark = len(app.log())
    key = f"{browser.name}-{app.port}"
    evil.pages["/blank"] = "<!doctype html>"
    evil.pages[f"/attack-{key}"] = substitute(ATTACK, app=app.origin, socket=SOCKET)
    browser.open(evil.url(f"/attack-{key}"))
    browser.run("return await attack(arguments[0]);", ws)
    hostile = {"nocors-get", "nocors-post", "cors-get", "cors-post", "img", "script"}
    app.wait_for(mark, hostile | {"iframe", "beacon", "eventsource"}, timeout=4)

    evil.pages[f"/form-{key}"] = substitute(FORM, action=f"{app.origin}/admin/act?case=form")
    browser.open(evil.url(f"/form-{key}"))
    redirect = evil.redirect(f"{app.origin}/admin/act?case=form307")
    evil.pages[f"/form307-{key}"] = substitute(FORM, action=redirect)
    browser.open(evil.url(f"/form307-{key}"))
    page = tmp / f"file-{key}.html"
    page.write_text(substitute(FETCH_POST, url=f"{app.origin}/api/act?case=file"))
    browser.open(page.as_uri())
    zero = f"http://0.0.0.0:{app.port}/api/act?case=zero"
    evil.pages[f"/zero-{key}"] = substitute(FETCH_POST, url=zero)
    browser.open(evil.url(f"/zero-{key}"))
    app.wait_for(mark, {"form", "form307", "file"}, timeout=4)

    evil.pages["/cats"] = f"<!doctype html><title>cats</title><script>{SOCKET}</script>"
    with rebinding_switch(target=evil.port) as switch:
        browser.open(switch.url("/cats"))
        switch.rebind(app.port)  # the name now points at this host
        browser.run(OWN, "rebind", app.asgi)
        app.wait_for(mark, {"rebind-read", "rebind-fetch", "rebind-form"}, timeout=4)

    for tag, host in OWN_HOSTS.items():
        browser.open(f"http://{host}:{app.port}/admin?case={tag}-page")
        browser.run(f"{SOCKET}\n{OWN}", tag, app.asgi)
        app.wait_for(mark, {f"{tag}-form"}, timeout=4)

    evil.pages["/tool"] = f"<!doctype html><title>a trusted tool</title><script>{SOCKET}</script>"
    browser.open(evil.url("/tool", TRUSTED_NAME))
    trusted = """const out = {};
    try {
      const act = await fetch(arguments[0] + "/api/act?case=trusted-fetch", {method: "POST",
        headers: {"Content-Type": "application/json"}, body: '{"n": 1}'});
      out.act = await act.json();
    } catch (error) { out.error = String(error); }
    if (arguments[1]) out.socket = await drive(arguments[1] + "/ws?case=trusted-ws");
    return out;"""
    browser.run(trusted, app.origin, ws)

    # A link from the hostile page: a top-level GET navigation opens the app.
    evil.pages["/links"] = f'<a id="link" href="{app.origin}/admin?case=link">my admin</a>'
    browser.open(evil.url("/links"))
    browser.run('setTimeout(() => document.getElementById("link").click(), 0);')
    seen = app.wait_for(mark, {"trusted-fetch", "link"}, timeout=4)
    seen["actions"] = [{"count": app.actions()}]
    return seen


@pytest.fixture(scope="module", params=FRONTS)
def results(request, browser, confined, tmp_path_factory):
    """Both apps of a front through every case, once per engine."""
    evil = confined[1]
    options = {"allowed_hosts": [ALLOWED_NAME], "trusted_origins": [evil.url("", TRUSTED_NAME)]}
    tmp = tmp_path_factory.mktemp(f"{browser.name}-{request.param}")
    done: dict[str, dict[str, list[dict]]] = {}
    for guarded in (True, False):
        with demo_server(guarded, request.param == "asgi", tmp, options) as app:
            done["guarded" if guarded else "unguarded"] = run_cases(browser, evil, app, tmp)
    RESULTS[browser.name, request.param] = done
    return done


def shown(records: list[dict]) -> str:
    return json.dumps(records, indent=1)


def applies(case: str, front: str) -> bool:
    return front == "asgi" or case not in WEBSOCKET


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_page_is_refused_and_gets_through_unguarded(results, browser, case, request):
    front = request.node.callspec.params["results"]
    if not applies(case, front):
        return  # the WSGI demo has no WebSocket
    guarded, unguarded = results["guarded"].get(case, []), results["unguarded"].get(case, [])
    sent = f"guarded: {shown(guarded)}\nunguarded: {shown(unguarded)}"
    if (browser.name, case) in NOT_SENT:
        assert guarded == unguarded == [], sent
        return
    assert guarded and all(seen["status"] == 403 for seen in guarded), sent
    assert unguarded and any(seen["status"] < 400 for seen in unguarded), sent  # the control


@pytest.mark.parametrize("case", WORKING)
def test_own_pages_and_a_trusted_origin_work(results, browser, case, request):
    front = request.node.callspec.params["results"]
    if not applies(case, front):
        return
    guarded = results["guarded"].get(case, [])
    assert guarded and all(seen["status"] < 400 for seen in guarded), shown(guarded)


def test_only_the_own_pages_and_the_trusted_origin_acted(results, request):
    """The guarded app's counter: each own page's fetch and form (and its
    WebSocket's act under ASGI), and the trusted origin's; no hostile page's."""
    asgi = request.node.callspec.params["results"] == "asgi"
    expected = len(OWN_HOSTS) * (3 if asgi else 2) + (2 if asgi else 1)
    assert results["guarded"]["actions"] == [{"count": expected}]
    assert results["unguarded"]["actions"][0]["count"] > expected  # the hostile pages acted


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
    for case in HOSTILE + WORKING:
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
