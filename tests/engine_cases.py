"""The browser cases: the pages, what each engine is made to do, and what
the guard must answer.

Each request a case makes carries ``?case=NAME``, so that the app's recorder
(tests/recorded_demo.py) files it under that name. :data:`REFUSED` names the cases
the guarded app must refuse and the rule that must do it; :data:`WORKING`
those it must let through; :func:`expected` gives one engine's answer for a
case, where an engine legitimately behaves otherwise (measured; the docs'
engine table shows it). :func:`run_cases` drives one engine through all of
them against one app.
"""

from __future__ import annotations

from pathlib import Path

from .attacker import AttackerSite, rebinding_switch
from .browser import ALLOWED_NAME, TRUSTED_NAME, Engine
from .recorded_demo import DemoServer

HOST, CROSS_SITE, PREFLIGHT = "host", "cross-site", "preflight"
WORKS, NOT_SENT = "works", "not sent"

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
  out.nocorsForm = await quiet(fetch("$app/admin/act?case=nocors-form",
    {method: "POST", mode: "no-cors", body: new URLSearchParams({x: "1"})}));
  out.corsGet = await quiet(fetch("$app/api/status?case=cors-get"));
  out.corsPost = await quiet(fetch("$app/api/act?case=cors-post",
    {method: "POST", body: '{"n": 1}'}));
  out.preflight = await quiet(fetch("$app/api/act?case=preflight", {method: "POST",
    headers: {"Content-Type": "application/json"}, body: '{"n": 1}'}));
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

#: The own page under a referrer policy (from ``<meta name="referrer">`` when
#: the third argument is set): a JSON POST with fetch, then its form.
UNDER_POLICY = """
const [tag, policy, meta] = arguments;
if (meta) {
  const element = document.createElement("meta");
  element.name = "referrer"; element.content = policy;
  document.head.appendChild(element);
}
const out = {};
try {
  const act = await fetch("/api/act?case=" + tag + "-fetch", {method: "POST",
    headers: {"Content-Type": "application/json"}, body: '{"n": 1}'});
  out.act = act.status;
} catch (error) { out.error = String(error); }
const form = document.createElement("form");
form.method = "post"; form.action = "/admin/act?case=" + tag + "-form";
document.body.appendChild(form);
setTimeout(() => form.submit(), 0);
return out;
"""

TRUSTED = """const out = {};
try {
  const act = await fetch(arguments[0] + "/api/act?case=trusted-fetch", {method: "POST",
    headers: {"Content-Type": "application/json"}, body: '{"n": 1}'});
  out.act = await act.json();
} catch (error) { out.error = String(error); }
if (arguments[1]) out.socket = await drive(arguments[1] + "/ws?case=trusted-ws");
return out;"""

OWN_HOSTS = {"own-ip": "127.0.0.1", "own-localhost": "localhost", "own-name": ALLOWED_NAME}
#: The own page under a referrer policy: tag -> (host, policy, from <meta>).
#: ``no-referrer`` on a plain-http name that is not loopback makes every
#: engine send ``Origin: null`` and no ``Sec-Fetch-*`` with the form: refused,
#: with the fix in the log. Other policies there, and any on loopback, work.
POLICIES = {
    "noref-name": (ALLOWED_NAME, "no-referrer", False),
    "noref-meta": (ALLOWED_NAME, "no-referrer", True),
    "strict-name": (ALLOWED_NAME, "strict-origin-when-cross-origin", False),
    "sameorigin-name": (ALLOWED_NAME, "same-origin", False),
    "noref-ip": ("127.0.0.1", "no-referrer", False),
    "noref-localhost": ("localhost", "no-referrer", False),
}
#: Under daphne, whose WebSocket scope has no ``scheme``: the own page's WebSocket.
DAPHNE_HOSTS = {"daphne-ip": "127.0.0.1", "daphne-localhost": "localhost"}

#: Another site's pages: every kind of request a page can make.
CROSS_SITE_CASES = [
    "nocors-get", "nocors-post", "nocors-form", "cors-get", "cors-post", "img", "script",
    "iframe", "object", "embed", "sandboxed", "beacon", "ping", "eventsource", "websocket",
    "form", "form307", "file",
]  # fmt: skip
#: What the guarded app must refuse, and the rule its log must name.
REFUSED = {
    **dict.fromkeys(CROSS_SITE_CASES, CROSS_SITE),
    "preflight": PREFLIGHT,  # an untrusted origin's preflight: 403, no CORS header
    "zero": HOST,  # Host 0.0.0.0
    **dict.fromkeys(["rebind-read", "rebind-fetch", "rebind-ws", "rebind-form"], HOST),
    "rebind-page": HOST,  # the rebound name opened in the window: the refusal's own text
    "noref-name-form": CROSS_SITE,
    "noref-meta-form": CROSS_SITE,
}
WORKING = [f"{tag}-{step}" for tag in OWN_HOSTS for step in ("page", "read", "fetch", "ws", "form")]
WORKING += ["trusted-fetch", "trusted-ws", "link"]
WORKING += [f"{tag}-{step}" for tag in POLICIES for step in ("fetch", "form")]
WORKING = [case for case in WORKING if case not in REFUSED]
WORKING += [f"{tag}-ws" for tag in DAPHNE_HOSTS]
CASES = [*REFUSED, *WORKING]
WEBSOCKET = {case for case in CASES if case.endswith(("-ws", "websocket"))}

