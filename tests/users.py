"""Real Unix users for the tests of who is behind a connection.

The threat these helpers let the tests show: *another user of this host*
reaching an app that should answer its own user only. A test run as root
proves nothing of that (root's sockets are root's, and a server run as
root with ``"self"`` allows root), so the tests make users of their own:

.. code-block:: python

    from tests.users import made_users

    with made_users(3) as (server, alice, bob):
        subprocess.run(server.command(sys.executable, "-m", "gunicorn", ...))
        subprocess.run(alice.command(sys.executable, "-c", client))

:func:`made_users` creates system users with names unique to this run
(``useradd --system``, no home, no login shell) and deletes them after,
even when the test fails; users that a killed run left behind are deleted
at the next start. :meth:`User.command` runs a command as the user, with
``setpriv`` (uid, gid, no supplementary groups).

The interpreter may live where other users cannot enter (pyenv under a
``/root`` of mode 700): then the command keeps ``CAP_DAC_READ_SEARCH`` as
an ambient capability, which lets it read files and nothing else. Its uid,
and so every socket it makes, is the user's; reading another user's
``/proc/PID/fd`` needs ``CAP_SYS_PTRACE``, which it has not. Needs root,
``useradd``, ``userdel`` and ``setpriv``; call :func:`require_users` first
so that a test skips with the reason instead.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .conftest import require_commands, require_root

#: The names :func:`made_users` gives: the creating run's pid, then a letter.
_OURS = re.compile(r"shu(\d+)([a-z])")


@dataclass(frozen=True)
class User:
    """A user made by :func:`made_users`."""

    name: str
    uid: int
    gid: int

    def command(self, *cmd: str) -> list[str]:
        """``cmd`` run as this user (real and effective uid and gid, no
        supplementary groups)."""
        keep = (
            []
            if _others_can_run(sys.executable)
            else ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
        )
        return [
            *("setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups"),
            *keep,
            "--",
            *cmd,
        ]

    def run(self, *cmd: str, **kw) -> subprocess.CompletedProcess:
        """Run ``cmd`` as this user and wait (text output captured unless told otherwise)."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.command(*cmd), **kw)


def _others_can_run(path: str) -> bool:
    """Whether a user with no privilege reaches ``path`` and its prefix."""
    for step in (Path(path), Path(sys.prefix) / "lib"):
        for parent in [step, *step.parents]:
            if parent.is_dir() and not os.stat(parent).st_mode & 0o001:
                return False
    return True


def require_users() -> None:
    """Skip (with the reason) unless this process may make users."""
    require_root()
    require_commands("useradd", "userdel", "setpriv")


def remove_stale_users() -> None:
    """Delete users that an earlier run made and did not delete (killed)."""
    for entry in pwd.getpwall():
        match = _OURS.fullmatch(entry.pw_name)
        if match and not _alive(int(match[1])):
            subprocess.run(["userdel", entry.pw_name], capture_output=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def made_users(count: int) -> Iterator[list[User]]:
    """``count`` new users, deleted after, whatever happened."""
    require_users()
    remove_stale_users()
    made: list[User] = []
    try:
        for letter in "abcdefghijklmnopqrstuvwxyz"[:count]:
            name = f"shu{os.getpid()}{letter}"
            with contextlib.suppress(KeyError):  # this run's, left by a test that failed
                pwd.getpwnam(name)
                subprocess.run(["userdel", name], check=True, capture_output=True)
            subprocess.run(
                [
                    *("useradd", "--system", "--user-group", "--no-create-home"),
                    *("--shell", "/usr/sbin/nologin", name),
                ],
                check=True,
                capture_output=True,
            )
            entry = pwd.getpwnam(name)
            made.append(User(name, entry.pw_uid, entry.pw_gid))
        yield made
    finally:
        for user in made:
            subprocess.run(["userdel", user.name], capture_output=True)


@contextlib.contextmanager
def socket_directory(owner: User) -> Iterator[Path]:
    """A new directory in the system's temporary directory that ``owner``
    may write and every user may enter: where a server run as ``owner``
    makes its unix socket (pytest's own temporary directory is root's
    alone). Deleted after."""
    path = Path(tempfile.mkdtemp(prefix="selfhost-users-"))
    try:
        os.chown(path, owner.uid, owner.gid)
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
