"""Strategy 1: bind to loopback only; the app itself is not guarded.

    gunicorn -c demo_app/gunicorn_loopback.py

Other hosts cannot connect, unless a DNAT rule plus route_localnet=1 forwards
them to 127.0.0.1: then nothing stops them (see README, "The DNAT trap").
"""

import os

from flask_selfhost.gunicorn import announce, log_to_error_log

port = os.environ.get("DEMO_PORT", "8000")
bind = [f"127.0.0.1:{port}", f"[::1]:{port}"]
wsgi_app = "demo_app:unguarded_app"
workers = int(os.environ.get("DEMO_WORKERS", "2"))
accesslog = "-"
when_ready = announce(guarded=False)
post_worker_init = log_to_error_log
