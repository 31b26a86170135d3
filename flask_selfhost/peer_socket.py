"""
The client's own socket, asked of the kernel
============================================

The source rule trusts addresses, and network address translation on this
host forges them. An INPUT ``SNAT`` to this host's own address makes another
host's connection arrive as ``192.168.0.13 -> 192.168.0.13``, exactly what a
local client produces; a ``DNAT`` to the own address plus that ``SNAT`` does
the same; behind the DNAT trap (``DNAT`` to ``127.0.0.1`` with
``route_localnet``) an INPUT ``SNAT`` to ``127.0.0.1`` makes it a loopback
client. No address, header or server can tell these apart.

The kernel can. A client on this host holds a socket on this host, in this
network namespace, whose own end is the peer address and port the server
sees and whose other end is the server's local address and port. One
``SOCK_DIAG_BY_FAMILY`` netlink query without ``NLM_F_DUMP`` asks for exactly
that socket (:func:`find_client_socket`). A client on another host has no
socket here: the kernel answers ``ENOENT``, and so it does for a client in
another network namespace (a container), which is another host too.

What is granted (:func:`judge_client_socket`): a socket answered with
exactly the asked 4-tuple, in a connected state (``ESTABLISHED``, or
``FIN_WAIT1``/``FIN_WAIT2``/``CLOSE_WAIT`` for a client that half-closed with
``shutdown(SHUT_WR)``), still held by a process (inode not 0). Everything else
is refused, each for its own reason, and so is every failure to ask: fail
closed.

Pitfalls, measured on Linux 6.18 (``tests/test_peer_socket.py`` shows each):

- **The orphan.** A client that sends a request and closes at once leaves a
  socket that the kernel finishes alone: within tens of milliseconds (or
  at once) it reads as
  ``FIN_WAIT2`` (or ``FIN_WAIT1``) with uid 0 and inode 0, while the server can
  still read the request. Inode 0 is refused (:data:`ORPHANED`); ask right
  after accepting, while a real client still holds its socket.
- **The listener fallback.** A query for a 4-tuple with no connection, whose
  client end is an address and port that a server listens on, is answered
  with that ``LISTEN`` socket (an SNAT to such a port would ask it). The whole
  answered 4-tuple and the state are checked against what was asked
  (:data:`OTHER_SOCKET`, :data:`WRONG_STATE`); ``TIME_WAIT`` and
  ``SYN_RECV`` answers (uid 0, no owner) are refused as wrong states.
- **The server's own socket.** An SNAT that gives the other host this host's
  address *and the listening port* makes the connection's two ends equal,
  and the lookup then answers with the server's own accepted socket,
  established and held. No accepted connection has equal ends without
  address translation (a socket that dials its own address and port
  connects to itself, not to a listener), so they are refused
  (:data:`SAME_ENDS`) whatever the kernel answers.
- **Whose uid.** :attr:`ClientSocket.uid` is the uid of whoever called
  ``socket()``: a process that made its socket as root and then dropped
  privileges still shows 0, and a passed descriptor keeps its creator's uid.
  It is reported, never judged here.
- **NAT on this host itself.** A local client behind an OUTPUT ``REDIRECT``
  or ``DNAT`` (port 80 redirected to 8000) holds a socket whose other end is
  the pre-NAT address and port: the exact query with the server's local
  port misses and the client is refused as :data:`NOT_FOUND`, a false
  refusal, never a false grant. Such a client must dial the server's real
  port, or the redirect be removed; the verdict's detail names this case.
- **Link-local IPv6.** A client dialing ``fe80::...%eth0`` holds a socket
  bound to that interface, which the kernel matches only when asked with it:
  pass the addresses with their scope (``fe80::1%eth0`` or ``fe80::1%2``,
  the scope id of ``getpeername()``). Without it the client is refused as
  not found.
- **Where netlink is missing.** Not Linux, ``AF_NETLINK`` refused by seccomp
  or systemd's ``RestrictAddressFamilies``, sock_diag modules missing: every
  query is :data:`UNAVAILABLE`. :func:`available` probes once with a real
  loopback connection of its own and says why not, for a start-up check.

Cost (``benchmarks/peer_socket.py``, 2 busy cores): :func:`check_client`
takes about 5 us, the same with 40 or 6,000 other sockets on the host, of
which the kernel's answer (one ``send``, one ``recv_into``) is about 1.3 us.
The rest is kept small: the query is packed into a buffer of the channel
and the answer received into another, a grant is read straight from the
answer's bytes (:func:`judge_client_socket` judges only the rest, from the
same bytes), and the timeout is the kernel's (``SO_RCVTIMEO``: with
``settimeout()`` Python would poll before each call).
:func:`find_client_socket`, which also spells out both ends in text, takes
about 7 us. A new netlink socket per query costs 12 us or more, and parsing
``/proc/net/tcp`` instead 0.2-4 ms, growing with the sockets (7-9 ms with
6,000). A netlink
socket per thread measured no faster than one shared under a lock, with
one thread or four (the kernel answers inside ``send``, so the lock is held
for one round trip), and would open one per greenlet under gevent. A forked
child opens its own: a socket shared with the parent would let either read
the other's answers. Every answer is matched on its sequence number, and
the receive has a timeout, so a lost or foreign answer refuses one query and
never hangs a worker.

How a front uses it: with ``getpeername()`` and ``getsockname()`` of the
accepted connection, :func:`check_client` once per connection (keep-alive
requests share the verdict), at its first request; :data:`UNAVAILABLE` is a
reason of its own, so that the front can say at start-up
(:func:`available`) that the witness cannot run here, rather than refuse
every client without telling why.

A unix socket's peer needs no lookup: ``SO_PEERCRED`` on the accepted
socket gives the connecting process's pid and uid
(:func:`unix_peer_owner`), where the server hands over the socket.

The module is stdlib only and imports no framework. It is longer than most
because the query, the life of its netlink socket and the judgement of the
answer share the struct layouts and the pitfalls above, and are checked
together by one set of tests.
"""

