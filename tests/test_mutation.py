"""The hand-made mutants of the exactly-once and SSRF rules (`mutation/`): all must be killed.

The full run (each mutant on a temporary copy of the tree, its tests run there) takes minutes, so it
is in the slow lane (`pytest -m slow`, `make mutants`); the fast lane checks that every mutant still
applies, so a refactor that moves the code fails here at once instead of in the slow lane.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mutation.mutants import MUTANTS

REPO_ROOT = Path(__file__).resolve().parent.parent
RULE_MODULES = {
    "shared/partner_center/client.py",
    "shared/partner_center/exactly_once.py",
    "shared/partner_center/retry_policy.py",
    "shared/upgrade_requests/processor.py",
    "shared/upgrade_requests/intake.py",
    "shared/upgrade_requests/store/moves.py",  # releases the customer's lock when a request becomes final
    "shared/upgrade_requests/store/listing.py",  # each request once, under its own state
    "shared/upgrade_requests/store/retention.py",  # deletes only what it should, with its key
    "shared/webhooks/callback_urls.py",
    # signing keys, caller sign-in, deadlines
    "shared/api/signing_keys.py",
    "shared/api/caller_auth.py",
    "shared/deadlines.py",
    "shared/partner_center/tokens.py",
    "shared/runtime.py",
    # campaign steering (issue 22): the routes' parameters, cancel/retry's "a create may have been
    # sent", and the CLI's exit codes and paging
    "shared/api/campaign_routes.py",
    "shared/upgrade_requests/campaign.py",
    "shared/cli/exit_codes.py",
    "shared/cli/__main__.py",
    "shared/cli/campaign.py",
}


def test_there_are_enough_distinct_mutants_over_every_rule_module():
    assert len(MUTANTS) >= 15
    assert len({m.name for m in MUTANTS}) == len(MUTANTS)
    assert {m.file for m in MUTANTS} == RULE_MODULES


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_each_mutant_still_applies_exactly_once(mutant):
    text = (REPO_ROOT / mutant.file).read_text()
    assert text.count(mutant.original) == 1, f"{mutant.name}: the original snippet moved; update mutation/mutants.py"
    assert mutant.replacement != mutant.original
    mutated = text.replace(mutant.original, mutant.replacement)
    compile(mutated, mutant.file, "exec")  # a mutant is a wrong program, never a broken one
    for test in mutant.tests:
        assert (REPO_ROOT / test.split("::", 1)[0]).is_file(), test


def test_the_score_is_printed_per_module():
    from mutation.__main__ import Result, score_by_module

    results = [
        Result("a", "shared/x.py", "rule", "killed", 1.0),
        Result("b", "shared/y.py", "rule", "survived", 1.0),
        Result("c", "shared/x.py", "rule", "killed", 1.0),
    ]
    lines = score_by_module(results).splitlines()
    assert lines[0] == "score per module:"
    assert [line.split() for line in lines[1:]] == [["shared/x.py", "2/2", "killed"], ["shared/y.py", "0/1", "killed"]]


@pytest.mark.slow
def test_every_mutant_is_killed(tmp_path):
    report = tmp_path / "mutants.json"
    done = subprocess.run(
        [sys.executable, "-m", "mutation", "--json", str(report)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    assert report.is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(report.read_text())
    print(done.stdout)
    survivors = [(r["name"], r["verdict"]) for r in results if r["verdict"] != "killed"]
    assert survivors == [], done.stdout[-3000:]
    assert len(results) == len(MUTANTS) and done.returncode == 0
