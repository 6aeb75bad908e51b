"""The runtime lock: requirements.txt (what Azure's remote build, CI and the venv install) pins an
exact, hash-checked version of every package, within the ranges of requirements.in (issue 14)."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def ranges() -> dict[str, Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in (ROOT / "requirements.in").read_text().splitlines())
    return {canonicalize_name(req.name): req for req in (Requirement(line) for line in lines if line)}


def locked() -> dict[str, tuple[Version, list[str]]]:
    """name -> (pinned version, its sha256 hashes), from pip-compile's output format."""
    text = (ROOT / "requirements.txt").read_text()
    pins: dict[str, tuple[Version, list[str]]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        first = block.split("\\", 1)[0].strip()
        if not first or first.startswith("#"):
            continue
        name, _, pinned = first.partition("==")
        assert pinned, f"not an exact pin: {first!r}"
        pins[canonicalize_name(name)] = (Version(pinned.strip()), re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return pins


def test_every_range_is_locked_within_it():
    pins = locked()
    for name, requirement in ranges().items():
        assert name in pins, f"{name} is in requirements.in but not locked: run `make lock`"
        assert requirement.specifier.contains(pins[name][0], prereleases=True), (
            f"{name}=={pins[name][0]} is outside {requirement.specifier}: run `make lock`"
        )


def test_every_locked_package_is_exact_and_hash_checked():
    pins = locked()
    assert len(pins) >= len(ranges())
    for name, (_, hashes) in pins.items():
        assert hashes, f"{name} has no --hash: pip's hash-checking mode would refuse the whole file"


def test_the_venv_runs_the_locked_versions():
    """What the tests run is what is deployed (the Makefile installs the lock first)."""
    for name, (pinned, _) in locked().items():
        assert Version(version(name)) == pinned, f"{name}: venv has {version(name)}, lock says {pinned}"
