"""The secrets held by the fake Key Vault, with versions like the real one."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping


@dataclass(frozen=True)
class SecretVersion:
    """One immutable version of a secret."""

    name: str
    version: str
    value: str
    created: int
    updated: int
    enabled: bool = True
    content_type: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


class SecretStore:
    """Thread-safe versioned secrets; names are case-insensitive as in Key Vault."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[str, list[SecretVersion]] = {}

    def set(
        self,
        name: str,
        value: str,
        *,
        content_type: str | None = None,
        tags: Mapping[str, str] | None = None,
        enabled: bool = True,
    ) -> SecretVersion:
        """Add a new current version (Key Vault never overwrites a version)."""
        now = int(time.time())
        with self._lock:
            history = self._versions.setdefault(name.lower(), [])
            display_name = history[0].name if history else name
            version = SecretVersion(
                name=display_name,
                version=uuid.uuid4().hex,
                value=value,
                created=now,
                updated=now,
                enabled=enabled,
                content_type=content_type,
                tags=dict(tags or {}),
            )
            history.append(version)
        return version

    def get(self, name: str, version: str | None = None) -> SecretVersion | None:
        """The current version, or the named version; None when absent."""
        with self._lock:
            history = self._versions.get(name.lower(), [])
            if not history:
                return None
            if not version:
                return history[-1]
            return next((item for item in history if item.version == version.lower()), None)

    def versions(self, name: str) -> list[SecretVersion]:
        with self._lock:
            return list(self._versions.get(name.lower(), []))

    def current_values(self) -> Mapping[str, str]:
        """Read-only snapshot ``{name: current value}``."""
        with self._lock:
            return MappingProxyType({history[-1].name: history[-1].value for history in self._versions.values()})
