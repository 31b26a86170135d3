"""The doctor against ways in, on real servers in a network namespace:
source NAT that gives other hosts this host's own address (iptables,
ip6tables, nft; refused by the guard's kernel witness, seen by the guard's
address rule alone only when that is off), and an ``--app`` that is not
what the port serves. Each case makes a real request from the other host first, so that
the doctor is judged against what happens, then runs the doctor, then runs
the fixes the doctor prints and shows that they close the way in."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from flask_selfhost.doctor import OK, REFUSED_BY_GUARD, RISKY, UNKNOWN

from .conftest import require_commands
from .netns import (
    Hosts,
    dnat_to_loopback,
    gunicorn_in,
    http_get,
    ns_run,
    require_netns,
    server_in,
    two_hosts,
)
from .test_doctor import doctor_command, run_doctor

pytestmark = [pytest.mark.slow, pytest.mark.root]

PORT = 8000
APP = ["--port", str(PORT), "--app", "demo_app:app"]


@pytest.fixture
def hosts():
    require_netns()
    require_commands("iptables", "ip6tables", "nft", "sysctl")
    with two_hosts() as pair:
        yield pair


def run_in(ns: str, line: str) -> None:
    """A command line the doctor printed, run as a user pastes it."""
    done = ns_run(ns, "bash", "-c", line)
    assert done.returncode == 0, f"{line}: {done.stderr}"


def result_line(ns: str, *args: str) -> str:
    return ns_run(ns, *doctor_command(*args)).stdout.strip().splitlines()[-1]


# Source NAT on the way in -------------------------------------------------------


def iptables(hosts: Hosts, *rule: str) -> None:
    ns_run(hosts.server_ns, "iptables", "-t", "nat", "-A", *rule, check=True)


def ip6tables(hosts: Hosts, *rule: str) -> None:
    ns_run(hosts.server_ns, "ip6tables", "-t", "nat", "-A", *rule, check=True)


def snat4(hosts: Hosts, to: str) -> list[str]:
    match = ["INPUT", "-p", "tcp", "-s", hosts.client_ip4, "--dport", str(PORT)]
    return [*match, "-j", "SNAT", "--to-source", to]


def own_address(hosts: Hosts) -> None:
    iptables(hosts, *snat4(hosts, hosts.server_ip4))


def dnat_to_own_address(hosts: Hosts) -> None:
    iptables(
        hosts,
        *["PREROUTING", "-i", hosts.server_if, "-p", "tcp", "--dport", str(PORT)],
        *["-j", "DNAT", "--to-destination", f"{hosts.server_ip4}:{PORT}"],
    )
    iptables(hosts, *snat4(hosts, hosts.server_ip4))


def nft_input_hook(hosts: Hosts) -> None:
    add = ["nft", "add"]
    ns_run(hosts.server_ns, *add, "table", "ip", "selfhost_test", check=True)
    ns_run(
        hosts.server_ns,
        *add,
        *["chain", "ip", "selfhost_test", "in", "{ type nat hook input priority 100; }"],
        check=True,
    )
    ns_run(
        hosts.server_ns,
        *add,
        *["rule", "ip", "selfhost_test", "in", "ip", "saddr", hosts.client_ip4],
        *["tcp", "dport", str(PORT), "snat", "to", hosts.server_ip4],
        check=True,
    )


def snat6(hosts: Hosts, to: str) -> list[str]:
    match = ["INPUT", "-p", "tcp", "-s", hosts.client_ip6, "--dport", str(PORT)]
    return [*match, "-j", "SNAT", "--to-source", to]


def own_ipv6_address(hosts: Hosts) -> None:
    ip6tables(hosts, *snat6(hosts, hosts.server_ip6))


def ipv6_loopback(hosts: Hosts) -> None:
    ip6tables(hosts, *snat6(hosts, "::1"))


def dnat_trap_and_snat_to_loopback(hosts: Hosts) -> None:
    dnat_to_loopback(hosts, PORT)
    iptables(hosts, *snat4(hosts, "127.0.0.1"))


@dataclass(frozen=True)
class Case:
    name: str
    rules: Callable[[Hosts], None]
    bind: str  # where the guarded demo listens
    target: Callable[[Hosts], str]  # the address the other host dials
    headers: dict[str, str] | None = None


CASES = [
    Case("iptables SNAT to own address", own_address, f"[::]:{PORT}", lambda h: h.server_ip4),
    Case(
        "DNAT to own address and SNAT",
        dnat_to_own_address,
        f"[::]:{PORT}",
        lambda h: h.server_ip4,
    ),
    Case("nft input-hook snat", nft_input_hook, f"[::]:{PORT}", lambda h: h.server_ip4),
    Case("ip6tables SNAT to own address", own_ipv6_address, f"[::]:{PORT}", lambda h: h.server_ip6),
    Case("ip6tables SNAT to ::1", ipv6_loopback, f"[::]:{PORT}", lambda h: h.server_ip6),
    Case(
        "DNAT trap and SNAT to 127.0.0.1",
        dnat_trap_and_snat_to_loopback,
        f"127.0.0.1:{PORT}",
        lambda h: h.server_ip4,
        {"Host": "localhost"},  # the app sees local 127.0.0.1: a loopback name passes
    ),
]


#: The demo's guard without the kernel witness (its config from the environment).
UNWITNESSED = {"DEMO_SELFHOST_CHECK_CLIENT_SOCKET": "false"}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_source_nat_to_this_host_is_risky_and_its_fix_closes_it(hosts, tmp_path, case):
    case.rules(hosts)
    args = ["-b", case.bind, "--workers", "1", "demo_app:app"]
    target = case.target(hosts)
    for folder in ("witnessed", "unwitnessed"):
        (tmp_path / folder).mkdir()
    # The guard's kernel witness (on by default): the other host has no socket
    # on this host, whatever address NAT gave it, and is refused.
    with gunicorn_in(hosts.server_ns, args, PORT, tmp_path / "witnessed"):
        status, body = http_get(hosts.client_ns, target, PORT, "/admin", case.headers)
        assert status == 403, body
        code, report = run_doctor(hosts.server_ns, *APP)
        assert code == 1, report  # the rule stays risky: other apps here answer it
        snat = [f for f in report["findings"] if f["details"].get("target") == "SNAT"]
        assert [f["severity"] for f in snat] == [RISKY], report
        witness = [f for f in report["findings"] if f["topic"] == "witness"]
        assert [f["severity"] for f in witness] == [OK], report
    # Without it, the address rule alone: the guarded app answers the other
    # host, and the doctor puts nothing down to the guard.
    off = {**os.environ, **UNWITNESSED}
    with gunicorn_in(hosts.server_ns, args, PORT, tmp_path / "unwitnessed", env=UNWITNESSED):
        status, body = http_get(hosts.client_ns, target, PORT, "/admin", case.headers)
        assert status == 200, body

        code, report = run_doctor(hosts.server_ns, *APP, env=off)
        assert code == 1, report
        snat = [f for f in report["findings"] if f["details"].get("target") == "SNAT"]
        assert [f["severity"] for f in snat] == [RISKY], report
        assert snat[0]["details"]["makes_remote_local"] is True  # in the JSON, for scripts
        assert not [f for f in report["findings"] if f["details"].get(REFUSED_BY_GUARD)]
        text = ns_run(hosts.server_ns, *doctor_command(*APP), env=off).stdout
        assert "refuses them" not in text.splitlines()[-1], text
        assert f"         fix: {snat[0]['fix']}" in text.splitlines()

        for finding in snat:
            run_in(hosts.server_ns, finding["fix"])
        code, report = run_doctor(hosts.server_ns, *APP, env=off)
        assert code == 0, report
        assert not [f for f in report["findings"] if f["details"].get("target") == "SNAT"]
        status, body = http_get(hosts.client_ns, target, PORT, "/admin", case.headers)
        assert status == 403, body  # the guard sees the other host again


def test_every_risky_fix_of_the_dnat_trap_runs_and_closes_it(hosts, tmp_path):
    """The DNAT trap in front of the unguarded demo on loopback: every risky
    finding's fix, pasted into a shell, runs, and the other host is out."""
    dnat_to_loopback(hosts, PORT)
    args = ["-b", f"127.0.0.1:{PORT}", "--workers", "1", "demo_app:unguarded_app"]
    with gunicorn_in(hosts.server_ns, args, PORT, tmp_path):
        assert http_get(hosts.client_ns, hosts.server_ip4, PORT, "/admin")[0] == 200
        on_port = ["--port", str(PORT), "--app", "demo_app:unguarded_app"]
        code, report = run_doctor(hosts.server_ns, *on_port)
        assert code == 1
        risky = [f for f in report["findings"] if f["severity"] == RISKY]
        assert sorted(f["topic"] for f in risky) == ["nat", "route_localnet"]
        for finding in risky:
            run_in(hosts.server_ns, finding["fix"])
        code, report = run_doctor(hosts.server_ns, *on_port)
        assert code == 0, report
        status, error = http_get(hosts.client_ns, hosts.server_ip4, PORT, "/admin", timeout=3)
        assert status is None, error


