"""
``flask-selfhost doctor``: find the ways other hosts can reach this host's apps
================================================================================

The threat: an app that is "only on localhost" while another host can still
reach it. Binding to ``127.0.0.1`` is undone by a NAT rule that sends
outside packets to loopback (it needs ``route_localnet=1`` on IPv4), and any
guard that trusts loopback is undone by a forwarder on this host (an SSH
tunnel, socat, a reverse proxy, docker-proxy) that relays other hosts'
connections, so that every client looks local. The doctor audits this host
(this network namespace) for them:

- **listeners**: listening TCP sockets from ``/proc/net/tcp`` and
  ``/proc/net/tcp6`` (state ``0A``), on one port or all, as *loopback*,
  *wildcard* (every interface) or a specific *address*, with the owning
  process where ``/proc/PID/fd`` is readable;
- **forwarders**: listeners on a non-loopback address owned by a known
  same-host forwarder;
- **route_localnet**: ``/proc/sys/net/ipv4/conf/*/route_localnet`` = 1;
- **NAT**: rules that DNAT to ``127.0.0.0/8`` or ``::1``, from
  ``iptables-save -t nat`` / ``ip6tables-save -t nat`` and ``nft -j list
  ruleset``. (``REDIRECT`` is not one of them: in ``PREROUTING`` Linux
  redirects to the incoming interface's own address, never to loopback.
  IPv6 has no ``route_localnet``, and Linux drops packets DNAT'd to ``::1``;
  such a rule is reported as a note.);
- **the app** (``--app module:name``): whether it is guarded by
  flask_selfhost (:func:`is_guarded`).

Exit status: 0 nothing risky, 1 something risky, 2 something could not be
inspected (and nothing risky was found). ``--json`` prints the findings.

The parsing functions are pure (text in, findings out); the ``read_*``
functions and :func:`run` do the I/O around them.
"""

from __future__ import annotations

import contextlib
import importlib
import ipaddress
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .asgi import is_guarded_asgi
from .extension import EXTENSION_NAME
from .middleware import is_guarded as guard_options

RISKY = "risky"  # other hosts can (or are meant to) reach something local: exit 1
UNKNOWN = "unknown"  # could not inspect: exit 2 unless something is risky
NOTE = "note"  # worth knowing, not an exposure by itself
OK = "ok"

LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp

#: Programs that accept connections and relay them from this host: the app
#: sees them (or whatever they connect to locally) as a local client.
TUNNELS = ("ssh", "sshd", "autossh", "socat", "ncat", "stunnel", "stunnel4", "rinetd", "redir")
PUBLISHERS = ("docker-proxy", "rootlesskit", "slirp4netns", "pasta", "kubectl")  # port-forward
PROXIES = ("nginx", "haproxy", "caddy", "traefik", "envoy", "apache2", "httpd", "lighttpd")
OTHER_RELAYS = ("squid", "tinyproxy", "3proxy", "varnishd", "tailscaled", "frps", "chisel")
FORWARDERS = frozenset(TUNNELS + PUBLISHERS + PROXIES + OTHER_RELAYS)
#: sshd forwards only for users who can log in (``ssh -L``): reported, not risky.
LOGIN_FORWARDERS = frozenset({"sshd"})

FORWARDER_RISK = "forwarders make every client look local"


