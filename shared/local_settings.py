"""`local.settings.json`, read the way Core Tools reads it: its `Values` become environment
variables for the app (variables already set in the environment win, so a shell override works).

Used by the local runner and the operator CLI; the deployed app never reads this file."""

from __future__ import annotations

import json
import os
from pathlib import Path


def load_local_settings(path: Path) -> dict[str, str]:
    """The file's Values (empty if there is no file); raises ValueError on a malformed file."""
    if not path.exists():
        return {}
    document = json.loads(path.read_text(encoding="utf-8"))
    values = document.get("Values", {})
    if not isinstance(values, dict):
        raise ValueError(f"{path}: 'Values' must be an object")
    return {str(key): str(value) for key, value in values.items()}


def apply(values: dict[str, str]) -> None:
    for key, value in values.items():
        os.environ.setdefault(key, value)