from __future__ import annotations

import _socket
import errno
import os
import socket
import struct
import threading
from typing import Any, NamedTuple

from .facts import PeerOwner

#: Outcomes of :func:`find_client_socket`.
FOUND = "found"
ABSENT = "absent"  # the kernel answered ENOENT: no such socket in this namespace
ERROR = "error"  # the kernel could not be asked, or answered something else

#: Reasons of :func:`judge_client_socket`: one per way a client is refused.
HELD = "held"  # the grant: a connected socket that a process holds
NOT_FOUND = "not found"
OTHER_SOCKET = "other socket"
SAME_ENDS = "same ends"
WRONG_STATE = "wrong state"
ORPHANED = "orphaned"
UNAVAILABLE = "unavailable"

#: TCP states, as ``include/net/tcp_states.h`` numbers them (from 1).
TCP_STATES = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "NEW_SYN_RECV",
}
#: The states of a client that is connected: established, or half-closed by
#: either end (``shutdown(SHUT_WR)`` by the client gives FIN_WAIT1/2, by the
#: server CLOSE_WAIT).
CONNECTED_STATES = frozenset({1, 4, 5, 8})

#: Seconds to wait for the kernel's answer. It is queued before ``sendto``
#: returns, so this bounds only the impossible case, for a worker's sake.
TIMEOUT = 0.5

# Netlink and sock_diag constants (linux/netlink.h, linux/sock_diag.h,
# linux/inet_diag.h); the stdlib has AF_NETLINK but not these.
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR = 2
NLM_F_REQUEST = 1
INET_DIAG_NOCOOKIE = 0xFFFFFFFF

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, port
# nlmsghdr, then inet_diag_req_v2: family, protocol, ext, pad, states, and
# its inet_diag_sockid: sport, dport (network order, given through htons),
# src[16], dst[16], if, cookie[2].
_REQUEST = struct.Struct("=IHHII BBBxI HH16s16s III")
#: Where the asked sockid's ports and addresses sit in a request, and in an
#: answer (after the nlmsghdr and inet_diag_msg's four bytes).
_ASKED_IDS = slice(24, 60)
_ANSWERED_IDS = slice(20, 56)
# inet_diag_msg (72 bytes): family, state, timer, retrans, then the sockid
# as above (if and cookie skipped); expires, rqueue, wqueue (skipped), uid,
# inode.
_MESSAGE = struct.Struct("=BB2x 2s2s16s16s 12x 12x II")
#: A found socket's family and state, uid and inode, read from the whole
#: answer (nlmsghdr included) without building its addresses.
_FAMILY_STATE = struct.Struct("=16xBB")
_OWNER = struct.Struct("=80xII")
_ERROR = struct.Struct("=i")
_LENGTH_SEQUENCE = struct.Struct("=I4xI")
_DIAG_TYPE = struct.pack("=H", SOCK_DIAG_BY_FAMILY)

