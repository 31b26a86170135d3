"""A browser on this host, driven by a malicious page, against the demo app.

Real pieces only: Debian's headless Chromium (through Playwright), the demo
app under gunicorn on a loopback port, the attacker's pages on another
loopback server. Each attack runs against the guarded app and, as a control,
the same app unguarded, where it must succeed. The verdict is read on the
app's side: its action counter, its access log and flask_selfhost's log.

(a) DNS rebinding: the attacker's page, loaded from ``http://rebind.test:PORT``,
    reaches the app at the same origin once the name points here
    (:class:`tests.browser.RebindingSwitch`): it must not read or act.
(b) a page on ``http://evil.test:OTHER`` must not act through a form POST or
    ``fetch(..., {mode: "no-cors"})``, nor make the app answer a CORS read.
(c) the app's own pages on ``127.0.0.1`` and ``localhost`` work, forms included.
(d) a link from the attacker's page opens the app (a top-level navigation).
(e) a page on ``http://evil.test:OTHER`` cannot frame the app (clickjacking).

Chromium 142+ also asks the user before a public page reaches loopback (Local
Network Access). These attacks come from loopback pages, as in Firefox and
Safari, which have no such check: the guard must hold without it.
"""

from __future__ import annotations

import json
import re
import time
from string import Template

import pytest

from .playwright_pages import demo_server, rebinding_switch

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module", params=[True, False], ids=["guarded", "unguarded"])
def app(request, tmp_path_factory):
    with demo_server(request.param, tmp_path_factory.mktemp("gunicorn")) as server:
        yield server


def access_statuses(log: str, method: str, path: str) -> list[int]:
    """Statuses of the browser's ``METHOD PATH`` requests in an access log, in order
    (the test's own reads, made without a User-Agent, are left out)."""
    line = rf'"{method} {re.escape(path)} HTTP/1\.1" (\d{{3}}) .*HeadlessChrome'
    return [int(status) for status in re.findall(line, log)]


def settled_log(app, mark: int, *expected: tuple[str, str, int]) -> str:
    """The app's log since ``mark`` (a length), once it shows ``count`` browser
    requests for each ``(method, path, count)``: gunicorn writes an access
    line just after the answer, so the browser may have it first."""
    deadline = time.monotonic() + 10
    while True:
        log = app.log()[mark:]
        done = all(len(access_statuses(log, m, p)) >= n for m, p, n in expected)
        if done or time.monotonic() > deadline:
            return log
        time.sleep(0.05)


# ------------------------------------------------------------------ (a)

REBINDING_PAGE = """<!doctype html>
<title>cute cats</title>
<form method="post" action="/admin/act"><button id="go">See more cats</button></form>
<script>
async function attack() {
  const out = {};
  try {
    const reply = await fetch("/api/status");
    out.readStatus = reply.status;
    out.readBody = await reply.text();
  } catch (error) { out.readError = String(error); }
  try {
    const reply = await fetch("/api/act", {method: "POST",
      headers: {"Content-Type": "application/json"}, body: '{"n": 1}'});
    out.actStatus = reply.status;
  } catch (error) { out.actError = String(error); }
  return out;
}
</script>
"""


def test_a_dns_rebinding_page_cannot_read_or_act(app, evil, page):
    evil.pages["/cats.html"] = REBINDING_PAGE
    with rebinding_switch(app.port, target=evil.port) as switch:
        assert page.goto(switch.url("/cats.html")).status == 200  # from the attacker
        switch.rebind(app.port)  # the name now points at this host
        before, mark = app.actions(), len(app.log())

        result = page.evaluate("attack()")
        with page.expect_navigation():
            page.click("#go")  # a same-origin form POST, to the browser
        direct = page.goto(switch.url("/admin"))

        log = settled_log(
            app, mark, ("GET", "/api/status", 1), ("POST", "/api/act", 1), ("GET", "/admin", 1)
        )
        if app.guarded:
            assert app.actions() == before
            assert result["readStatus"] == 403 and '"actions"' not in result["readBody"]
            assert result["actStatus"] == 403
            assert direct.status == 403
            assert "(Host not allowed)" in page.content()  # the page reads no setting
            assert "allowed_hosts" not in page.content() and "allowed_hosts" in log
            for request_line in ("GET /api/status", "POST /api/act", "POST /admin/act"):
                method, path = request_line.split()
                assert f"selfhost=refused method={method} path={path} remote=127.0.0.1" in log
            assert log.count("rule=host") >= 4
            assert access_statuses(log, "POST", "/admin/act") == [403]
        else:  # the control: the attack works
            assert app.actions() == before + 2
            assert result["readStatus"] == 200
            assert json.loads(result["readBody"])["actions"] == before
            assert result["actStatus"] == 200
            assert direct.status == 200
            assert access_statuses(log, "POST", "/admin/act") == [302]
            assert "demo action performed by the API" in log


# ------------------------------------------------------------------ (b)


def cross_site_page(app_origin: str) -> str:
    return Template("""<!doctype html>
<title>free prizes</title>
<form method="post" action="$app/admin/act"><button id="go">Claim prize</button></form>
<script>
async function attack() {
  const out = {};
  try {
    const reply = await fetch("$app/api/act",
      {method: "POST", mode: "no-cors", body: '{"n": 1}'});
    out.noCorsJson = reply.type;
  } catch (error) { out.noCorsJsonError = String(error); }
  try {
    const reply = await fetch("$app/admin/act", {method: "POST", mode: "no-cors",
      body: new URLSearchParams({x: "1"})});
    out.noCorsForm = reply.type;
  } catch (error) { out.noCorsFormError = String(error); }
  try {
    const reply = await fetch("$app/api/status");
    out.readBody = await reply.text();
  } catch (error) { out.readError = String(error); }
  return out;
}
</script>
""").substitute(app=app_origin)


