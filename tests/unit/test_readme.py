"""The README documents every setting, so configuration cannot drift from its docs."""

from __future__ import annotations

from streams.settings import REPOSITORY_ROOT, Settings


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (REPOSITORY_ROOT / "README.md").read_text()
    for name, field in Settings.model_fields.items():
        variable = f"MEDSTREAM_{name.upper()}"
        assert field.description is not None
        assert field.description.startswith(f"{variable}:"), name
        assert f"`{variable}`" in readme, f"{variable} is missing from the README"
