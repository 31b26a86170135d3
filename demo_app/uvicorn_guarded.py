"""Strategy 3 for the ASGI demo: every interface; flask_selfhost refuses other hosts.

    python -m demo_app.uvicorn_guarded        # DEMO_PORT=8000 by default

Listens on 0.0.0.0 and [::]. Other hosts can connect and get 403; the guard
also refuses DNS rebinding and other sites' requests and WebSockets, which a
loopback binding alone does not stop.
"""

from demo_app.uvicorn_serve import serve

if __name__ == "__main__":
    serve("demo_app.asgi:app", ["0.0.0.0", "::"], guarded=True)
