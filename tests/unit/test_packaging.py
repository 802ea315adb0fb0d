"""The installed package carries what it reads at run time: the Avro schemas and the data."""

from __future__ import annotations

import tomllib
from pathlib import Path

import streams
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
