"""The app's own form and ``Origin: null``, in a real headless Chromium.

On a plain-http name that is neither ``localhost`` nor a loopback address
(a LAN name in ``allowed_hosts``), a page served with ``Referrer-Policy:
no-referrer`` makes the browser send ``Origin: null`` and no ``Sec-Fetch-*``
for its own form POST: exactly what a sandboxed page sends, so the guard
refuses it, and the logged reason names the referrer policy to change.
(Chromium's ``fetch`` POST from the same page carries the page's origin.)
With the browsers' default policy, or ``same-origin``, the same form works.
On ``127.0.0.1`` and ``localhost`` the browser also sends
``Sec-Fetch-Site: same-origin``, and no-referrer does no harm there.

Real pieces: Debian's Chromium (``tests/playwright_pages.py``, which maps
``mybox.test`` to 127.0.0.1 and nothing else leaves this host), the Flask
extension under Werkzeug's server on a loopback port. What the browser sent
is recorded outside the guard.
"""

from __future__ import annotations

import logging

import pytest
from flask import Flask

from flask_selfhost import SelfHost

from .playwright_pages import OWN_NAME
from .servers import werkzeug_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PAGE = """<!doctype html>
<title>mybox admin</title>
<form method="post" action="/act"><button id="go">Act</button></form>
<script>
async function post() {
  const reply = await fetch("/act", {method: "POST", body: "x=1",
    headers: {"Content-Type": "application/x-www-form-urlencoded"}});
  return reply.status;
}
</script>
"""


def own_app(
    policy: str | None, meta: bool = False
) -> tuple[object, list[dict[str, str | None]], list[int]]:
    """The guarded app, the headers each request arrived with (recorded
    outside the guard) and its action counter. ``policy`` is sent as a
    header, or with ``meta`` in the page's ``<meta name="referrer">``."""
    app = Flask(__name__)
    SelfHost(app, allowed_hosts=[OWN_NAME])
    seen: list[dict[str, str | None]] = []
    actions: list[int] = []

    @app.get("/form")
    def form():
        headers = {"Content-Type": "text/html", "Cache-Control": "no-store"}
        if policy is not None and meta:
            return f'<meta name="referrer" content="{policy}">{PAGE}', 200, headers
        if policy is not None:
            headers["Referrer-Policy"] = policy
        return PAGE, 200, headers

    @app.post("/act")
    def act():
        actions.append(1)
        return "done"

    guarded = app.wsgi_app

    def recorder(environ, start_response):
        if environ.get("REQUEST_METHOD") == "POST":
            seen.append(
                {
                    "origin": environ.get("HTTP_ORIGIN"),
                    "site": environ.get("HTTP_SEC_FETCH_SITE"),
                }
            )
        return guarded(environ, start_response)

    app.wsgi_app = recorder  # type: ignore[method-assign]
    return app, seen, actions


def refusals(caplog) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "flask_selfhost" and record.levelno == logging.WARNING
    ]


def submit(page, url: str) -> tuple[int, int]:
    """Open the app's page, submit its form, then POST with fetch: both statuses."""
    assert page.goto(url).status == 200
    with page.expect_navigation() as navigation:
        page.click("#go")
    form_status = navigation.value.status
    assert page.goto(url).status == 200
    return form_status, page.evaluate("post()")


@pytest.mark.parametrize("meta", [False, True], ids=["header", "meta"])
def test_no_referrer_on_a_lan_name_is_refused_with_the_fix_in_the_log(browser, page, caplog, meta):
    caplog.set_level(logging.WARNING, logger="flask_selfhost")
    app, seen, actions = own_app("no-referrer", meta)
    with werkzeug_server(app) as port:
        statuses = submit(page, f"http://{OWN_NAME}:{port}/form")
    own = f"http://{OWN_NAME}:{port}"
    # The form: what a sandboxed page sends. The fetch: its own origin.
    assert seen == [{"origin": "null", "site": None}, {"origin": own, "site": None}]
    assert statuses == (403, 200) and len(actions) == 1
    (line,) = refusals(caplog)
    assert line.startswith("selfhost=refused method=POST path=/act remote=127.0.0.1 ")
    assert "rule=cross-site" in line
    assert "Referrer-Policy: no-referrer" in line
    assert "strict-origin-when-cross-origin" in line


@pytest.mark.parametrize("policy", [None, "strict-origin-when-cross-origin", "same-origin"])
def test_another_referrer_policy_lets_the_own_form_through(browser, page, caplog, policy):
    caplog.set_level(logging.WARNING, logger="flask_selfhost")
    app, seen, actions = own_app(policy)
    with werkzeug_server(app) as port:
        statuses = submit(page, f"http://{OWN_NAME}:{port}/form")
        own = f"http://{OWN_NAME}:{port}"
    assert seen == [{"origin": own, "site": None}] * 2
    assert statuses == (200, 200) and len(actions) == 2
    assert refusals(caplog) == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_no_referrer_on_loopback_is_same_origin(browser, page, caplog, host):
    caplog.set_level(logging.WARNING, logger="flask_selfhost")
    app, seen, actions = own_app("no-referrer")
    with werkzeug_server(app) as port:
        statuses = submit(page, f"http://{host}:{port}/form")
    own = f"http://{host}:{port}"
    assert seen == [
        {"origin": "null", "site": "same-origin"},
        {"origin": own, "site": "same-origin"},
    ]
    assert statuses == (200, 200) and len(actions) == 2
    assert refusals(caplog) == []
