"""Findings, the exit status they add up to, and how they are printed."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

RISKY = "risky"  # other hosts can (or are meant to) reach something local: exit 1
UNKNOWN = "unknown"  # could not inspect: exit 2 unless something is risky
NOTE = "note"  # worth knowing, not an exposure by itself
OK = "ok"

#: In a finding's details: other hosts reach the app, and its guard refuses them.
REFUSED_BY_GUARD = "refused_by_guard"


@dataclass(frozen=True)
class Finding:
    severity: str  # RISKY, UNKNOWN, NOTE or OK
    topic: str  # "listener", "forwarder", "route_localnet", "nat", "app", "inspect"
    message: str  # plain words, one sentence or two
    details: dict[str, Any] = field(default_factory=dict)
    #: What to do about it: a command to run or a change to make. Every risky
    #: finding has one, so that a report is something to act on.
    fix: str = ""


@dataclass(frozen=True)
class Question:
    """What the user asked about: ``--port`` and the app of ``--app``.

    ``guarded`` is ``None`` when no app was given (or it did not import, or
    is not what the port serves): nothing is then said about what the app
    refuses. ``bypass`` says why a guarded app cannot refuse other hosts on
    ``port`` (a source NAT rule makes them look like this host): no finding
    then puts them down to the guard.
    """

    port: int | None = None
    app: str | None = None
    guarded: bool | None = None
    bypass: str | None = None
    #: The app's guard says its proxy drops header names with underscores.
    drops_underscores: bool = False
    #: The app's guard asks the kernel for each local client's socket, and
    #: netlink answers here: source NAT to this host's address is no bypass.
    witness: bool = False

    @property
    def guarded_port(self) -> bool:
        """True when findings about ``port`` can be put down to a guarded app."""
        return self.port is not None and self.guarded is True and not self.bypass

    def unrefused(self) -> str:
        """The clause a risky finding adds when the app is guarded but
        bypassed; ``""`` otherwise."""
        if self.port is not None and self.guarded is True and self.bypass:
            return f"; {self.app} is guarded, but {self.bypass}, so it does not refuse them"
        return ""


#: In a finding's details: the --app claim could not be checked against the
#: process that serves --port; the findings assume it.
ASSUMED = "assumed"


def exit_status(findings: Iterable[Finding]) -> int:
    severities = {finding.severity for finding in findings}
    if RISKY in severities:
        return 1
    if UNKNOWN in severities:
        return 2
    return 0


LABELS = {RISKY: "RISKY", UNKNOWN: "UNKNOWN", NOTE: "note", OK: "ok"}
ORDER = {RISKY: 0, UNKNOWN: 1, NOTE: 2, OK: 3}


def verdict(findings: Sequence[Finding]) -> str:
    """The last line's words, without the exit status."""
    status = exit_status(findings)
    if status == 1:
        risky = sum(1 for finding in findings if finding.severity == RISKY)
        return f"{risky} risky finding(s): other hosts can reach what should be local"
    refused = [f for f in findings if f.details.get(REFUSED_BY_GUARD)]
    assumed = [f for f in findings if f.details.get(ASSUMED)]
    if status == 2 and assumed:
        app, port = assumed[0].details.get("app"), assumed[0].details.get("port")
        text = f"nothing risky found, assuming port {port} serves {app}, which was not verified"
    elif status == 2:
        text = "nothing risky found, but part of this host could not be inspected"
    elif refused:
        # Reachable is not exposed: the guard answers these hosts with a refusal.
        app = refused[0].details.get("app", "the app")
        port = refused[0].details.get("port")
        where = f"port {port}" if port is not None else "the app"
        return f"other hosts can reach {where}, and {app} refuses them (guarded): nothing risky"
    else:
        text = "nothing risky found"
    return text


def render_text(findings: Sequence[Finding]) -> str:
    lines = []
    for finding in sorted(findings, key=lambda item: ORDER[item.severity]):
        lines.append(f"{LABELS[finding.severity]:<8} {finding.topic}: {finding.message}")
        if finding.fix:
            lines.append(f"{'':<8} fix: {finding.fix}")
    lines.append(f"Result: {verdict(findings)} (exit {exit_status(findings)}).")
    return "\n".join(lines)


def render(findings: Sequence[Finding], as_json: bool) -> str:
    if as_json:
        return json.dumps(
            {"exit_status": exit_status(findings), "findings": [asdict(f) for f in findings]},
            indent=2,
        )
    return render_text(findings)