_V4_MAPPED = b"\0" * 10 + b"\xff\xff"
_LOOPBACK6 = b"\0" * 15 + b"\1"
_BUFFER = 8192
_htons = socket.htons
_inet_pton = socket.inet_pton
_AF_INET, _AF_INET6 = socket.AF_INET, socket.AF_INET6
_FAMILY = {4: _AF_INET, 16: _AF_INET6}  # by the length of a packed address
_IPPROTO_TCP = socket.IPPROTO_TCP


class ClientSocket(NamedTuple):
    """What :func:`find_client_socket` learned.

    ``outcome`` is :data:`FOUND`, :data:`ABSENT` or :data:`ERROR`.
    ``asked`` is the client's end and the server's end as asked, addresses
    in canonical text with IPv4-mapped ones unmapped. For a found socket,
    ``answered`` is its own end and its other end as the kernel reported them
    (the same form), ``state`` its TCP state (:data:`TCP_STATES`), ``uid`` the
    uid that created it and ``inode`` its inode (0: no process holds it).
    ``error`` says why nothing was found (the errno's name, or what failed).
    """

    outcome: str
    asked: tuple[tuple[str, int], tuple[str, int]] | None
    answered: tuple[tuple[str, int], tuple[str, int]] | None = None
    state: int = 0
    uid: int = -1
    inode: int = 0
    error: str = ""


class Verdict(NamedTuple):
    """What :func:`judge_client_socket` says: ``granted``, one of the reason
    constants (:data:`HELD` for a grant), a sentence for the operator, and
    for a grant who holds the client's socket (its creator's uid, its
    inode)."""

    granted: bool
    reason: str
    detail: str
    owner: PeerOwner | None = None


# Addresses ------------------------------------------------------------------


def packed_ip(address: str) -> bytes:
    """``address`` (no scope) as 4 bytes (IPv4, IPv4-mapped IPv6 unmapped)
    or 16 (IPv6); raises OSError (or TypeError) for anything else."""
    try:
        return _inet_pton(_AF_INET, address)
    except OSError:
        pass
    packed = _inet_pton(_AF_INET6, address)
    return packed[12:] if packed[:12] == _V4_MAPPED else packed


def is_loopback(packed: bytes) -> bool:
    """True for a :func:`packed_ip` in ``127.0.0.0/8`` or ``::1``."""
    return packed[0] == 127 if len(packed) == 4 else packed == _LOOPBACK6


def _packed(address: str) -> tuple[bytes, int]:
    """:func:`packed_ip` of ``address``, and its scope's interface index (0
    without one); raises ValueError (OSError from inet_pton or an unknown
    interface) for anything else."""
    scope = 0
    if "%" in address:  # fe80::1%eth0 or fe80::1%2: a link-local address
        address, name = address.split("%", 1)
        scope = int(name) if name.isdigit() else socket.if_nametoindex(name)
    return packed_ip(address), scope


def _text(packed: bytes) -> str:
    if len(packed) == 4:
        return socket.inet_ntop(socket.AF_INET, packed)
    return socket.inet_ntop(socket.AF_INET6, packed)


def _answered(family: int, port: bytes, field: bytes) -> tuple[str, int]:
    if family == socket.AF_INET:
        address = field[:4]
    else:
        address = field[12:] if field[:12] == _V4_MAPPED else field
    return _text(address), int.from_bytes(port, "big")


def _fill(
    buffer: bytearray,
    sequence: int,
    source: bytes,
    peer_port: int,
    destination: bytes,
    local_port: int,
    scope: int,
) -> None:
    # One pack, no tuples built: this runs for every new connection. 16s
    # pads a 4-byte address with zeros, as the kernel expects.
    _REQUEST.pack_into(
        buffer,
        0,
        _REQUEST.size,
        SOCK_DIAG_BY_FAMILY,
        NLM_F_REQUEST,
        sequence,
        0,
        _AF_INET if len(source) == 4 else _AF_INET6,
        _IPPROTO_TCP,
        0,
        0xFFFFFFFF,
        _htons(peer_port),
        _htons(local_port),
        source,
        destination,
        scope,
        INET_DIAG_NOCOOKIE,
        INET_DIAG_NOCOOKIE,
    )


