"""NAT rules that let other hosts in, from ``iptables-save -t nat``,
``ip6tables-save -t nat`` and ``nft -j list ruleset``:

- DNAT to loopback (the DNAT trap) hands other hosts' packets to apps bound
  to loopback. ``REDIRECT`` is not one of them: in ``PREROUTING`` Linux
  redirects to the incoming interface's own address, never to loopback.
  IPv6 has no ``route_localnet``, and Linux drops packets DNAT'd to ``::1``:
  such a rule is a note.
- SNAT on the way in (the nat ``INPUT`` chain, an nft ``input`` hook) to
  loopback or to one of this host's addresses rewrites the client's address
  into this host's own: the app, guarded or not, sees a local client. No
  guard can see through it, so it is risky whatever the app.

The parsers are pure; :func:`read_nat` runs the tools.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import shlex
import shutil
import subprocess
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, TypeVar

from .report import NOTE, REFUSED_BY_GUARD, RISKY, UNKNOWN, Finding, Question


@dataclass(frozen=True)
class NatRule:
    source: str  # "iptables", "ip6tables" or "nft"
    family: int  # 4 or 6
    chain: str
    target: str  # "DNAT", "REDIRECT", ...
    destination: str | None  # the address part of the target, None when not shown
    text: str  # the rule as the tool printed it (nft: a summary)
    #: The loopback port the packets go to: the target's port, else the one
    #: port the rule matches (DNAT keeps it; for SNAT, the matched port, as
    #: its target's port is the new source port). None when not one known port.
    port: int | None = None
    #: The command that deletes the rule, as the fix a finding gives.
    remove: str = ""
    #: The built-in hooks ("prerouting", "input", "output", "postrouting")
    #: whose packets can reach the rule, through jumps from user chains.
    hooks: tuple[str, ...] = ()


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


BUILTIN_CHAINS = ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")


def parse_iptables_save(text: str, family: int, tool: str | None = None) -> list[NatRule]:
    """DNAT, REDIRECT and SNAT rules in ``iptables-save`` (``family=4``) or
    ``ip6tables-save`` (``family=6``) output, nat table only.

    ``tool`` is the command that deletes a rule (``iptables-legacy``...);
    by default ``iptables`` or ``ip6tables``.
    """
    source = "iptables" if family == 4 else "ip6tables"
    tool = tool or source
    lines: list[tuple[str, list[str]]] = []
    table = ""
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
        lines.append((line, words))
    jumps: dict[str, set[str]] = {}
    for _, words in lines:
        chain = words[1] if len(words) > 1 else ""
        target = _option(words, "-j") or _option(words, "--jump") or _option(words, "-g")
        jumps.setdefault(chain, set()).add(target or "")
    hooks_of = reaching_hooks(jumps, {name: name.lower() for name in BUILTIN_CHAINS})
    rules = []
    for line, words in lines:
        chain = words[1] if len(words) > 1 else ""
        target = _option(words, "-j") or _option(words, "--jump") or ""
        if target not in ("DNAT", "REDIRECT", "SNAT"):
            continue
        option = "--to-source" if target == "SNAT" else "--to-destination"
        to = _option(words, option) or _option(words, "--to")
        destination = _destination_address(to) if to is not None else None
        port_text = _destination_port(to) if to is not None and target != "SNAT" else None
        if port_text is None:  # DNAT without a port keeps the packet's own
            port_text = _option(words, "--dport") or _option(words, "--destination-port")
        remove = f"{tool} -t nat -D {line[3:]}"
        rules.append(
            NatRule(
                source,
                family,
                chain,
                target,
                destination,
                line,
                _single_port(port_text),
                remove,
                hooks_of.get(chain, ()),
            )
        )
    return rules


Chain = TypeVar("Chain", str, tuple[Any, Any, Any])


def reaching_hooks(
    jumps: Mapping[Chain, set[Chain]], roots: Mapping[Chain, str]
) -> dict[Chain, tuple[str, ...]]:
    """chain -> the hooks whose packets reach it: ``roots`` maps the chains
    that hooks enter to the hook's name, ``jumps`` each chain to the chains
    it jumps or goes to."""
    found: dict[Chain, set[str]] = {}
    for root, hook in roots.items():
        pending = [root]
        while pending:
            chain = pending.pop()
            if hook in found.setdefault(chain, set()):
                continue
            found[chain].add(hook)
            pending += [target for target in jumps.get(chain, ()) if target]
    return {chain: tuple(sorted(hooks)) for chain, hooks in found.items()}


# nft ----------------------------------------------------------------------


def parse_nft_json(text: str) -> tuple[list[NatRule], int]:
    """``dnat``, ``redirect`` and ``snat`` statements in ``nft -j list ruleset``
    output.

    Returns the rules and how many iptables-nft targets (``xt``) nft could
    not show: their address is only visible to ``iptables-save``.
    """
    document = json.loads(text)
    items = document.get("nftables", []) if isinstance(document, dict) else []
    hooks: dict[tuple[Any, Any, Any], Any] = {}
    jumps: dict[tuple[Any, Any, Any], set[tuple[Any, Any, Any]]] = {}
    for item in items:
        chain = item.get("chain") if isinstance(item, dict) else None
        if isinstance(chain, dict):
            key = (chain.get("family"), chain.get("table"), chain.get("name"))
            hooks[key] = chain.get("hook")
    rule_items = [
        item["rule"]
        for item in items
        if isinstance(item, dict) and isinstance(item.get("rule"), dict)
    ]
    for rule in rule_items:
        key = (rule.get("family"), rule.get("table"), rule.get("chain"))
        for statement in _nested_dicts(rule.get("expr", [])):
            for verb in ("jump", "goto"):
                if isinstance(statement.get(verb), dict):
                    to = (key[0], key[1], statement[verb].get("target"))
                    jumps.setdefault(key, set()).add(to)
    hooks_of = reaching_hooks(jumps, {key: hook for key, hook in hooks.items() if hook})
    rules, hidden = [], 0
    for rule in rule_items:
        nft_family = rule.get("family")
        key = (nft_family, rule.get("table"), rule.get("chain"))
        chain_name = f"{nft_family} {key[1]} {key[2]} (hook {hooks.get(key) or 'none'})"
        matched_port = _nft_matched_port(rule.get("expr", []))
        handle = rule.get("handle")
        remove = (
            f"nft delete rule {nft_family} {key[1]} {key[2]} handle {handle}"
            if isinstance(handle, int)
            else f"nft -a list chain {nft_family} {key[1]} {key[2]}, then nft delete rule "
            "... handle N with that rule's handle"
        )
        for statement in _nested_dicts(rule.get("expr", [])):
            for target in ("dnat", "redirect", "snat"):
                if target not in statement:
                    continue
                body = statement[target] if isinstance(statement[target], dict) else {}
                family = _nft_family(nft_family, body)
                destination = _nft_address(body.get("addr")) if target != "redirect" else None
                port = body.get("port") if isinstance(body.get("port"), int) else matched_port
                if target == "snat":
                    port = matched_port  # the target's port is the new source port
                summary = f"{target} " + json.dumps(body, sort_keys=True)
                rules.append(
                    NatRule(
                        "nft",
                        family,
                        chain_name,
                        target.upper(),
                        destination,
                        summary,
                        port,
                        remove,
                        hooks_of.get(key, ()),
                    )
                )
            xt = statement.get("xt")
            if isinstance(xt, dict) and xt.get("name") in ("DNAT", "REDIRECT", "SNAT"):
                hidden += 1
    return rules, hidden


def _nested_dicts(value: Any) -> Iterator[dict[str, Any]]:
    """Every dict inside a parsed nft expression, depth first."""
    if isinstance(value, dict):
        yield value
        for inner in value.values():
            yield from _nested_dicts(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _nested_dicts(inner)


def _nft_matched_port(expr: Any) -> int | None:
    """The one destination port a rule matches (``tcp dport 8000``), else None."""
    for statement in _nested_dicts(expr):
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


#: What ``Question.bypass`` says when a source NAT rule makes other hosts look local.
SNAT_BYPASS = "a source NAT rule gives other hosts this host's own address (see its nat finding)"

#: In a finding's details: this rule makes other hosts look like this host.
MAKES_REMOTE_LOCAL = "makes_remote_local"


def nat_findings(
    rules: Iterable[NatRule],
    hidden_nft_targets: int = 0,
    scope: Question | None = None,
    own_addresses: Collection[str] | None = None,
) -> list[Finding]:
    """Findings for rules that DNAT to loopback, rules that SNAT incoming
    connections to this host's own address, and rules nobody could read.

    With ``scope.port``, a rule known to lead to another port is a note (the
    exit status is about that port); a DNAT rule that leads to it, or may,
    is risky unless the app there is guarded: then its hosts reach the app
    and are refused, which a note says. An SNAT rule on that port (or on
    any) is risky whatever the app, and while one exists no DNAT rule is put
    down to the guard. ``own_addresses``: this host's addresses (``None``
    when unknown: every SNAT on the way in then counts as one to them).
    """
    rules = list(rules)
    scope = scope or Question()
    findings = [
        finding
        for rule in rules
        if rule.target == "SNAT"
        for finding in [snat_finding(rule, scope, own_addresses)]
        if finding is not None
    ]
    if any(finding.details.get(MAKES_REMOTE_LOCAL) for finding in findings) and not scope.witness:
        scope = replace(scope, bypass=SNAT_BYPASS)
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
                    rule.remove,
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
                    Finding(
                        NOTE,
                        "nat",
                        f"{trap}; not port {scope.port}: {rule.text}",
                        details,
                        rule.remove,
                    )
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
                        rule.remove,
                    )
                )
            else:
                findings.append(
                    Finding(
                        RISKY,
                        "nat",
                        f"{trap}{scope.unrefused()}: {rule.text}",
                        details,
                        rule.remove,
                    )
                )
    if hidden_nft_targets:
        findings.append(
            Finding(
                UNKNOWN,
                "nat",
                f"nft shows {hidden_nft_targets} iptables-nft DNAT/REDIRECT/SNAT rule(s) without "
                "their address, and iptables-save could not be read to show it.",
                {"hidden_rules": hidden_nft_targets},
            )
        )
    return findings


def snat_finding(
    rule: NatRule, scope: Question, own_addresses: Collection[str] | None
) -> Finding | None:
    """An SNAT rule on the way in (hook ``input``), else ``None``.

    Risky when the new source is loopback or this host's own address (or
    cannot be told): every client then looks like this host, to any guard.
    Otherwise a note: the app judges the rewritten address, not the client.
    """
    if "input" not in rule.hooks:
        return None  # postrouting: this host's outgoing packets, not its clients
    details = asdict(rule)
    to = rule.destination or "an address the doctor cannot resolve"
    where = f"(chain {rule.chain})"
    if rule.destination and not _is_local_range(rule.destination, own_addresses):
        return Finding(
            NOTE,
            "nat",
            f"{rule.source} rule rewrites the source of incoming connections to {to} "
            f"{where}: the app judges {to}, not the real client (keep it out of "
            f"trusted_proxies): {rule.text}",
            details,
            rule.remove,
        )
    if rule.destination and _is_loopback_range(rule.destination):
        whose = "loopback"
    elif rule.destination and own_addresses is not None:
        whose = "this host's own address"
    else:  # what it is, or what this host's addresses are, could not be read
        whose = "which may be this host's own address"
    message = (
        f"{rule.source} rule rewrites the source of incoming connections to {to}, "
        f"{whose} {where}: other hosts then look like this host, to the app and to "
        "any guard in it (source NAT)"
    )
    if scope.port is not None and rule.port is not None and rule.port != scope.port:
        return Finding(
            NOTE, "nat", f"{message}; not port {scope.port}: {rule.text}", details, rule.remove
        )
    details[MAKES_REMOTE_LOCAL] = True
    return Finding(RISKY, "nat", f"{message}: {rule.text}", details, rule.remove)


def _is_local_range(address: str, own_addresses: Collection[str] | None) -> bool:
    """True when an address or ``a-b`` range may include loopback or one of
    ``own_addresses`` (all of them, when those are unknown)."""
    if _is_loopback_range(address) or own_addresses is None:
        return True
    try:
        ends = [ipaddress.ip_address(part.strip()) for part in address.split("-")]
    except ValueError:
        return True  # not an address the doctor can read: it may be one
    low, high = min(ends, key=int), max(ends, key=int)
    for own in own_addresses:
        parsed = ipaddress.ip_address(own)
        if parsed.version == low.version and int(low) <= int(parsed) <= int(high):
            return True
    return False


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


def parse_fib_trie(text: str) -> set[str]:
    """This host's IPv4 addresses in ``/proc/net/fib_trie``: the leaves
    followed by a ``/32 host LOCAL`` line."""
    addresses, leaf = set(), ""
    for line in text.splitlines():
        words = line.replace("|--", " ").split()
        if len(words) == 1 and line.lstrip().startswith("|--"):
            leaf = words[0]
        elif words[:3] == ["/32", "host", "LOCAL"] and leaf:
            addresses.add(leaf)
    return addresses


def parse_if_inet6(text: str) -> set[str]:
    """This host's IPv6 addresses in ``/proc/net/if_inet6`` (32 hex digits first)."""
    addresses = set()
    for line in text.splitlines():
        words = line.split()
        with contextlib.suppress(IndexError, ValueError):
            addresses.add(str(ipaddress.IPv6Address(bytes.fromhex(words[0]))))
    return addresses


def read_own_addresses(proc_net: str = "/proc/net") -> set[str] | None:
    """This host's (network namespace's) addresses; ``None`` when the IPv4
    ones cannot be read (an SNAT rule then counts as one to this host)."""
    try:
        with open(f"{proc_net}/fib_trie") as file:
            addresses = parse_fib_trie(file.read())
    except OSError:
        return None
    with contextlib.suppress(OSError), open(f"{proc_net}/if_inet6") as file:
        addresses |= parse_if_inet6(file.read())  # absent: no IPv6 in this kernel
    return addresses


def read_nat(
    run: ToolRunner = run_tool,
    scope: Question | None = None,
    is_root: bool = True,
    own_addresses: Collection[str] | None = None,
) -> list[Finding]:
    """NAT findings from whichever of iptables-save, ip6tables-save (and their
    legacy variants, when told to) and nft can be run. ``own_addresses``:
    this host's addresses (see :func:`nat_findings`)."""
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
                    for rule in parse_iptables_save(legacy, family, f"{tool}-legacy")
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
    findings = nat_findings(rules, 0 if iptables_ok else hidden, scope, own_addresses)
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
