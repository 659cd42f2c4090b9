"""The wheel that the image installs carries every file the processes read at run time."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = ("operator", "services", "devenv", "gen/python")
PIP_WHEEL = (sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q")


def clean_copy(into: Path) -> Path:
    """The checkout's files as a clone has them (no egg-info or build leftovers, which
    would hand setuptools a file list the image build does not have)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            target = into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return into


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    source = clean_copy(tmp_path_factory.mktemp("source"))
    subprocess.run(
        [*PIP_WHEEL, "-w", str(out), str(source)],
        check=True,
        env={"PATH": "/usr/bin:/bin", "TMPDIR": str(build), "PIP_NO_INDEX": "1"},
        timeout=300,
    )
    (path,) = out.glob("checkout_saga-*.whl")
    return zipfile.ZipFile(path)


def data_files(pattern: str) -> set[str]:
    """Files matching ``pattern`` under the source roots, as paths inside the wheel."""
    found = set()
    for root in SOURCE_ROOTS:
        base = ROOT / root
        found |= {p.relative_to(base).as_posix() for p in base.glob(f"**/{pattern}")}
    return found


def test_every_migration_is_in_the_wheel(wheel: zipfile.ZipFile) -> None:
    migrations = data_files("migrations/*.sql")
    # Each service with a database brings its own, the operator its journal's.
    packages = {m.split("/")[0] for m in migrations}
    assert {"checkout_operator", "product_service", "user_service"} <= packages
    assert migrations <= set(wheel.namelist()), sorted(migrations - set(wheel.namelist()))


def test_typing_markers_and_generated_code_are_in_the_wheel(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    assert data_files("py.typed") <= names
    assert "checkout/product/v1/product_pb2.py" in names
    assert "checkout/user/v1/user_pb2_grpc.py" in names
