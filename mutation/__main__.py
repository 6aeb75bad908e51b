"""Run the hand-made mutants (`mutation/mutants.py`), one at a time, and report killed/survived.

    python -m mutation                      # every mutant against this tree
    python -m mutation --only NAME [NAME]   # some of them
    python -m mutation --source DIR         # another tree (e.g. an older commit's `git archive`)
    python -m mutation --json report.json   # also write the results

The score is printed overall and per mutated module (`score_by_module`).

For each mutant: copy the tree (without .git, .venv, node_modules, caches) to a temporary
directory, link `.venv` and `node_modules` into it, apply the one replacement, and run the mutant's
tests there (`pytest -x -m "not slow"`, real sandbox and Azurite as always). A failing run kills
the mutant; a passing run lets it survive. A mutant whose original snippet is not in the file
exactly once is "stale" (the code moved on: update the mutant). Before the mutants, the same
tests run on the unmutated copy ("baseline"): if they fail there, no kill would mean anything.

Exit status: 0 when every mutant was killed and the baseline passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from mutation.mutants import MUTANTS, Mutant

REPO_ROOT = Path(__file__).resolve().parent.parent
SKIP = shutil.ignore_patterns(
    ".git", ".venv", ".venv-*", "node_modules", "__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache",
    ".coverage*", "htmlcov", "*.egg-info",
)  # fmt: skip
LINKED = (".venv", "node_modules")
TIMEOUT_SECONDS = 900


@dataclass
class Result:
    name: str
    file: str
    rule: str
    verdict: str  # killed | survived | stale | error | timeout
    seconds: float
    killed_by: str | None = None
    tests_run: tuple[str, ...] = ()


def copy_tree(source: Path, target: Path) -> None:
    shutil.copytree(source, target, ignore=SKIP, symlinks=True)
    for name in LINKED:
        if (REPO_ROOT / name).exists() and not (target / name).exists():
            (target / name).symlink_to((REPO_ROOT / name).resolve())


def existing_tests(tree: Path, tests: tuple[str, ...]) -> tuple[str, ...]:
    """The mutant's tests that this tree has (an older tree may lack newer test files)."""
    return tuple(test for test in tests if (tree / test.split("::", 1)[0]).is_file())


def run_tests(tree: Path, tests: tuple[str, ...]) -> tuple[int | None, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_CORE_", "COVERAGE_"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-rf", "-p", "no:cacheprovider", "-m", "not slow", *tests]
    try:
        done = subprocess.run(
            command, cwd=tree, env=env, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired as expired:
        return None, str(expired.stdout or "")
    return done.returncode, done.stdout + done.stderr


def first_failure(output: str) -> str | None:
    match = re.search(r"^(?:FAILED|ERROR) (\S+)", output, re.MULTILINE)
    return match.group(1) if match else None


def run_mutant(source: Path, mutant: Mutant, workdir: Path) -> Result:
    started = time.monotonic()
    tree = workdir / mutant.name
    copy_tree(source, tree)
    try:
        target = tree / mutant.file
        text = target.read_text() if target.is_file() else ""
        tests = existing_tests(tree, mutant.tests)
        if text.count(mutant.original) != 1:
            return Result(mutant.name, mutant.file, mutant.rule, "stale", 0.0, None, tests)
        if not tests:
            return Result(mutant.name, mutant.file, mutant.rule, "survived", 0.0, "no tests", tests)
        target.write_text(text.replace(mutant.original, mutant.replacement))
        code, output = run_tests(tree, tests)
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    seconds = time.monotonic() - started
    if code is None:
        return Result(mutant.name, mutant.file, mutant.rule, "timeout", seconds, None, tests)
    if code == 0:
        return Result(mutant.name, mutant.file, mutant.rule, "survived", seconds, None, tests)
    if code == 1:
        return Result(mutant.name, mutant.file, mutant.rule, "killed", seconds, first_failure(output), tests)
    return Result(mutant.name, mutant.file, mutant.rule, "error", seconds, output[-2000:], tests)


def baseline(source: Path, mutants: list[Mutant], workdir: Path) -> tuple[bool, str]:
    """The mutants' tests on the unmutated tree: they must pass, or kills mean nothing."""
    tree = workdir / "baseline"
    copy_tree(source, tree)
    try:
        tests = tuple(dict.fromkeys(test for mutant in mutants for test in existing_tests(tree, mutant.tests)))
        code, output = run_tests(tree, tests)
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    return code == 0, output[-3000:]


def score_by_module(results: list[Result]) -> str:
    """Killed/run per mutated file, in the order the mutants list them: a module whose tests
    let a mutant through shows as such instead of vanishing into one overall figure."""
    by_file: dict[str, list[Result]] = {}
    for result in results:
        by_file.setdefault(result.file, []).append(result)
    width = max((len(name) for name in by_file), default=0)
    lines = ["score per module:"]
    for name, module_results in by_file.items():
        killed = sum(r.verdict == "killed" for r in module_results)
        lines.append(f"  {name:<{width}}  {killed}/{len(module_results)} killed")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mutation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=REPO_ROOT, help="the tree to mutate (default: this one)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutants")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    args = parser.parse_args(argv)

    mutants = [m for m in MUTANTS if not args.only or m.name in args.only]
    unknown = set(args.only or ()) - {m.name for m in MUTANTS}
    if unknown:
        parser.error(f"unknown mutants: {', '.join(sorted(unknown))}")
    source = args.source.resolve()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="mutants-") as tmp:
        workdir = Path(tmp)
        if not args.no_baseline:
            ok, output = baseline(source, mutants, workdir)
            print(f"baseline (unmutated): {'passed' if ok else 'FAILED'}", flush=True)
            if not ok:
                print(output)
                return 1
        for index, mutant in enumerate(mutants, 1):
            result = run_mutant(source, mutant, workdir)
            results.append(result)
            by = f"  by {result.killed_by}" if result.verdict == "killed" else ""
            print(f"[{index:2}/{len(mutants)}] {result.verdict.upper():8} {mutant.name} ({result.seconds:.0f} s){by}")
            if result.verdict == "error":
                print(result.killed_by)
            sys.stdout.flush()
    killed = sum(r.verdict == "killed" for r in results)
    print(f"mutation score: {killed}/{len(results)} killed")
    print(score_by_module(results))
    for result in results:
        if result.verdict != "killed":
            print(f"  {result.verdict}: {result.name} ({result.file}): {result.rule}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
