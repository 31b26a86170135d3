"""
What the Flask and Quart fronts share: options and per-view guards
==================================================================

Flask's extension (:mod:`flask_selfhost.extension`) and Quart's
(:mod:`flask_selfhost.quart`) take the same options in the same places (the
keyword arguments of ``SelfHost``, then the app's ``SELFHOST_*`` config,
read again at the first request), and their ``local_only`` views carry the
same per-view options, which also decide how a guard in front of such a view
answers the requests it refuses. One copy of those rules lives here, so that
the two fronts cannot drift apart: a view's ``refuse_status=404`` hides it
under either framework, and a view's own options never let in what the
app-wide guard refused.

No framework is imported here: each front passes what differs (how it
checks the current request inside a view, its ``Response`` class).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .decision import Decision
from .exempt import View, is_exempt
from .options import Options
from .respond import NO_STORE, PLAIN_TEXT

if TYPE_CHECKING:
    from werkzeug.exceptions import HTTPException

EXTENSION_NAME = "selfhost"
CONFIG_PREFIX = "SELFHOST_"


class SelfHostState:
    """What ``SelfHost.init_app`` (Flask's or Quart's) puts in
    ``app.extensions["selfhost"]``: the key the doctor and ``local_only`` read.

    :attr:`options` follow the app's ``SELFHOST_*`` config until the app
    serves its first request, then stay fixed: Flask's contract is that
    configuration is complete when the server begins handling requests, so
    a key set after ``SelfHost(app)`` (``app.config.from_prefixed_env()``
    after the extensions, say) counts, as Flask's own settings do.
    """

    __slots__ = ("_options", "_serving", "app", "extension")

    def __init__(self, extension: ExtensionBase, app: Any, options: Options) -> None:
        self.extension, self.app = extension, app
        self._options, self._serving = options, False

    @property
    def options(self) -> Options:
        """The options in force, or that the first request will use."""
        if not self._serving:
            current = self.extension.options_for(self.app)
            if current != self._options:  # equal: keep the object, its memory
                self._options = current
        return self._options

    def start_serving(self) -> Options:
        """The options from now on: the config as it is at the first request.
        A bad value set after ``init_app`` raises here, on every request
        until it is fixed: the server answers 500, nothing is served."""
        options = self.options
        self._serving = True
        return options


class ExtensionBase:
    """What the Flask and Quart extensions share: options checked at once,
    merged with the app's ``SELFHOST_*`` config in :meth:`register`, and
    read again when the app serves its first request (:class:`SelfHostState`).

    :param app: The app to guard now; or call ``init_app`` later.
    :param options: See :class:`~flask_selfhost.options.Options`. Checked
        here and again, merged with the app's config, in ``init_app``.
    """

    def __init__(self, app: Any = None, **options: Any) -> None:
        Options.from_mapping(options)
        self.options = options
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Any) -> None:  # each front installs its own guard
        raise NotImplementedError

    def options_for(self, app: Any) -> Options:
        """The options for ``app`` as its config is now (the config wins)."""
        return Options.from_mapping({**self.options, **config_options(app.config)})

    def register(self, app: Any) -> SelfHostState:
        """Check the options for ``app`` now, so that a typo fails at start-up,
        and record them in its extensions."""
        if EXTENSION_NAME in app.extensions:
            raise RuntimeError("flask_selfhost: SelfHost is already registered on this app")
        state = SelfHostState(self, app, self.options_for(app))
        app.extensions[EXTENSION_NAME] = state
        return state


def config_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``SELFHOST_*`` keys of a Flask config, as option names."""
    return {
        key[len(CONFIG_PREFIX) :].lower(): value
        for key, value in config.items()
        if key.startswith(CONFIG_PREFIX)
    }


def refusal(decision: Decision, options: Options, response_class: type[Any]) -> HTTPException:
    """The exception the Flask and Quart fronts raise for a refused request,
    with their ``Response`` class: rendered through the app's error handlers
    (``errorhandler(403)``), else as this plain text."""
    # Both frameworks raise Werkzeug's HTTP errors; imported here, by the
    # fronts' calls, so that importing this module loads no framework.
    from werkzeug.exceptions import HTTPException, default_exceptions

    status = options.refuse_status
    body = options.body_for(decision)
    response = response_class(body, status, content_type=PLAIN_TEXT)
    response.headers.set(*NO_STORE)
    # Werkzeug 2.x has no class for 421: the base class, with the code set
    # so that the app's errorhandler(421) still finds it.
    error = default_exceptions.get(status, HTTPException)(description=body, response=response)
    error.code = status
    error.selfhost_decision = decision  # type: ignore[attr-defined]
    return error


