"""RFC 9457's members keep their meaning in every problem the app can answer: `status` is the
HTTP status number (the connector declares it an integer), never a request's state, which has
its own member `requestStatus`. Three nets: every error class rendered, every `extensions=`
written anywhere in the app, and (in tests/conftest.py's `Api.call`) every problem+json any test
receives."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from shared.api.responses import RESERVED_PROBLEM_MEMBERS, problem_response
from tests.test_behaviour_tables import every_error_class

ROOT = Path(__file__).resolve().parent.parent
APP_SOURCES = sorted([ROOT / "function_app.py", *(ROOT / "shared").rglob("*.py")])


def extension_keys_written(path: Path) -> list[tuple[int, str]]:
    """(line, key) of every literal key given as `extensions={...}` or set as `x.extensions[k] =`."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.keyword) and node.arg == "extensions" and isinstance(node.value, ast.Dict):
            found += [(k.lineno, k.value) for k in node.value.keys if isinstance(k, ast.Constant)]
        is_subscript = isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
        if is_subscript and isinstance(node.value, ast.Attribute) and node.value.attr == "extensions":
            found.append((node.lineno, node.slice.value))
    return found


def test_the_app_writes_extensions_somewhere():
    """The scan below finds what it looks for (the campaign 409s carry `requestStatus`)."""
    keys = {key for path in APP_SOURCES for _, key in extension_keys_written(path)}
    assert {"requestId", "requestStatus", "requiredRole"} <= keys


@pytest.mark.parametrize("path", APP_SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_extension_overrides_a_reserved_member(path: Path):
    clashes = [(line, key) for line, key in extension_keys_written(path) if key in RESERVED_PROBLEM_MEMBERS]
    assert not clashes, f"{path.name}: extension members that clash with RFC 9457's: {clashes}"


# Every class under shared/ (not via function_app: importing it at collection would fix the host's
# auth level before conftest indexes it under CALLER_AUTH=function-key).
@pytest.mark.parametrize("cls", sorted(every_error_class(), key=lambda c: c.__name__), ids=lambda c: c.__name__)
def test_every_problem_status_is_the_http_status(cls):
    response = problem_response(cls("detail", extensions={"status": "complete", "requestId": "r"}), "corr")
    body = json.loads(response.get_body())
    assert body["status"] == response.status_code == cls.status
    assert isinstance(body["status"], int) and body["type"].endswith(cls.slug)
