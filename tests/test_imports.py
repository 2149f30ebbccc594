"""when_imported(): code run once an optional package is first imported."""

from __future__ import annotations

import importlib
import importlib.resources
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from prefill_guard.imports import when_imported


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A package that exists on sys.path but is not imported yet."""
    name = f"pg_optional_{tmp_path.name.replace('-', '_')}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("VALUE = 42\n")
    (tmp_path / name / "data.txt").write_text("resource\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_runs_after_the_first_import(package: str) -> None:
    """Nothing happens until the import; then ``then`` sees the whole module, and the finder
    is gone from sys.meta_path."""
    before = list(sys.meta_path)
    seen: list[int] = []
    when_imported(package, lambda: seen.append(sys.modules[package].VALUE))
    assert seen == []
    importlib.import_module(package)
    assert seen == [42]
    assert sys.meta_path == before
    importlib.reload(sys.modules[package])
    assert seen == [42]  # once


def test_runs_now_for_a_package_imported_already(package: str) -> None:
    """Already imported: ``then`` runs at once, in the call."""
    importlib.import_module(package)
    seen: list[str] = []
    when_imported(package, lambda: seen.append("now"))
    assert seen == ["now"]


def test_a_package_that_is_not_installed_is_left_alone() -> None:
    """No such package: no finder is added, and the returned cancel does nothing."""
    before = list(sys.meta_path)
    cancel = when_imported("pg_no_such_package_anywhere", lambda: pytest.fail("ran"))
    assert sys.meta_path == before
    cancel()


def test_cancel_before_the_import_removes_the_finder(package: str) -> None:
    """Cancelled before the import (uninstall() before LiteLLM is imported): never runs."""
    before = list(sys.meta_path)
    cancel = when_imported(package, lambda: pytest.fail("ran after cancel"))
    cancel()
    assert sys.meta_path == before
    importlib.import_module(package)


def test_the_module_keeps_its_own_loader_and_resources(package: str) -> None:
    """The finder only wraps the loader for the import: the module's spec and loader are
    its own finder's, so its resources read as without the hook."""
    when_imported(package, lambda: None)
    module = importlib.import_module(package)
    assert type(module.__loader__).__name__ == "SourceFileLoader"
    assert module.__spec__ is not None
    assert module.__spec__.loader is module.__loader__
    assert importlib.resources.files(package).joinpath("data.txt").read_text() == "resource\n"


def test_an_error_in_then_is_logged_and_the_import_goes_on(
    package: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A hook that fails never breaks the program's import of the package."""

    def broken() -> None:
        raise RuntimeError("boom")

    when_imported(package, broken)
    assert importlib.import_module(package).VALUE == 42
    assert "could not hook into" in caplog.text
    assert "boom" in caplog.text
