"""The Flask fronts: SelfHost, allow_remote, local_only."""

from __future__ import annotations

import pytest
from flask import Blueprint, Flask, jsonify
from werkzeug.test import EnvironBuilder

from flask_selfhost import SelfHost, allow_remote, local_only

from .apps import MethodOverride

THIS_HOST = {"REMOTE_ADDR": "127.0.0.1"}
OTHER_HOST = {"REMOTE_ADDR": "10.0.0.2", "SERVER_ADDR": "127.0.0.1", "mod_wsgi.version": (4, 9, 0)}


def make_app() -> Flask:
    app = Flask(__name__)
    app.config["ran_before_request"] = 0

    @app.before_request
    def count():  # must never run for a refused client
        app.config["ran_before_request"] += 1

    @app.get("/admin")
    def admin():
        return "admin"

    @app.get("/healthz")
    @allow_remote
    def healthz():
        return "ok"

    return app


def get(app, path, environ):
    return app.test_client().get(path, environ_base=environ)


def test_extension_guards_every_route_and_unknown_paths():
    app = make_app()
    SelfHost(app)
    assert get(app, "/admin", THIS_HOST).status_code == 200
    assert get(app, "/admin", OTHER_HOST).status_code == 403
    assert get(app, "/no-such-page", OTHER_HOST).status_code == 403  # not 404
    assert get(app, "/no-such-page", THIS_HOST).status_code == 404
    assert app.test_client().post("/admin", environ_base=OTHER_HOST).status_code == 403  # not 405
    assert get(app, "/static/x.css", OTHER_HOST).status_code == 403


def test_no_hook_of_the_app_runs_for_a_refused_client():
    app = make_app()
    SelfHost(app)
    get(app, "/admin", OTHER_HOST)
    assert app.config["ran_before_request"] == 0
    get(app, "/admin", THIS_HOST)
    assert app.config["ran_before_request"] == 1


def test_allow_remote_exempts_one_view():
    app = make_app()
    SelfHost(app)
    assert get(app, "/healthz", OTHER_HOST).status_code == 200


def test_refusal_is_plain_text_by_default():
    app = make_app()
    SelfHost(app)
    response = get(app, "/admin", OTHER_HOST)
    assert response.mimetype == "text/plain"
    assert response.text.startswith("Forbidden: only clients on this server's own host")
    assert response.headers["Cache-Control"] == "no-store"


def test_custom_403_handler_renders_the_refusal(logged):
    app = make_app()
    seen = []

    @app.errorhandler(403)
    def forbidden(error):
        seen.append(error.selfhost_decision)
        return jsonify(error="forbidden", why=error.description), 403

    @app.after_request
    def stamp(response):
        response.headers["X-App"] = "demo"
        return response

    SelfHost(app)
    response = get(app, "/admin", OTHER_HOST)
    assert response.status_code == 403
    assert response.json["error"] == "forbidden"
    assert "(not from this host)" in response.json["why"]
    assert "another host" in logged()
    assert response.headers["X-App"] == "demo"  # after_request hooks still apply
    assert seen[0].remote_addr == "10.0.0.2" and seen[0].local_addr == "127.0.0.1"


def test_failing_error_handler_gives_flasks_500_path_not_a_pass():
    app = make_app()

    @app.errorhandler(403)
    def broken(error):
        raise RuntimeError("handler bug")

    SelfHost(app)
    response = get(app, "/admin", OTHER_HOST)
    assert response.status_code == 500
    assert b"admin" not in response.data


def test_application_factory_with_per_app_config():
    selfhost = SelfHost(refuse_status=404)

    def create_app(**config):
        app = make_app()
        app.config.update(config)
        selfhost.init_app(app)
        return app

    hidden, forbidden = create_app(), create_app(SELFHOST_REFUSE_STATUS=403)
    assert get(hidden, "/admin", OTHER_HOST).status_code == 404
    assert get(forbidden, "/admin", OTHER_HOST).status_code == 403
    assert hidden.extensions["selfhost"].options.refuse_status == 404
    assert hidden.extensions["selfhost"].extension is selfhost


def test_config_typos_fail_at_init_app():
    app = make_app()
    app.config["SELFHOST_REFUSE_STAUTS"] = 404
    with pytest.raises(TypeError, match="refuse_stauts"):
        SelfHost(app)


def test_config_set_after_init_app_counts_from_the_first_request():
    """Flask's contract: configuration is complete when the server begins
    handling requests (``from_prefixed_env()`` after the extensions, say)."""
    app = make_app()
    SelfHost(app)
    app.config["SELFHOST_REFUSE_STATUS"] = 404
    app.config["SELFHOST_TRUSTED_PROXIES"] = "127.0.0.1"
    assert app.extensions["selfhost"].options.refuse_status == 404  # what status shows
    assert get(app, "/admin", OTHER_HOST).status_code == 404
    relayed = {**THIS_HOST, "HTTP_X_FORWARDED_FOR": "127.0.0.1"}
    assert get(app, "/admin", relayed).status_code == 200
    assert get(app, "/admin", THIS_HOST).status_code == 404  # the proxy itself, header-less
    # Once serving, the options stay: a late change is not half applied.
    app.config["SELFHOST_REFUSE_STATUS"] = 403
    assert get(app, "/admin", OTHER_HOST).status_code == 404
    assert app.extensions["selfhost"].options.refuse_status == 404


def test_a_bad_value_set_after_init_app_fails_every_request():
    app = make_app()
    SelfHost(app)
    app.config["SELFHOST_REFUSE_STATUS"] = "404"
    for _ in range(2):  # fails closed until the config is fixed
        with pytest.raises(ValueError, match="refuse_status must be an int"):
            get(app, "/admin", THIS_HOST)
    assert app.config["ran_before_request"] == 0
    app.config["SELFHOST_REFUSE_STATUS"] = 404
    assert get(app, "/admin", OTHER_HOST).status_code == 404


