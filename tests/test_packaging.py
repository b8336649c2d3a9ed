"""What an install of minser holds, and that a source checkout finds its kernels without one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[1]
# What pyproject.toml needs to build the wheel (the readme and licence are part of its metadata).
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "minser", "kernels")
# What the sdist adds (MANIFEST.in): what its test suite reads.
SDIST_EXTRAS = ("MANIFEST.in", "tests", "examples", "bench", "tools", "docs")


def _files(folder: Path) -> set[str]:
    """Paths below ``folder``, relative to it, of what a wheel ships (no bytecode caches)."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


def _copy(names: tuple[str, ...], source: Path) -> None:
    """The checkout's files and folders ``names`` copied into ``source`` (a build writes into its source tree)."""
    source.mkdir()
    for name in names:
        if (CHECKOUT / name).is_dir():
            shutil.copytree(CHECKOUT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(CHECKOUT / name, source / name)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """minser's wheel, built offline from a copy of the checkout."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    _copy(SOURCES, source)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(root / "out"), str(source)], check=True, capture_output=True)
    (built,) = (root / "out").glob("minser-*.whl")
    return zipfile.ZipFile(built)


def test_wheel_ships_kernels_as_minser_kernels_and_no_top_level_kernels(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    tops = {name.split("/")[0] for name in names}
    # A top-level `kernels` would clash with the unrelated PyPI package of that name.
    assert {top for top in tops if not top.endswith(".dist-info")} == {"minser"}
    (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
    assert wheel.read(top_level).decode().split() == ["minser"]
    assert {f"minser/kernels/{name}" for name in _files(CHECKOUT / "kernels")} <= names


def test_wheel_ships_every_module_and_asset_of_the_checkout(wheel: zipfile.ZipFile) -> None:
    # pyproject.toml lists the packages by hand: a new sub-package left off that list would be missing here.
    shipped = {name.removeprefix("minser/") for name in wheel.namelist() if name.startswith("minser/")}
    expected = _files(CHECKOUT / "minser")
    assert expected - shipped == set()
    assert {"assets/default.pt", "assets/emodb.sha256"} <= shipped


def test_checkout_finds_its_kernels_when_imported_from_inside_it() -> None:
    """Run from the checkout, Python imports its minser/ folder, which holds no kernels/: as after a plain
    `pip install .` (no editable mapping). -S keeps site's .pth files, and so the editable install, out."""
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}  # torch and the other dependencies
    code = ("import importlib.util, minser.kernels, minser.models; print(minser.kernels.__file__); "
            "print(minser.__file__); print(len(minser.__path__), importlib.util.find_spec('minser.tests'))")
    done = subprocess.run([sys.executable, "-S", "-c", code], cwd=CHECKOUT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    kernels, package, paths = done.stdout.splitlines()
    # Only minser.kernels: the checkout on the package's path made tests/, bench/ and a second copy of the
    # package importable as minser.tests, minser.minser, ...
    assert paths == "1 None"
    assert Path(kernels) == CHECKOUT / "kernels" / "__init__.py"
    assert Path(package) == CHECKOUT / "minser" / "__init__.py"


def test_wheel_metadata_takes_its_version_from_the_package(wheel: zipfile.ZipFile) -> None:
    import minser

    (metadata,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    assert f"Version: {minser.__version__}" in wheel.read(metadata).decode().splitlines()


def test_sdist_carries_what_its_test_suite_reads(tmp_path: Path) -> None:
    """Without MANIFEST.in setuptools took tests/test_*.py but not conftest.py, the example clips, bench/,
    tools/ or docs/, so the unpacked sdist's tests failed (missing fixtures, no clips)."""
    source = tmp_path / "src"
    _copy(SOURCES + SDIST_EXTRAS, source)
    code = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out")], cwd=source, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    with tarfile.open(tmp_path / "out" / done.stdout.split()[-1]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    expected = {f"{folder}/{name}" for folder in SDIST_EXTRAS[1:] for name in _files(CHECKOUT / folder)
                if not name.endswith(".pyc")}
    assert expected - names == set()
    assert {"tests/conftest.py", "pyproject.toml", "kernels/__init__.py", "minser/assets/default.pt"} <= names


def test_the_suite_without_the_dev_extra_says_what_to_install() -> None:
    """Before, a plain install's pytest stopped at three collection errors (librosa, hypothesis) and a
    missing confusion-matrix PNG failed a training test."""
    code = ("import sys; sys.modules['librosa'] = sys.modules['matplotlib'] = None; import pytest; "
            "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '--co', sys.argv[1]]))")
    done = subprocess.run([sys.executable, "-c", code, str(CHECKOUT / "tests" / "test_metrics.py")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == pytest.ExitCode.USAGE_ERROR
    assert "the test suite needs the dev extra (missing: librosa, matplotlib): pip install -e '.[dev]'" in done.stderr