def test_native_nft_dnat_fix_deletes_it_by_handle(hosts):
    ns_run(hosts.server_ns, "nft", "add", "table", "ip", "selfhost_test", check=True)
    ns_run(
        hosts.server_ns,
        *["nft", "add", "chain", "ip", "selfhost_test", "pre"],
        "{ type nat hook prerouting priority -100; }",
        check=True,
    )
    ns_run(
        hosts.server_ns,
        *["nft", "add", "rule", "ip", "selfhost_test", "pre", "iifname", hosts.server_if],
        *["tcp", "dport", str(PORT), "dnat", "to", f"127.0.0.1:{PORT}"],
        check=True,
    )
    code, report = run_doctor(hosts.server_ns)
    (finding,) = [f for f in report["findings"] if f["severity"] == RISKY]
    assert code == 1 and finding["fix"].startswith("nft delete rule ip selfhost_test pre handle ")
    run_in(hosts.server_ns, finding["fix"])
    assert run_doctor(hosts.server_ns)[0] == 0


# --app is checked against the port, not believed --------------------------------


def test_an_app_the_port_does_not_serve_is_not_credited(hosts, tmp_path):
    """The DNAT trap, gunicorn serving the unguarded demo, and ``--app`` naming
    the guarded one: the other host gets in, and the doctor says so."""
    dnat_to_loopback(hosts, PORT)
    args = ["-b", f"127.0.0.1:{PORT}", "--workers", "1", "demo_app:unguarded_app"]
    with gunicorn_in(hosts.server_ns, args, PORT, tmp_path):
        assert http_get(hosts.client_ns, hosts.server_ip4, PORT, "/admin")[0] == 200
        code, report = run_doctor(hosts.server_ns, *APP)
        assert code == 1, report
        risky = {f["topic"]: f for f in report["findings"] if f["severity"] == RISKY}
        assert sorted(risky) == ["app", "nat", "route_localnet"]
        assert risky["app"]["details"]["served"] == ["demo_app:unguarded_app"]
        assert "--app demo_app:app is not what port 8000 serves" in risky["app"]["message"]
        assert not [f for f in report["findings"] if f["details"].get(REFUSED_BY_GUARD)]
        assert "refuses them" not in result_line(hosts.server_ns, *APP)
        # The Flask CLI front checks the app that `flask --app` loads the same way.
        flask = Path(sys.executable).with_name("flask")
        command = [str(flask), "--app", "demo_app:app", "selfhost", "doctor", "--port", str(PORT)]
        done = ns_run(hosts.server_ns, *command)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "--app demo_app:app is not what port 8000 serves" in done.stdout


