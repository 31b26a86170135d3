"""Run an ASGI demo app under uvicorn on the given listeners, and say at
start-up what protects each one (as the gunicorn configurations do).

The sockets are made here, not by uvicorn, so that the start-up lines come
from the real listeners (``getsockname()``), not from the strings asked for.
uvicorn's own rewriting of the client from ``X-Forwarded-For`` is off: the
guard judges forwarding headers itself (``trusted_proxies``).
"""

from __future__ import annotations

import logging
import os
import socket

import uvicorn

from flask_selfhost.gunicorn import classify_listener, describe_listener


def listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:  # [::] beside 0.0.0.0: IPv6 only, no clash
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(app: str, hosts: list[str], guarded: bool) -> None:
    port = int(os.environ.get("DEMO_PORT", "8000"))
    # wsproto: with uvicorn's "websockets" implementation every refused
    # handshake also logs a false ERROR (Kludex/uvicorn PR 3138).
    config = uvicorn.Config(app, proxy_headers=False, ws="wsproto", log_level="info")
    error_log = logging.getLogger("uvicorn.error")
    # The guard's lines in uvicorn's log, in its format (else stderr, bare):
    # uvicorn's handler sits on "uvicorn", which "uvicorn.error" propagates to.
    guard_log = logging.getLogger("flask_selfhost")
    guard_log.handlers[:] = logging.getLogger("uvicorn").handlers
    guard_log.setLevel(logging.INFO)
    guard_log.propagate = False
    sockets = [listen(host, port) for host in hosts]
    for sock in sockets:
        kind, shown = classify_listener(sock.getsockname())
        exposed, sentence = describe_listener(kind, guarded)
        log = error_log.warning if exposed else error_log.info
        log("flask_selfhost: listening on %s: %s", shown, sentence)
    if not guarded:
        error_log.warning(
            "flask_selfhost: the app is not guarded: a web page in a browser on this host can "
            "still reach it (DNS rebinding, cross-site requests); run demo_app.uvicorn_guarded"
        )
    uvicorn.Server(config).run(sockets=sockets)
