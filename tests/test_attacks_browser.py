"""In a real browser: a page of another site cannot act
through this host's own LAN URL.

Debian's headless Chromium runs inside the server namespace, so that the
app's URL is that namespace's own veth address (``http://10.213.N.1:PORT``):
the browser's requests arrive from that address to that address (client ==
local), and the Host is that address, so the source and host rules grant.
The attacker's pages come from ``http://evil.test:OTHER`` (loopback in the
same namespace, another site). The cross-site rule must still refuse the
form POST and the no-cors fetch, while the app's own page works; against the
unguarded demo, as a control, the attacks act.

Over plain http to a non-loopback address Chromium sends no ``Sec-Fetch-*``
headers, so the rule reads ``Origin``, which it sends with every POST. A
frame is a GET without ``Origin`` there: no guard can see it, which is why
the docs tell users to send ``X-Frame-Options`` themselves.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from .browser import CHROMIUM, CHROMIUM_ARGS
from .conftest import require_commands
from .netns import gunicorn_in, http_get, ns_run, require_netns, two_hosts

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.browser]

APP_PORT, ATTACKER_PORT = 8000, 8300

#: Run inside the namespace: serve the attacker's pages on loopback, open
#: each in Chromium, then open the app's own admin page and press its button.
DRIVER = r"""
import json, shutil, sys, tempfile, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from playwright.sync_api import sync_playwright

chromium, args, app, attacker_port, pages = json.loads(sys.argv[1])

class Pages(BaseHTTPRequestHandler):
    def do_GET(self):
        body = pages.get(self.path, "").encode()
        self.send_response(200 if self.path in pages else 404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *_):
        pass

server = ThreadingHTTPServer(("127.0.0.1", attacker_port), Pages)
threading.Thread(target=server.serve_forever, daemon=True).start()
profile = tempfile.mkdtemp()
done = {}
try:
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=chromium, headless=True, args=args
        )
        page = context.new_page()
        for path in pages:
            page.goto(f"http://evil.test:{attacker_port}{path}")
            page.wait_for_timeout(1500)
        page.goto(app + "/admin")
        page.click("#act")
        page.wait_for_load_state()
        done["own page"] = page.url
        context.close()
finally:
    server.shutdown()
    shutil.rmtree(profile, ignore_errors=True)
print(json.dumps(done))
"""

ATTACKS = {
    "/form": """<form id=f method=post action="{app}/admin/act"></form>
                <script>document.getElementById("f").submit()</script>""",
    "/fetch": """<script>fetch("{app}/api/act", {{method: "POST", mode: "no-cors",
                 credentials: "include", body: '{{"act": 1}}'}})</script>""",
}


def actions(ns: str, own: str) -> int:
    status, body = http_get(ns, own, APP_PORT, "/api/status", {"Host": f"{own}:{APP_PORT}"})
    assert status == 200, body
    return int(json.loads(body)["actions"])


@pytest.mark.parametrize("guarded", [True, False], ids=["guarded", "unguarded"])
def test_another_site_cannot_act_through_the_lan_url(tmp_path: Path, guarded: bool):
    require_netns()
    require_commands(CHROMIUM)
    pytest.importorskip("playwright", reason="needs playwright (the test extra installs it)")
    target = "demo_app:app" if guarded else "demo_app:unguarded_app"
    args = ["--bind", f"0.0.0.0:{APP_PORT}", "--workers", "1", "--threads", "8"]
    args += ["--access-logfile", "-", target]
    with two_hosts() as hosts, gunicorn_in(hosts.server_ns, args, APP_PORT, tmp_path) as server:
        ns, own = hosts.server_ns, hosts.server_ip4
        app = f"http://{own}:{APP_PORT}"
        pages = {path: html.format(app=app) for path, html in ATTACKS.items()}
        before = actions(ns, own)
        # The browser may reach the app's address too (its resolver fails every
        # other name and address, so that nothing leaves the namespace).
        browser_args = [
            f"{arg}, EXCLUDE {own}" if arg.startswith("--host-resolver-rules") else arg
            for arg in CHROMIUM_ARGS
        ]
        driver = json.dumps([CHROMIUM, browser_args, app, ATTACKER_PORT, pages])
        done = ns_run(ns, sys.executable, "-c", DRIVER, driver, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        after = actions(ns, own)
        log = server.log()
    posts = [
        int(status) for status in re.findall(r'"POST /(?:admin|api)/act HTTP/1\.1" (\d{3})', log)
    ]
    if guarded:
        # The two attacks refused by the cross-site rule; the own page's POST passed.
        assert posts.count(403) == 2 and after == before + 1, (posts, log)
        assert log.count("rule=cross-site") >= 2, log
    else:
        assert posts.count(403) == 0 and after == before + 3, (posts, log)
