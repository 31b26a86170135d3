"""NAT rules, built inside a test's server namespace only, that disguise
another host's connections as this host's: what the address rule cannot
see and the kernel witness can (tests/test_peer_socket.py asks the kernel
directly, tests/test_kernel_witness.py through real servers). Each takes
the :class:`~tests.netns.Hosts` of :func:`~tests.netns.two_hosts` and the
server's port."""

from __future__ import annotations

from .netns import Hosts, dnat_to_loopback, ns_run

#: The port the tests' servers listen on.
PORT = 8000


def iptables(hosts: Hosts, *rule: str) -> None:
    ns_run(hosts.server_ns, "iptables", "-t", "nat", "-A", *rule, check=True)


def snat_from_client(hosts: Hosts, to: str, port: int = PORT) -> list[str]:
    """An INPUT SNAT of the other host's connections to ``port`` to ``to``."""
    match = ["INPUT", "-p", "tcp", "-s", hosts.client_ip4, "--dport", str(port)]
    return [*match, "-j", "SNAT", "--to-source", to]


def snat_to_own_address(hosts: Hosts, port: int = PORT) -> None:
    iptables(hosts, *snat_from_client(hosts, hosts.server_ip4, port))


def dnat_and_snat_to_own_address(hosts: Hosts, port: int = PORT) -> None:
    iptables(
        hosts,
        *["PREROUTING", "-i", hosts.server_if, "-p", "tcp", "--dport", str(port)],
        *["-j", "DNAT", "--to-destination", f"{hosts.server_ip4}:{port}"],
    )
    iptables(hosts, *snat_from_client(hosts, hosts.server_ip4, port))


def dnat_trap_and_snat_to_loopback(hosts: Hosts, port: int = PORT) -> None:
    dnat_to_loopback(hosts, port)
    iptables(hosts, *snat_from_client(hosts, "127.0.0.1", port))


def snat_to_own_ipv6_address(hosts: Hosts, port: int = PORT) -> None:
    ns_run(
        hosts.server_ns,
        *["ip6tables", "-t", "nat", "-A", "INPUT", "-p", "tcp", "-s", hosts.client_ip6],
        *["--dport", str(port), "-j", "SNAT", "--to-source", hosts.server_ip6],
        check=True,
    )


def snat_to_another_listening_port(hosts: Hosts, port: int = PORT) -> None:
    """The other host's address and port become those another server of
    this host listens on: the kernel falls back to that LISTEN socket."""
    iptables(hosts, *snat_from_client(hosts, f"{hosts.server_ip4}:{port + 1}", port))


def snat_to_the_listening_port(hosts: Hosts, port: int = PORT) -> None:
    """The other host's address and port become the server's own listening
    ones: both ends of the connection are equal, and the kernel answers
    with the server's own accepted socket, established and held."""
    iptables(hosts, *snat_from_client(hosts, f"{hosts.server_ip4}:{port}", port))
