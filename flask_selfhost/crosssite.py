"""
The cross-site rule: did a page of another site make the browser send this?
===========================================================================

A client on this host passes the source and host rules, and so does a
browser on this host that a malicious page drives: a form POST or a
``fetch(url, {mode: "no-cors"})`` to ``http://127.0.0.1:8000`` carries the
user's browser as client and a perfectly good Host. The browser says who
asked in two headers it does not let pages set: ``Sec-Fetch-Site`` (sent to
https, ``localhost`` and loopback URLs) and ``Origin`` (sent with CORS
requests and every non-GET/HEAD request). The rule combines Go's
``http.CrossOriginProtection`` (``net/http/csrf.go``) with the
resource-isolation policy of web.dev/OWASP, which also covers reads.

The algorithm, in order; the first step that decides wins:

1. neither ``Sec-Fetch-Site`` nor ``Origin``: allowed. Not a browser (curl,
   scripts), or a browser's same-origin GET on plain http.
2. a CORS preflight (``OPTIONS`` with ``Origin`` and
   ``Access-Control-Request-Method``): from an origin in
   ``trusted_origins`` it is granted and the front answers it itself
   (204, the CORS headers naming that origin, never ``*``, and
   ``Access-Control-Allow-Private-Network: true`` only when the browser
   asked with ``Access-Control-Request-Private-Network: true``); from any
   other origin it is refused (rule ``"preflight"``), with no CORS header.
3. ``Origin`` is in ``trusted_origins`` (exact match): allowed, and the
   response gets ``Access-Control-Allow-Origin`` for that origin and
   ``-Allow-Credentials: true`` (unless the app sets its own).
4. ``Sec-Fetch-Site: same-origin`` or ``none`` (the user typed the URL or
   used a bookmark): allowed.
5. ``Sec-Fetch-Site: cross-site`` or ``same-site``: allowed only for a
   top-level navigation (``GET``/``HEAD``, ``Sec-Fetch-Mode: navigate``,
   ``Sec-Fetch-Dest: document``): a link to the app still opens it.
   Everything else is refused: form POSTs, fetches, images, scripts,
   ``object``/``embed``, and frames (``iframe``, ``frame``), so that another
   site cannot overlay the app's buttons (clickjacking). Any other
   ``Sec-Fetch-Site`` value is refused.
6. no ``Sec-Fetch-Site`` (plain-http, non-loopback URLs and old browsers):
   ``Origin`` must equal the request's own origin, the scheme from the
   server and host and port from the Host header; ``Origin: null`` and
   malformed origins are refused. Browsers send ``null`` from sandboxed
   frames and file: pages, and from any page, this server's own included,
   served with ``Referrer-Policy: no-referrer`` on such a URL: nothing in
   the request tells these apart, so the reason names the referrer policy
   to change.

Every decision of this rule carries ``Vary`` headers for the front to add,
because the same URL gets a different answer for other values of these
headers (see :data:`VARY`). Refusals name the option that would accept them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from functools import lru_cache

from .addresses import CACHE_SIZE
from .decision import CROSS_SITE, PREFLIGHT, Decision, Headers
from .facts import RequestFacts
from .hosts import parse_host

# Every response whose status this rule decided says so to caches. A shared
# or browser cache that kept a same-origin answer must not hand it to a
# cross-site request (a ``<script src>`` from another site, say), and the
# other way round. Requests with neither header (step 1) get no Vary: that
# keeps the common path free of a start_response wrapper, and they come
# from non-browsers, or from a browser on plain http whose cache is
# partitioned by top-level site, so another site cannot reach that entry.
VARY: Headers = (("Vary", "Origin, Sec-Fetch-Site"),)
PREFLIGHT_VARY: Headers = (
    (
        "Vary",
        "Origin, Access-Control-Request-Method, Access-Control-Request-Headers, "
        "Access-Control-Request-Private-Network",
    ),
)

NO_BROWSER_HEADERS = "neither Origin nor Sec-Fetch-Site: not a cross-site request"
SAME_ORIGIN = "Sec-Fetch-Site says the request comes from this site's own pages"
NAVIGATION = "a link from another site opens this page at the top level"
TRUSTED = "the request comes from an origin in the trusted_origins option"
ORIGIN_MATCHES = "the Origin header is this server's own origin"
OTHER_SITE_PAGE = (
    "a page of another site made the browser send this request; "
    "add that page's origin to the trusted_origins option if it may"
)
BAD_FETCH_SITE = "the Sec-Fetch-Site header has an unknown value"
NULL_ORIGIN = (
    "the Origin header is null: a sandboxed or file: page sent it, or a page served with "
    "Referrer-Policy: no-referrer on plain http under a name other than localhost or a "
    "loopback address (browsers then send null from this server's own pages too); "
    "trusted_origins cannot name null: if this server's own form was refused, serve its "
    "pages with another referrer policy (strict-origin-when-cross-origin, the browsers' default)"
)
OTHER_ORIGIN = (
    "the Origin header names another site (or is malformed); "
    "add that origin to the trusted_origins option if it may send requests here"
)
PREFLIGHT_GRANTED = "a CORS preflight from an origin in the trusted_origins option"
PREFLIGHT_REFUSED = (
    "a CORS preflight from an origin that is not trusted; "
    "add it to the trusted_origins option if it may call this server"
)
PREFLIGHT_MALFORMED = "a CORS preflight with malformed Access-Control-Request-* headers"

# RFC 9110 tokens, as Access-Control-Request-Method and -Headers use them.
_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_METHOD = re.compile(_TCHARS)
_HEADER_LIST = re.compile(rf"{_TCHARS}(?:[ \t]*,[ \t]*{_TCHARS})*")
_ORIGIN = re.compile(r"([a-z][a-z0-9+.-]*)://(.+)")
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_ORIGIN_LENGTH = 320  # scheme, "://", a host of at most 300 and a port


@lru_cache(maxsize=CACHE_SIZE)
def parse_origin(text: str) -> tuple[str, str, int | None] | None:
    """``scheme://host[:port]`` as (scheme, host, port or the scheme's
    default), lowercase; ``None`` for anything else (paths, userinfo, ``null``).
    """
    if not text.isascii():
        return None
    match = _ORIGIN.fullmatch(text.lower())
    if match is None:
        return None
    scheme, authority = match.groups()
    parsed = parse_host(authority)
    if parsed is None:
        return None
    port = parsed.port if parsed.port is not None else DEFAULT_PORTS.get(scheme)
    return scheme, parsed.origin_form, port


def normalise_trusted_origins(entries: Iterable[str]) -> frozenset[str]:
    """Check and normalise ``trusted_origins`` to the form browsers send
    (lowercase, no default port, compressed IPv6); raise ``ValueError``."""
    normalised = set()
    for entry in entries:
        if not isinstance(entry, str):
            raise TypeError(
                f"flask_selfhost: trusted_origins entries must be strings, got {entry!r}"
            )
        parsed = parse_origin(entry)
        if parsed is None:
            raise ValueError(
                f"flask_selfhost: trusted_origins entry {entry!r} is not an origin "
                "(scheme://host[:port], no path, not null or *)"
            )
        scheme, origin_form, port = parsed
        if origin_form.startswith("["):
            origin_form = f"[{ipaddress.IPv6Address(origin_form[1:-1]).compressed}]"
        if port is None or port == DEFAULT_PORTS.get(scheme):
            normalised.add(f"{scheme}://{origin_form}")
        else:
            normalised.add(f"{scheme}://{origin_form}:{port}")
    return frozenset(normalised)


def judge_cross_site(
    facts: RequestFacts, trusted_origins: frozenset[str], source: Decision
) -> Decision:
    """Apply the rules above to a request's facts; never raises.

    ``source`` is the grant so far, whose addresses the decision copies for
    the log.
    """
    site = facts.sec_fetch_site
    origin = facts.origin
    if origin is None:  # steps 2, 3 and 6 read the Origin
        if site is None:
            return _decision(source, True, CROSS_SITE, NO_BROWSER_HEADERS, ())
        return judge_fetch_site(facts, site, source)
    if len(origin) > MAX_ORIGIN_LENGTH:
        origin = ""  # malformed: refused below, and never a cache key

    requested_method = facts.request_method
    if facts.method == "OPTIONS" and requested_method is not None:
        return judge_preflight(facts, origin, requested_method, trusted_origins, source)

    if origin in trusted_origins:
        cors = (
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Allow-Credentials", "true"),
        )
        return _decision(source, True, CROSS_SITE, TRUSTED, VARY + cors)

    if site is not None:
        return judge_fetch_site(facts, site, source)

    if origin == "null":
        return _decision(source, False, CROSS_SITE, NULL_ORIGIN, VARY)
    own = own_origin(facts.scheme, facts.host)
    if own is not None and parse_origin(origin) == own:
        return _decision(source, True, CROSS_SITE, ORIGIN_MATCHES, VARY)
    return _decision(source, False, CROSS_SITE, OTHER_ORIGIN, VARY)


def judge_fetch_site(facts: RequestFacts, site: str, source: Decision) -> Decision:
    """Steps 4 and 5: what ``Sec-Fetch-Site`` says, for a request with no
    trusted Origin."""
    if site == "same-origin" or site == "none":
        return _decision(source, True, CROSS_SITE, SAME_ORIGIN, VARY)
    if site != "cross-site" and site != "same-site":
        return _decision(source, False, CROSS_SITE, BAD_FETCH_SITE, VARY)
    if (
        (facts.method == "GET" or facts.method == "HEAD")
        and facts.sec_fetch_mode == "navigate"
        and facts.sec_fetch_dest == "document"  # top-level: no frames
    ):
        return _decision(source, True, CROSS_SITE, NAVIGATION, VARY)
    return _decision(source, False, CROSS_SITE, OTHER_SITE_PAGE, VARY)


def own_origin(scheme: object, host: object) -> tuple[str, str, int | None] | None:
    """The request's own origin, as :func:`parse_origin` returns it, or ``None``
    when the scheme or Host is missing or unusable (then no Origin matches)."""
    if type(scheme) is not str or type(host) is not str:
        return None
    parsed = parse_host(host)
    if parsed is None:
        return None
    scheme = scheme.lower()
    port = parsed.port if parsed.port is not None else DEFAULT_PORTS.get(scheme)
    return scheme, parsed.origin_form, port


def judge_preflight(
    facts: RequestFacts,
    origin: str,
    method: str,
    trusted_origins: frozenset[str],
    source: Decision,
) -> Decision:
    """Step 2: grant a preflight (for ``method``, the
    ``Access-Control-Request-Method``) from a trusted origin, refuse any other."""
    if origin not in trusted_origins:
        return _decision(source, False, PREFLIGHT, PREFLIGHT_REFUSED, PREFLIGHT_VARY)
    requested = facts.request_headers
    if not _METHOD.fullmatch(method) or (
        requested is not None and requested.strip() and not _HEADER_LIST.fullmatch(requested)
    ):
        return _decision(source, False, PREFLIGHT, PREFLIGHT_MALFORMED, PREFLIGHT_VARY)
    headers: Headers = (
        *PREFLIGHT_VARY,
        ("Access-Control-Allow-Origin", origin),
        ("Access-Control-Allow-Credentials", "true"),
        ("Access-Control-Allow-Methods", method),
    )
    if requested is not None and requested.strip():
        headers += (("Access-Control-Allow-Headers", requested),)
    if facts.request_private_network == "true":
        headers += (("Access-Control-Allow-Private-Network", "true"),)
    return _decision(source, True, PREFLIGHT, PREFLIGHT_GRANTED, headers)


@lru_cache(maxsize=CACHE_SIZE)
def _decision(
    source: Decision, allowed: bool, rule: str, reason: str, headers: Headers
) -> Decision:
    """A decision of this rule, with the source rule's addresses for the log;
    a grant keeps the headers of the grant so far (a relayed grant's
    ``Cache-Control``) before its own.

    Cached: a browser's requests (same-origin, mostly) then cost a cache hit
    instead of building a decision, and decisions are immutable anyway.
    """
    return Decision(
        allowed,
        rule,
        reason,
        source.remote_addr,
        source.local_addr,
        peer_addr=source.peer_addr,
        headers=source.headers + headers if allowed else headers,
    )
