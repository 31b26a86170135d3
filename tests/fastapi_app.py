"""A FastAPI app guarded by ``add_middleware``, with ``allow_remote`` routes:
the real-server tests serve it (uvicorn), the unit tests call it."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request, WebSocket

from flask_selfhost import allow_remote
from flask_selfhost.asgi import SelfHostASGIMiddleware

#: The non-exempt endpoints that ran: a refused request must never add to it.
ran: list[str] = []

api = FastAPI()
public = APIRouter(prefix="/pub")


@api.get("/healthz")
@allow_remote
async def healthz(request: Request) -> dict[str, object]:
    return {"ok": True, "app": request.app is api}


@api.get("/admin")
def admin() -> dict[str, bool]:
    ran.append("admin")
    return {"admin": True}


@api.post("/admin/act")
def act() -> dict[str, bool]:
    ran.append("act")
    return {"acted": True}


@api.get("/ran")
def what_ran() -> dict[str, list[str]]:
    return {"ran": ran}


@public.get("/health")
@allow_remote
def router_health() -> dict[str, bool]:
    return {"ok": True}


@public.get("/secret")
def router_secret() -> dict[str, bool]:
    ran.append("secret")
    return {"secret": True}


@api.websocket("/ws/public")
@allow_remote
async def public_socket(socket: WebSocket) -> None:
    await socket.accept()
    await socket.send_text("public")
    await socket.close()


@api.websocket("/ws/private")
async def private_socket(socket: WebSocket) -> None:
    ran.append("private socket")
    await socket.accept()
    await socket.send_text("private")
    await socket.close()


api.include_router(public)
api.add_middleware(SelfHostASGIMiddleware)
app = api