@dataclass(frozen=True)
class Finding:
    severity: str  # RISKY, UNKNOWN, NOTE or OK
    topic: str  # "listener", "forwarder", "route_localnet", "nat", "app", "inspect"
    message: str  # plain words, one sentence or two
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Listener:
    address: str  # as text, IPv4-mapped IPv6 unwrapped
    port: int
    version: int  # 4 or 6: which /proc file it came from
    inode: int
    kind: str = ""  # "loopback", "wildcard" or "address"
    processes: tuple[tuple[int, str], ...] = ()  # (pid, name), where readable

    @property
    def shown(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    def owner(self) -> str:
        if not self.processes:
            return "owner not readable"
        names = sorted({name for _, name in self.processes})
        pids = sorted(pid for pid, _ in self.processes)
        shown_pids = ", ".join(map(str, pids[:4])) + (", ..." if len(pids) > 4 else "")
        return f"{'/'.join(names)}, pid {shown_pids}"


@dataclass(frozen=True)
class NatRule:
    source: str  # "iptables", "ip6tables" or "nft"
    family: int  # 4 or 6
    chain: str
    target: str  # "DNAT", "REDIRECT", ...
    destination: str | None  # the address part of the target, None when not shown
    text: str  # the rule as the tool printed it (nft: a summary)


# /proc/net/tcp ----------------------------------------------------------


def decode_proc_address(hex_address: str, byteorder: str = sys.byteorder) -> str:
    """``0100007F`` -> ``127.0.0.1``; 32 hex digits -> an IPv6 address.

    The kernel prints each 32-bit word of the address as a native integer,
    so on a little-endian machine the bytes of each word come out reversed.
    IPv4-mapped IPv6 addresses come back as plain IPv4.
    """
    words = [hex_address[i : i + 8] for i in range(0, len(hex_address), 8)]
    packed = b"".join(int(word, 16).to_bytes(4, byteorder) for word in words)  # type: ignore[arg-type]
    address = ipaddress.ip_address(packed)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def classify_address(address: str) -> str:
    """``"loopback"``, ``"wildcard"`` or ``"address"`` (one specific address)."""
    parsed = ipaddress.ip_address(address)
    if parsed.is_loopback:
        return "loopback"
    if parsed.is_unspecified:
        return "wildcard"
    return "address"


def parse_proc_net_tcp(text: str, version: int, byteorder: str = sys.byteorder) -> list[Listener]:
    """The listening sockets in the text of ``/proc/net/tcp`` (``version=4``)
    or ``/proc/net/tcp6`` (``version=6``). Malformed lines are skipped."""
    listeners = []
    for line in text.splitlines()[1:]:  # the first line is the header
        fields = line.split()
        if len(fields) < 10 or fields[3] != LISTEN:
            continue
        try:
            hex_address, hex_port = fields[1].split(":")
            address = decode_proc_address(hex_address, byteorder)
            port, inode = int(hex_port, 16), int(fields[9])
        except ValueError:
            continue
        listeners.append(Listener(address, port, version, inode, kind=classify_address(address)))
    return listeners


def listener_findings(
    listeners: Iterable[Listener], port: int | None, app: str | None, guarded: bool | None
) -> list[Finding]:
    """Findings for the listeners (all of them, or those on ``port``).

    ``app``/``guarded`` describe the app given with ``--app`` (``None`` when
    none was given): a non-loopback listener on ``port`` is then risky
    unless the app is guarded.
    """
    findings = []
    selected = [item for item in listeners if port is None or item.port == port]
    if port is not None and not selected:
        findings.append(
            Finding(NOTE, "listener", f"nothing listens on TCP port {port} here.", {"port": port})
        )
    for listener in sorted(selected, key=lambda item: (item.port, item.version, item.address)):
        details = {**asdict(listener), "owner": listener.owner()}
        where = f"{listener.shown} ({listener.owner()})"
        if listener.kind == "loopback":
            findings.append(
                Finding(
                    OK,
                    "listener",
                    f"{where} listens on loopback only: other hosts cannot connect to it "
                    "directly (only through NAT or a forwarder, see below).",
                    details,
                )
            )
            continue
        reach = (
            "every interface" if listener.kind == "wildcard" else f"the address {listener.address}"
        )
        text = f"{where} listens on {reach}: other hosts can connect"
        if port is None or guarded is None:
            hint = " (pass --port and --app to check the app behind it)" if port is None else ""
            findings.append(Finding(NOTE, "listener", f"{text}{hint}.", details))
        elif guarded:
            findings.append(
                Finding(OK, "listener", f"{text}; {app} is guarded, so it refuses them.", details)
            )
        else:
            findings.append(
                Finding(
                    RISKY,
                    "listener",
                    f"{text}, and {app} is NOT guarded: nothing in the app refuses them.",
                    details,
                )
            )
    return findings


def forwarder_findings(listeners: Iterable[Listener]) -> list[Finding]:
    """Known forwarders listening on a non-loopback address."""
    findings = []
    for listener in listeners:
        if listener.kind == "loopback":
            continue
        names = sorted({name for _, name in listener.processes if name in FORWARDERS})
        if not names:
            continue
        severity = NOTE if set(names) <= LOGIN_FORWARDERS else RISKY
        message = (
            f"{'/'.join(names)} listens on {listener.shown}, reachable by other hosts: "
            f"{FORWARDER_RISK}. Whatever it relays to a local app arrives from this host."
        )
        if severity == NOTE:
            message += " (sshd relays only for users who can log in: ssh -L.)"
        findings.append(
            Finding(severity, "forwarder", message, {**asdict(listener), "forwarders": names})
        )
    return findings


# route_localnet -----------------------------------------------------------


def route_localnet_findings(values: Mapping[str, str]) -> list[Finding]:
    """``values``: interface name -> contents of its ``route_localnet`` file."""
    findings = []
    for interface, value in sorted(values.items()):
        if value.strip() != "1":
            continue
        scope = {
            "all": "every interface",
            "default": "every interface created from now on",
        }.get(interface, f"interface {interface}")
        findings.append(
            Finding(
                RISKY,
                "route_localnet",
                f"route_localnet=1 on {scope}: packets from other hosts may be routed to "
                "127.0.0.0/8, so a NAT rule can hand them to apps bound to loopback.",
                {"interface": interface, "sysctl": f"net.ipv4.conf.{interface}.route_localnet"},
            )
        )
    return findings


# NAT rules ---------------------------------------------------------------


def _destination_address(value: str) -> str:
    """The address part of ``--to-destination`` (``1.2.3.4:80``, ``[::1]:80``,
    ``::1``, ``1.2.3.4-1.2.3.9:80-90``); ``""`` for a port-only target."""
    if value.startswith("["):
        return value[1 : value.index("]")] if "]" in value else value[1:]
    if value.count(":") > 1:  # bare IPv6 address, no port
        return value
    return value.split(":", 1)[0]


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
        rules.append(NatRule(source, family, chain, target, destination, line))
    return rules


def _option(words: Sequence[str], name: str) -> str | None:
    with contextlib.suppress(ValueError, IndexError):
        return words[words.index(name) + 1]
    return None


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
        for statement in _walk(rule.get("expr", [])):
            for target in ("dnat", "redirect"):
                if target not in statement:
                    continue
                body = statement[target] if isinstance(statement[target], dict) else {}
                family = _nft_family(nft_family, body)
                destination = _nft_address(body.get("addr")) if target == "dnat" else None
                summary = f"{target} " + json.dumps(body, sort_keys=True)
                rules.append(
                    NatRule("nft", family, chain_name, target.upper(), destination, summary)
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


def nat_findings(rules: Iterable[NatRule], hidden_nft_targets: int = 0) -> list[Finding]:
    """Findings for rules that DNAT to loopback, and for rules nobody could read."""
    findings = []
    for rule in rules:
        if rule.target != "DNAT" or not rule.destination:
            continue
        if not _is_loopback_range(rule.destination):
            continue
        details = asdict(rule)
        local_only = rule.chain == "OUTPUT" or "hook output" in rule.chain
        if local_only:
            findings.append(
                Finding(
                    NOTE,
                    "nat",
                    f"{rule.source} rule DNATs this host's own outgoing connections to "
                    f"{rule.destination} (chain {rule.chain}); it does not expose anything: "
                    f"{rule.text}",
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
            findings.append(
                Finding(
                    RISKY,
                    "nat",
                    f"{rule.source} rule DNATs packets from other hosts to loopback "
                    f"{rule.destination} (chain {rule.chain}): with route_localnet=1 an app "
                    f"bound to loopback answers them (the DNAT trap): {rule.text}",
                    details,
                )
            )
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


# The app ----------------------------------------------------------------


def is_guarded(app: Any, depth: int = 6) -> bool:
    """True when ``app`` is guarded by flask_selfhost.

    A Flask app is guarded when the :class:`~flask_selfhost.SelfHost`
    extension is registered (``"selfhost"`` in ``app.extensions``); a WSGI
    callable when a flask_selfhost front built it (``SelfHostMiddleware``), an
    ASGI app guarded by ``SelfHostASGIMiddleware`` (Starlette's ``add_middleware``
    included), or wraps
    one: ``.wsgi_app`` and ``.app`` attributes are followed ``depth`` levels.
    """
    seen: set[int] = set()
    layer = [app]
    for _ in range(depth + 1):
        following = []
        for candidate in layer:
            if candidate is None or id(candidate) in seen:
                continue
            seen.add(id(candidate))
            if guard_options(candidate) is not None or is_guarded_asgi(candidate) is not None:
                return True
            extensions = getattr(candidate, "extensions", None)
            if isinstance(extensions, Mapping) and EXTENSION_NAME in extensions:
                return True
            for name in ("wsgi_app", "app"):
                with contextlib.suppress(Exception):  # a property that raises: not followed
                    following.append(getattr(candidate, name, None))
        layer = following
    return False


def app_findings(spec: str, app: Any) -> list[Finding]:
    if is_guarded(app):
        return [Finding(OK, "app", f"{spec} is guarded by flask_selfhost.", {"app": spec})]
    return [
        Finding(
            NOTE,
            "app",
            f"{spec} is NOT guarded by flask_selfhost: only its binding keeps other hosts "
            "out, so the listener, NAT and forwarder findings decide whether it is exposed.",
            {"app": spec},
        )
    ]


def load_app(spec: str) -> Any:
    """Import ``module:name`` (``name`` may be dotted; default ``app``)."""
    module_name, _, attribute = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as gunicorn and flask do
    target: Any = importlib.import_module(module_name)
    for part in (attribute or "app").split("."):
        target = getattr(target, part)
    return target


# Verdict ----------------------------------------------------------------


def exit_status(findings: Iterable[Finding]) -> int:
    severities = {finding.severity for finding in findings}
    if RISKY in severities:
        return 1
    if UNKNOWN in severities:
        return 2
    return 0


LABELS = {RISKY: "RISKY", UNKNOWN: "UNKNOWN", NOTE: "note", OK: "ok"}
ORDER = {RISKY: 0, UNKNOWN: 1, NOTE: 2, OK: 3}


def render_text(findings: Sequence[Finding]) -> str:
    lines = []
    for finding in sorted(findings, key=lambda item: ORDER[item.severity]):
        lines.append(f"{LABELS[finding.severity]:<8} {finding.topic}: {finding.message}")
    status = exit_status(findings)
    risky = sum(1 for finding in findings if finding.severity == RISKY)
    verdict = {
        0: "nothing risky found",
        1: f"{risky} risky finding(s): other hosts can reach what should be local",
        2: "nothing risky found, but part of this host could not be inspected",
    }[status]
    lines.append(f"Result: {verdict} (exit {status}).")
    return "\n".join(lines)


# I/O around the parsers ---------------------------------------------------


def read_listeners() -> tuple[list[Listener], list[Finding]]:
    listeners, problems = [], []
    for version, path in ((4, "/proc/net/tcp"), (6, "/proc/net/tcp6")):
        try:
            with open(path) as file:
                listeners += parse_proc_net_tcp(file.read(), version)
        except FileNotFoundError:
            continue  # no IPv6 in this kernel: nothing listens there
        except OSError as error:
            problems.append(Finding(UNKNOWN, "inspect", f"could not read {path}: {error}."))
    owners = socket_owners({listener.inode for listener in listeners})
    listeners = [
        replace(listener, processes=tuple(sorted(owners.get(listener.inode, ()))))
        for listener in listeners
    ]
    hidden = [item.shown for item in listeners if item.kind != "loopback" and not item.processes]
    if hidden:
        why = (
            "their processes are not visible here, perhaps in another PID namespace"
            if os.geteuid() == 0
            else "run as root to read /proc/*/fd"
        )
        problems.append(
            Finding(
                UNKNOWN,
                "inspect",
                f"the owner of {', '.join(hidden)} could not be identified ({why}): a "
                "forwarder there would not be recognised.",
                {"listeners": hidden},
            )
        )
    return listeners, problems


def socket_owners(inodes: set[int]) -> dict[int, set[tuple[int, str]]]:
    """socket inode -> {(pid, process name)}, from the ``/proc/PID/fd`` links we may read."""
    owners: dict[int, set[tuple[int, str]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            links = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue  # gone, or not ours to read
        name: str | None = None
        for link in links:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{link}")
            except OSError:
                continue
            if not target.startswith("socket:["):
                continue
            inode = int(target[8:-1])
            if inode in inodes:
                name = name or process_name(pid)
                owners.setdefault(inode, set()).add((pid, name))
    return owners


def process_name(pid: int) -> str:
    """The program name: ``comm``, or argv[0]'s base name when that is a known
    forwarder (``comm`` is cut at 15 characters and may be a thread name)."""
    try:
        with open(f"/proc/{pid}/comm") as file:
            comm = file.read().strip()
    except OSError:
        comm = "?"
    if comm in FORWARDERS:
        return comm
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            argv0 = file.read().split(b"\0", 1)[0].decode(errors="replace")
    except OSError:
        return comm
    base = os.path.basename(argv0.split(":", 1)[0].split()[0]) if argv0.strip() else ""
    return base if base in FORWARDERS else comm


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


def _run_tool(command: Sequence[str]) -> tuple[str | None, str]:
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


def read_nat(run_tool: ToolRunner = _run_tool) -> list[Finding]:
    """NAT findings from whichever of iptables-save, ip6tables-save (and their
    legacy variants, when told to) and nft can be run."""
    rules: list[NatRule] = []
    failures: list[str] = []
    iptables_ok = False
    for family, tool in ((4, "iptables"), (6, "ip6tables")):
        output, why = run_tool([f"{tool}-save", "-t", "nat"])
        if output is None:
            failures.append(why)
            continue
        iptables_ok = True
        rules += parse_iptables_save(output, family)
        if LEGACY_WARNING in output:
            legacy, why = run_tool([f"{tool}-legacy-save", "-t", "nat"])
            if legacy is None:
                failures.append(why)
                rules.append(NatRule(f"{tool}-legacy", family, "?", "UNREAD", None, why))
            else:
                rules += [
                    replace(rule, source=f"{tool}-legacy")
                    for rule in parse_iptables_save(legacy, family)
                ]
    nft_ok, hidden = False, 0
    output, why = run_tool(["nft", "-j", "list", "ruleset"])
    if output is None:
        failures.append(why)
    else:
        try:
            nft_rules, hidden = parse_nft_json(output)
            rules += nft_rules
            nft_ok = True
        except ValueError as error:
            failures.append(f"nft printed JSON that could not be read: {error}")
    findings = nat_findings(rules, 0 if iptables_ok else hidden)
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
        findings.append(
            Finding(
                UNKNOWN,
                "nat",
                "could not read the NAT rules: neither iptables-save nor nft worked ("
                + "; ".join(failures)
                + "). Run as root with iptables or nftables installed.",
                {"failures": failures},
            )
        )
    return findings


def run(port: int | None = None, app_spec: str | None = None, as_json: bool = False) -> int:
    """Audit this host, print the findings, return the exit status."""
    findings: list[Finding] = []
    guarded: bool | None = None
    if app_spec is not None:
        try:
            app = load_app(app_spec)
        except Exception as error:  # any import-time failure of the user's app
            findings.append(
                Finding(
                    UNKNOWN, "app", f"could not import {app_spec}: {error!r}.", {"app": app_spec}
                )
            )
        else:
            guarded = is_guarded(app)
            findings += app_findings(app_spec, app)
    findings += audit(port, app_spec if guarded is not None else None, guarded)
    print(render(findings, as_json))
    return exit_status(findings)


def audit(port: int | None, app_spec: str | None, guarded: bool | None) -> list[Finding]:
    """Everything but the app check: listeners, forwarders, route_localnet, NAT."""
    listeners, findings = read_listeners()
    findings += listener_findings(listeners, port, app_spec, guarded)
    findings += forwarder_findings(listeners)
    values, problems = read_route_localnet()
    findings += problems + route_localnet_findings(values)
    findings += read_nat()
    return findings


def render(findings: Sequence[Finding], as_json: bool) -> str:
    if as_json:
        return json.dumps(
            {"exit_status": exit_status(findings), "findings": [asdict(f) for f in findings]},
            indent=2,
        )
    return render_text(findings)
