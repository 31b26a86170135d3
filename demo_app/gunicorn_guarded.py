"""Strategy 3: bind to every interface; flask_selfhost refuses other hosts.

    gunicorn -c demo_app/gunicorn_guarded.py

`[::]` is dual-stack on Linux (gunicorn does not set IPV6_V6ONLY), so this one
listener takes IPv4 too: IPv4 clients appear as `::ffff:a.b.c.d`, which the
guard unwraps. Other hosts can connect and get 403 on every guarded page.
"""

import os

from flask_selfhost.gunicorn import announce, log_to_error_log

port = os.environ.get("DEMO_PORT", "8000")
bind = [f"[::]:{port}"]
wsgi_app = "demo_app:app"
workers = int(os.environ.get("DEMO_WORKERS", "2"))
accesslog = "-"
when_ready = announce(guarded=True)
# The guard at gunicorn's --log-level: "debug" shows the allowed requests too.
post_worker_init = log_to_error_log
