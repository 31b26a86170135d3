"""Strategy 3: bind to every interface; flask_selfhost refuses other hosts.

    gunicorn -c demo_app/gunicorn_guarded.py

`[::]` is dual-stack on Linux, so it also takes IPv4; `0.0.0.0` is listed too
for systems where it is not (gunicorn then shares the port via SO_REUSEPORT
where needed). Other hosts can connect and get 403 on every guarded page.
"""

import os

from flask_selfhost.gunicorn import announce

port = os.environ.get("DEMO_PORT", "8000")
bind = [f"[::]:{port}"]
wsgi_app = "demo_app:app"
workers = int(os.environ.get("DEMO_WORKERS", "2"))
accesslog = "-"
when_ready = announce(guarded=True)
