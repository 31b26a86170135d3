"""A browser on this host, driven by a malicious page, against the ASGI demo.

The ASGI twin of tests/test_browser.py: Debian's headless Chromium (through
Playwright), the FastAPI demo (``demo_app.asgi``) under uvicorn on a
loopback port, the attacker's pages on another loopback server. Each attack
runs against the guarded app and, as a control, the same app unguarded,
where it must succeed. The verdict is read on the app's side: its action
counter and the guard's log lines.

(a) DNS rebinding: the attacker's page, loaded from ``http://rebind.test:PORT``,
    reaches the app at the same origin once the name points here: it must
    not read the JSON API, act through it, or drive the app's WebSocket.
(b) a page on ``http://evil.test:OTHER``: a cross-site form POST, a no-cors
    ``fetch`` to the JSON API, and a cross-site WebSocket (cross-site
    WebSocket hijacking) must not act.
(c) the app's own page works: its form, its JSON API and its WebSocket.
"""

from __future__ import annotations

import time

import pytest

from .playwright_pages import asgi_demo_server, rebinding_switch

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module", params=[True, False], ids=["guarded", "unguarded"])
def app(request, tmp_path_factory):
    with asgi_demo_server(request.param, tmp_path_factory.mktemp("uvicorn")) as server:
        yield server


#: Opens a WebSocket, sends "act" once open, and says what happened: whether
#: it opened, the messages it got (the counter), or how it closed.
SOCKET_SCRIPT = """
function drive(url) {
  return new Promise((resolve) => {
    const out = {opened: false, messages: []};
    const socket = new WebSocket(url);
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


def wait_for_log(app, mark: int, text: str, count: int) -> str:
    """The app's log since ``mark``, once ``text`` appears ``count`` times
    (the guard logs just before it answers), or after a few seconds."""
    deadline = time.monotonic() + 5
    while app.log()[mark:].count(text) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return app.log()[mark:]


# ------------------------------------------------------------------ (a)

REBINDING_PAGE = (
    """<!doctype html>
<title>cute cats</title>
<form method="post" action="/admin/act"><button id="go">See more cats</button></form>
<script>
"""
    + SOCKET_SCRIPT
    + """
async function attack() {
  const out = {};
  const status = await fetch("/api/status");
  out.readStatus = status.status;
  out.readBody = await status.text();
  const act = await fetch("/api/act", {method: "POST",
    headers: {"Content-Type": "application/json"}, body: '{"n": 1}'});
  out.actStatus = act.status;
  out.socket = await drive(location.origin.replace(/^http/, "ws") + "/ws");
  return out;
}
</script>
"""
)


def test_a_dns_rebinding_page_cannot_read_act_or_open_the_websocket(app, evil, page):
    evil.pages["/cats.html"] = REBINDING_PAGE
    with rebinding_switch(app.port, target=evil.port) as switch:
        assert page.goto(switch.url("/cats.html")).status == 200  # from the attacker
        switch.rebind(app.port)  # the name now points at this host
        before, mark = app.actions(), len(app.log())

        result = page.evaluate("attack()")
        with page.expect_navigation() as navigation:
            page.click("#go")  # a same-origin form POST, to the browser
        form_status = navigation.value.status

        if app.guarded:
            log = wait_for_log(app, mark, "rule=host", 4)
            assert "ERROR" not in log, log
            assert app.actions() == before
            assert result["readStatus"] == 403 and '"actions"' not in result["readBody"]
            assert result["actStatus"] == 403
            assert result["socket"]["opened"] is False and result["socket"]["messages"] == []
            assert form_status == 403
            for request_line in ("GET /api/status", "POST /api/act", "GET /ws", "POST /admin/act"):
                method, path = request_line.split()
                assert f"selfhost=refused method={method} path={path} remote=127.0.0.1" in log
            assert log.count("rule=host") >= 4
        else:  # the control: the attack works
            assert result["readStatus"] == 200 and '"actions"' in result["readBody"]
            assert result["actStatus"] == 200
            assert result["socket"]["opened"] is True
            assert result["socket"]["messages"] == [before + 1, before + 2]
            assert form_status == 200  # 303 to /admin, followed
            assert app.actions() == before + 3


# ------------------------------------------------------------------ (b)


def cross_site_page(app_origin: str) -> str:
    socket_url = app_origin.replace("http", "ws", 1) + "/ws"
    return f"""<!doctype html>
<title>free prizes</title>
<form method="post" action="{app_origin}/admin/act"><button id="go">Claim prize</button></form>
<script>
{SOCKET_SCRIPT}
async function attack() {{
  const out = {{}};
  const reply = await fetch("{app_origin}/api/act",
    {{method: "POST", mode: "no-cors", body: '{{"n": 1}}'}});
  out.noCors = reply.type;
  out.socket = await drive("{socket_url}");
  return out;
}}
</script>
"""


def test_b_cross_site_page_cannot_act_or_hijack_the_websocket(app, evil, page):
    evil.pages["/prize.html"] = cross_site_page(f"http://127.0.0.1:{app.port}")
    page.goto(evil.url("/prize.html"))
    before, mark = app.actions(), len(app.log())

    result = page.evaluate("attack()")
    with page.expect_navigation() as navigation:
        page.click("#go")  # a cross-site form POST (top-level navigation)
    form_status = navigation.value.status

    assert result["noCors"] == "opaque"  # the browser hides the answer either way
    if app.guarded:
        log = wait_for_log(app, mark, "rule=cross-site", 3)
        assert app.actions() == before
        assert result["socket"]["opened"] is False and result["socket"]["messages"] == []
        assert form_status == 403
        for request_line in ("POST /api/act", "GET /ws", "POST /admin/act"):
            method, path = request_line.split()
            assert f"selfhost=refused method={method} path={path} remote=127.0.0.1" in log
        assert log.count("rule=cross-site") == 3
    else:
        assert result["socket"]["opened"] is True
        assert result["socket"]["messages"] == [before + 1, before + 2]
        assert form_status == 200
        assert app.actions() == before + 3


# ------------------------------------------------------------------ (c)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_c_own_page_form_api_and_websocket_work(app, page, host):
    before = app.actions()
    reply = page.goto(f"http://{host}:{app.port}/admin")
    assert reply.status == 200
    page.wait_for_function(f"document.getElementById('live').textContent === '{before}'")

    with page.expect_navigation():
        page.click("#act")  # the admin form: POST /admin/act, then back to /admin
    assert page.inner_text("#count") == str(before + 1)

    page.add_script_tag(content=SOCKET_SCRIPT)
    script = """async () => {
        const act = await fetch("/api/act", {method: "POST",
            headers: {"Content-Type": "application/json"}, body: '{"n": 1}'});
        const socket = await drive(location.origin.replace(/^http/, "ws") + "/ws");
        return [act.status, socket];
    }"""
    act_status, socket = page.evaluate(script)
    assert act_status == 200
    assert socket["opened"] is True and socket["messages"] == [before + 2, before + 3]
    assert app.actions() == before + 3