#: Options that say how a refusal looks, not who is refused: a view's own
#: win for that view even when the app-wide guard refuses the request.
RESPONSE_OPTIONS = frozenset({"refuse_status", "refuse_body"})
#: The attribute ``local_only`` sets on the view it returns: its ViewOptions.
VIEW_OPTIONS = "_selfhost_view_options"


class ViewOptions:
    """The options of one ``local_only`` view (Flask's or Quart's): the
    app's extension options with the view's own on top, or the view's own
    alone where no extension is registered. Checked when the view is
    decorated; merged once per app.

    Under a guard that refuses before the view runs (the extension, or the
    middleware around a Flask app), the view's verdict options cannot let in
    what that guard refused: the request must pass both, so they can only
    make the view stricter. Its response options (:data:`RESPONSE_OPTIONS`)
    answer that guard's refusal too (:meth:`responding`), so that a view's
    ``refuse_status=404`` hides it whoever refuses.

    :param overrides: The options given to ``local_only``.
    """

    __slots__ = ("_merged", "_responding", "overrides", "own")

    def __init__(self, overrides: Mapping[str, Any]) -> None:
        self.own = Options.from_mapping(overrides)  # fail at import time, not per request
        self.overrides = dict(overrides)
        self._merged: dict[Options, Options] = {}  # extension options -> with ours on top
        self._responding: dict[Options, Options] = {}  # a guard's options -> our answer

    def for_app(self, extensions: Mapping[str, Any]) -> Options:
        """The options in force under an app with these ``app.extensions``."""
        state = extensions.get(EXTENSION_NAME)
        if state is None:
            return self.own
        merged = self._merged.get(state.options)
        if merged is None:
            merged = self._merged.setdefault(
                state.options, replace(state.options, **self.overrides)
            )
        return merged

    def responding(self, options: Options) -> Options:
        """``options`` with this view's response options on top: how a
        guard in front of the view answers a request it refuses."""
        answer = self._responding.get(options)
        if answer is None:
            own = {name: self.overrides[name] for name in RESPONSE_OPTIONS & self.overrides.keys()}
            answer = self._responding.setdefault(options, replace(options, **own))
        return answer


def refusal_options(view: object, options: Options) -> Options:
    """How a guard with ``options`` answers a refused request routed to
    ``view``: with the view's own response options if it is a ``local_only``
    view, else with ``options``."""
    view_options = getattr(view, VIEW_OPTIONS, None) if view is not None else None
    if isinstance(view_options, ViewOptions):  # exactly: a mock's attribute is not
        return view_options.responding(options)
    return options


def exempt_views(app: Any) -> list[str]:
    """The endpoints of a Flask or Quart app whose views answer anyone
    (:func:`~flask_selfhost.allow_remote`)."""
    return sorted(endpoint for endpoint, view in app.view_functions.items() if is_exempt(view))


#: How a front wraps one view in its guard (see :func:`local_only_decorator`).
GuardView = Callable[[Callable[..., Any], ViewOptions], Callable[..., Any]]


def local_only_decorator(
    guard_view: GuardView, view: View | None, options: Mapping[str, Any]
) -> Any:
    """What a front's ``local_only(view=None, /, **options)`` returns: the
    options checked now, then each view wrapped by ``guard_view`` (which
    checks the current request as that front does) and marked so that the
    framework routes ``OPTIONS`` to it and a guard's refusal finds its
    :class:`ViewOptions`."""
    view_options = ViewOptions(options)

    def decorate(view: View) -> View:
        guarded_view: Any = guard_view(view, view_options)
        # Route OPTIONS to the guarded view instead of the framework's automatic answer.
        guarded_view.required_methods = {"OPTIONS"}
        guarded_view.provide_automatic_options = False
        setattr(guarded_view, VIEW_OPTIONS, view_options)  # for a guard's refusal
        return guarded_view  # type: ignore[no-any-return]

    return decorate if view is None else decorate(view)