def test_gunicorn_configuration_names_the_app(hosts, tmp_path):
    """``gunicorn -c demo_app/gunicorn_guarded.py``, as the README starts the
    demo: its command line names no app, its configuration file does."""
    dnat_to_loopback(hosts, PORT)
    env = {"DEMO_PORT": str(PORT), "DEMO_WORKERS": "1"}
    with gunicorn_in(hosts.server_ns, ["-c", "demo_app/gunicorn_guarded.py"], PORT, tmp_path, env):
        assert http_get(hosts.client_ns, hosts.server_ip4, PORT, "/admin")[0] == 403
        code, report = run_doctor(hosts.server_ns, *APP)
        assert code == 0, report
        (claim,) = [f for f in report["findings"] if "served by" in f["message"]]
        assert "names demo_app:app" in claim["message"]
        code, report = run_doctor(
            hosts.server_ns, "--port", str(PORT), "--app", "demo_app:create_app(guarded=False)"
        )
        assert code == 1


SERVE = """\
from werkzeug.serving import run_simple
from demo_app import app
run_simple("127.0.0.1", 8000, app)
"""


def test_an_app_that_cannot_be_checked_is_assumed_not_safe(hosts, tmp_path):
    """A server whose command line names no app (``python serve.py``): the
    doctor says what it assumes and exits 2, never "nothing risky" (0)."""
    dnat_to_loopback(hosts, PORT)
    (tmp_path / "serve.py").write_text(SERVE)
    with server_in(hosts.server_ns, [sys.executable, "serve.py"], tmp_path, "serve", PORT):
        code, report = run_doctor(hosts.server_ns, *APP)
        assert code == 2, report
        (assumed,) = [f for f in report["findings"] if f["severity"] == UNKNOWN]
        assert assumed["message"].startswith(f"assuming port {PORT} serves demo_app:app: ")
        assert "names no app" in assumed["message"]
        assert assumed["fix"]
        assert result_line(hosts.server_ns, *APP) == (
            f"Result: nothing risky found, assuming port {PORT} serves demo_app:app, which "
            "was not verified (exit 2)."
        )
    # Nothing listens at all: nothing to check the claim against either.
    assert run_doctor(hosts.server_ns, *APP)[0] == 2
