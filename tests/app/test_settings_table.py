"""The README's settings table is the one the settings class makes (regenerate with `python -m app.settings`)."""

from pathlib import Path

from app.settings import Settings, settings_table


def test_readme_holds_the_generated_settings_table():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    table = settings_table()
    assert table in readme
    assert table.count("| `MONOSCOPE_") == len(Settings.model_fields) > 0  # every setting, one row each
