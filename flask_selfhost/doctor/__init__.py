"""
``flask-selfhost doctor``: find the ways other hosts can reach this host's apps
================================================================================

The threat: an app that is "only on localhost" while another host can still
reach it. Binding to ``127.0.0.1`` is undone by a NAT rule that sends
outside packets to loopback (it needs ``route_localnet=1`` on IPv4), and any
guard that trusts loopback is undone by a forwarder on this host (an SSH
tunnel, socat, a reverse proxy, docker-proxy) that relays other hosts'
connections, so that every client looks local. The doctor audits this host
(this network namespace), one module per concern:

- :mod:`~flask_selfhost.doctor.listeners`: listening TCP sockets, their
  owners, and the known forwarders among them;
- :mod:`~flask_selfhost.doctor.sysctl`: ``route_localnet=1``;
- :mod:`~flask_selfhost.doctor.nat`: rules that DNAT to loopback, and rules
  that SNAT other hosts' connections to this host's own address;
- :mod:`~flask_selfhost.doctor.app`: the app of ``--app``, and whether
  flask_selfhost guards it;
- :mod:`~flask_selfhost.doctor.served`: whether ``--port`` serves that app;
- :mod:`~flask_selfhost.doctor.witness`: whether the app's guard asks the
  kernel for each local client's socket, and what it would refuse now;
- :mod:`~flask_selfhost.doctor.peers`: who is connected to ``--port`` now
  (user and process);
- :mod:`~flask_selfhost.doctor.relays`: what each known forwarder on this
  host relays to: one that relays to ``--port`` is risky;
- :mod:`~flask_selfhost.doctor.proxies`: an nginx that passes header names
  with underscores, when the app says its proxy drops them;
- :mod:`~flask_selfhost.doctor.report`: findings, exit status, text and JSON.

Exit status: 0 nothing risky, 1 something risky, 2 something could not be
inspected, such as whether ``--port`` serves ``--app`` (and nothing risky
was found). With ``--port``, the status is about that port: what leads only
to other ports is a note (forwarders excepted, which may relay to any port).
A guarded ``--app`` is credited (other hosts that reach the port are
refused) only when the process on ``--port`` names it, and never while a
source NAT rule makes other hosts look local, unless the guard asks the
kernel for each local client's socket (on by default) and netlink answers
here. Every risky finding has a fix: the command or change that removes
it. The parsers are pure (text in, findings out); the ``read_*`` functions
and :func:`run` do the I/O around them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..options import Options
from .app import app_findings, guard_of, is_factory, is_guarded, load_app, parse_spec
from .listeners import (
    FORWARDERS,
    Listener,
    classify_address,
    decode_proc_address,
    forwarder_findings,
    hidden_owner_findings,
    listener_findings,
    parse_proc_net_tcp,
    read_listeners,
)
from .nat import (
    MAKES_REMOTE_LOCAL,
    SNAT_BYPASS,
    NatRule,
    nat_findings,
    parse_fib_trie,
    parse_if_inet6,
    parse_iptables_save,
    parse_nft_json,
    read_nat,
    read_own_addresses,
)
from .peers import connected_findings, connected_now, read_sockets
from .proxies import underscore_findings
from .relays import forwarder_target_findings, relay_findings
from .report import (
    ASSUMED,
    NOTE,
    OK,
    REFUSED_BY_GUARD,
    RISKY,
    UNKNOWN,
    Finding,
    Question,
    exit_status,
    render,
    render_text,
)
from .served import Process, app_specs_in, read_commands, same_app, served_findings
from .sysctl import read_route_localnet, route_localnet_findings
from .witness import witness_findings


def run(
    port: int | None = None,
    app_spec: str | None = None,
    as_json: bool = False,
    load: Callable[[str], Any] = load_app,
) -> int:
    """Audit this host, print the findings, return the exit status.

    ``load`` turns ``app_spec`` into the app (:func:`load_app`; ``flask
    selfhost doctor`` passes the app that ``flask`` loaded)."""
    findings: list[Finding] = []
    guarded: bool | None = None
    drops = False
    options = None
    if app_spec is not None:
        try:
            app = load(app_spec)
        except Exception as error:  # any import-time failure of the user's app
            findings.append(
                Finding(
                    UNKNOWN, "app", f"could not import {app_spec}: {error!r}.", {"app": app_spec}
                )
            )
        else:
            guarded = is_guarded(app)
            drops = drops_underscores(app)
            options = guard_of(app)
            findings += app_findings(app_spec, app)
    commands = served_commands(port)
    witnessed, witness = witness_findings(options, port, commands)
    findings += witnessed
    findings += audit(
        Question(
            port,
            app_spec if guarded is not None else None,
            guarded,
            drops_underscores=drops,
            witness=witness,
        ),
        options,
    )
    print(render(findings, as_json))
    return exit_status(findings)


def audit(scope: Question, options: Options | None = None) -> list[Finding]:
    """Everything but loading the app: whether the port serves it, listeners,
    forwarders and what they relay to, who is connected to the port,
    route_localnet, NAT. ``options`` are the guard's of ``--app``, if any.

    The guard of a guarded ``--app`` is withdrawn from ``scope`` when the
    port serves another app, and bypassed when a source NAT rule gives other
    hosts this host's address: no finding then says that it refuses them.
    """
    listeners, findings = read_listeners(scope)
    if scope.app is not None and scope.port is not None and scope.guarded:
        claim, served = served_findings(scope.app, scope.port, listeners, read_commands(listeners))
        findings += claim
        if served is False:
            scope = replace(scope, guarded=None)
    own = read_own_addresses()
    nat = read_nat(scope=scope, is_root=os.geteuid() == 0, own_addresses=own)
    if any(finding.details.get(MAKES_REMOTE_LOCAL) for finding in nat) and not scope.witness:
        scope = replace(scope, bypass=SNAT_BYPASS)
    findings += listener_findings(listeners, scope.port, scope.app, scope.guarded, scope.bypass)
    findings += forwarder_findings(listeners)
    server_pids = [
        pid for item in listeners if item.port == scope.port for pid, _ in item.processes
    ]
    sockets = read_sockets()
    if scope.port is not None:
        findings += connected_now(scope.port, sockets)
    findings += relay_findings(scope, own, options if scope.guarded else None, server_pids, sockets)
    values, problems = read_route_localnet()
    findings += problems + route_localnet_findings(values, scope)
    if scope.drops_underscores:
        findings += underscore_findings(listeners)
    return findings + nat


def served_commands(port: int | None) -> list[str]:
    """The command lines of the processes that listen on ``port``."""
    if port is None:
        return []
    listeners = [item for item in read_listeners()[0] if item.port == port]
    return [" ".join(process.argv) for process in read_commands(listeners).values()]


def drops_underscores(app: object) -> bool:
    """The app's guard says its proxy drops header names with underscores."""
    options = guard_of(app)
    return options is not None and options.proxy_drops_underscore_headers


__all__ = [
    "ASSUMED",
    "FORWARDERS",
    "MAKES_REMOTE_LOCAL",
    "NOTE",
    "OK",
    "REFUSED_BY_GUARD",
    "RISKY",
    "SNAT_BYPASS",
    "UNKNOWN",
    "Finding",
    "Listener",
    "NatRule",
    "Process",
    "Question",
    "app_findings",
    "app_specs_in",
    "audit",
    "classify_address",
    "connected_findings",
    "connected_now",
    "decode_proc_address",
    "drops_underscores",
    "exit_status",
    "forwarder_findings",
    "forwarder_target_findings",
    "guard_of",
    "hidden_owner_findings",
    "is_factory",
    "is_guarded",
    "listener_findings",
    "load_app",
    "nat_findings",
    "parse_fib_trie",
    "parse_if_inet6",
    "parse_iptables_save",
    "parse_nft_json",
    "parse_proc_net_tcp",
    "parse_spec",
    "read_commands",
    "read_listeners",
    "read_nat",
    "read_own_addresses",
    "read_route_localnet",
    "relay_findings",
    "render",
    "render_text",
    "route_localnet_findings",
    "run",
    "same_app",
    "served_findings",
    "underscore_findings",
    "witness_findings",
]
