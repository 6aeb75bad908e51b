"""Matching request paths against the routes registered in `function_app.py`.

Routes are read from the FunctionApp itself, so a route added there is served with no change
here. Templates follow the host's syntax: literal segments, `{name}`, `{name:constraint}` and
`{name?}`; among matches, the route with more literal segments wins, as in ASP.NET routing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_PARAMETER = re.compile(r"^\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::[^}?]+)?(?P<optional>\?)?\}$")


@dataclass(frozen=True)
class HttpRoute:
    function_name: str
    methods: frozenset[str]
    auth_level: str
    template: str
    pattern: re.Pattern[str]
    literal_segments: int
    user_function: Any


def compile_template(template: str) -> tuple[re.Pattern[str], int]:
    parts: list[str] = []
    literals = 0
    for segment in template.strip("/").split("/"):
        match = _PARAMETER.match(segment)
        if match is None:
            parts.append("/" + re.escape(segment))
            literals += 1
        elif match.group("optional"):
            parts.append(f"(?:/(?P<{match.group('name')}>[^/]+))?")
        else:
            parts.append(f"/(?P<{match.group('name')}>[^/]+)")
    return re.compile("^" + "".join(parts) + "/?$", re.IGNORECASE), literals


class RouteTable:
    """The HTTP functions of a FunctionApp, and which one a method + path selects."""

    def __init__(self, functions: list[Any]) -> None:
        self.http: list[HttpRoute] = []
        self.others: dict[str, Any] = {}
        for function in functions:
            trigger = function.get_trigger().get_dict_repr()
            name = function.get_function_name()
            if trigger["type"] != "httpTrigger":
                self.others[name] = function
                continue
            template = trigger.get("route") or name
            pattern, literals = compile_template(template)
            methods = frozenset(str(getattr(m, "value", m)).upper() for m in trigger.get("methods") or [])
            auth = str(getattr(trigger.get("authLevel"), "value", trigger.get("authLevel") or "function")).lower()
            self.http.append(HttpRoute(name, methods, auth, template, pattern, literals, function.get_user_function()))
        self.http.sort(key=lambda route: -route.literal_segments)

    def match(self, method: str, path: str) -> tuple[HttpRoute, dict[str, str]] | None:
        """The route for `path` (below the route prefix) and its parameters, or None."""
        for route in self.http:
            found = route.pattern.match(path)
            if found and (not route.methods or method.upper() in route.methods):
                return route, {key: value for key, value in found.groupdict().items() if value is not None}
        return None
