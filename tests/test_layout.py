"""The layout stays true by itself: imports point down the layers, README's names import."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "consumer_host"


def _lint_imports() -> str:
    found = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert found, "lint-imports (import-linter) is installed with the test extra"
    return found


def test_imports_point_down_the_layers_and_no_transport_library_leaks_upward():
    result = subprocess.run(
        [_lint_imports(), "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    """The contract can fail: the same check on a copy with one supervision module importing
    the host reports it."""
    copy = tmp_path / "repo"
    shutil.copytree(PACKAGE, copy / "consumer_host", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    backoff = copy / "consumer_host" / "supervision" / "backoff.py"
    backoff.write_text(backoff.read_text() + "\nfrom consumer_host.host import Host  # noqa\n")
    result = subprocess.run(
        [_lint_imports(), "--no-cache"],
        cwd=copy,
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert "consumer_host.supervision.backoff -> consumer_host.host" in result.stdout


@pytest.mark.parametrize(
    "package",
    sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()),
)
def test_every_subpackage_says_what_lives_there_and_what_it_may_import(package):
    doc = importlib.import_module(f"consumer_host.{package}").__doc__
    assert doc, f"consumer_host/{package}/__init__.py has no docstring"
    assert "import" in doc.lower()


def test_every_public_name_readme_imports_is_exported():
    readme = (ROOT / "README.md").read_text()
    names: set[str] = set()
    for block in re.findall(r"from consumer_host import \(?([^)\n]+)\)?", readme):
        names.update(n.strip() for n in block.split(",") if n.strip())
    assert {"Host", "Message", "Reject"} <= names
    public = importlib.import_module("consumer_host")
    missing = sorted(n for n in names if not hasattr(public, n))
    assert not missing, f"README imports names consumer_host does not export: {missing}"
    assert not set(names) - set(public.__all__)


def test_no_module_outgrows_its_room():
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")
    }
    assert sizes["consumer_host/host.py"] <= 250


def _readme_exports() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("<!-- exports:start -->")[1].split("<!-- exports:end -->")[0]
    names: set[str] = set()
    for row in table.splitlines()[2:]:
        first_cell = row.split("|")[1]
        names.update(re.findall(r"`(\w+)`", first_cell))
    return names


def test_readme_lists_exactly_what_consumer_host_exports():
    public = importlib.import_module("consumer_host")
    assert _readme_exports() == set(public.__all__) - {"__version__"}


def test_every_consumer_host_name_readme_mentions_is_exported():
    """A class or exception of the package that README names in backticks (``Defer``,
    ``Publisher``) is importable from ``consumer_host`` itself."""
    import inspect
    import pkgutil

    defined: set[str] = set()
    for info in pkgutil.walk_packages([str(PACKAGE)], "consumer_host."):
        if info.name.startswith(
            ("consumer_host.otel", "consumer_host.testing", "consumer_host.__")
        ):
            continue  # optional extra and the test helpers: imported from their own module
        module = importlib.import_module(info.name)
        defined.update(
            name
            for name, value in vars(module).items()
            if inspect.isclass(value) and value.__module__.startswith("consumer_host")
        )
    readme = (ROOT / "README.md").read_text()
    mentioned = set(re.findall(r"`([A-Z]\w+)(?:\(|`)", readme)) & defined
    public = importlib.import_module("consumer_host")
    assert {"Defer", "Publisher", "Reject", "Outcome"} <= mentioned
    assert sorted(mentioned - set(public.__all__)) == []
