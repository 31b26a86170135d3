"""The sdist and the wheel, built as a release builds them (``python -m build``).

The wheel holds the library only; the sdist is a checkout without git, whose
own tests run.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import flask_selfhost

from .servers import ROOT


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0 and "No module named build" in done.stderr:
        pytest.skip("needs the build package: pip install -e '.[dev]'")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return out


def wheel(dist: Path) -> zipfile.ZipFile:
    (path,) = dist.glob("*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_holds_flask_selfhost_only(dist):
    names = wheel(dist).namelist()
    top = {name.split("/")[0] for name in names}
    version = flask_selfhost.__version__
    assert top == {"flask_selfhost", f"flask_selfhost-{version}.dist-info"}, top
    assert "flask_selfhost/doctor/__init__.py" in names
    assert "flask_selfhost/py.typed" in names
    assert f"flask_selfhost-{version}.dist-info/licenses/LICENSE" in names


def test_the_wheel_metadata(dist):
    archive = wheel(dist)
    (metadata_name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
    metadata = Parser().parsestr(archive.read(metadata_name).decode())
    assert metadata["Version"] == flask_selfhost.__version__  # single source: __init__.py
    assert metadata["License-Expression"] == "BSD-3-Clause"
    assert not [c for c in metadata.get_all("Classifier") if c.startswith("License ::")]
    assert "Operating System :: POSIX :: Linux" in metadata.get_all("Classifier")
    assert metadata["Author"]
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL"))
    assert {"Documentation", "Source", "Issues", "Changelog"} <= set(urls)
    extras = set(metadata.get_all("Provides-Extra"))
    assert {"demo", "test", "docs", "dev"} <= extras
    assert any(
        "tox" in req and 'extra == "dev"' in req for req in metadata.get_all("Requires-Dist")
    )


def test_the_sdist_runs_its_own_tests(dist, tmp_path):
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path, filter="data")
    (unpacked,) = tmp_path.iterdir()
    for needed in (
        "tests/conftest.py",
        "tests/servers.py",
        "demo_app/__init__.py",
        "docs/conf.py",
        "benchmarks/overhead.py",
        "LICENSE",
        "SECURITY.md",
    ):
        assert (unpacked / needed).exists(), needed
    # From the unpacked tree, its own flask_selfhost comes first on sys.path.
    where = subprocess.run(
        [sys.executable, "-c", "import flask_selfhost; print(flask_selfhost.__file__)"],
        cwd=unpacked,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert Path(where.strip()).is_relative_to(unpacked)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/test_rule.py", "tests/test_guard.py", "tests/test_demo.py"],
        cwd=unpacked, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout.splitlines()[-1]
