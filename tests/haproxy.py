"""A real HAProxy for the proxy tests.

:func:`haproxy_command` writes a configuration (its own file, in a
temporary directory) from a block of ``frontend``/``backend`` sections as
the docs show them: ``bind :80`` becomes the test's address, and the
upstream ``127.0.0.1:8000`` the test's app port.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

DEFAULTS = """\
global
    maxconn 64
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
"""


def haproxy_command(
    sections: str, listen: Sequence[tuple[str, int]], app_port: int, directory: Path
) -> list[str]:
    """Write ``sections`` bound to ``listen`` and relaying to ``app_port`` into
    ``directory``; the command that runs HAProxy on it, in the foreground."""
    assert "bind :80" in sections, "an HAProxy block binds :80, which the tests replace"
    binds = "\n    ".join(f"bind {host}:{port}" for host, port in listen)
    config = sections.replace("bind :80", binds).replace("127.0.0.1:8000", f"127.0.0.1:{app_port}")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "haproxy.cfg"
    path.write_text(DEFAULTS + config)
    return ["haproxy", "-db", "-f", str(path)]
