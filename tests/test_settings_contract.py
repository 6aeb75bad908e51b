"""The settings contract: the settings module, local.settings.example.json and the README agree."""

import json
import re
from pathlib import Path

from shared.settings import ALL_SETTINGS, load_settings

ROOT = Path(__file__).resolve().parent.parent
HOST_SETTINGS = {"FUNCTIONS_WORKER_RUNTIME"}  # read by the Functions host, not by our code


def example_values() -> dict[str, str]:
    return json.loads((ROOT / "local.settings.example.json").read_text())["Values"]


def readme_settings() -> set[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Settings", 1)[1].split("\n## ", 1)[0]
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
    section = (ROOT / "README.md").read_text().split("## Settings", 1)[1]
    for setting in ALL_SETTINGS:
        row = re.search(rf"^\| `{re.escape(setting.name)}` \| ([^|]+) \|", section, re.MULTILINE)
        assert row, setting.name
        shown = row.group(1).strip().strip("`")
        assert shown == (setting.default if setting.default is not None else "(required)"), setting.name
