"""``route_localnet``: the sysctl that lets a NAT rule hand other hosts'
packets to ``127.0.0.0/8`` (the DNAT trap needs it on IPv4)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import Any

from .report import NOTE, REFUSED_BY_GUARD, RISKY, UNKNOWN, Finding, Question


def route_localnet_findings(
    values: Mapping[str, str], scope: Question | None = None
) -> list[Finding]:
    """``values``: interface name -> contents of its ``route_localnet`` file.

    Risky, unless ``scope`` names a port whose app is guarded: what a NAT
    rule hands that app is refused by its guard (a note then says so). The
    fix is the ``sysctl`` line that turns it off.
    """
    scope = scope or Question()
    findings = []
    for interface, value in sorted(values.items()):
        if value.strip() != "1":
            continue
        where = {
            "all": "every interface",
            "default": "every interface created from now on",
        }.get(interface, f"interface {interface}")
        message = (
            f"route_localnet=1 on {where}: packets from other hosts may be routed to "
            "127.0.0.0/8, so a NAT rule can hand them to apps bound to loopback"
        )
        details: dict[str, Any] = {
            "interface": interface,
            "sysctl": f"net.ipv4.conf.{interface}.route_localnet",
        }
        # sysctl names a VLAN interface eth0.100 as eth0/100: its dots separate keys.
        fix = f"sysctl -w net.ipv4.conf.{interface.replace('.', '/')}.route_localnet=0"
        if scope.guarded_port:
            details.update({REFUSED_BY_GUARD: True, "app": scope.app, "port": scope.port})
            message += (
                f"; {scope.app} on port {scope.port} is guarded and refuses them "
                "(apps on other loopback ports are not covered by this check)."
            )
            findings.append(Finding(NOTE, "route_localnet", message, details, fix))
        else:
            message += scope.unrefused() + "."
            findings.append(Finding(RISKY, "route_localnet", message, details, fix))
    return findings


def read_route_localnet(
    root: str = "/proc/sys/net/ipv4/conf",
) -> tuple[dict[str, str], list[Finding]]:
    values = {}
    try:
        interfaces = os.listdir(root)
    except OSError as error:
        return {}, [Finding(UNKNOWN, "inspect", f"could not list {root}: {error}.")]
    for interface in interfaces:
        path = os.path.join(root, interface, "route_localnet")
        with contextlib.suppress(OSError), open(path) as file:
            values[interface] = file.read()
    return values, []
