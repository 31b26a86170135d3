"""A small admin tool that only its own host may use.

``create_app()`` builds it; ``app`` is the guarded app served by the
all-interfaces gunicorn configuration, ``unguarded_app`` the same app without
the guard, served by the loopback-binding configuration (strategy 1, which
relies on the binding alone).

Pages:

- ``/``          public page (``allow_remote``): anyone who can connect sees it.
- ``/healthz``   health check (``allow_remote``).
- ``/admin``     admin page with a form that performs an action.
- ``/admin/act`` POST: performs the action (counts it), for the browser tests.
- ``/api/status`` JSON data that only this host may read.
- ``/api/act``   POST, JSON body: performs the action, as a local JSON API does
  (like many, it parses the body whatever its Content-Type, so a cross-site
  ``fetch(..., {mode: "no-cors"})`` with a text/plain body reaches it).
"""

from __future__ import annotations

import logging
import os
import threading

from flask import Flask, jsonify, redirect, render_template_string, request, url_for

from flask_selfhost import SelfHost, allow_remote, local_address

selfhost = SelfHost()

ADMIN_PAGE = """<!doctype html>
<title>demo admin</title>
<h1>Admin</h1>
<p>You are {{ remote }}; this server's side of the connection is {{ local }}.</p>
<p>Actions performed: <span id="count">{{ count }}</span></p>
<form method="post" action="{{ url_for('act') }}"><button id="act">Perform action</button></form>
"""


def create_app(guarded: bool = True) -> Flask:
    app = Flask(__name__)
    app.config.from_prefixed_env("DEMO")  # e.g. DEMO_SELFHOST_REFUSE_STATUS=404
    actions = {"count": 0}
    lock = threading.Lock()
    logging.getLogger("flask_selfhost").setLevel(logging.INFO)

    @app.get("/")
    @allow_remote
    def home() -> str:
        return "Hello from the demo. The admin page at /admin answers this host only.\n"

    @app.get("/healthz")
    @allow_remote
    def healthz() -> str:
        return "ok\n"

    @app.get("/admin")
    def admin() -> str:
        return render_template_string(
            ADMIN_PAGE,
            remote=request.remote_addr,
            local=local_address(request.environ),
            count=actions["count"],
        )

    @app.post("/admin/act")
    def act():  # type: ignore[no-untyped-def]
        with lock:
            actions["count"] += 1
        app.logger.warning("demo action performed (count=%d)", actions["count"])
        return redirect(url_for("admin"))

    @app.post("/api/act")
    def api_act():  # type: ignore[no-untyped-def]
        body = request.get_json(force=True, silent=True)
        if not isinstance(body, dict):
            return jsonify(error="expected a JSON object"), 400
        with lock:
            actions["count"] += 1
        app.logger.warning("demo action performed by the API (count=%d)", actions["count"])
        return jsonify(actions=actions["count"])

    @app.get("/api/status")
    def status():  # type: ignore[no-untyped-def]
        return jsonify(actions=actions["count"], pid=os.getpid(), visible_to="this host only")

    if guarded:
        selfhost.init_app(app)
    return app


app = create_app(guarded=True)
unguarded_app = create_app(guarded=False)
