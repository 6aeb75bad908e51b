"""Identifiers the app accepts and makes: strict GUIDs, nothing looser.

`uuid.UUID` also accepts braces, `urn:uuid:` and hyphen-less forms, and `str.isalnum` accepts
non-ASCII digits; Partner Center wants the canonical 8-4-4-4-12 ASCII form, so that is all we take.
"""

from __future__ import annotations

import re
import uuid

GUID_PATTERN = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_GUID = re.compile(rf"^{GUID_PATTERN}$", re.ASCII)


def is_guid(value: object) -> bool:
    """True only for a str in canonical ASCII GUID form (either case)."""
    return isinstance(value, str) and _GUID.fullmatch(value) is not None


def new_guid() -> str:
    return str(uuid.uuid4())
