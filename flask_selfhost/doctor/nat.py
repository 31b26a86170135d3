"""NAT rules that hand other hosts' packets to loopback (the DNAT trap), from
``iptables-save -t nat``, ``ip6tables-save -t nat`` and ``nft -j list ruleset``.

``REDIRECT`` is not one of them: in ``PREROUTING`` Linux redirects to the
incoming interface's own address, never to loopback. IPv6 has no
``route_localnet``, and Linux drops packets DNAT'd to ``::1``: such a rule is
a note. The parsers are pure; :func:`read_nat` runs the tools.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from .report import NOTE, REFUSED_BY_GUARD, RISKY, UNKNOWN, Finding, Scope


@dataclass(frozen=True)
class NatRule:
    source: str  # "iptables", "ip6tables" or "nft"
    family: int  # 4 or 6
    chain: str
    target: str  # "DNAT", "REDIRECT", ...
    destination: str | None  # the address part of the target, None when not shown
    text: str  # the rule as the tool printed it (nft: a summary)
    #: The loopback port the packets go to: the target's port, else the one
    #: port the rule matches (DNAT keeps it). None when not one known port.
    port: int | None = None


# iptables-save ------------------------------------------------------------


def _destination_address(value: str) -> str:
    """The address part of ``--to-destination`` (``1.2.3.4:80``, ``[::1]:80``,
    ``::1``, ``1.2.3.4-1.2.3.9:80-90``); ``""`` for a port-only target."""
    if value.startswith("["):
        return value[1 : value.index("]")] if "]" in value else value[1:]
    if value.count(":") > 1:  # bare IPv6 address, no port
        return value
    return value.split(":", 1)[0]


def _destination_port(value: str) -> str | None:
    """The port part of ``--to-destination``, as text (``"80"``, ``"80-90"``)."""
    if value.startswith("["):
        after = value.partition("]")[2]
        return after[1:] if after.startswith(":") else None
    if value.count(":") == 1:
        return value.split(":", 1)[1] or None
    return None


def _single_port(text: str | None) -> int | None:
    """``"8000"`` -> 8000; a range, a list or nothing -> None."""
    return int(text) if text is not None and text.isdigit() else None


def _is_loopback_range(address: str) -> bool:
    """True when an address or ``a-b`` range includes a loopback address."""
    parts = address.split("-")
    try:
        ends = [ipaddress.ip_address(part.strip()) for part in parts]
    except ValueError:
        return False
    if len(ends) == 2 and ends[0].version == ends[1].version:
        low, high = sorted(ends)
        loop = (
            ipaddress.ip_network("127.0.0.0/8")
            if low.version == 4
            else ipaddress.ip_network("::1/128")
        )
        return int(low) <= int(loop[-1]) and int(high) >= int(loop[0])
    return any(end.is_loopback for end in ends)


def _option(words: Sequence[str], name: str) -> str | None:
    with contextlib.suppress(ValueError, IndexError):
        return words[words.index(name) + 1]
    return None


def parse_iptables_save(text: str, family: int) -> list[NatRule]:
    """DNAT/REDIRECT rules in ``iptables-save`` (``family=4``) or
    ``ip6tables-save`` (``family=6``) output, nat table only."""
    rules = []
    table = ""
    source = "iptables" if family == 4 else "ip6tables"
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("*"):
            table = line[1:]
            continue
        if table != "nat" or not line.startswith("-A "):
            continue
        try:
            words = shlex.split(line)
        except ValueError:
            words = line.split()
        chain = words[1] if len(words) > 1 else ""
        target = _option(words, "-j") or _option(words, "--jump") or ""
        if target not in ("DNAT", "REDIRECT"):
            continue
        to = _option(words, "--to-destination") or _option(words, "--to")
        destination = _destination_address(to) if to is not None else None
        port_text = _destination_port(to) if to is not None else None
        if port_text is None:  # DNAT without a port keeps the packet's own
            port_text = _option(words, "--dport") or _option(words, "--destination-port")
        rules.append(
            NatRule(source, family, chain, target, destination, line, _single_port(port_text))
        )
    return rules


# nft ----------------------------------------------------------------------


def parse_nft_json(text: str) -> tuple[list[NatRule], int]:
    """``dnat``/``redirect`` statements in ``nft -j list ruleset`` output.

    Returns the rules and how many iptables-nft targets (``xt``) nft could
    not show: their destination is only visible to ``iptables-save``.
    """
    document = json.loads(text)
    items = document.get("nftables", []) if isinstance(document, dict) else []
    hooks = {}
    for item in items:
        chain = item.get("chain") if isinstance(item, dict) else None
        if isinstance(chain, dict):
            hooks[(chain.get("family"), chain.get("table"), chain.get("name"))] = chain.get("hook")
    rules, hidden = [], 0
    for item in items:
        rule = item.get("rule") if isinstance(item, dict) else None
        if not isinstance(rule, dict):
            continue
        nft_family = rule.get("family")
        key = (nft_family, rule.get("table"), rule.get("chain"))
        chain_name = f"{nft_family} {key[1]} {key[2]} (hook {hooks.get(key) or 'none'})"
        matched_port = _nft_matched_port(rule.get("expr", []))
        for statement in _walk(rule.get("expr", [])):
            for target in ("dnat", "redirect"):
                if target not in statement:
                    continue
                body = statement[target] if isinstance(statement[target], dict) else {}
                family = _nft_family(nft_family, body)
                destination = _nft_address(body.get("addr")) if target == "dnat" else None
                port = body.get("port") if isinstance(body.get("port"), int) else matched_port
                summary = f"{target} " + json.dumps(body, sort_keys=True)
                rules.append(
                    NatRule("nft", family, chain_name, target.upper(), destination, summary, port)
                )
            xt = statement.get("xt")
            if isinstance(xt, dict) and xt.get("name") in ("DNAT", "REDIRECT"):
                hidden += 1
    return rules, hidden


def _walk(value: Any) -> Iterator[dict[str, Any]]:
    """Every dict inside a parsed nft expression, depth first."""
    if isinstance(value, dict):
        yield value
        for inner in value.values():
            yield from _walk(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _walk(inner)


def _nft_matched_port(expr: Any) -> int | None:
    """The one destination port a rule matches (``tcp dport 8000``), else None."""
    for statement in _walk(expr):
        match = statement.get("match")
        if not isinstance(match, dict) or match.get("op", "==") != "==":
            continue
        payload = (
            match.get("left", {}).get("payload") if isinstance(match.get("left"), dict) else None
        )
        if isinstance(payload, dict) and payload.get("field") == "dport":
            right = match.get("right")
            return right if isinstance(right, int) else None
    return None


def _nft_family(table_family: Any, body: Mapping[str, Any]) -> int:
    if body.get("family") in ("ip", "ip6"):
        return 4 if body["family"] == "ip" else 6
    if table_family == "ip6":
        return 6
    address = body.get("addr")
    return 6 if isinstance(address, str) and ":" in address else 4


def _nft_address(address: Any) -> str | None:
    """An nft address expression as text: a string, or a ``range`` as ``a-b``."""
    if isinstance(address, str):
        return address
    if isinstance(address, dict) and isinstance(address.get("range"), list):
        ends = address["range"]
        if len(ends) == 2 and all(isinstance(end, str) for end in ends):
            return f"{ends[0]}-{ends[1]}"
    return None  # a map, a set or a variable: not resolved here


# Findings -----------------------------------------------------------------


def nat_findings(
    rules: Iterable[NatRule], hidden_nft_targets: int = 0, scope: Scope | None = None
) -> list[Finding]:
    """Findings for rules that DNAT to loopback, and for rules nobody could read.

    With ``scope.port``, a rule known to lead to another port is a note (the
    exit status is about that port); a rule that leads to it, or may, is
    risky unless the app there is guarded: then its hosts reach the app and
    are refused, which a note says.
    """
    scope = scope or Scope()
    findings = []
    for rule in rules:
        if rule.target != "DNAT" or not rule.destination:
            continue
        if not _is_loopback_range(rule.destination):
            continue
        details = asdict(rule)
        where = f"{rule.destination}" + (f" port {rule.port}" if rule.port is not None else "")
        if rule.chain == "OUTPUT" or "hook output" in rule.chain:
            findings.append(
                Finding(
                    NOTE,
                    "nat",
                    f"{rule.source} rule DNATs this host's own outgoing connections to "
                    f"{where} (chain {rule.chain}); it does not expose anything: {rule.text}",
                    details,
                )
            )
        elif rule.family == 6:
            findings.append(
                Finding(
                    NOTE,
                    "nat",
                    f"{rule.source} rule DNATs incoming IPv6 packets to {rule.destination} "
                    f"(chain {rule.chain}). Linux has no route_localnet for IPv6 and drops "
                    f"them, so it does not expose loopback today, but it tries to: {rule.text}",
                    details,
                )
            )
        else:
            trap = (
                f"{rule.source} rule DNATs packets from other hosts to loopback {where} "
                f"(chain {rule.chain}): with route_localnet=1 an app bound to loopback "
                "answers them (the DNAT trap)"
            )
            if scope.port is not None and rule.port is not None and rule.port != scope.port:
                findings.append(
                    Finding(NOTE, "nat", f"{trap}; not port {scope.port}: {rule.text}", details)
                )
            elif scope.guarded_port:
                details.update({REFUSED_BY_GUARD: True, "app": scope.app, "port": scope.port})
                findings.append(
                    Finding(
                        NOTE,
                        "nat",
                        f"{trap}; other hosts reach port {scope.port} through it, and "
                        f"{scope.app} is guarded, so it refuses them: {rule.text}",
                        details,
                    )
                )
            else:
                findings.append(Finding(RISKY, "nat", f"{trap}: {rule.text}", details))
    if hidden_nft_targets:
        findings.append(
            Finding(
                UNKNOWN,
                "nat",
                f"nft shows {hidden_nft_targets} iptables-nft DNAT/REDIRECT rule(s) without "
                "their destination, and iptables-save could not be read to show it.",
                {"hidden_rules": hidden_nft_targets},
            )
        )
    return findings


def unreadable_nat_finding(failures: Sequence[str], is_root: bool) -> Finding:
    """Neither iptables-save nor nft worked: say why, and what would help.

    Without root both tools fail (they need ``CAP_NET_ADMIN``) even when
    installed: asking to install them then would send the user the wrong way.
    """
    missing = [why for why in failures if why.endswith(" is not installed")]
    if not is_root:
        advice = 'Run as root: sudo "$(command -v flask-selfhost)" doctor'
    elif len(missing) == len(failures):
        advice = "Install iptables or nftables"
    else:
        advice = "See the errors above"
    return Finding(
        UNKNOWN,
        "nat",
        "could not read the NAT rules: neither iptables-save nor nft worked ("
        + "; ".join(failures)
        + f"). {advice}.",
        {"failures": list(failures)},
    )


# Reading ------------------------------------------------------------------


def run_tool(command: Sequence[str]) -> tuple[str | None, str]:
    """(stdout, "") when the command worked, else (None, why not)."""
    if shutil.which(command[0]) is None:
        return None, f"{command[0]} is not installed"
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, f"{' '.join(command)}: {error}"
    if done.returncode != 0:
        reason = (done.stderr.strip() or f"exit status {done.returncode}").splitlines()[0]
        return None, f"{' '.join(command)}: {reason}"
    return done.stdout, ""


ToolRunner = Callable[[Sequence[str]], tuple[str | None, str]]

#: iptables-nft-save prints this when rules also exist in the legacy backend,
#: which it does not show. Only then is the legacy tool run: reading a legacy
#: table that does not exist yet would load it.
LEGACY_WARNING = "iptables-legacy tables present"


def read_nat(
    run: ToolRunner = run_tool, scope: Scope | None = None, is_root: bool = True
) -> list[Finding]:
    """NAT findings from whichever of iptables-save, ip6tables-save (and their
    legacy variants, when told to) and nft can be run."""
    rules: list[NatRule] = []
    failures: list[str] = []
    iptables_ok = False
    for family, tool in ((4, "iptables"), (6, "ip6tables")):
        output, why = run([f"{tool}-save", "-t", "nat"])
        if output is None:
            failures.append(why)
            continue
        iptables_ok = True
        rules += parse_iptables_save(output, family)
        if LEGACY_WARNING in output:
            legacy, why = run([f"{tool}-legacy-save", "-t", "nat"])
            if legacy is None:
                failures.append(why)
                rules.append(NatRule(f"{tool}-legacy", family, "?", "UNREAD", None, why))
            else:
                rules += [
                    replace(rule, source=f"{tool}-legacy")
                    for rule in parse_iptables_save(legacy, family)
                ]
    nft_ok, hidden = False, 0
    output, why = run(["nft", "-j", "list", "ruleset"])
    if output is None:
        failures.append(why)
    else:
        try:
            nft_rules, hidden = parse_nft_json(output)
            rules += nft_rules
            nft_ok = True
        except ValueError as error:
            failures.append(f"nft printed JSON that could not be read: {error}")
    findings = nat_findings(rules, 0 if iptables_ok else hidden, scope)
    for rule in rules:
        if rule.target == "UNREAD":
            findings.append(
                Finding(
                    UNKNOWN,
                    "nat",
                    f"{rule.source} rules exist but could not be read: {rule.text}.",
                    asdict(rule),
                )
            )
    if not (iptables_ok or nft_ok):
        findings.append(unreadable_nat_finding(failures, is_root))
    return findings
