"""The installed package carries what it reads at run time: the Avro schemas and the data."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

import streams
from streams.cli import main
from streams.contracts import schemas as schemas_module
from streams.contracts.schemas import SCHEMAS_DIR
from streams.settings import REPOSITORY_ROOT

PACKAGE_DIR = Path(streams.__file__).parent


def package_data() -> dict[str, list[str]]:
    pyproject = tomllib.loads((REPOSITORY_ROOT / "pyproject.toml").read_text())
    data: dict[str, list[str]] = pyproject["tool"]["setuptools"]["package-data"]
    return data


def test_the_schemas_are_read_from_inside_the_package() -> None:
    # In the repository the package's schemas/ links to the top-level one (the source of
    # truth); in a wheel it is their copy. Read from beside the package, a wheel found none.
    assert SCHEMAS_DIR == PACKAGE_DIR / "schemas"
    assert SCHEMAS_DIR.resolve() == (REPOSITORY_ROOT / "schemas").resolve()


def test_every_schema_file_is_package_data() -> None:
    patterns = package_data()["streams"]
    files = sorted(SCHEMAS_DIR.rglob("*.avsc"))
    assert files
    for path in files:
        relative = path.relative_to(PACKAGE_DIR).as_posix()
        assert any(Path(relative).match(pattern) for pattern in patterns), relative


def test_the_knowledge_base_files_are_package_data() -> None:
    patterns = package_data()["streams.domain"]
    data_dir = PACKAGE_DIR / "domain"
    for path in sorted((data_dir / "data").iterdir()):
        relative = path.relative_to(data_dir).as_posix()
        assert any(Path(relative).match(pattern) for pattern in patterns), relative


def test_schemas_check_passes_on_the_packaged_schemas(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["schemas", "check"])
    assert exit_.value.code == 0
    released = len(list((SCHEMAS_DIR / "released").glob("*.avsc")))
    assert f"({released} released)" in capsys.readouterr().out


def test_schemas_check_fails_on_an_install_without_schemas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The image's build runs `medstream schemas check` to prove the wheel carries the schemas:
    # with none there it must fail, not find nothing to compare and pass.
    with pytest.raises(SystemExit) as exit_:
        main(["schemas", "check", "--schemas-dir", str(tmp_path)])
    assert exit_.value.code == 1
    assert f"no schemas (*.avsc) in {tmp_path}" in capsys.readouterr().err

    monkeypatch.setattr(schemas_module, "RELEASED_DIR", tmp_path / "released")
    with pytest.raises(SystemExit) as exit_:
        main(["schemas", "check"])
    assert exit_.value.code == 1
    assert "no schemas (*.avsc) in" in capsys.readouterr().err