def request(
    sequence: int, source: bytes, peer_port: int, destination: bytes, local_port: int, scope: int
) -> bytes:
    """The netlink message that asks for the one TCP socket whose own end is
    ``source:peer_port`` and whose other end is ``destination:local_port``
    (packed addresses, both 4 or both 16 bytes)."""
    buffer = bytearray(_REQUEST.size)
    _fill(buffer, sequence, source, peer_port, destination, local_port, scope)
    return bytes(buffer)


# The netlink socket -----------------------------------------------------------

#: TIMEOUT as a ``struct timeval``, for SO_RCVTIMEO and SO_SNDTIMEO.
_TIMEVAL = struct.pack("@ll", int(TIMEOUT), int(TIMEOUT % 1 * 1_000_000))


def bound_in_time(sock: _socket.socket) -> None:
    """Make each send and receive on ``sock`` wait at most :data:`TIMEOUT`.

    The kernel's own timeouts (``SO_RCVTIMEO``), not ``settimeout()``: with
    those Python polls before every call, two system calls more per query;
    a receive that times out raises ``BlockingIOError`` instead."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _TIMEVAL)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _TIMEVAL)


class _Channel:
    """One netlink socket of one process, its lock, its sequence numbers,
    and the buffers of the query and its answer (used under the lock)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.sock: _socket.socket | None = None
        self.sequence = 0
        self.request = bytearray(_REQUEST.size)
        self.answer = bytearray(_BUFFER)

    def open(self) -> _socket.socket:
        # The C-level class: gevent and eventlet patch socket.socket, and a
        # green socket would yield to other greenlets inside the lock.
        sock = _socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
        bound_in_time(sock)
        self.sock = sock
        return sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


_channel = _Channel()
_getpid = os.getpid


def _current_channel() -> _Channel:
    # A forked child (os.fork, or a server's fork in C that runs no at-fork
    # hook) shares the parent's netlink port, so either could read the
    # other's answers; and the lock may be held by a thread that the child
    # does not have. The pid tells, for a getpid() per query.
    global _channel
    channel = _channel
    if channel.pid != _getpid():
        channel = _channel = _Channel()
    return channel


def _exchange(channel: _Channel, sequence: int) -> bytes:
    """Send the channel's request and return the answer that carries
    ``sequence`` (a diag message or an error message, its nlmsghdr
    included); raises OSError. Called under the channel's lock."""
    sock = channel.sock or channel.open()
    answer = channel.answer
    try:
        sock.send(channel.request)
        while True:  # each recv waits at most TIMEOUT; foreign answers are dropped
            try:
                received = sock.recv_into(answer)
            except BlockingIOError:  # SO_RCVTIMEO ran out
                raise TimeoutError(f"no answer within {TIMEOUT} s: timed out") from None
            offset = 0
            while offset + 16 <= received:  # an nlmsghdr: length, type, flags, seq, port
                length, seq = _LENGTH_SEQUENCE.unpack_from(answer, offset)
                if length < 16 or offset + length > received:
                    break  # malformed: the rest of this datagram is not read
                if seq == sequence:
                    return bytes(answer[offset : offset + length])
                offset += (length + 3) & ~3
    except OSError:
        # A timeout or an error leaves answers in flight: a new socket
        # starts clean (the sequence check alone would also drop them).
        channel.close()
        raise


def _ask(
    source: bytes, peer_port: int, destination: bytes, local_port: int, scope: int
) -> tuple[bytes, bool]:
    """The kernel's answer for one client socket (see :func:`_exchange`),
    and whether its bytes hold the asked sockid (ports and addresses);
    raises OSError, or AttributeError where there is no AF_NETLINK."""
    channel = _current_channel()
    with channel.lock:
        channel.sequence = sequence = (channel.sequence + 1) & 0xFFFFFFFF
        _fill(channel.request, sequence, source, peer_port, destination, local_port, scope)
        answer = _exchange(channel, sequence)
        return answer, answer[_ANSWERED_IDS] == channel.request[_ASKED_IDS]


