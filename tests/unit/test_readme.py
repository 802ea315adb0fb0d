"""The README documents every setting, so configuration cannot drift from its docs."""

from __future__ import annotations

from streams.settings import REPOSITORY_ROOT, Settings


def setting_variables() -> dict[str, str]:
    """Every setting's environment variable (``MEDSTREAM_`` plus the field name in upper
    case), with its field name."""
    return {f"MEDSTREAM_{name.upper()}": name for name in Settings.model_fields}


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (REPOSITORY_ROOT / "README.md").read_text()
    for variable, name in setting_variables().items():
        field = Settings.model_fields[name]
        assert field.description is not None
        assert field.description.startswith(f"{variable}:"), name
        assert f"`{variable}`" in readme, f"{variable} is missing from the README"
