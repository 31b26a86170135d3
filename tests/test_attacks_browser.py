"""In three real browser engines: a page of another site cannot act
through this host's own LAN URL.

Each engine (tests/browser.py) runs inside the server namespace, so that the
app's URL is that namespace's own veth address (``http://10.213.N.1:PORT``):
the browser's requests arrive from that address to that address (client ==
local), and the Host is that address, so the source and host rules grant.
The attacker's pages come from ``http://evil.test:OTHER`` (loopback in the
same namespace, another site). The cross-site rule must still refuse the
form POST and the no-cors fetch, while the app's own page works; against the
unguarded demo, as a control, the attacks act.

Over plain http to a non-loopback address no engine sends ``Sec-Fetch-*``
headers, so the rule reads ``Origin``, which each sends with every POST. A
frame is a GET without ``Origin`` there: no guard can see it, which is why
the docs tell users to send ``X-Frame-Options`` themselves.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from .browser import ENGINES, hosts_entries, hosts_writable, missing
from .netns import gunicorn_in, http_get, ns_run, require_netns, two_hosts
from .servers import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.browser]

APP_PORT, ATTACKER_PORT = 8000, 8300

#: Run inside the namespace: serve the attacker's pages on loopback, open
#: each in the engine, then open the app's own admin page and press its button.
DRIVER = r"""
import json, sys, time
from tests.attacker import attacker_site
from tests.browser import engine, refusing_proxy

name, app, own, pages = json.loads(sys.argv[1])
with refusing_proxy() as (proxy, _), attacker_site() as site:
    site.pages.update(pages)
    with engine(name, proxy, bypass=(own,)) as browser:
        for path in pages:
            browser.open(site.url(path))
            time.sleep(1.5)
        browser.open(app + "/admin")
        browser.run('setTimeout(() => document.getElementById("act").click(), 0);')
        time.sleep(1.5)
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


@pytest.mark.parametrize("name", ENGINES)
@pytest.mark.parametrize("guarded", [True, False], ids=["guarded", "unguarded"])
def test_another_site_cannot_act_through_the_lan_url(tmp_path: Path, guarded: bool, name: str):
    require_netns()
    if missing(name):
        pytest.skip(f"{name} needs {', '.join(missing(name))} (.ci/run installs them)")
    if not hosts_writable():
        pytest.skip("needs to write /etc/hosts (root): the engines resolve the test's names there")
    target = "demo_app:app" if guarded else "demo_app:unguarded_app"
    args = ["--bind", f"0.0.0.0:{APP_PORT}", "--workers", "1", "--threads", "8"]
    args += ["--access-logfile", "-", target]
    with (
        hosts_entries(),
        two_hosts() as hosts,
        gunicorn_in(hosts.server_ns, args, APP_PORT, tmp_path) as server,
    ):
        ns, own = hosts.server_ns, hosts.server_ip4
        app = f"http://{own}:{APP_PORT}"
        pages = {path: html.format(app=app) for path, html in ATTACKS.items()}
        before = actions(ns, own)
        driver = json.dumps([name, app, own, pages])
        done = ns_run(ns, sys.executable, "-c", DRIVER, driver, timeout=120, cwd=ROOT)
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
