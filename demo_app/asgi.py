"""The demo's ASGI twin: the same small admin tool, as a FastAPI app.

``create_app()`` builds it; ``app`` is guarded by
:class:`~flask_selfhost.asgi.SelfHostASGIMiddleware` and served on every
interface by ``python -m demo_app.uvicorn_guarded``; ``unguarded_app`` is
the same app without the guard, served on loopback only by
``python -m demo_app.uvicorn_loopback`` (strategy 1, the binding alone).

Pages, as in the WSGI demo (:mod:`demo_app`):

- ``/admin``      admin page with a form, and a live counter over the WebSocket.
- ``/admin/act``  POST: performs the action (counts it), then back to ``/admin``.
- ``/api/status`` JSON data that only this host may read.
- ``/api/act``    POST, JSON body: performs the action. Like many local JSON
  APIs it parses the body whatever its Content-Type, so a cross-site
  ``fetch(..., {mode: "no-cors"})`` with a text/plain body reaches it.
- ``/ws``         WebSocket: sends the counter; each ``"act"`` message performs
  the action. Browsers let any page open a WebSocket to any address, so
  without the guard another site's page could drive it.
"""

from __future__ import annotations

import json
import os

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from flask_selfhost.asgi import SelfHostASGIMiddleware

ADMIN_PAGE = """<!doctype html>
<title>demo admin (ASGI)</title>
<h1>Admin</h1>
<p>You are {remote}; this server's side of the connection is {local}.</p>
<p>Actions performed: <span id="count">{count}</span></p>
<form method="post" action="/admin/act"><button id="act">Perform action</button></form>
<p>Live: <span id="live">connecting</span></p>
<script>
const socket = new WebSocket(location.origin.replace(/^http/, "ws") + "/ws");
socket.onmessage = (event) => {{
  document.getElementById("live").textContent = JSON.parse(event.data).actions;
}};
socket.onclose = () => {{ document.getElementById("live").textContent = "closed"; }};
</script>
"""


def create_app(guarded: bool = True) -> FastAPI:
    api = FastAPI(title="flask-selfhost ASGI demo", docs_url=None, redoc_url=None)
    actions = {"count": 0}  # one event loop: no lock needed

    @api.get("/admin", response_class=HTMLResponse)
    def admin(request: Request) -> str:
        client, server = request.scope.get("client"), request.scope.get("server")
        return ADMIN_PAGE.format(
            remote=client[0] if client else "-",
            local=server[0] if server else "-",
            count=actions["count"],
        )

    @api.post("/admin/act")
    def act() -> RedirectResponse:
        actions["count"] += 1
        return RedirectResponse("/admin", status_code=303)

    @api.post("/api/act")
    async def api_act(request: Request) -> JSONResponse:
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return JSONResponse({"error": "expected a JSON object"}, status_code=400)
        actions["count"] += 1
        return JSONResponse({"actions": actions["count"]})

    @api.get("/api/status")
    def status() -> dict[str, object]:
        return {"actions": actions["count"], "pid": os.getpid(), "visible_to": "this host only"}

    @api.websocket("/ws")
    async def live(socket: WebSocket) -> None:
        await socket.accept()
        await socket.send_json({"actions": actions["count"]})
        try:
            while True:
                if await socket.receive_text() == "act":
                    actions["count"] += 1
                await socket.send_json({"actions": actions["count"]})
        except WebSocketDisconnect:
            pass

    if guarded:
        api.add_middleware(SelfHostASGIMiddleware)
    return api


app = create_app(guarded=True)
unguarded_app = create_app(guarded=False)
