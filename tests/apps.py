"""Apps that the real-server tests serve: each says what the guard saw."""

from __future__ import annotations

import json

from flask import Flask, jsonify, request

from flask_selfhost import SelfHost, SelfHostMiddleware, evaluate, local_address
from flask_selfhost.asgi import SelfHostASGIMiddleware


def whoami(environ, start_response):
    """A bare WSGI app that reports the addresses of its own connection."""
    decision = evaluate(environ)
    body = json.dumps(
        {
            "remote": environ.get("REMOTE_ADDR"),
            "local": local_address(environ),
            "server_addr": environ.get("SERVER_ADDR"),
            "server_name": environ.get("SERVER_NAME"),
            "allowed": decision.allowed,
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


middleware_app = SelfHostMiddleware(whoami)

flask_app = Flask(__name__)


@flask_app.get("/whoami")
def flask_whoami():
    return jsonify(remote=request.remote_addr, local=local_address(request.environ))


SelfHost(flask_app)

#: How Apache's mod_wsgi marks its environ: a server whose SERVER_ADDR is the
#: connection's own local address (flask_selfhost.connection.sets_server_addr).
APACHE = {"mod_wsgi.version": (4, 9, 0)}

#: The server matrix's app: a unix-socket client counts as local, so that
#: column (d) shows whether the server lets the guard see the socket at all.
unix_local_app = SelfHostMiddleware(whoami, unix_socket_is_local=True)


async def asgi_whoami(scope, receive, send):
    """A bare ASGI app that reports the addresses the server gave it."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = json.dumps({"client": scope.get("client"), "server": scope.get("server")}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


#: The server matrix's ASGI app, guarded as unix_local_app is.
asgi_app = SelfHostASGIMiddleware(asgi_whoami, unix_socket_is_local=True)


class MethodOverride:
    """Middleware that lets a header change the method (as some apps do)."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        if "HTTP_X_HTTP_METHOD_OVERRIDE" in environ:
            environ["REQUEST_METHOD"] = environ["HTTP_X_HTTP_METHOD_OVERRIDE"].upper()
        return self.app(environ, start_response)


#: The same guards with the kernel witness off: the control that shows what
#: the address rule alone grants (tests/test_kernel_witness.py).
unwitnessed_app = SelfHostMiddleware(whoami, check_client_socket=False)
unwitnessed_asgi_app = SelfHostASGIMiddleware(asgi_whoami, check_client_socket=False)
