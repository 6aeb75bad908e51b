"""What a deployment ships: `.funcignore` leaves out everything `.gitignore` does (issue 14)."""

from __future__ import annotations

import os
from pathlib import Path

import pathspec

ROOT = Path(__file__).resolve().parent.parent


def spec(name: str) -> pathspec.GitIgnoreSpec:
    return pathspec.GitIgnoreSpec.from_lines((ROOT / name).read_text().splitlines())


def patterns(name: str) -> list[str]:
    lines = (line.strip() for line in (ROOT / name).read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def example_path(pattern: str) -> str:
    """A path the pattern ignores: `*` filled in, a directory pattern given a file inside."""
    path = pattern.strip("/").replace("*", "x")
    return path + "/file" if pattern.endswith("/") else path


def test_funcignore_excludes_every_gitignore_pattern():
    funcignore = spec(".funcignore")
    missing = [pattern for pattern in patterns(".gitignore") if not funcignore.match_file(example_path(pattern))]
    assert not missing, f".funcignore ships what .gitignore ignores: {missing}"


def test_no_local_state_in_the_working_tree_would_be_deployed():
    gitignore, funcignore = spec(".gitignore"), spec(".funcignore")
    shipped = []
    for folder, dirs, files in os.walk(ROOT):
        relative = Path(folder).relative_to(ROOT)
        dirs[:] = [d for d in dirs if d != ".git" and not funcignore.match_file(f"{relative / d}/")]
        shipped += [
            str(relative / name)
            for name in files
            if gitignore.match_file(str(relative / name)) and not funcignore.match_file(str(relative / name))
        ]
    assert not shipped, f"ignored by git but deployed: {shipped[:10]}"


def test_the_app_itself_is_deployed():
    funcignore = spec(".funcignore")
    for path in ("function_app.py", "host.json", "requirements.txt", "shared/runtime.py", "shared/api/responses.py"):
        assert not funcignore.match_file(path), path