#: Where an engine behaves otherwise (measured; the docs' table shows it):
#: Firefox sends no ``<a ping>``, only Chromium connects to 0.0.0.0.
DIFFERENCES = {
    ("firefox", "ping"): NOT_SENT,
    ("firefox", "zero"): NOT_SENT,
    ("webkit", "zero"): NOT_SENT,
}

#: What the unguarded app answers a refused case (the control), where not
#: any status below 400: the preflight reaches the app itself, which Flask
#: answers (its automatic OPTIONS) and FastAPI does not (no OPTIONS route).
CONTROL = {("preflight", "wsgi"): {200}, ("preflight", "asgi"): {405}}


def expected(engine: str, case: str) -> str:
    """``works``, ``not sent``, or the rule that refuses ``case`` in ``engine``."""
    return DIFFERENCES.get((engine, case), REFUSED.get(case, WORKS))


def applies(case: str, front: str) -> bool:
    """WebSocket cases are the ASGI front's: the Flask demo has none."""
    return front == "asgi" or case not in WEBSOCKET


def substitute(template: str, **values: str) -> str:
    for key, value in values.items():
        template = template.replace(f"${key}", value)
    return template


def run_cases(browser: Engine, evil: AttackerSite, app: DemoServer, tmp: Path) -> dict:
    """Every case against ``app``; the requests it got, by case."""
    ws = app.origin.replace("http", "ws", 1) if app.asgi else ""
    mark = len(app.log())
    key = f"{browser.name}-{app.port}"
    evil.pages["/blank"] = "<!doctype html>"
    evil.pages[f"/attack-{key}"] = substitute(ATTACK, app=app.origin, socket=SOCKET)
    browser.open(evil.url(f"/attack-{key}"))
    browser.run("return await attack(arguments[0]);", ws)
    hostile = {"nocors-get", "nocors-post", "nocors-form", "cors-get", "cors-post", "img"}
    app.wait_for(mark, hostile | {"script", "iframe", "beacon", "eventsource"}, timeout=4)

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
        browser.open(switch.url("/admin?case=rebind-page"))

    for tag, host in OWN_HOSTS.items():
        browser.open(f"http://{host}:{app.port}/admin?case={tag}-page")
        browser.run(f"{SOCKET}\n{OWN}", tag, app.asgi)
        app.wait_for(mark, {f"{tag}-form"}, timeout=4)

    for tag, (host, policy, meta) in POLICIES.items():
        query = f"case={tag}-page" + ("" if meta else f"&policy={policy}")
        browser.open(f"http://{host}:{app.port}/admin?{query}")
        browser.run(UNDER_POLICY, tag, policy, meta)
        app.wait_for(mark, {f"{tag}-form"}, timeout=4)

    evil.pages["/tool"] = f"<!doctype html><title>a trusted tool</title><script>{SOCKET}</script>"
    browser.open(evil.url("/tool", TRUSTED_NAME))
    browser.run(TRUSTED, app.origin, ws)

    # A link from the hostile page: a top-level GET navigation opens the app.
    evil.pages["/links"] = f'<a id="link" href="{app.origin}/admin?case=link">my admin</a>'
    browser.open(evil.url("/links"))
    browser.run('setTimeout(() => document.getElementById("link").click(), 0);')
    seen = app.wait_for(mark, {"trusted-fetch", "link"}, timeout=4)
    seen["actions"] = [{"count": app.actions()}]
    assert "Traceback" not in app.log(), app.log()[-3000:]  # the app never failed
    return seen


def run_daphne_cases(browser: Engine, app: DemoServer) -> dict:
    """The own page's WebSocket, under daphne."""
    mark = len(app.log())
    for tag, host in DAPHNE_HOSTS.items():
        browser.open(f"http://{host}:{app.port}/admin?case={tag}-page")
        browser.run(
            f"{SOCKET}\nreturn await drive(arguments[0]);",
            f"ws://{host}:{app.port}/ws?case={tag}-ws",
        )
    seen = app.wait_for(mark, {f"{tag}-ws" for tag in DAPHNE_HOSTS}, timeout=4)
    assert "Traceback" not in app.log(), app.log()[-3000:]
    return seen