def _asked_pair(
    peer_ip: str, peer_port: int, local_ip: str, local_port: int
) -> tuple[bytes, int, bytes, int, int]:
    """The packed query of a 4-tuple, and its scope; raises ValueError,
    OSError or TypeError for anything that is not a TCP address pair."""
    (source, peer_scope), (destination, scope) = _packed(peer_ip), _packed(local_ip)
    if len(source) != len(destination):
        raise ValueError("an IPv4 and an IPv6 address")
    peer_port, local_port = int(peer_port), int(local_port)
    if not (0 < peer_port < 65536 and 0 < local_port < 65536):
        raise ValueError("a port out of range")
    return source, peer_port, destination, local_port, scope or peer_scope


def _asked_text(
    source: bytes, peer_port: int, destination: bytes, local_port: int
) -> tuple[tuple[str, int], tuple[str, int]]:
    return (_text(source), peer_port), (_text(destination), local_port)


def find_client_socket(
    peer_ip: str, peer_port: int, local_ip: str, local_port: int
) -> ClientSocket:
    """Ask the kernel for the socket of the client that the server sees as
    ``peer_ip:peer_port`` on its local ``local_ip:local_port``: the socket
    whose own end is the peer's and whose other end is the server's. TCP,
    IPv4 and IPv6; IPv4-mapped addresses (a dual-stack listener's view of an
    IPv4 client) are asked as IPv4. Never raises for bad input or a
    failing kernel: the outcome is :data:`ERROR`."""
    try:
        source, peer_port, destination, local_port, scope = _asked_pair(
            peer_ip, peer_port, local_ip, local_port
        )
    except (ValueError, OSError, TypeError) as error:
        return ClientSocket(ERROR, None, error=f"not a TCP address pair: {error}")
    asked = _asked_text(source, peer_port, destination, local_port)
    try:
        answer, _ = _ask(source, peer_port, destination, local_port, scope)
    except (OSError, AttributeError) as error:  # AttributeError: no AF_NETLINK here
        return ClientSocket(ERROR, asked, error=f"netlink: {error}")
    return _read_answer(asked, answer)


def _read_answer(asked: tuple[tuple[str, int], tuple[str, int]], answer: bytes) -> ClientSocket:
    kind = _HEADER.unpack_from(answer)[1]
    body = answer[_HEADER.size :]
    if kind == NLMSG_ERROR and len(body) >= _ERROR.size:
        code = -_ERROR.unpack_from(body)[0]
        if code == errno.ENOENT:
            return ClientSocket(ABSENT, asked, error="ENOENT")
        name = errno.errorcode.get(code, str(code)) if code else "an acknowledgement"
        return ClientSocket(ERROR, asked, error=f"the kernel answered {name}")
    if kind != SOCK_DIAG_BY_FAMILY or len(body) < _MESSAGE.size:
        return ClientSocket(ERROR, asked, error=f"an answer of type {kind}, {len(body)} bytes")
    family, state, own_port, other_port, own, other, uid, inode = _MESSAGE.unpack_from(body)
    answered = (_answered(family, own_port, own), _answered(family, other_port, other))
    return ClientSocket(FOUND, asked, answered, state, uid, inode)


# The judgement ------------------------------------------------------------------


def judge_client_socket(found: ClientSocket) -> Verdict:
    """Grant only a socket answered with exactly the asked 4-tuple, in a
    connected state (:data:`CONNECTED_STATES`), held by a process (inode not
    0), for a client whose end is not the server's own. Pure: the same
    answer gives the same verdict."""
    if found.asked is not None and found.asked[0] == found.asked[1]:
        return Verdict(
            False,
            SAME_ENDS,
            "the client's address and port are the server's own: the lookup can only "
            "find the server's socket; address translation made them so",
        )
    if found.outcome == ABSENT:
        return Verdict(
            False,
            NOT_FOUND,
            "no socket on this host has the client's address and port: another host "
            "behind address translation, another network namespace, or a local client "
            "behind an OUTPUT redirect",
        )
    if found.outcome != FOUND:
        return Verdict(False, UNAVAILABLE, f"the kernel could not be asked: {found.error}")
    state = TCP_STATES.get(found.state, str(found.state))
    if found.answered != found.asked:
        return Verdict(
            False,
            OTHER_SOCKET,
            f"the kernel answered with another socket ({state}), not the client's",
        )
    if found.state not in CONNECTED_STATES:
        return Verdict(False, WRONG_STATE, f"the client's socket is {state}, not connected")
    if found.inode == 0:
        return Verdict(
            False,
            ORPHANED,
            f"the client's socket ({state}) is held by no process: it closed at once",
        )
    return Verdict(True, HELD, _held(found.uid, found.state), PeerOwner(found.uid, found.inode))


