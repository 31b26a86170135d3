"""
The guard's options, checked when the guard is built
====================================================

A typo or a wrong type raises at start-up with the list of known options,
never on the first request. Every field is hashable, so that an
:class:`Options` can key a cache.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from http import HTTPStatus
from typing import Any

from werkzeug.exceptions import default_exceptions

from .decision import Decision


@dataclass(frozen=True)
class Options:
    """The guard's settings, validated once when the guard is built.

    :param refuse_status: HTTP status of a refusal, 403 by default. Use 404
        to hide that the endpoint exists; any 4xx or 5xx that Werkzeug knows.
    :param refuse_body: Plain-text body of a refusal. By default a 403 says
        why (the reason names no address) and any other status says only its
        name, so that a 404 looks like any other 404.
    """

    refuse_status: int = 403
    refuse_body: str | None = None

    def __post_init__(self) -> None:
        status = self.refuse_status
        if type(status) is not int or status not in default_exceptions:
            known = ", ".join(str(code) for code in sorted(default_exceptions))
            raise ValueError(
                f"flask_selfhost: refuse_status must be an HTTP error status ({known}), "
                f"got {status!r}"
            )
        if self.refuse_body is not None and not isinstance(self.refuse_body, str):
            raise TypeError(
                f"flask_selfhost: refuse_body must be a string or None, got {self.refuse_body!r}"
            )

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> Options:
        """Build from keyword options, naming any unknown key."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(
                f"flask_selfhost: unknown option(s) {', '.join(unknown)}; "
                f"known options are {', '.join(sorted(known))}"
            )
        return cls(**options)

    def body_for(self, decision: Decision) -> str:
        """The plain-text body of a refusal."""
        if self.refuse_body is not None:
            return self.refuse_body
        name = HTTPStatus(self.refuse_status).phrase
        if self.refuse_status == 403:
            return (
                f"{name}: only clients on this server's own host may use it ({decision.reason}).\n"
            )
        return f"{name}\n"