def test_registering_twice_is_an_error():
    app = make_app()
    SelfHost(app)
    with pytest.raises(RuntimeError, match="already registered"):
        SelfHost(app)


def test_local_only_without_the_extension():
    app = Flask(__name__)

    @app.get("/debug")
    @local_only
    def debug():
        return "vars"

    @app.get("/hidden")
    @local_only(refuse_status=404)
    def hidden():
        return "vars"

    @app.get("/public")
    def public():
        return "hello"

    assert get(app, "/debug", THIS_HOST).status_code == 200
    assert get(app, "/debug", OTHER_HOST).status_code == 403
    assert get(app, "/hidden", OTHER_HOST).status_code == 404
    assert get(app, "/public", OTHER_HOST).status_code == 200


def test_local_only_uses_the_extension_options():
    app = make_app()
    app.config["SELFHOST_REFUSE_STATUS"] = 404
    SelfHost(app)

    @app.get("/open")
    @allow_remote
    def open_view():
        return "open"

    @app.get("/guarded")
    @allow_remote  # exempt from the extension, but the decorator still guards it
    @local_only
    def guarded():
        return "guarded"

    @app.get("/guarded-body")
    @allow_remote
    @local_only(refuse_body="nope\n")
    def guarded_body():
        return "guarded"

    assert get(app, "/open", OTHER_HOST).status_code == 200
    assert get(app, "/guarded", OTHER_HOST).status_code == 404
    response = get(app, "/guarded-body", OTHER_HOST)
    assert (response.status_code, response.text) == (404, "nope\n")


def test_local_only_options_fail_at_decoration():
    with pytest.raises(TypeError, match="unknown option"):
        local_only(refuse=404)


def test_blueprint_views_can_be_exempt():
    app = make_app()
    blueprint = Blueprint("api", __name__)

    @blueprint.get("/ping")
    @allow_remote
    def ping():
        return "pong"

    @blueprint.get("/secret")
    def secret():
        return "secret"

    app.register_blueprint(blueprint, url_prefix="/api")
    SelfHost(app)
    assert get(app, "/api/ping", OTHER_HOST).status_code == 200
    assert get(app, "/api/secret", OTHER_HOST).status_code == 403


def test_demo_app_pages():
    from demo_app import create_app

    app = create_app()
    assert get(app, "/", OTHER_HOST).status_code == 200
    assert get(app, "/healthz", OTHER_HOST).status_code == 200
    assert get(app, "/admin", OTHER_HOST).status_code == 403
    assert get(app, "/api/status", OTHER_HOST).status_code == 403
    assert get(app, "/admin", THIS_HOST).status_code == 200
    unguarded = create_app(guarded=False)
    assert get(unguarded, "/admin", OTHER_HOST).status_code == 200


def test_exempt_view_is_not_a_way_past_inner_middleware_that_reroutes():
    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from werkzeug.middleware.proxy_fix import ProxyFix

    # ProxyFix's x_host, inside the guard, as the README recommends.
    hosts = Flask(__name__, host_matching=True, static_host="public.example")
    hosts.add_url_rule("/", "public", allow_remote(lambda: "public"), host="public.example")
    hosts.add_url_rule("/", "admin", lambda: "admin secret", host="admin.localhost")
    hosts.wsgi_app = ProxyFix(hosts.wsgi_app, x_for=1, x_host=1)
    SelfHost(hosts, trusted_proxies=["127.0.0.1"])
    response = hosts.test_client().get(
        "/",
        headers={"Host": "public.example", "X-Forwarded-Host": "admin.localhost"},
        environ_base=OTHER_HOST,
    )
    assert response.text == "public"

    # A method override turns an exempt GET into a guarded POST.
    items = Flask(__name__)
    items.add_url_rule("/items", "list", allow_remote(lambda: "list"), methods=["GET"])
    items.add_url_rule("/items", "create", lambda: "created", methods=["POST"])
    items.wsgi_app = MethodOverride(items.wsgi_app)
    SelfHost(items)
    response = items.test_client().get(
        "/items", headers={"X-HTTP-Method-Override": "POST"}, environ_base=OTHER_HOST
    )
    assert response.text == "list"

    # A mounted app behind an exempt catch-all view.
    mounted = Flask("admin")
    mounted.add_url_rule("/", "admin", lambda: "mounted admin")
    pages = Flask(__name__)
    pages.add_url_rule("/<path:page>", "page", allow_remote(lambda page: f"page {page}"))
    pages.wsgi_app = DispatcherMiddleware(pages.wsgi_app, {"/admin": mounted.wsgi_app})
    SelfHost(pages)
    response = pages.test_client().get("/admin/", environ_base=OTHER_HOST)
    assert response.text == "page admin/"


@pytest.mark.parametrize(
    "host", ["a" * 64, "localhost:99999", "evil.example", "[::1", "x" * 70 + ".example"]
)
def test_a_host_that_werkzeug_rejects_is_refused_not_a_500(host):
    app = make_app()
    app.config["TRUSTED_HOSTS"] = ["localhost", "127.0.0.1"]
    SelfHost(app)
    # Called directly: the test client itself cannot build a URL from such a Host.
    environ = EnvironBuilder("/admin", environ_base=OTHER_HOST).get_environ()
    environ["HTTP_HOST"] = host
    statuses = []
    body = b"".join(app.wsgi_app(environ, lambda status, headers: statuses.append(status)))
    assert statuses == ["403 FORBIDDEN"], body
