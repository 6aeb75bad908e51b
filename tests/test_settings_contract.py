"""The settings contract: the settings module, local.settings.example.json and the settings table
of docs/operating.md agree."""

import json
import re
from pathlib import Path

from shared.settings import ALL_SETTINGS, load_settings

ROOT = Path(__file__).resolve().parent.parent
HOST_SETTINGS = {"FUNCTIONS_WORKER_RUNTIME"}  # read by the Functions host, not by our code


def example_values() -> dict[str, str]:
    return json.loads((ROOT / "local.settings.example.json").read_text())["Values"]


SETTINGS_DOC = ROOT / "docs" / "operating.md"  # the settings table lives here (README links to it)


def settings_section() -> str:
    return SETTINGS_DOC.read_text().split("\n## Settings", 1)[1].split("\n## ", 1)[0]


def readme_settings() -> set[str]:
    section = settings_section()
    return set(re.findall(r"^\| `([A-Za-z_]+)` \|", section, re.MULTILINE))


def test_example_lists_every_setting_and_nothing_else():
    assert set(example_values()) - HOST_SETTINGS == {setting.name for setting in ALL_SETTINGS}


def test_readme_table_lists_every_setting_and_nothing_else():
    assert readme_settings() == {setting.name for setting in ALL_SETTINGS}


def test_example_values_are_valid_and_defaults_match():
    values = example_values()
    load_settings(values)  # raises, naming the setting, if an example value is invalid
    for setting in ALL_SETTINGS:
        if setting.default is not None:
            assert values[setting.name] == setting.default, setting.name


def test_readme_defaults_match_the_code():
    section = settings_section()
    for setting in ALL_SETTINGS:
        row = re.search(rf"^\| `{re.escape(setting.name)}` \| ([^|]+) \|", section, re.MULTILINE)
        assert row, setting.name
        shown = row.group(1).strip().strip("`")
        assert shown == (setting.default if setting.default is not None else "(required)"), setting.name
