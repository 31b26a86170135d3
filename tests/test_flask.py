"""The Flask fronts: SelfHost, allow_remote, local_only."""

from __future__ import annotations

import pytest
from flask import Blueprint, Flask, jsonify

from flask_selfhost import SelfHost, allow_remote, local_only

THIS_HOST = {"REMOTE_ADDR": "127.0.0.1"}
OTHER_HOST = {"REMOTE_ADDR": "10.0.0.2", "SERVER_ADDR": "127.0.0.1"}


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


def test_custom_403_handler_renders_the_refusal():
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
    assert "another host" in response.json["why"]
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
