"""What the distributions hold, built from the repository's files as pip builds them: the
wheel is the package with every file it reads at run time (the page's HTML, script and style,
the tiny checkpoint) and the licence; the source distribution is the repository that the
README, the docs and ``make test`` use (its tests could not run: ``tests/support`` and
``conftest.py`` were left out, as were the docs the README links, and the licence text)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[set[str], set[str]]:
    """(the sdist's files, the wheel's), built from a copy of the tracked files (a build
    writes into the tree it builds)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout: the tracked files are what is packaged")
    tracked = (
        subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    tree = tmp_path_factory.mktemp("tree")
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tree / name)
    dist = tree / "dist"
    script = (
        "from setuptools import build_meta as b; "
        "print(b.build_sdist('dist')); print(b.build_wheel('dist'))"
    )
    subprocess.run([sys.executable, "-c", script], cwd=tree, check=True, capture_output=True)
    [sdist] = dist.glob("*.tar.gz")
    [wheel] = dist.glob("*.whl")
    with tarfile.open(sdist) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = set(archive.namelist())
    return in_sdist, in_wheel


def test_the_wheel_holds_what_the_package_reads(built: tuple[set[str], set[str]]) -> None:
    _, wheel = built
    package = {p.relative_to(ROOT).as_posix() for p in (ROOT / "vidcap").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}  # fmt: skip
    assert package <= wheel, sorted(package - wheel)
    assert not any(name.startswith("tests/") for name in wheel)
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in wheel)


def test_the_source_distribution_is_the_repository(built: tuple[set[str], set[str]]) -> None:
    sdist, _ = built
    for needed in ("LICENSE", "Makefile", "tests/conftest.py", "tests/support/videos.py",
                   "docs/cli.md", "sample_videos/shapes.mp4", "flask/start.sh",
                   "handlers/blip2_handler.py", ".ci/run"):  # fmt: skip
        assert needed in sdist, needed
