"""Strategy 1 for the ASGI demo: loopback only; the app itself is not guarded.

    python -m demo_app.uvicorn_loopback       # DEMO_PORT=8000 by default

Other hosts cannot connect, unless a DNAT rule plus route_localnet=1
forwards them to 127.0.0.1; and a web page in a browser on this host can
still reach it. Both are what demo_app.uvicorn_guarded adds the guard for.
"""

from demo_app.uvicorn_serve import serve

if __name__ == "__main__":
    serve("demo_app.asgi:unguarded_app", ["127.0.0.1", "::1"], guarded=False)
