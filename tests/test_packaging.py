"""The distribution: the wheel ships every package and its data, the metadata is complete and
passes the package index's checks, and the wheel installed into a fresh virtual environment
(its dependencies resolved as for any install) is a working `runner` in a folder outside the
repository: init, validate, run, report."""

from __future__ import annotations

import email
import email.message
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from runner.version import DISTRIBUTION, __version__

from .conftest import last_records

ROOT = Path(__file__).resolve().parent.parent
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# what a clean checkout holds besides the sources (.gitignore): never part of a build
NOT_SOURCES = shutil.ignore_patterns(
    ".git",
    ".v",
    ".venv",
    "__pycache__",
    "*.egg-info",
    "build",
    "dist",
    ".*_cache",
    ".hypothesis",
    "runs",
    "exports",
)
WHEEL_NAME = DISTRIBUTION.replace("-", "_")


def test_every_runner_package_is_in_the_wheel():
    listed = set(CONFIG["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "runner").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"


def test_the_distribution_name_is_the_one_install_hints_give():
    # `runner` on the package index is an unrelated project: every hint must name ours
    assert CONFIG["project"]["name"] == DISTRIBUTION == "fal-batch-runner"
    assert CONFIG["project"]["scripts"] == {"runner": "runner.cli:main"}


def _quiet_env() -> dict[str, str]:
    """The environment for the commands of a fresh install: nothing that would put the
    repository's code (or another environment's) in their way, and no key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "FAL_"))}
    env.pop("VIRTUAL_ENV", None)
    return env


def _check(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        argv, cwd=cwd, env=_quiet_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{argv[:3]} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel as `python -m build` makes them (the wheel built from the
    unpacked sdist, so a file the sdist lacks is missing from the wheel too), from a copy of
    the sources: the checkout is left as it was."""
    base = tmp_path_factory.mktemp("dist")
    src, out = base / "src", base / "dist"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCES)
    _check([sys.executable, "-m", "build", "--outdir", str(out), str(src)])
    return out


@pytest.fixture(scope="session")
def installed(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment (no system site-packages: a missing dependency shows) with
    the wheel installed; its bin folder."""
    venv = tmp_path_factory.mktemp("venv") / "env"
    _check([sys.executable, "-m", "venv", str(venv)])
    (wheel,) = dist.glob("*.whl")
    _check([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)])
    return venv / "bin"


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        return email.message_from_bytes(
            archive.read(f"{WHEEL_NAME}-{__version__}.dist-info/METADATA")
        )


@pytest.mark.slow
def test_the_wheel_ships_the_schemas_the_starter_and_py_typed(dist):
    (wheel,) = dist.glob(f"{WHEEL_NAME}-{__version__}-py3-none-any.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    endpoints = {
        f"runner/schemas/endpoints/{p.name}"
        for p in (ROOT / "schemas" / "endpoints").glob("*.json")
    }
    assert endpoints
    shipped = {
        "runner/py.typed",
        "runner/schemas/job.schema.json",
        "runner/starter/spec.yaml",
        "runner/starter/sample.png",
        f"{WHEEL_NAME}-{__version__}.dist-info/licenses/LICENSE",
        *endpoints,
    }
    assert shipped <= names, f"missing from the wheel: {sorted(shipped - names)}"
    assert not [n for n in names if n.startswith("tests/") or "__pycache__" in n]


@pytest.mark.slow
def test_the_metadata_is_complete_and_passes_twine_check(dist):
    (wheel,) = dist.glob("*.whl")
    meta = _metadata(wheel)
    assert meta["Name"] == DISTRIBUTION and meta["Version"] == __version__
    assert meta["License-Expression"] == "MIT" and meta["License-File"] == "LICENSE"
    assert meta["Requires-Python"] == ">=3.11"
    assert meta["Author"] and meta["Keywords"] and meta["Description-Content-Type"]
    assert "not an official fal package" in meta["Summary"]
    assert meta.get_all("Project-URL")
    classifiers = set(meta.get_all("Classifier") or [])
    for version in ("3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in classifiers
    for prefix in ("Development Status", "Environment", "Intended Audience", "Operating System"):
        assert any(c.startswith(prefix + " :: ") for c in classifiers), prefix
    assert any(c.startswith("Topic :: ") for c in classifiers)
    assert {"export", "test", "lint"} <= set(meta.get_all("Provides-Extra") or [])
    assert 'pyarrow>=14; extra == "export"' in (meta.get_all("Requires-Dist") or [])
    assert str(meta.get_payload()).startswith("# runner")  # the README, as the index shows it
    files = sorted(str(p) for p in dist.iterdir())
    assert len(files) == 2  # the sdist and the wheel
    _check([sys.executable, "-m", "twine", "check", "--strict", *files])


@pytest.mark.slow
def test_the_installed_wheel_works_in_an_empty_folder_outside_the_repository(installed, tmp_path):
    python, runner = str(installed / "python"), str(installed / "runner")
    where = _check([python, "-c", "import runner; print(runner.__file__)"], cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(installed.parent)  # not this checkout
    job = tmp_path / "job"
    job.mkdir()
    assert not job.resolve().is_relative_to(ROOT)

    said = _check([runner, "init"], cwd=job).stdout
    assert "runner validate runner.yaml" in said and "runner report runs/starter" in said
    modeline = (job / "runner.yaml").read_text(encoding="utf-8").splitlines()[0]
    schema = Path(modeline.removeprefix("# yaml-language-server: $schema="))
    assert schema.is_file() and schema.is_relative_to(installed.parent)
    assert _check([runner, "schema"], cwd=job).stdout.strip() == str(schema)

    validated = _check([runner, "validate", "runner.yaml"], cwd=job).stdout
    assert validated.strip() == "runner.yaml: ok, 4 requests"
    _check([runner, "run", "runner.yaml", "--no-progress"], cwd=job)
    records = last_records(job / "runs" / "starter")
    assert len(records) == 4 and all(r["status"] == "ok" for r in records.values())
    for record in records.values():
        assert (job / "runs" / "starter" / record["outputs"][0]["file"]).is_file()
    _check([runner, "report", "runs/starter"], cwd=job)
    assert (job / "runs" / "starter" / "report.html").is_file()

    again = subprocess.run(
        [runner, "init"], cwd=job, env=_quiet_env(), capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 2 and "nothing was written" in again.stderr