def _held(uid: int, state: int) -> str:
    return f"a socket of uid {uid} holds the connection ({TCP_STATES[state]})"


def check_client(peer_ip: str, peer_port: int, local_ip: str, local_port: int) -> Verdict:
    """:func:`judge_client_socket` of :func:`find_client_socket`: the one
    call a front needs, with the connection's peer and local ends.

    The same verdict, for less: a grant is read straight from the answer's
    bytes (its whole sockid equal to the asked one, in the asked family, a
    connected state, an inode), and anything else is judged from the same
    answer by :func:`judge_client_socket`, which says why."""
    try:
        source, peer_port, destination, local_port, scope = _asked_pair(
            peer_ip, peer_port, local_ip, local_port
        )
    except (ValueError, OSError, TypeError) as error:
        asked_nothing = ClientSocket(ERROR, None, error=f"not a TCP address pair: {error}")
        return judge_client_socket(asked_nothing)
    if peer_port != local_port or source != destination:
        try:
            answer, same_ids = _ask(source, peer_port, destination, local_port, scope)
        except (OSError, AttributeError) as error:  # AttributeError: no AF_NETLINK here
            asked = _asked_text(source, peer_port, destination, local_port)
            return judge_client_socket(ClientSocket(ERROR, asked, error=f"netlink: {error}"))
        # The type (little-endian u16 at 4) and the length, then the
        # socket: the same tests as judge_client_socket's, on raw bytes.
        if same_ids and len(answer) >= _OWNER.size and answer[4:6] == _DIAG_TYPE:
            family, state = _FAMILY_STATE.unpack_from(answer)
            uid, inode = _OWNER.unpack_from(answer)
            if family == _FAMILY[len(source)] and state in CONNECTED_STATES and inode:
                return Verdict(True, HELD, _held(uid, state), PeerOwner(uid, inode))
    else:
        answer = b""  # equal ends: refused whatever the kernel would say
    asked = _asked_text(source, peer_port, destination, local_port)
    return judge_client_socket(
        _read_answer(asked, answer) if answer else ClientSocket(ERROR, asked)
    )


# A unix socket's peer --------------------------------------------------------------

_PEERCRED = struct.Struct("=3i")  # struct ucred: pid, uid, gid


def unix_peer_owner(sock: Any) -> PeerOwner | None:
    """The process at the other end of the unix-socket connection ``sock``,
    as ``SO_PEERCRED`` says (frozen at ``connect()``; about 1 us, no
    privilege): its uid and pid. ``None`` for anything that is not a unix
    socket (on a TCP socket the kernel answers uid -1 instead of an error:
    never read there), a peer without credentials, or a failure."""
    try:
        if sock.family != socket.AF_UNIX:
            return None
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        pid, uid, _gid = _PEERCRED.unpack(raw)
    except (OSError, AttributeError, TypeError, ValueError, struct.error):
        return None
    return PeerOwner(uid, 0, pid) if uid >= 0 else None


#: How :func:`available` begins its answer when the kernel was asked and
#: failed; any other "no" means that the probe could not be built (no
#: descriptor left, say), which says nothing of netlink.
SILENT = "netlink sock_diag does not answer"


def available() -> tuple[bool, str]:
    """Whether the kernel can be asked here, and why not: a loopback
    connection of this process's own is looked up and must be granted.
    For a start-up check; it opens three sockets and closes them."""
    try:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    except OSError as error:
        return False, f"no TCP socket: {error}"
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        # A plain connect to the numeric address: no getaddrinfo, whose
        # idna codec is imported at first use: a worker that moved to another
        # user (gunicorn --user) may no longer be able to read it.
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            client.settimeout(TIMEOUT)
            client.connect(listener.getsockname())
            server, _ = listener.accept()
            with server:
                peer, local = server.getpeername(), server.getsockname()
                verdict = check_client(peer[0], peer[1], local[0], local[1])
        finally:
            client.close()
    except OSError as error:
        return False, f"no loopback connection to probe with: {error}"
    finally:
        listener.close()
    if verdict.granted:
        return True, "netlink sock_diag answers"
    return False, f"{SILENT}: {verdict.detail}"
