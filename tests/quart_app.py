"""A Quart app guarded by the extension, configured by ``SELFHOST_*`` keys,
with exempt views: the real-server tests serve it (hypercorn), the unit tests
call it."""

from __future__ import annotations

from quart import Quart, websocket

from flask_selfhost.quart import SelfHost, allow_remote

#: The non-exempt views that ran: a refused request must never add to it.
ran: list[str] = []

app = Quart(__name__)
# A proxy on this host's loopback: a request from 127.0.0.1 must then carry
# X-Forwarded-For (naming its client), and other local tools use 127.0.0.2.
app.config["SELFHOST_TRUSTED_PROXIES"] = ["127.0.0.1"]
SelfHost(app)


@app.get("/healthz")
@allow_remote
async def healthz() -> dict[str, bool]:
    return {"ok": True}


@app.get("/admin")
async def admin() -> dict[str, bool]:
    ran.append("admin")
    return {"admin": True}


@app.post("/admin/act")
def act() -> dict[str, bool]:  # a sync view: Quart runs it in a thread
    ran.append("act")
    return {"acted": True}


@app.get("/ran")
async def what_ran() -> dict[str, list[str]]:
    return {"ran": ran}


@app.websocket("/ws/public")
@allow_remote
async def public_socket() -> None:
    await websocket.accept()
    await websocket.send("public")


@app.websocket("/ws/private")
async def private_socket() -> None:
    ran.append("private socket")
    await websocket.accept()
    await websocket.send("private")