def test_b_cross_site_page_cannot_act_or_read(app, evil, page):
    evil.pages["/prize.html"] = cross_site_page(app.origin)
    page.goto(evil.url("/prize.html"))
    before, mark = app.actions(), len(app.log())

    result = page.evaluate("attack()")
    with page.expect_navigation() as navigation:
        page.click("#go")  # a cross-site form POST (top-level navigation)
    form_reply = navigation.value

    log = settled_log(
        app, mark, ("POST", "/api/act", 1), ("POST", "/admin/act", 2), ("GET", "/api/status", 1)
    )
    # The browser never lets the page read a cross-origin answer without CORS:
    # what matters is whether the app ran.
    assert "readBody" not in result and "TypeError" in result["readError"]
    assert result["noCorsJson"] == result["noCorsForm"] == "opaque"
    if app.guarded:
        assert app.actions() == before
        assert form_reply.status == 403
        assert access_statuses(log, "POST", "/api/act") == [403]
        assert access_statuses(log, "POST", "/admin/act") == [403, 403]
        assert access_statuses(log, "GET", "/api/status") == [403]
        assert log.count("rule=cross-site") == 4
        assert "demo action performed" not in log
    else:
        assert app.actions() == before + 3
        assert access_statuses(log, "POST", "/api/act") == [200]
        assert access_statuses(log, "POST", "/admin/act") == [302, 302]
        assert access_statuses(log, "GET", "/api/status") == [200]  # the app answered


# ------------------------------------------------------------------ (c)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_c_own_pages_work(app, page, host):
    before = app.actions()
    reply = page.goto(f"http://{host}:{app.port}/admin")
    assert reply.status == 200
    if app.guarded:  # a browser's request: the answer says what it depended on
        assert "Origin, Sec-Fetch-Site" in reply.headers.get("vary", "")
    assert page.inner_text("#count") == str(before)

    with page.expect_navigation():
        page.click("#act")  # the admin form: POST /admin/act, then back to /admin
    assert page.inner_text("#count") == str(before + 1)

    script = """async () => {
        const act = await fetch("/api/act", {method: "POST",
            headers: {"Content-Type": "application/json"}, body: '{"n": 1}'});
        const status = await fetch("/api/status");
        return [act.status, await status.json()];
    }"""
    act_status, status = page.evaluate(script)
    assert act_status == 200
    assert status["actions"] == before + 2
    assert app.actions() == before + 2


# ------------------------------------------------------------------ (d)


def test_d_link_from_attacker_page_opens_the_app(app, evil, page):
    evil.pages["/links.html"] = f'<a id="link" href="{app.origin}/admin">my admin page</a>'
    page.goto(evil.url("/links.html"))
    mark = len(app.log())
    with page.expect_navigation() as navigation:
        page.click("#link")
    assert navigation.value.status == 200
    assert page.inner_text("h1") == "Admin"
    log = settled_log(app, mark, ("GET", "/admin", 1))
    assert re.search(rf'"GET /admin HTTP/1\.1" 200 .* "http://evil\.test:{evil.port}/"', log), log


# ------------------------------------------------------------------ (e)


def test_e_cross_site_page_cannot_frame_the_app(app, evil, page):
    """Clickjacking: another site's page frames the admin page under a decoy."""
    evil.pages["/frame.html"] = f'<iframe id="frame" src="{app.origin}/admin"></iframe>'
    mark = len(app.log())
    page.goto(evil.url("/frame.html"))
    log = settled_log(app, mark, ("GET", "/admin", 1))
    frame = page.frame_locator("#frame")
    if app.guarded:
        assert access_statuses(log, "GET", "/admin") == [403]
        assert "rule=cross-site" in log
        assert frame.locator("#act").count() == 0  # no button to trick the user into
    else:
        assert access_statuses(log, "GET", "/admin") == [200]
        assert frame.locator("#act").count() == 1


# ------------------------------------------------------------------ trusted origin


def test_trusted_origin_calls_a_json_api_through_a_preflight(browser, evil, tmp_path):
    """The relaxation, in a real browser: a page on a trusted origin sends a
    JSON POST (preflighted) and reads the answer; an untrusted one cannot."""
    trusted = evil.url("")
    env = {"DEMO_SELFHOST_TRUSTED_ORIGINS": json.dumps([trusted])}
    with demo_server(True, tmp_path, env=env) as app:
        script = """async (app) => {
            const act = await fetch(app + "/api/act", {
                method: "POST", headers: {"Content-Type": "application/json"}, body: '{"n": 1}'});
            return await act.json();
        }"""
        evil.pages["/tool.html"] = "<title>a trusted local tool</title>"
        page = browser.new_page()
        try:
            page.goto(evil.url("/tool.html"))
            assert page.evaluate(script, app.origin) == {"actions": 1}
            assert app.actions() == 1
            log = settled_log(app, 0, ("OPTIONS", "/api/act", 1), ("POST", "/api/act", 1))
            assert access_statuses(log, "OPTIONS", "/api/act") == [204]
            assert access_statuses(log, "POST", "/api/act") == [200]

            # The same page from a name that is not trusted: the preflight is refused.
            page.goto(f"http://localhost:{evil.port}/tool.html")
            with pytest.raises(Exception, match="Failed to fetch"):
                page.evaluate(script, app.origin)
            assert app.actions() == 1
            log = settled_log(app, 0, ("OPTIONS", "/api/act", 2))
            assert access_statuses(log, "OPTIONS", "/api/act") == [204, 403]
        finally:
            page.close()
